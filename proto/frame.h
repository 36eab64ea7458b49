/*
 * Line framing for the JSON-RPC stream: one JSON text per '\n'-terminated line of
 * UTF-8.  The reader is incremental (partial reads and several lines per read are
 * both fine) and bounded: a line longer than the maximum is reported once as
 * FRAME_OVERSIZE and its bytes are skipped up to the next '\n', so one bad message
 * never costs the connection.  Pure: no I/O, no JSON.
 */
#ifndef SNAPBUILD_FRAME_H
#define SNAPBUILD_FRAME_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct frame_reader;

enum frame_type {
	FRAME_NONE = 0, /* no complete event yet: feed more bytes */
	FRAME_LINE,     /* a complete line (without its '\n'), valid UTF-8 */
	FRAME_OVERSIZE, /* a line exceeded the maximum; its bytes are being skipped */
	FRAME_BAD_UTF8, /* a complete line that is not valid UTF-8 (dropped) */
};

struct frame {
	enum frame_type type;
	char *data;       /* FRAME_LINE: NUL-terminated, valid until the next frame_reader call */
	size_t len;       /* FRAME_LINE: bytes before the NUL */
	uint64_t line_no; /* 0-based number of the line this event belongs to */
};

struct frame_reader *frame_reader_new(size_t max_line);
void frame_reader_free(struct frame_reader *fr);

/*
 * Appends bytes received from the peer.  Returns the number of the line that holds
 * the last byte fed, which is how a file descriptor received together with these
 * bytes is tied to its request.
 */
uint64_t frame_reader_feed(struct frame_reader *fr, const void *data, size_t len);

/* Takes the next event; returns false (and type FRAME_NONE) when more bytes are needed. */
bool frame_reader_next(struct frame_reader *fr, struct frame *out);

/* Bytes of an unfinished line held in the buffer (0 when the stream is at a line break). */
size_t frame_reader_pending(const struct frame_reader *fr);

/* True when buf[0..len) is well-formed UTF-8 (no overlongs, surrogates or > U+10FFFF). */
bool utf8_valid(const unsigned char *buf, size_t len);

#endif
