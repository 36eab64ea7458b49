/*
 * The API layer against a scripted service (tests/integration/fake_service.py):
 * the submit's multipart body exactly as the builder expects it, the retry rules
 * and their counts, Retry-After, the log stream's retries, reconnects with
 * Last-Event-ID and de-duplication, control events, hostile answers (huge and
 * endless lines, garbage, non-JSON bodies), cancellation, and the management calls.
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

#include "api.h"
#include "fake-service.h"
#include "http.h"
#include "log.h"
#include "sse.h"
#include "util.h"

#define KEY "sk-api-test-key-9876543210"

struct ctx {
	struct event_base *base;
	struct http *http;
	struct api *api;
	struct fake_service *fs;
	char *archive;
};

#define MAX_LINES 256

struct res {
	bool done;
	int calls;
	long status;
	char *message;
	char *hint;
	char *build_id;
	json_object *obj;
	bool had_err;
	/* progress */
	int progress_calls;
	uint64_t sent, total;
	bool cancel_in_progress;
	struct api_op *op;
	/* follow */
	char *lines[MAX_LINES];
	size_t line_len[MAX_LINES];
	char *ids[MAX_LINES];
	size_t nlines;
	int reconnects;
	bool end_done;
	char *build_error;
	int cancel_after_lines;
};

/* A refusal as the daemon words it: "HTTP <status> from 127.0.0.1:<port><path>: <text>". */
static void assert_refusal(const char *message, long status, const char *path, const char *text)
{
	char *head = xasprintf("HTTP %ld from 127.0.0.1:", status);
	char *tail = xasprintf("%s: %s", path, text);
	const char *port = message + strlen(head);

	assert_true(str_has_prefix(message, head));
	assert_true(strlen(message) > strlen(head) + strlen(tail));
	while (*port >= '0' && *port <= '9')
		port++;
	assert_string_equal(port, tail);
	free(head);
	free(tail);
}

static void res_free(struct res *r)
{
	free(r->message);
	free(r->hint);
	free(r->build_id);
	json_object_put(r->obj);
	for (size_t i = 0; i < r->nlines; i++) {
		free(r->lines[i]);
		free(r->ids[i]);
	}
	free(r->build_error);
}

static void res_err(struct res *r, const struct api_error *err)
{
	r->calls++;
	r->done = true;
	r->had_err = err != NULL;
	if (err) {
		r->status = err->status;
		r->message = xstrdup(err->message);
		r->hint = err->hint ? xstrdup(err->hint) : NULL;
		assert_non_null(err->message);
	}
}

static void submit_done(void *arg, const struct api_error *err, const char *build_id)
{
	struct res *r = arg;
	res_err(r, err);
	if (build_id)
		r->build_id = xstrdup(build_id);
	assert_true((err == NULL) == (build_id != NULL));
}

static void object_done(void *arg, const struct api_error *err, json_object *obj)
{
	struct res *r = arg;
	res_err(r, err);
	r->obj = obj ? json_object_get(obj) : NULL;
}

static void confirm_done(void *arg, const struct api_error *err)
{
	res_err(arg, err);
}

static void mgmt_done(void *arg, const struct api_error *err, long status, json_object *body)
{
	struct res *r = arg;
	res_err(r, err);
	if (!err)
		r->status = status;
	r->obj = body ? json_object_get(body) : NULL;
}

static void progress(void *arg, uint64_t sent, uint64_t total)
{
	struct res *r = arg;
	r->progress_calls++;
	r->sent = sent;
	r->total = total;
	if (r->cancel_in_progress)
		api_op_cancel(r->op);
}

static void on_line(void *arg, const char *text, size_t len, const char *id)
{
	struct res *r = arg;

	assert_true(r->nlines < MAX_LINES);
	r->lines[r->nlines] = xstrndup(text, len);
	r->line_len[r->nlines] = len;
	r->ids[r->nlines] = xstrdup(id);
	r->nlines++;
	if (r->cancel_after_lines && (int)r->nlines == r->cancel_after_lines)
		api_op_cancel(r->op);
}

static void on_reconnect(void *arg, const char *why)
{
	struct res *r = arg;
	assert_non_null(why);
	r->reconnects++;
}

static void on_end(void *arg, const struct api_error *err, bool done, const char *build_error)
{
	struct res *r = arg;
	res_err(r, err);
	r->end_done = done;
	r->build_error = build_error ? xstrdup(build_error) : NULL;
}

static const struct api_follow_cbs follow_cbs = {on_line, on_reconnect, on_end};

static char *write_archive(size_t size)
{
	char *path = xstrdup("/tmp/snapbuild-api-XXXXXX");
	int fd = mkstemp(path);
	char buf[4096];

	assert_true(fd >= 0);
	memset(buf, 'z', sizeof(buf));
	for (size_t off = 0; off < size; off += sizeof(buf)) {
		size_t n = size - off < sizeof(buf) ? size - off : sizeof(buf);
		assert_int_equal(write(fd, buf, n), (ssize_t)n);
	}
	close(fd);
	return path;
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

	api_free(c->api);
	http_free(c->http);
	fake_service_stop(c->fs);
	event_base_free(c->base);
	if (c->archive) {
		unlink(c->archive);
		free(c->archive);
	}
	free(c);
	return 0;
}

/* Starts the service and an api on it, both builder and management on one port. */
static void serve(struct ctx *c, const char *script)
{
	struct api_timing t;

	c->fs = fake_service_start(script);
	c->api = api_new(c->http, c->fs->base_url, c->fs->base_url, KEY);
	api_get_timing(c->api, &t);
	t.backoff_base_ms = 50;
	t.backoff_jitter_ms = 10;
	t.follow_retry_ms = 50;
	t.request_timeout_ms = 5000;
	api_set_timing(c->api, &t);
}

static void wait_done(struct ctx *c, struct res *r)
{
	assert_true(test_loop_until(c->base, &r->done, 30));
	assert_int_equal(r->calls, 1);
}

static json_object *requests(struct ctx *c)
{
	return fake_service_requests(c->fs);
}

static json_object *req(json_object *reqs, size_t i)
{
	assert_true(i < json_object_array_length(reqs));
	return json_object_array_get_idx(reqs, i);
}

static const char *jstr(json_object *o, const char *key)
{
	json_object *v;
	if (o == NULL || !json_object_object_get_ex(o, key, &v) || v == NULL)
		return NULL;
	return json_object_get_string(v);
}

static const char *header(json_object *r, const char *name)
{
	return jstr(json_object_object_get(r, "headers"), name);
}

static json_object *part(json_object *r, const char *name)
{
	json_object *parts = json_object_object_get(r, "parts");
	for (size_t i = 0; parts && i < json_object_array_length(parts); i++)
		if (strcmp(jstr(json_object_array_get_idx(parts, i), "name"), name) == 0)
			return json_object_array_get_idx(parts, i);
	return NULL;
}

static double req_time(json_object *r)
{
	return json_object_get_double(json_object_object_get(r, "time"));
}

/* ---- pure helpers ---- */

static void test_builder_url_from_base(void **state)
{
	(void)state;
	struct {
		const char *in, *out;
	} cases[] = {
	    {"https://api.bartender.codesandbox.io", "https://builder.codesandbox.io"},
	    {"https://api.bartender.codesandbox.io/", "https://builder.codesandbox.io"},
	    {"https://api.bartender.example.com:8443", "https://builder.example.com:8443"},
	    {"http://127.0.0.1:8080", "http://127.0.0.1:8080"},
	    {"https://myapi.bartender.example.com", "https://myapi.bartender.example.com"},
	    {"https://example.com/api.bartender.x", "https://example.com/api.bartender.x"},
	    /* the SDKs replace "api.bartender." anywhere; only a host prefix is replaced here */
	    {"https://example.com/api.bartender.x/", "https://example.com/api.bartender.x"},
	    {"https://api.bartender.codesandbox.io//", "https://builder.codesandbox.io"},
	    {"http://127.0.0.1:8080/", "http://127.0.0.1:8080"},
	    {"http://127.0.0.1:8080/prefix/", "http://127.0.0.1:8080/prefix"},
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		char *got = api_builder_url_from_base(cases[i].in);
		assert_string_equal(got, cases[i].out);
		free(got);
	}
}

