/*
 * Listening and connection I/O.  Reads go through recvmsg so a file descriptor
 * sent with SCM_RIGHTS arrives with the bytes of the request it belongs to; the
 * kernel ends a read right after the bytes that carried descriptors, so the fd is
 * tied to the line holding the last byte of that read (frame_reader_feed's answer).
 *
 * End of input is told apart with poll: POLLHUP means the client is gone (close at
 * once, run close callbacks); a plain EOF means it only shut down its sending side,
 * so the answers still owed are written before the connection is closed.
 */
#include "server.h"

#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/queue.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <sys/un.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/event.h>

#include "access.h"
#include "config.h"
#include "daemon.h"
#include "frame.h"
#include "jsonrpc.h"
#include "log.h"
#include "protocol.h"
#include "peer.h"
#include "systemd.h"
#include "util.h"

#define SERVER_READ_SIZE       65536
#define SERVER_MAX_PENDING_FDS 8 /* received fds waiting for their line to be read */
#define SERVER_ACCEPT_BURST    64
#define SERVER_DROP_LINGER_SEC 5 /* a dropped client's last chance to read the notice */
/* Descriptors kept for the daemon's own work (database, spool, HTTP, children). */
#define SERVER_FD_RESERVE 64
/* Of the connections left, these are only for root and the admin group. */
#define SERVER_ADMIN_RESERVE 16
/* Unfinished input (a line not yet ended) one user may keep across its connections. */
#define SERVER_MAX_PARTIAL_PER_USER (16 * SNAPBUILD_MAX_MESSAGE)
/* A listener paused at the descriptor limit looks again after this, at the latest. */
#define SERVER_ACCEPT_RETRY_SEC 1

/* Connections and unfinished input of one uid. */
struct server_user {
	uid_t uid;
	size_t nconns;
	size_t partial; /* bytes of unfinished lines held for its connections */
};

struct server_fd {
	int fd;
	uint64_t line_no;
};

struct server_conn {
	struct server *server;
	unsigned long long id;
	int fd;
	struct event *rev, *wev;
	struct frame_reader *fr;
	struct evbuffer *out;
	struct rpc_peer peer;
	bool admin;     /* root or the admin group: outside the per-user limits */
	size_t partial; /* this connection's share of its user's partial input */
	void *rpc;      /* the dispatch layer's state (server_ops) */
	int refs;
	bool open;
	bool read_eof; /* the client shut down its side; finish what is owed, then close */
	bool dropped;  /* slow reader: only the daemon.dropped notice is still written */
	struct event *linger_ev;
	struct server_fd fds[SERVER_MAX_PENDING_FDS];
	size_t nfds;
	TAILQ_ENTRY(server_conn) entry;
};

TAILQ_HEAD(server_conn_list, server_conn);

struct server {
	struct daemon *d;
	const struct server_ops *ops;
	int listen_fd;
	struct event *accept_ev;
	struct event *accept_resume_ev;
	struct event *gc_ev;
	char *socket_path;
	bool activated;
	bool bound; /* we created the socket file and remove it on stop */
	dev_t sock_dev;
	ino_t sock_ino;
	int lock_fd;
	struct server_conn_list conns;
	struct server_conn_list dead;
	size_t nconns;
	size_t max_conns; /* from RLIMIT_NOFILE, less SERVER_FD_RESERVE */
	bool accept_paused;
	struct server_user *users;
	size_t nusers;
	unsigned long long next_id;
	void (*count_cb)(struct server *s, void *arg);
	void *count_arg;
	char rbuf[SERVER_READ_SIZE];
};

static void server_conn_close(struct server_conn *c);
static void server_conn_flush(struct server_conn *c);
static bool server_conn_charge(struct server_conn *c);

static void server_gc_cb(evutil_socket_t fd, short what, void *arg)
{
	struct server *s = arg;
	struct server_conn *c;
	(void)fd;
	(void)what;

	while ((c = TAILQ_FIRST(&s->dead)) != NULL) {
		TAILQ_REMOVE(&s->dead, c, entry);
		c->server->ops->conn_free(c->rpc);
		frame_reader_free(c->fr);
		evbuffer_free(c->out);
		free(c);
	}
}

