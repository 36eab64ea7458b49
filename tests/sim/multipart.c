/*
 * multipart/form-data parsing for the simulated builder.  The body is scanned for
 * "CRLF--boundary" delimiters with memmem, so file parts may hold any bytes; each
 * part's header block is parsed for Content-Disposition (form-data; name, filename)
 * and Content-Type.  Limits on the number of parts and on header sizes keep hostile
 * bodies cheap.  Errors say what is wrong, for the 400 answer.
 */
#include "multipart.h"

#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "util.h"

#define MULTIPART_MAX_PARTS        256
#define MULTIPART_MAX_HEADER_BYTES 16384
#define MULTIPART_MAX_BOUNDARY     200

/* A view of a header value being scanned. */
struct multipart_scan {
	const char *p;
	const char *end;
};

static void multipart_skip_ws(struct multipart_scan *s)
{
	while (s->p < s->end && (*s->p == ' ' || *s->p == '\t'))
		s->p++;
}

static bool multipart_is_tspecial(char c)
{
	return c == ';' || c == '=' || c == '"' || c == ' ' || c == '\t' || c == ',';
}

/* Reads a token or a quoted string into a new string; NULL when malformed. */
static char *multipart_read_value(struct multipart_scan *s)
{
	if (s->p < s->end && *s->p == '"') {
		size_t cap = (size_t)(s->end - s->p) + 1, n = 0;
		char *out = xmalloc(cap);
		s->p++;
		while (s->p < s->end && *s->p != '"') {
			if (*s->p == '\\' && s->p + 1 < s->end)
				s->p++;
			out[n++] = *s->p++;
		}
		if (s->p >= s->end) {
			free(out);
			return NULL;
		}
		s->p++;
		out[n] = '\0';
		return out;
	}
	const char *start = s->p;
	while (s->p < s->end && !multipart_is_tspecial(*s->p) && (unsigned char)*s->p >= 0x20)
		s->p++;
	if (s->p == start)
		return NULL;
	return xstrndup(start, (size_t)(s->p - start));
}

/*
 * Scans "type; a=b; c="d"" for the parameter named want.  Returns 1 with *out set,
 * 0 when absent, -1 when the value is malformed.  *type receives the leading value
 * when type is not NULL.
 */
static int multipart_header_param(const char *value, size_t len, const char *want, char **type,
                                  char **out)
{
	struct multipart_scan s = {value, value + len};
	int found = 0;
	*out = NULL;
	multipart_skip_ws(&s);
	const char *tstart = s.p;
	while (s.p < s.end && *s.p != ';')
		s.p++;
	const char *tend = s.p;
	while (tend > tstart && (tend[-1] == ' ' || tend[-1] == '\t'))
		tend--;
	if (type != NULL)
		*type = xstrndup(tstart, (size_t)(tend - tstart));
	while (s.p < s.end) {
		s.p++; /* the ';' */
		multipart_skip_ws(&s);
		if (s.p >= s.end)
			break;
		const char *nstart = s.p;
		while (s.p < s.end && *s.p != '=' && *s.p != ';' && *s.p != ' ' && *s.p != '\t')
			s.p++;
		size_t nlen = (size_t)(s.p - nstart);
		multipart_skip_ws(&s);
		if (nlen == 0 || s.p >= s.end || *s.p != '=')
			goto malformed;
		s.p++;
		multipart_skip_ws(&s);
		char *v = multipart_read_value(&s);
		if (v == NULL)
			goto malformed;
		if (!found && strlen(want) == nlen && strncasecmp(nstart, want, nlen) == 0) {
			*out = v;
			found = 1;
		} else {
			free(v);
		}
		multipart_skip_ws(&s);
		if (s.p < s.end && *s.p != ';')
			goto malformed;
	}
	return found;
malformed:
	free(*out);
	*out = NULL;
	if (type != NULL) {
		free(*type);
		*type = NULL;
	}
	return -1;
}

