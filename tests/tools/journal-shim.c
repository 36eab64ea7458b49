/*
 * A stand-in for the journal, for tests: preloaded into snapbuildd (LD_PRELOAD), it
 * takes the place of libsystemd's sd_journal_sendv and appends each message's fields
 * to the file $SNAPBUILD_JOURNAL_SHIM_FILE, so a test sees exactly the fields the
 * daemon sends without a running journald.  Record format: the number of fields on a
 * line, then each field as its length on a line, its bytes and a newline.  With
 * $SNAPBUILD_JOURNAL_SHIM_FAIL set it refuses every message, as a journal that is gone.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/uio.h>
#include <unistd.h>

#define SD_JOURNAL_SUPPRESS_LOCATION
#include <systemd/sd-journal.h>

int sd_journal_sendv(const struct iovec *iov, int n)
{
	const char *path = getenv("SNAPBUILD_JOURNAL_SHIM_FILE");
	char head[32];
	size_t cap = 64, len = 0;
	char *buf;
	int fd;

	if (getenv("SNAPBUILD_JOURNAL_SHIM_FAIL") != NULL || path == NULL)
		return -ECONNREFUSED;
	for (int i = 0; i < n; i++)
		cap += iov[i].iov_len + 32;
	buf = malloc(cap);
	if (buf == NULL)
		return -ENOMEM;
	len += (size_t)snprintf(buf + len, cap - len, "%d\n", n);
	for (int i = 0; i < n; i++) {
		int h = snprintf(head, sizeof(head), "%zu\n", iov[i].iov_len);
		memcpy(buf + len, head, (size_t)h);
		len += (size_t)h;
		memcpy(buf + len, iov[i].iov_base, iov[i].iov_len);
		len += iov[i].iov_len;
		buf[len++] = '\n';
	}
	/* One write per message, appended: whole records even from several threads. */
	fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0600);
	if (fd < 0 || write(fd, buf, len) != (ssize_t)len) {
		int e = errno;
		if (fd >= 0)
			close(fd);
		free(buf);
		return -e;
	}
	close(fd);
	free(buf);
	return 0;
}
