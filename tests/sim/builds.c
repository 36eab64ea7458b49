/*
 * The simulated image builder: POST /builds checks the multipart submit and the
 * context the way the service does, keeps the archive in a temporary file, and
 * starts a build that produces its log (buildlog.c) on a timer, independently of
 * who is watching — as a build pod would.  GET /builds/{id}/logs streams that log
 * as Server-Sent Events (ids 1, 2, … and a final {"done": true} or {"error": …}),
 * resuming after Last-Event-ID — or, as --log-ids and --reconnect choose, with other
 * ids or none, replaying from the start or continuing where the build's last stream
 * stopped (what the real service does is unknown).  Each stream writes a bounded
 * amount at a time and waits for it to be flushed, so a fast log cannot pile up in
 * memory.  The log faults (404 on connect, drop after K events, stall) are taken per
 * connection.
 */
#include "sim.h"

#include <errno.h>
#include <fcntl.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <event2/buffer.h>

#include "buildlog.h"
#include "context.h"
#include "multipart.h"
#include "util.h"

#define SIM_STREAM_CHUNK (64 * 1024)

enum sim_build_state {
	SIM_BUILD_QUEUED,
	SIM_BUILD_RUNNING,
	SIM_BUILD_SUCCEEDED,
	SIM_BUILD_FAILED,
	SIM_BUILD_CANCELLED,
};

static const char *const sim_build_state_names[] = {"queued", "running", "succeeded", "failed",
                                                    "cancelled"};

enum sim_stream_timer { SIM_TIMER_KICK, SIM_TIMER_STALL, SIM_TIMER_HEARTBEAT };

struct sim_stream {
	struct sim_build *build;
	struct sim_req *r;
	struct sim_stream *next;
	size_t next_event; /* index of the next event to send; its id is index + 1 */
	size_t sent;       /* events sent on this connection */
	int drop_after;    /* -1: never */
	int stall_ms;
	int stall_after;
	bool stall_pending;
	bool stalled;
	bool started;
	bool flushing;
	struct event *timer;
	enum sim_stream_timer timer_mode;
};

struct sim_build {
	struct sim *sim;
	char id[37];
	enum sim_build_state state;
	struct json_object *fields; /* every part received, for introspection */
	char *image_name;
	char *dockerfile;
	char *build_args;
	char *nydus_convert;
	char *cache_key;
	char *image_ref;
	char *context_path;
	char *context_filename;
	char *context_type;
	size_t context_size;
	struct sim_context *ctx;
	struct sim_buildlog *log;
	size_t produced;  /* log lines emitted so far */
	size_t delivered; /* events any stream has sent: where --reconnect continue resumes */
	char *final_event;
	int hold;
	bool released;
	bool waiting; /* stopped by the hold */
	struct event *timer;
	struct sim_stream *streams;
	double created_at, started_at, finished_at;
	int delete_count;
	int log_connects;
	int heartbeats; /* keep-alive comments sent on its streams */
};

/* What the builds with one cache key have built: their steps' signatures (buildlog.h). */
struct sim_layers {
	char *cache_key;
	uint64_t *sigs;
	size_t n;
};

/* --- helpers --- */

static bool sim_build_terminal(const struct sim_build *b)
{
	return b->state >= SIM_BUILD_SUCCEEDED;
}

struct sim_build *sim_builds_find(struct sim *sim, const char *id)
{
	for (size_t i = 0; i < sim->nbuilds; i++)
		if (strcmp(sim->builds[i]->id, id) == 0)
			return sim->builds[i];
	return NULL;
}

const char *sim_build_context_path(const struct sim_build *b)
{
	return b->context_path;
}

static void sim_time_field(struct json_object *o, const char *key, double t)
{
	char buf[32];
	if (t <= 0) {
		json_object_object_add(o, key, NULL);
		return;
	}
	sim_time_format(t, buf);
	json_object_object_add(o, key, json_object_new_string(buf));
}

static void sim_string_field(struct json_object *o, const char *key, const char *v)
{
	json_object_object_add(o, key, v ? json_object_new_string(v) : NULL);
}

