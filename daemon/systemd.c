/*
 * Thin wrappers over libsystemd's sd-daemon calls, so the rest of the daemon names
 * what it wants (a listener, a notification) rather than the library's conventions.
 */
#include "systemd.h"

#include <stddef.h>
#include <sys/socket.h>

#include <systemd/sd-daemon.h>

int systemd_listen_fds(void)
{
	int n = sd_listen_fds(1);
	return n > 0 ? n : 0;
}

bool systemd_is_unix_listener(int fd)
{
	return sd_is_socket_unix(fd, SOCK_STREAM, 1, NULL, 0) > 0;
}

bool systemd_notify(const char *state)
{
	return sd_notify(0, state) > 0;
}

uint64_t systemd_watchdog_usec(void)
{
	uint64_t usec = 0;
	if (sd_watchdog_enabled(1, &usec) <= 0)
		return 0;
	return usec;
}
