/*
 * JSON-RPC dispatch: turns a connection's lines into calls, finds each method in
 * the method tables (daemon/methods.h) before any handler runs, and carries answers
 * back: singly, or gathered into one array for a batch.  A handler gets a call and
 * may answer at once or much later (build.wait answers when the build ends), sending
 * notifications to the caller meanwhile.  The call, not the handler, owns the
 * request's id, peer credentials and any file descriptor that came with it.
 */
#ifndef SNAPBUILD_RPC_H
#define SNAPBUILD_RPC_H

#include <json-c/json.h>
#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

#include "peer.h"
#include "server.h"

struct rpc_call; /* one request in flight */
struct daemon;   /* daemon/daemon.h */
struct server_conn;


/* params: borrowed, may be NULL (absent); an object or an array otherwise. */
typedef void (*rpc_handler)(struct rpc_call *call, json_object *params);

struct rpc_method {
	const char *name; /* "family.verb" */
	rpc_handler handler;
	/* The keys params may hold, NULL-terminated (RPC_PARAMS): dispatch answers -32602
	 * for params that are not an object or hold another key, before the handler runs.
	 * NULL: the handler takes anything. */
	const char *const *params;
};

#define RPC_PARAMS(...) ((const char *const[]){__VA_ARGS__ __VA_OPT__(, ) NULL})

/* The first key of params (an object) not in known, or NULL when there is none. */
const char *rpc_params_unknown(json_object *params, const char *const *known);

struct daemon *rpc_call_daemon(struct rpc_call *call);
const struct rpc_peer *rpc_call_peer(const struct rpc_call *call);

/*
 * The fd received with SCM_RIGHTS together with this request's line, or -1; the
 * caller then owns it.  Unclaimed fds are closed when the call ends.
 */
int rpc_call_take_fd(struct rpc_call *call);

/* Takes ownership of result (NULL is JSON null); ends the call (a notification: just frees). */
void rpc_reply(struct rpc_call *call, json_object *result);
/* Ends the call with an error; message NULL uses the spec's text; data owned, may be NULL. */
void rpc_reply_error(struct rpc_call *call, int code, const char *message, json_object *data);
/* Like rpc_reply_error, with data {"hint": hint} when hint is not NULL. */
void rpc_reply_error_hint(struct rpc_call *call, int code, const char *message, const char *hint);

/*
 * JSON-RPC notification to this call's connection; params owned.  Returns false if
 * the connection is gone or was dropped as a slow reader.
 */
bool rpc_notify(struct rpc_call *call, const char *method, json_object *params);
/* A notification already serialized (a whole JSON-RPC message, no newline): one event
 * fanned out to many followers is formatted once. */
bool rpc_notify_text(struct rpc_call *call, const char *text, size_t len);

/* Bytes queued for the caller's connection that its socket has not taken yet: a
 * producer that can wait (a replay) waits while this is high. */
size_t rpc_call_output_pending(const struct rpc_call *call);

/*
 * cb runs once if the client disconnects while the call is pending (also when the
 * daemon stops).  The owner must still end the call with rpc_reply/rpc_reply_error,
 * which then only frees it.
 */
void rpc_call_set_close_cb(struct rpc_call *call, void (*cb)(struct rpc_call *call, void *arg),
                           void *arg);

/* The server's side of dispatch: hand these to server_new (daemon/server.h). */
extern const struct server_ops rpc_server_ops;

/* True when some method table holds name. */
bool rpc_method_exists(const char *name);

#endif
