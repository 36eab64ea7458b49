/*
 * The remote backend: upload the spooled context to the image builder, follow the
 * build's log over SSE, read the image reference, then hand over to registration.
 * A cancel deletes the build on the builder (retried, and persisted as the cancelling
 * state, so a restart sends it again); a cancel while the submit is still in flight
 * waits for its answer, so the build it may have created is deleted too.
 */
#include <stdlib.h>
#include <string.h>

#include "ansi.h"
#include "api.h"
#include "daemon.h"
#include "job.h"
#include "log.h"
#include "store.h"
#include "util.h"

#define PROGRESS_INTERVAL 0.25
#define DELETE_ATTEMPTS   5

static void remote_follow(struct job *j);
static void remote_delete(struct job *j);

static void remote_upload_progress_cb(void *arg, uint64_t sent, uint64_t total)
{
	struct job *j = arg;
	double now = now_seconds();
	if (sent != total && now - j->last_progress < PROGRESS_INTERVAL)
		return;
	j->last_progress = now;
	json_object *data = json_object_new_object();
	json_object_object_add(data, "sent", json_object_new_int64((int64_t)sent));
	json_object_object_add(data, "total", json_object_new_int64((int64_t)total));
	char *a = format_bytes(sent), *b = format_bytes(total);
	char *text = xasprintf("uploaded %s of %s", a, b);
	job_emit(j, "progress", "upload", text, data);
	free(text);
	free(a);
	free(b);
}

static void remote_upload_done_cb(void *arg, const struct api_error *err, const char *build_id)
{
	struct job *j = arg;
	j->op = NULL;
	if (j->state == JOB_CANCELLING) {
		/* Cancelled while the submit was in flight: delete what it started. */
		if (err || build_id == NULL) {
			job_finish(j, JOB_CANCELLED, NULL, NULL);
			return;
		}
		job_set_str(&j->rec->build_id, build_id);
		job_log(j, "upload", "build %s started as the cancel came; deleting it", build_id);
		if (job_flush(j, NULL) == 0) {
			j->attempts = 0;
			remote_delete(j);
		}
		return;
	}
	if (err) {
		job_fail_api(j, "uploading the context failed", err);
		return;
	}
	job_set_str(&j->rec->build_id, build_id);
	job_log(j, "upload", "build %s started on the image builder", build_id);
	if (job_set_state(j, JOB_BUILDING))
		remote_follow(j);
}

static void remote_upload(struct job *j)
{
	if (!spool_exists(j->js, j->rec->spool_digest)) {
		job_fail(j, "the packed context is missing from the spool",
		         "submit the job again from its context");
		return;
	}
	if (!job_set_state(j, JOB_UPLOADING))
		return;
	char *path = spool_path(j->js, j->rec->spool_digest);
	struct api_submit s = {
	    .archive_path = path,
	    .image_name = j->rec->image_name,
	    .dockerfile = j->rec->dockerfile,
	    .build_args_json = j->rec->build_args_json,
	    .cache_key = j->rec->cache_key,
	};
	j->last_progress = 0;
	j->op = api_build_submit(j->js->d->api, &s, remote_upload_progress_cb,
	                         remote_upload_done_cb, j);
	free(path);
}

static void remote_line_cb(void *arg, const char *text, size_t len, const char *event_id)
{
	struct job *j = arg;
	char *raw = job_line_text(text, len);
	char *clean = ansi_strip(raw);
	json_object *data = NULL;
	if (strcmp(raw, clean) != 0) {
		data = json_object_new_object();
		json_object_object_add(data, "raw", json_object_new_string(raw));
	}
	if (event_id && *event_id)
		job_set_str(&j->rec->last_event_id, event_id);
	job_emit(j, "log", "build", clean, data);
	free(clean);
	free(raw);
}

static void remote_reconnect_cb(void *arg, const char *why)
{
	struct job *j = arg;
	log_job(LOG_LEVEL_DEBUG,
	        &(struct log_job){j->rec->id, j->rec->state, (long long)j->rec->uid},
	        "job %s: log stream reconnecting: %s", j->rec->id, why);
}

static void remote_status_done_cb(void *arg, const struct api_error *err, json_object *status)
{
	struct job *j = arg;
	j->op = NULL;
	if (err) {
		job_fail_api(j, "reading the build's status failed", err);
		return;
	}
	json_object *ref = NULL;
	if (!json_object_object_get_ex(status, "image_ref", &ref) ||
	    !json_object_is_type(ref, json_type_string) || json_object_get_string_len(ref) == 0) {
		job_fail(j, "the build finished but the builder reported no image reference",
		         "this is a builder-side problem: retry the job");
		return;
	}
	job_set_str(&j->rec->image_ref, json_object_get_string(ref));
	if (job_set_state(j, JOB_REGISTERING))
		job_register_start(j);
}

