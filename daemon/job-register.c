/*
 * Registration, for both backends: look for a snapshot this job registered before (its
 * snapbuild.job tag) and create one only when there is none, so a crash or a lost
 * answer never makes two; then point the alias at it — after checking, again, that
 * the alias is free or the caller's own (alias.h): it may have moved since submit.
 * A cancel during registration lets the request in flight answer, then retires the
 * snapshot it made (recorded first, so a restart retires it too).
 */
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "access.h"
#include "alias.h"
#include "api.h"
#include "config.h"
#include "daemon.h"
#include "job.h"
#include "peer.h"
#include "util.h"

#define REGISTER_ATTEMPTS 4
#define RETIRE_ATTEMPTS   5

static void register_lookup(struct job *j);
static void register_retire(struct job *j);

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
	job_finish(j, JOB_SUCCEEDED, NULL, NULL);
}

static void alias_checked_cb(void *arg, enum alias_verdict v, const char *holder_id,
                             const struct api_error *err)
{
	struct job *j = arg;
	j->op = NULL;
	if (v == ALIAS_ERROR) {
		job_fail_api(j, "checking who holds the alias failed", err);
		return;
	}
	if (v == ALIAS_TAKEN &&
	    (holder_id == NULL || strcmp(holder_id, j->rec->snapshot_id) != 0)) {
		char *msg =
		    xasprintf("alias %s now points at snapshot %s, which another user's "
		              "build made; it was left alone (snapshot %s is registered)",
		              j->rec->alias, holder_id ? holder_id : "?", j->rec->snapshot_id);
		job_fail(j, msg, ALIAS_TAKEN_HINT);
		free(msg);
		return;
	}
	j->op =
	    api_snapshot_alias(j->js->d->api, j->rec->snapshot_id, j->rec->alias, alias_done_cb, j);
}

/* Whether the job's owner may set any alias (root, the admin group, the daemon's user). */
static bool alias_owner_privileged(struct job *j)
{
	struct rpc_peer peer = {(uid_t)j->rec->uid, (gid_t)j->rec->gid, 0};
	return peer.uid == geteuid() || access_is_admin(j->js->d->config, &peer);
}

static void alias_start(struct job *j)
{
	if (alias_owner_privileged(j)) {
		j->op = api_snapshot_alias(j->js->d->api, j->rec->snapshot_id, j->rec->alias,
		                           alias_done_cb, j);
		return;
	}
	j->op = alias_check(j->js->d->api, j->js->d->store, j->rec->alias, (uid_t)j->rec->uid,
	                    alias_checked_cb, j);
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
	job_set_str(&j->rec->snapshot_id, json_object_get_string(id));
	job_log(j, "register", "snapshot %s registered", j->rec->snapshot_id);
	if (j->state == JOB_CANCELLING) {
		/* Cancelled while registering: the snapshot must not outlive the cancel. */
		if (job_flush(j, NULL) == 0) {
			j->attempts = 0;
			register_retire(j);
		}
		return;
	}
	if (j->rec->alias) {
		if (job_set_state(j, JOB_ALIASING))
			alias_start(j);
		return;
	}
	job_finish(j, JOB_SUCCEEDED, NULL, NULL);
}

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
	if (j->state == JOB_CANCELLING) {
		/* Nothing registered yet, and nothing will be. */
		job_finish(j, JOB_CANCELLED, NULL, NULL);
		return;
	}
	json_object *tags = json_tokener_parse(j->rec->tags_json ? j->rec->tags_json : "{}");
	if (!json_object_is_type(tags, json_type_object)) {
		json_object_put(tags);
		tags = json_object_new_object();
	}
	json_object_object_add(tags, ALIAS_JOB_TAG, json_object_new_string(j->rec->id));
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
	    api_snapshot_find_by_tag(j->js->d->api, ALIAS_JOB_TAG, j->rec->id, lookup_done_cb, j);
}

static void retire_done_cb(void *arg, const struct api_error *err, long status, json_object *body)
{
	(void)body;
	struct job *j = arg;
	j->op = NULL;
	if (err && status != 404 && ++j->attempts < RETIRE_ATTEMPTS) {
		job_after(j, 1.0 * j->attempts, register_retire);
		return;
	}
	if (err && status != 404)
		job_warn(j, "register",
		         "the snapshot registered as the cancel came could not be "
		         "retired; retire it with snapbuild snapshots retire");
	else
		job_log(j, "register", "snapshot %s retired: the job was cancelled",
		        j->rec->snapshot_id);
	job_finish(j, JOB_CANCELLED, NULL, NULL);
}

static void register_retire(struct job *j)
{
	char *esc = api_escape(j->rec->snapshot_id);
	char *path = xasprintf("/v1/snapshots/%s/retire", esc);
	j->op = api_mgmt_call(j->js->d->api, "POST", path, NULL, true, retire_done_cb, j);
	free(path);
	free(esc);
}

void job_register_start(struct job *j)
{
	j->attempts = 0;
	job_log(j, "register", "registering %s (%s)", j->rec->image_ref, j->rec->architecture);
	register_lookup(j);
}

void job_register_resume(struct job *j)
{
	if (j->state == JOB_CANCELLING) {
		if (j->rec->snapshot_id) {
			j->attempts = 0;
			register_retire(j);
		} else {
			/* A registration may have committed unseen: look, then retire it. */
			register_lookup(j);
		}
		return;
	}
	if (j->state == JOB_ALIASING) {
		alias_start(j);
	} else if (j->rec->snapshot_id && j->rec->alias) {
		if (job_set_state(j, JOB_ALIASING))
			alias_start(j);
	} else if (j->rec->snapshot_id) {
		job_finish(j, JOB_SUCCEEDED, NULL, NULL);
	} else {
		job_register_start(j);
	}
}

bool job_register_cancel(struct job *j)
{
	if (j->state != JOB_REGISTERING)
		return false;
	return job_set_state(j, JOB_CANCELLING);
}
