/*
 * The .dockerignore matcher.  Three stages, each a port of the Go code Docker runs, so
 * that every oddity is reproduced rather than reinvented:
 *
 *  1. reading: ignorefile.ReadAll (bufio line splitting, BOM, comments, TrimSpace,
 *     filepath.Clean, leading '/' removal);
 *  2. loading: patternmatcher.New, whose syntax check is Go's filepath.Match(p, ".");
 *  3. matching: patternmatcher's Pattern.compile turns a pattern into an exact, prefix
 *     or suffix string test or into an RE2 regular expression.  The expression text is
 *     built exactly as Docker builds it and then parsed and run by a small engine that
 *     accepts the RE2 syntax such text can contain (classes, POSIX and Perl classes,
 *     escapes, \Q..\E, assertions, groups, * + ?) and runs it as a Pike VM, so matching
 *     is linear in the path length whatever the pattern.  The one construct left out is
 *     \p{...} Unicode classes (they would need Unicode tables): such a pattern fails when
 *     matched, like a malformed one.
 */
#include "dockerignore.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "util.h"

#define DI_MAX_LINE 65535 /* bufio.Scanner's default token limit, newline excluded */
#define DI_RUNE_ERR 0xFFFDu
#define DI_MAX_RUNE 0x10FFFFu
#define DI_BAD_GLOB "syntax error in pattern"

enum di_match_type { DI_EXACT, DI_PREFIX, DI_SUFFIX, DI_REGEXP, DI_BAD };

enum di_op { OP_RUNE, OP_CLASS, OP_ANY_NOT_NL, OP_SPLIT, OP_JMP, OP_ASSERT, OP_MATCH };
enum di_assert { AS_BEGIN_TEXT, AS_END_TEXT, AS_WORD_BOUNDARY, AS_NOT_WORD_BOUNDARY };

struct di_inst {
	enum di_op op;
	uint32_t arg; /* rune, class index or assertion */
	uint32_t x, y;
};

struct di_class {
	uint32_t *r; /* sorted, merged [lo, hi] pairs */
	size_t n;    /* number of pairs */
};

struct di_prog {
	struct di_inst *inst;
	size_t ninst, cap;
	struct di_class *classes;
	size_t nclasses;
};

struct di_pattern {
	char *text; /* cleaned, without the '!' */
	size_t len;
	bool exclusion;
	enum di_match_type type;
	struct di_prog *prog;
};

struct dockerignore {
	char **lines; /* ReadAll's output */
	size_t nlines;
	struct di_pattern *pats;
	size_t npats;
};

/* ---- UTF-8 and Go string helpers ---- */

/* utf8.DecodeRune: (RuneError, 1) on any invalid or truncated sequence. */
static uint32_t di_decode(const unsigned char *s, size_t n, size_t *w)
{
	uint32_t c;
	size_t need;
	uint32_t min;

	if (n == 0) {
		*w = 0;
		return DI_RUNE_ERR;
	}
	if (s[0] < 0x80) {
		*w = 1;
		return s[0];
	}
	if (s[0] >= 0xC2 && s[0] <= 0xDF) {
		need = 1, c = s[0] & 0x1F, min = 0x80;
	} else if (s[0] >= 0xE0 && s[0] <= 0xEF) {
		need = 2, c = s[0] & 0x0F, min = 0x800;
	} else if (s[0] >= 0xF0 && s[0] <= 0xF4) {
		need = 3, c = s[0] & 0x07, min = 0x10000;
	} else {
		*w = 1;
		return DI_RUNE_ERR;
	}
	if (n < need + 1)
		goto bad;
	for (size_t i = 1; i <= need; i++) {
		if ((s[i] & 0xC0) != 0x80)
			goto bad;
		c = (c << 6) | (s[i] & 0x3F);
	}
	if (c < min || c > DI_MAX_RUNE || (c >= 0xD800 && c <= 0xDFFF))
		goto bad;
	*w = need + 1;
	return c;
bad:
	*w = 1;
	return DI_RUNE_ERR;
}

/* utf8.DecodeLastRune. */
static uint32_t di_decode_last(const unsigned char *s, size_t n, size_t *w)
{
	size_t start, lim;
	uint32_t c;

	if (n == 0) {
		*w = 0;
		return DI_RUNE_ERR;
	}
	if (s[n - 1] < 0x80) {
		*w = 1;
		return s[n - 1];
	}
	lim = n >= 4 ? n - 4 : 0;
	for (start = n - 1; start > lim && (s[start] & 0xC0) == 0x80; start--)
		;
	c = di_decode(s + start, n - start, w);
	if (start + *w != n) {
		*w = 1;
		return DI_RUNE_ERR;
	}
	return c;
}

/* unicode.IsSpace */
static bool di_is_space(uint32_t r)
{
	switch (r) {
	case '\t':
	case '\n':
	case '\v':
	case '\f':
	case '\r':
	case ' ':
	case 0x85:
	case 0xA0:
	case 0x1680:
	case 0x2028:
	case 0x2029:
	case 0x202F:
	case 0x205F:
	case 0x3000:
		return true;
	default:
		return r >= 0x2000 && r <= 0x200A;
	}
}

/* strings.TrimSpace, in place on a (pointer, length) view. */
static void di_trim_space(const char **s, size_t *n)
{
	const unsigned char *p = (const unsigned char *)*s;
	size_t len = *n, w;

	while (len > 0 && di_is_space(di_decode(p, len, &w))) {
		p += w;
		len -= w;
	}
	while (len > 0 && di_is_space(di_decode_last(p, len, &w)))
		len -= w;
	*s = (const char *)p;
	*n = len;
}

/* filepath.Clean for '/'-separated paths; returns a new string. */
static char *di_clean(const char *path, size_t n)
{
	char *out = xmalloc(n + 2);
	size_t r = 0, w = 0, dotdot = 0;
	bool rooted = n > 0 && path[0] == '/';

	if (n == 0) {
		strcpy(out, ".");
		return out;
	}
	if (rooted) {
		out[w++] = '/';
		r = dotdot = 1;
	}
	while (r < n) {
		if (path[r] == '/') {
			r++;
		} else if (path[r] == '.' && (r + 1 == n || path[r + 1] == '/')) {
			r++;
		} else if (path[r] == '.' && path[r + 1] == '.' &&
		           (r + 2 == n || path[r + 2] == '/')) {
			r += 2;
			if (w > dotdot) {
				w--;
				while (w > dotdot && out[w] != '/')
					w--;
			} else if (!rooted) {
				if (w > 0)
					out[w++] = '/';
				out[w++] = '.';
				out[w++] = '.';
				dotdot = w;
			}
		} else {
			if ((rooted && w != 1) || (!rooted && w != 0))
				out[w++] = '/';
			for (; r < n && path[r] != '/'; r++)
				out[w++] = path[r];
		}
	}
	if (w == 0)
		out[w++] = '.';
	out[w] = '\0';
	return out;
}

