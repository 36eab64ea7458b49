/*
 * Asynchronous HTTP client: libcurl's multi interface driven by the daemon's
 * libevent loop, in the pattern of curl's hiperfifo.c.  A transfer is started with
 * a request description and ends with exactly one completion callback (unless it
 * is cancelled first); a streaming transfer also hands over its body as it arrives.
 * No call blocks the loop and no thread is spawned.  libcurl's types and error codes
 * stay inside http.c; this module knows nothing of the APIs it talks to.
 *
 * HTTPS offers HTTP/2 (ALPN) and requests to one server share its connections
 * (multiplexed on HTTP/2).  Extra CA certificates and the proxy come from
 * http_set_options; without a proxy option the usual environment (https_proxy,
 * http_proxy, all_proxy, no_proxy) applies.  A failure says which part failed (TLS,
 * proxy, the rest), so that callers can tell the user what to change.
 */
#ifndef SNAPBUILD_HTTP_H
#define SNAPBUILD_HTTP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct event_base;
struct http;
struct http_xfer;

/* One part of a multipart/form-data body: either value or file_path is set. */
struct http_part {
	const char *name;
	const char *value;
	const char *file_path; /* streamed from disk, never read whole into memory */
	const char *filename;  /* the filename the server sees; default: file_path's basename */
	const char *content_type;
};

/* Everything is copied by http_start: the request need not outlive the call. */
struct http_request {
	const char *method; /* "GET" (default when NULL), "POST", "DELETE", ... */
	const char *url;
	const char *bearer_token;   /* sent as "Authorization: Bearer ...", never logged */
	const char *const *headers; /* extra "Name: value" lines, NULL-terminated, or NULL */
	const char *body;           /* a body given whole (JSON) ... */
	size_t body_len;
	const char *content_type;
	const struct http_part *parts; /* ... or a multipart/form-data body */
	size_t nparts;
	long timeout_ms;         /* the whole transfer; 0 = no limit (log streams) */
	long connect_timeout_ms; /* 0 = 10 s */
	long low_speed_time_s;   /* abort when under 1 byte/s for this long; 0 = off */
	size_t max_body;         /* cap on a buffered body; 0 = 4 MiB; beyond: an error */
	/*
	 * A new connection, never a kept-alive one: libcurl silently re-sends a request
	 * whose reused connection turns out dead, which a request the server must not
	 * see twice cannot risk (it would register a snapshot twice).
	 */
	bool fresh_connect;
	/*
	 * A long stream: a connection of its own unless the server is known to multiplex
	 * (HTTP/2).  On a reused HTTP/1.1 connection, in delayed-ACK mode after the
	 * previous answer, a peer without TCP_NODELAY batches small writes ~20 ms apart.
	 */
	bool own_connection;
	/*
	 * Streaming: a 2xx response's body is handed here as it arrives instead of
	 * being buffered, after one call with len 0 once its headers are complete.
	 * Other statuses are buffered as usual so that the completion callback can
	 * report the server's error body.
	 */
	void (*on_data)(void *arg, long status, const char *buf, size_t len);
	void (*on_upload_progress)(void *arg, uint64_t sent, uint64_t total);
};

/* Which part of the exchange failed, when one did. */
enum http_failure {
	HTTP_FAILURE_NONE,
	HTTP_FAILURE_OTHER,         /* connection, timeout, reset, too large, ... */
	HTTP_FAILURE_TLS_UNTRUSTED, /* a certificate from an authority not trusted */
	HTTP_FAILURE_TLS_EXPIRED,   /* a certificate out of its validity period */
	HTTP_FAILURE_TLS_NAME,      /* a certificate for another host name */
	HTTP_FAILURE_TLS,           /* any other TLS failure (handshake, CA file) */
	HTTP_FAILURE_PROXY,         /* the proxy cannot be reached or refused the tunnel */
};

/* How requests reach the server.  Strings are copied. */
struct http_options {
	const char *ca_file;  /* PEM certificates trusted on top of the system's, or NULL */
	const char *proxy;    /* proxy URL for every request; NULL: the environment's */
	const char *no_proxy; /* hosts reached without a proxy; NULL: the environment's */
};

/*
 * The outcome, valid only during the completion callback.  error is set when the
 * transfer failed (connection, timeout, reset, body too large, ...); status is then
 * whatever the server had answered, 0 if nothing.  When error is NULL the exchange
 * completed and status is the server's.
 */
struct http_response {
	long status;
	const char *error;
	const char *body; /* NUL-terminated; "" when streamed or empty */
	size_t body_len;
	const char *retry_after;   /* header value, or NULL */
	const char *content_type;  /* header value, or NULL */
	enum http_failure failure; /* NONE exactly when error is NULL */
	const char *proxy; /* the proxy the request went through (no credentials), or NULL */
	int http_version;  /* 1 or 2 once a response started, else 0 */
};

typedef void (*http_done_cb)(void *arg, const struct http_response *resp);

struct http *http_new(struct event_base *base, char **err);
/* Cancels every transfer without calling back.  Not from inside a callback. */
void http_free(struct http *h);
struct event_base *http_event_base(const struct http *h);
/* For transfers started from now on. */
void http_set_options(struct http *h, const struct http_options *o);

/*
 * Whether host is listed in no_proxy (comma- or blank-separated): "*", a domain
 * (itself and every name below it; a leading dot is optional), an IP address, or an
 * IP network in CIDR notation, as curl reads the variable.
 */
bool http_no_proxy_match(const char *no_proxy, const char *host);
/* The proxy's URL without user name and password, for messages (malloc'd). */
char *http_proxy_display(const char *proxy_url);

/*
 * Starts a transfer.  done_cb is called exactly once, from the event loop (never from
 * inside http_start), unless http_cancel comes first.  The handle is invalid once
 * done_cb has been entered.
 */
struct http_xfer *http_start(struct http *h, const struct http_request *req, http_done_cb done_cb,
                             void *arg);
/* Stops a transfer: no callback of any kind afterwards.  Safe from any callback. */
void http_cancel(struct http_xfer *x);

#endif
