/*
 * The job engine.  Every job is a record in the store plus, while it is active, a
 * `struct job` here holding what only lives in memory: the backend operation in
 * flight, events not yet written, watchers, timers.
 *
 * The flow of a job:
 *   [archive taken in on a worker thread] → queued → [scheduler] → remote: uploading → building
 *   (log followed over SSE) → registering → aliasing → succeeded
 *   local: building → pushing → registering → …
 * and from any active state cancelling → cancelled, or failed.
 *
 * job_set_state() is the one place a job changes state: it writes the state together
 * with the events not yet flushed in one transaction, before the caller starts the
 * side effect the state announces.  Recovery (jobs_start) resumes each unfinished job
 * by the rule for its state in DESIGN.md.
 */
#include "jobs.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <json-c/json.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/queue.h>
#include <sys/stat.h>
#include <unistd.h>

#include <event2/event.h>

#include "ansi.h"
#include "api.h"
#include "config.h"
#include "daemon.h"
#include "engine.h"
#include "localbuild.h"
#include "log.h"
#include "intake.h"
#include "util.h"
#include "worker.h"

#define FLUSH_DELAY_MS    100
#define FLUSH_MAX_PENDING 512
#define PROGRESS_INTERVAL 0.25
#define REGISTER_ATTEMPTS 4
#define DELETE_ATTEMPTS   5
/* Beyond this many events a job's log lines are dropped (state changes still count). */
#define MAX_EVENTS_PER_JOB 1000000
#define RETENTION_INTERVAL 3600

struct job;

struct job_watch {
	TAILQ_ENTRY(job_watch) entry;
	struct job *job;
	struct job_watch_cbs cbs;
	void *arg;
	bool gone; /* unwatched while events were being handed out: freed right after */
};

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
	jobs_submit_cb cb; /* called once, when the intake has ended */
	void *arg;
};

struct job {
	TAILQ_ENTRY(job) entry;  /* all active jobs */
	TAILQ_ENTRY(job) qentry; /* the FIFO queue, while queued */
	struct jobs *js;
	struct store_job *rec;
	bool queued;
	bool running; /* holds one of the max_concurrent slots */

	struct store_event *pending;
	size_t npending, cap;
	struct event *flush_ev;

	TAILQ_HEAD(, job_watch) watches;
	int emitting; /* inside the watchers' on_event calls */

	struct api_op *op;
	struct localbuild *lb;
	struct event *timer;
	void (*timer_fn)(struct job *j);
	int attempts;
	double last_progress;
	bool log_capped;         /* MAX_EVENTS_PER_JOB reached: further log lines dropped */
	char *storage_error;     /* a write failed: the job is being failed, events are dropped */
	char *registry_password; /* local builds: issued credentials, memory only */
	char *registry_username;
	char *registry_url;
};

struct jobs {
	struct daemon *d;
	TAILQ_HEAD(, job) active;
	TAILQ_HEAD(, job) queue;
	int nrunning;
	TAILQ_HEAD(, jobs_intake) intakes;
	struct event *sched_ev;
	struct event *retention_ev;
	char *spool_dir;
	char *tmp_root;
	bool have_engine;
	enum engine_kind engine;
	char *engine_error;
	bool stopping;
};

static const char *const terminal_states[] = {"succeeded", "failed", "cancelled", NULL};

bool job_state_terminal(const char *state)
{
	for (size_t i = 0; terminal_states[i]; i++)
		if (strcmp(state, terminal_states[i]) == 0)
			return true;
	return false;
}

static void remote_upload(struct job *j);
static void remote_follow(struct job *j);
static void remote_delete(struct job *j);
static void local_start(struct job *j);
static void register_start(struct job *j);
static void alias_start(struct job *j);
static void jobs_schedule_soon(struct jobs *js);

static char *spool_path(const struct jobs *js, const char *digest)
{
	return xasprintf("%s/%s.tar.gz", js->spool_dir, digest);
}

static bool spool_exists(const struct jobs *js, const char *digest)
{
	if (digest == NULL)
		return false;
	char *p = spool_path(js, digest);
	bool ok = access(p, R_OK) == 0;
	free(p);
	return ok;
}

/* --- events ----------------------------------------------------------------- */

static void event_clear(struct store_event *ev)
{
	free(ev->kind);
	free(ev->step);
	free(ev->text);
	free(ev->data_json);
	memset(ev, 0, sizeof(*ev));
}

static void job_drop_pending(struct job *j)
{
	for (size_t i = 0; i < j->npending; i++)
		event_clear(&j->pending[i]);
	j->npending = 0;
}

/* Writes the record with the pending events in one transaction. */
static void job_storage_fail(struct job *j);
static void job_after(struct job *j, double seconds, void (*fn)(struct job *j));

/*
 * Writes the record with the pending events in one transaction.  When that fails
 * (disk full, I/O error) the events are dropped, so memory stays bounded, and the
 * job is failed from the loop soon after: nothing retries the write line by line.
 */
static int job_flush(struct job *j, char **err)
{
	char *e = NULL;
	int rc = store_job_save_with_events(j->js->d->store, j->rec, j->pending, j->npending, &e);
	job_drop_pending(j);
	if (rc != 0) {
		log_warnx("job %s: cannot write to the database: %s", j->rec->id, e);
		if (j->storage_error == NULL) {
			j->storage_error = xstrdup(e);
			job_after(j, 0, job_storage_fail);
		}
	}
	if (err)
		*err = e;
	else
		free(e);
	return rc;
}

