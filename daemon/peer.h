/*
 * Who is on the other end of a connection: the credentials the kernel gave with
 * SO_PEERCRED when it was accepted.  Every access decision (access.h) uses them.
 */
#ifndef SNAPBUILD_PEER_H
#define SNAPBUILD_PEER_H

#include <sys/types.h>

struct rpc_peer {
	uid_t uid;
	gid_t gid;
	pid_t pid;
};

#endif