/* ---- reading (ignorefile.ReadAll) ---- */

int dockerignore_read_all(const char *text, size_t len, char ***lines, size_t *nlines, char **err)
{
	char **out = NULL;
	size_t n = 0, cap = 0, pos = 0, lineno = 0;

	*lines = NULL;
	*nlines = 0;
	while (pos < len) {
		const char *line = text + pos;
		const char *nl = memchr(line, '\n', len - pos);
		size_t ll = nl ? (size_t)(nl - line) : len - pos;
		bool invert;
		char *pat;

		if (ll > DI_MAX_LINE) {
			*err =
			    xstrdup("error reading .dockerignore: bufio.Scanner: token too long");
			for (size_t i = 0; i < n; i++)
				free(out[i]);
			free(out);
			return -1;
		}
		pos += ll + (nl != NULL);
		if (ll > 0 && line[ll - 1] == '\r')
			ll--;
		if (lineno++ == 0 && ll >= 3 && memcmp(line, "\xEF\xBB\xBF", 3) == 0) {
			line += 3;
			ll -= 3;
		}
		if (ll > 0 && line[0] == '#')
			continue;
		di_trim_space(&line, &ll);
		if (ll == 0)
			continue;
		invert = line[0] == '!';
		if (invert) {
			line++;
			ll--;
			di_trim_space(&line, &ll);
		}
		if (ll > 0) {
			char *c = di_clean(line, ll);
			const char *body = c;

			if (strlen(c) > 1 && c[0] == '/')
				body++;
			pat = xasprintf("%s%s", invert ? "!" : "", body);
			free(c);
		} else {
			pat = xstrdup(invert ? "!" : "");
		}
		if (n + 1 >= cap) {
			cap = cap ? cap * 2 : 16;
			out = xrealloc(out, cap * sizeof(*out));
		}
		out[n++] = pat;
	}
	if (out == NULL)
		out = xcalloc(1, sizeof(*out));
	out[n] = NULL;
	*lines = out;
	*nlines = n;
	return 0;
}

void dockerignore_lines_free(char **lines)
{
	if (lines == NULL)
		return;
	for (char **p = lines; *p != NULL; p++)
		free(*p);
	free(lines);
}

/* ---- loading: Go's filepath.Match, used for its syntax check ---- */

/* filepath.getEsc: one (possibly escaped) class character. */
static int di_glob_esc(const char **chunk, size_t *clen, uint32_t *r)
{
	const unsigned char *c = (const unsigned char *)*chunk;
	size_t n = *clen, w;

	if (n == 0 || c[0] == '-' || c[0] == ']')
		return -1;
	if (c[0] == '\\') {
		c++;
		n--;
		if (n == 0)
			return -1;
	}
	*r = di_decode(c, n, &w);
	if (*r == DI_RUNE_ERR && w == 1)
		return -1;
	c += w;
	n -= w;
	if (n == 0)
		return -1;
	*chunk = (const char *)c;
	*clen = n;
	return 0;
}

/*
 * filepath.matchChunk.  Returns -1 on a syntax error, else 1 (matched, *rest set) or
 * 0.  Once the match has failed it keeps scanning the chunk to check its syntax.
 */
static int di_glob_chunk(const char *chunk, size_t clen, const char *s, size_t slen, size_t *rest)
{
	bool failed = false;
	size_t w;

	while (clen > 0) {
		if (!failed && slen == 0)
			failed = true;
		if (chunk[0] == '[') {
			uint32_t r = 0, lo, hi;
			bool negated = false, match = false;
			int nrange = 0;

			if (!failed) {
				r = di_decode((const unsigned char *)s, slen, &w);
				s += w;
				slen -= w;
			}
			chunk++;
			clen--;
			if (clen > 0 && chunk[0] == '^') {
				negated = true;
				chunk++;
				clen--;
			}
			for (;;) {
				if (clen > 0 && chunk[0] == ']' && nrange > 0) {
					chunk++;
					clen--;
					break;
				}
				if (di_glob_esc(&chunk, &clen, &lo) < 0)
					return -1;
				hi = lo;
				if (chunk[0] == '-') {
					chunk++;
					clen--;
					if (di_glob_esc(&chunk, &clen, &hi) < 0)
						return -1;
				}
				if (lo <= r && r <= hi)
					match = true;
				nrange++;
			}
			if (match == negated)
				failed = true;
		} else if (chunk[0] == '?') {
			if (!failed) {
				if (s[0] == '/')
					failed = true;
				di_decode((const unsigned char *)s, slen, &w);
				s += w;
				slen -= w;
			}
			chunk++;
			clen--;
		} else {
			if (chunk[0] == '\\') {
				chunk++;
				clen--;
				if (clen == 0)
					return -1;
			}
			if (!failed) {
				if (chunk[0] != s[0])
					failed = true;
				s++;
				slen--;
			}
			chunk++;
			clen--;
		}
	}
	if (failed)
		return 0;
	*rest = slen;
	return 1;
}

/* filepath.scanChunk */
static void di_glob_scan(const char **pat, size_t *plen, bool *star, const char **chunk,
                         size_t *clen)
{
	const char *p = *pat;
	size_t n = *plen, i;
	bool inrange = false;

	*star = false;
	while (n > 0 && p[0] == '*') {
		p++;
		n--;
		*star = true;
	}
	for (i = 0; i < n; i++) {
		if (p[i] == '\\') {
			if (i + 1 < n)
				i++;
		} else if (p[i] == '[') {
			inrange = true;
		} else if (p[i] == ']') {
			inrange = false;
		} else if (p[i] == '*' && !inrange) {
			break;
		}
	}
	*chunk = p;
	*clen = i;
	*pat = p + i;
	*plen = n - i;
}

