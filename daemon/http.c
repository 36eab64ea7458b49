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
 *
 * Every request says for itself how it travels: the proxy is chosen here (the
 * proxy option or the environment, then no_proxy) and handed to libcurl, so that a
 * failure can name the proxy it went through; extra CA certificates are handed over
 * as one in-memory bundle with the system's, so that they add to the system store
 * rather than replace it.
 */
#include "http.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/queue.h>

#include <curl/curl.h>
#include <event2/event.h>
#if __has_include(<openssl/x509_vfy.h>)
#include <openssl/x509_vfy.h>
#endif

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

#define HTTP_MAX_CA_BYTES (16u << 20)

struct http {
	struct event_base *base;
	CURLM *multi;
	struct event *timer;
	bool in_multi; /* inside curl_multi_socket_action: callbacks may be running */
	bool deferred; /* a cancel or a start is waiting for in_multi to end */
	TAILQ_HEAD(, http_xfer) xfers;
	LIST_HEAD(, http_sock) socks;
	LIST_HEAD(, http_origin) origins;

	char *ca_file;
	char *proxy;
	char *no_proxy;
	bool ca_loaded; /* ca_bundle is built (NULL if ca_file could not be read) */
	char *ca_bundle;
	size_t ca_bundle_len;
};

/* A server (scheme://host:port) and whether it last answered over HTTP/2. */
struct http_origin {
	LIST_ENTRY(http_origin) entry;
	char *key;
	bool multiplexes;
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
	char *origin;        /* scheme://host:port */
	char *host_port;     /* host:port, for messages */
	char *proxy_display; /* the proxy in use without credentials, or NULL */
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
	free(x->origin);
	free(x->host_port);
	free(x->proxy_display);
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

/* Whether the origin's last answer came over HTTP/2 (so a new stream shares its connection). */
static struct http_origin *http_origin_find(struct http *h, const char *key)
{
	struct http_origin *o;

