/*
 * The simulator's HTTP layer over libevent's evhttp: every request becomes a
 * struct sim_req (decoded path segments, decoded query), is written to the request
 * log, waits out the injected latency, passes the bearer-token check (all routes
 * but /_sim/) and the generic request_fail fault, and is routed to the builder,
 * management or introspection handlers.  Handlers answer through the sim_reply_*
 * helpers, which also free the request; a handler that answers later (the SSE log
 * stream, a delayed or dropped answer) holds the request and learns through
 * on_close when the client goes away first.
 *
 * libevent detaches an unfinished request from a connection the client closed and
 * leaves it to us, so the close callback frees such a request itself.
 */
#include "sim.h"

#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include <event2/buffer.h>
#include <event2/keyvalq_struct.h>

#include "util.h"

#define SIM_REQLOG_MAX 200000

struct sim_reqlog_entry {
	uint64_t seq;
	double at;
	const char *method;
	char *uri;
	char *path;
	int status;   /* 0 until answered */
	bool dropped; /* closed without an answer, on purpose */
	bool client_closed;
	bool authorized;
	size_t body_size;
	struct json_object *headers;
};

struct sim_reqlog {
	struct sim_reqlog_entry *v;
	size_t n, cap;
	uint64_t next_seq;
	uint64_t evicted;
};

/* Request headers the log keeps (Authorization masked). */
static const char *const sim_logged_headers[] = {
    "Authorization", "Content-Type", "Content-Length",    "Accept",
    "Last-Event-ID", "User-Agent",   "Transfer-Encoding", "Idempotency-Key",
    "Expect",        "Connection",   "Accept-Encoding",   NULL};

void sim_time_format(double t, char out[32])
{
	time_t secs = (time_t)t;
	struct tm tm;
	int ms = (int)((t - (double)secs) * 1000.0);
	if (ms < 0)
		ms = 0;
	if (ms > 999)
		ms = 999;
	gmtime_r(&secs, &tm);
	size_t n = strftime(out, 32, "%Y-%m-%dT%H:%M:%S", &tm);
	snprintf(out + n, 32 - n, ".%03dZ", ms);
}

const char *sim_req_method_name(const struct sim_req *r)
{
	switch (r->method) {
	case EVHTTP_REQ_GET:
		return "GET";
	case EVHTTP_REQ_POST:
		return "POST";
	case EVHTTP_REQ_HEAD:
		return "HEAD";
	case EVHTTP_REQ_PUT:
		return "PUT";
	case EVHTTP_REQ_DELETE:
		return "DELETE";
	case EVHTTP_REQ_OPTIONS:
		return "OPTIONS";
	case EVHTTP_REQ_TRACE:
		return "TRACE";
	case EVHTTP_REQ_CONNECT:
		return "CONNECT";
	case EVHTTP_REQ_PATCH:
		return "PATCH";
	}
	return "UNKNOWN";
}

/* --- request log --- */

static struct sim_reqlog_entry *sim_reqlog_find(struct sim *sim, uint64_t seq)
{
	struct sim_reqlog *log = sim->reqlog;
	size_t lo = 0, hi = log->n;
	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;
		if (log->v[mid].seq < seq)
			lo = mid + 1;
		else
			hi = mid;
	}
	return lo < log->n && log->v[lo].seq == seq ? &log->v[lo] : NULL;
}

static void sim_reqlog_entry_clear(struct sim_reqlog_entry *e)
{
	free(e->uri);
	free(e->path);
	json_object_put(e->headers);
}

static void sim_reqlog_add(struct sim_req *r)
{
	struct sim_reqlog *log = r->sim->reqlog;
	if (log->n == SIM_REQLOG_MAX) {
		sim_reqlog_entry_clear(&log->v[0]);
		memmove(log->v, log->v + 1, (log->n - 1) * sizeof(*log->v));
		log->n--;
		log->evicted++;
	}
	if (log->n == log->cap) {
		log->cap = log->cap ? log->cap * 2 : 256;
		log->v = xrealloc(log->v, log->cap * sizeof(*log->v));
	}
	struct sim_reqlog_entry *e = &log->v[log->n++];
	memset(e, 0, sizeof(*e));
	e->seq = r->seq = ++log->next_seq;
	e->at = now_seconds();
	e->method = sim_req_method_name(r);
	e->uri = xstrdup(evhttp_request_get_uri(r->req));
	e->path = xstrdup(r->path);
	e->body_size = evbuffer_get_length(evhttp_request_get_input_buffer(r->req));
	e->headers = json_object_new_object();
	for (size_t i = 0; sim_logged_headers[i] != NULL; i++) {
		const char *v = sim_req_header(r, sim_logged_headers[i]);
		if (v == NULL)
			continue;
		if (strcmp(sim_logged_headers[i], "Authorization") == 0)
			v = strncasecmp(v, "Bearer ", 7) == 0 ? "Bearer ***" : "***";
		json_object_object_add(e->headers, sim_logged_headers[i],
		                       json_object_new_string(v));
	}
}

