/*
 * libcurl's multi interface on the libevent loop, after curl's hiperfifo.c: the
 * socket callback maps CURL_POLL_* onto one persistent event per socket, the timer
 * callback only re-arms one libevent timer, every event ends in
 * curl_multi_socket_action and a drain of curl_multi_info_read, and a finished
 * transfer is removed and cleaned up before its owner is called back.
 *
 * libcurl forbids adding or removing a handle from inside its callbacks, yet owners
 * react to data (on_data, progress) by cancelling or starting transfers.  So while
 * libcurl runs (in_multi) a cancel only marks the transfer, which then fails at its
 * next callback, and a start only queues its handle; both are carried out as soon as
 * curl_multi_socket_action returns.
 */
#include "http.h"

#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/queue.h>

#include <curl/curl.h>
#include <event2/event.h>

#include "log.h"
#include "util.h"

#define HTTP_DEFAULT_MAX_BODY   (4u << 20)
#define HTTP_DEFAULT_CONNECT_MS 10000L
#define HTTP_MAX_HEADER_VALUE   1024
#define HTTP_USER_AGENT         "snapbuild/" SNAPBUILD_VERSION
/* TCP keepalive: probes after 30 s idle, every 15 s; 4 unanswered (the system's
 * count, 9 on Linux, before libcurl 8.9) and the connection is dead. */
#define HTTP_KEEPIDLE_S  30L
#define HTTP_KEEPINTVL_S 15L
#define HTTP_KEEPCNT     4L

struct http {
	struct event_base *base;
	CURLM *multi;
	struct event *timer;
	bool in_multi; /* inside curl_multi_socket_action: callbacks may be running */
	bool deferred; /* a cancel or a start is waiting for in_multi to end */
	TAILQ_HEAD(, http_xfer) xfers;
	LIST_HEAD(, http_sock) socks;
};

struct http_sock {
	LIST_ENTRY(http_sock) entry;
	struct event *ev;
};

struct http_xfer {
	struct http *h;
	TAILQ_ENTRY(http_xfer) entry;
	CURL *easy;
	curl_mime *mime;
	struct curl_slist *headers;
	char *body_copy;
	size_t body_copy_len;
	char errbuf[CURL_ERROR_SIZE];
	const char *setup_error; /* a static string: the transfer never started */
	struct event *fail_ev;

	char *resp;
	size_t resp_len;
	size_t resp_alloc;
	size_t max_body;
	bool too_large;
	char *retry_after;
	char *content_type;
	long status;

	bool cancelled;
	bool pending_add;
	void (*on_data)(void *arg, long status, const char *buf, size_t len);
	void (*on_upload_progress)(void *arg, uint64_t sent, uint64_t total);
	uint64_t last_sent;
	http_done_cb done_cb;
	void *arg;
	char *what; /* "METHOD url" for debug logs; never the headers */
	double started;
};

static void http_check_multi_info(struct http *h);
static void http_fail_cb(evutil_socket_t fd, short kind, void *arg);

/* Scrubs a header list before freeing it: one of its lines carries the API key. */
static void http_free_headers(struct curl_slist *list)
{
	for (struct curl_slist *l = list; l; l = l->next)
		explicit_bzero(l->data, strlen(l->data));
	curl_slist_free_all(list);
}

static void http_xfer_free(struct http_xfer *x)
{
	if (x->easy) {
		curl_multi_remove_handle(x->h->multi, x->easy);
		curl_easy_cleanup(x->easy);
	}
	curl_mime_free(x->mime);
	http_free_headers(x->headers);
	if (x->fail_ev)
		event_free(x->fail_ev);
	free(x->body_copy);
	free(x->resp);
	free(x->retry_after);
	free(x->content_type);
	free(x->what);
	free(x);
}

static void http_fail_later(struct http_xfer *x, const char *error)
{
	x->setup_error = error;
	if (x->easy) {
		curl_easy_cleanup(x->easy);
		x->easy = NULL;
	}
	x->fail_ev = evtimer_new(x->h->base, http_fail_cb, x);
	if (x->fail_ev == NULL)
		fatalx("http: evtimer_new failed");
	event_active(x->fail_ev, EV_TIMEOUT, 0);
}

