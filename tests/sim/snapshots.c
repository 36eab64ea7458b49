/*
 * The simulated management API (/v1/…, see management-api.openapi.json): snapshots
 * with tags, TTL and retirement, aliases (upsert, lookup, delete), cursor-paginated
 * listing with tag filters, batch get, and registry credentials.  Each snapshot
 * also keeps the image reference and architecture it was registered with, which
 * the real API does not show but tests need (GET /_sim/snapshots).  With
 * --state-dir the snapshots and aliases are written to state.json on every change
 * and read back at start.
 */
#include "sim.h"

#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "util.h"

#define SIM_ORGANIZATION_ID "5f0c8c3e-9b7a-4d2e-8f61-0a1b2c3d4e5f"
#define SIM_PROJECT_ID      "sim-project"

struct sim_snapshot {
	char id[37];
	int64_t byte_size;
	struct json_object *tags;
	int64_t ttl; /* 0 for none */
	double created_at, retired_at, updated_at;
	char *image;
	char *architecture; /* NULL when the client sent none */
};

struct sim_alias {
	char *alias;
	char snapshot_id[37];
	double created_at;
};

struct sim_snapshots {
	struct sim_snapshot **v;
	size_t n;
	struct sim_alias *aliases;
	size_t naliases;
	char *state_file;
};

/* --- checks --- */

/* tag or namespace@tag, each part of letters, digits, '.', '_' and '-'. */
static bool sim_alias_valid(const char *s)
{
	size_t part = 0;
	int ats = 0;
	for (const char *p = s;; p++) {
		if (*p == '\0' || *p == '@') {
			if (part == 0 || part > 128)
				return false;
			if (*p == '\0')
				return true;
			if (++ats > 1)
				return false;
			part = 0;
			continue;
		}
		if (!isalnum((unsigned char)*p) && *p != '.' && *p != '_' && *p != '-')
			return false;
		part++;
	}
}

/* [registry/][repository/]name[:tag][@digest], as Docker parses references. */
static const char *sim_reference_problem(const char *ref)
{
	size_t len = strlen(ref);
	if (len == 0)
		return "image must not be empty";
	if (len > 4096)
		return "image is too long";
	char *copy = xstrdup(ref);
	const char *problem = NULL;
	char *at = strchr(copy, '@');
	if (at != NULL) {
		*at = '\0';
		const char *d = at + 1;
		const char *colon = strchr(d, ':');
		if (colon == NULL || colon == d || colon[1] == '\0' || strchr(d, '@') != NULL)
			problem = "image digest must be algorithm:hex";
	}
	char *slash = strrchr(copy, '/');
	char *colon = strrchr(copy, ':');
	if (problem == NULL && colon != NULL && (slash == NULL || colon > slash)) {
		*colon = '\0';
		const char *tag = colon + 1;
		if (tag[0] == '\0' || strlen(tag) > 128)
			problem = "image tag must be 1 to 128 characters";
		for (const char *p = tag; problem == NULL && *p != '\0'; p++)
			if (!isalnum((unsigned char)*p) && *p != '_' && *p != '.' && *p != '-')
				problem = "image tag has a character not allowed in a tag";
	}
	char *name = copy;
	char *first = strchr(copy, '/');
	if (problem == NULL && first != NULL) {
		bool host = memchr(copy, '.', (size_t)(first - copy)) != NULL ||
		            memchr(copy, ':', (size_t)(first - copy)) != NULL ||
		            strncmp(copy, "localhost/", 10) == 0;
		if (host) {
			if (first == copy)
				problem = "image has an empty registry host";
			name = first + 1;
		}
	}
	if (problem == NULL && name[0] == '\0')
		problem = "image has no repository name";
	for (const char *p = name; problem == NULL && *p != '\0'; p++) {
		bool ok = (*p >= 'a' && *p <= 'z') || (*p >= '0' && *p <= '9') || *p == '.' ||
		          *p == '_' || *p == '-' || *p == '/';
		if (!ok)
			problem = "image repository must be lower case letters, digits, '.', '_', "
			          "'-' and '/'";
		else if (*p == '/' && (p == name || p[1] == '\0' || p[1] == '/'))
			problem = "image repository has an empty path component";
	}
	free(copy);
	return problem;
}

