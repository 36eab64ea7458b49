/*
 * Access decisions from peer credentials.  Group membership is looked up in the
 * group database each time, so adding a user to the admin group takes effect for
 * their next request without restarting the daemon.
 */
#include "access.h"

#include <grp.h>
#include <pwd.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "config.h"
#include "peer.h"
#include "util.h"

bool access_is_admin(const struct config *cfg, const struct rpc_peer *peer)
{
	if (peer->uid == 0)
		return true;
	if (cfg->admin_group == NULL || *cfg->admin_group == '\0')
		return false;
	struct group *gr = getgrnam(cfg->admin_group);
	if (gr == NULL)
		return false;
	gid_t admin = gr->gr_gid;
	if (peer->gid == admin)
		return true;
	struct passwd *pw = getpwuid(peer->uid);
	if (pw == NULL)
		return false;
	int n = 64;
	gid_t *groups = xcalloc((size_t)n, sizeof(gid_t));
	if (getgrouplist(pw->pw_name, pw->pw_gid, groups, &n) < 0) {
		groups = xrealloc(groups, (size_t)n * sizeof(gid_t));
		getgrouplist(pw->pw_name, pw->pw_gid, groups, &n);
	}
	bool member = false;
	for (int i = 0; i < n && !member; i++)
		member = groups[i] == admin;
	free(groups);
	return member;
}

bool access_may_see(const struct config *cfg, const struct rpc_peer *peer, int64_t owner_uid)
{
	return (int64_t)peer->uid == owner_uid || access_is_admin(cfg, peer);
}
