/*
 * Child processes on the libevent loop.  A child runs in its own process group with
 * a complete environment given by the caller (nothing inherited), its stdout and
 * stderr turned into lines (escape sequences stripped, carriage-return progress
 * collapsed) and its exit status collected by a SIGCHLD handler on the loop.  The
 * local build backend runs docker, podman and buildah through it.
 */
#ifndef SNAPBUILD_CHILD_H
#define SNAPBUILD_CHILD_H

#include <stddef.h>
#include <sys/types.h>

struct event_base;
struct child;

/* Longest line handed to on_line; longer output is split at this many bytes. */
#define CHILD_LINE_MAX (64 * 1024)

struct child_spec {
	/* argv[0] is an absolute path or a name looked up in the PATH of envp. */
	char *const *argv;
	/* The child's whole environment (NULL-terminated); nothing else is inherited. */
	char *const *envp;
	/* Working directory; NULL keeps the daemon's. */
	const char *cwd;
	/* Written to the child's stdin through a pipe, which is then closed; NULL gives
	 * /dev/null.  The one way secrets (a registry password) reach a child. */
	const char *stdin_data;
	size_t stdin_len;
};

struct child_cbs {
	/* One line of output, stream 1 (stdout) or 2 (stderr), without its newline. */
	void (*on_line)(void *arg, int stream, const char *line);
	/* The process was reaped and both pipes reached end of file (or stayed open
	 * CHILD_DRAIN_MS after the process exited, held by a grandchild).  wstatus as
	 * from waitpid.  The child may be freed from here. */
	void (*on_exit)(void *arg, int wstatus);
};

/* How long output pipes may outlive the process before on_exit comes anyway. */
#define CHILD_DRAIN_MS 2000

/* Install the SIGCHLD handler on base.  Once, before the first child_spawn. */
void child_init(struct event_base *base);

/* Remove the handler (tests, shutdown).  No child may still be running. */
void child_shutdown(void);

/* Start a child.  NULL with *err set (caller frees) when it cannot be started, e.g.
 * the program is not found on PATH.  Callbacks come from the loop, never from here. */
struct child *child_spawn(const struct child_spec *spec, const struct child_cbs *cbs, void *arg,
                          char **err);

/* The process id, which is also its process group id. */
pid_t child_pid(const struct child *c);

/* SIGTERM to the child's process group.  As soon as the child exits — or after
 * grace_ms if it has not — SIGKILL goes to whatever is left of the group, so
 * nothing it started survives, even what ignored SIGTERM.  on_exit still comes.
 * No-op after on_exit. */
void child_terminate(struct child *c, int grace_ms);

/* Free a child after on_exit, or abandon a running one: its group gets SIGKILL and
 * no callback comes.  Safe to call from inside either callback. */
void child_free(struct child *c);

/* Absolute path of an executable name found in the colon-separated path_env
 * (a name containing '/' is taken as is), or NULL; the caller frees. */
char *child_find_executable(const char *name, const char *path_env);

#endif
