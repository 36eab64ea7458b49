/*
 * The HTTP client against a scripted server (tests/integration/fake_service.py):
 * what goes on the wire (method, headers, bodies, multipart parts), what comes back
 * (status, body, headers, streaming), and the promises about callbacks: exactly one
 * completion, never from inside http_start, none after a cancel.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>
#include <event2/event.h>

#include "fake-service.h"
#include "http.h"
#include "log.h"
#include "util.h"

#define TOKEN "sk-test-secret-token-0123456789"

struct ctx {
	struct event_base *base;
	struct http *http;
	struct fake_service *fs;
};

struct result {
	bool done;
	int calls;
	bool starting; /* set around http_start: done_cb must not run then */
	bool called_during_start;
	long status;
	char *error;
	char *body;
	size_t body_len;
	char *retry_after;
	char *content_type;
	enum http_failure failure;
	char *proxy;
	/* streaming */
	char *stream;
	size_t stream_len;
	long stream_status;
	int data_calls;
	int header_calls; /* on_data with len 0: the headers are in, before any body */
	/* progress */
	uint64_t last_sent, last_total;
	int progress_calls;
	bool progress_regressed;
	/* cancel from inside on_data */
	struct http_xfer *xfer;
	bool cancel_in_data;
	struct http *http;
	const char *url_in_data;
	struct result *started_in_data;
};

static char *dup_or_null(const char *s)
{
	return s ? xstrdup(s) : NULL;
}

static void result_free(struct result *r)
{
	free(r->error);
	free(r->body);
	free(r->retry_after);
	free(r->content_type);
	free(r->proxy);
	free(r->stream);
}

static void done_cb(void *arg, const struct http_response *resp)
{
	struct result *r = arg;

	if (r->starting)
		r->called_during_start = true;
	r->calls++;
	r->done = true;
	r->status = resp->status;
	r->error = dup_or_null(resp->error);
	r->body = xstrndup(resp->body, resp->body_len);
	r->body_len = resp->body_len;
	r->retry_after = dup_or_null(resp->retry_after);
	r->content_type = dup_or_null(resp->content_type);
	r->failure = resp->failure;
	r->proxy = dup_or_null(resp->proxy);
}

static struct http_xfer *start(struct ctx *c, const struct http_request *req, struct result *r)
{
	struct http_xfer *x;

	r->starting = true;
	x = http_start(c->http, req, done_cb, r);
	r->starting = false;
	r->xfer = x;
	return x;
}

static void run(struct ctx *c, struct result *r)
{
	assert_true(test_loop_until(c->base, &r->done, 20));
	assert_int_equal(r->calls, 1);
	assert_false(r->called_during_start);
}

static int setup(void **state)
{
	struct ctx *c = xcalloc(1, sizeof(*c));
	char *err = NULL;

	c->base = event_base_new();
	c->http = http_new(c->base, &err);
	assert_non_null(c->http);
	*state = c;
	return 0;
}

static int teardown(void **state)
{
	struct ctx *c = *state;

	http_free(c->http);
	fake_service_stop(c->fs);
	event_base_free(c->base);
	free(c);
	return 0;
}

static json_object *req_at(json_object *reqs, size_t i)
{
	assert_true(i < json_object_array_length(reqs));
	return json_object_array_get_idx(reqs, i);
}

static const char *jstr(json_object *o, const char *key)
{
	json_object *v;
	if (!json_object_object_get_ex(o, key, &v))
		return NULL;
	return json_object_get_string(v);
}

static const char *header(json_object *req, const char *name)
{
	json_object *h;
	assert_true(json_object_object_get_ex(req, "headers", &h));
	return jstr(h, name);
}

static void test_get_buffered(void **state)
{
	struct ctx *c = *state;
	struct result r = {0};
	const char *extra[] = {"Accept: application/json", "X-Test: yes", NULL};
	json_object *reqs;

	c->fs = fake_service_start("{\"GET /v1/thing\": [{\"json\": {\"id\": \"abc\"}, "
	                           "\"headers\": {\"Retry-After\": \"7\"}}]}");
	char *url = fake_service_url(c->fs, "/v1/thing?x=1");
	start(c, &(struct http_request){.url = url, .bearer_token = TOKEN, .headers = extra}, &r);
	run(c, &r);
	assert_null(r.error);
	assert_int_equal(r.status, 200);
	assert_string_equal(r.body, "{\"id\": \"abc\"}");
	assert_string_equal(r.content_type, "application/json");
	assert_string_equal(r.retry_after, "7");

	reqs = fake_service_requests(c->fs);
	assert_int_equal(json_object_array_length(reqs), 1);
	assert_string_equal(jstr(req_at(reqs, 0), "method"), "GET");
	assert_string_equal(jstr(req_at(reqs, 0), "path"), "/v1/thing?x=1");
	assert_string_equal(header(req_at(reqs, 0), "authorization"), "Bearer " TOKEN);
	assert_string_equal(header(req_at(reqs, 0), "accept"), "application/json");
	assert_string_equal(header(req_at(reqs, 0), "x-test"), "yes");
	assert_true(str_has_prefix(header(req_at(reqs, 0), "user-agent"), "snapbuild/"));
	json_object_put(reqs);
	result_free(&r);
	free(url);
}

