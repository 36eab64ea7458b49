/*
 * The job engine: lifecycle, the fair scheduler, the public interface and recovery.
 * A job is a record in the store plus, while it is active, a `struct job` (job.h)
 * holding what only lives in memory.  Events and watchers are job-events.c's, the
 * backends job-remote.c's and job-local.c's, registration job-register.c's, the
 * spool spool.c's.
 *
 * job_set_state() is the one place a job changes state: it checks the move against
 * the table (job-state.h) and writes the state together with the events not yet
 * flushed in one transaction, before the caller starts the side effect the state
 * announces.  Jobs are freed only by a collector running from the loop, never under a
 * caller.  Recovery (jobs_start) resumes each unfinished job by the rule for its state
 * in DESIGN.md.
 *
 * The queue is fair across users: when a slot frees, the next job is taken from the
 * user whose last job started longest ago (round robin), first in first out within a
 * user; queue_position is computed from that same rule.
 */
#include "jobs.h"

#include <errno.h>
#include <fcntl.h>
#include <json-c/json.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <event2/event.h>

#include "api.h"
#include "config.h"
#include "daemon.h"
#include "intake.h"
#include "job.h"
#include "localbuild.h"
#include "log.h"
#include "metrics.h"
#include "util.h"
#include "worker.h"

#define RETENTION_INTERVAL 3600

/* One archive being taken in on a worker thread (intake.h), before any job exists. */
struct jobs_intake {
	TAILQ_ENTRY(jobs_intake) entry;
	struct jobs *js;
	struct store_job *rec; /* the job to create once the archive is held */
	int fd;                /* the client's archive, or -1 for an image job */
	char *sha256;
	struct intake_options opts;
	struct intake_result result;
	volatile int cancel;
	struct job_reuse *reuse; /* looking for an earlier build to reuse (job-reuse.c) */
	jobs_submit_cb cb;       /* called once, when the intake has ended */
	void *arg;
};

/* When a user's last job started (jobs->starts), for the round robin. */
struct jobs_turn {
	int64_t uid;
	uint64_t last;
};

static void jobs_schedule_soon(struct jobs *js);
static void jobs_gc_cb(evutil_socket_t fd, short what, void *arg);
static void jobs_intake_free(struct jobs_intake *in);
static void jobs_reuse_cb(void *arg, const struct store_job *earlier);

/* --- the fair scheduler ------------------------------------------------------------- */

static struct jobs_turn *jobs_turn(struct jobs *js, int64_t uid)
{
	for (size_t i = 0; i < js->nturns; i++)
		if (js->turns[i].uid == uid)
			return &js->turns[i];
	js->turns = xrealloc(js->turns, (js->nturns + 1) * sizeof(*js->turns));
	js->turns[js->nturns] = (struct jobs_turn){.uid = uid};
	return &js->turns[js->nturns++];
}

/*
 * Of the jobs cand[0..n) (in arrival order), the one to start next by the turns given
 * (js->turns, or a copy being played forward): the user whose last job started longest
 * ago goes first, and within a user the earliest arrival.
 */
static size_t jobs_pick(struct jobs *js, const struct jobs_turn *turns, struct job *const *cand,
                        size_t n)
{
	size_t best = 0;
	for (size_t i = 1; i < n; i++)
		if (turns[jobs_turn(js, cand[i]->rec->uid) - js->turns].last <
		    turns[jobs_turn(js, cand[best]->rec->uid) - js->turns].last)
			best = i;
	return best;
}

/* The queued jobs in arrival order (to free); *n how many. */
static struct job **jobs_queued(struct jobs *js, size_t *n)
{
	struct job *j, **v;
	*n = 0;
	TAILQ_FOREACH(j, &js->queue, qentry)
	(*n)++;
	v = xcalloc(*n + 1, sizeof(*v));
	*n = 0;
	TAILQ_FOREACH(j, &js->queue, qentry)
	v[(*n)++] = j;
	return v;
}

