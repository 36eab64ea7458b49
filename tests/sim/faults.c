/*
 * Fault settings: parsed from the JSON body of POST /_sim/faults (or --faults at
 * start), shown by GET /_sim/faults in the same shape, consumed by the handlers.
 * A body is applied all or nothing: it is parsed into a copy that replaces the live
 * settings only when every key is valid.  The keys are documented in README.md.
 */
#include "sim.h"

#include <limits.h>
#include <strings.h>
#include <string.h>

#include "util.h"

void sim_faults_init(struct sim_faults *f)
{
	memset(f, 0, sizeof(*f));
	f->submit_fail_status = 503;
	f->submit_fail_retry_after = -1;
	f->logs_drop_after = -1;
	f->logs_stall_after = 0;
	f->latency_ms = -1;
	f->log_interval_ms = -1;
	f->log_lines = -1;
}

static void sim_faults_free_rules(struct sim_faults *f)
{
	for (size_t i = 0; i < f->nrules; i++) {
		free(f->rules[i].method);
		free(f->rules[i].path);
	}
	free(f->rules);
	f->rules = NULL;
	f->nrules = 0;
}

void sim_faults_clear(struct sim_faults *f)
{
	free(f->build_fail);
	sim_faults_free_rules(f);
	sim_faults_init(f);
}

static bool sim_is_off(struct json_object *v)
{
	return v == NULL ||
	       (json_object_is_type(v, json_type_boolean) && !json_object_get_boolean(v));
}

/* An integer in [min, max]; -1 and a message otherwise. */
static int sim_get_int(struct json_object *v, const char *key, long min, long max, long *out,
                       char **err)
{
	if (!json_object_is_type(v, json_type_int)) {
		*err = xasprintf("fault \"%s\" must be an integer", key);
		return -1;
	}
	int64_t n = json_object_get_int64(v);
	if (n < min || n > max) {
		*err = xasprintf("fault \"%s\" must be between %ld and %ld", key, min, max);
		return -1;
	}
	*out = (long)n;
	return 0;
}

/* Optional integer member of an object. */
static int sim_get_member(struct json_object *obj, const char *parent, const char *key, long min,
                          long max, long *out, char **err)
{
	struct json_object *v;
	if (!json_object_object_get_ex(obj, key, &v) || v == NULL)
		return 0;
	char *name = xasprintf("%s.%s", parent, key);
	int rc = sim_get_int(v, name, min, max, out, err);
	free(name);
	return rc < 0 ? -1 : 1;
}

static int sim_check_members(struct json_object *obj, const char *parent,
                             const char *const *allowed, char **err)
{
	json_object_object_foreach(obj, k, v)
	{
		(void)v;
		bool ok = false;
		for (size_t i = 0; allowed[i] != NULL; i++)
			if (strcmp(k, allowed[i]) == 0)
				ok = true;
		if (!ok) {
			*err = xasprintf("unknown member \"%s\" in fault \"%s\"", k, parent);
			return -1;
		}
	}
	return 0;
}

static int sim_faults_submit(struct sim_faults *f, struct json_object *v, char **err)
{
	static const char *const allowed[] = {"count", "status", "retry_after", NULL};
	long count = 1, status = 503, retry = -1;
	if (sim_is_off(v)) {
		f->submit_fail_count = 0;
		return 0;
	}
	if (json_object_is_type(v, json_type_int)) {
		if (sim_get_int(v, "submit_fail", 0, INT_MAX, &count, err) < 0)
			return -1;
	} else if (json_object_is_type(v, json_type_object)) {
		if (sim_check_members(v, "submit_fail", allowed, err) < 0 ||
		    sim_get_member(v, "submit_fail", "count", 0, INT_MAX, &count, err) < 0 ||
		    sim_get_member(v, "submit_fail", "status", 400, 599, &status, err) < 0 ||
		    sim_get_member(v, "submit_fail", "retry_after", 0, 86400, &retry, err) < 0)
			return -1;
	} else {
		*err = xstrdup("fault \"submit_fail\" must be an object {count, status, "
		               "retry_after}, an integer or null");
		return -1;
	}
	f->submit_fail_count = (int)count;
	f->submit_fail_status = (int)status;
	f->submit_fail_retry_after = (int)retry;
	return 0;
}

