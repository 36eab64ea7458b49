/*
 * Running blocking work off the event loop.  worker_run starts work(arg) on a thread
 * of its own; once work returns, done_cb(arg) runs on the loop thread, from the event
 * base.  The context packer uses it so that the loop keeps answering while a
 * gigabyte context is read and compressed.
 *
 * Contract: work must not touch libevent or anything owned by the loop (SQLite,
 * connections); it only fills memory that arg points to.  done_cb then reads it on
 * the loop.  A task keeps the loop alive (an event is pending until done_cb has run),
 * so the base must not be freed while tasks are running.  There is no way to abort a
 * task from outside: work polls a flag of its own (see pack_options.cancel).
 */
#ifndef SNAPBUILD_WORKER_H
#define SNAPBUILD_WORKER_H

struct event_base;
struct worker_task;

/*
 * Call once in main, before the event base is created: makes libevent thread-aware
 * (evthread_use_pthreads), which code calling libevent from other threads needs.
 */
void worker_init(void);

/*
 * Run work(arg) on a new thread (all signals blocked there, so they keep reaching the
 * loop), then done_cb(arg) on the loop thread.  Must be called on the loop thread.
 * The task belongs to this module and is freed right after done_cb returns; the
 * pointer only identifies it.  Returns NULL (errno set, nothing will be called) when
 * no thread or descriptor could be had.
 */
struct worker_task *worker_run(struct event_base *base, void (*work)(void *arg),
                               void (*done_cb)(void *arg), void *arg);

#endif
