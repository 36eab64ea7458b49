/*
 * The SSE parser against the WHATWG event stream rules, one rule per test, plus the
 * property that matters most on a network: however the bytes are split into chunks,
 * the same events come out.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "sse.h"
#include "util.h"

#define MAX_EVENTS 64

struct ev {
	char *type;
	char *data;
	size_t len;
	char *id;
	bool has_id;
};

struct rec {
	struct sse_parser *p;
	struct ev ev[MAX_EVENTS];
	size_t n;
};

static void rec_cb(void *arg, const char *type, const char *data, size_t len, const char *id)
{
	struct rec *r = arg;
	struct ev *e;

	assert_true(r->n < MAX_EVENTS);
	e = &r->ev[r->n++];
	e->type = xstrdup(type);
	e->data = xmalloc(len + 1);
	memcpy(e->data, data, len);
	e->data[len] = '\0';
	e->len = len;
	e->id = xstrdup(id);
	e->has_id = sse_parser_event_has_id(r->p);
}

static void rec_init(struct rec *r, size_t max)
{
	memset(r, 0, sizeof(*r));
	r->p = sse_parser_new(max, rec_cb, r);
}

static void rec_clear(struct rec *r)
{
	for (size_t i = 0; i < r->n; i++) {
		free(r->ev[i].type);
		free(r->ev[i].data);
		free(r->ev[i].id);
	}
	r->n = 0;
}

static void rec_free(struct rec *r)
{
	rec_clear(r);
	sse_parser_free(r->p);
}

static void feed(struct rec *r, const char *s)
{
	sse_parser_feed(r->p, s, strlen(s));
}

/* Parses s whole and returns the recorder; the caller frees it. */
static struct rec *parse(const char *s)
{
	struct rec *r = xmalloc(sizeof(*r));
	rec_init(r, 4096);
	feed(r, s);
	return r;
}

static void done(struct rec *r)
{
	rec_free(r);
	free(r);
}

static void assert_event(const struct rec *r, size_t i, const char *type, const char *data,
                         const char *id)
{
	assert_true(i < r->n);
	assert_string_equal(r->ev[i].type, type);
	assert_int_equal(r->ev[i].len, strlen(data));
	assert_string_equal(r->ev[i].data, data);
	assert_string_equal(r->ev[i].id, id);
}

static bool utf8_valid(const unsigned char *s, size_t n)
{
	for (size_t i = 0; i < n;) {
		size_t need;
		if (s[i] < 0x80)
			need = 0;
		else if (s[i] >= 0xC2 && s[i] <= 0xDF)
			need = 1;
		else if (s[i] >= 0xE0 && s[i] <= 0xEF)
			need = 2;
		else if (s[i] >= 0xF0 && s[i] <= 0xF4)
			need = 3;
		else
			return false;
		if (i + need >= n)
			return false;
		for (size_t k = 1; k <= need; k++)
			if ((s[i + k] & 0xC0) != 0x80)
				return false;
		i += need + 1;
	}
	return true;
}

static void test_simple_event(void **state)
{
	(void)state;
	struct rec *r = parse("data: hello\n\n");
	assert_int_equal(r->n, 1);
	assert_event(r, 0, "message", "hello", "");
	done(r);
}

static void test_line_ends(void **state)
{
	(void)state;
	struct rec *r = parse("data: a\r\rdata: b\n\ndata: c\r\n\r\ndata: d\r\ndata: e\r\r");
	assert_int_equal(r->n, 4);
	assert_event(r, 0, "message", "a", "");
	assert_event(r, 1, "message", "b", "");
	assert_event(r, 2, "message", "c", "");
	assert_event(r, 3, "message", "d\ne", "");
	done(r);
}

static void test_cr_lf_split_across_chunks_is_one_line_end(void **state)
{
	(void)state;
	struct rec r;
	rec_init(&r, 4096);
	feed(&r, "data: a\r");
	feed(&r, "\ndata: b\r");
	feed(&r, "\n\r");
	feed(&r, "\n");
	assert_int_equal(r.n, 1);
	assert_event(&r, 0, "message", "a\nb", "");
	rec_free(&r);
}

static void test_cr_then_other_byte_in_next_chunk(void **state)
{
	(void)state;
	struct rec r;
	rec_init(&r, 4096);
	feed(&r, "data: a\r");
	feed(&r, "\r");
	feed(&r, "data: b\r");
	feed(&r, "");
	feed(&r, "\r");
	assert_int_equal(r.n, 2);
	assert_event(&r, 0, "message", "a", "");
	assert_event(&r, 1, "message", "b", "");
	rec_free(&r);
}

