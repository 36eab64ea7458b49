/*
 * The SQLite store: job records and per-job events, in WAL mode with foreign keys on.
 * Every write runs in its own BEGIN IMMEDIATE transaction and is rolled back whole on
 * failure, so a full disk or an I/O error never leaves half a write behind and the
 * store goes on serving reads (and writes, once there is room again).  Statements are
 * prepared once and cached.  The schema evolves through an ordered list of migrations
 * keyed by PRAGMA user_version, each applied in one transaction; a database written by
 * a newer daemon is refused rather than guessed at.
 */
#include "store.h"

#include <errno.h>
#include <fcntl.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "log.h"
#include "util.h"

/* Schema history.  Entry i upgrades user_version i to i + 1.  Never edit a step
 * that has shipped: add a new one. */
static const char *const store_migrations[] = {
    /* 1: jobs and their events */
    "CREATE TABLE jobs ("
    " id TEXT PRIMARY KEY NOT NULL,"
    " state TEXT NOT NULL,"
    " uid INTEGER NOT NULL,"
    " gid INTEGER NOT NULL,"
    " backend TEXT,"
    " architecture TEXT,"
    " context_desc TEXT,"
    " image TEXT,"
    " dockerfile TEXT,"
    " alias TEXT,"
    " tags_json TEXT NOT NULL DEFAULT '{}',"
    " build_args_json TEXT NOT NULL DEFAULT '{}',"
    " ttl INTEGER NOT NULL DEFAULT 0,"
    " cache_key TEXT,"
    " spool_digest TEXT,"
    " spool_size INTEGER NOT NULL DEFAULT 0,"
    " file_count INTEGER NOT NULL DEFAULT 0,"
    " image_name TEXT,"
    " build_id TEXT,"
    " image_ref TEXT,"
    " snapshot_id TEXT,"
    " cancel_requested INTEGER NOT NULL DEFAULT 0,"
    " error TEXT,"
    " created_at REAL NOT NULL,"
    " updated_at REAL NOT NULL,"
    " finished_at REAL NOT NULL DEFAULT 0,"
    " last_seq INTEGER NOT NULL DEFAULT 0);"
    "CREATE TABLE events ("
    " job_id TEXT NOT NULL REFERENCES jobs(id) ON DELETE CASCADE,"
    " seq INTEGER NOT NULL,"
    " time REAL NOT NULL,"
    " kind TEXT NOT NULL,"
    " step TEXT,"
    " text TEXT,"
    " data_json TEXT,"
    " PRIMARY KEY (job_id, seq)) WITHOUT ROWID;",
    /* 2: retries, hints, SSE resume points; indexes for listing and the queue */
    "ALTER TABLE jobs ADD COLUMN retry_of TEXT;"
    "ALTER TABLE jobs ADD COLUMN error_hint TEXT;"
    "ALTER TABLE jobs ADD COLUMN last_event_id TEXT;"
    "CREATE INDEX jobs_created ON jobs (created_at, id);"
    "CREATE INDEX jobs_state_created ON jobs (state, created_at, id);"
    "CREATE INDEX jobs_uid_created ON jobs (uid, created_at, id);"
    "CREATE INDEX jobs_spool_digest ON jobs (spool_digest) WHERE spool_digest IS NOT NULL;",
    /* 3: build reuse: the digest of a job's inputs, and the job a reused one took from */
    "ALTER TABLE jobs ADD COLUMN input_digest TEXT;"
    "ALTER TABLE jobs ADD COLUMN reused_from TEXT;"
    "CREATE INDEX jobs_uid_input ON jobs (uid, input_digest, finished_at)"
    " WHERE input_digest IS NOT NULL;",
};
#define STORE_SCHEMA_VERSION ((int)(sizeof(store_migrations) / sizeof(store_migrations[0])))

/* The job columns, in the order of JOB_COLS: binding (?1 … ?32), reading, copying
 * and freeing are all driven by this one table. */
enum store_col_kind { COL_ID, COL_TEXT, COL_JSON, COL_I64, COL_INT, COL_REAL };
struct store_col {
	enum store_col_kind kind;
	size_t off;
};
#define COL(kind, field)                                                                           \
	{                                                                                          \
		kind, offsetof(struct store_job, field)                                            \
	}