struct server *server_new(struct daemon *d, const struct server_ops *ops)
{
	struct server *s = xcalloc(1, sizeof(*s));
	s->d = d;
	s->ops = ops;
	s->listen_fd = -1;
	s->lock_fd = -1;
	TAILQ_INIT(&s->conns);
	TAILQ_INIT(&s->dead);
	s->gc_ev = event_new(d->base, -1, 0, server_gc_cb, s);
	return s;
}

const char *server_socket_path(const struct server *s)
{
	return s->socket_path;
}

bool server_socket_activated(const struct server *s)
{
	return s->activated;
}

size_t server_conn_count(const struct server *s)
{
	return s->nconns;
}

void server_set_conn_count_cb(struct server *s, void (*cb)(struct server *s, void *arg), void *arg)
{
	s->count_cb = cb;
	s->count_arg = arg;
}

/* --- connections --- */

void server_conn_ref(struct server_conn *c)
{
	c->refs++;
}

void server_conn_unref(struct server_conn *c)
{
	if (--c->refs > 0)
		return;
	TAILQ_INSERT_TAIL(&c->server->dead, c, entry);
	event_active(c->server->gc_ev, 0, 0);
}

bool server_conn_alive(const struct server_conn *c)
{
	return c->open;
}

size_t server_conn_output_pending(const struct server_conn *c)
{
	return c->open ? evbuffer_get_length(c->out) : 0;
}

const struct rpc_peer *server_conn_peer(const struct server_conn *c)
{
	return &c->peer;
}

struct daemon *server_conn_daemon(const struct server_conn *c)
{
	return c->server->d;
}

static void server_conn_close_fds(struct server_conn *c, bool all, uint64_t upto)
{
	size_t k = 0;
	for (size_t i = 0; i < c->nfds; i++) {
		if (all || c->fds[i].line_no <= upto)
			close(c->fds[i].fd);
		else
			c->fds[k++] = c->fds[i];
	}
	c->nfds = k;
}

/* The fd that came with line line_no, if any; fds of earlier lines are stale. */
static int server_conn_take_fd(struct server_conn *c, uint64_t line_no)
{
	int fd = -1;
	for (size_t i = 0; i < c->nfds; i++) {
		if (c->fds[i].line_no == line_no) {
			fd = c->fds[i].fd;
			c->fds[i] = c->fds[--c->nfds];
			break;
		}
	}
	server_conn_close_fds(c, false, line_no);
	return fd;
}

static void server_conn_maybe_finish(struct server_conn *c)
{
	if (c->open && c->read_eof && evbuffer_get_length(c->out) == 0 &&
	    c->server->ops->pending(c->rpc) == 0)
		server_conn_close(c);
}

void server_conn_call_done(struct server_conn *c)
{
	server_conn_maybe_finish(c);
}

static void server_conn_linger_cb(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	server_conn_close(arg);
}

/*
 * The queued output is thrown away except the rest of the message being written, so
 * the notice follows whole lines and is not stuck behind megabytes the client will
 * never read.  The connection then only writes: it is closed once the notice is out,
 * or after SERVER_DROP_LINGER_SEC when the client does not read at all.  Its calls are
 * ended now, so followers let go of their jobs at once.
 */
static void server_conn_drop(struct server_conn *c, const char *reason)
{
	json_object *params = json_object_new_object();
	json_object *note;
	const char *text;
	size_t len;
	struct evbuffer_ptr nl = evbuffer_search(c->out, "\n", 1, NULL);
	struct timeval tv = {SERVER_DROP_LINGER_SEC, 0};

	log_warnx("dropping client pid %d uid %u: %s", (int)c->peer.pid, (unsigned)c->peer.uid,
	          reason);
	if (nl.pos >= 0) {
		struct evbuffer *head = evbuffer_new();
		evbuffer_remove_buffer(c->out, head, (size_t)nl.pos + 1);
		evbuffer_drain(c->out, evbuffer_get_length(c->out));
		evbuffer_add_buffer(c->out, head);
		evbuffer_free(head);
	}
	json_object_object_add(params, "reason", json_object_new_string(reason));
	note = jsonrpc_notification_new(SB_NOTIFY_DROPPED, params);
	text = jsonrpc_to_string(note, &len);
	evbuffer_add(c->out, text, len);
	evbuffer_add(c->out, "\n", 1);
	json_object_put(note);
	c->dropped = true;
	event_del(c->rev);
	server_conn_close_fds(c, true, 0);
	c->linger_ev = evtimer_new(c->server->d->base, server_conn_linger_cb, c);
	evtimer_add(c->linger_ev, &tv);
	c->server->ops->closed(c->rpc);
	server_conn_flush(c);
}

