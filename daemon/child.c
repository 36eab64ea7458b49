/*
 * Child processes on the event loop (see child.h).  posix_spawn starts the program
 * in a new process group with exactly the caller's environment, signals reset to
 * their defaults and every descriptor above stderr closed, so nothing the daemon
 * holds (sockets, the store, other jobs' pipes) leaks into a build engine.  Output
 * arrives on non-blocking pipes and is cut into lines here; exit statuses come from
 * one SIGCHLD event that reaps each known child by pid, so processes started by
 * other code are left alone.
 *
 * Callbacks may free the child they report on.  A child is therefore never freed
 * while one of its callbacks is on the stack: child_free then only marks it and the
 * outermost handler frees it on the way out.
 */
#include "child.h"

#include <assert.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <sys/queue.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <pthread.h>
#include <time.h>
#include <unistd.h>

#include <event2/event.h>

#include "ansi.h"
#include "log.h"
#include "util.h"

struct child_stream {
	struct child *child;
	int num; /* 1 stdout, 2 stderr */
	int fd;
	struct event *ev;
	char *buf; /* CHILD_LINE_MAX bytes plus a NUL */
	size_t len;
};

struct child {
	LIST_ENTRY(child) entry;
	pid_t pid;
	struct child_cbs cbs;
	void *arg;

	struct child_stream out[2];

	int stdin_fd;
	struct event *stdin_ev;
	char *stdin_data;
	size_t stdin_len, stdin_off;

	bool reaped;
	int wstatus;
	bool terminating;
	bool finished; /* on_exit delivered */
	bool abandoned;
	struct event *kill_timer;
	struct event *drain_timer;

	int busy; /* callbacks on the stack */
	bool free_pending;
};

static struct event_base *child_base;
static struct event *child_sigchld_ev;
static LIST_HEAD(, child) child_list = LIST_HEAD_INITIALIZER(child_list);

static void child_finish_maybe(struct child *c);

char *child_find_executable(const char *name, const char *path_env)
{
	const char *p, *end;
	struct stat st;

	if (name == NULL || *name == '\0')
		return NULL;
	if (strchr(name, '/') != NULL)
		return xstrdup(name);
	for (p = path_env; p != NULL && *p != '\0'; p = *end ? end + 1 : end) {
		char *cand;

		end = strchrnul(p, ':');
		/* An empty PATH element means the current directory: never for a daemon. */
		if (end == p)
			continue;
		cand = xasprintf("%.*s/%s", (int)(end - p), p, name);
		if (stat(cand, &st) == 0 && S_ISREG(st.st_mode) && access(cand, X_OK) == 0)
			return cand;
		free(cand);
	}
	return NULL;
}

static const char *child_env_get(char *const *envp, const char *name)
{
	size_t n = strlen(name);

	for (; envp != NULL && *envp != NULL; envp++)
		if (strncmp(*envp, name, n) == 0 && (*envp)[n] == '=')
			return *envp + n + 1;
	return NULL;
}

/* Free the memory of a child whose descriptors and events are already gone. */
static void child_destroy(struct child *c)
{
	int i;

	LIST_REMOVE(c, entry);
	for (i = 0; i < 2; i++) {
		if (c->out[i].ev != NULL)
			event_free(c->out[i].ev);
		if (c->out[i].fd != -1)
			close(c->out[i].fd);
		free(c->out[i].buf);
	}
	if (c->stdin_ev != NULL)
		event_free(c->stdin_ev);
	if (c->stdin_fd != -1)
		close(c->stdin_fd);
	if (c->stdin_data != NULL) {
		explicit_bzero(c->stdin_data, c->stdin_len);
		free(c->stdin_data);
	}
	if (c->kill_timer != NULL)
		event_free(c->kill_timer);
	if (c->drain_timer != NULL)
		event_free(c->drain_timer);
	free(c);
}

/* Leave a callback section; false when the child was freed meanwhile. */
static bool child_leave(struct child *c)
{
	assert(c->busy > 0);
	if (--c->busy == 0 && c->free_pending) {
		c->free_pending = false;
		/* An abandoned process still running stays listed until it is reaped. */
		if (c->finished || c->reaped)
			child_destroy(c);
		return false;
	}
	return true;
}

