/*
 * Client side of the protocol: one blocking connection, requests numbered from 1,
 * answers matched by id, notifications handed to the caller as they come.  Reads
 * wait in poll() so a signal can interrupt a long call (build.wait, following logs)
 * without losing the connection's framing state.
 */
#include "client.h"

#include <errno.h>
#include <limits.h>
#include <stdarg.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "frame.h"
#include "jsonrpc.h"
#include "util.h"

/* Answers (a long job list, a page of logs) may be larger than what the daemon accepts. */
#define SB_CLIENT_MAX_LINE (64 * 1024 * 1024)

struct sb_client {
	int fd;
	struct frame_reader *fr;
	int64_t next_id;
	volatile sig_atomic_t *interrupt;
};

const char *sb_default_socket_path(void)
{
	static char path[PATH_MAX];
	const char *v = getenv("SNAPBUILD_SOCKET");
	struct stat st;

	if (v != NULL && *v != '\0')
		return v;
	if (geteuid() == 0)
		return SB_SYSTEM_SOCKET;
	v = getenv("XDG_RUNTIME_DIR");
	if (v != NULL && *v == '/')
		snprintf(path, sizeof(path), "%s/snapbuild/snapbuild.sock", v);
	else
		snprintf(path, sizeof(path), "/run/user/%u/snapbuild/snapbuild.sock",
		         (unsigned)geteuid());
	/* A user with no daemon of their own uses the system's, when there is one. */
	if (stat(path, &st) != 0 && stat(SB_SYSTEM_SOCKET, &st) == 0)
		return SB_SYSTEM_SOCKET;
	return path;
}

static void sb_set_err(char **err, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void sb_set_err(char **err, const char *fmt, ...)
{
	va_list ap;
	if (err == NULL)
		return;
	va_start(ap, fmt);
	*err = xvasprintf(fmt, ap);
	va_end(ap);
}

struct sb_client *sb_client_connect(const char *socket_path, char **err)
{
	struct sockaddr_un sun = {.sun_family = AF_UNIX};
	struct sb_client *c;
	int fd;

	if (strlen(socket_path) >= sizeof(sun.sun_path)) {
		sb_set_err(err, "socket path too long");
		return NULL;
	}
	strcpy(sun.sun_path, socket_path);
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0) {
		sb_set_err(err, "socket: %s", strerror(errno));
		return NULL;
	}
	while (connect(fd, (struct sockaddr *)&sun, sizeof(sun)) < 0) {
		int saved = errno;
		if (saved == EINTR)
			continue;
		sb_set_err(err, "%s", strerror(saved));
		close(fd);
		errno = saved;
		return NULL;
	}
	c = xcalloc(1, sizeof(*c));
	c->fd = fd;
	c->fr = frame_reader_new(SB_CLIENT_MAX_LINE);
	return c;
}

void sb_client_close(struct sb_client *c)
{
	if (c == NULL)
		return;
	close(c->fd);
	frame_reader_free(c->fr);
	free(c);
}

int sb_client_fd(const struct sb_client *c)
{
	return c->fd;
}

void sb_client_set_interrupt(struct sb_client *c, volatile sig_atomic_t *flag)
{
	c->interrupt = flag;
}

void sb_rpc_error_clear(struct sb_rpc_error *e)
{
	if (e == NULL)
		return;
	free(e->message);
	json_object_put(e->data);
	memset(e, 0, sizeof(*e));
}

static bool sb_interrupted(struct sb_client *c)
{
	return c->interrupt != NULL && *c->interrupt != 0;
}

/* Sends the whole line; the fd rides with its first byte. */
static int sb_send_line(struct sb_client *c, const char *buf, size_t len, int pass_fd, char **err)
{
	size_t off = 0;

	while (off < len) {
		struct iovec iov = {.iov_base = (void *)(buf + off), .iov_len = len - off};
		union {
			struct cmsghdr align;
			char buf[CMSG_SPACE(sizeof(int))];
		} ctl;
		struct msghdr msg = {.msg_iov = &iov, .msg_iovlen = 1};
		ssize_t n;

		if (off == 0 && pass_fd >= 0) {
			struct cmsghdr *cm;
			memset(&ctl, 0, sizeof(ctl));
			msg.msg_control = ctl.buf;
			msg.msg_controllen = sizeof(ctl.buf);
			cm = CMSG_FIRSTHDR(&msg);
			cm->cmsg_level = SOL_SOCKET;
			cm->cmsg_type = SCM_RIGHTS;
			cm->cmsg_len = CMSG_LEN(sizeof(int));
			memcpy(CMSG_DATA(cm), &pass_fd, sizeof(int));
		}
		n = sendmsg(c->fd, &msg, MSG_NOSIGNAL);
		if (n < 0) {
			if (errno == EINTR) {
				if (sb_interrupted(c))
					return SB_CALL_INTERRUPTED;
				continue;
			}
			sb_set_err(err, "cannot send to the daemon: %s", strerror(errno));
			return SB_CALL_TRANSPORT;
		}
		off += (size_t)n;
	}
	return SB_CALL_OK;
}

