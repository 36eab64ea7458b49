/*
 * The daemon's durable memory: job records and their ordered events, kept in one
 * SQLite database in the state directory.  SQLite's types and error codes stop here;
 * callers see plain structs, 0/-1 results and messages a user can act on.  The store
 * knows nothing of the event loop, the RPC layer or the job state machine: it only
 * persists what it is given, each write in its own transaction.  It is used from the
 * loop thread only.
 *
 * Results: 0 ok, -1 error with *err set to a malloc'd message the caller frees (err
 * may be NULL when the caller does not want it).  A full disk or an I/O error fails
 * only the write in hand; nothing is half written and the store keeps working.
 */
#ifndef SNAPBUILD_STORE_H
#define SNAPBUILD_STORE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct store;


struct store_job {
	char id[37];           /* UUID */
	char *state;           /* "packing", "queued", "uploading", "building", "pushing",
	                          "registering", "aliasing", "cancelling", "succeeded", "failed",
	                          "cancelled" */
	int64_t uid, gid;      /* owner (peer credentials of the submitter) */
	char *backend;         /* "remote" | "local" */
	char *architecture;    /* "amd64" | "arm64" */
	char *context_desc;    /* where the context came from, for display */
	char *image;           /* image jobs: the source image; NULL otherwise */
	char *dockerfile;      /* relative path inside the context */
	char *alias;           /* NULL = none */
	char *tags_json;       /* JSON object text, "{}" when none (NULL is stored as "{}") */
	char *build_args_json; /* JSON object text, "{}" when none (NULL is stored as "{}") */
	int64_t ttl;           /* seconds, 0 = none */
	char *cache_key;       /* NULL = unset */
	char *spool_digest;    /* sha256 hex of the packed archive; NULL until packed */
	int64_t spool_size, file_count;
	char *image_name; /* "image-<uuid>:<uuid>" */
	char *build_id;   /* remote build id, set the moment submit answers */
	char *image_ref;
	char *snapshot_id;
	char *last_event_id; /* SSE id of the last stored build log line */
	int cancel_requested;
	char *error, *error_hint;
	char *retry_of; /* id of the job this one retries; NULL */
	double created_at, updated_at,
	    finished_at;    /* epoch seconds; finished_at 0 = not finished */
	int64_t last_seq;   /* highest event seq written; never lowered by a save */
	char *input_digest; /* sha256 hex of what the build depends on (job-reuse.c); NULL */
	char *reused_from;  /* the job whose snapshot this one reused; NULL */
};

struct store_event {
	int64_t seq; /* per-job, assigned by the caller, strictly increasing */
	double time;
	char *kind; /* "log", "state", "progress", "warning" */
	char *step; /* "pack", "upload", "build", "push", "auth", "register", "alias", or NULL */
	char *text; /* log text / state name / message */
	char *data_json; /* extra JSON object text, or NULL */
};

struct store_job_filter {
	int64_t uid;               /* -1 = any */
	const char *const *states; /* NULL-terminated, or NULL = any */
	double before_created;     /* cursor: strictly older than (created_at, id); */
	const char *before_id;     /* 0/NULL = from newest; a NULL id with a time = older than it */
	int limit;                 /* 0 = no limit */
};

/* Opens (creating with mode 0600, also -wal/-shm) and migrates the database. */
struct store *store_open(const char *path, char **err);
void store_close(struct store *s);

/* The schema version this build writes (PRAGMA user_version). */
int store_schema_version(void);

int store_job_insert(struct store *s, const struct store_job *j, char **err);
/* Updates every field of an existing job (-1 if it does not exist). */
int store_job_save(struct store *s, const struct store_job *j, char **err);
/* One transaction: the job row and the events (also raises last_seq). */
int store_job_save_with_events(struct store *s, const struct store_job *j,
                               const struct store_event *ev, size_t n, char **err);
/* One transaction for the batch; a seq already stored fails the whole batch. */
int store_events_append(struct store *s, const char *job_id, const struct store_event *ev, size_t n,
                        char **err);

/* 0 found, 1 not found, 2 ambiguous prefix, -1 error.  A prefix needs at least 4
 * characters; an exact id always matches. */
int store_job_get(struct store *s, const char *id_or_prefix, struct store_job **out, char **err);
/* Newest first (created_at DESC, id DESC). */
int store_job_list(struct store *s, const struct store_job_filter *f, struct store_job ***out,
                   size_t *n, char **err);
/* uid's latest job with input_digest that succeeded (finished at or after finished_since)
 * and was not itself a reuse; *out NULL when there is none.  0, or -1 with *err. */
int store_job_reusable(struct store *s, int64_t uid, const char *input_digest,
                       double finished_since, struct store_job **out, char **err);
/* Non-terminal jobs, oldest first: for recovery and the scheduler. */
int store_jobs_unfinished(struct store *s, struct store_job ***out, size_t *n, char **err);
/* cb once per state that has jobs, with how many. */
int store_job_counts(struct store *s, void (*cb)(void *arg, const char *state, int64_t n),
                     void *arg, char **err);
/* The bytes of the distinct spool archives the jobs of uid refer to. */
int store_spool_bytes_of_uid(struct store *s, int64_t uid, int64_t *bytes, char **err);
/* The bytes of a job's stored log events (text and data). */
int store_job_log_bytes(struct store *s, const char *id, int64_t *bytes, char **err);
/* Deletes the job and its events; deleting an absent job is not an error. */
int store_job_delete(struct store *s, const char *id, char **err);
/* Deletes the events of jobs that ended (finished_at) before finished_before; the job
 * records stay.  *deleted: how many events went. */
int store_events_prune(struct store *s, double finished_before, int64_t *deleted, char **err);
/* Events with seq > after_seq, ascending; limit 0 = all. */
int store_events_after(struct store *s, const char *job_id, int64_t after_seq, int limit,
                       struct store_event **out, size_t *n, char **err);
/* Whether any job, in any state, still references this spool digest. */
int store_spool_in_use(struct store *s, const char *digest, bool *in_use, char **err);
/* All distinct spool digests referenced by jobs, sorted. */
int store_spool_digests(struct store *s, char ***digests, size_t *n, char **err);
void store_digests_free(char **digests, size_t n);

/* Tests: cap the database size to simulate a full disk (SQLite never goes below
 * the current size, so 1 means "no more room than now"). */
void store_set_max_page_count(struct store *s, int64_t pages);

struct store_job *store_job_dup(const struct store_job *j);
void store_job_free(struct store_job *j);
void store_job_array_free(struct store_job **a, size_t n);
void store_event_array_free(struct store_event *ev, size_t n);

#endif
