/*
 * context.inspect and context.save: what a build would send, without sending it.
 * inspect walks the context on a worker thread exactly as a build does (same
 * .dockerignore rules, same packer) and reports counts, the largest files and what
 * was excluded; with save it also keeps the archive, which context.save then copies
 * into a file descriptor the client passes — byte for byte what would be uploaded.
 */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/sendfile.h>
#include <sys/stat.h>
#include <unistd.h>

#include "daemon.h"
#include "jobs.h"
#include "methods.h"
#include "pack.h"
#include "protocol.h"
#include "util.h"
#include "worker.h"

struct inspect {
	struct rpc_call *call;
	struct daemon *d;
	int dirfd;
	char *dockerfile;
	bool save;
	bool list_files;
	volatile int cancel;
	struct pack_options opts;
	struct pack_result result;
	pthread_mutex_t lock;
	json_object *warnings;
	char *out_dir;
	bool closed;
};

/* Saved archives are kept per user: one user cannot fetch another's by its digest. */
static char *saved_dir(struct rpc_call *call)
{
	return xasprintf("%s/saved-%u", jobs_spool_dir(rpc_call_daemon(call)->jobs),
	                 (unsigned)rpc_call_peer(call)->uid);
}

static void inspect_warning_cb(void *arg, const char *msg)
{
	struct inspect *in = arg;
	pthread_mutex_lock(&in->lock);
	if (json_object_array_length(in->warnings) < 1000)
		json_object_array_add(in->warnings, json_object_new_string(msg));
	pthread_mutex_unlock(&in->lock);
}

static void inspect_work(void *arg)
{
	struct inspect *in = arg;
	pack_run(&in->opts, &in->result);
}

static json_object *file_json(const struct pack_file *f)
{
	json_object *o = json_object_new_object();
	json_object_object_add(o, "path", json_object_new_string(f->path));
	json_object_object_add(o, "size", json_object_new_int64((int64_t)f->size));
	json_object_object_add(o, "mode", json_object_new_int((int)f->mode));
	json_object_object_add(o, "type",
	                       json_object_new_string(f->type == 'l' ? "symlink" : "file"));
	return o;
}

static void inspect_free(struct inspect *in)
{
	pack_result_clear(&in->result);
	close(in->dirfd);
	free(in->dockerfile);
	free(in->out_dir);
	json_object_put(in->warnings);
	pthread_mutex_destroy(&in->lock);
	free(in);
}

static void inspect_close_cb(struct rpc_call *call, void *arg)
{
	(void)call;
	struct inspect *in = arg;
	in->closed = true;
	in->cancel = 1;
}

static void inspect_done_cb(void *arg)
{
	struct inspect *in = arg;
	struct pack_result *r = &in->result;
	if (in->closed) {
		if (r->archive_path)
			unlink(r->archive_path);
		rpc_reply_error(in->call, JSONRPC_INTERNAL_ERROR, "connection closed", NULL);
		inspect_free(in);
		return;
	}
	if (r->status != PACK_OK) {
		rpc_reply_error(in->call, SB_ERR_CONTEXT, r->error ? r->error : "packing failed",
		                NULL);
		inspect_free(in);
		return;
	}
	json_object *res = json_object_new_object();
	json_object_object_add(res, "file_count", json_object_new_int64((int64_t)r->file_count));
	json_object_object_add(res, "total_bytes", json_object_new_int64((int64_t)r->total_bytes));
	json_object *largest = json_object_new_array();
	for (size_t i = 0; i < r->nlargest; i++)
		json_object_array_add(largest, file_json(&r->largest[i]));
	json_object_object_add(res, "largest", largest);
	json_object *excluded = json_object_new_array();
	for (size_t i = 0; i < r->nexcluded; i++)
		json_object_array_add(excluded, json_object_new_string(r->excluded[i]));
	json_object_object_add(res, "excluded", excluded);
	json_object_object_add(res, "warnings", json_object_get(in->warnings));
	if (in->list_files) {
		json_object *files = json_object_new_array();
		for (size_t i = 0; i < r->nfiles; i++)
			json_object_array_add(files, file_json(&r->files[i]));
		json_object_object_add(res, "files", files);
	}
	if (in->save) {
		json_object *a = json_object_new_object();
		json_object_object_add(a, "sha256", json_object_new_string(r->sha256));
		json_object_object_add(a, "bytes", json_object_new_int64((int64_t)r->archive_size));
		json_object_object_add(res, "archive", a);
	}
	rpc_reply(in->call, res);
	inspect_free(in);
}

