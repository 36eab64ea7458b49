/*
 * The daemon's intake of a client's archive, attacked: archives built here with
 * libarchive (absolute and ".." members, hard links out, device nodes and FIFOs, a
 * missing or non-regular Dockerfile, declared sizes over the cap, a gzip bomb, plain
 * tar, garbage), truncated and altered copies (wrong size or digest), and the good
 * cases (a symlinked Dockerfile, names without "./", trailing bytes), through both
 * intake_check_buffer and intake_run on real files and a real spool directory.
 */
#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include <archive.h>
#include <archive_entry.h>
#include <openssl/evp.h>

#include "intake.h"
#include "util.h"

#define MAX (64ULL << 20)

struct member {
	const char *path;
	mode_t type; /* AE_IFREG, ... */
	const char *data;    /* file content, or symlink / hard link target */
	int64_t size;        /* -1: strlen(data) */
	bool hardlink;
};

struct buf {
	unsigned char *p;
	size_t len, cap;
};

static la_ssize_t buf_write(struct archive *a, void *arg, const void *data, size_t n)
{
	(void)a;
	struct buf *b = arg;
	if (b->len + n > b->cap) {
		b->cap = (b->len + n) * 2;
		b->p = xrealloc(b->p, b->cap);
	}
	memcpy(b->p + b->len, data, n);
	b->len += n;
	return (la_ssize_t)n;
}

/* A .tar.gz (or plain tar when gzip is false) of the members. */
static struct buf make_archive(const struct member *m, bool gzip)
{
	struct buf b = {0};
	struct archive *a = archive_write_new();
	archive_write_set_format_pax_restricted(a);
	if (gzip)
		archive_write_add_filter_gzip(a);
	else
		archive_write_add_filter_none(a);
	archive_write_set_bytes_in_last_block(a, 1);
	assert_int_equal(archive_write_open(a, &b, NULL, buf_write, NULL), ARCHIVE_OK);
	for (; m->path; m++) {
		struct archive_entry *e = archive_entry_new();
		archive_entry_set_pathname(e, m->path);
		archive_entry_set_perm(e, 0644);
		if (m->hardlink) {
			archive_entry_set_filetype(e, AE_IFREG);
			archive_entry_set_hardlink(e, m->data);
			archive_entry_set_size(e, 0);
		} else {
			archive_entry_set_filetype(e, m->type);
			if (m->type == AE_IFLNK)
				archive_entry_set_symlink(e, m->data);
			int64_t size = m->type == AE_IFREG
			                   ? (m->size >= 0 ? m->size : (int64_t)strlen(m->data))
			                   : 0;
			archive_entry_set_size(e, size);
		}
		assert_true(archive_write_header(a, e) >= ARCHIVE_WARN);
		if (m->type == AE_IFREG && !m->hardlink && m->data) {
			size_t n = strlen(m->data);
			if (n)
				assert_int_equal(archive_write_data(a, m->data, n), (la_ssize_t)n);
		}
		archive_entry_free(e);
	}
	archive_write_close(a);
	archive_write_free(a);
	return b;
}

#define F(path, data) {path, AE_IFREG, data, -1, false}

static void expect_refused(const struct member *m, const char *df, const char *needle)
{
	struct buf b = make_archive(m, true);
	char *err = NULL;
	assert_int_equal(intake_check_buffer(b.p, b.len, df, MAX, &err), -1);
	assert_non_null(err);
	if (strstr(err, needle) == NULL)
		fail_msg("error '%s' does not mention '%s'", err, needle);
	free(err);
	free(b.p);
}

static void expect_accepted(const struct member *m, const char *df)
{
	struct buf b = make_archive(m, true);
	char *err = NULL;
	int rc = intake_check_buffer(b.p, b.len, df, MAX, &err);
	if (rc != 0)
		fail_msg("refused: %s", err);
	free(b.p);
}

