/*
 * The command table and the helpers every command uses: connecting (with the
 * "how to start the daemon" message), calling with uniform error printing, JSON
 * output, usage errors.  `snapbuild help` lives here because it walks the table.
 */
#include "cmd.h"

#include <errno.h>
#include <getopt.h>
#include <poll.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "output.h"
#include "protocol.h"
#include "sanitize.h"
#include "util.h"

static const struct cmd_entry *const cmd_table[] = {
    &cmd_create_entry,  &cmd_jobs_entry,
    &cmd_logs_entry,    &cmd_inspect_entry,
    &cmd_wait_entry,    &cmd_cancel_entry,
    &cmd_retry_entry,   &cmd_prune_entry,
    &cmd_context_entry, &cmd_snapshots_entry,
    &cmd_daemon_entry,  &cmd_version_entry,
    &cmd_help_entry,    NULL,
};

volatile sig_atomic_t cmd_interrupted;

const struct cmd_entry *const *cmd_entries(void)
{
	return cmd_table;
}

const struct cmd_entry *cmd_find(const char *name)
{
	for (const struct cmd_entry *const *e = cmd_table; *e != NULL; e++)
		if (strcmp((*e)->name, name) == 0 ||
		    ((*e)->alias != NULL && strcmp((*e)->alias, name) == 0))
			return *e;
	return NULL;
}

/*
 * A daemon of another protocol would take requests it reads differently (the first
 * protocol packed contexts in the daemon): say so once, clearly, instead.
 */
static void cmd_check_protocol(struct cmd_ctx *ctx, struct sb_client *c)
{
	json_object *r = NULL, *v = NULL;
	struct sb_rpc_error e = {0};
	char *err = NULL;
	if (sb_client_call(c, "daemon.version", NULL, -1, NULL, NULL, &r, &e, &err) != SB_CALL_OK) {
		/* Whatever failed here fails the command's own call too, with its message. */
		sb_rpc_error_clear(&e);
		free(err);
		return;
	}
	int64_t proto = json_object_object_get_ex(r, "protocol_version", &v)
	                    ? json_object_get_int64(v)
	                    : 0;
	json_object_put(r);
	if (proto == SNAPBUILD_PROTOCOL_VERSION)
		return;
	fprintf(stderr,
	        "snapbuild: the daemon at %s speaks protocol %lld, this snapbuild protocol %d\n"
	        "  hint: use the snapbuild that came with the daemon, or upgrade the older one "
	        "(then restart the daemon: systemctl restart snapbuildd)\n",
	        ctx->socket_path, (long long)proto, SNAPBUILD_PROTOCOL_VERSION);
	sb_client_close(c);
	exit(CMD_EXIT_FAILURE);
}

struct sb_client *cmd_connect(struct cmd_ctx *ctx)
{
	char *err = NULL;
	struct sb_client *c = sb_client_connect(ctx->socket_path, &err);
	bool system = geteuid() == 0 || strcmp(ctx->socket_path, SB_SYSTEM_SOCKET) == 0;

	if (c == NULL && errno == EACCES) {
		fprintf(stderr,
		        "snapbuild: daemon not reachable at %s: %s; the socket is for the group "
		        "that owns it: join it (`sudo usermod -aG snapbuild $USER`) and log in "
		        "again\n",
		        ctx->socket_path, err);
	} else if (c == NULL) {
		fprintf(stderr,
		        "snapbuild: daemon not reachable at %s: %s; start it with `snapbuildd` or "
		        "`%ssystemctl %sstart snapbuildd.socket`\n",
		        ctx->socket_path, err, system && geteuid() != 0 ? "sudo " : "",
		        system ? "" : "--user ");
	}
	if (c == NULL) {
		free(err);
		exit(CMD_EXIT_UNREACHABLE);
	}
	sb_client_set_interrupt(c, &cmd_interrupted);
	cmd_check_protocol(ctx, c);
	return c;
}

