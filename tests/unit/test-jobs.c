/*
 * The job engine, driven directly: the transition table itself (every pair of states),
 * an illegal move stopping the daemon, and the engine on a real store, event loop and
 * snapbuild-sim — a build to its end, a cancel in each state it can be caught in, a
 * storage failure, and recovery of a queued job after a stop.
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <fcntl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#include <event2/event.h>

#include "api.h"
#include "config.h"
#include "daemon.h"
#include "fake-service.h"
#include "http.h"
#include "job.h"
#include "jobs.h"
#include "log.h"
#include "store.h"
#include "util.h"
#include "worker.h"

#define KEY "sk-test-jobs"

/* --- the table --------------------------------------------------------------------- */

static void test_state_table(void **state)
{
	(void)state;
	/* Every move the engine makes, written out once more by hand (queued → aliasing or
	 * succeeded: a reused build, job-reuse.c, which has its snapshot already). */
	static const struct {
		enum job_state from, to;
	} allowed[] = {
	    {JOB_PACKING, JOB_FAILED},         {JOB_PACKING, JOB_CANCELLED},
	    {JOB_QUEUED, JOB_QUEUED},          {JOB_QUEUED, JOB_UPLOADING},
	    {JOB_QUEUED, JOB_BUILDING},        {JOB_QUEUED, JOB_FAILED},
	    {JOB_QUEUED, JOB_CANCELLED},       {JOB_UPLOADING, JOB_UPLOADING},
	    {JOB_QUEUED, JOB_ALIASING},        {JOB_QUEUED, JOB_SUCCEEDED},
	    {JOB_UPLOADING, JOB_BUILDING},     {JOB_UPLOADING, JOB_CANCELLING},
	    {JOB_UPLOADING, JOB_FAILED},       {JOB_UPLOADING, JOB_CANCELLED},
	    {JOB_BUILDING, JOB_PUSHING},       {JOB_BUILDING, JOB_REGISTERING},
	    {JOB_BUILDING, JOB_CANCELLING},    {JOB_BUILDING, JOB_FAILED},
	    {JOB_BUILDING, JOB_CANCELLED},     {JOB_PUSHING, JOB_BUILDING},
	    {JOB_PUSHING, JOB_REGISTERING},    {JOB_PUSHING, JOB_CANCELLING},
	    {JOB_PUSHING, JOB_FAILED},         {JOB_PUSHING, JOB_CANCELLED},
	    {JOB_REGISTERING, JOB_ALIASING},   {JOB_REGISTERING, JOB_SUCCEEDED},
	    {JOB_REGISTERING, JOB_CANCELLING}, {JOB_REGISTERING, JOB_FAILED},
	    {JOB_REGISTERING, JOB_CANCELLED},  {JOB_ALIASING, JOB_SUCCEEDED},
	    {JOB_ALIASING, JOB_FAILED},        {JOB_ALIASING, JOB_CANCELLED},
	    {JOB_CANCELLING, JOB_FAILED},      {JOB_CANCELLING, JOB_CANCELLED},
	};
	for (int a = 0; a < JOB_NSTATES; a++) {
		for (int b = 0; b < JOB_NSTATES; b++) {
			bool want = false;
			for (size_t i = 0; i < sizeof(allowed) / sizeof(allowed[0]); i++)
				want |= allowed[i].from == (enum job_state)a &&
				        allowed[i].to == (enum job_state)b;
			if (job_state_may_move((enum job_state)a, (enum job_state)b) != want)
				fail_msg("%s -> %s: table says %d",
				         job_state_name((enum job_state)a),
				         job_state_name((enum job_state)b), !want);
		}
		enum job_state back;
		assert_true(job_state_parse(job_state_name((enum job_state)a), &back));
		assert_int_equal(back, a);
	}
	/* Terminal states go nowhere. */
	for (int b = 0; b < JOB_NSTATES; b++) {
		assert_false(job_state_may_move(JOB_SUCCEEDED, (enum job_state)b));
		assert_false(job_state_may_move(JOB_FAILED, (enum job_state)b));
		assert_false(job_state_may_move(JOB_CANCELLED, (enum job_state)b));
	}
	enum job_state s;
	assert_false(job_state_parse("done", &s));
	assert_false(job_state_parse(NULL, &s));
	assert_true(job_state_is_terminal(JOB_CANCELLED));
	assert_false(job_state_is_terminal(JOB_CANCELLING));
}

/* --- the engine on a loop, a store and the simulator ------------------------------- */

struct fx {
	char dir[64];
	struct daemon d;
	struct fake_service *sim;
	/* the last submit's outcome */
	bool answered;
	enum jobs_submit_status status;
	char job_id[37];
	char *error;
};