static void test_good_archives(void **state)
{
	(void)state;
	expect_accepted((struct member[]){F("./Dockerfile", "FROM x\n"), F("./a/b", "b"), {0}},
	                NULL);
	/* The TypeScript SDK writes names without "./". */
	expect_accepted((struct member[]){F("Dockerfile", "FROM x\n"), {0}}, "./Dockerfile");
	expect_accepted((struct member[]){F("./sub/Dockerfile.prod", "FROM x\n"), {0}},
	                "sub//Dockerfile.prod");
	/* Directories may be stored; symlinks may point anywhere (the builder scopes them). */
	expect_accepted((struct member[]){{"./d/", AE_IFDIR, NULL, 0, false},
	                                  {"./etc", AE_IFLNK, "/etc", 0, false},
	                                  F("./Dockerfile", "FROM x\n"),
	                                  {0}},
	                NULL);
	/* A symlinked Dockerfile resolving to a regular file in the archive. */
	expect_accepted((struct member[]){{"./Dockerfile", AE_IFLNK, "docker/Dockerfile.real", 0,
	                                   false},
	                                  F("./docker/Dockerfile.real", "FROM x\n"),
	                                  {0}},
	                NULL);
	/* A hard link inside the context. */
	expect_accepted((struct member[]){F("./Dockerfile", "FROM x\n"),
	                                  {"./copy", AE_IFREG, "./Dockerfile", 0, true},
	                                  {0}},
	                NULL);
}

static void test_hostile_paths(void **state)
{
	(void)state;
	expect_refused((struct member[]){F("./Dockerfile", "FROM x\n"), F("/etc/passwd", "x"), {0}},
	               NULL, "absolute or leaves the context");
	expect_refused((struct member[]){F("./Dockerfile", "FROM x\n"), F("../escape", "x"), {0}},
	               NULL, "'../escape'");
	expect_refused((struct member[]){F("./Dockerfile", "FROM x\n"), F("a/../../b", "x"), {0}},
	               NULL, "leaves the context");
	expect_refused((struct member[]){F("./Dockerfile", "FROM x\n"),
	                                 {"./l", AE_IFREG, "../../etc/shadow", 0, true},
	                                 {0}},
	               NULL, "hard link");
	expect_refused((struct member[]){F("./Dockerfile", "FROM x\n"),
	                                 {"./l", AE_IFREG, "/etc/shadow", 0, true},
	                                 {0}},
	               NULL, "hard link");
	/* A name with a terminal escape is shown escaped, never raw. */
	struct buf b = make_archive(
	    (struct member[]){F("./Dockerfile", "FROM x\n"), F("../\x1b]0;pwned\x07", "x"), {0}},
	    true);
	char *err = NULL;
	assert_int_equal(intake_check_buffer(b.p, b.len, NULL, MAX, &err), -1);
	assert_null(strchr(err, 0x1b));
	assert_non_null(strstr(err, "\\x1b"));
	free(err);
	free(b.p);
}

static void test_special_files(void **state)
{
	(void)state;
	expect_refused((struct member[]){F("./Dockerfile", "FROM x\n"),
	                                 {"./dev", AE_IFCHR, NULL, 0, false},
	                                 {0}},
	               NULL, "device node");
	expect_refused((struct member[]){F("./Dockerfile", "FROM x\n"),
	                                 {"./blk", AE_IFBLK, NULL, 0, false},
	                                 {0}},
	               NULL, "device node");
	expect_refused((struct member[]){F("./Dockerfile", "FROM x\n"),
	                                 {"./fifo", AE_IFIFO, NULL, 0, false},
	                                 {0}},
	               NULL, "FIFO");
}

static void test_dockerfile_checks(void **state)
{
	(void)state;
	expect_refused((struct member[]){F("./other", "x"), {0}}, NULL, "no Dockerfile");
	expect_refused((struct member[]){{"./Dockerfile/", AE_IFDIR, NULL, 0, false}, {0}}, NULL,
	               "no Dockerfile");
	expect_refused((struct member[]){{"./Dockerfile", AE_IFLNK, "/etc/passwd", 0, false}, {0}},
	               NULL, "no Dockerfile");
	/* A symlink loop ends. */
	expect_refused((struct member[]){{"./Dockerfile", AE_IFLNK, "a", 0, false},
	                                 {"./a", AE_IFLNK, "Dockerfile", 0, false},
	                                 {0}},
	               NULL, "no Dockerfile");
	expect_refused((struct member[]){F("./Dockerfile", "FROM x\n"), {0}}, "sub/Dockerfile",
	               "no Dockerfile 'sub/Dockerfile'");
}

