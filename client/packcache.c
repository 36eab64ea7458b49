/*
 * The packer's cache of compressed pieces on disk (packcache.h).
 */
#include "packcache.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <libdeflate.h>

#include "util.h"

#define PACKCACHE_MAGIC     "SBPACK1\n"
#define PACKCACHE_HDR       32
#define PACKCACHE_STALE_TMP (60 * 60) /* seconds before a temporary file is an orphan */

struct packcache {
	char *dir;
	int dfd;
	uint64_t max_bytes;
	uint64_t stored; /* entries this run filed: eviction runs only then */
};

char *packcache_default_dir(void)
{
	const char *xdg = getenv("XDG_CACHE_HOME"), *home = getenv("HOME");

	if (xdg != NULL && xdg[0] == '/')
		return xasprintf("%s/snapbuild/pack", xdg);
	if (home != NULL && home[0] == '/')
		return xasprintf("%s/.cache/snapbuild/pack", home);
	return NULL;
}

/* mkdir -p with 0700 for the parts we create. */
static int packcache_mkdirs(const char *dir)
{
	char *p = xstrdup(dir);
	int rc = 0;

	for (char *s = p + 1;; s++) {
		if (*s != '/' && *s != '\0')
			continue;
		char save = *s;

		*s = '\0';
		if (mkdir(p, 0700) < 0 && errno != EEXIST) {
			rc = -1;
			break;
		}
		*s = save;
		if (save == '\0')
			break;
	}
	free(p);
	return rc;
}

struct packcache *packcache_open(const char *dir, uint64_t max_bytes, char **err)
{
	struct packcache *pc;
	int dfd;

	if (packcache_mkdirs(dir) < 0 ||
	    (dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC)) < 0) {
		*err = xasprintf("cannot use the pack cache %s: %s", dir, strerror(errno));
		return NULL;
	}
	pc = xcalloc(1, sizeof(*pc));
	pc->dir = xstrdup(dir);
	pc->dfd = dfd;
	pc->max_bytes = max_bytes ? max_bytes : PACKCACHE_DEFAULT_BYTES;
	return pc;
}

static void packcache_name(const unsigned char key[PACKCACHE_KEY_LEN], char name[65])
{
	for (int i = 0; i < PACKCACHE_KEY_LEN; i++)
		snprintf(name + 2 * i, 3, "%02x", key[i]);
}

static void put_u64(unsigned char *p, uint64_t v)
{
	for (int i = 0; i < 8; i++)
		p[i] = (unsigned char)(v >> (8 * i));
}

static uint64_t get_u64(const unsigned char *p)
{
	uint64_t v = 0;

	for (int i = 7; i >= 0; i--)
		v = (v << 8) | p[i];
	return v;
}

static int read_full(int fd, unsigned char *p, size_t n)
{
	while (n > 0) {
		ssize_t r = read(fd, p, n);

		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0)
			return -1;
		p += r;
		n -= (size_t)r;
	}
	return 0;
}

bool packcache_get(struct packcache *pc, const unsigned char key[PACKCACHE_KEY_LEN],
                   unsigned char **buf, size_t *cap, size_t *len, uint64_t *tar_len)
{
	unsigned char hdr[PACKCACHE_HDR];
	char name[65];
	struct stat st;
	uint64_t plen;
	bool ok = false;
	int fd;

	packcache_name(key, name);
	fd = openat(pc->dfd, name, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
	if (fd < 0)
		goto out;
	if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode) || st.st_size < PACKCACHE_HDR ||
	    read_full(fd, hdr, sizeof(hdr)) < 0 || memcmp(hdr, PACKCACHE_MAGIC, 8) != 0)
		goto out;
	plen = get_u64(hdr + 16);
	if (plen == 0 || plen != (uint64_t)st.st_size - PACKCACHE_HDR)
		goto out;
	if (*cap < plen) {
		*cap = plen;
		*buf = xrealloc(*buf, *cap);
	}
	if (read_full(fd, *buf, plen) < 0)
		goto out;
	if (libdeflate_crc32(0, *buf, plen) != (uint32_t)get_u64(hdr + 24))
		goto out;
	*len = plen;
	*tar_len = get_u64(hdr + 8);
	ok = true;
	futimens(fd, NULL); /* most recently used */
