/*
 * The context packer on real temporary directories: what goes into the archive (and
 * what .dockerignore keeps out), how odd entries are treated (FIFOs, sockets,
 * symlinks out of the context and in loops, unreadable files), the Dockerfile checks,
 * and the archive itself: read back with libarchive, gzip -t and libdeflate member by
 * member, byte-identical from one run to the next.  Cases that need an unreadable
 * file drop privileges in a child when run as root.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <locale.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include <archive.h>
#include <archive_entry.h>
#include <libdeflate.h>

#include "pack.h"
#include "util.h"

struct fixture {
	char *root; /* temporary directory holding ctx/ and spool/ */
	char *ctx, *spool;
	int dirfd;
	char **warnings;
	size_t nwarnings;
	volatile int cancel;
	bool cancel_on_warning;
};

static void rm_rf(const char *path)
{
	char *cmd = xasprintf("chmod -R u+rwx '%s' 2>/dev/null; rm -rf '%s'", path, path);

	assert_int_equal(system(cmd), 0);
	free(cmd);
}

static int fixture_setup(void **state)
{
	struct fixture *f = xcalloc(1, sizeof(*f));
	char tmpl[] = "/tmp/test-pack-XXXXXX";

	assert_non_null(mkdtemp(tmpl));
	assert_int_equal(chmod(tmpl, 0755), 0); /* the unprivileged child must get in */
	f->root = xstrdup(tmpl);
	f->ctx = xasprintf("%s/ctx", f->root);
	f->spool = xasprintf("%s/spool", f->root);
	assert_int_equal(mkdir(f->ctx, 0755), 0);
	assert_int_equal(mkdir(f->spool, 0700), 0);
	f->dirfd = open(f->ctx, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	assert_true(f->dirfd >= 0);
	*state = f;
	return 0;
}

static int fixture_teardown(void **state)
{
	struct fixture *f = *state;

	close(f->dirfd);
	rm_rf(f->root);
	for (size_t i = 0; i < f->nwarnings; i++)
		free(f->warnings[i]);
	free(f->warnings);
	free(f->root);
	free(f->ctx);
	free(f->spool);
	free(f);
	return 0;
}

/* Create ctx/<rel> (and its parents) holding text, with mode. */
static void put_file_mode(struct fixture *f, const char *rel, const char *text, mode_t mode)
{
	char *path = xasprintf("%s/%s", f->ctx, rel);
	char *cmd = xasprintf("mkdir -p \"$(dirname '%s')\"", path);
	FILE *fp;

	assert_int_equal(system(cmd), 0);
	fp = fopen(path, "w");
	assert_non_null(fp);
	fputs(text, fp);
	assert_int_equal(fclose(fp), 0);
	assert_int_equal(chmod(path, mode), 0);
	free(cmd);
	free(path);
}

static void put_file(struct fixture *f, const char *rel, const char *text)
{
	put_file_mode(f, rel, text, 0644);
}

static void put_dir(struct fixture *f, const char *rel)
{
	char *cmd = xasprintf("mkdir -p '%s/%s'", f->ctx, rel);

	assert_int_equal(system(cmd), 0);
	free(cmd);
}

static void put_symlink(struct fixture *f, const char *rel, const char *target)
{
	char *path = xasprintf("%s/%s", f->ctx, rel);

	assert_int_equal(symlink(target, path), 0);
	free(path);
}

static void warning_cb(void *arg, const char *msg)
{
	struct fixture *f = arg;

	f->warnings = xrealloc(f->warnings, (f->nwarnings + 1) * sizeof(*f->warnings));
	f->warnings[f->nwarnings++] = xstrdup(msg);
	if (f->cancel_on_warning)
		f->cancel = 1;
}

static bool has_warning(const struct fixture *f, const char *msg)
{
	for (size_t i = 0; i < f->nwarnings; i++) {
		if (strcmp(f->warnings[i], msg) == 0)
			return true;
	}
	return false;
}

static struct pack_options options(struct fixture *f, bool spool)
{
	struct pack_options o = {
	    .dirfd = f->dirfd,
	    .dockerfile = "Dockerfile",
	    .out_dir = spool ? f->spool : NULL,
	    .threads = 2,
	    .level = 6,
	    .cancel = &f->cancel,
	    .on_warning = warning_cb,
	    .arg = f,
	};

	return o;
}

static void pack_ok(const struct pack_options *o, struct pack_result *r)
{
	pack_run(o, r);
	if (r->status != PACK_OK)
		fail_msg("pack failed: %s", r->error ? r->error : "(no message)");
}

/* ---- reading an archive back ---- */

struct entry {
	char *path, *link, *data;
	size_t size;
	unsigned mode, type;
	int64_t uid, gid;
	const char *uname, *gname; /* NULL or "" */
	bool names_empty;
	time_t mtime;
};

struct listing {
	struct entry *e;
	size_t n;
};

static void listing_read(const char *path, struct listing *l)
{
	struct archive *a = archive_read_new();
	struct archive_entry *ae;
	int rc;

	memset(l, 0, sizeof(*l));
	archive_read_support_filter_gzip(a);
	archive_read_support_format_all(a);
	assert_int_equal(archive_read_open_filename(a, path, 65536), ARCHIVE_OK);
	while ((rc = archive_read_next_header(a, &ae)) == ARCHIVE_OK || rc == ARCHIVE_WARN) {
		struct entry *e;
		const char *un = archive_entry_uname(ae), *gn = archive_entry_gname(ae);

		l->e = xrealloc(l->e, (l->n + 1) * sizeof(*l->e));
		e = &l->e[l->n++];
		memset(e, 0, sizeof(*e));
		e->path = xstrdup(archive_entry_pathname(ae));
		e->type = archive_entry_filetype(ae);
		e->mode = archive_entry_perm(ae);
		e->uid = archive_entry_uid(ae);
		e->gid = archive_entry_gid(ae);
		e->names_empty = (un == NULL || un[0] == '\0') && (gn == NULL || gn[0] == '\0');
		e->mtime = archive_entry_mtime(ae);
		e->size = (size_t)archive_entry_size(ae);
		if (archive_entry_symlink(ae) != NULL)
			e->link = xstrdup(archive_entry_symlink(ae));
		e->data = xcalloc(1, e->size + 1);
		assert_int_equal(archive_read_data(a, e->data, e->size), (la_ssize_t)e->size);
	}
	assert_int_equal(rc, ARCHIVE_EOF);
	assert_int_equal(archive_read_free(a), ARCHIVE_OK);
}

static void listing_free(struct listing *l)
{
	for (size_t i = 0; i < l->n; i++) {
		free(l->e[i].path);
		free(l->e[i].link);
		free(l->e[i].data);
	}
	free(l->e);
}

static const struct entry *listing_find(const struct listing *l, const char *path)
{
	for (size_t i = 0; i < l->n; i++) {
		if (strcmp(l->e[i].path, path) == 0)
			return &l->e[i];
	}
	return NULL;
}

/* The entries' paths, in order, as one newline-separated string. */
static char *listing_paths(const struct listing *l)
{
	char *s = xstrdup("");

	for (size_t i = 0; i < l->n; i++) {
		char *t = xasprintf("%s%s\n", s, l->e[i].path);

		free(s);
		s = t;
	}
	return s;
}

static char *pack_paths(struct fixture *f, struct pack_result *r)
{
	struct pack_options o = options(f, true);
	struct listing l;
	char *paths;

	pack_ok(&o, r);
	listing_read(r->archive_path, &l);
	paths = listing_paths(&l);
	listing_free(&l);
	return paths;
}

static size_t count_files(const char *dir)
{
	DIR *d = opendir(dir);
	struct dirent *de;
	size_t n = 0;

	assert_non_null(d);
	while ((de = readdir(d)) != NULL)
		n += strcmp(de->d_name, ".") != 0 && strcmp(de->d_name, "..") != 0;
	closedir(d);
	return n;
}

/* ---- running without privileges (for permission errors even as root) ---- */

/*
 * Run an inspect-only pack in a child that cannot read what mode 0 protects, and
 * return "status:error" from it.
 */
static char *pack_unprivileged(struct fixture *f)
{
	int fds[2];
	pid_t pid;
	char buf[4096];
	ssize_t n;
	size_t len = 0;
	int st;

	assert_int_equal(pipe(fds), 0);
	pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		struct pack_options o = options(f, false);
		struct pack_result r;
		char *out;

		close(fds[0]);
		if (geteuid() == 0 &&
		    (setgroups(0, NULL) < 0 || setgid(65534) < 0 || setuid(65534) < 0))
			_exit(2);
		pack_run(&o, &r);
		out = xasprintf("%d:%s", r.status, r.error ? r.error : "");
		if (write(fds[1], out, strlen(out)) < 0)
			_exit(3);
		_exit(0);
	}
	close(fds[1]);
	while ((n = read(fds[0], buf + len, sizeof(buf) - 1 - len)) > 0)
		len += (size_t)n;
	buf[len] = '\0';
	close(fds[0]);
	assert_int_equal(waitpid(pid, &st, 0), pid);
	assert_true(WIFEXITED(st) && WEXITSTATUS(st) == 0);
	return xstrdup(buf);
}