static void child_stdin_close(struct child *c)
{
	if (c->stdin_ev != NULL) {
		event_free(c->stdin_ev);
		c->stdin_ev = NULL;
	}
	if (c->stdin_fd != -1) {
		close(c->stdin_fd);
		c->stdin_fd = -1;
	}
	if (c->stdin_data != NULL) {
		explicit_bzero(c->stdin_data, c->stdin_len);
		free(c->stdin_data);
		c->stdin_data = NULL;
	}
}

/*
 * Write what the pipe takes.  A child that closed its stdin early would raise
 * SIGPIPE; the signal is blocked for the write and a pending one consumed, so the
 * daemon does not depend on SIGPIPE being ignored.  Returns true when done.
 */
static bool child_stdin_write(struct child *c)
{
	sigset_t pipe_set, old_set, pending;
	bool was_pending, done = false;
	ssize_t n;

	sigemptyset(&pipe_set);
	sigaddset(&pipe_set, SIGPIPE);
	sigpending(&pending);
	was_pending = sigismember(&pending, SIGPIPE);
	pthread_sigmask(SIG_BLOCK, &pipe_set, &old_set);
	for (;;) {
		if (c->stdin_off == c->stdin_len) {
			done = true;
			break;
		}
		n = write(c->stdin_fd, c->stdin_data + c->stdin_off, c->stdin_len - c->stdin_off);
		if (n > 0) {
			c->stdin_off += (size_t)n;
			continue;
		}
		if (n == -1 && errno == EINTR)
			continue;
		if (n == -1 && errno == EAGAIN)
			break;
		if (errno == EPIPE && !was_pending) {
			struct timespec zero = {0, 0};

			sigtimedwait(&pipe_set, NULL, &zero);
		}
		done = true;
		break;
	}
	pthread_sigmask(SIG_SETMASK, &old_set, NULL);
	return done;
}

static void child_stdin_cb(evutil_socket_t fd, short what, void *arg)
{
	struct child *c = arg;

	(void)fd;
	(void)what;
	if (child_stdin_write(c))
		child_stdin_close(c);
}

/*
 * Hand one raw line (without its newline) to on_line: escape sequences go first,
 * then a carriage return keeps only what was drawn last ("50%\r100%" is "100%").
 * A line made only of escapes and carriage returns is dropped; an empty line is kept.
 * line must have room for a NUL at line[len].  Returns false if the child was freed.
 */
static bool child_emit(struct child *c, struct child_stream *s, char *line, size_t len)
{
	bool was_empty = len == 0;
	char *start, *cr;

	len = ansi_strip_buf(line, len);
	ansi_repair_utf8(line, len);
	while (len > 0 && line[len - 1] == '\r')
		len--;
	line[len] = '\0';
	cr = memrchr(line, '\r', len);
	start = cr != NULL ? cr + 1 : line;
	if (start == line + len && !was_empty)
		return true;
	/* A NUL must not end the line early: it is shown as U+2400 (SYMBOL FOR NULL). */
	size_t slen = len - (size_t)(start - line), nul = 0;
	for (size_t i = 0; i < slen; i++)
		nul += start[i] == '\0';
	char *shown = NULL;
	if (nul > 0) {
		char *o = shown = xmalloc(slen + 2 * nul + 1);
		for (size_t i = 0; i < slen; i++) {
			if (start[i] == '\0') {
				memcpy(o, "\xe2\x90\x80", 3);
				o += 3;
			} else {
				*o++ = start[i];
			}
		}
		*o = '\0';
	}
	c->busy++;
	if (c->cbs.on_line != NULL && !c->abandoned)
		c->cbs.on_line(c->arg, s->num, shown ? shown : start);
	free(shown);
	return child_leave(c);
}

