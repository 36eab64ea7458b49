/*
 * The .dockerignore matcher.  Three stages, each a port of the Go code Docker runs, so
 * that every oddity is reproduced rather than reinvented:
 *
 *  1. reading: ignorefile.ReadAll (bufio line splitting, BOM, comments, TrimSpace,
 *     filepath.Clean, leading '/' removal);
 *  2. loading: patternmatcher.New, whose syntax check is Go's filepath.Match(p, ".");
 *  3. matching: patternmatcher's Pattern.compile turns a pattern into an exact, prefix
 *     or suffix string test or into an RE2 regular expression.  The expression text is
 *     built exactly as Docker builds it, checked as RE2 checks it, and matched by PCRE2
 *     (see the regular expression section).  The one construct left out is \p{...}
 *     Unicode classes (their names and tables are Go's, not PCRE2's): such a pattern fails
 *     when matched, like a malformed one.
 */
#include "dockerignore.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include "util.h"

#define DI_MAX_LINE   65535 /* bufio.Scanner's default token limit, newline excluded */
#define DI_RUNE_ERR   0xFFFDu
#define DI_MAX_RUNE   0x10FFFFu
#define DI_BAD_GLOB   "syntax error in pattern"
#define DI_DFA_WS     512       /* ints of DFA workspace on the stack */
#define DI_DFA_WS_MAX (1 << 22) /* and at most on the heap */

enum di_match_type { DI_EXACT, DI_PREFIX, DI_SUFFIX, DI_REGEXP, DI_BAD };