static void test_post_json_and_delete(void **state)
{
	struct ctx *c = *state;
	struct result r1 = {0}, r2 = {0};
	const char body[] = "{\"image\":\"x\"}";
	json_object *reqs;

	c->fs = fake_service_start("{\"POST /v1/snapshots\": [{\"status\": 201, \"json\": {}}],"
	                           " \"DELETE /builds/b1\": [{\"status\": 204}]}");
	char *u1 = fake_service_url(c->fs, "/v1/snapshots");
	char *u2 = fake_service_url(c->fs, "/builds/b1");
	start(c,
	      &(struct http_request){.method = "POST",
	                             .url = u1,
	                             .body = body,
	                             .body_len = strlen(body),
	                             .content_type = "application/json"},
	      &r1);
	start(c, &(struct http_request){.method = "DELETE", .url = u2}, &r2);
	run(c, &r1);
	run(c, &r2);
	assert_int_equal(r1.status, 201);
	assert_int_equal(r2.status, 204);
	assert_int_equal(r2.body_len, 0);

	reqs = fake_service_requests(c->fs);
	assert_int_equal(json_object_array_length(reqs), 2);
	for (size_t i = 0; i < 2; i++) {
		json_object *q = req_at(reqs, i);
		if (strcmp(jstr(q, "method"), "POST") == 0) {
			assert_string_equal(jstr(q, "body"), body);
			assert_string_equal(header(q, "content-type"), "application/json");
			assert_null(header(q, "authorization"));
		} else {
			assert_string_equal(jstr(q, "method"), "DELETE");
			assert_string_equal(jstr(q, "path"), "/builds/b1");
		}
	}
	json_object_put(reqs);
	result_free(&r1);
	result_free(&r2);
	free(u1);
	free(u2);
}

static void progress_cb(void *arg, uint64_t sent, uint64_t total)
{
	struct result *r = arg;

	if (sent < r->last_sent)
		r->progress_regressed = true;
	r->last_sent = sent;
	r->last_total = total;
	r->progress_calls++;
}

static char *write_temp_file(size_t size)
{
	char *path = xstrdup("/tmp/snapbuild-http-XXXXXX");
	int fd = mkstemp(path);
	char buf[4096];

	assert_true(fd >= 0);
	for (size_t i = 0; i < sizeof(buf); i++)
		buf[i] = (char)(i * 7 + 3);
	for (size_t off = 0; off < size; off += sizeof(buf)) {
		size_t n = size - off < sizeof(buf) ? size - off : sizeof(buf);
		assert_int_equal(write(fd, buf, n), (ssize_t)n);
	}
	close(fd);
	return path;
}

static json_object *part_named(json_object *req, const char *name)
{
	json_object *parts;
	assert_true(json_object_object_get_ex(req, "parts", &parts));
	for (size_t i = 0; i < json_object_array_length(parts); i++) {
		json_object *p = json_object_array_get_idx(parts, i);
		if (strcmp(jstr(p, "name"), name) == 0)
			return p;
	}
	return NULL;
}

