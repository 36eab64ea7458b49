/*
 * The build.* methods: submit, get, list, logs (with follow), wait, cancel, retry,
 * prune.  They validate what clients send, apply per-caller visibility (a caller
 * that may not see a job is told it does not exist), and translate between JSON and
 * the job engine (daemon/jobs.h).  Followers get stored events first, then live ones,
 * as `build.event` notifications, so a late or reconnecting follower misses nothing
 * and sees nothing twice.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/utsname.h>
#include <unistd.h>

#include <event2/event.h>

#include "access.h"
#include "alias.h"
#include "api.h"
#include "config.h"
#include "daemon.h"
#include "jobs.h"
#include "jsonrpc.h"
#include "methods.h"
#include "params.h"
#include "protocol.h"
#include "util.h"

#define REPLAY_PAGE 500
/* A replay pauses while this much output waits for the client, so it never outruns a
 * reader that keeps up and gets dropped as a slow one (the limit is 8 MiB). */
#define REPLAY_HIGH_WATER (1 << 20)
/* build.logs without follow: an answer's size bound, and an event's JSON beyond its text. */
#define LOGS_MAX_ANSWER     (4 << 20)
#define LOGS_EVENT_OVERHEAD 160
#define REPLAY_PAUSE_MS     5

/* --- JSON of jobs and events ------------------------------------------------------- */

static json_object *json_str_or_null(const char *s)
{
	return s ? json_object_new_string(s) : NULL;
}

static json_object *json_parse_object(const char *text)
{
	json_object *o = text ? json_tokener_parse(text) : NULL;
	if (!json_object_is_type(o, json_type_object)) {
		json_object_put(o);
		o = json_object_new_object();
	}
	return o;
}

/* Times in the protocol's JSON are RFC 3339 strings in UTC (protocol 3). */
static json_object *json_time(double t)
{
	char buf[RFC3339_SIZE];

	if (t <= 0)
		return NULL;
	format_rfc3339(t, buf);
	return json_object_new_string(buf);
}

json_object *methods_job_json(struct daemon *d, const struct store_job *j)
{
	json_object *o = json_object_new_object();
	json_object_object_add(o, "id", json_object_new_string(j->id));
	json_object_object_add(o, "state", json_object_new_string(j->state));
	json_object_object_add(o, "backend", json_object_new_string(j->backend));
	json_object_object_add(o, "architecture", json_object_new_string(j->architecture));
	json_object_object_add(o, "context", json_str_or_null(j->context_desc));
	json_object_object_add(o, "image", json_str_or_null(j->image));
	json_object_object_add(o, "dockerfile", json_str_or_null(j->dockerfile));
	json_object_object_add(o, "alias", json_str_or_null(j->alias));
	json_object_object_add(o, "tags", json_parse_object(j->tags_json));
	json_object_object_add(o, "build_args", json_parse_object(j->build_args_json));
	json_object_object_add(o, "ttl", j->ttl ? json_object_new_int64(j->ttl) : NULL);
	json_object_object_add(o, "cache_key", json_str_or_null(j->cache_key));
	json_object_object_add(o, "image_name", json_str_or_null(j->image_name));
	json_object *ctx = NULL;
	if (j->spool_digest) {
		ctx = json_object_new_object();
		json_object_object_add(ctx, "sha256", json_object_new_string(j->spool_digest));
		json_object_object_add(ctx, "bytes", json_object_new_int64(j->spool_size));
		json_object_object_add(ctx, "files", json_object_new_int64(j->file_count));
	}
	json_object_object_add(o, "archive", ctx);
	json_object_object_add(o, "build_id", json_str_or_null(j->build_id));
	json_object_object_add(o, "image_ref", json_str_or_null(j->image_ref));
	json_object_object_add(o, "snapshot_id", json_str_or_null(j->snapshot_id));
	json_object_object_add(o, "error", json_str_or_null(j->error));
	json_object_object_add(o, "hint", json_str_or_null(j->error_hint));
	json_object_object_add(o, "retry_of", json_str_or_null(j->retry_of));
	json_object_object_add(o, "reused_from", json_str_or_null(j->reused_from));
	json_object_object_add(o, "cancel_requested", json_object_new_boolean(j->cancel_requested));
	json_object_object_add(o, "uid", json_object_new_int64(j->uid));
	json_object_object_add(o, "created_at", json_time(j->created_at));
	json_object_object_add(o, "updated_at", json_time(j->updated_at));
	json_object_object_add(o, "finished_at", json_time(j->finished_at));
	json_object_object_add(o, "last_seq", json_object_new_int64(j->last_seq));
	if (strcmp(j->state, job_state_name(JOB_QUEUED)) == 0 && d->jobs != NULL) {
		int64_t pos = jobs_queue_position(d->jobs, j->id);
		if (pos > 0)
			json_object_object_add(o, "queue_position", json_object_new_int64(pos));
	}
	return o;
}

