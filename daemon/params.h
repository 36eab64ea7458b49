/*
 * Checking a method's params as JSON-RPC 2.0 asks: each helper either fills its
 * output or answers the call with -32602 naming the field, and returns false then,
 * so a method reads as a chain of `if (!params_...) return;`.
 */
#ifndef SNAPBUILD_PARAMS_H
#define SNAPBUILD_PARAMS_H

#include <json-c/json.h>
#include <stdbool.h>
#include <stdint.h>

struct rpc_call;

/* Answers -32602 with the formatted message; always false. */
bool params_invalid(struct rpc_call *call, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
/* params absent, or an object holding only the known keys (NULL-terminated list).
 * Top-level params are checked by dispatch from the method table (rpc.h); this is for
 * objects nested in them. */
bool params_check(struct rpc_call *call, json_object *params, const char *const *known);
/* An optional string: *out NULL when absent or null. */
bool params_string(struct rpc_call *call, json_object *params, const char *key, const char **out);
/* A string that must be there and not be empty. */
bool params_required_string(struct rpc_call *call, json_object *params, const char *key,
                            const char **out);
/* An optional integer in [min, max]; *out untouched when absent. */
bool params_int(struct rpc_call *call, json_object *params, const char *key, int64_t min,
                int64_t max, int64_t *out);
/* An optional boolean; *out untouched when absent. */
bool params_bool(struct rpc_call *call, json_object *params, const char *key, bool *out);
/* An optional object of strings with non-empty keys, none of them `reserved` (may be
 * NULL); *out borrowed from params, NULL when absent. */
bool params_string_map(struct rpc_call *call, json_object *params, const char *key,
                       const char *reserved, json_object **out);

#endif
