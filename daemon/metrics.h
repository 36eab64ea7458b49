/*
 * The daemon's metrics: counters and histograms that the job engine, the API client
 * and the intake bump with one call each, rendered as OpenMetrics text for the
 * daemon.metrics method and, when metrics_listen is set, for GET /metrics on a small
 * HTTP listener on the event loop (Prometheus).  Loop thread only; it knows nothing
 * of jobs or sockets: gauges are passed in when the text is rendered.
 */
#ifndef SNAPBUILD_METRICS_H
#define SNAPBUILD_METRICS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct event_base;

/* The stages whose durations are observed (snapbuild_job_stage_seconds{stage}). */
enum metrics_stage {
	METRICS_STAGE_INTAKE = 0, /* archive received, checked and spooled */
	METRICS_STAGE_QUEUED,
	METRICS_STAGE_UPLOADING,
	METRICS_STAGE_BUILDING,
	METRICS_STAGE_REGISTERING,
	METRICS_NSTAGES
};

/* The Together APIs called (snapbuild_api_requests_total{api}). */
enum metrics_api {
	METRICS_API_SUBMIT = 0, /* POST /builds */
	METRICS_API_LOGS,       /* GET /builds/{id}/logs (SSE) */
	METRICS_API_STATUS,     /* GET /builds/{id} */
	METRICS_API_DELETE,     /* DELETE /builds/{id} */
	METRICS_API_MANAGEMENT, /* the management API */
	METRICS_NAPIS
};

/* The stage a job state's time counts towards, or -1. */
int metrics_stage_of_state(const char *state);

void metrics_job_stage(enum metrics_stage stage, double seconds);
/* backend "remote" or "local"; result "succeeded", "failed" or "cancelled". */
void metrics_job_finished(const char *backend, const char *result);
/* status: the HTTP status, 0 when no answer came (transport error, timeout). */
void metrics_api_request(enum metrics_api api, long status);
void metrics_api_retry(enum metrics_api api);
void metrics_log_line(void);
void metrics_context_bytes(uint64_t bytes);

/* What the caller knows at render time. */
struct metrics_gauges {
	const char *const *state_names; /* job states, with the number of jobs in each */
	const int64_t *state_counts;
	size_t nstates;
	size_t connections; /* open client connections */
};

/* The OpenMetrics text exposition, ending "# EOF\n"; free it. */
char *metrics_render(const struct metrics_gauges *g);

/* Forgets every observation (for tests). */
void metrics_reset(void);

/* The media type of metrics_render's text. */
#define METRICS_CONTENT_TYPE "application/openmetrics-text; version=1.0.0; charset=utf-8"

/*
 * "HOST:PORT" (IPv6 in brackets) into *host (malloc'd, no brackets) and *port (0-65535);
 * false when it is not one.
 */
bool metrics_listen_parse(const char *s, char **host, int *port);

/*
 * GET /metrics on HOST:PORT ("127.0.0.1:9464", "[::1]:0", port 0 picks one), served
 * from base.  render returns the text (free'd after sending) or NULL with *err for a
 * 503.  NULL with *err when it cannot listen.
 */
struct metrics_http;
struct metrics_http *metrics_http_new(struct event_base *base, const char *listen,
                                      char *(*render)(void *arg, char **err), void *arg,
                                      char **err);
/* "HOST:PORT" actually bound (the port chosen for port 0). */
const char *metrics_http_address(const struct metrics_http *mh);
void metrics_http_free(struct metrics_http *mh);

#endif
