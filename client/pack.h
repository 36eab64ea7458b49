/*
 * Packing a build context: walk a directory (from an open descriptor, never following
 * a symlink out of it), apply .dockerignore with Docker's semantics, and write the
 * .tar.gz the builder receives, as the SDKs make it: regular files and symlinks (as
 * symlinks), sorted by path, named "./rel/path", owner 0/0 with empty names,
 * directories not stored.  Modes keep their permission bits and mtimes their whole
 * seconds (nanoseconds dropped), so the same tree gives a byte-identical archive.
 *
 * The gzip stream is a series of independent members, one per chunk of whole entries
 * (at most 1 MiB of tar; a big file gets one per MiB of its content), compressed in
 * parallel (libdeflate) with a bounded number of chunks in flight, so memory does not
 * grow with the context.  Where the chunks end depends only on the paths and stats the
 * walk sees, so with a pack cache (cache_dir, packcache.h) a chunk whose files did not
 * change is copied from the cache instead of read and compressed again — and the
 * archive is byte for byte the one a cold pack makes.  The archive goes to a descriptor (the
 * client's temporary file handed to the daemon, or `snapbuild context --save`), or is
 * stored as <out_dir>/<sha256>.tar.gz through a temporary file, fsync and rename.
 *
 * This is the client side of the trust boundary: it reads the user's tree with the
 * user's own rights.  The daemon never runs it; it receives the finished archive.
 * pack_run blocks and is safe to call from any thread.
 */
#ifndef SNAPBUILD_PACK_H
#define SNAPBUILD_PACK_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Deeper directory nesting fails the pack (one descriptor is open per level). */
#define PACK_MAX_DEPTH 256

struct pack_options {
	int dirfd;              /* context directory, opened O_DIRECTORY; borrowed */
	const char *dockerfile; /* relative path; must exist inside the context: a regular
	                           file or a symlink resolving inside it (NULL: "Dockerfile") */
	bool to_fd;             /* the archive is written to out_fd (borrowed) */
	int out_fd;
	const char *out_dir;  /* else, when set: archive written to <out_dir>/<sha256>.tar.gz
	                         via a temp file + fsync + rename; neither = inspect only */
	int threads;          /* compression threads, 0 = number of CPUs */
	int level;            /* gzip level 1..12 (libdeflate), 0 = default 6 */
	bool list_files;      /* fill result->files (inspect) */
	volatile int *cancel; /* polled; nonzero -> stop with PACK_CANCELLED (may be NULL) */
	void (*on_warning)(void *arg, const char *msg); /* e.g. "skipped FIFO ./x"; called on
	                                                   the packing thread */
	void (*on_progress)(void *arg, uint64_t files, uint64_t bytes); /* at most ~10/s */
	void *arg;
	/* A Dockerfile from outside the context, as docker sends one: when extra_name is
	   set, the open regular file extra_fd (borrowed) is appended as "./<extra_name>"
	   after the walk, and the Dockerfile is not looked for in the context. */
	const char *extra_name;
	int extra_fd;
	/* When ignore_name is set: these rules instead of an ignore file in the context
	   (the <Dockerfile>.dockerignore next to an outside Dockerfile); the name is for
	   messages. */
	const char *ignore_name;
	const char *ignore_text;
	size_t ignore_len;
	const char *cache_dir;    /* the pack cache (packcache.h); NULL: none */
	uint64_t cache_max_bytes; /* its cap, 0 = PACKCACHE_DEFAULT_BYTES */
};

struct pack_file {
	char *path; /* "./rel/path" */
	uint64_t size;
	unsigned mode; /* permission bits */
	char type;     /* 'f' file, 'l' symlink */
};

struct pack_result {
	int status;         /* PACK_OK, PACK_ERROR, PACK_CANCELLED */
	char *error;        /* message with the offending path, e.g. "cannot read
	                       ./secret.key: Permission denied" */
	char *archive_path; /* out_dir's file (NULL otherwise) */
	char sha256[65];    /* of the .tar.gz bytes (empty for inspect only) */
	uint64_t archive_size, file_count, total_bytes; /* total_bytes = uncompressed file
	                                                   content */
	struct pack_file *files;                        /* when list_files, in archive order */
	size_t nfiles;
	struct pack_file largest[10]; /* the 10 largest files, largest first */
	size_t nlargest;
	char **excluded; /* top-most excluded paths ("./x"; a skipped dir listed once, as
	                    "./dir/"), in walk order */
	size_t nexcluded;
	size_t nwarnings;
	uint64_t cache_hits, cache_misses; /* with a cache: chunks taken from it / compressed */
};

enum { PACK_OK = 0, PACK_ERROR = 1, PACK_CANCELLED = 2 };

/* Fills *r (which it clears first); free its contents with pack_result_clear. */
void pack_run(const struct pack_options *o, struct pack_result *r);
void pack_result_clear(struct pack_result *r);

#endif
