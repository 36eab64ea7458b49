/*
 * Engine choice and command lines (see engine.h).  Every vector is built the same
 * way: program, global options, subcommand, options, operand — so a test can pin
 * each one exactly and a reader sees in one place what a build runs.
 */
#include "engine.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <json-c/json.h>

#include "child.h"
#include "util.h"

struct engine_vec {
	char **v;
	size_t n, cap;
};

static void engine_vec_add(struct engine_vec *a, const char *s)
{
	if (a->n + 2 > a->cap) {
		a->cap = a->cap ? a->cap * 2 : 16;
		a->v = xrealloc(a->v, a->cap * sizeof(*a->v));
	}
	a->v[a->n++] = xstrdup(s);
	a->v[a->n] = NULL;
}

static void engine_vec_addv(struct engine_vec *a, const char *const *list)
{
	for (; list != NULL && *list != NULL; list++)
		engine_vec_add(a, *list);
}

/* Program name and global options: the start of every command. */
static void engine_vec_start(struct engine_vec *a, enum engine_kind k, const struct engine_opts *o)
{
	engine_vec_add(a, engine_name(k));
	engine_vec_addv(a, o->global_args);
}

void engine_argv_free(char **argv)
{
	char **p;

	if (argv == NULL)
		return;
	for (p = argv; *p != NULL; p++)
		free(*p);
	free(argv);
}

const char *engine_name(enum engine_kind k)
{
	switch (k) {
	case ENGINE_DOCKER:
		return "docker";
	case ENGINE_PODMAN:
		return "podman";
	case ENGINE_BUILDAH:
		return "buildah";
	}
	return "unknown";
}

int engine_parse(const char *name, enum engine_kind *out)
{
	static const enum engine_kind all[] = {ENGINE_DOCKER, ENGINE_PODMAN, ENGINE_BUILDAH};
	size_t i;

	for (i = 0; i < sizeof(all) / sizeof(all[0]); i++) {
		if (name != NULL && strcmp(name, engine_name(all[i])) == 0) {
			*out = all[i];
			return 0;
		}
	}
	return -1;
}

/* 0 when a unix socket at path accepts a connection, else -1 with errno. */
static int engine_socket_connects(const char *path)
{
	struct sockaddr_un sun;
	int fd, r, saved;

	if (strlen(path) >= sizeof(sun.sun_path)) {
		errno = ENAMETOOLONG;
		return -1;
	}
	memset(&sun, 0, sizeof(sun));
	sun.sun_family = AF_UNIX;
	strcpy(sun.sun_path, path);
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd == -1)
		return -1;
	r = connect(fd, (struct sockaddr *)&sun, sizeof(sun));
	saved = errno;
	close(fd);
	errno = saved;
	return r;
}

/* NULL when a docker daemon looks reachable, else why not (caller frees). */
static char *engine_docker_unreachable(void)
{
	const char *host = getenv("DOCKER_HOST");
	const char *runtime = getenv("XDG_RUNTIME_DIR");
	char *user_sock, *why;

	if (host != NULL && *host != '\0') {
		if (!str_has_prefix(host, "unix://"))
			return NULL;
		if (engine_socket_connects(host + strlen("unix://")) == 0)
			return NULL;
		return xasprintf("no docker daemon at %s (%s)", host, strerror(errno));
	}
	if (engine_socket_connects("/var/run/docker.sock") == 0)
		return NULL;
	why = xasprintf("no docker daemon at /var/run/docker.sock (%s)", strerror(errno));
	if (runtime != NULL && *runtime != '\0') {
		user_sock = xasprintf("%s/docker.sock", runtime);
		if (engine_socket_connects(user_sock) == 0) {
			free(why);
			why = NULL;
		}
		free(user_sock);
	}
	return why;
}

/* NULL when engine k is usable, else why not (caller frees). */
static char *engine_unusable(enum engine_kind k, const char *path_env, bool need_daemon)
{
	char *path = child_find_executable(engine_name(k), path_env);
	char *why = NULL;

	if (path == NULL)
		return xstrdup("not found in PATH");
	if (k == ENGINE_DOCKER && need_daemon)
		why = engine_docker_unreachable();
	free(path);
	return why;
}