static json_object *event_json(const char *job_id, const struct store_event *ev)
{
	json_object *o = json_object_new_object();
	json_object_object_add(o, "job_id", json_object_new_string(job_id));
	json_object_object_add(o, "seq", json_object_new_int64(ev->seq));
	json_object_object_add(o, "time", json_time(ev->time));
	json_object_object_add(o, "kind", json_object_new_string(ev->kind));
	json_object_object_add(o, "step", json_str_or_null(ev->step));
	json_object_object_add(o, "text", json_object_new_string(ev->text ? ev->text : ""));
	if (ev->data_json) {
		json_object *data = json_parse_object(ev->data_json);
		json_object_object_foreach(data, k, v)
		{
			if (!json_object_object_get_ex(o, k, NULL))
				json_object_object_add(o, k, json_object_get(v));
		}
		json_object_put(data);
	}
	return o;
}

/* --- parameter checking ------------------------------------------------------------- */

/* A string map param as the store keeps it: JSON text, "{}" when absent. */
static bool map_text(struct rpc_call *call, json_object *params, const char *key,
                     const char *reserved, char **out)
{
	json_object *map = NULL;
	*out = NULL;
	if (!params_string_map(call, params, key, reserved, &map))
		return false;
	*out = xstrdup(map ? json_object_to_json_string_ext(map, JSON_C_TO_STRING_PLAIN) : "{}");
	return true;
}

/* Relative, inside the context: no absolute path, no '..' component escaping it. */
static bool dockerfile_inside(const char *p)
{
	if (*p == '\0' || *p == '/')
		return false;
	int depth = 0;
	const char *s = p;
	while (*s) {
		const char *e = strchrnul(s, '/');
		size_t len = (size_t)(e - s);
		if (len == 2 && s[0] == '.' && s[1] == '.') {
			if (--depth < 0)
				return false;
		} else if (len > 0 && !(len == 1 && s[0] == '.')) {
			depth++;
		}
		s = *e ? e + 1 : e;
	}
	return depth > 0;
}

static const char *host_architecture(void)
{
	struct utsname u;
	if (uname(&u) == 0 &&
	    (strcmp(u.machine, "aarch64") == 0 || strcmp(u.machine, "arm64") == 0))
		return "arm64";
	return "amd64";
}

/*
 * A prefix that several jobs share, resolved among the caller's own jobs only: that
 * other users' jobs share it must not show (no "ambiguous" for an id of theirs, no
 * refusal of a prefix that names one job of the caller's).  Same results as jobs_get.
 */
static int lookup_own_prefix(struct daemon *d, const struct rpc_peer *peer, const char *prefix,
                             struct store_job **out, char **err)
{
	struct store_job_filter f = {.uid = (int64_t)peer->uid};
	struct store_job **jobs = NULL;
	size_t n = 0, len = strlen(prefix);
	const char *match = NULL;
	int rc = 1;
	if (jobs_list(d->jobs, &f, &jobs, &n, err) != 0)
		return -1;
	for (size_t i = 0; i < n && rc != 2; i++) {
		if (strncmp(jobs[i]->id, prefix, len) == 0) {
			rc = match ? 2 : 1;
			match = jobs[i]->id;
		}
	}
	if (rc == 1 && match)
		rc = jobs_get(d->jobs, match, out, err);
	store_job_array_free(jobs, n);
	return rc;
}

/* A job the caller may see, by id or unique prefix.  False after replying. */
static bool lookup_job(struct rpc_call *call, const char *id, struct store_job **out)
{
	struct daemon *d = rpc_call_daemon(call);
	const struct rpc_peer *peer = rpc_call_peer(call);
	char *err = NULL;
	int rc = jobs_get(d->jobs, id, out, &err);
	if (rc == 0 && !access_may_see(d->config, peer, (*out)->uid)) {
		store_job_free(*out);
		*out = NULL;
		rc = 1;
	}
	if (rc == 2 && !access_is_admin(d->config, peer))
		rc = lookup_own_prefix(d, peer, id, out, &err);
	if (rc == 0)
		return true;
	if (rc == 1) {
		/* Shorter prefixes are never looked up (store_job_get): say so, not just "no". */
		bool short_prefix = strlen(id) < 4;
		char *msg = short_prefix
		                ? xasprintf("no job '%s': a job id prefix needs at least 4 "
		                            "characters",
		                            id)
		                : xasprintf("no job '%s'", id);
		rpc_reply_error_hint(call, SB_ERR_NOT_FOUND, msg,
		                     "list your jobs with: snapbuild jobs (IDs there are 12 "
		                     "characters; any 4 or more that start one name it)");
		free(msg);
	} else if (rc == 2) {
		char *msg = xasprintf("job id prefix '%s' is ambiguous", id);
		rpc_reply_error_hint(call, JSONRPC_INVALID_PARAMS, msg,
		                     "give more characters of the id");
		free(msg);
	} else {
		rpc_reply_error(call, SB_ERR_STORAGE, err, NULL);
	}
	free(err);
	return false;
}

/* --- build.submit ---------------------------------------------------------------- */

/* No C0 control, DEL or UTF-8-encoded C1 control (the framing checked the UTF-8). */
static bool label_printable(const char *s)
{
	for (const unsigned char *p = (const unsigned char *)s; *p; p++)
		if (*p < 0x20 || *p == 0x7f || (p[0] == 0xc2 && p[1] >= 0x80 && p[1] <= 0x9f))
			return false;
	return true;
}

/*
 * The archive descriptor a client passed: a regular file opened for reading.  A
 * directory (or O_PATH) descriptor is what clients of the first protocol sent, when
 * the daemon packed contexts itself; it never reads below one now.  False after
 * replying.
 */