/* ---- the tests ---- */

static void test_dockerignore_applied(void **state)
{
	struct fixture *f = *state;
	struct pack_result r;
	char *paths;

	put_file(f, "Dockerfile", "FROM scratch\n");
	put_file(f, ".dockerignore", "*.log\nbuild\n!build/keep.txt\ndocs/**\n!docs/README.md\n");
	put_file(f, "app.c", "int main;\n");
	put_file(f, "app.log", "noise\n");
	put_file(f, "a.txt", "a\n");
	put_file(f, "a/b", "b\n");
	put_file(f, "build/out.o", "obj\n");
	put_file(f, "build/keep.txt", "keep\n");
	put_file(f, "build/sub/deep.o", "obj\n");
	put_file(f, "docs/README.md", "readme\n");
	put_file(f, "docs/guide.md", "guide\n");
	put_file(f, "src/x.log", "nested logs stay: *.log is anchored\n");
	paths = pack_paths(f, &r);
	/* Byte order of whole paths: "a.txt" < "a/b" ('.' < '/'). */
	assert_string_equal(paths, "./.dockerignore\n"
	                           "./Dockerfile\n"
	                           "./a.txt\n"
	                           "./a/b\n"
	                           "./app.c\n"
	                           "./build/keep.txt\n"
	                           "./docs/README.md\n"
	                           "./src/x.log\n");
	assert_int_equal(r.file_count, 8);
	/* Walked for the exception, build/ is reported entry by entry. */
	assert_int_equal(r.nexcluded, 4);
	assert_string_equal(r.excluded[0], "./app.log");
	assert_string_equal(r.excluded[1], "./build/out.o");
	assert_string_equal(r.excluded[2], "./build/sub/");
	assert_string_equal(r.excluded[3], "./docs/guide.md");
	free(paths);
	pack_result_clear(&r);
}

static void test_dockerfile_and_dockerignore_kept(void **state)
{
	struct fixture *f = *state;
	struct pack_result r;
	char *paths;

	put_file(f, "Dockerfile", "FROM scratch\n");
	put_file(f, ".dockerignore", "Dockerfile\n.dockerignore\n*\n");
	put_file(f, "other", "x\n");
	paths = pack_paths(f, &r);
	assert_string_equal(paths, "./.dockerignore\n./Dockerfile\n");
	free(paths);
	pack_result_clear(&r);
}

static void test_dockerfile_in_excluded_dir_kept(void **state)
{
	struct fixture *f = *state;
	struct pack_options o = options(f, true);
	struct pack_result r;
	struct listing l;
	char *paths;

	put_file(f, "docker/Dockerfile", "FROM scratch\n");
	put_file(f, "docker/secret", "x\n");
	put_file(f, ".dockerignore", "docker\n");
	o.dockerfile = "docker/Dockerfile";
	pack_ok(&o, &r);
	listing_read(r.archive_path, &l);
	paths = listing_paths(&l);
	assert_string_equal(paths, "./.dockerignore\n./docker/Dockerfile\n");
	free(paths);
	listing_free(&l);
	pack_result_clear(&r);
}

