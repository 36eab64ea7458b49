/*
 * The .dockerignore matcher against Docker's behaviour: every case of the shared
 * conformance vectors ($SNAPBUILD_SHARED_DIR/conformance/dockerignore-vectors.json),
 * then the pruning question the context walker asks (may_reinclude_below), checked
 * both on hand-picked cases and for soundness against the matcher itself.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <json-c/json.h>

#include "dockerignore.h"
#include "util.h"

static struct json_object *vectors;

static int vectors_setup(void **state)
{
	const char *shared = getenv("SNAPBUILD_SHARED_DIR");
	char *path;

	(void)state;
	if (shared == NULL) {
		fprintf(stderr, "SNAPBUILD_SHARED_DIR is not set: cannot find the vectors\n");
		return -1;
	}
	path = xasprintf("%s/conformance/dockerignore-vectors.json", shared);
	vectors = json_object_from_file(path);
	if (vectors == NULL)
		fprintf(stderr, "cannot read the conformance vectors %s\n", path);
	free(path);
	return vectors == NULL ? -1 : 0;
}

static int vectors_teardown(void **state)
{
	(void)state;
	json_object_put(vectors);
	return 0;
}

static struct json_object *vectors_get(const char *key)
{
	struct json_object *v = NULL;

	assert_true(json_object_object_get_ex(vectors, key, &v));
	assert_true(json_object_is_type(v, json_type_array));
	return v;
}

/* The lines of a case joined with '\n', as the vectors' _meta asks. */
static char *join_lines(struct json_object *lines)
{
	size_t n = json_object_array_length(lines), len = 0;
	char *text = xstrdup("");

	for (size_t i = 0; i < n; i++) {
		const char *l = json_object_get_string(json_object_array_get_idx(lines, i));
		size_t ll = strlen(l);

		text = xrealloc(text, len + ll + 2);
		memcpy(text + len, l, ll);
		len += ll;
		if (i + 1 < n)
			text[len++] = '\n';
		text[len] = '\0';
	}
	return text;
}

static bool has_tag(struct json_object *c, const char *tag)
{
	struct json_object *tags;

	if (!json_object_object_get_ex(c, "tags", &tags))
		return false;
	for (size_t i = 0; i < json_object_array_length(tags); i++) {
		if (strcmp(json_object_get_string(json_object_array_get_idx(tags, i)), tag) == 0)
			return true;
	}
	return false;
}

static void test_vectors_parse_cases(void **state)
{
	struct json_object *cases = vectors_get("parse_cases");

	(void)state;
	assert_true(json_object_array_length(cases) > 0);
	for (size_t i = 0; i < json_object_array_length(cases); i++) {
		struct json_object *c = json_object_array_get_idx(cases, i), *text, *want;
		char **lines = NULL, *err = NULL;
		size_t n = 0;
		const char *t;

		assert_true(json_object_object_get_ex(c, "dockerignore", &text));
		assert_true(json_object_object_get_ex(c, "patterns_after_read", &want));
		t = json_object_get_string(text);
		assert_int_equal(dockerignore_read_all(t, strlen(t), &lines, &n, &err), 0);
		assert_int_equal(n, json_object_array_length(want));
		for (size_t k = 0; k < n; k++)
			assert_string_equal(
			    lines[k], json_object_get_string(json_object_array_get_idx(want, k)));
		assert_null(lines[n]);
		dockerignore_lines_free(lines);
	}
}

static void test_vectors_error_cases(void **state)
{
	struct json_object *cases = vectors_get("error_cases");
	size_t load = 0, match = 0;

	(void)state;
	for (size_t i = 0; i < json_object_array_length(cases); i++) {
		struct json_object *c = json_object_array_get_idx(cases, i), *pats, *phase, *paths;
		char *text, *err = NULL;
		struct dockerignore *d;

		assert_true(json_object_object_get_ex(c, "patterns", &pats));
		text = join_lines(pats);
		d = dockerignore_parse(text, strlen(text), &err);
		if (json_object_object_get_ex(c, "error_phase", &phase) &&
		    strcmp(json_object_get_string(phase), "match") == 0) {
			if (d == NULL)
				fail_msg("case %zu (%s) should load: %s", i, text, err);
			assert_true(json_object_object_get_ex(c, "paths", &paths));
			for (size_t k = 0; k < json_object_array_length(paths); k++) {
				const char *p =
				    json_object_get_string(json_object_array_get_idx(paths, k));

				/* Docker fails again on every attempt, not just the first. */
				for (int attempt = 0; attempt < 2; attempt++) {
					bool ex = true;

					err = NULL;
					assert_int_equal(dockerignore_excluded(d, p, &ex, &err),
					                 -1);
					assert_non_null(err);
					assert_false(ex);
					free(err);
				}
			}
			dockerignore_free(d);
			match++;
		} else {
			if (d != NULL)
				fail_msg("case %zu (%s) should fail to load", i, text);
			assert_non_null(err);
			if (strstr(text, "!") == text)
				assert_string_equal(err, "illegal exclusion pattern: \"!\"");
			free(err);
			load++;
		}
		free(text);
	}
	assert_int_equal(load + match, json_object_array_length(cases));
	assert_true(match > 0);
	print_message("error cases: %zu failing at load, %zu failing at match\n", load, match);
}

