/*
 * snapbuild prune: delete finished jobs older than 7 days (or --older-than) with their
 * logs, and the packed contexts nothing needs any more.  --all deletes every finished
 * job, after asking on a terminal unless --force: a bare `prune` never wipes the
 * history of today's builds.
 */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "client.h"
#include "cmd.h"
#include "output.h"

/* What a bare `snapbuild prune` keeps: a week of history. */
#define PRUNE_DEFAULT_SECONDS (7 * 86400)

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
    .usage = "[--older-than DURATION | --all [-f]] [--all-users] [-o table|json]",
    .summary = "delete finished jobs older than 7 days, their logs and unused contexts",
    .exec = cmd_prune_exec,
    .help = "Options:\n"
            "      --older-than DURATION  delete jobs that finished longer ago than\n"
            "                             DURATION: 90s, 15m, 12h, 7d (default: 7d)\n"
            "      --all                  delete every finished job, however recent (asks\n"
            "                             first on a terminal)\n"
            "  -f, --force                do not ask\n"
            "      --all-users            other users' jobs too (root and admin_group)\n"
            "  -o, --output table|json    json: the daemon's answer\n"
            "\n"
            "Running jobs are never deleted.\n",
};

static int cmd_prune_exec(struct cmd_ctx *ctx)
{
	static const struct option opts[] = {
	    {"older-than", required_argument, NULL, 't'},
	    {"all-users", no_argument, NULL, 'a'},
	    {"all", no_argument, NULL, 'A'},
	    {"force", no_argument, NULL, 'f'},
	    {"output", required_argument, NULL, 'o'},
	    {"help", no_argument, NULL, 'h'},
	    {NULL, 0, NULL, 0},
	};
	json_object *params = json_object_new_object();
	bool all = false, force = false, older = false;
	int opt;
	optind = 0;
	opterr = 0;
	while ((opt = getopt_long(ctx->argc, ctx->argv, ":fo:h", opts, NULL)) != -1) {
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
			older = true;
			break;
		case 'A':
			all = true;
			break;
		case 'f':
			force = true;
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
			return cmd_option_error("prune", opt, ctx->argc, ctx->argv, opts);
		}
	}
	if (all && older) {
		json_object_put(params);
		return cmd_usage_error(&cmd_prune_entry, "give --older-than or --all, not both");
	}
	if (!all && !older)
		json_object_object_add(params, "older_than",
		                       json_object_new_int64(PRUNE_DEFAULT_SECONDS));
	if (all && !force && isatty(STDIN_FILENO) && isatty(STDERR_FILENO)) {
		char answer[16] = "";
		fprintf(stderr, "Delete every finished job, with its log, however recent? [y/N] ");
		fflush(stderr);
		if (fgets(answer, sizeof(answer), stdin) == NULL ||
		    (answer[0] != 'y' && answer[0] != 'Y')) {
			fprintf(stderr, "nothing deleted\n");
			json_object_put(params);
			return CMD_EXIT_FAILURE;
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
			printf("deleted %lld job%s%s\n", (long long)json_int(res, "deleted"),
			       json_int(res, "deleted") == 1 ? "" : "s",
			       all || older ? "" : " finished more than 7 days ago");
	}
	json_object_put(res);
	return rc;
}
