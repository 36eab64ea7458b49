/*
 * The snapshot.* methods: list, get, alias, unalias and retire Together snapshots
 * through the management API with the daemon's credentials, so no user needs the
 * API key.  Answers are the API's own objects, untouched; the API's failures become
 * -32004 (or -32001 for 404) with its message, the HTTP status and a hint.
 *
 * Rights: whoever may connect to the socket may list and read every snapshot of the
 * project.  Changing one (alias, unalias, retire) is for root, the admin group and
 * the daemon's own user, or for the owner of the job that built it: the daemon tags
 * each snapshot it registers with snapbuild.job=<job id>, so the snapshot itself
 * says which job, and the job record says whose.  Checking that takes a GET first;
 * privileged callers skip it when they name a snapshot by id.
 *
 * A call is a small chain of API requests (struct snap_req); each step's callback
 * starts the next or answers.  A caller that goes away cancels the request in flight.
 */
#include <ctype.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "access.h"
#include "alias.h"
#include "api.h"
#include "config.h"
#include "daemon.h"
#include "jobs.h"
#include "methods.h"
#include "params.h"
#include "protocol.h"
#include "util.h"


enum snap_kind { SNAP_LIST, SNAP_GET, SNAP_ALIASES, SNAP_ALIAS, SNAP_UNALIAS, SNAP_RETIRE };

/* Where a chain of API requests stands. */
enum snap_step {
	SNAP_STEP_FETCH,  /* list or get: the one request */
	SNAP_STEP_TARGET, /* read the snapshot named by 'id' (for its id and owner) */
	SNAP_STEP_HOLDER, /* read the snapshot an alias points at now (404: none) */
	SNAP_STEP_CHANGE, /* the change itself: alias, delete alias or retire */
};

struct snap_req {
	struct rpc_call *call;
	struct daemon *d;
	enum snap_kind kind;
	enum snap_step step;
	struct api_op *op;
	bool privileged;
	char *path;        /* list/get: the request's path and query */
	char *ref;         /* 'id' as given: a UUID or @alias */
	char *alias;       /* alias/unalias: the alias */
	char *snapshot_id; /* the target's id once known */
	char *holder_id;   /* unalias: the snapshot the alias pointed at, if any */
};

static void snap_req_next(struct snap_req *r);

/* --- helpers ------------------------------------------------------------------------ */

/* "/v1/snapshots/<uuid>" or "/v1/snapshots/@<alias>" for a checked reference. */
static char *snap_ref_path(const char *ref)
{
	char *esc = api_escape(ref[0] == '@' ? ref + 1 : ref);
	char *path = xasprintf("/v1/snapshots/%s%s", ref[0] == '@' ? "@" : "", esc);

	free(esc);
	return path;
}

static const char *snap_jstr(json_object *o, const char *key)
{
	json_object *v = NULL;

	if (!json_object_is_type(o, json_type_object) || !json_object_object_get_ex(o, key, &v) ||
	    !json_object_is_type(v, json_type_string))
		return NULL;
	return json_object_get_string(v);
}

/* --- parameters --------------------------------------------------------------------- */

/* 'key' names a snapshot: its id (a UUID) or @alias. */
static bool snap_get_ref(struct rpc_call *call, json_object *params, const char *key,
                         const char **out)
{
	if (!params_required_string(call, params, key, out))
		return false;
	if (uuid_valid(*out) || ((*out)[0] == '@' && api_alias_valid(*out + 1)))
		return true;
	return params_invalid(call, "'%s' must be a snapshot id (a UUID) or @alias, not '%.80s'",
	                      key, *out);
}

static bool snap_get_alias(struct rpc_call *call, json_object *params, const char **out)
{
	if (!params_required_string(call, params, "alias", out))
		return false;
	if (api_alias_valid(*out))
		return true;
	return params_invalid(call,
	                      "'alias' must be 'tag' or 'namespace@tag' without spaces or '/', "
	                      "not '%.80s'",
	                      *out);
}

/* --- requests ----------------------------------------------------------------------- */

static void snap_req_close_cb(struct rpc_call *call, void *arg);

static struct snap_req *snap_req_new(struct rpc_call *call, enum snap_kind kind)
{
	struct snap_req *r = xcalloc(1, sizeof(*r));
	const struct rpc_peer *peer = rpc_call_peer(call);

	r->call = call;
	r->d = rpc_call_daemon(call);
	r->kind = kind;
	r->privileged = access_is_admin(r->d->config, peer) || peer->uid == geteuid();
	rpc_call_set_close_cb(call, snap_req_close_cb, r);
	return r;
}

