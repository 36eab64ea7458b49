/*
 * The daemon's metrics (metrics.h): plain counters, bumped from the loop thread, and
 * the OpenMetrics text made from them on demand.  Every series of a fixed label set
 * is always present (zero until something happens), so a dashboard sees the series
 * before the first build; only the HTTP status codes of API answers come as they are
 * seen.  The HTTP listener is libevent's evhttp on the daemon's loop: it serves the
 * same text at GET /metrics and nothing else.
 */
#include "metrics.h"

#include <arpa/inet.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include <event2/buffer.h>
#include <event2/event.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>

#include "log.h"
#include "util.h"

static const char *const metrics_stage_names[METRICS_NSTAGES] = {"intake", "queued", "uploading",
                                                                 "building", "registering"};
static const char *const metrics_api_names[METRICS_NAPIS] = {"submit", "logs", "status", "delete",
                                                             "management"};
static const char *const metrics_backends[] = {"remote", "local"};
static const char *const metrics_results[] = {"succeeded", "failed", "cancelled"};
#define METRICS_NBACKENDS 2
#define METRICS_NRESULTS  3

/* Seconds: from an instant intake to a long build. */
static const double metrics_buckets[] = {0.1, 0.5, 1, 5, 10, 30, 60, 300, 900, 1800, 3600};
#define METRICS_NBUCKETS (sizeof(metrics_buckets) / sizeof(metrics_buckets[0]))

struct metrics_histogram {
	uint64_t buckets[METRICS_NBUCKETS]; /* observations <= the bound (not cumulative) */
	uint64_t count;
	double sum;
};

struct metrics_status {
	enum metrics_api api;
	long status;
	uint64_t n;
};

static struct {
	struct metrics_histogram stages[METRICS_NSTAGES];
	uint64_t finished[METRICS_NBACKENDS][METRICS_NRESULTS];
	struct metrics_status *requests;
	size_t nrequests;
	uint64_t retries[METRICS_NAPIS];
	uint64_t log_lines;
	uint64_t context_bytes;
} metrics;

int metrics_stage_of_state(const char *state)
{
	for (int i = METRICS_STAGE_QUEUED; i < METRICS_NSTAGES; i++)
		if (strcmp(state, metrics_stage_names[i]) == 0)
			return i;
	return -1;
}

void metrics_job_stage(enum metrics_stage stage, double seconds)
{
	struct metrics_histogram *h = &metrics.stages[stage];
	if (seconds < 0)
		seconds = 0; /* the clock went back */
	for (size_t i = 0; i < METRICS_NBUCKETS; i++) {
		if (seconds <= metrics_buckets[i]) {
			h->buckets[i]++;
			break;
		}
	}
	h->count++;
	h->sum += seconds;
}

static int metrics_index(const char *const *names, size_t n, const char *name)
{
	for (size_t i = 0; i < n; i++)
		if (name != NULL && strcmp(names[i], name) == 0)
			return (int)i;
	return -1;
}

void metrics_job_finished(const char *backend, const char *result)
{
	int b = metrics_index(metrics_backends, METRICS_NBACKENDS, backend);
	int r = metrics_index(metrics_results, METRICS_NRESULTS, result);
	if (b < 0 || r < 0)
		fatalx("metrics: a job finished as %s/%s (a bug)", backend, result);
	metrics.finished[b][r]++;
}

void metrics_api_request(enum metrics_api api, long status)
{
	for (size_t i = 0; i < metrics.nrequests; i++) {
		if (metrics.requests[i].api == api && metrics.requests[i].status == status) {
			metrics.requests[i].n++;
			return;
		}
	}
	metrics.requests =
	    xrealloc(metrics.requests, (metrics.nrequests + 1) * sizeof(*metrics.requests));
	metrics.requests[metrics.nrequests++] = (struct metrics_status){api, status, 1};
}

void metrics_api_retry(enum metrics_api api)
{
	metrics.retries[api]++;
}

void metrics_log_line(void)
{
	metrics.log_lines++;
}

void metrics_context_bytes(uint64_t bytes)
{
	metrics.context_bytes += bytes;
}

void metrics_reset(void)
{
	free(metrics.requests);
	memset(&metrics, 0, sizeof(metrics));
}

/* --- the text ------------------------------------------------------------------------ */

struct metrics_buf {
	char *s;
	size_t len, cap;
};