static const struct store_col store_job_cols[] = {
    COL(COL_ID, id),
    COL(COL_TEXT, state),
    COL(COL_I64, uid),
    COL(COL_I64, gid),
    COL(COL_TEXT, backend),
    COL(COL_TEXT, architecture),
    COL(COL_TEXT, context_desc),
    COL(COL_TEXT, image),
    COL(COL_TEXT, dockerfile),
    COL(COL_TEXT, alias),
    COL(COL_JSON, tags_json),
    COL(COL_JSON, build_args_json),
    COL(COL_I64, ttl),
    COL(COL_TEXT, cache_key),
    COL(COL_TEXT, spool_digest),
    COL(COL_I64, spool_size),
    COL(COL_I64, file_count),
    COL(COL_TEXT, image_name),
    COL(COL_TEXT, build_id),
    COL(COL_TEXT, image_ref),
    COL(COL_TEXT, snapshot_id),
    COL(COL_TEXT, last_event_id),
    COL(COL_INT, cancel_requested),
    COL(COL_TEXT, error),
    COL(COL_TEXT, error_hint),
    COL(COL_TEXT, retry_of),
    COL(COL_REAL, created_at),
    COL(COL_REAL, updated_at),
    COL(COL_REAL, finished_at),
    COL(COL_I64, last_seq),
    COL(COL_TEXT, input_digest),
    COL(COL_TEXT, reused_from),
};
#define STORE_JOB_NCOLS (sizeof(store_job_cols) / sizeof(store_job_cols[0]))

#define JOB_COLS                                                                                   \
	"id, state, uid, gid, backend, architecture, context_desc, image, dockerfile, alias, "     \
	"tags_json, build_args_json, ttl, cache_key, spool_digest, spool_size, file_count, "       \
	"image_name, build_id, image_ref, snapshot_id, last_event_id, cancel_requested, error, "   \
	"error_hint, retry_of, created_at, updated_at, finished_at, last_seq, input_digest, "      \
	"reused_from"

#define TERMINAL_STATES "('succeeded', 'failed', 'cancelled')"

enum store_stmt_id {
	ST_BEGIN,
	ST_COMMIT,
	ST_ROLLBACK,
	ST_JOB_INSERT,
	ST_JOB_UPDATE,
	ST_JOB_BY_ID,
	ST_JOB_BY_PREFIX,
	ST_JOB_LIST,
	ST_JOBS_UNFINISHED,
	ST_JOB_COUNTS,
	ST_SPOOL_BYTES_OF_UID,
	ST_JOB_LOG_BYTES,
	ST_JOB_DELETE,
	ST_EVENT_INSERT,
	ST_JOB_RAISE_SEQ,
	ST_EVENTS_AFTER,
	ST_SPOOL_IN_USE,
	ST_SPOOL_DIGESTS,
	ST_EVENTS_PRUNE,
	ST_JOB_REUSABLE,
	ST__COUNT
};

static const char *const store_sql[ST__COUNT] = {
    [ST_BEGIN] = "BEGIN IMMEDIATE",
    [ST_COMMIT] = "COMMIT",
    [ST_ROLLBACK] = "ROLLBACK",
    [ST_JOB_INSERT] = "INSERT INTO jobs (" JOB_COLS ") VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, "
                      "?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, ?19, ?20, ?21, ?22, ?23, ?24, "
                      "?25, ?26, ?27, ?28, ?29, ?30, ?31, ?32)",
    [ST_JOB_UPDATE] =
        "UPDATE jobs SET state = ?2, uid = ?3, gid = ?4, backend = ?5, architecture = ?6, "
        "context_desc = ?7, image = ?8, dockerfile = ?9, alias = ?10, tags_json = ?11, "
        "build_args_json = ?12, ttl = ?13, cache_key = ?14, spool_digest = ?15, spool_size = ?16, "
        "file_count = ?17, image_name = ?18, build_id = ?19, image_ref = ?20, snapshot_id = ?21, "
        "last_event_id = ?22, cancel_requested = ?23, error = ?24, error_hint = ?25, "
        "retry_of = ?26, created_at = ?27, updated_at = ?28, finished_at = ?29, "
        "last_seq = max(last_seq, ?30), input_digest = ?31, reused_from = ?32 WHERE id = ?1",
    [ST_JOB_BY_ID] = "SELECT " JOB_COLS " FROM jobs WHERE id = ?1",
    [ST_JOB_BY_PREFIX] = "SELECT " JOB_COLS " FROM jobs WHERE substr(id, 1, length(?1)) = ?1 "
                         "ORDER BY id LIMIT 2",
    /* ?2 is ",state,state," so one cached statement serves any set of states. */
    [ST_JOB_LIST] = "SELECT " JOB_COLS " FROM jobs WHERE (?1 < 0 OR uid = ?1)"
                    " AND (?2 IS NULL OR instr(?2, ',' || state || ',') > 0)"
                    " AND (?3 IS NULL OR created_at < ?3"
                    "      OR (created_at = ?3 AND ?4 IS NOT NULL AND id < ?4))"
                    " ORDER BY created_at DESC, id DESC LIMIT ?5",
    [ST_JOBS_UNFINISHED] = "SELECT " JOB_COLS " FROM jobs WHERE state NOT IN " TERMINAL_STATES
                           " ORDER BY created_at, id",
    [ST_JOB_COUNTS] = "SELECT state, count(*) FROM jobs GROUP BY state",
    /* The archives a user's jobs hold in the spool, each digest once. */
    [ST_SPOOL_BYTES_OF_UID] = "SELECT coalesce(sum(size), 0) FROM (SELECT DISTINCT spool_digest,"
                              " spool_size AS size FROM jobs WHERE uid = CAST(?1 AS INTEGER)"
                              " AND spool_digest IS NOT NULL)",
    [ST_JOB_LOG_BYTES] = "SELECT coalesce(sum(length(CAST(text AS BLOB)) +"
                         " coalesce(length(CAST(data_json AS BLOB)), 0)), 0)"
                         " FROM events WHERE job_id = ?1 AND kind != 'state'",
    [ST_JOB_DELETE] = "DELETE FROM jobs WHERE id = ?1",
    [ST_EVENT_INSERT] = "INSERT INTO events (job_id, seq, time, kind, step, text, data_json)"
                        " VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
    [ST_JOB_RAISE_SEQ] = "UPDATE jobs SET last_seq = max(last_seq, ?2) WHERE id = ?1",
    [ST_EVENTS_AFTER] = "SELECT seq, time, kind, step, text, data_json FROM events"
                        " WHERE job_id = ?1 AND seq > ?2 ORDER BY seq LIMIT ?3",
    [ST_SPOOL_IN_USE] = "SELECT EXISTS (SELECT 1 FROM jobs WHERE spool_digest = ?1)",
    [ST_SPOOL_DIGESTS] = "SELECT DISTINCT spool_digest FROM jobs WHERE spool_digest IS NOT NULL"
                         " ORDER BY spool_digest",
    [ST_EVENTS_PRUNE] =
        "DELETE FROM events WHERE job_id IN (SELECT id FROM jobs WHERE state IN " TERMINAL_STATES
        " AND finished_at > 0 AND finished_at < ?1)",
    [ST_JOB_REUSABLE] = "SELECT " JOB_COLS " FROM jobs WHERE uid = ?1 AND input_digest = ?2"
                        " AND state = 'succeeded' AND snapshot_id IS NOT NULL"
                        " AND reused_from IS NULL AND finished_at >= ?3"
                        " ORDER BY finished_at DESC LIMIT 1",
};