static int sim_faults_drop(struct sim_faults *f, struct json_object *v, char **err)
{
	static const char *const allowed[] = {"events", "count", NULL};
	long events = 0, count = 1;
	if (sim_is_off(v)) {
		f->logs_drop_count = 0;
		f->logs_drop_after = -1;
		return 0;
	}
	if (json_object_is_type(v, json_type_int)) {
		if (sim_get_int(v, "logs_drop_after", 0, INT_MAX, &events, err) < 0)
			return -1;
	} else if (json_object_is_type(v, json_type_object)) {
		if (sim_check_members(v, "logs_drop_after", allowed, err) < 0 ||
		    sim_get_member(v, "logs_drop_after", "events", 0, INT_MAX, &events, err) < 0 ||
		    sim_get_member(v, "logs_drop_after", "count", 0, INT_MAX, &count, err) < 0)
			return -1;
	} else {
		*err = xstrdup("fault \"logs_drop_after\" must be an integer, an object {events, "
		               "count} or null");
		return -1;
	}
	f->logs_drop_after = (int)events;
	f->logs_drop_count = (int)count;
	return 0;
}

static int sim_faults_stall(struct sim_faults *f, const char *key, struct json_object *v,
                            char **err)
{
	static const char *const allowed[] = {"ms", "after", "count", NULL};
	long ms = 0, after = 0, count = 1;
	if (sim_is_off(v)) {
		f->logs_stall_count = 0;
		return 0;
	}
	if (json_object_is_type(v, json_type_int)) {
		if (sim_get_int(v, key, 0, 86400000, &ms, err) < 0)
			return -1;
	} else if (json_object_is_type(v, json_type_object)) {
		if (sim_check_members(v, key, allowed, err) < 0 ||
		    sim_get_member(v, key, "ms", 0, 86400000, &ms, err) < 0 ||
		    sim_get_member(v, key, "after", 0, INT_MAX, &after, err) < 0 ||
		    sim_get_member(v, key, "count", 0, INT_MAX, &count, err) < 0)
			return -1;
	} else {
		*err = xasprintf("fault \"%s\" must be an integer, an object {ms, after, count} "
		                 "or null",
		                 key);
		return -1;
	}
	f->logs_stall_ms = (int)ms;
	f->logs_stall_after = (int)after;
	f->logs_stall_count = ms > 0 ? (int)count : 0;
	return 0;
}

static int sim_faults_register(struct sim_faults *f, struct json_object *v, char **err)
{
	static const char *const allowed[] = {"mode", "count", NULL};
	long count = 1;
	const char *mode = NULL;
	if (sim_is_off(v)) {
		f->register_count = 0;
		return 0;
	}
	if (json_object_is_type(v, json_type_string)) {
		mode = json_object_get_string(v);
	} else if (json_object_is_type(v, json_type_object)) {
		struct json_object *m = NULL;
		if (sim_check_members(v, "register_commit_then", allowed, err) < 0 ||
		    sim_get_member(v, "register_commit_then", "count", 0, INT_MAX, &count, err) < 0)
			return -1;
		if (json_object_object_get_ex(v, "mode", &m) &&
		    json_object_is_type(m, json_type_string))
			mode = json_object_get_string(m);
	}
	if (mode == NULL || (strcmp(mode, "500") != 0 && strcmp(mode, "drop") != 0)) {
		*err = xstrdup("fault \"register_commit_then\" must be \"500\", \"drop\", an "
		               "object {mode, count} or null");
		return -1;
	}
	f->register_drop = strcmp(mode, "drop") == 0;
	f->register_count = (int)count;
	return 0;
}

