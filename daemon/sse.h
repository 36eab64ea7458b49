/*
 * An incremental Server-Sent Events parser that follows the WHATWG "event stream"
 * interpretation rules: bytes arrive in arbitrary chunks (a line end split between
 * two chunks is still one line end) and complete events come out through a callback.
 * The stream is decoded as UTF-8 with replacement characters, as the standard says,
 * so what comes out is always valid UTF-8.  Memory stays bounded by max_event
 * whatever the input: an over-long line or event is cut at a character boundary and
 * ends with SSE_TRUNCATED_MARKER.  It knows nothing of sockets or HTTP.
 */
#ifndef SNAPBUILD_SSE_H
#define SNAPBUILD_SSE_H

#include <stdbool.h>
#include <stddef.h>

/* Appended to a line or event that exceeded max_event. */
#define SSE_TRUNCATED_MARKER " …[truncated]"
/* The smallest max_event accepted; smaller values are raised to it. */
#define SSE_MIN_EVENT 64

struct sse_parser;

/*
 * One dispatched event.  type is "message" unless the event named one; data holds
 * len bytes (NUL-terminated too, but it may contain NUL bytes); id is the last event
 * id so far, possibly "".  The callback must not free the parser.
 */
typedef void (*sse_event_cb)(void *arg, const char *type, const char *data, size_t len,
                             const char *id);

struct sse_parser *sse_parser_new(size_t max_event, sse_event_cb cb, void *arg);
void sse_parser_feed(struct sse_parser *p, const char *buf, size_t len);
/* A new connection: drop the partial line and event and the BOM state, keep the
 * last event id. */
void sse_parser_reset_stream(struct sse_parser *p);
/* The last event id as the standard defines it (committed when an event is
 * dispatched), to send back as Last-Event-ID; "" when none. */
const char *sse_parser_last_event_id(const struct sse_parser *p);
/* True, while the callback runs, when the event being dispatched carried an id
 * field of its own rather than inheriting the previous one. */
bool sse_parser_event_has_id(const struct sse_parser *p);
/* The reconnection time the server asked for with "retry:", or -1 if never set. */
long sse_parser_retry_ms(const struct sse_parser *p);
void sse_parser_free(struct sse_parser *p);

#endif