static void http_add(struct http_xfer *x)
{
	CURLMcode rc;

	x->pending_add = false;
	rc = curl_multi_add_handle(x->h->multi, x->easy);
	if (rc != CURLM_OK)
		http_fail_later(x, curl_multi_strerror(rc));
}

/* Carries out the cancels and starts that came while libcurl was busy. */
static void http_run_deferred(struct http *h)
{
	struct http_xfer *x, *next;

	if (!h->deferred)
		return;
	h->deferred = false;
	for (x = TAILQ_FIRST(&h->xfers); x; x = next) {
		next = TAILQ_NEXT(x, entry);
		if (x->cancelled) {
			TAILQ_REMOVE(&h->xfers, x, entry);
			http_xfer_free(x);
		} else if (x->pending_add) {
			http_add(x);
		}
	}
}

static void http_socket_action(struct http *h, curl_socket_t fd, int ev_bitmask)
{
	int running;
	CURLMcode rc;

	h->in_multi = true;
	rc = curl_multi_socket_action(h->multi, fd, ev_bitmask, &running);
	h->in_multi = false;
	if (rc != CURLM_OK)
		log_warnx("http: curl_multi_socket_action: %s", curl_multi_strerror(rc));
	http_run_deferred(h);
	http_check_multi_info(h);
}

static void http_event_cb(evutil_socket_t fd, short kind, void *arg)
{
	struct http *h = arg;
	int action =
	    ((kind & EV_READ) ? CURL_CSELECT_IN : 0) | ((kind & EV_WRITE) ? CURL_CSELECT_OUT : 0);

	http_socket_action(h, fd, action);
	if (TAILQ_EMPTY(&h->xfers))
		evtimer_del(h->timer);
}

static void http_timer_cb(evutil_socket_t fd, short kind, void *arg)
{
	(void)fd;
	(void)kind;
	http_socket_action(arg, CURL_SOCKET_TIMEOUT, 0);
}

static int http_multi_timer_cb(CURLM *multi, long timeout_ms, void *arg)
{
	struct http *h = arg;
	struct timeval tv = {timeout_ms / 1000, (timeout_ms % 1000) * 1000};

	(void)multi;
	if (timeout_ms < 0)
		evtimer_del(h->timer);
	else
		evtimer_add(h->timer, &tv);
	return 0;
}

static int http_sock_cb(CURL *easy, curl_socket_t fd, int what, void *arg, void *sockp)
{
	struct http *h = arg;
	struct http_sock *s = sockp;
	short kind;

	(void)easy;
	if (what == CURL_POLL_REMOVE) {
		if (s) {
			LIST_REMOVE(s, entry);
			event_free(s->ev);
			free(s);
			curl_multi_assign(h->multi, fd, NULL);
		}
		return 0;
	}
	kind = EV_PERSIST | ((what & CURL_POLL_IN) ? EV_READ : 0) |
	       ((what & CURL_POLL_OUT) ? EV_WRITE : 0);
	if (s == NULL) {
		s = xcalloc(1, sizeof(*s));
		LIST_INSERT_HEAD(&h->socks, s, entry);
		s->ev = event_new(h->base, fd, kind, http_event_cb, h);
		if (s->ev == NULL)
			fatalx("http: event_new failed");
		curl_multi_assign(h->multi, fd, s);
	} else {
		event_del(s->ev);
		event_assign(s->ev, h->base, fd, kind, http_event_cb, h);
	}
	event_add(s->ev, NULL);
	return 0;
}