static void cmd_print_rpc_error(struct cmd_ctx *ctx, const struct sb_rpc_error *e)
{
	json_object *hint = NULL;
	unsigned flags = output_text_flags(stderr);

	/* The daemon's words may quote another user's or the service's: sanitised. */
	sanitize_printf(stderr, flags, "snapbuild: %s\n", e->message);
	if (json_object_object_get_ex(e->data, "hint", &hint) &&
	    json_object_is_type(hint, json_type_string))
		sanitize_printf(stderr, flags, "hint: %s\n", json_object_get_string(hint));
	if (ctx->json) {
		json_object *o = json_object_new_object(), *err = json_object_new_object();
		json_object_object_add(err, "code", json_object_new_int(e->code));
		json_object_object_add(err, "message", json_object_new_string(e->message));
		if (e->data != NULL)
			json_object_object_add(err, "data", json_object_get(e->data));
		json_object_object_add(o, "error", err);
		cmd_print_json(o);
		json_object_put(o);
	}
}

/* Parameters the daemon refused are the command line's fault: a usage error, as ours. */
static int cmd_rpc_exit(const struct sb_rpc_error *e)
{
	return e->code == JSONRPC_INVALID_PARAMS ? CMD_EXIT_USAGE : CMD_EXIT_FAILURE;
}

int cmd_call_notify(struct cmd_ctx *ctx, struct sb_client *c, const char *method,
                    json_object *params, int pass_fd, sb_notify_cb on_notify, void *arg,
                    json_object **result)
{
	struct sb_rpc_error e;
	char *err = NULL;
	int rc;

	rc = sb_client_call(c, method, params, pass_fd, on_notify, arg, result, &e, &err);
	switch (rc) {
	case SB_CALL_OK:
		return CMD_EXIT_OK;
	case SB_CALL_RPC_ERROR:
		cmd_print_rpc_error(ctx, &e);
		rc = cmd_rpc_exit(&e);
		sb_rpc_error_clear(&e);
		return rc;
	case SB_CALL_INTERRUPTED:
		fprintf(stderr, "snapbuild: interrupted\n");
		return CMD_EXIT_INTERRUPTED;
	default:
		fprintf(stderr, "snapbuild: lost the connection to the daemon at %s: %s\n",
		        ctx->socket_path, err);
		free(err);
		return CMD_EXIT_UNREACHABLE;
	}
}

int cmd_call(struct cmd_ctx *ctx, struct sb_client *c, const char *method, json_object *params,
             json_object **result)
{
	return cmd_call_notify(ctx, c, method, params, -1, NULL, NULL, result);
}

void cmd_print_json(json_object *o)
{
	const char *s = json_object_to_json_string_ext(
	    o, JSON_C_TO_STRING_PRETTY | JSON_C_TO_STRING_SPACED | JSON_C_TO_STRING_NOSLASHESCAPE);

	/* json-c writes an empty object or array over two lines: {} and [] as jq does. */
	for (const char *p = s; *p; p++) {
		const char *q = p + 1;
		if (*p == '{' || *p == '[') {
			while (*q == '\n' || *q == ' ')
				q++;
			if (*q == (*p == '{' ? '}' : ']')) {
				fputc(*p, stdout);
				fputc(*q, stdout);
				p = q;
				continue;
			}
		}
		fputc(*p, stdout);
	}
	fputc('\n', stdout);
}

void cmd_print_usage(const struct cmd_entry *e, FILE *fp)
{
	fprintf(fp, "usage: snapbuild %s%s%s\n", e->name, *e->usage ? " " : "", e->usage);
	if (e->alias != NULL)
		fprintf(fp, "alias: %s\n", e->alias);
	fprintf(fp, "%s\n", e->summary);
	if (e->help != NULL)
		fprintf(fp, "\n%s", e->help);
}

