/*
 * Builds that need not run again.  Every job records a digest of what its result
 * depends on: the context archive's SHA-256 (or the source image), the Dockerfile
 * path, build args, architecture, cache key, backend, tags and TTL.  A new job of the
 * same user with the same digest, when an earlier one succeeded within reuse_max_age
 * and its snapshot still exists unretired (asked of the API), takes that snapshot at
 * once: no upload, no build; the alias is still set, by the usual rules (alias.h).
 * Reuse stays within one user: the archive digest a client declares is trusted without
 * reading the archive only because the job it matches is the caller's own, whose
 * archive was checked when it was taken in.  `no_cache` bypasses it.
 *
 * Also here: the default cache key, so that consecutive builds of one project share
 * layers on the builder even when the client gives none (default_cache_key = auto).
 */
#include <stdlib.h>
#include <string.h>

#include <json-c/json.h>
#include <openssl/evp.h>

#include "api.h"
#include "config.h"
#include "daemon.h"
#include "job.h"
#include "jobs.h"
#include "log.h"
#include "util.h"

#define REUSE_DIGEST_VERSION "snapbuild-inputs-1"

struct job_reuse {
	struct store_job *earlier;
	struct api_op *op;
	job_reuse_cb cb;
	void *arg;
};

static void reuse_field(EVP_MD_CTX *md, const char *name, const char *value)
{
	EVP_DigestUpdate(md, name, strlen(name) + 1);
	EVP_DigestUpdate(md, value ? "=" : "!", 1);
	if (value != NULL)
		EVP_DigestUpdate(md, value, strlen(value) + 1);
}

