/*
 * Unit tests for the SQLite store: every field survives a round trip, listing and
 * prefix lookup behave as documented, events are appended whole or not at all,
 * migrations carry an old database forward, a newer one is refused, files are 0600,
 * and a full disk fails one write cleanly while the store keeps working.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <dirent.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "store.h"
#include "util.h"

/* The version-1 schema exactly as it shipped, to build an old database by hand. */
static const char v1_schema[] =
    "CREATE TABLE jobs ("
    " id TEXT PRIMARY KEY NOT NULL, state TEXT NOT NULL, uid INTEGER NOT NULL,"
    " gid INTEGER NOT NULL, backend TEXT, architecture TEXT, context_desc TEXT, image TEXT,"
    " dockerfile TEXT, alias TEXT, tags_json TEXT NOT NULL DEFAULT '{}',"
    " build_args_json TEXT NOT NULL DEFAULT '{}', ttl INTEGER NOT NULL DEFAULT 0,"
    " cache_key TEXT, spool_digest TEXT, spool_size INTEGER NOT NULL DEFAULT 0,"
    " file_count INTEGER NOT NULL DEFAULT 0, image_name TEXT, build_id TEXT, image_ref TEXT,"
    " snapshot_id TEXT, cancel_requested INTEGER NOT NULL DEFAULT 0, error TEXT,"
    " created_at REAL NOT NULL, updated_at REAL NOT NULL,"
    " finished_at REAL NOT NULL DEFAULT 0, last_seq INTEGER NOT NULL DEFAULT 0);"
    "CREATE TABLE events ("
    " job_id TEXT NOT NULL REFERENCES jobs(id) ON DELETE CASCADE, seq INTEGER NOT NULL,"
    " time REAL NOT NULL, kind TEXT NOT NULL, step TEXT, text TEXT, data_json TEXT,"
    " PRIMARY KEY (job_id, seq)) WITHOUT ROWID;"
    "PRAGMA user_version = 1;";

struct fixture {
	char dir[64];
	char *db_path;
	struct store *s;
};

static int fixture_setup(void **state)
{
	struct fixture *fx = xcalloc(1, sizeof(*fx));
	char *err = NULL;

	snprintf(fx->dir, sizeof(fx->dir), "/tmp/test-store-XXXXXX");
	assert_non_null(mkdtemp(fx->dir));
	fx->db_path = xasprintf("%s/snapbuild.db", fx->dir);
	fx->s = store_open(fx->db_path, &err);
	if (fx->s == NULL)
		fail_msg("store_open: %s", err);
	*state = fx;
	return 0;
}

static int fixture_teardown(void **state)
{
	struct fixture *fx = *state;
	DIR *d;
	struct dirent *de;

	store_close(fx->s);
	if ((d = opendir(fx->dir)) != NULL) {
		while ((de = readdir(d)) != NULL) {
			char *p;

			if (de->d_name[0] == '.')
				continue;
			p = xasprintf("%s/%s", fx->dir, de->d_name);
			unlink(p);
			free(p);
		}
		closedir(d);
	}
	rmdir(fx->dir);
	free(fx->db_path);
	free(fx);
	return 0;
}

static struct store_job *job_new(const char *id, const char *state, int64_t uid, double created)
{
	struct store_job *j = xcalloc(1, sizeof(*j));

	snprintf(j->id, sizeof(j->id), "%s", id);
	j->state = xstrdup(state);
	j->uid = uid;
	j->gid = uid;
	j->backend = xstrdup("remote");
	j->architecture = xstrdup("amd64");
	j->dockerfile = xstrdup("Dockerfile");
	j->created_at = created;
	j->updated_at = created;
	return j;
}

static void insert_job(struct store *s, const char *id, const char *state, int64_t uid,
                       double created)
{
	struct store_job *j = job_new(id, state, uid, created);
	char *err = NULL;

	if (store_job_insert(s, j, &err) != 0)
		fail_msg("insert %s: %s", id, err);
	store_job_free(j);
}

static void set_str(char **f, const char *v)
{
	free(*f);
	*f = v ? xstrdup(v) : NULL;
}

static void assert_str_eq_or_null(const char *a, const char *b)
{
	if (a == NULL || b == NULL)
		assert_ptr_equal(a, b);
	else
		assert_string_equal(a, b);
}

