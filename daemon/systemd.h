/*
 * The daemon's side of systemd's protocols, through libsystemd's sd-daemon API:
 * socket activation (sd_listen_fds), readiness and status (sd_notify), the watchdog
 * (sd_watchdog_enabled).  Outside systemd every call is a harmless no-op.  The
 * environment variables are unset once read, so child processes never see them.
 */
#ifndef SNAPBUILD_SYSTEMD_H
#define SNAPBUILD_SYSTEMD_H

#include <stdbool.h>
#include <stdint.h>

#define SYSTEMD_LISTEN_FDS_START 3

/* Descriptors passed to this process (0 when none); clears the variables. */
int systemd_listen_fds(void);
/* True when fd is a listening AF_UNIX stream socket. */
bool systemd_is_unix_listener(int fd);
/* Sends state (e.g. "READY=1") to the service manager; false if not under one. */
bool systemd_notify(const char *state);
/* The watchdog interval in microseconds for this process, 0 when disabled. */
uint64_t systemd_watchdog_usec(void);

#endif