static void sim_reqlog_status(struct sim_req *r, int status)
{
	struct sim_reqlog_entry *e = sim_reqlog_find(r->sim, r->seq);
	if (e != NULL && e->status == 0)
		e->status = status;
}

struct json_object *sim_reqlog_json(const struct sim *sim)
{
	const struct sim_reqlog *log = sim->reqlog;
	struct json_object *arr = json_object_new_array_ext((int)log->n);
	for (size_t i = 0; i < log->n; i++) {
		const struct sim_reqlog_entry *e = &log->v[i];
		struct json_object *o = json_object_new_object();
		char at[32];
		sim_time_format(e->at, at);
		json_object_object_add(o, "seq", json_object_new_int64((int64_t)e->seq));
		json_object_object_add(o, "at", json_object_new_string(at));
		json_object_object_add(o, "method", json_object_new_string(e->method));
		json_object_object_add(o, "path", json_object_new_string(e->path));
		json_object_object_add(o, "uri", json_object_new_string(e->uri));
		json_object_object_add(o, "status", json_object_new_int(e->status));
		json_object_object_add(o, "dropped", json_object_new_boolean(e->dropped));
		json_object_object_add(o, "client_closed",
		                       json_object_new_boolean(e->client_closed));
		json_object_object_add(o, "authorized", json_object_new_boolean(e->authorized));
		json_object_object_add(o, "body_size",
		                       json_object_new_int64((int64_t)e->body_size));
		struct json_object *lei = NULL;
		json_object_object_get_ex(e->headers, "Last-Event-ID", &lei);
		json_object_object_add(o, "last_event_id", json_object_get(lei));
		json_object_object_add(o, "headers", json_object_get(e->headers));
		json_object_array_add(arr, o);
	}
	return arr;
}

void sim_reqlog_clear(struct sim *sim)
{
	struct sim_reqlog *log = sim->reqlog;
	for (size_t i = 0; i < log->n; i++)
		sim_reqlog_entry_clear(&log->v[i]);
	log->n = 0;
}

/* --- requests --- */

static void sim_req_free(struct sim_req *r)
{
	if (r == NULL)
		return;
	for (size_t i = 0; i < r->nseg; i++)
		free(r->seg[i]);
	free(r->seg);
	for (size_t i = 0; i < r->nquery; i++) {
		free(r->query[i].key);
		free(r->query[i].value);
	}
	free(r->query);
	free(r->path);
	if (r->timer != NULL)
		event_free(r->timer);
	free(r);
}

const char *sim_req_query(const struct sim_req *r, const char *key)
{
	for (size_t i = 0; i < r->nquery; i++)
		if (strcmp(r->query[i].key, key) == 0)
			return r->query[i].value;
	return NULL;
}

const char *sim_req_header(const struct sim_req *r, const char *name)
{
	return evhttp_find_header(evhttp_request_get_input_headers(r->req), name);
}

const char *sim_req_body(struct sim_req *r, size_t *len)
{
	struct evbuffer *in = evhttp_request_get_input_buffer(r->req);
	*len = evbuffer_get_length(in);
	if (*len == 0)
		return "";
	return (const char *)evbuffer_pullup(in, -1);
}

struct json_object *sim_req_json_body(struct sim_req *r)
{
	size_t len;
	const char *body = sim_req_body(r, &len);
	struct json_tokener *tok = json_tokener_new_ex(64);
	struct json_object *obj = NULL;
	size_t i = 0;
	if (len == 0) {
		sim_reply_bad_param(r, "body", "required", "a JSON request body is required");
		goto out;
	}
	obj = json_tokener_parse_ex(tok, body, (int)(len > 0x7fffffff ? 0x7fffffff : len));
	if (obj != NULL)
		i = json_tokener_get_parse_end(tok);
	while (i < len && (body[i] == ' ' || body[i] == '\n' || body[i] == '\r' || body[i] == '\t'))
		i++;
	if (obj == NULL || json_tokener_get_error(tok) != json_tokener_success || i != len) {
		json_object_put(obj);
		obj = NULL;
		sim_reply_bad_param(r, "body", "invalid_json",
		                    "the request body is not valid JSON");
		goto out;
	}
	if (!json_object_is_type(obj, json_type_object)) {
		json_object_put(obj);
		obj = NULL;
		sim_reply_bad_param(r, "body", "invalid_type",
		                    "the request body must be a JSON object");
	}
out:
	json_tokener_free(tok);
	return obj;
}

