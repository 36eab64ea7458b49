/*
 * The context packer: the one module that knows libarchive, libdeflate (packcache.c
 * borrows its CRC-32) and the SHA-256 of libcrypto.
 *
 * The walk reads each directory whole, sorts its entries so that a depth-first walk
 * yields paths in byte order ("a.txt" before "a/b": a directory sorts as "name/"), and
 * descends with openat(O_NOFOLLOW).  Symlinks are stored, never followed, so a link
 * out of the context or a link loop costs nothing.  Types are checked with fstatat
 * before anything is opened, files are opened O_NONBLOCK|O_NOFOLLOW and checked again
 * with fstat, so a FIFO is never read and a swapped entry is noticed.
 *
 * The walk only stats entries and gathers them into chunks (pack_place); when a chunk
 * closes, its key (paths, device, inode, size, mode, mtime and ctime in ns, link
 * targets) is looked up in the pack cache, and only on a miss are its files read and
 * written by libarchive, unbuffered, into the chunk's buffer.  Worker threads compress
 * each chunk into an independent gzip member, and the packing thread writes the members
 * in order (helping to compress while it waits), filing new ones in the cache, so at
 * most 2 x threads chunks are ever in memory.  Files changed in the clock tick the pack
 * started in are not cached: a second change within one tick would leave their stats
 * as they were.
 */
#include "pack.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <locale.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <archive.h>
#include <archive_entry.h>
#include <libdeflate.h>
#include <openssl/evp.h>

#include "dockerignore.h"
#include "packcache.h"
#include "util.h"

#define PACK_CHUNK          (1024 * 1024)
#define PACK_BIG            (PACK_CHUNK / 2) /* a file this big stands alone */
#define PACK_CHUNK_FILES    128              /* at most this many entries in a chunk */
#define PACK_SPLIT          32               /* a path ends a chunk 1 time in this many */
#define PACK_TAR_BLOCK      10240
#define PACK_FORMAT_VERSION 1 /* of the layout: part of every cache key */
#define PACK_READ_BUF       (256 * 1024)
#define PACK_MAX_THREADS    16
#define PACK_MAX_IGNORE     (16 * 1024 * 1024)
#define PACK_MAX_LINKS      40
#define PACK_DEFAULT_LEVEL  6
#define PACK_NFORCED        6

/* ---- parallel gzip: independent members, written in order ---- */

enum pack_chunk_state { CHUNK_FREE, CHUNK_PENDING, CHUNK_BUSY, CHUNK_DONE };

/*
 * One gzip member's worth of tar (or, from the cache, the members standing for it).
 * When store is set the writer also files the members in the cache under key.
 */
struct pack_chunk {
	unsigned char *in, *out;
	size_t inlen, incap, outlen, outcap;
	uint64_t tar_len;
	bool store;
	unsigned char key[PACKCACHE_KEY_LEN];
	enum pack_chunk_state state;
};

struct pack_gz {
	pthread_mutex_t mu;
	pthread_cond_t work_cv, done_cv;
	struct pack_chunk *slots;
	size_t nslots;
	uint64_t submitted, taken, written; /* chunk sequence numbers */
	pthread_t *threads;
	int nthreads, level;
	bool stop;
	struct libdeflate_compressor *own; /* the packing thread's, to help out */
	int fd;
	EVP_MD_CTX *sha;
	uint64_t out_bytes;
	struct packcache *cache; /* may be NULL */
};

static void pack_gz_compress(struct libdeflate_compressor *z, struct pack_chunk *ch)
{
	size_t bound = libdeflate_gzip_compress_bound(z, ch->inlen);

	if (ch->outcap < bound) {
		ch->outcap = bound;
		ch->out = xrealloc(ch->out, bound);
	}
	ch->outlen = libdeflate_gzip_compress(z, ch->in, ch->inlen, ch->out, ch->outcap);
	if (ch->outlen == 0)
		abort(); /* cannot happen: outcap is libdeflate's own bound */
}

static void *pack_gz_thread(void *p)
{
	struct pack_gz *gz = p;
	struct libdeflate_compressor *z = libdeflate_alloc_compressor(gz->level);

	if (z == NULL)
		abort();
	pthread_mutex_lock(&gz->mu);
	for (;;) {
		struct pack_chunk *ch;

		while (!gz->stop && gz->taken == gz->submitted)
			pthread_cond_wait(&gz->work_cv, &gz->mu);
		if (gz->stop)
			break;
		ch = &gz->slots[gz->taken++ % gz->nslots];
		if (ch->state == CHUNK_DONE)
			continue; /* from the cache */
		ch->state = CHUNK_BUSY;
		pthread_mutex_unlock(&gz->mu);
		pack_gz_compress(z, ch);
		pthread_mutex_lock(&gz->mu);
		ch->state = CHUNK_DONE;
		pthread_cond_broadcast(&gz->done_cv);
	}
	pthread_mutex_unlock(&gz->mu);
	libdeflate_free_compressor(z);
	return NULL;
}

/* Start nthreads compressors for members written to fd; -1 + errno, pack_gz_stop cleans up. */
static int pack_gz_start(struct pack_gz *gz, int nthreads, int level, int fd)
{
	memset(gz, 0, sizeof(*gz));
	pthread_mutex_init(&gz->mu, NULL);
	pthread_cond_init(&gz->work_cv, NULL);
	pthread_cond_init(&gz->done_cv, NULL);
	gz->level = level;
	gz->fd = fd;
	gz->own = libdeflate_alloc_compressor(level);
	if (gz->own == NULL)
		abort();
	gz->nslots = 2 * (size_t)nthreads;
	gz->slots = xcalloc(gz->nslots, sizeof(*gz->slots));
	gz->sha = EVP_MD_CTX_new();
	if (gz->sha == NULL || EVP_DigestInit_ex(gz->sha, EVP_sha256(), NULL) != 1)
		abort();
	gz->threads = xcalloc((size_t)nthreads, sizeof(*gz->threads));
	for (int i = 0; i < nthreads; i++) {
		int rc = pthread_create(&gz->threads[i], NULL, pack_gz_thread, gz);

		if (rc != 0) {
			errno = rc;
			return -1;
		}
		gz->nthreads++;
	}
	return 0;
}

static int pack_write_all(int fd, const unsigned char *p, size_t n)
{
	while (n > 0) {
		ssize_t w = write(fd, p, n);

		if (w < 0) {
			if (errno == EINTR)
				continue;
			return -1;
		}
		p += w;
		n -= (size_t)w;
	}
	return 0;
}

/* Write out the oldest chunk, compressing pending ones meanwhile.  -1 + errno. */
static int pack_gz_write_oldest(struct pack_gz *gz)
{
	struct pack_chunk *ch = &gz->slots[gz->written % gz->nslots];
	int rc = 0;

	pthread_mutex_lock(&gz->mu);
	while (ch->state != CHUNK_DONE) {
		if (gz->taken < gz->submitted) {
			struct pack_chunk *mine = &gz->slots[gz->taken++ % gz->nslots];

			if (mine->state == CHUNK_DONE)
				continue;
			mine->state = CHUNK_BUSY;
			pthread_mutex_unlock(&gz->mu);
			pack_gz_compress(gz->own, mine);
			pthread_mutex_lock(&gz->mu);
			mine->state = CHUNK_DONE;
			pthread_cond_broadcast(&gz->done_cv);
			continue;
		}
		pthread_cond_wait(&gz->done_cv, &gz->mu);
	}
	pthread_mutex_unlock(&gz->mu);
	if (pack_write_all(gz->fd, ch->out, ch->outlen) < 0)
		rc = -1;
	EVP_DigestUpdate(gz->sha, ch->out, ch->outlen);
	gz->out_bytes += ch->outlen;
	if (ch->store && gz->cache != NULL)
		packcache_put(gz->cache, ch->key, ch->tar_len, ch->out, ch->outlen);
	ch->inlen = 0;
	ch->store = false;
	pthread_mutex_lock(&gz->mu);
	ch->state = CHUNK_FREE;
	/* Chunks from the cache need no taker: the slot must not be taken once reused. */
	if (gz->taken <= gz->written)
		gz->taken = gz->written + 1;
	pthread_mutex_unlock(&gz->mu);
	gz->written++;
	return rc;
}

