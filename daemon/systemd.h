/*
 * The two small systemd protocols the daemon speaks, implemented here rather than
 * through libsystemd (which drags in libgcrypt, liblzma, libzstd and liblz4 and a
 * megabyte of resident memory for what is a few system calls):
 *
 *  - socket activation: LISTEN_PID/LISTEN_FDS name descriptors from 3 upwards;
 *  - sd_notify: "KEY=VALUE" lines in one datagram to $NOTIFY_SOCKET
 *    (a path, or '@' for the abstract namespace); WATCHDOG_USEC/WATCHDOG_PID.
 *
 * Both follow sd_listen_fds(3) and sd_notify(3); outside systemd they do nothing.
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
