/*
 * The client's output sanitiser: what each kind of byte becomes.  SGR colour passes
 * only with SANITIZE_COLOR and is dropped otherwise; every other escape sequence, C0
 * control (but tab and newline), DEL, C1 control (raw or UTF-8-encoded) and invalid
 * UTF-8 comes out visibly escaped; valid UTF-8 passes untouched; a sequence cut at the
 * end of the buffer is escaped, never kept.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "sanitize.h"

static void check_buf(const char *in, size_t len, unsigned flags, const char *want)
{
	char *got = sanitize_buf(in, len, flags);

	if (strcmp(got, want) != 0)
		fail_msg("sanitize(%zu bytes, flags %u): got \"%s\", want \"%s\"", len, flags, got,
		         want);
	free(got);
}

static void check(const char *in, unsigned flags, const char *want)
{
	check_buf(in, strlen(in), flags, want);
}

static void test_plain_text_and_utf8_pass(void **state)
{
	(void)state;
	check("", 0, "");
	check("#5 0.512 building make all", 0, "#5 0.512 building make all");
	check("tab\tand\nnewline", 0, "tab\tand\nnewline");
	check("café ✔ 日本語 😀 \u00a0 \u00ff", 0, "café ✔ 日本語 😀 \u00a0 \u00ff");
	check("C:\\path\\x1b stays", 0, "C:\\path\\x1b stays");
}

static void test_sgr_kept_only_with_colour(void **state)
{
	(void)state;
	check("\033[31mred\033[0m", SANITIZE_COLOR, "\033[31mred\033[0m");
	check("\033[31mred\033[0m", 0, "red");
	check("\033[1;38;2;255;0;0mtrue\033[m", SANITIZE_COLOR, "\033[1;38;2;255;0;0mtrue\033[m");
	check("\033[38:5:208mcolon\033[0m", SANITIZE_COLOR, "\033[38:5:208mcolon\033[0m");
	check("\033[38:5:208mcolon\033[0m", 0, "colon");
	/* A colour left on is reset at the end, so it cannot paint what follows. */
	check("\033[8mhidden", SANITIZE_COLOR, "\033[8mhidden\033[0m");
	check("\033[32mok\033[0m then \033[1m", SANITIZE_COLOR,
	      "\033[32mok\033[0m then \033[1m\033[0m");
	check("\033[1m\033[00m", SANITIZE_COLOR, "\033[1m\033[00m");
}

static void test_other_escape_sequences_escaped(void **state)
{
	(void)state;
	/* OSC 0 (window title), OSC 52 (clipboard write), both terminators. */
	check("\033]0;pwned\007x", SANITIZE_COLOR, "\\x1b]0;pwned\\x07x");
	check("\033]52;c;Y3VybCBldmlsIHwgc2g=\033\\", SANITIZE_COLOR,
	      "\\x1b]52;c;Y3VybCBldmlsIHwgc2g=\\x1b\\");
	/* Erase the screen, move the cursor, scroll region, private modes, keypad. */
	check("\033[2J\033[H\033[1;1H\033[3A\033[K", SANITIZE_COLOR,
	      "\\x1b[2J\\x1b[H\\x1b[1;1H\\x1b[3A\\x1b[K");
	check("\033[?1049h\033[5;10r\033=\0337\033c", 0,
	      "\\x1b[?1049h\\x1b[5;10r\\x1b=\\x1b7\\x1bc");
	/* DCS, APC, PM, SOS, and a charset switch. */
	check("\033P+q544e\033\\\033_apc\033\\\033^pm\033\\\033Xsos\033\\\033(0", 0,
	      "\\x1bP+q544e\\x1b\\\\x1b_apc\\x1b\\\\x1b^pm\\x1b\\\\x1bXsos\\x1b\\\\x1b(0");
	/* SGR-looking but not SGR: an intermediate or private byte, another final. */
	check("\033[>4;2m\033[31 m\033[?25l", SANITIZE_COLOR, "\\x1b[>4;2m\\x1b[31 m\\x1b[?25l");
}

static void test_c0_controls_and_del_escaped(void **state)
{
	static const char in[] = "a\001b\007c\010d\016e\017f\rg\013h\014i\033j\177k\037l";

	(void)state;
	check(in, 0, "a\\x01b\\x07c\\x08d\\x0ee\\x0ff\\x0dg\\x0bh\\x0ci\\x1bj\\x7fk\\x1fl");
	/* A NUL inside the buffer is shown, not a terminator. */
	check_buf("a\0b", 3, 0, "a\\x00b");
}

static void test_carriage_return_cannot_overwrite(void **state)
{
	(void)state;
	check("progress 10%\rprogress 100%", 0, "progress 10%\\x0dprogress 100%");
	check("windows line\r\n", 0, "windows line\\x0d\n");
	check("\rforged line", SANITIZE_COLOR, "\\x0dforged line");
}

static void test_c1_controls_escaped(void **state)
{
	(void)state;
	/* UTF-8-encoded C1: U+009B CSI, U+009D OSC, U+0090 DCS, U+0085 NEL, U+0080. */
	check("\xc2\x9b"
	      "2J",
	      SANITIZE_COLOR, "\\u009b2J");
	check("\xc2\x9d"
	      "0;title\xc2\x9c",
	      0, "\\u009d0;title\\u009c");
	check("\xc2\x90\xc2\x85\xc2\x80\xc2\x9f", 0, "\\u0090\\u0085\\u0080\\u009f");
	/* Raw C1 bytes are invalid UTF-8 on their own. */
	check("\x9b"
	      "2J\x9d"
	      "0;t\x07",
	      0, "\\x9b2J\\x9d0;t\\x07");
	/* U+00A0 is the first code point past C1: it passes. */
	check("\xc2\xa0", 0, "\xc2\xa0");
}

