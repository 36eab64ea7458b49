/*
 * Server-Sent Events parsing, after the WHATWG HTML standard, section "Parsing an
 * event stream" and "Interpreting an event stream".  Bytes accumulate into the
 * current line (raw, at most max_event bytes; the rest of a longer line is dropped
 * until its line end); a complete line is decoded as UTF-8 with replacement
 * characters and interpreted as a field.  Decoding line by line gives the same text
 * as decoding the whole stream, because line ends are ASCII and end any incomplete
 * sequence before them, which the stream decoder would replace just the same.
 */
#include "sse.h"

#include <limits.h>
#include <stdlib.h>
#include <string.h>

#include "util.h"

struct sse_buf {
	char *d;
	size_t len;
	size_t alloc;
	size_t cap;
};

struct sse_parser {
	size_t max;
	sse_event_cb cb;
	void *arg;

	struct sse_buf line; /* raw bytes of the current line */
	bool line_truncated;
	bool after_cr;   /* the previous chunk ended in CR: a leading LF belongs to it */
	int bom_matched; /* bytes of a leading BOM seen so far; -1 once past the start */

	struct sse_buf text; /* the current line, decoded */
	struct sse_buf data;
	bool data_full;
	struct sse_buf type;
	struct sse_buf id_buf;  /* the last event id buffer */
	struct sse_buf last_id; /* the last event id string, committed on dispatch */
	bool event_has_id;
	long retry_ms;
};

static const unsigned char sse_bom[3] = {0xEF, 0xBB, 0xBF};
static const char sse_replacement[3] = {(char)0xEF, (char)0xBF, (char)0xBD};

static void sse_buf_init(struct sse_buf *b, size_t cap)
{
	b->cap = cap;
	b->d = xmalloc(1);
	b->d[0] = '\0';
	b->len = 0;
	b->alloc = 1;
}

/*
 * Buffers grow on demand up to the capacity given at init, never beyond: callers
 * keep len + n within it.
 */
static void sse_buf_append(struct sse_buf *b, const char *s, size_t n)
{
	size_t want = b->len + n + 1;

	if (want > b->cap + 1)
		abort();
	if (want > b->alloc) {
		size_t a = b->alloc ? b->alloc : 64;
		while (a < want)
			a *= 2;
		if (a > b->cap + 1)
			a = b->cap + 1;
		b->d = xrealloc(b->d, a);
		b->alloc = a;
	}
	memcpy(b->d + b->len, s, n);
	b->len += n;
	b->d[b->len] = '\0';
}

static void sse_buf_set(struct sse_buf *b, const char *s, size_t n)
{
	b->len = 0;
	sse_buf_append(b, s, n);
}

static void sse_buf_truncate(struct sse_buf *b, size_t n)
{
	b->len = n;
	b->d[n] = '\0';
}

/* The largest cut point <= n that does not split a UTF-8 character of valid text. */
static size_t sse_utf8_floor(const char *s, size_t len, size_t n)
{
	if (n >= len)
		return len;
	while (n > 0 && ((unsigned char)s[n] & 0xC0) == 0x80)
		n--;
	return n;
}

enum sse_utf8 { SSE_UTF8_VALID, SSE_UTF8_INVALID, SSE_UTF8_INCOMPLETE };

/*
 * Classifies the character starting at raw[0] (of n > 0 bytes) by the standard's
 * UTF-8 decoder and sets *len to the bytes it spans: a valid character, or a maximal
 * invalid subpart (the byte that broke a sequence starts the next one), or the rest
 * of the input when it ends in the middle of a character.
 */
static enum sse_utf8 sse_utf8_next(const unsigned char *raw, size_t n, size_t *len)
{
	unsigned char c = raw[0], lo = 0x80, hi = 0xBF;
	size_t need, j;

	*len = 1;
	if (c < 0x80)
		return SSE_UTF8_VALID;
	if (c >= 0xC2 && c <= 0xDF) {
		need = 1;
	} else if (c >= 0xE0 && c <= 0xEF) {
		need = 2;
		lo = c == 0xE0 ? 0xA0 : 0x80;
		hi = c == 0xED ? 0x9F : 0xBF;
	} else if (c >= 0xF0 && c <= 0xF4) {
		need = 3;
		lo = c == 0xF0 ? 0x90 : 0x80;
		hi = c == 0xF4 ? 0x8F : 0xBF;
	} else {
		return SSE_UTF8_INVALID;
	}
	for (j = 1; j <= need; j++) {
		if (j == n) {
			*len = j;
			return SSE_UTF8_INCOMPLETE;
		}
		if (raw[j] < lo || raw[j] > hi) {
			*len = j;
			return SSE_UTF8_INVALID;
		}
		lo = 0x80;
		hi = 0xBF;
	}
	*len = j;
	return SSE_UTF8_VALID;
}