static void test_per_dockerfile_ignore_takes_precedence(void **state)
{
	struct fixture *f = *state;
	struct pack_options o = options(f, true);
	struct pack_result r;
	struct listing l;
	char *paths;

	put_file(f, "app.Dockerfile", "FROM scratch\n");
	put_file(f, "app.Dockerfile.dockerignore", "foo\n");
	put_file(f, ".dockerignore", "bar\n");
	put_file(f, "foo", "foo\n");
	put_file(f, "bar", "bar\n");
	o.dockerfile = "app.Dockerfile";
	pack_ok(&o, &r);
	listing_read(r.archive_path, &l);
	paths = listing_paths(&l);
	assert_string_equal(paths, "./.dockerignore\n./app.Dockerfile\n"
	                           "./app.Dockerfile.dockerignore\n./bar\n");
	free(paths);
	listing_free(&l);
	pack_result_clear(&r);
}

static void test_excluded_dir_not_walked(void **state)
{
	struct fixture *f = *state;
	struct pack_result r;
	char *paths, *res, *dir;
	int fd;

	put_file(f, "Dockerfile", "FROM scratch\n");
	put_file(f, ".dockerignore", "node_modules\n");
	put_file(f, "node_modules/x/index.js", "x\n");
	put_dir(f, "node_modules/locked/inner");
	/* Deeper than the walker accepts: reading it would fail the pack. */
	dir = xasprintf("%s/node_modules", f->ctx);
	fd = open(dir, O_RDONLY | O_DIRECTORY);
	for (int i = 0; i < PACK_MAX_DEPTH + 5; i++) {
		const char *name = i == 0 ? "zz" : "d"; /* walked after "locked" */
		int sub;

		assert_int_equal(mkdirat(fd, name, 0755), 0);
		sub = openat(fd, name, O_RDONLY | O_DIRECTORY);
		close(fd);
		fd = sub;
	}
	close(fd);
	free(dir);
	/* And a directory no one may read. */
	dir = xasprintf("%s/node_modules/locked", f->ctx);
	assert_int_equal(chmod(dir, 0), 0);
	res = pack_unprivileged(f);
	assert_string_equal(res, "0:");
	free(res);

	paths = pack_paths(f, &r);
	assert_string_equal(paths, "./.dockerignore\n./Dockerfile\n");
	assert_int_equal(r.nexcluded, 1);
	assert_string_equal(r.excluded[0], "./node_modules/");
	pack_result_clear(&r);
	free(paths);

	/* The control: once it is no longer excluded, the same tree fails the pack. */
	put_file(f, ".dockerignore", "");
	res = pack_unprivileged(f);
	assert_string_equal(res, "1:cannot read ./node_modules/locked: Permission denied");
	free(res);
	assert_int_equal(chmod(dir, 0755), 0);
	res = pack_unprivileged(f);
	assert_non_null(strstr(res, "directories nested deeper than"));
	free(res);
	free(dir);
}

static void test_fifo_and_socket_skipped(void **state)
{
	struct fixture *f = *state;
	struct pack_result r;
	struct sockaddr_un sun = {.sun_family = AF_UNIX};
	char *path, *paths;
	int s;

	put_file(f, "Dockerfile", "FROM scratch\n");
	path = xasprintf("%s/fifo", f->ctx);
	assert_int_equal(mkfifo(path, 0644), 0);
	free(path);
	s = socket(AF_UNIX, SOCK_STREAM, 0);
	snprintf(sun.sun_path, sizeof(sun.sun_path), "%s/sock", f->ctx);
	assert_int_equal(bind(s, (struct sockaddr *)&sun, sizeof(sun)), 0);
	/* A FIFO opened for reading would block forever: fail loudly instead. */
	alarm(20);
	paths = pack_paths(f, &r);
	alarm(0);
	close(s);
	assert_string_equal(paths, "./Dockerfile\n");
	assert_int_equal(r.nwarnings, 2);
	assert_true(has_warning(f, "skipped FIFO ./fifo"));
	assert_true(has_warning(f, "skipped socket ./sock"));
	free(paths);
	pack_result_clear(&r);
}

static void test_symlinks_stored_not_followed(void **state)
{
	struct fixture *f = *state;
	struct pack_options o = options(f, true);
	struct pack_result r;
	struct listing l;
	const struct entry *e;

	put_file(f, "Dockerfile", "FROM scratch\n");
	put_file(f, "real/file", "content\n");
	put_symlink(f, "abs", "/etc/passwd");
	put_symlink(f, "loop1", "loop2");
	put_symlink(f, "loop2", "loop1");
	put_symlink(f, "self", "self");
	put_symlink(f, "up", "..");
	put_symlink(f, "real/again", "../real");
	put_symlink(f, "tofile", "real/file");
	pack_ok(&o, &r);
	listing_read(r.archive_path, &l);
	assert_int_equal(l.n, 9);
	e = listing_find(&l, "./abs");
	assert_non_null(e);
	assert_int_equal(e->type, AE_IFLNK);
	assert_string_equal(e->link, "/etc/passwd");
	assert_int_equal(e->size, 0);
	e = listing_find(&l, "./loop1");
	assert_non_null(e);
	assert_string_equal(e->link, "loop2");
	assert_string_equal(listing_find(&l, "./self")->link, "self");
	assert_string_equal(listing_find(&l, "./up")->link, "..");
	assert_string_equal(listing_find(&l, "./real/again")->link, "../real");
	assert_int_equal(listing_find(&l, "./tofile")->type, AE_IFLNK);
	assert_int_equal(listing_find(&l, "./real/file")->type, AE_IFREG);
	assert_int_equal(r.nwarnings, 0);
	listing_free(&l);
	pack_result_clear(&r);
}