/* --- store --- */

static void sim_snapshot_refresh(struct sim_snapshot *s)
{
	if (s->ttl > 0 && s->retired_at == 0 && now_seconds() >= s->created_at + (double)s->ttl) {
		s->retired_at = s->created_at + (double)s->ttl;
		s->updated_at = s->retired_at;
	}
}

static struct sim_snapshot *sim_snapshot_find(struct sim_snapshots *st, const char *id)
{
	for (size_t i = 0; i < st->n; i++)
		if (strcasecmp(st->v[i]->id, id) == 0)
			return st->v[i];
	return NULL;
}

static struct sim_alias *sim_alias_find(struct sim_snapshots *st, const char *alias)
{
	for (size_t i = 0; i < st->naliases; i++)
		if (strcmp(st->aliases[i].alias, alias) == 0)
			return &st->aliases[i];
	return NULL;
}

static void sim_time_add(struct json_object *o, const char *key, double t)
{
	char buf[32];
	if (t <= 0) {
		json_object_object_add(o, key, NULL);
		return;
	}
	sim_time_format(t, buf);
	json_object_object_add(o, key, json_object_new_string(buf));
}

static struct json_object *sim_snapshot_json(struct sim_snapshot *s, bool introspect)
{
	struct json_object *o = json_object_new_object();
	sim_snapshot_refresh(s);
	json_object_object_add(o, "id", json_object_new_string(s->id));
	json_object_object_add(o, "organization_id", json_object_new_string(SIM_ORGANIZATION_ID));
	json_object_object_add(o, "project_id", json_object_new_string(SIM_PROJECT_ID));
	json_object_object_add(o, "byte_size", json_object_new_int64(s->byte_size));
	json_object_object_add(o, "tags", json_object_get(s->tags));
	json_object_object_add(o, "ttl", s->ttl > 0 ? json_object_new_int64(s->ttl) : NULL);
	json_object_object_add(o, "memory", json_object_new_boolean(0));
	sim_time_add(o, "created_at", s->created_at);
	sim_time_add(o, "retired_at", s->retired_at);
	sim_time_add(o, "updated_at", s->updated_at);
	if (introspect) {
		json_object_object_add(o, "image", json_object_new_string(s->image));
		json_object_object_add(o, "architecture",
		                       s->architecture ? json_object_new_string(s->architecture)
		                                       : NULL);
	}
	return o;
}

static struct json_object *sim_alias_json(const struct sim_alias *a)
{
	struct json_object *o = json_object_new_object();
	json_object_object_add(o, "snapshot_id", json_object_new_string(a->snapshot_id));
	json_object_object_add(o, "alias", json_object_new_string(a->alias));
	sim_time_add(o, "created_at", a->created_at);
	return o;
}

/* --- persistence --- */

