/*
 * snapbuild-pack-bench: pack a context directory exactly as the daemon does (same
 * pack_run, same spool naming) and print one line of results, for bench/pack-bench.sh.
 *
 * usage: snapbuild-pack-bench [-t threads] [-l level] [-f dockerfile] [-o spool-dir] DIR
 * Without -o it only inspects (walk and .dockerignore, no archive).
 */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

#include "pack.h"

static void bench_warning_cb(void *arg, const char *msg)
{
	(void)arg;
	fprintf(stderr, "warning: %s\n", msg);
}

int main(int argc, char **argv)
{
	struct pack_options o = {.dockerfile = "Dockerfile", .level = 6};
	struct pack_result r;
	struct timespec t0, t1;
	int c, rc;

	while ((c = getopt(argc, argv, "t:l:f:o:")) != -1) {
		switch (c) {
		case 't':
			o.threads = atoi(optarg);
			break;
		case 'l':
			o.level = atoi(optarg);
			break;
		case 'f':
			o.dockerfile = optarg;
			break;
		case 'o':
			o.out_dir = optarg;
			break;
		default:
			fprintf(stderr,
			        "usage: %s [-t threads] [-l level] [-f dockerfile] "
			        "[-o spool-dir] DIR\n",
			        argv[0]);
			return 2;
		}
	}
	if (optind + 1 != argc) {
		fprintf(stderr, "usage: %s [options] DIR\n", argv[0]);
		return 2;
	}
	o.dirfd = open(argv[optind], O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (o.dirfd < 0) {
		perror(argv[optind]);
		return 1;
	}
	o.on_warning = bench_warning_cb;
	clock_gettime(CLOCK_MONOTONIC, &t0);
	pack_run(&o, &r);
	clock_gettime(CLOCK_MONOTONIC, &t1);
	if (r.status != PACK_OK) {
		fprintf(stderr, "pack failed: %s\n", r.error);
		rc = 1;
	} else {
		printf(
		    "seconds=%.3f files=%llu bytes=%llu excluded=%zu archive_size=%llu sha256=%s "
		    "archive=%s\n",
		    (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9,
		    (unsigned long long)r.file_count, (unsigned long long)r.total_bytes,
		    r.nexcluded, (unsigned long long)r.archive_size, r.sha256,
		    r.archive_path ? r.archive_path : "-");
		rc = 0;
	}
	pack_result_clear(&r);
	close(o.dirfd);
	return rc;
}
