/*
 * /_sim/: what tests use to look inside the simulator and steer it.  These routes
 * need no Authorization header (they are not part of Together's API) and are
 * neither delayed nor failed by faults.  The routes are listed in README.md.
 */
#include "sim.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "util.h"

static bool sim_seg(const struct sim_req *r, size_t i, const char *s)
{
	return i < r->nseg && strcmp(r->seg[i], s) == 0;
}

static void sim_introspect_builds(struct sim_req *r)
{
	struct json_object *arr = json_object_new_array();
	for (size_t i = 0; i < r->sim->nbuilds; i++)
		json_object_array_add(arr, sim_build_json(r->sim->builds[i], true));
	sim_reply_json(r, 200, arr);
}

static void sim_introspect_context(struct sim_req *r, const struct sim_build *b)
{
	const char *path = sim_build_context_path(b);
	FILE *f = fopen(path, "rb");
	char *data = NULL;
	size_t len = 0, cap = 0;
	if (f == NULL) {
		char *msg = xasprintf("cannot read %s: %s", path, strerror(errno));
		sim_reply_error(r, 500, "internal", msg);
		free(msg);
		return;
	}
	for (;;) {
		if (len == cap) {
			cap = cap ? cap * 2 : 65536;
			data = xrealloc(data, cap);
		}
		size_t n = fread(data + len, 1, cap - len, f);
		if (n == 0)
			break;
		len += n;
	}
	fclose(f);
	sim_reply_raw(r, 200, "application/gzip", data, len);
	free(data);
}

static void sim_introspect_build(struct sim_req *r)
{
	struct sim_build *b = sim_builds_find(r->sim, r->seg[2]);
	if (b == NULL) {
		sim_reply_error(r, 404, "not_found", "build not found");
		return;
	}
	if (r->nseg == 3 && r->method == EVHTTP_REQ_GET) {
		sim_reply_json(r, 200, sim_build_json(b, true));
	} else if (r->nseg == 4 && sim_seg(r, 3, "release") && r->method == EVHTTP_REQ_POST) {
		struct json_object *o = sim_build_json(b, false);
		json_object_object_add(o, "was_held",
		                       json_object_new_boolean(sim_build_release(b)));
		sim_reply_json(r, 200, o);
	} else if (r->nseg == 4 && sim_seg(r, 3, "log") && r->method == EVHTTP_REQ_GET) {
		sim_reply_json(r, 200, sim_build_log_json(b));
	} else if (r->nseg == 4 && sim_seg(r, 3, "context") && r->method == EVHTTP_REQ_GET) {
		sim_introspect_context(r, b);
	} else {
		sim_reply_error(r, 404, "not_found", "no such /_sim/ route");
	}
}

static void sim_introspect_faults(struct sim_req *r)
{
	struct sim_faults *f = &r->sim->faults;
	if (r->method == EVHTTP_REQ_GET) {
		sim_reply_json(r, 200, sim_faults_json(f));
	} else if (r->method == EVHTTP_REQ_DELETE) {
		sim_faults_clear(f);
		sim_reply_json(r, 200, sim_faults_json(f));
	} else if (r->method == EVHTTP_REQ_POST) {
		struct json_object *body = sim_req_json_body(r);
		char *err = NULL;
		if (body == NULL)
			return;
		if (sim_faults_apply(f, body, &err) < 0)
			sim_reply_bad_param(r, "faults", "invalid", err);
		else
			sim_reply_json(r, 200, sim_faults_json(f));
		free(err);
		json_object_put(body);
	} else {
		sim_reply_error(r, 405, "method_not_allowed", "method not allowed on this route");
	}
}

void sim_introspect_route(struct sim_req *r)
{
	struct sim *sim = r->sim;
	bool get = r->method == EVHTTP_REQ_GET;
	if (r->nseg == 2 && sim_seg(r, 1, "health") && get) {
		struct json_object *o = json_object_new_object();
		json_object_object_add(o, "ok", json_object_new_boolean(1));
		json_object_object_add(o, "version", json_object_new_string(SNAPBUILD_VERSION));
		sim_reply_json(r, 200, o);
	} else if (r->nseg == 2 && sim_seg(r, 1, "requests") && get) {
		sim_reply_json(r, 200, sim_reqlog_json(sim));
	} else if (r->nseg == 2 && sim_seg(r, 1, "requests") && r->method == EVHTTP_REQ_DELETE) {
		sim_reqlog_clear(sim);
		sim_reply_empty(r, 204);
	} else if (r->nseg == 2 && sim_seg(r, 1, "builds") && get) {
		sim_introspect_builds(r);
	} else if (r->nseg >= 3 && sim_seg(r, 1, "builds")) {
		sim_introspect_build(r);
	} else if (r->nseg == 2 && sim_seg(r, 1, "deletes") && get) {
		sim_reply_json(r, 200, json_object_get(sim->deletes));
	} else if (r->nseg == 2 && sim_seg(r, 1, "snapshots") && get) {
		sim_reply_json(r, 200, sim_snapshots_introspect(sim));
	} else if (r->nseg == 2 && sim_seg(r, 1, "aliases") && get) {
		sim_reply_json(r, 200, sim_aliases_introspect(sim));
	} else if (r->nseg == 2 && sim_seg(r, 1, "faults")) {
		sim_introspect_faults(r);
	} else {
		sim_reply_error(r, 404, "not_found", "no such /_sim/ route");
	}
}
