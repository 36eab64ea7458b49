/*
 * The container engines a local build can drive — docker, podman and buildah — and
 * the exact command lines each step runs with them.  Pure functions, no processes:
 * localbuild.c runs the commands through child.c.
 *
 * docker: `docker build` as the Together SDK runs it (BuildKit through buildx when
 * the plugin is installed, the classic builder otherwise; either way the image lands
 * in the daemon's image store, where `docker push` finds it — `docker buildx build`
 * would need `--load`, which a docker-container builder cannot always honour).
 * podman: `podman build`.  buildah: `buildah bud` (the name every version knows).
 *
 * Login and push use a per-job credential store: DOCKER_CONFIG=<job>/docker for
 * docker, REGISTRY_AUTH_FILE and --authfile <job>/auth.json for podman and buildah.
 * The build itself keeps the user's usual configuration, so base images from private
 * registries the user is logged in to still pull.
 */
#ifndef SNAPBUILD_ENGINE_H
#define SNAPBUILD_ENGINE_H

#include <stdbool.h>

enum engine_kind { ENGINE_DOCKER, ENGINE_PODMAN, ENGINE_BUILDAH };

/* "docker", "podman", "buildah". */
const char *engine_name(enum engine_kind k);

/* The engine of that name; -1 when unknown. */
int engine_parse(const char *name, enum engine_kind *out);

/*
 * Choose the engine for preference "auto", "docker", "podman" or "buildah".  An
 * engine is usable when its executable is on path_env; docker, under "auto", also
 * needs a daemon socket that accepts a connection (DOCKER_HOST if it names a unix
 * socket, else /var/run/docker.sock or $XDG_RUNTIME_DIR/docker.sock; a tcp:// or
 * ssh:// DOCKER_HOST is trusted as is).  "auto" tries docker, podman, buildah in that
 * order.  Returns 0, or -1 with *err (caller frees) naming every engine tried, why
 * it was not usable and how to install one.
 */
int engine_detect(const char *preference, const char *path_env, enum engine_kind *out, char **err);

/* Options shared by every command of one build. */
struct engine_opts {
	/* Global options placed right after the program name on every command, e.g.
	 * {"--storage-driver", "vfs", NULL}; may be NULL. */
	const char *const *global_args;
	/* false: --tls-verify=false on login and push (podman, buildah; docker trusts
	 * loopback registries by itself and has no such flag). */
	bool tls_verify;
	/* The job's private directory: the credential store lives there. */
	const char *job_dir;
};

struct engine_build {
	const char *context_dir;
	const char *dockerfile; /* relative to context_dir */
	const char *platform;   /* "linux/amd64"; NULL leaves it to the engine */
	const char *image_ref;
	const char *const *build_args; /* "KEY=VALUE" strings, NULL-terminated; may be NULL.
	                                  Only KEY goes on the command line: the build's
	                                  environment must carry KEY=VALUE */
	const char *isolation;         /* --isolation for podman and buildah; NULL: default */
};

/* NULL-terminated argument vectors; free with engine_argv_free. */
char **engine_build_argv(enum engine_kind k, const struct engine_opts *o,
                         const struct engine_build *b);
/* The password goes to the child's stdin (--password-stdin), never here. */
char **engine_login_argv(enum engine_kind k, const struct engine_opts *o, const char *registry_host,
                         const char *username);
char **engine_push_argv(enum engine_kind k, const struct engine_opts *o, const char *image_ref);
/* Removes the local tag once pushed, so unique per-build tags do not pile up; the
 * engine's layer and build caches stay. */
char **engine_rmi_argv(enum engine_kind k, const struct engine_opts *o, const char *image_ref);
void engine_argv_free(char **argv);

/* The credential store of a job: <job_dir>/docker (a DOCKER_CONFIG directory) for
 * docker, <job_dir>/auth.json for podman and buildah.  Caller frees. */
char *engine_auth_path(enum engine_kind k, const char *job_dir);

/* The environment entry that points login and push at it:
 * "DOCKER_CONFIG=<path>" or "REGISTRY_AUTH_FILE=<path>".  Caller frees. */
char *engine_auth_env(enum engine_kind k, const char *job_dir);

/*
 * Build arguments from a JSON object's text ({} or NULL: none) into a NULL-terminated
 * list of "KEY=VALUE" strings in the object's order.  Values are strings, numbers or
 * booleans (written as JSON writes them); keys are non-empty without '='.  Returns 0,
 * or -1 with *err (caller frees).  Free the list with engine_argv_free.
 */
int engine_build_args_parse(const char *json_text, char ***out, char **err);

/* host[:port] of a registry URL such as "registry.example.com:5000/ns" (a scheme,
 * if any, is dropped).  Caller frees. */
char *engine_registry_host(const char *registry_url);

/* The registry URL without a scheme or trailing slash, the prefix of image refs.
 * Caller frees. */
char *engine_registry_prefix(const char *registry_url);

#endif
