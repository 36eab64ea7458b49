/*
 * Worker tasks: work runs on another thread with signals blocked, the loop keeps
 * running (and stays alive) while a task is out, and done_cb comes back on the loop
 * thread after work, once per task.
 */
#include <pthread.h>
#include <semaphore.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

#include <cmocka.h>
#include <event2/event.h>

#include "worker.h"

struct task {
	pthread_t loop_thread, work_thread;
	bool signals_blocked;
	sem_t *gate; /* work waits for it when set */
	int result;
	int done_calls;
	int *finished;
};

static void task_work(void *arg)
{
	struct task *t = arg;
	sigset_t mask;

	t->work_thread = pthread_self();
	pthread_sigmask(SIG_SETMASK, NULL, &mask);
	t->signals_blocked = sigismember(&mask, SIGINT) && sigismember(&mask, SIGTERM);
	if (t->gate != NULL)
		sem_wait(t->gate);
	t->result = 42;
}

static void task_done_cb(void *arg)
{
	struct task *t = arg;

	assert_true(pthread_equal(pthread_self(), t->loop_thread));
	assert_false(pthread_equal(t->work_thread, t->loop_thread));
	assert_int_equal(t->result, 42);
	t->done_calls++;
	(*t->finished)++;
}

static void test_tasks_complete_on_loop(void **state)
{
	struct event_base *base = event_base_new();
	struct task tasks[4] = {0};
	int finished = 0;

	(void)state;
	for (int i = 0; i < 4; i++) {
		tasks[i].loop_thread = pthread_self();
		tasks[i].finished = &finished;
		assert_non_null(worker_run(base, task_work, task_done_cb, &tasks[i]));
	}
	/* Nothing else is pending: the loop returns only once every task is done. */
	assert_int_equal(event_base_dispatch(base), 1); /* 1: nothing left pending */
	assert_int_equal(finished, 4);
	for (int i = 0; i < 4; i++) {
		assert_int_equal(tasks[i].done_calls, 1);
		assert_true(tasks[i].signals_blocked);
	}
	event_base_free(base);
}

static void open_gate_cb(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	sem_post(arg);
}

static void test_loop_runs_while_task_is_out(void **state)
{
	struct event_base *base = event_base_new();
	struct task t = {0};
	struct timeval tv = {0, 10000};
	sem_t gate;
	int finished = 0;
	struct event *timer;

	(void)state;
	sem_init(&gate, 0, 0);
	t.loop_thread = pthread_self();
	t.gate = &gate;
	t.finished = &finished;
	assert_non_null(worker_run(base, task_work, task_done_cb, &t));
	/* The work can only end after this timer has fired on the loop. */
	timer = evtimer_new(base, open_gate_cb, &gate);
	evtimer_add(timer, &tv);
	assert_int_equal(event_base_dispatch(base), 1); /* 1: nothing left pending */
	assert_int_equal(finished, 1);
	event_free(timer);
	event_base_free(base);
	sem_destroy(&gate);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_tasks_complete_on_loop),
	    cmocka_unit_test(test_loop_runs_while_task_is_out),
	};

	worker_init();
	return cmocka_run_group_tests(tests, NULL, NULL);
}
