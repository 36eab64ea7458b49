/*
 * Daemon-wide helpers that any module may call: the systemd status line and the
 * uptime.  Start-up and shutdown themselves are in main.c, step by step.
 */
#include "daemon.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>

#include "log.h"
#include "store.h"
#include "systemd.h"
#include "util.h"

void daemon_status_update(struct daemon *d)
{
	struct store_counts n;
	char *err = NULL;
	char buf[256];

	if (d->store == NULL || store_job_counts(d->store, &n, &err) < 0) {
		if (err != NULL)
			log_warnx("status: %s", err);
		free(err);
		systemd_notify("STATUS=ready");
		return;
	}
	int64_t active = n.packing + n.uploading + n.building + n.pushing + n.registering +
	                 n.aliasing + n.cancelling;
	snprintf(buf, sizeof(buf),
	         "STATUS=%" PRId64 " queued, %" PRId64 " active, %" PRId64 " succeeded, %" PRId64
	         " failed, %" PRId64 " cancelled",
	         n.queued, active, n.succeeded, n.failed, n.cancelled);
	systemd_notify(buf);
}

double daemon_uptime(const struct daemon *d)
{
	return now_seconds() - d->started_at;
}
