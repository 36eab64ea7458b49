/*
 * The one gate between text the CLI did not write itself (build log lines, errors and
 * hints from the daemon, names, tags, aliases, snapshot fields from the service, file
 * names in warnings) and the terminal.  Only SGR colour sequences (ESC [ digits ; : m)
 * may pass, and only when the caller asks for colour; every other escape sequence and
 * control character is shown, visibly escaped, instead of acted on:
 *
 *   - ESC not starting a complete SGR, C0 controls but tab and newline (a carriage
 *     return too: a line cannot overwrite the one before it), DEL, and each byte of
 *     invalid UTF-8 (raw 0x80-0x9f among them) become "\xNN";
 *   - C1 controls encoded as UTF-8 (U+0080-U+009F, such as U+009B CSI and U+009D OSC)
 *     become "\u00NN";
 *   - with SANITIZE_FIELD, newline and tab are escaped too ("\x0a", "\x09"): a value
 *     in a table or on a "label: value" line stays on its line;
 *   - SGR sequences are dropped without colour; with colour, a text that leaves a
 *     colour set gets a reset ("ESC [ 0 m") at its end, so it cannot paint what follows.
 *
 * Everything else, valid multi-byte UTF-8 included, is copied unchanged.  A backslash is
 * not escaped: the escapes are there to be seen, not to be decoded.
 */
#ifndef SNAPBUILD_SANITIZE_H
#define SNAPBUILD_SANITIZE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>

enum {
	SANITIZE_COLOR = 1 << 0, /* keep complete SGR sequences */
	SANITIZE_FIELD = 1 << 1, /* one line: escape newline and tab too */
};

/* The sanitised copy of buf[0..len) (NUL bytes in it are escaped); malloc'd, NUL-ended. */
char *sanitize_buf(const char *buf, size_t len, unsigned flags);
/* The same for a string; NULL gives "". */
char *sanitize(const char *s, unsigned flags);
/* Writes the sanitised s (NULL: nothing) to fp. */
void sanitize_fputs(const char *s, unsigned flags, FILE *fp);
/*
 * Formats, then writes the whole result sanitised: for a line that mixes the CLI's own
 * words with values from elsewhere.  Newlines pass unless flags has SANITIZE_FIELD.
 */
void sanitize_printf(FILE *fp, unsigned flags, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

#endif
