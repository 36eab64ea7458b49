/*
 * The client's output sanitiser (see sanitize.h).  One pass over the bytes: a strict
 * UTF-8 decoder (no overlong forms, surrogates or code points past U+10FFFF) decides
 * what is a character; ESC is looked at only to see whether a complete SGR sequence
 * starts there.  Nothing is ever kept "for later": a sequence cut at the end of the
 * buffer is escaped like any other stray ESC, so two halves printed one after the other
 * cannot join into a command.
 */
#include "sanitize.h"

#include <stdarg.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "util.h"

#define ESC 0x1b
/* Longest SGR kept, ESC and 'm' included: 38;2;R;G;B twice and then some. */
#define SANITIZE_SGR_MAX 64

static const char sanitize_hex[] = "0123456789abcdef";

/* Length of a complete SGR sequence at s (s[0] == ESC), or 0 if none starts there. */
static size_t sanitize_sgr_len(const unsigned char *s, size_t n)
{
	size_t i = 2;

	if (n < 3 || s[1] != '[')
		return 0;
	while (i < n && i < SANITIZE_SGR_MAX &&
	       ((s[i] >= '0' && s[i] <= '9') || s[i] == ';' || s[i] == ':'))
		i++;
	return i < n && s[i] == 'm' ? i + 1 : 0;
}

/* Whether the SGR sequence s[0..n) resets every attribute: ESC [ m, ESC [ 0 m, ESC [ 00 m. */
static bool sanitize_sgr_resets(const unsigned char *s, size_t n)
{
	for (size_t i = 2; i + 1 < n; i++)
		if (s[i] != '0')
			return false;
	return true;
}

/* Length of the valid UTF-8 character at s (s[0] >= 0x80) and its code point; 0 if invalid. */
static size_t sanitize_utf8(const unsigned char *s, size_t n, uint32_t *cp)
{
	unsigned char c = s[0], lo = 0x80, hi = 0xbf;
	size_t len;

	if (c >= 0xc2 && c <= 0xdf) {
		len = 2;
		*cp = c & 0x1f;
	} else if (c >= 0xe0 && c <= 0xef) {
		len = 3;
		*cp = c & 0x0f;
		lo = c == 0xe0 ? 0xa0 : 0x80;
		hi = c == 0xed ? 0x9f : 0xbf;
	} else if (c >= 0xf0 && c <= 0xf4) {
		len = 4;
		*cp = c & 0x07;
		lo = c == 0xf0 ? 0x90 : 0x80;
		hi = c == 0xf4 ? 0x8f : 0xbf;
	} else {
		return 0;
	}
	if (n < len || s[1] < lo || s[1] > hi)
		return 0;
	for (size_t i = 1; i < len; i++) {
		if ((s[i] & 0xc0) != 0x80)
			return 0;
		*cp = (*cp << 6) | (s[i] & 0x3f);
	}
	return len;
}

static char *sanitize_escape(char *o, unsigned char c, const char *prefix)
{
	size_t p = strlen(prefix);

	memcpy(o, prefix, p);
	o[p] = sanitize_hex[c >> 4];
	o[p + 1] = sanitize_hex[c & 15];
	return o + p + 2;
}

char *sanitize_buf(const char *buf, size_t len, unsigned flags)
{
	const unsigned char *s = (const unsigned char *)buf;
	/* Worst case: every byte becomes "\xNN"; then a reset. */
	char *out = xmalloc(4 * len + sizeof("\033[0m")), *o = out;
	bool painted = false;
	size_t i = 0;

	while (i < len) {
		unsigned char c = s[i];
		uint32_t cp = 0;
		size_t n;

		if (c == ESC && (n = sanitize_sgr_len(s + i, len - i)) > 0) {
			if (flags & SANITIZE_COLOR) {
				memcpy(o, s + i, n);
				o += n;
				painted = !sanitize_sgr_resets(s + i, n);
			}
			i += n;
		} else if (c < 0x20 || c == 0x7f) {
			if ((c == '\n' || c == '\t') && !(flags & SANITIZE_FIELD))
				*o++ = (char)c;
			else
				o = sanitize_escape(o, c, "\\x");
			i++;
		} else if (c < 0x80) {
			*o++ = (char)c;
			i++;
		} else if ((n = sanitize_utf8(s + i, len - i, &cp)) == 0) {
			o = sanitize_escape(o, c, "\\x");
			i++;
		} else if (cp <= 0x9f) {
			o = sanitize_escape(o, (unsigned char)cp, "\\u00");
			i += n;
		} else {
			memcpy(o, s + i, n);
			o += n;
			i += n;
		}
	}
	if (painted) {
		memcpy(o, "\033[0m", 4);
		o += 4;
	}
	*o = '\0';
	return out;
}

char *sanitize(const char *s, unsigned flags)
{
	return s ? sanitize_buf(s, strlen(s), flags) : xstrdup("");
}

void sanitize_fputs(const char *s, unsigned flags, FILE *fp)
{
	char *clean;

	if (s == NULL)
		return;
	clean = sanitize(s, flags);
	fputs(clean, fp);
	free(clean);
}

void sanitize_printf(FILE *fp, unsigned flags, const char *fmt, ...)
{
	va_list ap;
	char *text;

	va_start(ap, fmt);
	text = xvasprintf(fmt, ap);
	va_end(ap);
	sanitize_fputs(text, flags, fp);
	free(text);
}
