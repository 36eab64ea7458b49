/*
 * Parameter checks shared by every method family (see params.h).  Keys echoed in
 * messages are cut to 64 characters: a hostile client does not get its megabyte key
 * back in the error.
 */
#include "params.h"

#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include "protocol.h"
#include "rpc.h"
#include "util.h"

bool params_invalid(struct rpc_call *call, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	char *msg = xvasprintf(fmt, ap);
	va_end(ap);
	rpc_reply_error(call, JSONRPC_INVALID_PARAMS, msg, NULL);
	free(msg);
	return false;
}

bool params_check(struct rpc_call *call, json_object *params, const char *const *known)
{
	if (params == NULL)
		return true;
	if (!json_object_is_type(params, json_type_object))
		return params_invalid(call, "params must be an object");
	const char *bad = rpc_params_unknown(params, known);
	return bad == NULL || params_invalid(call, "unknown parameter '%.64s'", bad);
}

/* The member, or NULL when absent or JSON null. */
static json_object *params_get(json_object *params, const char *key)
{
	json_object *v = NULL;
	if (params == NULL || !json_object_object_get_ex(params, key, &v))
		return NULL;
	return v;
}

bool params_string(struct rpc_call *call, json_object *params, const char *key, const char **out)
{
	json_object *v = params_get(params, key);
	*out = NULL;
	if (v == NULL)
		return true;
	if (!json_object_is_type(v, json_type_string))
		return params_invalid(call, "'%s' must be a string", key);
	*out = json_object_get_string(v);
	return true;
}

bool params_required_string(struct rpc_call *call, json_object *params, const char *key,
                            const char **out)
{
	if (!params_string(call, params, key, out))
		return false;
	if (*out == NULL || **out == '\0')
		return params_invalid(call, "'%s' is required", key);
	return true;
}

bool params_int(struct rpc_call *call, json_object *params, const char *key, int64_t min,
                int64_t max, int64_t *out)
{
	json_object *v = params_get(params, key);
	if (v == NULL)
		return true;
	if (!json_object_is_type(v, json_type_int))
		return params_invalid(call, "'%s' must be an integer", key);
	int64_t n = json_object_get_int64(v);
	if (n < min || n > max)
		return params_invalid(call, "'%s' must be between %lld and %lld", key,
		                      (long long)min, (long long)max);
	*out = n;
	return true;
}

bool params_bool(struct rpc_call *call, json_object *params, const char *key, bool *out)
{
	json_object *v = params_get(params, key);
	if (v == NULL)
		return true;
	if (!json_object_is_type(v, json_type_boolean))
		return params_invalid(call, "'%s' must be true or false", key);
	*out = json_object_get_boolean(v);
	return true;
}

bool params_string_map(struct rpc_call *call, json_object *params, const char *key,
                       const char *reserved, json_object **out)
{
	json_object *v = params_get(params, key);
	*out = NULL;
	if (v == NULL)
		return true;
	if (!json_object_is_type(v, json_type_object))
		return params_invalid(call, "'%s' must be an object of strings", key);
	json_object_object_foreach(v, k, val)
	{
		if (*k == '\0')
			return params_invalid(call, "'%s' has an empty key", key);
		if (!json_object_is_type(val, json_type_string))
			return params_invalid(call, "'%s.%.64s' must be a string", key, k);
		if (reserved && strcmp(k, reserved) == 0)
			return params_invalid(call, "'%s.%s' is reserved for the daemon", key, k);
	}
	*out = v;
	return true;
}