static void job_flush_cb(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	struct job *j = arg;
	if (j->npending)
		job_flush(j, NULL);
}

static void job_emit(struct job *j, const char *kind, const char *step, const char *text,
                     json_object *data)
{
	if (j->rec->last_seq >= MAX_EVENTS_PER_JOB && strcmp(kind, "state") != 0) {
		json_object_put(data);
		if (j->log_capped)
			return;
		/* One marker, then silence: the database stays bounded whatever the build prints.
		 */
		j->log_capped = true;
		kind = "warning";
		text = "the log has more than a million events; further lines are not kept";
		data = NULL;
	}
	if (j->npending == j->cap) {
		j->cap = j->cap ? j->cap * 2 : 16;
		j->pending = xrealloc(j->pending, j->cap * sizeof(*j->pending));
	}
	struct store_event *ev = &j->pending[j->npending++];
	memset(ev, 0, sizeof(*ev));
	ev->seq = ++j->rec->last_seq;
	ev->time = now_seconds();
	ev->kind = xstrdup(kind);
	ev->step = step ? xstrdup(step) : NULL;
	ev->text = xstrdup(text ? text : "");
	ev->data_json =
	    data ? xstrdup(json_object_to_json_string_ext(data, JSON_C_TO_STRING_PLAIN)) : NULL;
	json_object_put(data);

	/* A watcher may remove itself from inside its callback. */
	/*
	 * A callback may unwatch itself or, when a dropped connection closes several
	 * follows at once, others: those are only marked while the list is walked.
	 */
	j->emitting++;
	struct job_watch *w;
	TAILQ_FOREACH(w, &j->watches, entry)
	{
		if (!w->gone)
			w->cbs.on_event(w->arg, j->rec->id, ev);
	}
	if (--j->emitting == 0) {
		struct job_watch *next;
		for (w = TAILQ_FIRST(&j->watches); w; w = next) {
			next = TAILQ_NEXT(w, entry);
			if (w->gone) {
				TAILQ_REMOVE(&j->watches, w, entry);
				free(w);
			}
		}
	}

	if (j->storage_error) {
		if (j->npending >= FLUSH_MAX_PENDING)
			job_drop_pending(j); /* the job is failing: keep memory bounded */
	} else if (j->npending >= FLUSH_MAX_PENDING) {
		job_flush(j, NULL);
	} else if (!evtimer_pending(j->flush_ev, NULL)) {
		struct timeval tv = {0, FLUSH_DELAY_MS * 1000};
		evtimer_add(j->flush_ev, &tv);
	}
}

