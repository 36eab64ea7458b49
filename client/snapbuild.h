/*
 * libsnapbuild: the snapbuild daemon's API for other local programs, with a stable C
 * ABI.  JSON crosses this interface as UTF-8 strings (the JSON-RPC params and results
 * of proto/PROTOCOL.md, unchanged), so a caller needs no JSON library of ours.
 *
 *   pkg-config --cflags --libs snapbuild
 *
 * Errors: every function returning int returns 0 on success and -1 on failure, with
 * *err set to a message a person can act on (when err is not NULL); free it with
 * snapbuild_free.  Everything the library returns to the caller (err, result_json,
 * job_json, ...) is freed with snapbuild_free.  When the daemon answered with a
 * JSON-RPC error, snapbuild_last_error_code() gives its code and
 * snapbuild_last_error_json() the whole error object ({code, message, data: {hint}}).
 *
 * Blocking: every call blocks until the daemon answers (snapbuild_follow until the job
 * ends).  A signal does not abort a call: interrupted system calls are restarted.
 *
 * Threads: a struct snapbuild is one connection with one request in flight; use it from
 * one thread at a time (or hold a lock around each call).  Distinct handles are
 * independent and may be used from different threads at once.  snapbuild_on_event
 * callbacks run on the calling thread, inside snapbuild_follow.
 *
 * Memory: the library aborts the process when it cannot allocate memory, as the
 * snapbuild CLI does.
 */
#ifndef SNAPBUILD_H
#define SNAPBUILD_H

#ifdef __cplusplus
extern "C" {
#endif

/* The protocol this library speaks; snapbuild_connect refuses a daemon of another. */
#define SNAPBUILD_PROTOCOL_VERSION_SUPPORTED 2

struct snapbuild;

/*
 * Connects to the daemon's Unix socket: socket_path, or with NULL $SNAPBUILD_SOCKET,
 * then the defaults (root: /run/snapbuild/snapbuild.sock; anybody else: the user
 * daemon's $XDG_RUNTIME_DIR/snapbuild/snapbuild.sock, else the system socket when only
 * that one exists).  Asks daemon.version and refuses a daemon of another protocol.
 * NULL with *err set on failure.
 */
struct snapbuild *snapbuild_connect(const char *socket_path, char **err);

/*
 * Calls method with params_json (a JSON object or array as text; NULL for none) and
 * stores the result, as JSON text, in *result_json (result_json may be NULL to drop
 * it).  Notifications that arrive meanwhile are dropped.
 */
int snapbuild_call(struct snapbuild *sb, const char *method, const char *params_json,
                   char **result_json, char **err);

/*
 * build.submit of the context directory context_dir: packs it here, in the calling
 * process and with its rights (honouring .dockerignore exactly as the snapbuild CLI
 * does), into an unlinked temporary file ($TMPDIR, else /var/tmp, else /tmp) whose
 * descriptor is passed to the daemon.  params_json: build.submit's other params
 * (alias, tags, dockerfile, backend, ...; "context" defaults to the directory's
 * absolute path; NULL for none).  With context_dir NULL, params_json must name an
 * "image".  *job_json: the job, as JSON text.
 */
int snapbuild_submit(struct snapbuild *sb, const char *context_dir, const char *params_json,
                     char **job_json, char **err);

/*
 * Returns non-zero to stop following.  event_json: one event of the job (see "Events"
 * in the protocol), valid until the callback returns.
 */
typedef int (*snapbuild_on_event)(const char *event_json, void *arg);

/*
 * Follows job_id from its first event (build.logs with follow): calls on_event for
 * each event, stored ones first, then live ones, until the job ends; then returns 0.
 * When on_event returns non-zero, returns -1 with *err "stopped by the caller" and the
 * connection can no longer be used (snapbuild_close it; the job goes on).
 */
int snapbuild_follow(struct snapbuild *sb, const char *job_id, snapbuild_on_event on_event,
                     void *arg, char **err);

/*
 * The JSON-RPC error code of the last call on sb that the daemon refused, 0 when the
 * last call succeeded or failed for another reason (transport, bad JSON given).
 */
int snapbuild_last_error_code(const struct snapbuild *sb);

/* That error object as JSON text (free with snapbuild_free), or NULL. */
char *snapbuild_last_error_json(const struct snapbuild *sb);

/* Closes the connection and frees sb; NULL is ignored. */
void snapbuild_close(struct snapbuild *sb);

/* Frees what the library returned; NULL is ignored. */
void snapbuild_free(void *p);

/* The library's version, e.g. "0.1.0". */
const char *snapbuild_version(void);

#ifdef __cplusplus
}
#endif

#endif
