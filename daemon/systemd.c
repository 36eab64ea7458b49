/*
 * Socket activation and readiness notification without libsystemd.  Each function
 * checks the variables the way libsystemd does (the PID must be ours) so a child
 * that inherits the environment does not take over its parent's sockets.
 */
#include "systemd.h"

#include <errno.h>
#include <fcntl.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

static bool systemd_env_is_our_pid(const char *name)
{
	const char *v = getenv(name);
	char *end;
	long pid;

	if (v == NULL || *v == '\0')
		return true; /* not set: no restriction */
	errno = 0;
	pid = strtol(v, &end, 10);
	return errno == 0 && *end == '\0' && pid == (long)getpid();
}

int systemd_listen_fds(void)
{
	const char *v = getenv("LISTEN_FDS");
	char *end;
	long n = 0;

	if (v != NULL && getenv("LISTEN_PID") != NULL && systemd_env_is_our_pid("LISTEN_PID")) {
		errno = 0;
		n = strtol(v, &end, 10);
		if (errno != 0 || *end != '\0' || n < 0 || n > 1024)
			n = 0;
		for (long i = 0; i < n; i++)
			fcntl(SYSTEMD_LISTEN_FDS_START + (int)i, F_SETFD, FD_CLOEXEC);
	}
	unsetenv("LISTEN_PID");
	unsetenv("LISTEN_FDS");
	unsetenv("LISTEN_FDNAMES");
	return (int)n;
}

bool systemd_is_unix_listener(int fd)
{
	struct sockaddr_un sun;
	socklen_t len = sizeof(sun);
	int type = 0, listening = 0;
	socklen_t l1 = sizeof(type), l2 = sizeof(listening);

	if (getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &l1) < 0 || type != SOCK_STREAM)
		return false;
	if (getsockopt(fd, SOL_SOCKET, SO_ACCEPTCONN, &listening, &l2) < 0 || !listening)
		return false;
	memset(&sun, 0, sizeof(sun));
	return getsockname(fd, (struct sockaddr *)&sun, &len) == 0 && sun.sun_family == AF_UNIX;
}

bool systemd_notify(const char *state)
{
	const char *path = getenv("NOTIFY_SOCKET");
	struct sockaddr_un sun = {.sun_family = AF_UNIX};
	size_t n;
	socklen_t len;
	int fd;
	bool ok;

	if (path == NULL || (path[0] != '/' && path[0] != '@'))
		return false;
	n = strlen(path);
	if (n >= sizeof(sun.sun_path))
		return false;
	memcpy(sun.sun_path, path, n);
	if (path[0] == '@')
		sun.sun_path[0] = '\0';
	len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + n);
	fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return false;
	ok = sendto(fd, state, strlen(state), MSG_NOSIGNAL, (struct sockaddr *)&sun, len) >= 0;
	close(fd);
	return ok;
}

uint64_t systemd_watchdog_usec(void)
{
	const char *v = getenv("WATCHDOG_USEC");
	char *end;
	unsigned long long usec;

	if (v == NULL || !systemd_env_is_our_pid("WATCHDOG_PID"))
		return 0;
	errno = 0;
	usec = strtoull(v, &end, 10);
	if (errno != 0 || *end != '\0')
		return 0;
	return usec;
}
