/*
 * Together's APIs as asynchronous operations.  An operation (struct api_op) owns
 * the request it repeats, its retry timer and, for a log stream, its SSE parser and
 * stall timer.  Request/response calls go through one retry loop (api_send,
 * api_http_done_cb); the log stream has its own (follow_*), because a stream that
 * drops after working is reconnected rather than counted as a failure.
 *
 * Callbacks into the owner may cancel the very operation that calls them: while
 * one runs the operation is "busy" and a cancel only marks it; whoever holds it
 * busy frees it afterwards.  A final callback is always the last use of the
 * operation, which is freed right after it returns.
 */
#include "api.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/queue.h>
#include <time.h>

#include <event2/event.h>

#include "http.h"
#include "log.h"
#include "metrics.h"
#include "sse.h"
#include "util.h"

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

static const struct api_timing api_default_timing = {
    .backoff_base_ms = 500,
    .backoff_jitter_ms = 250,
    .follow_retry_ms = 1000,
    .retry_after_cap_ms = 60000,
    .stall_ms = 600000,
    .request_timeout_ms = 60000,
    .upload_timeout_ms = 0,
};

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

static void api_op_free(struct api_op *op);
static void api_send(struct api_op *op);
static void follow_connect(struct api_op *op);

/* ---- helpers ---- */

char *api_escape(const char *s)
{
	static const char hex[] = "0123456789ABCDEF";
	char *out = xmalloc(strlen(s) * 3 + 1), *o = out;

	for (; *s; s++) {
		unsigned char c = (unsigned char)*s;
		if (isalnum(c) || c == '-' || c == '.' || c == '_' || c == '~') {
			*o++ = (char)c;
		} else {
			*o++ = '%';
			*o++ = hex[c >> 4];
			*o++ = hex[c & 15];
		}
	}
	*o = '\0';
	return out;
}

static char *api_strip_slashes(const char *url)
{
	size_t n = strlen(url);
	while (n > 0 && url[n - 1] == '/')
		n--;
	return xstrndup(url, n);
}

char *api_builder_url_from_base(const char *base_url)
{
	static const char prefix[] = "api.bartender.";
	char *url = api_strip_slashes(base_url), *out;
	const char *host = strstr(url, "://");

	host = host ? host + 3 : url;
	if (strncmp(host, prefix, sizeof(prefix) - 1) != 0)
		return url;
	out = xasprintf("%.*sbuilder.%s", (int)(host - url), url, host + sizeof(prefix) - 1);
	free(url);
	return out;
}

bool api_alias_valid(const char *a)
{
	size_t n = strlen(a), ats = 0;

	if (n == 0 || n > 255 || a[0] == '@' || a[n - 1] == '@')
		return false;
	for (size_t i = 0; i < n; i++) {
		unsigned char c = (unsigned char)a[i];
		if (c <= ' ' || c == 0x7f || c == '/' || c == '?' || c == '#' || c == '%')
			return false;
		ats += c == '@';
	}
	return ats <= 1;
}

bool api_cache_key_valid(const char *key)
{
	size_t n = key ? strlen(key) : 0;

	if (n == 0 || n > 255 || key[0] == '/' || key[n - 1] == '/' || strstr(key, "//"))
		return false;
	for (size_t i = 0; i < n; i++) {
		char c = key[i];
		if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '.' || c == '_' ||
		      c == '-' || c == '/'))
			return false;
	}
	return true;
}

/* The body's text as something safe to show: printable ASCII, bounded. */
static char *api_excerpt(const char *body, size_t len, size_t max)
{
	char *out = xmalloc(max + 8), *o = out; /* a space, a character and "..." may follow */
	bool space = false;

	for (size_t i = 0; i < len && (size_t)(o - out) < max; i++) {
		unsigned char c = (unsigned char)body[i];
		if (isspace(c)) {
			space = o > out;
			continue;
		}
		if (space)
			*o++ = ' ';
		space = false;
		*o++ = (c >= 0x20 && c < 0x7F) ? (char)c : '?';
	}
	if ((size_t)(o - out) >= max)
		o += sprintf(o, "...");
	*o = '\0';
	return out;
}

