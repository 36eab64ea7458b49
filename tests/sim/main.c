/*
 * snapbuild-sim's entry point: options, the listening socket (its address is the
 * first line of stdout, so that a test can bind port 0 and learn the port), the
 * event loop, and an orderly teardown on SIGTERM/SIGINT that frees everything, so
 * the sanitizer builds can check for leaks.
 */
#include "sim.h"

#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <arpa/inet.h>

#include "util.h"

static const char sim_usage[] =
    "usage: snapbuild-sim [options]\n"
    "Simulates Together's image-builder and management APIs on one HTTP listener.\n"
    "\n"
    "  --listen ADDR:PORT        address to listen on (default 127.0.0.1:0; port 0 picks a\n"
    "                            free port); the address is printed as stdout's first line\n"
    "  --api-key KEY             the accepted bearer token (or SNAPBUILD_SIM_API_KEY)\n"
    "  --state-dir DIR           keep snapshots and aliases in DIR/state.json\n"
    "  --registry HOST[:PORT]/NS registry and namespace of built images and credentials\n"
    "                            (default registry.sim.invalid/sim-namespace)\n"
    "  --registry-username U     username handed out by the credentials route\n"
    "  --registry-password P     password handed out (or SNAPBUILD_SIM_REGISTRY_PASSWORD)\n"
    "  --log-interval-ms N       pace of build log lines (default 30; 0 = all at once)\n"
    "  --log-lines N             extra log lines per build, sent in one burst (default 0)\n"
    "  --latency-ms N            extra delay before answering each API request\n"
    "  --heartbeat-ms N          SSE keep-alive comment interval when idle (default 15000;\n"
    "                            0 disables)\n"
    "  --heartbeat SECONDS       the same in seconds (0 = no heartbeats)\n"
    "  --log-ids on|off|opaque   log events carry numeric ids, none, or non-numeric ones\n"
    "                            (default on)\n"
    "  --reconnect MODE          a log reconnect: resume (after Last-Event-ID, the default),\n"
    "                            replay (from the start) or continue (where the build's\n"
    "                            last stream stopped)\n"
    "  --submit-status 200|201|202  status of an accepted submit (default 200)\n"
    "  --max-body-bytes N        largest accepted request body (default 4 GiB)\n"
    "  --faults JSON             initial faults, as the body of POST /_sim/faults\n"
    "  --verbose                 log each answered request to stderr\n"
    "  --help, --version\n";

enum {
	OPT_LISTEN = 256,
	OPT_API_KEY,
	OPT_STATE_DIR,
	OPT_REGISTRY,
	OPT_REGISTRY_USER,
	OPT_REGISTRY_PASSWORD,
	OPT_LOG_INTERVAL,
	OPT_LOG_LINES,
	OPT_LATENCY,
	OPT_HEARTBEAT,
	OPT_HEARTBEAT_S,
	OPT_LOG_IDS,
	OPT_RECONNECT,
	OPT_SUBMIT_STATUS,
	OPT_MAX_BODY,
	OPT_FAULTS,
	OPT_VERBOSE,
	OPT_HELP,
	OPT_VERSION,
};

static const struct option sim_options[] = {
    {"listen", required_argument, NULL, OPT_LISTEN},
    {"api-key", required_argument, NULL, OPT_API_KEY},
    {"state-dir", required_argument, NULL, OPT_STATE_DIR},
    {"registry", required_argument, NULL, OPT_REGISTRY},
    {"registry-username", required_argument, NULL, OPT_REGISTRY_USER},
    {"registry-password", required_argument, NULL, OPT_REGISTRY_PASSWORD},
    {"log-interval-ms", required_argument, NULL, OPT_LOG_INTERVAL},
    {"log-lines", required_argument, NULL, OPT_LOG_LINES},
    {"latency-ms", required_argument, NULL, OPT_LATENCY},
    {"heartbeat-ms", required_argument, NULL, OPT_HEARTBEAT},
    {"heartbeat", required_argument, NULL, OPT_HEARTBEAT_S},
    {"log-ids", required_argument, NULL, OPT_LOG_IDS},
    {"reconnect", required_argument, NULL, OPT_RECONNECT},
    {"submit-status", required_argument, NULL, OPT_SUBMIT_STATUS},
    {"max-body-bytes", required_argument, NULL, OPT_MAX_BODY},
    {"faults", required_argument, NULL, OPT_FAULTS},
    {"verbose", no_argument, NULL, OPT_VERBOSE},
    {"help", no_argument, NULL, OPT_HELP},
    {"version", no_argument, NULL, OPT_VERSION},
    {NULL, 0, NULL, 0},
};

