/*
 * The states of a job and the one table of moves between them.  Names exist only at
 * the edges (the store's column, JSON, the CLI); the engine speaks enum job_state.
 *
 *   queued → uploading → building → registering → aliasing → succeeded     (remote)
 *   queued → building → pushing → registering → …                          (local)
 *   any active state → cancelling → cancelled, or straight to cancelled or failed
 *
 * "packing" is what an older daemon, which packed contexts itself, could leave in the
 * store; a job found in it is failed at recovery.
 */
#ifndef SNAPBUILD_JOB_STATE_H
#define SNAPBUILD_JOB_STATE_H

#include <stdbool.h>

enum job_state {
	JOB_PACKING,
	JOB_QUEUED,
	JOB_UPLOADING,
	JOB_BUILDING,
	JOB_PUSHING,
	JOB_REGISTERING,
	JOB_ALIASING,
	JOB_CANCELLING,
	JOB_SUCCEEDED,
	JOB_FAILED,
	JOB_CANCELLED,
	JOB_NSTATES,
};

const char *job_state_name(enum job_state s);
/* false when name is no state */
bool job_state_parse(const char *name, enum job_state *out);
bool job_state_is_terminal(enum job_state s);
/* Whether the table allows from → to. */
bool job_state_may_move(enum job_state from, enum job_state to);

#endif