static void test_unreadable_file_fails_with_path(void **state)
{
	struct fixture *f = *state;
	char *res, *path;

	put_file(f, "Dockerfile", "FROM scratch\n");
	put_file_mode(f, "secret.key", "s3cr3t\n", 0);
	res = pack_unprivileged(f);
	assert_string_equal(res, "1:cannot read ./secret.key: Permission denied");
	free(res);
	/* Excluded, it is never opened. */
	put_file(f, ".dockerignore", "*.key\n");
	res = pack_unprivileged(f);
	assert_string_equal(res, "0:");
	free(res);
	path = xasprintf("%s/secret.key", f->ctx);
	chmod(path, 0600);
	free(path);
}

static void test_dockerfile_checks(void **state)
{
	struct fixture *f = *state;
	struct pack_options o = options(f, true);
	struct pack_result r;
	char *outside;

	pack_run(&o, &r);
	assert_int_equal(r.status, PACK_ERROR);
	assert_string_equal(
	    r.error, "Dockerfile Dockerfile not found in the context: No such file or directory");
	pack_result_clear(&r);

	outside = xasprintf("%s/Dockerfile", f->root);
	put_file(f, "x", "x\n");
	{
		FILE *fp = fopen(outside, "w");

		assert_non_null(fp);
		fputs("FROM scratch\n", fp);
		fclose(fp);
	}
	o.dockerfile = "../Dockerfile";
	pack_run(&o, &r);
	assert_int_equal(r.status, PACK_ERROR);
	assert_string_equal(r.error, "Dockerfile ../Dockerfile is outside the context");
	pack_result_clear(&r);

	put_symlink(f, "Dockerfile", outside);
	o.dockerfile = "Dockerfile";
	pack_run(&o, &r);
	assert_int_equal(r.status, PACK_ERROR);
	assert_string_equal(r.error, "Dockerfile Dockerfile is outside the context");
	pack_result_clear(&r);

	put_symlink(f, "rel", "sub/../../Dockerfile");
	put_dir(f, "sub");
	o.dockerfile = "rel";
	pack_run(&o, &r);
	assert_int_equal(r.status, PACK_ERROR);
	assert_string_equal(r.error, "Dockerfile rel is outside the context");
	pack_result_clear(&r);

	o.dockerfile = "/etc/hostname";
	pack_run(&o, &r);
	assert_int_equal(r.status, PACK_ERROR);
	assert_non_null(strstr(r.error, "must be a path relative to the context"));
	pack_result_clear(&r);

	o.dockerfile = "sub";
	pack_run(&o, &r);
	assert_int_equal(r.status, PACK_ERROR);
	assert_string_equal(r.error, "Dockerfile sub is not a regular file");
	pack_result_clear(&r);

	/* A symlink to a file inside is fine, and both are kept despite .dockerignore. */
	put_file(f, "docker/Dockerfile.real", "FROM scratch\n");
	put_symlink(f, "inside", "docker/Dockerfile.real");
	put_file(f, ".dockerignore", "docker\ninside\n");
	o.dockerfile = "inside";
	pack_ok(&o, &r);
	{
		struct listing l;
		char *paths;

		listing_read(r.archive_path, &l);
		paths = listing_paths(&l);
		assert_string_equal(paths,
		                    "./.dockerignore\n./Dockerfile\n./docker/Dockerfile.real\n"
		                    "./inside\n./rel\n./x\n");
		free(paths);
		listing_free(&l);
	}
	pack_result_clear(&r);
	free(outside);
}

static void test_archive_contents(void **state)
{
	struct fixture *f = *state;
	struct pack_options o = options(f, true);
	struct pack_result r;
	struct listing l;
	const struct entry *e;
	struct stat st;
	char *path, *longname, *expect;

	put_file(f, "Dockerfile", "FROM scratch\n");
	put_file_mode(f, "bin/run.sh", "#!/bin/sh\necho hi\n", 0755);
	put_file_mode(f, "conf/private", "key\n", 0600);
	put_file(f, "caf\xc3\xa9.txt", "utf-8 name\n");
	put_file(f, "empty", "");
	longname = xstrdup("deep");
	for (int i = 0; i < 30; i++) {
		char *t = xasprintf("%s/segment-%02d", longname, i);

		free(longname);
		longname = t;
	}
	put_file(f, longname, "far away\n");
	pack_ok(&o, &r);
	assert_int_equal(strlen(r.sha256), 64);
	expect = xasprintf("%s/%s.tar.gz", f->spool, r.sha256);
	assert_string_equal(r.archive_path, expect);
	free(expect);
	assert_int_equal(stat(r.archive_path, &st), 0);
	assert_int_equal((uint64_t)st.st_size, r.archive_size);
	assert_int_equal(st.st_mode & 0777, 0600);
	assert_int_equal(count_files(f->spool), 1); /* no temporary file left */
	assert_int_equal(r.file_count, 6);
	assert_int_equal(r.total_bytes, strlen("FROM scratch\n#!/bin/sh\necho hi\nkey\nutf-8 name\n"
	                                       "far away\n"));

	listing_read(r.archive_path, &l);
	assert_int_equal(l.n, 6);
	for (size_t i = 0; i < l.n; i++) {
		assert_int_equal(l.e[i].uid, 0);
		assert_int_equal(l.e[i].gid, 0);
		assert_true(l.e[i].names_empty);
		assert_int_equal(strncmp(l.e[i].path, "./", 2), 0);
	}
	e = listing_find(&l, "./bin/run.sh");
	assert_non_null(e);
	assert_int_equal(e->mode, 0755);
	assert_string_equal(e->data, "#!/bin/sh\necho hi\n");
	path = xasprintf("%s/bin/run.sh", f->ctx);
	assert_int_equal(stat(path, &st), 0);
	assert_int_equal(e->mtime, st.st_mtime);
	free(path);
	assert_int_equal(listing_find(&l, "./conf/private")->mode, 0600);
	assert_string_equal(listing_find(&l, "./caf\xc3\xa9.txt")->data, "utf-8 name\n");
	assert_int_equal(listing_find(&l, "./empty")->size, 0);
	path = xasprintf("./%s", longname);
	e = listing_find(&l, path);
	assert_non_null(e);
	assert_string_equal(e->data, "far away\n");
	free(path);
	listing_free(&l);
	free(longname);
	pack_result_clear(&r);
}

