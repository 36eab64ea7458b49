/*
 * context.inspect and context.save answered in the first protocol what a build would
 * send, by packing a directory the client passed.  The daemon no longer reads a
 * user's files: the client packs, lists and saves the context itself (`snapbuild
 * context`, libsnapbuild).  The methods stay to tell an old client so, and to close
 * any descriptor it passed.
 */
#include <unistd.h>

#include "methods.h"
#include "protocol.h"

static void context_moved(struct rpc_call *call, json_object *params)
{
	(void)params;
	int fd = rpc_call_take_fd(call);
	if (fd >= 0)
		close(fd);
	rpc_reply_error_hint(call, JSONRPC_METHOD_NOT_FOUND,
	                     "the daemon no longer packs contexts: the client lists and saves "
	                     "what it sends itself",
	                     "this client is too old: update snapbuild and run `snapbuild "
	                     "context DIR [--files] [--save FILE]`, or use libsnapbuild");
}

const struct rpc_method methods_context[] = {
    /* Anything goes: whatever an old client sends, it learns that it is too old. */
    {"context.inspect", context_moved, NULL},
    {"context.save", context_moved, NULL},
    {NULL, NULL, NULL},
};