static int sim_faults_rules(struct sim_faults *f, struct json_object *v, char **err)
{
	static const char *const allowed[] = {"method", "path",        "status",
	                                      "count",  "retry_after", NULL};
	sim_faults_free_rules(f);
	if (sim_is_off(v))
		return 0;
	if (!json_object_is_type(v, json_type_array)) {
		*err = xstrdup("fault \"request_fail\" must be an array of {method, path, status, "
		               "count, retry_after}");
		return -1;
	}
	for (size_t i = 0; i < json_object_array_length(v); i++) {
		struct json_object *o = json_object_array_get_idx(v, i), *m = NULL, *p = NULL;
		long status = 503, count = 1, retry = -1;
		if (!json_object_is_type(o, json_type_object)) {
			*err = xstrdup("each request_fail rule must be an object");
			return -1;
		}
		if (sim_check_members(o, "request_fail", allowed, err) < 0 ||
		    sim_get_member(o, "request_fail", "status", 100, 599, &status, err) < 0 ||
		    sim_get_member(o, "request_fail", "count", 0, INT_MAX, &count, err) < 0 ||
		    sim_get_member(o, "request_fail", "retry_after", 0, 86400, &retry, err) < 0)
			return -1;
		json_object_object_get_ex(o, "method", &m);
		json_object_object_get_ex(o, "path", &p);
		if ((m != NULL && !json_object_is_type(m, json_type_string)) ||
		    !json_object_is_type(p, json_type_string)) {
			*err = xstrdup("a request_fail rule needs a string \"path\" (a prefix) and "
			               "may have a string \"method\"");
			return -1;
		}
		f->rules = xrealloc(f->rules, (f->nrules + 1) * sizeof(*f->rules));
		struct sim_fail_rule *rule = &f->rules[f->nrules++];
		rule->method = m ? xstrdup(json_object_get_string(m)) : NULL;
		rule->path = xstrdup(json_object_get_string(p));
		rule->status = (int)status;
		rule->count = (int)count;
		rule->retry_after = (int)retry;
	}
	return 0;
}

/* An integer override, or null for the command-line setting. */
static int sim_faults_override(struct json_object *v, const char *key, long max, long *out,
                               char **err)
{
	if (sim_is_off(v)) {
		*out = -1;
		return 0;
	}
	return sim_get_int(v, key, 0, max, out, err);
}

static int sim_faults_key(struct sim_faults *f, const char *k, struct json_object *v, char **err)
{
	long n;
	if (strcmp(k, "submit_fail") == 0)
		return sim_faults_submit(f, v, err);
	if (strcmp(k, "logs_404") == 0) {
		if (sim_is_off(v)) {
			f->logs_404 = 0;
			return 0;
		}
		if (sim_get_int(v, k, 0, INT_MAX, &n, err) < 0)
			return -1;
		f->logs_404 = (int)n;
		return 0;
	}
	if (strcmp(k, "logs_drop_after") == 0)
		return sim_faults_drop(f, v, err);
	if (strcmp(k, "logs_stall_ms") == 0 || strcmp(k, "logs_stall") == 0)
		return sim_faults_stall(f, k, v, err);
	if (strcmp(k, "build_fail") == 0) {
		if (!sim_is_off(v) && !json_object_is_type(v, json_type_string)) {
			*err = xstrdup("fault \"build_fail\" must be a message string or null");
			return -1;
		}
		free(f->build_fail);
		f->build_fail = sim_is_off(v) ? NULL : xstrdup(json_object_get_string(v));
		return 0;
	}
	if (strcmp(k, "status_no_image_ref") == 0) {
		if (v != NULL && !json_object_is_type(v, json_type_boolean)) {
			*err = xstrdup("fault \"status_no_image_ref\" must be a boolean");
			return -1;
		}
		f->status_no_image_ref = v != NULL && json_object_get_boolean(v);
		return 0;
	}
	if (strcmp(k, "register_commit_then") == 0)
		return sim_faults_register(f, v, err);
	if (strcmp(k, "latency_ms") == 0) {
		if (sim_faults_override(v, k, 600000, &n, err) < 0)
			return -1;
		f->latency_ms = (int)n;
		return 0;
	}
	if (strcmp(k, "hold") == 0) {
		const char *s =
		    json_object_is_type(v, json_type_string) ? json_object_get_string(v) : NULL;
		if (sim_is_off(v))
			f->hold = SIM_HOLD_NONE;
		else if (json_object_is_type(v, json_type_boolean) || (s && !strcmp(s, "end")))
			f->hold = SIM_HOLD_END;
		else if (s != NULL && strcmp(s, "start") == 0)
			f->hold = SIM_HOLD_START;
		else {
			*err = xstrdup("fault \"hold\" must be true, false, \"end\", \"start\" or "
			               "null");
			return -1;
		}
		return 0;
	}
	if (strcmp(k, "log_interval_ms") == 0) {
		if (sim_faults_override(v, k, 600000, &n, err) < 0)
			return -1;
		f->log_interval_ms = (int)n;
		return 0;
	}
	if (strcmp(k, "log_lines") == 0) {
		if (sim_faults_override(v, k, 50000000, &n, err) < 0)
			return -1;
		f->log_lines = n;
		return 0;
	}
	if (strcmp(k, "request_fail") == 0)
		return sim_faults_rules(f, v, err);
	*err = xasprintf("unknown fault \"%s\"", k);
	return -1;
}

