/*
 * snapbuild create: submit a context (or an image) and follow the build to its
 * snapshot.  The flags are those of `together-sandbox snapshots create` plus the
 * daemon's own.  The context is packed here, with this user's rights (.dockerignore
 * applied), into an unlinked temporary file that travels to the daemon as a file
 * descriptor with its size and digest: the daemon never reads the user's files.
 *
 * On a terminal the build is shown live and ends with "✔ Snapshot created: <id>";
 * otherwise (or with --ci) log lines go to stderr and only the snapshot id to
 * stdout.  Ctrl+C cancels the job (exit 130); with --detach the job id is printed at
 * once and the job runs on without us.
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "client.h"
#include "cmd.h"
#include "output.h"
#include "packctx.h"
#include "sanitize.h"
#include "util.h"

/* K=V into obj; false on a malformed pair. */
static bool add_pair(json_object *obj, const char *kv)
{
	const char *eq = strchr(kv, '=');
	if (eq == NULL || eq == kv)
		return false;
	char *k = xstrndup(kv, (size_t)(eq - kv));
	json_object_object_add(obj, k, json_object_new_string(eq + 1));
	free(k);
	return true;
}

/* --build-arg K=V, or docker's K alone: the value of K in our environment (unset: none). */
static bool add_build_arg(json_object *obj, const char *arg)
{
	const char *v;
	if (strchr(arg, '=') != NULL)
		return add_pair(obj, arg);
	if (*arg == '\0')
		return false;
	if ((v = getenv(arg)) != NULL)
		json_object_object_add(obj, arg, json_object_new_string(v));
	return true;
}

/*
 * The live view.  When a job fails, the daemon logs its error as a line of its own (no
 * step) just before the state "failed"; report() shows that error with the job's id, so
 * the view holds such a line back until it knows whether the failure follows.
 */
struct create_view {
	struct event_printer *printer;
	json_object *held;
};

static void view_print(struct create_view *v, json_object *ev)
{
	if (v->held != NULL) {
		bool failed = strcmp(json_str(ev, "kind"), "state") == 0 &&
		              strcmp(json_str(ev, "text"), "failed") == 0;
		if (!failed)
			event_printer_print(v->printer, v->held);
		json_object_put(v->held);
		v->held = NULL;
	}
	if (strcmp(json_str(ev, "kind"), "log") == 0 && *json_str(ev, "step") == '\0')
		v->held = json_object_get(ev);
	else
		event_printer_print(v->printer, ev);
}

static void notify_cb(void *arg, const char *method, json_object *params)
{
	struct create_view *v = arg;
	if (v->printer != NULL && strcmp(method, "build.event") == 0)
		view_print(v, params);
}

/* After Ctrl+C: cancel the job on a fresh connection (the old one is mid-call). */
static int cancel_job(struct cmd_ctx *ctx, const char *id)
{
	struct sb_client *c = cmd_connect(ctx);
	json_object *params = json_object_new_object();
	json_object_object_add(params, "id", json_object_new_string(id));
	json_object *res = NULL;
	int rc = cmd_call(ctx, c, "build.cancel", params, &res);
	json_object_put(res);
	sb_client_close(c);
	if (rc == 0)
		sanitize_printf(stderr, SANITIZE_FIELD, "\ncancelled job %s\n", id);
	return 130;
}

enum progress { PROGRESS_AUTO, PROGRESS_TTY, PROGRESS_PLAIN, PROGRESS_QUIET };

/* Prints the outcome; the exit status follows the job's final state.  Ids and the alias
 * are one-line fields, the error and hint messages: all sanitised (sanitize.h).  A
 * failure names its job and the command to read its log, whatever the mode: the one
 * place the error is shown. */