static void job_enqueue(struct job *j)
{
	j->queued = true;
	jobs_turn(j->js, j->rec->uid);
	TAILQ_INSERT_TAIL(&j->js->queue, j, qentry);
	jobs_schedule_soon(j->js);
}

static void job_take_slot(struct job *j)
{
	if (!j->running) {
		j->running = true;
		j->js->nrunning++;
	}
}

static void jobs_sched_cb(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	struct jobs *js = arg;
	int max = js->d->config->max_concurrent;
	while (!js->stopping && js->nrunning < max && !TAILQ_EMPTY(&js->queue)) {
		size_t n;
		struct job **queued = jobs_queued(js, &n);
		struct job *j = queued[jobs_pick(js, js->turns, queued, n)];
		free(queued);
		TAILQ_REMOVE(&js->queue, j, qentry);
		j->queued = false;
		jobs_turn(js, j->rec->uid)->last = ++js->starts;
		job_take_slot(j);
		j->backend->start(j);
	}
	daemon_status_update(js->d);
}

static void jobs_schedule_soon(struct jobs *js)
{
	event_active(js->sched_ev, 0, 0);
}

int64_t jobs_queue_position(struct jobs *js, const char *id)
{
	/* Play the scheduler forward on a copy of the turns. */
	size_t n;
	struct job **left = jobs_queued(js, &n);
	struct jobs_turn *turns = xcalloc(js->nturns + 1, sizeof(*turns));
	memcpy(turns, js->turns, js->nturns * sizeof(*turns));
	uint64_t clock = js->starts;
	int64_t pos = 0;
	for (int64_t k = 1; n > 0 && pos == 0; k++) {
		size_t best = jobs_pick(js, turns, left, n);
		turns[jobs_turn(js, left[best]->rec->uid) - js->turns].last = ++clock;
		if (strcmp(left[best]->rec->id, id) == 0)
			pos = k;
		memmove(&left[best], &left[best + 1], (n - best - 1) * sizeof(*left));
		n--;
	}
	free(turns);
	free(left);
	return pos;
}

/* --- recovery and retention ------------------------------------------------------- */

static void recover(struct jobs *js, struct store_job *rec)
{
	enum job_state s;
	if (!job_state_parse(rec->state, &s) || job_state_is_terminal(s)) {
		struct job *j = job_new(js, rec, JOB_QUEUED);
		job_finish(j, JOB_FAILED, "unknown job state in the database", NULL);
		return;
	}
	struct job *j = job_new(js, rec, s);
	int64_t bytes = 0;
	if (store_job_log_bytes(js->d->store, rec->id, &bytes, NULL) == 0)
		j->log_bytes = bytes;
	/* No event here: a follower that saw lines the crash kept from the store gets
	 * them again under the same sequence numbers only if nothing is inserted first. */
	log_job(LOG_LEVEL_INFO, &(struct log_job){rec->id, rec->state, (long long)rec->uid},
	        "job %s: recovering from state %s", rec->id, rec->state);
	if (s == JOB_PACKING) {
		/* Only an older daemon, which packed contexts itself, left jobs in this state. */
		job_fail(j, "the daemon stopped while packing this job's context",
		         "submit the job again");
		return;
	}
	if (s == JOB_QUEUED && rec->reused_from != NULL && rec->snapshot_id != NULL) {
		/* A reused build stopped before its alias: nothing to build. */
		job_register_resume(j);
		return;
	}
	bool registration = s == JOB_REGISTERING || s == JOB_ALIASING ||
	                    (s == JOB_CANCELLING && rec->image_ref != NULL);
	bool needs_spool =
	    !registration && s != JOB_CANCELLING &&
	    !(s == JOB_BUILDING && j->backend == &job_backend_remote && rec->build_id);
	if (needs_spool && !spool_exists(js, rec->spool_digest)) {
		job_fail(j, "the packed context can no longer be read from the spool",
		         "submit the job again from its context");
		return;
	}
	if (s == JOB_QUEUED) {
		job_enqueue(j);
		return;
	}
	job_take_slot(j);
	if (registration)
		job_register_resume(j);
	else
		j->backend->resume(j);
}