static void assert_jobs_equal(const struct store_job *a, const struct store_job *b)
{
	assert_string_equal(a->id, b->id);
	assert_str_eq_or_null(a->state, b->state);
	assert_int_equal(a->uid, b->uid);
	assert_int_equal(a->gid, b->gid);
	assert_str_eq_or_null(a->backend, b->backend);
	assert_str_eq_or_null(a->architecture, b->architecture);
	assert_str_eq_or_null(a->context_desc, b->context_desc);
	assert_str_eq_or_null(a->image, b->image);
	assert_str_eq_or_null(a->dockerfile, b->dockerfile);
	assert_str_eq_or_null(a->alias, b->alias);
	assert_str_eq_or_null(a->tags_json, b->tags_json);
	assert_str_eq_or_null(a->build_args_json, b->build_args_json);
	assert_int_equal(a->ttl, b->ttl);
	assert_str_eq_or_null(a->cache_key, b->cache_key);
	assert_str_eq_or_null(a->spool_digest, b->spool_digest);
	assert_int_equal(a->spool_size, b->spool_size);
	assert_int_equal(a->file_count, b->file_count);
	assert_str_eq_or_null(a->image_name, b->image_name);
	assert_str_eq_or_null(a->build_id, b->build_id);
	assert_str_eq_or_null(a->image_ref, b->image_ref);
	assert_str_eq_or_null(a->snapshot_id, b->snapshot_id);
	assert_str_eq_or_null(a->last_event_id, b->last_event_id);
	assert_int_equal(a->cancel_requested, b->cancel_requested);
	assert_str_eq_or_null(a->error, b->error);
	assert_str_eq_or_null(a->error_hint, b->error_hint);
	assert_str_eq_or_null(a->retry_of, b->retry_of);
	assert_true(a->created_at == b->created_at);
	assert_true(a->updated_at == b->updated_at);
	assert_true(a->finished_at == b->finished_at);
	assert_int_equal(a->last_seq, b->last_seq);
}

static struct store_job *get_job(struct store *s, const char *id)
{
	struct store_job *j = NULL;
	char *err = NULL;
	int rc = store_job_get(s, id, &j, &err);

	if (rc != 0)
		fail_msg("get %s: rc %d %s", id, rc, err ? err : "");
	return j;
}

/* Each field lands in the column of its name (binding and reading share one table,
 * so a round trip alone would not notice two swapped columns). */
static void assert_column(const char *db_path, const char *id, const char *col, const char *want)
{
	char *sql = xasprintf("SELECT CAST(%s AS TEXT) FROM jobs WHERE id = '%s'", col, id);
	sqlite3 *db;
	sqlite3_stmt *st;

	assert_int_equal(sqlite3_open(db_path, &db), SQLITE_OK);
	assert_int_equal(sqlite3_prepare_v2(db, sql, -1, &st, NULL), SQLITE_OK);
	assert_int_equal(sqlite3_step(st), SQLITE_ROW);
	assert_str_eq_or_null((const char *)sqlite3_column_text(st, 0), want);
	sqlite3_finalize(st);
	sqlite3_close(db);
	free(sql);
}