static void snap_req_free(struct snap_req *r)
{
	free(r->path);
	free(r->ref);
	free(r->alias);
	free(r->snapshot_id);
	free(r->holder_id);
	free(r);
}

static void snap_reply(struct snap_req *r, json_object *result)
{
	rpc_reply(r->call, result);
	snap_req_free(r);
}

static void snap_reply_error(struct snap_req *r, int code, const char *message, const char *hint)
{
	rpc_reply_error_hint(r->call, code, message, hint);
	snap_req_free(r);
}

/* The API's failure: its message, with {"status", "hint"} as data. */
static void snap_reply_api_error(struct snap_req *r, const struct api_error *err)
{
	json_object *data = json_object_new_object();

	json_object_object_add(data, "status", json_object_new_int64(err->status));
	if (err->hint != NULL)
		json_object_object_add(data, "hint", json_object_new_string(err->hint));
	rpc_reply_error(r->call, err->status == 404 ? SB_ERR_NOT_FOUND : SB_ERR_UPSTREAM,
	                err->message, data);
	snap_req_free(r);
}

static void snap_req_close_cb(struct rpc_call *call, void *arg)
{
	struct snap_req *r = arg;

	(void)call;
	api_op_cancel(r->op);
	r->op = NULL;
	snap_reply_error(r, SB_ERR_BUSY, "the caller went away", NULL);
}

/* May this caller change snapshot s?  Only when privileged or when s was built by one
 * of the caller's own jobs (still in the daemon's records). */
static bool snap_may_change(struct snap_req *r, json_object *s)
{
	return r->privileged ||
	       alias_snapshot_built_by(r->d->store, s, rpc_call_peer(r->call)->uid);
}

static void snap_deny(struct snap_req *r, const char *id)
{
	char *msg = xasprintf("snapshot %s was not built by one of your jobs", id);

	snap_reply_error(r, SB_ERR_PERMISSION_DENIED, msg,
	                 r->kind == SNAP_ALIAS && r->holder_id != NULL
	                     ? ALIAS_TAKEN_HINT
	                     : "only root, the admin group, the daemon's own user and the owner "
	                       "of the job that built a snapshot may change it or its aliases");
	free(msg);
}

/* Checks a snapshot object from the API; false after answering. */
static bool snap_check_snapshot(struct snap_req *r, json_object *s)
{
	if (snap_jstr(s, "id") != NULL)
		return true;
	snap_reply_error(r, SB_ERR_UPSTREAM, "the API answered without a snapshot object", NULL);
	return false;
}

static void snap_done_cb(void *arg, const struct api_error *err, long status, json_object *body)
{
	struct snap_req *r = arg;
	json_object *data = NULL, *res;

	r->op = NULL;
	if (err != NULL && r->step == SNAP_STEP_HOLDER && status == 404) {
		/* an alias nobody holds yet */
		r->step = SNAP_STEP_CHANGE;
		snap_req_next(r);
		return;
	}
	if (err != NULL) {
		snap_reply_api_error(r, err);
		return;
	}
	switch (r->step) {
	case SNAP_STEP_FETCH:
		if (r->kind == SNAP_LIST && (!json_object_object_get_ex(body, "data", &data) ||
		                             !json_object_is_type(data, json_type_array))) {
			snap_reply_error(r, SB_ERR_UPSTREAM,
			                 "the API answered without a snapshot page", NULL);
			return;
		}
		if (r->kind == SNAP_GET && !snap_check_snapshot(r, body))
			return;
		if (r->kind == SNAP_ALIASES && !json_object_is_type(body, json_type_array)) {
			snap_reply_error(r, SB_ERR_UPSTREAM,
			                 "the API answered without a list of aliases", NULL);
			return;
		}
		snap_reply(r, json_object_get(body));
		return;
	case SNAP_STEP_TARGET:
		if (!snap_check_snapshot(r, body))
			return;
		r->snapshot_id = xstrdup(snap_jstr(body, "id"));
		if (!snap_may_change(r, body)) {
			snap_deny(r, r->snapshot_id);
			return;
		}
		r->step =
		    r->kind == SNAP_ALIAS && !r->privileged ? SNAP_STEP_HOLDER : SNAP_STEP_CHANGE;
		snap_req_next(r);
		return;
	case SNAP_STEP_HOLDER:
		if (!snap_check_snapshot(r, body))
			return;
		r->holder_id = xstrdup(snap_jstr(body, "id"));
		if (!snap_may_change(r, body)) {
			snap_deny(r, r->holder_id);
			return;
		}
		r->step = SNAP_STEP_CHANGE;
		snap_req_next(r);
		return;
	case SNAP_STEP_CHANGE:
		break;
	}
	if (r->kind == SNAP_RETIRE) {
		if (snap_check_snapshot(r, body))
			snap_reply(r, json_object_get(body));
		return;
	}
	res = json_object_new_object();
	if (r->kind == SNAP_ALIAS) {
		json_object_object_add(res, "snapshot_id", json_object_new_string(r->snapshot_id));
		json_object_object_add(res, "alias", json_object_new_string(r->alias));
	} else {
		json_object_object_add(res, "alias", json_object_new_string(r->alias));
		json_object_object_add(res, "snapshot_id",
		                       r->holder_id ? json_object_new_string(r->holder_id) : NULL);
	}
	snap_reply(r, res);
}