/* Events of jobs that ended longer ago than event_retention_days go (records stay). */
static void jobs_retention_cb(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	struct jobs *js = arg;
	int days = js->d->config->event_retention_days;
	int64_t deleted = 0;
	char *err = NULL;
	if (days > 0) {
		if (store_events_prune(js->d->store, now_seconds() - days * 86400.0, &deleted,
		                       &err) != 0)
			log_warnx("deleting old events failed: %s", err);
		else if (deleted > 0)
			log_info("deleted %lld events of jobs that ended more than %d days ago",
			         (long long)deleted, days);
		free(err);
	}
	struct timeval tv = {RETENTION_INTERVAL, 0};
	evtimer_add(js->retention_ev, &tv);
}

/* --- public interface ------------------------------------------------------------- */

struct jobs *jobs_new(struct daemon *d)
{
	struct jobs *js = xcalloc(1, sizeof(*js));
	js->d = d;
	TAILQ_INIT(&js->active);
	TAILQ_INIT(&js->queue);
	TAILQ_INIT(&js->dead);
	TAILQ_INIT(&js->intakes);
	js->sched_ev = event_new(d->base, -1, 0, jobs_sched_cb, js);
	js->gc_ev = event_new(d->base, -1, 0, jobs_gc_cb, js);
	js->spool_dir = xasprintf("%s/spool", d->config->state_dir);
	js->tmp_root = xstrdup(d->config->tmp_dir);
	return js;
}

int jobs_start(struct jobs *js, char **err)
{
	if (mkdir(js->spool_dir, 0700) != 0 && errno != EEXIST) {
		*err = xasprintf("cannot create %s: %s", js->spool_dir, strerror(errno));
		return -1;
	}
	spool_tmp_gc(js);
	char *eerr = NULL;
	js->have_engine =
	    engine_detect(js->d->config->local_engine, getenv("PATH"), &js->engine, &eerr) == 0;
	js->engine_error = eerr;
	if (js->have_engine)
		log_info("local builds: %s", engine_name(js->engine));
	else
		log_info("local builds unavailable: %s", eerr);

	struct store_job **recs = NULL;
	size_t n = 0;
	if (store_jobs_unfinished(js->d->store, &recs, &n, err) != 0)
		return -1;
	spool_gc(js, true);
	for (size_t i = 0; i < n; i++)
		recover(js, recs[i]);
	free(recs);
	jobs_schedule_soon(js);
	js->retention_ev = evtimer_new(js->d->base, jobs_retention_cb, js);
	jobs_retention_cb(-1, 0, js);
	return 0;
}

void jobs_free(struct jobs *js)
{
	if (js == NULL)
		return;
	js->stopping = true;
	struct job *j;
	while ((j = TAILQ_FIRST(&js->active))) {
		job_stop(j);
		if (j->npending)
			job_flush(j, NULL);
		job_end_watches(j);
		if (j->queued)
			TAILQ_REMOVE(&js->queue, j, qentry);
		TAILQ_REMOVE(&js->active, j, entry);
		TAILQ_INSERT_TAIL(&js->dead, j, entry);
	}
	job_collect(js);
	/* Intake threads poll their cancel flag; let them hand back before the loop goes. */
	struct jobs_intake *in, *next;
	TAILQ_FOREACH(in, &js->intakes, entry)
	in->cancel = 1;
	/* A reuse check waits on the API, not on a thread: stop it now. */
	for (in = TAILQ_FIRST(&js->intakes); in != NULL; in = next) {
		next = TAILQ_NEXT(in, entry);
		if (in->reuse == NULL)
			continue;
		job_reuse_cancel(in->reuse);
		in->reuse = NULL;
		TAILQ_REMOVE(&js->intakes, in, entry);
		in->cb(in->arg, NULL, JOBS_SUBMIT_ERROR, "the daemon is stopping",
		       "submit again once the daemon is back");
		jobs_intake_free(in);
	}
	while (!TAILQ_EMPTY(&js->intakes))
		event_base_loop(js->d->base, EVLOOP_ONCE);
	event_free(js->sched_ev);
	event_free(js->gc_ev);
	if (js->retention_ev)
		event_free(js->retention_ev);
	free(js->turns);
	free(js->spool_dir);
	free(js->tmp_root);
	free(js->engine_error);
	free(js);
}

