/*
 * One local build: unpack the spooled context into a private directory, build it
 * with docker, podman or buildah, log in to the registry with a per-job credential
 * store, push (retried), and remove the local tag.  Everything runs on the event
 * loop through child.c; the job engine above owns job state and the API calls
 * (registry credentials, register, alias) and hears back through callbacks.
 *
 * Children get a minimal environment built here: PATH (from the params), HOME,
 * LANG, TMPDIR (inside the job directory), the few variables engines need to find
 * their daemon, storage and proxies when the daemon itself has them
 * (XDG_RUNTIME_DIR, DOCKER_HOST, CONTAINER_HOST, CONTAINERS_CONF,
 * CONTAINERS_STORAGE_CONF, CONTAINERS_REGISTRIES_CONF, HTTP(S)_PROXY, NO_PROXY in
 * either case), and for login and push DOCKER_CONFIG or REGISTRY_AUTH_FILE.
 * Never the API key; the registry password only on login's stdin.
 */
#ifndef SNAPBUILD_LOCALBUILD_H
#define SNAPBUILD_LOCALBUILD_H

#include <stdbool.h>

#include "engine.h"

struct event_base;
struct localbuild;

/* Push attempts, and the first backoff (doubled after each failure). */
#define LOCALBUILD_PUSH_ATTEMPTS   3
#define LOCALBUILD_PUSH_BACKOFF_MS 500
/* Lines of output quoted in a failure message. */
#define LOCALBUILD_TAIL_LINES 10
/* Default time between SIGTERM and SIGKILL on cancel. */
#define LOCALBUILD_CANCEL_GRACE_MS 5000

struct localbuild_params {
	enum engine_kind engine;
	const char *archive_path;    /* the spooled .tar.gz context, .dockerignore applied */
	const char *dockerfile;      /* relative path inside the context; NULL: Dockerfile */
	const char *build_args_json; /* JSON object text; NULL or "{}": none */
	const char *platform;        /* "linux/amd64" | "linux/arm64"; NULL: engine default */
	const char *registry_url;    /* from the credentials: host[:port]/namespace */
	const char *username, *password;
	const char *image_name; /* "image-<uuid>:<uuid>"; ref = <registry_url>/<image_name> */
	const char *tmp_root;   /* parent of the private job directory (made 0700) */
	const char *path_env;   /* PATH for children */
	const char *const *extra_engine_args; /* global engine options, e.g. --storage-driver
	                                         vfs; may be NULL */
	const char *isolation; /* podman/buildah --isolation (e.g. "chroot"); NULL: default */
	bool tls_verify;       /* false: --tls-verify=false (podman/buildah), plain-HTTP registry */
	bool keep_image;       /* true: leave the pushed tag in the local engine */
	int cancel_grace_ms;   /* SIGTERM→SIGKILL on cancel; 0: LOCALBUILD_CANCEL_GRACE_MS */
};

/* on_step and on_log may call localbuild_cancel; only on_done may free the build. */
struct localbuild_cbs {
	/* "build", "auth", "push", as each starts. */
	void (*on_step)(void *arg, const char *step);
	/* One line of engine output (or a note of ours, such as a push retry). */
	void (*on_log)(void *arg, const char *step, const char *line);
	/* The end: error NULL and the pushed image_ref, or an error message ("cancelled"
	 * after localbuild_cancel).  The job directory is gone by then.  Always from the
	 * loop, never from inside localbuild_start or localbuild_cancel; the build may be
	 * freed from here. */
	void (*on_done)(void *arg, const char *error, const char *image_ref);
};

/* Start a build; the params are copied.  Never NULL: a build that cannot start
 * reports its error through on_done. */
struct localbuild *localbuild_start(struct event_base *base, const struct localbuild_params *p,
                                    const struct localbuild_cbs *cbs, void *arg);

/* Stop: SIGTERM to the running engine's process group, SIGKILL after the grace;
 * on_done("cancelled") follows.  No-op once the build has ended. */
void localbuild_cancel(struct localbuild *lb);

/* Free the build.  A build still running is abandoned: its process group is killed,
 * its directory removed, and no callback comes. */
void localbuild_free(struct localbuild *lb);

/* The private job directory (context, credentials, TMPDIR), for tests and logs;
 * NULL before it exists or after it was removed. */
const char *localbuild_dir(const struct localbuild *lb);

#endif