static char *slurp(const char *path, size_t *len)
{
	FILE *fp = fopen(path, "rb");
	char *buf;
	long n;

	assert_non_null(fp);
	fseek(fp, 0, SEEK_END);
	n = ftell(fp);
	fseek(fp, 0, SEEK_SET);
	buf = xmalloc((size_t)n + 1);
	assert_int_equal(fread(buf, 1, (size_t)n, fp), (size_t)n);
	fclose(fp);
	*len = (size_t)n;
	return buf;
}

static void test_same_input_identical_archive(void **state)
{
	struct fixture *f = *state;
	struct pack_options o = options(f, true);
	struct pack_result r1, r2;
	char *a, *b, *copy, *cmd;
	size_t la, lb;

	put_file(f, "Dockerfile", "FROM scratch\n");
	for (int i = 0; i < 50; i++) {
		char *name = xasprintf("dir%d/file%d.txt", i % 7, i);
		char *text = xasprintf("line %d\n", i * 7919);

		put_file(f, name, text);
		free(name);
		free(text);
	}
	pack_ok(&o, &r1);
	copy = xasprintf("%s/first.tar.gz", f->root);
	cmd = xasprintf("cp '%s' '%s'", r1.archive_path, copy);
	assert_int_equal(system(cmd), 0);
	free(cmd);
	o.threads = 1; /* the thread count must not matter */
	pack_ok(&o, &r2);
	assert_string_equal(r1.sha256, r2.sha256);
	assert_string_equal(r1.archive_path, r2.archive_path);
	a = slurp(copy, &la);
	b = slurp(r2.archive_path, &lb);
	assert_int_equal(la, lb);
	assert_memory_equal(a, b, la);
	/* The digest is the digest of the bytes. */
	cmd = xasprintf("test \"$(sha256sum < '%s' | cut -d' ' -f1)\" = %s", copy, r1.sha256);
	assert_int_equal(system(cmd), 0);
	free(cmd);
	free(a);
	free(b);
	free(copy);
	pack_result_clear(&r1);
	pack_result_clear(&r2);
}

static void test_multi_member_gzip(void **state)
{
	struct fixture *f = *state;
	struct pack_options o = options(f, true);
	struct pack_result r;
	struct libdeflate_decompressor *dz = libdeflate_alloc_decompressor();
	size_t len, pos = 0, members = 0, total_out = 0, out_cap = 2 * 1024 * 1024;
	unsigned char *out = xmalloc(out_cap);
	char *gz, *cmd, *big = xmalloc(3 * 1024 * 1024 + 1);
	uint32_t x = 12345;
	struct listing l;

	/* 3 MiB of text that compresses but not to nothing. */
	for (size_t i = 0; i < 3 * 1024 * 1024; i++) {
		x = x * 1103515245 + 12345;
		big[i] = (i % 61 == 60) ? '\n' : (char)('a' + (x >> 16) % 16);
	}
	big[3 * 1024 * 1024] = '\0';
	put_file(f, "Dockerfile", "FROM scratch\n");
	put_file(f, "big.txt", big);
	pack_ok(&o, &r);

	gz = slurp(r.archive_path, &len);
	while (pos < len) {
		size_t in_used = 0, out_used = 0;

		assert_int_equal(libdeflate_gzip_decompress_ex(dz, gz + pos, len - pos, out,
		                                               out_cap, &in_used, &out_used),
		                 LIBDEFLATE_SUCCESS);
		pos += in_used;
		total_out += out_used;
		members++;
	}
	assert_true(members > 3);
	assert_true(total_out > 3 * 1024 * 1024);
	cmd = xasprintf("gzip -t '%s'", r.archive_path);
	assert_int_equal(system(cmd), 0);
	free(cmd);
	listing_read(r.archive_path, &l);
	assert_string_equal(listing_find(&l, "./big.txt")->data, big);
	listing_free(&l);

	libdeflate_free_decompressor(dz);
	free(gz);
	free(out);
	free(big);
	pack_result_clear(&r);
}

/* ---- incremental packing: the pack cache ---- */

/*
 * Wait until the coarse clock has passed the ctime of everything written so far, so
 * that the next pack may cache it (the packer leaves out files changed within the
 * current clock tick: a second change in that tick would not show in their stats).
 */
static void settle(struct fixture *f)
{
	char *marker = xasprintf("%s/marker", f->root);
	struct timespec now;
	struct stat st;
	FILE *fp = fopen(marker, "w");

	assert_non_null(fp);
	fclose(fp);
	assert_int_equal(stat(marker, &st), 0);
	for (;;) {
		clock_gettime(CLOCK_REALTIME_COARSE, &now);
		if (now.tv_sec > st.st_ctim.tv_sec ||
		    (now.tv_sec == st.st_ctim.tv_sec && now.tv_nsec > st.st_ctim.tv_nsec))
			break;
		nanosleep(&(struct timespec){0, 1000000}, NULL);
	}
	free(marker);
}

/* Pack into <root>/<name> (with the cache when cache is set); the bytes in *out. */
static char *pack_bytes(struct fixture *f, bool cache, const char *name, size_t *len,
                        struct pack_result *r)
{
	struct pack_options o = options(f, false);
	char *path = xasprintf("%s/%s", f->root, name), *dir = xasprintf("%s/cache", f->root);
	char *bytes;
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);

	assert_true(fd >= 0);
	o.to_fd = true;
	o.out_fd = fd;
	o.cache_dir = cache ? dir : NULL;
	pack_ok(&o, r);
	close(fd);
	bytes = slurp(path, len);
	free(path);
	free(dir);
	return bytes;
}

/*
 * Pack with the cache and without: the two archives must be the same bytes.  Returns
 * the cached pack's hits and misses.
 */
