/*
 * The daemon.* methods: what the daemon is, where it listens and stores, which
 * services it talks to and how busy it is.  Never the API key: only whether one is
 * configured.
 */
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include "config.h"
#include "daemon.h"
#include "jobs.h"
#include "jsonrpc.h"
#include "methods.h"
#include "metrics.h"
#include "protocol.h"
#include "server.h"

static json_object *methods_daemon_queue(struct daemon *d, char **err)
{
	int64_t n[JOB_NSTATES], total;

	if (d->jobs == NULL)
		return json_object_new_object();
	if (jobs_counts(d->jobs, n, &total, err) < 0)
		return NULL;
	json_object *q = json_object_new_object();
	for (int s = 0; s < JOB_NSTATES; s++)
		json_object_object_add(q, job_state_name((enum job_state)s),
		                       json_object_new_int64(n[s]));
	json_object_object_add(q, "total", json_object_new_int64(total));
	return q;
}

static void methods_daemon_info(struct rpc_call *call, json_object *params)
{
	struct daemon *d = rpc_call_daemon(call);
	const struct config *cfg = d->config;
	const struct rpc_peer *peer = rpc_call_peer(call);
	json_object *r, *backends, *remote, *local, *caller, *queue;
	char *err = NULL, buf[32];
	double uptime;
	(void)params;

	queue = methods_daemon_queue(d, &err);
	if (queue == NULL) {
		rpc_reply_error_hint(call, SB_ERR_STORAGE, err,
		                     "check the daemon's log and its state directory");
		free(err);
		return;
	}
	r = json_object_new_object();
	json_object_object_add(r, "version", json_object_new_string(SNAPBUILD_VERSION));
	json_object_object_add(r, "protocol_version",
	                       json_object_new_int(SNAPBUILD_PROTOCOL_VERSION));
	json_object_object_add(r, "pid", json_object_new_int((int)getpid()));
	json_object_object_add(r, "socket", json_object_new_string(server_socket_path(d->server)));
	json_object_object_add(r, "socket_activated",
	                       json_object_new_boolean(server_socket_activated(d->server)));
	json_object_object_add(r, "state_dir", json_object_new_string(cfg->state_dir));
	json_object_object_add(r, "api_url", json_object_new_string(cfg->base_url));
	json_object_object_add(r, "builder_url", json_object_new_string(cfg->builder_url));
	json_object_object_add(r, "api_key_configured",
	                       json_object_new_boolean(cfg->api_key != NULL));

	backends = json_object_new_object();
	json_object_object_add(backends, "default",
	                       json_object_new_string(cfg->local_build ? "local" : "remote"));
	remote = json_object_new_object();
	json_object_object_add(remote, "architecture", json_object_new_string(cfg->remote_arch));
	json_object_object_add(remote, "builder_url", json_object_new_string(cfg->builder_url));
	json_object_object_add(backends, "remote", remote);
	local = json_object_new_object();
	json_object_object_add(local, "engine_preference",
	                       json_object_new_string(cfg->local_engine));
	const char *engine = NULL, *engine_error = NULL;
	if (d->jobs && jobs_local_engine(d->jobs, &engine, &engine_error))
		json_object_object_add(local, "engine", json_object_new_string(engine));
	else
		json_object_object_add(local, "engine", NULL);
	json_object_object_add(local, "available", json_object_new_boolean(engine != NULL));
	if (engine == NULL && engine_error)
		json_object_object_add(local, "error", json_object_new_string(engine_error));
	json_object_object_add(backends, "local", local);
	json_object_object_add(r, "backends", backends);

	json_object_object_add(r, "max_concurrent", json_object_new_int(cfg->max_concurrent));
	json_object_object_add(r, "queue", queue);
	uptime = daemon_uptime(d);
	snprintf(buf, sizeof(buf), "%.3f", uptime);
	json_object_object_add(r, "uptime", json_object_new_double_s(uptime, buf));

	caller = json_object_new_object();
	json_object_object_add(caller, "uid", json_object_new_int64(peer->uid));
	json_object_object_add(caller, "gid", json_object_new_int64(peer->gid));
	json_object_object_add(caller, "pid", json_object_new_int64(peer->pid));
	json_object_object_add(r, "caller", caller);
	json_object_object_add(
	    r, "metrics_listen",
	    d->metrics_http ? json_object_new_string(metrics_http_address(d->metrics_http)) : NULL);
	rpc_reply(call, r);
}

char *methods_daemon_metrics_text(struct daemon *d, char **err)
{
	int64_t n[JOB_NSTATES] = {0}, total;
	const char *names[JOB_NSTATES];

	if (d->jobs != NULL && jobs_counts(d->jobs, n, &total, err) < 0)
		return NULL;
	for (int s = 0; s < JOB_NSTATES; s++)
		names[s] = job_state_name((enum job_state)s);
	struct metrics_gauges g = {
	    .state_names = names,
	    .state_counts = n,
	    .nstates = JOB_NSTATES,
	    .connections = d->server ? server_conn_count(d->server) : 0,
	};
	return metrics_render(&g);
}

static void methods_daemon_metrics(struct rpc_call *call, json_object *params)
{
	char *err = NULL, *text;
	(void)params;

	text = methods_daemon_metrics_text(rpc_call_daemon(call), &err);
	if (text == NULL) {
		rpc_reply_error_hint(call, SB_ERR_STORAGE, err,
		                     "check the daemon's log and its state directory");
		free(err);
		return;
	}
	json_object *r = json_object_new_object();
	json_object_object_add(r, "content_type", json_object_new_string(METRICS_CONTENT_TYPE));
	json_object_object_add(r, "text", json_object_new_string(text));
	free(text);
	rpc_reply(call, r);
}

static void methods_daemon_version(struct rpc_call *call, json_object *params)
{
	json_object *r = json_object_new_object();
	(void)params;
	json_object_object_add(r, "version", json_object_new_string(SNAPBUILD_VERSION));
	json_object_object_add(r, "protocol_version",
	                       json_object_new_int(SNAPBUILD_PROTOCOL_VERSION));
	rpc_reply(call, r);
}

const struct rpc_method methods_daemon[] = {
    /* Any params are ignored, as the first protocol documented. */
    {"daemon.info", methods_daemon_info, NULL},
    {"daemon.version", methods_daemon_version, NULL},
    {"daemon.metrics", methods_daemon_metrics, NULL},
    {NULL, NULL, NULL},
};
