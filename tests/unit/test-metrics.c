/*
 * The metrics module: what each counter call adds to the OpenMetrics text, the
 * histogram's cumulative buckets, label escaping, and HOST:PORT parsing for
 * metrics_listen.  (The text's grammar is checked by a strict parser in
 * tests/integration/test_metrics.py, against the daemon.)
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "metrics.h"

static char *render(const char *state, int64_t n, size_t conns)
{
	const char *names[] = {state};
	int64_t counts[] = {n};
	struct metrics_gauges g = {names, counts, 1, conns};
	return metrics_render(&g);
}

static void assert_has(const char *text, const char *line)
{
	char *want = malloc(strlen(line) + 3);
	sprintf(want, "\n%s\n", line);
	if (strstr(text, want) == NULL)
		fail_msg("no line '%s' in:\n%s", line, text);
	free(want);
}

static int reset(void **state)
{
	(void)state;
	metrics_reset();
	return 0;
}

static void test_empty_text_has_every_series_and_ends_with_eof(void **state)
{
	(void)state;
	char *t = render("queued", 3, 2);
	assert_has(t, "snapbuild_jobs{state=\"queued\"} 3");
	assert_has(t, "snapbuild_connections 2");
	assert_has(t, "snapbuild_jobs_finished_total{backend=\"local\",result=\"cancelled\"} 0");
	assert_has(t, "snapbuild_job_stage_seconds_bucket{stage=\"registering\",le=\"+Inf\"} 0");
	assert_has(t, "snapbuild_api_retries_total{api=\"management\"} 0");
	assert_has(t, "snapbuild_log_lines_total 0");
	assert_non_null(strstr(t, "# TYPE snapbuild_api_requests counter\n"));
	assert_null(strstr(t, "snapbuild_api_requests_total{"));
	size_t len = strlen(t);
	assert_true(len > 6 && strcmp(t + len - 6, "# EOF\n") == 0);
	free(t);
}

static void test_counters_add_up(void **state)
{
	(void)state;
	metrics_job_finished("remote", "succeeded");
	metrics_job_finished("remote", "succeeded");
	metrics_job_finished("local", "failed");
	metrics_api_request(METRICS_API_SUBMIT, 503);
	metrics_api_request(METRICS_API_SUBMIT, 200);
	metrics_api_request(METRICS_API_SUBMIT, 503);
	metrics_api_request(METRICS_API_LOGS, 0);
	metrics_api_retry(METRICS_API_SUBMIT);
	metrics_log_line();
	metrics_log_line();
	metrics_context_bytes(1000);
	metrics_context_bytes(24);
	char *t = render("queued", 0, 0);
	assert_has(t, "snapbuild_jobs_finished_total{backend=\"remote\",result=\"succeeded\"} 2");
	assert_has(t, "snapbuild_jobs_finished_total{backend=\"local\",result=\"failed\"} 1");
	assert_has(t, "snapbuild_api_requests_total{api=\"submit\",code=\"200\"} 1");
	assert_has(t, "snapbuild_api_requests_total{api=\"submit\",code=\"503\"} 2");
	assert_has(t, "snapbuild_api_requests_total{api=\"logs\",code=\"0\"} 1");
	assert_has(t, "snapbuild_api_retries_total{api=\"submit\"} 1");
	assert_has(t, "snapbuild_log_lines_total 2");
	assert_has(t, "snapbuild_context_bytes_total 1024");
	/* Sorted by api, then code: submit 200 before submit 503. */
	assert_true(strstr(t, "code=\"200\"") < strstr(t, "code=\"503\""));
	free(t);
}

static void test_histogram_buckets_are_cumulative(void **state)
{
	(void)state;
	metrics_job_stage(METRICS_STAGE_BUILDING, 0.05);
	metrics_job_stage(METRICS_STAGE_BUILDING, 0.1); /* on a bound: in that bucket */
	metrics_job_stage(METRICS_STAGE_BUILDING, 7);
	metrics_job_stage(METRICS_STAGE_BUILDING, 99999);
	metrics_job_stage(METRICS_STAGE_BUILDING, -1); /* the clock went back: 0 */
	char *t = render("queued", 0, 0);
	assert_has(t, "snapbuild_job_stage_seconds_bucket{stage=\"building\",le=\"0.1\"} 3");
	assert_has(t, "snapbuild_job_stage_seconds_bucket{stage=\"building\",le=\"5.0\"} 3");
	assert_has(t, "snapbuild_job_stage_seconds_bucket{stage=\"building\",le=\"10.0\"} 4");
	assert_has(t, "snapbuild_job_stage_seconds_bucket{stage=\"building\",le=\"3600.0\"} 4");
	assert_has(t, "snapbuild_job_stage_seconds_bucket{stage=\"building\",le=\"+Inf\"} 5");
	assert_has(t, "snapbuild_job_stage_seconds_count{stage=\"building\"} 5");
	assert_has(t, "snapbuild_job_stage_seconds_sum{stage=\"building\"} 100006.150000");
	assert_has(t, "snapbuild_job_stage_seconds_count{stage=\"intake\"} 0");
	free(t);
}

static void test_label_values_are_escaped(void **state)
{
	(void)state;
	char *t = render("a\"b\\c\nd", 1, 0);
	assert_has(t, "snapbuild_jobs{state=\"a\\\"b\\\\c\\nd\"} 1");
	free(t);
}

static void test_stage_of_state(void **state)
{
	(void)state;
	assert_int_equal(metrics_stage_of_state("queued"), METRICS_STAGE_QUEUED);
	assert_int_equal(metrics_stage_of_state("registering"), METRICS_STAGE_REGISTERING);
	assert_int_equal(metrics_stage_of_state("intake"), -1); /* not a job state */
	assert_int_equal(metrics_stage_of_state("aliasing"), -1);
}

static void test_listen_parse(void **state)
{
	(void)state;
	static const struct {
		const char *in, *host;
		int port;
	} good[] = {{"127.0.0.1:9464", "127.0.0.1", 9464},
	            {"[::1]:0", "::1", 0},
	            {"localhost:65535", "localhost", 65535},
	            {"0.0.0.0:1", "0.0.0.0", 1}};
	static const char *const bad[] = {
	    "9464",         ":9464", "127.0.0.1:",      "127.0.0.1:-1",  "::1:9464", "[::1]9464",
	    "127.0.0.1:1x", "[]:80", "127.0.0.1:65536", "127.0.0.1: 80", "host:+80"};
	for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
		char *host = NULL;
		int port = -1;
		assert_true(metrics_listen_parse(good[i].in, &host, &port));
		assert_string_equal(host, good[i].host);
		assert_int_equal(port, good[i].port);
		free(host);
	}
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		char *host = NULL;
		int port;
		if (metrics_listen_parse(bad[i], &host, &port))
			fail_msg("'%s' was accepted", bad[i]);
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test_setup(test_empty_text_has_every_series_and_ends_with_eof, reset),
	    cmocka_unit_test_setup(test_counters_add_up, reset),
	    cmocka_unit_test_setup(test_histogram_buckets_are_cumulative, reset),
	    cmocka_unit_test_setup(test_label_values_are_escaped, reset),
	    cmocka_unit_test(test_stage_of_state),
	    cmocka_unit_test(test_listen_parse),
	};
	int rc = cmocka_run_group_tests(tests, NULL, NULL);
	metrics_reset();
	return rc;
}
