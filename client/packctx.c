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
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/evp.h>

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

/* The Dockerfile's own ignore file may be large, but not without bound. */
#define PACKCTX_MAX_IGNORE (1024 * 1024)

/* Where the Dockerfile is, and what goes in the archive for it. */
struct packctx_df {
	char *name;   /* the member name: a path in the context, or generated */
	int fd;       /* outside the context: the file; else -1 */
	char *ignore; /* outside: <Dockerfile>.dockerignore's path when it exists */
	char *ignore_text;
	size_t ignore_len;
};

static void packctx_df_clear(struct packctx_df *df)
{
	if (df->fd >= 0)
		close(df->fd);
	free(df->name);
	free(df->ignore);
	free(df->ignore_text);
}

/* The whole of a small file; NULL with *err set. */
static char *packctx_slurp(const char *path, size_t max, size_t *len, char **err)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
	struct stat st;
	char *buf = NULL;
	size_t n = 0;

	if (fd < 0 || fstat(fd, &st) < 0 || !S_ISREG(st.st_mode) || (size_t)st.st_size > max) {
		*err = xasprintf("cannot read %s: %s", path,
		                 fd < 0 ? strerror(errno) : "not a regular file of at most 1 MiB");
		goto fail;
	}
	buf = xmalloc((size_t)st.st_size + 1);
	while (n < (size_t)st.st_size) {
		ssize_t r = read(fd, buf + n, (size_t)st.st_size - n);
		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0)
			break;
		n += (size_t)r;
	}
	close(fd);
	*len = n;
	return buf;
fail:
	if (fd >= 0)
		close(fd);
	free(buf);
	return NULL;
}

/* ".dockerfile.<first 20 hex digits of its SHA-256>": stable, so is the archive. */
static char *packctx_df_name(int fd, char **err)
{
	unsigned char buf[65536], md[EVP_MAX_MD_SIZE];
	unsigned mdlen = 0;
	char hex[41];
	EVP_MD_CTX *h = EVP_MD_CTX_new();
	ssize_t n;

	if (h == NULL || EVP_DigestInit_ex(h, EVP_sha256(), NULL) != 1)
		abort();
	while ((n = read(fd, buf, sizeof(buf))) != 0) {
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			*err = xasprintf("cannot read the Dockerfile: %s", strerror(errno));
			EVP_MD_CTX_free(h);
			return NULL;
		}
		EVP_DigestUpdate(h, buf, (size_t)n);
	}
	EVP_DigestFinal_ex(h, md, &mdlen);
	EVP_MD_CTX_free(h);
	for (int i = 0; i < 10; i++)
		snprintf(hex + 2 * i, 3, "%02x", md[i]);
	return xasprintf(".dockerfile.%s", hex);
}

/*
 * Resolves o->dockerfile as docker build -f does.  0 with df filled; -1 with *err.
 */
static int packctx_df_resolve(const struct packctx_options *o, struct packctx_df *df, char **err)
{
	char *ctx = NULL, *copy = NULL, *dir = NULL, *full = NULL;
	const char *path = o->dockerfile, *base;
	struct stat st;
	size_t clen;
	int rc = -1;

	df->fd = -1;
	if (path == NULL)
		return 0;
	if (path[0] != '/' && stat(path, &st) != 0) {
		/* Not there from here: a path in the context, as clients before took it. */
		df->name = xstrdup(path);
		return 0;
	}
	ctx = realpath(o->dir, NULL);
	copy = xstrdup(path);
	base = strrchr(copy, '/');
	if (base != NULL) {
		copy[base - copy] = '\0';
		base++;
		dir = realpath(copy[0] ? copy : "/", NULL);
	} else {
		base = path;
		dir = realpath(".", NULL);
	}
	if (ctx == NULL || dir == NULL || *base == '\0') {
		*err = xasprintf("Dockerfile %s: %s", path,
		                 *base ? strerror(errno) : "names a directory, not a file");
		goto out;
	}
	full = xasprintf("%s/%s", strcmp(dir, "/") == 0 ? "" : dir, base);
	clen = strcmp(ctx, "/") == 0 ? 0 : strlen(ctx);
	if (strncmp(full, ctx, clen) == 0 && full[clen] == '/') {
		df->name = xstrdup(full + clen + 1);
		rc = 0;
		goto out;
	}
	/* Outside the context: sent under a generated name, as docker does. */
	df->fd = open(full, O_RDONLY | O_CLOEXEC | O_NOCTTY);
	if (df->fd < 0 || fstat(df->fd, &st) < 0 || !S_ISREG(st.st_mode)) {
		*err = xasprintf("Dockerfile %s: %s", path,
		                 df->fd < 0 ? strerror(errno) : "not a regular file");
		goto out;
	}
	if ((df->name = packctx_df_name(df->fd, err)) == NULL)
		goto out;
	df->ignore = xasprintf("%s.dockerignore", full);
	if (access(df->ignore, F_OK) != 0) {
		free(df->ignore);
		df->ignore = NULL;
	} else if ((df->ignore_text = packctx_slurp(df->ignore, PACKCTX_MAX_IGNORE, &df->ignore_len,
	                                            err)) == NULL) {
		goto out;
	}
	rc = 0;
out:
	free(ctx);
	free(copy);
	free(dir);
	free(full);
	return rc;
}

int packctx_run(const struct packctx_options *o, struct packctx *p, char **err)
{
	struct packctx_run run = {.p = p, .o = o};
	struct packctx_df df = {.fd = -1};
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
	if (packctx_df_resolve(o, &df, err) < 0) {
		packctx_df_clear(&df);
		close(dirfd);
		return -1;
	}
	int out = o->out_fd;
	if (!o->inspect_only && out < 0) {
		out = p->fd = packctx_tmpfile(err);
		if (out < 0) {
			packctx_df_clear(&df);
			close(dirfd);
			return -1;
		}
	}
	pthread_mutex_init(&run.lock, NULL);
	char *cache_dir = o->no_cache || o->inspect_only ? NULL : packcache_default_dir();
	struct pack_options po = {
	    .dirfd = dirfd,
	    .dockerfile = df.name,
	    .extra_name = df.fd >= 0 ? df.name : NULL,
	    .extra_fd = df.fd,
	    .ignore_name = df.ignore,
	    .ignore_text = df.ignore_text,
	    .ignore_len = df.ignore_len,
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
	p->dockerfile = df.name;
	df.name = NULL;
	packctx_df_clear(&df);
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
	free(p->dockerfile);
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
	if (p->dockerfile != NULL)
		json_object_object_add(res, "dockerfile", json_object_new_string(p->dockerfile));
	return res;
}
