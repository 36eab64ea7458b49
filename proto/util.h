/*
 * Small helpers shared by the daemon, the client and the simulator: allocation
 * wrappers that abort on out-of-memory (the one place where running out of memory
 * is handled), and string helpers.  Nothing here knows about JSON, sockets or jobs.
 */
#ifndef SNAPBUILD_UTIL_H
#define SNAPBUILD_UTIL_H

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

void *xmalloc(size_t n);
void *xcalloc(size_t nmemb, size_t size);
void *xrealloc(void *p, size_t n);
char *xstrdup(const char *s);
char *xstrndup(const char *s, size_t n);
char *xasprintf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
char *xvasprintf(const char *fmt, va_list ap) __attribute__((format(printf, 1, 0)));

/* True when s starts with prefix. */
bool str_has_prefix(const char *s, const char *prefix);

/* "512 B", "1.5 KiB", "12.0 MiB" (malloc'd). */
char *format_bytes(uint64_t n);

/* Fresh random UUID (version 4), lower case, 36 characters plus NUL. */
void uuid_v4(char out[37]);

/* True for a UUID in its 8-4-4-4-12 hexadecimal text form (either case). */
bool uuid_valid(const char *s);

/* Seconds and milliseconds since the epoch, from the realtime clock. */
double now_seconds(void);

/* t (seconds since the epoch) as RFC 3339 in UTC with microseconds:
 * "2026-12-04T20:14:10.123456Z", the one time format of the protocol's JSON. */
#define RFC3339_SIZE 40
void format_rfc3339(double t, char out[RFC3339_SIZE]);
/* RFC 3339 ("Z" or an offset, optional fraction) to seconds since the epoch; 0 when s is
 * NULL, empty or not such a time. */
double parse_rfc3339(const char *s);

#endif