/*
 * Decodes raw into p->text, each invalid subpart becoming U+FFFD, and stops before
 * the character that would take it past max_event.  When the raw line was cut
 * short, an incomplete character at its end is an artefact of the cut, not of the
 * stream, and is dropped.  Returns true when the output had to be cut.
 */
static bool sse_decode_line(struct sse_parser *p, const unsigned char *raw, size_t n, bool raw_cut)
{
	size_t i = 0;

	sse_buf_truncate(&p->text, 0);
	while (i < n) {
		const char *emit = (const char *)raw + i;
		size_t len, emit_len;
		enum sse_utf8 kind = sse_utf8_next(raw + i, n - i, &len);

		if (kind == SSE_UTF8_VALID && raw[i] < 0x80) {
			while (i + len < n && raw[i + len] < 0x80)
				len++;
		}
		if (kind == SSE_UTF8_INCOMPLETE && raw_cut)
			break;
		emit_len = len;
		if (kind != SSE_UTF8_VALID) {
			emit = sse_replacement;
			emit_len = sizeof(sse_replacement);
		}
		if (p->text.len + emit_len > p->max) {
			/* an ASCII run can be split anywhere; a character cannot */
			if (kind == SSE_UTF8_VALID && raw[i] < 0x80)
				sse_buf_append(&p->text, emit, p->max - p->text.len);
			return true;
		}
		sse_buf_append(&p->text, emit, emit_len);
		i += len;
	}
	return false;
}

static void sse_data_append(struct sse_parser *p, const char *v, size_t n, bool cut)
{
	size_t limit = p->max - (sizeof(SSE_TRUNCATED_MARKER) - 1);
	size_t keep, room;

	if (p->data_full)
		return;
	if (!cut && p->data.len + n <= p->max) {
		sse_buf_append(&p->data, v, n);
		sse_buf_append(&p->data, "\n", 1);
		return;
	}
	keep = sse_utf8_floor(p->data.d, p->data.len, limit);
	sse_buf_truncate(&p->data, keep);
	room = limit - keep;
	sse_buf_append(&p->data, v, sse_utf8_floor(v, n, room));
	sse_buf_append(&p->data, SSE_TRUNCATED_MARKER, sizeof(SSE_TRUNCATED_MARKER) - 1);
	p->data_full = true;
}

static void sse_dispatch(struct sse_parser *p)
{
	if (p->last_id.len != p->id_buf.len || memcmp(p->last_id.d, p->id_buf.d, p->id_buf.len))
		sse_buf_set(&p->last_id, p->id_buf.d, p->id_buf.len);
	if (p->data.len > 0) {
		if (!p->data_full && p->data.d[p->data.len - 1] == '\n')
			sse_buf_truncate(&p->data, p->data.len - 1);
		p->cb(p->arg, p->type.len ? p->type.d : "message", p->data.d, p->data.len,
		      p->last_id.d);
	}
	sse_buf_truncate(&p->data, 0);
	sse_buf_truncate(&p->type, 0);
	p->data_full = false;
	p->event_has_id = false;
}

static void sse_field_retry(struct sse_parser *p, const char *v, size_t n)
{
	long ms = 0;

	if (n == 0)
		return;
	for (size_t i = 0; i < n; i++) {
		if (v[i] < '0' || v[i] > '9')
			return;
		if (ms > (LONG_MAX - (v[i] - '0')) / 10)
			ms = LONG_MAX;
		else
			ms = ms * 10 + (v[i] - '0');
	}
	p->retry_ms = ms;
}