static void test_cache_key_valid(void **state)
{
	(void)state;
	char long_key[300];

	assert_true(api_cache_key_valid("myapp"));
	assert_true(api_cache_key_valid("team/app-1.2_x"));
	assert_true(api_cache_key_valid("a"));
	assert_false(api_cache_key_valid(NULL));
	assert_false(api_cache_key_valid(""));
	assert_false(api_cache_key_valid("MyApp"));
	assert_false(api_cache_key_valid("app:latest"));
	assert_false(api_cache_key_valid("a b"));
	assert_false(api_cache_key_valid("a//b"));
	assert_false(api_cache_key_valid("/a"));
	assert_false(api_cache_key_valid("a/"));
	assert_false(api_cache_key_valid("caf\xC3\xA9"));
	memset(long_key, 'a', 255);
	long_key[255] = '\0';
	assert_true(api_cache_key_valid(long_key));
	long_key[255] = 'a';
	long_key[256] = '\0';
	assert_false(api_cache_key_valid(long_key));
}

static void test_alias_and_escape(void **state)
{
	(void)state;
	char *e;

	assert_true(api_alias_valid("app"));
	assert_true(api_alias_valid("team@app-1.2"));
	assert_false(api_alias_valid(""));
	assert_false(api_alias_valid("@app"));
	assert_false(api_alias_valid("team@"));
	assert_false(api_alias_valid("a@b@c"));
	assert_false(api_alias_valid("a b"));
	assert_false(api_alias_valid("a/b"));
	assert_false(api_alias_valid("a?b"));
	e = api_escape("tags[k]=v w/~");
	assert_string_equal(e, "tags%5Bk%5D%3Dv%20w%2F~");
	free(e);
}

/* ---- submit ---- */

static struct api_op *submit(struct ctx *c, struct res *r, const char *cache_key)
{
	struct api_submit s = {
	    .archive_path = c->archive,
	    .image_name = "image-1234:5678",
	    .cache_key = cache_key,
	};
	return r->op = api_build_submit(c->api, &s, progress, submit_done, r);
}

static void test_submit_sends_the_parts_exactly(void **state)
{
	struct ctx *c = *state;
	struct res r = {0};
	json_object *reqs, *q, *p, *parts;
	const char *names[] = {"image_name", "dockerfile", "build_args", "nydus_convert",
	                       "context"};

	serve(c, "{\"POST /builds\": [{\"json\": {\"build_id\": \"b-42\"}}]}");
	c->archive = write_archive(2 * 1024 * 1024 + 5);
	submit(c, &r, NULL);
	wait_done(c, &r);
	assert_false(r.had_err);
	assert_string_equal(r.build_id, "b-42");
	assert_true(r.progress_calls >= 1);
	assert_int_equal(r.sent, r.total);

	reqs = requests(c);
	assert_int_equal(json_object_array_length(reqs), 1);
	q = req(reqs, 0);
	assert_string_equal(jstr(q, "path"), "/builds");
	assert_string_equal(header(q, "authorization"), "Bearer " KEY);
	assert_true(str_has_prefix(header(q, "content-type"), "multipart/form-data"));
	parts = json_object_object_get(q, "parts");
	assert_int_equal(json_object_array_length(parts), 5);
	for (size_t i = 0; i < 5; i++)
		assert_string_equal(jstr(json_object_array_get_idx(parts, i), "name"), names[i]);
	assert_string_equal(jstr(part(q, "image_name"), "value"), "image-1234:5678");
	assert_string_equal(jstr(part(q, "dockerfile"), "value"), "Dockerfile");
	assert_string_equal(jstr(part(q, "build_args"), "value"), "{}");
	assert_string_equal(jstr(part(q, "nydus_convert"), "value"), "true");
	assert_null(part(q, "cache_key"));
	p = part(q, "context");
	assert_string_equal(jstr(p, "filename"), "context.tar.gz");
	assert_string_equal(jstr(p, "content_type"), "application/gzip");
	assert_int_equal(json_object_get_int64(json_object_object_get(p, "size")),
	                 2 * 1024 * 1024 + 5);
	assert_null(jstr(part(q, "image_name"), "filename"));
	json_object_put(reqs);
	res_free(&r);
}

static void test_submit_optional_parts(void **state)
{
	struct ctx *c = *state;
	struct res r = {0};
	json_object *reqs;
	struct api_submit s = {
	    .image_name = "image-a:b",
	    .dockerfile = "docker/Dockerfile.prod",
	    .build_args_json = "{\"A\":\"1\"}",
	    .cache_key = "team/app",
	};

	serve(c, "{\"POST /builds\": [{\"status\": 201, \"json\": {\"build_id\": \"b\"}}]}");
	c->archive = write_archive(10);
	s.archive_path = c->archive;
	api_build_submit(c->api, &s, NULL, submit_done, &r);
	wait_done(c, &r);
	assert_false(r.had_err);
	reqs = requests(c);
	assert_string_equal(jstr(part(req(reqs, 0), "dockerfile"), "value"),
	                    "docker/Dockerfile.prod");
	assert_string_equal(jstr(part(req(reqs, 0), "build_args"), "value"), "{\"A\":\"1\"}");
	assert_string_equal(jstr(part(req(reqs, 0), "cache_key"), "value"), "team/app");
	json_object_put(reqs);
	res_free(&r);
}

static void test_submit_retries_then_succeeds(void **state)
{
	struct ctx *c = *state;
	struct res r = {0};
	json_object *reqs;

	serve(c, "{\"POST /builds\": [{\"status\": 503}, {\"status\": 502, \"body\": \"bad gw\"},"
	         " {\"json\": {\"build_id\": \"b-3\"}}]}");
	c->archive = write_archive(1000);
	submit(c, &r, NULL);
	wait_done(c, &r);
	assert_false(r.had_err);
	assert_string_equal(r.build_id, "b-3");
	reqs = requests(c);
	assert_int_equal(json_object_array_length(reqs), 3);
	/* backoff doubles: 50 ms, then 100 ms (plus at most 10 ms of jitter) */
	assert_true(req_time(req(reqs, 1)) - req_time(req(reqs, 0)) >= 0.045);
	assert_true(req_time(req(reqs, 2)) - req_time(req(reqs, 1)) >= 0.095);
	json_object_put(reqs);
	res_free(&r);
}

static void test_submit_gives_up_after_three_attempts(void **state)
{
	struct ctx *c = *state;
	struct res r = {0};
	json_object *reqs;

	serve(c, "{\"POST /builds\": [{\"status\": 503, \"json\": {\"code\": \"unavailable\","
	         " \"message\": \"builder overloaded\", \"errors\": []}}]}");
	c->archive = write_archive(1000);
	submit(c, &r, NULL);
	wait_done(c, &r);
	assert_true(r.had_err);
	assert_int_equal(r.status, 503);
	assert_refusal(r.message, 503, "/builds", "builder overloaded");
	assert_non_null(strstr(r.hint, "internal error"));
	test_loop_for(c->base, 0.3);
	reqs = requests(c);
	assert_int_equal(json_object_array_length(reqs), 3);
	json_object_put(reqs);
	res_free(&r);
}