int cmd_option_error(const char *name, int opt, int argc, char **argv, const struct option *opts)
{
	const char *arg = optind > 0 && optind <= argc ? argv[optind - 1] : "?";
	const char *names[64];
	const char *near = NULL;
	char *word;
	size_t n = 0;
	bool known = false;

	if (opt == ':') {
		fprintf(stderr, "snapbuild %s: %s needs a value (snapbuild %s --help)\n", name, arg,
		        name);
		return CMD_EXIT_USAGE;
	}
	if (!(arg[0] == '-' && arg[1] == '-')) {
		fprintf(stderr, "snapbuild %s: unknown option '-%c' (snapbuild %s --help)\n", name,
		        optopt ? optopt : '?', name);
		return CMD_EXIT_USAGE;
	}
	word = xstrdup(arg + 2);
	word[strcspn(word, "=")] = '\0';
	for (const struct option *o = opts; o->name != NULL && n + 1 < 64; o++) {
		names[n++] = o->name;
		known = known || strcmp(o->name, word) == 0;
	}
	names[n] = NULL;
	if (known)
		fprintf(stderr, "snapbuild %s: --%s takes no value (snapbuild %s --help)\n", name,
		        word, name);
	else if ((near = cmd_closest(word, names)) != NULL)
		fprintf(stderr,
		        "snapbuild %s: unknown option '--%s'; did you mean '--%s'? (snapbuild %s "
		        "--help)\n",
		        name, word, near, name);
	else
		fprintf(stderr, "snapbuild %s: unknown option '--%s' (snapbuild %s --help)\n", name,
		        word, name);
	free(word);
	return CMD_EXIT_USAGE;
}

char *cmd_short_id(const char *id, bool no_trunc)
{
	return no_trunc ? xstrdup(id) : xstrndup(id, CMD_SHORT_ID);
}

struct cmd_follow_state {
	sb_notify_cb on_event;
	void *arg;
	int64_t last_seq;
};

static void cmd_follow_cb(void *arg, const char *method, json_object *params)
{
	struct cmd_follow_state *f = arg;
	json_object *v = NULL;
	int64_t seq = json_object_object_get_ex(params, "seq", &v) ? json_object_get_int64(v) : 0;

	if (strcmp(method, "build.event") != 0)
		return;
	/* A replay after a reconnect starts after last_seq; never show a line twice. */
	if (seq != 0 && seq <= f->last_seq)
		return;
	if (seq > f->last_seq)
		f->last_seq = seq;
	f->on_event(f->arg, method, params);
}

int cmd_reconnect_seconds(void)
{
	const char *v = getenv("SNAPBUILD_RECONNECT_SECONDS");
	char *end;
	long n = v && *v ? strtol(v, &end, 10) : -1;

	return n >= 0 && n <= 86400 && *end == '\0' ? (int)n : CMD_RECONNECT_SECONDS;
}

struct sb_client *cmd_reconnect(struct cmd_ctx *ctx)
{
	double deadline = now_seconds() + cmd_reconnect_seconds();
	int delay_ms = 50;

	while (!cmd_interrupted) {
		char *err = NULL;
		struct sb_client *c = sb_client_connect(ctx->socket_path, &err);
		free(err);
		if (c != NULL) {
			sb_client_set_interrupt(c, &cmd_interrupted);
			cmd_check_protocol(ctx, c);
			return c;
		}
		if (now_seconds() > deadline)
			break;
		poll(NULL, 0, delay_ms);
		delay_ms = delay_ms < 500 ? delay_ms * 2 : 1000;
	}
	return NULL;
}

