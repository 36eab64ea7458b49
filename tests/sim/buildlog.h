/*
 * The simulated build: a Dockerfile turned into the lines BuildKit's plain progress
 * output would print for it, and the build's outcome; steps an earlier build with the
 * same cache key made already print CACHED, as BuildKit's do.  A RUN whose command is
 * `false` or `exit N` (N > 0) fails, as does a Dockerfile BuildKit would refuse
 * (empty, no FROM first, unknown instruction).  Pure computation: no I/O, no timing.
 */
#ifndef SNAPBUILD_SIM_BUILDLOG_H
#define SNAPBUILD_SIM_BUILDLOG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct sim_buildlog_params {
	const char *dockerfile_text;
	const char *dockerfile_name; /* as the client named it */
	const char *image_ref;       /* where the result is pushed */
	uint64_t context_bytes;
	bool nydus;
	size_t extra_lines;       /* extra output lines, emitted as one burst */
	const char *forced_error; /* fail the build with this message; NULL for none */
	uint64_t context_hash;    /* identifies the context's content, for COPY and ADD */
	const uint64_t *cached;   /* step signatures in the layer cache (see sigs below) */
	size_t ncached;
};

struct sim_buildlog {
	char **lines; /* one log line each, no newline */
	size_t n;
	size_t burst_start, burst_end; /* [start, end) are emitted together, unpaced */
	char *error;                   /* why the build fails; NULL when it succeeds */
	unsigned char *instant; /* per line: emitted with the line before, unpaced (CACHED) */
	/*
	 * The layer cache: a signature per step, of the Dockerfile up to and including it
	 * (and the context's content once a COPY or ADD has read it).  A step whose
	 * signature is in params->cached prints CACHED and takes no time.
	 */
	uint64_t *sigs;
	size_t nsigs;
};

struct sim_buildlog *sim_buildlog_new(const struct sim_buildlog_params *params);
void sim_buildlog_free(struct sim_buildlog *log);

#endif