static void sim_snapshots_save(struct sim *sim)
{
	struct sim_snapshots *st = sim->snapshots;
	if (st->state_file == NULL)
		return;
	struct json_object *root = json_object_new_object();
	struct json_object *snaps = json_object_new_array(), *aliases = json_object_new_array();
	for (size_t i = 0; i < st->n; i++) {
		const struct sim_snapshot *s = st->v[i];
		struct json_object *o = json_object_new_object();
		json_object_object_add(o, "id", json_object_new_string(s->id));
		json_object_object_add(o, "byte_size", json_object_new_int64(s->byte_size));
		json_object_object_add(o, "tags", json_object_get(s->tags));
		json_object_object_add(o, "ttl", json_object_new_int64(s->ttl));
		json_object_object_add(o, "created_at", json_object_new_double(s->created_at));
		json_object_object_add(o, "retired_at", json_object_new_double(s->retired_at));
		json_object_object_add(o, "updated_at", json_object_new_double(s->updated_at));
		json_object_object_add(o, "image", json_object_new_string(s->image));
		json_object_object_add(o, "architecture",
		                       s->architecture ? json_object_new_string(s->architecture)
		                                       : NULL);
		json_object_array_add(snaps, o);
	}
	for (size_t i = 0; i < st->naliases; i++) {
		struct json_object *o = sim_alias_json(&st->aliases[i]);
		json_object_object_add(o, "created_at",
		                       json_object_new_double(st->aliases[i].created_at));
		json_object_array_add(aliases, o);
	}
	json_object_object_add(root, "snapshots", snaps);
	json_object_object_add(root, "aliases", aliases);
	char *tmp = xasprintf("%s.tmp", st->state_file);
	if (json_object_to_file_ext(tmp, root, JSON_C_TO_STRING_PRETTY) < 0 ||
	    rename(tmp, st->state_file) < 0)
		fprintf(stderr, "snapbuild-sim: cannot write %s: %s\n", st->state_file,
		        strerror(errno));
	free(tmp);
	json_object_put(root);
}

static double sim_get_double(struct json_object *o, const char *key)
{
	struct json_object *v;
	return json_object_object_get_ex(o, key, &v) ? json_object_get_double(v) : 0;
}

static const char *sim_get_string(struct json_object *o, const char *key)
{
	struct json_object *v;
	if (!json_object_object_get_ex(o, key, &v) || !json_object_is_type(v, json_type_string))
		return NULL;
	return json_object_get_string(v);
}

static int sim_snapshots_load(struct sim_snapshots *st, char **err)
{
	if (access(st->state_file, F_OK) != 0)
		return 0;
	struct json_object *root = json_object_from_file(st->state_file), *snaps, *aliases;
	int rc = -1;
	if (root == NULL || !json_object_object_get_ex(root, "snapshots", &snaps) ||
	    !json_object_object_get_ex(root, "aliases", &aliases) ||
	    !json_object_is_type(snaps, json_type_array) ||
	    !json_object_is_type(aliases, json_type_array)) {
		*err = xasprintf("%s is not a snapbuild-sim state file", st->state_file);
		goto out;
	}
	for (size_t i = 0; i < json_object_array_length(snaps); i++) {
		struct json_object *o = json_object_array_get_idx(snaps, i), *tags = NULL, *v;
		const char *id = sim_get_string(o, "id"), *image = sim_get_string(o, "image");
		if (id == NULL || !uuid_valid(id) || image == NULL ||
		    !json_object_object_get_ex(o, "tags", &tags) ||
		    !json_object_is_type(tags, json_type_object)) {
			*err = xasprintf("%s: snapshot %zu is malformed", st->state_file, i);
			goto out;
		}
		struct sim_snapshot *s = xcalloc(1, sizeof(*s));
		memcpy(s->id, id, 37);
		s->image = xstrdup(image);
		const char *arch = sim_get_string(o, "architecture");
		s->architecture = arch ? xstrdup(arch) : NULL;
		s->tags = json_object_get(tags);
		s->byte_size =
		    json_object_object_get_ex(o, "byte_size", &v) ? json_object_get_int64(v) : 0;
		s->ttl = json_object_object_get_ex(o, "ttl", &v) ? json_object_get_int64(v) : 0;
		s->created_at = sim_get_double(o, "created_at");
		s->retired_at = sim_get_double(o, "retired_at");
		s->updated_at = sim_get_double(o, "updated_at");
		st->v = xrealloc(st->v, (st->n + 1) * sizeof(*st->v));
		st->v[st->n++] = s;
	}
	for (size_t i = 0; i < json_object_array_length(aliases); i++) {
		struct json_object *o = json_object_array_get_idx(aliases, i);
		const char *alias = sim_get_string(o, "alias"),
		           *sid = sim_get_string(o, "snapshot_id");
		if (alias == NULL || sid == NULL || !uuid_valid(sid)) {
			*err = xasprintf("%s: alias %zu is malformed", st->state_file, i);
			goto out;
		}
		st->aliases = xrealloc(st->aliases, (st->naliases + 1) * sizeof(*st->aliases));
		struct sim_alias *a = &st->aliases[st->naliases++];
		a->alias = xstrdup(alias);
		memcpy(a->snapshot_id, sid, 37);
		a->created_at = sim_get_double(o, "created_at");
	}
	rc = 0;
out:
	json_object_put(root);
	return rc;
}

