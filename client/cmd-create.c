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

static void notify_cb(void *arg, const char *method, json_object *params)
{
	struct event_printer *p = arg;
	if (strcmp(method, "build.event") == 0)
		event_printer_print(p, params);
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
		fprintf(stderr, "\ncancelled job %s\n", id);
	return 130;
}

/* Prints the outcome; the exit status follows the job's final state.  Ids and the alias
 * are one-line fields, the error and hint messages: all sanitised (sanitize.h). */
static int report(struct cmd_ctx *ctx, json_object *job, bool live)
{
	const char *state = json_str(job, "state");
	unsigned flags = output_text_flags(stderr);
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
	if (strcmp(state, "succeeded") == 0)
		return 0;
	if (strcmp(state, "failed") == 0) {
		sanitize_printf(stderr, flags, "✖ Build failed: %s\n", json_str(job, "error"));
		if (*json_str(job, "hint"))
			sanitize_printf(stderr, flags, "  hint: %s\n", json_str(job, "hint"));
	} else {
		sanitize_printf(stderr, SANITIZE_FIELD, "job %s ended %s", json_str(job, "id"),
		                state);
		fputc('\n', stderr);
	}
	return 1;
}

/* On a terminal: one line redrawn while the context is packed. */
static void pack_progress_cb(void *arg, uint64_t files, uint64_t bytes)
{
	const char *dir = arg;
	char *b = output_bytes(bytes);
	fprintf(stderr, "\r\033[Kpacking %s: %llu files, %s", dir, (unsigned long long)files, b);
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
		sanitize_printf(stderr, 0,
		                "snapbuild: packing the context failed: %s\n"
		                "  hint: fix the path named (make it readable, or leave it out "
		                "with .dockerignore) and run again\n",
		                err);
		free(err);
		return CMD_EXIT_FAILURE;
	}
	/* A warning names files of the context, which anyone may have named. */
	for (size_t i = 0; i < p->nwarnings; i++)
		sanitize_printf(stderr, 0, "warning: %s\n", p->warnings[i]);
	if (live) {
		char *a = output_bytes(p->result.total_bytes),
		     *b = output_bytes(p->result.archive_size);
		fprintf(stderr, "packed %s: %llu files, %s → %s\n", dir,
		        (unsigned long long)p->result.file_count, a, b);
		free(a);
		free(b);
	}
	return 0;
}

static int cmd_create_exec(struct cmd_ctx *ctx);

const struct cmd_entry cmd_create_entry = {
    .name = "create",
    .alias = NULL,
    .usage = "[--context DIR | --image IMAGE] [--dockerfile FILE]\n"
             "                        [--alias ALIAS] [--tag K=V]... [--build-arg K=V]...\n"
             "                        [--ttl SECONDS] [--cache-key KEY] [--local | --remote]\n"
             "                        [--arch amd64|arm64] [--no-cache] [--detach] [--ci]\n"
             "                        [-o table|json]",
    .summary = "build a context (or an image) into a snapshot",
    .exec = cmd_create_exec,
};

