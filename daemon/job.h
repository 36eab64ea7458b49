/*
 * Inside the job engine: what jobs.c (scheduler, public API, recovery), job-life.c
 * (a job's lifecycle), job-events.c (events and watchers), job-remote.c and
 * job-local.c (the backends), job-register.c (registration and aliasing) and spool.c
 * share.  Nothing outside these files includes it: the rest of the daemon sees jobs.h.
 * The layers run one way: jobs.c → backends and job-register.c → job-life.c →
 * job-events.c; backends are reached through struct job_backend only.
 *
 * Rules of the house:
 *   - job_set_state() is the one way a job moves: it checks the move against the table
 *     (job-state.h; an illegal one is a bug and stops the daemon), writes the state and
 *     the pending events in one transaction, and only then lets the caller start the
 *     side effect.  When the write fails it returns false and the job is marked
 *     failing; it is failed from the loop a moment later.  It never frees the job.
 *   - job_finish() ends a job: it stops the backend, writes the terminal state, tells
 *     the watchers, and hands the memory to a collector that frees it from the loop.
 *     A caller may touch the job after job_finish() returns (j->dead is then set).
 *   - A backend is chosen once, when the job is loaded (struct job_backend).
 */
#ifndef SNAPBUILD_JOB_H
#define SNAPBUILD_JOB_H

#include <json-c/json.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/queue.h>
#include <sys/types.h>

#include "engine.h"
#include "job-state.h"
#include "job-watch.h"
#include "store.h"

struct api_error;
struct api_op;
struct daemon;
struct jobs_intake;
struct event;
struct localbuild;

struct job_watch {
	TAILQ_ENTRY(job_watch) entry;
	struct job *job;
	struct job_watch_cbs cbs;
	void *arg;
	bool gone; /* unwatched while events were being handed out: freed right after */
};

struct job;

/* What differs between the remote builder and a local engine. */
struct job_backend {
	const char *name; /* "remote" | "local": the store's backend column */
	/* The job left the queue and holds a slot: build it. */
	void (*start)(struct job *j);
	/* After a restart, in the state the store recorded (uploading, building, pushing). */
	void (*resume)(struct job *j);
	/* A cancel while the job runs: true when the backend winds down itself (and ends
	 * the job later), false to end it as cancelled at once. */
	bool (*cancel)(struct job *j);
	/* Let go of whatever is in flight: the job is ending. */
	void (*stop)(struct job *j);
};

extern const struct job_backend job_backend_remote;
extern const struct job_backend job_backend_local;

struct job {
	TAILQ_ENTRY(job) entry;  /* jobs->active, then jobs->dead */
	TAILQ_ENTRY(job) qentry; /* jobs->queue, while queued */
	struct jobs *js;
	struct store_job *rec;
	enum job_state state;
	const struct job_backend *backend;
	bool queued;
	bool running; /* holds one of the max_concurrent slots */
	bool dead;    /* finished: waiting for the collector */

	/* Events not yet written (job-events.c). */
	struct store_event *pending;
	size_t npending, cap;
	struct event *flush_ev;
	TAILQ_HEAD(, job_watch) watches;
	int emitting;          /* inside the watchers' on_event calls */
	bool log_capped;       /* MAX_EVENTS_PER_JOB reached */
	bool log_clipped;      /* max_log_bytes reached: lines are counted, not kept */
	int64_t log_bytes;     /* bytes of log text stored */
	int64_t lines_dropped; /* since log_clipped */

	/* The backend's work in flight. */
	struct api_op *op;
	struct localbuild *lb;
	struct event *timer; /* the backend's retry timer: one at a time */
	void (*timer_fn)(struct job *j);
	int attempts;
	double last_progress;

	/* A failed write: the job is failed from its own event, apart from the timer. */
	char *storage_error;
	struct event *fail_ev;
};

struct jobs {
	struct daemon *d;
	TAILQ_HEAD(, job) active;
	TAILQ_HEAD(, job) queue; /* arrival order; the scheduler takes them fairly */
	TAILQ_HEAD(, job) dead;  /* finished, freed by gc_ev */
	TAILQ_HEAD(, jobs_intake) intakes;
	struct event *gc_ev;
	int nrunning;
	uint64_t starts;         /* jobs started so far: orders the users' turns */
	struct jobs_turn *turns; /* per user: when their last job started */
	size_t nturns;
	struct event *sched_ev;
	struct event *retention_ev;
	char *spool_dir;
	char *tmp_root;
	bool have_engine;
	enum engine_kind engine;
	char *engine_error;
	bool stopping;
};