static bool archive_fd_ok(struct rpc_call *call, int fd)
{
	struct stat st;
	int fl = fcntl(fd, F_GETFL);
	const char *too_old =
	    "this client is too old: update snapbuild (or libsnapbuild), which packs the "
	    "context itself and passes the archive (proto/PROTOCOL.md, build.submit)";
	if (fl < 0 || fstat(fd, &st) != 0) {
		params_invalid(call, "the descriptor passed cannot be used: %s", strerror(errno));
		return false;
	}
	if ((fl & O_PATH) == O_PATH || S_ISDIR(st.st_mode)) {
		rpc_reply_error_hint(
		    call, SB_ERR_CONTEXT,
		    "the daemon does not read context directories: pass the packed "
		    "context (a .tar.gz) as a regular file",
		    too_old);
		return false;
	}
	if (!S_ISREG(st.st_mode) || (fl & O_ACCMODE) == O_WRONLY) {
		rpc_reply_error_hint(call, SB_ERR_CONTEXT,
		                     "the archive must be passed as a regular file opened for "
		                     "reading (an unlinked temporary file or a memfd)",
		                     too_old);
		return false;
	}
	return true;
}

/* "archive": {"sha256": hex, "bytes": n}, what the client wrote.  False after replying. */
static bool archive_param(struct rpc_call *call, json_object *params, const char **sha256,
                          int64_t *bytes)
{
	json_object *a = NULL, *v = NULL;
	if (!json_object_object_get_ex(params, "archive", &a) ||
	    !json_object_is_type(a, json_type_object))
		return params_invalid(call, "'archive' is required with the archive descriptor: "
		                            "{\"sha256\": \"<hex>\", \"bytes\": <size>}");
	if (!params_check(call, a, (const char *const[]){"sha256", "bytes", NULL}) ||
	    !params_required_string(call, a, "sha256", sha256))
		return false;
	if (strlen(*sha256) != 64 || strspn(*sha256, "0123456789abcdef") != 64)
		return params_invalid(call, "'archive.sha256' must be 64 lower-case hex digits");
	*bytes = -1;
	if (!params_int(call, a, "bytes", 0, INT64_MAX, bytes))
		return false;
	if (*bytes < 0 || !json_object_object_get_ex(a, "bytes", &v))
		return params_invalid(call, "'archive.bytes' (the archive's size) is required");
	return true;
}

/* Local builds run an engine on the caller's Dockerfile with the engine's privileges. */
static bool local_allowed(struct rpc_call *call)
{
	struct daemon *d = rpc_call_daemon(call);
	const struct rpc_peer *peer = rpc_call_peer(call);
	if (!d->config->local_build) {
		rpc_reply_error_hint(call, SB_ERR_PERMISSION_DENIED,
		                     "local builds are off in this daemon",
		                     "build remotely (the default), or turn them on with "
		                     "local_build = true in the daemon's configuration "
		                     "(TOGETHER_LOCAL_BUILD=1 in its environment)");
		return false;
	}
	if (peer->uid != geteuid() && !access_is_admin(d->config, peer)) {
		rpc_reply_error_hint(
		    call, SB_ERR_PERMISSION_DENIED,
		    "local builds on a shared daemon are only for root, the admin group and the "
		    "daemon's own user: the engine runs your Dockerfile with its privileges",
		    "build remotely (the default), or run a daemon of your own: systemctl --user "
		    "enable --now snapbuildd.socket, then SNAPBUILD_SOCKET="
		    "$XDG_RUNTIME_DIR/snapbuild/snapbuild.sock");
		return false;
	}
	return true;
}

/* Root, the admin group and the daemon's own user may point any alias anywhere. */
static bool caller_privileged(struct rpc_call *call)
{
	const struct rpc_peer *peer = rpc_call_peer(call);
	return peer->uid == geteuid() || access_is_admin(rpc_call_daemon(call)->config, peer);
}

/* A submit in flight: the alias check (when the caller is not privileged), then the
 * intake.  The request's strings are kept here across the wait. */
struct submit {
	struct rpc_call *call;
	struct api_op *alias_op;
	struct jobs_intake *intake;
	struct job_request req;
	char *strs[12];
};

static const char *submit_keep(struct submit *s, int i, const char *v)
{
	return v ? (s->strs[i] = xstrdup(v)) : NULL;
}

static void submit_free(struct submit *s)
{
	if (s->req.archive_fd >= 0)
		close(s->req.archive_fd);
	for (size_t i = 0; i < sizeof(s->strs) / sizeof(s->strs[0]); i++)
		free(s->strs[i]);
	free(s);
}

static void submit_close_cb(struct rpc_call *call, void *arg)
{
	(void)call;
	struct submit *s = arg;
	if (s->alias_op) {
		api_op_cancel(s->alias_op);
		s->alias_op = NULL;
		rpc_reply_error(s->call, SB_ERR_BUSY, "the caller went away", NULL);
		submit_free(s);
		return;
	}
	if (s->intake)
		jobs_submit_cancel(s->intake);
}

