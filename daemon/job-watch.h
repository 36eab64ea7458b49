/*
 * What a watcher of a job is told (jobs_watch, jobs.h): shared by the public interface
 * and the engine's insides, which hand the events out (job-events.c).
 */
#ifndef SNAPBUILD_JOB_WATCH_H
#define SNAPBUILD_JOB_WATCH_H

struct store_event;
struct store_job;

struct job_watch_cbs {
	/* A new event, in seq order, as it happens. */
	void (*on_event)(void *arg, const char *job_id, const struct store_event *ev);
	/* The job reached a terminal state; the watch is gone after this returns. */
	void (*on_end)(void *arg, const struct store_job *job);
};

#endif
