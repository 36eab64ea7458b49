/*
 * The JSON-RPC layer against the specification's own examples (jsonrpc.org,
 * section 7), reproduced through a tiny dispatcher with the spec's methods
 * (subtract, sum, get_data, update, notify_hello), plus the edges the spec implies.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "jsonrpc.h"

static json_object *spec_call(const char *method, json_object *params, bool *found)
{
	*found = true;
	if (strcmp(method, "subtract") == 0) {
		int64_t a, b;
		if (json_object_is_type(params, json_type_array)) {
			a = json_object_get_int64(json_object_array_get_idx(params, 0));
			b = json_object_get_int64(json_object_array_get_idx(params, 1));
		} else {
			a = json_object_get_int64(json_object_object_get(params, "minuend"));
			b = json_object_get_int64(json_object_object_get(params, "subtrahend"));
		}
		return json_object_new_int64(a - b);
	}
	if (strcmp(method, "sum") == 0) {
		int64_t s = 0;
		for (size_t i = 0; i < json_object_array_length(params); i++)
			s += json_object_get_int64(json_object_array_get_idx(params, i));
		return json_object_new_int64(s);
	}
	if (strcmp(method, "get_data") == 0)
		return json_tokener_parse("[\"hello\", 5]");
	if (strcmp(method, "update") == 0 || strcmp(method, "notify_hello") == 0 ||
	    strcmp(method, "notify_sum") == 0)
		return NULL;
	*found = false;
	return NULL;
}

/* The whole round trip for one line: what the server would send back, or NULL. */
static json_object *spec_answer(const char *line)
{
	struct jsonrpc_message m;
	json_object *answer = NULL, *arr;

	jsonrpc_parse(line, strlen(line), &m);
	if (m.error != NULL) {
		answer = json_object_get(m.error);
		goto out;
	}
	arr = json_object_new_array();
	for (size_t i = 0; i < m.count; i++) {
		struct jsonrpc_request *r = &m.requests[i];
		json_object *resp;
		bool found;
		if (r->error != NULL) {
			json_object_array_add(arr, json_object_get(r->error));
			continue;
		}
		json_object *res = spec_call(r->method, r->params, &found);
		if (!r->has_id) {
			json_object_put(res);
			continue;
		}
		if (found)
			resp = jsonrpc_response_new(r->id, res);
		else
			resp =
			    jsonrpc_error_response_new(r->id, JSONRPC_METHOD_NOT_FOUND, NULL, NULL);
		json_object_array_add(arr, resp);
	}
	if (json_object_array_length(arr) == 0)
		json_object_put(arr);
	else if (m.batch)
		answer = arr;
	else {
		answer = json_object_get(json_object_array_get_idx(arr, 0));
		json_object_put(arr);
	}
out:
	jsonrpc_message_clear(&m);
	return answer;
}

/* Our errors carry a "data" member with a detail; the spec's examples do not. */
static void strip_error_data(json_object *o)
{
	json_object *err;
	if (json_object_is_type(o, json_type_array)) {
		for (size_t i = 0; i < json_object_array_length(o); i++)
			strip_error_data(json_object_array_get_idx(o, i));
		return;
	}
	if (json_object_object_get_ex(o, "error", &err))
		json_object_object_del(err, "data");
}

static void expect_answer(const char *request, const char *expected)
{
	json_object *got = spec_answer(request);
	if (expected == NULL) {
		if (got != NULL)
			fail_msg("expected no answer to %s, got %s", request,
			         json_object_to_json_string(got));
		return;
	}
	json_object *want = json_tokener_parse(expected);
	assert_non_null(want);
	if (got == NULL)
		fail_msg("expected an answer to %s", request);
	strip_error_data(got);
	if (!json_object_equal(got, want))
		fail_msg("request %s\n  got  %s\n  want %s", request,
		         json_object_to_json_string(got), json_object_to_json_string(want));
	json_object_put(got);
	json_object_put(want);
}

static void test_spec_positional_params(void **state)
{
	(void)state;
	expect_answer(
	    "{\"jsonrpc\": \"2.0\", \"method\": \"subtract\", \"params\": [42, 23], \"id\": 1}",
	    "{\"jsonrpc\": \"2.0\", \"result\": 19, \"id\": 1}");
	expect_answer(
	    "{\"jsonrpc\": \"2.0\", \"method\": \"subtract\", \"params\": [23, 42], \"id\": 2}",
	    "{\"jsonrpc\": \"2.0\", \"result\": -19, \"id\": 2}");
}