static int sim_parse_number(const char *opt, const char *s, long long max, long long *out)
{
	char *end;
	errno = 0;
	long long v = strtoll(s, &end, 10);
	if (errno != 0 || end == s || *end != '\0' || v < 0 || v > max) {
		fprintf(stderr, "snapbuild-sim: --%s wants a number from 0 to %lld\n", opt, max);
		return -1;
	}
	*out = v;
	return 0;
}

/* The index of value in the NULL-terminated names, or -1 with a message. */
static int sim_parse_choice(const char *opt, const char *value, const char *const *names)
{
	for (int i = 0; names[i] != NULL; i++)
		if (strcmp(value, names[i]) == 0)
			return i;
	fprintf(stderr, "snapbuild-sim: --%s wants one of", opt);
	for (int i = 0; names[i] != NULL; i++)
		fprintf(stderr, "%s%s", i ? ", " : " ", names[i]);
	fputc('\n', stderr);
	return -1;
}

static void sim_set(char **slot, const char *value)
{
	free(*slot);
	*slot = xstrdup(value);
}

/* Returns 0 to run, 1 to exit successfully (help/version), -1 on a usage error. */
static int sim_parse_args(struct sim *sim, int argc, char **argv, char **faults_json)
{
	struct sim_config *c = &sim->config;
	long long n;
	int opt;
	sim_set(&c->listen, "127.0.0.1:0");
	sim_set(&c->registry, "registry.sim.invalid/sim-namespace");
	sim_set(&c->registry_username, "sim-user");
	sim_set(&c->registry_password, getenv("SNAPBUILD_SIM_REGISTRY_PASSWORD")
	                                   ? getenv("SNAPBUILD_SIM_REGISTRY_PASSWORD")
	                                   : "sim-password");
	if (getenv("SNAPBUILD_SIM_API_KEY") != NULL)
		sim_set(&c->api_key, getenv("SNAPBUILD_SIM_API_KEY"));
	c->log_interval_ms = 30;
	c->heartbeat_ms = 15000;
	c->log_ids = SIM_IDS_ON;
	c->reconnect = SIM_RECONNECT_RESUME;
	c->submit_status = 200;
	c->max_body_bytes = 4ll << 30;
	while ((opt = getopt_long(argc, argv, "", sim_options, NULL)) != -1) {
		const char *name = opt >= OPT_LISTEN && opt <= OPT_VERSION
		                       ? sim_options[opt - OPT_LISTEN].name
		                       : "";
		switch (opt) {
		case OPT_LISTEN:
			sim_set(&c->listen, optarg);
			break;
		case OPT_API_KEY:
			sim_set(&c->api_key, optarg);
			break;
		case OPT_STATE_DIR:
			sim_set(&c->state_dir, optarg);
			break;
		case OPT_REGISTRY:
			sim_set(&c->registry, optarg);
			break;
		case OPT_REGISTRY_USER:
			sim_set(&c->registry_username, optarg);
			break;
		case OPT_REGISTRY_PASSWORD:
			sim_set(&c->registry_password, optarg);
			break;
		case OPT_LOG_INTERVAL:
			if (sim_parse_number(name, optarg, 600000, &n) < 0)
				return -1;
			c->log_interval_ms = (int)n;
			break;
		case OPT_LOG_LINES:
			if (sim_parse_number(name, optarg, 50000000, &n) < 0)
				return -1;
			c->log_lines = (long)n;
			break;
		case OPT_LATENCY:
			if (sim_parse_number(name, optarg, 600000, &n) < 0)
				return -1;
			c->latency_ms = (int)n;
			break;
		case OPT_HEARTBEAT:
			if (sim_parse_number(name, optarg, 3600000, &n) < 0)
				return -1;
			c->heartbeat_ms = (int)n;
			break;
		case OPT_HEARTBEAT_S:
			if (sim_parse_number(name, optarg, 3600, &n) < 0)
				return -1;
			c->heartbeat_ms = (int)n * 1000;
			break;
		case OPT_LOG_IDS: {
			static const char *const ids[] = {"on", "off", "opaque", NULL};
			int i = sim_parse_choice(name, optarg, ids);
			if (i < 0)
				return -1;
			c->log_ids = (enum sim_log_ids)i;
			break;
		}
		case OPT_RECONNECT: {
			static const char *const modes[] = {"resume", "replay", "continue", NULL};
			int i = sim_parse_choice(name, optarg, modes);
			if (i < 0)
				return -1;
			c->reconnect = (enum sim_reconnect)i;
			break;
		}
		case OPT_SUBMIT_STATUS: {
			static const char *const statuses[] = {"200", "201", "202", NULL};
			int i = sim_parse_choice(name, optarg, statuses);
			if (i < 0)
				return -1;
			c->submit_status = 200 + i;
			break;
		}
		case OPT_MAX_BODY:
			if (sim_parse_number(name, optarg, LLONG_MAX, &n) < 0)
				return -1;
			c->max_body_bytes = n;
			break;
		case OPT_FAULTS:
			sim_set(faults_json, optarg);
			break;
		case OPT_VERBOSE:
			c->verbose = true;
			break;
		case OPT_HELP:
			fputs(sim_usage, stdout);
			return 1;
		case OPT_VERSION:
			printf("snapbuild-sim %s\n", SNAPBUILD_VERSION);
			return 1;
		default:
			fputs(sim_usage, stderr);
			return -1;
		}
	}
	if (optind < argc) {
		fprintf(stderr, "snapbuild-sim: unexpected argument \"%s\"\n", argv[optind]);
		return -1;
	}
	if (c->api_key == NULL || c->api_key[0] == '\0') {
		fprintf(stderr, "snapbuild-sim: an API key is required (--api-key or "
		                "SNAPBUILD_SIM_API_KEY)\n");
		return -1;
	}
	const char *slash = strchr(c->registry, '/');
	if (slash == NULL || slash == c->registry || slash[1] == '\0') {
		fprintf(stderr, "snapbuild-sim: --registry wants HOST[:PORT]/NAMESPACE\n");
		return -1;
	}
	return 0;
}

