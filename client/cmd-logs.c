/*
 * snapbuild logs [-f] JOB: a job's events from the start (or after --after SEQ),
 * and with -f the live ones until the job ends.  --raw shows build lines as the
 * builder sent them, their colour codes included; -o json prints each event as the
 * daemon sent it, one JSON object a line.  Whatever the style, the event printer lets
 * no control sequence but colour reach the terminal (sanitize.h).
 */
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "client.h"
#include "cmd.h"
#include "output.h"
#include "sanitize.h"
#include "util.h"

struct logs_out {
	struct event_printer *printer;
	bool json;
};

static void logs_print(struct logs_out *out, json_object *event)
{
	if (!out->json) {
		event_printer_print(out->printer, event);
		return;
	}
	puts(json_object_to_json_string_ext(event, JSON_C_TO_STRING_PLAIN |
	                                               JSON_C_TO_STRING_NOSLASHESCAPE));
	fflush(stdout);
}

static void notify_cb(void *arg, const char *method, json_object *params)
{
	if (strcmp(method, "build.event") == 0)
		logs_print(arg, params);
}

static int cmd_logs_exec(struct cmd_ctx *ctx);

const struct cmd_entry cmd_logs_entry = {
    .name = "logs",
    .alias = NULL,
    .usage = "[-f|--follow] [--raw] [--after SEQ] [-o table|json] JOB",
    .summary = "show a job's log (and follow it live with -f)",
    .exec = cmd_logs_exec,
    .help = "Options:\n"
            "  -f, --follow           go on showing events as they happen until the job\n"
            "                         ends; if the daemon restarts meanwhile, connect\n"
            "                         again (within $SNAPBUILD_RECONNECT_SECONDS, default\n"
            "                         60) and go on after the last event shown\n"
            "      --raw              build lines as the builder sent them, colour kept\n"
            "      --after SEQ        only events after number SEQ (default 0: all)\n"
            "  -o, --output table|json  json: one event a line, as the daemon sends it\n"
            "\n"
            "JOB is a job id or a unique prefix of at least 4 characters.\n",
};

static int cmd_logs_exec(struct cmd_ctx *ctx)
{
	static const struct option opts[] = {
	    {"follow", no_argument, NULL, 'f'},      {"raw", no_argument, NULL, 'r'},
	    {"after", required_argument, NULL, 'a'}, {"output", required_argument, NULL, 'o'},
	    {"help", no_argument, NULL, 'h'},        {NULL, 0, NULL, 0},
	};
	bool follow = false, raw = false;
	long long after = 0;
	int opt;
	optind = 0;
	opterr = 0;
	while ((opt = getopt_long(ctx->argc, ctx->argv, ":fra:o:h", opts, NULL)) != -1) {
		switch (opt) {
		case 'f':
			follow = true;
			break;
		case 'r':
			raw = true;
			break;
		case 'a': {
			char *end;
			after = strtoll(optarg, &end, 10);
			if (*optarg == '\0' || *end || after < 0)
				return cmd_usage_error(&cmd_logs_entry,
				                       "--after takes an event number, not '%s'",
				                       optarg);
			break;
		}
		case 'o':
			if (cmd_set_output(ctx, &cmd_logs_entry, optarg) != CMD_EXIT_OK)
				return CMD_EXIT_USAGE;
			break;
		case 'h':
			cmd_print_usage(&cmd_logs_entry, stdout);
			return 0;
		default:
			return cmd_option_error("logs", opt, ctx->argc, ctx->argv, opts);
		}
	}
	if (optind != ctx->argc - 1)
		return cmd_usage_error(&cmd_logs_entry, "give exactly one job id");
	const char *id = ctx->argv[optind];
	struct sb_client *c = cmd_connect(ctx);
	struct logs_out out = {
	    event_printer_new(stdout,
	                      raw ? EVENT_STYLE_RAW
	                          : (isatty(STDOUT_FILENO) ? EVENT_STYLE_LIVE : EVENT_STYLE_PLAIN)),
	    ctx->json,
	};
	int rc = 0;
	if (follow) {
		/* After a daemon restart it connects again and goes on after the last seq. */
		json_object *job = NULL;
		rc = cmd_follow(ctx, &c, id, after, notify_cb, &out, &job);
		json_object_put(job);
	} else {
		for (;;) {
			json_object *params = json_object_new_object();
			json_object_object_add(params, "id", json_object_new_string(id));
			json_object_object_add(params, "after_seq", json_object_new_int64(after));
			json_object *res = NULL;
			rc = cmd_call(ctx, c, "build.logs", params, &res);
			if (rc != 0)
				break;
			json_object *evs = NULL;
			json_object_object_get_ex(res, "events", &evs);
			for (size_t i = 0; i < json_object_array_length(evs); i++)
				logs_print(&out, json_object_array_get_idx(evs, i));
			after = json_int(res, "last_seq");
			bool more = false;
			json_object *m = NULL;
			if (json_object_object_get_ex(res, "more", &m))
				more = json_object_get_boolean(m);
			json_object_put(res);
			if (!more)
				break;
		}
	}
	event_printer_free(out.printer);
	if (c != NULL)
		sb_client_close(c);
	return rc;
}
