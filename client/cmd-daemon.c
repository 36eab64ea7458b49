/*
 * `snapbuild daemon info`: what the daemon is, where it listens and stores, which
 * services it talks to, and how busy it is.  `snapbuild daemon metrics`: its metrics
 * as OpenMetrics text, as Prometheus would scrape them.
 */
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "cmd.h"
#include "sanitize.h"

static const char *cmd_daemon_str(json_object *o, const char *key)
{
	json_object *v;
	if (json_object_object_get_ex(o, key, &v) && json_object_is_type(v, json_type_string))
		return json_object_get_string(v);
	return "?";
}

static int64_t cmd_daemon_int(json_object *o, const char *key)
{
	json_object *v;
	return json_object_object_get_ex(o, key, &v) ? json_object_get_int64(v) : 0;
}

/* What the daemon reports is printed through the sanitiser like any text from elsewhere. */
static void cmd_daemon_print_info(json_object *r)
{
	json_object *backends = json_object_object_get(r, "backends");
	json_object *q = json_object_object_get(r, "queue");
	json_object *key = json_object_object_get(r, "api_key_configured");
	json_object *up = json_object_object_get(r, "uptime");
	char uptime[32];

	cmd_format_duration(json_object_get_double(up), uptime, sizeof(uptime));
	sanitize_printf(stdout, 0, "snapbuildd %s (protocol %" PRId64 "), pid %" PRId64 ", up %s\n",
	                cmd_daemon_str(r, "version"), cmd_daemon_int(r, "protocol_version"),
	                cmd_daemon_int(r, "pid"), uptime);
	sanitize_printf(stdout, 0, "socket       %s%s\n", cmd_daemon_str(r, "socket"),
	                json_object_get_boolean(json_object_object_get(r, "socket_activated"))
	                    ? " (socket activation)"
	                    : "");
	sanitize_printf(stdout, 0, "state dir    %s\n", cmd_daemon_str(r, "state_dir"));
	sanitize_printf(stdout, 0, "API          %s (%s)\n", cmd_daemon_str(r, "api_url"),
	                json_object_get_boolean(key) ? "key configured" : "no API key configured");
	sanitize_printf(stdout, 0, "builder      %s\n", cmd_daemon_str(r, "builder_url"));
	sanitize_printf(stdout, 0, "backend      %s (remote: %s; local engine: %s)\n",
	                cmd_daemon_str(backends, "default"),
	                cmd_daemon_str(json_object_object_get(backends, "remote"), "architecture"),
	                cmd_daemon_str(json_object_object_get(backends, "local"), "engine"));
	sanitize_printf(stdout, 0, "concurrency  %" PRId64 " builds at once\n",
	                cmd_daemon_int(r, "max_concurrent"));
	int64_t active = cmd_daemon_int(q, "packing") + cmd_daemon_int(q, "uploading") +
	                 cmd_daemon_int(q, "building") + cmd_daemon_int(q, "pushing") +
	                 cmd_daemon_int(q, "registering") + cmd_daemon_int(q, "aliasing") +
	                 cmd_daemon_int(q, "cancelling");
	sanitize_printf(stdout, 0,
	                "queue        %" PRId64 " queued, %" PRId64 " active, %" PRId64
	                " succeeded, %" PRId64 " failed, %" PRId64 " cancelled (%" PRId64
	                " jobs)\n",
	                cmd_daemon_int(q, "queued"), active, cmd_daemon_int(q, "succeeded"),
	                cmd_daemon_int(q, "failed"), cmd_daemon_int(q, "cancelled"),
	                cmd_daemon_int(q, "total"));
}

static int cmd_daemon_exec(struct cmd_ctx *ctx)
{
	struct sb_client *c;
	json_object *r = NULL;
	int rc;

	if (cmd_help_wanted(ctx, &cmd_daemon_entry))
		return CMD_EXIT_OK;
	if (ctx->argc < 2)
		return cmd_usage_error(&cmd_daemon_entry, "missing subcommand");
	bool metrics = strcmp(ctx->argv[1], "metrics") == 0;
	if (strcmp(ctx->argv[1], "info") != 0 && !metrics)
		return cmd_usage_error(&cmd_daemon_entry, "unknown subcommand '%s'", ctx->argv[1]);
	if (ctx->argc > 2)
		return cmd_usage_error(&cmd_daemon_entry, "unexpected argument '%s'", ctx->argv[2]);
	c = cmd_connect(ctx);
	rc = cmd_call(ctx, c, metrics ? "daemon.metrics" : "daemon.info", NULL, &r);
	if (rc == CMD_EXIT_OK) {
		if (ctx->json)
			cmd_print_json(r);
		else if (metrics)
			sanitize_printf(stdout, 0, "%s", cmd_daemon_str(r, "text"));
		else
			cmd_daemon_print_info(r);
	}
	json_object_put(r);
	sb_client_close(c);
	return rc;
}

const struct cmd_entry cmd_daemon_entry = {
    .name = "daemon",
    .alias = NULL,
    .usage = "info|metrics [-o table|json]",
    .summary = "show the daemon's version, socket, state directory, services and queue, "
               "or its metrics",
    .exec = cmd_daemon_exec,
};