bool server_conn_send(struct server_conn *c, json_object *msg)
{
	const char *text;
	size_t len;

	if (!c->open || c->dropped)
		return false;
	text = jsonrpc_to_string(msg, &len);
	return server_conn_send_text(c, text, len);
}

bool server_conn_send_text(struct server_conn *c, const char *text, size_t len)
{
	if (!c->open || c->dropped)
		return false;
	if (evbuffer_get_length(c->out) + len + 1 > SNAPBUILD_MAX_PENDING_OUTPUT) {
		char *reason = xasprintf("slow reader: more than %d bytes of output left unread; "
		                         "reconnect (followers resume with after_seq)",
		                         SNAPBUILD_MAX_PENDING_OUTPUT);
		server_conn_drop(c, reason);
		free(reason);
		return false;
	}
	evbuffer_add(c->out, text, len);
	evbuffer_add(c->out, "\n", 1);
	if (!event_pending(c->wev, EV_WRITE, NULL))
		event_add(c->wev, NULL);
	return true;
}

static void server_conn_flush(struct server_conn *c)
{
	while (c->open && evbuffer_get_length(c->out) > 0) {
		struct evbuffer_iovec v[16];
		struct iovec iov[16];
		struct msghdr msg;
		int k = evbuffer_peek(c->out, -1, NULL, v, 16);
		ssize_t n;

		for (int i = 0; i < k; i++) {
			iov[i].iov_base = v[i].iov_base;
			iov[i].iov_len = v[i].iov_len;
		}
		memset(&msg, 0, sizeof(msg));
		msg.msg_iov = iov;
		msg.msg_iovlen = (size_t)k;
		n = sendmsg(c->fd, &msg, MSG_NOSIGNAL | MSG_DONTWAIT);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			if (errno == EAGAIN || errno == EWOULDBLOCK) {
				event_add(c->wev, NULL);
				return;
			}
			log_debug("client pid %d: write failed: %s", (int)c->peer.pid,
			          strerror(errno));
			server_conn_close(c);
			return;
		}
		evbuffer_drain(c->out, (size_t)n);
	}
	if (c->open) {
		event_del(c->wev);
		if (c->dropped)
			server_conn_close(c);
		else
			server_conn_maybe_finish(c);
	}
}

static void server_conn_write_cb(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	server_conn_flush(arg);
}

static void server_conn_frames(struct server_conn *c)
{
	struct frame f;
	char *detail;

	while (c->open && !c->dropped && !c->server->d->stopping && frame_reader_next(c->fr, &f)) {
		switch (f.type) {
		case FRAME_LINE:
			c->server->ops->input(c->rpc, f.data, f.len,
			                      server_conn_take_fd(c, f.line_no));
			break;
		case FRAME_OVERSIZE:
			server_conn_close_fds(c, false, f.line_no);
			detail = xasprintf("message longer than %d bytes", SNAPBUILD_MAX_MESSAGE);
			c->server->ops->reject(c->rpc, JSONRPC_INVALID_REQUEST, detail);
			free(detail);
			break;
		case FRAME_BAD_UTF8:
			server_conn_close_fds(c, false, f.line_no);
			c->server->ops->reject(c->rpc, JSONRPC_PARSE_ERROR,
			                       "message is not valid UTF-8");
			break;
		case FRAME_NONE:
			break;
		}
	}
}

