/*
 * The JSON-RPC 2.0 rules, applied to one line at a time.  json-c does the JSON
 * syntax in strict mode; everything the spec adds (what a request is, when an
 * answer is owed, which id to echo) lives here.
 */
#include "jsonrpc.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "util.h"

const char *jsonrpc_error_message(int code)
{
	switch (code) {
	case JSONRPC_PARSE_ERROR:
		return "Parse error";
	case JSONRPC_INVALID_REQUEST:
		return "Invalid Request";
	case JSONRPC_METHOD_NOT_FOUND:
		return "Method not found";
	case JSONRPC_INVALID_PARAMS:
		return "Invalid params";
	case JSONRPC_INTERNAL_ERROR:
		return "Internal error";
	default:
		return NULL;
	}
}

static bool jsonrpc_is_ws(char c)
{
	return c == ' ' || c == '\t' || c == '\r' || c == '\n';
}

bool jsonrpc_decode(const char *text, size_t len, json_object **out, const char **why)
{
	json_tokener *tok;
	json_object *o;
	enum json_tokener_error jerr;
	size_t end;
	bool ok = false;

	*out = NULL;
	*why = "empty message";
	/* json-c lets raw control characters through inside strings; RFC 8259 does not. */
	for (size_t i = 0; i < len; i++) {
		unsigned char c = (unsigned char)text[i];
		if (c < 0x20 && c != '\t' && c != '\r' && c != '\n') {
			*why = "control character in JSON text";
			return false;
		}
	}
	if (len > INT32_MAX - 1) {
		*why = "message too long";
		return false;
	}
	tok = json_tokener_new();
	json_tokener_set_flags(tok, JSON_TOKENER_STRICT);
	o = json_tokener_parse_ex(tok, text, (int)len);
	jerr = json_tokener_get_error(tok);
	end = json_tokener_get_parse_end(tok);
	if (jerr == json_tokener_continue) {
		/* A bare number or literal needs the end of input to be complete. */
		json_object_put(o);
		o = json_tokener_parse_ex(tok, "", 1);
		jerr = json_tokener_get_error(tok);
	}
	if (jerr != json_tokener_success) {
		*why = jerr == json_tokener_continue ? "incomplete JSON text"
		                                     : json_tokener_error_desc(jerr);
		json_object_put(o);
		goto out;
	}
	for (; end < len; end++) {
		if (!jsonrpc_is_ws(text[end])) {
			*why = "trailing characters after the JSON text";
			json_object_put(o);
			goto out;
		}
	}
	*out = o;
	*why = NULL;
	ok = true;
out:
	json_tokener_free(tok);
	return ok;
}

bool jsonrpc_id_valid(json_object *id)
{
	switch (json_object_get_type(id)) {
	case json_type_null:
	case json_type_string:
	case json_type_int:
	case json_type_double:
		return true;
	default:
		return false;
	}
}

static json_object *jsonrpc_envelope(void)
{
	json_object *o = json_object_new_object();
	json_object_object_add(o, "jsonrpc", json_object_new_string("2.0"));
	return o;
}

json_object *jsonrpc_response_new(json_object *id, json_object *result)
{
	json_object *o = jsonrpc_envelope();
	json_object_object_add(o, "result", result);
	json_object_object_add(o, "id", json_object_get(id));
	return o;
}

json_object *jsonrpc_error_response_new(json_object *id, int code, const char *message,
                                        json_object *data)
{
	json_object *o = jsonrpc_envelope();
	json_object *err = json_object_new_object();

	if (message == NULL)
		message = jsonrpc_error_message(code);
	json_object_object_add(err, "code", json_object_new_int(code));
	json_object_object_add(err, "message", json_object_new_string(message ? message : "Error"));
	if (data != NULL)
		json_object_object_add(err, "data", data);
	json_object_object_add(o, "error", err);
	json_object_object_add(o, "id", json_object_get(id));
	return o;
}

json_object *jsonrpc_notification_new(const char *method, json_object *params)
{
	json_object *o = jsonrpc_envelope();
	json_object_object_add(o, "method", json_object_new_string(method));
	if (params != NULL)
		json_object_object_add(o, "params", params);
	return o;
}

json_object *jsonrpc_request_new(json_object *id, const char *method, json_object *params)
{
	json_object *o = jsonrpc_notification_new(method, params);
	json_object_object_add(o, "id", json_object_get(id));
	return o;
}

const char *jsonrpc_to_string(json_object *o, size_t *len)
{
	return json_object_to_json_string_length(
	    o, JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE, len);
}

static json_object *jsonrpc_detail(const char *detail)
{
	json_object *d = json_object_new_object();
	json_object_object_add(d, "detail", json_object_new_string(detail));
	return d;
}

static json_object *jsonrpc_invalid(json_object *id, const char *detail)
{
	return jsonrpc_error_response_new(id, JSONRPC_INVALID_REQUEST, NULL,
	                                  jsonrpc_detail(detail));
}