static void http_deliver(struct http_xfer *x, CURLcode result)
{
	struct http_response resp = {0};
	char errtext[CURL_ERROR_SIZE + 64];

	if (x->setup_error) {
		resp.error = x->setup_error;
	} else {
		curl_easy_getinfo(x->easy, CURLINFO_RESPONSE_CODE, &resp.status);
		if (x->too_large) {
			snprintf(errtext, sizeof(errtext),
			         "response too large (more than %zu bytes)", x->max_body);
			resp.error = errtext;
		} else if (result != CURLE_OK) {
			snprintf(errtext, sizeof(errtext), "%s",
			         x->errbuf[0] ? x->errbuf : curl_easy_strerror(result));
			resp.error = errtext;
		}
	}
	log_debug("http: %s: %ld%s%s (%.0f ms)", x->what, resp.status, resp.error ? ", " : "",
	          resp.error ? resp.error : "", (now_seconds() - x->started) * 1000);
	resp.body = x->resp ? x->resp : "";
	resp.body_len = x->resp_len;
	resp.retry_after = x->retry_after;
	resp.content_type = x->content_type;

	TAILQ_REMOVE(&x->h->xfers, x, entry);
	if (x->easy) {
		curl_multi_remove_handle(x->h->multi, x->easy);
		curl_easy_cleanup(x->easy);
		x->easy = NULL;
	}
	x->done_cb(x->arg, &resp);
	http_xfer_free(x);
}

static void http_check_multi_info(struct http *h)
{
	CURLMsg *msg;
	int left;

	while ((msg = curl_multi_info_read(h->multi, &left)) != NULL) {
		struct http_xfer *x;
		if (msg->msg != CURLMSG_DONE)
			continue;
		curl_easy_getinfo(msg->easy_handle, CURLINFO_PRIVATE, (char **)&x);
		if (x->cancelled) {
			TAILQ_REMOVE(&h->xfers, x, entry);
			http_xfer_free(x);
			continue;
		}
		http_deliver(x, msg->data.result);
	}
}

static bool http_buffer_append(struct http_xfer *x, const char *buf, size_t n)
{
	if (x->resp_len + n > x->max_body) {
		x->too_large = true;
		return false;
	}
	if (x->resp_len + n + 1 > x->resp_alloc) {
		size_t a = x->resp_alloc ? x->resp_alloc : 1024;
		while (a < x->resp_len + n + 1)
			a *= 2;
		x->resp = xrealloc(x->resp, a);
		x->resp_alloc = a;
	}
	memcpy(x->resp + x->resp_len, buf, n);
	x->resp_len += n;
	x->resp[x->resp_len] = '\0';
	return true;
}

static size_t http_write_cb(char *buf, size_t size, size_t nmemb, void *arg)
{
	struct http_xfer *x = arg;
	size_t n = size * nmemb;

	if (x->cancelled)
		return 0;
	if (x->status == 0)
		curl_easy_getinfo(x->easy, CURLINFO_RESPONSE_CODE, &x->status);
	if (x->on_data && x->status >= 200 && x->status < 300) {
		x->on_data(x->arg, x->status, buf, n);
		return x->cancelled ? 0 : n;
	}
	return http_buffer_append(x, buf, n) ? n : 0;
}

static char *http_header_value(const char *line, size_t n, const char *name)
{
	size_t nlen = strlen(name);
	const char *v, *end = line + n;

	if (n <= nlen || strncasecmp(line, name, nlen) != 0 || line[nlen] != ':')
		return NULL;
	v = line + nlen + 1;
	while (v < end && (*v == ' ' || *v == '\t'))
		v++;
	while (end > v && (end[-1] == '\r' || end[-1] == '\n' || end[-1] == ' ' || end[-1] == '\t'))
		end--;
	if ((size_t)(end - v) > HTTP_MAX_HEADER_VALUE)
		end = v + HTTP_MAX_HEADER_VALUE;
	return xstrndup(v, (size_t)(end - v));
}