static void metrics_printf(struct metrics_buf *b, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static void metrics_printf(struct metrics_buf *b, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	char *piece = xvasprintf(fmt, ap);
	va_end(ap);
	size_t n = strlen(piece);
	if (b->len + n + 1 > b->cap) {
		b->cap = (b->len + n + 1) * 2;
		b->s = xrealloc(b->s, b->cap);
	}
	memcpy(b->s + b->len, piece, n + 1);
	b->len += n;
	free(piece);
}

static void metrics_family(struct metrics_buf *b, const char *name, const char *type,
                           const char *help)
{
	metrics_printf(b, "# TYPE %s %s\n# HELP %s %s\n", name, type, name, help);
}

/* A label value as OpenMetrics quotes it: \\, \" and \n escaped. */
static char *metrics_label(const char *v)
{
	char *out = xmalloc(strlen(v) * 2 + 1), *o = out;
	for (; *v; v++) {
		if (*v == '\\' || *v == '"') {
			*o++ = '\\';
			*o++ = *v;
		} else if (*v == '\n') {
			*o++ = '\\';
			*o++ = 'n';
		} else {
			*o++ = *v;
		}
	}
	*o = '\0';
	return out;
}

static int metrics_status_cmp(const void *a, const void *b)
{
	const struct metrics_status *x = a, *y = b;
	if (x->api != y->api)
		return x->api < y->api ? -1 : 1;
	return x->status < y->status ? -1 : x->status > y->status;
}

char *metrics_render(const struct metrics_gauges *g)
{
	struct metrics_buf b = {0};

	metrics_family(&b, "snapbuild_jobs", "gauge", "Jobs in each state.");
	for (size_t i = 0; i < g->nstates; i++) {
		char *s = metrics_label(g->state_names[i]);
		metrics_printf(&b, "snapbuild_jobs{state=\"%s\"} %lld\n", s,
		               (long long)g->state_counts[i]);
		free(s);
	}

	metrics_family(&b, "snapbuild_jobs_finished", "counter",
	               "Jobs that reached a terminal state since the daemon started.");
	for (int i = 0; i < METRICS_NBACKENDS; i++)
		for (int r = 0; r < METRICS_NRESULTS; r++)
			metrics_printf(
			    &b,
			    "snapbuild_jobs_finished_total{backend=\"%s\",result=\"%s\"} "
			    "%llu\n",
			    metrics_backends[i], metrics_results[r],
			    (unsigned long long)metrics.finished[i][r]);

	metrics_family(&b, "snapbuild_job_stage_seconds", "histogram",
	               "Time jobs spent in each stage.");
	for (int s = 0; s < METRICS_NSTAGES; s++) {
		const struct metrics_histogram *h = &metrics.stages[s];
		uint64_t cum = 0;
		for (size_t i = 0; i < METRICS_NBUCKETS; i++) {
			/* OpenMetrics' canonical numbers for "le": 1.0, not 1 (every bound
			 * has at most one decimal). */
			cum += h->buckets[i];
			metrics_printf(
			    &b,
			    "snapbuild_job_stage_seconds_bucket{stage=\"%s\",le=\"%.1f\"} "
			    "%llu\n",
			    metrics_stage_names[s], metrics_buckets[i], (unsigned long long)cum);
		}
		metrics_printf(&b,
		               "snapbuild_job_stage_seconds_bucket{stage=\"%s\",le=\"+Inf\"} %llu\n"
		               "snapbuild_job_stage_seconds_sum{stage=\"%s\"} %.6f\n"
		               "snapbuild_job_stage_seconds_count{stage=\"%s\"} %llu\n",
		               metrics_stage_names[s], (unsigned long long)h->count,
		               metrics_stage_names[s], h->sum, metrics_stage_names[s],
		               (unsigned long long)h->count);
	}

	metrics_family(&b, "snapbuild_api_requests", "counter",
	               "Requests to Together's APIs by answer: an HTTP status, or 0 when none "
	               "came (transport error, timeout).");
	if (metrics.nrequests > 0) /* qsort's array may not be NULL, even when empty */
		qsort(metrics.requests, metrics.nrequests, sizeof(*metrics.requests),
		      metrics_status_cmp);
	for (size_t i = 0; i < metrics.nrequests; i++)
		metrics_printf(&b, "snapbuild_api_requests_total{api=\"%s\",code=\"%ld\"} %llu\n",
		               metrics_api_names[metrics.requests[i].api],
		               metrics.requests[i].status,
		               (unsigned long long)metrics.requests[i].n);

	metrics_family(&b, "snapbuild_api_retries", "counter",
	               "Requests to Together's APIs made again after a failed attempt.");
	for (int a = 0; a < METRICS_NAPIS; a++)
		metrics_printf(&b, "snapbuild_api_retries_total{api=\"%s\"} %llu\n",
		               metrics_api_names[a], (unsigned long long)metrics.retries[a]);

	metrics_family(&b, "snapbuild_log_lines", "counter",
	               "Build log lines received from builders and engines.");
	metrics_printf(&b, "snapbuild_log_lines_total %llu\n",
	               (unsigned long long)metrics.log_lines);

	metrics_family(&b, "snapbuild_connections", "gauge", "Open client connections.");
	metrics_printf(&b, "snapbuild_connections %zu\n", g->connections);

	metrics_family(&b, "snapbuild_context_bytes", "counter",
	               "Bytes of context archives accepted from clients.");
	metrics_printf(&b, "snapbuild_context_bytes_total %llu\n",
	               (unsigned long long)metrics.context_bytes);

	metrics_printf(&b, "# EOF\n");
	return b.s;
}

/* --- GET /metrics -------------------------------------------------------------------- */

struct metrics_http {
	struct evhttp *http;
	char *address;
	char *(*render)(void *arg, char **err);
	void *arg;
};

bool metrics_listen_parse(const char *s, char **host, int *port)
{
	const char *colon = strrchr(s, ':'), *h = s;
	size_t hlen;
	char *end;
	long p;

	if (colon == NULL || colon == s || colon[1] == '\0')
		return false;
	hlen = (size_t)(colon - s);
	if (s[0] == '[') {
		if (colon[-1] != ']' || hlen < 3)
			return false;
		h = s + 1;
		hlen -= 2;
	} else if (memchr(s, ':', hlen) != NULL) {
		return false; /* an IPv6 address needs its brackets */
	}
	p = strtol(colon + 1, &end, 10);
	if (*end != '\0' || p < 0 || p > 65535 || !(colon[1] >= '0' && colon[1] <= '9'))
		return false;
	*host = xstrndup(h, hlen);
	*port = (int)p;
	return true;
}

static void metrics_http_cb(struct evhttp_request *req, void *arg)
{
	struct metrics_http *mh = arg;
	struct evbuffer *out = evhttp_request_get_output_buffer(req);
	struct evkeyvalq *headers = evhttp_request_get_output_headers(req);
	char *err = NULL, *text;

	if (evhttp_request_get_command(req) != EVHTTP_REQ_GET &&
	    evhttp_request_get_command(req) != EVHTTP_REQ_HEAD) {
		evhttp_add_header(headers, "Allow", "GET, HEAD");
		evhttp_send_reply(req, 405, "Method Not Allowed", NULL);
		return;
	}
	text = mh->render(mh->arg, &err);
	if (text == NULL) {
		evhttp_add_header(headers, "Content-Type", "text/plain; charset=utf-8");
		evbuffer_add_printf(out, "%s\n", err ? err : "metrics unavailable");
		evhttp_send_reply(req, 503, "Service Unavailable", out);
		free(err);
		return;
	}
	evhttp_add_header(headers, "Content-Type", METRICS_CONTENT_TYPE);
	evbuffer_add(out, text, strlen(text));
	free(text);
	evhttp_send_reply(req, HTTP_OK, "OK", out);
}

static void metrics_http_other_cb(struct evhttp_request *req, void *arg)
{
	(void)arg;
	struct evbuffer *out = evhttp_request_get_output_buffer(req);
	evbuffer_add_printf(out, "only /metrics is served here\n");
	evhttp_send_reply(req, HTTP_NOTFOUND, "Not Found", out);
}

struct metrics_http *metrics_http_new(struct event_base *base, const char *listen,
                                      char *(*render)(void *arg, char **err), void *arg, char **err)
{
	struct metrics_http *mh;
	struct evhttp_bound_socket *bs;
	struct sockaddr_storage ss;
	socklen_t sl = sizeof(ss);
	char *host = NULL, addr[INET6_ADDRSTRLEN];
	int port;

	if (!metrics_listen_parse(listen, &host, &port)) {
		*err = xasprintf("metrics_listen: '%s' is not HOST:PORT", listen);
		return NULL;
	}
	mh = xcalloc(1, sizeof(*mh));
	mh->render = render;
	mh->arg = arg;
	mh->http = evhttp_new(base);
	if (mh->http == NULL)
		fatalx("evhttp_new failed");
	/* Other methods get a 405 from metrics_http_cb (libevent's own refusal is a 501). */
	evhttp_set_allowed_methods(mh->http, EVHTTP_REQ_GET | EVHTTP_REQ_HEAD | EVHTTP_REQ_POST |
	                                         EVHTTP_REQ_PUT | EVHTTP_REQ_DELETE);
	evhttp_set_timeout(mh->http, 30);
	evhttp_set_max_headers_size(mh->http, 16384);
	evhttp_set_max_body_size(mh->http, 4096);
	evhttp_set_cb(mh->http, "/metrics", metrics_http_cb, mh);
	evhttp_set_gencb(mh->http, metrics_http_other_cb, mh);
	bs = evhttp_bind_socket_with_handle(mh->http, host, (ev_uint16_t)port);
	if (bs == NULL ||
	    getsockname(evhttp_bound_socket_get_fd(bs), (struct sockaddr *)&ss, &sl) != 0) {
		*err = xasprintf("metrics_listen: cannot listen on %s", listen);
		free(host);
		metrics_http_free(mh);
		return NULL;
	}
	if (ss.ss_family == AF_INET6) {
		struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)&ss;
		inet_ntop(AF_INET6, &s6->sin6_addr, addr, sizeof(addr));
		mh->address = xasprintf("[%s]:%u", addr, (unsigned)ntohs(s6->sin6_port));
	} else {
		struct sockaddr_in *s4 = (struct sockaddr_in *)&ss;
		inet_ntop(AF_INET, &s4->sin_addr, addr, sizeof(addr));
		mh->address = xasprintf("%s:%u", addr, (unsigned)ntohs(s4->sin_port));
	}
	free(host);
	return mh;
}

const char *metrics_http_address(const struct metrics_http *mh)
{
	return mh->address;
}

void metrics_http_free(struct metrics_http *mh)
{
	if (mh == NULL)
		return;
	if (mh->http)
		evhttp_free(mh->http);
	free(mh->address);
	free(mh);
}