int cmd_call_again(struct cmd_ctx *ctx, struct sb_client **c, const char *method,
                   json_object *params, json_object **result)
{
	/* Losses close together share one cmd_reconnect_seconds(); one after a call that
	 * ran a while (a long wait, then another restart) starts afresh. */
	double lost_since = 0, since = now_seconds();
	int rc;

	for (;;) {
		struct sb_rpc_error e = {0};
		char *err = NULL;

		rc = sb_client_call(*c, method, json_object_get(params), -1, NULL, NULL, result, &e,
		                    &err);
		if (rc == SB_CALL_OK) {
			rc = CMD_EXIT_OK;
			break;
		}
		if (rc == SB_CALL_RPC_ERROR) {
			cmd_print_rpc_error(ctx, &e);
			rc = cmd_rpc_exit(&e);
			sb_rpc_error_clear(&e);
			break;
		}
		if (rc == SB_CALL_INTERRUPTED) {
			fprintf(stderr, "snapbuild: interrupted\n");
			rc = CMD_EXIT_INTERRUPTED;
			break;
		}
		sb_client_close(*c);
		*c = NULL;
		fprintf(stderr,
		        "snapbuild: lost the daemon at %s (%s); waiting for it to come back...\n",
		        ctx->socket_path, err);
		free(err);
		if (lost_since == 0 || now_seconds() - since > cmd_reconnect_seconds())
			lost_since = now_seconds();
		if (now_seconds() - lost_since <= cmd_reconnect_seconds())
			*c = cmd_reconnect(ctx);
		if (*c != NULL)
			fprintf(stderr, "snapbuild: reconnected to the daemon\n");
		since = now_seconds();
		if (*c == NULL) {
			fprintf(stderr, "snapbuild: the daemon did not come back within %d s\n",
			        cmd_reconnect_seconds());
			rc = cmd_interrupted ? CMD_EXIT_INTERRUPTED : CMD_EXIT_UNREACHABLE;
			break;
		}
	}
	json_object_put(params);
	return rc;
}

int cmd_follow(struct cmd_ctx *ctx, struct sb_client **c, const char *id, int64_t after_seq,
               sb_notify_cb on_event, void *arg, json_object **job)
{
	struct cmd_follow_state f = {on_event, arg, after_seq};
	double lost_since = 0;
	int64_t seq_at_loss = -1;

	*job = NULL;
	for (;;) {
		json_object *params = json_object_new_object(), *res = NULL, *final = NULL;
		struct sb_rpc_error e = {0};
		char *err = NULL;
		int rc;

		json_object_object_add(params, "id", json_object_new_string(id));
		json_object_object_add(params, "after_seq", json_object_new_int64(f.last_seq));
		json_object_object_add(params, "follow", json_object_new_boolean(1));
		rc =
		    sb_client_call(*c, "build.logs", params, -1, cmd_follow_cb, &f, &res, &e, &err);
		if (rc == SB_CALL_OK) {
			if (json_object_object_get_ex(res, "job", &final))
				*job = json_object_get(final);
			json_object_put(res);
			return CMD_EXIT_OK;
		}
		if (rc == SB_CALL_RPC_ERROR) {
			cmd_print_rpc_error(ctx, &e);
			rc = cmd_rpc_exit(&e);
			sb_rpc_error_clear(&e);
			return rc;
		}
		if (rc == SB_CALL_INTERRUPTED) {
			free(err);
			return CMD_EXIT_INTERRUPTED;
		}
		/* The daemon went away (a restart, an upgrade): the job goes on without it.  A
		 * daemon that takes us back but drops us again before anything new arrives
		 * gets the same cmd_reconnect_seconds() in all, not a fresh wait each time. */
		sb_client_close(*c);
		*c = NULL;
		fprintf(stderr,
		        "snapbuild: lost the daemon at %s (%s); reconnecting to go on after event "
		        "%lld...\n",
		        ctx->socket_path, err, (long long)f.last_seq);
		free(err);
		if (f.last_seq != seq_at_loss) {
			lost_since = now_seconds();
			seq_at_loss = f.last_seq;
		}
		if (now_seconds() - lost_since <= cmd_reconnect_seconds())
			*c = cmd_reconnect(ctx);
		if (*c != NULL)
			fprintf(stderr, "snapbuild: reconnected to the daemon\n");
		if (*c == NULL) {
			if (cmd_interrupted)
				return CMD_EXIT_INTERRUPTED;
			sanitize_printf(stderr, 0,
			                "snapbuild: the daemon did not come back within %d s; the "
			                "job goes on: snapbuild logs -f %s\n"
			                "  hint: see `systemctl status snapbuildd` (or --user), or "
			                "start it with `snapbuildd`\n",
			                cmd_reconnect_seconds(), id);
			return CMD_EXIT_UNREACHABLE;
		}
	}
}