static int report(struct cmd_ctx *ctx, json_object *job, bool live, bool plain)
{
	const char *state = json_str(job, "state");
	unsigned flags = output_text_flags(stderr);
	char *sid = cmd_short_id(json_str(job, "id"), false);
	int rc = 1;
	if (ctx->json) {
		cmd_print_json(job);
	} else if (strcmp(state, "succeeded") == 0) {
		const char *alias = json_str(job, "alias");
		if (live) {
			bool color = output_color(stdout);
			printf("%s✔%s Snapshot created: ", color ? "\033[32m" : "",
			       color ? "\033[0m" : "");
			sanitize_fputs(json_str(job, "snapshot_id"), SANITIZE_FIELD, stdout);
			if (*alias)
				sanitize_printf(stdout, SANITIZE_FIELD, " (%s)", alias);
			printf("\n");
		} else {
			sanitize_fputs(json_str(job, "snapshot_id"), SANITIZE_FIELD, stdout);
			printf("\n");
		}
	}
	if (strcmp(state, "succeeded") == 0) {
		rc = 0;
	} else if (strcmp(state, "failed") == 0) {
		bool color = !plain && output_color(stderr);
		fprintf(stderr, "%s✖%s ", color ? "\033[31m" : "", color ? "\033[0m" : "");
		sanitize_printf(stderr, SANITIZE_FIELD, "Build failed (job %s): ", sid);
		sanitize_printf(stderr, flags, "%s\n", json_str(job, "error"));
		/* The daemon's hint may name the log too: the line below says it once. */
		if (*json_str(job, "hint") && !strstr(json_str(job, "hint"), "snapbuild logs "))
			sanitize_printf(stderr, flags, "  hint: %s\n", json_str(job, "hint"));
		sanitize_printf(stderr, SANITIZE_FIELD, "  the build log: snapbuild logs %s", sid);
		fputc('\n', stderr);
	} else {
		sanitize_printf(stderr, SANITIZE_FIELD, "job %s ended %s", sid, state);
		fputc('\n', stderr);
	}
	free(sid);
	return rc;
}

/* On a terminal: one line redrawn while the context is packed. */
static void pack_progress_cb(void *arg, uint64_t files, uint64_t bytes)
{
	const char *dir = arg;
	char *b = output_bytes(bytes);
	fprintf(stderr, "\r\033[Kpacking %s: %llu file%s, %s", dir, (unsigned long long)files,
	        files == 1 ? "" : "s", b);
	fflush(stderr);
	free(b);
}

/* Packs dir into p, printing warnings (and progress on a terminal); 0, or the exit code. */
static int pack_context(const char *dir, const char *dockerfile, bool live, bool no_cache,
                        struct packctx *p)
{
	char *err = NULL;
	struct packctx_options po = {
	    .dir = dir,
	    .dockerfile = dockerfile,
	    .out_fd = -1,
	    .no_cache = no_cache,
	    .cancel = (volatile int *)&cmd_interrupted,
	    .on_progress = live ? pack_progress_cb : NULL,
	    .arg = (void *)dir,
	};
	int rc = packctx_run(&po, p, &err);
	if (live)
		fprintf(stderr, "\r\033[K");
	if (rc != 0) {
		if (cmd_interrupted) {
			fprintf(stderr, "snapbuild: interrupted while packing the context\n");
			free(err);
			return CMD_EXIT_INTERRUPTED;
		}
		bool df = strncmp(err, "Dockerfile", 10) == 0;
		sanitize_printf(stderr, 0,
		                "snapbuild: packing the context failed: %s\n  hint: %s\n", err,
		                df ? "--dockerfile (-f) is a path from the current directory, as "
		                     "in docker build -f; it may lie outside the context"
		                   : "fix the path named (make it readable, or leave it out "
		                     "with .dockerignore) and run again");
		free(err);
		return CMD_EXIT_FAILURE;
	}
	/* A warning names files of the context, which anyone may have named. */
	for (size_t i = 0; i < p->nwarnings; i++)
		sanitize_printf(stderr, 0, "warning: %s\n", p->warnings[i]);
	if (live) {
		char *a = output_bytes(p->result.total_bytes),
		     *b = output_bytes(p->result.archive_size);
		fprintf(stderr, "packed %s: %llu file%s, %s → %s\n", dir,
		        (unsigned long long)p->result.file_count,
		        p->result.file_count == 1 ? "" : "s", a, b);
		free(a);
		free(b);
	}
	return 0;
}

static int cmd_create_exec(struct cmd_ctx *ctx);