int sim_snapshots_init(struct sim *sim, char **err)
{
	sim->snapshots = xcalloc(1, sizeof(*sim->snapshots));
	*err = NULL;
	if (sim->config.state_dir == NULL)
		return 0;
	sim->snapshots->state_file = xasprintf("%s/state.json", sim->config.state_dir);
	return sim_snapshots_load(sim->snapshots, err);
}

void sim_snapshots_free(struct sim *sim)
{
	struct sim_snapshots *st = sim->snapshots;
	if (st == NULL)
		return;
	for (size_t i = 0; i < st->n; i++) {
		json_object_put(st->v[i]->tags);
		free(st->v[i]->image);
		free(st->v[i]->architecture);
		free(st->v[i]);
	}
	free(st->v);
	for (size_t i = 0; i < st->naliases; i++)
		free(st->aliases[i].alias);
	free(st->aliases);
	free(st->state_file);
	free(st);
	sim->snapshots = NULL;
}

struct json_object *sim_snapshots_introspect(const struct sim *sim)
{
	const struct sim_snapshots *st = sim->snapshots;
	struct json_object *arr = json_object_new_array();
	for (size_t i = 0; i < st->n; i++) {
		struct json_object *o = sim_snapshot_json(st->v[i], true);
		const char *build = sim_builds_by_image(sim, st->v[i]->image);
		size_t earlier = 0;
		/* a client must register one snapshot per build: flag every further one */
		for (size_t k = 0; build != NULL && k < i; k++)
			earlier += st->v[k]->image && strcmp(st->v[k]->image, st->v[i]->image) == 0;
		json_object_object_add(o, "build_id", build ? json_object_new_string(build) : NULL);
		json_object_object_add(o, "duplicate", json_object_new_boolean(earlier > 0));
		json_object_array_add(arr, o);
	}
	return arr;
}

struct json_object *sim_aliases_introspect(const struct sim *sim)
{
	const struct sim_snapshots *st = sim->snapshots;
	struct json_object *arr = json_object_new_array();
	for (size_t i = 0; i < st->naliases; i++)
		json_object_array_add(arr, sim_alias_json(&st->aliases[i]));
	return arr;
}

/* --- handlers --- */

static void sim_add_error(struct json_object *errors, const char *parameter, const char *code,
                          const char *message)
{
	struct json_object *e = json_object_new_object();
	json_object_object_add(e, "parameter", json_object_new_string(parameter));
	json_object_object_add(e, "code", json_object_new_string(code));
	json_object_object_add(e, "message", json_object_new_string(message));
	json_object_array_add(errors, e);
}

static void sim_reply_validation(struct sim_req *r, struct json_object *errors)
{
	struct json_object *first = json_object_array_get_idx(errors, 0), *m = NULL;
	json_object_object_get_ex(first, "message", &m);
	char *msg = xasprintf("validation failed: %s", json_object_get_string(m));
	sim_reply_json(r, 400, sim_error_body("validation_failed", msg, errors));
	free(msg);
}

static int64_t sim_byte_size(const char *image)
{
	uint64_t h = 1469598103934665603ull;
	for (const char *p = image; *p != '\0'; p++)
		h = (h ^ (unsigned char)*p) * 1099511628211ull;
	return (int64_t)(50000000 + h % 450000000);
}