static void job_log(struct job *j, const char *step, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void job_log(struct job *j, const char *step, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	char *text = xvasprintf(fmt, ap);
	va_end(ap);
	job_emit(j, "log", step, text, NULL);
	free(text);
}

static void job_warn(struct job *j, const char *step, const char *text)
{
	job_emit(j, "warning", step, text, NULL);
}

/* --- lifecycle ---------------------------------------------------------------- */

static struct job *job_new(struct jobs *js, struct store_job *rec)
{
	struct job *j = xcalloc(1, sizeof(*j));
	j->js = js;
	j->rec = rec;
	TAILQ_INIT(&j->watches);
	j->flush_ev = evtimer_new(js->d->base, job_flush_cb, j);
	TAILQ_INSERT_TAIL(&js->active, j, entry);
	return j;
}

static void job_stop_backend(struct job *j)
{
	if (j->op) {
		api_op_cancel(j->op);
		j->op = NULL;
	}
	if (j->timer)
		evtimer_del(j->timer);
	if (j->lb) {
		localbuild_free(j->lb);
		j->lb = NULL;
	}
}

static void job_free(struct job *j)
{
	struct jobs *js = j->js;
	job_stop_backend(j);
	if (j->queued)
		TAILQ_REMOVE(&js->queue, j, qentry);
	if (j->running)
		js->nrunning--;
	TAILQ_REMOVE(&js->active, j, entry);
	job_drop_pending(j);
	free(j->pending);
	event_free(j->flush_ev);
	if (j->timer)
		event_free(j->timer);
	struct job_watch *w;
	while ((w = TAILQ_FIRST(&j->watches))) {
		TAILQ_REMOVE(&j->watches, w, entry);
		free(w);
	}
	free(j->storage_error);
	free(j->registry_password);
	free(j->registry_username);
	free(j->registry_url);
	store_job_free(j->rec);
	free(j);
}

static void set_str(char **dst, const char *src)
{
	free(*dst);
	*dst = src ? xstrdup(src) : NULL;
}

/*
 * The one function that moves a job between states.  The new state and every event
 * so far are written in one transaction before the caller acts on it.  Returns -1
 * when the write failed; the job has then been failed (and freed) here.
 */
static int job_finish(struct job *j, const char *state, const char *error, const char *hint);

static int job_set_state(struct job *j, const char *state)
{
	set_str(&j->rec->state, state);
	j->rec->updated_at = now_seconds();
	if (job_state_terminal(state))
		j->rec->finished_at = j->rec->updated_at;
	json_object *data = json_object_new_object();
	json_object_object_add(data, "state", json_object_new_string(state));
	job_emit(j, "state", NULL, state, data);
	char *err = NULL;
	if (job_flush(j, &err) != 0) {
		if (job_state_terminal(state)) {
			/* The events could not be stored with it: keep at least the outcome. */
			char *e2 = NULL;
			if (store_job_save(j->js->d->store, j->rec, &e2) != 0)
				log_warnx("job %s: cannot record that it %s: %s", j->rec->id, state,
				          e2);
			free(e2);
			free(err);
			jobs_schedule_soon(j->js);
			return -1;
		}
		free(err);
		job_storage_fail(j);
		return -1;
	}
	jobs_schedule_soon(j->js);
	return 0;
}

static void job_storage_fail(struct job *j)
{
	char *msg = xasprintf("storage error: %s", j->storage_error);
	job_finish(j, "failed", msg,
	           "free space where the daemon keeps its state (snapbuild daemon info shows "
	           "state_dir), then retry the job");
	free(msg);
}

/* Tells every watcher the job has ended and lets go of them. */
static void job_end_watches(struct job *j)
{
	struct job_watch *w;
	while ((w = TAILQ_FIRST(&j->watches))) {
		TAILQ_REMOVE(&j->watches, w, entry);
		if (!w->gone)
			w->cbs.on_end(w->arg, j->rec);
		free(w);
	}
}

/* Ends a job: terminal state written, watchers told, memory released. */
static int job_finish(struct job *j, const char *state, const char *error, const char *hint)
{
	job_stop_backend(j);
	if (error) {
		set_str(&j->rec->error, error);
		set_str(&j->rec->error_hint, hint);
		job_emit(j, "log", NULL, error, NULL);
	}
	int rc = job_set_state(j, state);
	if (strcmp(state, "succeeded") == 0)
		log_info("job %s succeeded: snapshot %s", j->rec->id, j->rec->snapshot_id);
	else
		log_info("job %s %s%s%s", j->rec->id, state, error ? ": " : "", error ? error : "");
	job_end_watches(j);
	job_free(j);
	return rc;
}

static void job_fail(struct job *j, const char *error, const char *hint)
{
	if (j->rec->cancel_requested) {
		job_finish(j, "cancelled", NULL, NULL);
		return;
	}
	job_finish(j, "failed", error, hint);
}

static void job_fail_api(struct job *j, const char *what, const struct api_error *e)
{
	char *msg = xasprintf("%s: %s", what, e->message ? e->message : "unknown error");
	job_fail(j, msg, e->hint);
	free(msg);
}

static void job_timer_cb(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	struct job *j = arg;
	void (*fn)(struct job *) = j->timer_fn;
	j->timer_fn = NULL;
	if (fn)
		fn(j);
}

static void job_after(struct job *j, double seconds, void (*fn)(struct job *j))
{
	if (j->timer == NULL)
		j->timer = evtimer_new(j->js->d->base, job_timer_cb, j);
	j->timer_fn = fn;
	struct timeval tv = {(time_t)seconds,
	                     (suseconds_t)((seconds - (double)(time_t)seconds) * 1e6)};
	evtimer_add(j->timer, &tv);
}

/* --- scheduling ----------------------------------------------------------------- */

static void job_enqueue(struct job *j)
{
	j->queued = true;
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

static void job_run(struct job *j)
{
	job_take_slot(j);
	if (strcmp(j->rec->backend, "local") == 0)
		local_start(j);
	else
		remote_upload(j);
}

static void jobs_sched_cb(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	struct jobs *js = arg;
	int max = js->d->config->max_concurrent;
	struct job *j;
	while (!js->stopping && js->nrunning < max && (j = TAILQ_FIRST(&js->queue))) {
		TAILQ_REMOVE(&js->queue, j, qentry);
		j->queued = false;
		job_run(j);
	}
	daemon_status_update(js->d);
}

static void jobs_schedule_soon(struct jobs *js)
{
	event_active(js->sched_ev, 0, 0);
}

static void rm_tree_at(int dfd, const char *name)
{
	int fd = openat(dfd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	if (fd >= 0) {
		DIR *dir = fdopendir(fd);
		if (dir) {
			struct dirent *de;
			while ((de = readdir(dir))) {
				if (strcmp(de->d_name, ".") && strcmp(de->d_name, ".."))
					rm_tree_at(dirfd(dir), de->d_name);
			}
			closedir(dir);
		} else {
			close(fd);
		}
		unlinkat(dfd, name, AT_REMOVEDIR);
	} else {
		unlinkat(dfd, name, 0);
	}
}

static void rm_tree(const char *path)
{
	rm_tree_at(AT_FDCWD, path);
}

/* --- remote backend --------------------------------------------------------------- */

static void upload_progress_cb(void *arg, uint64_t sent, uint64_t total)
{
	struct job *j = arg;
	double now = now_seconds();
	if (sent != total && now - j->last_progress < PROGRESS_INTERVAL)
		return;
	j->last_progress = now;
	json_object *data = json_object_new_object();
	json_object_object_add(data, "sent", json_object_new_int64((int64_t)sent));
	json_object_object_add(data, "total", json_object_new_int64((int64_t)total));
	char *a = format_bytes(sent), *b = format_bytes(total);
	char *text = xasprintf("uploaded %s of %s", a, b);
	job_emit(j, "progress", "upload", text, data);
	free(text);
	free(a);
	free(b);
}

static void upload_done_cb(void *arg, const struct api_error *err, const char *build_id)
{
	struct job *j = arg;
	j->op = NULL;
	if (err) {
		job_fail_api(j, "uploading the context failed", err);
		return;
	}
	set_str(&j->rec->build_id, build_id);
	job_log(j, "upload", "build %s started on the image builder", build_id);
	if (job_set_state(j, "building") == 0)
		remote_follow(j);
}

static void remote_upload(struct job *j)
{
	if (!spool_exists(j->js, j->rec->spool_digest)) {
		job_fail(j, "the packed context is missing from the spool",
		         "submit the job again from its context");
		return;
	}
	if (job_set_state(j, "uploading") != 0)
		return;
	char *path = spool_path(j->js, j->rec->spool_digest);
	struct api_submit s = {
	    .archive_path = path,
	    .image_name = j->rec->image_name,
	    .dockerfile = j->rec->dockerfile,
	    .build_args_json = j->rec->build_args_json,
	    .cache_key = j->rec->cache_key,
	};
	j->last_progress = 0;
	j->op = api_build_submit(j->js->d->api, &s, upload_progress_cb, upload_done_cb, j);
	free(path);
}

static void follow_line_cb(void *arg, const char *text, size_t len, const char *event_id)
{
	struct job *j = arg;
	char *raw = xstrndup(text, len);
	char *clean = ansi_strip(raw);
	json_object *data = NULL;
	if (strcmp(raw, clean) != 0) {
		data = json_object_new_object();
		json_object_object_add(data, "raw", json_object_new_string(raw));
	}
	if (event_id && *event_id)
		set_str(&j->rec->last_event_id, event_id);
	job_emit(j, "log", "build", clean, data);
	free(clean);
	free(raw);
}

static void follow_reconnect_cb(void *arg, const char *why)
{
	struct job *j = arg;
	log_debug("job %s: log stream reconnecting: %s", j->rec->id, why);
}

static void status_done_cb(void *arg, const struct api_error *err, json_object *status)
{
	struct job *j = arg;
	j->op = NULL;
	if (err) {
		job_fail_api(j, "reading the build's status failed", err);
		return;
	}
	json_object *ref = NULL;
	if (!json_object_object_get_ex(status, "image_ref", &ref) ||
	    !json_object_is_type(ref, json_type_string) || json_object_get_string_len(ref) == 0) {
		job_fail(j, "the build finished but the builder reported no image reference",
		         "this is a builder-side problem: retry the job");
		return;
	}
	set_str(&j->rec->image_ref, json_object_get_string(ref));
	if (job_set_state(j, "registering") == 0)
		register_start(j);
}

static void follow_end_cb(void *arg, const struct api_error *err, bool done,
                          const char *build_error)
{
	struct job *j = arg;
	j->op = NULL;
	if (j->npending)
		job_flush(j, NULL);
	if (build_error) {
		char *msg = xasprintf("the build failed: %s", build_error);
		job_fail(j, msg, "read the build log above (snapbuild logs JOB)");
		free(msg);
		return;
	}
	if (!done) {
		job_fail_api(j, "following the build's log failed", err);
		return;
	}
	j->op = api_build_status(j->js->d->api, j->rec->build_id, status_done_cb, j);
}

/*
 * Hands the follow the build lines already stored (as the builder sent them), so that
 * after a restart a service that replays its log from the start without usable event
 * ids is recognised and nothing is stored twice.  A job that was just uploaded has
 * none.  When they cannot be read the follow starts without them: a replay would then
 * repeat lines, which is better than failing a running build.
 */
static void remote_follow_seed(struct job *j)
{
	int64_t after = 0;
	struct store_event *ev;
	size_t n;
	char *err = NULL;

	do {
		if (store_events_after(j->js->d->store, j->rec->id, after, 10000, &ev, &n, &err) <
		    0) {
			log_warnx("job %s: cannot read the stored log to recognise a replay: %s",
			          j->rec->id, err);
			free(err);
			return;
		}
		for (size_t i = 0; i < n; i++) {
			json_object *data = NULL, *raw = NULL;
			const char *text = ev[i].text ? ev[i].text : "";

			after = ev[i].seq;
			if (strcmp(ev[i].kind, "log") != 0 || !ev[i].step ||
			    strcmp(ev[i].step, "build") != 0)
				continue;
			if (ev[i].data_json && (data = json_tokener_parse(ev[i].data_json)) &&
			    json_object_object_get_ex(data, "raw", &raw) &&
			    json_object_is_type(raw, json_type_string))
				text = json_object_get_string(raw);
			api_follow_seed(j->op, text, strlen(text));
			json_object_put(data);
		}
		store_event_array_free(ev, n);
	} while (n == 10000);
}

static void remote_follow(struct job *j)
{
	static const struct api_follow_cbs cbs = {
	    .on_line = follow_line_cb,
	    .on_reconnect = follow_reconnect_cb,
	    .on_end = follow_end_cb,
	};
	j->op = api_build_follow(j->js->d->api, j->rec->build_id, j->rec->last_event_id, &cbs, j);
	remote_follow_seed(j);
}

static void delete_done_cb(void *arg, const struct api_error *err)
{
	struct job *j = arg;
	j->op = NULL;
	if (err && ++j->attempts < DELETE_ATTEMPTS) {
		job_log(j, "build", "cancel not confirmed yet (%s); trying again",
		        err->message ? err->message : "error");
		job_after(j, 1.0 * j->attempts, remote_delete);
		return;
	}
	if (err)
		job_warn(j, "build",
		         "the builder never confirmed the cancel; the build may run on");
	else
		job_log(j, "build", "the builder confirmed the cancel of build %s",
		        j->rec->build_id);
	job_finish(j, "cancelled", NULL, NULL);
}

static void remote_delete(struct job *j)
{
	j->op = api_build_delete(j->js->d->api, j->rec->build_id, delete_done_cb, j);
}

/* --- registration (both backends) ------------------------------------------------- */

static void alias_done_cb(void *arg, const struct api_error *err)
{
	struct job *j = arg;
	j->op = NULL;
	if (err) {
		char *msg =
		    xasprintf("setting the alias failed: %s (snapshot %s is registered)",
		              err->message ? err->message : "unknown error", j->rec->snapshot_id);
		char *hint = xasprintf("%s%sset it later with: snapbuild snapshots alias %s %s",
		                       err->hint ? err->hint : "", err->hint ? "; " : "",
		                       j->rec->snapshot_id, j->rec->alias);
		job_fail(j, msg, hint);
		free(msg);
		free(hint);
		return;
	}
	job_log(j, "alias", "alias %s → snapshot %s", j->rec->alias, j->rec->snapshot_id);
	job_finish(j, "succeeded", NULL, NULL);
}

static void alias_start(struct job *j)
{
	j->op =
	    api_snapshot_alias(j->js->d->api, j->rec->snapshot_id, j->rec->alias, alias_done_cb, j);
}

static void registered(struct job *j, json_object *snapshot)
{
	json_object *id = NULL;
	if (!json_object_object_get_ex(snapshot, "id", &id) ||
	    !json_object_is_type(id, json_type_string)) {
		job_fail(j, "the management API answered without a snapshot id",
		         "retry the job; registration is idempotent");
		return;
	}
	set_str(&j->rec->snapshot_id, json_object_get_string(id));
	job_log(j, "register", "snapshot %s registered", j->rec->snapshot_id);
	if (j->rec->alias) {
		if (job_set_state(j, "aliasing") == 0)
			alias_start(j);
		return;
	}
	job_finish(j, "succeeded", NULL, NULL);
}

static void register_lookup(struct job *j);

static void create_done_cb(void *arg, const struct api_error *err, json_object *snapshot)
{
	struct job *j = arg;
	j->op = NULL;
	if (err == NULL) {
		registered(j, snapshot);
		return;
	}
	/* A transport error or 5xx may have hidden a commit: look before creating again. */
	bool ambiguous =
	    err->status == 0 || err->status >= 500 || err->status == 429 || err->status == 408;
	if (ambiguous && ++j->attempts < REGISTER_ATTEMPTS) {
		job_log(j, "register", "registration answer lost (%s); checking before retrying",
		        err->message ? err->message : "error");
		job_after(j, 0.5 * (1 << (j->attempts - 1)), register_lookup);
		return;
	}
	job_fail_api(j, "registering the snapshot failed", err);
}

static void register_create(struct job *j)
{
	json_object *tags = json_tokener_parse(j->rec->tags_json ? j->rec->tags_json : "{}");
	if (!json_object_is_type(tags, json_type_object)) {
		json_object_put(tags);
		tags = json_object_new_object();
	}
	json_object_object_add(tags, "snapbuild.job", json_object_new_string(j->rec->id));
	j->op = api_snapshot_create(j->js->d->api, j->rec->image_ref, j->rec->architecture,
	                            j->rec->ttl, tags, create_done_cb, j);
	json_object_put(tags);
}

static void lookup_done_cb(void *arg, const struct api_error *err, json_object *snapshot)
{
	struct job *j = arg;
	j->op = NULL;
	if (err) {
		if (++j->attempts < REGISTER_ATTEMPTS) {
			job_after(j, 0.5 * (1 << (j->attempts - 1)), register_lookup);
			return;
		}
		job_fail_api(j, "looking for an earlier registration failed", err);
		return;
	}
	if (snapshot) {
		job_log(j, "register", "found the snapshot registered earlier for this job");
		registered(j, snapshot);
		return;
	}
	register_create(j);
}

static void register_lookup(struct job *j)
{
	j->op =
	    api_snapshot_find_by_tag(j->js->d->api, "snapbuild.job", j->rec->id, lookup_done_cb, j);
}

static void register_start(struct job *j)
{
	j->attempts = 0;
	job_log(j, "register", "registering %s (%s)", j->rec->image_ref, j->rec->architecture);
	register_lookup(j);
}

/* --- local backend ---------------------------------------------------------------- */

static void local_step_cb(void *arg, const char *step)
{
	struct job *j = arg;
	if (strcmp(step, "push") != 0) {
		job_log(j, step, "step %s", step);
		return;
	}
	/* Not job_set_state(): inside a localbuild callback the build must not be freed, so a
	 * failed write only waits for the next transition, which fails the job properly. */
	set_str(&j->rec->state, "pushing");
	j->rec->updated_at = now_seconds();
	json_object *data = json_object_new_object();
	json_object_object_add(data, "state", json_object_new_string("pushing"));
	job_emit(j, "state", NULL, "pushing", data);
	job_flush(j, NULL);
}

static void local_log_cb(void *arg, const char *step, const char *line)
{
	struct job *j = arg;
	job_emit(j, "log", step, line, NULL);
}

static void local_done_cb(void *arg, const char *error, const char *image_ref)
{
	struct job *j = arg;
	struct localbuild *lb = j->lb;
	j->lb = NULL;
	if (error) {
		if (j->rec->cancel_requested)
			job_finish(j, "cancelled", NULL, NULL);
		else
			job_fail(j, error, "read the build log above (snapbuild logs JOB)");
	} else {
		set_str(&j->rec->image_ref, image_ref);
		if (job_set_state(j, "registering") == 0)
			register_start(j);
	}
	localbuild_free(lb);
}

/* Registries on loopback speak plain HTTP, as docker assumes for 127.0.0.0/8. */
static bool registry_is_loopback(const char *url)
{
	return str_has_prefix(url, "127.") || str_has_prefix(url, "localhost:") ||
	       str_has_prefix(url, "localhost/") || str_has_prefix(url, "[::1]");
}

static void credentials_done_cb(void *arg, const struct api_error *err, json_object *cred)
{
	struct job *j = arg;
	struct jobs *js = j->js;
	j->op = NULL;
	if (err) {
		job_fail_api(j, "fetching registry credentials failed", err);
		return;
	}
	json_object *u = NULL, *p = NULL, *r = NULL;
	json_object_object_get_ex(cred, "username", &u);
	json_object_object_get_ex(cred, "password", &p);
	json_object_object_get_ex(cred, "registry_url", &r);
	if (!u || !p || !r) {
		job_fail(j, "the registry credentials lack username, password or registry_url",
		         "this is an API-side problem: retry the job");
		return;
	}
	char *path = spool_path(js, j->rec->spool_digest);
	char *platform = xasprintf("linux/%s", j->rec->architecture);
	/* Global engine options from the configuration, split on blanks. */
	char *args_buf =
	    xstrdup(js->d->config->local_engine_args ? js->d->config->local_engine_args : "");
	const char *args[33];
	size_t nargs = 0;
	for (char *save = NULL, *tok = strtok_r(args_buf, " \t", &save); tok && nargs < 32;
	     tok = strtok_r(NULL, " \t", &save))
		args[nargs++] = tok;
	args[nargs] = NULL;
	const char *env_path = getenv("PATH");
	struct localbuild_params params = {
	    .engine = js->engine,
	    .archive_path = path,
	    .dockerfile = j->rec->dockerfile,
	    .build_args_json = j->rec->build_args_json,
	    .platform = platform,
	    .registry_url = json_object_get_string(r),
	    .username = json_object_get_string(u),
	    .password = json_object_get_string(p),
	    .image_name = j->rec->image_name,
	    .tmp_root = js->tmp_root,
	    .path_env = env_path ? env_path : "/usr/local/bin:/usr/bin:/bin",
	    .extra_engine_args = args,
	    .isolation = js->d->config->local_isolation,
	    .tls_verify = !registry_is_loopback(json_object_get_string(r)),
	};
	static const struct localbuild_cbs cbs = {
	    .on_step = local_step_cb,
	    .on_log = local_log_cb,
	    .on_done = local_done_cb,
	};
	job_log(j, "auth", "registry credentials issued for %s", json_object_get_string(r));
	j->lb = localbuild_start(js->d->base, &params, &cbs, j);
	free(args_buf);
	free(platform);
	free(path);
}

static void local_start(struct job *j)
{
	struct jobs *js = j->js;
	if (!js->have_engine) {
		job_fail(j, js->engine_error ? js->engine_error : "no local build engine",
		         "install buildah, podman or docker, or build remotely (--remote)");
		return;
	}
	if (!spool_exists(js, j->rec->spool_digest)) {
		job_fail(j, "the packed context is missing from the spool",
		         "submit the job again from its context");
		return;
	}
	if (job_set_state(j, "building") != 0)
		return;
	job_log(j, "build", "building locally with %s", engine_name(js->engine));
	j->op = api_registry_credentials(js->d->api, credentials_done_cb, j);
}

/* --- public interface ------------------------------------------------------------- */

struct jobs *jobs_new(struct daemon *d)
{
	struct jobs *js = xcalloc(1, sizeof(*js));
	js->d = d;
	TAILQ_INIT(&js->active);
	TAILQ_INIT(&js->queue);
	TAILQ_INIT(&js->intakes);
	js->sched_ev = event_new(d->base, -1, 0, jobs_sched_cb, js);
	js->spool_dir = xasprintf("%s/spool", d->config->state_dir);
	js->tmp_root = xstrdup(d->config->tmp_dir);
	return js;
}

static struct store_job *record_new(const char *state, uid_t uid, gid_t gid)
{
	struct store_job *r = xcalloc(1, sizeof(*r));
	uuid_v4(r->id);
	r->state = xstrdup(state);
	r->uid = uid;
	r->gid = gid;
	char a[37], b[37];
	uuid_v4(a);
	uuid_v4(b);
	r->image_name = xasprintf("image-%s:%s", a, b);
	r->created_at = r->updated_at = now_seconds();
	return r;
}

static bool spool_name(const char *name, char digest[65])
{
	size_t n = strlen(name);
	if (n != 64 + 7 || strcmp(name + 64, ".tar.gz") != 0)
		return false;
	for (size_t i = 0; i < 64; i++)
		if (!strchr("0123456789abcdef", name[i]))
			return false;
	memcpy(digest, name, 64);
	digest[64] = '\0';
	return true;
}

/* Removes spool files no job refers to (and, at start, packing leftovers). */
static void spool_gc(struct jobs *js, bool at_start)
{
	DIR *dir = opendir(js->spool_dir);
	if (dir == NULL)
		return;
	struct dirent *de;
	while ((de = readdir(dir))) {
		char digest[65];
		if (de->d_name[0] == '.' && !at_start)
			continue;
		if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0)
			continue;
		bool remove = false;
		if (spool_name(de->d_name, digest)) {
			bool in_use = true;
			if (store_spool_in_use(js->d->store, digest, &in_use, NULL) == 0 && !in_use)
				remove = TAILQ_EMPTY(&js->intakes) || at_start;
		} else if (at_start && str_has_prefix(de->d_name, "saved-")) {
			/* archives an older daemon saved for context.inspect, which the client now
			 * makes itself */
			char *path = xasprintf("%s/%s", js->spool_dir, de->d_name);
			rm_tree(path);
			free(path);
		} else {
			remove = at_start; /* a temporary file of an interrupted intake */
		}
		if (remove) {
			log_debug("spool: removing %s", de->d_name);
			unlinkat(dirfd(dir), de->d_name, 0);
		}
	}
	closedir(dir);
}

static int mkdir_private(const char *path, char **err)
{
	if (mkdir(path, 0700) != 0 && errno != EEXIST) {
		*err = xasprintf("cannot create %s: %s", path, strerror(errno));
		return -1;
	}
	return 0;
}

static void recover(struct jobs *js, struct store_job *rec)
{
	struct job *j = job_new(js, rec);
	const char *s = rec->state;
	bool remote = strcmp(rec->backend, "local") != 0;
	/* No event here: a follower that saw lines the crash kept from the store gets
	 * them again under the same sequence numbers only if nothing is inserted first. */
	log_info("job %s: recovering from state %s", rec->id, s);
	if (strcmp(s, "packing") == 0) {
		/* Only an older daemon, which packed contexts itself, left jobs in this state. */
		job_fail(j, "the daemon stopped while packing this job's context",
		         "submit the job again");
		return;
	}
	if (strcmp(s, "cancelling") == 0) {
		job_take_slot(j);
		if (remote && rec->build_id)
			remote_delete(j);
		else
			job_finish(j, "cancelled", NULL, NULL);
		return;
	}
	bool needs_spool = strcmp(s, "queued") == 0 || strcmp(s, "uploading") == 0 ||
	                   (strcmp(s, "building") == 0 && (!remote || !rec->build_id)) ||
	                   strcmp(s, "pushing") == 0;
	if (needs_spool && !spool_exists(js, rec->spool_digest)) {
		job_fail(j, "the packed context can no longer be read from the spool",
		         "submit the job again from its context");
		return;
	}
	if (strcmp(s, "queued") == 0) {
		job_enqueue(j);
	} else if (strcmp(s, "uploading") == 0) {
		job_take_slot(j);
		remote_upload(j);
	} else if (strcmp(s, "building") == 0 || strcmp(s, "pushing") == 0) {
		job_take_slot(j);
		if (remote && rec->build_id)
			remote_follow(j);
		else if (remote)
			remote_upload(j);
		else
			local_start(j);
	} else if (strcmp(s, "registering") == 0) {
		job_take_slot(j);
		if (rec->snapshot_id && rec->alias) {
			if (job_set_state(j, "aliasing") == 0)
				alias_start(j);
		} else if (rec->snapshot_id) {
			job_finish(j, "succeeded", NULL, NULL);
		} else {
			register_start(j);
		}
	} else if (strcmp(s, "aliasing") == 0) {
		job_take_slot(j);
		alias_start(j);
	} else {
		job_fail(j, "unknown job state in the database", NULL);
	}
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

/*
 * Working directories a killed daemon left in tmp_dir: unpacked contexts and, for local
 * builds, the registry auth file.  Nothing of a previous run is needed: go.
 */
static void tmp_gc(struct jobs *js)
{
	DIR *dir = opendir(js->tmp_root);
	if (dir == NULL)
		return;
	struct dirent *de;
	while ((de = readdir(dir))) {
		if (!str_has_prefix(de->d_name, "snapbuild-local-") &&
		    !str_has_prefix(de->d_name, "image-"))
			continue;
		char *path = xasprintf("%s/%s", js->tmp_root, de->d_name);
		log_info("removing %s, left by an earlier run", path);
		rm_tree(path);
		free(path);
	}
	closedir(dir);
}

int jobs_start(struct jobs *js, char **err)
{
	if (mkdir_private(js->spool_dir, err) != 0)
		return -1;
	tmp_gc(js);
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
		if (j->npending)
			job_flush(j, NULL);
		job_end_watches(j);
		job_free(j);
	}
	/* Intake threads poll their cancel flag; let them hand back before the loop goes. */
	struct jobs_intake *in;
	TAILQ_FOREACH(in, &js->intakes, entry)
	in->cancel = 1;
	while (!TAILQ_EMPTY(&js->intakes))
		event_base_loop(js->d->base, EVLOOP_ONCE);
	event_free(js->sched_ev);
	if (js->retention_ev)
		event_free(js->retention_ev);
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

/* A new record for what req asks, in state; image jobs build FROM the image. */
static struct store_job *record_for(const struct job_request *req, const char *state, uid_t uid,
                                    gid_t gid)
{
	struct store_job *r = record_new(state, uid, gid);
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

static void intake_work(void *arg)
{
	struct jobs_intake *in = arg;
	if (in->fd >= 0)
		intake_run(&in->opts, &in->result);
	else
		intake_image_context(in->opts.spool_dir, in->rec->image, &in->result);
}

static void jobs_intake_free(struct jobs_intake *in)
{
	if (in->fd >= 0)
		close(in->fd);
	store_job_free(in->rec);
	intake_result_clear(&in->result);
	free(in->sha256);
	free(in);
}

/* The archive is in the spool: the job exists from here on, queued. */
static struct store_job *jobs_create(struct jobs *js, struct store_job *r,
                                     const struct intake_result *res, char **err)
{
	set_str(&r->spool_digest, res->sha256);
	r->spool_size = (int64_t)res->archive_bytes;
	r->file_count = (int64_t)res->file_count;
	if (store_job_insert(js->d->store, r, err) != 0) {
		store_job_free(r);
		return NULL;
	}
	struct job *j = job_new(js, r);
	log_info("job %s submitted by uid %d (%s, %s)", r->id, (int)r->uid, r->backend,
	         r->context_desc);
	json_object *data = json_object_new_object();
	json_object_object_add(data, "files", json_object_new_int64((int64_t)res->file_count));
	json_object_object_add(data, "bytes", json_object_new_int64((int64_t)res->total_bytes));
	json_object_object_add(data, "archive_bytes",
	                       json_object_new_int64((int64_t)res->archive_bytes));
	json_object_object_add(data, "sha256", json_object_new_string(res->sha256));
	char *text = xasprintf("context %s: %llu files, %llu bytes → %llu bytes gzip'd "
	                       "(sha256 %.12s)",
	                       r->context_desc, (unsigned long long)res->file_count,
	                       (unsigned long long)res->total_bytes,
	                       (unsigned long long)res->archive_bytes, res->sha256);
	job_emit(j, "log", "pack", text, data);
	free(text);
	struct store_job *copy = store_job_dup(r);
	/* A failed write fails (and frees) the job: only enqueue one that is still there. */
	if (job_set_state(j, "queued") == 0)
		job_enqueue(j);
	daemon_status_update(js->d);
	return copy;
}

static void intake_done_cb(void *arg)
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

struct jobs_intake *jobs_submit(struct jobs *js, const struct job_request *req, uid_t uid,
                                gid_t gid, jobs_submit_cb cb, void *arg)
{
	struct jobs_intake *in = xcalloc(1, sizeof(*in));
	in->js = js;
	in->fd = req->image ? -1 : req->archive_fd;
	in->rec = record_for(req, "queued", uid, gid);
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
	if (worker_run(js->d->base, intake_work, intake_done_cb, in) == NULL) {
		char *msg = xasprintf("cannot start a thread to take the context in: %s",
		                      strerror(errno));
		TAILQ_REMOVE(&js->intakes, in, entry);
		cb(arg, NULL, JOBS_SUBMIT_ERROR, msg, "the daemon is short of threads or "
		                                      "descriptors; try again, or raise its limits");
		free(msg);
		jobs_intake_free(in);
		return NULL;
	}
	return in;
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
	struct store_job *r = record_for(&req, "queued", uid, gid);
	r->spool_digest = xstrdup(old->spool_digest);
	r->spool_size = old->spool_size;
	r->file_count = old->file_count;
	r->retry_of = xstrdup(old->id);
	if (store_job_insert(js->d->store, r, err) != 0) {
		store_job_free(r);
		return -1;
	}
	struct job *j = job_new(js, r);
	job_log(j, NULL, "retry of job %s with its packed context (sha256 %.12s)", old->id,
	        old->spool_digest);
	*out = store_job_dup(r);
	/* A failed write fails (and frees) the job: only enqueue one that is still there. */
	if (job_set_state(j, "queued") == 0)
		job_enqueue(j);
	return 0;
}

enum jobs_cancel_result jobs_cancel(struct jobs *js, const char *id, char **err)
{
	struct job *j = job_find(js, id);
	if (j == NULL) {
		*err = xstrdup("the job has already finished");
		return JOBS_CANCEL_FINISHED;
	}
	const char *s = j->rec->state;
	if (strcmp(s, "cancelling") == 0)
		return JOBS_CANCEL_OK;
	j->rec->cancel_requested = 1;
	log_info("job %s: cancel requested in state %s", id, s);
	if (strcmp(s, "building") == 0 && strcmp(j->rec->backend, "local") != 0 &&
	    j->rec->build_id) {
		if (j->op) {
			api_op_cancel(j->op);
			j->op = NULL;
		}
		if (job_set_state(j, "cancelling") == 0) {
			j->attempts = 0;
			remote_delete(j);
		}
		return JOBS_CANCEL_OK;
	}
	if (j->lb) {
		if (job_set_state(j, "cancelling") == 0)
			localbuild_cancel(j->lb);
		return JOBS_CANCEL_OK;
	}
	job_finish(j, "cancelled", NULL, NULL);
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
	if (j == NULL)
		return NULL;
	struct job_watch *w = xcalloc(1, sizeof(*w));
	w->job = j;
	w->cbs = *cbs;
	w->arg = arg;
	TAILQ_INSERT_TAIL(&j->watches, w, entry);
	return w;
}

void jobs_unwatch(struct job_watch *w)
{
	if (w == NULL)
		return;
	if (w->job->emitting) {
		w->gone = true;
		return;
	}
	TAILQ_REMOVE(&w->job->watches, w, entry);
	free(w);
}

int jobs_prune(struct jobs *js, int64_t uid, double before, int64_t *deleted, char **err)
{
	struct store_job_filter f = {.uid = uid, .states = terminal_states};
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