struct store {
	sqlite3 *db;
	char *path;
	sqlite3_stmt *stmt[ST__COUNT];
};

static void store_set_err(char **err, char *msg)
{
	if (err != NULL)
		*err = msg;
	else
		free(msg);
}

/* Turns the connection's last error into a message for the user.  Must run before
 * anything else touches the connection (a reset or rollback changes the error). */
static void store_db_err(struct store *s, const char *what, char **err)
{
	int code = sqlite3_extended_errcode(s->db);
	const char *msg = sqlite3_errmsg(s->db);

	switch (code & 0xff) {
	case SQLITE_FULL:
		store_set_err(err, xasprintf("database or disk is full (%s in %s)", what, s->path));
		break;
	case SQLITE_IOERR:
		store_set_err(err,
		              xasprintf("database I/O error (%s in %s: %s)", what, s->path, msg));
		break;
	default:
		store_set_err(err, xasprintf("database error %s: %s", what, msg));
		break;
	}
}

static sqlite3_stmt *store_stmt(struct store *s, enum store_stmt_id id, char **err)
{
	if (s->stmt[id] == NULL &&
	    sqlite3_prepare_v3(s->db, store_sql[id], -1, SQLITE_PREPARE_PERSISTENT, &s->stmt[id],
	                       NULL) != SQLITE_OK) {
		store_db_err(s, "preparing a statement", err);
		s->stmt[id] = NULL;
	}
	return s->stmt[id];
}

/* Every cached statement goes back to a clean state after use, so none keeps a read
 * transaction open or holds on to a caller's strings. */
static void store_stmt_done(sqlite3_stmt *st)
{
	sqlite3_reset(st);
	sqlite3_clear_bindings(st);
}

/* Steps a statement that returns no rows; 0 ok, -1 with *err set. */
static int store_step_done(struct store *s, sqlite3_stmt *st, const char *what, char **err)
{
	int rc = sqlite3_step(st);

	if (rc != SQLITE_DONE)
		store_db_err(s, what, err);
	store_stmt_done(st);
	return rc == SQLITE_DONE ? 0 : -1;
}

static int store_run(struct store *s, enum store_stmt_id id, const char *what, char **err)
{
	sqlite3_stmt *st = store_stmt(s, id, err);

	return st == NULL ? -1 : store_step_done(s, st, what, err);
}

static int store_begin(struct store *s, const char *what, char **err)
{
	return store_run(s, ST_BEGIN, what, err);
}

/* SQLite may already have rolled the transaction back itself (after SQLITE_FULL or
 * an I/O error); only roll back what is still open. */
static void store_rollback(struct store *s)
{
	char *err = NULL;

	if (sqlite3_get_autocommit(s->db))
		return;
	if (store_run(s, ST_ROLLBACK, "rolling back", &err) < 0) {
		log_warnx("store: %s", err);
		free(err);
	}
}