int multipart_boundary(const char *content_type, char **boundary, char **err)
{
	char *type = NULL, *b = NULL;
	int rc = -1;
	*boundary = NULL;
	*err = NULL;
	if (content_type == NULL) {
		*err = xstrdup("missing Content-Type: expected multipart/form-data");
		goto out;
	}
	int found =
	    multipart_header_param(content_type, strlen(content_type), "boundary", &type, &b);
	if (found < 0) {
		*err = xstrdup("malformed Content-Type header");
		goto out;
	}
	if (strcasecmp(type, "multipart/form-data") != 0) {
		*err = xasprintf("Content-Type is %s, expected multipart/form-data", type);
		goto out;
	}
	if (found == 0 || b[0] == '\0') {
		*err = xstrdup("Content-Type multipart/form-data has no boundary parameter");
		goto out;
	}
	if (strlen(b) > MULTIPART_MAX_BOUNDARY) {
		*err = xstrdup("multipart boundary is too long");
		goto out;
	}
	*boundary = b;
	b = NULL;
	rc = 0;
out:
	free(type);
	free(b);
	return rc;
}

/* Finds "\r\n" in [p, end); NULL when absent. */
static const char *multipart_find_crlf(const char *p, const char *end)
{
	if (end - p < 2)
		return NULL;
	return memmem(p, (size_t)(end - p), "\r\n", 2);
}

static void multipart_part_clear(struct multipart_part *part)
{
	free(part->name);
	free(part->filename);
	free(part->content_type);
}

/* Parses one part's header block [p, end) (without the final blank line). */
static int multipart_parse_headers(const char *p, const char *end, struct multipart_part *part,
                                   size_t index, char **err)
{
	bool have_disposition = false;
	while (p < end) {
		const char *eol = multipart_find_crlf(p, end + 2);
		if (eol == NULL || eol > end)
			eol = end;
		const char *colon = memchr(p, ':', (size_t)(eol - p));
		if (colon == NULL || colon == p || memchr(p, '\0', (size_t)(eol - p)) != NULL) {
			*err = xasprintf("part %zu: malformed header line", index + 1);
			return -1;
		}
		size_t nlen = (size_t)(colon - p);
		const char *v = colon + 1;
		size_t vlen = (size_t)(eol - v);
		if (nlen == 19 && strncasecmp(p, "Content-Disposition", nlen) == 0) {
			char *type = NULL, *name = NULL, *filename = NULL;
			if (have_disposition) {
				*err = xasprintf("part %zu: two Content-Disposition headers",
				                 index + 1);
				return -1;
			}
			have_disposition = true;
			int rn = multipart_header_param(v, vlen, "name", &type, &name);
			int rf = rn < 0
			             ? -1
			             : multipart_header_param(v, vlen, "filename", NULL, &filename);
			if (rn < 0 || rf < 0) {
				*err =
				    xasprintf("part %zu: malformed Content-Disposition", index + 1);
				free(type);
				free(name);
				free(filename);
				return -1;
			}
			bool form_data = strcasecmp(type, "form-data") == 0;
			free(type);
			if (!form_data) {
				*err = xasprintf("part %zu: Content-Disposition is not form-data",
				                 index + 1);
				free(name);
				free(filename);
				return -1;
			}
			if (rn == 0) {
				*err = xasprintf("part %zu: Content-Disposition has no name",
				                 index + 1);
				free(filename);
				return -1;
			}
			part->name = name;
			part->filename = filename;
		} else if (nlen == 12 && strncasecmp(p, "Content-Type", nlen) == 0) {
			while (vlen > 0 && (*v == ' ' || *v == '\t')) {
				v++;
				vlen--;
			}
			while (vlen > 0 && (v[vlen - 1] == ' ' || v[vlen - 1] == '\t'))
				vlen--;
			free(part->content_type);
			part->content_type = xstrndup(v, vlen);
		}
		p = eol + 2;
	}
	if (!have_disposition) {
		*err = xasprintf("part %zu has no Content-Disposition header", index + 1);
		return -1;
	}
	return 0;
}