bool jobs_idle(const struct jobs *js)
{
	return TAILQ_EMPTY(&js->active) && TAILQ_EMPTY(&js->intakes);
}

bool jobs_local_engine(const struct jobs *js, const char **name, const char **error)
{
	*name = js->have_engine ? engine_name(js->engine) : NULL;
	*error = js->engine_error;
	return js->have_engine;
}

static struct job *job_find(struct jobs *js, const char *id)
{
	struct job *j;
	TAILQ_FOREACH(j, &js->active, entry)
	{
		if (strcmp(j->rec->id, id) == 0)
			return j;
	}
	return NULL;
}

static struct store_job *record_new(uid_t uid, gid_t gid)
{
	struct store_job *r = xcalloc(1, sizeof(*r));
	uuid_v4(r->id);
	r->state = xstrdup(job_state_name(JOB_QUEUED));
	r->uid = uid;
	r->gid = gid;
	char a[37], b[37];
	uuid_v4(a);
	uuid_v4(b);
	r->image_name = xasprintf("image-%s:%s", a, b);
	r->created_at = r->updated_at = now_seconds();
	return r;
}

/* A new record for what req asks, queued; image jobs build FROM the image. */
static struct store_job *record_for(const struct job_request *req, uid_t uid, gid_t gid)
{
	struct store_job *r = record_new(uid, gid);
	r->backend = xstrdup(req->backend);
	r->architecture = xstrdup(req->architecture);
	r->context_desc = req->image ? xasprintf("image:%s", req->image)
	                             : xstrdup(req->context_desc ? req->context_desc : "");
	r->image = req->image ? xstrdup(req->image) : NULL;
	r->dockerfile = xstrdup(req->image ? "Dockerfile" : req->dockerfile);
	r->alias = req->alias ? xstrdup(req->alias) : NULL;
	r->tags_json = xstrdup(req->tags_json ? req->tags_json : "{}");
	r->build_args_json = xstrdup(req->build_args_json ? req->build_args_json : "{}");
	r->ttl = req->ttl;
	r->cache_key = req->cache_key ? xstrdup(req->cache_key) : NULL;
	return r;
}

/* Inserts the record (queued) and queues the job; the copy for the caller, or NULL. */
static struct store_job *jobs_insert(struct jobs *js, struct store_job *r, char **err)
{
	if (store_job_insert(js->d->store, r, err) != 0) {
		store_job_free(r);
		return NULL;
	}
	struct job *j = job_new(js, r, JOB_QUEUED);
	struct store_job *copy = store_job_dup(r);
	if (r->retry_of)
		job_log(j, NULL, "retry of job %s with its packed context (sha256 %.12s)",
		        r->retry_of, r->spool_digest);
	/* A failed write leaves the job failing (ended from the loop): not queued. */
	if (job_set_state(j, JOB_QUEUED))
		job_enqueue(j);
	daemon_status_update(js->d);
	return copy;
}

/* --- submit: the archive first, then the job ------------------------------------------ */

