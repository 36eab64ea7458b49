/*
 * Configuration layers: defaults < file < environment < flags.  Each setter checks
 * its value at once, so an error can name the exact key, variable or flag; only the
 * checks that need the final picture (API key file, derived URLs, groups) wait for
 * config_validate.
 */
#include "config.h"

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <grp.h>
#include <limits.h>
#include <stdint.h>
#include <stdio.h>
#include <pwd.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "log.h"
#include "metrics.h"
#include "util.h"

extern char **environ;

static const char *config_env_get(char *const envp[], const char *name)
{
	size_t n = strlen(name);
	if (envp == NULL)
		return NULL;
	for (; *envp != NULL; envp++)
		if (strncmp(*envp, name, n) == 0 && (*envp)[n] == '=')
			return *envp + n + 1;
	return NULL;
}

static void config_replace(char **slot, const char *value)
{
	free(*slot);
	*slot = value ? xstrdup(value) : NULL;
}

static const char *config_home(char *const envp[])
{
	const char *home = config_env_get(envp, "HOME");
	if (home == NULL || *home == '\0') {
		struct passwd *pw = getpwuid(geteuid());
		home = pw != NULL ? pw->pw_dir : "/";
	}
	return home;
}

struct config *config_new_defaults(char *const envp[])
{
	struct config *cfg = xcalloc(1, sizeof(*cfg));
	const char *v;

	if (geteuid() == 0) {
		cfg->socket_path = xstrdup("/run/snapbuild/snapbuild.sock");
		cfg->state_dir = xstrdup("/var/lib/snapbuild");
		cfg->config_file = xstrdup("/etc/snapbuild/snapbuildd.conf");
	} else {
		if ((v = config_env_get(envp, "XDG_RUNTIME_DIR")) != NULL && *v == '/')
			cfg->socket_path = xasprintf("%s/snapbuild/snapbuild.sock", v);
		else
			cfg->socket_path =
			    xasprintf("/run/user/%u/snapbuild/snapbuild.sock", (unsigned)geteuid());
		if ((v = config_env_get(envp, "XDG_STATE_HOME")) != NULL && *v == '/')
			cfg->state_dir = xasprintf("%s/snapbuild", v);
		else
			cfg->state_dir = xasprintf("%s/.local/state/snapbuild", config_home(envp));
		if ((v = config_env_get(envp, "XDG_CONFIG_HOME")) != NULL && *v == '/')
			cfg->config_file = xasprintf("%s/snapbuild/snapbuildd.conf", v);
		else
			cfg->config_file =
			    xasprintf("%s/.config/snapbuild/snapbuildd.conf", config_home(envp));
	}
	cfg->log_level = LOG_LEVEL_INFO;
	cfg->base_url = xstrdup("https://api.bartender.codesandbox.io");
	cfg->remote_arch = xstrdup("amd64");
	cfg->max_concurrent = 2;
	cfg->max_context_bytes = 4ULL << 30;
	cfg->max_connections_per_user = 64;
	cfg->max_queued_per_user = 100;
	cfg->max_spool_bytes_per_user = 8ULL << 30;
	cfg->max_log_bytes = 64ULL << 20;
	cfg->local_engine = xstrdup("auto");
	cfg->socket_mode = 0600;
	cfg->idle_exit_seconds = CONFIG_IDLE_EXIT_DEFAULT;
	cfg->event_retention_days = 30;
	cfg->stall_timeout_seconds = 600;
	cfg->reuse_max_age = 86400;
	cfg->auto_cache_key = true;
	return cfg;
}

void config_free(struct config *cfg)
{
	if (cfg == NULL)
		return;
	free(cfg->socket_path);
	free(cfg->state_dir);
	free(cfg->config_file);
	if (cfg->api_key != NULL)
		explicit_bzero(cfg->api_key, strlen(cfg->api_key));
	free(cfg->api_key);
	free(cfg->api_key_file);
	free(cfg->base_url);
	free(cfg->builder_url);
	free(cfg->remote_arch);
	free(cfg->local_engine);
	free(cfg->socket_group);
	free(cfg->admin_group);
	free(cfg->tmp_dir);
	free(cfg->local_engine_args);
	free(cfg->local_isolation);
	free(cfg->ca_file);
	free(cfg->proxy);
	free(cfg->no_proxy);
	free(cfg->metrics_listen);
	free(cfg->builder_url_override);
	if (cfg->key_source_value != NULL)
		explicit_bzero(cfg->key_source_value, strlen(cfg->key_source_value));
	free(cfg->key_source_value);
	free(cfg->key_source_label);
	free(cfg);
}

/* --- value parsers: 0 ok, -1 with *err naming label --- */

static int config_parse_int(const char *label, const char *value, long min, long max, int *out,
                            char **err)
{
	char *end;
	long n;

	errno = 0;
	n = strtol(value, &end, 10);
	if (*value == '\0' || *end != '\0' || errno != 0 || n < min || n > max) {
		*err = xasprintf("invalid %s '%s': expected a whole number from %ld to %ld", label,
		                 value, min, max);
		return -1;
	}
	*out = (int)n;
	return 0;
}

