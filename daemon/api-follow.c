/*
 * The build's log stream (api.h: api_build_follow): Server-Sent Events over one HTTP
 * request at a time, reconnected after a drop or a stall, every line handed to the
 * owner exactly once whatever the builder does on a reconnect (numeric ids, other
 * ids or none; Last-Event-ID honoured, a replay from the start, or a continuation).
 * A stream that drops after working is reconnected rather than counted as a failure.
 */
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api-int.h"
#include "log.h"
#include "sse.h"
#include "util.h"

static bool api_numeric_id(const char *id, unsigned long long *out)
{
	unsigned long long n = 0;

	if (*id == '\0' || strlen(id) > 19)
		return false;
	for (; *id; id++) {
		if (*id < '0' || *id > '9')
			return false;
		n = n * 10 + (unsigned long long)(*id - '0');
	}
	*out = n;
	return true;
}

/* The stream is over: report it from the loop, outside libcurl's callbacks. */
static void follow_end_later(struct api_op *op, bool done, const char *build_error)
{
	op->stream_ended = true;
	op->end_done = done;
	op->end_error = build_error ? xstrdup(build_error) : NULL;
	http_cancel(op->xfer);
	op->xfer = NULL;
	evtimer_del(op->stall);
	api_schedule(op, 0);
}

/* FNV-1a: lines are compared by hash, so a long log costs 8 bytes a line. */
static uint64_t follow_hash(const char *s, size_t len)
{
	uint64_t h = 0xcbf29ce484222325ULL;

	for (size_t i = 0; i < len; i++) {
		h ^= (unsigned char)s[i];
		h *= 0x100000001b3ULL;
	}
	return h;
}

static void follow_seen_add(struct api_op *op, const char *text, size_t len)
{
	if (op->nseen == op->seen_alloc) {
		op->seen_alloc = op->seen_alloc ? op->seen_alloc * 2 : 256;
		op->seen = xrealloc(op->seen, op->seen_alloc * sizeof(*op->seen));
	}
	op->seen[op->nseen++] = follow_hash(text, len);
}

static void follow_held_clear(struct api_op *op)
{
	for (size_t i = 0; i < op->nheld; i++) {
		free(op->held[i].text);
		free(op->held[i].id);
	}
	op->nheld = 0;
	op->held_bytes = 0;
}

static void follow_hold(struct api_op *op, const char *text, size_t len, const char *id)
{
	if (op->replay_sure)
		return;
	if (op->nheld == API_REPLAY_HOLD_LINES || op->held_bytes + len > API_REPLAY_HOLD_BYTES) {
		/* this much of the stored log again, in order: a continuation that repeats
		 * it is not worth the memory to tell apart */
		op->replay_sure = true;
		follow_held_clear(op);
		return;
	}
	if (op->nheld == op->held_alloc) {
		op->held_alloc = op->held_alloc ? op->held_alloc * 2 : 16;
		op->held = xrealloc(op->held, op->held_alloc * sizeof(*op->held));
	}
	op->held[op->nheld].text = xstrndup(text, len);
	op->held[op->nheld].len = len;
	op->held[op->nheld].id = xstrdup(id);
	op->nheld++;
	op->held_bytes += len;
}

/* Hands a line to the owner; false when the owner cancelled the op meanwhile. */
static bool follow_deliver(struct api_op *op, const char *text, size_t len, const char *id)
{
	follow_seen_add(op, text, len);
	op->cbs.on_line(op->arg, text, len, id);
	return !op->cancelled;
}

/*
 * The matched start of this connection was not a replay after all (it went on
 * differently, or ended before repeating everything stored): deliver what was held.
 */
static bool follow_release_held(struct api_op *op)
{
	bool alive = true;

	op->matching = false;
	for (size_t i = 0; alive && i < op->nheld; i++)
		alive = follow_deliver(op, op->held[i].text, op->held[i].len, op->held[i].id);
	follow_held_clear(op);
	return alive;
}

static bool follow_control(struct api_op *op, const char *data, size_t len)
{
	json_object *o, *v;
	bool done = false, failed = false;
	char *msg = NULL;

	while (len > 0 && isspace((unsigned char)*data)) {
		data++;
		len--;
	}
	if (len == 0 || *data != '{' || (o = api_parse_json(data, len)) == NULL)
		return false;
	if (json_object_is_type(o, json_type_object)) {
		if (json_object_object_get_ex(o, "done", &v) &&
		    json_object_is_type(v, json_type_boolean) && json_object_get_boolean(v)) {
			done = true;
		} else if (json_object_object_get_ex(o, "error", &v) && v != NULL) {
			const char *m = json_object_is_type(v, json_type_string)
			                    ? json_object_get_string(v)
			                    : json_object_to_json_string(v);
			msg = xstrdup(m[0] ? m : "the build failed");
			failed = true;
		}
	}
	json_object_put(o);
	if (!done && !failed)
		return false;
	/* a replay repeats the whole stored log before it ends: this one did not */
	if (!op->matching || op->replay_sure || follow_release_held(op))
		follow_end_later(op, done, msg);
	free(msg);
	return true;
}

