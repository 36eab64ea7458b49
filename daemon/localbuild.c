/*
 * One local build (see localbuild.h) as a small state machine on the loop:
 *
 *   unpack (worker thread) → build → login → push ⇄ backoff → rmi → done
 *
 * The context is unpacked by a worker thread so a large archive does not stall the
 * daemon's loop; the thread only touches its own inputs and reports through a pipe.
 * Each engine step is one child process; its exit moves the machine on.  Build and
 * login run once; a push is idempotent and is retried with backoff, as the SDK does.
 * Whatever happens, the job directory — context, credential store, TMPDIR — is
 * removed before on_done, which always comes from a deferred event so callers never
 * see a callback from inside their own call.
 */
#include "localbuild.h"

#include <archive.h>
#include <archive_entry.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <limits.h>
#include <pthread.h>
#include <pwd.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <event2/event.h>

#include "child.h"
#include "log.h"
#include "util.h"

enum localbuild_state {
	LB_START,
	LB_UNPACK,
	LB_BUILD,
	LB_AUTH,
	LB_PUSH,
	LB_BACKOFF,
	LB_RMI,
	LB_DONE,
};

struct localbuild {
	struct event_base *base;
	struct localbuild_cbs cbs;
	void *arg;

	enum engine_kind engine;
	char *archive_path, *dockerfile, *platform, *build_args_json, *registry_url;
	char *username, *password, *image_name, *tmp_root, *path_env, *isolation;
	char **global_args;
	bool tls_verify, keep_image;
	int grace_ms;

	char *image_ref, *registry_host;
	char **build_args;
	char *dir, *context_dir;
	char **env, **auth_env, **build_env;

	enum localbuild_state state;
	const char *step;
	struct child *child;
	int push_attempt;
	struct event *backoff_ev;
	struct event *defer_ev; /* starts the build, later delivers on_done */
	bool cancelled;
	char *error;     /* the outcome once done; NULL: success */
	char *rmi_error; /* the outcome to report after the rmi step */

	char *tail[LOCALBUILD_TAIL_LINES];
	size_t tail_next, tail_count;

	/* The unpack worker and what it hands back. */
	pthread_t thread;
	bool thread_running;
	atomic_bool thread_stop;
	int notify[2];
	struct event *notify_ev;
	char *unpack_err;
	size_t unpack_files;
	uint64_t unpack_bytes;
};

/* Variables passed through from the daemon's environment when it has them. */
static const char *const localbuild_pass_env[] = {"XDG_RUNTIME_DIR",
                                                  "DOCKER_HOST",
                                                  "CONTAINER_HOST",
                                                  "CONTAINERS_CONF",
                                                  "CONTAINERS_STORAGE_CONF",
                                                  "CONTAINERS_REGISTRIES_CONF",
                                                  "HTTP_PROXY",
                                                  "HTTPS_PROXY",
                                                  "NO_PROXY",
                                                  "http_proxy",
                                                  "https_proxy",
                                                  "no_proxy",
                                                  NULL};

static void localbuild_step_build(struct localbuild *lb);
static void localbuild_step_auth(struct localbuild *lb);
static void localbuild_step_push(struct localbuild *lb);

static char *localbuild_strdup(const char *s)
{
	return s != NULL ? xstrdup(s) : NULL;
}

static char **localbuild_strv_dup(const char *const *v)
{
	size_t n = 0, i;
	char **copy;

	while (v != NULL && v[n] != NULL)
		n++;
	copy = xcalloc(n + 1, sizeof(*copy));
	for (i = 0; i < n; i++)
		copy[i] = xstrdup(v[i]);
	return copy;
}

static void localbuild_wipe(char **s)
{
	if (*s != NULL) {
		explicit_bzero(*s, strlen(*s));
		free(*s);
		*s = NULL;
	}
}

/* --- the job directory --------------------------------------------------- */

static int localbuild_rm_cb(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
	(void)st;
	(void)flag;
	(void)ftw;
	if (remove(path) == -1 && errno != ENOENT)
		log_warn("cannot remove %s", path);
	return 0;
}

static void localbuild_remove_dir(struct localbuild *lb)
{
	if (lb->dir == NULL)
		return;
	if (nftw(lb->dir, localbuild_rm_cb, 16, FTW_DEPTH | FTW_PHYS | FTW_MOUNT) == -1 &&
	    errno != ENOENT)
		log_warn("cannot remove the build directory %s", lb->dir);
	free(lb->dir);
	lb->dir = NULL;
}

