/*
 * libFuzzer target for the daemon's intake checks (daemon/intake.c): the input is a
 * context archive exactly as an untrusted client would hand it over, and
 * intake_check_buffer runs every check build.submit runs on it (gzip and tar well
 * formed, the 1 MiB cap on the archive and on what it unpacks to, member names and hard
 * links inside the context, no special files, the Dockerfile a regular file or a
 * symlink resolving to one).  Beyond "does not crash, leaks nothing": a refusal always
 * comes with a message and an acceptance never with one, and the same bytes get the
 * same verdict twice (the check keeps no state between calls).
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "intake.h"

#define FUZZ_MAX_BYTES (1 << 20)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char *err = NULL, *again = NULL;
	int rc = intake_check_buffer(data, size, "Dockerfile", FUZZ_MAX_BYTES, &err);

	if ((rc < 0) != (err != NULL) || (rc < 0 && err[0] == '\0'))
		abort();
	/* Deterministic: only worth the second pass on what got far enough to matter. */
	if (rc == 0 || size < 4096) {
		int rc2 = intake_check_buffer(data, size, "Dockerfile", FUZZ_MAX_BYTES, &again);
		if (rc2 != rc || (err && again && strcmp(err, again) != 0))
			abort();
	}
	free(again);
	free(err);
	return 0;
}