out:
	if (fd >= 0)
		close(fd);
	return ok;
}

void packcache_put(struct packcache *pc, const unsigned char key[PACKCACHE_KEY_LEN],
                   uint64_t tar_len, const unsigned char *data, size_t len)
{
	unsigned char hdr[PACKCACHE_HDR] = {0};
	char name[65], *tmp = xasprintf("%s/tmp-XXXXXX", pc->dir);
	int fd = mkostemp(tmp, O_CLOEXEC);
	bool done = false;

	if (fd < 0)
		goto out;
	memcpy(hdr, PACKCACHE_MAGIC, 8);
	put_u64(hdr + 8, tar_len);
	put_u64(hdr + 16, len);
	put_u64(hdr + 24, libdeflate_crc32(0, data, len));
	if (write(fd, hdr, sizeof(hdr)) != (ssize_t)sizeof(hdr))
		goto out;
	for (size_t off = 0; off < len;) {
		ssize_t w = write(fd, data + off, len - off);

		if (w < 0 && errno == EINTR)
			continue;
		if (w <= 0)
			goto out;
		off += (size_t)w;
	}
	packcache_name(key, name);
	if (renameat(pc->dfd, strrchr(tmp, '/') + 1, pc->dfd, name) < 0)
		goto out;
	done = true;
	pc->stored++;
out:
	if (fd >= 0)
		close(fd);
	if (fd >= 0 && !done)
		unlink(tmp);
	free(tmp);
}

struct packcache_ent {
	char name[65];
	struct timespec used;
	uint64_t bytes;
};

static int packcache_ent_cmp(const void *x, const void *y)
{
	const struct packcache_ent *a = x, *b = y;

	if (a->used.tv_sec != b->used.tv_sec)
		return a->used.tv_sec < b->used.tv_sec ? -1 : 1;
	if (a->used.tv_nsec != b->used.tv_nsec)
		return a->used.tv_nsec < b->used.tv_nsec ? -1 : 1;
	return strcmp(a->name, b->name);
}

/* Drop the least recently used entries until the cache holds 80% of its cap. */
static void packcache_evict(struct packcache *pc)
{
	struct packcache_ent *ents = NULL;
	size_t n = 0, cap = 0;
	uint64_t total = 0;
	int fd = openat(pc->dfd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	DIR *d = fd >= 0 ? fdopendir(fd) : NULL;
	struct dirent *de;
	time_t now = time(NULL);

	if (d == NULL) {
		if (fd >= 0)
			close(fd);
		return;
	}
	while ((de = readdir(d)) != NULL) {
		struct stat st;

		if (fstatat(pc->dfd, de->d_name, &st, AT_SYMLINK_NOFOLLOW) < 0 ||
		    !S_ISREG(st.st_mode))
			continue;
		if (strncmp(de->d_name, "tmp-", 4) == 0) {
			if (now - st.st_mtime > PACKCACHE_STALE_TMP)
				unlinkat(pc->dfd, de->d_name, 0);
			continue;
		}
		if (strlen(de->d_name) != 64)
			continue;
		if (n == cap) {
			cap = cap ? 2 * cap : 256;
			ents = xrealloc(ents, cap * sizeof(*ents));
		}
		memcpy(ents[n].name, de->d_name, 65);
		ents[n].used = st.st_mtim;
		ents[n].bytes = (uint64_t)st.st_size;
		total += ents[n].bytes;
		n++;
	}
	closedir(d);
	if (total > pc->max_bytes) {
		qsort(ents, n, sizeof(*ents), packcache_ent_cmp);
		for (size_t i = 0; i < n && total > pc->max_bytes / 10 * 8; i++) {
			if (unlinkat(pc->dfd, ents[i].name, 0) == 0)
				total -= ents[i].bytes;
		}
	}
	free(ents);
}

void packcache_close(struct packcache *pc)
{
	if (pc == NULL)
		return;
	if (pc->stored > 0)
		packcache_evict(pc);
	close(pc->dfd);
	free(pc->dir);
	free(pc);
}
