/*
 * Inspection of a received build context: checks that it is a gzip'd tar (several
 * gzip members are fine), lists its entries and pulls out the named Dockerfile.
 * The only file that knows libarchive.
 */
#ifndef SNAPBUILD_SIM_CONTEXT_H
#define SNAPBUILD_SIM_CONTEXT_H

#include <stddef.h>
#include <stdint.h>

#include <json-c/json.h>

struct sim_context;

/*
 * Reads the archive in data (len bytes).  Returns a new context, or NULL with a new
 * message in *err for a non-gzip, corrupt or truncated archive, or when the
 * Dockerfile (a path relative to the context root) is not a file in it.
 */
struct sim_context *sim_context_new(const void *data, size_t len, const char *dockerfile,
                                    char **err);

/* The Dockerfile's text (NUL-terminated; may be empty). */
const char *sim_context_dockerfile(const struct sim_context *ctx);

/* The number of entries and the sum of regular file sizes. */
size_t sim_context_count(const struct sim_context *ctx);
uint64_t sim_context_bytes(const struct sim_context *ctx);

/* The entries as a JSON array of {path, type, size, mode, link, uid, gid, mtime}. */
struct json_object *sim_context_files_json(const struct sim_context *ctx);

/* Normalises a context-relative path ("./a//b" → "a/b"); NULL when it leaves the root. */
char *sim_context_normalize(const char *path);

void sim_context_free(struct sim_context *ctx);

#endif
