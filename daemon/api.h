/*
 * Together's image-builder and management APIs (see ../shared/reference/builder-api.md),
 * asynchronous on top of http.h, with the SDKs' retry rules plus Retry-After.  Every
 * call returns an operation handle and ends with exactly one final callback unless
 * cancelled first; an error carries the service's own message and a hint the user
 * can act on.  This layer knows nothing of jobs, the store or RPC.
 */
#ifndef SNAPBUILD_API_H
#define SNAPBUILD_API_H

#include <stdbool.h>
#include <stdint.h>

#include <json-c/json.h>

struct http;
struct api;
struct api_op;

struct api_error {
	long status;   /* HTTP status; 0 when the service was not reached or the exchange failed */
	char *message; /* the service's message (Error body) or the transport's */
	char *hint;    /* what to do about it, or NULL */
};

/* Retry and stall timing; api_new sets the service's values, tests shorten them. */
struct api_timing {
	long backoff_base_ms;    /* submit/status/management: base * 2^(attempt-1) ... */
	long backoff_jitter_ms;  /* ... plus up to this much */
	long follow_retry_ms;    /* between log stream attempts and reconnects */
	long retry_after_cap_ms; /* the longest Retry-After honoured */
	long stall_ms;           /* backstop: a log stream silent this long is reconnected */
	long request_timeout_ms; /* whole-request bound for everything but streams */
	long upload_timeout_ms;  /* the submit (uploads can be large); 0 = none */
};

/* base_url: the management API without /v1; builder_url: see api_builder_url_from_base. */
struct api *api_new(struct http *h, const char *base_url, const char *builder_url,
                    const char *api_key);
void api_set_key(struct api *a, const char *api_key);
/* The configuration file that hints name (ca_file, proxy); NULL: "snapbuildd.conf". */
void api_set_config_file(struct api *a, const char *path);
void api_set_timing(struct api *a, const struct api_timing *t);
void api_get_timing(const struct api *a, struct api_timing *t);
void api_set_stall_timeout(struct api *a, long ms);
/* Cancels every operation in flight, without callbacks. */
void api_free(struct api *a);

/*
 * Stops an operation: no callback of any kind afterwards.  Safe from inside the
 * operation's own non-final callbacks (progress, on_line, on_reconnect); the handle
 * is invalid once its final callback has been entered.
 */
void api_op_cancel(struct api_op *op);

/* The builder's URL for a management base URL: host prefix "api.bartender." becomes
 * "builder.", anything else is kept; trailing slashes are dropped. */
char *api_builder_url_from_base(const char *base_url);
/* Percent-encodes everything but RFC 3986's unreserved characters (malloc'd). */
char *api_escape(const char *s);
/* An alias as the API takes it: `tag` or `namespace@tag`, printable, no blanks and none
 * of / ? # %, at most 255 characters. */
bool api_alias_valid(const char *alias);
/* A cache key the builder accepts: non-empty, at most 255 characters of lower-case
 * letters, digits, '.', '_', '-' and '/', with no empty path component and no tag. */
bool api_cache_key_valid(const char *key);

struct api_submit {
	const char *archive_path;    /* the gzip'd tar, streamed from disk */
	const char *image_name;      /* "name:tag" */
	const char *dockerfile;      /* NULL = "Dockerfile" */
	const char *build_args_json; /* NULL = "{}" */
	const char *cache_key;       /* NULL = omitted */
};

/* POST {builder}/builds: any 2xx with a build_id is success; 3 attempts on transport
 * errors, 408, 429 and 5xx (Retry-After honoured); another 4xx is final (the SDKs
 * re-upload on every error; re-sending a context the service refused is pointless). */
struct api_op *api_build_submit(struct api *a, const struct api_submit *s,
                                void (*progress_cb)(void *arg, uint64_t sent, uint64_t total),
                                void (*done_cb)(void *arg, const struct api_error *err,
                                                const char *build_id),
                                void *arg);