static void jobs_intake_work(void *arg)
{
	struct jobs_intake *in = arg;
	if (in->fd >= 0)
		intake_run(&in->opts, &in->result);
	else
		intake_image_context(in->opts.spool_dir, in->rec->image, &in->result);
}

static void jobs_intake_free(struct jobs_intake *in)
{
	job_reuse_cancel(in->reuse);
	if (in->fd >= 0)
		close(in->fd);
	store_job_free(in->rec);
	intake_result_clear(&in->result);
	free(in->sha256);
	free(in);
}

static struct store_job *jobs_create(struct jobs *js, struct store_job *r,
                                     const struct intake_result *res, char **err)
{
	job_set_str(&r->spool_digest, res->sha256);
	/* The record was made when the archive started coming in. */
	metrics_job_stage(METRICS_STAGE_INTAKE, now_seconds() - r->created_at);
	metrics_context_bytes(res->archive_bytes);
	r->spool_size = (int64_t)res->archive_bytes;
	r->file_count = (int64_t)res->file_count;
	log_job(LOG_LEVEL_INFO, &(struct log_job){r->id, r->state, (long long)r->uid},
	        "job %s submitted by uid %d (%s, %s)", r->id, (int)r->uid, r->backend,
	        r->context_desc);
	char *desc = xstrdup(r->context_desc), *id = xstrdup(r->id);
	struct store_job *copy = jobs_insert(js, r, err);
	struct job *j = copy ? job_find(js, id) : NULL;
	if (j != NULL) {
		json_object *data = json_object_new_object();
		json_object_object_add(data, "files",
		                       json_object_new_int64((int64_t)res->file_count));
		json_object_object_add(data, "bytes",
		                       json_object_new_int64((int64_t)res->total_bytes));
		json_object_object_add(data, "archive_bytes",
		                       json_object_new_int64((int64_t)res->archive_bytes));
		json_object_object_add(data, "sha256", json_object_new_string(res->sha256));
		/* The units of the upload bar that follows; exact counts are in data. */
		char *total = format_bytes(res->total_bytes),
		     *packed = format_bytes(res->archive_bytes);
		char *text = xasprintf("context %s: %llu file%s, %s → %s gzip'd (sha256 %.12s)",
		                       desc, (unsigned long long)res->file_count,
		                       res->file_count == 1 ? "" : "s", total, packed, res->sha256);
		job_emit(j, "log", "pack", text, data);
		free(text);
		free(total);
		free(packed);
	}
	free(desc);
	free(id);
	return copy;
}

static void jobs_intake_done_cb(void *arg)
{
	struct jobs_intake *in = arg;
	struct jobs *js = in->js;
	struct intake_result *res = &in->result;
	TAILQ_REMOVE(&js->intakes, in, entry);
	if (js->stopping || in->cancel) {
		/* An archive taken in all the same goes at the next spool collection. */
		in->cb(in->arg, NULL, JOBS_SUBMIT_ERROR,
		       js->stopping ? "the daemon is stopping" : "cancelled",
		       js->stopping ? "submit again once the daemon is back" : NULL);
		jobs_intake_free(in);
		return;
	}
	if (res->status != INTAKE_OK) {
		in->cb(in->arg, NULL,
		       res->status == INTAKE_INVALID ? JOBS_SUBMIT_INVALID : JOBS_SUBMIT_ERROR,
		       res->error ? res->error : "cancelled", res->hint);
		jobs_intake_free(in);
		return;
	}
	char *err = NULL;
	struct store_job *rec = in->rec, *job;
	in->rec = NULL;
	job = jobs_create(js, rec, res, &err);
	if (job == NULL)
		in->cb(in->arg, NULL, JOBS_SUBMIT_ERROR, err, NULL);
	else
		in->cb(in->arg, job, JOBS_SUBMIT_OK, NULL, NULL);
	store_job_free(job);
	free(err);
	jobs_intake_free(in);
}

