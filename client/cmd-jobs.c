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

static int cmd_jobs_exec(struct cmd_ctx *ctx);

const struct cmd_entry cmd_jobs_entry = {
    .name = "jobs",
    .alias = "ls",
    .usage = "[--state STATE]... [--limit N] [--cursor C] [--all-users] [-o table|json]",
    .summary = "list build jobs, newest first",
    .exec = cmd_jobs_exec,
};

static int cmd_jobs_exec(struct cmd_ctx *ctx)
{
	static const struct option opts[] = {
	    {"state", required_argument, NULL, 's'},
	    {"limit", required_argument, NULL, 'n'},
	    {"cursor", required_argument, NULL, 'c'},
	    {"all-users", no_argument, NULL, 'a'},
	    {"output", required_argument, NULL, 'o'},
	    {"help", no_argument, NULL, 'h'},
	    {NULL, 0, NULL, 0},
	};
	json_object *params = json_object_new_object(), *states = json_object_new_array();
	int opt;
	optind = 0;
	while ((opt = getopt_long(ctx->argc, ctx->argv, "s:n:c:o:ah", opts, NULL)) != -1) {
		switch (opt) {
		case 's':
			json_object_array_add(states, json_object_new_string(optarg));
			break;
		case 'n':
			json_object_object_add(params, "limit", json_object_new_int(atoi(optarg)));
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
			return cmd_usage_error(&cmd_jobs_entry, "unknown option");
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
		char *age = output_age(json_num(j, "created_at"), now);
		char *state = xstrdup(json_str(j, "state"));
		if (json_int(j, "queue_position") > 0) {
			free(state);
			state =
			    xasprintf("queued (#%lld)", (long long)json_int(j, "queue_position"));
		}
		const char *cells[] = {
		    json_str(j, "id"),
		    state,
		    json_str(j, "backend"),
		    *json_str(j, "alias") ? json_str(j, "alias") : "-",
		    *json_str(j, "snapshot_id") ? json_str(j, "snapshot_id") : "-",
		    age,
		};
		table_add(t, cells);
		free(age);
		free(state);
	}
	table_print(t, stdout, tty ? 40 : 0);
	table_free(t);
	const char *next = json_str(res, "next_cursor");
	if (*next) {
		sanitize_printf(stderr, SANITIZE_FIELD, "more: snapbuild jobs --cursor %s", next);
		fputc('\n', stderr);
	}
	json_object_put(res);
	return 0;
}