struct api_follow_cbs {
	/* One log line: an SSE event's data, verbatim; event_id is the stream's last event
	 * id ("" when the service gives none), to persist for a later resume. */
	void (*on_line)(void *arg, const char *text, size_t len, const char *event_id);
	/* Informational: the stream is being retried or reconnected, and why. */
	void (*on_reconnect)(void *arg, const char *why);
	/* Final: done (the build succeeded), or build_error (it failed: the service's
	 * message), or err (the stream could not be followed: retries exhausted or a
	 * status that is not retried). */
	void (*on_end)(void *arg, const struct api_error *err, bool done, const char *build_error);
};

/*
 * GET {builder}/builds/{id}/logs as Server-Sent Events, from last_event_id (NULL =
 * the beginning).  404/408/429/5xx and unreachable service: up to 5 attempts,
 * follow_retry_ms apart.  A stream that drops, or stays silent for stall_ms, is
 * reconnected after follow_retry_ms with Last-Event-ID, the attempt count reset.
 * Every line is delivered once whether the service numbers its events or not and
 * whether a reconnect resumes, replays from the start or continues: numeric ids are
 * compared; otherwise a stream starting with the lines already delivered is taken
 * for a replay and those lines are skipped (see follow_line in api.c).
 */
struct api_op *api_build_follow(struct api *a, const char *build_id, const char *last_event_id,
                                const struct api_follow_cbs *cbs, void *arg);
/* One line the caller already has from an earlier follow of the same build (the
 * stored log after a restart), in order, so that a replay is recognised.  Call right
 * after api_build_follow, before the loop runs again. */
void api_follow_seed(struct api_op *op, const char *text, size_t len);

/* GET {builder}/builds/{id}, retried like the submit.  status is borrowed for the
 * callback's duration; checking it for image_ref is the caller's business. */
struct api_op *api_build_status(struct api *a, const char *build_id,
                                void (*done_cb)(void *arg, const struct api_error *err,
                                                json_object *status),
                                void *arg);

/* DELETE {builder}/builds/{id}: 2xx or 404 is confirmed (err NULL); retried like the submit. */
struct api_op *api_build_delete(struct api *a, const char *build_id,
                                void (*done_cb)(void *arg, const struct api_error *err), void *arg);

/*
 * A management API call: method and path ("/v1/snapshots?limit=5") on the base URL,
 * an optional JSON body (borrowed).  With retry, transport errors and
 * 408, 429 and 5xx are retried as for the submit; without, only 429 (a request
 * refused before it was looked at).  body in the callback is the parsed answer
 * (borrowed; NULL when empty); a non-2xx answer is an error.
 */
struct api_op *api_mgmt_call(struct api *a, const char *method, const char *path_and_query,
                             json_object *body, bool retry,
                             void (*done_cb)(void *arg, const struct api_error *err, long status,
                                             json_object *body),
                             void *arg);

/* POST /v1/snapshots.  Not retried (a lost answer may hide a created snapshot): the
 * caller resolves that ambiguity with api_snapshot_find_by_tag.  ttl 0 and tags NULL
 * are omitted; snapshot is borrowed. */
struct api_op *api_snapshot_create(
    struct api *a, const char *image, const char *arch, int64_t ttl, json_object *tags,
    void (*done_cb)(void *arg, const struct api_error *err, json_object *snapshot), void *arg);
/* GET /v1/snapshots?tags[key]=value: the first match, or NULL (borrowed). */
struct api_op *api_snapshot_find_by_tag(struct api *a, const char *key, const char *value,
                                        void (*done_cb)(void *arg, const struct api_error *err,
                                                        json_object *snapshot_or_null),
                                        void *arg);
/* POST /v1/snapshots/{id}/aliases; an upsert, so retried. */
struct api_op *api_snapshot_alias(struct api *a, const char *snapshot_id, const char *alias,
                                  void (*done_cb)(void *arg, const struct api_error *err),
                                  void *arg);
/* POST /v1/container-registries/default/credentials; cred is borrowed. */
struct api_op *api_registry_credentials(struct api *a,
                                        void (*done_cb)(void *arg, const struct api_error *err,
                                                        json_object *cred),
                                        void *arg);

#endif