static void submit_done_cb(void *arg, const struct store_job *job, enum jobs_submit_status status,
                           const char *error, const char *hint)
{
	struct submit *s = arg;
	if (status == JOBS_SUBMIT_OK)
		rpc_reply(s->call, methods_job_json(rpc_call_daemon(s->call), job));
	else
		rpc_reply_error_hint(s->call,
		                     status == JOBS_SUBMIT_INVALID ? SB_ERR_CONTEXT
		                     : status == JOBS_SUBMIT_BUSY  ? SB_ERR_BUSY
		                                                   : SB_ERR_STORAGE,
		                     error, hint);
	submit_free(s);
}

static void submit_go(struct submit *s)
{
	struct daemon *d = rpc_call_daemon(s->call);
	const struct rpc_peer *peer = rpc_call_peer(s->call);
	struct job_request req = s->req;
	s->req.archive_fd = -1; /* the engine owns it now, whatever happens */
	/* NULL: submit_done_cb has run and s is gone already. */
	struct jobs_intake *in =
	    jobs_submit(d->jobs, &req, peer->uid, peer->gid, submit_done_cb, s);
	if (in != NULL)
		s->intake = in;
}

/* The words for an alias another user's build holds. */
static void reply_alias_taken(struct rpc_call *call, const char *alias, const char *holder)
{
	char *msg = xasprintf("alias %s points at snapshot %s, which another user's build made",
	                      alias, holder ? holder : "?");
	rpc_reply_error_hint(call, SB_ERR_PERMISSION_DENIED, msg, ALIAS_TAKEN_HINT);
	free(msg);
}

static void reply_alias_error(struct rpc_call *call, const struct api_error *err)
{
	char *msg = xasprintf("cannot check who holds the alias: %s",
	                      err && err->message ? err->message : "unknown error");
	rpc_reply_error_hint(call, SB_ERR_UPSTREAM, msg, err ? err->hint : NULL);
	free(msg);
}

static void submit_alias_cb(void *arg, enum alias_verdict v, const char *holder_id,
                            const struct api_error *err)
{
	struct submit *s = arg;
	s->alias_op = NULL;
	if (v == ALIAS_TAKEN || v == ALIAS_ERROR) {
		if (v == ALIAS_TAKEN)
			reply_alias_taken(s->call, s->req.alias, holder_id);
		else
			reply_alias_error(s->call, err);
		submit_free(s);
		return;
	}
	submit_go(s);
}

static void build_submit(struct rpc_call *call, json_object *params)
{
	struct daemon *d = rpc_call_daemon(call);
	const struct rpc_peer *peer = rpc_call_peer(call);
	int fd = rpc_call_take_fd(call);
	char *tags = NULL, *build_args = NULL;
	const char *context = NULL, *image = NULL, *dockerfile = NULL, *alias = NULL,
	           *cache_key = NULL, *backend = NULL, *arch = NULL, *sha256 = NULL;
	int64_t ttl = 0, bytes = 0;
	bool no_cache = false;

	if (!params_string(call, params, "context", &context) ||
	    !params_bool(call, params, "no_cache", &no_cache) ||
	    !params_string(call, params, "image", &image) ||
	    !params_string(call, params, "dockerfile", &dockerfile) ||
	    !params_string(call, params, "alias", &alias) ||
	    !params_string(call, params, "cache_key", &cache_key) ||
	    !params_string(call, params, "backend", &backend) ||
	    !params_string(call, params, "architecture", &arch) ||
	    !params_int(call, params, "ttl", 1, INT32_MAX, &ttl) ||
	    !map_text(call, params, "tags", "snapbuild.job", &tags) ||
	    !map_text(call, params, "build_args", NULL, &build_args))
		goto out;

	if (!methods_have_key(call))
		goto out;
	if (image && (fd >= 0 || (params && json_object_object_get_ex(params, "archive", NULL)))) {
		params_invalid(call, "'image' and a context archive exclude each other: give one");
		goto out;
	}
	if (image && (*image == '\0' || strpbrk(image, " \t\r\n"))) {
		params_invalid(call, "'image' must be an image reference such as debian:12");
		goto out;
	}
	if (image && dockerfile) {
		params_invalid(call, "'dockerfile' makes no sense with 'image'");
		goto out;
	}
	if (!image && fd < 0) {
		if (context)
			rpc_reply_error_hint(
			    call, SB_ERR_CONTEXT,
			    "the daemon does not read context paths: pass the packed context (a "
			    ".tar.gz) as a file descriptor with SCM_RIGHTS",
			    "this client is too old: update snapbuild (or libsnapbuild), which "
			    "packs "
			    "the context itself (proto/PROTOCOL.md, build.submit)");
		else
			params_invalid(call, "a context archive (a file descriptor passed with "
			                     "SCM_RIGHTS, and 'archive') or 'image' is required");
		goto out;
	}
	/* The label reaches the daemon's log and other users' screens: no control bytes. */
	if (context && (strlen(context) > 4096 || !label_printable(context))) {
		params_invalid(call, "'context' names the context for people: one line of printable "
		                     "text, at most 4096 bytes");
		goto out;
	}
	if (dockerfile == NULL)
		dockerfile = "Dockerfile";
	if (!image && !dockerfile_inside(dockerfile)) {
		params_invalid(call,
		               "'dockerfile' must be a relative path inside the context, not '%s'",
		               dockerfile);
		goto out;
	}
	if (alias && !api_alias_valid(alias)) {
		params_invalid(
		    call,
		    "'alias' must be 'tag' or 'namespace@tag' without spaces or '/', not '%s'",
		    alias);
		goto out;
	}
	if (cache_key && !api_cache_key_valid(cache_key)) {
		params_invalid(
		    call, "'cache_key' must be a lower-case path of letters, digits, '.', '_', "
		          "'-' and '/', without a tag, at most 255 characters");
		goto out;
	}
	if (backend == NULL)
		backend = d->config->local_build ? "local" : "remote";
	if (strcmp(backend, "remote") != 0 && strcmp(backend, "local") != 0) {
		params_invalid(call, "'backend' must be \"remote\" or \"local\"");
		goto out;
	}
	if (strcmp(backend, "local") == 0 && !local_allowed(call))
		goto out;
	if (arch == NULL)
		arch = strcmp(backend, "local") == 0 ? host_architecture() : d->config->remote_arch;
	if (strcmp(arch, "amd64") != 0 && strcmp(arch, "arm64") != 0) {
		params_invalid(call, "'architecture' must be \"amd64\" or \"arm64\"");
		goto out;
	}
	if (fd >= 0 && (!archive_fd_ok(call, fd) || !archive_param(call, params, &sha256, &bytes)))
		goto out;

	struct submit *s = xcalloc(1, sizeof(*s));
	s->call = call;
	s->req = (struct job_request){
	    .archive_fd = fd,
	    .archive_sha256 = submit_keep(s, 0, sha256),
	    .archive_bytes = (uint64_t)bytes,
	    .context_desc = submit_keep(s, 1, context),
	    .image = submit_keep(s, 2, image),
	    .dockerfile = submit_keep(s, 3, dockerfile),
	    .alias = submit_keep(s, 4, alias),
	    .tags_json = submit_keep(s, 5, tags),
	    .build_args_json = submit_keep(s, 6, build_args),
	    .ttl = ttl,
	    .cache_key = submit_keep(s, 7, cache_key),
	    .backend = submit_keep(s, 8, backend),
	    .architecture = submit_keep(s, 9, arch),
	    .no_cache = no_cache,
	};
	fd = -1; /* s holds it */
	rpc_call_set_close_cb(call, submit_close_cb, s);
	/* An alias is checked before anything is taken in or uploaded (alias.h). */
	if (alias && !caller_privileged(call))
		s->alias_op = alias_check(d->api, d->store, alias, peer->uid, submit_alias_cb, s);
	else
		submit_go(s);
out:
	if (fd >= 0)
		close(fd);
	free(tags);
	free(build_args);
}