static void test_submit_honours_retry_after(void **state)
{
	struct ctx *c = *state;
	struct res r = {0};
	json_object *reqs;

	serve(c, "{\"POST /builds\": [{\"status\": 429, \"headers\": {\"Retry-After\": \"1\"},"
	         " \"json\": {\"message\": \"slow down\"}}, {\"json\": {\"build_id\": \"b\"}}]}");
	c->archive = write_archive(1000);
	submit(c, &r, NULL);
	wait_done(c, &r);
	assert_false(r.had_err);
	reqs = requests(c);
	assert_int_equal(json_object_array_length(reqs), 2);
	assert_true(req_time(req(reqs, 1)) - req_time(req(reqs, 0)) >= 0.95);
	json_object_put(reqs);
	res_free(&r);
}

static void test_submit_client_error_not_retried(void **state)
{
	struct ctx *c = *state;
	struct res r = {0};
	json_object *reqs;

	serve(c, "{\"POST /builds\": [{\"status\": 400, \"json\": {\"code\": \"invalid\","
	         " \"message\": \"bad request\", \"errors\": [{\"parameter\": \"cache_key\","
	         " \"code\": \"invalid\", \"message\": \"must be lower case\"}]}}]}");
	c->archive = write_archive(1000);
	submit(c, &r, NULL);
	wait_done(c, &r);
	assert_int_equal(r.status, 400);
	assert_refusal(r.message, 400, "/builds", "bad request; cache_key: must be lower case");
	assert_null(r.hint);
	test_loop_for(c->base, 0.2);
	reqs = requests(c);
	assert_int_equal(json_object_array_length(reqs), 1);
	json_object_put(reqs);
	res_free(&r);
}

static void test_submit_any_2xx_with_build_id_succeeds(void **state)
{
	struct ctx *c = *state;
	struct res r201 = {0}, r202 = {0};

	serve(c, "{\"POST /builds\": [{\"status\": 201, \"json\": {\"build_id\": \"b-201\"}},"
	         " {\"status\": 202, \"json\": {\"build_id\": \"b-202\"}}]}");
	c->archive = write_archive(1000);
	submit(c, &r201, NULL);
	wait_done(c, &r201);
	submit(c, &r202, NULL);
	wait_done(c, &r202);
	assert_false(r201.had_err);
	assert_string_equal(r201.build_id, "b-201");
	assert_false(r202.had_err);
	assert_string_equal(r202.build_id, "b-202");
	res_free(&r201);
	res_free(&r202);
}

static void test_submit_every_5xx_is_retried(void **state)
{
	struct ctx *c = *state;
	struct res r = {0};
	json_object *reqs;

	serve(c, "{\"POST /builds\": [{\"status\": 507}, {\"status\": 520},"
	         " {\"json\": {\"build_id\": \"b\"}}]}");
	c->archive = write_archive(1000);
	submit(c, &r, NULL);
	wait_done(c, &r);
	assert_false(r.had_err);
	reqs = requests(c);
	assert_int_equal(json_object_array_length(reqs), 3);
	json_object_put(reqs);
	res_free(&r);
}

static void test_submit_other_4xx_are_not_retried(void **state)
{
	static const int statuses[] = {401, 403, 404, 409, 413, 422};
	struct ctx *c = *state;
	json_object *reqs;

	/* one answer each, in turn: a retry would take the next submit's answer */
	serve(c, "{\"POST /builds\": [{\"status\": 401}, {\"status\": 403}, {\"status\": 404},"
	         " {\"status\": 409}, {\"status\": 413}, {\"status\": 422}]}");
	c->archive = write_archive(1000);
	for (size_t i = 0; i < sizeof(statuses) / sizeof(statuses[0]); i++) {
		struct res r = {0};
		submit(c, &r, NULL);
		wait_done(c, &r);
		assert_int_equal(r.status, statuses[i]);
		res_free(&r);
	}
	test_loop_for(c->base, 0.2);
	reqs = requests(c);
	assert_int_equal(json_object_array_length(reqs), 6);
	json_object_put(reqs);
}

static void test_submit_unauthorized_hint(void **state)
{
	struct ctx *c = *state;
	struct res r = {0};

	serve(c,
	      "{\"POST /builds\": [{\"status\": 401, \"json\": {\"error\": \"invalid token\"}}]}");
	c->archive = write_archive(1000);
	submit(c, &r, NULL);
	wait_done(c, &r);
	assert_int_equal(r.status, 401);
	assert_refusal(r.message, 401, "/builds", "invalid token");
	assert_non_null(strstr(r.hint, "API key"));
	res_free(&r);
}

static void test_submit_without_build_id_is_an_error(void **state)
{
	struct ctx *c = *state;
	struct res r = {0};

	serve(c, "{\"POST /builds\": [{\"json\": {\"id\": \"wrong-field\"}}]}");
	c->archive = write_archive(1000);
	submit(c, &r, NULL);
	wait_done(c, &r);
	assert_true(r.had_err);
	assert_non_null(strstr(r.message, "build_id"));
	res_free(&r);
}

static void test_submit_unreachable(void **state)
{
	struct ctx *c = *state;
	struct res r = {0};
	char *url = test_closed_port_url();
	struct api_timing t;

	c->api = api_new(c->http, url, url, KEY);
	api_get_timing(c->api, &t);
	t.backoff_base_ms = 10;
	api_set_timing(c->api, &t);
	c->archive = write_archive(100);
	submit(c, &r, NULL);
	wait_done(c, &r);
	assert_int_equal(r.status, 0);
	assert_non_null(strstr(r.hint, "cannot reach"));
	free(url);
	res_free(&r);
}

static void test_cancel_submit_mid_upload(void **state)
{
	struct ctx *c = *state;
	struct res r = {0}, other = {0};

	serve(c, "{\"POST /builds\": [{\"json\": {\"build_id\": \"b\"}}],"
	         " \"GET /builds/x\": [{\"delay\": 0.3, \"json\": {\"image_ref\": \"r\"}}]}");
	c->archive = write_archive(8 * 1024 * 1024);
	r.cancel_in_progress = true;
	submit(c, &r, NULL);
	api_build_status(c->api, "x", object_done, &other);
	wait_done(c, &other);
	assert_int_equal(r.progress_calls, 1);
	assert_int_equal(r.calls, 0);
	res_free(&r);
	res_free(&other);
}

/* ---- status and delete ---- */

static void test_status_without_image_ref_is_passed_on(void **state)
{
	struct ctx *c = *state;
	struct res r = {0};
	json_object *reqs;

	serve(c, "{\"GET /builds/b%2F1\": [{\"json\": {\"status\": \"succeeded\"}}]}");
	api_build_status(c->api, "b/1", object_done, &r);
	wait_done(c, &r);
	assert_false(r.had_err);
	assert_string_equal(jstr(r.obj, "status"), "succeeded");
	assert_null(jstr(r.obj, "image_ref"));
	reqs = requests(c);
	/* the id is one path segment, whatever it contains */
	assert_string_equal(jstr(req(reqs, 0), "path"), "/builds/b%2F1");
	json_object_put(reqs);
	res_free(&r);
}

static void test_status_not_json(void **state)
{
	struct ctx *c = *state;
	struct res r = {0};

	serve(c, "{\"GET /builds/b1\": [{\"body\": \"<html>oops</html>\"}]}");
	api_build_status(c->api, "b1", object_done, &r);
	wait_done(c, &r);
	assert_true(r.had_err);
	assert_non_null(strstr(r.message, "not JSON"));
	assert_non_null(strstr(r.message, "<html>oops</html>"));
	res_free(&r);
}

static void test_status_garbage_error_body_sanitized(void **state)
{
	struct ctx *c = *state;
	struct res r = {0};
	json_object *reqs;

	serve(c, "{\"GET /builds/b1\": [{\"status\": 500, \"body\": \"\\u0001\\u00ff\\u001b[31mboom"
	         "\\n\\n   x\"}]}");
	api_build_status(c->api, "b1", object_done, &r);
	wait_done(c, &r);
	assert_int_equal(r.status, 500);
	assert_true(str_has_prefix(r.message, "HTTP 500 from 127.0.0.1:"));
	for (const char *p = r.message; *p; p++)
		assert_true(*p >= 0x20 && *p < 0x7F);
	assert_non_null(strstr(r.message, "boom x"));
	reqs = requests(c);
	assert_int_equal(json_object_array_length(reqs), 3);
	json_object_put(reqs);
	res_free(&r);
}