static void server_conn_eof(struct server_conn *c)
{
	struct pollfd p = {.fd = c->fd, .events = POLLOUT};

	/* A half-written last message is dropped: there is nothing to answer. */
	if (poll(&p, 1, 0) > 0 && (p.revents & (POLLHUP | POLLERR))) {
		server_conn_close(c);
		return;
	}
	c->read_eof = true;
	event_del(c->rev);
	server_conn_close_fds(c, true, 0);
	server_conn_maybe_finish(c);
}

static void server_conn_read_cb(evutil_socket_t fd, short what, void *arg)
{
	struct server_conn *c = arg;
	union {
		struct cmsghdr align;
		char buf[CMSG_SPACE(sizeof(int) * 16)];
	} ctl;
	struct iovec iov = {.iov_base = c->server->rbuf, .iov_len = sizeof(c->server->rbuf)};
	struct msghdr msg = {.msg_iov = &iov,
	                     .msg_iovlen = 1,
	                     .msg_control = ctl.buf,
	                     .msg_controllen = sizeof(ctl.buf)};
	ssize_t n;
	uint64_t line_no;
	(void)what;

	n = recvmsg(fd, &msg, MSG_CMSG_CLOEXEC | MSG_DONTWAIT);
	if (n < 0) {
		if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)
			return;
		log_debug("client pid %d: read failed: %s", (int)c->peer.pid, strerror(errno));
		server_conn_close(c);
		return;
	}
	line_no = n > 0 ? frame_reader_feed(c->fr, c->server->rbuf, (size_t)n) : 0;
	if (n > 0 && !server_conn_charge(c)) {
		for (struct cmsghdr *cm = CMSG_FIRSTHDR(&msg); cm != NULL;
		     cm = CMSG_NXTHDR(&msg, cm))
			if (cm->cmsg_level == SOL_SOCKET && cm->cmsg_type == SCM_RIGHTS)
				for (size_t i = 0; i < (cm->cmsg_len - CMSG_LEN(0)) / sizeof(int);
				     i++)
					close(((int *)(void *)CMSG_DATA(cm))[i]);
		return;
	}
	for (struct cmsghdr *cm = CMSG_FIRSTHDR(&msg); cm != NULL; cm = CMSG_NXTHDR(&msg, cm)) {
		if (cm->cmsg_level != SOL_SOCKET || cm->cmsg_type != SCM_RIGHTS)
			continue;
		size_t count = (cm->cmsg_len - CMSG_LEN(0)) / sizeof(int);
		int *fds = (int *)(void *)CMSG_DATA(cm);
		for (size_t i = 0; i < count; i++) {
			bool taken = false;
			for (size_t k = 0; k < c->nfds; k++)
				taken |= c->fds[k].line_no == line_no;
			/* One fd per request; extras (and fds on an empty read) are closed. */
			if (n == 0 || taken || c->nfds == SERVER_MAX_PENDING_FDS) {
				close(fds[i]);
				continue;
			}
			c->fds[c->nfds].fd = fds[i];
			c->fds[c->nfds].line_no = line_no;
			c->nfds++;
		}
	}
	if (n == 0) {
		server_conn_eof(c);
		return;
	}
	server_conn_frames(c);
	if (c->open && !c->dropped)
		server_conn_charge(c);
	if (c->open)
		server_conn_flush(c);
}

/* --- per-user limits --- */

static struct server_user *server_user_find(struct server *s, uid_t uid)
{
	for (size_t i = 0; i < s->nusers; i++)
		if (s->users[i].uid == uid)
			return &s->users[i];
	return NULL;
}

static struct server_user *server_user(struct server *s, uid_t uid)
{
	struct server_user *u = server_user_find(s, uid);
	if (u != NULL)
		return u;
	s->users = xrealloc(s->users, (s->nusers + 1) * sizeof(*s->users));
	s->users[s->nusers] = (struct server_user){.uid = uid};
	return &s->users[s->nusers++];
}

static void server_user_release(struct server *s, struct server_conn *c)
{
	struct server_user *u = server_user(s, c->peer.uid);
	u->nconns--;
	u->partial -= c->partial;
	c->partial = 0;
	if (u->nconns == 0)
		*u = s->users[--s->nusers];
}