/* --- build.get / build.list ------------------------------------------------------- */

static void build_get(struct rpc_call *call, json_object *params)
{
	const char *id;
	struct store_job *job = NULL;
	if (!params_required_string(call, params, "id", &id) || !lookup_job(call, id, &job))
		return;
	rpc_reply(call, methods_job_json(rpc_call_daemon(call), job));
	store_job_free(job);
}

static bool state_known(const char *s)
{
	enum job_state st;
	return job_state_parse(s, &st);
}

static void build_list(struct rpc_call *call, json_object *params)
{
	struct daemon *d = rpc_call_daemon(call);
	const struct rpc_peer *peer = rpc_call_peer(call);
	int64_t limit = 50;
	const char *cursor = NULL;
	bool all = false;
	const char *states[16] = {0};
	if (!params_int(call, params, "limit", 1, 1000, &limit) ||
	    !params_string(call, params, "cursor", &cursor) ||
	    !params_bool(call, params, "all_users", &all))
		return;
	json_object *st = NULL;
	if (params && json_object_object_get_ex(params, "state", &st) && st) {
		size_t n = 0;
		if (json_object_is_type(st, json_type_string)) {
			states[n++] = json_object_get_string(st);
		} else if (json_object_is_type(st, json_type_array) &&
		           json_object_array_length(st) < 15) {
			for (size_t i = 0; i < json_object_array_length(st); i++) {
				json_object *e = json_object_array_get_idx(st, i);
				if (!json_object_is_type(e, json_type_string)) {
					params_invalid(
					    call, "'state' must be a state name or a list of them");
					return;
				}
				states[n++] = json_object_get_string(e);
			}
		} else {
			params_invalid(call, "'state' must be a state name or a list of them");
			return;
		}
		for (size_t i = 0; i < n; i++) {
			if (!state_known(states[i])) {
				params_invalid(call, "'state': unknown state '%s'", states[i]);
				return;
			}
		}
	}
	struct store_job_filter f = {.uid = (int64_t)peer->uid, .limit = (int)limit + 1};
	if (states[0])
		f.states = states;
	if (all || access_is_admin(d->config, peer)) {
		if (all && !access_is_admin(d->config, peer)) {
			rpc_reply_error_hint(
			    call, SB_ERR_PERMISSION_DENIED,
			    "only root and the admin group may list all users' jobs",
			    "leave out all_users to see your own jobs");
			return;
		}
		f.uid = -1;
	}
	char id_buf[37] = "";
	if (cursor) {
		double t;
		if (sscanf(cursor, "%lf/%36s", &t, id_buf) != 2) {
			params_invalid(call, "'cursor' is not one this daemon handed out");
			return;
		}
		f.before_created = t;
		f.before_id = id_buf;
	}
	struct store_job **jobs = NULL;
	size_t n = 0;
	char *err = NULL;
	if (jobs_list(d->jobs, &f, &jobs, &n, &err) != 0) {
		rpc_reply_error(call, SB_ERR_STORAGE, err, NULL);
		free(err);
		return;
	}
	json_object *arr = json_object_new_array();
	size_t shown = n > (size_t)limit ? (size_t)limit : n;
	for (size_t i = 0; i < shown; i++) {
		struct store_job *fresh = NULL;
		if (!job_state_terminal(jobs[i]->state) &&
		    jobs_get(d->jobs, jobs[i]->id, &fresh, NULL) == 0) {
			json_object_array_add(arr, methods_job_json(d, fresh));
			store_job_free(fresh);
		} else {
			json_object_array_add(arr, methods_job_json(d, jobs[i]));
		}
	}
	json_object *res = json_object_new_object();
	json_object_object_add(res, "jobs", arr);
	json_object *next = NULL;
	if (n > (size_t)limit) {
		/* Every digit of the time: a rounded one would repeat or skip the page's last job.
		 */
		char *c = xasprintf("%.17g/%s", jobs[shown - 1]->created_at, jobs[shown - 1]->id);
		next = json_object_new_string(c);
		free(c);
	}
	json_object_object_add(res, "next_cursor", next);
	store_job_array_free(jobs, n);
	rpc_reply(call, res);
}