static json_object *api_parse_json(const char *body, size_t len)
{
	struct json_tokener *tok;
	json_object *obj;
	size_t end;

	if (len == 0 || len > INT32_MAX)
		return NULL;
	tok = json_tokener_new_ex(API_JSON_DEPTH);
	obj = json_tokener_parse_ex(tok, body, (int)len);
	end = json_tokener_get_parse_end(tok);
	if (json_tokener_get_error(tok) != json_tokener_success) {
		json_object_put(obj);
		obj = NULL;
	}
	json_tokener_free(tok);
	for (; obj && end < len; end++) {
		if (!isspace((unsigned char)body[end])) {
			json_object_put(obj);
			obj = NULL;
		}
	}
	return obj;
}

static const char *api_jstr(json_object *o, const char *key)
{
	json_object *v;

	if (!json_object_is_type(o, json_type_object) || !json_object_object_get_ex(o, key, &v) ||
	    !json_object_is_type(v, json_type_string))
		return NULL;
	return json_object_get_string(v);
}

static const char *api_hint(long status)
{
	if (status == 0)
		return "cannot reach the API, or it timed out: check the network and "
		       "TOGETHER_BASE_URL";
	if (status == 401)
		return "check the API key (TOGETHER_API_KEY, or the daemon's credentials)";
	if (status == 403)
		return "the API key is not allowed to do this: check its scope";
	if (status == 404)
		return "it does not exist: check the id or alias";
	if (status == 429)
		return "rate limited by the API: try again later";
	if (status >= 500 && status < 600)
		return "the service had an internal error: try again later";
	return NULL;
}

/* The service's own words from an Error body: message, else error, else code. */
static char *api_body_message(long status, const char *body, size_t len)
{
	json_object *o = api_parse_json(body, len), *errors, *e;
	const char *msg = NULL;
	char *out, *excerpt;
	size_t used;

	if (json_object_is_type(o, json_type_object)) {
		msg = api_jstr(o, "message");
		if (msg == NULL && json_object_object_get_ex(o, "error", &e))
			msg = json_object_is_type(e, json_type_string) ? json_object_get_string(e)
			                                               : api_jstr(e, "message");
		if (msg == NULL)
			msg = api_jstr(o, "code");
	}
	if (msg == NULL) {
		excerpt = api_excerpt(body, len, API_EXCERPT_MAX);
		out = excerpt[0] ? xasprintf("HTTP %ld: %s", status, excerpt)
		                 : xasprintf("HTTP %ld", status);
		free(excerpt);
		json_object_put(o);
		return out;
	}
	out = xmalloc(API_MESSAGE_MAX);
	used = (size_t)snprintf(out, API_MESSAGE_MAX, "%s", msg);
	if (json_object_object_get_ex(o, "errors", &errors) &&
	    json_object_is_type(errors, json_type_array)) {
		for (size_t i = 0; i < json_object_array_length(errors) && i < 3; i++) {
			const char *param, *emsg;
			e = json_object_array_get_idx(errors, i);
			param = api_jstr(e, "parameter");
			emsg = api_jstr(e, "message");
			if (emsg == NULL || used >= API_MESSAGE_MAX)
				continue;
			used += (size_t)snprintf(out + used, API_MESSAGE_MAX - used, "; %s%s%s",
			                         param ? param : "", param ? ": " : "", emsg);
		}
	}
	json_object_put(o);
	excerpt = api_excerpt(out, strlen(out), API_MESSAGE_MAX);
	free(out);
	return excerpt;
}

static void api_error_set(struct api_error *err, long status, char *message)
{
	const char *hint = api_hint(status);

	err->status = status;
	err->message = message;
	err->hint = hint ? xstrdup(hint) : NULL;
}

