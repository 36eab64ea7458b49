/*
 * libFuzzer target for snapbuild-sim's multipart/form-data parser.  The input's
 * first line is the Content-Type header, the rest the body.  Beyond "does not
 * crash", it checks the parser's promises: every part's data lies inside the body
 * and holds no delimiter, and a form rebuilt from the parts parses back to the same
 * parts (names, filenames, content types, data).
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "multipart.h"
#include "util.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void fuzz_put(char **buf, size_t *len, const void *p, size_t n)
{
	*buf = xrealloc(*buf, *len + n + 1);
	memcpy(*buf + *len, p, n);
	*len += n;
}

static void fuzz_put_quoted(char **buf, size_t *len, const char *s)
{
	fuzz_put(buf, len, "\"", 1);
	for (; *s != '\0'; s++) {
		if (*s == '"' || *s == '\\')
			fuzz_put(buf, len, "\\", 1);
		fuzz_put(buf, len, s, 1);
	}
	fuzz_put(buf, len, "\"", 1);
}

/* The form written out again with CRLF framing. */
static char *fuzz_rebuild(const struct multipart_form *form, const char *boundary, size_t *len)
{
	char *buf = NULL;
	*len = 0;
	for (size_t i = 0; i < form->nparts; i++) {
		const struct multipart_part *p = &form->parts[i];
		fuzz_put(&buf, len, "--", 2);
		fuzz_put(&buf, len, boundary, strlen(boundary));
		fuzz_put(&buf, len, "\r\nContent-Disposition: form-data; name=", 39);
		fuzz_put_quoted(&buf, len, p->name);
		if (p->filename != NULL) {
			fuzz_put(&buf, len, "; filename=", 11);
			fuzz_put_quoted(&buf, len, p->filename);
		}
		if (p->content_type != NULL) {
			fuzz_put(&buf, len, "\r\nContent-Type: ", 16);
			fuzz_put(&buf, len, p->content_type, strlen(p->content_type));
		}
		fuzz_put(&buf, len, "\r\n\r\n", 4);
		fuzz_put(&buf, len, p->data, p->len);
		fuzz_put(&buf, len, "\r\n", 2);
	}
	fuzz_put(&buf, len, "--", 2);
	fuzz_put(&buf, len, boundary, strlen(boundary));
	fuzz_put(&buf, len, "--\r\n", 4);
	return buf;
}

static int fuzz_same(const char *a, const char *b)
{
	return (a == NULL && b == NULL) || (a != NULL && b != NULL && strcmp(a, b) == 0);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const uint8_t *nl = memchr(data, '\n', size);
	if (nl == NULL)
		return 0;
	char *ctype = xstrndup((const char *)data, (size_t)(nl - data));
	size_t blen = size - (size_t)(nl - data) - 1;
	/* A copy of exactly the body's size, so reads past it are caught. */
	char *body = xmalloc(blen);
	memcpy(body, nl + 1, blen);
	char *boundary = NULL, *err = NULL, *again = NULL;
	struct multipart_form *form = NULL, *form2 = NULL;
	if (multipart_boundary(ctype, &boundary, &err) < 0)
		goto out;
	if (multipart_parse(body, blen, boundary, &form, &err) < 0)
		goto out;
	char *delim = xasprintf("\r\n--%s", boundary);
	for (size_t i = 0; i < form->nparts; i++) {
		const struct multipart_part *p = &form->parts[i];
		if (p->name == NULL || p->data < body || p->data + p->len > body + blen)
			abort();
		if (memmem(p->data, p->len, delim, strlen(delim)) != NULL)
			abort();
	}
	free(delim);
	size_t len2;
	char *err2 = NULL;
	/*
	 * Round trips are only promised for RFC 2046 boundaries, and for names that can
	 * be written back in a header line (no CR or LF).
	 */
	if (boundary[strspn(boundary, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
	                              "0123456789'()+_,-./:=? ")] != '\0')
		goto out;
	for (size_t i = 0; i < form->nparts; i++) {
		const struct multipart_part *p = &form->parts[i];
		if (strpbrk(p->name, "\r\n") || (p->filename && strpbrk(p->filename, "\r\n")) ||
		    (p->content_type && strpbrk(p->content_type, "\r\n")))
			goto out;
	}
	again = fuzz_rebuild(form, boundary, &len2);
	if (multipart_parse(again, len2, boundary, &form2, &err2) < 0)
		abort();
	if (form2->nparts != form->nparts)
		abort();
	for (size_t i = 0; i < form->nparts; i++) {
		const struct multipart_part *a = &form->parts[i], *b = &form2->parts[i];
		if (strcmp(a->name, b->name) != 0 || !fuzz_same(a->filename, b->filename) ||
		    !fuzz_same(a->content_type, b->content_type) || a->len != b->len ||
		    memcmp(a->data, b->data, a->len) != 0)
			abort();
	}
out:
	multipart_form_free(form);
	multipart_form_free(form2);
	free(again);
	free(boundary);
	free(err);
	free(body);
	free(ctype);
	return 0;
}
