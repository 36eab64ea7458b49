/*
 * Runs one local build (daemon/localbuild.c) on an event loop and prints its events
 * as JSON lines on stdout, so integration tests can drive the backend without the
 * daemon: {"event":"step","step":...}, {"event":"log","step":...,"line":...},
 * {"event":"dir","path":...} (the job directory, once it exists) and finally
 * {"event":"done","error":...,"image_ref":...}.  SIGTERM or SIGINT cancels the
 * build, as does a log line containing the --cancel-on text.
 *
 * The registry password is read from a file, so it is never in this program's
 * arguments either.  Exit status: 0 built and pushed, 1 failed, 2 usage.
 */
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/event.h>
#include <json-c/json.h>

#include "child.h"
#include "engine.h"
#include "localbuild.h"
#include "log.h"
#include "util.h"

struct driver {
	struct event_base *base;
	struct localbuild *lb;
	const char *cancel_on;
	bool dir_printed;
	bool ok;
};

static void driver_print(json_object *o)
{
	printf("%s\n", json_object_to_json_string_ext(o, JSON_C_TO_STRING_PLAIN));
	fflush(stdout);
	json_object_put(o);
}

static void driver_event(const char *event, const char *k1, const char *v1, const char *k2,
                         const char *v2)
{
	json_object *o = json_object_new_object();

	json_object_object_add(o, "event", json_object_new_string(event));
	if (k1 != NULL)
		json_object_object_add(o, k1, v1 ? json_object_new_string(v1) : NULL);
	if (k2 != NULL)
		json_object_object_add(o, k2, v2 ? json_object_new_string(v2) : NULL);
	driver_print(o);
}

static void driver_dir(struct driver *d)
{
	if (!d->dir_printed && localbuild_dir(d->lb) != NULL) {
		d->dir_printed = true;
		driver_event("dir", "path", localbuild_dir(d->lb), NULL, NULL);
	}
}

static void driver_step_cb(void *arg, const char *step)
{
	struct driver *d = arg;

	driver_dir(d);
	driver_event("step", "step", step, NULL, NULL);
}

static void driver_log_cb(void *arg, const char *step, const char *line)
{
	struct driver *d = arg;

	driver_dir(d);
	driver_event("log", "step", step, "line", line);
	if (d->cancel_on != NULL && strstr(line, d->cancel_on) != NULL) {
		driver_event("cancelling", NULL, NULL, NULL, NULL);
		localbuild_cancel(d->lb);
	}
}

static void driver_done_cb(void *arg, const char *error, const char *image_ref)
{
	struct driver *d = arg;

	driver_event("done", "error", error, "image_ref", image_ref);
	d->ok = error == NULL;
	event_base_loopexit(d->base, NULL);
}

static void driver_signal_cb(evutil_socket_t sig, short what, void *arg)
{
	struct driver *d = arg;

	(void)sig;
	(void)what;
	driver_event("cancelling", NULL, NULL, NULL, NULL);
	localbuild_cancel(d->lb);
}

static char *driver_read_file(const char *path)
{
	char buf[4096];
	size_t n;
	FILE *f = fopen(path, "r");

	if (f == NULL)
		fatal("%s", path);
	n = fread(buf, 1, sizeof(buf) - 1, f);
	fclose(f);
	while (n > 0 && (buf[n - 1] == '\n' || buf[n - 1] == '\r'))
		n--;
	return xstrndup(buf, n);
}

static void driver_usage(void)
{
	fprintf(stderr,
	        "usage: localbuild-driver --engine E --archive F --registry-url U --username U\n"
	        "       --password-file F --image-name N --tmp-root D --path P [--dockerfile F]\n"
	        "       [--build-args JSON] [--platform P] [--engine-arg A]... [--isolation I]\n"
	        "       [--insecure] [--keep-image] [--grace-ms N] [--cancel-on TEXT]\n");
	exit(2);
}

int main(int argc, char **argv)
{
	static const struct option opts[] = {
	    {"engine", required_argument, NULL, 'e'},
	    {"archive", required_argument, NULL, 'a'},
	    {"dockerfile", required_argument, NULL, 'f'},
	    {"build-args", required_argument, NULL, 'b'},
	    {"platform", required_argument, NULL, 'p'},
	    {"registry-url", required_argument, NULL, 'r'},
	    {"username", required_argument, NULL, 'u'},
	    {"password-file", required_argument, NULL, 'w'},
	    {"image-name", required_argument, NULL, 'n'},
	    {"tmp-root", required_argument, NULL, 't'},
	    {"path", required_argument, NULL, 'P'},
	    {"engine-arg", required_argument, NULL, 'g'},
	    {"isolation", required_argument, NULL, 'i'},
	    {"insecure", no_argument, NULL, 'k'},
	    {"keep-image", no_argument, NULL, 'K'},
	    {"grace-ms", required_argument, NULL, 'G'},
	    {"cancel-on", required_argument, NULL, 'c'},
	    {NULL, 0, NULL, 0},
	};
	struct localbuild_params p = {.tls_verify = true};
	struct localbuild_cbs cbs = {driver_step_cb, driver_log_cb, driver_done_cb};
	struct driver d = {0};
	const char **engine_args = xcalloc((size_t)argc + 1, sizeof(*engine_args));
	size_t n_engine_args = 0;
	char *password = NULL;
	struct event *sigterm, *sigint;
	int c;

	log_init(LOG_LEVEL_WARN);
	while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
		switch (c) {
		case 'e':
			if (engine_parse(optarg, &p.engine) == -1)
				driver_usage();
			break;
		case 'a':
			p.archive_path = optarg;
			break;
		case 'f':
			p.dockerfile = optarg;
			break;
		case 'b':
			p.build_args_json = optarg;
			break;
		case 'p':
			p.platform = optarg;
			break;
		case 'r':
			p.registry_url = optarg;
			break;
		case 'u':
			p.username = optarg;
			break;
		case 'w':
			free(password);
			password = driver_read_file(optarg);
			break;
		case 'n':
			p.image_name = optarg;
			break;
		case 't':
			p.tmp_root = optarg;
			break;
		case 'P':
			p.path_env = optarg;
			break;
		case 'g':
			engine_args[n_engine_args++] = optarg;
			break;
		case 'i':
			p.isolation = optarg;
			break;
		case 'k':
			p.tls_verify = false;
			break;
		case 'K':
			p.keep_image = true;
			break;
		case 'G':
			p.cancel_grace_ms = atoi(optarg);
			break;
		case 'c':
			d.cancel_on = optarg;
			break;
		default:
			driver_usage();
		}
	}
	if (optind != argc || p.archive_path == NULL || password == NULL)
		driver_usage();
	p.password = password;
	p.extra_engine_args = engine_args;

	d.base = event_base_new();
	child_init(d.base);
	sigterm = evsignal_new(d.base, SIGTERM, driver_signal_cb, &d);
	sigint = evsignal_new(d.base, SIGINT, driver_signal_cb, &d);
	evsignal_add(sigterm, NULL);
	evsignal_add(sigint, NULL);
	d.lb = localbuild_start(d.base, &p, &cbs, &d);
	event_base_dispatch(d.base);

	localbuild_free(d.lb);
	event_free(sigterm);
	event_free(sigint);
	child_shutdown();
	event_base_free(d.base);
	free(password);
	free(engine_args);
	return d.ok ? 0 : 1;
}
