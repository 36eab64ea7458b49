/*
 * libFuzzer target for the client's output sanitiser.  The first byte picks the flags,
 * the rest is the text.  On every input it checks the promises a terminal relies on:
 * the output is valid UTF-8; it holds no C0 control but tab and newline (neither of
 * those in a one-line field), no DEL and no C1 control (U+0080-U+009F); ESC appears only
 * as the start of a complete SGR sequence, and only when colour was asked for.  Without
 * colour, sanitising the output again changes nothing.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "sanitize.h"

/* Length of the complete SGR at s (s[0] == ESC), 0 if none. */
static size_t fuzz_sgr(const unsigned char *s, size_t n)
{
	size_t i = 2;

	if (n < 3 || s[1] != '[')
		return 0;
	while (i < n && ((s[i] >= '0' && s[i] <= '9') || s[i] == ';' || s[i] == ':'))
		i++;
	return i < n && s[i] == 'm' ? i + 1 : 0;
}

/* Length of the valid UTF-8 character at s and its code point, 0 if invalid. */
static size_t fuzz_utf8(const unsigned char *s, size_t n, uint32_t *cp)
{
	size_t len = s[0] < 0xe0 ? 2 : s[0] < 0xf0 ? 3 : 4;
	uint32_t min = len == 2 ? 0x80 : len == 3 ? 0x800 : 0x10000;

	if (s[0] < 0xc0 || s[0] > 0xf7 || n < len)
		return 0;
	*cp = s[0] & (0x7f >> len);
	for (size_t k = 1; k < len; k++) {
		if ((s[k] & 0xc0) != 0x80)
			return 0;
		*cp = (*cp << 6) | (s[k] & 0x3f);
	}
	if (*cp < min || *cp > 0x10ffff || (*cp >= 0xd800 && *cp <= 0xdfff))
		return 0;
	return len;
}

static void fuzz_check(const unsigned char *s, size_t n, unsigned flags)
{
	size_t i = 0;

	while (i < n) {
		unsigned char c = s[i];
		uint32_t cp = 0;
		size_t len;

		if (c == 0x1b) {
			len = fuzz_sgr(s + i, n - i);
			if (len == 0 || !(flags & SANITIZE_COLOR))
				abort();
			i += len;
		} else if (c < 0x20 || c == 0x7f) {
			if ((c != '\n' && c != '\t') || (flags & SANITIZE_FIELD))
				abort();
			i++;
		} else if (c < 0x80) {
			i++;
		} else {
			len = fuzz_utf8(s + i, n - i, &cp);
			if (len == 0 || cp <= 0x9f)
				abort();
			i += len;
		}
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	unsigned flags;
	char *out, *again;

	if (size == 0)
		return 0;
	flags = data[0] & (SANITIZE_COLOR | SANITIZE_FIELD);
	out = sanitize_buf((const char *)data + 1, size - 1, flags);
	fuzz_check((const unsigned char *)out, strlen(out), flags);
	if (!(flags & SANITIZE_COLOR)) {
		again = sanitize(out, flags);
		if (strcmp(again, out) != 0)
			abort();
		free(again);
	}
	free(out);
	return 0;
}