static void test_status_body_too_large(void **state)
{
	struct ctx *c = *state;
	struct res r = {0};

	serve(c, "{\"GET /builds/b1\": [{\"body_repeat\": [\"[1,\", 2000000]}]}");
	api_build_status(c->api, "b1", object_done, &r);
	wait_done(c, &r);
	assert_true(r.had_err);
	assert_non_null(strstr(r.message, "too large"));
	res_free(&r);
}

static void test_delete_confirmed_by_2xx_or_404(void **state)
{
	struct ctx *c = *state;
	struct res r1 = {0}, r2 = {0}, r3 = {0};
	json_object *reqs;

	serve(c,
	      "{\"DELETE /builds/b1\": [{\"status\": 204}],"
	      " \"DELETE /builds/b2\": [{\"status\": 404, \"json\": {\"message\": \"gone\"}}],"
	      " \"DELETE /builds/b3\": [{\"status\": 500}, {\"status\": 200, \"body\": \"ok\"}]}");
	api_build_delete(c->api, "b1", confirm_done, &r1);
	api_build_delete(c->api, "b2", confirm_done, &r2);
	api_build_delete(c->api, "b3", confirm_done, &r3);
	wait_done(c, &r1);
	wait_done(c, &r2);
	wait_done(c, &r3);
	assert_false(r1.had_err);
	assert_false(r2.had_err);
	assert_false(r3.had_err);
	reqs = requests(c);
	assert_int_equal(json_object_array_length(reqs), 4);
	json_object_put(reqs);
	res_free(&r1);
	res_free(&r2);
	res_free(&r3);
}

/* ---- the log stream ---- */

static struct api_op *follow(struct ctx *c, struct res *r, const char *last_id)
{
	return r->op = api_build_follow(c->api, "b1", last_id, &follow_cbs, r);
}

static void assert_lines(const struct res *r, const char *const *want, size_t n)
{
	assert_int_equal(r->nlines, n);
	for (size_t i = 0; i < n; i++)
		assert_string_equal(r->lines[i], want[i]);
}

static void test_follow_happy_path(void **state)
{
	struct ctx *c = *state;
	struct res r = {0};
	json_object *reqs;
	const char *want[] = {"Step 1/2 : FROM alpine", "", "\x1b[31mred\x1b[0m",
	                      "{\"done\": false}"};

	serve(c, "{\"GET /builds/b1/logs\": [{\"sse\": [\": hello\\n\\n\","
	         " \"id: 1\\ndata: Step 1/2 : FROM alpine\\n\\n\", \"id: 2\\ndata:\\n\\n\","
	         " \"id: 3\\ndata: \\u001b[31mred\\u001b[0m\\n\\n\","
	         " \"id: 4\\ndata: {\\\"done\\\": false}\\n\\n\","
	         " \"id: 5\\ndata: {\\\"done\\\": true}\\n\\n\","
	         " \"id: 6\\ndata: after the end\\n\\n\"]}]}");
	follow(c, &r, NULL);
	wait_done(c, &r);
	assert_false(r.had_err);
	assert_true(r.end_done);
	assert_null(r.build_error);
	assert_lines(&r, want, 4);
	assert_string_equal(r.ids[0], "1");
	assert_string_equal(r.ids[3], "4");
	assert_int_equal(r.reconnects, 0);
	reqs = requests(c);
	assert_int_equal(json_object_array_length(reqs), 1);
	assert_string_equal(header(req(reqs, 0), "accept"), "text/event-stream");
	assert_string_equal(header(req(reqs, 0), "authorization"), "Bearer " KEY);
	assert_null(header(req(reqs, 0), "last-event-id"));
	json_object_put(reqs);
	res_free(&r);
}

static void test_follow_404_then_ok(void **state)
{
	struct ctx *c = *state;
	struct res r = {0};
	json_object *reqs;
	const char *want[] = {"a"};

	serve(c, "{\"GET /builds/b1/logs\": [{\"status\": 404}, {\"status\": 404},"
	         " {\"sse\": [\"data: a\\n\\n\", \"data: {\\\"done\\\":true}\\n\\n\"]}]}");
	follow(c, &r, NULL);
	wait_done(c, &r);
	assert_false(r.had_err);
	assert_true(r.end_done);
	assert_lines(&r, want, 1);
	assert_int_equal(r.reconnects, 2);
	reqs = requests(c);
	assert_int_equal(json_object_array_length(reqs), 3);
	json_object_put(reqs);
	res_free(&r);
}

static void test_follow_gives_up_after_five_attempts(void **state)
{
	struct ctx *c = *state;
	struct res r = {0};
	json_object *reqs;

	serve(c, "{\"GET /builds/b1/logs\": [{\"status\": 404, \"json\": {\"message\": \"no such "
	         "build\"}}]}");
	follow(c, &r, NULL);
	wait_done(c, &r);
	assert_true(r.had_err);
	assert_int_equal(r.status, 404);
	assert_refusal(r.message, 404, "/builds/b1/logs", "no such build");
	assert_false(r.end_done);
	assert_int_equal(r.reconnects, 4);
	test_loop_for(c->base, 0.2);
	reqs = requests(c);
	assert_int_equal(json_object_array_length(reqs), 5);
	json_object_put(reqs);
	res_free(&r);
}

static void test_follow_unauthorized_is_fatal(void **state)
{
	struct ctx *c = *state;
	struct res r = {0};
	json_object *reqs;

	serve(c, "{\"GET /builds/b1/logs\": [{\"status\": 401, \"body\": \"denied\"}]}");
	follow(c, &r, NULL);
	wait_done(c, &r);
	assert_int_equal(r.status, 401);
	assert_refusal(r.message, 401, "/builds/b1/logs", "denied");
	assert_non_null(strstr(r.hint, "API key"));
	test_loop_for(c->base, 0.2);
	reqs = requests(c);
	assert_int_equal(json_object_array_length(reqs), 1);
	json_object_put(reqs);
	res_free(&r);
}

static void test_follow_reconnects_with_last_event_id_without_duplicates(void **state)
{
	struct ctx *c = *state;
	struct res r = {0};
	json_object *reqs;
	const char *want[] = {"l1", "l2", "l3", "l4", "l5"};

	/* the second connection replays from the start, as a server that ignores
	 * Last-Event-ID would: the client must not deliver l1..l3 again */
	serve(c,
	      "{\"GET /builds/b1/logs\": ["
	      "{\"sse\": [\"id: 1\\ndata: l1\\n\\nid: 2\\ndata: l2\\n\\n\","
	      " \"id: 3\\ndata: l3\\n\\nid: 4\\ndata: l4-partial\", {\"drop\": true}]},"
	      "{\"sse\": [\"id: 1\\ndata: l1\\n\\nid: 2\\ndata: l2\\n\\nid: 3\\ndata: l3\\n\\n\","
	      " \"id: 4\\ndata: l4\\n\\nid: 5\\ndata: l5\\n\\n\"]},"
	      "{\"sse\": [\"id: 6\\ndata: {\\\"done\\\": true}\\n\\n\"]}]}");
	follow(c, &r, NULL);
	wait_done(c, &r);
	assert_false(r.had_err);
	assert_true(r.end_done);
	assert_lines(&r, want, 5);
	assert_int_equal(r.reconnects, 2);
	reqs = requests(c);
	assert_int_equal(json_object_array_length(reqs), 3);
	assert_null(header(req(reqs, 0), "last-event-id"));
	assert_string_equal(header(req(reqs, 1), "last-event-id"), "3");
	assert_string_equal(header(req(reqs, 2), "last-event-id"), "5");
	json_object_put(reqs);
	res_free(&r);
}