static void assert_cached_is_cold(struct fixture *f, uint64_t *hits, uint64_t *misses)
{
	struct pack_result rc, rn;
	size_t lc, ln;
	char *c = pack_bytes(f, true, "cached.tar.gz", &lc, &rc);
	char *n = pack_bytes(f, false, "cold.tar.gz", &ln, &rn);

	assert_int_equal(lc, ln);
	assert_memory_equal(c, n, lc);
	assert_string_equal(rc.sha256, rn.sha256);
	assert_int_equal(rc.file_count, rn.file_count);
	assert_int_equal(rc.total_bytes, rn.total_bytes);
	*hits = rc.cache_hits;
	*misses = rc.cache_misses;
	free(c);
	free(n);
	pack_result_clear(&rc);
	pack_result_clear(&rn);
}

static const struct entry *cached_entry(struct fixture *f, struct listing *l, const char *path)
{
	char *a = xasprintf("%s/cached.tar.gz", f->root);

	listing_read(a, l);
	free(a);
	return listing_find(l, path);
}

/* A tree of many small files (several chunks) and one big one (several pieces). */
static void put_tree(struct fixture *f)
{
	char *big = xmalloc(3 * 1024 * 1024 + 1);

	put_file(f, "Dockerfile", "FROM scratch\nCOPY . /\n");
	for (int i = 0; i < 400; i++) {
		char *name = xasprintf("src/d%02d/file%03d.txt", i % 13, i);
		char *text = xasprintf("file %d: %d %d %d\n", i, i * 7919, i * 104729, i * 31);

		put_file(f, name, text);
		free(name);
		free(text);
	}
	for (size_t i = 0; i < 3 * 1024 * 1024; i++)
		big[i] = (char)('a' + (i * 2654435761u >> 13) % 26);
	big[3 * 1024 * 1024] = '\0';
	put_file(f, "assets/big.bin", big);
	free(big);
	put_symlink(f, "link", "src/d00/file000.txt");
}

static void test_cache_repack_unchanged(void **state)
{
	struct fixture *f = *state;
	uint64_t hits, misses;

	put_tree(f);
	settle(f);
	assert_cached_is_cold(f, &hits, &misses); /* fills the cache */
	assert_int_equal(hits, 0);
	assert_true(misses > 4);
	assert_cached_is_cold(f, &hits, &misses);
	assert_true(hits > 4);
	assert_int_equal(misses, 0);
}

/* Rewrite rel with text of the same size and put its mtime back: only ctime tells. */
static void rewrite_keep_mtime(struct fixture *f, const char *rel, const char *text)
{
	char *path = xasprintf("%s/%s", f->ctx, rel);
	struct stat st;
	struct timespec times[2];
	int fd;

	assert_int_equal(stat(path, &st), 0);
	assert_int_equal((size_t)st.st_size, strlen(text));
	fd = open(path, O_WRONLY);
	assert_true(fd >= 0);
	assert_int_equal(write(fd, text, strlen(text)), (ssize_t)strlen(text));
	close(fd);
	times[0] = st.st_atim;
	times[1] = st.st_mtim;
	assert_int_equal(utimensat(AT_FDCWD, path, times, 0), 0);
	free(path);
}

static void test_cache_content_change_same_size_and_mtime(void **state)
{
	struct fixture *f = *state;
	uint64_t hits, misses;
	struct listing l;
	const struct entry *e;

	put_tree(f);
	settle(f);
	assert_cached_is_cold(f, &hits, &misses);
	rewrite_keep_mtime(f, "src/d01/file001.txt", "FILE 1: 7919 104729 31\n");
	settle(f); /* so that the pack looks the changed file up */
	assert_cached_is_cold(f, &hits, &misses);
	assert_true(hits > 4); /* the rest came from the cache */
	assert_true(misses > 0);
	e = cached_entry(f, &l, "./src/d01/file001.txt");
	assert_non_null(e);
	assert_string_equal(e->data, "FILE 1: 7919 104729 31\n");
	listing_free(&l);
}

static void test_cache_big_file_piece_change(void **state)
{
	struct fixture *f = *state;
	uint64_t hits, misses;
	struct listing l;
	const struct entry *e;
	char *path = xasprintf("%s/assets/big.bin", f->ctx);
	struct stat st;
	struct timespec times[2];
	int fd;

	put_tree(f);
	settle(f);
	assert_cached_is_cold(f, &hits, &misses);
	assert_int_equal(stat(path, &st), 0);
	fd = open(path, O_WRONLY);
	assert_true(fd >= 0);
	assert_int_equal(pwrite(fd, "#", 1, 1536 * 1024), 1); /* in the second piece */
	close(fd);
	times[0] = st.st_atim;
	times[1] = st.st_mtim;
	assert_int_equal(utimensat(AT_FDCWD, path, times, 0), 0);
	settle(f);
	assert_cached_is_cold(f, &hits, &misses);
	/* The file's pieces are keyed by its stats: all of them are packed again. */
	assert_true(misses >= 3);
	assert_true(hits > 0);
	e = cached_entry(f, &l, "./assets/big.bin");
	assert_non_null(e);
	assert_int_equal(e->data[1536 * 1024], '#');
	listing_free(&l);
	free(path);
	/* And now the new pieces are cached too. */
	assert_cached_is_cold(f, &hits, &misses);
	assert_int_equal(misses, 0);
}

static void test_cache_rename(void **state)
{
	struct fixture *f = *state;
	uint64_t hits, misses;
	struct listing l;
	char *from = xasprintf("%s/src/d02/file002.txt", f->ctx);
	char *to = xasprintf("%s/src/d02/renamed.txt", f->ctx);

	put_tree(f);
	settle(f);
	assert_cached_is_cold(f, &hits, &misses);
	assert_int_equal(rename(from, to), 0);
	settle(f);
	assert_cached_is_cold(f, &hits, &misses);
	assert_true(hits > 0);
	assert_true(misses > 0);
	assert_null(cached_entry(f, &l, "./src/d02/file002.txt"));
	assert_non_null(listing_find(&l, "./src/d02/renamed.txt"));
	listing_free(&l);
	free(from);
	free(to);
}

