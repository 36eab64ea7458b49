/*
 * The wire contract between snapbuildd and its clients, defined once: the protocol
 * version, framing limits and every JSON-RPC error code.  proto/PROTOCOL.md explains
 * each of them; a change here is a change to that document.
 */
#ifndef SNAPBUILD_PROTOCOL_H
#define SNAPBUILD_PROTOCOL_H

/* Bumped on any incompatible change; daemon.info and daemon.version report it. */
#define SNAPBUILD_PROTOCOL_VERSION 3

/* Longest accepted line (one JSON text, without its '\n'). */
#define SNAPBUILD_MAX_MESSAGE (1024 * 1024)

/* Output a connection may leave unread before the daemon drops it as a slow reader. */
#define SNAPBUILD_MAX_PENDING_OUTPUT (8 * 1024 * 1024)

/* At most this many file descriptors ride along with one request (SCM_RIGHTS). */
#define SNAPBUILD_MAX_FDS_PER_REQUEST 1

enum jsonrpc_error_code {
	/* JSON-RPC 2.0 specification */
	JSONRPC_PARSE_ERROR = -32700,
	JSONRPC_INVALID_REQUEST = -32600,
	JSONRPC_METHOD_NOT_FOUND = -32601,
	JSONRPC_INVALID_PARAMS = -32602,
	JSONRPC_INTERNAL_ERROR = -32603,

	/* snapbuild application errors */
	SB_ERR_NOT_FOUND = -32001,         /* no such job, snapshot, ... */
	SB_ERR_PERMISSION_DENIED = -32002, /* the caller may not see or touch it */
	SB_ERR_INVALID_STATE = -32003,     /* not possible in the object's current state */
	SB_ERR_UPSTREAM = -32004,          /* the Together API failed or refused */
	SB_ERR_CONTEXT = -32005,           /* the build context cannot be read or is invalid */
	SB_ERR_STORAGE = -32006,           /* the daemon's database failed */
	SB_ERR_BUSY = -32007,              /* shutting down, or a limit is reached */
};

/* Notification sent to a connection just before the daemon closes it. */
#define SB_NOTIFY_DROPPED "daemon.dropped"

#endif