/*
 * Exactly once, whatever the service does on a reconnect.  Numeric ids: a line at
 * or below the last id delivered is a repeat.  Otherwise a new connection that
 * starts with the lines already delivered (same count, same content, in order) is
 * a replay of the log from the start: those lines are skipped, the rest delivered;
 * one that does not start so is a continuation.  Matched lines are held back until
 * the stream either repeats every stored line (a replay: they are dropped) or goes
 * on differently (they are delivered).  The limit: a continuation whose first lines
 * repeat the log's first lines is taken for a replay when it repeats all of them
 * (or API_REPLAY_HOLD_LINES of them) or drops before it diverges.
 */
static void follow_line(struct api_op *op, const char *data, size_t len, const char *id)
{
	unsigned long long n;

	if (sse_parser_event_has_id(op->sse) && api_numeric_id(id, &n)) {
		if (op->have_last && n <= op->last_num)
			return;
		op->have_last = true;
		op->last_num = n;
		op->matching = false;
		follow_held_clear(op);
		follow_deliver(op, data, len, id);
		return;
	}
	if (op->matching) {
		if (op->match_pos < op->nseen &&
		    follow_hash(data, len) == op->seen[op->match_pos]) {
			op->match_pos++;
			if (op->match_pos == op->nseen) {
				op->matching = false;
				follow_held_clear(op);
			} else {
				follow_hold(op, data, len, id);
			}
			return;
		}
		if (op->replay_sure) {
			op->matching = false;
		} else if (!follow_release_held(op)) {
			return;
		}
	}
	follow_deliver(op, data, len, id);
}

static void follow_event_cb(void *arg, const char *type, const char *data, size_t len,
                            const char *id)
{
	struct api_op *op = arg;

	(void)type;
	if (op->stream_ended || op->cancelled)
		return;
	if (follow_control(op, data, len))
		return;
	follow_line(op, data, len, id);
}

static void follow_data_cb(void *arg, long status, const char *buf, size_t len)
{
	struct api_op *op = arg;
	struct timeval tv = {op->a->timing.stall_ms / 1000, (op->a->timing.stall_ms % 1000) * 1000};

	(void)status;
	if (op->stream_ended || op->cancelled)
		return;
	if (len == 0) {
		metrics_api_request(api_metric(op), status);
		op->answered = true;
		evtimer_add(op->stall, &tv);
		return;
	}
	/* a stream that delivers is working: later failures start a fresh count */
	op->got_bytes = true;
	op->attempt = 0;
	evtimer_add(op->stall, &tv);
	api_op_enter(op);
	sse_parser_feed(op->sse, buf, len);
	api_op_leave(op);
}

/* After a failed attempt or a drop: try again, or give up with err. */
static void follow_retry(struct api_op *op, const char *why, long delay_ms,
                         const struct api_error *err)
{
	char *msg;

	if (op->attempt >= op->max_attempts) {
		op->finishing = true;
		op->cbs.on_end(op->arg, err, false, NULL);
		api_op_free(op);
		return;
	}
	msg = xasprintf("%s; retrying in %.1f s", why, (double)delay_ms / 1000);
	api_op_enter(op);
	if (op->cbs.on_reconnect)
		op->cbs.on_reconnect(op->arg, msg);
	free(msg);
	if (api_op_leave(op)) {
		metrics_api_retry(api_metric(op));
		api_schedule(op, delay_ms);
	}
}

static long follow_reconnect_ms(const struct api_op *op)
{
	long ms = sse_parser_retry_ms(op->sse);

	if (ms < 0)
		return op->a->timing.follow_retry_ms;
	return ms < op->a->timing.retry_after_cap_ms ? ms : op->a->timing.retry_after_cap_ms;
}