/* What to do about a failure on the way to the service: TLS and proxies have their own. */
static char *api_transport_hint(const struct api *a, const struct http_response *resp)
{
	const char *conf = a && a->config_file ? a->config_file : "snapbuildd.conf";

	switch (resp->failure) {
	case HTTP_FAILURE_TLS_UNTRUSTED:
		return xasprintf("the daemon does not trust the authority that signed this "
		                 "certificate: if it is a private CA or a TLS-inspecting "
		                 "proxy's, put that CA certificate (PEM) in a file and set "
		                 "ca_file in %s, then restart the daemon",
		                 conf);
	case HTTP_FAILURE_TLS_EXPIRED:
		return xstrdup("the certificate is outside its validity period: check this "
		               "machine's clock, or tell whoever runs that server");
	case HTTP_FAILURE_TLS_NAME:
		return xasprintf("the certificate is for another host name: check base_url and "
		                 "builder_url (TOGETHER_BASE_URL) in %s, or the proxy",
		                 conf);
	case HTTP_FAILURE_TLS:
		return xasprintf("check base_url (TOGETHER_BASE_URL) and ca_file in %s", conf);
	case HTTP_FAILURE_PROXY:
		return xasprintf("check that the proxy runs and allows CONNECT to the service, or "
		                 "set proxy and no_proxy in %s (without proxy there, https_proxy "
		                 "and no_proxy in the daemon's environment apply)",
		                 conf);
	default:
		return NULL;
	}
}

static void api_error_from_response(struct api_error *err, const struct api *a,
                                    const struct http_response *resp)
{
	char *hint;

	if (resp->error) {
		api_error_set(err, 0, xstrdup(resp->error));
		if ((hint = api_transport_hint(a, resp)) != NULL) {
			free(err->hint);
			err->hint = hint;
		}
	} else
		api_error_set(err, resp->status,
		              api_body_message(resp->status, resp->body, resp->body_len));
}

static void api_error_clear(struct api_error *err)
{
	free(err->message);
	free(err->hint);
	memset(err, 0, sizeof(*err));
}

static bool api_status_retryable(long status)
{
	return status == 408 || status == 429 || (status >= 500 && status < 600);
}

/* Retry-After in milliseconds (delta-seconds or an HTTP date), or -1. */
static long api_retry_after_ms(const char *v)
{
	struct tm tm = {0};
	const char *end;
	long long secs = 0;
	time_t when;

	if (v == NULL || *v == '\0')
		return -1;
	if (isdigit((unsigned char)*v)) {
		for (; isdigit((unsigned char)*v); v++)
			secs = secs < 1000000 ? secs * 10 + (*v - '0') : secs;
		return *v == '\0' ? (long)(secs * 1000) : -1;
	}
	end = strptime(v, "%a, %d %b %Y %H:%M:%S GMT", &tm);
	if (end == NULL || *end != '\0')
		return -1;
	when = timegm(&tm);
	return when > time(NULL) ? (long)(when - time(NULL)) * 1000 : 0;
}

static long api_delay_ms(const struct api_op *op, long base_ms, const char *retry_after)
{
	long ra = api_retry_after_ms(retry_after);

	if (ra > op->a->timing.retry_after_cap_ms)
		ra = op->a->timing.retry_after_cap_ms;
	return ra > base_ms ? ra : base_ms;
}

/* The operation's series in snapbuild_api_requests_total and _retries_total. */
static enum metrics_api api_metric(const struct api_op *op)
{
	switch (op->kind) {
	case API_SUBMIT:
		return METRICS_API_SUBMIT;
	case API_FOLLOW:
		return METRICS_API_LOGS;
	case API_STATUS:
		return METRICS_API_STATUS;
	case API_DELETE:
		return METRICS_API_DELETE;
	case API_MGMT:
		break;
	}
	return METRICS_API_MANAGEMENT;
}

static void api_schedule(struct api_op *op, long ms)
{
	struct timeval tv = {ms / 1000, (ms % 1000) * 1000};

	evtimer_add(op->timer, &tv);
}

/* ---- operations ---- */

static void api_timer_cb(evutil_socket_t fd, short kind, void *arg);
static void follow_stall_cb(evutil_socket_t fd, short kind, void *arg);

static struct api_op *api_op_new(struct api *a, enum api_kind kind, void *arg)
{
	struct api_op *op = xcalloc(1, sizeof(*op));

	op->a = a;
	op->kind = kind;
	op->arg = arg;
	op->max_attempts = API_ATTEMPTS;
	op->retry = API_RETRY_ALL;
	op->timeout_ms = a->timing.request_timeout_ms;
	op->low_speed_s = API_LOW_SPEED_S;
	op->timer = evtimer_new(a->base, api_timer_cb, op);
	if (op->timer == NULL)
		fatalx("api: evtimer_new failed");
	LIST_INSERT_HEAD(&a->ops, op, entry);
	return op;
}