/*
 * The slot the next chunk goes into, once the chunk it held nslots ago is written out.
 * (submitted and written are the packing thread's own: no lock needed.)
 */
static struct pack_chunk *pack_gz_slot(struct pack_gz *gz)
{
	while (gz->submitted - gz->written >= gz->nslots) {
		if (pack_gz_write_oldest(gz) < 0)
			return NULL;
	}
	return &gz->slots[gz->submitted % gz->nslots];
}

/* Queue the slot pack_gz_slot gave: to compress, or (done) already compressed. */
static void pack_gz_submit(struct pack_gz *gz, bool done)
{
	pthread_mutex_lock(&gz->mu);
	gz->slots[gz->submitted % gz->nslots].state = done ? CHUNK_DONE : CHUNK_PENDING;
	gz->submitted++;
	pthread_cond_signal(&gz->work_cv);
	pthread_mutex_unlock(&gz->mu);
}

/* Write everything out; the digest goes to hex. */
static int pack_gz_finish(struct pack_gz *gz, char hex[65])
{
	unsigned char md[EVP_MAX_MD_SIZE];
	unsigned mdlen = 0;

	while (gz->written < gz->submitted) {
		if (pack_gz_write_oldest(gz) < 0)
			return -1;
	}
	if (EVP_DigestFinal_ex(gz->sha, md, &mdlen) != 1 || mdlen != 32)
		abort();
	for (unsigned i = 0; i < mdlen; i++)
		snprintf(hex + 2 * i, 3, "%02x", md[i]);
	return 0;
}

static void pack_gz_stop(struct pack_gz *gz)
{
	pthread_mutex_lock(&gz->mu);
	gz->stop = true;
	pthread_cond_broadcast(&gz->work_cv);
	pthread_mutex_unlock(&gz->mu);
	for (int i = 0; i < gz->nthreads; i++)
		pthread_join(gz->threads[i], NULL);
	for (size_t i = 0; i < gz->nslots; i++) {
		free(gz->slots[i].in);
		free(gz->slots[i].out);
	}
	free(gz->slots);
	free(gz->threads);
	if (gz->own != NULL)
		libdeflate_free_compressor(gz->own);
	EVP_MD_CTX_free(gz->sha);
	pthread_cond_destroy(&gz->work_cv);
	pthread_cond_destroy(&gz->done_cv);
	pthread_mutex_destroy(&gz->mu);
}

/* ---- the packing state ---- */

/* A directory the walk has open, shared by the pending entries that lie in it. */
struct pack_dirh {
	int fd;
	unsigned refs;
};

/* An entry the walk found, written (or taken from the cache) when its chunk closes. */
struct pack_pend {
	char *path;       /* relative, without "./" */
	const char *name; /* its last component */
	struct pack_dirh *dir;
	struct stat st;
	char *link; /* a symlink's target */
	bool cacheable;
	bool extra; /* the outside Dockerfile: read from pack_options.extra_fd */
};

struct pack_ctx {
	const struct pack_options *o;
	struct pack_result *r;
	struct dockerignore *ign;
	char *forced[PACK_NFORCED]; /* kept even when excluded: Dockerfile, ignore file */
	size_t nforced;
	struct archive *ar; /* NULL when inspecting */
	struct archive_entry *entry;
	struct pack_gz gz;
	bool gz_started;
	unsigned char *buf;
	char *path; /* relative path of the entry at hand */
	size_t plen, pcap;
	size_t files_cap, excluded_cap;
	struct timespec last_progress;
	struct pack_pend *pend; /* the chunk being gathered */
	size_t npend, pend_cap;
	uint64_t pend_est;       /* its tar bytes, estimated from the stats alone */
	struct pack_chunk *fill; /* where libarchive's output goes; NULL: discarded */
	bool fill_cacheable;
	uint64_t tar_len; /* tar bytes so far */
	struct packcache *cache;
	struct timespec racy; /* entries changed since then are not cached */
};

static bool pack_cancelled(struct pack_ctx *c)
{
	if (c->o->cancel == NULL || *c->o->cancel == 0)
		return false;
	if (c->r->status == PACK_OK)
		c->r->status = PACK_CANCELLED;
	return true;
}