/* Starts the request for the current step.  Every one is retried as the api module
 * retries: reads, the alias upsert, the alias delete and the retire are idempotent. */
static void snap_req_next(struct snap_req *r)
{
	struct api *api = r->d->api;
	json_object *body = NULL;
	char *path = NULL, *esc;

	switch (r->step) {
	case SNAP_STEP_FETCH:
		r->op = api_mgmt_call(api, "GET", r->path, NULL, true, snap_done_cb, r);
		return;
	case SNAP_STEP_TARGET:
		path = snap_ref_path(r->ref);
		r->op = api_mgmt_call(api, "GET", path, NULL, true, snap_done_cb, r);
		break;
	case SNAP_STEP_HOLDER:
		esc = api_escape(r->alias);
		path = xasprintf("/v1/snapshots/@%s", esc);
		free(esc);
		r->op = api_mgmt_call(api, "GET", path, NULL, true, snap_done_cb, r);
		break;
	case SNAP_STEP_CHANGE:
		if (r->kind == SNAP_RETIRE) {
			esc = api_escape(r->snapshot_id);
			path = xasprintf("/v1/snapshots/%s/retire", esc);
			free(esc);
			r->op = api_mgmt_call(api, "POST", path, NULL, true, snap_done_cb, r);
		} else if (r->kind == SNAP_ALIAS) {
			esc = api_escape(r->snapshot_id);
			path = xasprintf("/v1/snapshots/%s/aliases", esc);
			free(esc);
			body = json_object_new_object();
			json_object_object_add(body, "alias", json_object_new_string(r->alias));
			r->op = api_mgmt_call(api, "POST", path, body, true, snap_done_cb, r);
		} else {
			esc = api_escape(r->alias);
			path = xasprintf("/v1/snapshot-aliases/%s", esc);
			free(esc);
			r->op = api_mgmt_call(api, "DELETE", path, NULL, true, snap_done_cb, r);
		}
		break;
	}
	json_object_put(body);
	free(path);
}

/* Without a key every call would only collect a 401: say what to do instead. */
bool methods_have_key(struct rpc_call *call)
{
	if (rpc_call_daemon(call)->config->api_key != NULL)
		return true;
	rpc_reply_error_hint(call, SB_ERR_UPSTREAM, "the daemon has no API key configured",
	                     "give it one: for the system service, write the key to "
	                     "/etc/snapbuild/api-key (mode 0600) and `systemctl restart "
	                     "snapbuildd.service`; otherwise TOGETHER_API_KEY, --api-key-file or "
	                     "api_key_file (snapbuildd(8))");
	return false;
}

/* --- the methods -------------------------------------------------------------------- */