static void api_op_free(struct api_op *op)
{
	LIST_REMOVE(op, entry);
	http_cancel(op->xfer);
	event_free(op->timer);
	if (op->stall)
		event_free(op->stall);
	sse_parser_free(op->sse);
	free(op->method);
	free(op->url);
	free(op->body);
	for (size_t i = 0; i < op->nparts; i++)
		free(op->part_values[i]);
	free(op->find_key);
	free(op->find_value);
	free(op->resume_id);
	free(op->end_error);
	free(op->seen);
	for (size_t i = 0; i < op->nheld; i++) {
		free(op->held[i].text);
		free(op->held[i].id);
	}
	free(op->held);
	free(op);
}

void api_op_cancel(struct api_op *op)
{
	if (op == NULL || op->cancelled || op->finishing)
		return;
	op->cancelled = true;
	http_cancel(op->xfer);
	op->xfer = NULL;
	evtimer_del(op->timer);
	if (op->stall)
		evtimer_del(op->stall);
	if (op->busy == 0)
		api_op_free(op);
}

/* Brackets a call into the owner, who may cancel the op meanwhile. */
static void api_op_enter(struct api_op *op)
{
	op->busy++;
}

/* False when the owner cancelled the op, which is then freed: do not touch it. */
static bool api_op_leave(struct api_op *op)
{
	if (--op->busy == 0 && op->cancelled) {
		api_op_free(op);
		return false;
	}
	return !op->cancelled;
}

/* The final callback for request/response operations; frees the op. */
static void api_finish(struct api_op *op, const struct api_error *err, long status,
                       json_object *body)
{
	struct api_error shaped = {0};
	json_object *result = body;

	op->finishing = true;
	switch (op->kind) {
	case API_SUBMIT: {
		const char *id = api_jstr(body, "build_id");
		if (err == NULL && (id == NULL || *id == '\0' || strlen(id) > 256)) {
			api_error_set(&shaped, 0,
			              xstrdup("the builder accepted the build but "
			                      "answered without a build_id"));
			err = &shaped;
		}
		op->done.submit(op->arg, err, err ? NULL : id);
		break;
	}
	case API_STATUS:
		if (err == NULL && !json_object_is_type(body, json_type_object)) {
			api_error_set(&shaped, 0,
			              xstrdup("the builder's status answer is not a JSON object"));
			err = &shaped;
		}
		op->done.status(op->arg, err, err ? NULL : body);
		break;
	case API_DELETE:
		op->done.confirm(op->arg, err);
		break;
	case API_MGMT:
		if (op->shape == API_SHAPE_RAW) {
			op->done.mgmt(op->arg, err, status, body);
			break;
		}
		if (op->shape == API_SHAPE_NONE) {
			op->done.confirm(op->arg, err);
			break;
		}
		if (err == NULL && op->shape == API_SHAPE_FIND) {
			json_object *data;
			result = NULL;
			if (!json_object_object_get_ex(body, "data", &data) ||
			    !json_object_is_type(data, json_type_array)) {
				api_error_set(&shaped, 0,
				              xstrdup("the snapshot list has no data array"));
				err = &shaped;
			}
			for (size_t i = 0;
			     err == NULL && result == NULL && i < json_object_array_length(data);
			     i++) {
				json_object *s = json_object_array_get_idx(data, i), *tags;
				/* a service that ignored the filter must not yield a stranger */
				if (json_object_object_get_ex(s, "tags", &tags)) {
					const char *v = api_jstr(tags, op->find_key);
					if (v && strcmp(v, op->find_value) == 0)
						result = s;
				}
			}
		} else if (err == NULL &&
		           (!json_object_is_type(body, json_type_object) ||
		            (op->shape == API_SHAPE_SNAPSHOT && api_jstr(body, "id") == NULL))) {
			api_error_set(&shaped, 0,
			              xstrdup("the API answered without the expected object"));
			err = &shaped;
		}
		op->done.object(op->arg, err, err ? NULL : result);
		break;
	case API_FOLLOW:
		abort();
	}
	api_error_clear(&shaped);
	api_op_free(op);
}

/* Whether a 2xx answer's body matters to the caller (and must then be JSON). */
static bool api_wants_body(const struct api_op *op)
{
	return op->kind == API_SUBMIT || op->kind == API_STATUS ||
	       (op->kind == API_MGMT && op->shape != API_SHAPE_NONE);
}