static int cmd_create_exec(struct cmd_ctx *ctx)
{
	static const struct option opts[] = {
	    {"context", required_argument, NULL, 'c'},
	    {"dockerfile", required_argument, NULL, 'f'},
	    {"image", required_argument, NULL, 'i'},
	    {"alias", required_argument, NULL, 'a'},
	    {"cache-key", required_argument, NULL, 'k'},
	    {"ci", no_argument, NULL, 'C'},
	    {"ttl", required_argument, NULL, 't'},
	    {"tag", required_argument, NULL, 'T'},
	    {"build-arg", required_argument, NULL, 'b'},
	    {"local", no_argument, NULL, 'L'},
	    {"remote", no_argument, NULL, 'R'},
	    {"arch", required_argument, NULL, 'A'},
	    {"detach", no_argument, NULL, 'd'},
	    {"no-cache", no_argument, NULL, 'N'},
	    {"output", required_argument, NULL, 'o'},
	    {"help", no_argument, NULL, 'h'},
	    {NULL, 0, NULL, 0},
	};
	const char *context = NULL, *image = NULL, *dockerfile = NULL;
	bool ci = false, detach = false, no_cache = false;
	int rc = 2, opt;
	struct packctx packed = {.fd = -1};
	json_object *params = json_object_new_object();
	json_object *tags = json_object_new_object(), *args = json_object_new_object();
	struct sb_client *c = NULL;
	struct event_printer *printer = NULL;
	json_object *job = NULL, *res = NULL;

	optind = 0;
	while ((opt = getopt_long(ctx->argc, ctx->argv, "c:f:i:a:k:t:o:dh", opts, NULL)) != -1) {
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
			json_object_object_add(params, "dockerfile",
			                       json_object_new_string(optarg));
			break;
		case 'a':
			json_object_object_add(params, "alias", json_object_new_string(optarg));
			break;
		case 'k':
			json_object_object_add(params, "cache_key", json_object_new_string(optarg));
			break;
		case 'C':
			ci = true;
			break;
		case 't': {
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
		case 'T':
			if (!add_pair(tags, optarg)) {
				rc = cmd_usage_error(&cmd_create_entry,
				                     "--tag takes KEY=VALUE, not '%s'", optarg);
				goto out;
			}
			break;
		case 'b':
			if (!add_pair(args, optarg)) {
				rc = cmd_usage_error(&cmd_create_entry,
				                     "--build-arg takes KEY=VALUE, not '%s'",
				                     optarg);
				goto out;
			}
			break;
		case 'L':
		case 'R':
			json_object_object_add(
			    params, "backend",
			    json_object_new_string(opt == 'L' ? "local" : "remote"));
			break;
		case 'A':
			json_object_object_add(params, "architecture",
			                       json_object_new_string(optarg));
			break;
		case 'd':
			detach = true;
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
			rc = cmd_usage_error(&cmd_create_entry, "unknown option");
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
	if (json_object_object_length(tags))
		json_object_object_add(params, "tags", json_object_get(tags));
	if (json_object_object_length(args))
		json_object_object_add(params, "build_args", json_object_get(args));
	bool live = !ci && !ctx->json && isatty(STDERR_FILENO) && isatty(STDOUT_FILENO);
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

	printer = event_printer_new(stderr, live ? EVENT_STYLE_LIVE : EVENT_STYLE_PLAIN);
	if (live) {
		sanitize_printf(stderr, SANITIZE_FIELD, "job %s", id);
		fputc('\n', stderr);
	}
	json_object *lp = json_object_new_object();
	json_object_object_add(lp, "id", json_object_new_string(id));
	json_object_object_add(lp, "follow", json_object_new_boolean(1));
	struct sb_rpc_error rerr = {0};
	char *err = NULL;
	int crc = sb_client_call(c, "build.logs", lp, -1, notify_cb, printer, &res, &rerr, &err);
	event_printer_finish(printer);
	if (crc == SB_CALL_INTERRUPTED) {
		sb_client_close(c);
		c = NULL;
		rc = cancel_job(ctx, id);
	} else if (crc == SB_CALL_OK) {
		json_object *final = NULL;
		json_object_object_get_ex(res, "job", &final);
		rc = report(ctx, final, live);
	} else if (crc == SB_CALL_RPC_ERROR) {
		sanitize_printf(stderr, output_text_flags(stderr), "snapbuild: %s\n", rerr.message);
		rc = 1;
	} else {
		sanitize_printf(stderr, 0,
		                "snapbuild: lost the daemon while following job %s: %s\n"
		                "  the job goes on; follow it with: snapbuild logs -f %s\n",
		                id, err, id);
		rc = 3;
	}
	sb_rpc_error_clear(&rerr);
	free(err);
out:
	event_printer_free(printer);
	if (c)
		sb_client_close(c);
	packctx_clear(&packed);
	json_object_put(params);
	json_object_put(tags);
	json_object_put(args);
	json_object_put(job);
	json_object_put(res);
	return rc;
}
