/*
 * Packing a context on the client's side of the trust boundary, for the CLI and
 * libsnapbuild: open the directory with the caller's rights, pack it (pack.h) into a
 * descriptor — an unlinked temporary file for build.submit, or the file of
 * `snapbuild context --save` — and describe what was packed as JSON.
 */
#ifndef SNAPBUILD_PACKCTX_H
#define SNAPBUILD_PACKCTX_H

#include <json-c/json.h>
#include <stdbool.h>
#include <stdint.h>

#include "pack.h"

struct packctx {
	int fd; /* the archive (an unlinked temporary file) when packctx_run made one, else -1 */
	struct pack_result result;
	char **warnings; /* "skipped FIFO ./x", ... */
	size_t nwarnings;
	/* The Dockerfile's name in the archive, for build.submit's "dockerfile" (NULL when
	   none was given): its path in the context, or for one outside the context the
	   generated ".dockerfile.<digest>" it was added under, as docker does. */
	char *dockerfile;
};

struct packctx_options {
	const char *dir;
	/* NULL = "Dockerfile" in dir.  Else, as docker build -f and the SDKs take it: a
	   path from the current directory (or absolute), which may lie outside dir (then
	   a <Dockerfile>.dockerignore next to it applies, if there is one); a relative
	   path found only inside dir is taken from there, as before. */
	const char *dockerfile;
	bool list_files;
	bool inspect_only; /* no archive at all */
	int out_fd;        /* >= 0: write the archive there; -1: an unlinked temporary file */
	bool no_cache;     /* recompress everything: leave the pack cache alone */
	volatile int *cancel;
	void (*on_progress)(void *arg, uint64_t files, uint64_t bytes);
	void *arg;
};

/*
 * Unless no_cache, the pack cache (packcache.h) in $XDG_CACHE_HOME/snapbuild/pack supplies
 * what did not change since an earlier pack: the archive is the same either way.
 * 0, with p filled (free with packctx_clear); -1 with *err (to free): the directory
 * cannot be opened, a file cannot be read (named), .dockerignore is invalid, ...
 * The temporary file goes in $TMPDIR, else /var/tmp, else /tmp, and is unlinked at
 * once: nothing is left behind, whatever happens to this process.
 */
int packctx_run(const struct packctx_options *o, struct packctx *p, char **err);
void packctx_clear(struct packctx *p);

/*
 * What was packed, as `snapbuild context -o json` prints it: file_count, total_bytes,
 * largest, excluded, warnings, files (with list_files), archive {sha256, bytes}
 * (when one was written) and dockerfile (build.submit's, when one was given).
 */
json_object *packctx_json(const struct packctx *p, bool list_files);

/* {"sha256": ..., "bytes": ...}: build.submit's "archive" parameter. */
json_object *packctx_archive_param(const struct packctx *p);

#endif