struct di_pattern {
	char *text; /* cleaned, without the '!' */
	size_t len;
	bool exclusion;
	enum di_match_type type;
	pcre2_code *re; /* DI_REGEXP; only read once built, so shared by threads */
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

/*
 * ---- the regular expression, translated for PCRE2 ----
 *
 * Docker's expression text is RE2 syntax, and a glob can put almost any of it there
 * (classes, escapes, \Q..\E, assertions).  RE2 and PCRE2 disagree on much of it: \s
 * (PCRE2's has \v), \v itself, \x without digits, \e, \Z, \1, \C, \Q inside a class,
 * "[:x:]" outside one, "[=" and "[." inside one, a '-' after \d, and so on.  So the
 * text is parsed as RE2 parses it (refusing what RE2 refuses, which makes the pattern
 * fail on every match) and written out again in a small PCRE2 subset that means the same
 * thing: every character as \x{...}, every class as explicit ranges, (?:...) groups, \A
 * \z \b \B, and the repetition operators.  The expression is compiled in UTF mode and
 * run with pcre2_dfa_match(), which walks the subject once without backtracking, so
 * matching stays linear in the path length whatever the pattern (as RE2 promises).
 * One limit is PCRE2's own: an expression whose compiled form passes 64 KiB (thousands
 * of classes or wildcards in one pattern) is refused, where Go takes it; such a pattern
 * fails when matched.
 */

struct di_buf {
	char *s;
	size_t len, cap;
};

struct di_parser {
	const char *s;
	size_t n, p;
	struct di_buf *out; /* the PCRE2 text */
	size_t atom;        /* where the last atom starts in it */
	int depth;
};

/* A scratch list of ranges, normalised when the class is finished. */
struct di_ranges {
	uint32_t *r;
	size_t n, cap;
};

static void di_buf_add(struct di_buf *b, const char *s, size_t n)
{
	if (b->len + n + 1 > b->cap) {
		while (b->len + n + 1 > b->cap)
			b->cap = b->cap ? b->cap * 2 : 64;
		b->s = xrealloc(b->s, b->cap);
	}
	memcpy(b->s + b->len, s, n);
	b->len += n;
	b->s[b->len] = '\0';
}

static void di_buf_str(struct di_buf *b, const char *s)
{
	di_buf_add(b, s, strlen(s));
}

static bool di_isalnum(uint32_t c)
{
	return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
}

/* One character for PCRE2: letters and digits as they are, anything else as \x{...}. */
static void di_emit_char(struct di_buf *b, uint32_t c)
{
	char hex[16];

	if (di_isalnum(c)) {
		hex[0] = (char)c;
		di_buf_add(b, hex, 1);
	} else {
		di_buf_add(b, hex, (size_t)snprintf(hex, sizeof(hex), "\\x{%X}", (unsigned)c));
	}
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

/*
 * Write a class as explicit ranges.  Surrogates can never match (they decode as
 * U+FFFD) and PCRE2 refuses them as range ends, so ranges are clipped around them; a
 * class left empty is a group that never matches.
 */
static void di_emit_class(struct di_parser *ps, struct di_ranges *rs, bool negate)
{
	bool any = false;

	di_ranges_finish(rs, negate);
	for (size_t i = 0; i < rs->n; i += 2) {
		uint32_t lo = rs->r[i], hi = rs->r[i + 1];

		if (lo >= 0xD800 && lo <= 0xDFFF)
			lo = 0xE000;
		if (hi >= 0xD800 && hi <= 0xDFFF)
			hi = 0xD7FF;
		if (lo > hi)
			continue;
		di_buf_str(ps->out, any ? "" : "[");
		any = true;
		di_emit_char(ps->out, lo);
		if (hi > lo) {
			di_buf_add(ps->out, "-", 1);
			di_emit_char(ps->out, hi);
		}
	}
	di_buf_str(ps->out, any ? "]" : "(?:(?!))");
	free(rs->r);
	rs->r = NULL;
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
static int di_parse_class(struct di_parser *ps)
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
	di_emit_class(ps, &rs, negate);
	return 0;
bad:
	free(rs.r);
	return -1;
}

/* One literal character; a surrogate (only reachable as a number) never matches. */
static void di_emit_literal(struct di_parser *ps, uint32_t c)
{
	if (c >= 0xD800 && c <= 0xDFFF)
		di_buf_str(ps->out, "(?:(?!))");
	else
		di_emit_char(ps->out, c);
}

static int di_parse_alt(struct di_parser *ps);

/* One atom, or -1 on a syntax error (or a construct left out: \p, \C, flags). */
static int di_parse_atom(struct di_parser *ps)
{
	char c = ps->s[ps->p];
	size_t start = ps->out->len;
	uint32_t r;

	ps->atom = start;
	switch (c) {
	case '(':
		ps->p++;
		if (ps->p < ps->n && ps->s[ps->p] == '?')
			return -1; /* flags and named groups never come out of a glob */
		if (++ps->depth > 1000)
			return -1;
		di_buf_str(ps->out, "(?:");
		if (di_parse_alt(ps) < 0 || ps->p >= ps->n || ps->s[ps->p] != ')')
			return -1;
		ps->depth--;
		ps->p++;
		di_buf_str(ps->out, ")");
		ps->atom = start;
		return 0;
	case '[':
		return di_parse_class(ps);
	case '.':
		ps->p++;
		di_buf_str(ps->out, "[^\\n]");
		return 0;
	case '^':
		ps->p++;
		di_buf_str(ps->out, "\\A");
		return 0;
	case '$':
		ps->p++;
		di_buf_str(ps->out, "\\z");
		return 0;
	case '*':
	case '+':
	case '?':
	case ')':
		return -1;
	case '\\':
		break;
	default:
		di_emit_literal(ps, di_next_rune(ps));
		return 0;
	}
	if (ps->p + 1 < ps->n) {
		switch (ps->s[ps->p + 1]) {
		case 'A':
		case 'z':
		case 'b':
		case 'B':
			/* RE2's \b and \B are ASCII, as PCRE2's are without PCRE2_UCP. */
			di_buf_add(ps->out, ps->s + ps->p, 2);
			ps->p += 2;
			return 0;
		case 'C':
		case 'p':
		case 'P':
			return -1;
		case 'Q': {
			const char *end;

			ps->p += 2;
			end = memmem(ps->s + ps->p, ps->n - ps->p, "\\E", 2);
			/* A group, so that a repetition after an empty \Q\E repeats nothing. */
			if (end == ps->s + ps->p)
				di_buf_str(ps->out, "(?:)");
			while (ps->p < (end ? (size_t)(end - ps->s) : ps->n)) {
				ps->atom = ps->out->len; /* a repetition takes the last one */
				di_emit_literal(ps, di_next_rune(ps));
			}
			if (end != NULL)
				ps->p += 2;
			return 0;
		}
		default:
			break;
		}
	}
	{
		struct di_ranges rs = {0};

		if (di_perl_class(ps, &rs)) {
			di_emit_class(ps, &rs, false);
			return 0;
		}
	}
	if (di_parse_escape(ps, &r) < 0)
		return -1;
	di_emit_literal(ps, r);
	return 0;
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

static int di_parse_concat(struct di_parser *ps)
{
	while (ps->p < ps->n && ps->s[ps->p] != '|' && ps->s[ps->p] != ')') {
		char rep;

		if (ps->s[ps->p] == '{' && di_is_counted_repeat(ps))
			return -1; /* counted repeats never come out of a glob */
		if (di_parse_atom(ps) < 0)
			return -1;
		if (ps->p >= ps->n)
			break;
		rep = ps->s[ps->p];
		if (rep != '*' && rep != '+' && rep != '?') {
			if (rep == '{' && di_is_counted_repeat(ps))
				return -1;
			continue;
		}
		ps->p++;
		if (ps->p < ps->n && ps->s[ps->p] == '?')
			ps->p++; /* non-greedy: the same language */
		if (ps->p < ps->n && (strchr("*+?", ps->s[ps->p]) != NULL ||
		                      (ps->s[ps->p] == '{' && di_is_counted_repeat(ps))))
			return -1; /* RE2 refuses stacked repetition such as a** */
		/* (?:atom)rep: PCRE2 will not repeat some atoms (\b, \A) that RE2 does. */
		di_buf_add(ps->out, "(?:)", 4);
		memmove(ps->out->s + ps->atom + 3, ps->out->s + ps->atom,
		        ps->out->len - 4 - ps->atom);
		memcpy(ps->out->s + ps->atom, "(?:", 3);
		ps->out->s[ps->out->len - 1] = ')';
		di_buf_add(ps->out, &rep, 1);
	}
	return 0;
}

static int di_parse_alt(struct di_parser *ps)
{
	if (di_parse_concat(ps) < 0)
		return -1;
	while (ps->p < ps->n && ps->s[ps->p] == '|') {
		ps->p++;
		di_buf_str(ps->out, "|");
		if (di_parse_concat(ps) < 0)
			return -1;
	}
	return 0;
}

/* regexp.Compile: NULL when RE2 would refuse the expression. */
static pcre2_code *di_regex_compile(const char *re, size_t len)
{
	struct di_buf out = {0};
	struct di_parser ps = {re, len, 0, &out, 0, 0};
	pcre2_code *code = NULL;
	PCRE2_SIZE erroff;
	int errcode;

	if (di_parse_alt(&ps) == 0 && ps.p == ps.n) {
		di_buf_add(&out, "", 0);
		code = pcre2_compile((PCRE2_SPTR)out.s, out.len, PCRE2_UTF | PCRE2_NEVER_UCP,
		                     &errcode, &erroff, NULL);
	}
	free(out.s);
	return code;
}

/*
 * Whether re matches s[0:n] (valid UTF-8): 1 or 0, -1 if PCRE2 gives up.  With
 * partial, s is only the start of the text and the answer is "might match": it
 * matches, or more text could make it match.  md is the caller's own (match data is
 * written to, so never shared between threads); the DFA's workspace is on the stack
 * unless the pattern needs more.
 */
static int di_regex_run(const pcre2_code *re, const char *s, size_t n, bool partial,
                        pcre2_match_data *md)
{
	int small[DI_DFA_WS], *ws = small;
	size_t wsn = DI_DFA_WS;
	uint32_t opts =
	    PCRE2_NO_UTF_CHECK | PCRE2_DFA_SHORTEST | (partial ? PCRE2_PARTIAL_HARD : 0);
	int rc;

	for (;;) {
		rc = pcre2_dfa_match(re, (PCRE2_SPTR)s, n, 0, opts, md, NULL, ws, wsn);
		if (rc != PCRE2_ERROR_DFA_WSSIZE || wsn >= DI_DFA_WS_MAX)
			break;
		wsn *= 4;
		ws = xrealloc(ws == small ? NULL : ws, wsn * sizeof(*ws));
	}
	if (ws != small)
		free(ws);
	if (rc >= 0 || rc == PCRE2_ERROR_PARTIAL)
		return 1;
	return rc == PCRE2_ERROR_NOMATCH ? 0 : -1;
}

/* Match data for one query (one pair of offsets is all DFA_SHORTEST needs). */
static pcre2_match_data *di_match_data(void)
{
	pcre2_match_data *md = pcre2_match_data_create(1, NULL);

	if (md == NULL)
		abort(); /* out of memory, as xmalloc handles it */
	return md;
}

/*
 * Go's regexp reads each byte of invalid UTF-8 as U+FFFD, and PCRE2 wants valid UTF-8:
 * NULL when s is valid (the usual case), else a copy with each such byte replaced by
 * U+FFFD, so that both engines see the same characters.
 */
static char *di_utf8_fix(const char *s, size_t n, size_t *outlen)
{
	const unsigned char *u = (const unsigned char *)s;
	struct di_buf b = {0};
	size_t i, w;

	for (i = 0; i < n; i += w) {
		w = 1;
		if (u[i] >= 0x80 && di_decode(u + i, n - i, &w) == DI_RUNE_ERR && w == 1)
			break;
	}
	if (i == n)
		return NULL;
	di_buf_add(&b, s, i);
	for (; i < n; i += w) {
		if (di_decode(u + i, n - i, &w) == DI_RUNE_ERR && w == 1)
			di_buf_add(&b, "\xEF\xBF\xBD", 3);
		else
			di_buf_add(&b, s + i, w);
	}
	*outlen = b.len;
	return b.s;
}

/* ---- patterns (patternmatcher.Pattern) ---- */

static bool di_should_escape(uint32_t c)
{
	return c < 0x80 && strchr(".+()|{}$", (int)c) != NULL && c != 0;
}

static void di_buf_rune(struct di_buf *b, uint32_t c)
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
	di_buf_add(b, u, n);
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

/* Pattern.compile: the match type, and for DI_REGEXP the expression (DI_BAD if refused). */
static void di_pattern_compile(struct di_pattern *pt)
{
	struct di_scan sc = {(const unsigned char *)pt->text, pt->len, 0};
	enum di_match_type type = DI_EXACT;
	struct di_buf re = {0};

	di_buf_add(&re, "^", 1);
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
						di_buf_add(&re, ".*", 2);
						type = DI_REGEXP;
					}
				} else {
					di_buf_add(&re, "(.*/)?", 6);
					type = DI_REGEXP;
				}
				if (i == 0)
					type = DI_SUFFIX;
			} else {
				di_buf_add(&re, "[^/]*", 5);
				type = DI_REGEXP;
			}
		} else if (ch == '?') {
			di_buf_add(&re, "[^/]", 4);
			type = DI_REGEXP;
		} else if (di_should_escape(ch)) {
			di_buf_add(&re, "\\", 1);
			di_buf_rune(&re, ch);
		} else if (ch == '\\') {
			if (di_scan_peek(&sc) >= 0) {
				di_buf_add(&re, "\\", 1);
				di_buf_rune(&re, di_scan_next(&sc));
				type = DI_REGEXP;
			} else {
				di_buf_add(&re, "\\", 1);
			}
		} else if (ch == '[' || ch == ']') {
			di_buf_rune(&re, ch);
			type = DI_REGEXP;
		} else {
			di_buf_rune(&re, ch);
		}
	}
	if (type == DI_REGEXP) {
		di_buf_add(&re, "$", 1);
		pt->re = di_regex_compile(re.s, re.len);
		if (pt->re == NULL)
			type = DI_BAD;
	}
	pt->type = type;
	free(re.s);
}