static void test_follow_drops_reset_the_attempt_count(void **state)
{
	struct ctx *c = *state;
	struct res r = {0};
	char script[4096];
	size_t used;

	/* seven connections that each work and then drop: more drops than attempts,
	 * which is fine because each working stream starts the count afresh */
	used = (size_t)snprintf(script, sizeof(script), "{\"GET /builds/b1/logs\": [");
	for (int i = 1; i <= 7; i++)
		used += (size_t)snprintf(
		    script + used, sizeof(script) - used,
		    "{\"sse\": [\"id: %d\\ndata: l%d\\n\\n\", {\"drop\": true}]}, ", i, i);
	snprintf(script + used, sizeof(script) - used,
	         "{\"sse\": [\"data: {\\\"done\\\": true}\\n\\n\"]}]}");
	serve(c, script);
	follow(c, &r, NULL);
	wait_done(c, &r);
	assert_false(r.had_err);
	assert_true(r.end_done);
	assert_int_equal(r.nlines, 7);
	assert_string_equal(r.lines[6], "l7");
	assert_int_equal(r.reconnects, 7);
	res_free(&r);
}

static void test_follow_resumes_from_given_id(void **state)
{
	struct ctx *c = *state;
	struct res r = {0};
	json_object *reqs;
	const char *want[] = {"l3", "l4"};

	serve(c, "{\"GET /builds/b1/logs\": [{\"sse\": [\"id: 1\\ndata: l1\\n\\n\","
	         " \"id: 2\\ndata: l2\\n\\nid: 3\\ndata: l3\\n\\nid: 4\\ndata: l4\\n\\n\","
	         " \"data: {\\\"done\\\": true}\\n\\n\"]}]}");
	follow(c, &r, "2");
	wait_done(c, &r);
	assert_true(r.end_done);
	assert_lines(&r, want, 2);
	reqs = requests(c);
	assert_string_equal(header(req(reqs, 0), "last-event-id"), "2");
	json_object_put(reqs);
	res_free(&r);
}

static void test_follow_without_ids_delivers_every_line(void **state)
{
	struct ctx *c = *state;
	struct res r = {0};
	const char *want[] = {"same", "same", "same"};

	serve(c, "{\"GET /builds/b1/logs\": [{\"sse\": [\"data: same\\n\\ndata: same\\n\\n\"]},"
	         " {\"sse\": [\"data: same\\n\\ndata: {\\\"done\\\": true}\\n\\n\"]}]}");
	follow(c, &r, NULL);
	wait_done(c, &r);
	assert_true(r.end_done);
	assert_lines(&r, want, 3);
	assert_string_equal(r.ids[0], "");
	assert_int_equal(r.reconnects, 1);
	res_free(&r);
}

/*
 * Serves the log as a list of connections, each a string of space-separated tokens:
 * "text" an event without id, "ID=text" one with that id, "!drop" a reset, "!stall"
 * silence until the client leaves, "!done" the final {"done": true}.
 */
static void serve_streams(struct ctx *c, const char *const *conns, size_t n)
{
	json_object *script = json_object_new_object(), *answers = json_object_new_array();

	for (size_t i = 0; i < n; i++) {
		json_object *sse = json_object_new_array(), *ans = json_object_new_object();
		char *copy = xstrdup(conns[i]), *save = NULL;
		for (char *t = strtok_r(copy, " ", &save); t; t = strtok_r(NULL, " ", &save)) {
			char *eq = strchr(t, '='), *ev;
			if (strcmp(t, "!drop") == 0 || strcmp(t, "!stall") == 0) {
				json_object *o = json_object_new_object();
				json_object_object_add(o, t + 1, json_object_new_boolean(1));
				json_object_array_add(sse, o);
				continue;
			}
			if (strcmp(t, "!done") == 0)
				ev = xstrdup("data: {\"done\": true}\n\n");
			else if (eq)
				ev = xasprintf("id: %.*s\ndata: %s\n\n", (int)(eq - t), t, eq + 1);
			else
				ev = xasprintf("data: %s\n\n", t);
			json_object_array_add(sse, json_object_new_string(ev));
			free(ev);
		}
		free(copy);
		json_object_object_add(ans, "sse", sse);
		json_object_array_add(answers, ans);
	}
	json_object_object_add(script, "GET /builds/b1/logs", answers);
	serve(c, json_object_to_json_string_ext(script, JSON_C_TO_STRING_PLAIN));
	json_object_put(script);
}

static void follow_streams(struct ctx *c, struct res *r, const char *const *conns, size_t n)
{
	serve_streams(c, conns, n);
	follow(c, r, NULL);
	wait_done(c, r);
	assert_false(r->had_err);
	assert_true(r->end_done);
}

static void test_follow_replay_without_ids_is_skipped(void **state)
{
	struct ctx *c = *state;
	struct res r = {0};
	const char *conns[] = {"l1 l2 l3 !drop", "l1 l2 l3 l4 l5 !done"};
	const char *want[] = {"l1", "l2", "l3", "l4", "l5"};

	follow_streams(c, &r, conns, 2);
	assert_lines(&r, want, 5);
	res_free(&r);
}

static void test_follow_continuation_without_ids_is_kept(void **state)
{
	struct ctx *c = *state;
	struct res r = {0};
	const char *conns[] = {"l1 l2 l3 !drop", "l4 l5 !done"};
	const char *want[] = {"l1", "l2", "l3", "l4", "l5"};

	follow_streams(c, &r, conns, 2);
	assert_lines(&r, want, 5);
	res_free(&r);
}

static void test_follow_replay_with_opaque_ids_after_stall(void **state)
{
	struct ctx *c = *state;
	struct res r = {0};
	json_object *reqs;
	const char *conns[] = {"a=l1 b=l2 !stall", "a=l1 b=l2 c=l3 !done"};
	const char *want[] = {"l1", "l2", "l3"};

	serve_streams(c, conns, 2);
	api_set_stall_timeout(c->api, 300);
	follow(c, &r, NULL);
	wait_done(c, &r);
	assert_true(r.end_done);
	assert_lines(&r, want, 3);
	assert_string_equal(r.ids[2], "c");
	reqs = requests(c);
	assert_string_equal(header(req(reqs, 1), "last-event-id"), "b");
	json_object_put(reqs);
	res_free(&r);
}

static void test_follow_replay_that_drops_again_is_matched_afresh(void **state)
{
	struct ctx *c = *state;
	struct res r = {0};
	const char *conns[] = {"l1 l2 l3 !drop", "l1 l2 !drop", "l1 l2 l3 l4 !done"};
	const char *want[] = {"l1", "l2", "l3", "l4"};

	follow_streams(c, &r, conns, 3);
	assert_lines(&r, want, 4);
	res_free(&r);
}

static void test_follow_partial_match_is_a_continuation(void **state)
{
	struct ctx *c = *state;
	struct res r = {0};
	/* the new stream starts like the log but goes on differently before repeating
	 * all of it: a continuation after all, nothing held back is lost */
	const char *conns[] = {"l1 l2 l3 !drop", "l1 l2 x !done"};
	const char *want[] = {"l1", "l2", "l3", "l1", "l2", "x"};

	follow_streams(c, &r, conns, 2);
	assert_lines(&r, want, 6);
	res_free(&r);
}

static void test_follow_repeated_opening_is_the_documented_limit(void **state)
{
	struct ctx *c = *state;
	struct res r = {0};
	/* a continuation that repeats every line stored so far cannot be told from a
	 * replay: its repeat of them is taken for one (PROTOCOL.md, "Build logs") */
	const char *conns[] = {"a b !drop", "a b c !done"};
	const char *want[] = {"a", "b", "c"};

	follow_streams(c, &r, conns, 2);
	assert_lines(&r, want, 3);
	res_free(&r);
}