static void test_spec_named_params(void **state)
{
	(void)state;
	expect_answer(
	    "{\"jsonrpc\": \"2.0\", \"method\": \"subtract\", \"params\": {\"subtrahend\": "
	    "23, \"minuend\": 42}, \"id\": 3}",
	    "{\"jsonrpc\": \"2.0\", \"result\": 19, \"id\": 3}");
	expect_answer(
	    "{\"jsonrpc\": \"2.0\", \"method\": \"subtract\", \"params\": {\"minuend\": 42, "
	    "\"subtrahend\": 23}, \"id\": 4}",
	    "{\"jsonrpc\": \"2.0\", \"result\": 19, \"id\": 4}");
}

static void test_spec_notification(void **state)
{
	(void)state;
	expect_answer("{\"jsonrpc\": \"2.0\", \"method\": \"update\", \"params\": [1,2,3,4,5]}",
	              NULL);
	expect_answer("{\"jsonrpc\": \"2.0\", \"method\": \"foobar\"}", NULL);
}

static void test_spec_method_not_found(void **state)
{
	(void)state;
	expect_answer(
	    "{\"jsonrpc\": \"2.0\", \"method\": \"foobar\", \"id\": \"1\"}",
	    "{\"jsonrpc\": \"2.0\", \"error\": {\"code\": -32601, \"message\": \"Method not "
	    "found\"}, \"id\": \"1\"}");
}

static void test_spec_invalid_json(void **state)
{
	(void)state;
	expect_answer("{\"jsonrpc\": \"2.0\", \"method\": \"foobar, \"params\": \"bar\", \"baz]",
	              "{\"jsonrpc\": \"2.0\", \"error\": {\"code\": -32700, \"message\": \"Parse "
	              "error\"}, \"id\": null}");
}

static void test_spec_invalid_request(void **state)
{
	(void)state;
	expect_answer("{\"jsonrpc\": \"2.0\", \"method\": 1, \"params\": \"bar\"}",
	              "{\"jsonrpc\": \"2.0\", \"error\": {\"code\": -32600, \"message\": \"Invalid "
	              "Request\"}, \"id\": null}");
}

static void test_spec_batch_invalid_json(void **state)
{
	(void)state;
	expect_answer(
	    "[\n  {\"jsonrpc\": \"2.0\", \"method\": \"sum\", \"params\": [1,2,4], \"id\": "
	    "\"1\"},\n  {\"jsonrpc\": \"2.0\", \"method\"\n]",
	    "{\"jsonrpc\": \"2.0\", \"error\": {\"code\": -32700, \"message\": \"Parse "
	    "error\"}, \"id\": null}");
}

static void test_spec_empty_array(void **state)
{
	(void)state;
	expect_answer("[]", "{\"jsonrpc\": \"2.0\", \"error\": {\"code\": -32600, \"message\": "
	                    "\"Invalid Request\"}, \"id\": null}");
}

static void test_spec_invalid_batch_not_empty(void **state)
{
	(void)state;
	expect_answer("[1]", "[{\"jsonrpc\": \"2.0\", \"error\": {\"code\": -32600, \"message\": "
	                     "\"Invalid Request\"}, \"id\": null}]");
}

static void test_spec_invalid_batch(void **state)
{
	(void)state;
	expect_answer(
	    "[1,2,3]",
	    "[{\"jsonrpc\": \"2.0\", \"error\": {\"code\": -32600, \"message\": \"Invalid "
	    "Request\"}, \"id\": null},"
	    "{\"jsonrpc\": \"2.0\", \"error\": {\"code\": -32600, \"message\": \"Invalid "
	    "Request\"}, \"id\": null},"
	    "{\"jsonrpc\": \"2.0\", \"error\": {\"code\": -32600, \"message\": \"Invalid "
	    "Request\"}, \"id\": null}]");
}

