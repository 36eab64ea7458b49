/*
 * Escape-sequence stripping (see ansi.h).  A small state machine over ECMA-48:
 * anything that starts with ESC is consumed up to its terminator, everything else is
 * copied.  Tabs are kept; other C0 controls except ESC pass through unchanged so
 * the caller decides what a carriage return means.
 */
#include "ansi.h"

#include <string.h>

#include "frame.h"
#include "util.h"

#define ESC 0x1b
#define BEL 0x07

size_t ansi_strip_buf(char *buf, size_t len)
{
	size_t in = 0, out = 0;

	while (in < len) {
		unsigned char c = (unsigned char)buf[in];
		unsigned char kind;

		if (c != ESC) {
			buf[out++] = buf[in++];
			continue;
		}
		if (++in >= len)
			break;
		kind = (unsigned char)buf[in++];
		if (kind == '[') {
			/* CSI: parameter and intermediate bytes, then one final byte. */
			while (in < len && (unsigned char)buf[in] >= 0x30 &&
			       (unsigned char)buf[in] <= 0x3f)
				in++;
			while (in < len && (unsigned char)buf[in] >= 0x20 &&
			       (unsigned char)buf[in] <= 0x2f)
				in++;
			if (in < len && (unsigned char)buf[in] >= 0x40 &&
			    (unsigned char)buf[in] <= 0x7e)
				in++;
		} else if (kind == ']' || kind == 'P' || kind == 'X' || kind == '^' ||
		           kind == '_') {
			/* String sequences end with BEL or the string terminator ESC \. */
			while (in < len) {
				if (buf[in] == BEL) {
					in++;
					break;
				}
				if (buf[in] == ESC && in + 1 < len && buf[in + 1] == '\\') {
					in += 2;
					break;
				}
				in++;
			}
		} else if (kind >= 0x20 && kind <= 0x2f) {
			/* nF sequences such as ESC ( B: intermediates, then a final byte. */
			while (in < len && (unsigned char)buf[in] >= 0x20 &&
			       (unsigned char)buf[in] <= 0x2f)
				in++;
			if (in < len && (unsigned char)buf[in] >= 0x30 &&
			    (unsigned char)buf[in] <= 0x7e)
				in++;
		} else if (kind < 0x20 || kind >= 0x80) {
			/* A control character is not part of the sequence, and a byte of a
			 * UTF-8 character is not one either: keep it, so the text stays
			 * valid UTF-8. */
			in--;
		}
		/* Any other byte after ESC (ESC =, ESC 7, ESC M ...) is the whole sequence. */
	}
	return out;
}

char *ansi_strip(const char *s)
{
	size_t len = strlen(s);
	char *copy = xstrndup(s, len);

	copy[ansi_strip_buf(copy, len)] = '\0';
	return copy;
}

size_t ansi_repair_utf8(char *buf, size_t len)
{
	size_t i = 0, fixed = 0;

	while (i < len) {
		unsigned char c = (unsigned char)buf[i];
		size_t n = c < 0x80   ? 1
		           : c < 0xc2 ? 0
		           : c < 0xe0 ? 2
		           : c < 0xf0 ? 3
		           : c < 0xf5 ? 4
		                      : 0;

		if (n > 0 && n <= len - i && utf8_valid((const unsigned char *)buf + i, n)) {
			i += n;
			continue;
		}
		buf[i++] = '?';
		fixed++;
	}
	return fixed;
}
