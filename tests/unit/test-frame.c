/*
 * The framing reader: lines split over many reads, several lines in one read,
 * oversize lines (reported once, connection keeps working), invalid UTF-8, and the
 * line numbers that tie a passed file descriptor to its request.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "frame.h"

static void expect_line(struct frame_reader *fr, const char *want, uint64_t line_no)
{
	struct frame f;
	assert_true(frame_reader_next(fr, &f));
	assert_int_equal(f.type, FRAME_LINE);
	assert_int_equal(f.len, strlen(want));
	assert_string_equal(f.data, want);
	assert_int_equal(f.line_no, line_no);
}

static void expect_event(struct frame_reader *fr, enum frame_type type, uint64_t line_no)
{
	struct frame f;
	assert_true(frame_reader_next(fr, &f));
	assert_int_equal(f.type, type);
	assert_int_equal(f.line_no, line_no);
}

static void expect_none(struct frame_reader *fr)
{
	struct frame f;
	assert_false(frame_reader_next(fr, &f));
	assert_int_equal(f.type, FRAME_NONE);
}

static void test_split_reads(void **state)
{
	const char *msg = "{\"jsonrpc\":\"2.0\",\"method\":\"daemon.info\",\"id\":1}\n";
	struct frame_reader *fr = frame_reader_new(1024);
	(void)state;
	/* one byte at a time: nothing until the newline arrives */
	for (size_t i = 0; i + 1 < strlen(msg); i++) {
		frame_reader_feed(fr, msg + i, 1);
		expect_none(fr);
		assert_int_equal(frame_reader_pending(fr), i + 1);
	}
	frame_reader_feed(fr, "\n", 1);
	expect_line(fr, "{\"jsonrpc\":\"2.0\",\"method\":\"daemon.info\",\"id\":1}", 0);
	expect_none(fr);
	assert_int_equal(frame_reader_pending(fr), 0);
	frame_reader_free(fr);
}

static void test_merged_reads(void **state)
{
	struct frame_reader *fr = frame_reader_new(1024);
	(void)state;
	frame_reader_feed(fr, "one\ntwo\n\nthree\nfo", 17);
	expect_line(fr, "one", 0);
	expect_line(fr, "two", 1);
	expect_line(fr, "", 2);
	expect_line(fr, "three", 3);
	expect_none(fr);
	frame_reader_feed(fr, "ur\n", 3);
	expect_line(fr, "four", 4);
	expect_none(fr);
	frame_reader_free(fr);
}

static void test_oversize_in_one_read(void **state)
{
	struct frame_reader *fr = frame_reader_new(8);
	(void)state;
	frame_reader_feed(fr, "123456789\nok\n", 13);
	expect_event(fr, FRAME_OVERSIZE, 0);
	expect_line(fr, "ok", 1);
	expect_none(fr);
	frame_reader_free(fr);
}

static void test_oversize_over_many_reads(void **state)
{
	struct frame_reader *fr = frame_reader_new(16);
	char chunk[10];
	(void)state;
	memset(chunk, 'x', sizeof(chunk));
	/* reported as soon as the unfinished line passes the limit, exactly once */
	frame_reader_feed(fr, chunk, sizeof(chunk));
	expect_none(fr);
	frame_reader_feed(fr, chunk, sizeof(chunk));
	expect_event(fr, FRAME_OVERSIZE, 0);
	for (int i = 0; i < 100; i++) {
		frame_reader_feed(fr, chunk, sizeof(chunk));
		expect_none(fr);
		/* the skipped bytes are not kept */
		assert_true(frame_reader_pending(fr) <= sizeof(chunk));
	}
	frame_reader_feed(fr, "xx\n{}\n", 6);
	expect_line(fr, "{}", 1);
	expect_none(fr);
	frame_reader_free(fr);
}

static void test_exact_limit(void **state)
{
	struct frame_reader *fr = frame_reader_new(4);
	(void)state;
	frame_reader_feed(fr, "abcd\nabcde\n", 11);
	expect_line(fr, "abcd", 0);
	expect_event(fr, FRAME_OVERSIZE, 1);
	expect_none(fr);
	frame_reader_free(fr);
}

static void test_bad_utf8(void **state)
{
	struct frame_reader *fr = frame_reader_new(64);
	(void)state;
	frame_reader_feed(fr, "caf\xc3\xa9\n", 6);
	expect_line(fr, "caf\xc3\xa9", 0);
	frame_reader_feed(fr, "bad \xff byte\n", 11);
	expect_event(fr, FRAME_BAD_UTF8, 1);
	/* a multi-byte character split across reads is fine */
	frame_reader_feed(fr, "\xe2\x82", 2);
	expect_none(fr);
	frame_reader_feed(fr, "\xac\n", 2);
	expect_line(fr, "\xe2\x82\xac", 2);
	frame_reader_free(fr);
}

static void test_utf8_validator(void **state)
{
	(void)state;
#define V(s) utf8_valid((const unsigned char *)(s), sizeof(s) - 1)
	assert_true(V(""));
	assert_true(V("plain ascii"));
	assert_true(V("\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80")); /* é € 😀 */
	assert_true(V("\xf4\x8f\xbf\xbf"));                     /* U+10FFFF */
	assert_false(V("\xc0\xaf"));                            /* overlong '/' */
	assert_false(V("\xe0\x80\xaf"));                        /* overlong */
	assert_false(V("\xed\xa0\x80"));                        /* surrogate U+D800 */
	assert_false(V("\xf4\x90\x80\x80"));                    /* above U+10FFFF */
	assert_false(V("\xf5\x80\x80\x80"));
	assert_false(V("\x80"));     /* lone continuation */
	assert_false(V("\xc3"));     /* truncated */
	assert_false(V("\xe2\x82")); /* truncated */
	assert_false(V("\xc3\x28")); /* bad continuation */
#undef V
}

static void test_line_numbers_for_fds(void **state)
{
	struct frame_reader *fr = frame_reader_new(64);
	(void)state;
	/* the line holding the last byte of a read is the one a passed fd belongs to */
	assert_int_equal(frame_reader_feed(fr, "a\n", 2), 0);
	assert_int_equal(frame_reader_feed(fr, "b\nc", 3), 2);
	assert_int_equal(frame_reader_feed(fr, "c\n", 2), 2);
	assert_int_equal(frame_reader_feed(fr, "d", 1), 3);
	assert_int_equal(frame_reader_feed(fr, "\n\n\n", 3), 5);
	expect_line(fr, "a", 0);
	expect_line(fr, "b", 1);
	expect_line(fr, "cc", 2);
	expect_line(fr, "d", 3);
	expect_line(fr, "", 4);
	expect_line(fr, "", 5);
	frame_reader_free(fr);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_split_reads),
	    cmocka_unit_test(test_merged_reads),
	    cmocka_unit_test(test_oversize_in_one_read),
	    cmocka_unit_test(test_oversize_over_many_reads),
	    cmocka_unit_test(test_exact_limit),
	    cmocka_unit_test(test_bad_utf8),
	    cmocka_unit_test(test_utf8_validator),
	    cmocka_unit_test(test_line_numbers_for_fds),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
