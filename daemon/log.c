/*
 * Logging to stderr, or to the journal with structured fields.  When systemd
 * connects stderr to the journal (JOURNAL_STREAM names stderr's device and inode),
 * every message goes through sd_journal_sendv with PRIORITY= and, for a job's
 * messages, SNAPBUILD_JOB=, SNAPBUILD_STATE= and SNAPBUILD_UID=, so that
 * `journalctl SNAPBUILD_JOB=<id>` shows one job's story; should the journal refuse a
 * message, it goes to stderr with a "<N>" priority prefix, which journald also
 * understands.  Anywhere else: plain "snapbuildd: ..." lines on stderr.
 */
#include "log.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <unistd.h>

/* CODE_FILE= would always name log.c: no location fields, plain sd_journal_sendv. */
#define SD_JOURNAL_SUPPRESS_LOCATION
#include <systemd/sd-journal.h>

static enum log_level cur_level = LOG_LEVEL_INFO;
static int use_journal;

/* Whether JOURNAL_STREAM ("DEV:INODE") is stderr: a child's stderr may have been
 * redirected since systemd set the variable. */
static int log_stderr_is_journal(void)
{
	const char *v = getenv("JOURNAL_STREAM");
	unsigned long long dev, ino;
	struct stat st;
	char tail;

	if (v == NULL || sscanf(v, "%llu:%llu%c", &dev, &ino, &tail) != 2)
		return 0;
	if (fstat(STDERR_FILENO, &st) != 0)
		return 0;
	return (unsigned long long)st.st_dev == dev && (unsigned long long)st.st_ino == ino;
}

void log_init(enum log_level level)
{
	cur_level = level;
	use_journal = log_stderr_is_journal();
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

/* The journal's fields for one message: MESSAGE, PRIORITY, the job's, ERRNO. */
static int log_journal(int syslog_prio, const char *msg, const char *err, int saved_errno,
                       const struct log_job *job)
{
	char *fields[8];
	struct iovec iov[8];
	int n = 0, rc;

	if (asprintf(&fields[n++], "MESSAGE=%s%s%s", msg, err ? ": " : "", err ? err : "") < 0)
		return -1;
	if (asprintf(&fields[n++], "PRIORITY=%d", syslog_prio) < 0)
		goto fail;
	if (asprintf(&fields[n++], "SYSLOG_IDENTIFIER=snapbuildd") < 0)
		goto fail;
	if (err != NULL && asprintf(&fields[n++], "ERRNO=%d", saved_errno) < 0)
		goto fail;
	if (job != NULL && job->id != NULL &&
	    asprintf(&fields[n++], "SNAPBUILD_JOB=%s", job->id) < 0)
		goto fail;
	if (job != NULL && job->state != NULL &&
	    asprintf(&fields[n++], "SNAPBUILD_STATE=%s", job->state) < 0)
		goto fail;
	if (job != NULL && job->uid >= 0 &&
	    asprintf(&fields[n++], "SNAPBUILD_UID=%lld", job->uid) < 0)
		goto fail;
	for (int i = 0; i < n; i++) {
		iov[i].iov_base = fields[i];
		iov[i].iov_len = strlen(fields[i]);
	}
	rc = sd_journal_sendv(iov, n);
	for (int i = 0; i < n; i++)
		free(fields[i]);
	return rc < 0 ? -1 : 0;
fail:
	for (int i = 0; i < n - 1; i++)
		free(fields[i]);
	return -1;
}

/* syslog priorities: err=3, warning=4, info=6, debug=7 */
static void __attribute__((format(printf, 5, 0)))
vlog(enum log_level level, int syslog_prio, const char *err, const struct log_job *job,
     const char *fmt, va_list ap)
{
	char msg[2048];
	int saved = errno;

	if (level > cur_level)
		return;
	vsnprintf(msg, sizeof(msg), fmt, ap);
	if (use_journal) {
		if (log_journal(syslog_prio, msg, err, saved, job) == 0)
			return;
		fprintf(stderr, "<%d>%s%s%s\n", syslog_prio, msg, err ? ": " : "", err ? err : "");
	} else {
		fprintf(stderr, "snapbuildd: %s%s%s\n", msg, err ? ": " : "", err ? err : "");
	}
}

#define DEFINE_LOG(name, level, prio, with_errno)                                                  \
	void name(const char *fmt, ...)                                                            \
	{                                                                                          \
		int saved = errno;                                                                 \
		va_list ap;                                                                        \
		va_start(ap, fmt);                                                                 \
		vlog(level, prio, with_errno ? strerror(saved) : NULL, NULL, fmt, ap);             \
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
	vlog(LOG_LEVEL_ERROR, 2, strerror(saved), NULL, fmt, ap);
	va_end(ap);
	exit(1);
}

void fatalx(const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vlog(LOG_LEVEL_ERROR, 2, NULL, NULL, fmt, ap);
	va_end(ap);
	exit(1);
}

void log_job(enum log_level level, const struct log_job *job, const char *fmt, ...)
{
	static const int prio[] = {3, 4, 6, 7};
	int saved = errno;
	va_list ap;
	va_start(ap, fmt);
	vlog(level, prio[level], NULL, job, fmt, ap);
	va_end(ap);
	errno = saved;
}
