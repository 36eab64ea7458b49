/*
 * The packer's per-user cache of compressed archive pieces, so that packing a context
 * again recompresses only what changed.  An entry is one or more gzip members (the
 * compressed form of a run of tar bytes) under a 32-byte key that the packer derives
 * from what identifies the files in that run (pack.c).  Entries live in
 * $XDG_CACHE_HOME/snapbuild/pack (else ~/.cache/snapbuild/pack), one file each:
 *
 *   "SBPACK1\n"  u64 tar bytes  u64 payload bytes  u32 crc32(payload)  u32 0  payload
 *
 * written to a temporary name and renamed, so concurrent packs never see a partial
 * entry; the length and CRC are checked on every read, so a torn or corrupt file (a
 * crash before the data reached the disk) is a miss, never used.  A hit touches the
 * file's mtime; when a pack has stored something and the cache holds more than its cap,
 * the least recently used entries go.  Used from one thread per packcache.
 */
#ifndef SNAPBUILD_PACKCACHE_H
#define SNAPBUILD_PACKCACHE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define PACKCACHE_KEY_LEN       32
#define PACKCACHE_DEFAULT_BYTES (2ULL * 1024 * 1024 * 1024)

struct packcache;

/* $XDG_CACHE_HOME/snapbuild/pack, else $HOME/.cache/snapbuild/pack; NULL without either. */
char *packcache_default_dir(void);

/* Creates dir (0700) as needed; NULL + *err when it cannot be used.  max 0 = default. */
struct packcache *packcache_open(const char *dir, uint64_t max_bytes, char **err);

/*
 * On a hit, the payload goes to *buf (grown to *cap as needed), its length to *len and
 * the number of tar bytes it stands for to *tar_len.
 */
bool packcache_get(struct packcache *pc, const unsigned char key[PACKCACHE_KEY_LEN],
                   unsigned char **buf, size_t *cap, size_t *len, uint64_t *tar_len);

/* Best effort: a failure to store costs only a later miss. */
void packcache_put(struct packcache *pc, const unsigned char key[PACKCACHE_KEY_LEN],
                   uint64_t tar_len, const unsigned char *data, size_t len);

/* Evicts down to the cap when this run stored anything, then frees. */
void packcache_close(struct packcache *pc);

#endif
