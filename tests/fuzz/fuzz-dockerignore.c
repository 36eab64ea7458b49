/*
 * libFuzzer target for the .dockerignore matcher.  The input is a .dockerignore text,
 * a NUL byte, then paths one per line.  Beyond "does not crash", it checks the
 * promises the context walker relies on: the pattern accessors agree with ReadAll,
 * a match-time error is the same on every attempt, and when may_reinclude_below
 * says a directory can be skipped, the directory and every path tried below it
 * really are excluded.
 */
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "dockerignore.h"
#include "util.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static int fuzz_excluded(const struct dockerignore *d, const char *path, bool *ex)
{
	char *err = NULL;
	int rc = dockerignore_excluded(d, path, ex, &err);

	if ((rc < 0) != (err != NULL))
		abort();
	free(err);
	return rc;
}

/* Only for canonical paths does "a/b" really lie below "a" (Docker does not clean). */
static bool fuzz_canonical(const char *p)
{
	size_t n = strlen(p), start = 0;

	for (size_t i = 0; i <= n; i++) {
		if (i == n || p[i] == '/') {
			if (i == start || (i - start == 1 && p[start] == '.') ||
			    (i - start == 2 && p[start] == '.' && p[start + 1] == '.'))
				return false;
			start = i + 1;
		}
	}
	return true;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const char *text = (const char *)data;
	const char *nul = memchr(data, '\0', size);
	size_t tlen = nul ? (size_t)(nul - text) : size;
	char *err = NULL, **lines = NULL, **paths = NULL;
	size_t nlines = 0, npaths = 0;
	struct dockerignore *d = dockerignore_parse(text, tlen, &err);

	if (d == NULL) {
		if (err == NULL)
			abort();
		free(err);
		return 0;
	}
	if (dockerignore_read_all(text, tlen, &lines, &nlines, &err) < 0 ||
	    nlines != dockerignore_count(d))
		abort();
	for (size_t i = 0; i < nlines; i++) {
		if (strcmp(lines[i], dockerignore_pattern(d, i)) != 0)
			abort();
	}
	dockerignore_lines_free(lines);

	/* Paths: the lines after the NUL (NUL-free by construction). */
	if (nul != NULL) {
		const char *p = nul + 1, *end = text + size;

		while (p <= end && npaths < 16) {
			const char *nl = memchr(p, '\n', (size_t)(end - p));
			size_t n = nl ? (size_t)(nl - p) : (size_t)(end - p);

			if (memchr(p, '\0', n) == NULL && n > 0) {
				paths = xrealloc(paths, (npaths + 1) * sizeof(*paths));
				paths[npaths++] = xstrndup(p, n);
			}
			if (nl == NULL)
				break;
			p = nl + 1;
		}
	}
	for (size_t i = 0; i < npaths; i++) {
		bool ex = false, again = false;
		int rc = fuzz_excluded(d, paths[i], &ex);

		if (fuzz_excluded(d, paths[i], &again) != rc || again != ex)
			abort();
		if (rc < 0 || !fuzz_canonical(paths[i]) ||
		    dockerignore_may_reinclude_below(d, paths[i]))
			continue;
		/* Pruned: everything below must be excluded, the directory too. */
		if (!ex)
			abort();
		for (size_t k = 0; k < npaths; k++) {
			char *below;

			if (!fuzz_canonical(paths[k]))
				continue;
			below = xasprintf("%s/%s", paths[i], paths[k]);
			if (fuzz_excluded(d, below, &ex) == 0 && !ex)
				abort();
			free(below);
		}
	}
	for (size_t i = 0; i < npaths; i++)
		free(paths[i]);
	free(paths);
	dockerignore_free(d);
	return 0;
}
