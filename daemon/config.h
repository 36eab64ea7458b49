/*
 * The daemon's configuration: built-in defaults, overridden by a `key = value`
 * file, overridden by the environment, overridden by command-line flags.  Every
 * value is checked when it is read and a bad one is refused with a message naming
 * the key (or variable, or flag) it came from.  The pieces are separate functions so
 * tests can drive each layer without a process environment.
 *
 * The API key is secret: it is never logged, never returned over RPC, and the
 * daemon's own environment loses TOGETHER_API_KEY once it has been read, so child
 * processes never inherit it.
 *
 * Other modules read `daemon->config` when they need a value and do not keep
 * pointers to its strings across loop iterations: SIGHUP reloads it in place.
 */
#ifndef SNAPBUILD_CONFIG_H
#define SNAPBUILD_CONFIG_H

#include <stdbool.h>
#include <stdio.h>

enum config_key_source { CONFIG_KEY_NONE = 0, CONFIG_KEY_LITERAL, CONFIG_KEY_FILE };

struct config {
	char *socket_path;
	char *state_dir;
	char *config_file;
	int log_level; /* enum log_level */
	char *api_key; /* secret: never log, never return */
	char *api_key_file;
	char *base_url;    /* management API base: no trailing slash, no /v1 */
	char *builder_url; /* image builder base, derived from base_url unless overridden */
	bool local_build;
	char *remote_arch; /* "amd64" | "arm64" */
	int max_concurrent;
	char *local_engine; /* "auto" | "docker" | "podman" | "buildah" */
	unsigned socket_mode;
	char *socket_group;
	char *admin_group;
	int idle_exit_seconds; /* 0 = never; only when socket-activated: config_idle_exit */
	int event_retention_days;
	char *tmp_dir;
	int stall_timeout_seconds; /* backstop: a silent build log stream is reconnected */
	char *local_engine_args;   /* global options for the local engine, space-separated */
	char *local_isolation;     /* podman/buildah --isolation, e.g. chroot; NULL = default */
	unsigned long long max_context_bytes; /* cap on an archive and on what it unpacks to */
	int max_connections_per_user; /* root and the admin group are not counted */
	int max_queued_per_user;
	unsigned long long max_spool_bytes_per_user;
	unsigned long long max_log_bytes; /* log text a job keeps; the rest is counted */

	/* Repeat builds (job-reuse.c). */
	int reuse_max_age;   /* seconds a succeeded build may be reused; 0 = never */
	bool auto_cache_key; /* default_cache_key = auto: a cache key per user and project */

	/* How the service is reached. */
	char *ca_file; /* PEM certificates trusted on top of the system store; NULL = none */
	char *proxy;   /* proxy URL; NULL = https_proxy/http_proxy/all_proxy from the environment */
	char *no_proxy; /* hosts reached without the proxy; NULL = no_proxy from the environment */
	char *metrics_listen; /* HOST:PORT of GET /metrics; NULL = off (read at start only) */

	/* Bookkeeping while layers are applied. */
	bool config_file_explicit;  /* --config or SNAPBUILD_CONFIG: a missing file is an error */
	bool socket_mode_set;       /* explicitly configured, so socket_group does not change it */
	char *builder_url_override; /* builder_url key, SNAPBUILD_BUILDER_URL or --builder-url */
	enum config_key_source key_source;
	char *key_source_value; /* the literal key or the file to read it from */
	char *key_source_label; /* where that came from, for messages */
};

/* Defaults for the current user (root or not), with XDG lookups in envp. */
struct config *config_new_defaults(char *const envp[]);
void config_free(struct config *cfg);

/* Sets one file key ("max_concurrent", ...) from text; label names the origin in errors. */
int config_set(struct config *cfg, const char *key, const char *value, const char *label,
               char **err);

/* Reads `key = value` lines; a missing file is fine unless must_exist. */
int config_read_file(struct config *cfg, const char *path, bool must_exist, char **err);
/* TOGETHER_*, SNAPBUILD_* and CREDENTIALS_DIRECTORY from envp (NULL-terminated "K=V"). */
int config_apply_env(struct config *cfg, char *const envp[], char **err);
/* Command-line flags (argv[0] is the program name). */
int config_apply_flags(struct config *cfg, int argc, char **argv, char **err);
/* Resolves the API key, derives builder_url, socket_mode and tmp_dir, checks the rest. */
int config_validate(struct config *cfg, char **err);

/*
 * All layers in order, with the process environment (a private copy is kept and
 * TOGETHER_API_KEY is removed from the real one).  NULL with *err set on failure.
 */
struct config *config_load(int argc, char **argv, char **err);
/* Loads again with the same flags and environment and takes over everything but the
 * socket and state directory; on error cfg is unchanged. */
int config_reload(struct config *cfg, char **err);

/* The default idle_exit_seconds. */
#define CONFIG_IDLE_EXIT_DEFAULT 300

/*
 * Seconds with no job and no client after which the daemon exits, 0 for never: only a
 * socket-activated daemon exits (systemd starts it again on the next connection), after
 * idle_exit_seconds.  So the default only ever applies under socket activation.
 */
int config_idle_exit(const struct config *cfg, bool socket_activated);

/* "builder." host for an "api.bartender." base URL, otherwise the base itself (malloc'd). */
char *config_derive_builder_url(const char *base_url);

void config_usage(FILE *fp);

#endif