/* A deep copy, so that a body can be applied all or nothing. */
static void sim_faults_copy(struct sim_faults *dst, const struct sim_faults *src)
{
	*dst = *src;
	dst->build_fail = src->build_fail ? xstrdup(src->build_fail) : NULL;
	dst->rules = NULL;
	dst->nrules = 0;
	for (size_t i = 0; i < src->nrules; i++) {
		dst->rules = xrealloc(dst->rules, (dst->nrules + 1) * sizeof(*dst->rules));
		dst->rules[i] = src->rules[i];
		dst->rules[i].method = src->rules[i].method ? xstrdup(src->rules[i].method) : NULL;
		dst->rules[i].path = xstrdup(src->rules[i].path);
		dst->nrules++;
	}
}

int sim_faults_apply(struct sim_faults *f, struct json_object *obj, char **err)
{
	struct sim_faults next;
	struct json_object *clear = NULL;
	*err = NULL;
	if (!json_object_is_type(obj, json_type_object)) {
		*err = xstrdup("faults must be a JSON object");
		return -1;
	}
	if (json_object_object_get_ex(obj, "clear", &clear) && !sim_is_off(clear))
		sim_faults_init(&next);
	else
		sim_faults_copy(&next, f);
	json_object_object_foreach(obj, k, v)
	{
		if (strcmp(k, "clear") == 0)
			continue;
		if (sim_faults_key(&next, k, v, err) < 0) {
			sim_faults_clear(&next);
			return -1;
		}
	}
	sim_faults_clear(f);
	*f = next;
	return 0;
}