int engine_detect(const char *preference, const char *path_env, enum engine_kind *out, char **err)
{
	static const enum engine_kind order[] = {ENGINE_DOCKER, ENGINE_PODMAN, ENGINE_BUILDAH};
	enum engine_kind k;
	char *why, *tried = NULL, *next;
	size_t i;

	*err = NULL;
	if (preference != NULL && strcmp(preference, "auto") != 0) {
		if (engine_parse(preference, &k) == -1) {
			*err = xasprintf("unknown local engine '%s' (use auto, docker, podman or "
			                 "buildah)",
			                 preference);
			return -1;
		}
		/* Asked for by name: the user may reach docker through a context or a
		 * remote host this cheap check cannot see, so only the program must exist. */
		why = engine_unusable(k, path_env, false);
		if (why == NULL) {
			*out = k;
			return 0;
		}
		*err = xasprintf("local engine %s: %s (PATH=%s); install it, e.g. apt-get "
		                 "install %s",
		                 engine_name(k), why, path_env ? path_env : "",
		                 k == ENGINE_DOCKER ? "docker.io" : engine_name(k));
		free(why);
		return -1;
	}
	for (i = 0; i < sizeof(order) / sizeof(order[0]); i++) {
		why = engine_unusable(order[i], path_env, true);
		if (why == NULL) {
			free(tried);
			*out = order[i];
			return 0;
		}
		next = xasprintf("%s%s%s: %s", tried ? tried : "", tried ? "; " : "",
		                 engine_name(order[i]), why);
		free(tried);
		free(why);
		tried = next;
	}
	*err = xasprintf("no local container engine is usable (%s; PATH=%s); install one, e.g. "
	                 "apt-get install buildah (or podman, or docker.io with its daemon "
	                 "running)",
	                 tried, path_env ? path_env : "");
	free(tried);
	return -1;
}

char **engine_build_argv(enum engine_kind k, const struct engine_opts *o,
                         const struct engine_build *b)
{
	struct engine_vec a = {0};
	const char *const *arg;

	engine_vec_start(&a, k, o);
	engine_vec_add(&a, k == ENGINE_BUILDAH ? "bud" : "build");
	if (b->platform != NULL) {
		engine_vec_add(&a, "--platform");
		engine_vec_add(&a, b->platform);
	}
	/* Plain progress: one line per event instead of a redrawn terminal screen. */
	if (k == ENGINE_DOCKER)
		engine_vec_add(&a, "--progress=plain");
	engine_vec_add(&a, "-f");
	engine_vec_add(&a, b->dockerfile);
	engine_vec_add(&a, "-t");
	engine_vec_add(&a, b->image_ref);
	if (k != ENGINE_DOCKER && b->isolation != NULL) {
		engine_vec_add(&a, "--isolation");
		engine_vec_add(&a, b->isolation);
	}
	/* The name only: the engine takes the value from its environment, so a secret
	 * passed as a build arg never shows in a process list. */
	for (arg = b->build_args; arg != NULL && *arg != NULL; arg++) {
		char *name = xstrndup(*arg, strcspn(*arg, "="));
		engine_vec_add(&a, "--build-arg");
		engine_vec_add(&a, name);
		free(name);
	}
	engine_vec_add(&a, b->context_dir);
	return a.v;
}

/* --tls-verify=false and --authfile: what podman and buildah need on login and push. */
static void engine_vec_registry_opts(struct engine_vec *a, enum engine_kind k,
                                     const struct engine_opts *o)
{
	char *auth;

	if (k == ENGINE_DOCKER)
		return;
	if (!o->tls_verify)
		engine_vec_add(a, "--tls-verify=false");
	auth = engine_auth_path(k, o->job_dir);
	engine_vec_add(a, "--authfile");
	engine_vec_add(a, auth);
	free(auth);
}