/* Emit every complete line in the buffer and keep the rest; false if freed. */
static bool child_stream_lines(struct child *c, struct child_stream *s)
{
	size_t start = 0;
	char *nl;

	while (start < s->len && (nl = memchr(s->buf + start, '\n', s->len - start)) != NULL) {
		size_t end = (size_t)(nl - s->buf);

		if (!child_emit(c, s, s->buf + start, end - start))
			return false;
		if (c->free_pending)
			return true;
		start = end + 1;
	}
	memmove(s->buf, s->buf + start, s->len - start);
	s->len -= start;
	if (s->len == CHILD_LINE_MAX) {
		/* No newline in a full buffer: progress redrawn with carriage returns is
		 * collapsed to its last drawing; anything else is cut into a line. */
		char *cr = memrchr(s->buf, '\r', s->len - 1);

		if (cr != NULL) {
			size_t keep = s->len - (size_t)(cr + 1 - s->buf);

			memmove(s->buf, cr + 1, keep);
			s->len = keep;
		} else {
			s->len = 0;
			return child_emit(c, s, s->buf, CHILD_LINE_MAX);
		}
	}
	return true;
}

static void child_stream_close(struct child_stream *s)
{
	if (s->ev != NULL) {
		event_free(s->ev);
		s->ev = NULL;
	}
	if (s->fd != -1) {
		close(s->fd);
		s->fd = -1;
	}
}

/* End of a stream: the last unterminated line, then the descriptor.  False if freed. */
static bool child_stream_eof(struct child *c, struct child_stream *s)
{
	child_stream_close(s);
	if (s->len > 0) {
		size_t len = s->len;

		s->len = 0;
		return child_emit(c, s, s->buf, len);
	}
	return true;
}

static void child_read_cb(evutil_socket_t fd, short what, void *arg)
{
	struct child_stream *s = arg;
	struct child *c = s->child;
	ssize_t n;

	(void)what;
	n = read(fd, s->buf + s->len, CHILD_LINE_MAX - s->len);
	if (n == -1 && (errno == EAGAIN || errno == EINTR))
		return;
	c->busy++;
	if (n > 0) {
		s->len += (size_t)n;
		child_stream_lines(c, s);
	} else {
		if (n == -1)
			log_warn("child %d: reading its output", (int)c->pid);
		child_stream_eof(c, s);
	}
	if (child_leave(c))
		child_finish_maybe(c);
}

static void child_finish_maybe(struct child *c)
{
	if (c->finished || c->abandoned || c->busy > 0 || !c->reaped || c->out[0].fd != -1 ||
	    c->out[1].fd != -1)
		return;
	c->finished = true;
	child_stdin_close(c);
	if (c->kill_timer != NULL)
		event_del(c->kill_timer);
	if (c->drain_timer != NULL)
		event_del(c->drain_timer);
	c->busy++;
	if (c->cbs.on_exit != NULL)
		c->cbs.on_exit(c->arg, c->wstatus);
	child_leave(c);
}

static void child_drain_cb(evutil_socket_t fd, short what, void *arg)
{
	struct child *c = arg;
	int i;

	(void)fd;
	(void)what;
	log_debug("child %d exited but its output stays open; not waiting any longer", (int)c->pid);
	c->busy++;
	for (i = 0; i < 2 && !c->free_pending; i++)
		if (c->out[i].fd != -1)
			child_stream_eof(c, &c->out[i]);
	if (child_leave(c))
		child_finish_maybe(c);
}

static void child_kill_cb(evutil_socket_t fd, short what, void *arg)
{
	struct child *c = arg;

	(void)fd;
	(void)what;
	if (!c->finished) {
		log_debug("child %d: grace period over, killing its process group", (int)c->pid);
		kill(-c->pid, SIGKILL);
	}
}

static void child_reaped(struct child *c, int wstatus)
{
	struct timeval tv = {CHILD_DRAIN_MS / 1000, (CHILD_DRAIN_MS % 1000) * 1000};

	c->reaped = true;
	c->wstatus = wstatus;
	if (c->abandoned) {
		child_destroy(c);
		return;
	}
	/* Terminated and gone: whatever it left running in its group goes too. */
	if (c->terminating)
		kill(-c->pid, SIGKILL);
	if (c->out[0].fd != -1 || c->out[1].fd != -1) {
		c->drain_timer = evtimer_new(child_base, child_drain_cb, c);
		evtimer_add(c->drain_timer, &tv);
	}
	child_finish_maybe(c);
}