/*
 * A path from the archive (or the Dockerfile option) as a clean relative path: no
 * leading "/", no "..", "." and empty components dropped.  NULL when it would
 * leave the context; "" for the context root itself.
 */
static char *localbuild_relpath(const char *name)
{
	char *copy, *tok, *save = NULL, *out;
	size_t len = 0;

	if (name == NULL || name[0] == '/')
		return NULL;
	copy = xstrdup(name);
	out = xcalloc(1, strlen(name) + 1);
	for (tok = strtok_r(copy, "/", &save); tok != NULL; tok = strtok_r(NULL, "/", &save)) {
		if (strcmp(tok, ".") == 0)
			continue;
		if (strcmp(tok, "..") == 0) {
			free(out);
			out = NULL;
			break;
		}
		if (len > 0)
			out[len++] = '/';
		memcpy(out + len, tok, strlen(tok));
		len += strlen(tok);
	}
	free(copy);
	return out;
}

/* One entry of the archive, written under the context directory; NULL or an error. */
static char *localbuild_unpack_entry(struct localbuild *lb, struct archive *in, struct archive *out,
                                     struct archive_entry *e)
{
	const char *orig = archive_entry_pathname(e);
	mode_t type = archive_entry_filetype(e);
	char *name, *rel = NULL, *full, *err = NULL;
	const void *buf;
	size_t size;
	la_int64_t offset;
	int r;

	if (orig == NULL)
		return xstrdup("an entry's name cannot be read");
	/* Our copy: the entry's own string goes away when the path is rewritten. */
	name = xstrdup(orig);
	rel = localbuild_relpath(name);
	if (rel == NULL) {
		err = xasprintf("entry '%s' lies outside the context", name);
		goto out;
	}
	if (archive_entry_hardlink(e) != NULL ||
	    (type != AE_IFREG && type != AE_IFDIR && type != AE_IFLNK)) {
		err = xasprintf("entry '%s' is not a file, directory or symbolic link", name);
		goto out;
	}
	if (*rel == '\0')
		goto out;
	full = xasprintf("%s/%s", lb->context_dir, rel);
	archive_entry_set_pathname(e, full);
	free(full);
	/* The engine (running as us) must read everything, and we must remove it. */
	archive_entry_set_perm(e,
	                       (archive_entry_perm(e) & 0777) | (type == AE_IFDIR ? 0700 : 0600));
	if (archive_write_header(out, e) < ARCHIVE_WARN) {
		err = xasprintf("%s: %s", name, archive_error_string(out));
		goto out;
	}
	if (type == AE_IFREG) {
		while ((r = archive_read_data_block(in, &buf, &size, &offset)) == ARCHIVE_OK) {
			if (archive_write_data_block(out, buf, size, offset) < ARCHIVE_WARN) {
				err = xasprintf("%s: %s", name, archive_error_string(out));
				goto out;
			}
			lb->unpack_bytes += size;
		}
		if (r != ARCHIVE_EOF) {
			err = xasprintf("%s: %s", name, archive_error_string(in));
			goto out;
		}
		lb->unpack_files++;
	}
	if (archive_write_finish_entry(out) < ARCHIVE_WARN)
		err = xasprintf("%s: %s", name, archive_error_string(out));
out:
	free(name);
	free(rel);
	return err;
}

/*
 * Unpack the archive into the context directory.  Only regular files, directories
 * and symbolic links (created as links, never followed: a later entry cannot write
 * through one); no absolute paths or "..", no owners, no set-id bits, no devices or
 * hard links.  Runs on the worker thread.  Returns NULL or an error message.
 */
