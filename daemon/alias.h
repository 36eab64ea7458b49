/*
 * Who may point an alias where.  An alias is shared by the whole project: once one
 * user's build holds it, another must not move it.  Root, the admin group and the
 * daemon's own user may set any alias; anybody else may set one only if it does not
 * exist yet or points at a snapshot built by one of their own jobs — the daemon tags
 * every snapshot it registers with snapbuild.job=<job id>, and the job record says
 * whose it is.  The same rule serves snapshot.alias, build.submit and build.retry
 * (before anything is taken in or uploaded) and the aliasing step of a build (just
 * before the alias moves, as the holder may have changed meanwhile).
 */
#ifndef SNAPBUILD_ALIAS_H
#define SNAPBUILD_ALIAS_H

#include <json-c/json.h>
#include <stdbool.h>
#include <sys/types.h>

struct api;
struct api_error;
struct api_op;
struct store;

#define ALIAS_JOB_TAG "snapbuild.job"

enum alias_verdict {
	ALIAS_FREE,  /* nobody holds it */
	ALIAS_YOURS, /* it points at a snapshot one of uid's jobs built */
	ALIAS_TAKEN, /* it points at somebody else's snapshot */
	ALIAS_ERROR, /* the API could not tell (err says why) */
};

/* Was snapshot s (an API object) built by one of uid's jobs, by its snapbuild.job tag? */
bool alias_snapshot_built_by(struct store *store, json_object *s, uid_t uid);

/*
 * Asks the API who holds alias and judges it for uid; cb runs once on the loop with
 * the verdict, the holder's snapshot id when there is one, and err for ALIAS_ERROR.
 * Returns the request (api_op_cancel stops it; cb then does not run).
 */
struct api_op *alias_check(struct api *api, struct store *store, const char *alias, uid_t uid,
                           void (*cb)(void *arg, enum alias_verdict v, const char *holder_id,
                                      const struct api_error *err),
                           void *arg);

/* The words of a refusal, for every place that refuses. */
#define ALIAS_TAKEN_HINT                                                                           \
	"only root, the admin group, the daemon's own user and the owner of the job that "         \
	"built the snapshot an alias points at may move it: choose another alias"

#endif