static void snapshot_list(struct rpc_call *call, json_object *params)
{
	json_object *tags = NULL;
	const char *cursor = NULL;
	bool exclude = false;
	int64_t limit = 0;
	struct snap_req *r;
	char *query, *next, *ek, *ev;

	if (!params_string(call, params, "cursor", &cursor) ||
	    !params_int(call, params, "limit", 1, 100, &limit) ||
	    !params_bool(call, params, "exclude_retired", &exclude) ||
	    !params_string_map(call, params, "tags", NULL, &tags))
		return;
	if (cursor != NULL && *cursor == '\0') {
		params_invalid(call, "'cursor' must not be empty");
		return;
	}
	if (!methods_have_key(call))
		return;

	query = xstrdup("");
	if (limit > 0) {
		next = xasprintf("%s&limit=%lld", query, (long long)limit);
		free(query);
		query = next;
	}
	if (cursor != NULL) {
		ev = api_escape(cursor);
		next = xasprintf("%s&cursor=%s", query, ev);
		free(ev);
		free(query);
		query = next;
	}
	if (tags != NULL) {
		json_object_object_foreach(tags, k, tv)
		{
			ek = api_escape(k);
			ev = api_escape(json_object_get_string(tv));
			next = xasprintf("%s&tags%%5B%s%%5D=%s", query, ek, ev);
			free(ek);
			free(ev);
			free(query);
			query = next;
		}
	}
	if (exclude) {
		next = xasprintf("%s&exclude_retired=true", query);
		free(query);
		query = next;
	}
	r = snap_req_new(call, SNAP_LIST);
	r->path = xasprintf("/v1/snapshots%s%s", *query ? "?" : "", *query ? query + 1 : "");
	free(query);
	r->step = SNAP_STEP_FETCH;
	snap_req_next(r);
}

static void snapshot_get(struct rpc_call *call, json_object *params)
{
	const char *ref;
	struct snap_req *r;

	if (!snap_get_ref(call, params, "id", &ref) ||
	    !methods_have_key(call))
		return;
	r = snap_req_new(call, SNAP_GET);
	r->path = snap_ref_path(ref);
	r->step = SNAP_STEP_FETCH;
	snap_req_next(r);
}

/* A snapshot's aliases, by its id (the API lists them only by id). */
static void snapshot_aliases(struct rpc_call *call, json_object *params)
{
	const char *id;
	struct snap_req *r;
	char *esc;

	if (!params_required_string(call, params, "id", &id))
		return;
	if (!uuid_valid(id)) {
		params_invalid(call, "'id' must be a snapshot id (a UUID), not '%.80s'", id);
		return;
	}
	if (!methods_have_key(call))
		return;
	r = snap_req_new(call, SNAP_ALIASES);
	esc = api_escape(id);
	r->path = xasprintf("/v1/snapshots/%s/aliases", esc);
	free(esc);
	r->step = SNAP_STEP_FETCH;
	snap_req_next(r);
}

/* alias and retire name their target by 'id'; an id needs no lookup when the caller
 * may change anything anyway. */
static void snap_start_change(struct snap_req *r, const char *ref)
{
	r->ref = xstrdup(ref);
	if (r->privileged && ref[0] != '@') {
		r->snapshot_id = xstrdup(ref);
		r->step = SNAP_STEP_CHANGE;
	} else {
		r->step = SNAP_STEP_TARGET;
	}
	snap_req_next(r);
}

static void snapshot_alias(struct rpc_call *call, json_object *params)
{
	const char *ref, *alias;
	struct snap_req *r;

	if (!snap_get_ref(call, params, "id", &ref) ||
	    !snap_get_alias(call, params, &alias) || !methods_have_key(call))
		return;
	r = snap_req_new(call, SNAP_ALIAS);
	r->alias = xstrdup(alias);
	snap_start_change(r, ref);
}

static void snapshot_unalias(struct rpc_call *call, json_object *params)
{
	const char *alias;
	struct snap_req *r;

	if (!snap_get_alias(call, params, &alias) ||
	    !methods_have_key(call))
		return;
	r = snap_req_new(call, SNAP_UNALIAS);
	r->alias = xstrdup(alias);
	/* always looked up: the answer says which snapshot lost the alias */
	r->step = SNAP_STEP_HOLDER;
	snap_req_next(r);
}

static void snapshot_retire(struct rpc_call *call, json_object *params)
{
	const char *ref;

	if (!snap_get_ref(call, params, "id", &ref) ||
	    !methods_have_key(call))
		return;
	snap_start_change(snap_req_new(call, SNAP_RETIRE), ref);
}

const struct rpc_method methods_snapshot[] = {
    {"snapshot.list", snapshot_list, RPC_PARAMS("limit", "cursor", "tags", "exclude_retired")},
    {"snapshot.get", snapshot_get, RPC_PARAMS("id")},
    {"snapshot.aliases", snapshot_aliases, RPC_PARAMS("id")},
    {"snapshot.alias", snapshot_alias, RPC_PARAMS("id", "alias")},
    {"snapshot.unalias", snapshot_unalias, RPC_PARAMS("alias")},
    {"snapshot.retire", snapshot_retire, RPC_PARAMS("id")},
    {NULL, NULL, NULL},
};