/* After a read: charge the connection's unfinished line to its user.  False when the
 * user is over its bound (the connection is then dropped). */
static bool server_conn_charge(struct server_conn *c)
{
	struct server *s = c->server;
	size_t now = frame_reader_pending(c->fr);
	struct server_user *u = server_user(s, c->peer.uid);
	u->partial = u->partial - c->partial + now;
	c->partial = now;
	if (c->admin || u->partial <= SERVER_MAX_PARTIAL_PER_USER)
		return true;
	char *reason = xasprintf("uid %u holds more than %d bytes of unfinished messages across "
	                         "its connections; end each message with a newline",
	                         (unsigned)c->peer.uid, SERVER_MAX_PARTIAL_PER_USER);
	server_conn_drop(c, reason);
	free(reason);
	return false;
}

/* The limit a new connection of peer would break, or NULL. */
static char *server_over_limit(struct server *s, const struct rpc_peer *peer, bool admin)
{
	const struct config *cfg = s->d->config;
	if (s->nconns >= s->max_conns)
		return xasprintf("the daemon is at its limit of %zu connections", s->max_conns);
	if (admin)
		return NULL;
	if (s->nconns + SERVER_ADMIN_RESERVE >= s->max_conns)
		return xasprintf(
		    "the daemon is near its limit of %zu connections (the rest are kept "
		    "for root and the admin group)",
		    s->max_conns);
	struct server_user *u = server_user_find(s, peer->uid);
	size_t mine = u != NULL ? u->nconns : 0;
	if (mine >= (size_t)cfg->max_connections_per_user)
		return xasprintf("uid %u has %zu connections open, the most one user may have "
		                 "(max_connections_per_user = %d)",
		                 (unsigned)peer->uid, mine, cfg->max_connections_per_user);
	return NULL;
}

/* One JSON-RPC error line on a connection that is not taken, then close it. */
static void server_refuse(int fd, const char *why)
{
	json_object *data = json_object_new_object();
	json_object_object_add(data, "hint",
	                       json_object_new_string("close connections you no longer use, or "
	                                              "ask the daemon's administrator to raise "
	                                              "the limit"));
	json_object *msg = jsonrpc_error_response_new(NULL, SB_ERR_BUSY, why, data);
	size_t len;
	const char *text = jsonrpc_to_string(msg, &len);
	struct iovec iov[2] = {{(void *)text, len}, {"\n", 1}};
	ssize_t n = writev(fd, iov, 2);
	(void)n; /* best effort: the socket is new and its buffer empty */
	json_object_put(msg);
	close(fd);
}

static void server_count_changed(struct server *s)
{
	if (s->count_cb != NULL)
		s->count_cb(s, s->count_arg);
}

static void server_conn_close(struct server_conn *c)
{
	struct server *s = c->server;

	if (!c->open)
		return;
	c->open = false;
	log_debug("client %llu (pid %d uid %u) disconnected", c->id, (int)c->peer.pid,
	          (unsigned)c->peer.uid);
	event_free(c->rev);
	event_free(c->wev);
	c->rev = c->wev = NULL;
	if (c->linger_ev != NULL)
		event_free(c->linger_ev);
	c->linger_ev = NULL;
	close(c->fd);
	c->fd = -1;
	server_conn_close_fds(c, true, 0);
	evbuffer_drain(c->out, evbuffer_get_length(c->out));
	TAILQ_REMOVE(&s->conns, c, entry);
	s->nconns--;
	server_user_release(s, c);
	if (s->accept_paused && s->listen_fd >= 0) {
		/* A descriptor is free again: take the connections that waited. */
		s->accept_paused = false;
		event_del(s->accept_resume_ev);
		event_active(s->accept_resume_ev, 0, 0);
	}
	c->server->ops->closed(c->rpc);
	server_conn_unref(c);
	server_count_changed(s);
}

