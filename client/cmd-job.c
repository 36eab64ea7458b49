/*
 * Commands on one job or a few: inspect (details), wait (until it ends; the exit
 * status says how), cancel, retry (a new job from the same packed context).  Every
 * value from the daemon goes out through the sanitiser: names, tags and ids as
 * one-line fields, errors and hints as messages (sanitize.h).
 */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "client.h"
#include "cmd.h"
#include "output.h"
#include "sanitize.h"
#include "util.h"

/* Parses [-o json] [--help] and leaves optind at the first operand. */
static int job_opts(struct cmd_ctx *ctx, const struct cmd_entry *e)
{
	static const struct option opts[] = {
	    {"output", required_argument, NULL, 'o'},
	    {"help", no_argument, NULL, 'h'},
	    {NULL, 0, NULL, 0},
	};
	int opt;
	optind = 0;
	opterr = 0;
	while ((opt = getopt_long(ctx->argc, ctx->argv, ":o:h", opts, NULL)) != -1) {
		if (opt == 'o') {
			if (cmd_set_output(ctx, e, optarg) != CMD_EXIT_OK)
				return CMD_EXIT_USAGE;
		} else if (opt == 'h') {
			cmd_print_usage(e, stdout);
			return 0;
		} else {
			return cmd_option_error(e->name, opt, ctx->argc, ctx->argv, opts);
		}
	}
	return -1;
}

static json_object *id_params(const char *id)
{
	json_object *p = json_object_new_object();
	json_object_object_add(p, "id", json_object_new_string(id));
	return p;
}

static void print_time(const char *label, double t)
{
	if (t <= 0)
		return;
	char buf[64];
	time_t s = (time_t)t;
	strftime(buf, sizeof(buf), "%Y-%m-%d %H:%M:%S %Z", localtime(&s));
	char *age = output_age(t, now_seconds());
	printf("  %-13s %s (%s)\n", label, buf, age);
	free(age);
}

/* A value from the daemon on one line of its own. */
static void print_field(const char *label, const char *value)
{
	if (value && *value) {
		printf("  %-13s ", label);
		sanitize_fputs(value, SANITIZE_FIELD, stdout);
		putchar('\n');
	}
}

/* A message from the daemon or the service: it may span lines, colour passes where on. */
static void print_message(const char *label, const char *value)
{
	if (value && *value)
		sanitize_printf(stdout, output_text_flags(stdout), "  %-13s %s\n", label, value);
}

void cmd_print_job(json_object *j)
{
	sanitize_printf(stdout, SANITIZE_FIELD, "Job %s", json_str(j, "id"));
	putchar('\n');
	print_field("state:", json_str(j, "state"));
	print_field("backend:", json_str(j, "backend"));
	print_field("architecture:", json_str(j, "architecture"));
	print_field("context:", json_str(j, "context"));
	print_field("dockerfile:", json_str(j, "dockerfile"));
	print_field("alias:", json_str(j, "alias"));
	static const char *const maps[][2] = {{"tags", "tags:"}, {"build_args", "build args:"}};
	for (size_t m = 0; m < sizeof(maps) / sizeof(maps[0]); m++) {
		json_object *kv = NULL;
		if (!json_object_object_get_ex(j, maps[m][0], &kv) ||
		    !json_object_is_type(kv, json_type_object) ||
		    json_object_object_length(kv) == 0)
			continue;
		printf("  %-13s", maps[m][1]);
		json_object_object_foreach(kv, k, v)
		    sanitize_printf(stdout, SANITIZE_FIELD, " %s=%s", k, json_object_get_string(v));
		printf("\n");
	}
	json_object *a = NULL;
	if (json_object_object_get_ex(j, "archive", &a) && a) {
		char *b = output_bytes((uint64_t)json_int(a, "bytes"));
		sanitize_printf(stdout, 0, "  %-13s %lld file%s, %s gzip'd, sha256 %s\n",
		                "archive:", (long long)json_int(a, "files"),
		                json_int(a, "files") == 1 ? "" : "s", b, json_str(a, "sha256"));
		free(b);
	}
	print_field("build id:", json_str(j, "build_id"));
	print_field("image:", json_str(j, "image_ref"));
	print_field("snapshot:", json_str(j, "snapshot_id"));
	print_field("retry of:", json_str(j, "retry_of"));
	print_message("error:", json_str(j, "error"));
	print_message("hint:", json_str(j, "hint"));
	print_time("created:", parse_rfc3339(json_str(j, "created_at")));
	print_time("finished:", parse_rfc3339(json_str(j, "finished_at")));
}