/* filepath.Match: -1 on ErrBadPattern, else whether name matches. */
static int di_glob_match(const char *pat, size_t plen, const char *name, size_t nlen)
{
	while (plen > 0) {
		const char *chunk;
		size_t clen, rest = 0;
		bool star;
		int ok;

		di_glob_scan(&pat, &plen, &star, &chunk, &clen);
		if (star && clen == 0)
			return memchr(name, '/', nlen) == NULL;
		ok = di_glob_chunk(chunk, clen, name, nlen, &rest);
		if (ok == 1 && (rest == 0 || plen > 0)) {
			name += nlen - rest;
			nlen = rest;
			continue;
		}
		if (ok < 0)
			return -1;
		if (star) {
			bool found = false;

			for (size_t i = 0; i < nlen && name[i] != '/'; i++) {
				ok = di_glob_chunk(chunk, clen, name + i + 1, nlen - i - 1, &rest);
				if (ok == 1) {
					if (plen == 0 && rest > 0)
						continue;
					name += nlen - rest;
					nlen = rest;
					found = true;
					break;
				}
				if (ok < 0)
					return -1;
			}
			if (found)
				continue;
		}
		while (plen > 0) {
			di_glob_scan(&pat, &plen, &star, &chunk, &clen);
			if (di_glob_chunk(chunk, clen, "", 0, &rest) < 0)
				return -1;
		}
		return 0;
	}
	return nlen == 0;
}

/* ---- the regular expression engine ---- */

enum di_node_type {
	N_EMPTY,
	N_RUNE,
	N_CLASS,
	N_ANY,
	N_ASSERT,
	N_CAT,
	N_ALT,
	N_STAR,
	N_PLUS,
	N_QUEST
};

struct di_node {
	enum di_node_type type;
	uint32_t val;
	struct di_node **sub;
	size_t nsub;
};

struct di_parser {
	const char *s;
	size_t n, p;
	struct di_prog *prog;
	int depth;
};

/* A scratch list of ranges, normalised when the class is finished. */
struct di_ranges {
	uint32_t *r;
	size_t n, cap;
};

static struct di_node *di_node_new(enum di_node_type type, uint32_t val)
{
	struct di_node *nd = xcalloc(1, sizeof(*nd));

	nd->type = type;
	nd->val = val;
	return nd;
}

static void di_node_add(struct di_node *nd, struct di_node *sub)
{
	nd->sub = xrealloc(nd->sub, (nd->nsub + 1) * sizeof(*nd->sub));
	nd->sub[nd->nsub++] = sub;
}

static void di_node_free(struct di_node *nd)
{
	if (nd == NULL)
		return;
	for (size_t i = 0; i < nd->nsub; i++)
		di_node_free(nd->sub[i]);
	free(nd->sub);
	free(nd);
}

static void di_ranges_add(struct di_ranges *rs, uint32_t lo, uint32_t hi)
{
	if (rs->n + 2 > rs->cap) {
		rs->cap = rs->cap ? rs->cap * 2 : 16;
		rs->r = xrealloc(rs->r, rs->cap * sizeof(*rs->r));
	}
	rs->r[rs->n++] = lo;
	rs->r[rs->n++] = hi;
}

static int di_range_cmp(const void *a, const void *b)
{
	const uint32_t *x = a, *y = b;

	return x[0] < y[0] ? -1 : x[0] > y[0];
}

/* Sort and merge the pairs; complement them when negated. */
static void di_ranges_finish(struct di_ranges *rs, bool negate)
{
	size_t w = 0;

	qsort(rs->r, rs->n / 2, 2 * sizeof(uint32_t), di_range_cmp);
	for (size_t i = 0; i < rs->n; i += 2) {
		if (w > 0 && rs->r[i] <= rs->r[w - 1] + 1) {
			if (rs->r[i + 1] > rs->r[w - 1])
				rs->r[w - 1] = rs->r[i + 1];
		} else {
			rs->r[w++] = rs->r[i];
			rs->r[w++] = rs->r[i + 1];
		}
	}
	rs->n = w;
	if (negate) {
		struct di_ranges neg = {0};
		uint32_t next = 0;

		for (size_t i = 0; i < rs->n; i += 2) {
			if (rs->r[i] > next)
				di_ranges_add(&neg, next, rs->r[i] - 1);
			next = rs->r[i + 1] + 1;
		}
		if (next <= DI_MAX_RUNE)
			di_ranges_add(&neg, next, DI_MAX_RUNE);
		free(rs->r);
		*rs = neg;
	}
}

/* Add a class built from the ranges to the program; returns a class node. */
static struct di_node *di_class_node(struct di_parser *ps, struct di_ranges *rs, bool negate)
{
	struct di_prog *pg = ps->prog;

	di_ranges_finish(rs, negate);
	pg->classes = xrealloc(pg->classes, (pg->nclasses + 1) * sizeof(*pg->classes));
	pg->classes[pg->nclasses].r = rs->r;
	pg->classes[pg->nclasses].n = rs->n / 2;
	rs->r = NULL;
	return di_node_new(N_CLASS, (uint32_t)pg->nclasses++);
}

static uint32_t di_next_rune(struct di_parser *ps)
{
	size_t w;
	uint32_t c = di_decode((const unsigned char *)ps->s + ps->p, ps->n - ps->p, &w);

	ps->p += w;
	return c;
}

/* The ASCII sets behind [:name:] (RE2's posixGroup) and \d \s \w (perlGroup). */
struct di_group {
	const char *name;
	const char *ranges; /* pairs of bytes */
};

static const struct di_group di_posix_groups[] = {
    {"alnum", "09AZaz"},
    {"alpha", "AZaz"},
    {"ascii", "\x01\x7f"},
    {"blank", "\t\t  "},
    {"cntrl", "\x01\x1f\x7f\x7f"},
    {"digit", "09"},
    {"graph", "!~"},
    {"lower", "az"},
    {"print", " ~"},
    {"punct", "!/:@[`{~"},
    {"space", "\t\r  "},
    {"upper", "AZ"},
    {"word", "09AZ__az"},
    {"xdigit", "09AFaf"},
};

static void di_group_add(struct di_ranges *rs, const char *ranges, bool negate, bool with_nul)
{
	struct di_ranges g = {0};

	if (with_nul)
		di_ranges_add(&g, 0, 0);
	for (const char *p = ranges; p[0] != '\0'; p += 2)
		di_ranges_add(&g, (unsigned char)p[0], (unsigned char)p[1]);
	di_ranges_finish(&g, negate);
	for (size_t i = 0; i < g.n; i += 2)
		di_ranges_add(rs, g.r[i], g.r[i + 1]);
	free(g.r);
}