/* Take the archive in on a worker thread; false when that cannot start (cb has run). */
static bool jobs_intake_start(struct jobs_intake *in)
{
	struct jobs *js = in->js;

	if (worker_run(js->d->base, jobs_intake_work, jobs_intake_done_cb, in) != NULL)
		return true;
	char *msg = xasprintf("cannot start a thread to take the context in: %s", strerror(errno));
	TAILQ_REMOVE(&js->intakes, in, entry);
	in->cb(in->arg, NULL, JOBS_SUBMIT_ERROR, msg,
	       "the daemon is short of threads or descriptors; try again, or raise its limits");
	free(msg);
	jobs_intake_free(in);
	return false;
}

/* A reused job: recorded, then straight to its alias (or done): nothing to build. */
static struct store_job *jobs_insert_reused(struct jobs *js, struct store_job *r, char **err)
{
	if (store_job_insert(js->d->store, r, err) != 0) {
		store_job_free(r);
		return NULL;
	}
	log_info("job %s submitted by uid %d reuses job %s (snapshot %s)", r->id, (int)r->uid,
	         r->reused_from, r->snapshot_id);
	struct job *j = job_new(js, r, JOB_QUEUED);
	if (job_set_state(j, JOB_QUEUED)) {
		job_reuse_announce(j);
		job_register_resume(j);
	}
	daemon_status_update(js->d);
	return store_job_dup(j->rec);
}

/* The answer of job_reuse_find: take the earlier build's snapshot, or take the archive in. */
static void jobs_reuse_cb(void *arg, const struct store_job *earlier)
{
	struct jobs_intake *in = arg;
	struct jobs *js = in->js;
	in->reuse = NULL;
	if (earlier == NULL && !js->stopping && !in->cancel) {
		jobs_intake_start(in);
		return;
	}
	TAILQ_REMOVE(&js->intakes, in, entry);
	if (js->stopping || in->cancel) {
		in->cb(in->arg, NULL, JOBS_SUBMIT_ERROR,
		       js->stopping ? "the daemon is stopping" : "cancelled",
		       js->stopping ? "submit again once the daemon is back" : NULL);
		jobs_intake_free(in);
		return;
	}
	char *err = NULL;
	struct store_job *rec = in->rec, *job;
	in->rec = NULL;
	job_reuse_take(rec, earlier);
	job = jobs_insert_reused(js, rec, &err);
	if (job == NULL)
		in->cb(in->arg, NULL, JOBS_SUBMIT_ERROR, err, NULL);
	else
		in->cb(in->arg, job, JOBS_SUBMIT_OK, NULL, NULL);
	store_job_free(job);
	free(err);
	jobs_intake_free(in);
}

/* A user's share: queued jobs (and archives being taken in), and spool bytes. */
static bool jobs_within_limits(struct jobs *js, uid_t uid, uint64_t more_bytes, char **why,
                               const char **hint)
{
	const struct config *cfg = js->d->config;
	int64_t queued = 0, spool = 0;
	struct job *j;
	struct jobs_intake *in;
	TAILQ_FOREACH(j, &js->queue, qentry)
	queued += j->rec->uid == (int64_t)uid;
	TAILQ_FOREACH(in, &js->intakes, entry)
	queued += in->rec != NULL && in->rec->uid == (int64_t)uid;
	if (queued >= cfg->max_queued_per_user) {
		*why = xasprintf("uid %u has %lld jobs queued, the most one user may have "
		                 "(max_queued_per_user = %d)",
		                 (unsigned)uid, (long long)queued, cfg->max_queued_per_user);
		*hint = "wait for some to start, or cancel some (snapbuild jobs; snapbuild cancel)";
		return false;
	}
	if (store_spool_bytes_of_uid(js->d->store, uid, &spool, NULL) == 0 &&
	    (uint64_t)spool + more_bytes > cfg->max_spool_bytes_per_user) {
		char *a = format_bytes((uint64_t)spool),
		     *b = format_bytes(cfg->max_spool_bytes_per_user);
		*why = xasprintf("uid %u already keeps %s of contexts in the daemon's spool; this "
		                 "one would pass the limit of %s (max_spool_bytes_per_user)",
		                 (unsigned)uid, a, b);
		*hint = "delete finished jobs you no longer need: snapbuild prune --older-than 1d";
		free(a);
		free(b);
		return false;
	}
	return true;
}