static void test_round_trip(void **state)
{
	struct fixture *fx = *state;
	struct store_job *j =
	    job_new("0f8e2a44-1111-4222-8333-944455556666", "packing", 1000, 1700000000.125);
	struct store_job *got, *dup;
	char *err = NULL;

	j->gid = 1001;
	set_str(&j->backend, "local");
	set_str(&j->architecture, "arm64");
	set_str(&j->context_desc, "/home/u/app");
	set_str(&j->image, "docker.io/library/alpine:3");
	set_str(&j->dockerfile, "build/Dockerfile");
	set_str(&j->alias, "ns@app:v1");
	set_str(&j->tags_json, "{\"team\":\"x\"}");
	set_str(&j->build_args_json, "{\"A\":\"1\"}");
	j->ttl = 3600;
	set_str(&j->cache_key, "ck");
	set_str(&j->spool_digest, "ab12");
	j->spool_size = 1LL << 40;
	j->file_count = 12345;
	set_str(&j->image_name, "image-x:y");
	set_str(&j->build_id, "b-1");
	set_str(&j->image_ref, "reg/x@sha256:00");
	set_str(&j->snapshot_id, "snap-1");
	set_str(&j->last_event_id, "ev-9");
	j->cancel_requested = 1;
	set_str(&j->error, "boom 'quoted' \"text\"");
	set_str(&j->error_hint, "try again");
	set_str(&j->retry_of, "aaaaaaaa-0000-4000-8000-000000000000");
	j->updated_at = 1700000001.5;
	j->finished_at = 1700000002.25;
	j->last_seq = 7;

	assert_int_equal(store_job_insert(fx->s, j, &err), 0);
	got = get_job(fx->s, j->id);
	assert_jobs_equal(j, got);
	store_job_free(got);

	static const char *const by_name[][2] = {
	    {"state", "packing"},
	    {"uid", "1000"},
	    {"gid", "1001"},
	    {"backend", "local"},
	    {"architecture", "arm64"},
	    {"context_desc", "/home/u/app"},
	    {"image", "docker.io/library/alpine:3"},
	    {"dockerfile", "build/Dockerfile"},
	    {"alias", "ns@app:v1"},
	    {"tags_json", "{\"team\":\"x\"}"},
	    {"build_args_json", "{\"A\":\"1\"}"},
	    {"ttl", "3600"},
	    {"cache_key", "ck"},
	    {"spool_digest", "ab12"},
	    {"spool_size", "1099511627776"},
	    {"file_count", "12345"},
	    {"image_name", "image-x:y"},
	    {"build_id", "b-1"},
	    {"image_ref", "reg/x@sha256:00"},
	    {"snapshot_id", "snap-1"},
	    {"last_event_id", "ev-9"},
	    {"cancel_requested", "1"},
	    {"error", "boom 'quoted' \"text\""},
	    {"error_hint", "try again"},
	    {"retry_of", "aaaaaaaa-0000-4000-8000-000000000000"},
	    {"created_at", "1700000000.125"},
	    {"updated_at", "1700000001.5"},
	    {"finished_at", "1700000002.25"},
	    {"last_seq", "7"},
	};
	for (size_t i = 0; i < sizeof(by_name) / sizeof(by_name[0]); i++)
		assert_column(fx->db_path, j->id, by_name[i][0], by_name[i][1]);

	/* A second insert of the same id is refused. */
	assert_int_equal(store_job_insert(fx->s, j, &err), -1);
	assert_non_null(err);
	free(err);
	err = NULL;

	/* Every field changes on save; NULLs come back as NULL, JSON NULL as "{}". */
	set_str(&j->state, "succeeded");
	j->uid = 0;
	j->gid = 0;
	set_str(&j->backend, "remote");
	set_str(&j->architecture, "amd64");
	set_str(&j->context_desc, "image:alpine");
	set_str(&j->image, NULL);
	set_str(&j->dockerfile, "Dockerfile");
	set_str(&j->alias, NULL);
	set_str(&j->tags_json, NULL);
	set_str(&j->build_args_json, "{}");
	j->ttl = 0;
	set_str(&j->cache_key, NULL);
	set_str(&j->spool_digest, "cd34");
	j->spool_size = 5;
	j->file_count = 6;
	set_str(&j->image_name, "image-a:b");
	set_str(&j->build_id, "b-2");
	set_str(&j->image_ref, NULL);
	set_str(&j->snapshot_id, "snap-2");
	set_str(&j->last_event_id, NULL);
	j->cancel_requested = 0;
	set_str(&j->error, NULL);
	set_str(&j->error_hint, NULL);
	set_str(&j->retry_of, NULL);
	j->created_at = 1700000010.0;
	j->updated_at = 1700000011.0;
	j->finished_at = 0;
	j->last_seq = 9;
	assert_int_equal(store_job_save(fx->s, j, &err), 0);
	got = get_job(fx->s, j->id);
	set_str(&j->tags_json, "{}");
	assert_jobs_equal(j, got);
	store_job_free(got);

	/* A save from a stale copy never lowers last_seq. */
	j->last_seq = 3;
	assert_int_equal(store_job_save(fx->s, j, &err), 0);
	got = get_job(fx->s, j->id);
	assert_int_equal(got->last_seq, 9);
	store_job_free(got);

	dup = store_job_dup(j);
	assert_jobs_equal(j, dup);
	assert_ptr_not_equal(j->state, dup->state);
	store_job_free(dup);

	/* Saving a job that does not exist is an error. */
	snprintf(j->id, sizeof(j->id), "%s", "ffffffff-0000-4000-8000-000000000000");
	assert_int_equal(store_job_save(fx->s, j, &err), -1);
	assert_non_null(strstr(err, "no such job"));
	free(err);
	store_job_free(j);
}

static void assert_list_ids(struct store_job **a, size_t n, const char *const *want)
{
	size_t i;

	for (i = 0; want[i] != NULL; i++) {
		assert_true(i < n);
		assert_string_equal(a[i]->id, want[i]);
	}
	assert_int_equal(n, i);
}

