/*
 * A job's events: appended in memory, handed to watchers as they happen, written to
 * the store in batches (one transaction per batch, or with the next state change).
 * A write that fails marks the job failing (storage_error, and its fail_ev, which the
 * lifecycle ends it from).
 * Two bounds keep the database from growing with what a build prints: a job keeps at
 * most MAX_EVENTS_PER_JOB events, and at most max_log_bytes of log text; past the
 * latter, lines are counted and one marker says so (as BuildKit clips its output).
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/event.h>

#include "config.h"
#include "daemon.h"
#include "job.h"
#include "log.h"
#include "metrics.h"
#include "store.h"
#include "util.h"

#define FLUSH_DELAY_MS    100
#define FLUSH_MAX_PENDING 512
/* Beyond this many events a job's log lines are dropped (state changes still count). */
#define MAX_EVENTS_PER_JOB 1000000

static void job_event_clear(struct store_event *ev)
{
	free(ev->kind);
	free(ev->step);
	free(ev->text);
	free(ev->data_json);
	memset(ev, 0, sizeof(*ev));
}

static void job_drop_pending(struct job *j)
{
	for (size_t i = 0; i < j->npending; i++)
		job_event_clear(&j->pending[i]);
	j->npending = 0;
}

/*
 * When the write fails (disk full, I/O error) the events are dropped, so memory stays
 * bounded, and the job is failed from its own event soon after: nothing retries the
 * write line by line, and no retry timer of the backend can displace it.
 */
int job_flush(struct job *j, char **err)
{
	char *e = NULL;
	int rc = store_job_save_with_events(j->js->d->store, j->rec, j->pending, j->npending, &e);
	job_drop_pending(j);
	if (rc != 0) {
		log_job(LOG_LEVEL_WARN,
		        &(struct log_job){j->rec->id, j->rec->state, (long long)j->rec->uid},
		        "job %s: cannot write to the database: %s", j->rec->id, e);
		if (j->storage_error == NULL && !j->dead) {
			j->storage_error = xstrdup(e);
			event_active(j->fail_ev, 0, 0);
		}
	}
	if (err)
		*err = e;
	else
		free(e);
	return rc;
}

static void job_flush_cb(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	struct job *j = arg;
	if (j->npending)
		job_flush(j, NULL);
}

void job_events_init(struct job *j)
{
	TAILQ_INIT(&j->watches);
	j->flush_ev = evtimer_new(j->js->d->base, job_flush_cb, j);
}

void job_events_free(struct job *j)
{
	job_drop_pending(j);
	free(j->pending);
	event_free(j->flush_ev);
	struct job_watch *w;
	while ((w = TAILQ_FIRST(&j->watches))) {
		TAILQ_REMOVE(&j->watches, w, entry);
		free(w);
	}
}

char *job_line_text(const char *text, size_t len)
{
	size_t nul = 0;
	for (size_t i = 0; i < len; i++)
		nul += text[i] == '\0';
	char *out = xmalloc(len + 2 * nul + 1), *o = out;
	for (size_t i = 0; i < len; i++) {
		if (text[i] == '\0') {
			memcpy(o, "\xe2\x90\x80", 3); /* U+2400 SYMBOL FOR NULL */
			o += 3;
		} else {
			*o++ = text[i];
		}
	}
	*o = '\0';
	return out;
}

/* Whether a log event may still be kept; the first refusal leaves a marker. */
static bool job_log_room(struct job *j, const char **kind, const char **text, json_object **data)
{
	if (j->rec->last_seq >= MAX_EVENTS_PER_JOB) {
		if (j->log_capped)
			return false;
		/* One marker, then silence: the database stays bounded whatever is printed. */
		j->log_capped = true;
		*kind = "warning";
		*text = "the log has more than a million events; further lines are not kept";
		json_object_put(*data);
		*data = NULL;
		return true;
	}
	int64_t max = (int64_t)j->js->d->config->max_log_bytes;
	int64_t size = (int64_t)strlen(*text);
	if (*data != NULL)
		size +=
		    (int64_t)strlen(json_object_to_json_string_ext(*data, JSON_C_TO_STRING_PLAIN));
	if (!j->log_clipped && j->log_bytes + size <= max) {
		j->log_bytes += size;
		return true;
	}
	j->lines_dropped++;
	if (j->log_clipped)
		return false;
	j->log_clipped = true;
	static char marker[128];
	char *b = format_bytes((uint64_t)max);
	snprintf(marker, sizeof(marker), "[output clipped, log limit %s reached]", b);
	free(b);
	*kind = "warning";
	*text = marker;
	json_object_put(*data);
	*data = NULL;
	return true;
}