/* Commits, or rolls back when the commit fails; 0 ok, -1 with *err set. */
static int store_commit(struct store *s, const char *what, char **err)
{
	if (store_run(s, ST_COMMIT, what, err) == 0)
		return 0;
	store_rollback(s);
	return -1;
}

static int store_bind_text(sqlite3_stmt *st, int idx, const char *v)
{
	return v == NULL ? sqlite3_bind_null(st, idx)
	                 : sqlite3_bind_text(st, idx, v, -1, SQLITE_STATIC);
}

static char *store_col_text(sqlite3_stmt *st, int idx)
{
	const unsigned char *v = sqlite3_column_text(st, idx);

	return v == NULL ? NULL : xstrdup((const char *)v);
}

static int store_job_bind(sqlite3_stmt *st, const struct store_job *j)
{
	int rc = SQLITE_OK;

	for (size_t i = 0; i < STORE_JOB_NCOLS && rc == SQLITE_OK; i++) {
		const void *f = (const char *)j + store_job_cols[i].off;
		int idx = (int)i + 1;

		switch (store_job_cols[i].kind) {
		case COL_ID:
			rc = store_bind_text(st, idx, f);
			break;
		case COL_TEXT:
			rc = store_bind_text(st, idx, *(char *const *)f);
			break;
		case COL_JSON:
			rc = store_bind_text(st, idx, *(char *const *)f ? *(char *const *)f : "{}");
			break;
		case COL_I64:
			rc = sqlite3_bind_int64(st, idx, *(const int64_t *)f);
			break;
		case COL_INT:
			rc = sqlite3_bind_int(st, idx, *(const int *)f);
			break;
		case COL_REAL:
			rc = sqlite3_bind_double(st, idx, *(const double *)f);
			break;
		}
	}
	return rc;
}

static struct store_job *store_job_from_row(sqlite3_stmt *st)
{
	struct store_job *j = xcalloc(1, sizeof(*j));

	for (size_t i = 0; i < STORE_JOB_NCOLS; i++) {
		void *f = (char *)j + store_job_cols[i].off;
		int idx = (int)i;

		switch (store_job_cols[i].kind) {
		case COL_ID:
			snprintf(f, sizeof(j->id), "%s",
			         (const char *)sqlite3_column_text(st, idx));
			break;
		case COL_TEXT:
		case COL_JSON:
			*(char **)f = store_col_text(st, idx);
			break;
		case COL_I64:
			*(int64_t *)f = sqlite3_column_int64(st, idx);
			break;
		case COL_INT:
			*(int *)f = sqlite3_column_int(st, idx);
			break;
		case COL_REAL:
			*(double *)f = sqlite3_column_double(st, idx);
			break;
		}
	}
	return j;
}

/* Collects every row of a bound SELECT of JOB_COLS; resets the statement. */
static int store_job_rows(struct store *s, sqlite3_stmt *st, const char *what,
                          struct store_job ***out, size_t *n, char **err)
{
	struct store_job **a = NULL;
	size_t len = 0, cap = 0;
	int rc;

	while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
		if (len == cap) {
			cap = cap ? cap * 2 : 16;
			a = xrealloc(a, cap * sizeof(*a));
		}
		a[len++] = store_job_from_row(st);
	}
	if (rc != SQLITE_DONE) {
		store_db_err(s, what, err);
		store_job_array_free(a, len);
		a = NULL;
		len = 0;
	}
	store_stmt_done(st);
	*out = a;
	*n = len;
	return rc == SQLITE_DONE ? 0 : -1;
}

static int store_exec(struct store *s, const char *sql, const char *what, char **err)
{
	if (sqlite3_exec(s->db, sql, NULL, NULL, NULL) == SQLITE_OK)
		return 0;
	store_db_err(s, what, err);
	return -1;
}

static int store_pragma_int(struct store *s, const char *sql, int64_t *v, char **err)
{
	sqlite3_stmt *st = NULL;
	int rc = -1;

	if (sqlite3_prepare_v2(s->db, sql, -1, &st, NULL) != SQLITE_OK ||
	    sqlite3_step(st) != SQLITE_ROW) {
		store_db_err(s, "reading the schema version", err);
		goto out;
	}
	*v = sqlite3_column_int64(st, 0);
	rc = 0;
out:
	sqlite3_finalize(st);
	return rc;
}

/* Applies the migrations one transaction each.  The version is read inside the
 * transaction so two daemons starting at once cannot both apply a step. */
