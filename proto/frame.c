/*
 * Incremental, bounded line reader.  Bytes go into one buffer; frame_reader_next
 * scans only what it has not scanned before, so a long line arriving in many small
 * reads costs linear time.  Lines over the limit are never held in full: as soon as
 * the unfinished line passes the limit it is reported and discarded up to its '\n'.
 */
#include "frame.h"

#include <stdlib.h>
#include <string.h>

#include "util.h"

struct frame_reader {
	char *buf;
	size_t cap;
	size_t start;   /* first byte of the current line */
	size_t scanned; /* bytes from start already known to hold no '\n' */
	size_t end;     /* bytes in buf */
	size_t max_line;
	bool discarding;     /* inside an oversize line that was already reported */
	uint64_t lines_done; /* line breaks consumed by frame_reader_next */
	uint64_t lines_fed;  /* line breaks seen by frame_reader_feed */
};

struct frame_reader *frame_reader_new(size_t max_line)
{
	struct frame_reader *fr = xcalloc(1, sizeof(*fr));
	fr->max_line = max_line;
	return fr;
}

void frame_reader_free(struct frame_reader *fr)
{
	if (fr == NULL)
		return;
	free(fr->buf);
	free(fr);
}

/* Moves what is left to the front, and gives back what one long line made the buffer
 * grow to, so an idle connection holds little. */
static void frame_reader_compact(struct frame_reader *fr)
{
	if (fr->start != 0) {
		memmove(fr->buf, fr->buf + fr->start, fr->end - fr->start);
		fr->end -= fr->start;
		fr->start = 0;
	}
	if (fr->cap > 65536 && fr->end < fr->cap / 4) {
		size_t cap = 4096;
		while (cap < fr->end + 1)
			cap *= 2;
		fr->buf = xrealloc(fr->buf, cap);
		fr->cap = cap;
	}
}

uint64_t frame_reader_feed(struct frame_reader *fr, const void *data, size_t len)
{
	const char *p = data, *stop = p + len, *nl;
	uint64_t last_line;

	/* Count the breaks before the last byte: a break at the very end closes its own line. */
	while (len > 0 && (nl = memchr(p, '\n', (size_t)(stop - 1 - p))) != NULL) {
		fr->lines_fed++;
		p = nl + 1;
	}
	last_line = fr->lines_fed;
	if (len > 0 && ((const char *)data)[len - 1] == '\n')
		fr->lines_fed++;

	frame_reader_compact(fr);
	if (fr->end + len + 1 > fr->cap) {
		size_t cap = fr->cap ? fr->cap : 4096;
		while (cap < fr->end + len + 1)
			cap *= 2;
		fr->buf = xrealloc(fr->buf, cap);
		fr->cap = cap;
	}
	memcpy(fr->buf + fr->end, data, len);
	fr->end += len;
	return last_line;
}

bool frame_reader_next(struct frame_reader *fr, struct frame *out)
{
	memset(out, 0, sizeof(*out));
	if (fr->buf == NULL)
		return false;
	for (;;) {
		char *line = fr->buf + fr->start;
		size_t avail = fr->end - fr->start;
		char *nl = avail > fr->scanned
		               ? memchr(line + fr->scanned, '\n', avail - fr->scanned)
		               : NULL;

		if (nl == NULL) {
			fr->scanned = avail;
			if (fr->discarding) {
				fr->start = fr->end;
				fr->scanned = 0;
			} else if (avail > fr->max_line) {
				/* Report now rather than buffering a line we will refuse. */
				fr->discarding = true;
				fr->start = fr->end;
				fr->scanned = 0;
				out->type = FRAME_OVERSIZE;
				out->line_no = fr->lines_done;
				return true;
			}
			return false;
		}

		size_t len = (size_t)(nl - line);
		out->line_no = fr->lines_done++;
		fr->start += len + 1;
		fr->scanned = 0;
		if (fr->discarding) {
			fr->discarding = false;
			continue;
		}
		if (len > fr->max_line) {
			out->type = FRAME_OVERSIZE;
			return true;
		}
		if (!utf8_valid((const unsigned char *)line, len)) {
			out->type = FRAME_BAD_UTF8;
			return true;
		}
		*nl = '\0';
		out->type = FRAME_LINE;
		out->data = line;
		out->len = len;
		return true;
	}
}

size_t frame_reader_pending(const struct frame_reader *fr)
{
	return fr->end - fr->start;
}

bool utf8_valid(const unsigned char *s, size_t len)
{
	size_t i = 0;

	while (i < len) {
		unsigned char c = s[i];
		if (c < 0x80) {
			i++;
			continue;
		}
		size_t n;
		unsigned char lo = 0x80, hi = 0xbf; /* allowed range of the second byte */
		if (c >= 0xc2 && c <= 0xdf) {
			n = 1;
		} else if (c >= 0xe0 && c <= 0xef) {
			n = 2;
			if (c == 0xe0)
				lo = 0xa0; /* overlong */
			else if (c == 0xed)
				hi = 0x9f; /* surrogates */
		} else if (c >= 0xf0 && c <= 0xf4) {
			n = 3;
			if (c == 0xf0)
				lo = 0x90; /* overlong */
			else if (c == 0xf4)
				hi = 0x8f; /* above U+10FFFF */
		} else {
			return false;
		}
		if (len - i - 1 < n)
			return false;
		if (s[i + 1] < lo || s[i + 1] > hi)
			return false;
		for (size_t k = 2; k <= n; k++)
			if ((s[i + k] & 0xc0) != 0x80)
				return false;
		i += n + 1;
	}
	return true;
}