struct json_object *sim_build_json(const struct sim_build *b, bool full)
{
	struct json_object *o = json_object_new_object();
	json_object_object_add(o, "id", json_object_new_string(b->id));
	json_object_object_add(o, "status",
	                       json_object_new_string(sim_build_state_names[b->state]));
	if (!full) {
		if (b->state == SIM_BUILD_SUCCEEDED && !b->sim->faults.status_no_image_ref)
			sim_string_field(o, "image_ref", b->image_ref);
		if (b->state >= SIM_BUILD_FAILED)
			sim_string_field(o, "error",
			                 b->state == SIM_BUILD_CANCELLED ? "build cancelled"
			                                                 : b->log->error);
		return o;
	}
	sim_time_field(o, "created_at", b->created_at);
	sim_time_field(o, "started_at", b->started_at);
	sim_time_field(o, "finished_at", b->finished_at);
	sim_string_field(o, "image_name", b->image_name);
	sim_string_field(o, "dockerfile", b->dockerfile);
	sim_string_field(o, "build_args", b->build_args);
	sim_string_field(o, "nydus_convert", b->nydus_convert);
	sim_string_field(o, "cache_key", b->cache_key);
	sim_string_field(o, "image_ref", b->image_ref);
	sim_string_field(o, "error",
	                 b->state == SIM_BUILD_CANCELLED ? "build cancelled"
	                 : b->state == SIM_BUILD_FAILED  ? b->log->error
	                                                 : NULL);
	json_object_object_add(o, "fields", json_object_get(b->fields));
	struct json_object *c = json_object_new_object();
	sim_string_field(c, "filename", b->context_filename);
	sim_string_field(c, "content_type", b->context_type);
	json_object_object_add(c, "size", json_object_new_int64((int64_t)b->context_size));
	sim_string_field(c, "path", b->context_path);
	json_object_object_add(c, "entries",
	                       json_object_new_int64((int64_t)sim_context_count(b->ctx)));
	json_object_object_add(c, "file_bytes",
	                       json_object_new_int64((int64_t)sim_context_bytes(b->ctx)));
	json_object_object_add(o, "context", c);
	json_object_object_add(o, "files", sim_context_files_json(b->ctx));
	sim_string_field(o, "dockerfile_text", sim_context_dockerfile(b->ctx));
	json_object_object_add(o, "log_lines", json_object_new_int64((int64_t)b->log->n));
	json_object_object_add(o, "lines_emitted", json_object_new_int64((int64_t)b->produced));
	json_object_object_add(
	    o, "hold",
	    b->hold == SIM_HOLD_NONE
	        ? json_object_new_boolean(0)
	        : json_object_new_string(b->hold == SIM_HOLD_START ? "start" : "end"));
	json_object_object_add(o, "held", json_object_new_boolean(b->waiting));
	json_object_object_add(o, "delete_count", json_object_new_int(b->delete_count));
	json_object_object_add(o, "log_connects", json_object_new_int(b->log_connects));
	json_object_object_add(o, "heartbeats", json_object_new_int(b->heartbeats));
	int active = 0;
	for (const struct sim_stream *s = b->streams; s != NULL; s = s->next)
		active++;
	json_object_object_add(o, "active_streams", json_object_new_int(active));
	return o;
}

/* --- streams --- */

static void sim_stream_pump(struct sim_stream *s);

static size_t sim_build_events(const struct sim_build *b)
{
	return b->produced + (b->final_event ? 1 : 0);
}

static void sim_stream_timer_arm(struct sim_stream *s, enum sim_stream_timer mode, int ms)
{
	struct timeval tv = {ms / 1000, (ms % 1000) * 1000};
	s->timer_mode = mode;
	evtimer_add(s->timer, &tv);
}

static void sim_stream_kick(struct sim_stream *s)
{
	if (!s->stalled)
		sim_stream_timer_arm(s, SIM_TIMER_KICK, 0);
}

/* Unlinks and frees the stream; its request is someone else's business now. */
static void sim_stream_free(struct sim_stream *s)
{
	struct sim_stream **pp = &s->build->streams;
	while (*pp != NULL && *pp != s)
		pp = &(*pp)->next;
	if (*pp == s)
		*pp = s->next;
	event_free(s->timer);
	free(s);
}

static void sim_stream_closed_cb(void *owner)
{
	sim_stream_free(owner);
}

static void sim_stream_flushed_cb(struct evhttp_connection *evcon, void *arg)
{
	struct sim_stream *s = arg;
	(void)evcon;
	s->flushing = false;
	sim_stream_kick(s);
}