	LIST_FOREACH(o, &h->origins, entry)
	{
		if (strcmp(o->key, key) == 0)
			return o;
	}
	return NULL;
}

static void http_origin_note(struct http *h, const char *key, int version)
{
	struct http_origin *o;

	if (key == NULL || version == 0)
		return;
	if ((o = http_origin_find(h, key)) == NULL) {
		o = xcalloc(1, sizeof(*o));
		o->key = xstrdup(key);
		LIST_INSERT_HEAD(&h->origins, o, entry);
	}
	o->multiplexes = version >= 2;
}

static int http_version_of(CURL *easy)
{
	long v = 0;

	if (curl_easy_getinfo(easy, CURLINFO_HTTP_VERSION, &v) != CURLE_OK || v == 0)
		return 0;
	return v >= CURL_HTTP_VERSION_2_0 ? 2 : 1;
}

/* What was wrong with the server's certificate, from the TLS library's verdict. */
static enum http_failure http_tls_verdict(long verify, const char *errbuf, const char **what)
{
	switch (verify) {
#ifdef X509_V_OK
	case X509_V_ERR_CERT_HAS_EXPIRED:
		*what = "expired";
		return HTTP_FAILURE_TLS_EXPIRED;
	case X509_V_ERR_CERT_NOT_YET_VALID:
		*what = "not valid yet";
		return HTTP_FAILURE_TLS_EXPIRED;
	case X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT:
	case X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT_LOCALLY:
	case X509_V_ERR_UNABLE_TO_VERIFY_LEAF_SIGNATURE:
		*what = "unknown issuer";
		return HTTP_FAILURE_TLS_UNTRUSTED;
	case X509_V_ERR_DEPTH_ZERO_SELF_SIGNED_CERT:
	case X509_V_ERR_SELF_SIGNED_CERT_IN_CHAIN:
		*what = "self-signed, not trusted";
		return HTTP_FAILURE_TLS_UNTRUSTED;
	case X509_V_ERR_HOSTNAME_MISMATCH:
	case X509_V_ERR_IP_ADDRESS_MISMATCH:
		*what = "name mismatch";
		return HTTP_FAILURE_TLS_NAME;
	case X509_V_ERR_CERT_REVOKED:
		*what = "revoked";
		return HTTP_FAILURE_TLS_UNTRUSTED;
#endif
	default:
		break;
	}
	/* libcurl checks the name itself, after the chain has been verified */
	if (strstr(errbuf, "subject name") != NULL || strstr(errbuf, "does not match") != NULL) {
		*what = "name mismatch";
		return HTTP_FAILURE_TLS_NAME;
	}
	*what = "not trusted";
	return HTTP_FAILURE_TLS_UNTRUSTED;
}

/*
 * Turns a failed transfer into a message that says what failed where: the host and
 * the certificate's problem for TLS, the proxy for a proxy, libcurl's words otherwise.
 */
static enum http_failure http_classify(struct http_xfer *x, CURLcode result, char *out,
                                       size_t outlen)
{
	const char *detail = x->errbuf[0] ? x->errbuf : curl_easy_strerror(result);
	const char *what;
	long verify = 0, connect_code = 0;
	curl_off_t connected_us = 0;
	enum http_failure f;

	switch (result) {
	case CURLE_SSL_CACERT_BADFILE:
		snprintf(out, outlen, "cannot load the CA certificates to verify %s: %s",
		         x->host_port, detail);
		return HTTP_FAILURE_TLS;
	case CURLE_PEER_FAILED_VERIFICATION:
		curl_easy_getinfo(x->easy, CURLINFO_SSL_VERIFYRESULT, &verify);
		f = http_tls_verdict(verify, detail, &what);
		snprintf(out, outlen, "cannot verify the TLS certificate of %s%s%s%s: %s (%s)",
		         x->host_port, x->proxy_display ? " (through the proxy " : "",
		         x->proxy_display ? x->proxy_display : "", x->proxy_display ? ")" : "",
		         what, detail);
		return f;
	case CURLE_SSL_CONNECT_ERROR:
	case CURLE_SSL_CERTPROBLEM:
	case CURLE_SSL_CIPHER:
	case CURLE_SSL_ENGINE_NOTFOUND:
	case CURLE_SSL_ENGINE_SETFAILED:
	case CURLE_SSL_ENGINE_INITFAILED:
	case CURLE_USE_SSL_FAILED:
	case CURLE_SSL_PINNEDPUBKEYNOTMATCH:
	case CURLE_SSL_INVALIDCERTSTATUS:
		snprintf(out, outlen, "TLS with %s failed: %s", x->host_port, detail);
		return HTTP_FAILURE_TLS;
	default:
		break;
	}
	if (x->proxy_display != NULL) {
		curl_easy_getinfo(x->easy, CURLINFO_HTTP_CONNECTCODE, &connect_code);
		if (connect_code >= 300) {
			snprintf(out, outlen, "the proxy %s refused the tunnel to %s (HTTP %ld)",
			         x->proxy_display, x->host_port, connect_code);
			return HTTP_FAILURE_PROXY;
		}
		/* with a proxy, the only connection libcurl makes itself is to the proxy */
		curl_easy_getinfo(x->easy, CURLINFO_CONNECT_TIME_T, &connected_us);
		if (result == CURLE_COULDNT_RESOLVE_PROXY || result == CURLE_COULDNT_CONNECT ||
		    result == CURLE_PROXY ||
		    (result == CURLE_OPERATION_TIMEDOUT && connected_us == 0)) {
			snprintf(out, outlen, "cannot reach the proxy %s: %s", x->proxy_display,
			         detail);
			return HTTP_FAILURE_PROXY;
		}
	}
	snprintf(out, outlen, "%s", detail);
	return HTTP_FAILURE_OTHER;
}

static void http_deliver(struct http_xfer *x, CURLcode result)
{
	struct http_response resp = {0};
	char errtext[CURL_ERROR_SIZE + 512];

	if (x->setup_error) {
		resp.error = x->setup_error;
		resp.failure = HTTP_FAILURE_OTHER;
	} else {
		curl_easy_getinfo(x->easy, CURLINFO_RESPONSE_CODE, &resp.status);
		resp.http_version = resp.status > 0 ? http_version_of(x->easy) : 0;
		http_origin_note(x->h, x->origin, resp.http_version);
		if (x->too_large) {
			snprintf(errtext, sizeof(errtext),
			         "response too large (more than %zu bytes)", x->max_body);
			resp.error = errtext;
			resp.failure = HTTP_FAILURE_OTHER;
		} else if (result != CURLE_OK) {
			resp.failure = http_classify(x, result, errtext, sizeof(errtext));
			resp.error = errtext;
		}
	}
	resp.proxy = x->proxy_display;
	log_debug("http: %s: %ld%s%s%s%s%s (%.0f ms)", x->what, resp.status,
	          resp.http_version == 2 ? " HTTP/2" : (resp.http_version ? " HTTP/1.1" : ""),
	          resp.proxy ? " via " : "", resp.proxy ? resp.proxy : "", resp.error ? ", " : "",
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

/* ---- routing: the proxy, the CA certificates ---- */

static char *http_trim_token(const char *start, size_t n)
{
	while (n > 0 && isspace((unsigned char)*start)) {
		start++;
		n--;
	}
	while (n > 0 && isspace((unsigned char)start[n - 1]))
		n--;
	return xstrndup(start, n);
}

/* host (an IP address) inside net ("10.0.0.0/8", "::1", "192.168.1.7"). */
static bool http_ip_in(const char *host, const char *net)
{
	unsigned char a[16], b[16];
	char addr[INET6_ADDRSTRLEN + 1];
	const char *slash = strchr(net, '/');
	size_t alen = slash ? (size_t)(slash - net) : strlen(net);
	int family, bits, max;
	char *end;

	if (alen == 0 || alen >= sizeof(addr))
		return false;
	memcpy(addr, net, alen);
	addr[alen] = '\0';
	family = strchr(addr, ':') ? AF_INET6 : AF_INET;
	max = family == AF_INET6 ? 128 : 32;
	if (inet_pton(family, host, a) != 1 || inet_pton(family, addr, b) != 1)
		return false;
	bits = max;
	if (slash) {
		errno = 0;
		long v = strtol(slash + 1, &end, 10);
		if (slash[1] == '\0' || *end != '\0' || errno != 0 || v < 0 || v > max)
			return false;
		bits = (int)v;
	}
	for (int i = 0; i < bits / 8; i++)
		if (a[i] != b[i])
			return false;
	if (bits % 8) {
		unsigned char mask = (unsigned char)(0xff << (8 - bits % 8));
		if ((a[bits / 8] & mask) != (b[bits / 8] & mask))
			return false;
	}
	return true;
}

bool http_no_proxy_match(const char *no_proxy, const char *host)
{
	unsigned char ip[16];
	bool host_is_ip, match = false;
	size_t hlen;
	const char *p = no_proxy;

	if (no_proxy == NULL || host == NULL || *host == '\0')
		return false;
	host_is_ip = inet_pton(AF_INET, host, ip) == 1 || inet_pton(AF_INET6, host, ip) == 1;
	hlen = strlen(host);
	while (hlen > 0 && host[hlen - 1] == '.')
		hlen--;
	while (!match && *p) {
		size_t n = strcspn(p, ", \t");
		char *tok = http_trim_token(p, n);
		const char *t = tok;
		size_t tlen;

		p += n;
		p += strspn(p, ", \t");
		if (strcmp(t, "*") == 0) {
			match = true;
		} else if (host_is_ip) {
			match = *t != '\0' && http_ip_in(host, t);
		} else {
			if (*t == '.')
				t++;
			tlen = strlen(t);
			while (tlen > 0 && t[tlen - 1] == '.')
				tlen--;
			if (tlen > 0 && tlen <= hlen &&
			    strncasecmp(host + hlen - tlen, t, tlen) == 0 &&
			    (tlen == hlen || host[hlen - tlen - 1] == '.'))
				match = true;
		}
		free(tok);
	}
	return match;
}

char *http_proxy_display(const char *proxy_url)
{
	const char *scheme_end = strstr(proxy_url, "://");
	const char *rest = scheme_end ? scheme_end + 3 : proxy_url;
	const char *host_end = rest + strcspn(rest, "/?#");
	const char *at = NULL;

	for (const char *c = rest; c < host_end; c++)
		if (*c == '@')
			at = c;
	if (at == NULL)
		return xstrdup(proxy_url);
	return xasprintf("%.*s%s", (int)(rest - proxy_url), proxy_url, at + 1);
}

static const char *http_env(const char *name)
{
	const char *v = getenv(name);
	return v && *v ? v : NULL;
}

/* The proxy for a request to scheme://host, as curl would pick it, or NULL for none. */
static const char *http_proxy_for(const struct http *h, const char *scheme, const char *host)
{
	const char *proxy = h->proxy, *no_proxy = h->no_proxy;

	if (proxy == NULL) {
		/* http_proxy only in lower case: HTTP_PROXY can be set by a CGI request */
		if (strcmp(scheme, "https") == 0)
			proxy = http_env("https_proxy") ? http_env("https_proxy")
			                                : http_env("HTTPS_PROXY");
		else
			proxy = http_env("http_proxy");
		if (proxy == NULL)
			proxy =
			    http_env("all_proxy") ? http_env("all_proxy") : http_env("ALL_PROXY");
	}
	if (no_proxy == NULL)
		no_proxy = http_env("no_proxy") ? http_env("no_proxy") : http_env("NO_PROXY");
	if (proxy == NULL || *proxy == '\0' || http_no_proxy_match(no_proxy, host))
		return NULL;
	return proxy;
}

static bool http_read_file(const char *path, char **buf, size_t *len)
{
	FILE *fp = fopen(path, "re");
	size_t n = 0, alloc = 0, r;
	char *b = NULL;

	if (fp == NULL)
		return false;
	do {
		if (n + 65536 > alloc) {
			alloc = alloc ? alloc * 2 : 262144;
			b = xrealloc(b, alloc + 1);
		}
		r = fread(b + n, 1, alloc - n, fp);
		n += r;
	} while (r > 0 && n <= HTTP_MAX_CA_BYTES);
	if (ferror(fp) || n > HTTP_MAX_CA_BYTES) {
		fclose(fp);
		free(b);
		return false;
	}
	fclose(fp);
	b[n] = '\0';
	*buf = b;
	*len = n;
	return true;
}

/*
 * ca_file's certificates followed by the system's (libcurl's default bundle), read
 * once per configuration.  If ca_file cannot be read, the bundle stays NULL and
 * libcurl is given the path, so the transfer fails saying why.
 */
static void http_load_ca(struct http *h, CURL *easy)
{
	char *mine = NULL, *sys = NULL;
	size_t mine_len = 0, sys_len = 0;
	const char *sys_path = NULL;

	if (h->ca_loaded || h->ca_file == NULL)
		return;
	h->ca_loaded = true;
	if (!http_read_file(h->ca_file, &mine, &mine_len)) {
		log_warnx("http: cannot read ca_file %s: %s", h->ca_file, strerror(errno));
		return;
	}
#if LIBCURL_VERSION_NUM >= 0x075400
	curl_easy_getinfo(easy, CURLINFO_CAINFO, &sys_path);
#else
	(void)easy;
#endif
	if (sys_path != NULL && !http_read_file(sys_path, &sys, &sys_len))
		log_warnx("http: cannot read the system CA bundle %s: %s", sys_path,
		          strerror(errno));
	h->ca_bundle_len = mine_len + 1 + sys_len;
	h->ca_bundle = xmalloc(h->ca_bundle_len + 1);
	memcpy(h->ca_bundle, mine, mine_len);
	h->ca_bundle[mine_len] = '\n';
	if (sys_len)
		memcpy(h->ca_bundle + mine_len + 1, sys, sys_len);
	h->ca_bundle[h->ca_bundle_len] = '\0';
	free(mine);
	free(sys);
}

/* Sets origin, host_port and the proxy of a transfer from its URL. */
static const char *http_route(struct http_xfer *x, const char *url, const char **proxy)
{
	CURLU *u = curl_url();
	char *scheme = NULL, *host = NULL, *port = NULL;
	const char *err = NULL;
	size_t hlen;

	*proxy = NULL;
	if (u == NULL)
		return "out of memory";
	if (curl_url_set(u, CURLUPART_URL, url, 0) != CURLUE_OK ||
	    curl_url_get(u, CURLUPART_SCHEME, &scheme, 0) != CURLUE_OK ||
	    curl_url_get(u, CURLUPART_HOST, &host, 0) != CURLUE_OK ||
	    curl_url_get(u, CURLUPART_PORT, &port, CURLU_DEFAULT_PORT) != CURLUE_OK) {
		err = "invalid URL";
		goto out;
	}
	x->origin = xasprintf("%s://%s:%s", scheme, host, port);
	x->host_port = xasprintf("%s:%s", host, port);
	/* no_proxy lists IPv6 addresses without brackets */
	hlen = strlen(host);
	if (hlen >= 2 && host[0] == '[' && host[hlen - 1] == ']') {
		memmove(host, host + 1, hlen - 2);
		host[hlen - 2] = '\0';
	}
	*proxy = http_proxy_for(x->h, scheme, host);
	if (*proxy)
		x->proxy_display = http_proxy_display(*proxy);
out:
	curl_free(scheme);
	curl_free(host);
	curl_free(port);
	curl_url_cleanup(u);
	return err;
}

static const char *http_setup(struct http_xfer *x, const struct http_request *req)
{
	CURL *e = x->easy;
	struct http *h = x->h;
	const char *method = req->method ? req->method : "GET";
	const char *err, *proxy;
	struct http_origin *origin;
	CURLcode rc = CURLE_OK;

	if ((err = http_route(x, req->url, &proxy)) != NULL)
		return err;
	origin = http_origin_find(h, x->origin);

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
	/* HTTP/2 when the server offers it (ALPN); wait for a connection that may be
	 * shared rather than open another one next to it */
	SETOPT(CURLOPT_HTTP_VERSION, (long)CURL_HTTP_VERSION_2TLS);
	SETOPT(CURLOPT_PIPEWAIT, 1L);
	if (req->fresh_connect || (req->own_connection && !(origin && origin->multiplexes)))
		SETOPT(CURLOPT_FRESH_CONNECT, 1L);
	/* chosen above, so no_proxy is not applied a second time */
	SETOPT(CURLOPT_PROXY, proxy ? proxy : "");
	SETOPT(CURLOPT_NOPROXY, "");
	if (proxy) {
		/* a tunnel even to http:// URLs: the proxy never sees a request's headers */
		SETOPT(CURLOPT_HTTPPROXYTUNNEL, 1L);
		SETOPT(CURLOPT_SUPPRESS_CONNECT_HEADERS, 1L);
	}
	if (h->ca_file) {
		http_load_ca(h, e);
		if (h->ca_bundle) {
			struct curl_blob blob = {h->ca_bundle, h->ca_bundle_len, CURL_BLOB_COPY};
			SETOPT(CURLOPT_CAINFO_BLOB, &blob);
			SETOPT(CURLOPT_PROXY_CAINFO_BLOB, &blob);
		} else {
			SETOPT(CURLOPT_CAINFO, h->ca_file);
			SETOPT(CURLOPT_PROXY_CAINFO, h->ca_file);
		}
	}
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
	curl_multi_setopt(h->multi, CURLMOPT_PIPELINING, CURLPIPE_MULTIPLEX);
	return NULL;
}

static void http_clear_options(struct http *h)
{
	free(h->ca_file);
	free(h->proxy);
	free(h->no_proxy);
	free(h->ca_bundle);
	h->ca_file = h->proxy = h->no_proxy = h->ca_bundle = NULL;
	h->ca_bundle_len = 0;
	h->ca_loaded = false;
}

void http_set_options(struct http *h, const struct http_options *o)
{
	http_clear_options(h);
	h->ca_file = o->ca_file ? xstrdup(o->ca_file) : NULL;
	h->proxy = o->proxy ? xstrdup(o->proxy) : NULL;
	h->no_proxy = o->no_proxy ? xstrdup(o->no_proxy) : NULL;
}

struct http *http_new(struct event_base *base, char **err)
{
	struct http *h = xcalloc(1, sizeof(*h));

	h->base = base;
	TAILQ_INIT(&h->xfers);
	LIST_INIT(&h->socks);
	LIST_INIT(&h->origins);
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
	struct http_origin *o;

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
	while ((o = LIST_FIRST(&h->origins)) != NULL) {
		LIST_REMOVE(o, entry);
		free(o->key);
		free(o);
	}
	http_clear_options(h);
	free(h);
}

struct event_base *http_event_base(const struct http *h)
{
	return h->base;
}