static void child_sigchld_cb(evutil_socket_t sig, short what, void *arg)
{
	struct child *c;
	bool again = true;

	(void)sig;
	(void)what;
	(void)arg;
	/* Callbacks may free or spawn children: rescan from the start after each one. */
	while (again) {
		again = false;
		LIST_FOREACH(c, &child_list, entry)
		{
			int wstatus;
			pid_t r;

			if (c->reaped)
				continue;
			r = waitpid(c->pid, &wstatus, WNOHANG);
			if (r == c->pid || (r == -1 && errno == ECHILD)) {
				/* ECHILD: someone else reaped it; report it as killed. */
				child_reaped(c, r == c->pid ? wstatus : SIGKILL);
				again = true;
				break;
			}
		}
	}
}

void child_init(struct event_base *base)
{
	if (child_sigchld_ev != NULL) {
		assert(child_base == base);
		return;
	}
	child_base = base;
	child_sigchld_ev = evsignal_new(base, SIGCHLD, child_sigchld_cb, NULL);
	if (child_sigchld_ev == NULL || evsignal_add(child_sigchld_ev, NULL) == -1)
		fatalx("cannot install the SIGCHLD handler");
}

void child_shutdown(void)
{
	struct child *c;

	while ((c = LIST_FIRST(&child_list)) != NULL) {
		if (!c->reaped) {
			kill(-c->pid, SIGKILL);
			waitpid(c->pid, NULL, 0);
		}
		child_destroy(c);
	}
	if (child_sigchld_ev != NULL)
		event_free(child_sigchld_ev);
	child_sigchld_ev = NULL;
	child_base = NULL;
}

/* A close-on-exec duplicate above stderr, so dup2 onto 0-2 in the child never
 * meets the same descriptor (possible when the daemon runs with 0-2 closed). */
static int child_fd_high(int fd)
{
	int high;

	if (fd > 2)
		return fd;
	high = fcntl(fd, F_DUPFD_CLOEXEC, 3);
	close(fd);
	return high;
}

static int child_pipe(int fds[2])
{
	if (pipe2(fds, O_CLOEXEC) == -1)
		return -1;
	fds[0] = child_fd_high(fds[0]);
	fds[1] = child_fd_high(fds[1]);
	if (fds[0] == -1 || fds[1] == -1) {
		if (fds[0] != -1)
			close(fds[0]);
		if (fds[1] != -1)
			close(fds[1]);
		return -1;
	}
	return 0;
}