static void sim_stream_start(struct sim_stream *s)
{
	s->started = true;
	sim_reply_stream_start(s->r, 200, "text/event-stream");
}

static void sim_stream_pump(struct sim_stream *s)
{
	struct sim_build *b = s->build;
	if (!s->started || s->flushing || s->stalled)
		return;
	size_t avail = sim_build_events(b);
	struct evbuffer *buf = evbuffer_new();
	while (s->next_event < avail && evbuffer_get_length(buf) < SIM_STREAM_CHUNK) {
		if (s->drop_after >= 0 && s->sent >= (size_t)s->drop_after)
			break;
		if (s->stall_pending && s->sent >= (size_t)s->stall_after)
			break;
		const char *data =
		    s->next_event < b->produced ? b->log->lines[s->next_event] : b->final_event;
		switch (b->sim->config.log_ids) {
		case SIM_IDS_ON:
			evbuffer_add_printf(buf, "id: %zu\n", s->next_event + 1);
			break;
		case SIM_IDS_OPAQUE:
			evbuffer_add_printf(buf, "id: %s:%zu\n", b->id, s->next_event + 1);
			break;
		case SIM_IDS_OFF:
			break;
		}
		evbuffer_add_printf(buf, "data: %s\n\n", data);
		s->next_event++;
		s->sent++;
	}
	if (s->next_event > b->delivered)
		b->delivered = s->next_event;
	if (evbuffer_get_length(buf) > 0) {
		s->flushing = true;
		sim_reply_stream_chunk(s->r, buf, sim_stream_flushed_cb, s);
		evbuffer_free(buf);
		return;
	}
	evbuffer_free(buf);
	if (s->drop_after >= 0 && s->sent >= (size_t)s->drop_after) {
		struct sim_req *r = s->r;
		sim_stream_free(s);
		sim_req_drop(r);
		return;
	}
	if (s->stall_pending && s->sent >= (size_t)s->stall_after) {
		s->stall_pending = false;
		s->stalled = true;
		sim_stream_timer_arm(s, SIM_TIMER_STALL, s->stall_ms);
		return;
	}
	if (b->final_event != NULL && s->next_event >= avail) {
		struct sim_req *r = s->r;
		sim_stream_free(s);
		sim_reply_stream_end(r);
		return;
	}
	if (b->sim->config.heartbeat_ms > 0)
		sim_stream_timer_arm(s, SIM_TIMER_HEARTBEAT, b->sim->config.heartbeat_ms);
}

static void sim_stream_timer_cb(evutil_socket_t fd, short what, void *arg)
{
	struct sim_stream *s = arg;
	(void)fd;
	(void)what;
	switch (s->timer_mode) {
	case SIM_TIMER_STALL:
		s->stalled = false;
		if (!s->started)
			sim_stream_start(s);
		break;
	case SIM_TIMER_HEARTBEAT:
		if (!s->flushing) {
			struct evbuffer *buf = evbuffer_new();
			evbuffer_add_printf(buf, ": keep-alive\n\n");
			s->build->heartbeats++;
			s->flushing = true;
			sim_reply_stream_chunk(s->r, buf, sim_stream_flushed_cb, s);
			evbuffer_free(buf);
			return;
		}
		break;
	case SIM_TIMER_KICK:
		break;
	}
	sim_stream_pump(s);
}

static void sim_build_notify(struct sim_build *b)
{
	for (struct sim_stream *s = b->streams; s != NULL; s = s->next)
		sim_stream_kick(s);
}

/* --- build progress --- */

static struct sim_layers *sim_layers_find(struct sim *sim, const char *cache_key)
{
	for (size_t i = 0; i < sim->nlayers; i++)
		if (strcmp(sim->layers[i].cache_key, cache_key) == 0)
			return &sim->layers[i];
	return NULL;
}

/* A build that succeeded with a cache key leaves its steps in the layer cache. */
static void sim_layers_add(struct sim *sim, const char *cache_key, const struct sim_buildlog *log)
{
	struct sim_layers *l = sim_layers_find(sim, cache_key);
	if (l == NULL) {
		sim->layers = xrealloc(sim->layers, (sim->nlayers + 1) * sizeof(*sim->layers));
		l = &sim->layers[sim->nlayers++];
		*l = (struct sim_layers){.cache_key = xstrdup(cache_key)};
	}
	l->sigs = xrealloc(l->sigs, (l->n + log->nsigs + 1) * sizeof(*l->sigs));
	memcpy(l->sigs + l->n, log->sigs, log->nsigs * sizeof(*l->sigs));
	l->n += log->nsigs;
}