const struct cmd_entry cmd_create_entry = {
    .name = "create",
    .alias = NULL,
    .usage = "[--context DIR | --image IMAGE] [-f FILE] [-t ALIAS] [--tag K=V]...\n"
             "                        [--build-arg K[=V]]... [--ttl SECONDS] [--cache-key KEY]\n"
             "                        [--local | --remote] [--arch amd64|arm64] [--no-cache]\n"
             "                        [-d] [-q] [--progress auto|tty|plain|quiet] [--ci]\n"
             "                        [-o table|json]",
    .summary = "build a context (or an image) into a snapshot",
    .exec = cmd_create_exec,
    .help = "Options:\n"
            "  -c, --context DIR        the build context, packed here with your rights and\n"
            "                           .dockerignore applied (default: the current directory)\n"
            "  -i, --image IMAGE        make the snapshot from an existing image instead\n"
            "  -f, --dockerfile FILE    the Dockerfile, from the current directory as in\n"
            "                           docker build -f (default: Dockerfile in the context); one\n"
            "                           outside the context is sent along, and its\n"
            "                           FILE.dockerignore applies if there is one (also --file)\n"
            "  -a, -t, --alias ALIAS    point ALIAS (tag or namespace@tag) at the snapshot\n"
            "                           (-t as in docker build -t)\n"
            "      --tag K=V            a tag on the snapshot (repeatable)\n"
            "      --build-arg K[=V]    a build argument; K alone takes $K from the\n"
            "                           environment, as docker does (repeatable)\n"
            "      --ttl SECONDS        retire the snapshot after this long (default: never)\n"
            "  -k, --cache-key KEY      reuse the builder's cache of earlier builds with KEY\n"
            "                           (needs a context; default: one the daemon keeps per\n"
            "                           user and context directory, so builds of a project\n"
            "                           share layers)\n"
            "      --local, --remote    build with docker/podman/buildah here, or on Together's\n"
            "                           builder (default: the daemon's local_build, remote\n"
            "                           unless set; TOGETHER_LOCAL_BUILD=1 in your\n"
            "                           environment means --local)\n"
            "      --arch amd64|arm64   the snapshot's architecture (default: the daemon's;\n"
            "                           TOGETHER_REMOTE_ARCHITECTURE in your environment sets\n"
            "                           it as --arch would)\n"
            "      --no-cache           build from scratch: repack everything, do not reuse an\n"
            "                           identical earlier build (default: one of yours that\n"
            "                           succeeded in the last 24 h gives its snapshot at\n"
            "                           once), and send no default cache key\n"
            "  -d, --detach             print the job id and return; the build goes on\n"
            "  -q, --quiet              no build output; only the snapshot id on stdout\n"
            "      --progress MODE      auto (default: tty on a terminal, else plain), tty\n"
            "                           (steps, progress bar, log), plain (log lines on\n"
            "                           stderr), quiet (as -q)\n"
            "      --ci                 plain output even on a terminal\n"
            "  -o, --output table|json  json: the final job as the daemon sends it\n"
            "\n"
            "In a pipe or with --ci the log goes to stderr and only the snapshot id to stdout.\n"
            "A failed build says which job it was and how to read its log.  If the daemon\n"
            "restarts meanwhile, create connects again and goes on where it stopped.\n"
            "Ctrl+C cancels the job (exit 130).\n",
};

/* TOGETHER_LOCAL_BUILD and TOGETHER_REMOTE_ARCHITECTURE, as the SDKs read them. */
static bool env_true(const char *name)
{
	const char *v = getenv(name);
	return v != NULL && (strcmp(v, "1") == 0 || strcasecmp(v, "true") == 0 ||
	                     strcasecmp(v, "yes") == 0 || strcasecmp(v, "on") == 0);
}

static bool arch_valid(const char *a)
{
	return strcmp(a, "amd64") == 0 || strcmp(a, "arm64") == 0;
}

