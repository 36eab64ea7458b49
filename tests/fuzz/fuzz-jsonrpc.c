/*
 * libFuzzer target for the daemon's input path: framing, then JSON-RPC parsing,
 * then building and serialising the answers.  Beyond "does not crash" it checks the
 * promises the server relies on: the same events come out whether the bytes arrive
 * whole or in pieces, every line handed out is valid UTF-8 within the limit, every
 * answer serialises to one line of valid JSON that a client classifies as a response,
 * and a batch yields at most one answer per entry.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "frame.h"
#include "jsonrpc.h"

#define FUZZ_MAX_LINE 512

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void fuzz_check_answer(json_object *answer)
{
	struct jsonrpc_incoming in;
	json_object *back;
	const char *text, *why;
	size_t len;

	text = jsonrpc_to_string(answer, &len);
	if (memchr(text, '\n', len) != NULL || !utf8_valid((const unsigned char *)text, len))
		abort();
	if (!jsonrpc_decode(text, len, &back, &why))
		abort();
	if (jsonrpc_classify(back, &in) != JSONRPC_IN_RESULT &&
	    jsonrpc_classify(back, &in) != JSONRPC_IN_ERROR)
		abort();
	json_object_put(back);
}

/* Answers a line the way the dispatcher does, echoing params as the result. */
static uint64_t fuzz_answer_line(const char *line, size_t len)
{
	struct jsonrpc_message m;
	uint64_t digest = 0;
	size_t answers = 0;

	jsonrpc_parse(line, len, &m);
	if (m.error != NULL) {
		if (m.count != 0)
			abort();
		fuzz_check_answer(m.error);
		digest = 1;
		goto out;
	}
	for (size_t i = 0; i < m.count; i++) {
		struct jsonrpc_request *r = &m.requests[i];
		json_object *answer;

		if ((r->error == NULL) == (r->method == NULL))
			abort();
		if (r->error != NULL) {
			fuzz_check_answer(r->error);
			answers++;
			continue;
		}
		if (r->has_id && !jsonrpc_id_valid(r->id))
			abort();
		if (!r->has_id)
			continue;
		answer = i % 2 ? jsonrpc_response_new(r->id, json_object_get(r->params))
		               : jsonrpc_error_response_new(r->id, JSONRPC_METHOD_NOT_FOUND, NULL,
		                                            json_object_get(r->params));
		fuzz_check_answer(answer);
		json_object_put(answer);
		answers++;
	}
	if (answers > m.count || (!m.batch && m.count > 1))
		abort();
	digest = (uint64_t)m.count << 32 | answers;
out:
	jsonrpc_message_clear(&m);
	return digest;
}

/* Feeds data in pieces of the given sizes (cycled) and folds every event into a hash. */
static uint64_t fuzz_run(const uint8_t *data, size_t size, const uint8_t *steps, size_t nsteps)
{
	struct frame_reader *fr = frame_reader_new(FUZZ_MAX_LINE);
	uint64_t h = 1469598103934665603ULL;
	size_t off = 0, k = 0;

	while (off < size) {
		size_t n = nsteps ? (size_t)steps[k++ % nsteps] % 64 + 1 : size;
		struct frame f;

		if (n > size - off)
			n = size - off;
		frame_reader_feed(fr, data + off, n);
		off += n;
		while (frame_reader_next(fr, &f)) {
			h = (h ^ (uint64_t)f.type) * 1099511628211ULL;
			h = (h ^ f.line_no) * 1099511628211ULL;
			if (f.type != FRAME_LINE)
				continue;
			if (f.len > FUZZ_MAX_LINE || f.data[f.len] != '\0' ||
			    memchr(f.data, '\n', f.len) != NULL ||
			    !utf8_valid((const unsigned char *)f.data, f.len))
				abort();
			h = (h ^ fuzz_answer_line(f.data, f.len)) * 1099511628211ULL;
		}
		if (frame_reader_pending(fr) > FUZZ_MAX_LINE + 64)
			abort();
	}
	frame_reader_free(fr);
	return h;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	/* The first bytes choose how the rest is split; the split must not matter. */
	size_t nsteps = size > 0 ? data[0] % 8 : 0;
	if (nsteps + 1 > size)
		return 0;
	if (fuzz_run(data + 1 + nsteps, size - 1 - nsteps, NULL, 0) !=
	    fuzz_run(data + 1 + nsteps, size - 1 - nsteps, data + 1, nsteps))
		abort();
	return 0;
}