static void sim_build_finish(struct sim_build *b)
{
	if (b->log->error != NULL) {
		struct json_object *msg = json_object_new_string(b->log->error);
		b->final_event =
		    xasprintf("{\"error\": %s}",
		              json_object_to_json_string_ext(msg, JSON_C_TO_STRING_NOSLASHESCAPE));
		json_object_put(msg);
		b->state = SIM_BUILD_FAILED;
	} else {
		b->final_event = xstrdup("{\"done\": true}");
		b->state = SIM_BUILD_SUCCEEDED;
		if (b->cache_key != NULL && *b->cache_key != '\0')
			sim_layers_add(b->sim, b->cache_key, b->log);
	}
	b->finished_at = now_seconds();
}

static void sim_build_schedule(struct sim_build *b)
{
	int ms = sim_faults_log_interval(b->sim);
	struct timeval tv = {ms / 1000, (ms % 1000) * 1000};
	evtimer_add(b->timer, &tv);
}

static void sim_build_tick_cb(evutil_socket_t fd, short what, void *arg)
{
	struct sim_build *b = arg;
	(void)fd;
	(void)what;
	if (b->state == SIM_BUILD_QUEUED) {
		b->state = SIM_BUILD_RUNNING;
		b->started_at = now_seconds();
		if (b->hold == SIM_HOLD_START && !b->released) {
			b->waiting = true;
			return;
		}
	}
	bool all = sim_faults_log_interval(b->sim) == 0;
	do {
		if (b->produced < b->log->n) {
			if (b->produced == b->log->burst_start &&
			    b->log->burst_end > b->log->burst_start)
				b->produced = b->log->burst_end;
			else
				b->produced++;
			/* CACHED steps take no time: their lines come with the one before. */
			while (b->produced < b->log->n && b->log->instant[b->produced])
				b->produced++;
		} else if (b->hold == SIM_HOLD_END && !b->released) {
			b->waiting = true;
			break;
		} else {
			sim_build_finish(b);
			break;
		}
	} while (all);
	sim_build_notify(b);
	if (!b->waiting && !sim_build_terminal(b))
		sim_build_schedule(b);
}

bool sim_build_release(struct sim_build *b)
{
	bool was = b->waiting;
	struct timeval now = {0, 0};
	b->released = true;
	if (b->waiting) {
		b->waiting = false;
		evtimer_add(b->timer, &now);
	}
	return was;
}

static void sim_build_cancel(struct sim_build *b)
{
	evtimer_del(b->timer);
	b->waiting = false;
	for (size_t i = b->produced; i < b->log->n; i++)
		free(b->log->lines[i]);
	b->log->n = b->produced;
	b->log->lines = xrealloc(b->log->lines, (b->log->n + 1) * sizeof(*b->log->lines));
	b->log->lines[b->log->n++] = xstrdup("CANCELED: build cancelled by request");
	b->produced = b->log->n;
	b->final_event = xstrdup("{\"error\": \"build cancelled\"}");
	b->state = SIM_BUILD_CANCELLED;
	b->finished_at = now_seconds();
	sim_build_notify(b);
}

static void sim_build_free(struct sim_build *b)
{
	while (b->streams != NULL)
		sim_stream_free(b->streams);
	if (b->timer != NULL)
		event_free(b->timer);
	if (b->context_path != NULL)
		unlink(b->context_path);
	json_object_put(b->fields);
	free(b->image_name);
	free(b->dockerfile);
	free(b->build_args);
	free(b->nydus_convert);
	free(b->cache_key);
	free(b->image_ref);
	free(b->context_path);
	free(b->context_filename);
	free(b->context_type);
	sim_context_free(b->ctx);
	sim_buildlog_free(b->log);
	free(b->final_event);
	free(b);
}

void sim_builds_free(struct sim *sim)
{
	for (size_t i = 0; i < sim->nbuilds; i++)
		sim_build_free(sim->builds[i]);
	free(sim->builds);
	sim->builds = NULL;
	sim->nbuilds = 0;
	for (size_t i = 0; i < sim->nlayers; i++) {
		free(sim->layers[i].cache_key);
		free(sim->layers[i].sigs);
	}
	free(sim->layers);
	sim->layers = NULL;
	sim->nlayers = 0;
}