static int pack_fail(struct pack_ctx *c, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* Record the first error; returns -1 for the caller to pass up. */
static int pack_fail(struct pack_ctx *c, const char *fmt, ...)
{
	va_list ap;

	if (c->r->status == PACK_OK) {
		va_start(ap, fmt);
		c->r->error = xvasprintf(fmt, ap);
		va_end(ap);
		c->r->status = PACK_ERROR;
	}
	return -1;
}

static void pack_warn(struct pack_ctx *c, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static void pack_warn(struct pack_ctx *c, const char *fmt, ...)
{
	va_list ap;
	char *msg;

	va_start(ap, fmt);
	msg = xvasprintf(fmt, ap);
	va_end(ap);
	c->r->nwarnings++;
	if (c->o->on_warning != NULL)
		c->o->on_warning(c->o->arg, msg);
	free(msg);
}

static void pack_progress(struct pack_ctx *c, bool force)
{
	struct timespec now;

	if (c->o->on_progress == NULL)
		return;
	clock_gettime(CLOCK_MONOTONIC, &now);
	if (!force && (now.tv_sec - c->last_progress.tv_sec) * 1000000000L +
	                      (now.tv_nsec - c->last_progress.tv_nsec) <
	                  100000000L)
		return;
	c->last_progress = now;
	c->o->on_progress(c->o->arg, c->r->file_count, c->r->total_bytes);
}

/* Set the path at hand to <dir>/<name>, where dir is the first dlen bytes. */
static void pack_path_set(struct pack_ctx *c, size_t dlen, const char *name)
{
	size_t nl = strlen(name), need = dlen + 1 + nl + 1;

	if (need > c->pcap) {
		c->pcap = need * 2;
		c->path = xrealloc(c->path, c->pcap);
	}
	c->plen = dlen;
	if (dlen > 0)
		c->path[c->plen++] = '/';
	memcpy(c->path + c->plen, name, nl + 1);
	c->plen += nl;
}

static bool pack_is_forced(const struct pack_ctx *c, const char *path)
{
	for (size_t i = 0; i < c->nforced; i++) {
		if (strcmp(c->forced[i], path) == 0)
			return true;
	}
	return false;
}

static bool pack_is_forced_ancestor(const struct pack_ctx *c, const char *dir, size_t dlen)
{
	for (size_t i = 0; i < c->nforced; i++) {
		if (strncmp(c->forced[i], dir, dlen) == 0 && c->forced[i][dlen] == '/')
			return true;
	}
	return false;
}

static void pack_add_excluded(struct pack_ctx *c, bool dir)
{
	struct pack_result *r = c->r;

	if (r->nexcluded == c->excluded_cap) {
		c->excluded_cap = c->excluded_cap ? c->excluded_cap * 2 : 64;
		r->excluded = xrealloc(r->excluded, c->excluded_cap * sizeof(*r->excluded));
	}
	r->excluded[r->nexcluded++] = xasprintf("./%s%s", c->path, dir ? "/" : "");
}

/* Count a stored entry: totals, the file list and the ten largest. */
static void pack_account(struct pack_ctx *c, const char *path, uint64_t size, unsigned mode,
                         char type)
{
	struct pack_result *r = c->r;
	size_t i;

	r->file_count++;
	r->total_bytes += size;
	if (c->o->list_files) {
		if (r->nfiles == c->files_cap) {
			c->files_cap = c->files_cap ? c->files_cap * 2 : 256;
			r->files = xrealloc(r->files, c->files_cap * sizeof(*r->files));
		}
		r->files[r->nfiles++] =
		    (struct pack_file){xasprintf("./%s", path), size, mode, type};
	}
	if (type == 'f') {
		size_t n = sizeof(r->largest) / sizeof(*r->largest);

		for (i = r->nlargest; i > 0 && r->largest[i - 1].size < size; i--)
			;
		if (i < n) {
			if (r->nlargest == n)
				free(r->largest[n - 1].path);
			else
				r->nlargest++;
			memmove(&r->largest[i + 1], &r->largest[i],
			        (r->nlargest - 1 - i) * sizeof(*r->largest));
			r->largest[i] =
			    (struct pack_file){xasprintf("./%s", path), size, mode, type};
		}
	}
	pack_progress(c, false);
}

static int pack_header(struct pack_ctx *c, const char *path, const struct stat *st, uint64_t size,
                       const char *link)
{
	struct archive_entry *e = c->entry;
	char *name = xasprintf("./%s", path);
	int rc;

	archive_entry_clear(e);
	archive_entry_set_pathname(e, name);
	archive_entry_set_filetype(e, link ? AE_IFLNK : AE_IFREG);
	archive_entry_set_perm(e, st->st_mode & 07777);
	archive_entry_set_size(e, (la_int64_t)size);
	archive_entry_set_mtime(e, st->st_mtim.tv_sec, 0);
	archive_entry_set_uid(e, 0);
	archive_entry_set_gid(e, 0);
	if (link != NULL)
		archive_entry_set_symlink(e, link);
	rc = archive_write_header(c->ar, e);
	free(name);
	if (rc < ARCHIVE_WARN)
		return pack_fail(c, "cannot archive ./%s: %s", path, archive_error_string(c->ar));
	return 0;
}

static int pack_data(struct pack_ctx *c, const void *p, size_t n)
{
	if (archive_write_data(c->ar, p, n) < 0)
		return pack_fail(c, "cannot write the archive: %s", archive_error_string(c->ar));
	return 0;
}

/* The entry's padding, written now so that it lands in the chunk at hand. */
static int pack_end_entry(struct pack_ctx *c)
{
	if (archive_write_finish_entry(c->ar) < ARCHIVE_WARN)
		return pack_fail(c, "cannot write the archive: %s", archive_error_string(c->ar));
	return 0;
}

static const char *pack_type_name(mode_t m)
{
	if (S_ISFIFO(m))
		return "FIFO";
	if (S_ISSOCK(m))
		return "socket";
	if (S_ISCHR(m))
		return "character device";
	if (S_ISBLK(m))
		return "block device";
	return "special file";
}

/*
 * Copy bytes [off, off + len) of a file of size bytes (fd, or -1 when it is gone) into
 * the archive, padding with zeros if it shrank; at the end of the file, say if it grew.
 */
static int pack_copy(struct pack_ctx *c, const char *path, int fd, uint64_t off, uint64_t len,
                     uint64_t size)
{
	uint64_t left = len;
	bool short_read = fd < 0;
	char extra;
	ssize_t n;

	while (left > 0) {
		size_t want = left < PACK_READ_BUF ? (size_t)left : PACK_READ_BUF;

		if (pack_cancelled(c))
			return -1;
		n = short_read ? 0 : pread(fd, c->buf, want, (off_t)off);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			return pack_fail(c, "cannot read ./%s: %s", path, strerror(errno));
		}
		if (n == 0) {
			if (!short_read)
				pack_warn(c,
				          "./%s shrank while being packed: padded with zeros to "
				          "%llu bytes",
				          path, (unsigned long long)size);
			short_read = true;
			c->fill_cacheable = false;
			memset(c->buf, 0, want);
			n = (ssize_t)want;
		}
		if (pack_data(c, c->buf, (size_t)n) < 0)
			return -1;
		left -= (uint64_t)n;
		off += (uint64_t)n;
	}
	if (off == size && !short_read) {
		do
			n = pread(fd, &extra, 1, (off_t)size);
		while (n < 0 && errno == EINTR);
		if (n > 0) {
			pack_warn(c, "./%s grew while being packed: stored its first %llu bytes",
			          path, (unsigned long long)size);
			c->fill_cacheable = false;
		}
	}
	return 0;
}

/* Feed libarchive len bytes that go nowhere: they are in a chunk from the cache. */
static int pack_skip(struct pack_ctx *c, uint64_t len)
{
	struct pack_chunk *fill = c->fill;
	int rc = 0;

	c->fill = NULL;
	while (rc == 0 && len > 0) {
		size_t n = len < PACK_READ_BUF ? (size_t)len : PACK_READ_BUF;

		rc = pack_data(c, c->buf, n);
		len -= n;
	}
	c->fill = fill;
	return rc;
}

static bool pack_same_file(const struct stat *a, const struct stat *b)
{
	return a->st_dev == b->st_dev && a->st_ino == b->st_ino && a->st_size == b->st_size &&
	       a->st_mode == b->st_mode && a->st_mtim.tv_sec == b->st_mtim.tv_sec &&
	       a->st_mtim.tv_nsec == b->st_mtim.tv_nsec && a->st_ctim.tv_sec == b->st_ctim.tv_sec &&
	       a->st_ctim.tv_nsec == b->st_ctim.tv_nsec;
}

/*
 * Open a pending regular file again to read it: -1 with a warning when it vanished
 * or changed type (it is then left out, or padded when part of it is already out),
 * -2 on a failure that fails the pack.
 */
static int pack_open(struct pack_ctx *c, const struct pack_pend *p)
{
	struct stat st;
	int fd = p->extra ? fcntl(c->o->extra_fd, F_DUPFD_CLOEXEC, 0)
	                  : openat(p->dir->fd, p->name,
	                           O_RDONLY | O_NONBLOCK | O_NOFOLLOW | O_NOCTTY | O_CLOEXEC);

	c->fill_cacheable = c->fill_cacheable && fd >= 0;
	if (fd < 0) {
		if (errno == ENOENT) {
			pack_warn(c, "skipped ./%s: it vanished while being packed", p->path);
			return -1;
		}
		if (errno == ELOOP) {
			pack_warn(c, "skipped ./%s: it changed type while being packed", p->path);
			return -1;
		}
		pack_fail(c, "cannot read ./%s: %s", p->path, strerror(errno));
		return -2;
	}
	if (fstat(fd, &st) < 0) {
		pack_fail(c, "cannot read ./%s: %s", p->path, strerror(errno));
		close(fd);
		return -2;
	}
	if (!S_ISREG(st.st_mode)) {
		pack_warn(c, "skipped ./%s: it changed type while being packed", p->path);
		c->fill_cacheable = false;
		close(fd);
		return -1;
	}
	if (!pack_same_file(&st, &p->st))
		c->fill_cacheable = false;
	return fd;
}

/* The cache key of a chunk of small entries (piece < 0) or of one piece of a big file. */
static void pack_key(struct pack_ctx *c, const struct pack_pend *p, size_t n, int64_t piece,
                     unsigned char key[PACKCACHE_KEY_LEN])
{
	EVP_MD_CTX *md = EVP_MD_CTX_new();
	unsigned len = 0;
	int64_t hdr[3] = {PACK_FORMAT_VERSION, c->gz.level, piece};

	if (md == NULL || EVP_DigestInit_ex(md, EVP_sha256(), NULL) != 1)
		abort();
	EVP_DigestUpdate(md, hdr, sizeof(hdr));
	for (size_t i = 0; i < n; i++) {
		const struct stat *st = &p[i].st;
		int64_t f[9] = {(int64_t)st->st_dev,         (int64_t)st->st_ino,
		                (int64_t)st->st_size,        (int64_t)st->st_mode,
		                (int64_t)st->st_mtim.tv_sec, (int64_t)st->st_mtim.tv_nsec,
		                (int64_t)st->st_ctim.tv_sec, (int64_t)st->st_ctim.tv_nsec,
		                (int64_t)strlen(p[i].path)};

		EVP_DigestUpdate(md, f, sizeof(f));
		EVP_DigestUpdate(md, p[i].path, strlen(p[i].path) + 1);
		if (p[i].link != NULL)
			EVP_DigestUpdate(md, p[i].link, strlen(p[i].link) + 1);
		else
			EVP_DigestUpdate(md, "", 1);
	}
	if (EVP_DigestFinal_ex(md, key, &len) != 1 || len != PACKCACHE_KEY_LEN)
		abort();
	EVP_MD_CTX_free(md);
}

/* A slot for the next chunk, or NULL when writing out the archive failed. */
static struct pack_chunk *pack_next_slot(struct pack_ctx *c)
{
	struct pack_chunk *ch = pack_gz_slot(&c->gz);

	if (ch == NULL)
		pack_fail(c, "cannot write the archive: %s", strerror(errno));
	return ch;
}

/* Take the chunk under key from the cache into ch; false on a miss. */
static bool pack_cache_get(struct pack_ctx *c, struct pack_chunk *ch,
                           const unsigned char key[PACKCACHE_KEY_LEN])
{
	if (c->cache == NULL ||
	    !packcache_get(c->cache, key, &ch->out, &ch->outcap, &ch->outlen, &ch->tar_len))
		return false;
	c->tar_len += ch->tar_len;
	c->r->cache_hits++;
	pack_gz_submit(&c->gz, true);
	return true;
}

/* Hand the chunk libarchive wrote into ch to the compressors (nothing when it is empty). */
static void pack_submit_fill(struct pack_ctx *c, struct pack_chunk *ch,
                             const unsigned char key[PACKCACHE_KEY_LEN])
{
	c->fill = NULL;
	if (ch->inlen == 0)
		return;
	ch->tar_len = ch->inlen;
	ch->store = c->cache != NULL && c->fill_cacheable;
	memcpy(ch->key, key, PACKCACHE_KEY_LEN);
	c->tar_len += ch->inlen;
	if (c->cache != NULL)
		c->r->cache_misses++;
	pack_gz_submit(&c->gz, false);
}

static void pack_dirh_unref(struct pack_dirh *d)
{
	if (d != NULL && --d->refs == 0) {
		close(d->fd);
		free(d);
	}
}

static void pack_pend_clear(struct pack_pend *p)
{
	free(p->path);
	free(p->link);
	pack_dirh_unref(p->dir);
}

/* Write one small pending entry into the chunk being filled. */
static int pack_pend_write(struct pack_ctx *c, const struct pack_pend *p)
{
	int fd = -1, rc;

	if (p->link != NULL) {
		rc = pack_header(c, p->path, &p->st, 0, p->link);
		if (rc == 0)
			rc = pack_end_entry(c);
		if (rc == 0)
			pack_account(c, p->path, 0, p->st.st_mode & 07777, 'l');
		return rc;
	}
	fd = pack_open(c, p);
	if (fd < 0)
		return fd == -1 ? 0 : -1;
	rc = pack_header(c, p->path, &p->st, (uint64_t)p->st.st_size, NULL);
	if (rc == 0)
		rc = pack_copy(c, p->path, fd, 0, (uint64_t)p->st.st_size, (uint64_t)p->st.st_size);
	if (rc == 0)
		rc = pack_end_entry(c);
	if (rc == 0)
		pack_account(c, p->path, (uint64_t)p->st.st_size, p->st.st_mode & 07777, 'f');
	close(fd);
	return rc;
}

/* Close the chunk of small entries gathered so far: from the cache, or written and queued. */
static int pack_flush(struct pack_ctx *c)
{
	unsigned char key[PACKCACHE_KEY_LEN] = {0};
	struct pack_chunk *ch;
	bool cacheable = c->cache != NULL;
	int rc = 0;

	if (c->npend == 0)
		return 0;
	ch = pack_next_slot(c);
	if (ch == NULL) {
		rc = -1;
		goto out;
	}
	for (size_t i = 0; i < c->npend; i++)
		cacheable = cacheable && c->pend[i].cacheable;
	if (cacheable) {
		pack_key(c, c->pend, c->npend, -1, key);
		if (pack_cache_get(c, ch, key)) {
			for (size_t i = 0; i < c->npend; i++) {
				const struct pack_pend *p = &c->pend[i];

				pack_account(c, p->path, p->link ? 0 : (uint64_t)p->st.st_size,
				             p->st.st_mode & 07777, p->link ? 'l' : 'f');
			}
			goto out;
		}
	}
	c->fill = ch;
	c->fill_cacheable = cacheable;
	for (size_t i = 0; rc == 0 && i < c->npend; i++)
		rc = pack_pend_write(c, &c->pend[i]);
	pack_submit_fill(c, ch, key);
out:
	for (size_t i = 0; i < c->npend; i++)
		pack_pend_clear(&c->pend[i]);
	c->npend = 0;
	c->pend_est = 0;
	return rc;
}

/*
 * A big file stands alone, one piece per PACK_CHUNK bytes of its content (the first
 * with the header, the last with the padding), each cached on its own: a piece from
 * the cache is not read at all.  libarchive sees the whole entry once anything is
 * read, the cached pieces' bytes going nowhere.
 */
static int pack_big(struct pack_ctx *c, const struct pack_pend *p)
{
	uint64_t size = (uint64_t)p->st.st_size, npieces = (size + PACK_CHUNK - 1) / PACK_CHUNK;
	uint64_t done = 0; /* content bytes libarchive has seen */
	bool opened = false, started = false, cacheable = c->cache != NULL && p->cacheable;
	int fd = -1, rc = 0;

	for (uint64_t i = 0; rc == 0 && i < npieces; i++) {
		unsigned char key[PACKCACHE_KEY_LEN] = {0};
		uint64_t from = i * PACK_CHUNK,
		         to = from + PACK_CHUNK < size ? from + PACK_CHUNK : size;
		struct pack_chunk *ch = pack_next_slot(c);

		if (ch == NULL) {
			rc = -1;
			break;
		}
		if (cacheable) {
			pack_key(c, p, 1, (int64_t)i, key);
			if (pack_cache_get(c, ch, key))
				continue;
		}
		c->fill_cacheable = cacheable;
		if (!opened) {
			opened = true;
			fd = pack_open(c, p);
			if (fd == -2) {
				rc = -1;
				break;
			}
			if (fd < 0 && i == 0)
				break; /* nothing of it is out yet: leave it out */
			cacheable = cacheable && c->fill_cacheable;
		}
		c->fill_cacheable = cacheable;
		if (!started) {
			c->fill = i == 0 ? ch : NULL;
			rc = pack_header(c, p->path, &p->st, size, NULL);
			started = true;
		}
		if (rc == 0)
			rc = pack_skip(c, from - done);
		c->fill = ch;
		if (rc == 0)
			rc = pack_copy(c, p->path, fd, from, to - from, size);
		done = to;
		cacheable = cacheable && c->fill_cacheable;
		if (rc == 0 && to == size)
			rc = pack_end_entry(c);
		pack_submit_fill(c, ch, key);
	}
	if (rc == 0 && started && done < size) {
		c->fill = NULL;
		rc = pack_skip(c, size - done);
		if (rc == 0)
			rc = pack_end_entry(c);
	}
	c->fill = NULL;
	if (rc == 0 && (fd >= 0 || !opened))
		pack_account(c, p->path, size, p->st.st_mode & 07777, 'f');
	if (fd >= 0)
		close(fd);
	return rc;
}

static uint32_t pack_path_hash(const char *path)
{
	uint32_t h = 2166136261u;

	for (const unsigned char *s = (const unsigned char *)path; *s; s++)
		h = (h ^ *s) * 16777619u;
	return h;
}

/*
 * Place an entry in the archive's layout of chunks, which depends only on the paths
 * and stats the walk sees, so that a pack from the cache and a cold pack agree byte for
 * byte.  Small entries gather into a chunk that ends after a path whose hash says so
 * (about every PACK_SPLIT entries, so that an edit moves no boundary beyond the next),
 * or before it would pass PACK_CHUNK bytes or PACK_CHUNK_FILES entries.
 */
static int pack_place(struct pack_ctx *c, struct pack_pend *p)
{
	uint64_t est;
	int rc;

	p->cacheable =
	    p->st.st_ctim.tv_sec < c->racy.tv_sec ||
	    (p->st.st_ctim.tv_sec == c->racy.tv_sec && p->st.st_ctim.tv_nsec < c->racy.tv_nsec);
	/* Whole-second stamps (FAT keeps 2 s, some network filesystems 1 s): keep clear. */
	if (p->st.st_ctim.tv_nsec == 0 && p->st.st_ctim.tv_sec + 2 >= c->racy.tv_sec)
		p->cacheable = false;
	if (p->link == NULL && (uint64_t)p->st.st_size >= PACK_BIG) {
		rc = pack_flush(c);
		if (rc == 0)
			rc = pack_big(c, p);
		pack_pend_clear(p);
		return rc;
	}
	est = 512 + (p->link ? 512 : ((uint64_t)p->st.st_size + 511) / 512 * 512);
	if (c->npend > 0 && (c->pend_est + est > PACK_CHUNK || c->npend == PACK_CHUNK_FILES)) {
		rc = pack_flush(c);
		if (rc < 0) {
			pack_pend_clear(p);
			return rc;
		}
	}
	if (c->npend == c->pend_cap) {
		c->pend_cap = c->pend_cap ? 2 * c->pend_cap : 64;
		c->pend = xrealloc(c->pend, c->pend_cap * sizeof(*c->pend));
	}
	c->pend[c->npend++] = *p;
	c->pend_est += est;
	if (pack_path_hash(p->path) % PACK_SPLIT == 0)
		return pack_flush(c);
	return 0;
}

/* A non-directory entry that is to be kept, when writing an archive. */
static int pack_entry_archive(struct pack_ctx *c, struct pack_dirh *dir, const char *name)
{
	struct pack_pend p = {0};
	char target[4097];
	ssize_t n;

	if (fstatat(dir->fd, name, &p.st, AT_SYMLINK_NOFOLLOW) < 0) {
		if (errno == ENOENT) {
			pack_warn(c, "skipped ./%s: it vanished while being packed", c->path);
			return 0;
		}
		return pack_fail(c, "cannot read ./%s: %s", c->path, strerror(errno));
	}
	if (S_ISDIR(p.st.st_mode)) {
		pack_warn(c, "skipped ./%s: it changed type while being packed", c->path);
		return 0;
	}
	if (!S_ISREG(p.st.st_mode) && !S_ISLNK(p.st.st_mode)) {
		pack_warn(c, "skipped %s ./%s", pack_type_name(p.st.st_mode), c->path);
		return 0;
	}
	if (S_ISLNK(p.st.st_mode)) {
		n = readlinkat(dir->fd, name, target, sizeof(target));
		if (n < 0) {
			if (errno == ENOENT) {
				pack_warn(c, "skipped ./%s: it vanished while being packed",
				          c->path);
				return 0;
			}
			if (errno == EINVAL) {
				pack_warn(c, "skipped ./%s: it changed type while being packed",
				          c->path);
				return 0;
			}
			return pack_fail(c, "cannot read ./%s: %s", c->path, strerror(errno));
		}
		if ((size_t)n >= sizeof(target))
			return pack_fail(c, "cannot read ./%s: symlink target too long", c->path);
		p.link = xstrndup(target, (size_t)n);
	}
	p.path = xstrdup(c->path);
	p.name = p.path + (c->plen - strlen(name));
	p.dir = dir;
	dir->refs++;
	return pack_place(c, &p);
}

/* Inspecting only: count a regular file once it opened as one. */
static int pack_file(struct pack_ctx *c, int dfd, const char *name)
{
	struct stat st;
	int fd, rc = 0;

	fd = openat(dfd, name, O_RDONLY | O_NONBLOCK | O_NOFOLLOW | O_NOCTTY | O_CLOEXEC);
	if (fd < 0) {
		if (errno == ENOENT) {
			pack_warn(c, "skipped ./%s: it vanished while being packed", c->path);
			return 0;
		}
		if (errno == ELOOP) {
			pack_warn(c, "skipped ./%s: it changed type while being packed", c->path);
			return 0;
		}
		return pack_fail(c, "cannot read ./%s: %s", c->path, strerror(errno));
	}
	if (fstat(fd, &st) < 0) {
		rc = pack_fail(c, "cannot read ./%s: %s", c->path, strerror(errno));
		goto out;
	}
	if (!S_ISREG(st.st_mode)) {
		pack_warn(c, "skipped ./%s: it changed type while being packed", c->path);
		goto out;
	}
	pack_account(c, c->path, (uint64_t)st.st_size, st.st_mode & 07777, 'f');
out:
	close(fd);
	return rc;
}

/* A non-directory entry that is to be kept, when inspecting only. */
static int pack_entry(struct pack_ctx *c, int dfd, const char *name)
{
	struct stat st;

	if (fstatat(dfd, name, &st, AT_SYMLINK_NOFOLLOW) < 0) {
		if (errno == ENOENT) {
			pack_warn(c, "skipped ./%s: it vanished while being packed", c->path);
			return 0;
		}
		return pack_fail(c, "cannot read ./%s: %s", c->path, strerror(errno));
	}
	if (S_ISREG(st.st_mode))
		return pack_file(c, dfd, name);
	if (S_ISLNK(st.st_mode)) {
		char target[4097];
		ssize_t n = readlinkat(dfd, name, target, sizeof(target));

		if (n < 0 && errno == ENOENT) {
			pack_warn(c, "skipped ./%s: it vanished while being packed", c->path);
			return 0;
		}
		if (n < 0 && errno == EINVAL) {
			pack_warn(c, "skipped ./%s: it changed type while being packed", c->path);
			return 0;
		}
		if (n < 0)
			return pack_fail(c, "cannot read ./%s: %s", c->path, strerror(errno));
		if ((size_t)n >= sizeof(target))
			return pack_fail(c, "cannot read ./%s: symlink target too long", c->path);
		pack_account(c, c->path, 0, st.st_mode & 07777, 'l');
		return 0;
	}
	if (S_ISDIR(st.st_mode)) {
		pack_warn(c, "skipped ./%s: it changed type while being packed", c->path);
		return 0;
	}
	pack_warn(c, "skipped %s ./%s", pack_type_name(st.st_mode), c->path);
	return 0;
}

/* "./dir" for messages about the directory being read, the root included. */
static const char *pack_dir_name(const struct pack_ctx *c)
{
	return c->plen > 0 ? c->path : ".";
}

struct pack_dirent {
	char *name;
	size_t len;
	bool is_dir;
};

/* Byte order of full paths: a directory compares as "name/". */
static int pack_dirent_cmp(const void *x, const void *y)
{
	const struct pack_dirent *a = x, *b = y;

	for (size_t i = 0;; i++) {
		int ca = i < a->len                 ? (unsigned char)a->name[i]
		         : i == a->len && a->is_dir ? '/'
		                                    : -1;
		int cb = i < b->len                 ? (unsigned char)b->name[i]
		         : i == b->len && b->is_dir ? '/'
		                                    : -1;

		if (ca != cb)
			return ca < cb ? -1 : 1;
		if (ca < 0)
			return 0;
	}
}

/* Read a directory whole; dfd is consumed.  Returns the sorted entries or -1. */
static int pack_read_dir(struct pack_ctx *c, int dfd, DIR **dirp, struct pack_dirent **out,
                         size_t *nout)
{
	struct pack_dirent *ents = NULL;
	size_t n = 0, cap = 0;
	struct dirent *de;
	DIR *d = fdopendir(dfd);

	if (d == NULL) {
		close(dfd);
		return pack_fail(c, "cannot read ./%s: %s", pack_dir_name(c), strerror(errno));
	}
	for (;;) {
		struct stat st;
		bool is_dir;

		errno = 0;
		de = readdir(d);
		if (de == NULL)
			break;
		if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0)
			continue;
		if (de->d_type != DT_UNKNOWN) {
			is_dir = de->d_type == DT_DIR;
		} else if (fstatat(dirfd(d), de->d_name, &st, AT_SYMLINK_NOFOLLOW) == 0) {
			is_dir = S_ISDIR(st.st_mode);
		} else {
			is_dir = false; /* vanished: pack_entry will say so */
		}
		if (n == cap) {
			cap = cap ? cap * 2 : 64;
			ents = xrealloc(ents, cap * sizeof(*ents));
		}
		ents[n].name = xstrdup(de->d_name);
		ents[n].len = strlen(de->d_name);
		ents[n].is_dir = is_dir;
		n++;
	}
	if (errno != 0) {
		int e = errno;

		for (size_t i = 0; i < n; i++)
			free(ents[i].name);
		free(ents);
		closedir(d);
		return pack_fail(c, "cannot read ./%s: %s", pack_dir_name(c), strerror(e));
	}
	if (n > 0)
		qsort(ents, n, sizeof(*ents), pack_dirent_cmp);
	*dirp = d;
	*out = ents;
	*nout = n;
	return 0;
}

