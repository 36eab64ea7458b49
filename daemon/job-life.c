/*
 * A job's lifecycle (job.h): loaded with its backend chosen once, moved between states
 * only by job_set_state (checked against the table in job-state.c, written before the
 * side effect), ended by job_finish, freed only by the collector from the loop.  A
 * failed write marks the job failing; its own event (fail_ev) ends it, apart from the
 * backend's retry timer, so neither can displace the other.
 */
#include <stdlib.h>
#include <string.h>

#include <event2/event.h>

#include "api.h"
#include "daemon.h"
#include "job.h"
#include "log.h"
#include "metrics.h"
#include "util.h"

static void job_storage_fail_cb(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	struct job *j = arg;
	if (j->dead)
		return;
	char *msg = xasprintf("storage error: %s", j->storage_error);
	job_finish(j, JOB_FAILED, msg,
	           "free space where the daemon keeps its state (snapbuild daemon info shows "
	           "state_dir), then retry the job");
	free(msg);
}

void job_set_str(char **dst, const char *src)
{
	free(*dst);
	*dst = src ? xstrdup(src) : NULL;
}

static const struct job_backend *job_backend_of(const char *name)
{
	return name != NULL && strcmp(name, job_backend_local.name) == 0 ? &job_backend_local
	                                                                 : &job_backend_remote;
}

struct job *job_new(struct jobs *js, struct store_job *rec, enum job_state state)
{
	struct job *j = xcalloc(1, sizeof(*j));
	j->js = js;
	j->rec = rec;
	j->state = state;
	j->backend = job_backend_of(rec->backend);
	j->fail_ev = event_new(js->d->base, -1, 0, job_storage_fail_cb, j);
	job_events_init(j);
	TAILQ_INSERT_TAIL(&js->active, j, entry);
	return j;
}

void job_stop(struct job *j)
{
	j->backend->stop(j);
	if (j->op) {
		api_op_cancel(j->op);
		j->op = NULL;
	}
	if (j->timer)
		evtimer_del(j->timer);
}

static void job_free(struct job *j)
{
	job_events_free(j);
	event_free(j->fail_ev);
	if (j->timer)
		event_free(j->timer);
	free(j->storage_error);
	store_job_free(j->rec);
	free(j);
}

void job_collect(struct jobs *js)
{
	struct job *j;
	while ((j = TAILQ_FIRST(&js->dead))) {
		TAILQ_REMOVE(&js->dead, j, entry);
		job_free(j);
	}
}

bool job_set_state(struct job *j, enum job_state to)
{
	if (!job_state_may_move(j->state, to))
		fatalx("job %s: illegal move from %s to %s (a bug)", j->rec->id,
		       job_state_name(j->state), job_state_name(to));
	if (j->storage_error)
		return false; /* failing already: its own event ends it */
	/* updated_at is when the job entered its current state. */
	int stage = metrics_stage_of_state(job_state_name(j->state));
	if (stage >= 0 && to != j->state)
		metrics_job_stage((enum metrics_stage)stage, now_seconds() - j->rec->updated_at);
	/* The job's story in the journal (journalctl SNAPBUILD_JOB=<id>); the end is
	 * logged by job_finish with its reason. */
	if (to != j->state && !job_state_is_terminal(to))
		log_job(LOG_LEVEL_INFO,
		        &(struct log_job){j->rec->id, job_state_name(to), (long long)j->rec->uid},
		        "job %s: %s -> %s", j->rec->id, job_state_name(j->state),
		        job_state_name(to));
	j->state = to;
	job_set_str(&j->rec->state, job_state_name(to));
	j->rec->updated_at = now_seconds();
	if (job_state_is_terminal(to))
		j->rec->finished_at = j->rec->updated_at;
	if (to == JOB_CANCELLING)
		j->rec->cancel_requested = 1;
	json_object *data = json_object_new_object();
	json_object_object_add(data, "state", json_object_new_string(job_state_name(to)));
	job_emit(j, "state", NULL, job_state_name(to), data);
	int rc = job_flush(j, NULL);
	event_active(j->js->sched_ev, 0, 0); /* a slot may have freed */
	return rc == 0;
}

void job_finish(struct job *j, enum job_state end, const char *error, const char *hint)
{
	struct jobs *js = j->js;
	if (j->dead)
		return;
	job_stop(j);
	if (error) {
		job_set_str(&j->rec->error, error);
		job_set_str(&j->rec->error_hint, hint);
		job_emit(j, "log", NULL, error, NULL);
	}
	if (j->lines_dropped > 0) {
		char *note = xasprintf("%lld lines past the log limit were counted, not kept",
		                       (long long)j->lines_dropped);
		job_warn(j, NULL, note);
		free(note);
	}
	/* A failed write of the outcome: keep at least the record's terminal state. */
	free(j->storage_error);
	j->storage_error = NULL;
	if (!job_set_state(j, end)) {
		char *e = NULL;
		if (store_job_save(js->d->store, j->rec, &e) != 0)
			log_job(
			    LOG_LEVEL_WARN,
			    &(struct log_job){j->rec->id, j->rec->state, (long long)j->rec->uid},
			    "job %s: cannot record that it %s: %s", j->rec->id, job_state_name(end),
			    e);
		free(e);
	}
	metrics_job_finished(j->backend->name, job_state_name(end));
	struct log_job lj = {j->rec->id, job_state_name(end), (long long)j->rec->uid};
	if (end == JOB_SUCCEEDED)
		log_job(LOG_LEVEL_INFO, &lj, "job %s succeeded: snapshot %s", j->rec->id,
		        j->rec->snapshot_id);
	else
		log_job(LOG_LEVEL_INFO, &lj, "job %s %s%s%s", j->rec->id, job_state_name(end),
		        error ? ": " : "", error ? error : "");
	job_end_watches(j);
	if (j->queued)
		TAILQ_REMOVE(&js->queue, j, qentry);
	j->queued = false;
	if (j->running)
		js->nrunning--;
	j->running = false;
	j->dead = true;
	TAILQ_REMOVE(&js->active, j, entry);
	TAILQ_INSERT_TAIL(&js->dead, j, entry);
	event_active(js->gc_ev, 0, 0);
	event_active(js->sched_ev, 0, 0);
	daemon_status_update(js->d);
}

void job_fail(struct job *j, const char *error, const char *hint)
{
	if (j->rec->cancel_requested)
		job_finish(j, JOB_CANCELLED, NULL, NULL);
	else
		job_finish(j, JOB_FAILED, error, hint);
}

void job_fail_api(struct job *j, const char *what, const struct api_error *e)
{
	char *msg = xasprintf("%s: %s", what, e && e->message ? e->message : "unknown error");
	job_fail(j, msg, e ? e->hint : NULL);
	free(msg);
}

static void job_timer_cb(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	struct job *j = arg;
	void (*fn)(struct job *) = j->timer_fn;
	j->timer_fn = NULL;
	if (fn && !j->dead)
		fn(j);
}

void job_after(struct job *j, double seconds, void (*fn)(struct job *j))
{
	if (j->timer == NULL)
		j->timer = evtimer_new(j->js->d->base, job_timer_cb, j);
	j->timer_fn = fn;
	struct timeval tv = {(time_t)seconds,
	                     (suseconds_t)((seconds - (double)(time_t)seconds) * 1e6)};
	evtimer_add(j->timer, &tv);
}