static void fx_engine(struct fx *f)
{
	char *err = NULL;
	f->d.jobs = jobs_new(&f->d);
	if (jobs_start(f->d.jobs, &err) != 0)
		fail_msg("jobs_start: %s", err);
}

static int fx_setup_with(void **state, const char *faults, const char *config_extra)
{
	struct fx *f = xcalloc(1, sizeof(*f));
	char *err = NULL;
	f->sim = sim_start(KEY, faults);
	if (f->sim == NULL) {
		free(f);
		skip();
	}
	strcpy(f->dir, "/tmp/test-jobs-XXXXXX");
	assert_non_null(mkdtemp(f->dir));
	char *env[] = {NULL};
	f->d.config = config_new_defaults(env);
	char *state_dir = xasprintf("%s/state", f->dir), *tmp = xasprintf("%s/tmp", f->dir);
	assert_int_equal(mkdir(state_dir, 0700), 0);
	assert_int_equal(mkdir(tmp, 0700), 0);
	assert_int_equal(config_set(f->d.config, "state_dir", state_dir, "test", &err), 0);
	assert_int_equal(config_set(f->d.config, "tmp_dir", tmp, "test", &err), 0);
	assert_int_equal(config_set(f->d.config, "max_concurrent", "1", "test", &err), 0);
	if (config_extra != NULL) {
		char *copy = xstrdup(config_extra), *save = NULL;
		for (char *kv = strtok_r(copy, ";", &save); kv; kv = strtok_r(NULL, ";", &save)) {
			char *eq = strchr(kv, '=');
			*eq = '\0';
			if (config_set(f->d.config, kv, eq + 1, "test", &err) != 0)
				fail_msg("%s", err);
		}
		free(copy);
	}
	free(tmp);
	f->d.base = event_base_new();
	char *db = xasprintf("%s/snapbuild.db", state_dir);
	f->d.store = store_open(db, &err);
	if (f->d.store == NULL)
		fail_msg("store_open: %s", err);
	free(db);
	free(state_dir);
	f->d.http = http_new(f->d.base, &err);
	f->d.api = api_new(f->d.http, f->sim->base_url, f->sim->base_url, KEY);
	struct api_timing t;
	api_get_timing(f->d.api, &t);
	t.backoff_base_ms = 20;
	t.backoff_jitter_ms = 5;
	t.follow_retry_ms = 20;
	api_set_timing(f->d.api, &t);
	f->d.started_at = now_seconds();
	fx_engine(f);
	*state = f;
	return 0;
}

static int fx_setup(void **state)
{
	return fx_setup_with(state, NULL, NULL);
}

static int fx_teardown(void **state)
{
	struct fx *f = *state;
	jobs_free(f->d.jobs);
	api_free(f->d.api);
	http_free(f->d.http);
	store_close(f->d.store);
	event_base_free(f->d.base);
	config_free(f->d.config);
	fake_service_stop(f->sim);
	char *cmd = xasprintf("rm -rf '%s'", f->dir);
	assert_int_equal(system(cmd), 0);
	free(cmd);
	free(f->error);
	free(f);
	return 0;
}

static void fx_submit_cb(void *arg, const struct store_job *job, enum jobs_submit_status status,
                         const char *error, const char *hint)
{
	(void)hint;
	struct fx *f = arg;
	f->answered = true;
	f->status = status;
	free(f->error);
	f->error = error ? xstrdup(error) : NULL;
	if (job)
		memcpy(f->job_id, job->id, sizeof(f->job_id));
}

/* An image job (the daemon writes its context itself): its id once queued. */
static const char *fx_submit(struct fx *f, const char *alias)
{
	struct job_request req = {
	    .archive_fd = -1,
	    .image = "docker.io/library/alpine:3.20",
	    .dockerfile = "Dockerfile",
	    .alias = alias,
	    .backend = "remote",
	    .architecture = "amd64",
	};
	f->answered = false;
	jobs_submit(f->d.jobs, &req, getuid(), getgid(), fx_submit_cb, f);
	assert_true(test_loop_until(f->d.base, &f->answered, 30));
	if (f->status != JOBS_SUBMIT_OK)
		fail_msg("submit: %s", f->error);
	return f->job_id;
}

static char *fx_state(struct fx *f, const char *id)
{
	struct store_job *j = NULL;
	assert_int_equal(jobs_get(f->d.jobs, id, &j, NULL), 0);
	char *s = xstrdup(j->state);
	store_job_free(j);
	return s;
}

struct fx_wait {
	struct fx *f;
	const char *id;
	const char *const *states;
	bool done;
	struct event *ev;
};

