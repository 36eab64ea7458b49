/*
 * Daemon logging, in the OpenBSD style: log_warn adds strerror(errno), log_warnx
 * does not; fatal/fatalx log and exit.  Under systemd (JOURNAL_STREAM set) each line
 * carries a <N> syslog priority prefix so journald keeps the level.
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
void fatal(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));
void fatalx(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));

#endif