static size_t http_header_cb(char *buf, size_t size, size_t nmemb, void *arg)
{
	struct http_xfer *x = arg;
	size_t n = size * nmemb;
	char *v;

	if (x->cancelled)
		return 0;
	/* a new status line starts a new response (after a 1xx): forget the old one */
	if (n >= 5 && strncmp(buf, "HTTP/", 5) == 0) {
		free(x->retry_after);
		free(x->content_type);
		x->retry_after = x->content_type = NULL;
		x->status = 0;
		return n;
	}
	if (n <= 2 && x->on_data) {
		/* the blank line ending the headers: tell a stream it was answered */
		curl_easy_getinfo(x->easy, CURLINFO_RESPONSE_CODE, &x->status);
		if (x->status >= 200 && x->status < 300)
			x->on_data(x->arg, x->status, "", 0);
		return x->cancelled ? 0 : n;
	}
	if ((v = http_header_value(buf, n, "Retry-After")) != NULL) {
		free(x->retry_after);
		x->retry_after = v;
	} else if ((v = http_header_value(buf, n, "Content-Type")) != NULL) {
		free(x->content_type);
		x->content_type = v;
	}
	return n;
}

static int http_xferinfo_cb(void *arg, curl_off_t dltotal, curl_off_t dlnow, curl_off_t ultotal,
                            curl_off_t ulnow)
{
	struct http_xfer *x = arg;

	(void)dltotal;
	(void)dlnow;
	if (x->cancelled)
		return 1;
	if (x->on_upload_progress && ulnow > 0 && (uint64_t)ulnow != x->last_sent) {
		x->last_sent = (uint64_t)ulnow;
		x->on_upload_progress(x->arg, (uint64_t)ulnow, ultotal > 0 ? (uint64_t)ultotal : 0);
	}
	return x->cancelled ? 1 : 0;
}

static void http_fail_cb(evutil_socket_t fd, short kind, void *arg)
{
	struct http_xfer *x = arg;

	(void)fd;
	(void)kind;
	if (x->cancelled) {
		TAILQ_REMOVE(&x->h->xfers, x, entry);
		http_xfer_free(x);
		return;
	}
	http_deliver(x, CURLE_OK);
}

static const char *http_build_mime(struct http_xfer *x, const struct http_request *req)
{
	x->mime = curl_mime_init(x->easy);
	if (x->mime == NULL)
		return "cannot create a multipart body";
	for (size_t i = 0; i < req->nparts; i++) {
		const struct http_part *p = &req->parts[i];
		curl_mimepart *part = curl_mime_addpart(x->mime);
		CURLcode rc;

		if (part == NULL || curl_mime_name(part, p->name) != CURLE_OK)
			return "cannot create a multipart body";
		if (p->file_path) {
			rc = curl_mime_filedata(part, p->file_path);
			if (rc == CURLE_OK && p->filename)
				rc = curl_mime_filename(part, p->filename);
		} else {
			rc = curl_mime_data(part, p->value ? p->value : "", CURL_ZERO_TERMINATED);
		}
		if (rc == CURLE_OK && p->content_type)
			rc = curl_mime_type(part, p->content_type);
		if (rc != CURLE_OK)
			return "cannot create a multipart body";
	}
	return curl_easy_setopt(x->easy, CURLOPT_MIMEPOST, x->mime) == CURLE_OK
	           ? NULL
	           : "cannot create a multipart body";
}

static const char *http_build_headers(struct http_xfer *x, const struct http_request *req)
{
	struct curl_slist *l = NULL, *n;
	char *line;

	/* the whole body goes at once: waiting for "100 Continue" only adds latency */
	if ((n = curl_slist_append(l, "Expect:")) == NULL)
		goto fail;
	l = n;
	if (req->bearer_token) {
		line = xasprintf("Authorization: Bearer %s", req->bearer_token);
		n = curl_slist_append(l, line);
		explicit_bzero(line, strlen(line));
		free(line);
		if (n == NULL)
			goto fail;
		l = n;
	}
	if (req->content_type && req->body) {
		line = xasprintf("Content-Type: %s", req->content_type);
		n = curl_slist_append(l, line);
		free(line);
		if (n == NULL)
			goto fail;
		l = n;
	}
	for (size_t i = 0; req->headers && req->headers[i]; i++) {
		if ((n = curl_slist_append(l, req->headers[i])) == NULL)
			goto fail;
		l = n;
	}
	x->headers = l;
	return curl_easy_setopt(x->easy, CURLOPT_HTTPHEADER, l) == CURLE_OK
	           ? NULL
	           : "cannot set request headers";
fail:
	http_free_headers(l);
	return "cannot build request headers";
}