/* --- job-life.c: lifecycle ------------------------------------------------------------ */

/* A job loaded from rec (taken) in state; its backend is chosen here, once. */
struct job *job_new(struct jobs *js, struct store_job *rec, enum job_state state);
/* Stops the backend and the timer (the job stays where it is). */
void job_stop(struct job *j);
/* Frees every finished job (the collector, from the loop). */
void job_collect(struct jobs *js);

/* See the rules above.  true: written, go on; false: the job is failing. */
bool job_set_state(struct job *j, enum job_state to);
void job_finish(struct job *j, enum job_state end, const char *error, const char *hint);
/* Failed, or cancelled when a cancel was asked for. */
void job_fail(struct job *j, const char *error, const char *hint);
void job_fail_api(struct job *j, const char *what, const struct api_error *e);
/* Runs fn(j) after seconds, from the loop; replaces a pending one. */
void job_after(struct job *j, double seconds, void (*fn)(struct job *j));
void job_set_str(char **dst, const char *src);

/* --- job-events.c ------------------------------------------------------------------------ */

/* Appends an event (data owned, may be NULL), hands it to the watchers, and has it
 * written soon (in a batch).  Log text past max_log_bytes is counted, not kept. */
void job_emit(struct job *j, const char *kind, const char *step, const char *text,
              json_object *data);
void job_log(struct job *j, const char *step, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
void job_warn(struct job *j, const char *step, const char *text);
/* Writes the record with the pending events; -1 (and the job marked failing) on error. */
int job_flush(struct job *j, char **err);
/* Events are set up with the job; fail_ev is the lifecycle's, made before. */
void job_events_init(struct job *j);
void job_events_free(struct job *j);
/* Tells every watcher the job has ended and lets go of them. */
void job_end_watches(struct job *j);
/* The watch list's side of jobs_watch / jobs_unwatch (jobs.h). */
struct job_watch *job_watch_add(struct job *j, const struct job_watch_cbs *cbs, void *arg);
void job_watch_remove(struct job_watch *w);
/* A line from a builder or an engine as it may be stored: NUL bytes become U+2400. */
char *job_line_text(const char *text, size_t len);

/* --- job-register.c ---------------------------------------------------------------------- */

/* Registration (and then aliasing), for both backends; the job is in registering. */
void job_register_start(struct job *j);
/* Recovery of a job found in registering or aliasing. */
void job_register_resume(struct job *j);
/* A cancel during registration: let it answer, then retire what it made. */
bool job_register_cancel(struct job *j);

/* --- job-reuse.c: builds that need not run again -------------------------------------- */

struct config;
struct job_request;
struct job_reuse;
/* The digest of what a job's result depends on (archive_sha256: the client's archive). */
char *job_reuse_digest(const struct store_job *r, const char *archive_sha256);
/* The cache key to send when the client gave none (default_cache_key = auto), or NULL. */
char *job_reuse_default_cache_key(const struct config *cfg, const struct job_request *req,
                                  uid_t uid);
/* earlier: the job to reuse (borrowed, for the call), or NULL to build. */
typedef void (*job_reuse_cb)(void *arg, const struct store_job *earlier);
/*
 * Looks for a succeeded job of rec's owner with rec's input_digest, within reuse_max_age;
 * NULL when there is none (cb does not run), else asks the API whether its snapshot is
 * still live and calls cb once, from the loop.  job_reuse_cancel stops it (no cb).
 */
struct job_reuse *job_reuse_find(struct jobs *js, const struct store_job *rec, job_reuse_cb cb,
                                 void *arg);
void job_reuse_cancel(struct job_reuse *ru);
/* r takes earlier's archive, image and snapshot, and names it in reused_from. */
void job_reuse_take(struct store_job *r, const struct store_job *earlier);
/* The log line that says why the job built nothing. */
void job_reuse_announce(struct job *j);

/* --- spool.c ----------------------------------------------------------------------------- */

char *spool_path(const struct jobs *js, const char *digest);
bool spool_exists(const struct jobs *js, const char *digest);
/* Removes spool files no job refers to (and, at start, intake leftovers). */
void spool_gc(struct jobs *js, bool at_start);
/* Working directories a killed daemon left in tmp_dir. */
void spool_tmp_gc(struct jobs *js);

#endif
