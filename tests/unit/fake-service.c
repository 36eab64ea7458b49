/*
 * The C side of tests/integration/fake_service.py: spawn it on an ephemeral port,
 * read its address from its first line of output, collect its request log.
 */
#include "fake-service.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <event2/event.h>

#include "util.h"

static void fake_die(const char *what)
{
	fprintf(stderr, "fake-service: %s: %s\n", what, strerror(errno));
	abort();
}

/* Runs argv with stdout on a pipe and takes its first line as the listening address. */
static void fake_spawn(struct fake_service *fs, char *const argv[])
{
	char line[128];
	int out[2];
	FILE *f;

	if (pipe(out) < 0)
		fake_die("pipe");
	fs->pid = fork();
	if (fs->pid < 0)
		fake_die("fork");
	if (fs->pid == 0) {
		dup2(out[1], STDOUT_FILENO);
		close(out[0]);
		close(out[1]);
		execvp(argv[0], argv);
		_exit(127);
	}
	close(out[1]);
	f = fdopen(out[0], "r");
	if (f == NULL || fgets(line, sizeof(line), f) == NULL) {
		fprintf(stderr, "fake-service: %s did not start\n", argv[0]);
		abort();
	}
	fclose(f);
	line[strcspn(line, "\r\n")] = '\0';
	fs->base_url = xasprintf("http://%s", line);
}

struct fake_service *sim_start(const char *api_key, const char *faults_json)
{
	const char *bin = getenv("SNAPBUILD_BIN_DIR");
	struct fake_service *fs;
	char *path;

	if (bin == NULL)
		return NULL;
	path = xasprintf("%s/tests/sim/snapbuild-sim", bin);
	if (access(path, X_OK) != 0) {
		free(path);
		return NULL;
	}
	fs = xcalloc(1, sizeof(*fs));
	snprintf(fs->dir, sizeof(fs->dir), "/tmp/snapbuild-sim-XXXXXX");
	if (mkdtemp(fs->dir) == NULL)
		fake_die("mkdtemp");
	/* the key goes through the environment, as the simulator recommends */
	setenv("SNAPBUILD_SIM_API_KEY", api_key, 1);
	fake_spawn(fs,
	           (char *const[]){path, "--listen", "127.0.0.1:0", "--log-interval-ms", "2",
	                           "--faults", (char *)(faults_json ? faults_json : "{}"), NULL});
	unsetenv("SNAPBUILD_SIM_API_KEY");
	free(path);
	return fs;
}

struct fake_service *fake_service_start(const char *script_json)
{
	struct fake_service *fs = xcalloc(1, sizeof(*fs));
	const char *src = getenv("SNAPBUILD_SOURCE_DIR");
	char *script_path, *py;
	FILE *f;

	snprintf(fs->dir, sizeof(fs->dir), "/tmp/snapbuild-fake-XXXXXX");
	if (mkdtemp(fs->dir) == NULL)
		fake_die("mkdtemp");
	script_path = xasprintf("%s/script.json", fs->dir);
	fs->log_path = xasprintf("%s/requests.jsonl", fs->dir);
	if ((f = fopen(script_path, "w")) == NULL)
		fake_die("fopen script");
	fputs(script_json, f);
	fclose(f);
	if ((f = fopen(fs->log_path, "w")) == NULL)
		fake_die("fopen log");
	fclose(f);
	if (src == NULL) {
		fprintf(stderr,
		        "fake-service: SNAPBUILD_SOURCE_DIR is not set (run through ctest)\n");
		abort();
	}
	py = xasprintf("%s/tests/integration/fake_service.py", src);

	fake_spawn(fs, (char *const[]){"python3", "-B", py, "--script", script_path, "--log",
	                               fs->log_path, NULL});
	free(script_path);
	free(py);
	return fs;
}

void fake_service_stop(struct fake_service *fs)
{
	char *cmd;

	if (fs == NULL)
		return;
	kill(fs->pid, SIGKILL);
	waitpid(fs->pid, NULL, 0);
	cmd = xasprintf("rm -rf '%s'", fs->dir);
	if (system(cmd) != 0)
		fprintf(stderr, "fake-service: cannot remove %s\n", fs->dir);
	free(cmd);
	free(fs->log_path);
	free(fs->base_url);
	free(fs);
}

char *fake_service_url(const struct fake_service *fs, const char *path)
{
	return xasprintf("%s%s", fs->base_url, path);
}

json_object *fake_service_requests(const struct fake_service *fs)
{
	json_object *arr = json_object_new_array();
	FILE *f = fopen(fs->log_path, "r");
	char *line = NULL;
	size_t cap = 0;

	if (f == NULL)
		fake_die("fopen log");
	while (getline(&line, &cap, f) > 0) {
		json_object *o = json_tokener_parse(line);
		if (o)
			json_object_array_add(arr, o);
	}
	free(line);
	fclose(f);
	return arr;
}

json_object *fake_service_wait_requests(const struct fake_service *fs, size_t n, double timeout_s)
{
	double deadline = now_seconds() + timeout_s;
	json_object *arr;

	for (;;) {
		arr = fake_service_requests(fs);
		if (json_object_array_length(arr) >= n || now_seconds() > deadline)
			return arr;
		json_object_put(arr);
		usleep(10000);
	}
}

static void test_deadline_cb(evutil_socket_t fd, short kind, void *arg)
{
	(void)fd;
	(void)kind;
	event_base_loopbreak(arg);
}

static void test_tick_cb(evutil_socket_t fd, short kind, void *arg)
{
	(void)fd;
	(void)kind;
	(void)arg;
}

bool test_loop_until(struct event_base *base, const bool *flag, double timeout_s)
{
	double deadline = now_seconds() + timeout_s;
	/* a short persistent tick so the flag is re-checked even when nothing else fires */
	struct event *tick = event_new(base, -1, EV_PERSIST, test_tick_cb, NULL);
	struct timeval tv = {0, 20000};

	event_add(tick, &tv);
	while (!*flag && now_seconds() < deadline)
		event_base_loop(base, EVLOOP_ONCE);
	event_free(tick);
	return *flag;
}

void test_loop_for(struct event_base *base, double seconds)
{
	struct event *ev = evtimer_new(base, test_deadline_cb, base);
	struct timeval tv = {(time_t)seconds,
	                     (suseconds_t)((seconds - (double)(time_t)seconds) * 1e6)};

	evtimer_add(ev, &tv);
	event_base_dispatch(base);
	event_free(ev);
}

char *test_closed_port_url(void)
{
	struct sockaddr_in sa = {.sin_family = AF_INET};
	socklen_t len = sizeof(sa);
	int fd = socket(AF_INET, SOCK_STREAM, 0);

	sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	if (fd < 0 || bind(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0 ||
	    getsockname(fd, (struct sockaddr *)&sa, &len) < 0)
		fake_die("closed port");
	/* bound but never listening: connections are refused */
	close(fd);
	return xasprintf("http://127.0.0.1:%d/", ntohs(sa.sin_port));
}