static const char *http_setup(struct http_xfer *x, const struct http_request *req)
{
	CURL *e = x->easy;
	const char *method = req->method ? req->method : "GET";
	const char *err;
	CURLcode rc = CURLE_OK;

#define SETOPT(opt, val)                                                                           \
	do {                                                                                       \
		if (rc == CURLE_OK)                                                                \
			rc = curl_easy_setopt(e, opt, val);                                        \
	} while (0)

	SETOPT(CURLOPT_URL, req->url);
	SETOPT(CURLOPT_PRIVATE, x);
	SETOPT(CURLOPT_ERRORBUFFER, x->errbuf);
	SETOPT(CURLOPT_NOSIGNAL, 1L);
	SETOPT(CURLOPT_USERAGENT, HTTP_USER_AGENT);
	SETOPT(CURLOPT_PROTOCOLS_STR, "http,https");
	SETOPT(CURLOPT_FOLLOWLOCATION, 0L);
	/* A dead peer (a vanished host, a NAT that forgot the connection) is found by TCP
	 * keepalive within about HTTP_KEEPIDLE_S + HTTP_KEEPCNT * HTTP_KEEPINTVL_S, so a
	 * log stream that is merely quiet need not be timed out. */
	SETOPT(CURLOPT_TCP_KEEPALIVE, 1L);
	SETOPT(CURLOPT_TCP_KEEPIDLE, HTTP_KEEPIDLE_S);
	SETOPT(CURLOPT_TCP_KEEPINTVL, HTTP_KEEPINTVL_S);
#if LIBCURL_VERSION_NUM >= 0x080900
	SETOPT(CURLOPT_TCP_KEEPCNT, HTTP_KEEPCNT);
#endif
	if (req->fresh_connect)
		SETOPT(CURLOPT_FRESH_CONNECT, 1L);
	SETOPT(CURLOPT_WRITEFUNCTION, http_write_cb);
	SETOPT(CURLOPT_WRITEDATA, x);
	SETOPT(CURLOPT_HEADERFUNCTION, http_header_cb);
	SETOPT(CURLOPT_HEADERDATA, x);
	SETOPT(CURLOPT_CONNECTTIMEOUT_MS,
	       req->connect_timeout_ms > 0 ? req->connect_timeout_ms : HTTP_DEFAULT_CONNECT_MS);
	SETOPT(CURLOPT_TIMEOUT_MS, req->timeout_ms > 0 ? req->timeout_ms : 0L);
	if (req->low_speed_time_s > 0) {
		SETOPT(CURLOPT_LOW_SPEED_LIMIT, 1L);
		SETOPT(CURLOPT_LOW_SPEED_TIME, req->low_speed_time_s);
	}
	if (req->on_upload_progress) {
		SETOPT(CURLOPT_XFERINFOFUNCTION, http_xferinfo_cb);
		SETOPT(CURLOPT_XFERINFODATA, x);
		SETOPT(CURLOPT_NOPROGRESS, 0L);
	}
	if (req->body) {
		x->body_copy_len = req->body_len;
		x->body_copy = xmalloc(req->body_len + 1);
		memcpy(x->body_copy, req->body, req->body_len);
		SETOPT(CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)x->body_copy_len);
		SETOPT(CURLOPT_POSTFIELDS, x->body_copy);
	} else if (strcmp(method, "POST") == 0 && req->nparts == 0) {
		SETOPT(CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)0);
		SETOPT(CURLOPT_POSTFIELDS, "");
	}
	if (strcmp(method, "GET") != 0 && strcmp(method, "POST") != 0)
		SETOPT(CURLOPT_CUSTOMREQUEST, method);