static void sim_snapshot_create(struct sim_req *r)
{
	struct sim *sim = r->sim;
	struct json_object *body = sim_req_json_body(r), *errors, *v;
	if (body == NULL)
		return;
	errors = json_object_new_array();
	const char *image = NULL, *arch = NULL;
	int64_t ttl = 0;
	struct json_object *tags = NULL;
	if (!json_object_object_get_ex(body, "image", &v))
		sim_add_error(errors, "image", "required", "image is required");
	else if (!json_object_is_type(v, json_type_string))
		sim_add_error(errors, "image", "invalid_type", "image must be a string");
	else {
		const char *problem = sim_reference_problem(json_object_get_string(v));
		if (problem != NULL)
			sim_add_error(errors, "image", "invalid_reference", problem);
		else
			image = json_object_get_string(v);
	}
	if (json_object_object_get_ex(body, "architecture", &v)) {
		if (!json_object_is_type(v, json_type_string))
			sim_add_error(errors, "architecture", "invalid_type",
			              "architecture must be a string");
		else if (strcmp(json_object_get_string(v), "amd64") != 0 &&
		         strcmp(json_object_get_string(v), "arm64") != 0)
			sim_add_error(errors, "architecture", "invalid_enum",
			              "architecture must be one of amd64, arm64");
		else
			arch = json_object_get_string(v);
	}
	if (json_object_object_get_ex(body, "ttl", &v)) {
		if (!json_object_is_type(v, json_type_int))
			sim_add_error(errors, "ttl", "invalid_type", "ttl must be an integer");
		else if ((ttl = json_object_get_int64(v)) < 1)
			sim_add_error(errors, "ttl", "minimum", "ttl must be at least 1");
	}
	if (json_object_object_get_ex(body, "tags", &v)) {
		if (!json_object_is_type(v, json_type_object)) {
			sim_add_error(errors, "tags", "invalid_type", "tags must be an object");
		} else {
			json_object_object_foreach(v, k, tv)
			{
				if (!json_object_is_type(tv, json_type_string)) {
					char *p = xasprintf("tags[%s]", k);
					sim_add_error(errors, p, "invalid_type",
					              "tag values must be strings");
					free(p);
				}
			}
			tags = v;
		}
	}
	if (json_object_array_length(errors) > 0) {
		sim_reply_validation(r, errors);
		json_object_put(body);
		return;
	}
	json_object_put(errors);

	struct sim_snapshots *st = sim->snapshots;
	struct sim_snapshot *s = xcalloc(1, sizeof(*s));
	uuid_v4(s->id);
	s->image = xstrdup(image);
	s->architecture = arch ? xstrdup(arch) : NULL;
	s->tags = json_object_new_object();
	if (tags != NULL) {
		json_object_object_foreach(tags, k, tv)
		{
			json_object_object_add(s->tags, k, json_object_get(tv));
		}
	}
	s->ttl = ttl;
	s->byte_size = sim_byte_size(image);
	s->created_at = s->updated_at = now_seconds();
	st->v = xrealloc(st->v, (st->n + 1) * sizeof(*st->v));
	st->v[st->n++] = s;
	sim_snapshots_save(sim);
	json_object_put(body);

	if (sim->faults.register_count > 0) {
		sim->faults.register_count--;
		if (sim->faults.register_drop)
			sim_req_drop(r);
		else
			sim_reply_error(r, 500, "internal_error",
			                "internal error (fault injected after commit)");
		return;
	}
	sim_reply_json(r, 201, sim_snapshot_json(s, false));
}

static bool sim_parse_limit(const char *s, long *out)
{
	char *end;
	if (s[0] < '0' || s[0] > '9')
		return false;
	errno = 0;
	long v = strtol(s, &end, 10);
	if (errno != 0 || *end != '\0' || v < 1 || v > 100)
		return false;
	*out = v;
	return true;
}

static bool sim_parse_bool(const char *s, bool *out)
{
	if (strcmp(s, "true") == 0 || strcmp(s, "1") == 0)
		*out = true;
	else if (strcmp(s, "false") == 0 || strcmp(s, "0") == 0)
		*out = false;
	else
		return false;
	return true;
}

