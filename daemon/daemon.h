/*
 * The daemon as a whole: one struct that every module reaches through, holding the
 * event loop and each subsystem.  main.c builds it in named steps (config, log,
 * state directory and store, server, readiness) and tears it down in reverse; a new
 * subsystem adds its field here and one call in each of those places.
 */
#ifndef SNAPBUILD_DAEMON_H
#define SNAPBUILD_DAEMON_H

#include <stdbool.h>

struct event_base;
struct config;
struct store;
struct server;
struct jobs;
struct http;
struct api;
struct metrics_http;

struct daemon {
	struct event_base *base;
	struct config *config;
	struct store *store;   /* daemon/store.h */
	struct server *server; /* daemon/server.h */
	double started_at;     /* now_seconds() at start */
	struct jobs *jobs;     /* job engine; NULL until it exists */
	struct http *http;
	struct api *api;
	struct metrics_http *metrics_http; /* GET /metrics (metrics_listen), or NULL */
	bool stopping; /* a graceful stop is under way */
};

/* Sends sd_notify STATUS= with a summary of the queue (from the store's counts). */
void daemon_status_update(struct daemon *d);

/* Seconds since start. */
double daemon_uptime(const struct daemon *d);

#endif