static char *localbuild_unpack(struct localbuild *lb)
{
	struct archive *in = archive_read_new();
	struct archive *out = archive_write_disk_new();
	struct archive_entry *e;
	char *err = NULL;
	int r;

	archive_read_support_filter_gzip(in);
	archive_read_support_format_tar(in);
	archive_write_disk_set_options(out, ARCHIVE_EXTRACT_PERM | ARCHIVE_EXTRACT_TIME |
	                                        ARCHIVE_EXTRACT_SECURE_SYMLINKS |
	                                        ARCHIVE_EXTRACT_SECURE_NODOTDOT);
	if (archive_read_open_filename(in, lb->archive_path, 64 * 1024) != ARCHIVE_OK) {
		err = xasprintf("%s: %s", lb->archive_path, archive_error_string(in));
		goto out;
	}
	while (err == NULL) {
		if (atomic_load(&lb->thread_stop)) {
			err = xstrdup("cancelled");
			break;
		}
		r = archive_read_next_header(in, &e);
		if (r == ARCHIVE_EOF)
			break;
		if (r < ARCHIVE_WARN)
			err = xstrdup(archive_error_string(in));
		else
			err = localbuild_unpack_entry(lb, in, out, e);
	}
	if (err == NULL && archive_write_close(out) != ARCHIVE_OK)
		err = xstrdup(archive_error_string(out));
out:
	archive_read_free(in);
	archive_write_free(out);
	return err;
}

static void *localbuild_unpack_main(void *arg)
{
	struct localbuild *lb = arg;
	ssize_t n;

	lb->unpack_err = localbuild_unpack(lb);
	do
		n = write(lb->notify[1], "", 1);
	while (n == -1 && errno == EINTR);
	return NULL;
}

/* --- outcome ------------------------------------------------------------- */

/* The end, success or not: clean up now, report from the loop. */
static void localbuild_finish(struct localbuild *lb, char *error)
{
	lb->state = LB_DONE;
	lb->error = error;
	localbuild_remove_dir(lb);
	localbuild_wipe(&lb->password);
	event_active(lb->defer_ev, EV_TIMEOUT, 1);
}

static void localbuild_tail_clear(struct localbuild *lb)
{
	size_t i;

	for (i = 0; i < LOCALBUILD_TAIL_LINES; i++) {
		free(lb->tail[i]);
		lb->tail[i] = NULL;
	}
	lb->tail_next = lb->tail_count = 0;
}

/* "what (exit code N); last lines of output:\n..." from the status and the tail. */
static char *localbuild_failure(struct localbuild *lb, const char *what, int wstatus)
{
	char *status, *msg, *next;
	size_t i, first;

	if (WIFEXITED(wstatus))
		status = xasprintf("exit code %d", WEXITSTATUS(wstatus));
	else if (WIFSIGNALED(wstatus))
		status = xasprintf("killed by signal %d", WTERMSIG(wstatus));
	else
		status = xasprintf("wait status %d", wstatus);
	msg = xasprintf("%s (%s %s)", what, engine_name(lb->engine), status);
	free(status);
	if (lb->tail_count > 0) {
		next = xasprintf("%s; last lines of output:", msg);
		free(msg);
		msg = next;
	}
	first = (lb->tail_next + LOCALBUILD_TAIL_LINES - lb->tail_count) % LOCALBUILD_TAIL_LINES;
	for (i = 0; i < lb->tail_count; i++) {
		next = xasprintf("%s\n%s", msg, lb->tail[(first + i) % LOCALBUILD_TAIL_LINES]);
		free(msg);
		msg = next;
	}
	return msg;
}