/* A size in bytes, with an optional K, M, G or T (powers of 1024; "KiB", "MB" too). */
static int config_parse_size(const char *label, const char *value, unsigned long long min,
                             unsigned long long *out, char **err)
{
	static const char *const units = "KMGT";
	char *end;
	errno = 0;
	unsigned long long n = strtoull(value, &end, 10);
	int shift = 0;
	if (*end != '\0') {
		const char *u = strchr(units, end[0] & ~0x20);
		if (u != NULL && end[0] != '\0') {
			shift = 10 * (int)(u - units + 1);
			end++;
			if (*end == 'i')
				end++;
			if (*end == 'B' || *end == 'b')
				end++;
		}
	}
	if (*value == '\0' || *value == '-' || *end != '\0' || errno != 0 ||
	    (shift && n > (~0ULL >> shift)) || (n << shift) < min) {
		*err = xasprintf("invalid %s '%s': expected a size in bytes of at least %llu, "
		                 "optionally with K, M, G or T (e.g. 4G)",
		                 label, value, min);
		return -1;
	}
	*out = n << shift;
	return 0;
}

/* A duration: seconds, or a number with s, m, h or d. */
static int config_parse_duration(const char *label, const char *value, int *out, char **err)
{
	char *end;
	long long n, unit = 1;

	errno = 0;
	n = strtoll(value, &end, 10);
	if (end != value && *end != '\0' && end[1] == '\0') {
		const char *u = strchr("smhd", *end);
		static const long long units[] = {1, 60, 3600, 86400};

		if (u != NULL) {
			unit = units[u - "smhd"];
			end++;
		}
	}
	if (*value == '\0' || *end != '\0' || errno != 0 || n < 0 || n > 3650LL * 86400 / unit) {
		*err = xasprintf("invalid %s '%s': expected a duration such as 3600, 90m, 24h or "
		                 "7d (0 = off)",
		                 label, value);
		return -1;
	}
	*out = (int)(n * unit);
	return 0;
}

static int config_parse_bool(const char *label, const char *value, bool *out, char **err)
{
	static const char *const yes[] = {"1", "true", "yes", "on"};
	static const char *const no[] = {"0", "false", "no", "off", ""};
	for (size_t i = 0; i < sizeof(yes) / sizeof(yes[0]); i++)
		if (strcasecmp(value, yes[i]) == 0) {
			*out = true;
			return 0;
		}
	for (size_t i = 0; i < sizeof(no) / sizeof(no[0]); i++)
		if (strcasecmp(value, no[i]) == 0) {
			*out = false;
			return 0;
		}
	*err = xasprintf("invalid %s '%s': expected 1/true/yes or 0/false/no", label, value);
	return -1;
}

static int config_parse_choice(const char *label, const char *value, const char *const *choices,
                               char **slot, char **err)
{
	for (size_t i = 0; choices[i] != NULL; i++) {
		if (strcmp(value, choices[i]) == 0) {
			config_replace(slot, value);
			return 0;
		}
	}
	char *list = xstrdup(choices[0]);
	for (size_t i = 1; choices[i] != NULL; i++) {
		char *l = xasprintf("%s%s%s", list, choices[i + 1] ? ", " : " or ", choices[i]);
		free(list);
		list = l;
	}
	*err = xasprintf("invalid %s '%s': expected %s", label, value, list);
	free(list);
	return -1;
}

/* http(s) URL with a host; trailing slashes and a trailing /v1 are dropped. */
static int config_parse_url(const char *label, const char *value, bool strip_v1, char **slot,
                            char **err)
{
	const char *host;
	char *url;
	size_t n;

	if (str_has_prefix(value, "https://"))
		host = value + 8;
	else if (str_has_prefix(value, "http://"))
		host = value + 7;
	else
		host = NULL;
	if (host == NULL || *host == '\0' || *host == '/' || strpbrk(value, " \t\r\n") != NULL) {
		*err =
		    xasprintf("invalid %s '%s': expected an http:// or https:// URL", label, value);
		return -1;
	}
	url = xstrdup(value);
	n = strlen(url);
	for (;;) {
		while (n > 0 && url[n - 1] == '/')
			url[--n] = '\0';
		if (strip_v1 && n >= 3 && strcmp(url + n - 3, "/v1") == 0 &&
		    (size_t)(host - value) < n - 3) {
			n -= 3;
			url[n] = '\0';
			continue;
		}
		break;
	}
	free(*slot);
	*slot = url;
	return 0;
}

/*
 * A proxy URL as curl takes it: http, https, socks4, socks4a, socks5 or socks5h, with
 * a host; "host:port" means http://host:port.  Empty is unset.
 */
static int config_parse_proxy(const char *label, const char *value, char **slot, char **err)
{
	static const char *const schemes[] = {"http://",   "https://",   "socks4://", "socks4a://",
	                                      "socks5://", "socks5h://", NULL};
	const char *host = NULL;
	char *url;

	if (*value == '\0') {
		config_replace(slot, NULL);
		return 0;
	}
	url = strstr(value, "://") ? xstrdup(value) : xasprintf("http://%s", value);
	for (size_t i = 0; schemes[i] != NULL; i++)
		if (strncasecmp(url, schemes[i], strlen(schemes[i])) == 0)
			host = url + strlen(schemes[i]);
	if (host == NULL || *host == '\0' || *host == '/' || *host == ':' ||
	    strpbrk(url, " \t\r\n") != NULL) {
		*err =
		    xasprintf("invalid %s: expected a proxy URL such as http://proxy.example:3128 "
		              "(http, https, socks4, socks4a, socks5 or socks5h)",
		              label);
		free(url);
		return -1;
	}
	free(*slot);
	*slot = url;
	return 0;
}

