/*
 * The snapbuild client library: connect to the daemon's Unix socket, make JSON-RPC
 * calls (optionally passing a file descriptor with SCM_RIGHTS), and receive the
 * notifications the daemon sends while a call is pending.  Blocking and
 * single-threaded; what the snapbuild CLI uses and what another C program links.
 */
#ifndef SNAPBUILD_CLIENT_H
#define SNAPBUILD_CLIENT_H

#include <json-c/json.h>
#include <signal.h>

struct sb_client;

/* An error answer from the daemon; free with sb_rpc_error_clear. */
struct sb_rpc_error {
	int code;
	char *message;
	json_object *data;
};

typedef void (*sb_notify_cb)(void *arg, const char *method, json_object *params);

/* The system daemon's socket (snapbuildd.socket). */
#define SB_SYSTEM_SOCKET "/run/snapbuild/snapbuild.sock"

/*
 * $SNAPBUILD_SOCKET, else for root the system socket, else the user daemon's
 * $XDG_RUNTIME_DIR/snapbuild/snapbuild.sock (/run/user/<uid>/... without the
 * variable), or the system socket when only that one exists.
 */
const char *sb_default_socket_path(void);

/* NULL with *err (malloc'd) and errno set when the daemon cannot be reached. */
struct sb_client *sb_client_connect(const char *socket_path, char **err);
void sb_client_close(struct sb_client *c);

/* The connection's socket, e.g. to shut it down from a notification callback. */
int sb_client_fd(const struct sb_client *c);

/*
 * A blocking call returns SB_CALL_INTERRUPTED when a signal interrupts it and
 * *flag != 0 (install the handler without SA_RESTART).  The connection should then
 * be closed: the answer may still arrive later.
 */
void sb_client_set_interrupt(struct sb_client *c, volatile sig_atomic_t *flag);

enum { SB_CALL_OK = 0, SB_CALL_RPC_ERROR = 1, SB_CALL_TRANSPORT = -1, SB_CALL_INTERRUPTED = -2 };

/*
 * Calls method with params (owned, may be NULL) and waits for its answer.  pass_fd
 * (-1 = none) is sent with SCM_RIGHTS together with the request (the caller keeps
 * its own copy).  Notifications arriving meanwhile go to on_notify (may be NULL).
 * SB_CALL_OK: *result is the result (owned by the caller; NULL is JSON null).
 * SB_CALL_RPC_ERROR: *error is filled.  SB_CALL_TRANSPORT: *err (malloc'd) says why.
 */
int sb_client_call(struct sb_client *c, const char *method, json_object *params, int pass_fd,
                   sb_notify_cb on_notify, void *arg, json_object **result,
                   struct sb_rpc_error *error, char **err);

void sb_rpc_error_clear(struct sb_rpc_error *e);

#endif