/* Walk the directory whose relative path is c->path (first dlen bytes); dfd consumed. */
static int pack_walk(struct pack_ctx *c, int dfd, size_t dlen, int depth)
{
	struct pack_dirent *ents = NULL;
	struct pack_dirh *dirh = NULL;
	size_t n = 0, i;
	DIR *d = NULL;
	int rc;

	rc = pack_read_dir(c, dfd, &d, &ents, &n);
	if (rc == 0 && c->ar != NULL) {
		/* Pending entries read from here after the walk has moved on. */
		dirh = xcalloc(1, sizeof(*dirh));
		dirh->refs = 1;
		dirh->fd = fcntl(dirfd(d), F_DUPFD_CLOEXEC, 0);
		if (dirh->fd < 0) {
			free(dirh);
			dirh = NULL;
			rc =
			    pack_fail(c, "cannot read ./%s: %s", pack_dir_name(c), strerror(errno));
		}
	}
	for (i = 0; rc == 0 && i < n; i++) {
		const char *name = ents[i].name;
		bool excluded = false;
		char *err = NULL;

		if (pack_cancelled(c)) {
			rc = -1;
			break;
		}
		pack_path_set(c, dlen, name);
		if (c->ign != NULL && !pack_is_forced(c, c->path) &&
		    dockerignore_excluded(c->ign, c->path, &excluded, &err) < 0) {
			rc = pack_fail(c, "invalid .dockerignore: %s", err);
			free(err);
			break;
		}
		if (ents[i].is_dir) {
			int sub;

			if (excluded && !pack_is_forced_ancestor(c, c->path, c->plen) &&
			    !dockerignore_may_reinclude_below(c->ign, c->path)) {
				pack_add_excluded(c, true);
				continue;
			}
			if (depth + 1 > PACK_MAX_DEPTH) {
				rc = pack_fail(
				    c, "cannot pack ./%s: directories nested deeper than %d",
				    c->path, PACK_MAX_DEPTH);
				break;
			}
			sub =
			    openat(dirfd(d), name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
			if (sub < 0) {
				if (errno == ENOENT || errno == ENOTDIR || errno == ELOOP)
					pack_warn(c, "skipped ./%s: it changed while being packed",
					          c->path);
				else
					rc = pack_fail(c, "cannot read ./%s: %s", c->path,
					               strerror(errno));
				continue;
			}
			rc = pack_walk(c, sub, c->plen, depth + 1);
		} else if (excluded) {
			pack_add_excluded(c, false);
		} else if (dirh != NULL) {
			rc = pack_entry_archive(c, dirh, name);
		} else {
			rc = pack_entry(c, dirfd(d), name);
		}
	}
	pack_dirh_unref(dirh);
	for (i = 0; i < n; i++)
		free(ents[i].name);
	free(ents);
	if (d != NULL)
		closedir(d);
	return rc;
}

/* The walk from the context root, through a descriptor of our own (readdir moves it). */
static int pack_walk_root(struct pack_ctx *c)
{
	int dfd = openat(c->o->dirfd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);

	if (dfd < 0)
		return pack_fail(c, "cannot read the context: %s", strerror(errno));
	return pack_walk(c, dfd, 0, 0);
}

/* ---- resolving paths inside the context (Dockerfile, ignore files) ---- */

enum pack_resolve_rc { RESOLVE_OK = 0, RESOLVE_MISSING = -1, RESOLVE_OUTSIDE = -2 };

/*
 * Resolve path inside the context as the builder will, following symlinks (the last
 * component only when follow_last) but refusing to leave the context: a ".." above
 * the root or an absolute link target.  *out is the relative path of the entry
 * reached and *st its lstat.  RESOLVE_MISSING leaves errno set.
 */
static int pack_resolve(int dirfd, const char *path, bool follow_last, char **out, struct stat *st)
{
	char *rest = xstrdup(path), *res = xstrdup("");
	size_t pos = 0;
	int links = 0, rc = RESOLVE_OK, err = 0;

	for (;;) {
		size_t len;
		char *comp, *cand;
		bool last;

		while (rest[pos] == '/')
			pos++;
		if (rest[pos] == '\0')
			break;
		len = strcspn(rest + pos, "/");
		comp = xstrndup(rest + pos, len);
		pos += len;
		last = rest[pos + strspn(rest + pos, "/")] == '\0';
		if (strcmp(comp, ".") == 0) {
			free(comp);
			continue;
		}
		if (strcmp(comp, "..") == 0) {
			char *slash = strrchr(res, '/');

			free(comp);
			if (res[0] == '\0') {
				rc = RESOLVE_OUTSIDE;
				break;
			}
			*(slash ? slash : res) = '\0';
			continue;
		}
		cand = res[0] ? xasprintf("%s/%s", res, comp) : xstrdup(comp);
		free(comp);
		if (fstatat(dirfd, cand, st, AT_SYMLINK_NOFOLLOW) < 0) {
			err = errno;
			free(cand);
			rc = RESOLVE_MISSING;
			break;
		}
		if (S_ISLNK(st->st_mode) && (follow_last || !last)) {
			char target[4097];
			ssize_t n = readlinkat(dirfd, cand, target, sizeof(target) - 1);
			char *nrest;

			err = n < 0 ? errno : ELOOP;
			free(cand);
			if (n < 0 || ++links > PACK_MAX_LINKS) {
				rc = RESOLVE_MISSING;
				break;
			}
			target[n] = '\0';
			if (target[0] == '/') {
				rc = RESOLVE_OUTSIDE;
				break;
			}
			nrest = xasprintf("%s/%s", target, rest + pos);
			free(rest);
			rest = nrest;
			pos = 0;
			continue;
		}
		free(res);
		res = cand;
	}
	free(rest);
	if (rc == RESOLVE_OK && res[0] == '\0') {
		err = EISDIR;
		rc = RESOLVE_MISSING;
	}
	if (rc == RESOLVE_OK && fstatat(dirfd, res, st, AT_SYMLINK_NOFOLLOW) < 0) {
		err = errno;
		rc = RESOLVE_MISSING;
	}
	if (rc != RESOLVE_OK) {
		free(res);
		res = NULL;
	}
	*out = res;
	errno = err;
	return rc;
}

static void pack_force(struct pack_ctx *c, char *path)
{
	if (pack_is_forced(c, path) || c->nforced == PACK_NFORCED)
		free(path);
	else
		c->forced[c->nforced++] = path;
}

/* The Dockerfile must be a regular file inside the context; it is always kept. */
static int pack_check_dockerfile(struct pack_ctx *c, const char *df)
{
	struct stat st;
	char *real = NULL, *entry = NULL;
	int rc;

	if (df[0] == '\0' || df[0] == '/')
		return pack_fail(c, "Dockerfile %s: must be a path relative to the context", df);
	rc = pack_resolve(c->o->dirfd, df, true, &real, &st);
	if (rc == RESOLVE_OUTSIDE)
		return pack_fail(c, "Dockerfile %s is outside the context", df);
	if (rc == RESOLVE_MISSING)
		return pack_fail(c, "Dockerfile %s not found in the context: %s", df,
		                 strerror(errno));
	if (!S_ISREG(st.st_mode)) {
		free(real);
		return pack_fail(c, "Dockerfile %s is not a regular file", df);
	}
	pack_force(c, real);
	if (pack_resolve(c->o->dirfd, df, false, &entry, &st) == RESOLVE_OK)
		pack_force(c, entry);
	return 0;
}

/*
 * Load the ignore file: <Dockerfile>.dockerignore when it exists (BuildKit gives it
 * precedence), else .dockerignore.  A missing file is no error; one that is not a
 * regular file inside the context, or does not parse, is.
 */
static int pack_load_ignore(struct pack_ctx *c, const char *df)
{
	if (c->o->ignore_name != NULL) {
		char *perr = NULL;
		c->ign = dockerignore_parse(c->o->ignore_text, c->o->ignore_len, &perr);
		if (c->ign == NULL) {
			pack_fail(c, "invalid %s: %s", c->o->ignore_name, perr);
			free(perr);
			return -1;
		}
		return 0;
	}
	char *names[2] = {xasprintf("%s.dockerignore", df), xstrdup(".dockerignore")};
	char *real = NULL, *entry = NULL, *text = NULL, *err = NULL;
	const char *used = NULL;
	struct stat st;
	int fd = -1, rc = 0;
	size_t len = 0;

	for (int i = 0; i < 2 && used == NULL; i++) {
		int r = pack_resolve(c->o->dirfd, names[i], true, &real, &st);

		if (r == RESOLVE_MISSING && (errno == ENOENT || errno == ENOTDIR))
			continue;
		used = names[i];
		if (r == RESOLVE_OUTSIDE) {
			rc = pack_fail(c, "./%s leads outside the context", used);
			goto out;
		}
		if (r == RESOLVE_MISSING || !S_ISREG(st.st_mode)) {
			rc = pack_fail(c, "cannot read ./%s: %s", used,
			               r == RESOLVE_MISSING ? strerror(errno)
			                                    : "not a regular file");
			goto out;
		}
	}
	if (used == NULL)
		goto out;
	fd = openat(c->o->dirfd, real, O_RDONLY | O_NONBLOCK | O_NOFOLLOW | O_NOCTTY | O_CLOEXEC);
	if (fd < 0 || fstat(fd, &st) < 0) {
		rc = pack_fail(c, "cannot read ./%s: %s", used, strerror(errno));
		goto out;
	}
	if (!S_ISREG(st.st_mode) || st.st_size > PACK_MAX_IGNORE) {
		rc = pack_fail(c, "cannot read ./%s: %s", used,
		               S_ISREG(st.st_mode) ? "too large" : "not a regular file");
		goto out;
	}
	text = xmalloc((size_t)st.st_size + 1);
	while (len < (size_t)st.st_size) {
		ssize_t n = read(fd, text + len, (size_t)st.st_size - len);

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			rc = pack_fail(c, "cannot read ./%s: %s", used, strerror(errno));
			goto out;
		}
		if (n == 0)
			break;
		len += (size_t)n;
	}
	c->ign = dockerignore_parse(text, len, &err);
	if (c->ign == NULL) {
		rc = pack_fail(c, "invalid ./%s: %s", used, err);
		goto out;
	}
	pack_force(c, xstrdup(real));
	if (pack_resolve(c->o->dirfd, used, false, &entry, &st) == RESOLVE_OK)
		pack_force(c, entry);
out:
	if (fd >= 0)
		close(fd);
	free(err);
	free(text);
	free(real);
	free(names[0]);
	free(names[1]);
	return rc;
}