static void api_http_done_cb(void *arg, const struct http_response *resp)
{
	struct api_op *op = arg;
	struct api_error err = {0};
	json_object *body = NULL;
	bool retryable;

	op->xfer = NULL;
	metrics_api_request(api_metric(op), resp->error ? 0 : resp->status);
	if (resp->error == NULL && resp->status >= 200 && resp->status < 300) {
		if (resp->body_len > 0 && api_wants_body(op) &&
		    (body = api_parse_json(resp->body, resp->body_len)) == NULL) {
			char *ex = api_excerpt(resp->body, resp->body_len, API_EXCERPT_MAX);
			api_error_set(&err, 0,
			              xasprintf("the API answered HTTP %ld with a body that is not "
			                        "JSON: %s",
			                        resp->status, ex));
			free(ex);
		}
		api_finish(op, err.message ? &err : NULL, resp->status, body);
		goto out;
	}
	if (op->kind == API_DELETE && resp->error == NULL && resp->status == 404) {
		api_finish(op, NULL, resp->status, NULL);
		goto out;
	}
	if (op->retry == API_RETRY_ALL)
		retryable = resp->error != NULL || api_status_retryable(resp->status);
	else
		retryable = resp->error == NULL && resp->status == 429;
	if (retryable && op->attempt < op->max_attempts) {
		long delay = op->a->timing.backoff_base_ms << (op->attempt - 1);
		if (op->a->timing.backoff_jitter_ms > 0)
			delay +=
			    (long)arc4random_uniform((uint32_t)op->a->timing.backoff_jitter_ms + 1);
		delay = api_delay_ms(op, delay, resp->retry_after);
		log_debug("api: %s %s: %s; attempt %d of %d in %ld ms", op->method, op->url,
		          resp->error ? resp->error : "retryable status", op->attempt + 1,
		          op->max_attempts, delay);
		metrics_api_retry(api_metric(op));
		api_schedule(op, delay);
		return;
	}
	api_error_from_response(&err, op->a, resp);
	api_finish(op, &err, resp->status, NULL);
out:
	api_error_clear(&err);
	json_object_put(body);
}

static void api_progress_cb(void *arg, uint64_t sent, uint64_t total)
{
	struct api_op *op = arg;

	api_op_enter(op);
	op->progress_cb(op->arg, sent, total);
	api_op_leave(op);
}

static void api_send(struct api_op *op)
{
	const char *headers[] = {"Accept: application/json", NULL};
	struct http_request req = {
	    .method = op->method,
	    .url = op->url,
	    .bearer_token = op->a->key,
	    .headers = headers,
	    .body = op->body,
	    .body_len = op->body ? strlen(op->body) : 0,
	    .content_type = op->body ? "application/json" : NULL,
	    .parts = op->nparts ? op->parts : NULL,
	    .nparts = op->nparts,
	    /* What the service must not see twice gets a connection of its own (see
	     * http.h); everything else is retried here anyway after a transport error,
	     * so it shares connections, multiplexed on HTTP/2. */
	    .fresh_connect = op->retry != API_RETRY_ALL,
	    .timeout_ms = op->timeout_ms,
	    .low_speed_time_s = op->low_speed_s,
	    .on_upload_progress = op->progress_cb ? api_progress_cb : NULL,
	};

	op->attempt++;
	op->xfer = http_start(op->a->http, &req, api_http_done_cb, op);
}

static void api_timer_cb(evutil_socket_t fd, short kind, void *arg)
{
	struct api_op *op = arg;

	(void)fd;
	(void)kind;
	if (op->kind != API_FOLLOW) {
		api_send(op);
	} else if (!op->stream_ended) {
		follow_connect(op);
	} else {
		op->finishing = true;
		op->cbs.on_end(op->arg, NULL, op->end_done, op->end_error);
		api_op_free(op);
	}
}

/* ---- builder API ---- */

static struct api_op *api_request_new(struct api *a, enum api_kind kind, const char *method,
                                      char *url, void *arg)
{
	struct api_op *op = api_op_new(a, kind, arg);

	op->method = xstrdup(method);
	op->url = url;
	return op;
}