char **engine_login_argv(enum engine_kind k, const struct engine_opts *o, const char *registry_host,
                         const char *username)
{
	struct engine_vec a = {0};

	engine_vec_start(&a, k, o);
	engine_vec_add(&a, "login");
	engine_vec_registry_opts(&a, k, o);
	engine_vec_add(&a, "--username");
	engine_vec_add(&a, username);
	engine_vec_add(&a, "--password-stdin");
	engine_vec_add(&a, registry_host);
	return a.v;
}

char **engine_push_argv(enum engine_kind k, const struct engine_opts *o, const char *image_ref)
{
	struct engine_vec a = {0};

	engine_vec_start(&a, k, o);
	engine_vec_add(&a, "push");
	engine_vec_registry_opts(&a, k, o);
	engine_vec_add(&a, image_ref);
	return a.v;
}

char **engine_rmi_argv(enum engine_kind k, const struct engine_opts *o, const char *image_ref)
{
	struct engine_vec a = {0};

	engine_vec_start(&a, k, o);
	engine_vec_add(&a, "rmi");
	engine_vec_add(&a, image_ref);
	return a.v;
}

char *engine_auth_path(enum engine_kind k, const char *job_dir)
{
	if (k == ENGINE_DOCKER)
		return xasprintf("%s/docker", job_dir);
	return xasprintf("%s/auth.json", job_dir);
}

char *engine_auth_env(enum engine_kind k, const char *job_dir)
{
	char *path = engine_auth_path(k, job_dir);
	char *env =
	    xasprintf("%s=%s", k == ENGINE_DOCKER ? "DOCKER_CONFIG" : "REGISTRY_AUTH_FILE", path);

	free(path);
	return env;
}

int engine_build_args_parse(const char *json_text, char ***out, char **err)
{
	struct engine_vec a = {0};
	json_object *obj = NULL;
	enum json_tokener_error jerr;
	int rc = -1;

	*out = NULL;
	*err = NULL;
	/* An empty list, not NULL, so callers can always iterate. */
	a.v = xcalloc(1, sizeof(*a.v));
	a.cap = 1;
	if (json_text == NULL || *json_text == '\0') {
		rc = 0;
		goto out;
	}
	obj = json_tokener_parse_verbose(json_text, &jerr);
	if (obj == NULL || !json_object_is_type(obj, json_type_object)) {
		*err = xasprintf("build args must be a JSON object of strings (%s)",
		                 obj == NULL ? json_tokener_error_desc(jerr) : "not an object");
		goto out;
	}
	json_object_object_foreach(obj, key, val)
	{
		char *kv;

		if (*key == '\0' || strchr(key, '=') != NULL) {
			*err = xasprintf("build arg name '%s' is not valid", key);
			goto out;
		}
		switch (json_object_get_type(val)) {
		case json_type_string:
			kv = xasprintf("%s=%s", key, json_object_get_string(val));
			break;
		case json_type_int:
		case json_type_double:
		case json_type_boolean:
			kv = xasprintf("%s=%s", key,
			               json_object_to_json_string_ext(val, JSON_C_TO_STRING_PLAIN));
			break;
		default:
			*err = xasprintf("build arg '%s' must be a string", key);
			goto out;
		}
		engine_vec_add(&a, kv);
		free(kv);
	}
	rc = 0;
out:
	json_object_put(obj);
	if (rc == 0) {
		*out = a.v;
	} else {
		engine_argv_free(a.v);
	}
	return rc;
}

char *engine_registry_prefix(const char *registry_url)
{
	const char *p = strstr(registry_url, "://");
	size_t len;

	p = p != NULL ? p + 3 : registry_url;
	len = strlen(p);
	while (len > 0 && p[len - 1] == '/')
		len--;
	return xstrndup(p, len);
}

char *engine_registry_host(const char *registry_url)
{
	char *prefix = engine_registry_prefix(registry_url);
	char *slash = strchr(prefix, '/');

	if (slash != NULL)
		*slash = '\0';
	return prefix;
}