/* --- build.logs / build.wait: following a job -------------------------------------- */

struct follow {
	struct rpc_call *call;
	struct daemon *d;
	char id[37];
	bool send_events; /* build.logs follow; build.wait only waits */
	int64_t last_sent;
	bool replaying;
	bool ended; /* the job reached a terminal state */
	struct job_watch *watch;
	struct event *tick;
};

static void follow_free(struct follow *f)
{
	jobs_unwatch(f->watch);
	if (f->tick)
		event_free(f->tick);
	free(f);
}

static json_object *follow_answer(struct follow *f)
{
	struct store_job *job = NULL;
	json_object *res = json_object_new_object();
	if (jobs_get(f->d->jobs, f->id, &job, NULL) == 0) {
		json_object_object_add(res, "job", methods_job_json(f->d, job));
		store_job_free(job);
	}
	json_object_object_add(res, "last_seq", json_object_new_int64(f->last_sent));
	return res;
}

static void follow_finish(struct follow *f)
{
	rpc_reply(f->call, follow_answer(f));
	follow_free(f);
}

/*
 * The `build.event` notification of one event, serialized once: the engine hands the
 * same event to every follower in turn, and replays of one job page through the same
 * rows, so a one-entry cache saves the JSON work for all but the first.
 */
static struct {
	char job[37];
	int64_t seq;
	char *text;
	size_t len;
} event_line;

static const char *event_notification(const char *job_id, const struct store_event *ev, size_t *len)
{
	if (event_line.text == NULL || event_line.seq != ev->seq ||
	    strcmp(event_line.job, job_id)) {
		json_object *note = jsonrpc_notification_new("build.event", event_json(job_id, ev));
		const char *text = jsonrpc_to_string(note, &event_line.len);
		free(event_line.text);
		event_line.text = xstrndup(text, event_line.len);
		event_line.seq = ev->seq;
		snprintf(event_line.job, sizeof(event_line.job), "%s", job_id);
		json_object_put(note);
	}
	*len = event_line.len;
	return event_line.text;
}

static bool follow_send(struct follow *f, const struct store_event *ev)
{
	if (ev->seq <= f->last_sent)
		return true;
	f->last_sent = ev->seq;
	if (!f->send_events)
		return true;
	size_t len;
	const char *text = event_notification(f->id, ev, &len);
	return rpc_notify_text(f->call, text, len);
}

static void follow_close_cb(struct rpc_call *call, void *arg)
{
	struct follow *f = arg;
	rpc_reply_error(call, JSONRPC_INTERNAL_ERROR, "connection closed", NULL);
	follow_free(f);
}

/* One page of stored events per loop turn, so other clients are served meanwhile. */
static void follow_tick_cb(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	struct follow *f = arg;
	struct store_event *evs = NULL;
	size_t n = 0;
	char *err = NULL;
	if (rpc_call_output_pending(f->call) > REPLAY_HIGH_WATER) {
		struct timeval tv = {0, REPLAY_PAUSE_MS * 1000};
		event_add(f->tick, &tv);
		return;
	}
	if (jobs_events_after(f->d->jobs, f->id, f->last_sent, REPLAY_PAGE, &evs, &n, &err) != 0) {
		rpc_reply_error(f->call, SB_ERR_STORAGE, err, NULL);
		free(err);
		follow_free(f);
		return;
	}
	/* A page is counted in bytes too: a few megabyte-long lines fill the output bound
	 * as 500 short ones would not.  What is not sent now is read again next time. */
	bool ok = true;
	size_t i;
	for (i = 0; i < n && ok; i++) {
		if (i > 0 && f->send_events && rpc_call_output_pending(f->call) > REPLAY_HIGH_WATER)
			break;
		ok = follow_send(f, &evs[i]);
	}
	store_event_array_free(evs, n);
	if (!ok)
		return; /* the connection is gone: its close callback frees f */
	if (i < n) {
		struct timeval tv = {0, REPLAY_PAUSE_MS * 1000};
		event_add(f->tick, &tv);
		return;
	}
	if (n == REPLAY_PAGE) {
		event_active(f->tick, 0, 0);
		return;
	}
	f->replaying = false;
	if (f->ended)
		follow_finish(f);
}