static int store_migrate(struct store *s, char **err)
{
	for (;;) {
		int64_t v;
		char *what = NULL, *setv = NULL;
		int rc = -1;

		if (store_begin(s, "starting a migration", err) < 0)
			return -1;
		if (store_pragma_int(s, "PRAGMA user_version", &v, err) < 0)
			goto out;
		if (v > STORE_SCHEMA_VERSION) {
			store_set_err(err,
			              xasprintf("database %s has schema version %lld, newer than "
			                        "the %d this snapbuildd knows: it was written by "
			                        "a newer snapbuildd",
			                        s->path, (long long)v, STORE_SCHEMA_VERSION));
			goto out;
		}
		if (v == STORE_SCHEMA_VERSION) {
			rc = store_commit(s, "finishing migrations", err) < 0 ? -1 : 1;
			goto out;
		}
		what = xasprintf("migrating to schema version %lld", (long long)v + 1);
		setv = xasprintf("PRAGMA user_version = %lld", (long long)v + 1);
		if (store_exec(s, store_migrations[v], what, err) < 0 ||
		    store_exec(s, setv, what, err) < 0 || store_commit(s, what, err) < 0)
			goto out;
		log_info("store: %s migrated to schema version %lld", s->path, (long long)v + 1);
		rc = 0;
	out:
		if (rc < 0)
			store_rollback(s);
		free(what);
		free(setv);
		if (rc != 0)
			return rc < 0 ? -1 : 0;
	}
}

/* The database is created by us, 0600, before SQLite sees it; SQLite then gives the
 * -wal and -shm files the database file's mode.  Older files are tightened too. */
static int store_prepare_file(const char *path, char **err)
{
	int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);

	if (fd < 0 || fchmod(fd, 0600) < 0) {
		store_set_err(err,
		              xasprintf("cannot create database %s: %s", path, strerror(errno)));
		if (fd >= 0)
			close(fd);
		return -1;
	}
	close(fd);
	return 0;
}

static void store_tighten_sidecars(const char *path)
{
	static const char *const suffixes[] = {"-wal", "-shm"};

	for (size_t i = 0; i < sizeof(suffixes) / sizeof(suffixes[0]); i++) {
		char *p = xasprintf("%s%s", path, suffixes[i]);

		if (chmod(p, 0600) < 0 && errno != ENOENT)
			log_warn("store: chmod %s", p);
		free(p);
	}
}

static int store_set_wal(struct store *s, char **err)
{
	sqlite3_stmt *st = NULL;
	int rc = -1;

	if (sqlite3_prepare_v2(s->db, "PRAGMA journal_mode = WAL", -1, &st, NULL) != SQLITE_OK ||
	    sqlite3_step(st) != SQLITE_ROW) {
		store_db_err(s, "switching to WAL", err);
		goto out;
	}
	if (strcmp((const char *)sqlite3_column_text(st, 0), "wal") != 0) {
		store_set_err(err, xasprintf("database %s cannot use WAL (journal mode stays %s)",
		                             s->path, (const char *)sqlite3_column_text(st, 0)));
		goto out;
	}
	rc = 0;
out:
	sqlite3_finalize(st);
	return rc;
}

struct store *store_open(const char *path, char **err)
{
	struct store *s = xcalloc(1, sizeof(*s));

	s->path = xstrdup(path);
	if (store_prepare_file(path, err) < 0)
		goto fail;
	if (sqlite3_open_v2(path, &s->db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_NOFOLLOW, NULL) !=
	    SQLITE_OK) {
		store_set_err(err, xasprintf("cannot open database %s: %s", path,
		                             s->db ? sqlite3_errmsg(s->db) : "out of memory"));
		goto fail;
	}
	sqlite3_extended_result_codes(s->db, 1);
	sqlite3_busy_timeout(s->db, 5000);
	/* synchronous=FULL: a transition is announced only once it survives power loss. */
	if (store_exec(s, "PRAGMA foreign_keys = ON", "enabling foreign keys", err) < 0 ||
	    store_set_wal(s, err) < 0 ||
	    store_exec(s, "PRAGMA synchronous = FULL", "setting synchronous mode", err) < 0)
		goto fail;
	store_tighten_sidecars(path);
	if (store_migrate(s, err) < 0)
		goto fail;
	return s;
fail:
	store_close(s);
	return NULL;
}

void store_close(struct store *s)
{
	if (s == NULL)
		return;
	for (int i = 0; i < ST__COUNT; i++)
		sqlite3_finalize(s->stmt[i]);
	if (sqlite3_close(s->db) != SQLITE_OK)
		log_warnx("store: closing %s: %s", s->path, sqlite3_errmsg(s->db));
	free(s->path);
	free(s);
}

int store_schema_version(void)
{
	return STORE_SCHEMA_VERSION;
}

/* Writes the job row with an INSERT or UPDATE statement, inside the caller's
 * transaction. */
static int store_job_write(struct store *s, enum store_stmt_id id, const struct store_job *j,
                           const char *what, char **err)
{
	sqlite3_stmt *st = store_stmt(s, id, err);

	if (st == NULL)
		return -1;
	if (store_job_bind(st, j) != SQLITE_OK) {
		store_db_err(s, what, err);
		store_stmt_done(st);
		return -1;
	}
	if (store_step_done(s, st, what, err) < 0)
		return -1;
	if (id == ST_JOB_UPDATE && sqlite3_changes(s->db) == 0) {
		store_set_err(err, xasprintf("%s: no such job", what));
		return -1;
	}
	return 0;
}

