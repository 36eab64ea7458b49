/*
 * The local backend: registry credentials from the management API, then a local
 * engine (localbuild.c) builds the spooled context, logs in with those credentials
 * and pushes; registration follows as for remote builds.  A cancel stops the engine's
 * processes; the job ends when they have.
 */
#include <stdlib.h>
#include <string.h>

#include "api.h"
#include "config.h"
#include "daemon.h"
#include "job.h"
#include "localbuild.h"
#include "util.h"

/* Global engine options from the configuration are split on blanks, at most this many. */
#define LOCAL_MAX_ENGINE_ARGS 32

static void local_step_cb(void *arg, const char *step)
{
	struct job *j = arg;
	if (strcmp(step, "push") != 0) {
		job_log(j, step, "step %s", step);
		return;
	}
	/* A failed write marks the job failing; localbuild is stopped from the loop. */
	job_set_state(j, JOB_PUSHING);
}

static void local_log_cb(void *arg, const char *step, const char *line)
{
	struct job *j = arg;
	job_emit(j, "log", step, line, NULL);
}

static void local_done_cb(void *arg, const char *error, const char *image_ref)
{
	struct job *j = arg;
	struct localbuild *lb = j->lb;
	j->lb = NULL;
	if (error) {
		char *hint = xasprintf("the build log shows the failing step: snapbuild logs %s",
		                       j->rec->id);
		job_fail(j, error, hint);
		free(hint);
	} else {
		job_set_str(&j->rec->image_ref, image_ref);
		if (job_set_state(j, JOB_REGISTERING))
			job_register_start(j);
	}
	localbuild_free(lb);
}

/* Registries on loopback speak plain HTTP, as docker assumes for 127.0.0.0/8. */
static bool local_registry_is_loopback(const char *url)
{
	return str_has_prefix(url, "127.") || str_has_prefix(url, "localhost:") ||
	       str_has_prefix(url, "localhost/") || str_has_prefix(url, "[::1]");
}

static void local_credentials_done_cb(void *arg, const struct api_error *err, json_object *cred)
{
	struct job *j = arg;
	struct jobs *js = j->js;
	j->op = NULL;
	if (err) {
		job_fail_api(j, "fetching registry credentials failed", err);
		return;
	}
	json_object *u = NULL, *p = NULL, *r = NULL;
	json_object_object_get_ex(cred, "username", &u);
	json_object_object_get_ex(cred, "password", &p);
	json_object_object_get_ex(cred, "registry_url", &r);
	if (!u || !p || !r) {
		job_fail(j, "the registry credentials lack username, password or registry_url",
		         "this is an API-side problem: retry the job");
		return;
	}
	char *path = spool_path(js, j->rec->spool_digest);
	char *platform = xasprintf("linux/%s", j->rec->architecture);
	char *args_buf =
	    xstrdup(js->d->config->local_engine_args ? js->d->config->local_engine_args : "");
	const char *args[LOCAL_MAX_ENGINE_ARGS + 1];
	size_t nargs = 0;
	for (char *save = NULL, *tok = strtok_r(args_buf, " \t", &save);
	     tok && nargs < LOCAL_MAX_ENGINE_ARGS; tok = strtok_r(NULL, " \t", &save))
		args[nargs++] = tok;
	args[nargs] = NULL;
	const char *env_path = getenv("PATH");
	struct localbuild_params params = {
	    .engine = js->engine,
	    .archive_path = path,
	    .dockerfile = j->rec->dockerfile,
	    .build_args_json = j->rec->build_args_json,
	    .platform = platform,
	    .registry_url = json_object_get_string(r),
	    .username = json_object_get_string(u),
	    .password = json_object_get_string(p),
	    .image_name = j->rec->image_name,
	    .tmp_root = js->tmp_root,
	    .path_env = env_path ? env_path : "/usr/local/bin:/usr/bin:/bin",
	    .extra_engine_args = args,
	    .isolation = js->d->config->local_isolation,
	    .tls_verify = !local_registry_is_loopback(json_object_get_string(r)),
	};
	static const struct localbuild_cbs cbs = {
	    .on_step = local_step_cb,
	    .on_log = local_log_cb,
	    .on_done = local_done_cb,
	};
	job_log(j, "auth", "registry credentials issued for %s", json_object_get_string(r));
	j->lb = localbuild_start(js->d->base, &params, &cbs, j);
	free(args_buf);
	free(platform);
	free(path);
}

static void local_start(struct job *j)
{
	struct jobs *js = j->js;
	if (!js->have_engine) {
		job_fail(j, js->engine_error ? js->engine_error : "no local build engine",
		         "install buildah, podman or docker, or build remotely (--remote)");
		return;
	}
	if (!spool_exists(js, j->rec->spool_digest)) {
		job_fail(j, "the packed context is missing from the spool",
		         "submit the job again from its context");
		return;
	}
	if (j->state != JOB_BUILDING && !job_set_state(j, JOB_BUILDING))
		return;
	job_log(j, "build", "building locally with %s", engine_name(js->engine));
	j->op = api_registry_credentials(js->d->api, local_credentials_done_cb, j);
}

/* building or pushing after a restart: the engine's work is gone; start it again. */
static void local_resume(struct job *j)
{
	if (j->state == JOB_CANCELLING) {
		job_finish(j, JOB_CANCELLED, NULL, NULL);
		return;
	}
	if (j->state == JOB_PUSHING && !job_set_state(j, JOB_BUILDING))
		return;
	local_start(j);
}

static bool local_cancel(struct job *j)
{
	if (j->lb == NULL)
		return false;
	if (job_set_state(j, JOB_CANCELLING))
		localbuild_cancel(j->lb);
	return true;
}

static void local_stop(struct job *j)
{
	if (j->op) {
		api_op_cancel(j->op);
		j->op = NULL;
	}
	if (j->lb) {
		localbuild_free(j->lb);
		j->lb = NULL;
	}
}

const struct job_backend job_backend_local = {
    .name = "local",
    .start = local_start,
    .resume = local_resume,
    .cancel = local_cancel,
    .stop = local_stop,
};
