/*
 * Inside the api module: what api.c (request/response operations, their retry loop,
 * the management calls) and api-follow.c (the build log stream: SSE, reconnects,
 * exactly-once lines) share.  Nothing else includes it: the daemon sees api.h.
 */
#ifndef SNAPBUILD_API_INT_H
#define SNAPBUILD_API_INT_H

#include <json-c/json.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/queue.h>

#include <event2/event.h>

#include "api.h"
#include "http.h"
#include "metrics.h"

struct sse_parser;

#define API_ATTEMPTS        3
#define API_FOLLOW_ATTEMPTS 5
#define API_MAX_EVENT       (1u << 20)
#define API_STREAM_ERR_BODY (64u << 10)
#define API_LOW_SPEED_S     60L
/* the builder may take a while to look at a large archive before it answers */
#define API_UPLOAD_LOW_SPEED_S 300L
#define API_MESSAGE_MAX        512
#define API_EXCERPT_MAX        120
#define API_JSON_DEPTH         64
/* Lines of a stream that may be a replay held back until it is known to be one. */
#define API_REPLAY_HOLD_LINES 1000
#define API_REPLAY_HOLD_BYTES (4u << 20)

struct api {
	struct http *http;
	struct event_base *base;
	char *base_url;
	char *builder_url;
	char *key;
	char *config_file;
	struct api_timing timing;
	LIST_HEAD(, api_op) ops;
};

enum api_kind { API_SUBMIT, API_FOLLOW, API_STATUS, API_DELETE, API_MGMT };

/* What a management answer is turned into for the caller. */
enum api_shape {
	API_SHAPE_RAW,
	API_SHAPE_SNAPSHOT,
	API_SHAPE_FIND,
	API_SHAPE_NONE,
	API_SHAPE_CRED
};

enum api_retry { API_RETRY_ALL, API_RETRY_429 };

struct api_op {
	struct api *a;
	LIST_ENTRY(api_op) entry;
	enum api_kind kind;
	void *arg;
	int attempt; /* attempts made (follow: since the stream last worked) */
	int max_attempts;
	enum api_retry retry;
	struct http_xfer *xfer;
	struct event *timer; /* the next attempt, or the deferred end of a stream */
	int busy;
	bool cancelled;
	bool finishing;

	char *method;
	char *url;
	char *body;
	long timeout_ms;
	long low_speed_s;
	struct http_part parts[6];
	size_t nparts;
	char *part_values[6];
	void (*progress_cb)(void *arg, uint64_t sent, uint64_t total);
	/* What the timer runs: the next attempt (api_send), or a stream's own step. */
	void (*next)(struct api_op *op);

	union {
		void (*submit)(void *arg, const struct api_error *err, const char *build_id);
		void (*status)(void *arg, const struct api_error *err, json_object *status);
		void (*confirm)(void *arg, const struct api_error *err);
		void (*mgmt)(void *arg, const struct api_error *err, long status,
		             json_object *body);
		void (*object)(void *arg, const struct api_error *err, json_object *obj);
	} done;
	enum api_shape shape;
	char *find_key;
	char *find_value;

	/* the log stream */
	struct api_follow_cbs cbs;
	struct sse_parser *sse;
	struct event *stall;
	char *resume_id;
	bool have_last;
	unsigned long long last_num;
	bool got_bytes;
	bool answered; /* this connection got a 2xx: the service is there */
	bool stream_ended;
	bool end_done;
	char *end_error;

	/*
	 * Replays without usable ids (see follow_line): a hash of every line delivered,
	 * in order, and, while the current connection's start still matches them, how
	 * far it matches and the matched lines held back in case it turns out not to be
	 * a replay after all.
	 */
	uint64_t *seen;
	size_t nseen, seen_alloc;
	bool matching;
	bool replay_sure; /* too much matched to hold: a replay, whatever follows */
	size_t match_pos;
	struct follow_held *held;
	size_t nheld, held_alloc, held_bytes;
};

struct follow_held {
	char *text;
	size_t len;
	char *id;
};

/* --- api.c ------------------------------------------------------------------------- */

json_object *api_parse_json(const char *body, size_t len);
void api_error_set(struct api_error *err, long status, char *message);
void api_error_from_response(struct api_error *err, const struct api_op *op,
                             const struct http_response *resp);
void api_error_clear(struct api_error *err);
bool api_status_retryable(long status);
long api_delay_ms(const struct api_op *op, long base_ms, const char *retry_after);
enum metrics_api api_metric(const struct api_op *op);
void api_schedule(struct api_op *op, long ms);
struct api_op *api_op_new(struct api *a, enum api_kind kind, void *arg);
void api_op_free(struct api_op *op);
void api_op_enter(struct api_op *op);
bool api_op_leave(struct api_op *op);
char *api_build_url(struct api *a, const char *build_id, const char *suffix);

#endif