static void test_spec_batch(void **state)
{
	(void)state;
	expect_answer(
	    "[\n"
	    "  {\"jsonrpc\": \"2.0\", \"method\": \"sum\", \"params\": [1,2,4], \"id\": \"1\"},\n"
	    "  {\"jsonrpc\": \"2.0\", \"method\": \"notify_hello\", \"params\": [7]},\n"
	    "  {\"jsonrpc\": \"2.0\", \"method\": \"subtract\", \"params\": [42,23], \"id\": "
	    "\"2\"},\n"
	    "  {\"foo\": \"boo\"},\n"
	    "  {\"jsonrpc\": \"2.0\", \"method\": \"foo.get\", \"params\": {\"name\": \"myself\"}, "
	    "\"id\": \"5\"},\n"
	    "  {\"jsonrpc\": \"2.0\", \"method\": \"get_data\", \"id\": \"9\"}\n"
	    "]",
	    "[\n"
	    "  {\"jsonrpc\": \"2.0\", \"result\": 7, \"id\": \"1\"},\n"
	    "  {\"jsonrpc\": \"2.0\", \"result\": 19, \"id\": \"2\"},\n"
	    "  {\"jsonrpc\": \"2.0\", \"error\": {\"code\": -32600, \"message\": \"Invalid "
	    "Request\"}, \"id\": null},\n"
	    "  {\"jsonrpc\": \"2.0\", \"error\": {\"code\": -32601, \"message\": \"Method not "
	    "found\"}, \"id\": \"5\"},\n"
	    "  {\"jsonrpc\": \"2.0\", \"result\": [\"hello\", 5], \"id\": \"9\"}\n"
	    "]");
}

static void test_spec_batch_all_notifications(void **state)
{
	(void)state;
	expect_answer("[\n"
	              "  {\"jsonrpc\": \"2.0\", \"method\": \"notify_sum\", \"params\": [1,2,4]},\n"
	              "  {\"jsonrpc\": \"2.0\", \"method\": \"notify_hello\", \"params\": [7]}\n"
	              "]",
	              NULL);
}

static void test_request_rules(void **state)
{
	(void)state;
	/* wrong or missing version */
	expect_answer("{\"jsonrpc\": \"1.0\", \"method\": \"sum\", \"params\": [1], \"id\": 7}",
	              "{\"jsonrpc\": \"2.0\", \"error\": {\"code\": -32600, \"message\": \"Invalid "
	              "Request\"}, \"id\": 7}");
	expect_answer("{\"method\": \"sum\", \"params\": [1], \"id\": 7}",
	              "{\"jsonrpc\": \"2.0\", \"error\": {\"code\": -32600, \"message\": \"Invalid "
	              "Request\"}, \"id\": 7}");
	/* params must be structured; null is not */
	expect_answer("{\"jsonrpc\": \"2.0\", \"method\": \"sum\", \"params\": null, \"id\": 8}",
	              "{\"jsonrpc\": \"2.0\", \"error\": {\"code\": -32600, \"message\": \"Invalid "
	              "Request\"}, \"id\": 8}");
	/* an id that is not a string, number or null cannot be echoed */
	expect_answer("{\"jsonrpc\": \"2.0\", \"method\": \"sum\", \"params\": [1], \"id\": true}",
	              "{\"jsonrpc\": \"2.0\", \"error\": {\"code\": -32600, \"message\": \"Invalid "
	              "Request\"}, \"id\": null}");
	expect_answer("{\"jsonrpc\": \"2.0\", \"method\": \"sum\", \"params\": [1], \"id\": [1]}",
	              "{\"jsonrpc\": \"2.0\", \"error\": {\"code\": -32600, \"message\": \"Invalid "
	              "Request\"}, \"id\": null}");
	/* id null is a request, not a notification: it gets an answer */
	expect_answer(
	    "{\"jsonrpc\": \"2.0\", \"method\": \"sum\", \"params\": [1, 2], \"id\": null}",
	    "{\"jsonrpc\": \"2.0\", \"result\": 3, \"id\": null}");
	/* fractional and string ids are echoed as they came */
	expect_answer("{\"jsonrpc\": \"2.0\", \"method\": \"sum\", \"params\": [1], \"id\": 1.5}",
	              "{\"jsonrpc\": \"2.0\", \"result\": 1, \"id\": 1.5}");
	/* a bare JSON value is valid JSON but not a request */
	expect_answer("null", "{\"jsonrpc\": \"2.0\", \"error\": {\"code\": -32600, \"message\": "
	                      "\"Invalid Request\"}, \"id\": null}");
	expect_answer("42", "{\"jsonrpc\": \"2.0\", \"error\": {\"code\": -32600, \"message\": "
	                    "\"Invalid Request\"}, \"id\": null}");
	/* blank lines are ignored */
	expect_answer("", NULL);
	expect_answer("  \t\r", NULL);
}

