/*
 * The listening socket and the connections on it.  The socket comes from systemd
 * (socket activation) or is bound here: refusing when a live daemon already answers,
 * replacing a stale one, under a tight umask with the configured mode and group.
 * Each connection reads with recvmsg (so file descriptors can ride along with a
 * request), frames lines, hands them to rpc.c and buffers output; a connection that
 * leaves more than SNAPBUILD_MAX_PENDING_OUTPUT unread is told why and dropped.
 *
 * Connections are reference counted: calls in flight hold a reference, and the
 * memory is released from a deferred event, never inside a connection's own
 * callback, so nothing is left pointing at freed memory.
 */
#ifndef SNAPBUILD_SERVER_H
#define SNAPBUILD_SERVER_H

#include <json-c/json.h>
#include <stdbool.h>
#include <stddef.h>

struct daemon;
struct server;
struct server_conn;
struct rpc_peer;

/*
 * What the server does with a connection's lines: the dispatch layer (rpc.c) gives
 * these, so the server knows nothing of JSON-RPC calls.  state is what conn_new
 * returned for that connection.
 */
struct server_ops {
	void *(*conn_new)(struct server_conn *c);
	void (*conn_free)(void *state);
	/* One framed line; fd (owned, -1 = none) came with it. */
	void (*input)(void *state, const char *line, size_t len, int fd);
	/* A line the framing refused (oversize, bad UTF-8): answer with an error. */
	void (*reject)(void *state, int code, const char *detail);
	/* The connection is gone: pending calls must learn it. */
	void (*closed)(void *state);
	/* Calls still waiting for their answer. */
	size_t (*pending)(const void *state);
};

struct server *server_new(struct daemon *d, const struct server_ops *ops);
/* Takes the socket from systemd or binds config->socket_path. */
int server_listen(struct server *s, char **err);
/* Stops accepting and removes the socket file if this process created it. */
void server_stop_listening(struct server *s);
/* Closes every connection (their pending calls' close callbacks run). */
void server_close_all(struct server *s);
void server_free(struct server *s);

const char *server_socket_path(const struct server *s);
bool server_socket_activated(const struct server *s);
size_t server_conn_count(const struct server *s);
/* cb runs whenever the number of open connections changes. */
void server_set_conn_count_cb(struct server *s, void (*cb)(struct server *s, void *arg), void *arg);

/* --- one connection, for the dispatch layer --- */
void server_conn_ref(struct server_conn *c);
void server_conn_unref(struct server_conn *c);
bool server_conn_alive(const struct server_conn *c);
const struct rpc_peer *server_conn_peer(const struct server_conn *c);
struct daemon *server_conn_daemon(const struct server_conn *c);
/* Queues msg (borrowed) as one line; false if the connection is gone or was just dropped. */
bool server_conn_send(struct server_conn *c, json_object *msg);
/* The same for a message already serialized (one JSON text, without its newline). */
bool server_conn_send_text(struct server_conn *c, const char *text, size_t len);
/* A call ended: a half-closed connection may now be finished. */
void server_conn_call_done(struct server_conn *c);
/* Bytes queued for the client and not yet taken by its socket. */
size_t server_conn_output_pending(const struct server_conn *c);

#endif