/* \d \D \s \S \w \W at ps->p (pointing at the backslash); false if not one. */
static bool di_perl_class(struct di_parser *ps, struct di_ranges *rs)
{
	const char *ranges;
	char c;

	if (ps->p + 1 >= ps->n || ps->s[ps->p] != '\\')
		return false;
	c = ps->s[ps->p + 1];
	switch (c | 0x20) {
	case 'd':
		ranges = "09";
		break;
	case 's':
		ranges = "\t\n\f\r  ";
		break;
	case 'w':
		ranges = "09AZ__az";
		break;
	default:
		return false;
	}
	di_group_add(rs, ranges, c >= 'A' && c <= 'Z', false);
	ps->p += 2;
	return true;
}

static int di_unhex(uint32_t c)
{
	if (c >= '0' && c <= '9')
		return (int)(c - '0');
	if (c >= 'a' && c <= 'f')
		return (int)(c - 'a' + 10);
	if (c >= 'A' && c <= 'F')
		return (int)(c - 'A' + 10);
	return -1;
}

static bool di_isalnum(uint32_t c)
{
	return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
}

/* RE2's parseEscape at ps->p (the backslash): one escaped character. */
static int di_parse_escape(struct di_parser *ps, uint32_t *out)
{
	uint32_t c;

	ps->p++;
	if (ps->p >= ps->n)
		return -1;
	c = di_next_rune(ps);
	if (c < 0x80 && !di_isalnum(c)) {
		*out = c;
		return 0;
	}
	if (c >= '1' && c <= '7') {
		if (ps->p >= ps->n || ps->s[ps->p] < '0' || ps->s[ps->p] > '7')
			return -1;
	}
	if (c >= '0' && c <= '7') {
		uint32_t r = c - '0';

		for (int i = 1; i < 3; i++) {
			if (ps->p >= ps->n || ps->s[ps->p] < '0' || ps->s[ps->p] > '7')
				break;
			r = r * 8 + (uint32_t)(ps->s[ps->p++] - '0');
		}
		*out = r;
		return 0;
	}
	switch (c) {
	case 'x': {
		int x, y;

		if (ps->p >= ps->n)
			return -1;
		c = di_next_rune(ps);
		if (c == '{') {
			uint32_t r = 0;
			int nhex = 0;

			for (;;) {
				if (ps->p >= ps->n)
					return -1;
				c = di_next_rune(ps);
				if (c == '}')
					break;
				if (di_unhex(c) < 0)
					return -1;
				r = r * 16 + (uint32_t)di_unhex(c);
				if (r > DI_MAX_RUNE)
					return -1;
				nhex++;
			}
			if (nhex == 0)
				return -1;
			*out = r;
			return 0;
		}
		x = di_unhex(c);
		if (ps->p >= ps->n)
			return -1;
		y = di_unhex(di_next_rune(ps));
		if (x < 0 || y < 0)
			return -1;
		*out = (uint32_t)(x * 16 + y);
		return 0;
	}
	case 'a':
		*out = '\a';
		return 0;
	case 'f':
		*out = '\f';
		return 0;
	case 'n':
		*out = '\n';
		return 0;
	case 'r':
		*out = '\r';
		return 0;
	case 't':
		*out = '\t';
		return 0;
	case 'v':
		*out = '\v';
		return 0;
	default:
		return -1;
	}
}

static int di_class_char(struct di_parser *ps, uint32_t *out)
{
	if (ps->p >= ps->n)
		return -1;
	if (ps->s[ps->p] == '\\')
		return di_parse_escape(ps, out);
	*out = di_next_rune(ps);
	return 0;
}

/* RE2's parseClass at ps->p (the '['). */
static struct di_node *di_parse_class(struct di_parser *ps)
{
	struct di_ranges rs = {0};
	bool negate = false, first = true;

	ps->p++;
	if (ps->p < ps->n && ps->s[ps->p] == '^') {
		negate = true;
		ps->p++;
	}
	while (ps->p >= ps->n || ps->s[ps->p] != ']' || first) {
		uint32_t lo, hi;

		first = false;
		if (ps->n - ps->p > 2 && ps->s[ps->p] == '[' && ps->s[ps->p + 1] == ':') {
			const char *name = ps->s + ps->p + 2;
			const char *end = memmem(name, ps->n - ps->p - 2, ":]", 2);

			if (end != NULL) {
				bool neg = name[0] == '^';
				size_t nl;
				const struct di_group *g = NULL;

				if (neg)
					name++;
				nl = (size_t)(end - name);
				for (size_t i = 0;
				     i < sizeof(di_posix_groups) / sizeof(*di_posix_groups); i++) {
					if (strlen(di_posix_groups[i].name) == nl &&
					    memcmp(di_posix_groups[i].name, name, nl) == 0)
						g = &di_posix_groups[i];
				}
				if (g == NULL)
					goto bad;
				/* "ascii" and "cntrl" start at NUL, which a C string cannot hold.
				 */
				di_group_add(&rs, g->ranges, neg,
				             strcmp(g->name, "ascii") == 0 ||
				                 strcmp(g->name, "cntrl") == 0);
				ps->p = (size_t)(end - ps->s) + 2;
				continue;
			}
		}
		if (ps->n - ps->p >= 2 && ps->s[ps->p] == '\\' &&
		    (ps->s[ps->p + 1] == 'p' || ps->s[ps->p + 1] == 'P'))
			goto bad; /* Unicode classes are not supported */
		if (di_perl_class(ps, &rs))
			continue;
		if (di_class_char(ps, &lo) < 0)
			goto bad;
		hi = lo;
		if (ps->n - ps->p >= 2 && ps->s[ps->p] == '-' && ps->s[ps->p + 1] != ']') {
			ps->p++;
			if (di_class_char(ps, &hi) < 0 || hi < lo)
				goto bad;
		}
		di_ranges_add(&rs, lo, hi);
	}
	ps->p++;
	return di_class_node(ps, &rs, negate);
bad:
	free(rs.r);
	return NULL;
}

static struct di_node *di_parse_alt(struct di_parser *ps);

/* One atom, or NULL on a syntax error (or a construct this engine does not run). */
static struct di_node *di_parse_atom(struct di_parser *ps)
{
	char c = ps->s[ps->p];
	uint32_t r;

