/*
 * Taking in a client's packed context: the daemon's side of the trust boundary.
 *
 * The client packs the context with its own rights and hands the daemon the finished
 * .tar.gz as a file descriptor (a regular file: an unlinked temporary file or a
 * memfd), with the archive's size and SHA-256.  intake_run copies it into the spool
 * while hashing it and checks it as the untrusted input it is, in one pass:
 *   - a gzip stream holding a tar archive, both well formed;
 *   - the archive and its unpacked content within max_bytes (max_context_bytes), so a
 *     gzip bomb stops at the cap;
 *   - member names relative, without a ".." component; hard links likewise;
 *   - regular files, directories and symlinks only: no device nodes, FIFOs, sockets;
 *   - the Dockerfile named in the request a regular file in it (or a symlink that
 *     resolves, inside the archive, to one);
 *   - exactly the declared size and digest: a client killed mid-write, or one that
 *     changes the file while the daemon reads it, is refused, and no job exists.
 * Only then is the copy renamed to <spool>/<sha256>.tar.gz (fsync'd, atomic).
 *
 * The daemon never opens a path or a directory a user names; this module reads only
 * the descriptor it is given, with pread, from offset 0.  intake_run blocks: it runs
 * on a worker thread and touches neither libevent nor SQLite.
 */
#ifndef SNAPBUILD_INTAKE_H
#define SNAPBUILD_INTAKE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct intake_options {
	int fd;                      /* the client's archive (borrowed) */
	const char *spool_dir;       /* where <sha256>.tar.gz goes */
	const char *dockerfile;      /* relative path that must be a regular file in it */
	uint64_t max_bytes;          /* cap on the archive and on its unpacked content */
	uint64_t declared_bytes;     /* what the client says it wrote */
	const char *declared_sha256; /* 64 lower-case hex digits */
	volatile int *cancel;        /* polled; nonzero stops with INTAKE_CANCELLED */
};

enum intake_status {
	INTAKE_OK = 0,
	INTAKE_INVALID = 1,   /* the archive is refused: error and hint say why */
	INTAKE_ERROR = 2,     /* the daemon's own failure (disk full, spool unwritable) */
	INTAKE_CANCELLED = 3, /* the client went away */
};

struct intake_result {
	enum intake_status status;
	char *error; /* e.g. "member '../x' leaves the context" */
	char *hint;
	char sha256[65];
	uint64_t archive_bytes, file_count, total_bytes; /* total_bytes: unpacked file content */
	char *archive_path;                              /* the spool file, when INTAKE_OK */
};

/* Fills *r (cleared first); free its contents with intake_result_clear. */
void intake_run(const struct intake_options *o, struct intake_result *r);

/*
 * The checks alone, over an archive in memory (the fuzz target and unit tests): 0 when
 * it would be accepted, else -1 with *err (to free).
 */
int intake_check_buffer(const void *buf, size_t len, const char *dockerfile, uint64_t max_bytes,
                        char **err);

/*
 * The context of an --image build, made by the daemon itself: one file, ./Dockerfile,
 * holding "FROM <image>", spooled as intake_run spools (INTAKE_OK or INTAKE_ERROR).
 */
void intake_image_context(const char *spool_dir, const char *image, struct intake_result *r);

void intake_result_clear(struct intake_result *r);

/* A member name or Dockerfile path cleaned for comparison ("./a//b" -> "a/b"); NULL when
 * it is absolute, empty or has a ".." component. */
char *intake_clean_path(const char *path);

#endif