static bool sim_snapshot_matches(struct sim_req *r, struct sim_snapshot *s, bool exclude_retired)
{
	sim_snapshot_refresh(s);
	if (exclude_retired && s->retired_at > 0)
		return false;
	for (size_t i = 0; i < r->nquery; i++) {
		const char *k = r->query[i].key;
		if (strncmp(k, "tags[", 5) != 0)
			continue;
		char *tag = xstrndup(k + 5, strlen(k) - 6);
		struct json_object *v = NULL;
		bool ok = json_object_object_get_ex(s->tags, tag, &v) &&
		          strcmp(json_object_get_string(v), r->query[i].value) == 0;
		free(tag);
		if (!ok)
			return false;
	}
	return true;
}

static void sim_snapshot_list(struct sim_req *r)
{
	struct sim_snapshots *st = r->sim->snapshots;
	long limit = 20;
	bool exclude = false;
	const char *v;
	size_t start = st->n; /* walking newest first: indexes below start */
	if ((v = sim_req_query(r, "limit")) != NULL && !sim_parse_limit(v, &limit)) {
		sim_reply_bad_param(r, "limit", "invalid",
		                    "limit must be an integer from 1 to 100");
		return;
	}
	if ((v = sim_req_query(r, "exclude_retired")) != NULL && !sim_parse_bool(v, &exclude)) {
		sim_reply_bad_param(r, "exclude_retired", "invalid",
		                    "exclude_retired must be true or false");
		return;
	}
	for (size_t i = 0; i < r->nquery; i++) {
		const char *k = r->query[i].key;
		size_t kl = strlen(k);
		if (strncmp(k, "tags", 4) != 0)
			continue;
		if (kl < 7 || k[4] != '[' || k[kl - 1] != ']' || memchr(k + 5, ']', kl - 6)) {
			sim_reply_bad_param(r, "tags", "invalid",
			                    "tag filters are given as tags[key]=value");
			return;
		}
	}
	if ((v = sim_req_query(r, "cursor")) != NULL) {
		bool found = false;
		for (size_t i = 0; i < st->n && uuid_valid(v); i++)
			if (strcasecmp(st->v[i]->id, v) == 0) {
				start = i;
				found = true;
			}
		if (!found) {
			sim_reply_bad_param(r, "cursor", "invalid", "cursor is not a valid cursor");
			return;
		}
	}
	struct json_object *data = json_object_new_array();
	const char *last = NULL;
	bool more = false;
	for (size_t i = start; i-- > 0;) {
		struct sim_snapshot *s = st->v[i];
		if (!sim_snapshot_matches(r, s, exclude))
			continue;
		if ((long)json_object_array_length(data) == limit) {
			more = true;
			break;
		}
		json_object_array_add(data, sim_snapshot_json(s, false));
		last = s->id;
	}
	struct json_object *page = json_object_new_object();
	json_object_object_add(page, "data", data);
	json_object_object_add(page, "next_cursor",
	                       more && last ? json_object_new_string(last) : NULL);
	sim_reply_json(r, 200, page);
}

static void sim_snapshot_batch(struct sim_req *r)
{
	struct sim_snapshots *st = r->sim->snapshots;
	struct json_object *arr = json_object_new_array();
	size_t count = 0;
	for (size_t i = 0; i < r->nquery; i++) {
		if (strcmp(r->query[i].key, "ids[]") != 0)
			continue;
		const char *id = r->query[i].value;
		const char *problem = NULL;
		if (!uuid_valid(id))
			problem = "ids[] must be UUIDs";
		else if (++count > 100)
			problem = "at most 100 ids[] may be given";
		for (size_t j = 0; j < i && problem == NULL; j++)
			if (strcmp(r->query[j].key, "ids[]") == 0 &&
			    strcasecmp(r->query[j].value, id) == 0)
				problem = "ids[] must not repeat an id";
		if (problem != NULL) {
			json_object_put(arr);
			sim_reply_bad_param(r, "ids[]", "invalid", problem);
			return;
		}
		struct sim_snapshot *s = sim_snapshot_find(st, id);
		if (s != NULL)
			json_object_array_add(arr, sim_snapshot_json(s, false));
	}
	if (count == 0) {
		json_object_put(arr);
		sim_reply_bad_param(r, "ids[]", "required", "ids[] is required");
		return;
	}
	sim_reply_json(r, 200, arr);
}