static void test_multipart_streams_file_with_progress(void **state)
{
	struct ctx *c = *state;
	struct result r = {0};
	const size_t size = 3 * 1024 * 1024 + 17;
	char *path = write_temp_file(size);
	json_object *reqs, *p;
	struct http_part parts[] = {
	    {.name = "image_name", .value = "image-a:b"},
	    {.name = "build_args", .value = "{}"},
	    {.name = "context",
	     .file_path = path,
	     .filename = "context.tar.gz",
	     .content_type = "application/gzip"},
	};

	c->fs = fake_service_start("{\"POST /builds\": [{\"json\": {\"build_id\": \"b1\"}}]}");
	char *url = fake_service_url(c->fs, "/builds");
	start(c,
	      &(struct http_request){.method = "POST",
	                             .url = url,
	                             .parts = parts,
	                             .nparts = 3,
	                             .on_upload_progress = progress_cb},
	      &r);
	run(c, &r);
	assert_null(r.error);
	assert_int_equal(r.status, 200);
	assert_true(r.progress_calls >= 2);
	assert_false(r.progress_regressed);
	assert_int_equal(r.last_sent, r.last_total);
	assert_true(r.last_total > size);

	reqs = fake_service_requests(c->fs);
	assert_int_equal(json_object_array_length(reqs), 1);
	assert_true(str_has_prefix(header(req_at(reqs, 0), "content-type"), "multipart/form-data"));
	assert_int_equal(json_object_get_int64(json_object_object_get(req_at(reqs, 0), "body_len")),
	                 (int64_t)r.last_total);
	p = part_named(req_at(reqs, 0), "image_name");
	assert_non_null(p);
	assert_string_equal(jstr(p, "value"), "image-a:b");
	assert_null(jstr(p, "filename"));
	p = part_named(req_at(reqs, 0), "context");
	assert_non_null(p);
	assert_string_equal(jstr(p, "filename"), "context.tar.gz");
	assert_string_equal(jstr(p, "content_type"), "application/gzip");
	assert_int_equal(json_object_get_int64(json_object_object_get(p, "size")), (int64_t)size);
	json_object_put(reqs);
	unlink(path);
	free(path);
	free(url);
	result_free(&r);
}

static void test_missing_file_part_fails_cleanly(void **state)
{
	struct ctx *c = *state;
	struct result r = {0};
	struct http_part parts[] = {
	    {.name = "context", .file_path = "/nonexistent/context.tar.gz"},
	};

	c->fs = fake_service_start("{}");
	char *url = fake_service_url(c->fs, "/builds");
	start(c, &(struct http_request){.method = "POST", .url = url, .parts = parts, .nparts = 1},
	      &r);
	run(c, &r);
	assert_non_null(r.error);
	free(url);
	result_free(&r);
}

static void test_response_too_large(void **state)
{
	struct ctx *c = *state;
	struct result r = {0};

	c->fs = fake_service_start("{\"GET /big\": [{\"body_repeat\": [\"0123456789\", 100000]}]}");
	char *url = fake_service_url(c->fs, "/big");
	start(c, &(struct http_request){.url = url, .max_body = 4096}, &r);
	run(c, &r);
	assert_non_null(r.error);
	assert_non_null(strstr(r.error, "response too large"));
	assert_true(r.body_len <= 4096);
	free(url);
	result_free(&r);
}

static void test_connection_refused(void **state)
{
	struct ctx *c = *state;
	struct result r = {0};
	char *url = test_closed_port_url();

	start(c, &(struct http_request){.url = url}, &r);
	run(c, &r);
	assert_int_equal(r.status, 0);
	assert_non_null(r.error);
	free(url);
	result_free(&r);
}

static void test_no_proxy_lists_as_curl_reads_them(void **state)
{
	(void)state;
	assert_true(http_no_proxy_match("*", "builder.codesandbox.io"));
	assert_true(http_no_proxy_match("codesandbox.io", "builder.codesandbox.io"));
	assert_true(http_no_proxy_match("example.org, .codesandbox.io", "codesandbox.io"));
	assert_true(http_no_proxy_match("CodeSandbox.IO", "api.codesandbox.io."));
	assert_false(http_no_proxy_match("sandbox.io", "codesandbox.io"));
	assert_false(http_no_proxy_match("codesandbox.io.evil", "codesandbox.io"));
	assert_false(http_no_proxy_match("", "codesandbox.io"));
	assert_false(http_no_proxy_match(NULL, "codesandbox.io"));
	assert_true(http_no_proxy_match("localhost,127.0.0.1", "127.0.0.1"));
	assert_true(http_no_proxy_match("10.0.0.0/8 192.168.0.0/16", "10.20.30.40"));
	assert_false(http_no_proxy_match("10.0.0.0/8", "11.0.0.1"));
	assert_true(http_no_proxy_match("127.0.0.0/31", "127.0.0.1"));
	assert_false(http_no_proxy_match("127.0.0.0/32", "127.0.0.1"));
	assert_true(http_no_proxy_match("::1", "::1"));
	assert_true(http_no_proxy_match("fd00::/8", "fd12::7"));
	assert_false(http_no_proxy_match("10.0.0.0/8", "::1"));
	assert_false(http_no_proxy_match("10.0.0.0/99", "10.0.0.1"));
}