	switch (c) {
	case '(': {
		struct di_node *nd;

		ps->p++;
		if (ps->p < ps->n && ps->s[ps->p] == '?')
			return NULL; /* flags and named groups never come out of a glob */
		if (++ps->depth > 1000)
			return NULL;
		nd = di_parse_alt(ps);
		ps->depth--;
		if (nd == NULL)
			return NULL;
		if (ps->p >= ps->n || ps->s[ps->p] != ')') {
			di_node_free(nd);
			return NULL;
		}
		ps->p++;
		return nd;
	}
	case '[':
		return di_parse_class(ps);
	case '.':
		ps->p++;
		return di_node_new(N_ANY, 0);
	case '^':
		ps->p++;
		return di_node_new(N_ASSERT, AS_BEGIN_TEXT);
	case '$':
		ps->p++;
		return di_node_new(N_ASSERT, AS_END_TEXT);
	case '*':
	case '+':
	case '?':
	case ')':
		return NULL;
	case '\\':
		break;
	default:
		return di_node_new(N_RUNE, di_next_rune(ps));
	}
	if (ps->p + 1 < ps->n) {
		switch (ps->s[ps->p + 1]) {
		case 'A':
			ps->p += 2;
			return di_node_new(N_ASSERT, AS_BEGIN_TEXT);
		case 'z':
			ps->p += 2;
			return di_node_new(N_ASSERT, AS_END_TEXT);
		case 'b':
			ps->p += 2;
			return di_node_new(N_ASSERT, AS_WORD_BOUNDARY);
		case 'B':
			ps->p += 2;
			return di_node_new(N_ASSERT, AS_NOT_WORD_BOUNDARY);
		case 'C':
		case 'p':
		case 'P':
			return NULL;
		case 'Q': {
			struct di_node *cat = di_node_new(N_CAT, 0);
			const char *end;

			ps->p += 2;
			end = memmem(ps->s + ps->p, ps->n - ps->p, "\\E", 2);
			while (ps->p < (end ? (size_t)(end - ps->s) : ps->n))
				di_node_add(cat, di_node_new(N_RUNE, di_next_rune(ps)));
			if (end != NULL)
				ps->p += 2;
			return cat;
		}
		default:
			break;
		}
	}
	{
		struct di_ranges rs = {0};

		if (di_perl_class(ps, &rs))
			return di_class_node(ps, &rs, false);
	}
	if (di_parse_escape(ps, &r) < 0)
		return NULL;
	return di_node_new(N_RUNE, r);
}

/* A valid {n}, {n,} or {n,m} at ps->p: RE2 treats it as a repeat, else '{' is literal. */
static bool di_is_counted_repeat(const struct di_parser *ps)
{
	size_t p = ps->p + 1, digits = 0;

	while (p < ps->n && ps->s[p] >= '0' && ps->s[p] <= '9')
		p++, digits++;
	if (digits == 0 || p >= ps->n)
		return false;
	if (ps->s[p] == ',') {
		p++;
		while (p < ps->n && ps->s[p] >= '0' && ps->s[p] <= '9')
			p++;
	}
	return p < ps->n && ps->s[p] == '}';
}

static struct di_node *di_parse_concat(struct di_parser *ps)
{
	struct di_node *cat = di_node_new(N_CAT, 0);

	while (ps->p < ps->n && ps->s[ps->p] != '|' && ps->s[ps->p] != ')') {
		struct di_node *atom;
		enum di_node_type rep;

		if (ps->s[ps->p] == '{' && di_is_counted_repeat(ps))
			goto bad; /* counted repeats never come out of a glob */
		atom = di_parse_atom(ps);
		if (atom == NULL)
			goto bad;
		di_node_add(cat, atom);
		if (ps->p >= ps->n)
			break;
		switch (ps->s[ps->p]) {
		case '*':
			rep = N_STAR;
			break;
		case '+':
			rep = N_PLUS;
			break;
		case '?':
			rep = N_QUEST;
			break;
		default:
			if (ps->s[ps->p] == '{' && di_is_counted_repeat(ps))
				goto bad;
			continue;
		}
		ps->p++;
		if (ps->p < ps->n && ps->s[ps->p] == '?')
			ps->p++; /* non-greedy: the same language */
		if (ps->p < ps->n && (strchr("*+?", ps->s[ps->p]) != NULL ||
		                      (ps->s[ps->p] == '{' && di_is_counted_repeat(ps))))
			goto bad; /* RE2 refuses stacked repetition such as a** */
		{
			struct di_node *r = di_node_new(rep, 0);

			di_node_add(r, atom);
			cat->sub[cat->nsub - 1] = r;
		}
	}
	return cat;
bad:
	di_node_free(cat);
	return NULL;
}

static struct di_node *di_parse_alt(struct di_parser *ps)
{
	struct di_node *alt = NULL, *cat = di_parse_concat(ps);

	while (cat != NULL && ps->p < ps->n && ps->s[ps->p] == '|') {
		if (alt == NULL) {
			alt = di_node_new(N_ALT, 0);
			di_node_add(alt, cat);
		}
		ps->p++;
		cat = di_parse_concat(ps);
		if (cat != NULL)
			di_node_add(alt, cat);
	}
	if (cat == NULL) {
		di_node_free(alt);
		return NULL;
	}
	return alt ? alt : cat;
}

static uint32_t di_emit(struct di_prog *pg, enum di_op op, uint32_t arg, uint32_t x, uint32_t y)
{
	if (pg->ninst == pg->cap) {
		pg->cap = pg->cap ? pg->cap * 2 : 32;
		pg->inst = xrealloc(pg->inst, pg->cap * sizeof(*pg->inst));
	}
	pg->inst[pg->ninst] = (struct di_inst){op, arg, x, y};
	return (uint32_t)pg->ninst++;
}