static int cmd_create_exec(struct cmd_ctx *ctx)
{
	static const struct option opts[] = {
	    {"context", required_argument, NULL, 'c'},
	    {"dockerfile", required_argument, NULL, 'f'},
	    {"file", required_argument, NULL, 'f'},
	    {"image", required_argument, NULL, 'i'},
	    {"alias", required_argument, NULL, 'a'},
	    {"cache-key", required_argument, NULL, 'k'},
	    {"ci", no_argument, NULL, 'C'},
	    {"ttl", required_argument, NULL, 'T'},
	    {"tag", required_argument, NULL, 'G'},
	    {"build-arg", required_argument, NULL, 'b'},
	    {"local", no_argument, NULL, 'L'},
	    {"remote", no_argument, NULL, 'R'},
	    {"arch", required_argument, NULL, 'A'},
	    {"detach", no_argument, NULL, 'd'},
	    {"quiet", no_argument, NULL, 'q'},
	    {"progress", required_argument, NULL, 'P'},
	    {"no-cache", no_argument, NULL, 'N'},
	    {"output", required_argument, NULL, 'o'},
	    {"help", no_argument, NULL, 'h'},
	    {NULL, 0, NULL, 0},
	};
	const char *context = NULL, *image = NULL, *dockerfile = NULL, *backend = NULL,
	           *arch = NULL, *cache_key = NULL;
	bool ci = false, detach = false, no_cache = false;
	enum progress progress = PROGRESS_AUTO;
	int rc = 2, opt;
	struct packctx packed = {.fd = -1};
	json_object *params = json_object_new_object();
	json_object *tags = json_object_new_object(), *args = json_object_new_object();
	struct sb_client *c = NULL;
	struct create_view view = {0};
	json_object *job = NULL, *final = NULL;

	optind = 0;
	opterr = 0;
	while ((opt = getopt_long(ctx->argc, ctx->argv, ":c:f:i:a:t:k:o:dqh", opts, NULL)) != -1) {
		switch (opt) {
		case 'c':
			context = optarg;
			break;
		case 'i':
			image = optarg;
			json_object_object_add(params, "image", json_object_new_string(optarg));
			break;
		case 'f':
			dockerfile = optarg;
			break;
		case 'a':
		case 't':
			json_object_object_add(params, "alias", json_object_new_string(optarg));
			break;
		case 'k':
			cache_key = optarg;
			json_object_object_add(params, "cache_key", json_object_new_string(optarg));
			break;
		case 'C':
			ci = true;
			break;
		case 'T': {
			char *end;
			errno = 0;
			long long ttl = strtoll(optarg, &end, 10);
			if (errno || *end || ttl < 1) {
				rc = cmd_usage_error(
				    &cmd_create_entry,
				    "--ttl takes a number of seconds (1 or more), not '%s'",
				    optarg);
				goto out;
			}
			json_object_object_add(params, "ttl", json_object_new_int64(ttl));
			break;
		}
		case 'G':
			if (!add_pair(tags, optarg)) {
				rc = cmd_usage_error(&cmd_create_entry,
				                     "--tag takes KEY=VALUE, not '%s'", optarg);
				goto out;
			}
			break;
		case 'b':
			if (!add_build_arg(args, optarg)) {
				rc = cmd_usage_error(&cmd_create_entry,
				                     "--build-arg takes KEY=VALUE or KEY, not '%s'",
				                     optarg);
				goto out;
			}
			break;
		case 'L':
		case 'R':
			backend = opt == 'L' ? "local" : "remote";
			break;
		case 'A':
			if (!arch_valid(optarg)) {
				rc = cmd_usage_error(&cmd_create_entry,
				                     "--arch takes amd64 or arm64, not '%s'",
				                     optarg);
				goto out;
			}
			arch = optarg;
			break;
		case 'd':
			detach = true;
			break;
		case 'q':
			progress = PROGRESS_QUIET;
			break;
		case 'P':
			if (strcmp(optarg, "auto") == 0)
				progress = PROGRESS_AUTO;
			else if (strcmp(optarg, "tty") == 0)
				progress = PROGRESS_TTY;
			else if (strcmp(optarg, "plain") == 0)
				progress = PROGRESS_PLAIN;
			else if (strcmp(optarg, "quiet") == 0)
				progress = PROGRESS_QUIET;
			else {
				rc = cmd_usage_error(
				    &cmd_create_entry,
				    "--progress takes auto, tty, plain or quiet, not '%s'", optarg);
				goto out;
			}
			break;
		case 'N':
			no_cache = true;
			json_object_object_add(params, "no_cache", json_object_new_boolean(1));
			break;
		case 'o':
			if ((rc = cmd_set_output(ctx, &cmd_create_entry, optarg)) != CMD_EXIT_OK)
				goto out;
			break;
		case 'h':
			cmd_print_usage(&cmd_create_entry, stdout);
			rc = 0;
			goto out;
		default:
			rc = cmd_option_error("create", opt, ctx->argc, ctx->argv, opts);
			goto out;
		}
	}
	if (optind < ctx->argc) {
		rc = cmd_usage_error(&cmd_create_entry, "unexpected argument '%s'",
		                     ctx->argv[optind]);
		goto out;
	}
	if (context && image) {
		rc = cmd_usage_error(&cmd_create_entry, "give --context or --image, not both");
		goto out;
	}
	if (image && (dockerfile || cache_key)) {
		rc = cmd_usage_error(&cmd_create_entry, "%s needs a context, not --image",
		                     dockerfile ? "--dockerfile" : "--cache-key");
		goto out;
	}
	/* The SDKs' variables, from our own environment: what the flags would say. */
	if (backend == NULL && !image && env_true("TOGETHER_LOCAL_BUILD"))
		backend = "local";
	if (arch == NULL && getenv("TOGETHER_REMOTE_ARCHITECTURE") &&
	    *getenv("TOGETHER_REMOTE_ARCHITECTURE")) {
		arch = getenv("TOGETHER_REMOTE_ARCHITECTURE");
		if (!arch_valid(arch)) {
			rc = cmd_usage_error(&cmd_create_entry,
			                     "TOGETHER_REMOTE_ARCHITECTURE must be amd64 or arm64, "
			                     "not '%s'",
			                     arch);
			goto out;
		}
	}
	if (backend)
		json_object_object_add(params, "backend", json_object_new_string(backend));
	if (arch)
		json_object_object_add(params, "architecture", json_object_new_string(arch));
	if (json_object_object_length(tags))
		json_object_object_add(params, "tags", json_object_get(tags));
	if (json_object_object_length(args))
		json_object_object_add(params, "build_args", json_object_get(args));
	if (progress == PROGRESS_AUTO)
		progress = !ci && !ctx->json && isatty(STDERR_FILENO) && isatty(STDOUT_FILENO)
		               ? PROGRESS_TTY
		               : PROGRESS_PLAIN;
	bool live = progress == PROGRESS_TTY;
	/* Reach the daemon first: no point packing a gigabyte for nobody. */
	c = cmd_connect(ctx);
	if (!image) {
		if (!context)
			context = ".";
		if ((rc = pack_context(context, dockerfile, live, no_cache, &packed)) != 0)
			goto out;
		char *abs = realpath(context, NULL);
		json_object_object_add(params, "context",
		                       json_object_new_string(abs ? abs : context));
		free(abs);
		if (packed.dockerfile != NULL)
			json_object_object_add(params, "dockerfile",
			                       json_object_new_string(packed.dockerfile));
		json_object_object_add(params, "archive", packctx_archive_param(&packed));
	}
	rc = cmd_call_notify(ctx, c, "build.submit", params, packed.fd, NULL, NULL, &job);
	packctx_clear(&packed);
	params = NULL;
	if (rc != 0)
		goto out;
	const char *id = json_str(job, "id");
	if (detach) {
		if (ctx->json)
			cmd_print_json(job);
		else
			sanitize_printf(stdout, 0, "%s\n", id);
		rc = 0;
		goto out;
	}

	if (progress != PROGRESS_QUIET) {
		view.printer =
		    event_printer_new(stderr, live ? EVENT_STYLE_LIVE : EVENT_STYLE_PLAIN);
		sanitize_printf(stderr, SANITIZE_FIELD, "job %s", id);
		fputc('\n', stderr);
	}
	rc = cmd_follow(ctx, &c, id, 0, notify_cb, &view, &final);
	if (view.held != NULL && strcmp(json_str(final, "state"), "failed") != 0)
		event_printer_print(view.printer, view.held);
	if (view.printer)
		event_printer_finish(view.printer);
	if (rc == CMD_EXIT_INTERRUPTED) {
		sb_client_close(c);
		c = NULL;
		rc = cancel_job(ctx, id);
	} else if (rc == CMD_EXIT_OK) {
		rc = report(ctx, final, live, progress == PROGRESS_PLAIN);
	}
out:
	event_printer_free(view.printer);
	json_object_put(view.held);
	if (c)
		sb_client_close(c);
	packctx_clear(&packed);
	json_object_put(params);
	json_object_put(tags);
	json_object_put(args);
	json_object_put(job);
	json_object_put(final);
	return rc;
}