struct jobs_intake *jobs_submit(struct jobs *js, const struct job_request *req, uid_t uid,
                                gid_t gid, jobs_submit_cb cb, void *arg)
{
	char *why = NULL;
	const char *hint = NULL;
	if (!jobs_within_limits(js, uid, req->image ? 0 : req->archive_bytes, &why, &hint)) {
		if (req->archive_fd >= 0 && !req->image)
			close(req->archive_fd);
		cb(arg, NULL, JOBS_SUBMIT_BUSY, why, hint);
		free(why);
		return NULL;
	}
	struct jobs_intake *in = xcalloc(1, sizeof(*in));
	in->js = js;
	in->fd = req->image ? -1 : req->archive_fd;
	in->rec = record_for(req, uid, gid);
	if (in->rec->cache_key == NULL)
		in->rec->cache_key = job_reuse_default_cache_key(js->d->config, req, uid);
	in->rec->input_digest = job_reuse_digest(in->rec, req->archive_sha256);
	in->sha256 = xstrdup(req->archive_sha256 ? req->archive_sha256 : "");
	in->opts = (struct intake_options){
	    .fd = in->fd,
	    .spool_dir = js->spool_dir,
	    .dockerfile = in->rec->dockerfile,
	    .max_bytes = js->d->config->max_context_bytes,
	    .declared_bytes = req->archive_bytes,
	    .declared_sha256 = in->sha256,
	    .cancel = &in->cancel,
	};
	in->cb = cb;
	in->arg = arg;
	TAILQ_INSERT_TAIL(&js->intakes, in, entry);
	if (!req->no_cache) {
		in->reuse = job_reuse_find(js, in->rec, jobs_reuse_cb, in);
		if (in->reuse != NULL)
			return in;
	}
	return jobs_intake_start(in) ? in : NULL;
}

void jobs_submit_cancel(struct jobs_intake *in)
{
	in->cancel = 1;
}

int jobs_retry(struct jobs *js, const struct store_job *old, uid_t uid, gid_t gid,
               struct store_job **out, char **err)
{
	if (!spool_exists(js, old->spool_digest)) {
		*err = xstrdup("the packed context of that job is no longer in the spool");
		return -1;
	}
	const char *hint = NULL;
	if (!jobs_within_limits(js, uid, 0, err, &hint))
		return -1;
	/* The same request again, with the context already packed. */
	struct job_request req = {
	    .archive_fd = -1,
	    .context_desc = old->context_desc,
	    .image = old->image,
	    .dockerfile = old->dockerfile,
	    .alias = old->alias,
	    .tags_json = old->tags_json,
	    .build_args_json = old->build_args_json,
	    .ttl = old->ttl,
	    .cache_key = old->cache_key,
	    .backend = old->backend,
	    .architecture = old->architecture,
	};
	struct store_job *r = record_for(&req, uid, gid);
	r->spool_digest = xstrdup(old->spool_digest);
	r->spool_size = old->spool_size;
	r->file_count = old->file_count;
	r->retry_of = xstrdup(old->id);
	r->input_digest = job_reuse_digest(r, old->spool_digest);
	*out = jobs_insert(js, r, err);
	return *out ? 0 : -1;
}

