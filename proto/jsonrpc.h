/*
 * JSON-RPC 2.0 as the specification (jsonrpc.org/specification) has it, without any
 * I/O: parse one framed line into requests (single or batch) with every invalid part
 * already turned into its error response, build responses, errors, requests and
 * notifications, and classify what a client receives.  This is the only module that
 * knows the spec's rules; the daemon, the client and the tests all go through it.
 */
#ifndef SNAPBUILD_JSONRPC_H
#define SNAPBUILD_JSONRPC_H

#include <json-c/json.h>
#include <stdbool.h>
#include <stddef.h>

#include "protocol.h"

/* One entry of a parsed line: a valid call, a valid notification or an invalid entry. */
struct jsonrpc_request {
	const char *method;  /* NULL when the entry is invalid */
	json_object *params; /* borrowed from the message; NULL when absent */
	json_object *id;     /* borrowed; NULL is JSON null when has_id is true */
	bool has_id;         /* false: a notification, which never gets an answer */
	json_object *error;  /* invalid entry: its ready error response (owned) */
};

struct jsonrpc_message {
	json_object *root; /* the parsed text; owns everything requests borrow */
	bool batch;        /* answers go back as one array */
	size_t count;
	struct jsonrpc_request *requests;
	json_object *error; /* the line as a whole failed (parse error, empty batch): send as is */
};

/*
 * Parses one line (without its '\n').  Never fails: problems end up as error
 * responses in out->error or in requests[i].error.  A blank line yields nothing
 * (count 0, no error).  Release with jsonrpc_message_clear.
 */
void jsonrpc_parse(const char *line, size_t len, struct jsonrpc_message *out);
void jsonrpc_message_clear(struct jsonrpc_message *m);

/*
 * Decodes one JSON text strictly (RFC 8259: no trailing garbage, no raw control
 * characters).  Returns false on a syntax error; JSON null decodes to *out == NULL.
 */
bool jsonrpc_decode(const char *text, size_t len, json_object **out, const char **why);

/* True when the value may serve as an id: a string, a number or null. */
bool jsonrpc_id_valid(json_object *id);

/* The spec's message for a standard code ("Parse error", ...), or NULL. */
const char *jsonrpc_error_message(int code);

/* {"jsonrpc":"2.0","result":...,"id":...}; id is borrowed (a reference is taken). */
json_object *jsonrpc_response_new(json_object *id, json_object *result);
/* {"jsonrpc":"2.0","error":{"code","message"[,"data"]},"id":...}; data is owned, may be NULL. */
json_object *jsonrpc_error_response_new(json_object *id, int code, const char *message,
                                        json_object *data);
/* {"jsonrpc":"2.0","method":...[,"params"]}; params owned, may be NULL. */
json_object *jsonrpc_notification_new(const char *method, json_object *params);
/* {"jsonrpc":"2.0","method":...[,"params"],"id":...}; id borrowed, params owned. */
json_object *jsonrpc_request_new(json_object *id, const char *method, json_object *params);

/* Compact single-line text of o, owned by o (valid while o lives, until it changes). */
const char *jsonrpc_to_string(json_object *o, size_t *len);

/* What a client reads from the daemon. */
enum jsonrpc_incoming_type {
	JSONRPC_IN_INVALID = 0,
	JSONRPC_IN_RESULT,       /* a response carrying "result" */
	JSONRPC_IN_ERROR,        /* a response carrying "error" */
	JSONRPC_IN_NOTIFICATION, /* no id, a method */
};

struct jsonrpc_incoming {
	enum jsonrpc_incoming_type type;
	json_object *id;     /* responses; borrowed */
	json_object *result; /* JSONRPC_IN_RESULT; borrowed, may be NULL (JSON null) */
	int code;            /* JSONRPC_IN_ERROR */
	const char *message; /* JSONRPC_IN_ERROR */
	json_object *data;   /* JSONRPC_IN_ERROR; borrowed, may be NULL */
	const char *method;  /* JSONRPC_IN_NOTIFICATION */
	json_object *params; /* JSONRPC_IN_NOTIFICATION; borrowed, may be NULL */
};

/* Classifies one decoded message (not a batch array: those come back JSONRPC_IN_INVALID). */
enum jsonrpc_incoming_type jsonrpc_classify(json_object *msg, struct jsonrpc_incoming *out);

#endif