/* --- submit --- */

static bool sim_is_lower_alnum(char c)
{
	return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9');
}

/* name:tag with a lower-case repository path; the namespace is the server's. */
static const char *sim_image_name_problem(const char *s)
{
	const char *colon = strrchr(s, ':');
	size_t len = strlen(s);
	if (len == 0)
		return "image_name is empty";
	if (len > 255)
		return "image_name is longer than 255 characters";
	if (colon == NULL || colon == s || colon[1] == '\0')
		return "image_name must be name:tag";
	for (const char *p = s; p < colon; p++) {
		if (!sim_is_lower_alnum(*p) && *p != '.' && *p != '_' && *p != '-' && *p != '/')
			return "image_name has a character not allowed in a repository name";
		if (*p == '/' && (p == s || p[-1] == '/' || p + 1 == colon))
			return "image_name has an empty path component";
	}
	if (!sim_is_lower_alnum(s[0]) || !sim_is_lower_alnum(colon[-1]))
		return "image_name must start and end its name with a letter or digit";
	if (strlen(colon + 1) > 128)
		return "image_name tag is longer than 128 characters";
	for (const char *p = colon + 1; *p != '\0'; p++) {
		bool ok = sim_is_lower_alnum(*p) || (*p >= 'A' && *p <= 'Z') || *p == '_' ||
		          (p != colon + 1 && (*p == '.' || *p == '-'));
		if (!ok)
			return "image_name tag has a character not allowed in a tag";
	}
	return NULL;
}

static const char *sim_cache_key_problem(const char *s)
{
	size_t len = strlen(s);
	if (len == 0)
		return "cache_key is empty (omit the part to use the default)";
	if (len > 255)
		return "cache_key is longer than 255 characters";
	if (strchr(s, ':') != NULL)
		return "cache_key must not carry a tag";
	for (const char *p = s; *p != '\0'; p++) {
		if (!sim_is_lower_alnum(*p) && *p != '.' && *p != '_' && *p != '-' && *p != '/')
			return "cache_key may only hold lower-case letters, digits, '.', '_', '-' "
			       "and '/'";
		if (*p == '/' && (p == s || p[1] == '\0' || p[1] == '/'))
			return "cache_key has an empty path component";
	}
	return NULL;
}

static const char *sim_build_args_problem(const char *s, size_t len)
{
	struct json_tokener *tok = json_tokener_new();
	struct json_object *o = json_tokener_parse_ex(tok, s, (int)len);
	const char *problem = NULL;
	if (o == NULL || json_tokener_get_error(tok) != json_tokener_success ||
	    json_tokener_get_parse_end(tok) != len)
		problem = "build_args is not valid JSON";
	else if (!json_object_is_type(o, json_type_object))
		problem = "build_args must be a JSON object";
	else {
		json_object_object_foreach(o, k, v)
		{
			(void)k;
			if (!json_object_is_type(v, json_type_string))
				problem = "build_args values must be strings";
		}
	}
	json_object_put(o);
	json_tokener_free(tok);
	return problem;
}

/* What is wrong with the text fields, naming the part in *param; NULL if nothing. */
static const char *sim_fields_problem(const struct sim_build *b, const char **param)
{
	const char *problem;
	*param = "image_name";
	if ((problem = sim_image_name_problem(b->image_name)) != NULL)
		return problem;
	*param = "dockerfile";
	if (b->dockerfile[0] == '\0')
		return "dockerfile is empty";
	*param = "build_args";
	if ((problem = sim_build_args_problem(b->build_args, strlen(b->build_args))) != NULL)
		return problem;
	*param = "nydus_convert";
	if (strcmp(b->nydus_convert, "true") != 0 && strcmp(b->nydus_convert, "false") != 0)
		return "nydus_convert must be \"true\" or \"false\"";
	*param = "cache_key";
	if (b->cache_key != NULL)
		return sim_cache_key_problem(b->cache_key);
	return NULL;
}

/* A text part's value; NULL when it holds a NUL byte. */
static char *sim_part_text(const struct multipart_part *p)
{
	if (memchr(p->data, '\0', p->len) != NULL)
		return NULL;
	return xstrndup(p->data, p->len);
}