static int config_parse_path(const char *label, const char *value, char **slot, char **err)
{
	char cwd[PATH_MAX];

	if (*value == '\0') {
		*err = xasprintf("invalid %s: empty path", label);
		return -1;
	}
	if (*value == '/') {
		config_replace(slot, value);
		return 0;
	}
	if (getcwd(cwd, sizeof(cwd)) == NULL) {
		*err = xasprintf("invalid %s '%s': cannot make it absolute: %s", label, value,
		                 strerror(errno));
		return -1;
	}
	free(*slot);
	*slot = xasprintf("%s/%s", strcmp(cwd, "/") == 0 ? "" : cwd, value);
	return 0;
}

static void config_set_key_source(struct config *cfg, enum config_key_source kind,
                                  const char *value, const char *label)
{
	if (cfg->key_source_value != NULL)
		explicit_bzero(cfg->key_source_value, strlen(cfg->key_source_value));
	cfg->key_source = kind;
	config_replace(&cfg->key_source_value, value);
	config_replace(&cfg->key_source_label, label);
}

int config_set(struct config *cfg, const char *key, const char *value, const char *label,
               char **err)
{
	static const char *const archs[] = {"amd64", "arm64", NULL};
	static const char *const engines[] = {"auto", "docker", "podman", "buildah", NULL};

	if (strcmp(key, "socket") == 0 || strcmp(key, "socket_path") == 0) {
		if (config_parse_path(label, value, &cfg->socket_path, err) < 0)
			return -1;
		if (strlen(cfg->socket_path) >= sizeof(((struct sockaddr_un *)0)->sun_path)) {
			*err = xasprintf("invalid %s '%s': a socket path must be shorter than %zu "
			                 "bytes",
			                 label, value, sizeof(((struct sockaddr_un *)0)->sun_path));
			return -1;
		}
		return 0;
	}
	if (strcmp(key, "state_dir") == 0)
		return config_parse_path(label, value, &cfg->state_dir, err);
	if (strcmp(key, "tmp_dir") == 0)
		return config_parse_path(label, value, &cfg->tmp_dir, err);
	if (strcmp(key, "log_level") == 0) {
		int l = log_level_parse(value);
		if (l < 0) {
			*err = xasprintf("invalid %s '%s': expected error, warn, info or debug",
			                 label, value);
			return -1;
		}
		cfg->log_level = l;
		return 0;
	}
	if (strcmp(key, "api_key") == 0) {
		config_set_key_source(cfg, *value ? CONFIG_KEY_LITERAL : CONFIG_KEY_NONE, value,
		                      label);
		return 0;
	}
	if (strcmp(key, "api_key_file") == 0) {
		char *path = NULL;
		if (config_parse_path(label, value, &path, err) < 0)
			return -1;
		config_set_key_source(cfg, CONFIG_KEY_FILE, path, label);
		free(path);
		return 0;
	}
	if (strcmp(key, "base_url") == 0)
		return config_parse_url(label, value, true, &cfg->base_url, err);
	if (strcmp(key, "builder_url") == 0)
		return config_parse_url(label, value, false, &cfg->builder_url_override, err);
	if (strcmp(key, "local_build") == 0)
		return config_parse_bool(label, value, &cfg->local_build, err);
	if (strcmp(key, "remote_architecture") == 0)
		return config_parse_choice(label, value, archs, &cfg->remote_arch, err);
	if (strcmp(key, "local_engine") == 0)
		return config_parse_choice(label, value, engines, &cfg->local_engine, err);
	if (strcmp(key, "max_concurrent") == 0)
		return config_parse_int(label, value, 1, 64, &cfg->max_concurrent, err);
	if (strcmp(key, "max_queued_per_user") == 0)
		return config_parse_int(label, value, 1, 1000000, &cfg->max_queued_per_user, err);
	if (strcmp(key, "max_spool_bytes_per_user") == 0)
		return config_parse_size(label, value, 1024, &cfg->max_spool_bytes_per_user, err);
	if (strcmp(key, "max_log_bytes") == 0)
		return config_parse_size(label, value, 1024, &cfg->max_log_bytes, err);
	if (strcmp(key, "max_connections_per_user") == 0)
		return config_parse_int(label, value, 1, 1000000, &cfg->max_connections_per_user,
		                        err);
	if (strcmp(key, "max_context_bytes") == 0)
		return config_parse_size(label, value, 1024, &cfg->max_context_bytes, err);
	if (strcmp(key, "idle_exit_seconds") == 0)
		return config_parse_int(label, value, 0, 86400 * 365, &cfg->idle_exit_seconds, err);
	if (strcmp(key, "event_retention_days") == 0)
		return config_parse_int(label, value, 0, 36500, &cfg->event_retention_days, err);
	if (strcmp(key, "stall_timeout_seconds") == 0)
		return config_parse_int(label, value, 1, 86400, &cfg->stall_timeout_seconds, err);
	if (strcmp(key, "reuse_max_age") == 0)
		return config_parse_duration(label, value, &cfg->reuse_max_age, err);
	if (strcmp(key, "default_cache_key") == 0) {
		if (strcmp(value, "auto") != 0 && strcmp(value, "none") != 0) {
			*err = xasprintf("invalid %s '%s': expected auto or none", label, value);
			return -1;
		}
		cfg->auto_cache_key = strcmp(value, "auto") == 0;
		return 0;
	}
	if (strcmp(key, "local_engine_args") == 0) {
		config_replace(&cfg->local_engine_args, *value ? value : NULL);
		return 0;
	}
	if (strcmp(key, "local_isolation") == 0) {
		config_replace(&cfg->local_isolation, *value ? value : NULL);
		return 0;
	}
	if (strcmp(key, "ca_file") == 0) {
		if (*value == '\0') {
			config_replace(&cfg->ca_file, NULL);
			return 0;
		}
		return config_parse_path(label, value, &cfg->ca_file, err);
	}
	if (strcmp(key, "proxy") == 0)
		return config_parse_proxy(label, value, &cfg->proxy, err);
	if (strcmp(key, "no_proxy") == 0) {
		config_replace(&cfg->no_proxy, *value ? value : NULL);
		return 0;
	}
	if (strcmp(key, "metrics_listen") == 0) {
		char *host = NULL;
		int port;
		if (*value == '\0') {
			config_replace(&cfg->metrics_listen, NULL);
			return 0;
		}
		if (!metrics_listen_parse(value, &host, &port)) {
			*err =
			    xasprintf("invalid %s '%s': expected HOST:PORT such as 127.0.0.1:9464 "
			              "or [::1]:9464",
			              label, value);
			return -1;
		}
		free(host);
		config_replace(&cfg->metrics_listen, value);
		return 0;
	}
	if (strcmp(key, "socket_mode") == 0) {
		char *end;
		errno = 0;
		unsigned long m = strtoul(value, &end, 8);
		if (*value == '\0' || *end != '\0' || errno != 0 || m > 0777 ||
		    (m & 0600) != 0600) {
			*err = xasprintf("invalid %s '%s': expected an octal mode such as 0600 or "
			                 "0660 (the owner needs read and write)",
			                 label, value);
			return -1;
		}
		cfg->socket_mode = (unsigned)m;
		cfg->socket_mode_set = true;
		return 0;
	}
	if (strcmp(key, "socket_group") == 0) {
		config_replace(&cfg->socket_group, *value ? value : NULL);
		return 0;
	}
	if (strcmp(key, "admin_group") == 0) {
		config_replace(&cfg->admin_group, *value ? value : NULL);
		return 0;
	}
	*err = xasprintf("unknown configuration key '%s' (%s)", key, label);
	return -1;
}

