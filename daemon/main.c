/*
 * snapbuildd: start-up and shutdown in named steps, then one libevent loop.
 *
 *   config -> log -> process -> state dir + store -> [jobs] -> server -> ready
 *
 * and the reverse on SIGTERM/SIGINT.  A new subsystem adds one call in the start
 * sequence and one in main_shutdown.  The daemon never forks: systemd (or the user's
 * shell) supervises it.
 */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include <event2/event.h>

#include "api.h"
#include "child.h"
#include "config.h"
#include "daemon.h"
#include "http.h"
#include "jobs.h"
#include "log.h"
#include "methods.h"
#include "metrics.h"
#include "protocol.h"
#include "rpc.h"
#include "server.h"
#include "systemd.h"
#include "store.h"
#include "util.h"
#include "worker.h"

struct main_state {
	struct daemon *d;
	struct event *sigterm, *sigint, *sighup;
	struct event *watchdog;
	struct event *idle;
	int state_lock_fd;
};

static bool main_early_flags(int argc, char **argv)
{
	for (int i = 1; i < argc; i++) {
		if (strcmp(argv[i], "--") == 0)
			break;
		if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
			config_usage(stdout);
			return true;
		}
		if (strcmp(argv[i], "--version") == 0 || strcmp(argv[i], "-V") == 0) {
			printf("snapbuildd %s (protocol %d)\n", SNAPBUILD_VERSION,
			       SNAPBUILD_PROTOCOL_VERSION);
			return true;
		}
	}
	return false;
}

static void main_load_config(struct daemon *d, int argc, char **argv)
{
	char *err = NULL;

	d->config = config_load(argc, argv, &err);
	if (d->config == NULL)
		fatalx("%s", err);
}

static void main_init_log(struct daemon *d)
{
	log_init(d->config->log_level);
	log_info("snapbuildd %s starting (pid %d)", SNAPBUILD_VERSION, (int)getpid());
	if (d->config->api_key != NULL)
		log_info("API key configured (%s)", d->config->key_source_label);
	else if (d->config->api_key_file != NULL)
		log_warnx("no API key configured: %s (%s) is empty; remote builds and snapshot "
		          "calls will fail until it holds one",
		          d->config->api_key_file, d->config->key_source_label);
	else
		log_warnx("no API key configured: remote builds and snapshot calls will fail "
		          "until one is (TOGETHER_API_KEY, $CREDENTIALS_DIRECTORY/api-key or "
		          "api_key_file; the system service reads /etc/snapbuild/api-key)");
}

static void main_process_setup(void)
{
	struct rlimit rl;

	/* Everything the daemon creates is private unless it says otherwise. */
	umask(077);
	signal(SIGPIPE, SIG_IGN);
	/* Each client and each build costs descriptors; use what we are allowed. */
	if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
		rl.rlim_cur = rl.rlim_max > 65536 ? 65536 : rl.rlim_max;
		if (setrlimit(RLIMIT_NOFILE, &rl) < 0)
			log_warn("setrlimit(RLIMIT_NOFILE)");
	}
}

static void main_mkdir_private(const char *path, const char *what)
{
	char *dir = xstrdup(path);
	struct stat st;

	for (char *p = dir + 1;; p++) {
		bool last = *p == '\0';
		if (*p != '/' && !last)
			continue;
		*p = '\0';
		if (mkdir(dir, 0700) < 0 && errno != EEXIST)
			fatal("cannot create %s %s", what, dir);
		if (last)
			break;
		*p = '/';
	}
	if (stat(path, &st) < 0)
		fatal("%s %s", what, path);
	if (!S_ISDIR(st.st_mode))
		fatalx("%s %s is not a directory", what, path);
	if (st.st_uid == geteuid() && (st.st_mode & 077) != 0) {
		log_warnx("%s %s was accessible to others; making it private (0700)", what, path);
		if (chmod(path, 0700) < 0)
			fatal("chmod %s", path);
	}
	free(dir);
}

/*
 * Test hook, not configuration: SNAPBUILD_TEST_MAX_PAGE_COUNT=N caps the database at N
 * pages, so tests can make it fill up (SQLITE_FULL) on demand.
 */
static void main_test_hooks(struct daemon *d)
{
	const char *v = getenv("SNAPBUILD_TEST_MAX_PAGE_COUNT");
	char *end = NULL;
	long long pages = v ? strtoll(v, &end, 10) : 0;

	if (v == NULL || *v == '\0')
		return;
	if (*end != '\0' || pages <= 0)
		fatalx("SNAPBUILD_TEST_MAX_PAGE_COUNT must be a positive number of pages, not '%s'",
		       v);
	log_warnx("test hook: the database is capped at %lld pages (SNAPBUILD_TEST_MAX_PAGE_COUNT)",
	          pages);
	store_set_max_page_count(d->store, pages);
}