static void test_proxy_display_hides_credentials(void **state)
{
	char *d;
	(void)state;
	d = http_proxy_display("http://user:secret@proxy.corp:3128");
	assert_string_equal(d, "http://proxy.corp:3128");
	free(d);
	d = http_proxy_display("socks5h://proxy.corp:1080/");
	assert_string_equal(d, "socks5h://proxy.corp:1080/");
	free(d);
}

/* An unreachable proxy is named (without its password) in the failure. */
static void test_dead_proxy_is_named(void **state)
{
	struct ctx *c = *state;
	struct result r = {0};
	char *closed = test_closed_port_url(); /* http://127.0.0.1:PORT */
	char *proxy = xasprintf("http://user:secret@%s", closed + strlen("http://"));
	char *shown = xasprintf("cannot reach the proxy %s", closed);

	http_set_options(c->http, &(struct http_options){.proxy = proxy});
	start(c, &(struct http_request){.url = "https://builder.example.invalid/builds"}, &r);
	run(c, &r);
	assert_int_equal(r.failure, HTTP_FAILURE_PROXY);
	assert_non_null(strstr(r.error, shown));
	assert_null(strstr(r.error, "secret"));
	assert_string_equal(r.proxy, closed);
	result_free(&r);

	/* listed in no_proxy: straight to the (closed) server, no proxy involved */
	memset(&r, 0, sizeof(r));
	http_set_options(c->http, &(struct http_options){.proxy = proxy, .no_proxy = "127.0.0.1"});
	start(c, &(struct http_request){.url = closed}, &r);
	run(c, &r);
	assert_int_equal(r.failure, HTTP_FAILURE_OTHER);
	assert_null(r.proxy);
	result_free(&r);

	/* no proxy option: the environment's */
	memset(&r, 0, sizeof(r));
	http_set_options(c->http, &(struct http_options){0});
	setenv("https_proxy", proxy, 1);
	start(c, &(struct http_request){.url = "https://builder.example.invalid/builds"}, &r);
	unsetenv("https_proxy");
	run(c, &r);
	assert_int_equal(r.failure, HTTP_FAILURE_PROXY);
	assert_string_equal(r.proxy, closed);
	result_free(&r);
	free(shown);
	free(proxy);
	free(closed);
}

static void test_unsupported_scheme_reported_from_loop(void **state)
{
	struct ctx *c = *state;
	struct result r = {0};

	start(c, &(struct http_request){.url = "ftp://127.0.0.1/x"}, &r);
	assert_false(r.done);
	run(c, &r);
	assert_int_equal(r.status, 0);
	assert_non_null(r.error);
	result_free(&r);
}

static void test_timeout(void **state)
{
	struct ctx *c = *state;
	struct result r = {0};
	double t0;

	c->fs = fake_service_start("{\"GET /slow\": [{\"delay\": 5, \"body\": \"late\"}]}");
	char *url = fake_service_url(c->fs, "/slow");
	t0 = now_seconds();
	start(c, &(struct http_request){.url = url, .timeout_ms = 300}, &r);
	run(c, &r);
	assert_non_null(r.error);
	assert_int_equal(r.status, 0);
	assert_true(now_seconds() - t0 < 4);
	free(url);
	result_free(&r);
}

static void data_cb(void *arg, long status, const char *buf, size_t len)
{
	struct result *r = arg;

	r->stream = xrealloc(r->stream, r->stream_len + len + 1);
	memcpy(r->stream + r->stream_len, buf, len);
	r->stream_len += len;
	r->stream[r->stream_len] = '\0';
	r->stream_status = status;
	r->data_calls++;
	if (len == 0 && r->stream_len == 0)
		r->header_calls++;
	if (r->cancel_in_data) {
		http_cancel(r->xfer);
		if (r->started_in_data) {
			struct http_request req = {.url = r->url_in_data};
			r->started_in_data->xfer =
			    http_start(r->http, &req, done_cb, r->started_in_data);
		}
	}
}