static void test_invalid_utf8_escaped(void **state)
{
	(void)state;
	check("caf\xe9!", 0, "caf\\xe9!");
	check("\xff\xfe", 0, "\\xff\\xfe");
	check("\xc0\xaf overlong", 0, "\\xc0\\xaf overlong");
	check("\xe0\x80\xaf overlong", 0, "\\xe0\\x80\\xaf overlong");
	check("\xed\xa0\x80 surrogate", 0, "\\xed\\xa0\\x80 surrogate");
	check("\xf4\x90\x80\x80 too big", 0, "\\xf4\\x90\\x80\\x80 too big");
	check("\xf5\x80", 0, "\\xf5\\x80");
	check("lone \x80 continuation", 0, "lone \\x80 continuation");
	/* A character cut by the end of the buffer, and one cut by other text. */
	check("cut \xe6\xbc", 0, "cut \\xe6\\xbc");
	check("\xe6\xbcx", 0, "\\xe6\\xbcx");
	check("\xf0\x9f\x98", 0, "\\xf0\\x9f\\x98");
}

static void test_sequence_cut_at_end_of_buffer(void **state)
{
	(void)state;
	/* An SGR without its final byte is no SGR: escaped even with colour on. */
	check("text\033[31", SANITIZE_COLOR, "text\\x1b[31");
	check("text\033[", SANITIZE_COLOR, "text\\x1b[");
	check("text\033", SANITIZE_COLOR, "text\\x1b");
	check("text\033]0;ti", 0, "text\\x1b]0;ti");
	/* Cut inside a longer buffer: only the first len bytes count. */
	check_buf("ok\033[31mred", 5, SANITIZE_COLOR, "ok\\x1b[3");
	/* So two halves printed one after the other never form a sequence. */
	char *a = sanitize_buf("x\033[2", 4, 0), *b = sanitize("J", 0);
	assert_string_equal(a, "x\\x1b[2");
	assert_string_equal(b, "J");
	free(a);
	free(b);
	/* An SGR longer than any colour needs is not kept. */
	char longsgr[128] = "\033[";
	for (int i = 0; i < 40; i++)
		strcat(longsgr, "1;");
	strcat(longsgr, "1m");
	char *got = sanitize(longsgr, SANITIZE_COLOR);
	assert_non_null(strstr(got, "\\x1b["));
	assert_null(strchr(got, '\033'));
	free(got);
}

static void test_field_keeps_one_line(void **state)
{
	(void)state;
	check("alias\nstate: succeeded", SANITIZE_FIELD, "alias\\x0astate: succeeded");
	check("k\tv", SANITIZE_FIELD, "k\\x09v");
	check("\033[31mred\033[0m", SANITIZE_FIELD, "red");
	check("\033[31mred\033[0m", SANITIZE_FIELD | SANITIZE_COLOR, "\033[31mred\033[0m");
	check("日本\033]0;x\007", SANITIZE_FIELD, "日本\\x1b]0;x\\x07");
}

static void test_output_is_idempotent(void **state)
{
	static const char *const inputs[] = {
	    "\033]0;t\007\xc2\x9b\xff\r\n\t",
	    "plain",
	    "\033[31mred",
	    "\\x1b already escaped",
	};

	(void)state;
	for (size_t i = 0; i < sizeof(inputs) / sizeof(inputs[0]); i++) {
		for (unsigned flags = 0; flags < 4; flags++) {
			char *once = sanitize(inputs[i], flags);
			char *twice = sanitize(once, flags);
			if (!(flags & SANITIZE_COLOR))
				assert_string_equal(once, twice);
			assert_null(strchr(twice, '\r'));
			free(once);
			free(twice);
		}
	}
}

static void test_printf_and_fputs(void **state)
{
	char *buf = NULL;
	size_t size = 0;
	FILE *fp = open_memstream(&buf, &size);

	(void)state;
	assert_non_null(fp);
	sanitize_printf(fp, 0, "snapbuild: %s (%d)\n", "bad \033[2Jalias\xc2\x9b", 7);
	sanitize_fputs("\033[32mok\033[0m\n", SANITIZE_COLOR, fp);
	sanitize_fputs(NULL, 0, fp);
	fclose(fp);
	assert_string_equal(buf, "snapbuild: bad \\x1b[2Jalias\\u009b (7)\n\033[32mok\033[0m\n");
	free(buf);
	buf = sanitize(NULL, 0);
	assert_string_equal(buf, "");
	free(buf);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_plain_text_and_utf8_pass),
	    cmocka_unit_test(test_sgr_kept_only_with_colour),
	    cmocka_unit_test(test_other_escape_sequences_escaped),
	    cmocka_unit_test(test_c0_controls_and_del_escaped),
	    cmocka_unit_test(test_carriage_return_cannot_overwrite),
	    cmocka_unit_test(test_c1_controls_escaped),
	    cmocka_unit_test(test_invalid_utf8_escaped),
	    cmocka_unit_test(test_sequence_cut_at_end_of_buffer),
	    cmocka_unit_test(test_field_keeps_one_line),
	    cmocka_unit_test(test_output_is_idempotent),
	    cmocka_unit_test(test_printf_and_fputs),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