static void test_sizes_and_formats(void **state)
{
	(void)state;
	char *err = NULL;
	/* Declared over the cap: refused at the header, nothing unpacked. */
	char *big = xmalloc(10001);
	memset(big, 'a', 10000);
	big[10000] = '\0';
	struct buf b =
	    make_archive((struct member[]){F("./Dockerfile", "FROM x\n"), F("./big", big), {0}}, true);
	free(big);
	assert_true(b.len < 5000);
	assert_int_equal(intake_check_buffer(b.p, b.len, NULL, 5000, &err), -1);
	assert_non_null(strstr(err, "more than 5000 bytes (at './big')"));
	free(err);
	free(b.p);

	/* A gzip bomb: 256 MiB of zeros in a few hundred KiB, against a 64 MiB cap. */
	char *zeros = xcalloc(1, 1 << 20);
	struct archive *a = archive_write_new();
	struct buf bomb = {0};
	archive_write_set_format_pax_restricted(a);
	archive_write_add_filter_gzip(a);
	archive_write_set_filter_option(a, "gzip", "compression-level", "9");
	archive_write_set_bytes_in_last_block(a, 1);
	archive_write_open(a, &bomb, NULL, buf_write, NULL);
	struct archive_entry *e = archive_entry_new();
	archive_entry_set_pathname(e, "./Dockerfile");
	archive_entry_set_filetype(e, AE_IFREG);
	archive_entry_set_perm(e, 0644);
	archive_entry_set_size(e, 256 << 20);
	archive_write_header(a, e);
	for (int i = 0; i < 256; i++)
		archive_write_data(a, zeros, 1 << 20);
	archive_entry_free(e);
	archive_write_close(a);
	archive_write_free(a);
	free(zeros);
	assert_true(bomb.len < (4 << 20));
	assert_int_equal(intake_check_buffer(bomb.p, bomb.len, NULL, MAX, &err), -1);
	assert_non_null(strstr(err, "unpacks to more than"));
	free(err);
	free(bomb.p);

	/* Plain tar, not gzip. */
	b = make_archive((struct member[]){F("./Dockerfile", "FROM x\n"), {0}}, false);
	assert_int_equal(intake_check_buffer(b.p, b.len, NULL, MAX, &err), -1);
	assert_non_null(strstr(err, "not gzip"));
	free(err);
	free(b.p);

	/* Garbage. */
	assert_int_equal(intake_check_buffer("hello world, not an archive", 27, NULL, MAX, &err),
	                 -1);
	free(err);

	/* Cut short in the middle of the gzip stream. */
	b = make_archive((struct member[]){F("./Dockerfile", "FROM x\n"),
	                                   F("./big", "0123456789abcdefghijklmnopqrstuvwxyz"),
	                                   {0}},
	                 true);
	assert_int_equal(intake_check_buffer(b.p, b.len / 2, NULL, MAX, &err), -1);
	free(err);
	free(b.p);
}

/* --- intake_run on real files ------------------------------------------------------ */

struct spool {
	char dir[64];
	char spool[80];
};

static int spool_setup(void **state)
{
	struct spool *s = xcalloc(1, sizeof(*s));
	strcpy(s->dir, "/tmp/test-intake-XXXXXX");
	assert_non_null(mkdtemp(s->dir));
	snprintf(s->spool, sizeof(s->spool), "%s/spool", s->dir);
	assert_int_equal(mkdir(s->spool, 0700), 0);
	*state = s;
	return 0;
}

