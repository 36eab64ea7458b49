/*
 * Received contexts, read with libarchive: only the gzip filter and the tar formats
 * are enabled, so anything else is refused the way the builder refuses it.  Every
 * entry's data is read through, which makes a corrupt or truncated gzip stream fail
 * here rather than later.  The Dockerfile is looked up by normalised path; a symlink
 * or hard link to it is followed inside the archive (a few hops at most).
 */
#include "context.h"

#include <archive.h>
#include <archive_entry.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "util.h"

#define SIM_CONTEXT_MAX_DOCKERFILE (4u << 20)
#define SIM_CONTEXT_MAX_HOPS       8

struct sim_context_entry {
	char *path;
	const char *type;
	int64_t size;
	unsigned mode;
	char *link;
	int64_t uid, gid, mtime;
};

struct sim_context {
	struct sim_context_entry *entries;
	size_t n, cap;
	uint64_t bytes;
	char *dockerfile;
};

/* What a scan found for the path it looked for. */
struct sim_context_hit {
	bool found;
	const char *type;
	char *link; /* symlink or hard link target, when it is one */
	char *text; /* content of a regular file */
};

char *sim_context_normalize(const char *path)
{
	size_t len = strlen(path);
	char *out = xmalloc(len + 1);
	size_t o = 0;
	const char *p = path;
	while (*p != '\0') {
		const char *slash = strchr(p, '/');
		size_t n = slash ? (size_t)(slash - p) : strlen(p);
		if (n == 0 || (n == 1 && p[0] == '.')) {
			/* empty or "." component */
		} else if (n == 2 && p[0] == '.' && p[1] == '.') {
			if (o == 0) {
				free(out);
				return NULL;
			}
			while (o > 0 && out[o - 1] != '/')
				o--;
			if (o > 0)
				o--;
		} else {
			if (o > 0)
				out[o++] = '/';
			memcpy(out + o, p, n);
			o += n;
		}
		p += n;
		if (*p == '/')
			p++;
	}
	out[o] = '\0';
	if (o == 0) {
		free(out);
		return NULL;
	}
	return out;
}

static const char *sim_context_type(struct archive_entry *e)
{
	if (archive_entry_hardlink(e) != NULL)
		return "hardlink";
	switch (archive_entry_filetype(e)) {
	case AE_IFREG:
		return "file";
	case AE_IFLNK:
		return "symlink";
	case AE_IFDIR:
		return "dir";
	default:
		return "other";
	}
}

static void sim_context_add(struct sim_context *ctx, struct archive_entry *e, const char *type)
{
	if (ctx->n == ctx->cap) {
		ctx->cap = ctx->cap ? ctx->cap * 2 : 64;
		ctx->entries = xrealloc(ctx->entries, ctx->cap * sizeof(*ctx->entries));
	}
	struct sim_context_entry *ce = &ctx->entries[ctx->n++];
	const char *path = archive_entry_pathname(e);
	const char *link = archive_entry_hardlink(e);
	if (link == NULL)
		link = archive_entry_symlink(e);
	ce->path = xstrdup(path ? path : "");
	ce->type = type;
	ce->size = archive_entry_size(e);
	ce->mode = (unsigned)archive_entry_perm(e);
	ce->link = link ? xstrdup(link) : NULL;
	ce->uid = archive_entry_uid(e);
	ce->gid = archive_entry_gid(e);
	ce->mtime = archive_entry_mtime(e);
	if (strcmp(type, "file") == 0 && ce->size > 0)
		ctx->bytes += (uint64_t)ce->size;
}

/* Reads the current entry's data into a new string, keeping at most the cap. */
static int sim_context_read_text(struct archive *a, char **text, char **err)
{
	size_t cap = 4096, n = 0;
	char *buf = xmalloc(cap);
	char chunk[16384];
	for (;;) {
		la_ssize_t got = archive_read_data(a, chunk, sizeof(chunk));
		if (got < 0) {
			*err = xasprintf("corrupt context archive: %s", archive_error_string(a));
			free(buf);
			return -1;
		}
		if (got == 0)
			break;
		size_t keep = (size_t)got;
		if (n + keep > SIM_CONTEXT_MAX_DOCKERFILE)
			keep = SIM_CONTEXT_MAX_DOCKERFILE - n;
		if (n + keep + 1 > cap) {
			while (n + keep + 1 > cap)
				cap *= 2;
			buf = xrealloc(buf, cap);
		}
		memcpy(buf + n, chunk, keep);
		n += keep;
	}
	buf[n] = '\0';
	*text = buf;
	return 0;
}

/*
 * One pass over the archive: lists entries into ctx when ctx is not NULL, and
 * reports what the entry at normalised path want is.
 */