static void test_vectors_match_cases(void **state)
{
	struct json_object *cases = vectors_get("cases");
	size_t failures = 0, checked = 0, noncanonical = 0;

	(void)state;
	for (size_t i = 0; i < json_object_array_length(cases); i++) {
		struct json_object *c = json_object_array_get_idx(cases, i), *pats, *path, *want;
		char *text, *err = NULL;
		struct dockerignore *d;
		bool ex = false;

		assert_true(json_object_object_get_ex(c, "patterns", &pats));
		assert_true(json_object_object_get_ex(c, "path", &path));
		assert_true(json_object_object_get_ex(c, "excluded", &want));
		text = join_lines(pats);
		d = dockerignore_parse(text, strlen(text), &err);
		if (d == NULL) {
			print_error("case %zu: [%s] does not load: %s\n", i, text, err);
			free(err);
			failures++;
		} else if (dockerignore_excluded(d, json_object_get_string(path), &ex, &err) < 0) {
			print_error("case %zu: [%s] %s: %s\n", i, text,
			            json_object_get_string(path), err);
			free(err);
			failures++;
		} else if (ex != json_object_get_boolean(want)) {
			print_error("case %zu: [%s] %s: excluded=%d, want %d\n", i, text,
			            json_object_get_string(path), ex,
			            json_object_get_boolean(want));
			failures++;
		}
		noncanonical += has_tag(c, "non-canonical-path");
		checked++;
		dockerignore_free(d);
		free(text);
	}
	print_message("match cases: %zu checked (%zu non-canonical-path, none skipped), %zu "
	              "failed\n",
	              checked, noncanonical, failures);
	assert_int_equal(checked, json_object_array_length(cases));
	assert_int_equal(failures, 0);
}

static struct dockerignore *parse_ok(const char *text)
{
	char *err = NULL;
	struct dockerignore *d = dockerignore_parse(text, strlen(text), &err);

	if (d == NULL)
		fail_msg("cannot parse [%s]: %s", text, err);
	return d;
}

static bool excluded(const struct dockerignore *d, const char *path)
{
	char *err = NULL;
	bool ex = false;

	if (dockerignore_excluded(d, path, &ex, &err) < 0)
		fail_msg("%s: %s", path, err);
	return ex;
}

struct reinclude_case {
	const char *patterns;
	const char *dir;
	bool may;
};

static void test_may_reinclude_below(void **state)
{
	static const struct reinclude_case cases[] = {
	    {"node_modules", "node_modules", false},
	    {"node_modules\n*.log", "node_modules", false},
	    {"**/node_modules", "a/b/node_modules", false},
	    {"dir\n!dir/keep", "dir", true},
	    {"dir\n!other/keep", "dir", false},
	    {"!dir/keep\ndir", "dir", false}, /* the exception comes first */
	    {"dir\n!**/keep", "dir", true},   /* could match dir/keep */
	    {"dir\n!d*/keep", "dir", true},   /* wildcards: dir/keep */
	    {"dir\n!e*/keep", "dir", false},
	    {"dir\n!dir/e*", "dir", true},
	    {"dir\n!dir", "dir", true},   /* not excluded at all */
	    {"other", "dir", true},       /* not excluded at all */
	    {"dir/**", "dir/sub", false}, /* prefix pattern */
	    {"a*\n!ab/c/**", "ab", true},
	    {"a*\n!ab/c/**", "ab/d", false},
	    {"a*\n!ab/c/**", "ab/c", true},
	    {"**/bar\n!foo/bar/baz", "foo/bar", true},
	    {"**/bar\n!foo/bar/baz", "x/bar", false},
	    {"dir\n!dir/*.go\ndir/vendor", "dir/vendor", false},
	    {"dir\n!dir/*.go\ndir/vendor", "dir", true},
	    {"dir\n![Local-Only]", "dir", true}, /* a broken pattern: in doubt */
	    {"*\n!src", "docs", false},
	    {"*\n!src", "src", true},
	};

	(void)state;
	for (size_t i = 0; i < sizeof(cases) / sizeof(*cases); i++) {
		struct dockerignore *d = parse_ok(cases[i].patterns);

		if (dockerignore_may_reinclude_below(d, cases[i].dir) != cases[i].may)
			fail_msg("[%s] below %s: want %d", cases[i].patterns, cases[i].dir,
			         cases[i].may);
		dockerignore_free(d);
	}
}