static int spool_teardown(void **state)
{
	struct spool *s = *state;
	char *cmd = xasprintf("rm -rf '%s'", s->dir);
	assert_int_equal(system(cmd), 0);
	free(cmd);
	free(s);
	return 0;
}

static void sha256_hex(const void *p, size_t n, char out[65])
{
	unsigned char d[32];
	unsigned len = 0;
	EVP_Digest(p, n, d, &len, EVP_sha256(), NULL);
	for (unsigned i = 0; i < len; i++)
		sprintf(out + 2 * i, "%02x", d[i]);
}

/* An unlinked temporary file holding b, as a client passes it. */
static int tmpfile_with(const struct buf *b)
{
	int fd = open("/tmp", O_TMPFILE | O_RDWR, 0600);
	assert_true(fd >= 0);
	assert_int_equal(write(fd, b->p, b->len), (ssize_t)b->len);
	return fd;
}

static size_t spool_entries(const struct spool *s)
{
	char *cmd = xasprintf("ls -A '%s' | wc -l", s->spool);
	FILE *fp = popen(cmd, "r");
	size_t n = 0;
	assert_int_equal(fscanf(fp, "%zu", &n), 1);
	pclose(fp);
	free(cmd);
	return n;
}

static void test_run_ok_and_mismatch(void **state)
{
	struct spool *s = *state;
	struct buf b = make_archive(
	    (struct member[]){F("./Dockerfile", "FROM x\n"), F("./app.py", "print(1)\n"), {0}}, true);
	char sha[65];
	sha256_hex(b.p, b.len, sha);
	/* Bytes after the end of the tar are carried along: the digest covers them. */
	int fd = tmpfile_with(&b);
	struct intake_options o = {.fd = fd,
	                           .spool_dir = s->spool,
	                           .dockerfile = "Dockerfile",
	                           .max_bytes = MAX,
	                           .declared_bytes = b.len,
	                           .declared_sha256 = sha};
	struct intake_result r;
	intake_run(&o, &r);
	if (r.status != INTAKE_OK)
		fail_msg("refused: %s", r.error);
	assert_string_equal(r.sha256, sha);
	assert_int_equal(r.archive_bytes, b.len);
	assert_int_equal(r.file_count, 2);
	assert_int_equal(r.total_bytes, strlen("FROM x\n") + strlen("print(1)\n"));
	struct stat st;
	assert_int_equal(stat(r.archive_path, &st), 0);
	assert_int_equal((size_t)st.st_size, b.len);
	assert_int_equal(st.st_mode & 0777, 0600);
	intake_result_clear(&r);
	assert_int_equal(spool_entries(s), 1);

	/* Declared larger than what is there: the client was killed mid-write. */
	o.declared_bytes = b.len + 100;
	intake_run(&o, &r);
	assert_int_equal(r.status, INTAKE_INVALID);
	assert_non_null(strstr(r.error, "cut short or changed"));
	intake_result_clear(&r);

	/* Truncated file, declared as the whole. */
	assert_int_equal(ftruncate(fd, (off_t)(b.len - 10)), 0);
	o.declared_bytes = b.len;
	intake_run(&o, &r);
	assert_int_equal(r.status, INTAKE_INVALID);
	intake_result_clear(&r);

	/* The right size, another digest. */
	assert_int_equal(ftruncate(fd, 0), 0);
	assert_int_equal(pwrite(fd, b.p, b.len, 0), (ssize_t)b.len);
	char other[65];
	memset(other, 'a', 64);
	other[64] = '\0';
	o.declared_sha256 = other;
	intake_run(&o, &r);
	assert_int_equal(r.status, INTAKE_INVALID);
	intake_result_clear(&r);
	/* Nothing refused was left in the spool: only the one accepted archive. */
	assert_int_equal(spool_entries(s), 1);

	/* Over the cap as declared, and as read. */
	o.declared_sha256 = sha;
	o.max_bytes = 64;
	intake_run(&o, &r);
	assert_int_equal(r.status, INTAKE_INVALID);
	assert_non_null(strstr(r.error, "max_context_bytes"));
	intake_result_clear(&r);

	/* Cancelled (the client went away). */
	volatile int cancel = 1;
	o.max_bytes = MAX;
	o.cancel = &cancel;
	intake_run(&o, &r);
	assert_int_equal(r.status, INTAKE_CANCELLED);
	intake_result_clear(&r);
	assert_int_equal(spool_entries(s), 1);
	close(fd);
	free(b.p);
}