static void test_follow_seeded_lines_recognise_a_replay(void **state)
{
	struct ctx *c = *state;
	struct res r = {0};
	const char *conns[] = {"l1 l2 l3 !done"};
	const char *want[] = {"l3"};

	serve_streams(c, conns, 1);
	follow(c, &r, NULL);
	api_follow_seed(r.op, "l1", 2);
	api_follow_seed(r.op, "l2", 2);
	wait_done(c, &r);
	assert_true(r.end_done);
	assert_lines(&r, want, 1);
	res_free(&r);
}

static void test_follow_seeded_lines_and_a_continuation(void **state)
{
	struct ctx *c = *state;
	struct res r = {0};
	const char *conns[] = {"l3 l4 !done"};
	const char *want[] = {"l3", "l4"};

	serve_streams(c, conns, 1);
	follow(c, &r, NULL);
	api_follow_seed(r.op, "l1", 2);
	api_follow_seed(r.op, "l2", 2);
	wait_done(c, &r);
	assert_true(r.end_done);
	assert_lines(&r, want, 2);
	res_free(&r);
}

static void test_follow_error_event_is_final(void **state)
{
	struct ctx *c = *state;
	struct res r = {0};
	json_object *reqs;
	const char *want[] = {"compiling"};

	serve(c, "{\"GET /builds/b1/logs\": [{\"sse\": [\"data: compiling\\n\\n\","
	         " \"data: {\\\"error\\\": \\\"step 3 failed: exit code 1\\\"}\\n\\n\"]}]}");
	follow(c, &r, NULL);
	wait_done(c, &r);
	assert_false(r.had_err);
	assert_false(r.end_done);
	assert_string_equal(r.build_error, "step 3 failed: exit code 1");
	assert_lines(&r, want, 1);
	test_loop_for(c->base, 0.2);
	reqs = requests(c);
	assert_int_equal(json_object_array_length(reqs), 1);
	json_object_put(reqs);
	res_free(&r);
}

static void test_follow_reconnects_after_stall(void **state)
{
	struct ctx *c = *state;
	struct res r = {0};
	json_object *reqs;
	const char *want[] = {"one", "two"};

	serve(
	    c,
	    "{\"GET /builds/b1/logs\": [{\"sse\": [\"id: 1\\ndata: one\\n\\n\","
	    " {\"stall\": true}]},"
	    " {\"sse\": [\"id: 2\\ndata: two\\n\\nid: 3\\ndata: {\\\"done\\\": true}\\n\\n\"]}]}");
	api_set_stall_timeout(c->api, 300);
	follow(c, &r, NULL);
	wait_done(c, &r);
	assert_true(r.end_done);
	assert_lines(&r, want, 2);
	assert_int_equal(r.reconnects, 1);
	reqs = requests(c);
	assert_int_equal(json_object_array_length(reqs), 2);
	assert_string_equal(header(req(reqs, 1), "last-event-id"), "1");
	json_object_put(reqs);
	res_free(&r);
}

static void test_follow_silence_on_answered_streams_is_not_a_failure(void **state)
{
	struct ctx *c = *state;
	struct res r = {0};
	json_object *reqs;
	/* more silent connections than attempts: a quiet step, however long, is no error */
	const char *conns[] = {"!stall", "!stall", "!stall",  "!stall",
	                       "!stall", "!stall", "l1 !done"};
	const char *want[] = {"l1"};

	serve_streams(c, conns, 7);
	api_set_stall_timeout(c->api, 200);
	follow(c, &r, NULL);
	wait_done(c, &r);
	assert_false(r.had_err);
	assert_true(r.end_done);
	assert_lines(&r, want, 1);
	reqs = requests(c);
	assert_int_equal(json_object_array_length(reqs), 7);
	json_object_put(reqs);
	res_free(&r);
}

static void test_follow_empty_streams_count_as_failures(void **state)
{
	struct ctx *c = *state;
	struct res r = {0};
	json_object *reqs;

	/* a service that accepts and closes at once, forever, must not loop forever */
	serve(c, "{\"GET /builds/b1/logs\": [{\"sse\": []}]}");
	follow(c, &r, NULL);
	wait_done(c, &r);
	assert_true(r.had_err);
	assert_false(r.end_done);
	reqs = requests(c);
	assert_int_equal(json_object_array_length(reqs), 5);
	json_object_put(reqs);
	res_free(&r);
}

static void test_follow_huge_line_truncated(void **state)
{
	struct ctx *c = *state;
	struct res r = {0};

	serve(c, "{\"GET /builds/b1/logs\": [{\"sse\": [{\"big_line\": 10485760},"
	         " \"data: next\\n\\ndata: {\\\"done\\\": true}\\n\\n\"]}]}");
	follow(c, &r, NULL);
	wait_done(c, &r);
	assert_true(r.end_done);
	assert_int_equal(r.nlines, 2);
	assert_true(r.line_len[0] <= 1u << 20);
	assert_true(r.line_len[0] > (1u << 20) - 64);
	assert_non_null(strstr(r.lines[0], SSE_TRUNCATED_MARKER));
	assert_string_equal(r.lines[1], "next");
	res_free(&r);
}

static long rss_kib(void)
{
	long pages = 0, resident = 0;
	FILE *f = fopen("/proc/self/statm", "r");

	assert_non_null(f);
	assert_int_equal(fscanf(f, "%ld %ld", &pages, &resident), 2);
	fclose(f);
	return resident * (sysconf(_SC_PAGESIZE) / 1024);
}

static void test_follow_endless_line_stays_bounded(void **state)
{
	struct ctx *c = *state;
	struct res r = {0};
	long before, after;
	json_object *reqs;

	serve(c, "{\"GET /builds/b1/logs\": [{\"sse\": [\"data: first\\n\\n\","
	         " {\"endless_line\": true}]}]}");
	before = rss_kib();
	follow(c, &r, NULL);
	test_loop_for(c->base, 2.0);
	after = rss_kib();
	assert_int_equal(r.nlines, 1);
	assert_int_equal(r.calls, 0);
	/* the service has sent far more than the line limit by now */
	assert_true(after - before < 16 * 1024);
	api_op_cancel(r.op);
	test_loop_for(c->base, 0.1);
	assert_int_equal(r.calls, 0);
	reqs = requests(c);
	assert_int_equal(json_object_array_length(reqs), 1);
	json_object_put(reqs);
	res_free(&r);
}

static bool utf8_valid(const char *s)
{
	const unsigned char *p = (const unsigned char *)s;
	while (*p) {
		int n = *p < 0x80 ? 0 : (*p & 0xE0) == 0xC0 ? 1 : (*p & 0xF0) == 0xE0 ? 2 : 3;
		if (*p >= 0x80 && (*p < 0xC2 || *p > 0xF4))
			return false;
		p++;
		for (int i = 0; i < n; i++, p++)
			if ((*p & 0xC0) != 0x80)
				return false;
	}
	return true;
}

static void test_follow_garbage_bytes(void **state)
{
	struct ctx *c = *state;
	struct res r = {0};

	serve(c, "{\"GET /builds/b1/logs\": [{\"sse\": [\"data: \\udcff\\udcfe\\udc80ok\\n\\n\","
	         " \"\\udcc3(garbage: \\u0000\\n\\ndata: {\\\"done\\\": true}\\n\\n\"]}]}");
	follow(c, &r, NULL);
	wait_done(c, &r);
	assert_true(r.end_done);
	assert_int_equal(r.nlines, 1);
	assert_true(utf8_valid(r.lines[0]));
	assert_string_equal(r.lines[0], "\xEF\xBF\xBD\xEF\xBF\xBD\xEF\xBF\xBDok");
	res_free(&r);
}