/* Waits for the next event from the framing reader. */
static int sb_read_frame(struct sb_client *c, struct frame *f, char **err)
{
	char buf[65536];

	while (!frame_reader_next(c->fr, f)) {
		struct pollfd p = {.fd = c->fd, .events = POLLIN};
		ssize_t n;

		if (poll(&p, 1, -1) < 0) {
			if (errno == EINTR) {
				if (sb_interrupted(c))
					return SB_CALL_INTERRUPTED;
				continue;
			}
			sb_set_err(err, "poll: %s", strerror(errno));
			return SB_CALL_TRANSPORT;
		}
		n = read(c->fd, buf, sizeof(buf));
		if (n < 0) {
			if (errno == EINTR || errno == EAGAIN)
				continue;
			sb_set_err(err, "cannot read from the daemon: %s", strerror(errno));
			return SB_CALL_TRANSPORT;
		}
		if (n == 0) {
			sb_set_err(err, "the daemon closed the connection");
			return SB_CALL_TRANSPORT;
		}
		frame_reader_feed(c->fr, buf, (size_t)n);
	}
	return SB_CALL_OK;
}

static bool sb_id_matches(json_object *id, int64_t want)
{
	return json_object_is_type(id, json_type_int) && json_object_get_int64(id) == want;
}

int sb_client_call(struct sb_client *c, const char *method, json_object *params, int pass_fd,
                   sb_notify_cb on_notify, void *arg, json_object **result,
                   struct sb_rpc_error *error, char **err)
{
	int64_t id = ++c->next_id;
	json_object *idobj = json_object_new_int64(id);
	json_object *req = jsonrpc_request_new(idobj, method, params);
	const char *text;
	size_t len;
	char *line;
	int rc;

	*result = NULL;
	if (error != NULL)
		memset(error, 0, sizeof(*error));
	text = jsonrpc_to_string(req, &len);
	line = xmalloc(len + 1);
	memcpy(line, text, len);
	line[len] = '\n';
	rc = sb_send_line(c, line, len + 1, pass_fd, err);
	free(line);
	json_object_put(req);
	json_object_put(idobj);
	if (rc != SB_CALL_OK)
		return rc;

	for (;;) {
		struct frame f;
		struct jsonrpc_incoming in;
		json_object *msg;
		const char *why;

		rc = sb_read_frame(c, &f, err);
		if (rc != SB_CALL_OK)
			return rc;
		if (f.type != FRAME_LINE) {
			sb_set_err(err, "the daemon sent a malformed message (%s)",
			           f.type == FRAME_OVERSIZE ? "too long" : "invalid UTF-8");
			return SB_CALL_TRANSPORT;
		}
		if (!jsonrpc_decode(f.data, f.len, &msg, &why)) {
			sb_set_err(err, "the daemon sent invalid JSON: %s", why);
			return SB_CALL_TRANSPORT;
		}
		switch (jsonrpc_classify(msg, &in)) {
		case JSONRPC_IN_NOTIFICATION:
			if (on_notify != NULL)
				on_notify(arg, in.method, in.params);
			break;
		case JSONRPC_IN_RESULT:
			if (!sb_id_matches(in.id, id))
				break;
			*result = json_object_get(in.result);
			json_object_put(msg);
			return SB_CALL_OK;
		case JSONRPC_IN_ERROR:
			/* A framing error (id null) is about our request too: it is the only one.
			 */
			if (!sb_id_matches(in.id, id) && in.id != NULL)
				break;
			if (error != NULL) {
				error->code = in.code;
				error->message = xstrdup(in.message);
				error->data = json_object_get(in.data);
			}
			json_object_put(msg);
			return SB_CALL_RPC_ERROR;
		case JSONRPC_IN_INVALID:
			break;
		}
		json_object_put(msg);
	}
}
