/*
 * The shared helpers' RFC 3339 times: what the daemon writes (UTC, microseconds) reads
 * back to the same instant, and what the management API sends ("Z" or an offset, with
 * or without a fraction) reads as the instant it names; anything else is 0.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "util.h"

static void test_format_is_utc_with_microseconds(void **state)
{
	char buf[RFC3339_SIZE];

	(void)state;
	format_rfc3339(1796415250.123456, buf);
	assert_string_equal(buf, "2026-12-04T20:14:10.123456Z");
	format_rfc3339(0.5, buf);
	assert_string_equal(buf, "1970-01-01T00:00:00.500000Z");
	/* a fraction that rounds up carries into the seconds */
	format_rfc3339(59.9999999, buf);
	assert_string_equal(buf, "1970-01-01T00:01:00.000000Z");
}

static void test_round_trip(void **state)
{
	char buf[RFC3339_SIZE];

	(void)state;
	for (double t = 1.25; t < 4e9; t = t * 3.7 + 0.015625) {
		format_rfc3339(t, buf);
		assert_true(parse_rfc3339(buf) > t - 1e-6 && parse_rfc3339(buf) < t + 1e-6);
	}
}

static void test_parse_what_the_api_sends(void **state)
{
	(void)state;
	assert_true(parse_rfc3339("2025-11-28T01:39:07Z") == 1764293947.0);
	assert_true(parse_rfc3339("2025-11-28T01:39:07.286Z") > 1764293947.285);
	assert_true(parse_rfc3339("2025-11-28T01:39:07.286Z") < 1764293947.287);
	assert_true(parse_rfc3339("2025-11-28T03:39:07+02:00") == 1764293947.0);
	assert_true(parse_rfc3339("2025-11-27T23:39:07-02:00") == 1764293947.0);
}

static void test_parse_refuses_the_rest(void **state)
{
	(void)state;
	assert_true(parse_rfc3339(NULL) == 0);
	assert_true(parse_rfc3339("") == 0);
	assert_true(parse_rfc3339("1764293947.5") == 0);
	assert_true(parse_rfc3339("2025-11-28T01:39:07") == 0);
	assert_true(parse_rfc3339("2025-11-28T01:39:07Zjunk") == 0);
	assert_true(parse_rfc3339("\x1b[2Jnot a time") == 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_format_is_utc_with_microseconds),
	    cmocka_unit_test(test_round_trip),
	    cmocka_unit_test(test_parse_what_the_api_sends),
	    cmocka_unit_test(test_parse_refuses_the_rest),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