/* Fills r from one request object; an invalid one gets its error response. */
static void jsonrpc_parse_one(json_object *o, struct jsonrpc_request *r)
{
	json_object *v, *id = NULL;

	memset(r, 0, sizeof(*r));
	if (!json_object_is_type(o, json_type_object)) {
		r->error = jsonrpc_invalid(NULL, "a request must be a JSON object");
		return;
	}
	/* Echo the id whenever it could be read; the spec wants null only when it could not. */
	if (json_object_object_get_ex(o, "id", &id) && !jsonrpc_id_valid(id)) {
		r->error = jsonrpc_invalid(NULL, "id must be a string, a number or null");
		return;
	}
	if (!json_object_object_get_ex(o, "jsonrpc", &v) ||
	    !json_object_is_type(v, json_type_string) ||
	    strcmp(json_object_get_string(v), "2.0") != 0) {
		r->error = jsonrpc_invalid(id, "member \"jsonrpc\" must be exactly \"2.0\"");
		return;
	}
	if (!json_object_object_get_ex(o, "method", &v) ||
	    !json_object_is_type(v, json_type_string)) {
		r->error = jsonrpc_invalid(id, "member \"method\" must be a string");
		return;
	}
	r->method = json_object_get_string(v);
	if (json_object_object_get_ex(o, "params", &v)) {
		if (!json_object_is_type(v, json_type_object) &&
		    !json_object_is_type(v, json_type_array)) {
			r->method = NULL;
			r->error =
			    jsonrpc_invalid(id, "member \"params\" must be an object or an array");
			return;
		}
		r->params = v;
	}
	r->has_id = json_object_object_get_ex(o, "id", &r->id);
}

void jsonrpc_parse(const char *line, size_t len, struct jsonrpc_message *out)
{
	const char *why;
	size_t i;

	memset(out, 0, sizeof(*out));
	for (i = 0; i < len && jsonrpc_is_ws(line[i]); i++)
		;
	if (i == len)
		return;
	if (!jsonrpc_decode(line, len, &out->root, &why)) {
		out->error = jsonrpc_error_response_new(NULL, JSONRPC_PARSE_ERROR, NULL,
		                                        jsonrpc_detail(why));
		return;
	}
	if (json_object_is_type(out->root, json_type_array)) {
		size_t n = json_object_array_length(out->root);
		if (n == 0) {
			out->error = jsonrpc_invalid(NULL, "a batch must not be empty");
			return;
		}
		out->batch = true;
		out->count = n;
		out->requests = xcalloc(n, sizeof(*out->requests));
		for (i = 0; i < n; i++)
			jsonrpc_parse_one(json_object_array_get_idx(out->root, i),
			                  &out->requests[i]);
		return;
	}
	out->count = 1;
	out->requests = xcalloc(1, sizeof(*out->requests));
	jsonrpc_parse_one(out->root, &out->requests[0]);
}

void jsonrpc_message_clear(struct jsonrpc_message *m)
{
	for (size_t i = 0; i < m->count; i++)
		json_object_put(m->requests[i].error);
	free(m->requests);
	json_object_put(m->error);
	json_object_put(m->root);
	memset(m, 0, sizeof(*m));
}

enum jsonrpc_incoming_type jsonrpc_classify(json_object *msg, struct jsonrpc_incoming *out)
{
	json_object *v, *err;

	memset(out, 0, sizeof(*out));
	if (!json_object_is_type(msg, json_type_object))
		return JSONRPC_IN_INVALID;
	if (!json_object_object_get_ex(msg, "jsonrpc", &v) ||
	    !json_object_is_type(v, json_type_string) ||
	    strcmp(json_object_get_string(v), "2.0") != 0)
		return JSONRPC_IN_INVALID;
	if (!json_object_object_get_ex(msg, "id", &out->id)) {
		if (!json_object_object_get_ex(msg, "method", &v) ||
		    !json_object_is_type(v, json_type_string))
			return JSONRPC_IN_INVALID;
		out->method = json_object_get_string(v);
		json_object_object_get_ex(msg, "params", &out->params);
		return out->type = JSONRPC_IN_NOTIFICATION;
	}
	if (!jsonrpc_id_valid(out->id))
		return JSONRPC_IN_INVALID;
	if (json_object_object_get_ex(msg, "result", &out->result))
		return out->type = JSONRPC_IN_RESULT;
	if (!json_object_object_get_ex(msg, "error", &err) ||
	    !json_object_is_type(err, json_type_object) ||
	    !json_object_object_get_ex(err, "code", &v) || !json_object_is_type(v, json_type_int))
		return JSONRPC_IN_INVALID;
	out->code = json_object_get_int(v);
	out->message = "";
	if (json_object_object_get_ex(err, "message", &v) &&
	    json_object_is_type(v, json_type_string))
		out->message = json_object_get_string(v);
	json_object_object_get_ex(err, "data", &out->data);
	return out->type = JSONRPC_IN_ERROR;
}