static char *api_build_url(struct api *a, const char *build_id, const char *suffix)
{
	char *id = api_escape(build_id);
	char *url = xasprintf("%s/builds/%s%s", a->builder_url, id, suffix);

	free(id);
	return url;
}

static void api_add_part(struct api_op *op, const char *name, const char *value)
{
	op->part_values[op->nparts] = xstrdup(value);
	op->parts[op->nparts].name = name;
	op->parts[op->nparts].value = op->part_values[op->nparts];
	op->nparts++;
}

struct api_op *api_build_submit(struct api *a, const struct api_submit *s,
                                void (*progress_cb)(void *arg, uint64_t sent, uint64_t total),
                                void (*done_cb)(void *arg, const struct api_error *err,
                                                const char *build_id),
                                void *arg)
{
	struct api_op *op =
	    api_request_new(a, API_SUBMIT, "POST", xasprintf("%s/builds", a->builder_url), arg);
	struct http_part *ctx;

	op->done.submit = done_cb;
	op->progress_cb = progress_cb;
	op->timeout_ms = a->timing.upload_timeout_ms;
	op->low_speed_s = API_UPLOAD_LOW_SPEED_S;
	api_add_part(op, "image_name", s->image_name);
	api_add_part(op, "dockerfile", s->dockerfile ? s->dockerfile : "Dockerfile");
	api_add_part(op, "build_args", s->build_args_json ? s->build_args_json : "{}");
	api_add_part(op, "nydus_convert", "true");
	if (s->cache_key)
		api_add_part(op, "cache_key", s->cache_key);
	op->part_values[op->nparts] = xstrdup(s->archive_path);
	ctx = &op->parts[op->nparts++];
	ctx->name = "context";
	ctx->file_path = op->part_values[op->nparts - 1];
	ctx->filename = "context.tar.gz";
	ctx->content_type = "application/gzip";
	api_send(op);
	return op;
}

struct api_op *api_build_status(struct api *a, const char *build_id,
                                void (*done_cb)(void *arg, const struct api_error *err,
                                                json_object *status),
                                void *arg)
{
	struct api_op *op =
	    api_request_new(a, API_STATUS, "GET", api_build_url(a, build_id, ""), arg);

	op->done.status = done_cb;
	api_send(op);
	return op;
}

struct api_op *api_build_delete(struct api *a, const char *build_id,
                                void (*done_cb)(void *arg, const struct api_error *err), void *arg)
{
	struct api_op *op =
	    api_request_new(a, API_DELETE, "DELETE", api_build_url(a, build_id, ""), arg);

	op->done.confirm = done_cb;
	api_send(op);
	return op;
}

/* ---- the log stream ---- */

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
		api_error_from_response(&err, op->a, resp);
		why = resp->status == 404
		          ? xstrdup("the build's log is not there yet (HTTP 404)")
		          : xasprintf("cannot read the log stream (%s)", err.message);
		follow_retry(op, why,
		             api_delay_ms(op, op->a->timing.follow_retry_ms, resp->retry_after),
		             &err);
	} else {
		api_error_from_response(&err, op->a, resp);
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
	follow_connect(op);
	return op;
}

void api_follow_seed(struct api_op *op, const char *text, size_t len)
{
	follow_seen_add(op, text, len);
	op->matching = true;
}

/* ---- management API ---- */

static struct api_op *api_mgmt_new(struct api *a, const char *method, const char *path,
                                   json_object *body, bool retry, enum api_shape shape, void *arg)
{
	struct api_op *op =
	    api_request_new(a, API_MGMT, method, xasprintf("%s%s", a->base_url, path), arg);

	op->shape = shape;
	op->retry = retry ? API_RETRY_ALL : API_RETRY_429;
	if (body)
		op->body = xstrdup(json_object_to_json_string_ext(body, JSON_C_TO_STRING_PLAIN));
	return op;
}

struct api_op *api_mgmt_call(struct api *a, const char *method, const char *path_and_query,
                             json_object *body, bool retry,
                             void (*done_cb)(void *arg, const struct api_error *err, long status,
                                             json_object *body),
                             void *arg)
{
	struct api_op *op =
	    api_mgmt_new(a, method, path_and_query, body, retry, API_SHAPE_RAW, arg);

	op->done.mgmt = done_cb;
	api_send(op);
	return op;
}