struct json_object *sim_faults_json(const struct sim_faults *f)
{
	struct json_object *o = json_object_new_object();
	struct json_object *submit = NULL, *drop = NULL, *stall = NULL, *reg = NULL;
	if (f->submit_fail_count > 0) {
		submit = json_object_new_object();
		json_object_object_add(submit, "count", json_object_new_int(f->submit_fail_count));
		json_object_object_add(submit, "status",
		                       json_object_new_int(f->submit_fail_status));
		if (f->submit_fail_retry_after >= 0)
			json_object_object_add(submit, "retry_after",
			                       json_object_new_int(f->submit_fail_retry_after));
	}
	json_object_object_add(o, "submit_fail", submit);
	json_object_object_add(o, "logs_404", json_object_new_int(f->logs_404));
	if (f->logs_drop_count > 0 && f->logs_drop_after >= 0) {
		drop = json_object_new_object();
		json_object_object_add(drop, "events", json_object_new_int(f->logs_drop_after));
		json_object_object_add(drop, "count", json_object_new_int(f->logs_drop_count));
	}
	json_object_object_add(o, "logs_drop_after", drop);
	if (f->logs_stall_count > 0) {
		stall = json_object_new_object();
		json_object_object_add(stall, "ms", json_object_new_int(f->logs_stall_ms));
		json_object_object_add(stall, "after", json_object_new_int(f->logs_stall_after));
		json_object_object_add(stall, "count", json_object_new_int(f->logs_stall_count));
	}
	json_object_object_add(o, "logs_stall", stall);
	json_object_object_add(o, "build_fail",
	                       f->build_fail ? json_object_new_string(f->build_fail) : NULL);
	json_object_object_add(o, "status_no_image_ref",
	                       json_object_new_boolean(f->status_no_image_ref));
	if (f->register_count > 0) {
		reg = json_object_new_object();
		json_object_object_add(reg, "mode",
		                       json_object_new_string(f->register_drop ? "drop" : "500"));
		json_object_object_add(reg, "count", json_object_new_int(f->register_count));
	}
	json_object_object_add(o, "register_commit_then", reg);
	json_object_object_add(o, "latency_ms",
	                       f->latency_ms >= 0 ? json_object_new_int(f->latency_ms) : NULL);
	json_object_object_add(
	    o, "hold",
	    f->hold == SIM_HOLD_NONE
	        ? json_object_new_boolean(0)
	        : json_object_new_string(f->hold == SIM_HOLD_START ? "start" : "end"));
	json_object_object_add(o, "log_interval_ms",
	                       f->log_interval_ms >= 0 ? json_object_new_int(f->log_interval_ms)
	                                               : NULL);
	json_object_object_add(o, "log_lines",
	                       f->log_lines >= 0 ? json_object_new_int64(f->log_lines) : NULL);
	struct json_object *rules = json_object_new_array();
	for (size_t i = 0; i < f->nrules; i++) {
		const struct sim_fail_rule *rule = &f->rules[i];
		if (rule->count <= 0)
			continue;
		struct json_object *ro = json_object_new_object();
		if (rule->method != NULL)
			json_object_object_add(ro, "method", json_object_new_string(rule->method));
		json_object_object_add(ro, "path", json_object_new_string(rule->path));
		json_object_object_add(ro, "status", json_object_new_int(rule->status));
		json_object_object_add(ro, "count", json_object_new_int(rule->count));
		if (rule->retry_after >= 0)
			json_object_object_add(ro, "retry_after",
			                       json_object_new_int(rule->retry_after));
		json_object_array_add(rules, ro);
	}
	json_object_object_add(o, "request_fail", rules);
	return o;
}

bool sim_faults_take_rule(struct sim_faults *f, const char *method, const char *path, int *status,
                          int *retry_after)
{
	for (size_t i = 0; i < f->nrules; i++) {
		struct sim_fail_rule *rule = &f->rules[i];
		if (rule->count <= 0 || !str_has_prefix(path, rule->path))
			continue;
		if (rule->method != NULL && strcasecmp(rule->method, method) != 0)
			continue;
		rule->count--;
		*status = rule->status;
		*retry_after = rule->retry_after;
		return true;
	}
	return false;
}

int sim_faults_latency(const struct sim *sim)
{
	return sim->faults.latency_ms >= 0 ? sim->faults.latency_ms : sim->config.latency_ms;
}

int sim_faults_log_interval(const struct sim *sim)
{
	return sim->faults.log_interval_ms >= 0 ? sim->faults.log_interval_ms
	                                        : sim->config.log_interval_ms;
}

long sim_faults_log_lines(const struct sim *sim)
{
	return sim->faults.log_lines >= 0 ? sim->faults.log_lines : sim->config.log_lines;
}
