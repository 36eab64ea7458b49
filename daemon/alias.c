/*
 * Alias ownership (alias.h).
 */
#include "alias.h"

#include <stdlib.h>
#include <string.h>

#include "api.h"
#include "store.h"
#include "util.h"

struct alias_req {
	struct store *store;
	uid_t uid;
	void (*cb)(void *arg, enum alias_verdict v, const char *holder_id,
	           const struct api_error *err);
	void *arg;
};

static const char *alias_jstr(json_object *o, const char *key)
{
	json_object *v = NULL;
	if (!json_object_is_type(o, json_type_object) || !json_object_object_get_ex(o, key, &v) ||
	    !json_object_is_type(v, json_type_string))
		return NULL;
	return json_object_get_string(v);
}

bool alias_snapshot_built_by(struct store *store, json_object *s, uid_t uid)
{
	json_object *tags = NULL;
	struct store_job *job = NULL;
	const char *job_id;
	bool owner;

	if (store == NULL || !json_object_object_get_ex(s, "tags", &tags) ||
	    (job_id = alias_jstr(tags, ALIAS_JOB_TAG)) == NULL || !uuid_valid(job_id) ||
	    store_job_get(store, job_id, &job, NULL) != 0)
		return false;
	/* exact: a tag naming only a prefix of someone's job id proves nothing */
	owner = strcmp(job->id, job_id) == 0 && job->uid == (int64_t)uid;
	store_job_free(job);
	return owner;
}

static void alias_done_cb(void *arg, const struct api_error *err, long status, json_object *body)
{
	struct alias_req *r = arg;
	const char *id = alias_jstr(body, "id");

	if (err != NULL && status == 404)
		r->cb(r->arg, ALIAS_FREE, NULL, NULL);
	else if (err != NULL)
		r->cb(r->arg, ALIAS_ERROR, NULL, err);
	else if (id == NULL) {
		struct api_error e = {.status = status,
		                      .message = "the API answered without a snapshot object"};
		r->cb(r->arg, ALIAS_ERROR, NULL, &e);
	} else
		r->cb(r->arg,
		      alias_snapshot_built_by(r->store, body, r->uid) ? ALIAS_YOURS : ALIAS_TAKEN,
		      id, NULL);
	free(r);
}

struct api_op *alias_check(struct api *api, struct store *store, const char *alias, uid_t uid,
                           void (*cb)(void *arg, enum alias_verdict v, const char *holder_id,
                                      const struct api_error *err),
                           void *arg)
{
	struct alias_req *r = xcalloc(1, sizeof(*r));
	char *esc = api_escape(alias);
	char *path = xasprintf("/v1/snapshots/@%s", esc);
	r->store = store;
	r->uid = uid;
	r->cb = cb;
	r->arg = arg;
	struct api_op *op = api_mgmt_call(api, "GET", path, NULL, true, alias_done_cb, r);
	free(path);
	free(esc);
	return op;
}