/* ---- the archive ---- */

/* libarchive writes unbuffered: each entry's bytes land in the chunk being filled. */
static la_ssize_t pack_ar_write_cb(struct archive *a, void *p, const void *buf, size_t len)
{
	struct pack_ctx *c = p;
	struct pack_chunk *ch = c->fill;

	(void)a;
	if (ch == NULL)
		return (la_ssize_t)len;
	if (ch->inlen + len > ch->incap) {
		ch->incap = ch->inlen + len > PACK_CHUNK + PACK_CHUNK / 4
		                ? 2 * (ch->inlen + len)
		                : PACK_CHUNK + PACK_CHUNK / 4;
		ch->in = xrealloc(ch->in, ch->incap);
	}
	memcpy(ch->in + ch->inlen, buf, len);
	ch->inlen += len;
	return (la_ssize_t)len;
}

static int pack_ar_open(struct pack_ctx *c)
{
	c->ar = archive_write_new();
	c->entry = archive_entry_new();
	if (c->ar == NULL || c->entry == NULL)
		abort();
	/*
	 * pax only when ustar cannot say it (long paths, big files).  Unbuffered, so that
	 * entries can be cut into chunks; pack_archive writes the end and the padding to
	 * 10 KiB blocks itself.
	 */
	if (archive_write_set_format_pax_restricted(c->ar) != ARCHIVE_OK ||
	    archive_write_add_filter_none(c->ar) != ARCHIVE_OK ||
	    archive_write_set_bytes_per_block(c->ar, 0) != ARCHIVE_OK ||
	    archive_write_open(c->ar, c, NULL, pack_ar_write_cb, NULL) != ARCHIVE_OK)
		return pack_fail(c, "cannot start the archive: %s", archive_error_string(c->ar));
	return 0;
}