static void fx_wait_cb(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	struct fx_wait *w = arg;
	char *s = fx_state(w->f, w->id);
	for (size_t i = 0; w->states[i]; i++)
		w->done |= strcmp(s, w->states[i]) == 0;
	free(s);
	if (!w->done) {
		struct timeval tv = {0, 5000};
		event_add(w->ev, &tv);
	}
}

/* Runs the loop until the job is in one of states. */
static void fx_wait(struct fx *f, const char *id, const char *const *states)
{
	struct fx_wait w = {f, id, states, false, NULL};
	w.ev = evtimer_new(f->d.base, fx_wait_cb, &w);
	fx_wait_cb(-1, 0, &w);
	bool ok = test_loop_until(f->d.base, &w.done, 60);
	event_free(w.ev);
	if (!ok) {
		char *s = fx_state(f, id);
		fail_msg("job %s stayed %s", id, s);
	}
}

#define STATES(...) ((const char *const[]){__VA_ARGS__, NULL})

static void test_build_to_success(void **state)
{
	struct fx *f = *state;
	char id[37];
	strcpy(id, fx_submit(f, NULL));
	fx_wait(f, id, STATES("succeeded", "failed", "cancelled"));
	struct store_job *j = NULL;
	assert_int_equal(jobs_get(f->d.jobs, id, &j, NULL), 0);
	assert_string_equal(j->state, "succeeded");
	assert_non_null(j->snapshot_id);
	assert_non_null(j->build_id);
	store_job_free(j);
	/* Every state change is an event, in the table's order. */
	struct store_event *ev = NULL;
	size_t n = 0;
	assert_int_equal(jobs_events_after(f->d.jobs, id, 0, 1000, &ev, &n, NULL), 0);
	char seen[256] = "";
	for (size_t i = 0; i < n; i++)
		if (strcmp(ev[i].kind, "state") == 0)
			snprintf(seen + strlen(seen), sizeof(seen) - strlen(seen), "%s ",
			         ev[i].text);
	store_event_array_free(ev, n);
	assert_string_equal(seen, "queued uploading building registering succeeded ");
}

static int fx_setup_held(void **state)
{
	return fx_setup_with(state, "{\"hold\": \"end\"}", NULL);
}

static void test_cancel_in_each_state(void **state)
{
	struct fx *f = *state;
	char first[37], second[37];
	char *err = NULL;
	/* One slot: the first builds (held by the builder), the second waits. */
	strcpy(first, fx_submit(f, NULL));
	fx_wait(f, first, STATES("building"));
	strcpy(second, fx_submit(f, NULL));
	char *s = fx_state(f, second);
	assert_string_equal(s, "queued");
	free(s);
	assert_int_equal(jobs_queue_position(f->d.jobs, second), 1);
	/* queued: at once. */
	assert_int_equal(jobs_cancel(f->d.jobs, second, &err), JOBS_CANCEL_OK);
	s = fx_state(f, second);
	assert_string_equal(s, "cancelled");
	free(s);
	assert_int_equal(jobs_queue_position(f->d.jobs, second), 0);
	/* building (remote): cancelling, then cancelled once the DELETE is answered. */
	assert_int_equal(jobs_cancel(f->d.jobs, first, &err), JOBS_CANCEL_OK);
	s = fx_state(f, first);
	assert_string_equal(s, "cancelling");
	free(s);
	fx_wait(f, first, STATES("cancelled"));
	/* finished: said so. */
	assert_int_equal(jobs_cancel(f->d.jobs, first, &err), JOBS_CANCEL_FINISHED);
	free(err);
}

static int fx_setup_slow(void **state)
{
	return fx_setup_with(state, "{\"latency_ms\": 300}", NULL);
}

static void test_cancel_while_uploading_waits_for_the_answer(void **state)
{
	struct fx *f = *state;
	char id[37], *err = NULL;
	strcpy(id, fx_submit(f, NULL));
	fx_wait(f, id, STATES("uploading"));
	assert_int_equal(jobs_cancel(f->d.jobs, id, &err), JOBS_CANCEL_OK);
	char *s = fx_state(f, id);
	assert_string_equal(s, "cancelling");
	free(s);
	fx_wait(f, id, STATES("cancelled"));
	struct store_job *j = NULL;
	assert_int_equal(jobs_get(f->d.jobs, id, &j, NULL), 0);
	/* The build the submit made was recorded, so its DELETE could be sent. */
	assert_non_null(j->build_id);
	assert_true(j->cancel_requested);
	store_job_free(j);
}

static void test_queued_job_survives_a_stop(void **state)
{
	struct fx *f = *state;
	char id[37];
	strcpy(id, fx_submit(f, NULL));
	/* Stop before the scheduler ran: the job is only in the store, queued. */
	jobs_free(f->d.jobs);
	fx_engine(f);
	fx_wait(f, id, STATES("succeeded", "failed"));
	char *s = fx_state(f, id);
	assert_string_equal(s, "succeeded");
	free(s);
}