static void test_list(void **state)
{
	struct fixture *fx = *state;
	struct store_job **a;
	size_t n;
	char *err = NULL;

	insert_job(fx->s, "j1", "succeeded", 1000, 100);
	insert_job(fx->s, "j2", "queued", 1001, 200);
	insert_job(fx->s, "j3a", "failed", 1000, 300);
	insert_job(fx->s, "j3b", "queued", 1000, 300);
	insert_job(fx->s, "j4", "building", 1001, 400);

	struct store_job_filter all = {.uid = -1};
	assert_int_equal(store_job_list(fx->s, &all, &a, &n, &err), 0);
	assert_list_ids(a, n, (const char *[]){"j4", "j3b", "j3a", "j2", "j1", NULL});
	store_job_array_free(a, n);

	struct store_job_filter mine = {.uid = 1000};
	assert_int_equal(store_job_list(fx->s, &mine, &a, &n, &err), 0);
	assert_list_ids(a, n, (const char *[]){"j3b", "j3a", "j1", NULL});
	store_job_array_free(a, n);

	const char *const active[] = {"queued", "building", NULL};
	struct store_job_filter act = {.uid = -1, .states = active};
	assert_int_equal(store_job_list(fx->s, &act, &a, &n, &err), 0);
	assert_list_ids(a, n, (const char *[]){"j4", "j3b", "j2", NULL});
	store_job_array_free(a, n);

	struct store_job_filter both = {.uid = 1000, .states = active};
	assert_int_equal(store_job_list(fx->s, &both, &a, &n, &err), 0);
	assert_list_ids(a, n, (const char *[]){"j3b", NULL});
	store_job_array_free(a, n);

	/* Cursor pagination, two at a time, through a tie on created_at. */
	const char *const pages[][3] = {{"j4", "j3b", NULL}, {"j3a", "j2", NULL}, {"j1", NULL}};
	struct store_job_filter pg = {.uid = -1, .limit = 2};
	char last_id[37];
	for (size_t p = 0; p < 3; p++) {
		assert_int_equal(store_job_list(fx->s, &pg, &a, &n, &err), 0);
		assert_list_ids(a, n, pages[p]);
		snprintf(last_id, sizeof(last_id), "%s", a[n - 1]->id);
		pg.before_created = a[n - 1]->created_at;
		pg.before_id = last_id;
		store_job_array_free(a, n);
	}
	assert_int_equal(store_job_list(fx->s, &pg, &a, &n, &err), 0);
	assert_int_equal(n, 0);
	store_job_array_free(a, n);

	/* A time alone means strictly older than that time. */
	struct store_job_filter older = {.uid = -1, .before_created = 300};
	assert_int_equal(store_job_list(fx->s, &older, &a, &n, &err), 0);
	assert_list_ids(a, n, (const char *[]){"j2", "j1", NULL});
	store_job_array_free(a, n);
}

static void test_prefix_lookup(void **state)
{
	struct fixture *fx = *state;
	struct store_job *j = NULL;
	char *err = NULL;

	insert_job(fx->s, "aaaa1111-0000-4000-8000-000000000000", "queued", 1, 1);
	insert_job(fx->s, "aaaa2222-0000-4000-8000-000000000000", "queued", 1, 2);
	insert_job(fx->s, "bbbb1111-0000-4000-8000-000000000000", "queued", 1, 3);

	assert_int_equal(store_job_get(fx->s, "aaaa", &j, &err), 2);
	assert_null(j);
	assert_int_equal(store_job_get(fx->s, "aaaa2", &j, &err), 0);
	assert_string_equal(j->id, "aaaa2222-0000-4000-8000-000000000000");
	store_job_free(j);
	assert_int_equal(store_job_get(fx->s, "bbbb", &j, &err), 0);
	assert_string_equal(j->id, "bbbb1111-0000-4000-8000-000000000000");
	store_job_free(j);
	/* Unique but too short. */
	assert_int_equal(store_job_get(fx->s, "bbb", &j, &err), 1);
	assert_null(j);
	assert_int_equal(store_job_get(fx->s, "", &j, &err), 1);
	assert_int_equal(store_job_get(fx->s, "cccc", &j, &err), 1);
	assert_int_equal(store_job_get(fx->s, "aaaa1111-0000-4000-8000-000000000000", &j, &err), 0);
	assert_string_equal(j->id, "aaaa1111-0000-4000-8000-000000000000");
	store_job_free(j);
}