static void test_follow_cancel_inside_on_line(void **state)
{
	struct ctx *c = *state;
	struct res r = {0}, other = {0};

	serve(c,
	      "{\"GET /builds/b1/logs\": [{\"sse\": [\"data: a\\n\\ndata: b\\n\\ndata: c\\n\\n\","
	      " {\"sleep\": 0.2}, \"data: {\\\"done\\\": true}\\n\\n\"]}],"
	      " \"GET /builds/x\": [{\"delay\": 0.5, \"json\": {}}]}");
	r.cancel_after_lines = 1;
	follow(c, &r, NULL);
	api_build_status(c->api, "x", object_done, &other);
	wait_done(c, &other);
	assert_int_equal(r.nlines, 1);
	assert_int_equal(r.calls, 0);
	res_free(&r);
	res_free(&other);
}

/* ---- management API ---- */

static void test_snapshot_create_body_and_no_blind_retry(void **state)
{
	struct ctx *c = *state;
	struct res r = {0}, r2 = {0};
	json_object *reqs, *tags = json_object_new_object(), *body;

	serve(c, "{\"POST /v1/snapshots\": [{\"status\": 201, \"json\": {\"id\": \"s-1\"}},"
	         " {\"status\": 503, \"json\": {\"message\": \"try later\"}}]}");
	json_object_object_add(tags, "snapbuild.job", json_object_new_string("job-1"));
	api_snapshot_create(c->api, "reg/ns/image-a:b", "amd64", 3600, tags, object_done, &r);
	wait_done(c, &r);
	assert_false(r.had_err);
	assert_string_equal(jstr(r.obj, "id"), "s-1");
	api_snapshot_create(c->api, "reg/ns/image-a:b", "arm64", 0, NULL, object_done, &r2);
	wait_done(c, &r2);
	assert_int_equal(r2.status, 503);
	test_loop_for(c->base, 0.2);

	reqs = requests(c);
	assert_int_equal(json_object_array_length(reqs), 2);
	assert_string_equal(header(req(reqs, 0), "content-type"), "application/json");
	body = json_tokener_parse(jstr(req(reqs, 0), "body"));
	assert_string_equal(jstr(body, "image"), "reg/ns/image-a:b");
	assert_string_equal(jstr(body, "architecture"), "amd64");
	assert_int_equal(json_object_get_int64(json_object_object_get(body, "ttl")), 3600);
	assert_string_equal(jstr(json_object_object_get(body, "tags"), "snapbuild.job"), "job-1");
	json_object_put(body);
	body = json_tokener_parse(jstr(req(reqs, 1), "body"));
	assert_null(json_object_object_get(body, "ttl"));
	assert_null(json_object_object_get(body, "tags"));
	json_object_put(body);
	json_object_put(reqs);
	json_object_put(tags);
	res_free(&r);
	res_free(&r2);
}

static void test_snapshot_find_by_tag(void **state)
{
	struct ctx *c = *state;
	struct res r = {0}, none = {0}, stranger = {0};
	json_object *reqs;

	serve(c,
	      "{\"GET /v1/snapshots\": ["
	      "{\"json\": {\"data\": [{\"id\": \"s-9\", \"tags\": {\"snapbuild.job\": \"j 1\"}}],"
	      " \"next_cursor\": null}},"
	      "{\"json\": {\"data\": [], \"next_cursor\": null}},"
	      "{\"json\": {\"data\": [{\"id\": \"s-0\", \"tags\": {}}], \"next_cursor\": null}}]}");
	api_snapshot_find_by_tag(c->api, "snapbuild.job", "j 1", object_done, &r);
	wait_done(c, &r);
	assert_false(r.had_err);
	assert_string_equal(jstr(r.obj, "id"), "s-9");
	api_snapshot_find_by_tag(c->api, "snapbuild.job", "j 1", object_done, &none);
	wait_done(c, &none);
	assert_false(none.had_err);
	assert_null(none.obj);
	api_snapshot_find_by_tag(c->api, "snapbuild.job", "j 1", object_done, &stranger);
	wait_done(c, &stranger);
	assert_false(stranger.had_err);
	assert_null(stranger.obj);
	reqs = requests(c);
	assert_string_equal(jstr(req(reqs, 0), "path"),
	                    "/v1/snapshots?tags%5Bsnapbuild.job%5D=j%201");
	json_object_put(reqs);
	res_free(&r);
	res_free(&none);
	res_free(&stranger);
}

static void test_snapshot_alias_retried(void **state)
{
	struct ctx *c = *state;
	struct res r = {0};
	json_object *reqs;

	serve(c, "{\"POST /v1/snapshots/s-1/aliases\": [{\"status\": 503}, {\"status\": 204}]}");
	api_snapshot_alias(c->api, "s-1", "app@v1", confirm_done, &r);
	wait_done(c, &r);
	assert_false(r.had_err);
	reqs = requests(c);
	assert_int_equal(json_object_array_length(reqs), 2);
	assert_string_equal(jstr(req(reqs, 1), "body"), "{\"alias\":\"app@v1\"}");
	json_object_put(reqs);
	res_free(&r);
}

static void test_registry_credentials_and_mgmt_errors(void **state)
{
	struct ctx *c = *state;
	struct res r = {0}, e = {0};

	serve(c,
	      "{\"POST /v1/container-registries/default/credentials\": [{\"status\": 201,"
	      " \"json\": {\"username\": \"u\", \"password\": \"p\", \"registry_url\": "
	      "\"reg.example.com/ns\", \"expired_at\": null}}],"
	      " \"GET /v1/snapshots/@app\": [{\"status\": 403, \"json\": {\"error\": \"nope\"}}]}");
	api_registry_credentials(c->api, object_done, &r);
	api_mgmt_call(c->api, "GET", "/v1/snapshots/@app", NULL, true, mgmt_done, &e);
	wait_done(c, &r);
	wait_done(c, &e);
	assert_string_equal(jstr(r.obj, "registry_url"), "reg.example.com/ns");
	assert_int_equal(e.status, 403);
	assert_refusal(e.message, 403, "/v1/snapshots/@app", "nope");
	assert_non_null(strstr(e.hint, "scope"));
	res_free(&r);
	res_free(&e);
}

/* ---- against the simulator of the real service ---- */

static void run_step(struct ctx *c, struct res *r)
{
	wait_done(c, r);
	if (r->had_err)
		fail_msg("%s (HTTP %ld)", r->message, r->status);
}