static void sse_process_line(struct sse_parser *p)
{
	bool cut =
	    sse_decode_line(p, (const unsigned char *)p->line.d, p->line.len, p->line_truncated);
	const char *line = p->text.d, *field = line, *value, *colon;
	size_t len = p->text.len, flen, vlen;

	cut = cut || p->line_truncated;
	sse_buf_truncate(&p->line, 0);
	p->line_truncated = false;

	if (len == 0 && !cut) {
		sse_dispatch(p);
		return;
	}
	if (line[0] == ':')
		return;
	colon = memchr(line, ':', len);
	if (colon) {
		flen = (size_t)(colon - line);
		value = colon + 1;
		if (value < line + len && *value == ' ')
			value++;
		vlen = len - (size_t)(value - line);
	} else {
		flen = len;
		value = line + len;
		vlen = 0;
	}

	if (flen == 4 && memcmp(field, "data", 4) == 0) {
		sse_data_append(p, value, vlen, cut);
	} else if (cut) {
		/* a cut event name, id or retry would be wrong, not just short */
		return;
	} else if (flen == 5 && memcmp(field, "event", 5) == 0) {
		sse_buf_set(&p->type, value, vlen);
	} else if (flen == 2 && memcmp(field, "id", 2) == 0) {
		if (memchr(value, '\0', vlen) == NULL) {
			sse_buf_set(&p->id_buf, value, vlen);
			p->event_has_id = true;
		}
	} else if (flen == 5 && memcmp(field, "retry", 5) == 0) {
		sse_field_retry(p, value, vlen);
	}
}

static void sse_line_append(struct sse_parser *p, const char *s, size_t n)
{
	size_t room = p->max - p->line.len;

	if (p->line_truncated)
		return;
	if (n > room) {
		n = room;
		p->line_truncated = true;
	}
	sse_buf_append(&p->line, s, n);
}

static void sse_feed_lines(struct sse_parser *p, const char *buf, size_t len)
{
	size_t i = 0;

	if (len > 0 && p->after_cr) {
		p->after_cr = false;
		if (buf[0] == '\n')
			i = 1;
	}
	while (i < len) {
		size_t j = i;
		while (j < len && buf[j] != '\n' && buf[j] != '\r')
			j++;
		sse_line_append(p, buf + i, j - i);
		if (j == len)
			break;
		sse_process_line(p);
		if (buf[j] == '\r') {
			if (j + 1 == len)
				p->after_cr = true;
			else if (buf[j + 1] == '\n')
				j++;
		}
		i = j + 1;
	}
}

struct sse_parser *sse_parser_new(size_t max_event, sse_event_cb cb, void *arg)
{
	struct sse_parser *p = xcalloc(1, sizeof(*p));

	if (max_event < SSE_MIN_EVENT)
		max_event = SSE_MIN_EVENT;
	p->max = max_event;
	p->cb = cb;
	p->arg = arg;
	sse_buf_init(&p->line, max_event);
	sse_buf_init(&p->text, max_event);
	sse_buf_init(&p->data, max_event + 1); /* room for the LF dispatch removes */
	sse_buf_init(&p->type, max_event);
	sse_buf_init(&p->id_buf, max_event);
	sse_buf_init(&p->last_id, max_event);
	p->retry_ms = -1;
	return p;
}

void sse_parser_feed(struct sse_parser *p, const char *buf, size_t len)
{
	/* a BOM may itself arrive split across chunks */
	while (p->bom_matched >= 0 && len > 0) {
		if ((unsigned char)buf[0] != sse_bom[p->bom_matched]) {
			int held = p->bom_matched;
			p->bom_matched = -1;
			sse_feed_lines(p, (const char *)sse_bom, (size_t)held);
			break;
		}
		buf++;
		len--;
		if (++p->bom_matched == (int)sizeof(sse_bom))
			p->bom_matched = -1;
	}
	if (p->bom_matched < 0)
		sse_feed_lines(p, buf, len);
}

void sse_parser_reset_stream(struct sse_parser *p)
{
	sse_buf_truncate(&p->line, 0);
	p->line_truncated = false;
	p->after_cr = false;
	p->bom_matched = 0;
	sse_buf_truncate(&p->data, 0);
	p->data_full = false;
	sse_buf_truncate(&p->type, 0);
	/* an id line not yet followed by its blank line was never committed */
	sse_buf_set(&p->id_buf, p->last_id.d, p->last_id.len);
	p->event_has_id = false;
}

const char *sse_parser_last_event_id(const struct sse_parser *p)
{
	return p->last_id.d;
}

bool sse_parser_event_has_id(const struct sse_parser *p)
{
	return p->event_has_id;
}

long sse_parser_retry_ms(const struct sse_parser *p)
{
	return p->retry_ms;
}

void sse_parser_free(struct sse_parser *p)
{
	if (p == NULL)
		return;
	free(p->line.d);
	free(p->text.d);
	free(p->data.d);
	free(p->type.d);
	free(p->id_buf.d);
	free(p->last_id.d);
	free(p);
}