static int sim_write_file(const char *path, const void *data, size_t len)
{
	int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
	const char *p = data;
	if (fd < 0)
		return -1;
	while (len > 0) {
		ssize_t n = write(fd, p, len);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0) {
			close(fd);
			unlink(path);
			return -1;
		}
		p += n;
		len -= (size_t)n;
	}
	return close(fd);
}

static struct json_object *sim_fields_json(const struct multipart_form *form)
{
	struct json_object *o = json_object_new_object();
	for (size_t i = 0; i < form->nparts; i++) {
		const struct multipart_part *p = &form->parts[i];
		if (p->filename != NULL) {
			struct json_object *f = json_object_new_object();
			sim_string_field(f, "filename", p->filename);
			sim_string_field(f, "content_type", p->content_type);
			json_object_object_add(f, "size", json_object_new_int64((int64_t)p->len));
			json_object_object_add(o, p->name, f);
		} else {
			json_object_object_add(o, p->name,
			                       json_object_new_string_len(p->data, (int)p->len));
		}
	}
	return o;
}

static void sim_submit_fail(struct sim_req *r)
{
	struct sim_faults *f = &r->sim->faults;
	char ra[32];
	f->submit_fail_count--;
	snprintf(ra, sizeof(ra), "%d", f->submit_fail_retry_after);
	sim_reply_json_hdr(r, f->submit_fail_status,
	                   sim_error_body("injected_fault", "submit failed (fault injected)", NULL),
	                   f->submit_fail_retry_after >= 0 ? "Retry-After" : NULL, ra);
}

/* The text parts of a submit and where they are kept. */
static const struct sim_text_part {
	const char *name;
	size_t offset;
	bool required;
} sim_text_parts[] = {
    {"image_name", offsetof(struct sim_build, image_name), true},
    {"dockerfile", offsetof(struct sim_build, dockerfile), true},
    {"build_args", offsetof(struct sim_build, build_args), true},
    {"nydus_convert", offsetof(struct sim_build, nydus_convert), true},
    {"cache_key", offsetof(struct sim_build, cache_key), false},
};

#define SIM_TEXT_PARTS (sizeof(sim_text_parts) / sizeof(sim_text_parts[0]))

/* Checks presence and uniqueness of the parts; answers 400 itself and returns -1. */
static int sim_parts_check(struct sim_req *r, const struct multipart_form *form)
{
	const char *missing = NULL, *repeated = NULL;
	for (size_t i = 0; i <= SIM_TEXT_PARTS; i++) {
		const char *name = i < SIM_TEXT_PARTS ? sim_text_parts[i].name : "context";
		bool required = i < SIM_TEXT_PARTS ? sim_text_parts[i].required : true;
		size_t n = multipart_form_count(form, name);
		if (n == 0 && required && missing == NULL)
			missing = name;
		if (n > 1 && repeated == NULL)
			repeated = name;
	}
	if (missing == NULL && repeated == NULL)
		return 0;
	char *msg = missing ? xasprintf("missing part \"%s\"", missing)
	                    : xasprintf("part \"%s\" given more than once", repeated);
	sim_reply_bad_param(r, missing ? missing : repeated, missing ? "missing" : "duplicate",
	                    msg);
	free(msg);
	return -1;
}