static void localbuild_log(struct localbuild *lb, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static void localbuild_log(struct localbuild *lb, const char *fmt, ...)
{
	va_list ap;
	char *line;

	va_start(ap, fmt);
	line = xvasprintf(fmt, ap);
	va_end(ap);
	if (lb->cbs.on_log != NULL)
		lb->cbs.on_log(lb->arg, lb->step, line);
	free(line);
}

/* --- child processes ----------------------------------------------------- */

static void localbuild_line_cb(void *arg, int stream, const char *line)
{
	struct localbuild *lb = arg;

	(void)stream;
	free(lb->tail[lb->tail_next]);
	lb->tail[lb->tail_next] = xstrdup(line);
	lb->tail_next = (lb->tail_next + 1) % LOCALBUILD_TAIL_LINES;
	if (lb->tail_count < LOCALBUILD_TAIL_LINES)
		lb->tail_count++;
	/* Last: the callee may free the build. */
	if (lb->cbs.on_log != NULL)
		lb->cbs.on_log(lb->arg, lb->step, line);
}

static void localbuild_exit_cb(void *arg, int wstatus);

static const struct child_cbs localbuild_child_cbs = {localbuild_line_cb, localbuild_exit_cb};

/* Start argv (freed here) in the context directory; NULL or why it did not start. */
static char *localbuild_spawn(struct localbuild *lb, char **argv, char **envp, const char *input)
{
	struct child_spec spec = {argv, envp, lb->context_dir, input, input ? strlen(input) : 0};
	char *err = NULL;

	localbuild_tail_clear(lb);
	lb->child = child_spawn(&spec, &localbuild_child_cbs, lb, &err);
	engine_argv_free(argv);
	return err;
}

/* Run the current step's command, or end the build if cancelled meanwhile (from a
 * callback) or if the engine cannot be started. */
static void localbuild_run(struct localbuild *lb, char **argv, char **envp, const char *input)
{
	char *err;

	if (lb->cancelled) {
		engine_argv_free(argv);
		localbuild_finish(lb, xstrdup("cancelled"));
		return;
	}
	err = localbuild_spawn(lb, argv, envp, input);
	if (err != NULL) {
		localbuild_finish(
		    lb,
		    xasprintf("cannot run the %s engine: %s; install it (e.g. "
		              "apt-get install %s) or choose another local "
		              "engine",
		              engine_name(lb->engine), err,
		              lb->engine == ENGINE_DOCKER ? "docker.io" : engine_name(lb->engine)));
		free(err);
	}
}

static struct engine_opts localbuild_engine_opts(struct localbuild *lb)
{
	struct engine_opts o = {(const char *const *)lb->global_args, lb->tls_verify, lb->dir};

	return o;
}

static void localbuild_set_step(struct localbuild *lb, const char *step)
{
	lb->step = step;
	if (lb->cbs.on_step != NULL)
		lb->cbs.on_step(lb->arg, step);
}

static void localbuild_step_build(struct localbuild *lb)
{
	struct engine_opts o = localbuild_engine_opts(lb);
	struct engine_build b = {lb->context_dir,
	                         lb->dockerfile,
	                         lb->platform,
	                         lb->image_ref,
	                         (const char *const *)lb->build_args,
	                         lb->isolation};

	lb->state = LB_BUILD;
	localbuild_run(lb, engine_build_argv(lb->engine, &o, &b), lb->build_env, NULL);
}

static void localbuild_step_auth(struct localbuild *lb)
{
	struct engine_opts o = localbuild_engine_opts(lb);

	lb->state = LB_AUTH;
	localbuild_set_step(lb, "auth");
	localbuild_run(lb, engine_login_argv(lb->engine, &o, lb->registry_host, lb->username),
	               lb->auth_env, lb->password);
}

static void localbuild_step_push(struct localbuild *lb)
{
	struct engine_opts o = localbuild_engine_opts(lb);

	lb->state = LB_PUSH;
	lb->push_attempt++;
	if (lb->push_attempt == 1)
		localbuild_set_step(lb, "push");
	localbuild_run(lb, engine_push_argv(lb->engine, &o, lb->image_ref), lb->auth_env, NULL);
}

/* Remove the local tag, then report outcome (the push's result, not the rmi's). */
static void localbuild_step_rmi(struct localbuild *lb, char *outcome)
{
	struct engine_opts o = localbuild_engine_opts(lb);
	char *err;

	if (lb->keep_image || lb->cancelled) {
		localbuild_finish(lb, outcome != NULL || !lb->cancelled ? outcome
		                                                        : xstrdup("cancelled"));
		return;
	}
	lb->state = LB_RMI;
	lb->rmi_error = outcome;
	err = localbuild_spawn(lb, engine_rmi_argv(lb->engine, &o, lb->image_ref), lb->env, NULL);
	if (err != NULL) {
		log_debug("cannot remove the local image %s: %s", lb->image_ref, err);
		free(err);
		lb->rmi_error = NULL;
		localbuild_finish(lb, outcome);
	}
}

static void localbuild_backoff_cb(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	localbuild_step_push(arg);
}

static void localbuild_exit_cb(void *arg, int wstatus)
{
	struct localbuild *lb = arg;
	bool ok = WIFEXITED(wstatus) && WEXITSTATUS(wstatus) == 0;

	child_free(lb->child);
	lb->child = NULL;
	if (lb->cancelled && lb->state != LB_RMI) {
		localbuild_finish(lb, xstrdup("cancelled"));
		return;
	}
	switch (lb->state) {
	case LB_BUILD:
		if (ok)
			localbuild_step_auth(lb);
		else
			localbuild_finish(lb, localbuild_failure(lb, "build failed", wstatus));
		break;
	case LB_AUTH:
		if (ok) {
			localbuild_step_push(lb);
		} else {
			char *what = xasprintf("registry login to %s refused", lb->registry_host);

			localbuild_finish(lb, localbuild_failure(lb, what, wstatus));
			free(what);
		}
		break;
	case LB_PUSH:
		if (ok) {
			localbuild_step_rmi(lb, NULL);
		} else if (lb->push_attempt < LOCALBUILD_PUSH_ATTEMPTS) {
			int ms = LOCALBUILD_PUSH_BACKOFF_MS << (lb->push_attempt - 1);
			struct timeval tv = {ms / 1000, (ms % 1000) * 1000};

			localbuild_log(lb, "push failed (attempt %d of %d), retrying in %.1f s",
			               lb->push_attempt, LOCALBUILD_PUSH_ATTEMPTS, ms / 1000.0);
			lb->state = LB_BACKOFF;
			evtimer_add(lb->backoff_ev, &tv);
		} else {
			char *what =
			    xasprintf("push failed after %d attempts", LOCALBUILD_PUSH_ATTEMPTS);

			localbuild_step_rmi(lb, localbuild_failure(lb, what, wstatus));
			free(what);
		}
		break;
	case LB_RMI: {
		char *outcome = lb->rmi_error;

		if (!ok)
			log_debug("removing the local image %s failed (status %d)", lb->image_ref,
			          wstatus);
		lb->rmi_error = NULL;
		if (outcome == NULL && lb->cancelled)
			outcome = xstrdup("cancelled");
		localbuild_finish(lb, outcome);
		break;
	}
	default:
		fatalx("localbuild: child exit in state %d", lb->state);
	}
}

/* --- setup --------------------------------------------------------------- */

static char **localbuild_make_env(struct localbuild *lb, const char *extra)
{
	const char *const *name;
	const char *home = getenv("HOME"), *lang = getenv("LANG");
	struct passwd *pw;
	char **env;
	size_t n = 0;

	env =
	    xcalloc(8 + sizeof(localbuild_pass_env) / sizeof(localbuild_pass_env[0]), sizeof(*env));
	env[n++] = xasprintf("PATH=%s", lb->path_env != NULL ? lb->path_env : "/usr/bin:/bin");
	if (home == NULL || *home == '\0')
		home = (pw = getpwuid(getuid())) != NULL ? pw->pw_dir : "/";
	env[n++] = xasprintf("HOME=%s", home);
	env[n++] = xasprintf("LANG=%s", lang != NULL && *lang != '\0' ? lang : "C.UTF-8");
	env[n++] = xasprintf("TMPDIR=%s/tmp", lb->dir);
	for (name = localbuild_pass_env; *name != NULL; name++) {
		const char *v = getenv(*name);

		if (v != NULL)
			env[n++] = xasprintf("%s=%s", *name, v);
	}
	if (extra != NULL)
		env[n++] = xstrdup(extra);
	return env;
}

/*
 * The build step's environment: the engine's own, plus each build arg's value (the
 * command line names it only).  A build arg named like one of the engine's own
 * variables (PATH, HOME, ...) would change how the engine runs: refused.
 */
static char *localbuild_make_build_env(struct localbuild *lb)
{
	size_t n = 0, nargs = 0;
	while (lb->env[n] != NULL)
		n++;
	while (lb->build_args[nargs] != NULL)
		nargs++;
	lb->build_env = xcalloc(n + nargs + 1, sizeof(char *));
	for (size_t i = 0; i < n; i++)
		lb->build_env[i] = xstrdup(lb->env[i]);
	for (size_t k = 0; k < nargs; k++) {
		const char *arg = lb->build_args[k];
		size_t len = strcspn(arg, "=");
		for (size_t i = 0; i < n; i++)
			if (strncmp(lb->env[i], arg, len) == 0 && lb->env[i][len] == '=')
				return xasprintf("build arg '%.*s' cannot be passed to a local engine: "
				                 "the engine's own environment uses that name",
				                 (int)len, arg);
		lb->build_env[n + k] = xstrdup(arg);
	}
	return NULL;
}

/* Job directory, parsed options and environments; NULL or an error message. */
static char *localbuild_prepare(struct localbuild *lb)
{
	char *real_root = NULL, *templ = NULL, *err = NULL, *sub, *auth, *prefix;

	if (engine_build_args_parse(lb->build_args_json, &lb->build_args, &err) == -1)
		goto out;
	sub = localbuild_relpath(lb->dockerfile);
	if (sub == NULL || *sub == '\0') {
		err =
		    xasprintf("the Dockerfile path '%s' is not inside the context", lb->dockerfile);
		free(sub);
		goto out;
	}
	free(lb->dockerfile);
	lb->dockerfile = sub;
	if (lb->registry_url == NULL || lb->image_name == NULL || lb->username == NULL ||
	    lb->password == NULL) {
		err = xstrdup("registry credentials are incomplete");
		goto out;
	}
	prefix = engine_registry_prefix(lb->registry_url);
	lb->image_ref = xasprintf("%s/%s", prefix, lb->image_name);
	free(prefix);
	lb->registry_host = engine_registry_host(lb->registry_url);

	/* Resolved, so the symlink checks of the unpacker see no link in our own path. */
	real_root = realpath(lb->tmp_root != NULL ? lb->tmp_root : "/tmp", NULL);
	if (real_root == NULL) {
		err = xasprintf("temporary directory %s: %s", lb->tmp_root, strerror(errno));
		goto out;
	}
	templ = xasprintf("%s/snapbuild-local-XXXXXX", real_root);
	if (mkdtemp(templ) == NULL) {
		err = xasprintf("cannot create a directory in %s: %s", real_root, strerror(errno));
		goto out;
	}
	lb->dir = templ;
	templ = NULL;
	lb->context_dir = xasprintf("%s/context", lb->dir);
	sub = xasprintf("%s/tmp", lb->dir);
	auth = engine_auth_path(lb->engine, lb->dir);
	if (mkdir(lb->context_dir, 0700) == -1 || mkdir(sub, 0700) == -1 ||
	    (lb->engine == ENGINE_DOCKER && mkdir(auth, 0700) == -1))
		err = xasprintf("cannot create directories in %s: %s", lb->dir, strerror(errno));
	free(sub);
	free(auth);
	if (err != NULL)
		goto out;
	lb->env = localbuild_make_env(lb, NULL);
	if ((err = localbuild_make_build_env(lb)) != NULL)
		goto out;
	auth = engine_auth_env(lb->engine, lb->dir);
	lb->auth_env = localbuild_make_env(lb, auth);
	free(auth);
out:
	free(real_root);
	free(templ);
	return err;
}

static void localbuild_unpacked_cb(evutil_socket_t fd, short what, void *arg)
{
	struct localbuild *lb = arg;
	char *err, *path;
	struct stat st;

	(void)fd;
	(void)what;
	pthread_join(lb->thread, NULL);
	lb->thread_running = false;
	err = lb->unpack_err;
	lb->unpack_err = NULL;
	if (lb->cancelled) {
		free(err);
		localbuild_finish(lb, xstrdup("cancelled"));
		return;
	}
	if (err != NULL) {
		localbuild_finish(lb, xasprintf("cannot unpack the build context: %s", err));
		free(err);
		return;
	}
	path = xasprintf("%s/%s", lb->context_dir, lb->dockerfile);
	if (lstat(path, &st) == -1) {
		localbuild_finish(lb, xasprintf("the Dockerfile '%s' is not in the build context",
		                                lb->dockerfile));
		free(path);
		return;
	}
	free(path);
	localbuild_log(lb, "context unpacked: %zu files, %llu bytes", lb->unpack_files,
	               (unsigned long long)lb->unpack_bytes);
	if (lb->state == LB_UNPACK)
		localbuild_step_build(lb);
}

static void localbuild_begin(struct localbuild *lb)
{
	sigset_t all, old;
	char *err;
	int r;

	localbuild_set_step(lb, "build");
	if (lb->cancelled)
		return;
	err = localbuild_prepare(lb);
	if (err != NULL) {
		localbuild_finish(lb, err);
		return;
	}
	if (pipe2(lb->notify, O_CLOEXEC) == -1) {
		localbuild_finish(lb, xasprintf("cannot create a pipe: %s", strerror(errno)));
		return;
	}
	lb->notify_ev = event_new(lb->base, lb->notify[0], EV_READ, localbuild_unpacked_cb, lb);
	event_add(lb->notify_ev, NULL);
	lb->state = LB_UNPACK;
	/* The worker takes no signals: they belong to the loop's thread. */
	sigfillset(&all);
	pthread_sigmask(SIG_SETMASK, &all, &old);
	r = pthread_create(&lb->thread, NULL, localbuild_unpack_main, lb);
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	if (r != 0) {
		localbuild_finish(lb, xasprintf("cannot start the unpacker: %s", strerror(r)));
		return;
	}
	lb->thread_running = true;
}

static void localbuild_defer_cb(evutil_socket_t fd, short what, void *arg)
{
	struct localbuild *lb = arg;

	(void)fd;
	(void)what;
	if (lb->state == LB_START) {
		localbuild_begin(lb);
		return;
	}
	/* Last: the callee may free the build. */
	if (lb->cbs.on_done != NULL)
		lb->cbs.on_done(lb->arg, lb->error, lb->error == NULL ? lb->image_ref : NULL);
}

struct localbuild *localbuild_start(struct event_base *base, const struct localbuild_params *p,
                                    const struct localbuild_cbs *cbs, void *arg)
{
	struct localbuild *lb = xcalloc(1, sizeof(*lb));

	lb->base = base;
	lb->cbs = *cbs;
	lb->arg = arg;
	lb->engine = p->engine;
	lb->archive_path = localbuild_strdup(p->archive_path);
	lb->dockerfile = xstrdup(p->dockerfile != NULL ? p->dockerfile : "Dockerfile");
	lb->platform = localbuild_strdup(p->platform);
	lb->build_args_json = localbuild_strdup(p->build_args_json);
	lb->registry_url = localbuild_strdup(p->registry_url);
	lb->username = localbuild_strdup(p->username);
	lb->password = localbuild_strdup(p->password);
	lb->image_name = localbuild_strdup(p->image_name);
	lb->tmp_root = localbuild_strdup(p->tmp_root);
	lb->path_env = localbuild_strdup(p->path_env);
	lb->isolation = localbuild_strdup(p->isolation);
	lb->global_args = localbuild_strv_dup(p->extra_engine_args);
	lb->tls_verify = p->tls_verify;
	lb->keep_image = p->keep_image;
	lb->grace_ms = p->cancel_grace_ms > 0 ? p->cancel_grace_ms : LOCALBUILD_CANCEL_GRACE_MS;
	lb->notify[0] = lb->notify[1] = -1;
	lb->step = "build";
	lb->state = LB_START;
	lb->defer_ev = event_new(base, -1, 0, localbuild_defer_cb, lb);
	lb->backoff_ev = evtimer_new(base, localbuild_backoff_cb, lb);
	event_active(lb->defer_ev, EV_TIMEOUT, 1);
	return lb;
}

void localbuild_cancel(struct localbuild *lb)
{
	if (lb->state == LB_DONE || lb->cancelled)
		return;
	lb->cancelled = true;
	switch (lb->state) {
	case LB_START:
	case LB_BACKOFF:
		evtimer_del(lb->backoff_ev);
		localbuild_finish(lb, xstrdup("cancelled"));
		break;
	case LB_UNPACK:
		atomic_store(&lb->thread_stop, true);
		break;
	default:
		if (lb->child != NULL)
			child_terminate(lb->child, lb->grace_ms);
		break;
	}
}

const char *localbuild_dir(const struct localbuild *lb)
{
	return lb->dir;
}

void localbuild_free(struct localbuild *lb)
{
	size_t i;

	if (lb == NULL)
		return;
	child_free(lb->child);
	if (lb->thread_running) {
		atomic_store(&lb->thread_stop, true);
		pthread_join(lb->thread, NULL);
	}
	localbuild_remove_dir(lb);
	if (lb->notify_ev != NULL)
		event_free(lb->notify_ev);
	for (i = 0; i < 2; i++)
		if (lb->notify[i] != -1)
			close(lb->notify[i]);
	event_free(lb->defer_ev);
	event_free(lb->backoff_ev);
	localbuild_wipe(&lb->password);
	free(lb->archive_path);
	free(lb->dockerfile);
	free(lb->platform);
	free(lb->build_args_json);
	free(lb->registry_url);
	free(lb->username);
	free(lb->image_name);
	free(lb->tmp_root);
	free(lb->path_env);
	free(lb->isolation);
	engine_argv_free(lb->global_args);
	free(lb->image_ref);
	free(lb->registry_host);
	engine_argv_free(lb->build_args);
	free(lb->context_dir);
	engine_argv_free(lb->env);
	engine_argv_free(lb->build_env);
	engine_argv_free(lb->auth_env);
	free(lb->error);
	free(lb->rmi_error);
	free(lb->unpack_err);
	localbuild_tail_clear(lb);
	free(lb);
}
