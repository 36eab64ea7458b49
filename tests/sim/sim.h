/*
 * snapbuild-sim: a stand-in for Together's image-builder and management APIs, with
 * fault injection and introspection for tests.  This header ties the modules
 * together: the shared state (struct sim), the HTTP request layer (http.c), the
 * builder (builds.c), the management API (snapshots.c), faults (faults.c) and the
 * /_sim/ introspection routes (introspect.c).  Everything runs on one libevent loop.
 */
#ifndef SNAPBUILD_SIM_H
#define SNAPBUILD_SIM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <event2/event.h>
#include <event2/http.h>
#include <json-c/json.h>

struct sim_build;
struct sim_snapshots;
struct sim_reqlog;

/* What the real service does is unknown on these points; each is a choice here. */
enum sim_log_ids {
	SIM_IDS_ON,     /* id: 1, 2, 3, ... */
	SIM_IDS_OFF,    /* no id: lines */
	SIM_IDS_OPAQUE, /* id: <build id>:<n>, not a number */
};

enum sim_reconnect {
	SIM_RECONNECT_RESUME,   /* after Last-Event-ID; from the start without one */
	SIM_RECONNECT_REPLAY,   /* from the start, Last-Event-ID ignored */
	SIM_RECONNECT_CONTINUE, /* where the build's last stream stopped, whoever asks */
};

struct sim_config {
	char *listen;
	char *api_key;
	char *state_dir;
	char *registry; /* host[:port]/namespace, prefix of every image_ref */
	char *registry_username;
	char *registry_password;
	int log_interval_ms;
	long log_lines;
	int latency_ms;
	int heartbeat_ms;
	enum sim_log_ids log_ids;
	enum sim_reconnect reconnect;
	int submit_status; /* the status of an accepted POST /builds */
	int64_t max_body_bytes;
	bool verbose;
};

/* One rule of the generic request_fail fault. */
struct sim_fail_rule {
	char *method; /* NULL matches any */
	char *path;   /* prefix of the request path */
	int status;
	int count;
	int retry_after; /* seconds; -1 for no Retry-After */
};

/*
 * Active faults.  Counted faults are consumed as they fire; the others hold until
 * changed or cleared.  -1 in an override means "use the command-line setting".
 */
struct sim_faults {
	int submit_fail_count;
	int submit_fail_status;
	int submit_fail_retry_after;
	int logs_404;
	int logs_drop_count;
	int logs_drop_after;
	int logs_stall_count;
	int logs_stall_ms;
	int logs_stall_after;
	char *build_fail;
	bool status_no_image_ref;
	int register_count;
	bool register_drop; /* else answer 500 */
	int latency_ms;
	int hold; /* SIM_HOLD_* for builds submitted while set */
	int log_interval_ms;
	long log_lines;
	struct sim_fail_rule *rules;
	size_t nrules;
};

enum { SIM_HOLD_NONE, SIM_HOLD_END, SIM_HOLD_START };

struct sim {
	struct event_base *base;
	struct evhttp *http;
	struct sim_config config;
	struct sim_faults faults;
	char *tmpdir; /* received contexts live here */
	struct sim_build **builds;
	size_t nbuilds;
	struct sim_layers *layers; /* the layer cache, per cache key (builds.c) */
	size_t nlayers;
	struct json_object *deletes; /* array of {build_id, status, at} */
	struct sim_snapshots *snapshots;
	struct sim_reqlog *reqlog;
};

/* --- http.c: one request and its answer --- */

struct sim_query {
	char *key;
	char *value;
};

struct sim_req {
	struct sim *sim;
	struct evhttp_request *req;
	struct evhttp_connection *evcon;
	enum evhttp_cmd_type method;
	uint64_t seq; /* its entry in the request log */
	char *path;   /* undecoded path, without the query */
	char **seg;   /* decoded path segments */
	size_t nseg;
	struct sim_query *query;
	size_t nquery;
	struct event *timer;
	void (*on_close)(void *owner);
	void *owner;
};

void sim_http_init(struct sim *sim);
void sim_http_free(struct sim *sim);

/* The decoded value of query parameter key, or NULL. */
const char *sim_req_query(const struct sim_req *r, const char *key);
const char *sim_req_header(const struct sim_req *r, const char *name);
const char *sim_req_method_name(const struct sim_req *r);