static void server_conn_new(struct server *s, int fd)
{
	struct server_conn *c;
	struct ucred cred;
	socklen_t len = sizeof(cred);

	if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) < 0) {
		log_warn("SO_PEERCRED");
		close(fd);
		return;
	}
	struct rpc_peer peer = {cred.uid, cred.gid, cred.pid};
	bool admin = access_is_admin(s->d->config, &peer);
	char *why = server_over_limit(s, &peer, admin);
	if (why != NULL) {
		log_debug("refusing a connection from pid %d uid %u: %s", (int)cred.pid,
		          (unsigned)cred.uid, why);
		server_refuse(fd, why);
		free(why);
		return;
	}
	c = xcalloc(1, sizeof(*c));
	c->server = s;
	c->id = ++s->next_id;
	c->fd = fd;
	c->peer = peer;
	c->admin = admin;
	server_user(s, peer.uid)->nconns++;
	c->refs = 1; /* the socket's own reference, dropped on close */
	c->open = true;
	c->fr = frame_reader_new(SNAPBUILD_MAX_MESSAGE);
	c->out = evbuffer_new();
	c->rpc = s->ops->conn_new(c);
	c->rev = event_new(s->d->base, fd, EV_READ | EV_PERSIST, server_conn_read_cb, c);
	c->wev = event_new(s->d->base, fd, EV_WRITE, server_conn_write_cb, c);
	event_add(c->rev, NULL);
	TAILQ_INSERT_TAIL(&s->conns, c, entry);
	s->nconns++;
	log_debug("client %llu connected: pid %d uid %u gid %u", c->id, (int)cred.pid,
	          (unsigned)cred.uid, (unsigned)cred.gid);
	server_count_changed(s);
}

static void server_accept_resume_cb(evutil_socket_t fd, short what, void *arg)
{
	struct server *s = arg;
	(void)fd;
	(void)what;
	s->accept_paused = false;
	if (s->listen_fd >= 0)
		event_add(s->accept_ev, NULL);
}

static void server_accept_cb(evutil_socket_t lfd, short what, void *arg)
{
	struct server *s = arg;
	(void)what;

	for (int i = 0; i < SERVER_ACCEPT_BURST; i++) {
		int fd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
		if (fd < 0) {
			if (errno == EINTR || errno == ECONNABORTED)
				continue;
			if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS ||
			    errno == ENOMEM) {
				/* Out of descriptors: stop accepting until a connection closes (or
				 * a second passes: other descriptors free too), never spin. */
				struct timeval tv = {SERVER_ACCEPT_RETRY_SEC, 0};
				if (!s->accept_paused)
					log_warn("accept (pausing the listener)");
				s->accept_paused = true;
				event_del(s->accept_ev);
				event_add(s->accept_resume_ev, &tv);
			} else if (errno != EAGAIN && errno != EWOULDBLOCK) {
				log_warn("accept");
			}
			return;
		}
		server_conn_new(s, fd);
	}
}

/* --- the listening socket --- */

static int server_mkdir_parent(struct server *s, char **err)
{
	struct config *cfg = s->d->config;
	char *dir = xstrdup(s->socket_path);
	char *slash = strrchr(dir, '/');
	int rc = -1;

	if (slash == NULL || slash == dir) {
		rc = 0;
		goto out;
	}
	*slash = '\0';
	for (char *p = dir + 1;; p++) {
		bool last = *p == '\0';
		if (*p != '/' && !last)
			continue;
		*p = '\0';
		if (mkdir(dir, 0700) == 0) {
			/* Only the socket's own directory needs to admit the group. */
			if (last && cfg->socket_group != NULL) {
				struct group *gr = getgrnam(cfg->socket_group);
				if (gr == NULL || chown(dir, (uid_t)-1, gr->gr_gid) < 0 ||
				    chmod(dir, 0750) < 0) {
					*err = xasprintf("cannot give %s to group %s: %s", dir,
					                 cfg->socket_group, strerror(errno));
					goto out;
				}
			}
		} else if (errno != EEXIST) {
			*err = xasprintf("cannot create %s: %s", dir, strerror(errno));
			goto out;
		}
		if (last)
			break;
		*p = '/';
	}
	rc = 0;
out:
	free(dir);
	return rc;
}