static void main_open_state(struct main_state *ms)
{
	struct daemon *d = ms->d;
	char *path, *err = NULL;

	main_mkdir_private(d->config->state_dir, "state directory");
	main_mkdir_private(d->config->tmp_dir, "temporary directory");
	path = xasprintf("%s/snapbuildd.lock", d->config->state_dir);
	ms->state_lock_fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
	if (ms->state_lock_fd < 0)
		fatal("cannot open %s", path);
	if (flock(ms->state_lock_fd, LOCK_EX | LOCK_NB) < 0)
		fatalx("another snapbuildd is using the state directory %s", d->config->state_dir);
	free(path);

	path = xasprintf("%s/snapbuild.db", d->config->state_dir);
	d->store = store_open(path, &err);
	if (d->store == NULL)
		fatalx("cannot open the database %s: %s", path, err);
	free(path);
	main_test_hooks(d);
}

/* How HTTP reaches the service: CA certificates and proxy from the configuration. */
static void main_http_options(struct daemon *d)
{
	struct http_options o = {
	    .ca_file = d->config->ca_file,
	    .proxy = d->config->proxy,
	    .no_proxy = d->config->no_proxy,
	};

	http_set_options(d->http, &o);
	api_set_config_file(d->api, d->config->config_file);
	if (o.ca_file)
		log_info("trusting the CA certificates in %s as well as the system's", o.ca_file);
	if (o.proxy) {
		char *shown = http_proxy_display(o.proxy);
		log_info("proxy %s%s%s", shown, o.no_proxy ? ", except for " : "",
		         o.no_proxy ? o.no_proxy : "");
		free(shown);
	}
}

/* The Together APIs over libcurl on the loop, and the job engine (which recovers
 * unfinished jobs before anyone can connect). */
static void main_start_jobs(struct daemon *d)
{
	char *err = NULL;

	d->http = http_new(d->base, &err);
	if (d->http == NULL)
		fatalx("cannot set up HTTP: %s", err);
	d->api = api_new(d->http, d->config->base_url, d->config->builder_url, d->config->api_key);
	api_set_stall_timeout(d->api, d->config->stall_timeout_seconds * 1000L);
	main_http_options(d);
	d->jobs = jobs_new(d);
	if (jobs_start(d->jobs, &err) < 0)
		fatalx("cannot start the job engine: %s", err);
}

static char *main_metrics_cb(void *arg, char **err)
{
	return methods_daemon_metrics_text(arg, err);
}

static void main_listen(struct daemon *d)
{
	char *err = NULL;

	d->server = server_new(d, &rpc_server_ops);
	if (server_listen(d->server, &err) < 0)
		fatalx("%s", err);
	if (d->config->metrics_listen != NULL) {
		d->metrics_http =
		    metrics_http_new(d->base, d->config->metrics_listen, main_metrics_cb, d, &err);
		if (d->metrics_http == NULL)
			fatalx("%s", err);
		log_info("metrics: http://%s/metrics", metrics_http_address(d->metrics_http));
	}
}

static void main_stop(struct main_state *ms, const char *why)
{
	struct daemon *d = ms->d;

	if (d->stopping)
		return;
	d->stopping = true;
	log_info("stopping (%s)", why);
	systemd_notify("STOPPING=1");
	server_stop_listening(d->server);
	/* Followers' close callbacks let go of their jobs; jobs stop in main_shutdown. */
	server_close_all(d->server);
	event_base_loopexit(d->base, NULL);
}

static void main_signal_cb(evutil_socket_t sig, short what, void *arg)
{
	struct main_state *ms = arg;
	char *err = NULL;
	(void)what;

	if (sig != SIGHUP) {
		main_stop(ms, sig == SIGTERM ? "SIGTERM" : "SIGINT");
		return;
	}
	systemd_notify("RELOADING=1");
	if (config_reload(ms->d->config, &err) < 0) {
		log_warnx("configuration not reloaded: %s", err);
		free(err);
	} else {
		log_set_level(ms->d->config->log_level);
		api_set_key(ms->d->api, ms->d->config->api_key);
		api_set_stall_timeout(ms->d->api, ms->d->config->stall_timeout_seconds * 1000L);
		main_http_options(ms->d);
		log_info("configuration reloaded");
	}
	systemd_notify("READY=1");
	daemon_status_update(ms->d);
}

