/*
 * The method tables, one per family (methods-<family>.c), each NULL-terminated.
 * rpc.c gathers them into one list; adding a family is one line there and one here.
 */
#ifndef SNAPBUILD_METHODS_H
#define SNAPBUILD_METHODS_H

#include "rpc.h"

extern const struct rpc_method methods_daemon[];

#endif