static void context_inspect(struct rpc_call *call, json_object *params)
{
	struct daemon *d = rpc_call_daemon(call);
	int fd = rpc_call_take_fd(call);
	json_object *v;
	const char *dockerfile = "Dockerfile";
	bool save = false, list = false;
	if (params && !json_object_is_type(params, json_type_object)) {
		rpc_reply_error(call, JSONRPC_INVALID_PARAMS, "params must be an object", NULL);
		goto fail;
	}
	if (params) {
		json_object_object_foreach(params, key, val)
		{
			if (strcmp(key, "dockerfile") == 0 &&
			    json_object_is_type(val, json_type_string))
				dockerfile = json_object_get_string(val);
			else if (strcmp(key, "save") == 0 &&
			         json_object_is_type(val, json_type_boolean))
				save = json_object_get_boolean(val);
			else if (strcmp(key, "list_files") == 0 &&
			         json_object_is_type(val, json_type_boolean))
				list = json_object_get_boolean(val);
			else if (strcmp(key, "context") == 0 &&
			         json_object_is_type(val, json_type_string))
				continue;
			else {
				char *msg = xasprintf("unknown parameter '%s' or wrong type", key);
				rpc_reply_error(call, JSONRPC_INVALID_PARAMS, msg, NULL);
				free(msg);
				goto fail;
			}
		}
	}
	if (fd < 0 && params && json_object_object_get_ex(params, "context", &v)) {
		if (rpc_call_peer(call)->uid != geteuid()) {
			rpc_reply_error_hint(
			    call, SB_ERR_PERMISSION_DENIED,
			    "a context path is accepted only from the daemon's own user",
			    "pass the directory as a file descriptor (SCM_RIGHTS)");
			goto fail;
		}
		fd = open(json_object_get_string(v), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
		if (fd < 0) {
			char *msg = xasprintf("cannot open context %s: %s",
			                      json_object_get_string(v), strerror(errno));
			rpc_reply_error(call, SB_ERR_CONTEXT, msg, NULL);
			free(msg);
			goto fail;
		}
	}
	if (fd < 0) {
		rpc_reply_error(call, JSONRPC_INVALID_PARAMS,
		                "pass the context directory as a file descriptor (SCM_RIGHTS)",
		                NULL);
		goto fail;
	}
	struct inspect *in = xcalloc(1, sizeof(*in));
	pthread_mutex_init(&in->lock, NULL);
	in->call = call;
	in->d = d;
	in->dirfd = fd;
	in->dockerfile = xstrdup(dockerfile);
	in->save = save;
	in->list_files = list;
	in->warnings = json_object_new_array();
	char *out_dir = save ? saved_dir(call) : NULL;
	if (out_dir && mkdir(out_dir, 0700) != 0 && errno != EEXIST) {
		char *msg = xasprintf("cannot create %s: %s", out_dir, strerror(errno));
		rpc_reply_error(call, SB_ERR_STORAGE, msg, NULL);
		free(msg);
		in->out_dir = out_dir;
		inspect_free(in);
		return;
	}
	in->opts = (struct pack_options){
	    .dirfd = fd,
	    .dockerfile = in->dockerfile,
	    .out_dir = out_dir,
	    .level = 6,
	    .list_files = list,
	    .cancel = &in->cancel,
	    .on_warning = inspect_warning_cb,
	    .arg = in,
	};
	rpc_call_set_close_cb(call, inspect_close_cb, in);
	in->out_dir = out_dir;
	worker_run(d->base, inspect_work, inspect_done_cb, in);
	return;
fail:
	if (fd >= 0)
		close(fd);
}

/* --- context.save -------------------------------------------------------------------- */

struct save {
	struct rpc_call *call;
	char *path;
	int out_fd;
	int err;
	uint64_t bytes;
};

static void save_work(void *arg)
{
	struct save *s = arg;
	int in = open(s->path, O_RDONLY | O_CLOEXEC);
	if (in < 0) {
		s->err = errno;
		return;
	}
	for (;;) {
		ssize_t n = sendfile(s->out_fd, in, NULL, 1 << 20);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			s->err = errno;
			break;
		}
		if (n == 0)
			break;
		s->bytes += (uint64_t)n;
	}
	close(in);
}

static void save_done_cb(void *arg)
{
	struct save *s = arg;
	if (s->err) {
		char *msg = xasprintf("writing the archive failed: %s", strerror(s->err));
		rpc_reply_error(s->call, SB_ERR_CONTEXT, msg, NULL);
		free(msg);
	} else {
		unlink(s->path);
		json_object *res = json_object_new_object();
		json_object_object_add(res, "bytes", json_object_new_int64((int64_t)s->bytes));
		rpc_reply(s->call, res);
	}
	close(s->out_fd);
	free(s->path);
	free(s);
}

static bool sha256_hex(const char *s)
{
	if (strlen(s) != 64)
		return false;
	for (size_t i = 0; i < 64; i++)
		if (!strchr("0123456789abcdef", s[i]))
			return false;
	return true;
}

static void context_save(struct rpc_call *call, json_object *params)
{
	struct daemon *d = rpc_call_daemon(call);
	int fd = rpc_call_take_fd(call);
	json_object *v = NULL;
	if (!params || !json_object_is_type(params, json_type_object) ||
	    !json_object_object_get_ex(params, "sha256", &v) ||
	    !json_object_is_type(v, json_type_string) || !sha256_hex(json_object_get_string(v))) {
		rpc_reply_error(call, JSONRPC_INVALID_PARAMS,
		                "'sha256' (from context.inspect with save) is required", NULL);
		goto fail;
	}
	if (fd < 0) {
		rpc_reply_error(call, JSONRPC_INVALID_PARAMS,
		                "pass the output file as a file descriptor (SCM_RIGHTS)", NULL);
		goto fail;
	}
	char *dir = saved_dir(call);
	char *path = xasprintf("%s/%s.tar.gz", dir, json_object_get_string(v));
	free(dir);
	if (access(path, R_OK) != 0) {
		rpc_reply_error_hint(call, SB_ERR_NOT_FOUND, "no saved archive with that sha256",
		                     "run context.inspect with save first");
		free(path);
		goto fail;
	}
	struct save *s = xcalloc(1, sizeof(*s));
	s->call = call;
	s->path = path;
	s->out_fd = fd;
	worker_run(d->base, save_work, save_done_cb, s);
	return;
fail:
	if (fd >= 0)
		close(fd);
}

const struct rpc_method methods_context[] = {
    {"context.inspect", context_inspect},
    {"context.save", context_save},
    {NULL, NULL},
};
