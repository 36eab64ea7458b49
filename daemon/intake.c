/*
 * Taking in a client's packed context: copy, hash and check in one pass (intake.h).
 */
#include "intake.h"

#include <errno.h>
#include <fcntl.h>
#include <locale.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <archive.h>
#include <archive_entry.h>
#include <openssl/evp.h>

#include "util.h"

#define INTAKE_READ_BUF (1024 * 1024)
#define INTAKE_MAX_HOPS 8
#define INTAKE_HINT_CLIENT                                                                         \
	"pack the context with `snapbuild create`, libsnapbuild or the Python module; "            \
	"they send a well-formed archive"

/* Where the compressed bytes come from: the client's descriptor, or memory. */
struct intake_src {
	int fd;
	uint64_t off;
	const unsigned char *mem;
	size_t memlen;
	unsigned char *buf;
	int out_fd;      /* the spool copy, or -1 */
	EVP_MD_CTX *md;  /* hash of what was read, or NULL */
	uint64_t max;    /* cap on the compressed bytes */
	bool over_cap;   /* stopped at max */
	int read_errno;  /* reading the client's descriptor failed */
	int write_errno; /* writing the spool failed */
	volatile int *cancel;
	bool cancelled;
};

/* What one pass found. */
struct intake_check {
	const char *dockerfile; /* cleaned */
	uint64_t max;
	uint64_t files, bytes;
	int df_type;     /* 0 not seen, 'f' regular, 'l' symlink, 'o' other */
	char *df_target; /* symlink target of the Dockerfile */
	char *error;
};

/* The next block of compressed bytes (copied and hashed on the way); 0 at the end, -1
 * with one of the src's flags set. */
static ssize_t intake_next(struct intake_src *s, const void **out)
{
	ssize_t n;

	if (s->cancel != NULL && *s->cancel) {
		s->cancelled = true;
		return -1;
	}
	if (s->mem != NULL) {
		n = (ssize_t)(s->memlen - s->off);
		*out = s->mem + s->off;
		s->off += (uint64_t)n;
		return n;
	}
	do
		n = pread(s->fd, s->buf, INTAKE_READ_BUF, (off_t)s->off);
	while (n < 0 && errno == EINTR);
	if (n < 0) {
		s->read_errno = errno;
		return -1;
	}
	if (s->off + (uint64_t)n > s->max) {
		s->over_cap = true;
		return -1;
	}
	s->off += (uint64_t)n;
	if (s->md != NULL)
		EVP_DigestUpdate(s->md, s->buf, (size_t)n);
	for (ssize_t done = 0; s->out_fd >= 0 && done < n;) {
		ssize_t w = write(s->out_fd, s->buf + done, (size_t)(n - done));
		if (w < 0 && errno == EINTR)
			continue;
		if (w < 0) {
			s->write_errno = errno;
			return -1;
		}
		done += w;
	}
	*out = s->buf;
	return n;
}

static la_ssize_t intake_read_cb(struct archive *a, void *p, const void **out)
{
	struct intake_src *s = p;
	ssize_t n = intake_next(s, out);

	if (n < 0)
		archive_set_error(a, EIO, "%s",
		                  s->cancelled    ? "cancelled"
		                  : s->over_cap   ? "the archive is larger than the limit"
		                  : s->read_errno ? strerror(s->read_errno)
		                                  : strerror(s->write_errno));
	return n;
}

char *intake_clean_path(const char *path)
{
	size_t len = strlen(path);
	char *out = xmalloc(len + 1), *o = out;
	const char *s = path;

	if (*path == '/' || *path == '\0')
		goto bad;
	while (*s) {
		const char *e = strchrnul(s, '/');
		size_t n = (size_t)(e - s);
		if (n == 2 && s[0] == '.' && s[1] == '.')
			goto bad;
		if (n > 0 && !(n == 1 && s[0] == '.')) {
			if (o != out)
				*o++ = '/';
			memcpy(o, s, n);
			o += n;
		}
		s = *e ? e + 1 : e;
	}
	*o = '\0';
	if (o == out)
		goto bad;
	return out;
bad:
	free(out);
	return NULL;
}

