/*
 * The snapbuild command table, tmux style: one command per file (cmd-<name>.c),
 * each exporting a constant `struct cmd_entry`, gathered into one table in cmd.c.
 * Adding a command is one new file plus one line in that table.
 *
 * Exit codes: 0 ok, 1 failure, 2 usage error (ours, or a parameter the daemon refused),
 * 3 daemon not reachable (130 when interrupted by Ctrl+C).
 */
#ifndef SNAPBUILD_CMD_H
#define SNAPBUILD_CMD_H

#include <json-c/json.h>
#include <signal.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "client.h"

struct option;

#define CMD_EXIT_OK          0
#define CMD_EXIT_FAILURE     1
#define CMD_EXIT_USAGE       2
#define CMD_EXIT_UNREACHABLE 3
#define CMD_EXIT_INTERRUPTED 130

struct cmd_ctx {
	const char *socket_path;
	bool json; /* -o json: print results verbatim */
	int argc;
	char **argv; /* argv[0] = command name */
};

struct cmd_entry {
	const char *name;
	const char *alias;   /* NULL = none */
	const char *usage;   /* arguments after the name, e.g. "[-f] JOB" */
	const char *summary; /* one line for `snapbuild help` */
	int (*exec)(struct cmd_ctx *ctx);
	const char *help; /* every option, its default and environment, for --help; NULL = none */
};

/* How many characters of a job id tables and messages show (docker ps's 12). */
#define CMD_SHORT_ID 12
/* A job id prefix needs at least this many characters to name a job. */
#define CMD_MIN_PREFIX 4

/* Set by the SIGINT/SIGTERM handler the CLI installs; long calls return when it is. */
extern volatile sig_atomic_t cmd_interrupted;

/* The entry for name or alias, or NULL. */
const struct cmd_entry *cmd_find(const char *name);
/* Every entry, NULL-terminated. */
const struct cmd_entry *const *cmd_entries(void);

/*
 * Connects to ctx->socket_path; on failure prints how to start the daemon and exits
 * with status 3.  Ctrl+C interrupts calls on the returned client.
 */
struct sb_client *cmd_connect(struct cmd_ctx *ctx);
/*
 * Calls method (params owned, may be NULL).  On an RPC error prints the message and
 * the hint from the error's data; returns the exit code: 0 ok (*result set, owned),
 * 1 error, 2 when the daemon refused a parameter (-32602: a usage error), 3 connection
 * lost, 130 interrupted.
 */
int cmd_call(struct cmd_ctx *ctx, struct sb_client *c, const char *method, json_object *params,
             json_object **result);
/* Like cmd_call, with notifications passed to on_notify while the call is pending. */
int cmd_call_notify(struct cmd_ctx *ctx, struct sb_client *c, const char *method,
                    json_object *params, int pass_fd, sb_notify_cb on_notify, void *arg,
                    json_object **result);
/* Pretty JSON and a newline to stdout. */
void cmd_print_json(json_object *o);
/* Prints "snapbuild NAME: message (snapbuild NAME --help)", one line, to stderr; returns 2. */
int cmd_usage_error(const struct cmd_entry *e, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
/* Prints the full usage of e to fp. */
void cmd_print_usage(const struct cmd_entry *e, FILE *fp);
/*
 * An output format: 1 for json, 0 for table (text is its synonym, as in the
 * together-sandbox CLI's -o table|json), -1 for anything else.
 */
int cmd_output_format(const char *value);
/* Sets ctx->json from -o's value for e; a bad value is a usage error (returns 2), else 0. */
int cmd_set_output(struct cmd_ctx *ctx, const struct cmd_entry *e, const char *value);
/*
 * For commands without getopt: true, after printing e's usage to stdout, when -h or
 * --help is among the command's arguments (before any "--").
 */
bool cmd_help_wanted(const struct cmd_ctx *ctx, const struct cmd_entry *e);
/* The candidate closest to word (a typo or an unambiguous prefix), or NULL if none is. */
const char *cmd_closest(const char *word, const char *const *candidates);
/* "unknown command" for name, with the nearest command if any; returns 2. */
int cmd_unknown_command(const char *name);
/*
 * getopt_long's refusal, as one line: "snapbuild NAME: unknown option '--contxt'; did you
 * mean '--context'?" or "--ttl needs a value", with where to read more.  Call it when
 * getopt_long (shorts starting with ':', so a missing value is told apart) returns '?'
 * or ':'; name is "create" or "snapshots list".  Returns 2.
 */
int cmd_option_error(const char *name, int opt, int argc, char **argv, const struct option *opts);
/* The first CMD_SHORT_ID characters of id, or all of it with no_trunc (malloc'd). */
char *cmd_short_id(const char *id, bool no_trunc);
/*
 * How long a follower waits for a daemon that went away (a restart, an upgrade) to
 * come back: $SNAPBUILD_RECONNECT_SECONDS, default 60 (0: not at all).
 */
#define CMD_RECONNECT_SECONDS 60
int cmd_reconnect_seconds(void);
/* Connects again within cmd_reconnect_seconds(); NULL when the daemon did not come back
 * or Ctrl+C was pressed. */
struct sb_client *cmd_reconnect(struct cmd_ctx *ctx);
/*
 * cmd_call for a call that may be made again (build.wait, a read): when the daemon
 * goes away it connects again (cmd_reconnect, replacing *c, NULL after a failure) and
 * repeats the call.
 */
int cmd_call_again(struct cmd_ctx *ctx, struct sb_client **c, const char *method,
                   json_object *params, json_object **result);
/*
 * Follows job id's events from after_seq (build.logs with follow) through on_event,
 * connecting again by itself when the daemon goes away (a restart) and continuing
 * after the last seq it passed on, so nothing is shown twice or lost.  Returns as
 * cmd_call does; *job is the final job (owned) on 0.  c is replaced when it
 * reconnects (and may be NULL after a failure).
 */
int cmd_follow(struct cmd_ctx *ctx, struct sb_client **c, const char *id, int64_t after_seq,
               sb_notify_cb on_event, void *arg, json_object **job);

/* "3m 12s"-style rendering of a duration in seconds. */
void cmd_format_duration(double seconds, char *buf, size_t size);

extern const struct cmd_entry cmd_daemon_entry;
extern const struct cmd_entry cmd_version_entry;
extern const struct cmd_entry cmd_help_entry;
extern const struct cmd_entry cmd_create_entry;
extern const struct cmd_entry cmd_jobs_entry;
extern const struct cmd_entry cmd_logs_entry;
extern const struct cmd_entry cmd_inspect_entry;
extern const struct cmd_entry cmd_wait_entry;
extern const struct cmd_entry cmd_cancel_entry;
extern const struct cmd_entry cmd_retry_entry;
extern const struct cmd_entry cmd_prune_entry;
extern const struct cmd_entry cmd_context_entry;
extern const struct cmd_entry cmd_snapshots_entry;

/* A job's details for humans (snapbuild inspect). */
void cmd_print_job(json_object *job);
/* A snapshot's live details from snapshot.get, or one line saying why there are none. */
void cmd_print_snapshot_live(struct sb_client *c, const char *snapshot_id);

#endif
