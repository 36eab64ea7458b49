/*
 * The spool (<state_dir>/spool): client archives taken in (intake.c), one file per
 * digest, kept while any job refers to it; and the local builds' working directories
 * under tmp_dir, which a killed daemon may leave behind.
 */
#include <dirent.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "daemon.h"
#include "job.h"
#include "log.h"
#include "store.h"
#include "util.h"

char *spool_path(const struct jobs *js, const char *digest)
{
	return xasprintf("%s/%s.tar.gz", js->spool_dir, digest);
}

bool spool_exists(const struct jobs *js, const char *digest)
{
	if (digest == NULL)
		return false;
	char *p = spool_path(js, digest);
	bool ok = access(p, R_OK) == 0;
	free(p);
	return ok;
}

static void spool_rm_tree_at(int dfd, const char *name)
{
	int fd = openat(dfd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	if (fd >= 0) {
		DIR *dir = fdopendir(fd);
		if (dir) {
			struct dirent *de;
			while ((de = readdir(dir))) {
				if (strcmp(de->d_name, ".") && strcmp(de->d_name, ".."))
					spool_rm_tree_at(dirfd(dir), de->d_name);
			}
			closedir(dir);
		} else {
			close(fd);
		}
		unlinkat(dfd, name, AT_REMOVEDIR);
	} else {
		unlinkat(dfd, name, 0);
	}
}

static bool spool_name(const char *name, char digest[65])
{
	size_t n = strlen(name);
	if (n != 64 + 7 || strcmp(name + 64, ".tar.gz") != 0)
		return false;
	for (size_t i = 0; i < 64; i++)
		if (!strchr("0123456789abcdef", name[i]))
			return false;
	memcpy(digest, name, 64);
	digest[64] = '\0';
	return true;
}

void spool_gc(struct jobs *js, bool at_start)
{
	DIR *dir = opendir(js->spool_dir);
	if (dir == NULL)
		return;
	struct dirent *de;
	while ((de = readdir(dir))) {
		char digest[65];
		if (de->d_name[0] == '.' && !at_start)
			continue;
		if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0)
			continue;
		bool remove = false;
		if (spool_name(de->d_name, digest)) {
			bool in_use = true;
			/* An archive taken in has no job for a moment: not while intakes run. */
			if (store_spool_in_use(js->d->store, digest, &in_use, NULL) == 0 && !in_use)
				remove = TAILQ_EMPTY(&js->intakes) || at_start;
		} else if (at_start && str_has_prefix(de->d_name, "saved-")) {
			/* archives an older daemon saved for context.inspect */
			spool_rm_tree_at(dirfd(dir), de->d_name);
		} else {
			remove = at_start; /* a temporary file of an interrupted intake */
		}
		if (remove) {
			log_debug("spool: removing %s", de->d_name);
			unlinkat(dirfd(dir), de->d_name, 0);
		}
	}
	closedir(dir);
}

void spool_tmp_gc(struct jobs *js)
{
	DIR *dir = opendir(js->tmp_root);
	if (dir == NULL)
		return;
	struct dirent *de;
	while ((de = readdir(dir))) {
		if (!str_has_prefix(de->d_name, "snapbuild-local-") &&
		    !str_has_prefix(de->d_name, "image-"))
			continue;
		log_info("removing %s/%s, left by an earlier run", js->tmp_root, de->d_name);
		spool_rm_tree_at(dirfd(dir), de->d_name);
	}
	closedir(dir);
}