/* dir/target resolved lexically inside the archive (".." stops at its root), as a
 * builder resolves a symlink in scope. */
static char *intake_resolve_link(const char *link_path, const char *target)
{
	const char *slash = strrchr(link_path, '/');
	char *joined = target[0] == '/' || slash == NULL
	                   ? xstrdup(target)
	                   : xasprintf("%.*s/%s", (int)(slash - link_path), link_path, target);
	char **parts = xcalloc(strlen(joined) / 2 + 2, sizeof(char *));
	size_t n = 0;
	char *save = NULL;
	for (char *t = strtok_r(joined, "/", &save); t; t = strtok_r(NULL, "/", &save)) {
		if (strcmp(t, ".") == 0)
			continue;
		if (strcmp(t, "..") == 0) {
			if (n > 0)
				n--;
			continue;
		}
		parts[n++] = t;
	}
	char *out = NULL;
	size_t len = 0;
	for (size_t i = 0; i < n; i++)
		len += strlen(parts[i]) + 1;
	if (len > 0) {
		out = xmalloc(len);
		out[0] = '\0';
		for (size_t i = 0; i < n; i++) {
			if (i)
				strcat(out, "/");
			strcat(out, parts[i]);
		}
	}
	free(parts);
	free(joined);
	return out;
}