static void test_events(void **state)
{
	struct fixture *fx = *state;
	struct store_event first[] = {
	    {.seq = 1, .time = 10.5, .kind = "state", .text = "queued"},
	    {.seq = 2, .time = 11, .kind = "log", .step = "build", .text = "line 1"},
	    {.seq = 3,
	     .time = 12,
	     .kind = "progress",
	     .step = "upload",
	     .text = "50%",
	     .data_json = "{\"bytes\":5}"},
	};
	struct store_event second[] = {
	    {.seq = 4, .time = 13, .kind = "log", .step = "build", .text = "line 2"},
	    {.seq = 5, .time = 14, .kind = "warning", .text = "careful"},
	};
	struct store_event dup[] = {
	    {.seq = 6, .time = 15, .kind = "log", .text = "new"},
	    {.seq = 3, .time = 15, .kind = "log", .text = "again"},
	};
	struct store_event *ev;
	struct store_job *j;
	size_t n;
	char *err = NULL;

	insert_job(fx->s, "job-e", "building", 1, 1);
	assert_int_equal(store_events_append(fx->s, "job-e", first, 3, &err), 0);
	assert_int_equal(store_events_append(fx->s, "job-e", second, 2, &err), 0);

	assert_int_equal(store_events_after(fx->s, "job-e", 0, 0, &ev, &n, &err), 0);
	assert_int_equal(n, 5);
	for (size_t i = 0; i < n; i++)
		assert_int_equal(ev[i].seq, (int64_t)i + 1);
	assert_true(ev[0].time == 10.5);
	assert_string_equal(ev[0].kind, "state");
	assert_null(ev[0].step);
	assert_string_equal(ev[0].text, "queued");
	assert_null(ev[0].data_json);
	assert_string_equal(ev[2].step, "upload");
	assert_string_equal(ev[2].data_json, "{\"bytes\":5}");
	store_event_array_free(ev, n);

	assert_int_equal(store_events_after(fx->s, "job-e", 2, 2, &ev, &n, &err), 0);
	assert_int_equal(n, 2);
	assert_int_equal(ev[0].seq, 3);
	assert_int_equal(ev[1].seq, 4);
	store_event_array_free(ev, n);

	j = get_job(fx->s, "job-e");
	assert_int_equal(j->last_seq, 5);

	/* A seq already stored fails the whole batch: seq 6 is not written either. */
	assert_int_equal(store_events_append(fx->s, "job-e", dup, 2, &err), -1);
	assert_non_null(strstr(err, "already stored"));
	free(err);
	err = NULL;
	assert_int_equal(store_events_after(fx->s, "job-e", 5, 0, &ev, &n, &err), 0);
	assert_int_equal(n, 0);
	store_event_array_free(ev, n);
	store_job_free(j);
	j = get_job(fx->s, "job-e");
	assert_int_equal(j->last_seq, 5);

	/* The job row and its events move together, or not at all. */
	set_str(&j->state, "failed");
	assert_int_equal(store_job_save_with_events(fx->s, j, dup, 2, &err), -1);
	free(err);
	err = NULL;
	store_job_free(j);
	j = get_job(fx->s, "job-e");
	assert_string_equal(j->state, "building");
	set_str(&j->state, "failed");
	assert_int_equal(store_job_save_with_events(fx->s, j, dup, 1, &err), 0);
	store_job_free(j);
	j = get_job(fx->s, "job-e");
	assert_string_equal(j->state, "failed");
	assert_int_equal(j->last_seq, 6);
	store_job_free(j);

	/* Events for a job that does not exist are refused. */
	assert_int_equal(store_events_append(fx->s, "nope", second, 1, &err), -1);
	assert_non_null(strstr(err, "no such job"));
	free(err);
}

struct counts {
	int64_t n[16];
	const char *names[16];
	size_t k;
};

static void count_cb(void *arg, const char *state, int64_t n)
{
	struct counts *c = arg;
	assert_true(c->k < 16);
	c->names[c->k] = xstrdup(state);
	c->n[c->k++] = n;
}

static int64_t count_of(const struct counts *c, const char *state)
{
	for (size_t i = 0; i < c->k; i++)
		if (strcmp(c->names[i], state) == 0)
			return c->n[i];
	return 0;
}

static void test_counts_queue_unfinished(void **state)
{
	struct fixture *fx = *state;
	struct counts c = {0};
	struct store_job **a;
	size_t n;
	int64_t bytes;
	char *err = NULL;

	insert_job(fx->s, "q2", "queued", 1, 20);
	insert_job(fx->s, "q1", "queued", 1, 10);
	insert_job(fx->s, "q3b", "queued", 1, 30);
	insert_job(fx->s, "q3a", "queued", 1, 30);
	insert_job(fx->s, "b", "building", 1, 5);
	insert_job(fx->s, "s", "succeeded", 1, 1);
	insert_job(fx->s, "f", "failed", 1, 2);
	insert_job(fx->s, "c", "cancelling", 1, 3);

	assert_int_equal(store_job_counts(fx->s, count_cb, &c, &err), 0);
	assert_int_equal(count_of(&c, "queued"), 4);
	assert_int_equal(count_of(&c, "building"), 1);
	assert_int_equal(count_of(&c, "succeeded"), 1);
	assert_int_equal(count_of(&c, "failed"), 1);
	assert_int_equal(count_of(&c, "cancelling"), 1);
	assert_int_equal(count_of(&c, "packing"), 0);
	assert_int_equal(c.k, 5);
	for (size_t i = 0; i < c.k; i++)
		free((char *)c.names[i]);

	/* No spool yet; the log of a job without events weighs nothing. */
	assert_int_equal(store_spool_bytes_of_uid(fx->s, 1, &bytes, &err), 0);
	assert_int_equal(bytes, 0);
	assert_int_equal(store_job_log_bytes(fx->s, "q1", &bytes, &err), 0);
	assert_int_equal(bytes, 0);

	assert_int_equal(store_jobs_unfinished(fx->s, &a, &n, &err), 0);
	assert_list_ids(a, n, (const char *[]){"c", "b", "q1", "q2", "q3a", "q3b", NULL});
	store_job_array_free(a, n);
}