static void follow_event_cb(void *arg, const char *job_id, const struct store_event *ev)
{
	(void)job_id;
	struct follow *f = arg;
	if (f->replaying)
		return; /* the replay reads it from the store in order */
	if (f->send_events && rpc_call_output_pending(f->call) > REPLAY_HIGH_WATER) {
		/* A burst outruns this reader: fall back to paced replay from the store
		 * rather than queueing until the connection is dropped as a slow reader. */
		f->replaying = true;
		struct timeval tv = {0, REPLAY_PAUSE_MS * 1000};
		event_add(f->tick, &tv);
		return;
	}
	/* A failed send means the connection is gone: its close callback frees f. */
	follow_send(f, ev);
}

static void follow_end_cb(void *arg, const struct store_job *job)
{
	(void)job;
	struct follow *f = arg;
	f->watch = NULL; /* the engine frees it */
	f->ended = true;
	if (!f->replaying) {
		/* Whatever was not sent live (a dropped connection) is in the store. */
		event_active(f->tick, 0, 0);
		f->replaying = true;
	}
}

static void follow_start(struct rpc_call *call, const struct store_job *job, int64_t after,
                         bool send_events)
{
	static const struct job_watch_cbs cbs = {.on_event = follow_event_cb,
	                                         .on_end = follow_end_cb};
	struct follow *f = xcalloc(1, sizeof(*f));
	f->call = call;
	f->d = rpc_call_daemon(call);
	memcpy(f->id, job->id, sizeof(f->id));
	f->send_events = send_events;
	f->last_sent = after;
	f->replaying = true;
	f->tick = event_new(f->d->base, -1, 0, follow_tick_cb, f);
	f->watch = jobs_watch(f->d->jobs, job->id, &cbs, f);
	f->ended = f->watch == NULL;
	rpc_call_set_close_cb(call, follow_close_cb, f);
	if (!send_events)
		f->last_sent = job->last_seq;
	if (send_events || f->ended)
		event_active(f->tick, 0, 0);
	else
		f->replaying = false;
}

static void build_logs(struct rpc_call *call, json_object *params)
{
	const char *id;
	int64_t after = 0, limit = 10000;
	bool follow = false;
	struct store_job *job = NULL;
	if (!params_required_string(call, params, "id", &id) ||
	    !params_int(call, params, "after_seq", 0, INT64_MAX, &after) ||
	    !params_int(call, params, "limit", 1, 100000, &limit) ||
	    !params_bool(call, params, "follow", &follow) || !lookup_job(call, id, &job))
		return;
	if (follow) {
		follow_start(call, job, after, true);
		store_job_free(job);
		return;
	}
	struct daemon *d = rpc_call_daemon(call);
	struct store_event *evs = NULL;
	size_t n = 0;
	char *err = NULL;
	if (jobs_events_after(d->jobs, job->id, after, (int)limit + 1, &evs, &n, &err) != 0) {
		rpc_reply_error(call, SB_ERR_STORAGE, err, NULL);
		free(err);
		store_job_free(job);
		return;
	}
	size_t shown = n > (size_t)limit ? (size_t)limit : n;
	json_object *arr = json_object_new_array();
	size_t bytes = 0;
	for (size_t i = 0; i < shown; i++) {
		/* A page stays well under the connection's output bound; `more` says go on. */
		bytes += LOGS_EVENT_OVERHEAD + strlen(evs[i].text ? evs[i].text : "") +
		         (evs[i].data_json ? strlen(evs[i].data_json) : 0);
		if (i > 0 && bytes > LOGS_MAX_ANSWER) {
			shown = i;
			break;
		}
		json_object_array_add(arr, event_json(job->id, &evs[i]));
	}
	json_object *res = json_object_new_object();
	json_object_object_add(res, "events", arr);
	json_object_object_add(res, "last_seq",
	                       json_object_new_int64(shown ? evs[shown - 1].seq : after));
	json_object_object_add(res, "more", json_object_new_boolean(n > shown));
	json_object_object_add(res, "job", methods_job_json(d, job));
	store_event_array_free(evs, n);
	store_job_free(job);
	rpc_reply(call, res);
}

static void build_wait(struct rpc_call *call, json_object *params)
{
	const char *id;
	struct store_job *job = NULL;
	if (!params_required_string(call, params, "id", &id) || !lookup_job(call, id, &job))
		return;
	follow_start(call, job, job->last_seq, false);
	store_job_free(job);
}

/* --- build.cancel / build.retry / build.prune ------------------------------------- */

static void build_cancel(struct rpc_call *call, json_object *params)
{
	struct daemon *d = rpc_call_daemon(call);
	const char *id;
	struct store_job *job = NULL;
	if (!params_required_string(call, params, "id", &id) || !lookup_job(call, id, &job))
		return;
	char *err = NULL;
	enum jobs_cancel_result rc = jobs_cancel(d->jobs, job->id, &err);
	if (rc == JOBS_CANCEL_FINISHED) {
		char *msg = xasprintf("job %s has already %s", job->id, job->state);
		rpc_reply_error_hint(call, SB_ERR_INVALID_STATE, msg,
		                     "only a job that has not finished can be cancelled");
		free(msg);
	} else if (rc == JOBS_CANCEL_ERROR) {
		rpc_reply_error(call, JSONRPC_INTERNAL_ERROR, err, NULL);
	} else {
		store_job_free(job);
		job = NULL;
		if (jobs_get(d->jobs, id, &job, NULL) == 0)
			rpc_reply(call, methods_job_json(d, job));
		else
			rpc_reply(call, NULL);
	}
	free(err);
	store_job_free(job);
}

