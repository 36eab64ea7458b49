/*
 * Dispatch.  A line becomes one call (or a batch of calls sharing one answer
 * array); the method is looked up before any handler runs.  Calls hold a reference
 * on their connection, so a handler answering minutes later finds it still valid
 * (perhaps closed, in which case the answer is simply dropped).  A batch waits for
 * its last call, synchronous or not, and then sends every answer in one array.
 */
#include "rpc.h"

#include <stdlib.h>
#include <string.h>
#include <sys/queue.h>
#include <unistd.h>

#include "daemon.h"
#include "jsonrpc.h"
#include "log.h"
#include "methods.h"
#include "server.h"
#include "util.h"

/* Every method family; a new family adds its table here. */
static const struct rpc_method *const rpc_tables[] = {
    methods_daemon,
    methods_build,
    methods_context,
    methods_snapshot,
};

struct rpc_batch {
	struct rpc_conn *rc;
	json_object **answers; /* one slot per entry; NULL for notifications */
	size_t count;
	size_t remaining; /* entries not yet answered, plus one while dispatching */
};

struct rpc_call {
	struct rpc_conn *rc;
	const struct rpc_method *method;
	struct rpc_batch *batch; /* NULL for a single request */
	size_t slot;
	json_object *id; /* owned reference */
	bool has_id;
	int fd;
	void (*close_cb)(struct rpc_call *call, void *arg);
	void *close_arg;
	bool close_ran;
	TAILQ_ENTRY(rpc_call) entry;
};

struct rpc_conn {
	struct server_conn *sc;
	TAILQ_HEAD(, rpc_call) calls;
	size_t ncalls;
};

static const struct rpc_method *rpc_method_find(const char *name)
{
	for (size_t t = 0; t < sizeof(rpc_tables) / sizeof(rpc_tables[0]); t++)
		for (const struct rpc_method *m = rpc_tables[t]; m->name != NULL; m++)
			if (strcmp(m->name, name) == 0)
				return m;
	return NULL;
}

bool rpc_method_exists(const char *name)
{
	return rpc_method_find(name) != NULL;
}

static struct rpc_conn *rpc_conn_new(struct server_conn *sc)
{
	struct rpc_conn *rc = xcalloc(1, sizeof(*rc));
	rc->sc = sc;
	TAILQ_INIT(&rc->calls);
	return rc;
}

static void rpc_conn_free(struct rpc_conn *rc)
{
	if (rc == NULL)
		return;
	/* Calls hold a connection reference, so none can be left here. */
	if (rc->ncalls != 0)
		fatalx("rpc_conn_free with %zu calls pending", rc->ncalls);
	free(rc);
}

static size_t rpc_conn_pending(const struct rpc_conn *rc)
{
	return rc->ncalls;
}

static void rpc_send(struct rpc_conn *rc, json_object *msg)
{
	server_conn_send(rc->sc, msg);
	json_object_put(msg);
}

static void rpc_batch_finish(struct rpc_batch *b)
{
	json_object *arr = json_object_new_array();

	for (size_t i = 0; i < b->count; i++)
		if (b->answers[i] != NULL)
			json_object_array_add(arr, b->answers[i]);
	/* A batch of notifications only gets no answer at all. */
	if (json_object_array_length(arr) > 0)
		server_conn_send(b->rc->sc, arr);
	json_object_put(arr);
	server_conn_unref(b->rc->sc);
	free(b->answers);
	free(b);
}

static void rpc_batch_settle(struct rpc_batch *b)
{
	if (--b->remaining == 0)
		rpc_batch_finish(b);
}

/* Delivers one answer (NULL: none owed) for a call or a batch slot. */
static void rpc_deliver(struct rpc_conn *rc, struct rpc_batch *b, size_t slot, json_object *answer)
{
	if (b != NULL) {
		b->answers[slot] = answer;
		rpc_batch_settle(b);
	} else if (answer != NULL) {
		rpc_send(rc, answer);
	}
}

