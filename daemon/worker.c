/*
 * Worker threads.  Each task gets a detached thread and an eventfd registered on the
 * loop: the thread writes the eventfd when work is over, the loop wakes up and calls
 * done_cb.  The eventfd is an ordinary pending event, so the loop keeps running while
 * a task is out, and the thread never calls into libevent.
 */
#include "worker.h"

#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdlib.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <event2/event.h>
#include <event2/thread.h>

#include "log.h"
#include "util.h"

struct worker_task {
	struct event *ev;
	int efd;
	void (*work)(void *arg);
	void (*done_cb)(void *arg);
	void *arg;
};

void worker_init(void)
{
	if (evthread_use_pthreads() < 0)
		fatalx("libevent: cannot enable thread support");
}

static void *worker_thread(void *p)
{
	struct worker_task *t = p;
	uint64_t one = 1;

	t->work(t->arg);
	/* An eventfd write of 1 cannot block or fail short of a bug. */
	while (write(t->efd, &one, sizeof(one)) < 0) {
		if (errno != EINTR)
			fatal("worker: eventfd write");
	}
	return NULL;
}

static void worker_done_cb(evutil_socket_t fd, short what, void *p)
{
	struct worker_task *t = p;

	(void)fd;
	(void)what;
	event_free(t->ev);
	close(t->efd);
	t->done_cb(t->arg);
	free(t);
}

struct worker_task *worker_run(struct event_base *base, void (*work)(void *arg),
                               void (*done_cb)(void *arg), void *arg)
{
	struct worker_task *t = xcalloc(1, sizeof(*t));
	pthread_attr_t attr;
	pthread_t tid;
	sigset_t all, old;
	int rc;

	t->work = work;
	t->done_cb = done_cb;
	t->arg = arg;
	t->efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	if (t->efd < 0)
		goto fail;
	t->ev = event_new(base, t->efd, EV_READ, worker_done_cb, t);
	if (t->ev == NULL || event_add(t->ev, NULL) < 0) {
		errno = ENOMEM;
		goto fail;
	}
	/* The new thread inherits the mask: signals stay with the loop thread. */
	sigfillset(&all);
	pthread_sigmask(SIG_SETMASK, &all, &old);
	pthread_attr_init(&attr);
	pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
	rc = pthread_create(&tid, &attr, worker_thread, t);
	pthread_attr_destroy(&attr);
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	if (rc != 0) {
		errno = rc;
		goto fail;
	}
	return t;
fail:
	rc = errno;
	if (t->ev != NULL)
		event_free(t->ev);
	if (t->efd >= 0)
		close(t->efd);
	free(t);
	errno = rc;
	return NULL;
}
