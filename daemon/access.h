/*
 * Who may see and control what: a caller sees its own jobs; root and members of the
 * configured admin group see everyone's.  Decisions use the peer credentials read
 * with SO_PEERCRED when the connection was accepted.
 */
#ifndef SNAPBUILD_ACCESS_H
#define SNAPBUILD_ACCESS_H

#include <stdbool.h>
#include <stdint.h>

struct config;
struct rpc_peer;

/* Root, or a member (primary or supplementary) of config->admin_group. */
bool access_is_admin(const struct config *cfg, const struct rpc_peer *peer);
/* May this peer see and control an object owned by owner_uid? */
bool access_may_see(const struct config *cfg, const struct rpc_peer *peer, int64_t owner_uid);

#endif
