/*
 * Job states and their moves (job-state.h).
 */
#include "job-state.h"

#include <string.h>

#define BIT(s)  (1u << (s))
#define ENDINGS (BIT(JOB_FAILED) | BIT(JOB_CANCELLED))

static const struct {
	const char *name;
	unsigned next; /* the states it may move to */
} job_states[JOB_NSTATES] = {
    [JOB_PACKING] = {"packing", ENDINGS},
    /* queued → queued: a new job announces the state its record was written in.
     * queued → aliasing or succeeded: a reused build (job-reuse.c) has its snapshot. */
    [JOB_QUEUED] = {"queued", BIT(JOB_QUEUED) | BIT(JOB_UPLOADING) | BIT(JOB_BUILDING) |
                                  BIT(JOB_ALIASING) | BIT(JOB_SUCCEEDED) | ENDINGS},
    /* A cancel while the submit is in flight waits for its answer (cancelling);
     * uploading → uploading: after a restart the upload starts over. */
    [JOB_UPLOADING] = {"uploading",
                       BIT(JOB_UPLOADING) | BIT(JOB_BUILDING) | BIT(JOB_CANCELLING) | ENDINGS},
    [JOB_BUILDING] = {"building",
                      BIT(JOB_PUSHING) | BIT(JOB_REGISTERING) | BIT(JOB_CANCELLING) | ENDINGS},
    /* pushing → building: after a restart a local build starts over. */
    [JOB_PUSHING] = {"pushing",
                     BIT(JOB_BUILDING) | BIT(JOB_REGISTERING) | BIT(JOB_CANCELLING) | ENDINGS},
    /* A cancel while registering waits for the answer, then retires what it made. */
    [JOB_REGISTERING] = {"registering",
                         BIT(JOB_ALIASING) | BIT(JOB_SUCCEEDED) | BIT(JOB_CANCELLING) | ENDINGS},
    [JOB_ALIASING] = {"aliasing", BIT(JOB_SUCCEEDED) | ENDINGS},
    [JOB_CANCELLING] = {"cancelling", ENDINGS},
    [JOB_SUCCEEDED] = {"succeeded", 0},
    [JOB_FAILED] = {"failed", 0},
    [JOB_CANCELLED] = {"cancelled", 0},
};

const char *job_state_name(enum job_state s)
{
	return s < JOB_NSTATES ? job_states[s].name : "unknown";
}

bool job_state_parse(const char *name, enum job_state *out)
{
	for (int s = 0; s < JOB_NSTATES; s++) {
		if (name != NULL && strcmp(job_states[s].name, name) == 0) {
			*out = (enum job_state)s;
			return true;
		}
	}
	return false;
}

bool job_state_is_terminal(enum job_state s)
{
	return s == JOB_SUCCEEDED || s == JOB_FAILED || s == JOB_CANCELLED;
}

bool job_state_may_move(enum job_state from, enum job_state to)
{
	return from < JOB_NSTATES && to < JOB_NSTATES && (job_states[from].next & BIT(to)) != 0;
}