static int64_t count_rows(const char *db_path, const char *sql)
{
	sqlite3 *db;
	sqlite3_stmt *st;
	int64_t v;

	assert_int_equal(sqlite3_open(db_path, &db), SQLITE_OK);
	assert_int_equal(sqlite3_prepare_v2(db, sql, -1, &st, NULL), SQLITE_OK);
	assert_int_equal(sqlite3_step(st), SQLITE_ROW);
	v = sqlite3_column_int64(st, 0);
	sqlite3_finalize(st);
	sqlite3_close(db);
	return v;
}

static void test_delete_cascades(void **state)
{
	struct fixture *fx = *state;
	struct store_event ev[] = {{.seq = 1, .time = 1, .kind = "log", .text = "a"},
	                           {.seq = 2, .time = 2, .kind = "log", .text = "b"}};
	struct store_job *j = NULL;
	char *err = NULL;

	insert_job(fx->s, "gone", "failed", 1, 1);
	insert_job(fx->s, "kept", "failed", 1, 2);
	assert_int_equal(store_events_append(fx->s, "gone", ev, 2, &err), 0);
	assert_int_equal(store_events_append(fx->s, "kept", ev, 2, &err), 0);
	assert_int_equal(count_rows(fx->db_path, "SELECT count(*) FROM events"), 4);

	assert_int_equal(store_job_delete(fx->s, "gone", &err), 0);
	assert_int_equal(store_job_get(fx->s, "gone", &j, &err), 1);
	assert_int_equal(
	    count_rows(fx->db_path, "SELECT count(*) FROM events WHERE job_id = 'gone'"), 0);
	assert_int_equal(
	    count_rows(fx->db_path, "SELECT count(*) FROM events WHERE job_id = 'kept'"), 2);
	assert_int_equal(store_job_delete(fx->s, "gone", &err), 0);
}

/* Old finished jobs lose their events, not their records; running and recent ones keep all. */
static void test_events_prune(void **state)
{
	struct fixture *fx = *state;
	struct store_event ev[] = {{.seq = 1, .time = 1, .kind = "log", .text = "a"},
	                           {.seq = 2, .time = 2, .kind = "log", .text = "b"}};
	const char *ids[] = {"old", "recent", "running"};
	double finished[] = {100, 1000, 0};
	const char *states[] = {"succeeded", "failed", "building"};
	int64_t deleted = -1;
	struct store_job *j;
	char *err = NULL;

	for (int i = 0; i < 3; i++) {
		j = job_new(ids[i], states[i], 1, 1);
		j->finished_at = finished[i];
		assert_int_equal(store_job_insert(fx->s, j, &err), 0);
		store_job_free(j);
		assert_int_equal(store_events_append(fx->s, ids[i], ev, 2, &err), 0);
	}
	assert_int_equal(store_events_prune(fx->s, 500, &deleted, &err), 0);
	assert_int_equal(deleted, 2);
	assert_int_equal(
	    count_rows(fx->db_path, "SELECT count(*) FROM events WHERE job_id = 'old'"), 0);
	assert_int_equal(count_rows(fx->db_path, "SELECT count(*) FROM events"), 4);
	j = get_job(fx->s, "old");
	assert_int_equal(j->last_seq, 2);
	store_job_free(j);
	assert_int_equal(store_events_prune(fx->s, 500, &deleted, &err), 0);
	assert_int_equal(deleted, 0);
}