/* The snapshot named by a path id, or NULL after answering 400/404. */
static struct sim_snapshot *sim_snapshot_lookup(struct sim_req *r, const char *id)
{
	if (!uuid_valid(id)) {
		sim_reply_bad_param(r, "id", "invalid_uuid", "snapshot id must be a UUID");
		return NULL;
	}
	struct sim_snapshot *s = sim_snapshot_find(r->sim->snapshots, id);
	if (s == NULL)
		sim_reply_error(r, 404, "not_found", "snapshot not found");
	return s;
}

static void sim_snapshot_by_alias(struct sim_req *r, const char *alias)
{
	if (!sim_alias_valid(alias)) {
		sim_reply_bad_param(r, "alias", "invalid", "alias must be tag or namespace@tag");
		return;
	}
	struct sim_alias *a = sim_alias_find(r->sim->snapshots, alias);
	struct sim_snapshot *s = a ? sim_snapshot_find(r->sim->snapshots, a->snapshot_id) : NULL;
	if (s == NULL) {
		sim_reply_error(r, 404, "not_found", "no snapshot has this alias");
		return;
	}
	sim_reply_json(r, 200, sim_snapshot_json(s, false));
}

static void sim_snapshot_retire(struct sim_req *r, const char *id)
{
	struct sim_snapshot *s = sim_snapshot_lookup(r, id);
	if (s == NULL)
		return;
	sim_snapshot_refresh(s);
	if (s->retired_at == 0) {
		s->retired_at = s->updated_at = now_seconds();
		sim_snapshots_save(r->sim);
	}
	sim_reply_json(r, 200, sim_snapshot_json(s, false));
}

static void sim_snapshot_aliases(struct sim_req *r, const char *id)
{
	struct sim_snapshots *st = r->sim->snapshots;
	struct sim_snapshot *s = sim_snapshot_lookup(r, id);
	if (s == NULL)
		return;
	if (r->method == EVHTTP_REQ_GET) {
		struct json_object *arr = json_object_new_array();
		for (size_t i = 0; i < st->naliases; i++)
			if (strcmp(st->aliases[i].snapshot_id, s->id) == 0)
				json_object_array_add(arr, sim_alias_json(&st->aliases[i]));
		sim_reply_json(r, 200, arr);
		return;
	}
	struct json_object *body = sim_req_json_body(r), *v;
	if (body == NULL)
		return;
	const char *alias = NULL;
	if (!json_object_object_get_ex(body, "alias", &v))
		sim_reply_bad_param(r, "alias", "required", "alias is required");
	else if (!json_object_is_type(v, json_type_string))
		sim_reply_bad_param(r, "alias", "invalid_type", "alias must be a string");
	else if (!sim_alias_valid(json_object_get_string(v)))
		sim_reply_bad_param(r, "alias", "invalid",
		                    "alias must be tag or namespace@tag (letters, digits, '.', "
		                    "'_', '-')");
	else
		alias = json_object_get_string(v);
	if (alias != NULL) {
		struct sim_alias *a = sim_alias_find(st, alias);
		if (a == NULL) {
			st->aliases =
			    xrealloc(st->aliases, (st->naliases + 1) * sizeof(*st->aliases));
			a = &st->aliases[st->naliases++];
			a->alias = xstrdup(alias);
		}
		memcpy(a->snapshot_id, s->id, 37);
		a->created_at = now_seconds();
		sim_snapshots_save(r->sim);
		sim_reply_empty(r, 204);
	}
	json_object_put(body);
}