/* Binds the listener and prints its address on stdout's first line. */
static int sim_listen(struct sim *sim)
{
	char *spec = xstrdup(sim->config.listen), *host = spec, *port;
	struct sockaddr_storage ss;
	socklen_t sl = sizeof(ss);
	char addr[INET6_ADDRSTRLEN];
	int rc = -1;
	if (host[0] == '[') {
		char *close = strchr(host, ']');
		if (close == NULL || close[1] != ':')
			goto bad;
		*close = '\0';
		host++;
		port = close + 2;
	} else {
		port = strrchr(host, ':');
		if (port == NULL)
			goto bad;
		*port++ = '\0';
	}
	char *end;
	long p = strtol(port, &end, 10);
	if (*port == '\0' || *end != '\0' || p < 0 || p > 65535)
		goto bad;
	struct evhttp_bound_socket *bound =
	    evhttp_bind_socket_with_handle(sim->http, host, (ev_uint16_t)p);
	if (bound == NULL) {
		fprintf(stderr, "snapbuild-sim: cannot listen on %s: %s\n", sim->config.listen,
		        strerror(errno));
		goto out;
	}
	if (getsockname(evhttp_bound_socket_get_fd(bound), (struct sockaddr *)&ss, &sl) < 0) {
		fprintf(stderr, "snapbuild-sim: getsockname: %s\n", strerror(errno));
		goto out;
	}
	if (ss.ss_family == AF_INET6) {
		struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)&ss;
		inet_ntop(AF_INET6, &s6->sin6_addr, addr, sizeof(addr));
		printf("[%s]:%u\n", addr, ntohs(s6->sin6_port));
	} else {
		struct sockaddr_in *s4 = (struct sockaddr_in *)&ss;
		inet_ntop(AF_INET, &s4->sin_addr, addr, sizeof(addr));
		printf("%s:%u\n", addr, ntohs(s4->sin_port));
	}
	fflush(stdout);
	rc = 0;
	goto out;