static int pack_threads(const struct pack_options *o)
{
	long n = o->threads > 0 ? o->threads : sysconf(_SC_NPROCESSORS_ONLN);

	if (n < 1)
		n = 1;
	return n > PACK_MAX_THREADS ? PACK_MAX_THREADS : (int)n;
}

/*
 * The outside Dockerfile, after the walk: a member like any file of the context, read
 * from the descriptor the caller opened (named extra_name in the archive).
 */
static int pack_extra(struct pack_ctx *c)
{
	struct pack_pend p = {0};

	pack_path_set(c, 0, c->o->extra_name);
	if (fstat(c->o->extra_fd, &p.st) < 0)
		return pack_fail(c, "cannot read the Dockerfile: %s", strerror(errno));
	if (!S_ISREG(p.st.st_mode))
		return pack_fail(c, "the Dockerfile is not a regular file");
	if (c->ar == NULL) { /* inspecting only */
		pack_account(c, c->path, (uint64_t)p.st.st_size, p.st.st_mode & 07777, 'f');
		return 0;
	}
	p.path = xstrdup(c->o->extra_name);
	p.name = p.path;
	p.extra = true;
	return pack_place(c, &p);
}

/* The end of the archive (two zero blocks) and the padding to whole 10 KiB blocks. */
static int pack_trailer(struct pack_ctx *c)
{
	uint64_t total = (c->tar_len + 1024 + PACK_TAR_BLOCK - 1) / PACK_TAR_BLOCK * PACK_TAR_BLOCK;
	struct pack_chunk *ch = pack_next_slot(c);

	if (ch == NULL)
		return -1;
	if (ch->incap < total - c->tar_len) {
		ch->incap = total - c->tar_len;
		ch->in = xrealloc(ch->in, ch->incap);
	}
	ch->inlen = total - c->tar_len;
	memset(ch->in, 0, ch->inlen);
	ch->store = false;
	pack_gz_submit(&c->gz, false);
	return 0;
}