struct retry {
	struct rpc_call *call;
	struct store_job *old;
	struct api_op *op;
};

static void retry_close_cb(struct rpc_call *call, void *arg)
{
	(void)call;
	struct retry *r = arg;
	api_op_cancel(r->op);
	rpc_reply_error(r->call, SB_ERR_BUSY, "the caller went away", NULL);
	store_job_free(r->old);
	free(r);
}

static void retry_alias_cb(void *arg, enum alias_verdict v, const char *holder_id,
                           const struct api_error *err)
{
	struct retry *r = arg;
	struct daemon *d = rpc_call_daemon(r->call);
	const struct rpc_peer *peer = rpc_call_peer(r->call);
	struct store_job *fresh = NULL;
	char *e = NULL;
	if (v == ALIAS_TAKEN)
		reply_alias_taken(r->call, r->old->alias, holder_id);
	else if (v == ALIAS_ERROR)
		reply_alias_error(r->call, err);
	else if (jobs_retry(d->jobs, r->old, peer->uid, peer->gid, &fresh, &e) != 0)
		rpc_reply_error_hint(r->call, SB_ERR_CONTEXT, e, "submit the context again");
	else
		rpc_reply(r->call, methods_job_json(d, fresh));
	free(e);
	store_job_free(fresh);
	store_job_free(r->old);
	free(r);
}

static void build_retry(struct rpc_call *call, json_object *params)
{
	struct daemon *d = rpc_call_daemon(call);
	const struct rpc_peer *peer = rpc_call_peer(call);
	const char *id;
	struct store_job *job = NULL, *fresh = NULL;
	if (!params_required_string(call, params, "id", &id) || !lookup_job(call, id, &job))
		return;
	char *err = NULL;
	if (!job_state_terminal(job->state)) {
		char *msg = xasprintf("job %s is still %s", job->id, job->state);
		rpc_reply_error_hint(call, SB_ERR_INVALID_STATE, msg,
		                     "wait for it to finish, or cancel it first");
		free(msg);
	} else if (strcmp(job->backend, "local") == 0 && !local_allowed(call)) {
		/* answered */
	} else if (job->alias && !caller_privileged(call)) {
		/* The alias may be someone else's by now: checked first, then retried. */
		struct retry *r = xcalloc(1, sizeof(*r));
		r->call = call;
		r->old = job;
		job = NULL;
		rpc_call_set_close_cb(call, retry_close_cb, r);
		r->op = alias_check(d->api, d->store, r->old->alias, peer->uid, retry_alias_cb, r);
	} else if (jobs_retry(d->jobs, job, peer->uid, peer->gid, &fresh, &err) != 0) {
		rpc_reply_error_hint(call, SB_ERR_CONTEXT, err, "submit the context again");
	} else {
		rpc_reply(call, methods_job_json(d, fresh));
	}
	free(err);
	store_job_free(job);
	store_job_free(fresh);
}

static void build_prune(struct rpc_call *call, json_object *params)
{
	struct daemon *d = rpc_call_daemon(call);
	const struct rpc_peer *peer = rpc_call_peer(call);
	int64_t older = 0, deleted = 0;
	bool all = false;
	if (!params_int(call, params, "older_than", 0, INT64_MAX / 2, &older) ||
	    !params_bool(call, params, "all_users", &all))
		return;
	if (all && !access_is_admin(d->config, peer)) {
		rpc_reply_error_hint(call, SB_ERR_PERMISSION_DENIED,
		                     "only root and the admin group may prune all users' jobs",
		                     "leave out all_users to prune your own");
		return;
	}
	char *err = NULL;
	double before = older > 0 ? now_seconds() - (double)older : 0;
	if (jobs_prune(d->jobs, all ? -1 : (int64_t)peer->uid, before, &deleted, &err) != 0) {
		rpc_reply_error(call, SB_ERR_STORAGE, err, NULL);
		free(err);
		return;
	}
	json_object *res = json_object_new_object();
	json_object_object_add(res, "deleted", json_object_new_int64(deleted));
	rpc_reply(call, res);
}

const struct rpc_method methods_build[] = {
    {"build.submit", build_submit,
     RPC_PARAMS("context", "image", "dockerfile", "alias", "tags", "ttl", "cache_key", "build_args",
                "backend", "architecture", "archive", "no_cache")},
    {"build.get", build_get, RPC_PARAMS("id")},
    {"build.list", build_list, RPC_PARAMS("state", "limit", "cursor", "all_users")},
    {"build.logs", build_logs, RPC_PARAMS("id", "after_seq", "follow", "limit")},
    {"build.wait", build_wait, RPC_PARAMS("id")},
    {"build.cancel", build_cancel, RPC_PARAMS("id")},
    {"build.retry", build_retry, RPC_PARAMS("id")},
    {"build.prune", build_prune, RPC_PARAMS("older_than", "all_users")},
    {NULL, NULL, NULL},
};