static void rpc_call_end(struct rpc_call *call, json_object *answer)
{
	struct rpc_conn *rc = call->rc;
	struct server_conn *sc = rc->sc;

	TAILQ_REMOVE(&rc->calls, call, entry);
	rc->ncalls--;
	if (call->fd >= 0)
		close(call->fd);
	rpc_deliver(rc, call->batch, call->slot, answer);
	json_object_put(call->id);
	free(call);
	server_conn_call_done(sc);
	server_conn_unref(sc);
}

struct daemon *rpc_call_daemon(struct rpc_call *call)
{
	return server_conn_daemon(call->rc->sc);
}

const struct rpc_peer *rpc_call_peer(const struct rpc_call *call)
{
	return server_conn_peer(call->rc->sc);
}

int rpc_call_take_fd(struct rpc_call *call)
{
	int fd = call->fd;
	call->fd = -1;
	return fd;
}

size_t rpc_call_output_pending(const struct rpc_call *call)
{
	return server_conn_output_pending(call->rc->sc);
}

void rpc_reply(struct rpc_call *call, json_object *result)
{
	json_object *answer = NULL;

	if (call->has_id)
		answer = jsonrpc_response_new(call->id, result);
	else
		json_object_put(result);
	rpc_call_end(call, answer);
}

void rpc_reply_error(struct rpc_call *call, int code, const char *message, json_object *data)
{
	json_object *answer = NULL;

	if (call->has_id)
		answer = jsonrpc_error_response_new(call->id, code, message, data);
	else
		json_object_put(data);
	log_debug("%s from pid %d: error %d: %s", call->method->name, (int)rpc_call_peer(call)->pid,
	          code, message ? message : "");
	rpc_call_end(call, answer);
}

void rpc_reply_error_hint(struct rpc_call *call, int code, const char *message, const char *hint)
{
	json_object *data = NULL;

	if (hint != NULL) {
		data = json_object_new_object();
		json_object_object_add(data, "hint", json_object_new_string(hint));
	}
	rpc_reply_error(call, code, message, data);
}

bool rpc_notify(struct rpc_call *call, const char *method, json_object *params)
{
	json_object *note;
	bool ok;

	if (!server_conn_alive(call->rc->sc)) {
		json_object_put(params);
		return false;
	}
	note = jsonrpc_notification_new(method, params);
	ok = server_conn_send(call->rc->sc, note);
	json_object_put(note);
	return ok;
}

bool rpc_notify_text(struct rpc_call *call, const char *text, size_t len)
{
	if (!server_conn_alive(call->rc->sc))
		return false;
	return server_conn_send_text(call->rc->sc, text, len);
}

void rpc_call_set_close_cb(struct rpc_call *call, void (*cb)(struct rpc_call *call, void *arg),
                           void *arg)
{
	call->close_cb = cb;
	call->close_arg = arg;
}

static void rpc_conn_closed(struct rpc_conn *rc)
{
	struct rpc_call *call;

	/*
	 * A callback may end any call, its own or others, so look for the next one
	 * afresh each time instead of holding an iterator across it.
	 */
	for (;;) {
		TAILQ_FOREACH(call, &rc->calls, entry)
		if (call->close_cb != NULL && !call->close_ran)
			break;
		if (call == NULL)
			break;
		call->close_ran = true;
		call->close_cb(call, call->close_arg);
	}
}

/* Runs one valid entry; fd (owned, may be -1) goes to its call. */
const char *rpc_params_unknown(json_object *params, const char *const *known)
{
	json_object_object_foreach(params, key, val)
	{
		(void)val;
		bool ok = false;
		for (size_t i = 0; known[i] && !ok; i++)
			ok = strcmp(known[i], key) == 0;
		if (!ok)
			return key;
	}
	return NULL;
}