/*
 * Soundness: whenever may_reinclude_below(dir) says no, every path below dir really is
 * excluded.  Checked for every pattern list of the vectors and of a few hand-made
 * ones, over a tree of names chosen to hit those patterns.
 */
static void test_may_reinclude_below_is_sound(void **state)
{
	static const char *const names[] = {"dir", "foo",  "bar",  "keep",      "ab",  "c",
	                                    "e-x", "x.go", "x.cc", "README.md", "web", "src"};
	static const char *const extra[] = {
	    "dir\n!dir/keep", "**\n!util/docker/web", "foo\n!foo/bar\nfoo/bar/baz\n!foo/bar/baz/x",
	    "a*\n!ab/c/**",   "dir\n!**/keep",        "*\n!src/**/*.go",
	};
	const size_t nn = sizeof(names) / sizeof(*names);
	struct json_object *cases = vectors_get("cases");
	size_t nsets = json_object_array_length(cases) + sizeof(extra) / sizeof(*extra);
	size_t pruned = 0;

	(void)state;
	for (size_t s = 0; s < nsets; s++) {
		char *text, *err = NULL;
		struct dockerignore *d;

		if (s < json_object_array_length(cases)) {
			struct json_object *pats;

			json_object_object_get_ex(json_object_array_get_idx(cases, s), "patterns",
			                          &pats);
			text = join_lines(pats);
		} else {
			text = xstrdup(extra[s - json_object_array_length(cases)]);
		}
		d = dockerignore_parse(text, strlen(text), &err);
		assert_non_null(d);
		/* Directories one and two levels deep; paths up to two levels below them. */
		for (size_t i = 0; i < nn * (nn + 1); i++) {
			char *dir = i < nn ? xstrdup(names[i])
			                   : xasprintf("%s/%s", names[i / nn - 1], names[i % nn]);

			if (!dockerignore_may_reinclude_below(d, dir)) {
				pruned++;
				for (size_t j = 0; j < nn * (nn + 1); j++) {
					char *p = j < nn
					              ? xasprintf("%s/%s", dir, names[j])
					              : xasprintf("%s/%s/%s", dir,
					                          names[j / nn - 1], names[j % nn]);

					if (!excluded(d, p))
						fail_msg("[%s]: %s pruned but %s is kept", text,
						         dir, p);
					free(p);
				}
			}
			free(dir);
		}
		dockerignore_free(d);
		free(text);
	}
	assert_true(pruned > 100);
}

static void test_own_cases(void **state)
{
	struct dockerignore *d;
	char **lines;
	size_t n;
	char *err = NULL, *long_line;

	(void)state;
	/* '?' is one code point, not one byte. */
	d = parse_ok("a?b");
	assert_true(excluded(d, "a\xe2\x98\xba"
	                        "b"));
	assert_false(excluded(d, "a\xe2\x98"
	                         "b"));
	dockerignore_free(d);

	/* The context root is never excluded. */
	d = parse_ok("**");
	assert_false(excluded(d, "."));
	assert_false(excluded(d, ""));
	assert_true(excluded(d, "x"));
	dockerignore_free(d);

	/* Docker's regexp: a '*' inside [...] turns into [^/]*, closing the class early. */
	d = parse_ok("[a*]");
	assert_true(excluded(d, "]"));
	assert_true(excluded(d, "a]"));
	assert_true(excluded(d, "/]"));
	assert_false(excluded(d, "a"));
	dockerignore_free(d);

	/* POSIX classes are RE2's. */
	d = parse_ok("[[:digit:]]x");
	assert_true(excluded(d, "7x"));
	assert_false(excluded(d, "ax"));
	dockerignore_free(d);

	/* "**x" is a plain suffix test in Docker: it matches "prefix" too. */
	d = parse_ok("**fix");
	assert_true(excluded(d, "prefix"));
	assert_true(excluded(d, "a/b/fix"));
	dockerignore_free(d);

	/* Comments, CRLF, a BOM only on the first line, "!/" read as "!". */
	assert_int_equal(dockerignore_read_all("\xef\xbb\xbf"
	                                       "a\r\n#c\n \xef\xbb\xbf"
	                                       "b\n  ! c/ \n",
	                                       23, &lines, &n, &err),
	                 0);
	assert_int_equal(n, 3);
	assert_string_equal(lines[0], "a");
	assert_string_equal(lines[1], "\xef\xbb\xbf"
	                              "b");
	assert_string_equal(lines[2], "!c");
	dockerignore_lines_free(lines);
	assert_null(dockerignore_parse("a\n!/\n", 5, &err));
	assert_string_equal(err, "illegal exclusion pattern: \"!\"");
	free(err);

	/* bufio.Scanner refuses a line over 64 KiB. */
	long_line = xmalloc(70000);
	memset(long_line, 'a', 70000);
	assert_null(dockerignore_parse(long_line, 70000, &err));
	assert_non_null(err);
	free(err);
	d = parse_ok("x");
	free(long_line);
	dockerignore_free(d);

	/* Pattern accessors give ReadAll's text. */
	d = parse_ok("# c\n/foo/\n! bar\n");
	assert_int_equal(dockerignore_count(d), 2);
	assert_string_equal(dockerignore_pattern(d, 0), "foo");
	assert_string_equal(dockerignore_pattern(d, 1), "!bar");
	assert_null(dockerignore_pattern(d, 2));
	dockerignore_free(d);
}