#undef SETOPT
	if (rc != CURLE_OK)
		return curl_easy_strerror(rc);
	if (req->nparts > 0 && (err = http_build_mime(x, req)) != NULL)
		return err;
	return http_build_headers(x, req);
}

static const char *http_multi_init(struct http *h);

struct http_xfer *http_start(struct http *h, const struct http_request *req, http_done_cb done_cb,
                             void *arg)
{
	struct http_xfer *x = xcalloc(1, sizeof(*x));
	const char *err;

	x->h = h;
	x->done_cb = done_cb;
	x->arg = arg;
	x->on_data = req->on_data;
	x->on_upload_progress = req->on_upload_progress;
	x->max_body = req->max_body > 0 ? req->max_body : HTTP_DEFAULT_MAX_BODY;
	x->what = xasprintf("%s %s", req->method ? req->method : "GET", req->url);
	x->started = now_seconds();
	TAILQ_INSERT_TAIL(&h->xfers, x, entry);

	err = http_multi_init(h);
	if (err == NULL)
		x->easy = curl_easy_init();
	if (err == NULL)
		err = x->easy ? http_setup(x, req) : "cannot create an HTTP transfer";
	if (err) {
		/* reported from the loop: callers never see done_cb inside http_start */
		http_fail_later(x, err);
	} else if (h->in_multi) {
		x->pending_add = true;
		h->deferred = true;
	} else {
		http_add(x);
	}
	return x;
}

void http_cancel(struct http_xfer *x)
{
	struct http *h;

	if (x == NULL || x->cancelled)
		return;
	h = x->h;
	x->cancelled = true;
	if (h->in_multi) {
		h->deferred = true;
		return;
	}
	TAILQ_REMOVE(&h->xfers, x, entry);
	http_xfer_free(x);
}

/*
 * libcurl (and the TLS library under it) is set up on the first transfer, not at
 * start: an idle daemon that has not talked to Together yet stays small.
 */
static const char *http_multi_init(struct http *h)
{
	static bool global_init;

	if (h->multi != NULL)
		return NULL;
	if (!global_init) {
		if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK)
			return "cannot initialise libcurl";
		global_init = true;
	}
	h->multi = curl_multi_init();
	if (h->multi == NULL)
		return "cannot create the HTTP client";
	curl_multi_setopt(h->multi, CURLMOPT_SOCKETFUNCTION, http_sock_cb);
	curl_multi_setopt(h->multi, CURLMOPT_SOCKETDATA, h);
	curl_multi_setopt(h->multi, CURLMOPT_TIMERFUNCTION, http_multi_timer_cb);
	curl_multi_setopt(h->multi, CURLMOPT_TIMERDATA, h);
	return NULL;
}

struct http *http_new(struct event_base *base, char **err)
{
	struct http *h = xcalloc(1, sizeof(*h));

	h->base = base;
	TAILQ_INIT(&h->xfers);
	LIST_INIT(&h->socks);
	h->timer = evtimer_new(base, http_timer_cb, h);
	if (h->timer == NULL) {
		*err = xstrdup("cannot create the HTTP client's timer");
		http_free(h);
		return NULL;
	}
	return h;
}

void http_free(struct http *h)
{
	struct http_xfer *x;
	struct http_sock *s;

	if (h == NULL)
		return;
	while ((x = TAILQ_FIRST(&h->xfers)) != NULL) {
		TAILQ_REMOVE(&h->xfers, x, entry);
		http_xfer_free(x);
	}
	if (h->multi)
		curl_multi_cleanup(h->multi);
	/* sockets of cached connections libcurl did not report as removed */
	while ((s = LIST_FIRST(&h->socks)) != NULL) {
		LIST_REMOVE(s, entry);
		event_free(s->ev);
		free(s);
	}
	if (h->timer)
		event_free(h->timer);
	free(h);
}

struct event_base *http_event_base(const struct http *h)
{
	return h->base;
}