static void follow_http_done_cb(void *arg, const struct http_response *resp)
{
	struct api_op *op = arg;
	struct api_error err = {0};
	bool streamed = resp->status >= 200 && resp->status < 300;
	char *why;

	op->xfer = NULL;
	evtimer_del(op->stall);
	/* A stream that answered 2xx was counted when it did (follow_data_cb). */
	if (!streamed)
		metrics_api_request(api_metric(op), resp->status);
	if (streamed) {
		why = xasprintf("the log stream %s",
		                resp->error ? "dropped" : "ended without a result");
		api_error_set(&err, 0, xasprintf("%s (%d attempts)", why, op->attempt));
		follow_retry(op, why, follow_reconnect_ms(op), &err);
	} else if (resp->error || api_status_retryable(resp->status) || resp->status == 404) {
		api_error_from_response(&err, op, resp);
		why = resp->status == 404
		          ? xstrdup("the build's log is not there yet (HTTP 404)")
		          : xasprintf("cannot read the log stream (%s)", err.message);
		follow_retry(op, why,
		             api_delay_ms(op, op->a->timing.follow_retry_ms, resp->retry_after),
		             &err);
	} else {
		api_error_from_response(&err, op, resp);
		why = NULL;
		op->finishing = true;
		op->cbs.on_end(op->arg, &err, false, NULL);
		api_op_free(op);
	}
	free(why);
	api_error_clear(&err);
}

static void follow_stall_cb(evutil_socket_t fd, short kind, void *arg)
{
	struct api_op *op = arg;
	struct api_error err = {0};
	char *why = xasprintf("no data on the log stream for %.0f s",
	                      (double)op->a->timing.stall_ms / 1000);

	(void)fd;
	(void)kind;
	/* TCP keepalive finds a dead peer; this is the backstop for one that is alive
	 * but sends nothing, not even the heartbeats a quiet build step should carry */
	log_warnx("api: %s: %s; reconnecting (stall_timeout_seconds)", op->url, why);
	/* silence on an answered stream is a quiet step, not a failure: it may last */
	if (op->answered)
		op->attempt = 0;
	http_cancel(op->xfer);
	op->xfer = NULL;
	api_error_set(&err, 0, xstrdup(why));
	follow_retry(op, why, follow_reconnect_ms(op), &err);
	api_error_clear(&err);
	free(why);
}

static void follow_connect(struct api_op *op)
{
	const char *lei = sse_parser_last_event_id(op->sse);
	char *lei_header = NULL;
	const char *headers[4] = {"Accept: text/event-stream", "Cache-Control: no-cache", NULL,
	                          NULL};
	struct timeval tv = {op->a->timing.stall_ms / 1000, (op->a->timing.stall_ms % 1000) * 1000};
	struct http_request req = {
	    .url = op->url,
	    .bearer_token = op->a->key,
	    .headers = headers,
	    .max_body = API_STREAM_ERR_BODY,
	    .on_data = follow_data_cb,
	    /* Not the submit's kept-alive HTTP/1.1 connection: with the peer's Nagle and
	     * our delayed ACKs a reused one batched log lines ~20 ms apart. */
	    .own_connection = true,
	};

	if (*lei == '\0' && op->resume_id)
		lei = op->resume_id;
	if (*lei != '\0') {
		lei_header = xasprintf("Last-Event-ID: %s", lei);
		headers[2] = lei_header;
	}
	sse_parser_reset_stream(op->sse);
	follow_held_clear(op);
	op->matching = op->nseen > 0;
	op->match_pos = 0;
	op->replay_sure = false;
	op->got_bytes = false;
	op->answered = false;
	op->attempt++;
	op->xfer = http_start(op->a->http, &req, follow_http_done_cb, op);
	evtimer_add(op->stall, &tv);
	free(lei_header);
}

/* The op's timer: the next connection, or the end of a stream that has ended (deferred
 * so the owner hears of it from the loop, not from inside a transfer's callback). */
static void follow_next(struct api_op *op)
{
	if (!op->stream_ended) {
		follow_connect(op);
		return;
	}
	op->finishing = true;
	op->cbs.on_end(op->arg, NULL, op->end_done, op->end_error);
	api_op_free(op);
}

struct api_op *api_build_follow(struct api *a, const char *build_id, const char *last_event_id,
                                const struct api_follow_cbs *cbs, void *arg)
{
	struct api_op *op = api_op_new(a, API_FOLLOW, arg);
	unsigned long long n;

	op->url = api_build_url(a, build_id, "/logs");
	op->cbs = *cbs;
	op->max_attempts = API_FOLLOW_ATTEMPTS;
	op->sse = sse_parser_new(API_MAX_EVENT, follow_event_cb, op);
	op->stall = evtimer_new(a->base, follow_stall_cb, op);
	if (op->stall == NULL)
		fatalx("api: evtimer_new failed");
	/* an id with a line end would forge headers: start from the beginning instead */
	if (last_event_id && *last_event_id && strpbrk(last_event_id, "\r\n") == NULL) {
		op->resume_id = xstrdup(last_event_id);
		if (api_numeric_id(last_event_id, &n)) {
			op->have_last = true;
			op->last_num = n;
		}
	}
	op->next = follow_next;
	follow_connect(op);
	return op;
}

void api_follow_seed(struct api_op *op, const char *text, size_t len)
{
	follow_seen_add(op, text, len);
	op->matching = true;
}