static void test_cache_mode_change(void **state)
{
	struct fixture *f = *state;
	uint64_t hits, misses;
	struct listing l;
	const struct entry *e;
	char *path = xasprintf("%s/src/d03/file003.txt", f->ctx);

	put_tree(f);
	settle(f);
	assert_cached_is_cold(f, &hits, &misses);
	assert_int_equal(chmod(path, 0755), 0);
	settle(f);
	assert_cached_is_cold(f, &hits, &misses);
	assert_true(misses > 0);
	e = cached_entry(f, &l, "./src/d03/file003.txt");
	assert_non_null(e);
	assert_int_equal(e->mode, 0755);
	listing_free(&l);
	free(path);
}

static void test_cache_symlink_retarget(void **state)
{
	struct fixture *f = *state;
	uint64_t hits, misses;
	struct listing l;
	const struct entry *e;
	char *path = xasprintf("%s/link", f->ctx);

	put_tree(f);
	settle(f);
	assert_cached_is_cold(f, &hits, &misses);
	assert_int_equal(unlink(path), 0);
	put_symlink(f, "link", "src/d00/file013.txt"); /* a target of the same length */
	settle(f);
	assert_cached_is_cold(f, &hits, &misses);
	assert_true(misses > 0);
	e = cached_entry(f, &l, "./link");
	assert_non_null(e);
	assert_string_equal(e->link, "src/d00/file013.txt");
	listing_free(&l);
	free(path);
}

static void test_cache_dockerignore_change(void **state)
{
	struct fixture *f = *state;
	uint64_t hits, misses;
	struct listing l;

	put_tree(f);
	put_file(f, ".dockerignore", "*.log\n");
	settle(f);
	assert_cached_is_cold(f, &hits, &misses);
	put_file(f, ".dockerignore", "src/d04\n");
	settle(f);
	assert_cached_is_cold(f, &hits, &misses);
	assert_true(hits > 0);
	assert_null(cached_entry(f, &l, "./src/d04/file004.txt"));
	assert_non_null(listing_find(&l, "./src/d05/file005.txt"));
	listing_free(&l);
}

/* Every cache file damaged in its own way: each is a miss, none is used. */
static void test_cache_corrupt_entries(void **state)
{
	struct fixture *f = *state;
	uint64_t hits, misses, before;
	char *dir = xasprintf("%s/cache", f->root);
	DIR *d;
	struct dirent *de;
	int i = 0;

	put_tree(f);
	settle(f);
	assert_cached_is_cold(f, &hits, &misses);
	before = misses;
	d = opendir(dir);
	assert_non_null(d);
	while ((de = readdir(d)) != NULL) {
		char *path;
		struct stat st;
		int fd;

		if (de->d_name[0] == '.')
			continue;
		path = xasprintf("%s/%s", dir, de->d_name);
		assert_int_equal(stat(path, &st), 0);
		fd = open(path, O_WRONLY);
		assert_true(fd >= 0);
		switch (i++ % 3) {
		case 0: /* a torn write: the tail never reached the disk */
			assert_int_equal(ftruncate(fd, st.st_size / 2), 0);
			break;
		case 1: /* a flipped byte in the payload */
			assert_int_equal(pwrite(fd, "\xff\x00", 2, st.st_size - 9), 2);
			break;
		default: /* zeros where the header was */
			assert_int_equal(pwrite(fd, "\0\0\0\0\0\0\0\0", 8, 0), 8);
			break;
		}
		close(fd);
		free(path);
	}
	closedir(d);
	assert_true(i > 4);
	assert_cached_is_cold(f, &hits, &misses);
	assert_int_equal(hits, 0);
	assert_int_equal(misses, before);
	/* Written again, whole: */
	assert_cached_is_cold(f, &hits, &misses);
	assert_int_equal(misses, 0);
	free(dir);
}

struct concurrent_pack {
	struct fixture *f;
	char *out;
	struct pack_result r;
};

static void *concurrent_pack_thread(void *p)
{
	struct concurrent_pack *cp = p;
	struct pack_options o = options(cp->f, false);
	char *dir = xasprintf("%s/cache", cp->f->root);
	int fd = open(cp->out, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);

	o.on_warning = NULL;
	o.to_fd = true;
	o.out_fd = fd;
	o.cache_dir = dir;
	pack_run(&o, &cp->r);
	close(fd);
	free(dir);
	return NULL;
}

/* Packs sharing one cache at the same time, empty and then full: all make the same bytes. */
static void test_cache_concurrent_packs(void **state)
{
	struct fixture *f = *state;
	struct pack_result rn;
	size_t ln;
	char *cold;

	put_tree(f);
	settle(f);
	cold = pack_bytes(f, false, "cold.tar.gz", &ln, &rn);
	for (int round = 0; round < 3; round++) {
		struct concurrent_pack cp[4];
		pthread_t t[4];

		for (int i = 0; i < 4; i++) {
			cp[i].f = f;
			cp[i].out = xasprintf("%s/conc%d.tar.gz", f->root, i);
			assert_int_equal(
			    pthread_create(&t[i], NULL, concurrent_pack_thread, &cp[i]), 0);
		}
		for (int i = 0; i < 4; i++) {
			size_t len;
			char *bytes;

			assert_int_equal(pthread_join(t[i], NULL), 0);
			assert_int_equal(cp[i].r.status, PACK_OK);
			assert_string_equal(cp[i].r.sha256, rn.sha256);
			bytes = slurp(cp[i].out, &len);
			assert_int_equal(len, ln);
			assert_memory_equal(bytes, cold, ln);
			free(bytes);
			free(cp[i].out);
			pack_result_clear(&cp[i].r);
		}
	}
	free(cold);
	pack_result_clear(&rn);
}