static char *config_trim(char *s)
{
	char *e;
	while (isspace((unsigned char)*s))
		s++;
	e = s + strlen(s);
	while (e > s && isspace((unsigned char)e[-1]))
		*--e = '\0';
	return s;
}

/*
 * The first line of a key file, surrounding white space dropped, in buf (which the
 * caller wipes); "" for a blank file.  NULL with errno set when it cannot be read.
 */
static char *config_read_key_line(const char *path, char *buf, size_t size)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY), saved;
	ssize_t n;

	if (fd < 0)
		return NULL;
	n = read(fd, buf, size - 1);
	saved = errno;
	close(fd);
	if (n < 0) {
		errno = saved;
		return NULL;
	}
	buf[n] = '\0';
	buf[strcspn(buf, "\r\n")] = '\0';
	return config_trim(buf);
}

/* True when path holds no key: it exists, and its first line is blank. */
static bool config_key_file_blank(const char *path)
{
	char buf[4096];
	char *key = config_read_key_line(path, buf, sizeof(buf));
	bool blank = key != NULL && *key == '\0';

	explicit_bzero(buf, sizeof(buf));
	return blank;
}

int config_read_file(struct config *cfg, const char *path, bool must_exist, char **err)
{
	FILE *fp;
	char *line = NULL;
	size_t cap = 0;
	unsigned lineno = 0;
	int rc = -1;

	fp = fopen(path, "re");
	if (fp == NULL) {
		if (errno == ENOENT && !must_exist)
			return 0;
		*err = xasprintf("cannot read configuration file %s: %s", path, strerror(errno));
		return -1;
	}
	while (getline(&line, &cap, fp) >= 0) {
		char *key, *value, *eq, *label;
		int r;

		lineno++;
		key = config_trim(line);
		if (*key == '\0' || *key == '#')
			continue;
		eq = strchr(key, '=');
		if (eq == NULL) {
			*err = xasprintf("%s:%u: expected 'key = value'", path, lineno);
			goto out;
		}
		*eq = '\0';
		key = config_trim(key);
		value = config_trim(eq + 1);
		if (*value == '"') {
			size_t n = strlen(value);
			if (n < 2 || value[n - 1] != '"') {
				*err = xasprintf("%s:%u: %s: unterminated quoted value", path,
				                 lineno, key);
				goto out;
			}
			value[n - 1] = '\0';
			value++;
		} else {
			/* a comment may follow an unquoted value after white space */
			for (char *h = value; (h = strchr(h, '#')) != NULL; h++) {
				if (h > value && isspace((unsigned char)h[-1])) {
					*h = '\0';
					value = config_trim(value);
					break;
				}
			}
		}
		label = xasprintf("%s:%u: %s", path, lineno, key);
		r = config_set(cfg, key, value, label, err);
		free(label);
		if (r < 0)
			goto out;
	}
	if (ferror(fp)) {
		*err = xasprintf("cannot read configuration file %s: %s", path, strerror(errno));
		goto out;
	}
	rc = 0;
out:
	if (line != NULL)
		explicit_bzero(line, cap);
	free(line);
	fclose(fp);
	return rc;
}