/* Write the archive to fd, which the caller opened for writing. */
static int pack_archive(struct pack_ctx *c, int fd)
{
	const struct pack_options *o = c->o;
	int level = o->level ? o->level : PACK_DEFAULT_LEVEL;

	if (level < 0 || level > 12)
		return pack_fail(c, "invalid compression level %d", o->level);
	c->gz_started = true; /* pack_gz_stop undoes even a partial start */
	if (pack_gz_start(&c->gz, pack_threads(o), level, fd) < 0)
		return pack_fail(c, "cannot start compression threads: %s", strerror(errno));
	if (o->cache_dir != NULL) {
		char *err = NULL;

		/* The cache only saves time: without it the archive is the same. */
		c->cache = packcache_open(o->cache_dir, o->cache_max_bytes, &err);
		free(err);
		c->gz.cache = c->cache;
	}
	/* A later change within this clock tick would leave the stats as they are. */
	clock_gettime(CLOCK_REALTIME_COARSE, &c->racy);
	if (pack_ar_open(c) < 0 || pack_walk_root(c) < 0 ||
	    (o->extra_name != NULL && pack_extra(c) < 0) || pack_flush(c) < 0 ||
	    pack_trailer(c) < 0)
		return -1;
	if (pack_gz_finish(&c->gz, c->r->sha256) < 0)
		return pack_fail(c, "cannot write the archive: %s", strerror(errno));
	c->r->archive_size = c->gz.out_bytes;
	return 0;
}