static void test_run_unreadable_descriptor(void **state)
{
	struct spool *s = *state;
	char path[128];
	snprintf(path, sizeof(path), "%s/w", s->dir);
	int fd = open(path, O_WRONLY | O_CREAT, 0600);
	assert_true(fd >= 0);
	assert_int_equal(write(fd, "x", 1), 1);
	char sha[65];
	sha256_hex("x", 1, sha);
	struct intake_options o = {.fd = fd,
	                           .spool_dir = s->spool,
	                           .max_bytes = MAX,
	                           .declared_bytes = 1,
	                           .declared_sha256 = sha};
	struct intake_result r;
	intake_run(&o, &r);
	assert_int_equal(r.status, INTAKE_INVALID);
	assert_non_null(strstr(r.error, "cannot read"));
	intake_result_clear(&r);
	close(fd);
	assert_int_equal(spool_entries(s), 0);
}

static void test_image_context(void **state)
{
	struct spool *s = *state;
	struct intake_result r;
	intake_image_context(s->spool, "python:3.12-slim", &r);
	assert_int_equal(r.status, INTAKE_OK);
	assert_int_equal(r.file_count, 1);
	/* What the daemon writes passes its own checks, and reads back as FROM <image>. */
	int fd = open(r.archive_path, O_RDONLY);
	assert_true(fd >= 0);
	struct buf b = {.p = xmalloc(r.archive_bytes), .len = r.archive_bytes};
	assert_int_equal(read(fd, b.p, b.len), (ssize_t)b.len);
	close(fd);
	char *err = NULL;
	assert_int_equal(intake_check_buffer(b.p, b.len, "Dockerfile", MAX, &err), 0);
	struct archive *a = archive_read_new();
	struct archive_entry *e;
	archive_read_support_filter_gzip(a);
	archive_read_support_format_tar(a);
	assert_int_equal(archive_read_open_memory(a, b.p, b.len), ARCHIVE_OK);
	assert_int_equal(archive_read_next_header(a, &e), ARCHIVE_OK);
	assert_string_equal(archive_entry_pathname(e), "./Dockerfile");
	char text[64] = {0};
	assert_true(archive_read_data(a, text, sizeof(text) - 1) > 0);
	assert_string_equal(text, "FROM python:3.12-slim\n");
	archive_read_free(a);
	/* The same image gives the same archive (same digest, one spool file). */
	struct intake_result r2;
	intake_image_context(s->spool, "python:3.12-slim", &r2);
	assert_string_equal(r.sha256, r2.sha256);
	intake_result_clear(&r2);
	intake_result_clear(&r);
	free(b.p);
}

static void test_clean_path(void **state)
{
	(void)state;
	char *p;
	assert_string_equal(p = intake_clean_path("./a//b/./c"), "a/b/c");
	free(p);
	assert_null(intake_clean_path("/abs"));
	assert_null(intake_clean_path("a/../b"));
	assert_null(intake_clean_path(""));
	assert_null(intake_clean_path("./"));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_good_archives),
	    cmocka_unit_test(test_hostile_paths),
	    cmocka_unit_test(test_special_files),
	    cmocka_unit_test(test_dockerfile_checks),
	    cmocka_unit_test(test_sizes_and_formats),
	    cmocka_unit_test(test_clean_path),
	    cmocka_unit_test_setup_teardown(test_run_ok_and_mismatch, spool_setup, spool_teardown),
	    cmocka_unit_test_setup_teardown(test_run_unreadable_descriptor, spool_setup,
	                                    spool_teardown),
	    cmocka_unit_test_setup_teardown(test_image_context, spool_setup, spool_teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