int config_apply_env(struct config *cfg, char *const envp[], char **err)
{
	static const struct {
		const char *var, *key;
	} map[] = {
	    {"SNAPBUILD_SOCKET", "socket"},
	    {"SNAPBUILD_STATE_DIR", "state_dir"},
	    {"SNAPBUILD_LOG_LEVEL", "log_level"},
	    {"TOGETHER_BASE_URL", "base_url"},
	    {"SNAPBUILD_BUILDER_URL", "builder_url"},
	    {"TOGETHER_LOCAL_BUILD", "local_build"},
	    {"TOGETHER_REMOTE_ARCHITECTURE", "remote_architecture"},
	    {"TOGETHER_API_KEY", "api_key"},
	};
	const char *v;

	for (size_t i = 0; i < sizeof(map) / sizeof(map[0]); i++) {
		v = config_env_get(envp, map[i].var);
		/* An empty variable counts as unset, as shells and unit files often leave them. */
		if (v == NULL || *v == '\0')
			continue;
		if (config_set(cfg, map[i].key, v, map[i].var, err) < 0)
			return -1;
	}
	/*
	 * systemd's LoadCredential= is the most deliberate way to hand over the key.  A
	 * blank credential (the unit's SetCredential= fallback when the key file is
	 * missing) hands over nothing, so a key from elsewhere still counts.
	 */
	v = config_env_get(envp, "CREDENTIALS_DIRECTORY");
	if (v != NULL && *v == '/') {
		char *path = xasprintf("%s/api-key", v);
		if (access(path, F_OK) == 0 && !config_key_file_blank(path))
			config_set_key_source(cfg, CONFIG_KEY_FILE, path,
			                      "$CREDENTIALS_DIRECTORY/api-key");
		free(path);
	}
	return 0;
}

enum {
	OPT_SOCKET = 256,
	OPT_STATE_DIR,
	OPT_CONFIG,
	OPT_LOG_LEVEL,
	OPT_MAX_CONCURRENT,
	OPT_API_KEY_FILE,
	OPT_BASE_URL,
	OPT_BUILDER_URL,
	OPT_LOCAL_BUILD,
	OPT_REMOTE_ARCH,
	OPT_LOCAL_ENGINE,
	OPT_SOCKET_MODE,
	OPT_SOCKET_GROUP,
	OPT_ADMIN_GROUP,
	OPT_IDLE_EXIT,
	OPT_RETENTION,
	OPT_TMP_DIR,
	OPT_CA_FILE,
	OPT_PROXY,
	OPT_NO_PROXY,
	OPT_HELP,
	OPT_VERSION,
};

static const struct option config_options[] = {
    {"socket", required_argument, NULL, OPT_SOCKET},
    {"state-dir", required_argument, NULL, OPT_STATE_DIR},
    {"config", required_argument, NULL, OPT_CONFIG},
    {"log-level", required_argument, NULL, OPT_LOG_LEVEL},
    {"max-concurrent", required_argument, NULL, OPT_MAX_CONCURRENT},
    {"api-key-file", required_argument, NULL, OPT_API_KEY_FILE},
    {"base-url", required_argument, NULL, OPT_BASE_URL},
    {"builder-url", required_argument, NULL, OPT_BUILDER_URL},
    {"local-build", no_argument, NULL, OPT_LOCAL_BUILD},
    {"remote-architecture", required_argument, NULL, OPT_REMOTE_ARCH},
    {"local-engine", required_argument, NULL, OPT_LOCAL_ENGINE},
    {"socket-mode", required_argument, NULL, OPT_SOCKET_MODE},
    {"socket-group", required_argument, NULL, OPT_SOCKET_GROUP},
    {"admin-group", required_argument, NULL, OPT_ADMIN_GROUP},
    {"idle-exit", required_argument, NULL, OPT_IDLE_EXIT},
    {"event-retention-days", required_argument, NULL, OPT_RETENTION},
    {"tmp-dir", required_argument, NULL, OPT_TMP_DIR},
    {"ca-file", required_argument, NULL, OPT_CA_FILE},
    {"proxy", required_argument, NULL, OPT_PROXY},
    {"no-proxy", required_argument, NULL, OPT_NO_PROXY},
    {"help", no_argument, NULL, OPT_HELP},
    {"version", no_argument, NULL, OPT_VERSION},
    {NULL, 0, NULL, 0},
};