int multipart_parse(const char *body, size_t len, const char *boundary,
                    struct multipart_form **form, char **err)
{
	struct multipart_form *f = xcalloc(1, sizeof(*f));
	const char *end = body + len;
	char *delim = xasprintf("\r\n--%s", boundary);
	size_t dlen = strlen(delim);
	const char *p;
	int rc = -1;
	*form = NULL;
	*err = NULL;

	/* The first delimiter may open the body, without the CRLF before it. */
	if (len >= dlen - 2 && memcmp(body, delim + 2, dlen - 2) == 0) {
		p = body + dlen - 2;
	} else {
		const char *d = memmem(body, len, delim, dlen);
		if (d == NULL) {
			*err = xstrdup("malformed multipart body: boundary not found");
			goto out;
		}
		p = d + dlen;
	}
	for (;;) {
		if (end - p >= 2 && p[0] == '-' && p[1] == '-')
			break;
		while (p < end && (*p == ' ' || *p == '\t'))
			p++;
		if (end - p < 2 || p[0] != '\r' || p[1] != '\n') {
			*err = xstrdup(p >= end ? "malformed multipart body: it ends before the "
			                          "closing boundary"
			                        : "malformed multipart body: boundary line not "
			                          "followed by CRLF");
			goto out;
		}
		p += 2;
		if (f->nparts == MULTIPART_MAX_PARTS) {
			*err = xasprintf("malformed multipart body: more than %d parts",
			                 MULTIPART_MAX_PARTS);
			goto out;
		}
		const char *hend;
		if (end - p >= 2 && p[0] == '\r' && p[1] == '\n') {
			hend = p;
		} else {
			size_t window = (size_t)(end - p);
			if (window > MULTIPART_MAX_HEADER_BYTES)
				window = MULTIPART_MAX_HEADER_BYTES;
			hend = memmem(p, window, "\r\n\r\n", 4);
			if (hend == NULL) {
				*err = xasprintf("malformed multipart body: part %zu headers are "
				                 "unterminated or too long",
				                 f->nparts + 1);
				goto out;
			}
		}
		f->parts = xrealloc(f->parts, (f->nparts + 1) * sizeof(*f->parts));
		struct multipart_part *part = &f->parts[f->nparts];
		memset(part, 0, sizeof(*part));
		f->nparts++;
		if (multipart_parse_headers(p, hend, part, f->nparts - 1, err) < 0) {
			char *m = xasprintf("malformed multipart body: %s", *err);
			free(*err);
			*err = m;
			goto out;
		}
		const char *data = hend == p ? p + 2 : hend + 4;
		const char *next = memmem(data, (size_t)(end - data), delim, dlen);
		if (next == NULL) {
			*err = xasprintf("malformed multipart body: part \"%s\" is not closed by a "
			                 "boundary",
			                 part->name);
			goto out;
		}
		part->data = data;
		part->len = (size_t)(next - data);
		p = next + dlen;
	}
	*form = f;
	f = NULL;
	rc = 0;
out:
	free(delim);
	multipart_form_free(f);
	return rc;
}

const struct multipart_part *multipart_form_get(const struct multipart_form *form, const char *name)
{
	for (size_t i = 0; i < form->nparts; i++)
		if (strcmp(form->parts[i].name, name) == 0)
			return &form->parts[i];
	return NULL;
}

size_t multipart_form_count(const struct multipart_form *form, const char *name)
{
	size_t n = 0;
	for (size_t i = 0; i < form->nparts; i++)
		if (strcmp(form->parts[i].name, name) == 0)
			n++;
	return n;
}

void multipart_form_free(struct multipart_form *form)
{
	if (form == NULL)
		return;
	for (size_t i = 0; i < form->nparts; i++)
		multipart_part_clear(&form->parts[i]);
	free(form->parts);
	free(form);
}