static void di_compile_node(struct di_prog *pg, const struct di_node *nd)
{
	uint32_t split, jmp, start;

	switch (nd->type) {
	case N_EMPTY:
		break;
	case N_RUNE:
		di_emit(pg, OP_RUNE, nd->val, 0, 0);
		break;
	case N_CLASS:
		di_emit(pg, OP_CLASS, nd->val, 0, 0);
		break;
	case N_ANY:
		di_emit(pg, OP_ANY_NOT_NL, 0, 0, 0);
		break;
	case N_ASSERT:
		di_emit(pg, OP_ASSERT, nd->val, 0, 0);
		break;
	case N_CAT:
		for (size_t i = 0; i < nd->nsub; i++)
			di_compile_node(pg, nd->sub[i]);
		break;
	case N_ALT: {
		uint32_t *jmps = xcalloc(nd->nsub, sizeof(*jmps));

		for (size_t i = 0; i < nd->nsub; i++) {
			split = 0;
			if (i + 1 < nd->nsub)
				split = di_emit(pg, OP_SPLIT, 0, (uint32_t)pg->ninst + 1, 0);
			di_compile_node(pg, nd->sub[i]);
			if (i + 1 < nd->nsub) {
				jmps[i] = di_emit(pg, OP_JMP, 0, 0, 0);
				pg->inst[split].y = (uint32_t)pg->ninst;
			}
		}
		for (size_t i = 0; i + 1 < nd->nsub; i++)
			pg->inst[jmps[i]].x = (uint32_t)pg->ninst;
		free(jmps);
		break;
	}
	case N_STAR:
		split = di_emit(pg, OP_SPLIT, 0, (uint32_t)pg->ninst + 1, 0);
		di_compile_node(pg, nd->sub[0]);
		di_emit(pg, OP_JMP, 0, split, 0);
		pg->inst[split].y = (uint32_t)pg->ninst;
		break;
	case N_PLUS:
		start = (uint32_t)pg->ninst;
		di_compile_node(pg, nd->sub[0]);
		di_emit(pg, OP_SPLIT, 0, start, (uint32_t)pg->ninst + 1);
		break;
	case N_QUEST:
		split = di_emit(pg, OP_SPLIT, 0, (uint32_t)pg->ninst + 1, 0);
		di_compile_node(pg, nd->sub[0]);
		jmp = (uint32_t)pg->ninst;
		pg->inst[split].y = jmp;
		break;
	}
}

static void di_prog_free(struct di_prog *pg)
{
	if (pg == NULL)
		return;
	for (size_t i = 0; i < pg->nclasses; i++)
		free(pg->classes[i].r);
	free(pg->classes);
	free(pg->inst);
	free(pg);
}

/* regexp.Compile: NULL when RE2 would refuse the expression. */
static struct di_prog *di_regex_compile(const char *re, size_t len)
{
	struct di_prog *pg = xcalloc(1, sizeof(*pg));
	struct di_parser ps = {re, len, 0, pg, 0};
	struct di_node *root = di_parse_alt(&ps);

	if (root == NULL || ps.p != ps.n) {
		di_node_free(root);
		di_prog_free(pg);
		return NULL;
	}
	di_compile_node(pg, root);
	di_emit(pg, OP_MATCH, 0, 0, 0);
	di_node_free(root);
	return pg;
}

static bool di_class_has(const struct di_class *c, uint32_t r)
{
	size_t lo = 0, hi = c->n;

	while (lo < hi) {
		size_t mid = (lo + hi) / 2;

		if (r < c->r[2 * mid])
			hi = mid;
		else if (r > c->r[2 * mid + 1])
			lo = mid + 1;
		else
			return true;
	}
	return false;
}

static bool di_is_word(int64_t r)
{
	return r >= 0 && r < 0x80 && (di_isalnum((uint32_t)r) || r == '_');
}

struct di_vm {
	const struct di_prog *pg;
	const unsigned char *s;
	size_t n;
	bool open_end; /* the text continues after s: nothing is known of it */
	uint32_t *mark, gen, *stack;
};

struct di_list {
	uint32_t *pc;
	size_t n;
};

static bool di_assert_holds(const struct di_vm *vm, uint32_t kind, size_t i)
{
	int64_t before = -1, after = -1;
	size_t w;

	switch (kind) {
	case AS_BEGIN_TEXT:
		return i == 0;
	case AS_END_TEXT:
		return i == vm->n && !vm->open_end;
	default:
		if (i == vm->n && vm->open_end)
			return true;
		if (i > 0)
			before = di_decode_last(vm->s, i, &w);
		if (i < vm->n)
			after = di_decode(vm->s + i, vm->n - i, &w);
		return (di_is_word(before) != di_is_word(after)) == (kind == AS_WORD_BOUNDARY);
	}
}

/* Follow the empty transitions from pc at text position i, collecting the threads. */
static void di_add_thread(struct di_vm *vm, struct di_list *l, uint32_t pc0, size_t i)
{
	size_t top = 0;

	if (vm->mark[pc0] == vm->gen)
		return;
	vm->mark[pc0] = vm->gen;
	vm->stack[top++] = pc0;
	while (top > 0) {
		uint32_t pc = vm->stack[--top];
		const struct di_inst *in = &vm->pg->inst[pc];
		uint32_t next[2];
		int nnext = 0;

		switch (in->op) {
		case OP_JMP:
			next[nnext++] = in->x;
			break;
		case OP_SPLIT:
			next[nnext++] = in->x;
			next[nnext++] = in->y;
			break;
		case OP_ASSERT:
			if (di_assert_holds(vm, in->arg, i))
				next[nnext++] = pc + 1;
			break;
		default:
			l->pc[l->n++] = pc;
			break;
		}
		for (int k = 0; k < nnext; k++) {
			if (vm->mark[next[k]] != vm->gen) {
				vm->mark[next[k]] = vm->gen;
				vm->stack[top++] = next[k];
			}
		}
	}
}

/*
 * Unanchored search, as Go's MatchString.  With open_end the text is only a prefix
 * of the real one: the answer is then "might match" (a thread is still alive).
 */
static bool di_prog_run(const struct di_prog *pg, const char *s, size_t n, bool open_end)
{
	uint32_t small[4 * 128];
	uint32_t *mem = pg->ninst <= 128 ? small : xmalloc(4 * pg->ninst * sizeof(uint32_t));
	struct di_vm vm = {pg, (const unsigned char *)s, n, open_end, mem, 0, mem + pg->ninst};
	struct di_list a = {mem + 2 * pg->ninst, 0}, b = {mem + 3 * pg->ninst, 0};
	struct di_list *cl = &a, *nl = &b;
	bool matched = false;
	size_t i = 0;

	memset(vm.mark, 0xff, pg->ninst * sizeof(uint32_t));
	vm.gen = 0;
	di_add_thread(&vm, cl, 0, 0);
	for (;;) {
		uint32_t r = 0;
		size_t w = 0;

		if (i < n)
			r = di_decode(vm.s + i, n - i, &w);
		vm.gen++;
		nl->n = 0;
		for (size_t k = 0; k < cl->n && !matched; k++) {
			const struct di_inst *in = &pg->inst[cl->pc[k]];
			bool ok = false;

			switch (in->op) {
			case OP_MATCH:
				matched = true;
				break;
			case OP_RUNE:
				ok = i < n && r == in->arg;
				break;
			case OP_CLASS:
				ok = i < n && di_class_has(&pg->classes[in->arg], r);
				break;
			case OP_ANY_NOT_NL:
				ok = i < n && r != '\n';
				break;
			default:
				break;
			}
			if (ok)
				di_add_thread(&vm, nl, cl->pc[k] + 1, i + w);
		}
		if (matched || i >= n)
			break;
		i += w;
		{
			struct di_list *t = cl;

			cl = nl;
			nl = t;
		}
		di_add_thread(&vm, cl, 0, i);
	}
	if (!matched && open_end)
		matched = cl->n > 0;
	if (mem != small)
		free(mem);
	return matched;
}