/* The request body: pulled up into one block; *len receives its size. */
const char *sim_req_body(struct sim_req *r, size_t *len);

/* Parses the body as a JSON object; answers 400 itself and returns NULL on failure. */
struct json_object *sim_req_json_body(struct sim_req *r);

/*
 * Answers and frees r.  body is consumed (NULL for none).  extra_header/value add one
 * header when not NULL.
 */
void sim_reply_json(struct sim_req *r, int status, struct json_object *body);
void sim_reply_json_hdr(struct sim_req *r, int status, struct json_object *body,
                        const char *extra_header, const char *extra_value);
void sim_reply_empty(struct sim_req *r, int status);
void sim_reply_raw(struct sim_req *r, int status, const char *content_type, const void *data,
                   size_t len);

/* An Error body {code, message, errors}; errors is consumed (NULL for []). */
struct json_object *sim_error_body(const char *code, const char *message,
                                   struct json_object *errors);
void sim_reply_error(struct sim_req *r, int status, const char *code, const char *message);

/* A 400 naming the offending parameter (errors[0].parameter). */
void sim_reply_bad_param(struct sim_req *r, const char *parameter, const char *code,
                         const char *message);

/*
 * Keeps r past its handler.  on_close(owner) runs if the client goes away first;
 * r is freed by the http layer right after it.
 */
void sim_req_hold(struct sim_req *r, void (*on_close)(void *owner), void *owner);

/* Closes the connection without an answer (after what was already queued), frees r. */
void sim_req_drop(struct sim_req *r);

/* Streaming answers: start, chunks (flushed(owner) when written out), end (frees r). */
void sim_reply_stream_start(struct sim_req *r, int status, const char *content_type);
void sim_reply_stream_chunk(struct sim_req *r, struct evbuffer *buf,
                            void (*flushed)(struct evhttp_connection *, void *), void *arg);
void sim_reply_stream_end(struct sim_req *r);

/* Request log. */
struct json_object *sim_reqlog_json(const struct sim *sim);
void sim_reqlog_clear(struct sim *sim);

/* RFC 3339 UTC time with milliseconds, into out. */
void sim_time_format(double t, char out[32]);

/* --- builds.c: the builder API --- */
void sim_builds_submit(struct sim_req *r);
void sim_builds_status(struct sim_req *r, const char *id);
void sim_builds_cancel(struct sim_req *r, const char *id);
void sim_builds_logs(struct sim_req *r, const char *id);
struct sim_build *sim_builds_find(struct sim *sim, const char *id);
struct json_object *sim_build_json(const struct sim_build *b, bool full);
const char *sim_build_context_path(const struct sim_build *b);
/* {lines: the log lines produced so far, final: the final event or null, delivered}. */
struct json_object *sim_build_log_json(const struct sim_build *b);
/* The id of the build whose image_ref is image, or NULL. */
const char *sim_builds_by_image(const struct sim *sim, const char *image);
/* Lets a held build go on; false when it was not held. */
bool sim_build_release(struct sim_build *b);
void sim_builds_free(struct sim *sim);

/* --- snapshots.c: the management API --- */
int sim_snapshots_init(struct sim *sim, char **err);
void sim_snapshots_route(struct sim_req *r);
struct json_object *sim_snapshots_introspect(const struct sim *sim);
struct json_object *sim_aliases_introspect(const struct sim *sim);
void sim_snapshots_free(struct sim *sim);

/* --- faults.c --- */
void sim_faults_init(struct sim_faults *f);
/* Applies a JSON object of fault settings atomically; -1 and a message on error. */
int sim_faults_apply(struct sim_faults *f, struct json_object *obj, char **err);
struct json_object *sim_faults_json(const struct sim_faults *f);
void sim_faults_clear(struct sim_faults *f);
/* The first matching request_fail rule, consumed; NULL when none fires. */
bool sim_faults_take_rule(struct sim_faults *f, const char *method, const char *path, int *status,
                          int *retry_after);
int sim_faults_latency(const struct sim *sim);
int sim_faults_log_interval(const struct sim *sim);
long sim_faults_log_lines(const struct sim *sim);

/* --- introspect.c: /_sim/ --- */
void sim_introspect_route(struct sim_req *r);

#endif