static void test_comments_ignored(void **state)
{
	(void)state;
	struct rec *r = parse(": keep-alive\n:\ndata: x\n: inside\ndata: y\n\n:\n\n");
	assert_int_equal(r->n, 1);
	assert_event(r, 0, "message", "x\ny", "");
	done(r);
}

static void test_field_value_split(void **state)
{
	(void)state;
	struct rec *r = parse("data:nospace\n\ndata:  two spaces\n\ndata: a:b: c\n\n"
	                      "data\n\ndata\ndata\n\ndata:\n\n");
	assert_int_equal(r->n, 6);
	assert_event(r, 0, "message", "nospace", "");
	assert_event(r, 1, "message", " two spaces", "");
	assert_event(r, 2, "message", "a:b: c", "");
	assert_event(r, 3, "message", "", "");
	assert_event(r, 4, "message", "\n", "");
	assert_event(r, 5, "message", "", "");
	done(r);
}

static void test_multiline_data(void **state)
{
	(void)state;
	struct rec *r = parse("data: one\ndata: two\ndata:\ndata: four\n\n");
	assert_int_equal(r->n, 1);
	assert_event(r, 0, "message", "one\ntwo\n\nfour", "");
	done(r);
}

static void test_event_type_and_reset(void **state)
{
	(void)state;
	struct rec *r = parse("event: status\ndata: x\n\ndata: y\n\nevent: lost\n\ndata: z\n\n"
	                      "event\ndata: w\n\n");
	assert_int_equal(r->n, 4);
	assert_event(r, 0, "status", "x", "");
	assert_event(r, 1, "message", "y", "");
	assert_event(r, 2, "message", "z", "");
	assert_event(r, 3, "message", "w", "");
	done(r);
}

static void test_empty_line_without_data_does_not_dispatch(void **state)
{
	(void)state;
	struct rec *r = parse("\n\n\r\n\nevent: e\n\nid: 3\n\n");
	assert_int_equal(r->n, 0);
	/* the blank line after the id committed it even without an event */
	assert_string_equal(sse_parser_last_event_id(r->p), "3");
	done(r);
}

static void test_unknown_fields_ignored(void **state)
{
	(void)state;
	struct rec *r = parse("foo: bar\nDATA: no\nData: no\ndata : no\ndata: yes\n\n");
	assert_int_equal(r->n, 1);
	assert_event(r, 0, "message", "yes", "");
	done(r);
}

static void test_id_persists_and_commits_on_dispatch(void **state)
{
	(void)state;
	struct rec *r = parse("id: 1\ndata: a\n\ndata: b\n\nid: 7\n");
	assert_int_equal(r->n, 2);
	assert_event(r, 0, "message", "a", "1");
	assert_true(r->ev[0].has_id);
	assert_event(r, 1, "message", "b", "1");
	assert_false(r->ev[1].has_id);
	/* "id: 7" lacks its blank line: not committed yet */
	assert_string_equal(sse_parser_last_event_id(r->p), "1");
	feed(r, "data: c\n\n");
	assert_event(r, 2, "message", "c", "7");
	assert_string_equal(sse_parser_last_event_id(r->p), "7");
	feed(r, "id\ndata: d\n\n");
	assert_event(r, 3, "message", "d", "");
	assert_true(r->ev[3].has_id);
	done(r);
}

static void test_id_with_nul_ignored(void **state)
{
	(void)state;
	static const char s[] = "id: 5\ndata: a\n\nid: 6\0x\ndata: b\n\n";
	struct rec r;
	rec_init(&r, 4096);
	sse_parser_feed(r.p, s, sizeof(s) - 1);
	assert_int_equal(r.n, 2);
	assert_event(&r, 1, "message", "b", "5");
	assert_false(r.ev[1].has_id);
	rec_free(&r);
}

static void test_nul_in_data_kept(void **state)
{
	(void)state;
	static const char s[] = "data: a\0b\n\n";
	struct rec r;
	rec_init(&r, 4096);
	sse_parser_feed(r.p, s, sizeof(s) - 1);
	assert_int_equal(r.n, 1);
	assert_int_equal(r.ev[0].len, 3);
	assert_memory_equal(r.ev[0].data, "a\0b", 3);
	rec_free(&r);
}

