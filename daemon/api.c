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

#include "api-int.h"

static const struct api_timing api_default_timing = {
    .backoff_base_ms = 500,
    .backoff_jitter_ms = 250,
    .follow_retry_ms = 1000,
    .retry_after_cap_ms = 60000,
    .stall_ms = 600000,
    .request_timeout_ms = 60000,
    .upload_timeout_ms = 0,
};

static void api_send(struct api_op *op);

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

json_object *api_parse_json(const char *body, size_t len)
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
	/* The key and the URLs are the daemon's: a variable in the user's shell changes
	 * nothing, so the hints say where the daemon's come from. */
	if (status == 0)
		return "cannot reach the API, or it timed out: check the network and the daemon's "
		       "base_url (snapbuildd.conf, or TOGETHER_BASE_URL in the daemon's "
		       "environment; `snapbuild daemon info` shows it)";
	if (status == 401)
		return "the daemon's API key was refused: give the daemon a valid one "
		       "(/etc/snapbuild/api-key, api_key_file, or TOGETHER_API_KEY in the "
		       "daemon's environment, not your shell's) and restart it; `snapbuild "
		       "daemon info` says where its key came from";
	if (status == 403)
		return "the daemon's API key is not allowed to do this: check its scope";
	if (status == 404)
		return "not found: check the id or alias; if it is right, the daemon's base_url "
		       "is wrong (snapbuildd.conf, or TOGETHER_BASE_URL in the daemon's "
		       "environment; `snapbuild daemon info` shows it)";
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

void api_error_set(struct api_error *err, long status, char *message)
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

/* "host/path" of url: where a request went, without scheme, query or credentials. */
static char *api_where(const char *url)
{
	const char *p = strstr(url, "://"), *at;
	size_t n;

	p = p ? p + 3 : url;
	n = strcspn(p, "?#");
	at = memchr(p, '@', strcspn(p, "/"));
	if (at != NULL) {
		n -= (size_t)(at + 1 - p);
		p = at + 1;
	}
	return xstrndup(p, n);
}

/*
 * A refusal names the status and where it came from, so that a wrong base URL (404 from
 * a path that is not the API's) or a wrong key (401) is plain from the message alone.
 */
void api_error_from_response(struct api_error *err, const struct api_op *op,
                             const struct http_response *resp)
{
	char *hint, *msg, *where, *out;
	size_t skip;

	if (resp->error) {
		api_error_set(err, 0, xstrdup(resp->error));
		if ((hint = api_transport_hint(op->a, resp)) != NULL) {
			free(err->hint);
			err->hint = hint;
		}
		return;
	}
	msg = api_body_message(resp->status, resp->body, resp->body_len);
	where = api_where(op->url);
	/* the body's own "HTTP 404: ..." when it had no message: the status once */
	out = xasprintf("HTTP %ld", resp->status);
	skip = strncmp(msg, out, strlen(out)) == 0 ? strlen(out) : 0;
	if (skip && strncmp(msg + skip, ": ", 2) == 0)
		skip += 2;
	free(out);
	out = msg[skip] ? xasprintf("HTTP %ld from %s: %s", resp->status, where, msg + skip)
	                : xasprintf("HTTP %ld from %s", resp->status, where);
	api_error_set(err, resp->status, out);
	free(msg);
	free(where);
}

void api_error_clear(struct api_error *err)
{
	free(err->message);
	free(err->hint);
	memset(err, 0, sizeof(*err));
}

bool api_status_retryable(long status)
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

long api_delay_ms(const struct api_op *op, long base_ms, const char *retry_after)
{
	long ra = api_retry_after_ms(retry_after);

	if (ra > op->a->timing.retry_after_cap_ms)
		ra = op->a->timing.retry_after_cap_ms;
	return ra > base_ms ? ra : base_ms;
}

/* The operation's series in snapbuild_api_requests_total and _retries_total. */
enum metrics_api api_metric(const struct api_op *op)
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

void api_schedule(struct api_op *op, long ms)
{
	struct timeval tv = {ms / 1000, (ms % 1000) * 1000};

	evtimer_add(op->timer, &tv);
}

/* ---- operations ---- */

static void api_timer_cb(evutil_socket_t fd, short kind, void *arg);

struct api_op *api_op_new(struct api *a, enum api_kind kind, void *arg)
{
	struct api_op *op = xcalloc(1, sizeof(*op));

	op->a = a;
	op->kind = kind;
	op->arg = arg;
	op->max_attempts = API_ATTEMPTS;
	op->retry = API_RETRY_ALL;
	op->timeout_ms = a->timing.request_timeout_ms;
	op->low_speed_s = API_LOW_SPEED_S;
	op->next = api_send;
	op->timer = evtimer_new(a->base, api_timer_cb, op);
	if (op->timer == NULL)
		fatalx("api: evtimer_new failed");
	LIST_INSERT_HEAD(&a->ops, op, entry);
	return op;
}

void api_op_free(struct api_op *op)
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
void api_op_enter(struct api_op *op)
{
	op->busy++;
}

/* False when the owner cancelled the op, which is then freed: do not touch it. */
bool api_op_leave(struct api_op *op)
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
	api_error_from_response(&err, op, resp);
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
	op->next(op);
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

char *api_build_url(struct api *a, const char *build_id, const char *suffix)
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