static void test_simulator_end_to_end_with_faults(void **state)
{
	struct ctx *c = *state;
	struct res sub = {0}, logs = {0}, again = {0}, st = {0}, snap = {0}, alias = {0},
	           found = {0}, seen = {0};
	char dir[] = "/tmp/snapbuild-api-ctx-XXXXXX", *cmd, *dockerfile;
	struct api_submit s = {.image_name = "image-e2e:1"};
	struct api_timing t;
	json_object *tags, *ctxinfo;
	FILE *f;

	c->fs =
	    sim_start(KEY, "{\"submit_fail\": {\"count\": 1, \"status\": 503, \"retry_after\": 1},"
	                   " \"logs_404\": 2, \"logs_drop_after\": {\"events\": 3, \"count\": 2}}");
	if (c->fs == NULL)
		skip();
	c->api = api_new(c->http, c->fs->base_url, NULL, KEY);
	api_get_timing(c->api, &t);
	t.backoff_base_ms = 50;
	t.follow_retry_ms = 50;
	api_set_timing(c->api, &t);

	assert_non_null(mkdtemp(dir));
	dockerfile = xasprintf("%s/Dockerfile", dir);
	f = fopen(dockerfile, "w");
	fputs("FROM alpine:3.19\nRUN echo hello\nRUN make\n", f);
	fclose(f);
	c->archive = xasprintf("%s.tar.gz", dir);
	cmd = xasprintf("tar -czf '%s' -C '%s' .", c->archive, dir);
	assert_int_equal(system(cmd), 0);
	s.archive_path = c->archive;

	api_build_submit(c->api, &s, NULL, submit_done, &sub);
	run_step(c, &sub);
	logs.op = api_build_follow(c->api, sub.build_id, NULL, &follow_cbs, &logs);
	run_step(c, &logs);
	assert_true(logs.end_done);
	assert_true(logs.nlines > 6);
	assert_int_equal(logs.reconnects, 4);
	api_build_status(c->api, sub.build_id, object_done, &st);
	run_step(c, &st);
	assert_non_null(jstr(st.obj, "image_ref"));

	tags = json_object_new_object();
	json_object_object_add(tags, "snapbuild.job", json_object_new_string("job-e2e"));
	api_snapshot_create(c->api, jstr(st.obj, "image_ref"), "amd64", 0, tags, object_done,
	                    &snap);
	run_step(c, &snap);
	api_snapshot_alias(c->api, jstr(snap.obj, "id"), "app@v1", confirm_done, &alias);
	run_step(c, &alias);
	api_snapshot_find_by_tag(c->api, "snapbuild.job", "job-e2e", object_done, &found);
	run_step(c, &found);
	assert_string_equal(jstr(found.obj, "id"), jstr(snap.obj, "id"));

	/* the faults are used up: a clean read of the whole log equals what the faulty
	 * one delivered, line for line, nothing lost and nothing twice */
	again.op = api_build_follow(c->api, sub.build_id, NULL, &follow_cbs, &again);
	run_step(c, &again);
	assert_int_equal(again.reconnects, 0);
	assert_int_equal(again.nlines, logs.nlines);
	for (size_t i = 0; i < logs.nlines; i++) {
		assert_string_equal(again.lines[i], logs.lines[i]);
		assert_string_equal(again.ids[i], logs.ids[i]);
	}

	free(cmd);
	cmd = xasprintf("/_sim/builds/%s", sub.build_id);
	api_mgmt_call(c->api, "GET", cmd, NULL, true, mgmt_done, &seen);
	run_step(c, &seen);
	assert_string_equal(jstr(seen.obj, "nydus_convert"), "true");
	assert_string_equal(jstr(seen.obj, "build_args"), "{}");
	assert_string_equal(jstr(seen.obj, "dockerfile"), "Dockerfile");
	assert_null(jstr(seen.obj, "cache_key"));
	ctxinfo = json_object_object_get(seen.obj, "context");
	assert_string_equal(jstr(ctxinfo, "filename"), "context.tar.gz");
	assert_string_equal(jstr(ctxinfo, "content_type"), "application/gzip");

	json_object_put(tags);
	unlink(dockerfile);
	rmdir(dir);
	free(dockerfile);
	free(cmd);
	res_free(&sub);
	res_free(&logs);
	res_free(&again);
	res_free(&st);
	res_free(&snap);
	res_free(&alias);
	res_free(&found);
	res_free(&seen);
}

static void test_free_with_operations_in_flight(void **state)
{
	struct ctx *c = *state;
	struct res r1 = {0}, r2 = {0}, r3 = {0};

	serve(c, "{\"GET /builds/b1/logs\": [{\"sse\": [\"data: a\\n\\n\", {\"stall\": true}]}],"
	         " \"GET /builds/b2\": [{\"status\": 503, \"delay\": 1}],"
	         " \"POST /builds\": [{\"delay\": 1, \"json\": {\"build_id\": \"b\"}}]}");
	c->archive = write_archive(100);
	follow(c, &r1, NULL);
	api_build_status(c->api, "b2", object_done, &r2);
	submit(c, &r3, NULL);
	test_loop_for(c->base, 0.3);
	api_free(c->api);
	c->api = NULL;
	test_loop_for(c->base, 0.2);
	assert_int_equal(r1.calls + r2.calls + r3.calls, 0);
	res_free(&r1);
	res_free(&r2);
	res_free(&r3);
}

static void test_key_never_logged(void **state)
{
	struct ctx *c = *state;
	struct res r = {0}, f = {0};
	char path[] = "/tmp/snapbuild-api-log-XXXXXX";
	int fd = mkstemp(path), saved = dup(STDERR_FILENO);
	char buf[65536];
	ssize_t n;

	log_init(LOG_LEVEL_DEBUG);
	fflush(stderr);
	dup2(fd, STDERR_FILENO);
	serve(c, "{\"POST /builds\": [{\"status\": 500}, {\"json\": {\"build_id\": \"b1\"}}],"
	         " \"GET /builds/b1/logs\": [{\"status\": 404}, {\"sse\": [\"data: x\\n\\n\","
	         " \"data: {\\\"done\\\": true}\\n\\n\"]}]}");
	c->archive = write_archive(100);
	submit(c, &r, NULL);
	follow(c, &f, NULL);
	wait_done(c, &r);
	wait_done(c, &f);
	fflush(stderr);
	dup2(saved, STDERR_FILENO);
	close(saved);
	log_init(LOG_LEVEL_INFO);
	n = pread(fd, buf, sizeof(buf) - 1, 0);
	assert_true(n > 0);
	buf[n] = '\0';
	assert_non_null(strstr(buf, "/builds"));
	assert_null(strstr(buf, KEY));
	close(fd);
	unlink(path);
	res_free(&r);
	res_free(&f);
}

#define T(name) cmocka_unit_test_setup_teardown(name, setup, teardown)

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_builder_url_from_base),
	    cmocka_unit_test(test_cache_key_valid),
	    cmocka_unit_test(test_alias_and_escape),
	    T(test_submit_sends_the_parts_exactly),
	    T(test_submit_optional_parts),
	    T(test_submit_retries_then_succeeds),
	    T(test_submit_gives_up_after_three_attempts),
	    T(test_submit_honours_retry_after),
	    T(test_submit_client_error_not_retried),
	    T(test_submit_any_2xx_with_build_id_succeeds),
	    T(test_submit_every_5xx_is_retried),
	    T(test_submit_other_4xx_are_not_retried),
	    T(test_submit_unauthorized_hint),
	    T(test_submit_without_build_id_is_an_error),
	    T(test_submit_unreachable),
	    T(test_cancel_submit_mid_upload),
	    T(test_status_without_image_ref_is_passed_on),
	    T(test_status_not_json),
	    T(test_status_garbage_error_body_sanitized),
	    T(test_status_body_too_large),
	    T(test_delete_confirmed_by_2xx_or_404),
	    T(test_follow_happy_path),
	    T(test_follow_404_then_ok),
	    T(test_follow_gives_up_after_five_attempts),
	    T(test_follow_unauthorized_is_fatal),
	    T(test_follow_reconnects_with_last_event_id_without_duplicates),
	    T(test_follow_drops_reset_the_attempt_count),
	    T(test_follow_resumes_from_given_id),
	    T(test_follow_without_ids_delivers_every_line),
	    T(test_follow_replay_without_ids_is_skipped),
	    T(test_follow_continuation_without_ids_is_kept),
	    T(test_follow_replay_with_opaque_ids_after_stall),
	    T(test_follow_replay_that_drops_again_is_matched_afresh),
	    T(test_follow_partial_match_is_a_continuation),
	    T(test_follow_repeated_opening_is_the_documented_limit),
	    T(test_follow_seeded_lines_recognise_a_replay),
	    T(test_follow_seeded_lines_and_a_continuation),
	    T(test_follow_error_event_is_final),
	    T(test_follow_reconnects_after_stall),
	    T(test_follow_silence_on_answered_streams_is_not_a_failure),
	    T(test_follow_empty_streams_count_as_failures),
	    T(test_follow_huge_line_truncated),
	    T(test_follow_endless_line_stays_bounded),
	    T(test_follow_garbage_bytes),
	    T(test_follow_cancel_inside_on_line),
	    T(test_snapshot_create_body_and_no_blind_retry),
	    T(test_snapshot_find_by_tag),
	    T(test_snapshot_alias_retried),
	    T(test_registry_credentials_and_mgmt_errors),
	    T(test_simulator_end_to_end_with_faults),
	    T(test_free_with_operations_in_flight),
	    T(test_key_never_logged),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