static void test_retry(void **state)
{
	(void)state;
	struct rec *r = parse("data: x\n\n");
	assert_int_equal(sse_parser_retry_ms(r->p), -1);
	feed(r, "retry: 2500\n");
	assert_int_equal(sse_parser_retry_ms(r->p), 2500);
	feed(r, "retry: 12a\nretry:\nretry: -5\nretry: 1.5\nretry:  7\n");
	assert_int_equal(sse_parser_retry_ms(r->p), 2500);
	feed(r, "retry:0\n");
	assert_int_equal(sse_parser_retry_ms(r->p), 0);
	feed(r, "retry: 99999999999999999999999999\n");
	assert_true(sse_parser_retry_ms(r->p) > 0);
	done(r);
}

static void test_bom_only_at_start(void **state)
{
	(void)state;
	struct rec *r = parse("\xEF\xBB\xBF"
	                      "data: a\n\n\xEF\xBB\xBF"
	                      "data: b\n\ndata:\xEF\xBB\xBF"
	                      "c\n\n");
	/* the second BOM makes "\uFEFFdata" an unknown field */
	assert_int_equal(r->n, 2);
	assert_event(r, 0, "message", "a", "");
	assert_event(r, 1, "message",
	             "\xEF\xBB\xBF"
	             "c",
	             "");
	done(r);
}

static void test_bom_split_and_after_reset(void **state)
{
	(void)state;
	struct rec r;
	rec_init(&r, 4096);
	feed(&r, "\xEF");
	feed(&r, "\xBB");
	feed(&r, "\xBF"
	         "data: a\n\n");
	sse_parser_reset_stream(r.p);
	feed(&r, "\xEF\xBB");
	feed(&r, "\xBF"
	         "data: b\n\n");
	assert_int_equal(r.n, 2);
	assert_event(&r, 0, "message", "a", "");
	assert_event(&r, 1, "message", "b", "");
	rec_free(&r);
}

static void test_partial_bom_is_data(void **state)
{
	(void)state;
	struct rec r;
	rec_init(&r, 4096);
	/* a lone EF BB is an invalid sequence: one replacement for the pair */
	feed(&r, "\xEF\xBB");
	feed(&r, "data: a\n\ndata: b\n\n");
	assert_int_equal(r.n, 1);
	assert_event(&r, 0, "message", "b", "");
	rec_free(&r);

	rec_init(&r, 4096);
	feed(&r, "\xEF");
	feed(&r, "\n\ndata: c\n\n");
	assert_int_equal(r.n, 1);
	assert_event(&r, 0, "message", "c", "");
	rec_free(&r);
}

static void test_final_event_without_blank_line_not_dispatched(void **state)
{
	(void)state;
	struct rec *r = parse("data: a\n\ndata: b\n");
	assert_int_equal(r->n, 1);
	assert_event(r, 0, "message", "a", "");
	done(r);
}

static void test_reset_stream_drops_partial_event_keeps_id(void **state)
{
	(void)state;
	struct rec r;
	rec_init(&r, 4096);
	feed(&r, "id: 41\ndata: a\n\nid: 42\nevent: x\ndata: partial\ndata: li");
	sse_parser_reset_stream(r.p);
	assert_string_equal(sse_parser_last_event_id(r.p), "41");
	feed(&r, "ne\n\ndata: fresh\n\n");
	assert_int_equal(r.n, 2);
	assert_event(&r, 0, "message", "a", "41");
	/* "ne" began a new line: an unknown field "ne"; the event is "fresh" alone */
	assert_event(&r, 1, "message", "fresh", "41");
	assert_false(r.ev[1].has_id);
	rec_free(&r);
}

static void test_reset_stream_forgets_trailing_cr(void **state)
{
	(void)state;
	struct rec r;
	rec_init(&r, 4096);
	feed(&r, "data: a\r");
	sse_parser_reset_stream(r.p);
	feed(&r, "\n\ndata: b\n\n");
	/* the LF is an empty line of the new stream, not the end of the old CR */
	assert_int_equal(r.n, 1);
	assert_event(&r, 0, "message", "b", "");
	rec_free(&r);
}