static int store_events_write(struct store *s, const char *job_id, const struct store_event *ev,
                              size_t n, char **err)
{
	sqlite3_stmt *st = store_stmt(s, ST_EVENT_INSERT, err);
	int64_t max_seq = 0;

	if (st == NULL)
		return -1;
	for (size_t i = 0; i < n; i++) {
		int rc;

		store_bind_text(st, 1, job_id);
		sqlite3_bind_int64(st, 2, ev[i].seq);
		sqlite3_bind_double(st, 3, ev[i].time);
		store_bind_text(st, 4, ev[i].kind);
		store_bind_text(st, 5, ev[i].step);
		store_bind_text(st, 6, ev[i].text);
		store_bind_text(st, 7, ev[i].data_json);
		rc = sqlite3_step(st);
		if (rc != SQLITE_DONE) {
			int code = sqlite3_extended_errcode(s->db);
			char *what =
			    xasprintf("storing event %lld of job %s", (long long)ev[i].seq, job_id);

			if (code == SQLITE_CONSTRAINT_PRIMARYKEY)
				store_set_err(err,
				              xasprintf("%s: an event with this sequence number "
				                        "is already stored",
				                        what));
			else if (code == SQLITE_CONSTRAINT_FOREIGNKEY)
				store_set_err(err, xasprintf("%s: no such job", what));
			else
				store_db_err(s, what, err);
			free(what);
			store_stmt_done(st);
			return -1;
		}
		store_stmt_done(st);
		if (ev[i].seq > max_seq)
			max_seq = ev[i].seq;
	}
	if (n == 0)
		return 0;
	if ((st = store_stmt(s, ST_JOB_RAISE_SEQ, err)) == NULL)
		return -1;
	store_bind_text(st, 1, job_id);
	sqlite3_bind_int64(st, 2, max_seq);
	return store_step_done(s, st, "recording the last event of a job", err);
}

/* One write transaction around the job row (when given) and the events. */
static int store_write(struct store *s, enum store_stmt_id job_stmt, const struct store_job *j,
                       const char *job_id, const struct store_event *ev, size_t n, char **err)
{
	char *what =
	    xasprintf("%s job %s", job_stmt == ST_JOB_INSERT ? "inserting" : "saving", job_id);
	int rc = -1;

	if (store_begin(s, what, err) < 0)
		goto out;
	if ((j != NULL && store_job_write(s, job_stmt, j, what, err) < 0) ||
	    store_events_write(s, job_id, ev, n, err) < 0 || store_commit(s, what, err) < 0) {
		store_rollback(s);
		goto out;
	}
	rc = 0;
out:
	free(what);
	return rc;
}

int store_job_insert(struct store *s, const struct store_job *j, char **err)
{
	if (j->id[0] == '\0' || j->state == NULL) {
		store_set_err(err, xstrdup("inserting a job: it needs an id and a state"));
		return -1;
	}
	return store_write(s, ST_JOB_INSERT, j, j->id, NULL, 0, err);
}

int store_job_save(struct store *s, const struct store_job *j, char **err)
{
	return store_write(s, ST_JOB_UPDATE, j, j->id, NULL, 0, err);
}

int store_job_save_with_events(struct store *s, const struct store_job *j,
                               const struct store_event *ev, size_t n, char **err)
{
	return store_write(s, ST_JOB_UPDATE, j, j->id, ev, n, err);
}

int store_events_append(struct store *s, const char *job_id, const struct store_event *ev, size_t n,
                        char **err)
{
	return store_write(s, ST_JOB_UPDATE, NULL, job_id, ev, n, err);
}

int store_job_get(struct store *s, const char *id_or_prefix, struct store_job **out, char **err)
{
	struct store_job **a = NULL;
	size_t n = 0;
	sqlite3_stmt *st;
	int rc = -1;

	*out = NULL;
	if ((st = store_stmt(s, ST_JOB_BY_ID, err)) == NULL)
		return -1;
	store_bind_text(st, 1, id_or_prefix);
	if (store_job_rows(s, st, "looking up a job", &a, &n, err) < 0)
		return -1;
	if (n == 0 && strlen(id_or_prefix) >= 4) {
		if ((st = store_stmt(s, ST_JOB_BY_PREFIX, err)) == NULL)
			goto out;
		store_bind_text(st, 1, id_or_prefix);
		if (store_job_rows(s, st, "looking up a job", &a, &n, err) < 0)
			goto out;
	}
	if (n == 1) {
		*out = a[0];
		a[0] = NULL;
	}
	rc = n == 0 ? 1 : n == 1 ? 0 : 2;
out:
	store_job_array_free(a, n);
	return rc;
}

