/*
 * snapbuild jobs: the caller's jobs, newest first, as a table (ID, STATE, BACKEND,
 * ALIAS, SNAPSHOT, AGE) or, with -o json, the build.list result verbatim.  The
 * table sanitises every cell: with --all-users, the aliases are other users'.
 */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "client.h"
#include "cmd.h"
#include "output.h"
#include "sanitize.h"
#include "util.h"

/* The widest a cell gets on a terminal (an alias, a state), so that rows fit 100 columns. */
#define JOBS_CELL_MAX 24

static int cmd_jobs_exec(struct cmd_ctx *ctx);

const struct cmd_entry cmd_jobs_entry = {
    .name = "jobs",
    .alias = "ls",
    .usage = "[--state STATE]... [--limit N] [--cursor C] [--all-users] [--no-trunc]\n"
             "                      [-o table|json]",
    .summary = "list build jobs, newest first",
    .exec = cmd_jobs_exec,
    .help = "Options:\n"
            "  -s, --state STATE      only jobs in STATE (repeatable): queued, building,\n"
            "                         succeeded, failed, cancelled, ...\n"
            "  -n, --limit N          one page of N jobs, 1 to 1000 (default 50)\n"
            "  -c, --cursor C         the page after the one that printed `more: ...`\n"
            "  -a, --all-users        everybody's jobs (root and admin_group)\n"
            "      --no-trunc         whole ids and snapshot ids (the table shows 12\n"
            "                         characters, as docker ps does; any 4 or more name a job)\n"
            "  -o, --output table|json  json: the daemon's answer, whole ids included\n",
};

static int cmd_jobs_exec(struct cmd_ctx *ctx)
{
	static const struct option opts[] = {
	    {"state", required_argument, NULL, 's'},  {"limit", required_argument, NULL, 'n'},
	    {"cursor", required_argument, NULL, 'c'}, {"all-users", no_argument, NULL, 'a'},
	    {"no-trunc", no_argument, NULL, 'T'},     {"output", required_argument, NULL, 'o'},
	    {"help", no_argument, NULL, 'h'},         {NULL, 0, NULL, 0},
	};
	json_object *params = json_object_new_object(), *states = json_object_new_array();
	bool no_trunc = false;
	int opt;
	optind = 0;
	opterr = 0;
	while ((opt = getopt_long(ctx->argc, ctx->argv, ":s:n:c:o:ah", opts, NULL)) != -1) {
		switch (opt) {
		case 's':
			json_object_array_add(states, json_object_new_string(optarg));
			break;
		case 'n': {
			char *end;
			long n = strtol(optarg, &end, 10);
			if (*optarg == '\0' || *end || n < 1 || n > 1000) {
				json_object_put(params);
				json_object_put(states);
				return cmd_usage_error(
				    &cmd_jobs_entry,
				    "--limit takes 1 to 1000 (jobs a page), not '%s'", optarg);
			}
			json_object_object_add(params, "limit", json_object_new_int((int)n));
			break;
		}
		case 'T':
			no_trunc = true;
			break;
		case 'c':
			json_object_object_add(params, "cursor", json_object_new_string(optarg));
			break;
		case 'a':
			json_object_object_add(params, "all_users", json_object_new_boolean(1));
			break;
		case 'o':
			if (cmd_set_output(ctx, &cmd_jobs_entry, optarg) != CMD_EXIT_OK) {
				json_object_put(params);
				json_object_put(states);
				return CMD_EXIT_USAGE;
			}
			break;
		case 'h':
			cmd_print_usage(&cmd_jobs_entry, stdout);
			json_object_put(params);
			json_object_put(states);
			return 0;
		default:
			json_object_put(params);
			json_object_put(states);
			return cmd_option_error("jobs", opt, ctx->argc, ctx->argv, opts);
		}
	}
	if (json_object_array_length(states))
		json_object_object_add(params, "state", json_object_get(states));
	json_object_put(states);
	struct sb_client *c = cmd_connect(ctx);
	json_object *res = NULL;
	int rc = cmd_call(ctx, c, "build.list", params, &res);
	sb_client_close(c);
	if (rc != 0)
		return rc;
	if (ctx->json) {
		cmd_print_json(res);
		json_object_put(res);
		return 0;
	}
	static const char *const headers[] = {"ID", "STATE", "BACKEND", "ALIAS", "SNAPSHOT", "AGE"};
	struct table *t = table_new(6, headers);
	json_object *jobs = NULL;
	json_object_object_get_ex(res, "jobs", &jobs);
	bool tty = isatty(STDOUT_FILENO);
	double now = now_seconds();
	for (size_t i = 0; i < json_object_array_length(jobs); i++) {
		json_object *j = json_object_array_get_idx(jobs, i);
		char *id = cmd_short_id(json_str(j, "id"), no_trunc);
		char *snap = cmd_short_id(json_str(j, "snapshot_id"), no_trunc);
		char *age = output_age(parse_rfc3339(json_str(j, "created_at")), now);
		char *state = xstrdup(json_str(j, "state"));
		if (json_int(j, "queue_position") > 0) {
			free(state);
			state =
			    xasprintf("queued (#%lld)", (long long)json_int(j, "queue_position"));
		}
		const char *cells[] = {
		    id,
		    state,
		    json_str(j, "backend"),
		    *json_str(j, "alias") ? json_str(j, "alias") : "-",
		    *snap ? snap : "-",
		    age,
		};
		table_add(t, cells);
		free(age);
		free(state);
		free(id);
		free(snap);
	}
	/* 12 + 13 + 6 + 24 + 12 + 13 and the gaps: a row fits 100 columns. */
	table_print(t, stdout, tty && !no_trunc ? JOBS_CELL_MAX : 0);
	table_free(t);
	const char *next = json_str(res, "next_cursor");
	if (*next) {
		/* The next page of the same list: the same filters, and the cursor. */
		fputs("more: snapbuild jobs", stderr);
		for (int i = 1; i < optind && i < ctx->argc; i++)
			if (strcmp(ctx->argv[i], "--cursor") == 0 ||
			    strcmp(ctx->argv[i], "-c") == 0)
				i++;
			else if (strncmp(ctx->argv[i], "--cursor=", 9) != 0)
				sanitize_printf(stderr, SANITIZE_FIELD, " %s", ctx->argv[i]);
		sanitize_printf(stderr, SANITIZE_FIELD, " --cursor %s", next);
		fputc('\n', stderr);
	}
	json_object_put(res);
	return 0;
}