static void remote_end_cb(void *arg, const struct api_error *err, bool done,
                          const char *build_error)
{
	struct job *j = arg;
	j->op = NULL;
	if (j->npending)
		job_flush(j, NULL);
	if (build_error) {
		char *msg = xasprintf("the build failed: %s", build_error);
		char *hint = xasprintf("read the build log above (snapbuild logs %s)", j->rec->id);
		job_fail(j, msg, hint);
		free(hint);
		free(msg);
		return;
	}
	if (!done) {
		job_fail_api(j, "following the build's log failed", err);
		return;
	}
	j->op = api_build_status(j->js->d->api, j->rec->build_id, remote_status_done_cb, j);
}

/*
 * Hands the follow the build lines already stored (as the builder sent them), so that
 * after a restart a service that replays its log from the start without usable event
 * ids is recognised and nothing is stored twice.  A job that was just uploaded has
 * none.  When they cannot be read the follow starts without them: a replay would then
 * repeat lines, which is better than failing a running build.
 */
static void remote_follow_seed(struct job *j)
{
	int64_t after = 0;
	struct store_event *ev;
	size_t n;
	char *err = NULL;

	do {
		if (store_events_after(j->js->d->store, j->rec->id, after, 10000, &ev, &n, &err) <
		    0) {
			log_job(
			    LOG_LEVEL_WARN,
			    &(struct log_job){j->rec->id, j->rec->state, (long long)j->rec->uid},
			    "job %s: cannot read the stored log to recognise a replay: %s",
			    j->rec->id, err);
			free(err);
			return;
		}
		for (size_t i = 0; i < n; i++) {
			json_object *data = NULL, *raw = NULL;
			const char *text = ev[i].text ? ev[i].text : "";

			after = ev[i].seq;
			if (strcmp(ev[i].kind, "log") != 0 || !ev[i].step ||
			    strcmp(ev[i].step, "build") != 0)
				continue;
			if (ev[i].data_json && (data = json_tokener_parse(ev[i].data_json)) &&
			    json_object_object_get_ex(data, "raw", &raw) &&
			    json_object_is_type(raw, json_type_string))
				text = json_object_get_string(raw);
			api_follow_seed(j->op, text, strlen(text));
			json_object_put(data);
		}
		store_event_array_free(ev, n);
	} while (n == 10000);
}

static void remote_follow(struct job *j)
{
	static const struct api_follow_cbs cbs = {
	    .on_line = remote_line_cb,
	    .on_reconnect = remote_reconnect_cb,
	    .on_end = remote_end_cb,
	};
	j->op = api_build_follow(j->js->d->api, j->rec->build_id, j->rec->last_event_id, &cbs, j);
	remote_follow_seed(j);
}

static void remote_delete_done_cb(void *arg, const struct api_error *err)
{
	struct job *j = arg;
	j->op = NULL;
	if (err && ++j->attempts < DELETE_ATTEMPTS) {
		job_log(j, "build", "cancel not confirmed yet (%s); trying again",
		        err->message ? err->message : "error");
		job_after(j, 1.0 * j->attempts, remote_delete);
		return;
	}
	if (err)
		job_warn(j, "build",
		         "the builder never confirmed the cancel; the build may run on");
	else
		job_log(j, "build", "the builder confirmed the cancel of build %s",
		        j->rec->build_id);
	job_finish(j, JOB_CANCELLED, NULL, NULL);
}

static void remote_delete(struct job *j)
{
	j->op = api_build_delete(j->js->d->api, j->rec->build_id, remote_delete_done_cb, j);
}

/* --- the backend ------------------------------------------------------------------- */

static void remote_start(struct job *j)
{
	remote_upload(j);
}

static void remote_resume(struct job *j)
{
	if (j->state == JOB_CANCELLING) {
		if (j->rec->build_id) {
			j->attempts = 0;
			remote_delete(j);
		} else {
			job_finish(j, JOB_CANCELLED, NULL, NULL);
		}
	} else if (j->state == JOB_BUILDING && j->rec->build_id) {
		remote_follow(j);
	} else if (j->state == JOB_UPLOADING) {
		/* No build id came back before the stop: upload again. */
		remote_upload(j);
	} else {
		job_fail(j, "the job was recorded as building without a build id",
		         "submit the job again");
	}
}

static bool remote_cancel(struct job *j)
{
	if (j->state == JOB_UPLOADING) {
		/* The submit may already have created the build: wait for its answer. */
		return job_set_state(j, JOB_CANCELLING);
	}
	if (j->state != JOB_BUILDING || j->rec->build_id == NULL)
		return false;
	if (j->op) {
		api_op_cancel(j->op);
		j->op = NULL;
	}
	if (job_set_state(j, JOB_CANCELLING)) {
		j->attempts = 0;
		remote_delete(j);
	}
	return true;
}

static void remote_stop(struct job *j)
{
	if (j->op) {
		api_op_cancel(j->op);
		j->op = NULL;
	}
}

const struct job_backend job_backend_remote = {
    .name = "remote",
    .start = remote_start,
    .resume = remote_resume,
    .cancel = remote_cancel,
    .stop = remote_stop,
};