static int intake_fail(struct intake_check *c, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static int intake_fail(struct intake_check *c, const char *fmt, ...)
{
	va_list ap;
	if (c->error == NULL) {
		va_start(ap, fmt);
		if (vasprintf(&c->error, fmt, ap) < 0)
			abort();
		va_end(ap);
	}
	return -1;
}

/* A name as it may be shown: printable ASCII kept, anything else escaped. */
static char *intake_shown(const char *name)
{
	size_t len = strlen(name), n = len > 200 ? 200 : len;
	char *out = xmalloc(n * 4 + 4), *o = out;
	for (size_t i = 0; i < n; i++) {
		unsigned char ch = (unsigned char)name[i];
		if (ch >= 0x20 && ch < 0x7f && ch != '\\')
			*o++ = (char)ch;
		else
			o += sprintf(o, "\\x%02x", ch);
	}
	if (n < len)
		o += sprintf(o, "...");
	*o = '\0';
	return out;
}

static int intake_entry(struct intake_check *c, struct archive *a, struct archive_entry *e)
{
	const char *raw = archive_entry_pathname(e);
	mode_t type = archive_entry_filetype(e);
	char *name, *shown;
	int rc = 0;

	if (raw == NULL)
		return intake_fail(c, "a member's name cannot be read");
	shown = intake_shown(raw);
	name = intake_clean_path(raw);
	if (name == NULL && strcmp(raw, ".") != 0 && strcmp(raw, "./") != 0) {
		rc = intake_fail(c, "member '%s' is absolute or leaves the context (..)", shown);
		goto out;
	}
	if (archive_entry_hardlink(e) != NULL) {
		char *target = intake_clean_path(archive_entry_hardlink(e));
		if (target == NULL) {
			char *t = intake_shown(archive_entry_hardlink(e));
			rc = intake_fail(c, "hard link '%s' points outside the context ('%s')",
			                 shown, t);
			free(t);
			goto out;
		}
		free(target);
	} else if (type != AE_IFREG && type != AE_IFDIR && type != AE_IFLNK) {
		rc = intake_fail(c,
		                 "member '%s' is a %s; a context holds only files, "
		                 "directories and symlinks",
		                 shown,
		                 type == AE_IFCHR || type == AE_IFBLK ? "device node"
		                 : type == AE_IFIFO                   ? "FIFO"
		                 : type == AE_IFSOCK                  ? "socket"
		                                                      : "special file");
		goto out;
	}
	if (archive_entry_size_is_set(e) && archive_entry_size(e) < 0) {
		rc = intake_fail(c, "member '%s' has a negative size", shown);
		goto out;
	}
	uint64_t size = (uint64_t)archive_entry_size(e);
	if (size > c->max || c->bytes + size > c->max) {
		rc = intake_fail(c, "the context unpacks to more than %llu bytes (at '%s')",
		                 (unsigned long long)c->max, shown);
		goto out;
	}
	c->bytes += size;
	if (type == AE_IFREG || type == AE_IFLNK)
		c->files++;
	if (name != NULL && strcmp(name, c->dockerfile) == 0) {
		if (archive_entry_hardlink(e) == NULL && type == AE_IFREG) {
			c->df_type = 'f';
		} else if (type == AE_IFLNK && archive_entry_symlink(e) != NULL) {
			c->df_type = 'l';
			free(c->df_target);
			c->df_target = xstrdup(archive_entry_symlink(e));
		} else {
			c->df_type = 'o';
		}
	}
	/* Read the data through: checks the compression and counts what it unpacks to. */
	const void *buf;
	size_t len;
	la_int64_t off;
	int r;
	while ((r = archive_read_data_block(a, &buf, &len, &off)) == ARCHIVE_OK)
		;
	if (r != ARCHIVE_EOF)
		rc = intake_fail(c, "the archive is damaged at '%s': %s", shown,
		                 archive_error_string(a));
out:
	free(name);
	free(shown);
	return rc;
}

/* One pass over the archive from src; fills c. 0 ok, -1 with c->error. */
static int intake_pass(struct intake_src *src, struct intake_check *c)
{
	struct archive *a = archive_read_new();
	struct archive_entry *e;
	bool first = true;
	int r, rc = 0;

	if (a == NULL)
		abort();
	archive_read_support_filter_gzip(a);
	archive_read_support_format_tar(a);
	if (archive_read_open(a, src, NULL, intake_read_cb, NULL) != ARCHIVE_OK) {
		rc = intake_fail(c, "the context is not a gzip-compressed tar archive: %s",
		                 archive_error_string(a));
		goto out;
	}
	for (;;) {
		r = archive_read_next_header(a, &e);
		if (r == ARCHIVE_EOF)
			break;
		if (r < ARCHIVE_WARN) {
			rc = intake_fail(c, "the context is not a well-formed tar.gz archive: %s",
			                 archive_error_string(a));
			goto out;
		}
		if (first && archive_filter_code(a, 0) != ARCHIVE_FILTER_GZIP) {
			rc = intake_fail(c, "the context archive is not gzip-compressed");
			goto out;
		}
		first = false;
		if (intake_entry(c, a, e) < 0) {
			rc = -1;
			goto out;
		}
		/* Headers and padding count too: a stream of empty members is no way around
		 * the cap. */
		if ((uint64_t)archive_filter_bytes(a, 0) > c->max + c->max / 8 + (1 << 20)) {
			rc = intake_fail(c, "the context unpacks to more than %llu bytes",
			                 (unsigned long long)c->max);
			goto out;
		}
	}
	if (first && archive_filter_code(a, 0) != ARCHIVE_FILTER_GZIP)
		rc = intake_fail(c, "the context archive is not gzip-compressed");
out:
	archive_read_free(a);
	return rc;
}

/* Whether the Dockerfile (followed through symlinks) is a regular file in the archive. */
/* again: a source of its own over the same bytes (never the one that copies and hashes). */
static int intake_check_dockerfile(struct intake_check *c, struct intake_src *again)
{
	char *path = NULL;
	for (int hop = 0; hop < INTAKE_MAX_HOPS; hop++) {
		if (c->df_type == 'f') {
			free(path);
			return 0;
		}
		if (c->df_type == 0 || c->df_type == 'o' || c->df_target == NULL)
			break;
		char *next = intake_resolve_link(path ? path : c->dockerfile, c->df_target);
		free(path);
		path = next;
		if (path == NULL)
			break;
		struct intake_check sub = {.dockerfile = path, .max = c->max};
		again->off = 0;
		if (intake_pass(again, &sub) < 0) {
			free(sub.error);
			free(sub.df_target);
			break;
		}
		free(c->df_target);
		c->df_type = sub.df_type;
		c->df_target = sub.df_target;
	}
	free(path);
	return intake_fail(c,
	                   "no Dockerfile '%s' in the context archive (it must be a regular "
	                   "file in it)",
	                   c->dockerfile);
}

int intake_check_buffer(const void *buf, size_t len, const char *dockerfile, uint64_t max_bytes,
                        char **err)
{
	struct intake_src src = {.fd = -1, .mem = buf, .memlen = len, .out_fd = -1};
	char *df = intake_clean_path(dockerfile ? dockerfile : "Dockerfile");
	struct intake_check c = {.dockerfile = df, .max = max_bytes};
	int rc = -1;

	*err = NULL;
	src.max = max_bytes;
	if (df == NULL) {
		*err = xstrdup("the Dockerfile path must be relative, inside the context");
		return -1;
	}
	if (len > max_bytes)
		intake_fail(&c, "the archive is larger than %llu bytes",
		            (unsigned long long)max_bytes);
	else if (intake_pass(&src, &c) == 0 && intake_check_dockerfile(&c, &src) == 0)
		rc = 0;
	if (rc < 0)
		*err = c.error ? c.error : xstrdup("invalid archive");
	else
		free(c.error);
	free(c.df_target);
	free(df);
	return rc;
}

static void intake_set(struct intake_result *r, enum intake_status st, char *error,
                       const char *hint)
{
	r->status = st;
	r->error = error;
	r->hint = hint ? xstrdup(hint) : NULL;
}

static void hex(const unsigned char *d, unsigned n, char *out)
{
	for (unsigned i = 0; i < n; i++)
		sprintf(out + 2 * i, "%02x", d[i]);
}

/* Renames tmp to <spool>/<sha>.tar.gz durably; 0 or -1 with errno. */
static int intake_commit(int fd, const char *spool_dir, const char *tmp, const char *sha,
                         char **final)
{
	*final = xasprintf("%s/%s.tar.gz", spool_dir, sha);
	if (fsync(fd) < 0 || rename(tmp, *final) < 0)
		return -1;
	int dfd = open(spool_dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (dfd < 0 || fsync(dfd) < 0) {
		int e = errno;
		if (dfd >= 0)
			close(dfd);
		errno = e;
		return -1;
	}
	close(dfd);
	return 0;
}

void intake_run(const struct intake_options *o, struct intake_result *r)
{
	struct intake_src src = {
	    .fd = o->fd, .out_fd = -1, .max = o->max_bytes, .cancel = o->cancel};
	char *df = intake_clean_path(o->dockerfile ? o->dockerfile : "Dockerfile");
	struct intake_check c = {.dockerfile = df, .max = o->max_bytes};
	char *tmp = xasprintf("%s/.intake-XXXXXX", o->spool_dir), *final = NULL;
	unsigned char digest[EVP_MAX_MD_SIZE];
	unsigned dlen = 0;
	bool keep = false;
	/* Names are bytes; a UTF-8 LC_CTYPE lets libarchive hand them over as they are. */
	locale_t utf8 = newlocale(LC_CTYPE_MASK, "C.UTF-8", (locale_t)0);
	locale_t old = utf8 != (locale_t)0 ? uselocale(utf8) : (locale_t)0;

	memset(r, 0, sizeof(*r));
	if (df == NULL) {
		intake_set(r, INTAKE_INVALID,
		           xstrdup("the Dockerfile path must be relative, inside the context"),
		           "give --dockerfile relative to the context");
		goto out;
	}
	if (o->declared_bytes > o->max_bytes) {
		intake_set(
		    r, INTAKE_INVALID,
		    xasprintf("the context archive is %llu bytes, over the daemon's limit of "
		              "%llu (max_context_bytes)",
		              (unsigned long long)o->declared_bytes,
		              (unsigned long long)o->max_bytes),
		    "leave large files out with .dockerignore, or ask the daemon's "
		    "administrator to raise max_context_bytes");
		goto out;
	}
	src.out_fd = mkostemp(tmp, O_CLOEXEC);
	if (src.out_fd < 0) {
		intake_set(r, INTAKE_ERROR,
		           xasprintf("cannot create a spool file in %s: %s", o->spool_dir,
		                     strerror(errno)),
		           NULL);
		goto out;
	}
	src.buf = xmalloc(INTAKE_READ_BUF);
	src.md = EVP_MD_CTX_new();
	if (src.md == NULL || EVP_DigestInit_ex(src.md, EVP_sha256(), NULL) != 1)
		abort();

	int pass = intake_pass(&src, &c);
	if (src.cancelled) {
		intake_set(r, INTAKE_CANCELLED, xstrdup("cancelled"), NULL);
		goto out;
	}
	if (src.write_errno) {
		intake_set(r, INTAKE_ERROR,
		           xasprintf("cannot write the spool in %s: %s", o->spool_dir,
		                     strerror(src.write_errno)),
		           "free space in the daemon's state directory");
		goto out;
	}
	if (src.read_errno) {
		intake_set(
		    r, INTAKE_INVALID,
		    xasprintf("cannot read the archive descriptor: %s", strerror(src.read_errno)),
		    "pass the archive as a regular file opened for reading");
		goto out;
	}
	if (src.over_cap) {
		intake_set(r, INTAKE_INVALID,
		           xasprintf("the context archive is over the daemon's limit of %llu bytes "
		                     "(max_context_bytes)",
		                     (unsigned long long)o->max_bytes),
		           "leave large files out with .dockerignore, or ask the daemon's "
		           "administrator to raise max_context_bytes");
		goto out;
	}
	if (pass < 0) {
		intake_set(r, INTAKE_INVALID, c.error, INTAKE_HINT_CLIENT);
		c.error = NULL;
		goto out;
	}
	/* Whatever follows the tar's end is copied too: the digest covers every byte. */
	for (;;) {
		const void *b;
		if (intake_next(&src, &b) <= 0)
			break;
	}
	if (src.read_errno || src.write_errno || src.over_cap) {
		intake_set(r, src.write_errno ? INTAKE_ERROR : INTAKE_INVALID,
		           xasprintf("cannot copy the archive: %s",
		                     src.over_cap ? "over max_context_bytes"
		                                  : strerror(src.read_errno ? src.read_errno
		                                                            : src.write_errno)),
		           NULL);
		goto out;
	}
	EVP_DigestFinal_ex(src.md, digest, &dlen);
	hex(digest, dlen, r->sha256);
	if (src.off != o->declared_bytes || strcmp(r->sha256, o->declared_sha256) != 0) {
		intake_set(
		    r, INTAKE_INVALID,
		    xasprintf("the archive received (%llu bytes, sha256 %.12s) is not the one "
		              "declared (%llu bytes, sha256 %.12s): it was cut short or "
		              "changed while the daemon read it",
		              (unsigned long long)src.off, r->sha256,
		              (unsigned long long)o->declared_bytes, o->declared_sha256),
		    "write the whole archive before submitting, and leave it alone until "
		    "build.submit answers");
		goto out;
	}
	/* A symlinked Dockerfile is followed over the spool copy, read afresh. */
	struct intake_src again = {.fd = src.out_fd,
	                           .buf = src.buf,
	                           .out_fd = -1,
	                           .max = o->max_bytes,
	                           .cancel = o->cancel};
	if (intake_check_dockerfile(&c, &again) < 0) {
		intake_set(r, INTAKE_INVALID, c.error,
		           "give --dockerfile relative to the context; the client always packs "
		           "the Dockerfile, even when .dockerignore excludes it");
		c.error = NULL;
		goto out;
	}
	if (intake_commit(src.out_fd, o->spool_dir, tmp, r->sha256, &final) < 0) {
		intake_set(
		    r, INTAKE_ERROR,
		    xasprintf("cannot store the archive in %s: %s", o->spool_dir, strerror(errno)),
		    "free space in the daemon's state directory");
		goto out;
	}
	keep = true;
	r->archive_path = final;
	final = NULL;
	r->archive_bytes = src.off;
	r->file_count = c.files;
	r->total_bytes = c.bytes;
	r->status = INTAKE_OK;
out:
	if (!keep && src.out_fd >= 0)
		unlink(tmp);
	if (src.out_fd >= 0)
		close(src.out_fd);
	if (src.md != NULL)
		EVP_MD_CTX_free(src.md);
	free(src.buf);
	free(c.error);
	free(c.df_target);
	free(df);
	free(final);
	free(tmp);
	if (utf8 != (locale_t)0) {
		uselocale(old);
		freelocale(utf8);
	}
}

static la_ssize_t intake_image_write_cb(struct archive *a, void *p, const void *buf, size_t len)
{
	struct intake_src *s = p;
	for (size_t done = 0; done < len;) {
		ssize_t w = write(s->out_fd, (const char *)buf + done, len - done);
		if (w < 0 && errno == EINTR)
			continue;
		if (w < 0) {
			archive_set_error(a, errno, "%s", strerror(errno));
			return -1;
		}
		done += (size_t)w;
	}
	EVP_DigestUpdate(s->md, buf, len);
	s->off += len;
	return (la_ssize_t)len;
}

void intake_image_context(const char *spool_dir, const char *image, struct intake_result *r)
{
	struct intake_src s = {.fd = -1};
	char *tmp = xasprintf("%s/.intake-XXXXXX", spool_dir), *final = NULL;
	char *text = xasprintf("FROM %s\n", image);
	struct archive *a = archive_write_new();
	struct archive_entry *e = archive_entry_new();
	unsigned char digest[EVP_MAX_MD_SIZE];
	unsigned dlen = 0;
	bool keep = false;

	memset(r, 0, sizeof(*r));
	s.md = EVP_MD_CTX_new();
	if (a == NULL || e == NULL || s.md == NULL ||
	    EVP_DigestInit_ex(s.md, EVP_sha256(), NULL) != 1)
		abort();
	s.out_fd = mkostemp(tmp, O_CLOEXEC);
	if (s.out_fd < 0)
		goto fail;
	/* As the packer writes a context: ./Dockerfile, 0644, owner 0/0, time 0. */
	archive_entry_set_pathname(e, "./Dockerfile");
	archive_entry_set_filetype(e, AE_IFREG);
	archive_entry_set_perm(e, 0644);
	archive_entry_set_size(e, (la_int64_t)strlen(text));
	archive_entry_set_mtime(e, 0, 0);
	if (archive_write_set_format_pax_restricted(a) != ARCHIVE_OK ||
	    archive_write_add_filter_gzip(a) != ARCHIVE_OK ||
	    archive_write_set_filter_option(a, "gzip", "timestamp", NULL) != ARCHIVE_OK ||
	    archive_write_set_bytes_in_last_block(a, 1) != ARCHIVE_OK ||
	    archive_write_open(a, &s, NULL, intake_image_write_cb, NULL) != ARCHIVE_OK ||
	    archive_write_header(a, e) != ARCHIVE_OK ||
	    archive_write_data(a, text, strlen(text)) != (la_ssize_t)strlen(text) ||
	    archive_write_close(a) != ARCHIVE_OK) {
		errno = archive_errno(a) ? archive_errno(a) : EIO;
		goto fail;
	}
	EVP_DigestFinal_ex(s.md, digest, &dlen);
	hex(digest, dlen, r->sha256);
	if (intake_commit(s.out_fd, spool_dir, tmp, r->sha256, &final) < 0)
		goto fail;
	keep = true;
	r->status = INTAKE_OK;
	r->archive_path = final;
	final = NULL;
	r->archive_bytes = s.off;
	r->file_count = 1;
	r->total_bytes = strlen(text);
	goto out;
fail:
	intake_set(
	    r, INTAKE_ERROR,
	    xasprintf("cannot write the image's context in %s: %s", spool_dir, strerror(errno)),
	    "free space in the daemon's state directory");
out:
	if (!keep && s.out_fd >= 0)
		unlink(tmp);
	if (s.out_fd >= 0)
		close(s.out_fd);
	archive_entry_free(e);
	archive_write_free(a);
	EVP_MD_CTX_free(s.md);
	free(text);
	free(final);
	free(tmp);
}

void intake_result_clear(struct intake_result *r)
{
	free(r->error);
	free(r->hint);
	free(r->archive_path);
	memset(r, 0, sizeof(*r));
}
