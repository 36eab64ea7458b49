/*
 * The method tables, one per family (methods-<family>.c), each NULL-terminated.
 * rpc.c gathers them into one list; adding a family is one line there and one here.
 */
#ifndef SNAPBUILD_METHODS_H
#define SNAPBUILD_METHODS_H

#include "rpc.h"

extern const struct rpc_method methods_daemon[];
extern const struct rpc_method methods_build[];
extern const struct rpc_method methods_context[];
extern const struct rpc_method methods_snapshot[];

struct daemon;
struct store_job;
/* True when the daemon has an API key; otherwise replies with an error saying how to
 * give it one (every build and snapshot call needs the key). */
bool methods_have_key(struct rpc_call *call);

/* A job as the build.* methods show it (see PROTOCOL.md, "Jobs"). */
json_object *methods_job_json(struct daemon *d, const struct store_job *j);

/* daemon.metrics' text (OpenMetrics), also served at GET /metrics; NULL with *err. */
char *methods_daemon_metrics_text(struct daemon *d, char **err);

#endif