/* Splits the path into decoded segments and the query into decoded pairs. */
static int sim_req_parse(struct sim_req *r)
{
	const struct evhttp_uri *uri = evhttp_request_get_evhttp_uri(r->req);
	const char *path = uri ? evhttp_uri_get_path(uri) : NULL;
	const char *query = uri ? evhttp_uri_get_query(uri) : NULL;
	r->path = xstrdup(path && path[0] ? path : "/");
	const char *p = r->path[0] == '/' ? r->path + 1 : r->path;
	while (*p != '\0') {
		size_t n = strcspn(p, "/");
		char *raw = xstrndup(p, n);
		size_t dlen = 0;
		char *dec = evhttp_uridecode(raw, 0, &dlen);
		free(raw);
		if (dec == NULL || strlen(dec) != dlen) {
			free(dec);
			return -1;
		}
		r->seg = xrealloc(r->seg, (r->nseg + 1) * sizeof(*r->seg));
		r->seg[r->nseg++] = xstrdup(dec);
		free(dec);
		p += n;
		if (*p == '/') {
			p++;
			if (*p == '\0') {
				r->seg = xrealloc(r->seg, (r->nseg + 1) * sizeof(*r->seg));
				r->seg[r->nseg++] = xstrdup("");
			}
		}
	}
	while (query != NULL && *query != '\0') {
		size_t n = strcspn(query, "&");
		if (n > 0) {
			char *pair = xstrndup(query, n);
			char *eq = strchr(pair, '=');
			if (eq != NULL)
				*eq = '\0';
			size_t kl = 0, vl = 0;
			char *k = evhttp_uridecode(pair, 1, &kl);
			char *v = evhttp_uridecode(eq ? eq + 1 : "", 1, &vl);
			free(pair);
			if (k == NULL || v == NULL || strlen(k) != kl || strlen(v) != vl) {
				free(k);
				free(v);
				return -1;
			}
			r->query = xrealloc(r->query, (r->nquery + 1) * sizeof(*r->query));
			r->query[r->nquery].key = xstrdup(k);
			r->query[r->nquery].value = xstrdup(v);
			r->nquery++;
			free(k);
			free(v);
		}
		query += n;
		if (*query == '&')
			query++;
	}
	return 0;
}

/* --- answers --- */

struct json_object *sim_error_body(const char *code, const char *message,
                                   struct json_object *errors)
{
	struct json_object *o = json_object_new_object();
	json_object_object_add(o, "code", json_object_new_string(code));
	json_object_object_add(o, "message", json_object_new_string(message));
	json_object_object_add(o, "errors", errors ? errors : json_object_new_array());
	return o;
}

static void sim_req_unhold(struct sim_req *r)
{
	if (r->evcon != NULL)
		evhttp_connection_set_closecb(r->evcon, NULL, NULL);
}

void sim_reply_json_hdr(struct sim_req *r, int status, struct json_object *body,
                        const char *extra_header, const char *extra_value)
{
	struct evbuffer *buf = evbuffer_new();
	struct evkeyvalq *out = evhttp_request_get_output_headers(r->req);
	if (body != NULL) {
		const char *s = json_object_to_json_string_ext(
		    body, JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE);
		evbuffer_add(buf, s, strlen(s));
		evhttp_add_header(out, "Content-Type", "application/json");
	}
	if (extra_header != NULL)
		evhttp_add_header(out, extra_header, extra_value);
	if (r->sim->config.verbose)
		fprintf(stderr, "snapbuild-sim: %s %s -> %d\n", sim_req_method_name(r), r->path,
		        status);
	sim_reqlog_status(r, status);
	sim_req_unhold(r);
	evhttp_send_reply(r->req, status, NULL, buf);
	evbuffer_free(buf);
	json_object_put(body);
	sim_req_free(r);
}

void sim_reply_json(struct sim_req *r, int status, struct json_object *body)
{
	sim_reply_json_hdr(r, status, body, NULL, NULL);
}

void sim_reply_empty(struct sim_req *r, int status)
{
	sim_reply_json_hdr(r, status, NULL, NULL, NULL);
}