static void test_storage_failure_fails_the_job(void **state)
{
	struct fx *f = *state;
	char id[37];
	strcpy(id, fx_submit(f, NULL));
	/* Now the database is full: the next write fails the job from its own event, once;
	 * nothing retries, nothing spins, the engine lets go of it. */
	store_set_max_page_count(f->d.store, 1);
	bool never = false;
	test_loop_until(f->d.base, &never, 1.0);
	assert_true(jobs_idle(f->d.jobs));
	/* What could not be written was not lost: with room again, a restart finds the job
	 * as last recorded and builds it. */
	store_set_max_page_count(f->d.store, 1 << 20);
	jobs_free(f->d.jobs);
	fx_engine(f);
	fx_wait(f, id, STATES("succeeded", "failed"));
	char *s = fx_state(f, id);
	assert_string_equal(s, "succeeded");
	free(s);
}

static void test_no_worker_thread_fails_the_submit(void **state)
{
	struct fx *f = *state;
	struct rlimit old, low;
	int filler[4096];
	size_t nfill = 0;
	/* Out of descriptors: the intake's worker cannot start.  The submit must be
	 * answered with an error at once (it once waited forever), and nothing is left
	 * that a stop would wait for. */
	assert_int_equal(getrlimit(RLIMIT_NOFILE, &old), 0);
	low = old;
	low.rlim_cur = 256;
	assert_int_equal(setrlimit(RLIMIT_NOFILE, &low), 0);
	for (int fd; nfill < 4096 && (fd = open("/dev/null", O_RDONLY | O_CLOEXEC)) >= 0;)
		filler[nfill++] = fd;
	assert_int_equal(errno, EMFILE);
	struct job_request req = {
	    .archive_fd = -1,
	    .image = "docker.io/library/alpine:3.20",
	    .dockerfile = "Dockerfile",
	    .backend = "remote",
	    .architecture = "amd64",
	};
	f->answered = false;
	struct jobs_intake *in = jobs_submit(f->d.jobs, &req, getuid(), getgid(), fx_submit_cb, f);
	while (nfill > 0)
		close(filler[--nfill]);
	assert_int_equal(setrlimit(RLIMIT_NOFILE, &old), 0);
	assert_null(in);
	assert_true(f->answered);
	assert_int_equal(f->status, JOBS_SUBMIT_ERROR);
	assert_non_null(strstr(f->error, "cannot start a thread"));
	assert_true(jobs_idle(f->d.jobs));
	/* And the engine still takes the next one. */
	char id[37];
	strcpy(id, fx_submit(f, NULL));
	fx_wait(f, id, STATES("succeeded", "failed"));
}

static void test_illegal_move_stops_the_daemon(void **state)
{
	struct fx *f = *state;
	pid_t pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		/* queued -> registering skips the build: a bug, not bad input. */
		struct store_job *rec = xcalloc(1, sizeof(*rec));
		strcpy(rec->id, "00000000-0000-4000-8000-000000000000");
		rec->state = xstrdup("queued");
		rec->backend = xstrdup("remote");
		struct job *j = job_new(f->d.jobs, rec, JOB_QUEUED);
		job_set_state(j, JOB_REGISTERING);
		_exit(0); /* not reached when the table holds */
	}
	int st = 0;
	assert_int_equal(waitpid(pid, &st, 0), pid);
	assert_true(WIFEXITED(st));
	assert_int_not_equal(WEXITSTATUS(st), 0);
}

int main(void)
{
	worker_init();
	log_init(LOG_LEVEL_ERROR);
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_state_table),
	    cmocka_unit_test_setup_teardown(test_build_to_success, fx_setup, fx_teardown),
	    cmocka_unit_test_setup_teardown(test_cancel_in_each_state, fx_setup_held, fx_teardown),
	    cmocka_unit_test_setup_teardown(test_cancel_while_uploading_waits_for_the_answer,
	                                    fx_setup_slow, fx_teardown),
	    cmocka_unit_test_setup_teardown(test_queued_job_survives_a_stop, fx_setup, fx_teardown),
	    cmocka_unit_test_setup_teardown(test_storage_failure_fails_the_job, fx_setup,
	                                    fx_teardown),
	    cmocka_unit_test_setup_teardown(test_no_worker_thread_fails_the_submit, fx_setup,
	                                    fx_teardown),
	    cmocka_unit_test_setup_teardown(test_illegal_move_stops_the_daemon, fx_setup,
	                                    fx_teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