static void test_streaming_delivers_body_as_it_comes(void **state)
{
	struct ctx *c = *state;
	struct result r = {0};

	c->fs =
	    fake_service_start("{\"GET /logs\": [{\"sse\": [\"data: one\\n\\n\", {\"sleep\": 0.1},"
	                       " \"data: two\\n\\n\"]}]}");
	char *url = fake_service_url(c->fs, "/logs");
	start(c, &(struct http_request){.url = url, .on_data = data_cb}, &r);
	run(c, &r);
	assert_null(r.error);
	assert_int_equal(r.status, 200);
	assert_int_equal(r.stream_status, 200);
	assert_string_equal(r.stream, "data: one\n\ndata: two\n\n");
	assert_int_equal(r.header_calls, 1);
	assert_true(r.data_calls >= 3);
	assert_int_equal(r.body_len, 0);
	assert_string_equal(r.content_type, "text/event-stream");
	free(url);
	result_free(&r);
}

static void test_streaming_error_status_is_buffered(void **state)
{
	struct ctx *c = *state;
	struct result r = {0};

	c->fs = fake_service_start(
	    "{\"GET /logs\": [{\"status\": 404, \"json\": {\"message\": \"not yet\"}}]}");
	char *url = fake_service_url(c->fs, "/logs");
	start(c, &(struct http_request){.url = url, .on_data = data_cb}, &r);
	run(c, &r);
	assert_null(r.error);
	assert_int_equal(r.status, 404);
	assert_int_equal(r.data_calls, 0);
	assert_string_equal(r.body, "{\"message\": \"not yet\"}");
	free(url);
	result_free(&r);
}

static void test_dropped_stream_reports_error(void **state)
{
	struct ctx *c = *state;
	struct result r = {0};

	c->fs = fake_service_start(
	    "{\"GET /logs\": [{\"sse\": [\"data: one\\n\\n\", {\"drop\": true}]}]}");
	char *url = fake_service_url(c->fs, "/logs");
	start(c, &(struct http_request){.url = url, .on_data = data_cb}, &r);
	run(c, &r);
	assert_string_equal(r.stream, "data: one\n\n");
	assert_non_null(r.error);
	assert_int_equal(r.status, 200);
	free(url);
	result_free(&r);
}

static void test_low_speed_aborts_stalled_stream(void **state)
{
	struct ctx *c = *state;
	struct result r = {0};

	c->fs = fake_service_start(
	    "{\"GET /logs\": [{\"sse\": [\"data: one\\n\\n\", {\"stall\": true}]}]}");
	char *url = fake_service_url(c->fs, "/logs");
	start(c, &(struct http_request){.url = url, .on_data = data_cb, .low_speed_time_s = 1}, &r);
	run(c, &r);
	assert_non_null(r.error);
	assert_string_equal(r.stream, "data: one\n\n");
	free(url);
	result_free(&r);
}

static void cancel_timer_cb(evutil_socket_t fd, short kind, void *arg)
{
	(void)fd;
	(void)kind;
	http_cancel(arg);
}

static void test_cancel_mid_transfer_means_no_callback(void **state)
{
	struct ctx *c = *state;
	struct result slow = {0}, later = {0};
	struct event *ev;
	struct timeval tv = {0, 100000};

	c->fs = fake_service_start("{\"GET /slow\": [{\"delay\": 0.5, \"body\": \"x\"}],"
	                           " \"GET /slower\": [{\"delay\": 1.0, \"body\": \"y\"}]}");
	char *u1 = fake_service_url(c->fs, "/slow");
	char *u2 = fake_service_url(c->fs, "/slower");
	start(c, &(struct http_request){.url = u1}, &slow);
	start(c, &(struct http_request){.url = u2}, &later);
	ev = evtimer_new(c->base, cancel_timer_cb, slow.xfer);
	evtimer_add(ev, &tv);
	/* the other transfer answers after the cancelled one would have */
	run(c, &later);
	assert_int_equal(later.status, 200);
	assert_int_equal(slow.calls, 0);
	event_free(ev);
	free(u1);
	free(u2);
	result_free(&slow);
	result_free(&later);
}

static void test_cancel_and_start_from_inside_on_data(void **state)
{
	struct ctx *c = *state;
	struct result r = {0}, next = {0};
	json_object *reqs;

	c->fs = fake_service_start("{\"GET /logs\": [{\"sse\": [{\"endless_line\": true}]}],"
	                           " \"GET /next\": [{\"body\": \"ok\"}]}");
	char *u1 = fake_service_url(c->fs, "/logs");
	char *u2 = fake_service_url(c->fs, "/next");
	r.cancel_in_data = true;
	r.http = c->http;
	r.url_in_data = u2;
	r.started_in_data = &next;
	start(c, &(struct http_request){.url = u1, .on_data = data_cb}, &r);
	run(c, &next);
	assert_string_equal(next.body, "ok");
	assert_int_equal(r.data_calls, 1);
	assert_int_equal(r.calls, 0);
	test_loop_for(c->base, 0.2);
	assert_int_equal(r.calls, 0);
	assert_int_equal(r.data_calls, 1);
	reqs = fake_service_requests(c->fs);
	assert_int_equal(json_object_array_length(reqs), 2);
	json_object_put(reqs);
	free(u1);
	free(u2);
	result_free(&r);
	result_free(&next);
}

