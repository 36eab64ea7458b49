/*
 * Terminal escape stripping for log lines.  Build engines and the remote builder
 * colour their output and draw progress with cursor movements; job logs keep only
 * the text.  Used by the child-process module and by the remote log follower.
 */
#ifndef SNAPBUILD_ANSI_H
#define SNAPBUILD_ANSI_H

#include <stddef.h>

/*
 * Copy of s without escape sequences: CSI (ESC [ ... final byte), OSC and the other
 * string sequences (ESC ] / P / X / ^ / _ ... BEL or ESC \), and two- or three-byte
 * ESC sequences.  A sequence cut off by the end of the string is dropped.  The
 * result is never longer than s; the caller frees it.
 */
char *ansi_strip(const char *s);

/* The same on a buffer of len bytes, in place; returns the new length (no NUL added). */
size_t ansi_strip_buf(char *buf, size_t len);

/*
 * Makes buf[0..len) valid UTF-8 in place: each byte of a malformed sequence (Latin-1
 * text, binary output, a character cut in two) becomes '?'.  Logs travel as JSON, which
 * must be UTF-8.  Returns the number of bytes replaced.
 */
size_t ansi_repair_utf8(char *buf, size_t len);

#endif
