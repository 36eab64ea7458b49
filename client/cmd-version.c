/*
 * `snapbuild version`: the client's version and protocol, and the daemon's when it
 * answers.  An unreachable daemon is reported, not an error: the client's own
 * version is still worth printing.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>

#include "cmd.h"
#include "protocol.h"
#include "sanitize.h"
#include "util.h"

/* The daemon's version answer, or NULL with *why set (malloc'd). */
static json_object *cmd_version_daemon(struct cmd_ctx *ctx, char **why)
{
	struct sb_client *c;
	struct sb_rpc_error e;
	json_object *r = NULL;
	char *err = NULL;

	c = sb_client_connect(ctx->socket_path, &err);
	if (c == NULL) {
		*why = xasprintf("not reachable at %s: %s", ctx->socket_path, err);
		free(err);
		return NULL;
	}
	sb_client_set_interrupt(c, &cmd_interrupted);
	switch (sb_client_call(c, "daemon.version", NULL, -1, NULL, NULL, &r, &e, &err)) {
	case SB_CALL_OK:
		break;
	case SB_CALL_RPC_ERROR:
		*why = xasprintf("error: %s", e.message);
		sb_rpc_error_clear(&e);
		break;
	default:
		*why =
		    xasprintf("no answer from %s: %s", ctx->socket_path, err ? err : "interrupted");
		free(err);
		break;
	}
	sb_client_close(c);
	return r;
}

static int cmd_version_exec(struct cmd_ctx *ctx)
{
	json_object *d, *out;
	char *why = NULL;

	if (cmd_help_wanted(ctx, &cmd_version_entry))
		return CMD_EXIT_OK;
	if (ctx->argc > 1)
		return cmd_usage_error(&cmd_version_entry, "unexpected argument '%s'",
		                       ctx->argv[1]);
	d = cmd_version_daemon(ctx, &why);
	if (ctx->json) {
		json_object *client = json_object_new_object();
		json_object_object_add(client, "version",
		                       json_object_new_string(SNAPBUILD_VERSION));
		json_object_object_add(client, "protocol_version",
		                       json_object_new_int(SNAPBUILD_PROTOCOL_VERSION));
		out = json_object_new_object();
		json_object_object_add(out, "client", client);
		json_object_object_add(out, "daemon", json_object_get(d));
		cmd_print_json(out);
		json_object_put(out);
	} else {
		printf("snapbuild %s (protocol %d)\n", SNAPBUILD_VERSION,
		       SNAPBUILD_PROTOCOL_VERSION);
		if (d != NULL) {
			int64_t proto =
			    json_object_get_int64(json_object_object_get(d, "protocol_version"));
			sanitize_printf(
			    stdout, 0, "snapbuildd %s (protocol %" PRId64 ")\n",
			    json_object_get_string(json_object_object_get(d, "version")), proto);
			if (proto != SNAPBUILD_PROTOCOL_VERSION)
				printf("warning: the daemon speaks protocol %" PRId64
				       ", this client %d; upgrade the older one\n",
				       proto, SNAPBUILD_PROTOCOL_VERSION);
		} else {
			sanitize_printf(stdout, 0, "snapbuildd %s\n", why);
		}
	}
	free(why);
	json_object_put(d);
	return CMD_EXIT_OK;
}

const struct cmd_entry cmd_version_entry = {
    .name = "version",
    .alias = NULL,
    .usage = "[-o table|json]",
    .summary = "show the client's and the daemon's versions",
    .exec = cmd_version_exec,
};