int cmd_usage_error(const struct cmd_entry *e, const char *fmt, ...)
{
	va_list ap;

	fprintf(stderr, "snapbuild %s: ", e->name);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fprintf(stderr, " (snapbuild %s --help)\n", e->name);
	return CMD_EXIT_USAGE;
}

int cmd_output_format(const char *value)
{
	if (strcmp(value, "json") == 0)
		return 1;
	if (strcmp(value, "table") == 0 || strcmp(value, "text") == 0)
		return 0;
	return -1;
}

int cmd_set_output(struct cmd_ctx *ctx, const struct cmd_entry *e, const char *value)
{
	int o = cmd_output_format(value);

	if (o < 0)
		return cmd_usage_error(e, "unknown output format '%s': use table or json", value);
	ctx->json = o == 1;
	return CMD_EXIT_OK;
}

bool cmd_help_wanted(const struct cmd_ctx *ctx, const struct cmd_entry *e)
{
	for (int i = 1; i < ctx->argc && strcmp(ctx->argv[i], "--") != 0; i++) {
		if (strcmp(ctx->argv[i], "--help") == 0 || strcmp(ctx->argv[i], "-h") == 0) {
			cmd_print_usage(e, stdout);
			return true;
		}
	}
	return false;
}

/* Edits (insert, delete, substitute, swap two neighbours) from a to b; words longer
 * than CMD_WORD_MAX are only ever equal or far apart. */
#define CMD_WORD_MAX 24
static size_t cmd_distance(const char *a, const char *b)
{
	size_t la = strlen(a), lb = strlen(b), d[CMD_WORD_MAX + 1][CMD_WORD_MAX + 1];

	if (la > CMD_WORD_MAX || lb > CMD_WORD_MAX)
		return strcmp(a, b) == 0 ? 0 : SIZE_MAX;
	for (size_t i = 0; i <= la; i++)
		d[i][0] = i;
	for (size_t j = 0; j <= lb; j++)
		d[0][j] = j;
	for (size_t i = 1; i <= la; i++) {
		for (size_t j = 1; j <= lb; j++) {
			size_t best = d[i - 1][j - 1] + (a[i - 1] != b[j - 1]);
			if (d[i - 1][j] + 1 < best)
				best = d[i - 1][j] + 1;
			if (d[i][j - 1] + 1 < best)
				best = d[i][j - 1] + 1;
			if (i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] &&
			    d[i - 2][j - 2] + 1 < best)
				best = d[i - 2][j - 2] + 1;
			d[i][j] = best;
		}
	}
	return d[la][lb];
}

const char *cmd_closest(const char *word, const char *const *candidates)
{
	/* A short word may be one edit off, a longer one two; a prefix counts as one. */
	size_t len = strlen(word), limit = len <= 4 ? 1 : 2, best = limit + 1;
	const char *found = NULL;

	for (const char *const *c = candidates; *c != NULL; c++) {
		size_t d = len >= 2 && strncmp(*c, word, len) == 0 ? 1 : cmd_distance(word, *c);
		if (d < best || (d == best && found != NULL && strlen(*c) < strlen(found))) {
			best = d;
			found = *c;
		}
	}
	return found;
}

int cmd_unknown_command(const char *name)
{
	const char *names[2 * sizeof(cmd_table) / sizeof(cmd_table[0]) + 1];
	const char *near;
	size_t n = 0;

	for (const struct cmd_entry *const *e = cmd_table; *e != NULL; e++) {
		names[n++] = (*e)->name;
		if ((*e)->alias != NULL)
			names[n++] = (*e)->alias;
	}
	names[n] = NULL;
	near = cmd_closest(name, names);
	if (near != NULL)
		fprintf(stderr, "snapbuild: unknown command '%s'; did you mean '%s'?\n", name,
		        near);
	else
		fprintf(stderr, "snapbuild: unknown command '%s'\n", name);
	fprintf(stderr, "See `snapbuild help` for the list of commands.\n");
	return CMD_EXIT_USAGE;
}