/* The cache keeps to its cap, dropping what was used least recently. */
static void test_cache_capped(void **state)
{
	struct fixture *f = *state;
	struct pack_options o = options(f, false);
	struct pack_result r;
	char *dir = xasprintf("%s/cache", f->root);
	char *cmd = xasprintf("test $(du -sb '%s' | cut -f1) -le 600000", dir);
	int fd = open("/dev/null", O_WRONLY | O_CLOEXEC);

	put_tree(f);
	settle(f);
	o.to_fd = true;
	o.out_fd = fd;
	o.cache_dir = dir;
	o.cache_max_bytes = 512 * 1024;
	pack_ok(&o, &r);
	pack_result_clear(&r);
	assert_int_equal(system(cmd), 0);
	close(fd);
	free(cmd);
	free(dir);
}

static void test_inspect(void **state)
{
	struct fixture *f = *state;
	struct pack_options o = options(f, false);
	struct pack_result r;

	put_file(f, "Dockerfile", "FROM scratch\n");
	put_file(f, ".dockerignore", "secret*\nnode_modules\n");
	put_file(f, "secret.txt", "x\n");
	put_file(f, "node_modules/m/index.js", "x\n");
	for (int i = 1; i <= 12; i++) {
		char *name = xasprintf("f%02d", i);
		char *text = xmalloc((size_t)i * 10 + 1);

		memset(text, 'x', (size_t)i * 10);
		text[i * 10] = '\0';
		put_file(f, name, text);
		free(name);
		free(text);
	}
	put_symlink(f, "link", "f01");
	o.list_files = true;
	pack_ok(&o, &r);
	assert_null(r.archive_path);
	assert_int_equal(count_files(f->spool), 0);
	assert_int_equal(r.nfiles, 15);
	assert_int_equal(r.file_count, 15);
	assert_string_equal(r.files[0].path, "./.dockerignore");
	assert_string_equal(r.files[14].path, "./link");
	assert_int_equal(r.files[14].type, 'l');
	assert_int_equal(r.files[3].type, 'f');
	assert_int_equal(r.files[3].size, 20);
	assert_int_equal(r.files[3].mode, 0644);
	assert_int_equal(r.nlargest, 10);
	assert_string_equal(r.largest[0].path, "./f12");
	assert_int_equal(r.largest[0].size, 120);
	assert_string_equal(r.largest[9].path, "./f03");
	assert_int_equal(r.nexcluded, 2);
	assert_string_equal(r.excluded[0], "./node_modules/");
	assert_string_equal(r.excluded[1], "./secret.txt");
	pack_result_clear(&r);
}

static void test_cancel(void **state)
{
	struct fixture *f = *state;
	struct pack_options o = options(f, true);
	struct pack_result r;
	char *path;

	put_file(f, "Dockerfile", "FROM scratch\n");
	put_file(f, "b", "b\n");
	/* Cancelled before it starts. */
	f->cancel = 1;
	pack_run(&o, &r);
	assert_int_equal(r.status, PACK_CANCELLED);
	assert_null(r.archive_path);
	assert_int_equal(count_files(f->spool), 0);
	pack_result_clear(&r);

	/* Cancelled half-way: the warning about ./a-fifo raises the flag. */
	f->cancel = 0;
	f->cancel_on_warning = true;
	path = xasprintf("%s/a-fifo", f->ctx);
	assert_int_equal(mkfifo(path, 0644), 0);
	free(path);
	pack_run(&o, &r);
	assert_int_equal(r.status, PACK_CANCELLED);
	assert_null(r.archive_path);
	/* Entries are written a chunk at a time: ./b after the FIFO never is. */
	assert_true(r.file_count < 2);
	assert_int_equal(count_files(f->spool), 0);
	pack_result_clear(&r);
}

static void test_bad_dockerignore(void **state)
{
	struct fixture *f = *state;
	struct pack_options o = options(f, true);
	struct pack_result r;

	put_file(f, "Dockerfile", "FROM scratch\n");
	put_file(f, ".dockerignore", "ok\n!\n");
	pack_run(&o, &r);
	assert_int_equal(r.status, PACK_ERROR);
	assert_string_equal(r.error, "invalid ./.dockerignore: illegal exclusion pattern: \"!\"");
	pack_result_clear(&r);

	/* Loads, but fails on every match: the pack fails on the first path matched. */
	put_file(f, ".dockerignore", "[Local-Only]\n");
	put_file(f, "x", "x\n");
	pack_run(&o, &r);
	assert_int_equal(r.status, PACK_ERROR);
	assert_non_null(strstr(r.error, "syntax error in pattern"));
	assert_int_equal(count_files(f->spool), 0);
	pack_result_clear(&r);
}

int main(void)
{
#define T(fn) cmocka_unit_test_setup_teardown(fn, fixture_setup, fixture_teardown)
	const struct CMUnitTest tests[] = {
	    T(test_dockerignore_applied),
	    T(test_dockerfile_and_dockerignore_kept),
	    T(test_dockerfile_in_excluded_dir_kept),
	    T(test_per_dockerfile_ignore_takes_precedence),
	    T(test_excluded_dir_not_walked),
	    T(test_fifo_and_socket_skipped),
	    T(test_symlinks_stored_not_followed),
	    T(test_unreadable_file_fails_with_path),
	    T(test_dockerfile_checks),
	    T(test_archive_contents),
	    T(test_same_input_identical_archive),
	    T(test_multi_member_gzip),
	    T(test_inspect),
	    T(test_cancel),
	    T(test_bad_dockerignore),
	    T(test_cache_repack_unchanged),
	    T(test_cache_content_change_same_size_and_mtime),
	    T(test_cache_big_file_piece_change),
	    T(test_cache_rename),
	    T(test_cache_mode_change),
	    T(test_cache_symlink_retarget),
	    T(test_cache_dockerignore_change),
	    T(test_cache_corrupt_entries),
	    T(test_cache_concurrent_packs),
	    T(test_cache_capped),
	};
#undef T

	/* Names in the archives are UTF-8: read them back as such. */
	setlocale(LC_CTYPE, "C.UTF-8");
	return cmocka_run_group_tests(tests, NULL, NULL);
}
