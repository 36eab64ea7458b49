/*
 * Packing a context with the caller's own rights (packctx.h).
 */
#include "packctx.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "packcache.h"
#include "util.h"

#define PACKCTX_MAX_WARNINGS 1000

struct packctx_run {
	struct packctx *p;
	const struct packctx_options *o;
	pthread_mutex_t lock;
};

static void packctx_warning_cb(void *arg, const char *msg)
{
	struct packctx_run *run = arg;
	struct packctx *p = run->p;
	pthread_mutex_lock(&run->lock);
	if (p->nwarnings < PACKCTX_MAX_WARNINGS) {
		p->warnings = xrealloc(p->warnings, (p->nwarnings + 1) * sizeof(char *));
		p->warnings[p->nwarnings++] = xstrdup(msg);
	}
	pthread_mutex_unlock(&run->lock);
}

static void packctx_progress_cb(void *arg, uint64_t files, uint64_t bytes)
{
	struct packctx_run *run = arg;
	if (run->o->on_progress)
		run->o->on_progress(run->o->arg, files, bytes);
}

/* An unlinked temporary file: O_TMPFILE where the filesystem has it, else mkstemp. */
static int packctx_tmpfile(char **err)
{
	const char *env = getenv("TMPDIR");
	const char *dirs[] = {env && *env ? env : NULL, "/var/tmp", "/tmp"};
	int last = 0;
	for (size_t i = 0; i < sizeof(dirs) / sizeof(dirs[0]); i++) {
		if (dirs[i] == NULL)
			continue;
		int fd = open(dirs[i], O_TMPFILE | O_RDWR | O_CLOEXEC, 0600);
		if (fd >= 0)
			return fd;
		char *path = xasprintf("%s/snapbuild-context-XXXXXX", dirs[i]);
		fd = mkostemp(path, O_CLOEXEC);
		if (fd >= 0) {
			unlink(path);
			free(path);
			return fd;
		}
		last = errno;
		free(path);
	}
	*err = xasprintf("cannot create a temporary file for the archive in $TMPDIR, /var/tmp "
	                 "or /tmp: %s",
	                 strerror(last));
	return -1;
}

int packctx_run(const struct packctx_options *o, struct packctx *p, char **err)
{
	struct packctx_run run = {.p = p, .o = o};
	int dirfd;

	memset(p, 0, sizeof(*p));
	p->fd = -1;
	*err = NULL;
	dirfd = open(o->dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (dirfd < 0) {
		*err =
		    xasprintf("cannot open the context directory %s: %s", o->dir, strerror(errno));
		return -1;
	}
	int out = o->out_fd;
	if (!o->inspect_only && out < 0) {
		out = p->fd = packctx_tmpfile(err);
		if (out < 0) {
			close(dirfd);
			return -1;
		}
	}
	pthread_mutex_init(&run.lock, NULL);
	char *cache_dir = o->no_cache || o->inspect_only ? NULL : packcache_default_dir();
	struct pack_options po = {
	    .dirfd = dirfd,
	    .dockerfile = o->dockerfile,
	    .to_fd = !o->inspect_only,
	    .out_fd = out,
	    .level = 6,
	    .list_files = o->list_files,
	    .cancel = o->cancel,
	    .on_warning = packctx_warning_cb,
	    .on_progress = packctx_progress_cb,
	    .arg = &run,
	    .cache_dir = cache_dir,
	};
	pack_run(&po, &p->result);
	free(cache_dir);
	pthread_mutex_destroy(&run.lock);
	close(dirfd);
	if (p->result.status != PACK_OK) {
		*err = xstrdup(p->result.error ? p->result.error : "cancelled");
		packctx_clear(p);
		return -1;
	}
	return 0;
}

void packctx_clear(struct packctx *p)
{
	if (p->fd >= 0)
		close(p->fd);
	pack_result_clear(&p->result);
	for (size_t i = 0; i < p->nwarnings; i++)
		free(p->warnings[i]);
	free(p->warnings);
	memset(p, 0, sizeof(*p));
	p->fd = -1;
}

static json_object *packctx_file_json(const struct pack_file *f)
{
	json_object *o = json_object_new_object();
	json_object_object_add(o, "path", json_object_new_string(f->path));
	json_object_object_add(o, "size", json_object_new_int64((int64_t)f->size));
	json_object_object_add(o, "mode", json_object_new_int((int)f->mode));
	json_object_object_add(o, "type",
	                       json_object_new_string(f->type == 'l' ? "symlink" : "file"));
	return o;
}

json_object *packctx_archive_param(const struct packctx *p)
{
	json_object *a = json_object_new_object();
	json_object_object_add(a, "sha256", json_object_new_string(p->result.sha256));
	json_object_object_add(a, "bytes", json_object_new_int64((int64_t)p->result.archive_size));
	return a;
}

json_object *packctx_json(const struct packctx *p, bool list_files)
{
	const struct pack_result *r = &p->result;
	json_object *res = json_object_new_object();
	json_object_object_add(res, "file_count", json_object_new_int64((int64_t)r->file_count));
	json_object_object_add(res, "total_bytes", json_object_new_int64((int64_t)r->total_bytes));
	json_object *largest = json_object_new_array();
	for (size_t i = 0; i < r->nlargest; i++)
		json_object_array_add(largest, packctx_file_json(&r->largest[i]));
	json_object_object_add(res, "largest", largest);
	json_object *excluded = json_object_new_array();
	for (size_t i = 0; i < r->nexcluded; i++)
		json_object_array_add(excluded, json_object_new_string(r->excluded[i]));
	json_object_object_add(res, "excluded", excluded);
	json_object *warnings = json_object_new_array();
	for (size_t i = 0; i < p->nwarnings; i++)
		json_object_array_add(warnings, json_object_new_string(p->warnings[i]));
	json_object_object_add(res, "warnings", warnings);
	if (list_files) {
		json_object *files = json_object_new_array();
		for (size_t i = 0; i < r->nfiles; i++)
			json_object_array_add(files, packctx_file_json(&r->files[i]));
		json_object_object_add(res, "files", files);
	}
	if (r->sha256[0])
		json_object_object_add(res, "archive", packctx_archive_param(p));
	return res;
}