static void rpc_dispatch(struct rpc_conn *rc, const struct jsonrpc_request *r, struct rpc_batch *b,
                         size_t slot, int fd)
{
	const struct rpc_method *m = rpc_method_find(r->method);
	struct rpc_call *call;

	if (m == NULL) {
		if (fd >= 0)
			close(fd);
		rpc_deliver(rc, b, slot,
		            r->has_id ? jsonrpc_error_response_new(r->id, JSONRPC_METHOD_NOT_FOUND,
		                                                   NULL, NULL)
		                      : NULL);
		return;
	}
	call = xcalloc(1, sizeof(*call));
	call->rc = rc;
	call->method = m;
	call->batch = b;
	call->slot = slot;
	call->id = json_object_get(r->id);
	call->has_id = r->has_id;
	call->fd = fd;
	TAILQ_INSERT_TAIL(&rc->calls, call, entry);
	rc->ncalls++;
	server_conn_ref(rc->sc);
	log_debug("%s from pid %d uid %u", m->name, (int)rpc_call_peer(call)->pid,
	          (unsigned)rpc_call_peer(call)->uid);
	if (m->params != NULL && r->params != NULL) {
		const char *bad = NULL;
		char *msg = NULL;
		if (!json_object_is_type(r->params, json_type_object))
			msg = xstrdup("params must be an object");
		else if ((bad = rpc_params_unknown(r->params, m->params)) != NULL)
			msg = xasprintf("unknown parameter '%.64s'", bad);
		if (msg != NULL) {
			rpc_reply_error(call, JSONRPC_INVALID_PARAMS, msg, NULL);
			free(msg);
			return;
		}
	}
	m->handler(call, r->params);
}

static void rpc_conn_input(struct rpc_conn *rc, const char *line, size_t len, int fd)
{
	struct jsonrpc_message msg;
	struct rpc_batch *b;

	jsonrpc_parse(line, len, &msg);
	if (msg.error != NULL) {
		server_conn_send(rc->sc, msg.error);
		goto out;
	}
	if (msg.count == 0)
		goto out;
	if (!msg.batch) {
		if (msg.requests[0].error != NULL) {
			server_conn_send(rc->sc, msg.requests[0].error);
			goto out;
		}
		rpc_dispatch(rc, &msg.requests[0], NULL, 0, fd);
		fd = -1;
		goto out;
	}
	b = xcalloc(1, sizeof(*b));
	b->rc = rc;
	b->count = msg.count;
	b->answers = xcalloc(msg.count, sizeof(*b->answers));
	/* The extra count keeps synchronous answers from finishing the batch early. */
	b->remaining = msg.count + 1;
	server_conn_ref(rc->sc);
	for (size_t i = 0; i < msg.count; i++) {
		struct jsonrpc_request *r = &msg.requests[i];
		if (r->error != NULL) {
			rpc_deliver(rc, b, i, json_object_get(r->error));
			continue;
		}
		/* The passed fd goes with the batch's first call. */
		rpc_dispatch(rc, r, b, i, fd);
		fd = -1;
	}
	rpc_batch_settle(b);
out:
	if (fd >= 0)
		close(fd);
	jsonrpc_message_clear(&msg);
}

static void rpc_conn_reject(struct rpc_conn *rc, int code, const char *detail)
{
	json_object *data = json_object_new_object();
	json_object *err;

	json_object_object_add(data, "detail", json_object_new_string(detail));
	err = jsonrpc_error_response_new(NULL, code, NULL, data);
	server_conn_send(rc->sc, err);
	json_object_put(err);
}

static void *rpc_ops_conn_new(struct server_conn *sc)
{
	return rpc_conn_new(sc);
}

static void rpc_ops_conn_free(void *rc)
{
	rpc_conn_free(rc);
}

static void rpc_ops_input(void *rc, const char *line, size_t len, int fd)
{
	rpc_conn_input(rc, line, len, fd);
}

static void rpc_ops_reject(void *rc, int code, const char *detail)
{
	rpc_conn_reject(rc, code, detail);
}

static void rpc_ops_closed(void *rc)
{
	rpc_conn_closed(rc);
}

static size_t rpc_ops_pending(const void *rc)
{
	return rpc_conn_pending(rc);
}

const struct server_ops rpc_server_ops = {
    .conn_new = rpc_ops_conn_new,
    .conn_free = rpc_ops_conn_free,
    .input = rpc_ops_input,
    .reject = rpc_ops_reject,
    .closed = rpc_ops_closed,
    .pending = rpc_ops_pending,
};