/*
 * The job's state history from its state events: when it entered each state, and how
 * long after the job was created.
 */
static void print_history(struct cmd_ctx *ctx, struct sb_client *c, const char *id)
{
	int64_t after = 0;
	double first = 0;
	bool more = true, header = false;

	while (more) {
		json_object *params = id_params(id), *res = NULL, *evs = NULL, *m = NULL;
		json_object_object_add(params, "after_seq", json_object_new_int64(after));
		if (cmd_call(ctx, c, "build.logs", params, &res) != 0)
			return;
		json_object_object_get_ex(res, "events", &evs);
		for (size_t i = 0; i < json_object_array_length(evs); i++) {
			json_object *ev = json_object_array_get_idx(evs, i);
			double t = parse_rfc3339(json_str(ev, "time"));
			char when[64], since[32];
			time_t s = (time_t)t;
			if (strcmp(json_str(ev, "kind"), "state") != 0)
				continue;
			if (!header)
				printf("  history:\n");
			header = true;
			if (first == 0)
				first = t;
			strftime(when, sizeof(when), "%Y-%m-%d %H:%M:%S", localtime(&s));
			if (t - first < 60)
				snprintf(since, sizeof(since), "%.1fs", t - first);
			else
				cmd_format_duration(t - first, since, sizeof(since));
			sanitize_printf(stdout, SANITIZE_FIELD, "    %s.%03d  +%-8s %s", when,
			                (int)((t - (double)s) * 1000), since, json_str(ev, "text"));
			putchar('\n');
		}
		after = json_int(res, "last_seq");
		more = json_object_object_get_ex(res, "more", &m) && json_object_get_boolean(m);
		json_object_put(res);
	}
}

static int cmd_inspect_exec(struct cmd_ctx *ctx);
const struct cmd_entry cmd_inspect_entry = {
    .name = "inspect",
    .usage = "[-o table|json] JOB",
    .summary = "show a job's details, its state history and its snapshot",
    .exec = cmd_inspect_exec,
    .help = "Shows the job's settings (context, Dockerfile, alias, tags, build args), its\n"
            "archive, its result or error, and its state history: when it entered each\n"
            "state, from its events; then the snapshot's live details.  JOB is a job id\n"
            "or a unique prefix of at least 4 characters.\n"
            "  -o, --output table|json  json: the job as the daemon sends it\n",
};

static int cmd_inspect_exec(struct cmd_ctx *ctx)
{
	int rc = job_opts(ctx, &cmd_inspect_entry);
	if (rc >= 0)
		return rc;
	if (optind != ctx->argc - 1)
		return cmd_usage_error(&cmd_inspect_entry, "give exactly one job id");
	struct sb_client *c = cmd_connect(ctx);
	json_object *job = NULL;
	rc = cmd_call(ctx, c, "build.get", id_params(ctx->argv[optind]), &job);
	if (rc == 0 && ctx->json) {
		cmd_print_json(job);
	} else if (rc == 0) {
		cmd_print_job(job);
		print_history(ctx, c, json_str(job, "id"));
		if (*json_str(job, "snapshot_id"))
			cmd_print_snapshot_live(c, json_str(job, "snapshot_id"));
	}
	sb_client_close(c);
	json_object_put(job);
	return rc;
}

static int cmd_wait_exec(struct cmd_ctx *ctx);
const struct cmd_entry cmd_wait_entry = {
    .name = "wait",
    .usage = "[-o table|json] JOB",
    .summary = "wait for a job to finish (exit 0 only if it succeeded)",
    .exec = cmd_wait_exec,
    .help = "Prints the job's id, final state and snapshot (or error).  JOB is a job id or\n"
            "a unique prefix of at least 4 characters.\n"
            "  -o, --output table|json  json: the final job as the daemon sends it\n",
};