static const char *config_flag_key(int opt)
{
	switch (opt) {
	case OPT_SOCKET:
		return "socket";
	case OPT_STATE_DIR:
		return "state_dir";
	case OPT_LOG_LEVEL:
		return "log_level";
	case OPT_MAX_CONCURRENT:
		return "max_concurrent";
	case OPT_API_KEY_FILE:
		return "api_key_file";
	case OPT_BASE_URL:
		return "base_url";
	case OPT_BUILDER_URL:
		return "builder_url";
	case OPT_REMOTE_ARCH:
		return "remote_architecture";
	case OPT_LOCAL_ENGINE:
		return "local_engine";
	case OPT_SOCKET_MODE:
		return "socket_mode";
	case OPT_SOCKET_GROUP:
		return "socket_group";
	case OPT_ADMIN_GROUP:
		return "admin_group";
	case OPT_IDLE_EXIT:
		return "idle_exit_seconds";
	case OPT_RETENTION:
		return "event_retention_days";
	case OPT_TMP_DIR:
		return "tmp_dir";
	case OPT_CA_FILE:
		return "ca_file";
	case OPT_PROXY:
		return "proxy";
	case OPT_NO_PROXY:
		return "no_proxy";
	default:
		return NULL;
	}
}

int config_apply_flags(struct config *cfg, int argc, char **argv, char **err)
{
	int opt, idx;

	optind = 0; /* GNU getopt: start over, this may run again on reload */
	opterr = 0;
	while ((opt = getopt_long(argc, argv, "+hV", config_options, &idx)) != -1) {
		if (opt == '?' || opt == ':') {
			const char *arg = argv[optind - 1];
			if (optopt != 0 && optopt < 256)
				*err = xasprintf("unknown option '-%c' (see --help)", optopt);
			else if (opt == ':' || (arg != NULL && strchr(arg, '=') == NULL &&
			                        config_flag_key(optopt) != NULL))
				*err = xasprintf("option '%s' needs a value", arg);
			else
				*err = xasprintf("unknown option '%s' (see --help)", arg);
			return -1;
		}
		if (opt == OPT_HELP || opt == OPT_VERSION || opt == 'h' || opt == 'V')
			continue;
		if (opt == OPT_CONFIG) {
			config_replace(&cfg->config_file, optarg);
			cfg->config_file_explicit = true;
			continue;
		}
		if (opt == OPT_LOCAL_BUILD) {
			cfg->local_build = true;
			continue;
		}
		char *label = xasprintf("--%s", config_options[idx].name);
		int r = config_set(cfg, config_flag_key(opt), optarg, label, err);
		free(label);
		if (r < 0)
			return -1;
	}
	if (optind < argc) {
		*err = xasprintf("unexpected argument '%s' (see --help)", argv[optind]);
		return -1;
	}
	return 0;
}

int config_idle_exit(const struct config *cfg, bool socket_activated)
{
	return socket_activated ? cfg->idle_exit_seconds : 0;
}

char *config_derive_builder_url(const char *base_url)
{
	const char *host = strstr(base_url, "://");
	if (host != NULL && str_has_prefix(host + 3, "api.bartender."))
		return xasprintf("%.*sbuilder.%s", (int)(host + 3 - base_url), base_url,
		                 host + 3 + strlen("api.bartender."));
	return xstrdup(base_url);
}

/*
 * Reads the key from the file configured.  A blank file is no key at all, like a
 * blank credential: the daemon starts, says it has none and tells clients how to give
 * it one, rather than refusing to start over a key file still to be filled in.
 */
static int config_read_key_file(struct config *cfg, char **err)
{
	char buf[4096];
	char *key = config_read_key_line(cfg->key_source_value, buf, sizeof(buf));

	if (key == NULL) {
		*err = xasprintf("cannot read the API key from %s (%s): %s", cfg->key_source_value,
		                 cfg->key_source_label, strerror(errno));
		return -1;
	}
	if (*key != '\0')
		config_replace(&cfg->api_key, key);
	config_replace(&cfg->api_key_file, cfg->key_source_value);
	explicit_bzero(buf, sizeof(buf));
	return 0;
}

/*
 * ca_file must be readable and hold PEM certificates: found out now, at start or
 * reload, rather than as a TLS failure on the first build.
 */
static int config_check_ca_file(const char *path, char **err)
{
	char buf[8192];
	bool pem = false;
	FILE *fp;

	if (path == NULL)
		return 0;
	if ((fp = fopen(path, "re")) == NULL) {
		*err = xasprintf("invalid ca_file '%s': %s", path, strerror(errno));
		return -1;
	}
	while (!pem && fgets(buf, sizeof(buf), fp) != NULL)
		pem = str_has_prefix(buf, "-----BEGIN CERTIFICATE-----");
	fclose(fp);
	if (!pem) {
		*err = xasprintf("invalid ca_file '%s': no PEM certificate in it (expected "
		                 "\"-----BEGIN CERTIFICATE-----\" lines)",
		                 path);
		return -1;
	}
	return 0;
}