static int reuse_key_cmp(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

/* A JSON object of strings, as its pairs in key order: the order a client sent is moot. */
static void reuse_map(EVP_MD_CTX *md, const char *name, const char *json_text)
{
	json_object *o = json_tokener_parse(json_text ? json_text : "{}");
	size_t n = 0;
	const char **keys;

	EVP_DigestUpdate(md, name, strlen(name) + 1);
	if (o == NULL || !json_object_is_type(o, json_type_object)) {
		reuse_field(md, "raw", json_text);
		json_object_put(o);
		return;
	}
	keys = xcalloc((size_t)json_object_object_length(o) + 1, sizeof(*keys));
	json_object_object_foreach(o, k, v)
	{
		(void)v;
		keys[n++] = k;
	}
	qsort(keys, n, sizeof(*keys), reuse_key_cmp);
	for (size_t i = 0; i < n; i++) {
		json_object *val = json_object_object_get(o, keys[i]);

		reuse_field(md, keys[i], json_object_get_string(val));
	}
	EVP_DigestUpdate(md, "", 1);
	free(keys);
	json_object_put(o);
}

char *job_reuse_digest(const struct store_job *r, const char *archive_sha256)
{
	EVP_MD_CTX *md = EVP_MD_CTX_new();
	unsigned char out[EVP_MAX_MD_SIZE];
	unsigned len = 0;
	char *hex = xmalloc(65), ttl[32];

	if (md == NULL || EVP_DigestInit_ex(md, EVP_sha256(), NULL) != 1)
		abort();
	snprintf(ttl, sizeof(ttl), "%lld", (long long)r->ttl);
	reuse_field(md, "version", REUSE_DIGEST_VERSION);
	reuse_field(md, "archive", r->image ? NULL : archive_sha256);
	reuse_field(md, "image", r->image);
	reuse_field(md, "dockerfile", r->dockerfile);
	reuse_map(md, "build_args", r->build_args_json);
	reuse_field(md, "architecture", r->architecture);
	reuse_field(md, "cache_key", r->cache_key);
	reuse_field(md, "backend", r->backend);
	reuse_map(md, "tags", r->tags_json);
	reuse_field(md, "ttl", ttl);
	if (EVP_DigestFinal_ex(md, out, &len) != 1 || len != 32)
		abort();
	EVP_MD_CTX_free(md);
	for (unsigned i = 0; i < len; i++)
		snprintf(hex + 2 * i, 3, "%02x", out[i]);
	return hex;
}

char *job_reuse_default_cache_key(const struct config *cfg, const struct job_request *req,
                                  uid_t uid)
{
	EVP_MD_CTX *md;
	unsigned char out[EVP_MAX_MD_SIZE];
	unsigned len = 0;
	const char *project = NULL, *kind = NULL;
	char *key;

	if (!cfg->auto_cache_key || req->no_cache || req->cache_key != NULL || req->image)
		return NULL;
	size_t plen;

	if (req->context_desc != NULL && req->context_desc[0] == '/') {
		kind = "context";
		project = req->context_desc;
		plen = strlen(project);
	} else if (req->alias != NULL) {
		/* "namespace@tag" names a project by its namespace: v1 and v2 share layers. */
		kind = "alias";
		project = req->alias;
		plen = strcspn(project, "@");
		if (project[plen] == '\0' || plen == 0)
			plen = strlen(project);
	} else {
		return NULL;
	}
	md = EVP_MD_CTX_new();
	if (md == NULL || EVP_DigestInit_ex(md, EVP_sha256(), NULL) != 1)
		abort();
	EVP_DigestUpdate(md, kind, strlen(kind) + 1);
	EVP_DigestUpdate(md, project, plen);
	if (EVP_DigestFinal_ex(md, out, &len) != 1 || len != 32)
		abort();
	EVP_MD_CTX_free(md);
	key = xasprintf("snapbuild/u%u/%02x%02x%02x%02x%02x%02x%02x%02x", (unsigned)uid, out[0],
	                out[1], out[2], out[3], out[4], out[5], out[6], out[7]);
	return key;
}

static bool reuse_snapshot_live(json_object *snapshot)
{
	json_object *v = NULL;

	if (snapshot == NULL || !json_object_is_type(snapshot, json_type_object))
		return false;
	if (!json_object_object_get_ex(snapshot, "retired_at", &v) || v == NULL)
		return true;
	if (json_object_is_type(v, json_type_double) || json_object_is_type(v, json_type_int))
		return json_object_get_double(v) <= 0;
	return false; /* a date: retired */
}

static void reuse_checked_cb(void *arg, const struct api_error *err, long status, json_object *body)
{
	struct job_reuse *ru = arg;
	bool live = err == NULL && reuse_snapshot_live(body);

	(void)status;
	ru->op = NULL;
	if (!live)
		log_info("not reusing job %s: its snapshot %s %s", ru->earlier->id,
		         ru->earlier->snapshot_id,
		         err ? (err->status == 404 ? "is gone" : "could not be checked")
		             : "is retired");
	ru->cb(ru->arg, live ? ru->earlier : NULL);
	job_reuse_cancel(ru);
}

struct job_reuse *job_reuse_find(struct jobs *js, const struct store_job *rec, job_reuse_cb cb,
                                 void *arg)
{
	const struct config *cfg = js->d->config;
	struct store_job *earlier = NULL;
	struct job_reuse *ru;
	char *err = NULL, *esc, *path;

	if (rec->input_digest == NULL || cfg->reuse_max_age <= 0)
		return NULL;
	if (store_job_reusable(js->d->store, rec->uid, rec->input_digest,
	                       now_seconds() - cfg->reuse_max_age, &earlier, &err) < 0) {
		log_warnx("looking for a build to reuse: %s", err);
		free(err);
		return NULL;
	}
	if (earlier == NULL)
		return NULL;
	ru = xcalloc(1, sizeof(*ru));
	ru->earlier = earlier;
	ru->cb = cb;
	ru->arg = arg;
	esc = api_escape(earlier->snapshot_id);
	path = xasprintf("/v1/snapshots/%s", esc);
	ru->op = api_mgmt_call(js->d->api, "GET", path, NULL, false, reuse_checked_cb, ru);
	free(path);
	free(esc);
	return ru;
}

void job_reuse_cancel(struct job_reuse *ru)
{
	if (ru == NULL)
		return;
	if (ru->op != NULL)
		api_op_cancel(ru->op);
	store_job_free(ru->earlier);
	free(ru);
}

void job_reuse_take(struct store_job *r, const struct store_job *earlier)
{
	job_set_str(&r->spool_digest, earlier->spool_digest);
	r->spool_size = earlier->spool_size;
	r->file_count = earlier->file_count;
	job_set_str(&r->image_ref, earlier->image_ref);
	job_set_str(&r->snapshot_id, earlier->snapshot_id);
	job_set_str(&r->reused_from, earlier->id);
}

void job_reuse_announce(struct job *j)
{
	job_log(j, "build",
	        "identical to job %.8s… (same context and options): reusing snapshot %s — "
	        "`--no-cache` builds again",
	        j->rec->reused_from, j->rec->snapshot_id);
}