/* 1: a daemon answers, 0: nothing there or a stale socket was removed, -1: refuse. */
static int server_probe(struct server *s, char **err)
{
	struct sockaddr_un sun = {.sun_family = AF_UNIX};
	struct stat st;
	int fd, r;

	if (lstat(s->socket_path, &st) < 0) {
		if (errno == ENOENT)
			return 0;
		*err = xasprintf("cannot check %s: %s", s->socket_path, strerror(errno));
		return -1;
	}
	if (!S_ISSOCK(st.st_mode)) {
		*err = xasprintf("%s exists and is not a socket; remove it or choose another "
		                 "--socket",
		                 s->socket_path);
		return -1;
	}
	strcpy(sun.sun_path, s->socket_path);
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0) {
		*err = xasprintf("socket: %s", strerror(errno));
		return -1;
	}
	r = connect(fd, (struct sockaddr *)&sun, sizeof(sun));
	close(fd);
	if (r == 0)
		return 1;
	if (errno != ECONNREFUSED) {
		*err = xasprintf("cannot check %s: %s", s->socket_path, strerror(errno));
		return -1;
	}
	if (unlink(s->socket_path) < 0 && errno != ENOENT) {
		*err =
		    xasprintf("cannot remove stale socket %s: %s", s->socket_path, strerror(errno));
		return -1;
	}
	log_info("removed stale socket %s", s->socket_path);
	return 0;
}

static int server_bind(struct server *s, char **err)
{
	struct config *cfg = s->d->config;
	struct sockaddr_un sun = {.sun_family = AF_UNIX};
	struct stat st;
	char *lock_path;
	mode_t old_umask;
	int fd = -1, r;

	if (server_mkdir_parent(s, err) < 0)
		return -1;
	/* The lock closes the window between probing a stale socket and binding a new one. */
	lock_path = xasprintf("%s.lock", s->socket_path);
	s->lock_fd = open(lock_path, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
	if (s->lock_fd < 0) {
		*err = xasprintf("cannot open %s: %s", lock_path, strerror(errno));
		free(lock_path);
		return -1;
	}
	if (flock(s->lock_fd, LOCK_EX | LOCK_NB) < 0) {
		*err = xasprintf("another snapbuildd is already running on %s (it holds %s)",
		                 s->socket_path, lock_path);
		free(lock_path);
		return -1;
	}
	free(lock_path);
	r = server_probe(s, err);
	if (r < 0)
		return -1;
	if (r == 1) {
		*err = xasprintf("another snapbuildd is already answering on %s", s->socket_path);
		return -1;
	}

	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0) {
		*err = xasprintf("socket: %s", strerror(errno));
		return -1;
	}
	strcpy(sun.sun_path, s->socket_path);
	old_umask = umask(0177);
	r = bind(fd, (struct sockaddr *)&sun, sizeof(sun));
	umask(old_umask);
	if (r < 0) {
		*err = xasprintf("cannot bind %s: %s", s->socket_path, strerror(errno));
		goto fail;
	}
	s->bound = true;
	if (cfg->socket_group != NULL) {
		struct group *gr = getgrnam(cfg->socket_group);
		if (gr == NULL || chown(s->socket_path, (uid_t)-1, gr->gr_gid) < 0) {
			*err = xasprintf("cannot give %s to group %s: %s", s->socket_path,
			                 cfg->socket_group, gr ? strerror(errno) : "no such group");
			goto fail;
		}
	}
	if (chmod(s->socket_path, cfg->socket_mode) < 0 || lstat(s->socket_path, &st) < 0) {
		*err = xasprintf("cannot set the mode of %s: %s", s->socket_path, strerror(errno));
		goto fail;
	}
	s->sock_dev = st.st_dev;
	s->sock_ino = st.st_ino;
	if (listen(fd, SOMAXCONN) < 0) {
		*err = xasprintf("cannot listen on %s: %s", s->socket_path, strerror(errno));
		goto fail;
	}
	s->listen_fd = fd;
	return 0;
fail:
	if (s->bound)
		unlink(s->socket_path);
	s->bound = false;
	close(fd);
	return -1;
}