int config_validate(struct config *cfg, char **err)
{
	if (cfg->api_key != NULL)
		explicit_bzero(cfg->api_key, strlen(cfg->api_key));
	config_replace(&cfg->api_key, NULL);
	config_replace(&cfg->api_key_file, NULL);
	switch (cfg->key_source) {
	case CONFIG_KEY_LITERAL:
		config_replace(&cfg->api_key, cfg->key_source_value);
		break;
	case CONFIG_KEY_FILE:
		if (config_read_key_file(cfg, err) < 0)
			return -1;
		break;
	case CONFIG_KEY_NONE:
		break;
	}
	for (const char *p = cfg->api_key; p != NULL && *p != '\0'; p++) {
		if ((unsigned char)*p < 0x21 || (unsigned char)*p > 0x7e) {
			/* It goes into an HTTP header: refuse rather than corrupt the request. */
			*err = xasprintf("invalid API key (%s): it contains white space or "
			                 "non-printable characters",
			                 cfg->key_source_label);
			return -1;
		}
	}

	free(cfg->builder_url);
	cfg->builder_url = cfg->builder_url_override ? xstrdup(cfg->builder_url_override)
	                                             : config_derive_builder_url(cfg->base_url);
	if (cfg->socket_group != NULL && !cfg->socket_mode_set)
		cfg->socket_mode = 0660;
	if (cfg->socket_group != NULL && getgrnam(cfg->socket_group) == NULL) {
		*err = xasprintf("invalid socket_group '%s': no such group", cfg->socket_group);
		return -1;
	}
	if (cfg->admin_group != NULL && getgrnam(cfg->admin_group) == NULL) {
		*err = xasprintf("invalid admin_group '%s': no such group", cfg->admin_group);
		return -1;
	}
	if (cfg->tmp_dir == NULL)
		cfg->tmp_dir = xasprintf("%s/tmp", cfg->state_dir);
	return config_check_ca_file(cfg->ca_file, err);
}

/* The environment as it was at start, before TOGETHER_API_KEY was scrubbed from it. */
static char **config_saved_env;
static int config_saved_argc;
static char **config_saved_argv;

/* Where the kernel keeps the environment it shows in /proc/PID/environ (fields 50 and
 * 51 of /proc/self/stat); false when that cannot be read. */
static bool config_start_env_range(uintptr_t *start, uintptr_t *end)
{
	char buf[4096], *p, *save = NULL;
	FILE *fp = fopen("/proc/self/stat", "re");
	size_t n = fp ? fread(buf, 1, sizeof(buf) - 1, fp) : 0;
	int field = 2;

	if (fp)
		fclose(fp);
	buf[n] = '\0';
	p = strrchr(buf, ')');
	*start = *end = 0;
	for (p = p ? strtok_r(p + 1, " ", &save) : NULL; p; p = strtok_r(NULL, " ", &save)) {
		if (++field == 50)
			*start = (uintptr_t)strtoull(p, NULL, 10);
		else if (field == 51)
			*end = (uintptr_t)strtoull(p, NULL, 10);
	}
	return *start != 0 && *end > *start;
}

/*
 * unsetenv only unlinks the variable: /proc/PID/environ still shows the start-up copy
 * of the environment to anyone who may read it (the daemon's user, root, a debugger).
 * So the key's bytes in that copy are wiped as well.
 */
static void config_scrub_api_key(void)
{
	static const char name[] = "TOGETHER_API_KEY=";
	char *wipe[8];
	size_t nwipe = 0;
	uintptr_t start, end;
	bool have_range = config_start_env_range(&start, &end);

	for (size_t i = 0; environ[i] != NULL && nwipe < 8; i++) {
		uintptr_t at = (uintptr_t)environ[i];
		if (have_range && at >= start && at < end &&
		    strncmp(environ[i], name, strlen(name)) == 0)
			wipe[nwipe++] = environ[i];
	}
	unsetenv("TOGETHER_API_KEY");
	for (size_t i = 0; i < nwipe; i++)
		explicit_bzero(wipe[i], strlen(wipe[i]));
}

static void config_save_process_state(int argc, char **argv)
{
	size_t n = 0;

	if (config_saved_env != NULL)
		return;
	while (environ[n] != NULL)
		n++;
	config_saved_env = xcalloc(n + 1, sizeof(char *));
	for (size_t i = 0; i < n; i++)
		config_saved_env[i] = xstrdup(environ[i]);
	config_scrub_api_key();
	config_saved_argc = argc;
	config_saved_argv = argv;
}

static struct config *config_load_with(int argc, char **argv, char *const envp[], char **err)
{
	struct config *cfg = config_new_defaults(envp);
	const char *v;

	/* Where the file is comes first: flags > environment > default. */
	if ((v = config_env_get(envp, "SNAPBUILD_CONFIG")) != NULL && *v != '\0') {
		config_replace(&cfg->config_file, v);
		cfg->config_file_explicit = true;
	}
	if (config_apply_flags(cfg, argc, argv, err) < 0)
		goto fail;
	if (config_read_file(cfg, cfg->config_file, cfg->config_file_explicit, err) < 0)
		goto fail;
	if (config_apply_env(cfg, envp, err) < 0)
		goto fail;
	if (config_apply_flags(cfg, argc, argv, err) < 0)
		goto fail;
	if (config_validate(cfg, err) < 0)
		goto fail;
	return cfg;
fail:
	config_free(cfg);
	return NULL;
}