static void sim_alias_delete(struct sim_req *r, const char *alias)
{
	struct sim_snapshots *st = r->sim->snapshots;
	if (!sim_alias_valid(alias)) {
		sim_reply_bad_param(r, "alias", "invalid", "alias must be tag or namespace@tag");
		return;
	}
	struct sim_alias *a = sim_alias_find(st, alias);
	if (a != NULL) {
		size_t i = (size_t)(a - st->aliases);
		free(a->alias);
		memmove(a, a + 1, (st->naliases - i - 1) * sizeof(*a));
		st->naliases--;
		sim_snapshots_save(r->sim);
	}
	sim_reply_empty(r, 204);
}

static void sim_credentials(struct sim_req *r)
{
	const struct sim_config *c = &r->sim->config;
	struct json_object *o = json_object_new_object();
	char exp[32];
	sim_time_format(now_seconds() + 3600, exp);
	json_object_object_add(o, "username", json_object_new_string(c->registry_username));
	json_object_object_add(o, "password", json_object_new_string(c->registry_password));
	json_object_object_add(o, "registry_url", json_object_new_string(c->registry));
	json_object_object_add(o, "expired_at", json_object_new_string(exp));
	sim_reply_json(r, 201, o);
}

static bool sim_is(const struct sim_req *r, size_t i, const char *s)
{
	return i < r->nseg && strcmp(r->seg[i], s) == 0;
}

void sim_snapshots_route(struct sim_req *r)
{
	enum evhttp_cmd_type m = r->method;
	size_t n = r->nseg;
	bool allowed = false;
	if (n == 2 && sim_is(r, 1, "snapshots")) {
		if ((allowed = m == EVHTTP_REQ_GET))
			sim_snapshot_list(r);
		else if ((allowed = m == EVHTTP_REQ_POST))
			sim_snapshot_create(r);
	} else if (n == 3 && sim_is(r, 1, "snapshots") && sim_is(r, 2, "batch")) {
		if ((allowed = m == EVHTTP_REQ_GET))
			sim_snapshot_batch(r);
	} else if (n == 3 && sim_is(r, 1, "snapshots") && r->seg[2][0] == '@') {
		if ((allowed = m == EVHTTP_REQ_GET))
			sim_snapshot_by_alias(r, r->seg[2] + 1);
	} else if (n == 3 && sim_is(r, 1, "snapshots") && r->seg[2][0] != '\0') {
		struct sim_snapshot *s;
		if ((allowed = m == EVHTTP_REQ_GET) && (s = sim_snapshot_lookup(r, r->seg[2])))
			sim_reply_json(r, 200, sim_snapshot_json(s, false));
	} else if (n == 4 && sim_is(r, 1, "snapshots") && sim_is(r, 3, "retire")) {
		if ((allowed = m == EVHTTP_REQ_POST))
			sim_snapshot_retire(r, r->seg[2]);
	} else if (n == 4 && sim_is(r, 1, "snapshots") && sim_is(r, 3, "aliases")) {
		if ((allowed = m == EVHTTP_REQ_GET || m == EVHTTP_REQ_POST))
			sim_snapshot_aliases(r, r->seg[2]);
	} else if (n == 3 && sim_is(r, 1, "snapshot-aliases")) {
		if ((allowed = m == EVHTTP_REQ_DELETE))
			sim_alias_delete(r, r->seg[2]);
	} else if (n == 4 && sim_is(r, 1, "container-registries") && sim_is(r, 2, "default") &&
	           sim_is(r, 3, "credentials")) {
		if ((allowed = m == EVHTTP_REQ_POST))
			sim_credentials(r);
	} else {
		sim_reply_error(r, 404, "not_found", "no such route");
		return;
	}
	if (!allowed)
		sim_reply_error(r, 405, "method_not_allowed", "method not allowed on this route");
}