int store_job_reusable(struct store *s, int64_t uid, const char *input_digest,
                       double finished_since, struct store_job **out, char **err)
{
	struct store_job **a = NULL;
	size_t n = 0;
	sqlite3_stmt *st;

	*out = NULL;
	if ((st = store_stmt(s, ST_JOB_REUSABLE, err)) == NULL)
		return -1;
	sqlite3_bind_int64(st, 1, uid);
	store_bind_text(st, 2, input_digest);
	sqlite3_bind_double(st, 3, finished_since);
	if (store_job_rows(s, st, "looking for a build to reuse", &a, &n, err) < 0)
		return -1;
	if (n == 1) {
		*out = a[0];
		a[0] = NULL;
	}
	store_job_array_free(a, n);
	return 0;
}

int store_job_list(struct store *s, const struct store_job_filter *f, struct store_job ***out,
                   size_t *n, char **err)
{
	sqlite3_stmt *st = store_stmt(s, ST_JOB_LIST, err);
	char *states = NULL;
	int rc;

	*out = NULL;
	*n = 0;
	if (st == NULL)
		return -1;
	if (f->states != NULL) {
		size_t len = 2;

		for (size_t i = 0; f->states[i] != NULL; i++)
			len += strlen(f->states[i]) + 1;
		states = xmalloc(len);
		strcpy(states, ",");
		for (size_t i = 0; f->states[i] != NULL; i++) {
			strcat(states, f->states[i]);
			strcat(states, ",");
		}
	}
	sqlite3_bind_int64(st, 1, f->uid);
	store_bind_text(st, 2, states);
	if (f->before_created != 0 || f->before_id != NULL)
		sqlite3_bind_double(st, 3, f->before_created);
	store_bind_text(st, 4, f->before_id);
	sqlite3_bind_int(st, 5, f->limit > 0 ? f->limit : -1);
	rc = store_job_rows(s, st, "listing jobs", out, n, err);
	free(states);
	return rc;
}

int store_jobs_unfinished(struct store *s, struct store_job ***out, size_t *n, char **err)
{
	sqlite3_stmt *st = store_stmt(s, ST_JOBS_UNFINISHED, err);

	*out = NULL;
	*n = 0;
	return st == NULL ? -1 : store_job_rows(s, st, "listing unfinished jobs", out, n, err);
}

int store_job_counts(struct store *s, void (*cb)(void *arg, const char *state, int64_t n),
                     void *arg, char **err)
{
	sqlite3_stmt *st = store_stmt(s, ST_JOB_COUNTS, err);
	int rc;

	if (st == NULL)
		return -1;
	while ((rc = sqlite3_step(st)) == SQLITE_ROW)
		cb(arg, (const char *)sqlite3_column_text(st, 0), sqlite3_column_int64(st, 1));
	if (rc != SQLITE_DONE)
		store_db_err(s, "counting jobs", err);
	store_stmt_done(st);
	return rc == SQLITE_DONE ? 0 : -1;
}

/* One number from a statement with one text parameter. */
static int store_scalar(struct store *s, enum store_stmt_id id, const char *param, int64_t *out,
                        const char *what, char **err)
{
	sqlite3_stmt *st = store_stmt(s, id, err);
	int rc;

	*out = 0;
	if (st == NULL)
		return -1;
	store_bind_text(st, 1, param);
	rc = sqlite3_step(st);
	if (rc == SQLITE_ROW)
		*out = sqlite3_column_int64(st, 0);
	else if (rc != SQLITE_DONE)
		store_db_err(s, what, err);
	store_stmt_done(st);
	return rc == SQLITE_ROW || rc == SQLITE_DONE ? 0 : -1;
}

int store_spool_bytes_of_uid(struct store *s, int64_t uid, int64_t *bytes, char **err)
{
	char buf[32];
	snprintf(buf, sizeof(buf), "%lld", (long long)uid);
	return store_scalar(s, ST_SPOOL_BYTES_OF_UID, buf, bytes, "adding up a user's spool", err);
}

int store_job_log_bytes(struct store *s, const char *id, int64_t *bytes, char **err)
{
	return store_scalar(s, ST_JOB_LOG_BYTES, id, bytes, "measuring a job's log", err);
}

int store_job_delete(struct store *s, const char *id, char **err)
{
	sqlite3_stmt *st;
	char *what = xasprintf("deleting job %s", id);
	int rc = -1;

	if (store_begin(s, what, err) < 0)
		goto out;
	if ((st = store_stmt(s, ST_JOB_DELETE, err)) == NULL)
		goto fail;
	store_bind_text(st, 1, id);
	if (store_step_done(s, st, what, err) < 0 || store_commit(s, what, err) < 0)
		goto fail;
	rc = 0;
	goto out;
fail:
	store_rollback(s);
out:
	free(what);
	return rc;
}