static void test_spool_digests(void **state)
{
	struct fixture *fx = *state;
	struct store_job *j = job_new("s1", "queued", 1, 1);
	char **d;
	size_t n;
	bool in_use;
	char *err = NULL;

	set_str(&j->spool_digest, "bbbb");
	assert_int_equal(store_job_insert(fx->s, j, &err), 0);
	snprintf(j->id, sizeof(j->id), "s2");
	set_str(&j->state, "succeeded");
	assert_int_equal(store_job_insert(fx->s, j, &err), 0);
	snprintf(j->id, sizeof(j->id), "s3");
	set_str(&j->spool_digest, "aaaa");
	assert_int_equal(store_job_insert(fx->s, j, &err), 0);
	store_job_free(j);
	insert_job(fx->s, "s4", "packing", 1, 1);

	assert_int_equal(store_spool_digests(fx->s, &d, &n, &err), 0);
	assert_int_equal(n, 2);
	assert_string_equal(d[0], "aaaa");
	assert_string_equal(d[1], "bbbb");
	store_digests_free(d, n);

	assert_int_equal(store_spool_in_use(fx->s, "bbbb", &in_use, &err), 0);
	assert_true(in_use);
	assert_int_equal(store_spool_in_use(fx->s, "cccc", &in_use, &err), 0);
	assert_false(in_use);
	assert_int_equal(store_job_delete(fx->s, "s3", &err), 0);
	assert_int_equal(store_spool_in_use(fx->s, "aaaa", &in_use, &err), 0);
	assert_false(in_use);
}

static void exec_sql(const char *db_path, const char *sql)
{
	sqlite3 *db;
	char *msg = NULL;

	assert_int_equal(sqlite3_open(db_path, &db), SQLITE_OK);
	if (sqlite3_exec(db, sql, NULL, NULL, &msg) != SQLITE_OK)
		fail_msg("%s: %s", sql, msg);
	sqlite3_close(db);
}

static void test_migrates_v1(void **state)
{
	struct fixture *fx = *state;
	char *path = xasprintf("%s/old.db", fx->dir);
	struct store *s;
	struct store_job *j;
	struct store_event *ev;
	size_t n;
	char *err = NULL;

	exec_sql(path, v1_schema);
	exec_sql(path, "INSERT INTO jobs (id, state, uid, gid, backend, architecture, tags_json,"
	               " build_id, created_at, updated_at, last_seq)"
	               " VALUES ('old-job', 'building', 7, 8, 'remote', 'arm64', '{\"k\":\"v\"}',"
	               " 'b-old', 1.5, 2.5, 1);"
	               "INSERT INTO events (job_id, seq, time, kind, step, text)"
	               " VALUES ('old-job', 1, 2.0, 'log', 'build', 'hello');");
	assert_int_equal(count_rows(path, "PRAGMA user_version"), 1);

	s = store_open(path, &err);
	if (s == NULL)
		fail_msg("store_open: %s", err);
	assert_true(store_schema_version() >= 2);
	assert_int_equal(count_rows(path, "PRAGMA user_version"), store_schema_version());
	assert_int_equal(
	    count_rows(path, "SELECT count(*) FROM sqlite_master WHERE name = 'jobs_created'"), 1);

	j = get_job(s, "old-job");
	assert_string_equal(j->state, "building");
	assert_int_equal(j->uid, 7);
	assert_string_equal(j->architecture, "arm64");
	assert_string_equal(j->tags_json, "{\"k\":\"v\"}");
	assert_string_equal(j->build_args_json, "{}");
	assert_string_equal(j->build_id, "b-old");
	assert_null(j->retry_of);
	assert_null(j->error_hint);
	assert_null(j->last_event_id);
	assert_int_equal(j->last_seq, 1);

	/* The new columns are usable on the migrated row. */
	set_str(&j->last_event_id, "sse-3");
	set_str(&j->error_hint, "hint");
	assert_int_equal(store_job_save(s, j, &err), 0);
	store_job_free(j);
	j = get_job(s, "old-job");
	assert_string_equal(j->last_event_id, "sse-3");
	assert_string_equal(j->error_hint, "hint");
	store_job_free(j);

	assert_int_equal(store_events_after(s, "old-job", 0, 0, &ev, &n, &err), 0);
	assert_int_equal(n, 1);
	assert_string_equal(ev[0].text, "hello");
	store_event_array_free(ev, n);
	store_close(s);

	/* Opening again is a no-op at the latest version. */
	s = store_open(path, &err);
	assert_non_null(s);
	store_close(s);
	assert_int_equal(count_rows(path, "PRAGMA user_version"), store_schema_version());
	free(path);
}

static void test_refuses_future_schema(void **state)
{
	struct fixture *fx = *state;
	char *path = xasprintf("%s/future.db", fx->dir);
	char *sql = xasprintf("CREATE TABLE jobs (id TEXT); PRAGMA user_version = %d;",
	                      store_schema_version() + 1);
	char *err = NULL;

	exec_sql(path, sql);
	assert_null(store_open(path, &err));
	assert_non_null(err);
	assert_non_null(strstr(err, "newer"));
	free(err);
	/* Untouched: still the future version. */
	assert_int_equal(count_rows(path, "PRAGMA user_version"), store_schema_version() + 1);
	free(sql);
	free(path);
}

static void assert_mode_0600(const char *path)
{
	struct stat sb;

	if (stat(path, &sb) != 0)
		fail_msg("stat %s", path);
	assert_int_equal(sb.st_mode & 07777, 0600);
}