enum jobs_cancel_result jobs_cancel(struct jobs *js, const char *id, char **err)
{
	struct job *j = job_find(js, id);
	if (j == NULL) {
		*err = xstrdup("the job has already finished");
		return JOBS_CANCEL_FINISHED;
	}
	if (j->state == JOB_CANCELLING)
		return JOBS_CANCEL_OK;
	log_job(LOG_LEVEL_INFO,
	        &(struct log_job){j->rec->id, j->rec->state, (long long)j->rec->uid},
	        "job %s: cancel requested in state %s", j->rec->id, job_state_name(j->state));
	j->rec->cancel_requested = 1;
	bool later = j->state == JOB_REGISTERING ? job_register_cancel(j)
	             : j->running                ? j->backend->cancel(j)
	                                         : false;
	if (!later)
		job_finish(j, JOB_CANCELLED, NULL, NULL);
	return JOBS_CANCEL_OK;
}

int jobs_get(struct jobs *js, const char *id_or_prefix, struct store_job **out, char **err)
{
	struct store_job *rec = NULL;
	int rc = store_job_get(js->d->store, id_or_prefix, &rec, err);
	if (rc != 0)
		return rc;
	struct job *j = job_find(js, rec->id);
	if (j) {
		store_job_free(rec);
		rec = store_job_dup(j->rec);
	}
	*out = rec;
	return 0;
}

static void jobs_gc_cb(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	job_collect(arg);
}

int jobs_events_after(struct jobs *js, const char *id, int64_t after_seq, int limit,
                      struct store_event **out, size_t *n, char **err)
{
	struct job *j = job_find(js, id);
	if (j && j->npending)
		job_flush(j, NULL);
	return store_events_after(js->d->store, id, after_seq, limit, out, n, err);
}

struct job_watch *jobs_watch(struct jobs *js, const char *id, const struct job_watch_cbs *cbs,
                             void *arg)
{
	struct job *j = job_find(js, id);
	return j ? job_watch_add(j, cbs, arg) : NULL;
}

void jobs_unwatch(struct job_watch *w)
{
	if (w != NULL)
		job_watch_remove(w);
}

int jobs_list(struct jobs *js, const struct store_job_filter *f, struct store_job ***out, size_t *n,
              char **err)
{
	return store_job_list(js->d->store, f, out, n, err);
}

struct jobs_counting {
	int64_t *counts;
	int64_t *total;
};

static void jobs_count_cb(void *arg, const char *state, int64_t n)
{
	struct jobs_counting *c = arg;
	enum job_state s;
	if (job_state_parse(state, &s))
		c->counts[s] += n;
	*c->total += n;
}

int jobs_counts(struct jobs *js, int64_t counts[JOB_NSTATES], int64_t *total, char **err)
{
	struct jobs_counting c = {counts, total};
	memset(counts, 0, JOB_NSTATES * sizeof(*counts));
	*total = 0;
	return store_job_counts(js->d->store, jobs_count_cb, &c, err);
}

int jobs_prune(struct jobs *js, int64_t uid, double before, int64_t *deleted, char **err)
{
	const char *terminal[] = {job_state_name(JOB_SUCCEEDED), job_state_name(JOB_FAILED),
	                          job_state_name(JOB_CANCELLED), NULL};
	struct store_job_filter f = {.uid = uid, .states = terminal};
	struct store_job **recs = NULL;
	size_t n = 0;
	*deleted = 0;
	if (store_job_list(js->d->store, &f, &recs, &n, err) != 0)
		return -1;
	int rc = 0;
	for (size_t i = 0; i < n && rc == 0; i++) {
		double t = recs[i]->finished_at ? recs[i]->finished_at : recs[i]->updated_at;
		if (before > 0 && t >= before)
			continue;
		rc = store_job_delete(js->d->store, recs[i]->id, err);
		if (rc == 0)
			(*deleted)++;
	}
	store_job_array_free(recs, n);
	spool_gc(js, false);
	return rc;
}

bool job_state_terminal(const char *state)
{
	enum job_state s;
	return job_state_parse(state, &s) && job_state_is_terminal(s);
}