static void test_invalid_utf8_replaced(void **state)
{
	(void)state;
	struct rec *r = parse("data: a\xFF"
	                      "b\n\n"
	                      "data: \xE2\x82"
	                      "A\n\n"
	                      "data: \xED\xA0\x80\n\n"
	                      "data: \xC3\n\n"
	                      "data: \xF0\x9F\x98\x80 ok \xC3\xA9\n\n");
	assert_int_equal(r->n, 5);
	assert_event(r, 0, "message",
	             "a\xEF\xBF\xBD"
	             "b",
	             "");
	assert_event(r, 1, "message",
	             "\xEF\xBF\xBD"
	             "A",
	             "");
	assert_event(r, 2, "message", "\xEF\xBF\xBD\xEF\xBF\xBD\xEF\xBF\xBD", "");
	assert_event(r, 3, "message", "\xEF\xBF\xBD", "");
	assert_event(r, 4, "message", "\xF0\x9F\x98\x80 ok \xC3\xA9", "");
	done(r);
}

static void test_long_line_truncated_with_marker(void **state)
{
	(void)state;
	struct rec r;
	char *big = xmalloc(10000 + 1);

	rec_init(&r, 256);
	memset(big, 'x', 10000);
	big[10000] = '\0';
	feed(&r, "data: ");
	for (int i = 0; i < 3; i++)
		feed(&r, big);
	feed(&r, "\n\ndata: after\n\n");
	assert_int_equal(r.n, 2);
	assert_true(r.ev[0].len <= 256);
	assert_true(r.ev[0].len > 256 - 32);
	assert_non_null(strstr(r.ev[0].data, SSE_TRUNCATED_MARKER));
	assert_int_equal(
	    strcmp(r.ev[0].data + r.ev[0].len - strlen(SSE_TRUNCATED_MARKER), SSE_TRUNCATED_MARKER),
	    0);
	assert_int_equal(r.ev[0].data[0], 'x');
	assert_event(&r, 1, "message", "after", "");
	rec_free(&r);
	free(big);
}

static void test_never_ending_line_stays_bounded(void **state)
{
	(void)state;
	struct rec r;
	char chunk[65536];

	/* 64 MiB of one line through a 1 MiB parser: nothing dispatched, no growth
	 * (the sanitizer build would catch a write past the bounded buffers) */
	rec_init(&r, 1 << 20);
	memset(chunk, 'y', sizeof(chunk));
	feed(&r, "data: ");
	for (int i = 0; i < 1024; i++)
		sse_parser_feed(r.p, chunk, sizeof(chunk));
	assert_int_equal(r.n, 0);
	feed(&r, "\n\n");
	assert_int_equal(r.n, 1);
	assert_true(r.ev[0].len <= 1 << 20);
	rec_free(&r);
}

static void test_many_data_lines_truncate_event(void **state)
{
	(void)state;
	struct rec r;

	rec_init(&r, 100);
	for (int i = 0; i < 50; i++)
		feed(&r, "data: 0123456789\n");
	feed(&r, "\ndata: next\n\n");
	assert_int_equal(r.n, 2);
	assert_true(r.ev[0].len <= 100);
	assert_true(strncmp(r.ev[0].data, "0123456789\n0123456789\n", 22) == 0);
	assert_non_null(strstr(r.ev[0].data, SSE_TRUNCATED_MARKER));
	assert_event(&r, 1, "message", "next", "");
	rec_free(&r);
}

static void test_truncation_keeps_utf8_whole(void **state)
{
	(void)state;
	struct rec r;

	for (size_t max = 64; max < 72; max++) {
		rec_init(&r, max);
		feed(&r, "data: ");
		for (int i = 0; i < 100; i++)
			feed(&r, "\xC3\xA9\xE2\x82\xAC\xF0\x9F\x98\x80");
		feed(&r, "\n\n");
		assert_int_equal(r.n, 1);
		assert_true(r.ev[0].len <= max);
		assert_true(utf8_valid((const unsigned char *)r.ev[0].data, r.ev[0].len));
		assert_non_null(strstr(r.ev[0].data, SSE_TRUNCATED_MARKER));
		rec_free(&r);
	}
}

static void test_overlong_id_ignored(void **state)
{
	(void)state;
	struct rec r;
	char big[300];

	rec_init(&r, 64);
	feed(&r, "id: 1\ndata: a\n\nid: ");
	memset(big, '9', sizeof(big) - 1);
	big[sizeof(big) - 1] = '\0';
	feed(&r, big);
	feed(&r, "\ndata: b\n\n");
	assert_int_equal(r.n, 2);
	assert_event(&r, 1, "message", "b", "1");
	rec_free(&r);
}