struct child *child_spawn(const struct child_spec *spec, const struct child_cbs *cbs, void *arg,
                          char **err)
{
	int outp[2] = {-1, -1}, errp[2] = {-1, -1}, inp[2] = {-1, -1};
	posix_spawn_file_actions_t fa;
	posix_spawnattr_t attr;
	sigset_t none, all;
	struct child *c = NULL;
	char *path = NULL;
	pid_t pid;
	int i, r;

	assert(child_base != NULL);
	*err = NULL;
	path = child_find_executable(spec->argv[0], child_env_get(spec->envp, "PATH"));
	if (path == NULL) {
		*err =
		    xasprintf("%s: not found in PATH (%s)", spec->argv[0],
		              child_env_get(spec->envp, "PATH") ? child_env_get(spec->envp, "PATH")
		                                                : "unset");
		return NULL;
	}
	if (child_pipe(outp) == -1 || child_pipe(errp) == -1 ||
	    (spec->stdin_data != NULL && child_pipe(inp) == -1)) {
		*err = xasprintf("cannot create pipes for %s: %s", spec->argv[0], strerror(errno));
		goto out;
	}

	posix_spawn_file_actions_init(&fa);
	if (spec->stdin_data != NULL)
		posix_spawn_file_actions_adddup2(&fa, inp[0], 0);
	else
		posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
	posix_spawn_file_actions_adddup2(&fa, outp[1], 1);
	posix_spawn_file_actions_adddup2(&fa, errp[1], 2);
	/* Descriptors opened without O_CLOEXEC elsewhere in the daemon stay behind too. */
	posix_spawn_file_actions_addclosefrom_np(&fa, 3);
	if (spec->cwd != NULL)
		posix_spawn_file_actions_addchdir_np(&fa, spec->cwd);

	posix_spawnattr_init(&attr);
	sigemptyset(&none);
	sigfillset(&all);
	posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETPGROUP | POSIX_SPAWN_SETSIGMASK |
	                                    POSIX_SPAWN_SETSIGDEF);
	posix_spawnattr_setpgroup(&attr, 0);
	posix_spawnattr_setsigmask(&attr, &none);
	/* An ignored SIGPIPE would otherwise be inherited through exec. */
	posix_spawnattr_setsigdefault(&attr, &all);

	r = posix_spawn(&pid, path, &fa, &attr, spec->argv, spec->envp);
	posix_spawn_file_actions_destroy(&fa);
	posix_spawnattr_destroy(&attr);
	if (r != 0) {
		*err = xasprintf("cannot start %s%s%s: %s", path, spec->cwd ? " in " : "",
		                 spec->cwd ? spec->cwd : "", strerror(r));
		goto out;
	}

	c = xcalloc(1, sizeof(*c));
	c->pid = pid;
	c->cbs = *cbs;
	c->arg = arg;
	c->stdin_fd = -1;
	LIST_INSERT_HEAD(&child_list, c, entry);
	for (i = 0; i < 2; i++) {
		struct child_stream *s = &c->out[i];

		s->child = c;
		s->num = i + 1;
		s->fd = i == 0 ? outp[0] : errp[0];
		s->buf = xmalloc(CHILD_LINE_MAX + 1);
		evutil_make_socket_nonblocking(s->fd);
		s->ev = event_new(child_base, s->fd, EV_READ | EV_PERSIST, child_read_cb, s);
		event_add(s->ev, NULL);
	}
	outp[0] = errp[0] = -1;
	if (spec->stdin_data != NULL) {
		c->stdin_fd = inp[1];
		inp[1] = -1;
		c->stdin_data = xmalloc(spec->stdin_len + 1);
		memcpy(c->stdin_data, spec->stdin_data, spec->stdin_len);
		c->stdin_len = spec->stdin_len;
		evutil_make_socket_nonblocking(c->stdin_fd);
		if (child_stdin_write(c)) {
			child_stdin_close(c);
		} else {
			c->stdin_ev = event_new(child_base, c->stdin_fd, EV_WRITE | EV_PERSIST,
			                        child_stdin_cb, c);
			event_add(c->stdin_ev, NULL);
		}
	}

out:
	for (i = 0; i < 2; i++) {
		if (outp[i] != -1)
			close(outp[i]);
		if (errp[i] != -1)
			close(errp[i]);
		if (inp[i] != -1)
			close(inp[i]);
	}
	free(path);
	return c;
}

pid_t child_pid(const struct child *c)
{
	return c->pid;
}

void child_terminate(struct child *c, int grace_ms)
{
	struct timeval tv;

	if (c->finished || c->abandoned)
		return;
	c->terminating = true;
	kill(-c->pid, c->reaped ? SIGKILL : SIGTERM);
	if (grace_ms < 0)
		grace_ms = 0;
	tv.tv_sec = grace_ms / 1000;
	tv.tv_usec = (grace_ms % 1000) * 1000;
	if (c->kill_timer == NULL)
		c->kill_timer = evtimer_new(child_base, child_kill_cb, c);
	evtimer_add(c->kill_timer, &tv);
}

void child_free(struct child *c)
{
	int i;

	if (c == NULL)
		return;
	if (!c->finished && !c->abandoned) {
		/* Abandoned: no more callbacks; the process is still reaped when it dies. */
		c->abandoned = true;
		kill(-c->pid, SIGKILL);
		for (i = 0; i < 2; i++)
			child_stream_close(&c->out[i]);
		child_stdin_close(c);
		if (c->kill_timer != NULL)
			event_del(c->kill_timer);
		if (c->drain_timer != NULL)
			event_del(c->drain_timer);
	}
	if (c->busy > 0) {
		c->free_pending = true;
		return;
	}
	if (c->finished || c->reaped)
		child_destroy(c);
}