int store_events_prune(struct store *s, double finished_before, int64_t *deleted, char **err)
{
	sqlite3_stmt *st;
	const char *what = "deleting old events";
	int rc = -1;

	*deleted = 0;
	if (store_begin(s, what, err) < 0)
		return -1;
	if ((st = store_stmt(s, ST_EVENTS_PRUNE, err)) == NULL)
		goto fail;
	sqlite3_bind_double(st, 1, finished_before);
	if (store_step_done(s, st, what, err) < 0)
		goto fail;
	*deleted = sqlite3_changes64(s->db);
	if (store_commit(s, what, err) < 0)
		goto fail;
	rc = 0;
	return rc;
fail:
	store_rollback(s);
	return rc;
}

int store_events_after(struct store *s, const char *job_id, int64_t after_seq, int limit,
                       struct store_event **out, size_t *n, char **err)
{
	sqlite3_stmt *st = store_stmt(s, ST_EVENTS_AFTER, err);
	struct store_event *a = NULL;
	size_t len = 0, cap = 0;
	int rc;

	*out = NULL;
	*n = 0;
	if (st == NULL)
		return -1;
	store_bind_text(st, 1, job_id);
	sqlite3_bind_int64(st, 2, after_seq);
	sqlite3_bind_int(st, 3, limit > 0 ? limit : -1);
	while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
		struct store_event *e;

		if (len == cap) {
			cap = cap ? cap * 2 : 64;
			a = xrealloc(a, cap * sizeof(*a));
		}
		e = &a[len++];
		e->seq = sqlite3_column_int64(st, 0);
		e->time = sqlite3_column_double(st, 1);
		e->kind = store_col_text(st, 2);
		e->step = store_col_text(st, 3);
		e->text = store_col_text(st, 4);
		e->data_json = store_col_text(st, 5);
	}
	if (rc != SQLITE_DONE) {
		store_db_err(s, "reading events", err);
		store_event_array_free(a, len);
		a = NULL;
		len = 0;
	}
	store_stmt_done(st);
	*out = a;
	*n = len;
	return rc == SQLITE_DONE ? 0 : -1;
}

int store_spool_in_use(struct store *s, const char *digest, bool *in_use, char **err)
{
	sqlite3_stmt *st = store_stmt(s, ST_SPOOL_IN_USE, err);
	int rc;

	*in_use = false;
	if (st == NULL)
		return -1;
	store_bind_text(st, 1, digest);
	rc = sqlite3_step(st);
	if (rc == SQLITE_ROW)
		*in_use = sqlite3_column_int(st, 0) != 0;
	else
		store_db_err(s, "checking a spool digest", err);
	store_stmt_done(st);
	return rc == SQLITE_ROW ? 0 : -1;
}

int store_spool_digests(struct store *s, char ***digests, size_t *n, char **err)
{
	sqlite3_stmt *st = store_stmt(s, ST_SPOOL_DIGESTS, err);
	char **a = NULL;
	size_t len = 0, cap = 0;
	int rc;

	*digests = NULL;
	*n = 0;
	if (st == NULL)
		return -1;
	while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
		if (len == cap) {
			cap = cap ? cap * 2 : 16;
			a = xrealloc(a, cap * sizeof(*a));
		}
		a[len++] = store_col_text(st, 0);
	}
	if (rc != SQLITE_DONE) {
		store_db_err(s, "listing spool digests", err);
		store_digests_free(a, len);
		a = NULL;
		len = 0;
	}
	store_stmt_done(st);
	*digests = a;
	*n = len;
	return rc == SQLITE_DONE ? 0 : -1;
}

void store_digests_free(char **digests, size_t n)
{
	for (size_t i = 0; i < n; i++)
		free(digests[i]);
	free(digests);
}

void store_set_max_page_count(struct store *s, int64_t pages)
{
	char *sql = xasprintf("PRAGMA max_page_count = %lld", (long long)pages);
	char *err = NULL;

	if (store_exec(s, sql, "setting max_page_count", &err) < 0) {
		log_warnx("store: %s", err);
		free(err);
	}
	free(sql);
}

struct store_job *store_job_dup(const struct store_job *j)
{
	struct store_job *d = xmalloc(sizeof(*d));

	*d = *j;
	for (size_t i = 0; i < STORE_JOB_NCOLS; i++) {
		char **f = (char **)((char *)d + store_job_cols[i].off);

		if ((store_job_cols[i].kind == COL_TEXT || store_job_cols[i].kind == COL_JSON) &&
		    *f != NULL)
			*f = xstrdup(*f);
	}
	return d;
}

void store_job_free(struct store_job *j)
{
	if (j == NULL)
		return;
	for (size_t i = 0; i < STORE_JOB_NCOLS; i++)
		if (store_job_cols[i].kind == COL_TEXT || store_job_cols[i].kind == COL_JSON)
			free(*(char **)((char *)j + store_job_cols[i].off));
	free(j);
}

void store_job_array_free(struct store_job **a, size_t n)
{
	for (size_t i = 0; i < n; i++)
		store_job_free(a[i]);
	free(a);
}

void store_event_array_free(struct store_event *ev, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		free(ev[i].kind);
		free(ev[i].step);
		free(ev[i].text);
		free(ev[i].data_json);
	}
	free(ev);
}