void sim_reply_raw(struct sim_req *r, int status, const char *content_type, const void *data,
                   size_t len)
{
	struct evbuffer *buf = evbuffer_new();
	evbuffer_add(buf, data, len);
	evhttp_add_header(evhttp_request_get_output_headers(r->req), "Content-Type", content_type);
	sim_reqlog_status(r, status);
	sim_req_unhold(r);
	evhttp_send_reply(r->req, status, NULL, buf);
	evbuffer_free(buf);
	sim_req_free(r);
}

void sim_reply_error(struct sim_req *r, int status, const char *code, const char *message)
{
	sim_reply_json(r, status, sim_error_body(code, message, NULL));
}

void sim_reply_bad_param(struct sim_req *r, const char *parameter, const char *code,
                         const char *message)
{
	struct json_object *errors = json_object_new_array();
	struct json_object *e = json_object_new_object();
	json_object_object_add(e, "parameter", json_object_new_string(parameter));
	json_object_object_add(e, "code", json_object_new_string(code));
	json_object_object_add(e, "message", json_object_new_string(message));
	json_object_array_add(errors, e);
	sim_reply_json(r, 400, sim_error_body("bad_request", message, errors));
}

/* --- held requests, drops and streams --- */

static void sim_req_conn_closed_cb(struct evhttp_connection *evcon, void *arg)
{
	struct sim_req *r = arg;
	struct sim_reqlog_entry *e = sim_reqlog_find(r->sim, r->seq);
	(void)evcon;
	if (e != NULL)
		e->client_closed = true;
	if (r->on_close != NULL)
		r->on_close(r->owner);
	/* An unfinished request the client left is detached and ours to free. */
	if (evhttp_request_get_connection(r->req) == NULL)
		evhttp_request_free(r->req);
	sim_req_free(r);
}

void sim_req_hold(struct sim_req *r, void (*on_close)(void *owner), void *owner)
{
	r->on_close = on_close;
	r->owner = owner;
	evhttp_connection_set_closecb(r->evcon, sim_req_conn_closed_cb, r);
}

static void sim_req_drop_cb(evutil_socket_t fd, short what, void *arg)
{
	struct sim_req *r = arg;
	struct evhttp_connection *evcon = r->evcon;
	(void)fd;
	(void)what;
	sim_req_unhold(r);
	sim_req_free(r);
	evhttp_connection_free(evcon);
}

void sim_req_drop(struct sim_req *r)
{
	struct sim_reqlog_entry *e = sim_reqlog_find(r->sim, r->seq);
	struct timeval now = {0, 0};
	if (e != NULL)
		e->dropped = true;
	/* Freed from the loop, never inside one of libevent's own callbacks. */
	sim_req_hold(r, NULL, NULL);
	if (r->timer != NULL)
		event_free(r->timer);
	r->timer = evtimer_new(r->sim->base, sim_req_drop_cb, r);
	evtimer_add(r->timer, &now);
}

void sim_reply_stream_start(struct sim_req *r, int status, const char *content_type)
{
	struct evkeyvalq *out = evhttp_request_get_output_headers(r->req);
	evhttp_add_header(out, "Content-Type", content_type);
	evhttp_add_header(out, "Cache-Control", "no-cache");
	evhttp_add_header(out, "X-Accel-Buffering", "no");
	sim_reqlog_status(r, status);
	evhttp_send_reply_start(r->req, status, NULL);
}

void sim_reply_stream_chunk(struct sim_req *r, struct evbuffer *buf,
                            void (*flushed)(struct evhttp_connection *, void *), void *arg)
{
	evhttp_send_reply_chunk_with_cb(r->req, buf, flushed, arg);
}

void sim_reply_stream_end(struct sim_req *r)
{
	sim_req_unhold(r);
	evhttp_send_reply_end(r->req);
	sim_req_free(r);
}

/* --- routing --- */

static bool sim_req_authorized(const struct sim_req *r)
{
	const char *h = sim_req_header(r, "Authorization");
	if (h == NULL || strncasecmp(h, "Bearer", 6) != 0 || (h[6] != ' ' && h[6] != '\t'))
		return false;
	h += 6;
	while (*h == ' ' || *h == '\t')
		h++;
	return strcmp(h, r->sim->config.api_key) == 0;
}

static bool sim_seg_is(const struct sim_req *r, size_t i, const char *s)
{
	return i < r->nseg && strcmp(r->seg[i], s) == 0;
}