/* Write the archive to a temporary file in out_dir, then rename it to its digest. */
static void pack_spool(struct pack_ctx *c)
{
	const struct pack_options *o = c->o;
	struct pack_result *r = c->r;
	char *tmp = xasprintf("%s/.pack-XXXXXX", o->out_dir), *final = NULL;
	int fd, dfd = -1;
	bool done = false;

	fd = mkostemp(tmp, O_CLOEXEC);
	if (fd < 0) {
		pack_fail(c, "cannot create a spool file in %s: %s", o->out_dir, strerror(errno));
		free(tmp);
		return;
	}
	if (pack_archive(c, fd) < 0)
		goto out;
	if (fsync(fd) < 0) {
		pack_fail(c, "cannot write the spool file %s: %s", tmp, strerror(errno));
		goto out;
	}
	final = xasprintf("%s/%s.tar.gz", o->out_dir, r->sha256);
	if (rename(tmp, final) < 0) {
		pack_fail(c, "cannot rename the spool file to %s: %s", final, strerror(errno));
		goto out;
	}
	done = true;
	/* The rename must survive a crash too: the job will point at this name. */
	dfd = open(o->out_dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (dfd < 0 || fsync(dfd) < 0) {
		pack_fail(c, "cannot sync %s: %s", o->out_dir, strerror(errno));
		unlink(final);
		goto out;
	}
	r->archive_path = final;
	final = NULL;
out:
	if (!done)
		unlink(tmp);
	if (dfd >= 0)
		close(dfd);
	close(fd);
	free(final);
	free(tmp);
}

void pack_run(const struct pack_options *o, struct pack_result *r)
{
	struct pack_ctx c = {.o = o, .r = r};
	const char *df = o->dockerfile ? o->dockerfile : "Dockerfile";
	/*
	 * Names are bytes.  Under a UTF-8 LC_CTYPE (for this thread only) libarchive writes
	 * UTF-8 names as they are and marks others hdrcharset=BINARY, whatever the
	 * daemon's locale; the C locale would mark every non-ASCII name BINARY.
	 */
	locale_t utf8 = newlocale(LC_CTYPE_MASK, "C.UTF-8", (locale_t)0);
	locale_t old = utf8 != (locale_t)0 ? uselocale(utf8) : (locale_t)0;

	memset(r, 0, sizeof(*r));
	c.buf = xmalloc(PACK_READ_BUF);
	clock_gettime(CLOCK_MONOTONIC, &c.last_progress);
	if ((o->extra_name == NULL && pack_check_dockerfile(&c, df) < 0) ||
	    pack_load_ignore(&c, df) < 0)
		goto out;
	pack_force(&c, xstrdup(".dockerignore"));
	if (o->to_fd)
		pack_archive(&c, o->out_fd);
	else if (o->out_dir != NULL)
		pack_spool(&c);
	else if (pack_walk_root(&c) == 0 && o->extra_name != NULL)
		pack_extra(&c);
	if (r->status == PACK_OK)
		pack_progress(&c, true);
out:
	c.fill = NULL;
	for (size_t i = 0; i < c.npend; i++)
		pack_pend_clear(&c.pend[i]);
	free(c.pend);
	if (c.ar != NULL)
		archive_write_free(c.ar);
	if (c.entry != NULL)
		archive_entry_free(c.entry);
	if (c.gz_started)
		pack_gz_stop(&c.gz);
	packcache_close(c.cache);
	if (r->status == PACK_CANCELLED && r->error == NULL)
		r->error = xstrdup("cancelled");
	dockerignore_free(c.ign);
	for (size_t i = 0; i < c.nforced; i++)
		free(c.forced[i]);
	free(c.path);
	free(c.buf);
	if (utf8 != (locale_t)0) {
		uselocale(old);
		freelocale(utf8);
	}
}

static void pack_file_clear(struct pack_file *f)
{
	free(f->path);
	f->path = NULL;
}

void pack_result_clear(struct pack_result *r)
{
	free(r->error);
	free(r->archive_path);
	for (size_t i = 0; i < r->nfiles; i++)
		pack_file_clear(&r->files[i]);
	free(r->files);
	for (size_t i = 0; i < r->nlargest; i++)
		pack_file_clear(&r->largest[i]);
	for (size_t i = 0; i < r->nexcluded; i++)
		free(r->excluded[i]);
	free(r->excluded);
	memset(r, 0, sizeof(*r));
}