/* ---- patterns (patternmatcher.Pattern) ---- */

static bool di_should_escape(uint32_t c)
{
	return c < 0x80 && strchr(".+()|{}$", (int)c) != NULL && c != 0;
}

static void di_buf_add(char **buf, size_t *len, size_t *cap, const char *s, size_t n)
{
	if (*len + n + 1 > *cap) {
		while (*len + n + 1 > *cap)
			*cap = *cap ? *cap * 2 : 64;
		*buf = xrealloc(*buf, *cap);
	}
	memcpy(*buf + *len, s, n);
	*len += n;
	(*buf)[*len] = '\0';
}

static void di_buf_rune(char **buf, size_t *len, size_t *cap, uint32_t c)
{
	char u[4];
	size_t n;

	if (c < 0x80) {
		u[0] = (char)c, n = 1;
	} else if (c < 0x800) {
		u[0] = (char)(0xC0 | (c >> 6)), u[1] = (char)(0x80 | (c & 0x3F)), n = 2;
	} else if (c < 0x10000) {
		u[0] = (char)(0xE0 | (c >> 12)), u[1] = (char)(0x80 | ((c >> 6) & 0x3F));
		u[2] = (char)(0x80 | (c & 0x3F)), n = 3;
	} else {
		u[0] = (char)(0xF0 | (c >> 18)), u[1] = (char)(0x80 | ((c >> 12) & 0x3F));
		u[2] = (char)(0x80 | ((c >> 6) & 0x3F)), u[3] = (char)(0x80 | (c & 0x3F)), n = 4;
	}
	di_buf_add(buf, len, cap, u, n);
}

/* A text/scanner.Scanner over the pattern: runes, a BOM skipped at the start. */
struct di_scan {
	const unsigned char *s;
	size_t n, p;
};

static int64_t di_scan_peek(const struct di_scan *sc)
{
	size_t w;

	if (sc->p >= sc->n)
		return -1;
	return di_decode(sc->s + sc->p, sc->n - sc->p, &w);
}

static uint32_t di_scan_next(struct di_scan *sc)
{
	size_t w;
	uint32_t c = di_decode(sc->s + sc->p, sc->n - sc->p, &w);

	sc->p += w;
	return c;
}

/* Pattern.compile: the match type, and for DI_REGEXP the program (DI_BAD if refused). */
static void di_pattern_compile(struct di_pattern *pt)
{
	struct di_scan sc = {(const unsigned char *)pt->text, pt->len, 0};
	enum di_match_type type = DI_EXACT;
	char *re = NULL;
	size_t len = 0, cap = 0;

	di_buf_add(&re, &len, &cap, "^", 1);
	if (di_scan_peek(&sc) == 0xFEFF)
		di_scan_next(&sc);
	for (int i = 0; di_scan_peek(&sc) >= 0; i++) {
		uint32_t ch = di_scan_next(&sc);

		if (ch == '*') {
			if (di_scan_peek(&sc) == '*') {
				di_scan_next(&sc);
				if (di_scan_peek(&sc) == '/')
					di_scan_next(&sc);
				if (di_scan_peek(&sc) < 0) {
					if (type == DI_EXACT) {
						type = DI_PREFIX;
					} else {
						di_buf_add(&re, &len, &cap, ".*", 2);
						type = DI_REGEXP;
					}
				} else {
					di_buf_add(&re, &len, &cap, "(.*/)?", 6);
					type = DI_REGEXP;
				}
				if (i == 0)
					type = DI_SUFFIX;
			} else {
				di_buf_add(&re, &len, &cap, "[^/]*", 5);
				type = DI_REGEXP;
			}
		} else if (ch == '?') {
			di_buf_add(&re, &len, &cap, "[^/]", 4);
			type = DI_REGEXP;
		} else if (di_should_escape(ch)) {
			di_buf_add(&re, &len, &cap, "\\", 1);
			di_buf_rune(&re, &len, &cap, ch);
		} else if (ch == '\\') {
			if (di_scan_peek(&sc) >= 0) {
				di_buf_add(&re, &len, &cap, "\\", 1);
				di_buf_rune(&re, &len, &cap, di_scan_next(&sc));
				type = DI_REGEXP;
			} else {
				di_buf_add(&re, &len, &cap, "\\", 1);
			}
		} else if (ch == '[' || ch == ']') {
			di_buf_rune(&re, &len, &cap, ch);
			type = DI_REGEXP;
		} else {
			di_buf_rune(&re, &len, &cap, ch);
		}
	}
	if (type == DI_REGEXP) {
		di_buf_add(&re, &len, &cap, "$", 1);
		pt->prog = di_regex_compile(re, len);
		if (pt->prog == NULL)
			type = DI_BAD;
	}
	pt->type = type;
	free(re);
}

/* Pattern.match on s[0:n]: -1 for a pattern Docker cannot compile. */
static int di_pattern_match(const struct di_pattern *pt, const char *s, size_t n)
{
	const char *suffix;
	size_t sl;

	switch (pt->type) {
	case DI_EXACT:
		return n == pt->len && memcmp(s, pt->text, n) == 0;
	case DI_PREFIX:
		return n >= pt->len - 2 && memcmp(s, pt->text, pt->len - 2) == 0;
	case DI_SUFFIX:
		suffix = pt->text + 2;
		sl = pt->len - 2;
		if (n >= sl && memcmp(s + n - sl, suffix, sl) == 0)
			return 1;
		return suffix[0] == '/' && n == sl - 1 && memcmp(s, suffix + 1, n) == 0;
	case DI_REGEXP:
		return di_prog_run(pt->prog, s, n, false);
	case DI_BAD:
	default:
		return -1;
	}
}

/*
 * Whether the pattern matches the path or one of its parent directories, as in
 * MatchesOrParentMatches: an error on the path itself is reported, errors on the
 * parents count as no match.  parent is filepath.Dir(path).
 */
/* A path being judged, with its filepath.Dir. */
struct di_query {
	const char *path, *parent;
	size_t len, plen;
	char *owned;
};

