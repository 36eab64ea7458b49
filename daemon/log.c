/*
 * Logging to stderr.  When journald reads our stderr (JOURNAL_STREAM is set by
 * systemd) every line starts with "<N>" so the journal keeps its priority.
 */
#include "log.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

static enum log_level cur_level = LOG_LEVEL_INFO;
static int use_prefix;

void log_init(enum log_level level)
{
	cur_level = level;
	use_prefix = getenv("JOURNAL_STREAM") != NULL;
}

void log_set_level(enum log_level level)
{
	cur_level = level;
}

int log_level_parse(const char *s)
{
	static const char *const names[] = {"error", "warn", "info", "debug"};
	for (int i = 0; i < 4; i++)
		if (strcasecmp(s, names[i]) == 0)
			return i;
	if (strcasecmp(s, "warning") == 0)
		return LOG_LEVEL_WARN;
	return -1;
}

/* syslog priorities: err=3, warning=4, info=6, debug=7 */
static void __attribute__((format(printf, 4, 0)))
vlog(enum log_level level, int syslog_prio, const char *err, const char *fmt, va_list ap)
{
	char msg[2048];

	if (level > cur_level)
		return;
	vsnprintf(msg, sizeof(msg), fmt, ap);
	if (use_prefix)
		fprintf(stderr, "<%d>%s%s%s\n", syslog_prio, msg, err ? ": " : "", err ? err : "");
	else
		fprintf(stderr, "snapbuildd: %s%s%s\n", msg, err ? ": " : "", err ? err : "");
}

#define DEFINE_LOG(name, level, prio, with_errno)                                                  \
	void name(const char *fmt, ...)                                                            \
	{                                                                                          \
		int saved = errno;                                                                 \
		va_list ap;                                                                        \
		va_start(ap, fmt);                                                                 \
		vlog(level, prio, with_errno ? strerror(saved) : NULL, fmt, ap);                   \
		va_end(ap);                                                                        \
		errno = saved;                                                                     \
	}

DEFINE_LOG(log_warn, LOG_LEVEL_WARN, 4, 1)
DEFINE_LOG(log_warnx, LOG_LEVEL_WARN, 4, 0)
DEFINE_LOG(log_info, LOG_LEVEL_INFO, 6, 0)
DEFINE_LOG(log_debug, LOG_LEVEL_DEBUG, 7, 0)

void fatal(const char *fmt, ...)
{
	int saved = errno;
	va_list ap;
	va_start(ap, fmt);
	vlog(LOG_LEVEL_ERROR, 2, strerror(saved), fmt, ap);
	va_end(ap);
	exit(1);
}

void fatalx(const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vlog(LOG_LEVEL_ERROR, 2, NULL, fmt, ap);
	va_end(ap);
	exit(1);
}