static void sim_route_builds(struct sim_req *r)
{
	if (r->nseg == 1 && r->method == EVHTTP_REQ_POST)
		sim_builds_submit(r);
	else if (r->nseg == 2 && r->seg[1][0] != '\0' && r->method == EVHTTP_REQ_GET)
		sim_builds_status(r, r->seg[1]);
	else if (r->nseg == 2 && r->seg[1][0] != '\0' && r->method == EVHTTP_REQ_DELETE)
		sim_builds_cancel(r, r->seg[1]);
	else if (r->nseg == 3 && sim_seg_is(r, 2, "logs") && r->method == EVHTTP_REQ_GET)
		sim_builds_logs(r, r->seg[1]);
	else if (r->nseg <= 3 && (r->nseg < 3 || sim_seg_is(r, 2, "logs")))
		sim_reply_error(r, 405, "method_not_allowed", "method not allowed on this route");
	else
		sim_reply_error(r, 404, "not_found", "no such route");
}

static void sim_dispatch(struct sim_req *r)
{
	int status, retry_after;
	struct sim_reqlog_entry *e = sim_reqlog_find(r->sim, r->seq);
	bool authorized = sim_req_authorized(r);
	if (e != NULL)
		e->authorized = authorized;
	if (sim_seg_is(r, 0, "_sim")) {
		sim_introspect_route(r);
		return;
	}
	if (!authorized) {
		sim_reply_json_hdr(r, 401,
		                   sim_error_body("unauthorized",
		                                  "missing or invalid API key (expected "
		                                  "Authorization: Bearer <key>)",
		                                  NULL),
		                   "WWW-Authenticate", "Bearer");
		return;
	}
	if (sim_faults_take_rule(&r->sim->faults, sim_req_method_name(r), r->path, &status,
	                         &retry_after)) {
		char ra[32];
		snprintf(ra, sizeof(ra), "%d", retry_after);
		sim_reply_json_hdr(
		    r, status,
		    sim_error_body("injected_fault", "fault injected by snapbuild-sim", NULL),
		    retry_after >= 0 ? "Retry-After" : NULL, ra);
		return;
	}
	if (sim_seg_is(r, 0, "builds"))
		sim_route_builds(r);
	else if (sim_seg_is(r, 0, "v1"))
		sim_snapshots_route(r);
	else
		sim_reply_error(r, 404, "not_found", "no such route");
}

static void sim_latency_cb(evutil_socket_t fd, short what, void *arg)
{
	struct sim_req *r = arg;
	(void)fd;
	(void)what;
	sim_req_unhold(r);
	r->on_close = NULL;
	sim_dispatch(r);
}

static void sim_http_request_cb(struct evhttp_request *req, void *arg)
{
	struct sim *sim = arg;
	struct sim_req *r = xcalloc(1, sizeof(*r));
	r->sim = sim;
	r->req = req;
	r->evcon = evhttp_request_get_connection(req);
	r->method = evhttp_request_get_command(req);
	int parsed = sim_req_parse(r);
	sim_reqlog_add(r);
	if (parsed < 0) {
		sim_reply_error(r, 400, "bad_request", "malformed request path or query");
		return;
	}
	int latency = sim_faults_latency(sim);
	if (latency > 0 && !sim_seg_is(r, 0, "_sim")) {
		struct timeval tv = {latency / 1000, (latency % 1000) * 1000};
		sim_req_hold(r, NULL, NULL);
		r->timer = evtimer_new(sim->base, sim_latency_cb, r);
		evtimer_add(r->timer, &tv);
		return;
	}
	sim_dispatch(r);
}

void sim_http_init(struct sim *sim)
{
	sim->reqlog = xcalloc(1, sizeof(*sim->reqlog));
	sim->http = evhttp_new(sim->base);
	evhttp_set_gencb(sim->http, sim_http_request_cb, sim);
	evhttp_set_max_body_size(sim->http, (ev_ssize_t)sim->config.max_body_bytes);
	evhttp_set_max_headers_size(sim->http, 64 * 1024);
	/* Log streams stay open for as long as a build runs. */
	evhttp_set_timeout(sim->http, 3600);
	evhttp_set_allowed_methods(sim->http, EVHTTP_REQ_GET | EVHTTP_REQ_POST | EVHTTP_REQ_HEAD |
	                                          EVHTTP_REQ_PUT | EVHTTP_REQ_DELETE |
	                                          EVHTTP_REQ_PATCH | EVHTTP_REQ_OPTIONS);
}

void sim_http_free(struct sim *sim)
{
	if (sim->http != NULL)
		evhttp_free(sim->http);
	sim->http = NULL;
	if (sim->reqlog != NULL) {
		sim_reqlog_clear(sim);
		free(sim->reqlog->v);
		free(sim->reqlog);
		sim->reqlog = NULL;
	}
}