/* A path being judged, with its filepath.Dir, both also as the regexp reads them. */
struct di_query {
	const char *path, *parent;
	size_t len, plen;
	const char *upath, *uparent; /* valid UTF-8: path and parent, or fixed copies */
	size_t ulen, uplen;
	char *owned, *uowned[2];
	pcre2_match_data *md; /* this query's own, made on first use */
};

/*
 * Pattern.match on s[0:n], u[0:un] being the same text as the regexp reads it: -1 for
 * a pattern Docker cannot compile.
 */
static int di_pattern_match(const struct di_pattern *pt, const char *s, size_t n, const char *u,
                            size_t un, struct di_query *q)
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
		if (q->md == NULL)
			q->md = di_match_data();
		return di_regex_run(pt->re, u, un, false, q->md);
	case DI_BAD:
	default:
		return -1;
	}
}

/*
 * Whether the pattern matches the path or one of its parent directories, as in
 * MatchesOrParentMatches: an error on the path itself is reported, errors on the
 * parents count as no match.
 */
static int di_pattern_hits(const struct di_pattern *pt, struct di_query *q)
{
	int m = di_pattern_match(pt, q->path, q->len, q->upath, q->ulen, q);

	if (m != 0 || (q->plen == 1 && q->parent[0] == '.'))
		return m;
	/* The two forms of the parent have their '/' in the same order. */
	for (size_t i = 0, j = 0; i <= q->plen; i++) {
		if (i == q->plen || q->parent[i] == '/') {
			while (j < q->uplen && q->uparent[j] != '/')
				j++;
			if (di_pattern_match(pt, q->parent, i, q->uparent, j, q) == 1)
				return 1;
			j++;
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

static bool di_query_start(struct di_query *q, const char *path)
{
	q->uowned[0] = q->uowned[1] = NULL;
	q->md = NULL;
	if (!di_query_init(q, path))
		return false;
	q->uowned[0] = di_utf8_fix(q->path, q->len, &q->ulen);
	q->upath = q->uowned[0] ? q->uowned[0] : q->path;
	if (q->uowned[0] == NULL)
		q->ulen = q->len;
	q->uowned[1] = di_utf8_fix(q->parent, q->plen, &q->uplen);
	q->uparent = q->uowned[1] ? q->uowned[1] : q->parent;
	if (q->uowned[1] == NULL)
		q->uplen = q->plen;
	return true;
}

static void di_query_end(struct di_query *q)
{
	free(q->owned);
	free(q->uowned[0]);
	free(q->uowned[1]);
	pcre2_match_data_free(q->md);
}

/* ---- the public interface ---- */

void dockerignore_free(struct dockerignore *d)
{
	if (d == NULL)
		return;
	dockerignore_lines_free(d->lines);
	for (size_t i = 0; i < d->npats; i++) {
		free(d->pats[i].text);
		pcre2_code_free(d->pats[i].re);
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
	if (d->npats == 0 || !di_query_start(&q, path))
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
	di_query_end(&q);
	return rc;
}

/* Whether an exception pattern could match some path strictly below dir. */
static bool di_could_match_below(const struct di_pattern *pt, const char *dir)
{
	char *prefix = xasprintf("%s/", dir), *fixed;
	size_t pl = strlen(prefix), fl;
	bool may = true;
	pcre2_match_data *md;

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
		md = di_match_data();
		fixed = di_utf8_fix(prefix, pl, &fl);
		may = di_regex_run(pt->re, fixed ? fixed : prefix, fixed ? fl : pl, true, md) != 0;
		free(fixed);
		pcre2_match_data_free(md);
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

	if (!di_query_start(&q, dir))
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
	di_query_end(&q);
	return may;
}