static void test_free_with_transfers_in_flight(void **state)
{
	struct ctx *c = *state;
	struct result r1 = {0}, r2 = {0};

	c->fs = fake_service_start(
	    "{\"GET /slow\": [{\"delay\": 1, \"body\": \"x\"}],"
	    " \"GET /logs\": [{\"sse\": [\"data: a\\n\\n\", {\"stall\": true}]}]}");
	char *u1 = fake_service_url(c->fs, "/slow");
	char *u2 = fake_service_url(c->fs, "/logs");
	start(c, &(struct http_request){.url = u1}, &r1);
	start(c, &(struct http_request){.url = u2, .on_data = data_cb}, &r2);
	test_loop_until(c->base, (bool[]){false}, 0.3);
	http_free(c->http);
	c->http = NULL;
	test_loop_for(c->base, 0.1);
	assert_int_equal(r1.calls, 0);
	assert_int_equal(r2.calls, 0);
	free(u1);
	free(u2);
	result_free(&r1);
	result_free(&r2);
}

static void test_token_never_logged(void **state)
{
	struct ctx *c = *state;
	struct result r = {0}, bad = {0};
	char path[] = "/tmp/snapbuild-http-log-XXXXXX";
	int fd = mkstemp(path), saved = dup(STDERR_FILENO);
	char buf[65536];
	ssize_t n;

	log_init(LOG_LEVEL_DEBUG);
	assert_true(fd >= 0);
	fflush(stderr);
	dup2(fd, STDERR_FILENO);
	c->fs = fake_service_start(
	    "{\"GET /x\": [{\"status\": 401, \"json\": {\"message\": \"no\"}}]}");
	char *url = fake_service_url(c->fs, "/x");
	char *refused = test_closed_port_url();
	start(c, &(struct http_request){.url = url, .bearer_token = TOKEN}, &r);
	start(c, &(struct http_request){.url = refused, .bearer_token = TOKEN}, &bad);
	run(c, &r);
	run(c, &bad);
	fflush(stderr);
	dup2(saved, STDERR_FILENO);
	close(saved);
	log_init(LOG_LEVEL_INFO);

	n = pread(fd, buf, sizeof(buf) - 1, 0);
	assert_true(n >= 0);
	buf[n] = '\0';
	/* the transfers were logged, the key was not */
	assert_non_null(strstr(buf, "GET http://127.0.0.1:"));
	assert_null(strstr(buf, TOKEN));
	assert_null(strstr(r.error ? r.error : "", TOKEN));
	assert_null(strstr(bad.error, TOKEN));
	close(fd);
	unlink(path);
	free(url);
	free(refused);
	result_free(&r);
	result_free(&bad);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test_setup_teardown(test_get_buffered, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_post_json_and_delete, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_multipart_streams_file_with_progress, setup,
	                                    teardown),
	    cmocka_unit_test_setup_teardown(test_missing_file_part_fails_cleanly, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_response_too_large, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_connection_refused, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_unsupported_scheme_reported_from_loop, setup,
	                                    teardown),
	    cmocka_unit_test_setup_teardown(test_timeout, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_streaming_delivers_body_as_it_comes, setup,
	                                    teardown),
	    cmocka_unit_test_setup_teardown(test_streaming_error_status_is_buffered, setup,
	                                    teardown),
	    cmocka_unit_test_setup_teardown(test_dropped_stream_reports_error, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_low_speed_aborts_stalled_stream, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_cancel_mid_transfer_means_no_callback, setup,
	                                    teardown),
	    cmocka_unit_test_setup_teardown(test_cancel_and_start_from_inside_on_data, setup,
	                                    teardown),
	    cmocka_unit_test_setup_teardown(test_free_with_transfers_in_flight, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_token_never_logged, setup, teardown),
	    cmocka_unit_test(test_no_proxy_lists_as_curl_reads_them),
	    cmocka_unit_test(test_proxy_display_hides_credentials),
	    cmocka_unit_test_setup_teardown(test_dead_proxy_is_named, setup, teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