void job_emit(struct job *j, const char *kind, const char *step, const char *text,
              json_object *data)
{
	if (text == NULL)
		text = "";
	if (strcmp(kind, "log") == 0)
		metrics_log_line();
	/* What the builder or the engine prints is bounded; the daemon's own words are few. */
	if ((strcmp(kind, "log") == 0 || strcmp(kind, "progress") == 0) &&
	    !job_log_room(j, &kind, &text, &data)) {
		json_object_put(data);
		return;
	}
	if (j->npending == j->cap) {
		j->cap = j->cap ? j->cap * 2 : 16;
		j->pending = xrealloc(j->pending, j->cap * sizeof(*j->pending));
	}
	struct store_event *ev = &j->pending[j->npending++];
	memset(ev, 0, sizeof(*ev));
	ev->seq = ++j->rec->last_seq;
	ev->time = now_seconds();
	ev->kind = xstrdup(kind);
	ev->step = step ? xstrdup(step) : NULL;
	ev->text = xstrdup(text);
	ev->data_json =
	    data ? xstrdup(json_object_to_json_string_ext(data, JSON_C_TO_STRING_PLAIN)) : NULL;
	json_object_put(data);

	/*
	 * A callback may unwatch itself or, when a dropped connection closes several
	 * follows at once, others: those are only marked while the list is walked.
	 */
	j->emitting++;
	struct job_watch *w;
	TAILQ_FOREACH(w, &j->watches, entry)
	{
		if (!w->gone)
			w->cbs.on_event(w->arg, j->rec->id, ev);
	}
	if (--j->emitting == 0) {
		struct job_watch *next;
		for (w = TAILQ_FIRST(&j->watches); w; w = next) {
			next = TAILQ_NEXT(w, entry);
			if (w->gone) {
				TAILQ_REMOVE(&j->watches, w, entry);
				free(w);
			}
		}
	}

	if (j->storage_error) {
		if (j->npending >= FLUSH_MAX_PENDING)
			job_drop_pending(j); /* the job is failing: keep memory bounded */
	} else if (j->npending >= FLUSH_MAX_PENDING) {
		job_flush(j, NULL);
	} else if (!evtimer_pending(j->flush_ev, NULL)) {
		struct timeval tv = {0, FLUSH_DELAY_MS * 1000};
		evtimer_add(j->flush_ev, &tv);
	}
}

void job_log(struct job *j, const char *step, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	char *text = xvasprintf(fmt, ap);
	va_end(ap);
	job_emit(j, "log", step, text, NULL);
	free(text);
}

void job_warn(struct job *j, const char *step, const char *text)
{
	job_emit(j, "warning", step, text, NULL);
}

void job_end_watches(struct job *j)
{
	struct job_watch *w;
	while ((w = TAILQ_FIRST(&j->watches))) {
		TAILQ_REMOVE(&j->watches, w, entry);
		if (!w->gone)
			w->cbs.on_end(w->arg, j->rec);
		free(w);
	}
}

struct job_watch *job_watch_add(struct job *j, const struct job_watch_cbs *cbs, void *arg)
{
	struct job_watch *w = xcalloc(1, sizeof(*w));
	w->job = j;
	w->cbs = *cbs;
	w->arg = arg;
	TAILQ_INSERT_TAIL(&j->watches, w, entry);
	return w;
}

void job_watch_remove(struct job_watch *w)
{
	if (w->job->emitting) {
		w->gone = true;
		return;
	}
	TAILQ_REMOVE(&w->job->watches, w, entry);
	free(w);
}