void sim_builds_submit(struct sim_req *r)
{
	struct sim *sim = r->sim;
	struct multipart_form *form = NULL;
	struct sim_build *b = NULL;
	char *boundary = NULL, *err = NULL, *msg = NULL;
	const char *problem = NULL, *param = NULL;
	size_t len;

	if (sim->faults.submit_fail_count > 0) {
		sim_submit_fail(r);
		return;
	}
	if (multipart_boundary(sim_req_header(r, "Content-Type"), &boundary, &err) < 0) {
		sim_reply_bad_param(r, "Content-Type", "invalid", err);
		goto out;
	}
	const char *body = sim_req_body(r, &len);
	if (multipart_parse(body, len, boundary, &form, &err) < 0) {
		sim_reply_bad_param(r, "body", "malformed_multipart", err);
		goto out;
	}
	if (sim_parts_check(r, form) < 0)
		goto out;

	b = xcalloc(1, sizeof(*b));
	b->sim = sim;
	for (size_t i = 0; i < SIM_TEXT_PARTS; i++) {
		const struct multipart_part *p = multipart_form_get(form, sim_text_parts[i].name);
		if (p == NULL)
			continue;
		char *v = p->filename == NULL ? sim_part_text(p) : NULL;
		if (v == NULL) {
			msg = xasprintf("part \"%s\" must be a text field", sim_text_parts[i].name);
			sim_reply_bad_param(r, sim_text_parts[i].name, "invalid", msg);
			goto out;
		}
		*(char **)((char *)b + sim_text_parts[i].offset) = v;
	}
	if ((problem = sim_fields_problem(b, &param)) != NULL) {
		sim_reply_bad_param(r, param, "invalid", problem);
		goto out;
	}
	const struct multipart_part *ctxp = multipart_form_get(form, "context");
	if (ctxp->filename == NULL) {
		sim_reply_bad_param(r, "context", "invalid",
		                    "part \"context\" must be a file (filename missing)");
		goto out;
	}
	b->ctx = sim_context_new(ctxp->data, ctxp->len, b->dockerfile, &err);
	if (b->ctx == NULL) {
		sim_reply_bad_param(r, strstr(err, "dockerfile") == err ? "dockerfile" : "context",
		                    "invalid", err);
		goto out;
	}

	uuid_v4(b->id);
	b->fields = sim_fields_json(form);
	b->context_filename = xstrdup(ctxp->filename);
	b->context_type = ctxp->content_type ? xstrdup(ctxp->content_type) : NULL;
	b->context_size = ctxp->len;
	b->context_path = xasprintf("%s/%s.tar.gz", sim->tmpdir, b->id);
	if (sim_write_file(b->context_path, ctxp->data, ctxp->len) < 0) {
		msg = xasprintf("cannot store the context: %s", strerror(errno));
		free(b->context_path);
		b->context_path = NULL;
		sim_reply_error(r, 500, "internal", msg);
		goto out;
	}
	b->image_ref = xasprintf("%s/%s", sim->config.registry, b->image_name);
	uint64_t context_hash = 1469598103934665603ull;
	for (size_t i = 0; i < ctxp->len; i++)
		context_hash = (context_hash ^ (unsigned char)ctxp->data[i]) * 1099511628211ull;
	const struct sim_layers *layers = b->cache_key != NULL && *b->cache_key != '\0'
	                                      ? sim_layers_find(sim, b->cache_key)
	                                      : NULL;
	struct sim_buildlog_params params = {
	    .dockerfile_text = sim_context_dockerfile(b->ctx),
	    .dockerfile_name = b->dockerfile,
	    .image_ref = b->image_ref,
	    .context_bytes = sim_context_bytes(b->ctx),
	    .nydus = strcmp(b->nydus_convert, "true") == 0,
	    .extra_lines = (size_t)sim_faults_log_lines(sim),
	    .forced_error = sim->faults.build_fail,
	    .context_hash = context_hash,
	    .cached = layers ? layers->sigs : NULL,
	    .ncached = layers ? layers->n : 0,
	};
	b->log = sim_buildlog_new(&params);
	b->hold = sim->faults.hold;
	b->state = SIM_BUILD_QUEUED;
	b->created_at = now_seconds();
	b->timer = evtimer_new(sim->base, sim_build_tick_cb, b);
	sim->builds = xrealloc(sim->builds, (sim->nbuilds + 1) * sizeof(*sim->builds));
	sim->builds[sim->nbuilds++] = b;
	sim_build_schedule(b);
	struct json_object *answer = json_object_new_object();
	json_object_object_add(answer, "build_id", json_object_new_string(b->id));
	b = NULL;
	sim_reply_json(r, sim->config.submit_status, answer);
out:
	if (b != NULL)
		sim_build_free(b);
	multipart_form_free(form);
	free(boundary);
	free(err);
	free(msg);
}

/* --- status, cancel, logs --- */

void sim_builds_status(struct sim_req *r, const char *id)
{
	struct sim_build *b = sim_builds_find(r->sim, id);
	if (b == NULL) {
		sim_reply_error(r, 404, "not_found", "build not found");
		return;
	}
	sim_reply_json(r, 200, sim_build_json(b, false));
}