static void test_file_modes(void **state)
{
	struct fixture *fx = *state;
	char *path = xasprintf("%s/modes.db", fx->dir);
	char *wal = xasprintf("%s-wal", path);
	char *shm = xasprintf("%s-shm", path);
	mode_t old = umask(0);
	struct store *s;
	char *err = NULL;

	/* A permissive umask must not matter. */
	s = store_open(path, &err);
	umask(old);
	assert_non_null(s);
	insert_job(s, "m", "queued", 1, 1);
	assert_mode_0600(path);
	assert_mode_0600(wal);
	assert_mode_0600(shm);
	store_close(s);

	/* An existing database with a loose mode is tightened. */
	assert_int_equal(chmod(path, 0644), 0);
	s = store_open(path, &err);
	assert_non_null(s);
	assert_mode_0600(path);
	store_close(s);
	free(path);
	free(wal);
	free(shm);
}

static void test_disk_full(void **state)
{
	struct fixture *fx = *state;
	struct store_job *j, *got;
	struct store_event ev[2];
	struct store_event *out;
	struct store_job **a;
	size_t n;
	char *big = xmalloc(256 * 1024);
	char *err = NULL;

	memset(big, 'x', 256 * 1024 - 1);
	big[256 * 1024 - 1] = '\0';
	insert_job(fx->s, "full", "building", 1, 1);
	j = get_job(fx->s, "full");
	ev[0] = (struct store_event){.seq = 1, .time = 1, .kind = "log", .text = "small"};
	ev[1] = (struct store_event){.seq = 2, .time = 2, .kind = "log", .text = big};

	store_set_max_page_count(fx->s, 1);
	set_str(&j->state, "failed");
	assert_int_equal(store_job_save_with_events(fx->s, j, ev, 2, &err), -1);
	assert_non_null(err);
	assert_non_null(strstr(err, "database or disk is full ("));
	free(err);
	err = NULL;
	assert_int_equal(store_events_append(fx->s, "full", ev, 2, &err), -1);
	assert_non_null(strstr(err, "database or disk is full ("));
	free(err);
	err = NULL;

	/* Nothing half written, and reads still work. */
	got = get_job(fx->s, "full");
	assert_string_equal(got->state, "building");
	assert_int_equal(got->last_seq, 0);
	store_job_free(got);
	assert_int_equal(store_events_after(fx->s, "full", 0, 0, &out, &n, &err), 0);
	assert_int_equal(n, 0);
	store_event_array_free(out, n);
	struct store_job_filter all = {.uid = -1};
	assert_int_equal(store_job_list(fx->s, &all, &a, &n, &err), 0);
	assert_int_equal(n, 1);
	store_job_array_free(a, n);

	/* Once there is room again, the same write goes through. */
	store_set_max_page_count(fx->s, 1 << 30);
	assert_int_equal(store_job_save_with_events(fx->s, j, ev, 2, &err), 0);
	got = get_job(fx->s, "full");
	assert_string_equal(got->state, "failed");
	assert_int_equal(got->last_seq, 2);
	store_job_free(got);
	assert_int_equal(store_events_after(fx->s, "full", 0, 0, &out, &n, &err), 0);
	assert_int_equal(n, 2);
	assert_int_equal(strlen(out[1].text), 256 * 1024 - 1);
	store_event_array_free(out, n);
	store_job_free(j);
	free(big);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test_setup_teardown(test_round_trip, fixture_setup, fixture_teardown),
	    cmocka_unit_test_setup_teardown(test_list, fixture_setup, fixture_teardown),
	    cmocka_unit_test_setup_teardown(test_prefix_lookup, fixture_setup, fixture_teardown),
	    cmocka_unit_test_setup_teardown(test_events, fixture_setup, fixture_teardown),
	    cmocka_unit_test_setup_teardown(test_counts_queue_unfinished, fixture_setup,
	                                    fixture_teardown),
	    cmocka_unit_test_setup_teardown(test_delete_cascades, fixture_setup, fixture_teardown),
	    cmocka_unit_test_setup_teardown(test_spool_digests, fixture_setup, fixture_teardown),
	    cmocka_unit_test_setup_teardown(test_events_prune, fixture_setup, fixture_teardown),
	    cmocka_unit_test_setup_teardown(test_migrates_v1, fixture_setup, fixture_teardown),
	    cmocka_unit_test_setup_teardown(test_refuses_future_schema, fixture_setup,
	                                    fixture_teardown),
	    cmocka_unit_test_setup_teardown(test_file_modes, fixture_setup, fixture_teardown),
	    cmocka_unit_test_setup_teardown(test_disk_full, fixture_setup, fixture_teardown),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