struct config *config_load(int argc, char **argv, char **err)
{
	config_save_process_state(argc, argv);
	return config_load_with(argc, argv, config_saved_env, err);
}

#define CONFIG_TAKE(field)                                                                         \
	do {                                                                                       \
		char *t_ = cfg->field;                                                             \
		cfg->field = fresh->field;                                                         \
		fresh->field = t_;                                                                 \
	} while (0)

int config_reload(struct config *cfg, char **err)
{
	struct config *fresh;

	if (config_saved_env == NULL) {
		*err = xstrdup("configuration was never loaded");
		return -1;
	}
	fresh = config_load_with(config_saved_argc, config_saved_argv, config_saved_env, err);
	if (fresh == NULL)
		return -1;
	CONFIG_TAKE(api_key);
	CONFIG_TAKE(api_key_file);
	CONFIG_TAKE(base_url);
	CONFIG_TAKE(builder_url);
	CONFIG_TAKE(remote_arch);
	CONFIG_TAKE(local_engine);
	CONFIG_TAKE(admin_group);
	CONFIG_TAKE(tmp_dir);
	CONFIG_TAKE(builder_url_override);
	CONFIG_TAKE(key_source_value);
	CONFIG_TAKE(key_source_label);
	cfg->key_source = fresh->key_source;
	cfg->log_level = fresh->log_level;
	cfg->local_build = fresh->local_build;
	cfg->max_concurrent = fresh->max_concurrent;
	cfg->max_context_bytes = fresh->max_context_bytes;
	cfg->max_connections_per_user = fresh->max_connections_per_user;
	cfg->max_queued_per_user = fresh->max_queued_per_user;
	cfg->max_spool_bytes_per_user = fresh->max_spool_bytes_per_user;
	cfg->max_log_bytes = fresh->max_log_bytes;
	cfg->idle_exit_seconds = fresh->idle_exit_seconds;
	cfg->event_retention_days = fresh->event_retention_days;
	cfg->stall_timeout_seconds = fresh->stall_timeout_seconds;
	cfg->reuse_max_age = fresh->reuse_max_age;
	cfg->auto_cache_key = fresh->auto_cache_key;
	CONFIG_TAKE(local_engine_args);
	CONFIG_TAKE(local_isolation);
	CONFIG_TAKE(ca_file);
	CONFIG_TAKE(proxy);
	CONFIG_TAKE(no_proxy);
	config_free(fresh);
	return 0;
}

void config_usage(FILE *fp)
{
	fprintf(
	    fp,
	    "usage: snapbuildd [options]\n"
	    "\n"
	    "Turns Docker build contexts into Together Sandbox snapshots; runs in the\n"
	    "foreground and serves JSON-RPC on a Unix socket.\n"
	    "\n"
	    "  --socket PATH              socket to listen on (SNAPBUILD_SOCKET)\n"
	    "  --state-dir DIR            database and spool (SNAPBUILD_STATE_DIR)\n"
	    "  --config FILE              configuration file (SNAPBUILD_CONFIG; default\n"
	    "                             /etc/snapbuild/snapbuildd.conf for root, else\n"
	    "                             $XDG_CONFIG_HOME/snapbuild/snapbuildd.conf)\n"
	    "  --log-level LEVEL          error, warn, info or debug\n"
	    "  --max-concurrent N         builds running at once (default 2)\n"
	    "  --api-key-file FILE        read the Together API key from FILE\n"
	    "  --base-url URL             management API (TOGETHER_BASE_URL)\n"
	    "  --builder-url URL          image builder (SNAPBUILD_BUILDER_URL)\n"
	    "  --local-build              build locally by default (TOGETHER_LOCAL_BUILD)\n"
	    "  --remote-architecture A    amd64 or arm64 (TOGETHER_REMOTE_ARCHITECTURE)\n"
	    "  --local-engine E           auto, docker, podman or buildah\n"
	    "  --socket-mode MODE         socket permissions (default 0600, 0660 with a group)\n"
	    "  --socket-group GROUP       group owning the socket\n"
	    "  --admin-group GROUP        members see and control every job\n"
	    "  --idle-exit SECONDS        exit when idle this long (socket activation only;\n"
	    "                             default 300, 0 = never)\n"
	    "  --event-retention-days N   keep finished jobs' events this long\n"
	    "  --tmp-dir DIR              temporary files (default STATE_DIR/tmp)\n"
	    "  --ca-file FILE             PEM certificates to trust on top of the system's\n"
	    "  --proxy URL                proxy for every request (default: https_proxy,\n"
	    "                             http_proxy, all_proxy from the environment)\n"
	    "  --no-proxy HOSTS           hosts reached without the proxy (default: no_proxy)\n"
	    "  --version                  print the version and exit\n"
	    "  --help                     print this help and exit\n"
	    "\n"
	    "The API key comes from TOGETHER_API_KEY, $CREDENTIALS_DIRECTORY/api-key,\n"
	    "api_key_file in the configuration file, or --api-key-file.\n");
}
