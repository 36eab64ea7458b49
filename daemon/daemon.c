/*
 * Daemon-wide helpers that any module may call: the systemd status line and the
 * uptime.  Start-up and shutdown themselves are in main.c, step by step.
 */
#include "daemon.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>

#include "job-state.h"
#include "log.h"
#include "store.h"
#include "systemd.h"
#include "util.h"

struct daemon_counts {
	int64_t queued, active, succeeded, failed, cancelled;
};

static void daemon_count_cb(void *arg, const char *state, int64_t n)
{
	struct daemon_counts *c = arg;
	enum job_state s;
	if (!job_state_parse(state, &s))
		return;
	*(s == JOB_QUEUED      ? &c->queued
	  : s == JOB_SUCCEEDED ? &c->succeeded
	  : s == JOB_FAILED    ? &c->failed
	  : s == JOB_CANCELLED ? &c->cancelled
	                       : &c->active) += n;
}

void daemon_status_update(struct daemon *d)
{
	struct daemon_counts n = {0};
	char *err = NULL;
	char buf[256];

	if (d->store == NULL || store_job_counts(d->store, daemon_count_cb, &n, &err) < 0) {
		if (err != NULL)
			log_warnx("status: %s", err);
		free(err);
		systemd_notify("STATUS=ready");
		return;
	}
	snprintf(buf, sizeof(buf),
	         "STATUS=%" PRId64 " queued, %" PRId64 " active, %" PRId64 " succeeded, %" PRId64
	         " failed, %" PRId64 " cancelled",
	         n.queued, n.active, n.succeeded, n.failed, n.cancelled);
	systemd_notify(buf);
}

double daemon_uptime(const struct daemon *d)
{
	return now_seconds() - d->started_at;
}
