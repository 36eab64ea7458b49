/*
 * A small multipart/form-data parser (RFC 7578 over RFC 2046) for the simulator's
 * POST /builds.  It works on a body held in memory and hands back parts whose data
 * points into that body, so binary file content is never copied.  Anything malformed
 * is a runtime error with a message fit for a 400 answer; nothing here aborts on input.
 */
#ifndef SNAPBUILD_SIM_MULTIPART_H
#define SNAPBUILD_SIM_MULTIPART_H

#include <stddef.h>

struct multipart_part {
	char *name;         /* the Content-Disposition name parameter */
	char *filename;     /* NULL when the part is not a file */
	char *content_type; /* NULL when the part has no Content-Type */
	const char *data;   /* points into the parsed body */
	size_t len;
};

struct multipart_form {
	struct multipart_part *parts;
	size_t nparts;
};

/*
 * Extracts the boundary from a Content-Type header value.  Returns 0 and a newly
 * allocated boundary, or -1 and a newly allocated message.
 */
int multipart_boundary(const char *content_type, char **boundary, char **err);

/*
 * Parses body (len bytes) delimited by boundary.  Returns 0 and a new form, or -1
 * and a newly allocated message.  The form points into body: keep body alive.
 */
int multipart_parse(const char *body, size_t len, const char *boundary,
                    struct multipart_form **form, char **err);

/* The first part named name, or NULL. */
const struct multipart_part *multipart_form_get(const struct multipart_form *form,
                                                const char *name);

/* How many parts are named name. */
size_t multipart_form_count(const struct multipart_form *form, const char *name);

void multipart_form_free(struct multipart_form *form);

#endif