bad:
	fprintf(stderr, "snapbuild-sim: --listen wants HOST:PORT or [V6]:PORT\n");
out:
	free(spec);
	return rc;
}

static void sim_signal_cb(evutil_socket_t sig, short what, void *arg)
{
	struct sim *sim = arg;
	(void)sig;
	(void)what;
	event_base_loopexit(sim->base, NULL);
}

static int sim_make_tmpdir(struct sim *sim)
{
	const char *base = getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp";
	char *tmpl = xasprintf("%s/snapbuild-sim.XXXXXX", base);
	if (mkdtemp(tmpl) == NULL) {
		fprintf(stderr, "snapbuild-sim: cannot create a directory under %s: %s\n", base,
		        strerror(errno));
		free(tmpl);
		return -1;
	}
	sim->tmpdir = tmpl;
	return 0;
}

static void sim_config_free(struct sim_config *c)
{
	free(c->listen);
	free(c->api_key);
	free(c->state_dir);
	free(c->registry);
	free(c->registry_username);
	free(c->registry_password);
}

int main(int argc, char **argv)
{
	struct sim sim;
	struct event *sigterm = NULL, *sigint = NULL;
	char *faults_json = NULL, *err = NULL;
	int rc = 1;

	memset(&sim, 0, sizeof(sim));
	sim_faults_init(&sim.faults);
	sim.deletes = json_object_new_array();
	int parsed = sim_parse_args(&sim, argc, argv, &faults_json);
	if (parsed != 0) {
		rc = parsed > 0 ? 0 : 2;
		goto out;
	}
	if (faults_json != NULL) {
		struct json_object *f = json_tokener_parse(faults_json);
		int applied = f != NULL ? sim_faults_apply(&sim.faults, f, &err) : -1;
		json_object_put(f);
		if (applied < 0) {
			fprintf(stderr, "snapbuild-sim: --faults: %s\n",
			        err ? err : "not a JSON object");
			rc = 2;
			goto out;
		}
	}
	signal(SIGPIPE, SIG_IGN);
	if (sim.config.state_dir != NULL && mkdir(sim.config.state_dir, 0700) < 0 &&
	    errno != EEXIST) {
		fprintf(stderr, "snapbuild-sim: cannot create %s: %s\n", sim.config.state_dir,
		        strerror(errno));
		goto out;
	}
	if (sim_snapshots_init(&sim, &err) < 0) {
		fprintf(stderr, "snapbuild-sim: %s\n", err);
		goto out;
	}
	if (sim_make_tmpdir(&sim) < 0)
		goto out;
	/* Precise timers: --log-interval-ms means what it says even below the coarse
	 * monotonic clock's tick (4 ms at HZ 250). */
	struct event_config *ecfg = event_config_new();
	if (ecfg != NULL)
		event_config_set_flag(ecfg, EVENT_BASE_FLAG_PRECISE_TIMER);
	sim.base = ecfg ? event_base_new_with_config(ecfg) : event_base_new();
	if (ecfg != NULL)
		event_config_free(ecfg);
	sim_http_init(&sim);
	if (sim_listen(&sim) < 0)
		goto out;
	sigterm = evsignal_new(sim.base, SIGTERM, sim_signal_cb, &sim);
	sigint = evsignal_new(sim.base, SIGINT, sim_signal_cb, &sim);
	evsignal_add(sigterm, NULL);
	evsignal_add(sigint, NULL);
	event_base_dispatch(sim.base);
	rc = 0;
out:
	sim_http_free(&sim);
	sim_builds_free(&sim);
	sim_snapshots_free(&sim);
	sim_faults_clear(&sim.faults);
	json_object_put(sim.deletes);
	if (sigterm != NULL)
		event_free(sigterm);
	if (sigint != NULL)
		event_free(sigint);
	if (sim.base != NULL)
		event_base_free(sim.base);
	if (sim.tmpdir != NULL && rmdir(sim.tmpdir) < 0)
		fprintf(stderr, "snapbuild-sim: cannot remove %s: %s\n", sim.tmpdir,
		        strerror(errno));
	free(sim.tmpdir);
	free(faults_json);
	free(err);
	sim_config_free(&sim.config);
	return rc;
}