void cmd_format_duration(double seconds, char *buf, size_t size)
{
	long s = seconds < 0 ? 0 : (long)seconds;

	if (s < 60)
		snprintf(buf, size, "%lds", s);
	else if (s < 3600)
		snprintf(buf, size, "%ldm %lds", s / 60, s % 60);
	else if (s < 86400)
		snprintf(buf, size, "%ldh %ldm", s / 3600, (s % 3600) / 60);
	else
		snprintf(buf, size, "%ldd %ldh", s / 86400, (s % 86400) / 3600);
}

static int cmd_help_exec(struct cmd_ctx *ctx)
{
	if (cmd_help_wanted(ctx, &cmd_help_entry))
		return CMD_EXIT_OK;
	if (ctx->argc > 2)
		return cmd_usage_error(&cmd_help_entry, "too many arguments");
	if (ctx->argc == 2) {
		const struct cmd_entry *e = cmd_find(ctx->argv[1]);
		if (e == NULL)
			return cmd_unknown_command(ctx->argv[1]);
		cmd_print_usage(e, stdout);
		return CMD_EXIT_OK;
	}
	printf("usage: snapbuild [--socket PATH] [-o table|json] COMMAND [ARGS]\n"
	       "\n"
	       "Builds Docker contexts into Together Sandbox snapshots through the snapbuildd\n"
	       "daemon, which holds the API key: like `together-sandbox snapshots create`, but\n"
	       "a build outlives the shell that started it, and every build is kept.\n"
	       "\n"
	       "Commands:\n");
	for (const struct cmd_entry *const *e = cmd_table; *e != NULL; e++) {
		char left[32];
		snprintf(left, sizeof(left), "%s%s%s%s", (*e)->name, (*e)->alias ? " (" : "",
		         (*e)->alias ? (*e)->alias : "", (*e)->alias ? ")" : "");
		printf("  %-20s %s\n", left, (*e)->summary);
	}
	printf(
	    "\n"
	    "Options:\n"
	    "  --socket PATH     daemon socket (now %s;\n"
	    "                    $SNAPBUILD_SOCKET changes the default)\n"
	    "  -o table|json     output format (text is the same as table); -o json\n"
	    "                    prints results verbatim (accepted after the command too)\n"
	    "  --version         print the client's version\n"
	    "  -h, --help        this help\n"
	    "\n"
	    "Examples:\n"
	    "    snapbuild create --context ./app -t myapp@v1     build ./app, alias the snapshot\n"
	    "    snapbuild create -c ./app -f ./Dockerfile.prod   a Dockerfile from elsewhere\n"
	    "    snapbuild jobs                                   what ran, and how it ended\n"
	    "    snapbuild logs -f 1a2b                           follow a job (4+ id characters)\n"
	    "\n"
	    "Environment: TOGETHER_LOCAL_BUILD=1 and TOGETHER_REMOTE_ARCHITECTURE=amd64|arm64\n"
	    "act as create's --local and --arch; TOGETHER_API_KEY and TOGETHER_BASE_URL are\n"
	    "the daemon's (`snapbuild daemon info` shows what it uses); NO_COLOR.\n"
	    "\n"
	    "Exit codes: 0 ok, 1 failure, 2 usage error, 3 daemon not reachable.\n"
	    "`snapbuild help COMMAND` or `snapbuild COMMAND --help` shows a command's options\n"
	    "and their defaults.\n",
	    ctx->socket_path);
	return CMD_EXIT_OK;
}

const struct cmd_entry cmd_help_entry = {
    .name = "help",
    .alias = NULL,
    .usage = "[COMMAND]",
    .summary = "show the commands, or one command's usage",
    .exec = cmd_help_exec,
};
