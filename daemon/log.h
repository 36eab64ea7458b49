/*
 * Daemon logging, in the OpenBSD style: log_warn adds strerror(errno), log_warnx
 * does not; fatal/fatalx log and exit.  When stderr is the journal (JOURNAL_STREAM)
 * messages go to it with their priority and, from log_job, the job's fields
 * (SNAPBUILD_JOB=, SNAPBUILD_STATE=, SNAPBUILD_UID=); elsewhere plain lines on stderr.
 */
#ifndef SNAPBUILD_LOG_H
#define SNAPBUILD_LOG_H

enum log_level { LOG_LEVEL_ERROR = 0, LOG_LEVEL_WARN, LOG_LEVEL_INFO, LOG_LEVEL_DEBUG };

void log_init(enum log_level level);
void log_set_level(enum log_level level);
/* Parse "error|warn|info|debug"; returns -1 when unknown. */
int log_level_parse(const char *s);

void log_warn(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void log_warnx(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void log_info(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void log_debug(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* A job's fields in the journal; NULL id or state, or uid < 0, leave a field out. */
struct log_job {
	const char *id;
	const char *state;
	long long uid;
};

void log_job(enum log_level level, const struct log_job *job, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
void fatal(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));
void fatalx(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));

#endif