static int server_take_activated(struct server *s, int n, char **err)
{
	int fd = SYSTEMD_LISTEN_FDS_START;
	struct sockaddr_un sun;
	socklen_t len = sizeof(sun);

	for (int i = 1; i < n; i++) {
		log_warnx("socket activation passed %d sockets; using the first", n);
		close(SYSTEMD_LISTEN_FDS_START + i);
	}
	if (!systemd_is_unix_listener(fd)) {
		*err = xstrdup("the socket passed by systemd is not a listening AF_UNIX stream "
		               "socket");
		return -1;
	}
	if (fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK) < 0 ||
	    fcntl(fd, F_SETFD, FD_CLOEXEC) < 0) {
		*err = xasprintf("cannot configure the passed socket: %s", strerror(errno));
		return -1;
	}
	memset(&sun, 0, sizeof(sun));
	if (getsockname(fd, (struct sockaddr *)&sun, &len) == 0 && sun.sun_path[0] != '\0') {
		free(s->socket_path);
		s->socket_path = xstrndup(sun.sun_path, sizeof(sun.sun_path));
	}
	s->activated = true;
	s->listen_fd = fd;
	return 0;
}

int server_listen(struct server *s, char **err)
{
	int n;

	s->socket_path = xstrdup(s->d->config->socket_path);
	n = systemd_listen_fds();
	if (n > 0) {
		if (server_take_activated(s, n, err) < 0)
			return -1;
	} else if (strlen(s->socket_path) >= sizeof(((struct sockaddr_un *)0)->sun_path)) {
		/* Whatever it came from: a flag, the config, or $XDG_RUNTIME_DIR's default. */
		*err = xasprintf("socket path %s is longer than a Unix socket allows (%zu bytes): "
		                 "choose a shorter one with --socket",
		                 s->socket_path, sizeof(((struct sockaddr_un *)0)->sun_path) - 1);
		return -1;
	} else if (server_bind(s, err) < 0) {
		return -1;
	}
	s->accept_ev =
	    event_new(s->d->base, s->listen_fd, EV_READ | EV_PERSIST, server_accept_cb, s);
	s->accept_resume_ev = event_new(s->d->base, -1, 0, server_accept_resume_cb, s);
	struct rlimit rl;
	rlim_t nofile = getrlimit(RLIMIT_NOFILE, &rl) == 0 ? rl.rlim_cur : 1024;
	if (nofile == RLIM_INFINITY || nofile > 1 << 20)
		nofile = 1 << 20;
	s->max_conns = nofile > SERVER_FD_RESERVE + 2 * SERVER_ADMIN_RESERVE
	                   ? (size_t)nofile - SERVER_FD_RESERVE
	                   : 2 * SERVER_ADMIN_RESERVE;
	event_add(s->accept_ev, NULL);
	log_info("listening on %s%s", s->socket_path, s->activated ? " (socket activation)" : "");
	return 0;
}

void server_stop_listening(struct server *s)
{
	struct stat st;

	if (s->accept_ev != NULL) {
		event_free(s->accept_ev);
		s->accept_ev = NULL;
	}
	if (s->accept_resume_ev != NULL) {
		event_free(s->accept_resume_ev);
		s->accept_resume_ev = NULL;
	}
	if (s->listen_fd >= 0) {
		close(s->listen_fd);
		s->listen_fd = -1;
	}
	/* Remove only our own socket, not one a newer daemon bound in its place. */
	if (s->bound && lstat(s->socket_path, &st) == 0 && st.st_dev == s->sock_dev &&
	    st.st_ino == s->sock_ino)
		unlink(s->socket_path);
	s->bound = false;
}

void server_close_all(struct server *s)
{
	struct server_conn *c;
	while ((c = TAILQ_FIRST(&s->conns)) != NULL)
		server_conn_close(c);
}

void server_free(struct server *s)
{
	if (s == NULL)
		return;
	server_stop_listening(s);
	server_close_all(s);
	server_gc_cb(-1, 0, s);
	event_free(s->gc_ev);
	if (s->lock_fd >= 0)
		close(s->lock_fd);
	free(s->socket_path);
	free(s->users);
	free(s);
}