static int sim_context_scan(const void *data, size_t len, const char *want, struct sim_context *ctx,
                            struct sim_context_hit *hit, char **err)
{
	struct archive *a = archive_read_new();
	struct archive_entry *e;
	int rc = -1;
	memset(hit, 0, sizeof(*hit));
	archive_read_support_filter_gzip(a);
	archive_read_support_format_tar(a);
	if (archive_read_open_memory(a, data, len) != ARCHIVE_OK) {
		*err = xasprintf("corrupt context archive: %s", archive_error_string(a));
		goto out;
	}
	for (;;) {
		int r = archive_read_next_header(a, &e);
		if (r == ARCHIVE_EOF)
			break;
		if (r != ARCHIVE_OK && r != ARCHIVE_WARN) {
			const char *msg = archive_error_string(a);
			*err = xasprintf("corrupt context archive: %s", msg ? msg : "unreadable");
			goto out;
		}
		if (archive_filter_code(a, 0) != ARCHIVE_FILTER_GZIP) {
			*err = xstrdup("context is not gzip-compressed");
			goto out;
		}
		const char *type = sim_context_type(e);
		if (ctx != NULL)
			sim_context_add(ctx, e, type);
		const char *path = archive_entry_pathname(e);
		char *norm = path ? sim_context_normalize(path) : NULL;
		bool match = norm != NULL && strcmp(norm, want) == 0;
		free(norm);
		if (match && !hit->found) {
			hit->found = true;
			hit->type = type;
			const char *link = archive_entry_hardlink(e);
			if (link == NULL)
				link = archive_entry_symlink(e);
			if (link != NULL)
				hit->link = xstrdup(link);
			if (strcmp(type, "file") == 0) {
				if (sim_context_read_text(a, &hit->text, err) < 0)
					goto out;
				continue;
			}
		}
		if (archive_read_data_skip(a) != ARCHIVE_OK) {
			*err = xasprintf("corrupt context archive: %s", archive_error_string(a));
			goto out;
		}
	}
	rc = 0;
out:
	if (rc < 0) {
		free(hit->link);
		free(hit->text);
		memset(hit, 0, sizeof(*hit));
	}
	archive_read_free(a);
	return rc;
}

/* Where a link found at path points, as a normalised context path (NULL if outside). */
static char *sim_context_resolve(const char *path, const char *type, const char *link)
{
	if (strcmp(type, "hardlink") == 0 || link[0] == '/')
		return sim_context_normalize(link);
	const char *slash = strrchr(path, '/');
	char *joined =
	    slash ? xasprintf("%.*s/%s", (int)(slash - path), path, link) : xstrdup(link);
	char *norm = sim_context_normalize(joined);
	free(joined);
	return norm;
}

struct sim_context *sim_context_new(const void *data, size_t len, const char *dockerfile,
                                    char **err)
{
	struct sim_context *ctx = xcalloc(1, sizeof(*ctx));
	struct sim_context_hit hit;
	char *want = NULL;
	*err = NULL;
	if (len < 2 || ((const unsigned char *)data)[0] != 0x1f ||
	    ((const unsigned char *)data)[1] != 0x8b) {
		*err = xstrdup("context is not gzip-compressed (no gzip magic)");
		goto fail;
	}
	want = sim_context_normalize(dockerfile);
	if (want == NULL || dockerfile[0] == '/') {
		*err = xasprintf("dockerfile \"%s\" is not a path inside the context", dockerfile);
		goto fail;
	}
	if (sim_context_scan(data, len, want, ctx, &hit, err) < 0)
		goto fail;
	for (int hops = 0;; hops++) {
		if (!hit.found) {
			*err = xasprintf("dockerfile \"%s\" is not in the context", dockerfile);
			goto fail;
		}
		if (hit.text != NULL) {
			ctx->dockerfile = hit.text;
			break;
		}
		if (hit.link == NULL || hops == SIM_CONTEXT_MAX_HOPS) {
			*err = xasprintf("dockerfile \"%s\" in the context is not a regular file",
			                 dockerfile);
			free(hit.link);
			goto fail;
		}
		char *next = sim_context_resolve(want, hit.type, hit.link);
		free(hit.link);
		free(want);
		want = next;
		if (want == NULL) {
			*err = xasprintf("dockerfile \"%s\" links outside the context", dockerfile);
			goto fail;
		}
		if (sim_context_scan(data, len, want, NULL, &hit, err) < 0)
			goto fail;
	}
	free(want);
	return ctx;
fail:
	free(want);
	sim_context_free(ctx);
	return NULL;
}

const char *sim_context_dockerfile(const struct sim_context *ctx)
{
	return ctx->dockerfile ? ctx->dockerfile : "";
}

size_t sim_context_count(const struct sim_context *ctx)
{
	return ctx->n;
}

uint64_t sim_context_bytes(const struct sim_context *ctx)
{
	return ctx->bytes;
}

struct json_object *sim_context_files_json(const struct sim_context *ctx)
{
	struct json_object *arr = json_object_new_array_ext((int)ctx->n);
	for (size_t i = 0; i < ctx->n; i++) {
		const struct sim_context_entry *ce = &ctx->entries[i];
		struct json_object *o = json_object_new_object();
		json_object_object_add(o, "path", json_object_new_string(ce->path));
		json_object_object_add(o, "type", json_object_new_string(ce->type));
		json_object_object_add(o, "size", json_object_new_int64(ce->size));
		json_object_object_add(o, "mode", json_object_new_int((int)ce->mode));
		json_object_object_add(o, "link",
		                       ce->link ? json_object_new_string(ce->link) : NULL);
		json_object_object_add(o, "uid", json_object_new_int64(ce->uid));
		json_object_object_add(o, "gid", json_object_new_int64(ce->gid));
		json_object_object_add(o, "mtime", json_object_new_int64(ce->mtime));
		json_object_array_add(arr, o);
	}
	return arr;
}

void sim_context_free(struct sim_context *ctx)
{
	if (ctx == NULL)
		return;
	for (size_t i = 0; i < ctx->n; i++) {
		free(ctx->entries[i].path);
		free(ctx->entries[i].link);
	}
	free(ctx->entries);
	free(ctx->dockerfile);
	free(ctx);
}
