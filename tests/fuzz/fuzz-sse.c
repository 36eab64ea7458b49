/*
 * libFuzzer target for the SSE parser.  Beyond "does not crash", it checks the
 * parser's central promises on every input: the events are the same whether the
 * bytes arrive whole or in chunks, each event's data stays within max_event, and
 * all text that comes out is valid UTF-8.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "sse.h"

struct fuzz_digest {
	uint64_t hash;
	size_t events;
	size_t max;
};

static uint64_t fuzz_mix(uint64_t h, const void *p, size_t n)
{
	const unsigned char *s = p;
	for (size_t i = 0; i < n; i++)
		h = (h ^ s[i]) * 1099511628211ULL;
	return h;
}

static int fuzz_utf8_valid(const unsigned char *s, size_t n)
{
	for (size_t i = 0; i < n;) {
		size_t need = s[i] < 0x80 ? 0 : s[i] < 0xE0 ? 1 : s[i] < 0xF0 ? 2 : 3;
		if (s[i] >= 0x80 && (s[i] < 0xC2 || s[i] > 0xF4))
			return 0;
		if (i + need >= n && need > 0)
			return 0;
		for (size_t k = 1; k <= need; k++)
			if ((s[i + k] & 0xC0) != 0x80)
				return 0;
		i += need + 1;
	}
	return 1;
}

static void fuzz_event_cb(void *arg, const char *type, const char *data, size_t len, const char *id)
{
	struct fuzz_digest *d = arg;

	if (len > d->max || !fuzz_utf8_valid((const unsigned char *)data, len) ||
	    !fuzz_utf8_valid((const unsigned char *)id, strlen(id)))
		abort();
	d->events++;
	d->hash = fuzz_mix(d->hash, type, strlen(type) + 1);
	d->hash = fuzz_mix(d->hash, data, len);
	d->hash = fuzz_mix(d->hash, &len, sizeof(len));
	d->hash = fuzz_mix(d->hash, id, strlen(id) + 1);
}

static void fuzz_run(const uint8_t *buf, size_t len, size_t max, size_t step, struct fuzz_digest *d)
{
	struct sse_parser *p = sse_parser_new(max, fuzz_event_cb, d);

	d->hash = 14695981039346656037ULL;
	d->events = 0;
	d->max = max < SSE_MIN_EVENT ? SSE_MIN_EVENT : max;
	for (size_t off = 0; off < len; off += step) {
		size_t n = len - off < step ? len - off : step;
		sse_parser_feed(p, (const char *)buf + off, n);
	}
	d->hash =
	    fuzz_mix(d->hash, sse_parser_last_event_id(p), strlen(sse_parser_last_event_id(p)));
	sse_parser_free(p);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct fuzz_digest whole, chunked;
	size_t max, step;

	if (size < 2)
		return 0;
	/* the first two bytes choose the event limit and the chunk size */
	max = 16 + (size_t)data[0] * 4;
	step = 1 + data[1] % 17;
	data += 2;
	size -= 2;
	fuzz_run(data, size, max, size ? size : 1, &whole);
	fuzz_run(data, size, max, step, &chunked);
	if (whole.events != chunked.events || whole.hash != chunked.hash)
		abort();
	return 0;
}