struct api_op *api_snapshot_create(
    struct api *a, const char *image, const char *arch, int64_t ttl, json_object *tags,
    void (*done_cb)(void *arg, const struct api_error *err, json_object *snapshot), void *arg)
{
	json_object *body = json_object_new_object();
	struct api_op *op;

	json_object_object_add(body, "image", json_object_new_string(image));
	if (arch)
		json_object_object_add(body, "architecture", json_object_new_string(arch));
	if (ttl > 0)
		json_object_object_add(body, "ttl", json_object_new_int64(ttl));
	if (tags)
		json_object_object_add(body, "tags", json_object_get(tags));
	op = api_mgmt_new(a, "POST", "/v1/snapshots", body, false, API_SHAPE_SNAPSHOT, arg);
	op->done.object = done_cb;
	json_object_put(body);
	api_send(op);
	return op;
}

struct api_op *api_snapshot_find_by_tag(struct api *a, const char *key, const char *value,
                                        void (*done_cb)(void *arg, const struct api_error *err,
                                                        json_object *snapshot_or_null),
                                        void *arg)
{
	char *k = api_escape(key), *v = api_escape(value);
	char *path = xasprintf("/v1/snapshots?tags%%5B%s%%5D=%s", k, v);
	struct api_op *op = api_mgmt_new(a, "GET", path, NULL, true, API_SHAPE_FIND, arg);

	op->done.object = done_cb;
	op->find_key = xstrdup(key);
	op->find_value = xstrdup(value);
	free(k);
	free(v);
	free(path);
	api_send(op);
	return op;
}

struct api_op *api_snapshot_alias(struct api *a, const char *snapshot_id, const char *alias,
                                  void (*done_cb)(void *arg, const struct api_error *err),
                                  void *arg)
{
	json_object *body = json_object_new_object();
	char *id = api_escape(snapshot_id);
	char *path = xasprintf("/v1/snapshots/%s/aliases", id);
	struct api_op *op;

	json_object_object_add(body, "alias", json_object_new_string(alias));
	op = api_mgmt_new(a, "POST", path, body, true, API_SHAPE_NONE, arg);
	op->done.confirm = done_cb;
	json_object_put(body);
	free(path);
	free(id);
	api_send(op);
	return op;
}

struct api_op *api_registry_credentials(struct api *a,
                                        void (*done_cb)(void *arg, const struct api_error *err,
                                                        json_object *cred),
                                        void *arg)
{
	struct api_op *op = api_mgmt_new(a, "POST", "/v1/container-registries/default/credentials",
	                                 NULL, true, API_SHAPE_CRED, arg);

	op->done.object = done_cb;
	api_send(op);
	return op;
}

/* ---- the client ---- */

struct api *api_new(struct http *h, const char *base_url, const char *builder_url,
                    const char *api_key)
{
	struct api *a = xcalloc(1, sizeof(*a));

	a->http = h;
	a->base = http_event_base(h);
	a->base_url = api_strip_slashes(base_url);
	a->builder_url =
	    builder_url ? api_strip_slashes(builder_url) : api_builder_url_from_base(base_url);
	a->key = api_key ? xstrdup(api_key) : NULL;
	a->timing = api_default_timing;
	LIST_INIT(&a->ops);
	return a;
}

static void api_free_key(struct api *a)
{
	if (a->key) {
		explicit_bzero(a->key, strlen(a->key));
		free(a->key);
		a->key = NULL;
	}
}

void api_set_key(struct api *a, const char *api_key)
{
	api_free_key(a);
	a->key = api_key ? xstrdup(api_key) : NULL;
}

void api_set_config_file(struct api *a, const char *path)
{
	free(a->config_file);
	a->config_file = path ? xstrdup(path) : NULL;
}

void api_set_timing(struct api *a, const struct api_timing *t)
{
	a->timing = *t;
}

void api_get_timing(const struct api *a, struct api_timing *t)
{
	*t = a->timing;
}

void api_set_stall_timeout(struct api *a, long ms)
{
	a->timing.stall_ms = ms;
}

void api_free(struct api *a)
{
	struct api_op *op;

	if (a == NULL)
		return;
	while ((op = LIST_FIRST(&a->ops)) != NULL)
		api_op_free(op);
	api_free_key(a);
	free(a->base_url);
	free(a->builder_url);
	free(a->config_file);
	free(a);
}