/* A stream that exercises every rule at once. */
static const char sample[] = "\xEF\xBB\xBF: hello\r\n"
                             "retry: 1500\n"
                             "id: 1\r"
                             "data: first\r\n"
                             "\r\n"
                             "event: status\n"
                             "data:{\"done\":false}\n"
                             "data\n"
                             "data:  spaced\r"
                             "\r"
                             "id: 2\n"
                             "\n"
                             "id: 3\n"
                             "data: caf\xC3\xA9 \xF0\x9F\x98\x80 \xFF\n"
                             "foo: bar\n"
                             "\n"
                             "data: la\r\n"
                             "data: st\r\n"
                             "\r"
                             "data: never\n";

static void assert_same_events(const struct rec *a, const struct rec *b)
{
	assert_int_equal(a->n, b->n);
	for (size_t i = 0; i < a->n; i++) {
		assert_string_equal(a->ev[i].type, b->ev[i].type);
		assert_int_equal(a->ev[i].len, b->ev[i].len);
		assert_memory_equal(a->ev[i].data, b->ev[i].data, a->ev[i].len);
		assert_string_equal(a->ev[i].id, b->ev[i].id);
		assert_int_equal(a->ev[i].has_id, b->ev[i].has_id);
	}
}

static void test_sample_stream_events(void **state)
{
	(void)state;
	struct rec *r = parse(sample);
	assert_int_equal(r->n, 4);
	assert_event(r, 0, "message", "first", "1");
	assert_event(r, 1, "status", "{\"done\":false}\n\n spaced", "1");
	assert_event(r, 2, "message", "caf\xC3\xA9 \xF0\x9F\x98\x80 \xEF\xBF\xBD", "3");
	assert_event(r, 3, "message", "la\nst", "3");
	assert_int_equal(sse_parser_retry_ms(r->p), 1500);
	done(r);
}

static void test_chunking_never_changes_events(void **state)
{
	(void)state;
	size_t n = sizeof(sample) - 1;
	struct rec *whole = parse(sample);
	struct rec r;

	for (size_t i = 0; i <= n; i++) {
		for (size_t j = i; j <= n; j++) {
			rec_init(&r, 4096);
			sse_parser_feed(r.p, sample, i);
			sse_parser_feed(r.p, sample + i, j - i);
			sse_parser_feed(r.p, sample + j, n - j);
			assert_same_events(whole, &r);
			assert_string_equal(sse_parser_last_event_id(r.p), "3");
			rec_free(&r);
		}
	}
	rec_init(&r, 4096);
	for (size_t i = 0; i < n; i++)
		sse_parser_feed(r.p, sample + i, 1);
	assert_same_events(whole, &r);
	rec_free(&r);
	done(whole);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_simple_event),
	    cmocka_unit_test(test_line_ends),
	    cmocka_unit_test(test_cr_lf_split_across_chunks_is_one_line_end),
	    cmocka_unit_test(test_cr_then_other_byte_in_next_chunk),
	    cmocka_unit_test(test_comments_ignored),
	    cmocka_unit_test(test_field_value_split),
	    cmocka_unit_test(test_multiline_data),
	    cmocka_unit_test(test_event_type_and_reset),
	    cmocka_unit_test(test_empty_line_without_data_does_not_dispatch),
	    cmocka_unit_test(test_unknown_fields_ignored),
	    cmocka_unit_test(test_id_persists_and_commits_on_dispatch),
	    cmocka_unit_test(test_id_with_nul_ignored),
	    cmocka_unit_test(test_nul_in_data_kept),
	    cmocka_unit_test(test_retry),
	    cmocka_unit_test(test_bom_only_at_start),
	    cmocka_unit_test(test_bom_split_and_after_reset),
	    cmocka_unit_test(test_partial_bom_is_data),
	    cmocka_unit_test(test_final_event_without_blank_line_not_dispatched),
	    cmocka_unit_test(test_reset_stream_drops_partial_event_keeps_id),
	    cmocka_unit_test(test_reset_stream_forgets_trailing_cr),
	    cmocka_unit_test(test_invalid_utf8_replaced),
	    cmocka_unit_test(test_long_line_truncated_with_marker),
	    cmocka_unit_test(test_never_ending_line_stays_bounded),
	    cmocka_unit_test(test_many_data_lines_truncate_event),
	    cmocka_unit_test(test_truncation_keeps_utf8_whole),
	    cmocka_unit_test(test_overlong_id_ignored),
	    cmocka_unit_test(test_sample_stream_events),
	    cmocka_unit_test(test_chunking_never_changes_events),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