/* One match that must fail as Docker's fails: RE2 refuses the expression. */
static void match_fails(const char *patterns, const char *path)
{
	struct dockerignore *d = parse_ok(patterns);
	char *err = NULL;
	bool ex = true;

	if (dockerignore_excluded(d, path, &ex, &err) != -1)
		fail_msg("[%s] %s: should fail to match", patterns, path);
	assert_non_null(err);
	assert_false(ex);
	free(err);
	dockerignore_free(d);
}

/*
 * Where RE2's syntax (Docker's) and PCRE2's (ours, underneath) part ways, RE2 wins:
 * escapes and classes that differ, invalid UTF-8 read as U+FFFD, and a pattern that
 * would make a backtracking matcher give up.
 */
static void test_regexp_dialect(void **state)
{
	struct dockerignore *d;
	char *deep;

	(void)state;
	d = parse_ok("a\\s"); /* RE2's \s has no \v */
	assert_true(excluded(d, "a "));
	assert_false(excluded(d, "a\v"));
	dockerignore_free(d);
	d = parse_ok("a\\v"); /* a vertical tab, not a class */
	assert_true(excluded(d, "a\v"));
	assert_false(excluded(d, "a\n"));
	dockerignore_free(d);
	d = parse_ok("[[=a=]]"); /* no collating elements: '[', '=', 'a', then ']' */
	assert_true(excluded(d, "a]"));
	assert_true(excluded(d, "=]"));
	assert_false(excluded(d, "a"));
	dockerignore_free(d);
	d = parse_ok("[:alpha:]"); /* outside a class: the characters :alph */
	assert_true(excluded(d, ":"));
	assert_false(excluded(d, "b"));
	dockerignore_free(d);
	d = parse_ok("x[\\d-z]"); /* '-' after \d is a character */
	assert_true(excluded(d, "x-"));
	assert_true(excluded(d, "x5"));
	assert_false(excluded(d, "xy"));
	dockerignore_free(d);
	match_fails("a\\e", "a\x1b");
	match_fails("a\\x", "a");
	match_fails("a\\1", "a");
	match_fails("a\\Z*", "a");
	match_fails("[\\Qa\\E]", "a");
	match_fails("a\\\xc3\xa9*", "a\xc3\xa9");

	/* Each byte of invalid UTF-8 is one U+FFFD, in the path and in the pattern. */
	d = parse_ok("a?");
	assert_true(excluded(d, "a\xff"));
	assert_false(excluded(d, "a\xff\xfe"));
	assert_true(excluded(d, "a\xff/b"));
	dockerignore_free(d);
	d = parse_ok("a\xff*");
	assert_true(excluded(d, "a\xfe"));
	assert_true(excluded(d, "a\xef\xbf\xbdz"));
	assert_false(excluded(d, "ab"));
	dockerignore_free(d);

	/* No backtracking blow-up: a match is linear in the path, as with RE2. */
	d = parse_ok("**/*a*a*a*a*a*a*a*a*a*a*a*a*b");
	deep = xmalloc(4001);
	memset(deep, 'a', 4000);
	deep[4000] = '\0';
	for (size_t i = 200; i < 4000; i += 200)
		deep[i] = '/';
	assert_false(excluded(d, deep));
	deep[3999] = 'b';
	assert_true(excluded(d, deep));
	free(deep);
	dockerignore_free(d);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_vectors_parse_cases),
	    cmocka_unit_test(test_vectors_error_cases),
	    cmocka_unit_test(test_vectors_match_cases),
	    cmocka_unit_test(test_may_reinclude_below),
	    cmocka_unit_test(test_may_reinclude_below_is_sound),
	    cmocka_unit_test(test_own_cases),
	    cmocka_unit_test(test_regexp_dialect),
	};

	return cmocka_run_group_tests(tests, vectors_setup, vectors_teardown);
}
