/*
 * snapbuild prune: delete finished jobs (all, or those finished longer ago than
 * --older-than) with their logs, and the packed contexts nothing needs any more.
 */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "client.h"
#include "cmd.h"
#include "output.h"

/* "90", "90s", "15m", "12h", "7d" → seconds; -1 when malformed. */
static long long parse_duration(const char *s)
{
	char *end;
	long long n = strtoll(s, &end, 10);
	if (end == s || n < 0)
		return -1;
	long long mult = 1;
	if (*end == 's')
		end++;
	else if (*end == 'm')
		mult = 60, end++;
	else if (*end == 'h')
		mult = 3600, end++;
	else if (*end == 'd')
		mult = 86400, end++;
	return *end ? -1 : n * mult;
}

static int cmd_prune_exec(struct cmd_ctx *ctx);
const struct cmd_entry cmd_prune_entry = {
    .name = "prune",
    .usage =
        "[--older-than DURATION] [--all-users] [-o table|json]   (DURATION: 90s, 15m, 12h, 7d)",
    .summary = "delete finished jobs, their logs and unused packed contexts",
    .exec = cmd_prune_exec,
};

static int cmd_prune_exec(struct cmd_ctx *ctx)
{
	static const struct option opts[] = {
	    {"older-than", required_argument, NULL, 't'},
	    {"all-users", no_argument, NULL, 'a'},
	    {"output", required_argument, NULL, 'o'},
	    {"help", no_argument, NULL, 'h'},
	    {NULL, 0, NULL, 0},
	};
	json_object *params = json_object_new_object();
	int opt;
	optind = 0;
	while ((opt = getopt_long(ctx->argc, ctx->argv, "o:h", opts, NULL)) != -1) {
		long long secs;
		switch (opt) {
		case 't':
			secs = parse_duration(optarg);
			if (secs < 0) {
				json_object_put(params);
				return cmd_usage_error(
				    &cmd_prune_entry,
				    "--older-than takes 90s, 15m, 12h or 7d, not '%s'", optarg);
			}
			json_object_object_add(params, "older_than", json_object_new_int64(secs));
			break;
		case 'a':
			json_object_object_add(params, "all_users", json_object_new_boolean(1));
			break;
		case 'o':
			if (cmd_set_output(ctx, &cmd_prune_entry, optarg) != CMD_EXIT_OK) {
				json_object_put(params);
				return CMD_EXIT_USAGE;
			}
			break;
		case 'h':
			cmd_print_usage(&cmd_prune_entry, stdout);
			json_object_put(params);
			return 0;
		default:
			json_object_put(params);
			return cmd_usage_error(&cmd_prune_entry, "unknown option");
		}
	}
	if (optind != ctx->argc) {
		json_object_put(params);
		return cmd_usage_error(&cmd_prune_entry, "unexpected argument '%s'",
		                       ctx->argv[optind]);
	}
	struct sb_client *c = cmd_connect(ctx);
	json_object *res = NULL;
	int rc = cmd_call(ctx, c, "build.prune", params, &res);
	sb_client_close(c);
	if (rc == 0) {
		if (ctx->json)
			cmd_print_json(res);
		else
			printf("deleted %lld jobs\n", (long long)json_int(res, "deleted"));
	}
	json_object_put(res);
	return rc;
}