static int cmd_wait_exec(struct cmd_ctx *ctx)
{
	int rc = job_opts(ctx, &cmd_wait_entry);
	if (rc >= 0)
		return rc;
	if (optind != ctx->argc - 1)
		return cmd_usage_error(&cmd_wait_entry, "give exactly one job id");
	struct sb_client *c = cmd_connect(ctx);
	json_object *res = NULL, *job = NULL;
	/* A daemon restart does not end the job: nor does it end the wait. */
	rc = cmd_call_again(ctx, &c, "build.wait", id_params(ctx->argv[optind]), &res);
	if (c != NULL)
		sb_client_close(c);
	if (rc != 0)
		return rc;
	json_object_object_get_ex(res, "job", &job);
	if (ctx->json) {
		cmd_print_json(job);
	} else {
		sanitize_printf(stdout, SANITIZE_FIELD, "%s %s", json_str(job, "id"),
		                json_str(job, "state"));
		if (*json_str(job, "snapshot_id"))
			sanitize_printf(stdout, SANITIZE_FIELD, " %s",
			                json_str(job, "snapshot_id"));
		if (*json_str(job, "error"))
			sanitize_printf(stdout, output_text_flags(stdout), ": %s",
			                json_str(job, "error"));
		printf("\n");
	}
	rc = strcmp(json_str(job, "state"), "succeeded") == 0 ? 0 : 1;
	json_object_put(res);
	return rc;
}

static int cmd_cancel_exec(struct cmd_ctx *ctx);
const struct cmd_entry cmd_cancel_entry = {
    .name = "cancel",
    .usage = "[-o table|json] JOB...",
    .summary = "cancel jobs (a running remote build is deleted on the builder)",
    .exec = cmd_cancel_exec,
    .help = "JOB is a job id or a unique prefix of at least 4 characters.\n"
            "  -o, --output table|json  json: each job as the daemon sends it\n",
};

static int cmd_cancel_exec(struct cmd_ctx *ctx)
{
	int rc = job_opts(ctx, &cmd_cancel_entry);
	if (rc >= 0)
		return rc;
	if (optind >= ctx->argc)
		return cmd_usage_error(&cmd_cancel_entry, "give at least one job id");
	struct sb_client *c = cmd_connect(ctx);
	rc = 0;
	for (int i = optind; i < ctx->argc; i++) {
		json_object *job = NULL;
		int r = cmd_call(ctx, c, "build.cancel", id_params(ctx->argv[i]), &job);
		if (r == 0) {
			if (ctx->json)
				cmd_print_json(job);
			else
				sanitize_printf(stdout, SANITIZE_FIELD, "%s %s",
				                json_str(job, "id"), json_str(job, "state"));
			if (!ctx->json)
				putchar('\n');
		} else if (r > rc) {
			rc = r;
		}
		json_object_put(job);
	}
	sb_client_close(c);
	return rc;
}

static int cmd_retry_exec(struct cmd_ctx *ctx);
const struct cmd_entry cmd_retry_entry = {
    .name = "retry",
    .usage = "[-o table|json] JOB",
    .summary = "run a finished job again from its packed context (prints the new job id)",
    .exec = cmd_retry_exec,
    .help = "JOB is a job id or a unique prefix of at least 4 characters.\n"
            "  -o, --output table|json  json: the new job as the daemon sends it\n",
};

static int cmd_retry_exec(struct cmd_ctx *ctx)
{
	int rc = job_opts(ctx, &cmd_retry_entry);
	if (rc >= 0)
		return rc;
	if (optind != ctx->argc - 1)
		return cmd_usage_error(&cmd_retry_entry, "give exactly one job id");
	struct sb_client *c = cmd_connect(ctx);
	json_object *job = NULL;
	rc = cmd_call(ctx, c, "build.retry", id_params(ctx->argv[optind]), &job);
	sb_client_close(c);
	if (rc != 0)
		return rc;
	if (ctx->json)
		cmd_print_json(job);
	else
		sanitize_printf(stdout, 0, "%s\n", json_str(job, "id"));
	json_object_put(job);
	return 0;
}