static int di_pattern_hits(const struct di_pattern *pt, const struct di_query *q)
{
	int m = di_pattern_match(pt, q->path, q->len);

	if (m != 0 || (q->plen == 1 && q->parent[0] == '.'))
		return m;
	for (size_t i = 0; i <= q->plen; i++) {
		if (i == q->plen || q->parent[i] == '/') {
			if (di_pattern_match(pt, q->parent, i) == 1)
				return 1;
		}
	}
	return 0;
}

/* Canonical: no empty, "." or ".." element, no leading or trailing '/'. */
static bool di_is_canonical(const char *path, size_t len)
{
	size_t start = 0;

	if (len == 0)
		return false;
	for (size_t i = 0; i <= len; i++) {
		if (i == len || path[i] == '/') {
			size_t n = i - start;

			if (n == 0 || (n == 1 && path[start] == '.') ||
			    (n == 2 && path[start] == '.' && path[start + 1] == '.'))
				return false;
			start = i + 1;
		}
	}
	return true;
}

/*
 * Prepare a query; false for the context root, which is never excluded.  The
 * walker's paths are canonical and need no copy; others go through filepath.Clean.
 */
static bool di_query_init(struct di_query *q, const char *path)
{
	size_t len = strlen(path);
	const char *slash = strrchr(path, '/');

	q->path = path;
	q->len = len;
	q->owned = NULL;
	if (di_is_canonical(path, len)) {
		q->parent = slash ? path : ".";
		q->plen = slash ? (size_t)(slash - path) : 1;
		return true;
	}
	q->owned = di_clean(path, len);
	if (strcmp(q->owned, ".") == 0) {
		free(q->owned);
		return false;
	}
	free(q->owned);
	q->owned = di_clean(path, slash ? (size_t)(slash - path) + 1 : 0);
	q->parent = q->owned;
	q->plen = strlen(q->owned);
	return true;
}

/* ---- the public interface ---- */

void dockerignore_free(struct dockerignore *d)
{
	if (d == NULL)
		return;
	dockerignore_lines_free(d->lines);
	for (size_t i = 0; i < d->npats; i++) {
		free(d->pats[i].text);
		di_prog_free(d->pats[i].prog);
	}
	free(d->pats);
	free(d);
}

struct dockerignore *dockerignore_parse(const char *text, size_t len, char **err)
{
	struct dockerignore *d = xcalloc(1, sizeof(*d));

	*err = NULL;
	if (dockerignore_read_all(text, len, &d->lines, &d->nlines, err) < 0)
		goto fail;
	d->pats = xcalloc(d->nlines ? d->nlines : 1, sizeof(*d->pats));
	/* patternmatcher.New */
	for (size_t i = 0; i < d->nlines; i++) {
		const char *p = d->lines[i];
		size_t n = strlen(p);
		char *c;
		struct di_pattern *pt;

		di_trim_space(&p, &n);
		if (n == 0)
			continue;
		c = di_clean(p, n);
		pt = &d->pats[d->npats];
		pt->text = c;
		if (c[0] == '!') {
			if (c[1] == '\0') {
				*err = xstrdup("illegal exclusion pattern: \"!\"");
				free(c);
				goto fail;
			}
			pt->exclusion = true;
			pt->text = xstrdup(c + 1);
			free(c);
		}
		pt->len = strlen(pt->text);
		if (di_glob_match(pt->text, pt->len, ".", 1) < 0) {
			*err = xasprintf(DI_BAD_GLOB ": \"%s\"", d->lines[i]);
			free(pt->text);
			goto fail;
		}
		di_pattern_compile(pt);
		d->npats++;
	}
	return d;
fail:
	dockerignore_free(d);
	return NULL;
}

size_t dockerignore_count(const struct dockerignore *d)
{
	return d->nlines;
}

const char *dockerignore_pattern(const struct dockerignore *d, size_t i)
{
	return i < d->nlines ? d->lines[i] : NULL;
}

int dockerignore_excluded(const struct dockerignore *d, const char *path, bool *excluded,
                          char **err)
{
	bool matched = false;
	struct di_query q;
	int rc = 0;

	*excluded = false;
	if (d->npats == 0 || !di_query_init(&q, path))
		return 0;
	for (size_t i = 0; i < d->npats; i++) {
		const struct di_pattern *pt = &d->pats[i];
		int hit;

		if (pt->exclusion != matched)
			continue;
		hit = di_pattern_hits(pt, &q);
		if (hit < 0) {
			*err =
			    xasprintf(DI_BAD_GLOB ": \"%s%s\"", pt->exclusion ? "!" : "", pt->text);
			rc = -1;
			goto out;
		}
		if (hit)
			matched = !pt->exclusion;
	}
	*excluded = matched;
out:
	free(q.owned);
	return rc;
}

/* Whether an exception pattern could match some path strictly below dir. */
static bool di_could_match_below(const struct di_pattern *pt, const char *dir)
{
	char *prefix = xasprintf("%s/", dir);
	size_t pl = strlen(prefix);
	bool may = true;

	switch (pt->type) {
	case DI_EXACT:
		may = pt->len > pl && memcmp(pt->text, prefix, pl) == 0;
		break;
	case DI_PREFIX: {
		size_t sl = pt->len - 2;

		may = memcmp(pt->text, prefix, sl < pl ? sl : pl) == 0;
		break;
	}
	case DI_REGEXP:
		may = di_prog_run(pt->prog, prefix, pl, true);
		break;
	case DI_SUFFIX:
	case DI_BAD:
		break;
	}
	free(prefix);
	return may;
}

bool dockerignore_may_reinclude_below(const struct dockerignore *d, const char *dir)
{
	struct di_query q;
	size_t last = 0;
	bool found = false, may = false;

	if (!di_query_init(&q, dir))
		return true;
	/* The last pattern hitting dir decides for dir; only later ones can differ below. */
	for (size_t i = 0; i < d->npats; i++) {
		int hit = di_pattern_hits(&d->pats[i], &q);

		if (hit < 0) {
			may = true;
			goto out;
		}
		if (hit) {
			last = i;
			found = true;
		}
	}
	if (!found || d->pats[last].exclusion) {
		may = true;
		goto out;
	}
	for (size_t i = last + 1; i < d->npats && !may; i++) {
		if (d->pats[i].exclusion)
			may = di_could_match_below(&d->pats[i], dir);
	}
out:
	free(q.owned);
	return may;
}
