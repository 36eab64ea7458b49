/*
 * The job engine: one state machine for every build (job-state.h), a scheduler that is
 * fair across users within its concurrency limit, per-job event lists (written to the
 * store in batches and handed to watchers live), and recovery of unfinished jobs when
 * the daemon starts.  Its insides are in job.h.
 *
 * A job moves between states only through one function, which writes the new state
 * (and whatever recovery needs: build id, snapshot id, cancel request) to the store
 * before the side effect it announces.  The backends (remote builder, local engine)
 * report back through callbacks on the loop thread.
 *
 * This layer knows nothing of JSON-RPC: methods subscribe with jobs_watch() and turn
 * events into notifications themselves.
 */
#ifndef SNAPBUILD_JOBS_H
#define SNAPBUILD_JOBS_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include "job-state.h"
#include "job-watch.h"
#include "store.h"

struct daemon;
struct jobs;
struct job_watch;

/* What a client asks for; the methods layer has validated every field. */
struct job_request {
	int archive_fd;             /* the client's packed context (taken), or -1 */
	const char *archive_sha256; /* what the client says it wrote */
	uint64_t archive_bytes;
	const char *context_desc; /* shown to users: the client's path */
	const char *image;        /* build FROM this image instead of a context */
	const char *dockerfile;   /* relative to the context */
	const char *alias;
	const char *tags_json; /* JSON object text */
	const char *build_args_json;
	int64_t ttl;
	const char *cache_key;
	const char *backend;      /* "remote" | "local" */
	const char *architecture; /* "amd64" | "arm64" */
	bool no_cache;            /* build again: no reuse (job-reuse.c), no default cache key */
};

struct jobs *jobs_new(struct daemon *d);
/* Recovers unfinished jobs and starts scheduling.  -1 with *err on a store failure. */
int jobs_start(struct jobs *js, char **err);
/* Stops every backend (jobs stay in their durable state for the next start). */
void jobs_free(struct jobs *js);

enum jobs_submit_status {
	JOBS_SUBMIT_OK = 0,
	JOBS_SUBMIT_INVALID = 1, /* the archive is refused (error and hint say why) */
	JOBS_SUBMIT_ERROR = 2,   /* the daemon's own failure: storage, threads */
	JOBS_SUBMIT_BUSY = 3,    /* the caller's share is used up (queue, spool) */
};
/* The outcome of a submit: job (borrowed) when JOBS_SUBMIT_OK, else error and hint. */
typedef void (*jobs_submit_cb)(void *arg, const struct store_job *job,
                               enum jobs_submit_status status, const char *error, const char *hint);
struct jobs_intake;
/*
 * A new job, once its archive is held: the client's archive (req->archive_fd, taken) is
 * copied into the spool and checked on a worker thread (intake.h), or an image job's
 * one-line context is written; then the job is created, queued, and cb called on the
 * loop.  No job exists before that: an archive cut short or refused leaves nothing.
 * cb runs exactly once; it may run before this returns (then NULL is returned).
 */
struct jobs_intake *jobs_submit(struct jobs *js, const struct job_request *req, uid_t uid,
                                gid_t gid, jobs_submit_cb cb, void *arg);
/* The caller is gone: stop the intake.  cb still runs, once, with an error. */
void jobs_submit_cancel(struct jobs_intake *in);
/* New job from the spooled context of an earlier one. */
int jobs_retry(struct jobs *js, const struct store_job *old, uid_t uid, gid_t gid,
               struct store_job **out, char **err);

enum jobs_cancel_result { JOBS_CANCEL_OK = 0, JOBS_CANCEL_FINISHED = 1, JOBS_CANCEL_ERROR = -1 };
enum jobs_cancel_result jobs_cancel(struct jobs *js, const char *id, char **err);

/* 1-based place of a queued job in the order the fair scheduler will start them; 0 when
 * it is not queued. */
int64_t jobs_queue_position(struct jobs *js, const char *id);
/* Records as the store lists them (store_job_filter). */
int jobs_list(struct jobs *js, const struct store_job_filter *f, struct store_job ***out, size_t *n,
              char **err);
/* How many jobs are in each state (indexed by enum job_state), and in all. */
int jobs_counts(struct jobs *js, int64_t counts[JOB_NSTATES], int64_t *total, char **err);

/* The freshest record of a job (running jobs from memory). 0 ok, 1 none, 2 ambiguous. */
int jobs_get(struct jobs *js, const char *id_or_prefix, struct store_job **out, char **err);

/* Stored events after after_seq, with any not yet written flushed first. */
int jobs_events_after(struct jobs *js, const char *id, int64_t after_seq, int limit,
                      struct store_event **out, size_t *n, char **err);

/* NULL when the job is not running (already terminal or unknown). */
struct job_watch *jobs_watch(struct jobs *js, const char *id, const struct job_watch_cbs *cbs,
                             void *arg);
void jobs_unwatch(struct job_watch *w);

/* Deletes terminal jobs finished before `before` (0 = all terminal) visible to uid
 * (-1 = all), and spool files nothing refers to any more. */
int jobs_prune(struct jobs *js, int64_t uid, double before, int64_t *deleted, char **err);

/* True when no job is active and no archive is being taken in (for idle exit). */
bool jobs_idle(const struct jobs *js);

/* The local engine found at start (name), or why none was. */
bool jobs_local_engine(const struct jobs *js, const char **name, const char **error);

bool job_state_terminal(const char *state);

#endif
