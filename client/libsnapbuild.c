/*
 * libsnapbuild (snapbuild.h): the client library's stable C face for other local
 * programs.  A thin layer over client.c (the connection, calls, notifications) and
 * packctx.c (packing a context with the caller's rights), turning JSON text into
 * json-c objects and back so no json-c type crosses the ABI.  The symbol version
 * script (libsnapbuild.map) exports these functions as SNAPBUILD_1, and the client
 * internals the snapbuild CLI links as SNAPBUILD_PRIVATE, an ABI of no promise.
 */
#include "snapbuild.h"

#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include "client.h"
#include "jsonrpc.h"
#include "packctx.h"
#include "protocol.h"
#include "util.h"

#define SB_EXPORT __attribute__((visibility("default")))

struct snapbuild {
	struct sb_client *c;
	bool broken; /* a follow was stopped mid-call: the framing is lost */
	int last_code;
	char *last_error; /* JSON text of the last error object, or NULL */
};

static pthread_mutex_t snapbuild_path_lock = PTHREAD_MUTEX_INITIALIZER;

static void snapbuild_set_err(char **err, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static void snapbuild_set_err(char **err, const char *fmt, ...)
{
	va_list ap;
	if (err == NULL)
		return;
	va_start(ap, fmt);
	*err = xvasprintf(fmt, ap);
	va_end(ap);
}

static void snapbuild_clear_last(struct snapbuild *sb)
{
	sb->last_code = 0;
	free(sb->last_error);
	sb->last_error = NULL;
}

static char *snapbuild_json_text(json_object *o)
{
	return xstrdup(json_object_to_json_string_ext(o, JSON_C_TO_STRING_PLAIN |
	                                                     JSON_C_TO_STRING_NOSLASHESCAPE));
}

/* NULL text is no params; otherwise an object or an array, else *err. */
static int snapbuild_parse_params(const char *text, json_object **out, char **err)
{
	enum json_tokener_error jerr;

	*out = NULL;
	if (text == NULL)
		return 0;
	*out = json_tokener_parse_verbose(text, &jerr);
	if (*out == NULL) {
		snapbuild_set_err(err, "params are not valid JSON: %s",
		                  json_tokener_error_desc(jerr));
		return -1;
	}
	if (!json_object_is_type(*out, json_type_object) &&
	    !json_object_is_type(*out, json_type_array)) {
		json_object_put(*out);
		*out = NULL;
		snapbuild_set_err(err, "params must be a JSON object or array");
		return -1;
	}
	return 0;
}

/*
 * One call: params is consumed.  The daemon's refusal becomes *err ("message" and,
 * when there is one, "\nhint: ...") and the last error.
 */
static int snapbuild_do_call(struct snapbuild *sb, const char *method, json_object *params,
                             int pass_fd, sb_notify_cb on_notify, void *arg, json_object **result,
                             char **err)
{
	struct sb_rpc_error rerr = {0};
	char *terr = NULL;
	int rc;

	*result = NULL;
	snapbuild_clear_last(sb);
	if (sb->broken) {
		json_object_put(params);
		snapbuild_set_err(err, "this connection was abandoned by a stopped follow: "
		                       "close it and connect again");
		return -1;
	}
	rc = sb_client_call(sb->c, method, params, pass_fd, on_notify, arg, result, &rerr, &terr);
	if (rc == SB_CALL_OK)
		return 0;
	if (rc == SB_CALL_RPC_ERROR) {
		json_object *e = json_object_new_object(), *hint = NULL;
		json_object_object_add(e, "code", json_object_new_int(rerr.code));
		json_object_object_add(e, "message", json_object_new_string(rerr.message));
		if (rerr.data != NULL)
			json_object_object_add(e, "data", json_object_get(rerr.data));
		sb->last_code = rerr.code;
		sb->last_error = snapbuild_json_text(e);
		json_object_put(e);
		if (json_object_object_get_ex(rerr.data, "hint", &hint) &&
		    json_object_is_type(hint, json_type_string))
			snapbuild_set_err(err, "%s\nhint: %s", rerr.message,
			                  json_object_get_string(hint));
		else
			snapbuild_set_err(err, "%s", rerr.message);
		sb_rpc_error_clear(&rerr);
	} else {
		sb->broken = true;
		if (err != NULL)
			*err = terr ? terr : xstrdup("the connection to the daemon failed");
		else
			free(terr);
	}
	return -1;
}

SB_EXPORT struct snapbuild *snapbuild_connect(const char *socket_path, char **err)
{
	struct snapbuild *sb;
	json_object *res = NULL, *pv = NULL;
	char *path, *cerr = NULL;

	if (err != NULL)
		*err = NULL;
	pthread_mutex_lock(&snapbuild_path_lock);
	path = xstrdup(socket_path != NULL ? socket_path : sb_default_socket_path());
	pthread_mutex_unlock(&snapbuild_path_lock);
	sb = xcalloc(1, sizeof(*sb));
	sb->c = sb_client_connect(path, &cerr);
	if (sb->c == NULL) {
		snapbuild_set_err(err, "cannot connect to the snapbuild daemon at %s: %s", path,
		                  cerr);
		goto fail;
	}
	if (snapbuild_do_call(sb, "daemon.version", NULL, -1, NULL, NULL, &res, &cerr) < 0) {
		snapbuild_set_err(err, "the daemon at %s did not answer daemon.version: %s", path,
		                  cerr);
		goto fail;
	}
	if (!json_object_object_get_ex(res, "protocol_version", &pv) ||
	    json_object_get_int64(pv) != SNAPBUILD_PROTOCOL_VERSION) {
		snapbuild_set_err(err,
		                  "the daemon at %s speaks protocol %s, this library %d: "
		                  "install matching versions",
		                  path, pv ? json_object_get_string(pv) : "(none)",
		                  SNAPBUILD_PROTOCOL_VERSION);
		goto fail;
	}
	json_object_put(res);
	free(path);
	return sb;
fail:
	json_object_put(res);
	free(cerr);
	free(path);
	snapbuild_close(sb);
	return NULL;
}

SB_EXPORT int snapbuild_call(struct snapbuild *sb, const char *method, const char *params_json,
                             char **result_json, char **err)
{
	json_object *params, *res = NULL;

	if (err != NULL)
		*err = NULL;
	if (result_json != NULL)
		*result_json = NULL;
	snapbuild_clear_last(sb);
	if (snapbuild_parse_params(params_json, &params, err) < 0)
		return -1;
	if (snapbuild_do_call(sb, method, params, -1, NULL, NULL, &res, err) < 0)
		return -1;
	if (result_json != NULL)
		*result_json = snapbuild_json_text(res);
	json_object_put(res);
	return 0;
}

SB_EXPORT int snapbuild_submit(struct snapbuild *sb, const char *context_dir,
                               const char *params_json, char **job_json, char **err)
{
	struct packctx packed = {.fd = -1};
	json_object *params, *res = NULL, *df = NULL;
	char *perr = NULL;
	int rc = -1;

	if (err != NULL)
		*err = NULL;
	if (job_json != NULL)
		*job_json = NULL;
	snapbuild_clear_last(sb);
	if (snapbuild_parse_params(params_json, &params, err) < 0)
		return -1;
	if (params == NULL)
		params = json_object_new_object();
	if (!json_object_is_type(params, json_type_object)) {
		snapbuild_set_err(err, "build.submit params must be a JSON object");
		goto out;
	}
	if (context_dir != NULL) {
		struct packctx_options po = {.dir = context_dir, .out_fd = -1};
		if (json_object_object_get_ex(params, "dockerfile", &df) &&
		    json_object_is_type(df, json_type_string))
			po.dockerfile = json_object_get_string(df);
		if (packctx_run(&po, &packed, &perr) < 0) {
			snapbuild_set_err(err, "%s", perr);
			goto out;
		}
		if (!json_object_object_get_ex(params, "context", NULL)) {
			char *abs = realpath(context_dir, NULL);
			json_object_object_add(params, "context",
			                       json_object_new_string(abs ? abs : context_dir));
			free(abs);
		}
		json_object_object_add(params, "archive", packctx_archive_param(&packed));
	}
	rc = snapbuild_do_call(sb, "build.submit", params, packed.fd, NULL, NULL, &res, err);
	params = NULL;
	if (rc == 0 && job_json != NULL)
		*job_json = snapbuild_json_text(res);
out:
	packctx_clear(&packed);
	json_object_put(params);
	json_object_put(res);
	free(perr);
	return rc;
}

struct snapbuild_follow_state {
	struct snapbuild *sb;
	snapbuild_on_event on_event;
	void *arg;
	bool stopped;
};

static void snapbuild_follow_cb(void *arg, const char *method, json_object *params)
{
	struct snapbuild_follow_state *st = arg;
	char *text;

	if (st->stopped || strcmp(method, "build.event") != 0 || params == NULL)
		return;
	text = snapbuild_json_text(params);
	if (st->on_event(text, st->arg) != 0) {
		/* The answer is still to come: end the call by closing our side. */
		st->stopped = true;
		shutdown(sb_client_fd(st->sb->c), SHUT_RDWR);
	}
	free(text);
}

SB_EXPORT int snapbuild_follow(struct snapbuild *sb, const char *job_id,
                               snapbuild_on_event on_event, void *arg, char **err)
{
	struct snapbuild_follow_state st = {.sb = sb, .on_event = on_event, .arg = arg};
	json_object *params = json_object_new_object(), *res = NULL;
	char *ferr = NULL;
	int rc;

	if (err != NULL)
		*err = NULL;
	json_object_object_add(params, "id", json_object_new_string(job_id));
	json_object_object_add(params, "follow", json_object_new_boolean(1));
	rc = snapbuild_do_call(sb, "build.logs", params, -1, snapbuild_follow_cb, &st, &res, &ferr);
	json_object_put(res);
	if (st.stopped) {
		sb->broken = true;
		free(ferr);
		snapbuild_set_err(err, "stopped by the caller");
		return -1;
	}
	if (rc < 0) {
		if (err != NULL)
			*err = ferr;
		else
			free(ferr);
	}
	return rc;
}

SB_EXPORT int snapbuild_last_error_code(const struct snapbuild *sb)
{
	return sb->last_code;
}

SB_EXPORT char *snapbuild_last_error_json(const struct snapbuild *sb)
{
	return sb->last_error ? xstrdup(sb->last_error) : NULL;
}

SB_EXPORT void snapbuild_close(struct snapbuild *sb)
{
	if (sb == NULL)
		return;
	sb_client_close(sb->c);
	free(sb->last_error);
	free(sb);
}

SB_EXPORT void snapbuild_free(void *p)
{
	free(p);
}

SB_EXPORT const char *snapbuild_version(void)
{
	return SNAPBUILD_VERSION;
}