static void test_strict_json(void **state)
{
	static const char *const bad[] = {
	    "{\"jsonrpc\": \"2.0\", \"method\": \"sum\", \"id\": 1} trailing",
	    "{\"jsonrpc\": \"2.0\", \"method\": \"sum\", \"id\": 1}{}",
	    "{'jsonrpc': '2.0'}",
	    "[1,2,]",
	    "{\"a\": \"raw\x01control\"}",
	    "{\"a\": 1",
	    "nul",
	};
	(void)state;
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		expect_answer(bad[i], "{\"jsonrpc\": \"2.0\", \"error\": {\"code\": -32700, "
		                      "\"message\": \"Parse error\"}, \"id\": null}");
}

static void test_embedded_nul_is_parse_error(void **state)
{
	static const char line[] = "{\"jsonrpc\": \"2.0\", \"method\": \"sum\", \"id\": 1}\0junk";
	struct jsonrpc_message m;
	(void)state;
	jsonrpc_parse(line, sizeof(line) - 1, &m);
	assert_non_null(m.error);
	assert_int_equal(m.count, 0);
	jsonrpc_message_clear(&m);
}

static void test_builders_and_classify(void **state)
{
	struct jsonrpc_incoming in;
	json_object *id = json_object_new_int(12);
	json_object *o;
	size_t len;
	const char *s;
	(void)state;

	o = jsonrpc_request_new(id, "daemon.info", NULL);
	s = jsonrpc_to_string(o, &len);
	assert_string_equal(s, "{\"jsonrpc\":\"2.0\",\"method\":\"daemon.info\",\"id\":12}");
	assert_int_equal(len, strlen(s));
	assert_int_equal(jsonrpc_classify(o, &in), JSONRPC_IN_INVALID);
	json_object_put(o);

	o = jsonrpc_response_new(id, json_object_new_string("a\nb/c"));
	s = jsonrpc_to_string(o, &len);
	assert_null(memchr(s, '\n', len)); /* a response is always one line */
	assert_int_equal(jsonrpc_classify(o, &in), JSONRPC_IN_RESULT);
	assert_int_equal(json_object_get_int(in.id), 12);
	assert_string_equal(json_object_get_string(in.result), "a\nb/c");
	json_object_put(o);

	o = jsonrpc_error_response_new(id, SB_ERR_NOT_FOUND, "no such job", NULL);
	assert_int_equal(jsonrpc_classify(o, &in), JSONRPC_IN_ERROR);
	assert_int_equal(in.code, SB_ERR_NOT_FOUND);
	assert_string_equal(in.message, "no such job");
	assert_null(in.data);
	json_object_put(o);

	o = jsonrpc_notification_new("build.event", json_object_new_object());
	assert_int_equal(jsonrpc_classify(o, &in), JSONRPC_IN_NOTIFICATION);
	assert_string_equal(in.method, "build.event");
	assert_non_null(in.params);
	json_object_put(o);

	o = jsonrpc_response_new(NULL, NULL);
	assert_int_equal(jsonrpc_classify(o, &in), JSONRPC_IN_RESULT);
	assert_null(in.id);
	assert_null(in.result);
	json_object_put(o);
	json_object_put(id);
}

static void test_decode(void **state)
{
	json_object *o;
	const char *why;
	(void)state;
	assert_true(jsonrpc_decode("null", 4, &o, &why));
	assert_null(o);
	assert_true(jsonrpc_decode(" 17 ", 4, &o, &why));
	assert_int_equal(json_object_get_int(o), 17);
	json_object_put(o);
	assert_false(jsonrpc_decode("17 18", 5, &o, &why));
	assert_non_null(why);
	assert_false(jsonrpc_decode("", 0, &o, &why));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_spec_positional_params),
	    cmocka_unit_test(test_spec_named_params),
	    cmocka_unit_test(test_spec_notification),
	    cmocka_unit_test(test_spec_method_not_found),
	    cmocka_unit_test(test_spec_invalid_json),
	    cmocka_unit_test(test_spec_invalid_request),
	    cmocka_unit_test(test_spec_batch_invalid_json),
	    cmocka_unit_test(test_spec_empty_array),
	    cmocka_unit_test(test_spec_invalid_batch_not_empty),
	    cmocka_unit_test(test_spec_invalid_batch),
	    cmocka_unit_test(test_spec_batch),
	    cmocka_unit_test(test_spec_batch_all_notifications),
	    cmocka_unit_test(test_request_rules),
	    cmocka_unit_test(test_strict_json),
	    cmocka_unit_test(test_embedded_nul_is_parse_error),
	    cmocka_unit_test(test_builders_and_classify),
	    cmocka_unit_test(test_decode),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