static void main_watchdog_cb(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	(void)arg;
	systemd_notify("WATCHDOG=1");
}

static void main_idle_cb(evutil_socket_t fd, short what, void *arg)
{
	struct main_state *ms = arg;
	/* Read again: SIGHUP may have changed it (to 0, never) since the timer was armed. */
	int secs = config_idle_exit(ms->d->config, server_socket_activated(ms->d->server));
	(void)fd;
	(void)what;

	if (secs <= 0 || server_conn_count(ms->d->server) > 0)
		return;
	if (!jobs_idle(ms->d->jobs)) {
		struct timeval tv = {secs, 0};
		evtimer_add(ms->idle, &tv);
		return;
	}
	main_stop(ms, "idle");
}

/* Idle exit only makes sense when systemd can start us again on the next connection. */
static void main_conn_count_cb(struct server *s, void *arg)
{
	struct main_state *ms = arg;
	int secs = config_idle_exit(ms->d->config, server_socket_activated(s));

	if (secs <= 0 || ms->d->stopping)
		return;
	if (server_conn_count(s) == 0) {
		struct timeval tv = {secs, 0};
		evtimer_add(ms->idle, &tv);
	} else {
		evtimer_del(ms->idle);
	}
}

static void main_ready(struct main_state *ms)
{
	struct daemon *d = ms->d;
	uint64_t usec;
	int idle;

	ms->sigterm = evsignal_new(d->base, SIGTERM, main_signal_cb, ms);
	ms->sigint = evsignal_new(d->base, SIGINT, main_signal_cb, ms);
	ms->sighup = evsignal_new(d->base, SIGHUP, main_signal_cb, ms);
	evsignal_add(ms->sigterm, NULL);
	evsignal_add(ms->sigint, NULL);
	evsignal_add(ms->sighup, NULL);

	usec = systemd_watchdog_usec();
	unsetenv("WATCHDOG_USEC");
	unsetenv("WATCHDOG_PID");
	if (usec > 0) {
		struct timeval tv = {(time_t)(usec / 2000000), (suseconds_t)((usec / 2) % 1000000)};
		ms->watchdog = event_new(d->base, -1, EV_PERSIST, main_watchdog_cb, ms);
		event_add(ms->watchdog, &tv);
	}
	ms->idle = evtimer_new(d->base, main_idle_cb, ms);
	idle = config_idle_exit(d->config, server_socket_activated(d->server));
	if (idle > 0)
		log_info("socket-activated: exits after %d s with no job and no client", idle);
	server_set_conn_count_cb(d->server, main_conn_count_cb, ms);
	main_conn_count_cb(d->server, ms);

	/* STATUS first, so whoever sees READY also has the queue summary. */
	daemon_status_update(d);
	systemd_notify("READY=1");
	log_info("ready in %.1f ms", (now_seconds() - d->started_at) * 1000);
}

static void main_shutdown(struct main_state *ms)
{
	struct daemon *d = ms->d;

	event_free(ms->sigterm);
	event_free(ms->sigint);
	event_free(ms->sighup);
	if (ms->watchdog != NULL)
		event_free(ms->watchdog);
	event_free(ms->idle);
	/* Outside the loop: packing threads may still hand back through it. */
	jobs_free(d->jobs);
	api_free(d->api);
	http_free(d->http);
	metrics_http_free(d->metrics_http);
	server_free(d->server);
	store_close(d->store);
	close(ms->state_lock_fd);
	event_base_free(d->base);
	libevent_global_shutdown();
	log_info("stopped");
	config_free(d->config);
}

int main(int argc, char **argv)
{
	struct daemon d = {0};
	struct main_state ms = {.d = &d, .state_lock_fd = -1};

	if (main_early_flags(argc, argv))
		return 0;
	d.started_at = now_seconds();
	log_init(LOG_LEVEL_INFO);
	main_load_config(&d, argc, argv);
	main_init_log(&d);
	main_process_setup();
	worker_init();
	d.base = event_base_new();
	if (d.base == NULL)
		fatalx("cannot create the event loop");
	child_init(d.base);
	main_open_state(&ms);
	main_start_jobs(&d);
	main_listen(&d);
	main_ready(&ms);

	event_base_dispatch(d.base);

	if (!d.stopping)
		main_stop(&ms, "event loop ended");
	main_shutdown(&ms);
	return 0;
}