void sim_builds_cancel(struct sim_req *r, const char *id)
{
	struct sim_build *b = sim_builds_find(r->sim, id);
	struct json_object *rec = json_object_new_object();
	char at[32];
	sim_time_format(now_seconds(), at);
	json_object_object_add(rec, "build_id", json_object_new_string(id));
	json_object_object_add(rec, "at", json_object_new_string(at));
	json_object_object_add(rec, "found", json_object_new_boolean(b != NULL));
	json_object_object_add(rec, "was",
	                       b ? json_object_new_string(sim_build_state_names[b->state]) : NULL);
	json_object_array_add(r->sim->deletes, rec);
	if (b == NULL) {
		sim_reply_error(r, 404, "not_found", "build not found");
		return;
	}
	b->delete_count++;
	if (!sim_build_terminal(b))
		sim_build_cancel(b);
	sim_reply_json(r, 200, sim_build_json(b, false));
}

/* The event after Last-Event-ID lei into *from; *from is left alone for an id that
 * is not one of this build's (a numeric one is always taken, as before --log-ids). */
static void sim_stream_resume_point(const struct sim_build *b, const char *lei, size_t *from)
{
	const char *num = lei;
	size_t idlen = strlen(b->id);
	char *end;

	if (lei == NULL)
		return;
	if (strncmp(lei, b->id, idlen) == 0 && lei[idlen] == ':')
		num = lei + idlen + 1;
	errno = 0;
	unsigned long long n = strtoull(num, &end, 10);
	if (errno == 0 && end != num && *end == '\0' && num[0] != '-')
		*from = (size_t)n;
}

const char *sim_builds_by_image(const struct sim *sim, const char *image)
{
	for (size_t i = 0; i < sim->nbuilds; i++)
		if (image != NULL && strcmp(sim->builds[i]->image_ref, image) == 0)
			return sim->builds[i]->id;
	return NULL;
}

struct json_object *sim_build_log_json(const struct sim_build *b)
{
	struct json_object *o = json_object_new_object(), *lines = json_object_new_array();
	for (size_t i = 0; i < b->produced; i++)
		json_object_array_add(lines, json_object_new_string(b->log->lines[i]));
	json_object_object_add(o, "lines", lines);
	sim_string_field(o, "final", b->final_event);
	json_object_object_add(o, "delivered", json_object_new_int64((int64_t)b->delivered));
	return o;
}

void sim_builds_logs(struct sim_req *r, const char *id)
{
	struct sim *sim = r->sim;
	struct sim_build *b = sim_builds_find(sim, id);
	if (b == NULL) {
		sim_reply_error(r, 404, "not_found", "build not found");
		return;
	}
	b->log_connects++;
	if (sim->faults.logs_404 > 0) {
		sim->faults.logs_404--;
		sim_reply_error(r, 404, "not_found", "build pod is not ready yet");
		return;
	}
	struct sim_stream *s = xcalloc(1, sizeof(*s));
	s->build = b;
	s->r = r;
	s->drop_after = -1;
	s->timer = evtimer_new(sim->base, sim_stream_timer_cb, s);
	size_t from = 0;
	if (sim->config.reconnect == SIM_RECONNECT_CONTINUE)
		from = b->delivered;
	else if (sim->config.reconnect == SIM_RECONNECT_RESUME)
		sim_stream_resume_point(b, sim_req_header(r, "Last-Event-ID"), &from);
	/* After the end, a reconnect is told the end again. */
	if (b->final_event != NULL && from >= sim_build_events(b))
		from = sim_build_events(b) - 1;
	s->next_event = from;
	if (sim->faults.logs_drop_count > 0 && sim->faults.logs_drop_after >= 0) {
		sim->faults.logs_drop_count--;
		s->drop_after = sim->faults.logs_drop_after;
	}
	if (sim->faults.logs_stall_count > 0) {
		sim->faults.logs_stall_count--;
		s->stall_ms = sim->faults.logs_stall_ms;
		s->stall_after = sim->faults.logs_stall_after;
		s->stall_pending = s->stall_after > 0;
	}
	s->next = b->streams;
	b->streams = s;
	sim_req_hold(r, sim_stream_closed_cb, s);
	if (s->stall_ms > 0 && s->stall_after == 0) {
		s->stalled = true;
		sim_stream_timer_arm(s, SIM_TIMER_STALL, s->stall_ms);
		return;
	}
	sim_stream_start(s);
	sim_stream_pump(s);
}
