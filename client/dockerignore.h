/*
 * .dockerignore with Docker's exact semantics: the file is read as Docker's
 * ignorefile.ReadAll reads it, loaded as patternmatcher.New loads it (same load-time
 * errors) and each path is judged as MatchesOrParentMatches judges it: the last
 * pattern that matches the path or one of its parent directories decides, and a '!'
 * pattern re-includes.  Wildcard patterns are turned into the same regular expression
 * Docker builds and run on a small RE2-compatible engine, so corner cases (a class
 * swallowing a '*', a range that only fails when compiled) behave as in Docker.
 * See ../shared/conformance/dockerignore-semantics.md.
 *
 * A parsed matcher is immutable: several threads may query one at the same time.
 */
#ifndef SNAPBUILD_DOCKERIGNORE_H
#define SNAPBUILD_DOCKERIGNORE_H

#include <stdbool.h>
#include <stddef.h>

struct dockerignore;

/*
 * Parse the text of a .dockerignore file.  Returns NULL and sets *err (to free) on a
 * load-time error: a line longer than 64 KiB, the illegal exclusion pattern "!", or a
 * malformed pattern such as "[" or "a[".
 */
struct dockerignore *dockerignore_parse(const char *text, size_t len, char **err);

/* Number of patterns, and pattern i as ReadAll produces it ('!' kept for exceptions). */
size_t dockerignore_count(const struct dockerignore *d);
const char *dockerignore_pattern(const struct dockerignore *d, size_t i);

/*
 * Whether a relative, '/'-separated path is excluded.  The context root ("." or "")
 * never is.  Returns -1 and sets *err (to free) when a pattern that passed loading
 * fails when it is compiled (e.g. "[Local-Only]", a reversed range): Docker fails on
 * every such match attempt, so do we.
 */
int dockerignore_excluded(const struct dockerignore *d, const char *path, bool *excluded,
                          char **err);

/*
 * False only when nothing below the directory dir can be in the context: every path
 * below it is excluded because no '!' pattern after the one excluding dir could match
 * anything under it.  The walker then skips dir without reading it.  True (walk it)
 * when dir is not excluded, or when in doubt.
 */
bool dockerignore_may_reinclude_below(const struct dockerignore *d, const char *dir);

void dockerignore_free(struct dockerignore *d);

/*
 * ignorefile.ReadAll alone: the pattern lines of text as Docker reads them, before
 * they are validated (so "!" may be among them).  Returns 0 and a NULL-terminated
 * array to free with dockerignore_lines_free, or -1 and *err.
 */
int dockerignore_read_all(const char *text, size_t len, char ***lines, size_t *nlines, char **err);
void dockerignore_lines_free(char **lines);

#endif
