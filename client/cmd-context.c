/*
 * snapbuild context DIR: what a build of DIR would send — counts and bytes, the
 * largest files, what .dockerignore excluded, warnings — without uploading.
 * --files lists every file; --save FILE writes the exact archive that would be
 * uploaded.  All of it happens here, with the caller's rights: the daemon is not
 * asked (it never reads a user's files).
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "client.h"
#include "cmd.h"
#include "output.h"
#include "packctx.h"
#include "sanitize.h"
#include "util.h"

static int cmd_context_exec(struct cmd_ctx *ctx);
const struct cmd_entry cmd_context_entry = {
    .name = "context",
    .usage = "[--dockerfile FILE] [--files] [--save FILE] [--no-cache] [-o table|json] DIR",
    .summary = "show what a build of DIR would send (.dockerignore applied)",
    .exec = cmd_context_exec,
    .help = "Options:\n"
            "  -f, --dockerfile FILE  the Dockerfile, read as create reads it: from the\n"
            "                         current directory (default: Dockerfile in DIR)\n"
            "      --files            list every file that would be sent\n"
            "  -s, --save FILE        write the exact archive create would send\n"
            "  -o, --output table|json  json: counts, largest files, exclusions, warnings\n"
            "\n"
            "Packed here, with your rights: no daemon is needed or asked.\n",
};

static void print_file(json_object *f)
{
	char *b = output_bytes((uint64_t)json_int(f, "size"));
	/* File names are anybody's choice: one field, escaped. */
	sanitize_printf(stdout, SANITIZE_FIELD, "  %10s  %s", b, json_str(f, "path"));
	printf("%s\n", strcmp(json_str(f, "type"), "symlink") == 0 ? " (symlink)" : "");
	free(b);
}

/*
 * A temporary file next to path, renamed over it once the archive is complete, so a
 * failed pack never leaves half an archive.  What exists and is not a regular file (a
 * FIFO, a terminal, /dev/null) is written to as it is, never replaced; "-" is stdout.
 */
static int open_save(const char *path, char **tmp)
{
	struct stat st;
	*tmp = NULL;
	if (strcmp(path, "-") == 0) {
		if (isatty(STDOUT_FILENO)) {
			fprintf(stderr, "snapbuild: --save - writes the archive to standard output, "
			                "which is a terminal: redirect it to a file or a pipe\n");
			return -1;
		}
		return dup(STDOUT_FILENO);
	}
	if (stat(path, &st) == 0 && !S_ISREG(st.st_mode)) {
		int fd = open(path, O_WRONLY | O_CLOEXEC | O_NOCTTY);
		if (fd < 0)
			fprintf(stderr, "snapbuild: cannot write %s: %s\n", path, strerror(errno));
		return fd;
	}
	*tmp = xasprintf("%s.tmp-XXXXXX", path);
	int fd = mkostemp(*tmp, O_CLOEXEC);
	if (fd < 0) {
		fprintf(stderr, "snapbuild: cannot write %s: %s\n", path, strerror(errno));
		free(*tmp);
		*tmp = NULL;
		return -1;
	}
	mode_t mask = umask(0);
	umask(mask);
	if (fchmod(fd, 0644 & ~mask) != 0) {
		fprintf(stderr, "snapbuild: cannot write %s: %s\n", path, strerror(errno));
		close(fd);
		unlink(*tmp);
		free(*tmp);
		*tmp = NULL;
		return -1;
	}
	return fd;
}

static int cmd_context_exec(struct cmd_ctx *ctx)
{
	static const struct option opts[] = {
	    {"dockerfile", required_argument, NULL, 'f'},
	    {"files", no_argument, NULL, 'l'},
	    {"save", required_argument, NULL, 's'},
	    {"no-cache", no_argument, NULL, 'N'},
	    {"output", required_argument, NULL, 'o'},
	    {"help", no_argument, NULL, 'h'},
	    {NULL, 0, NULL, 0},
	};
	const char *save = NULL, *dockerfile = NULL;
	bool files = false, no_cache = false;
	int opt, rc = 1, out_fd = -1;
	char *tmp = NULL, *err = NULL;
	optind = 0;
	opterr = 0;
	while ((opt = getopt_long(ctx->argc, ctx->argv, ":f:s:o:h", opts, NULL)) != -1) {
		switch (opt) {
		case 'f':
			dockerfile = optarg;
			break;
		case 'l':
			files = true;
			break;
		case 'N':
			no_cache = true;
			break;
		case 's':
			save = optarg;
			break;
		case 'o':
			if (cmd_set_output(ctx, &cmd_context_entry, optarg) != CMD_EXIT_OK)
				return CMD_EXIT_USAGE;
			break;
		case 'h':
			cmd_print_usage(&cmd_context_entry, stdout);
			return 0;
		default:
			return cmd_option_error("context", opt, ctx->argc, ctx->argv, opts);
		}
	}
	if (optind != ctx->argc - 1)
		return cmd_usage_error(&cmd_context_entry, "give exactly one directory");
	const char *dir = ctx->argv[optind];
	if (save && (out_fd = open_save(save, &tmp)) < 0)
		return 1;
	struct packctx p;
	struct packctx_options po = {
	    .dir = dir,
	    .dockerfile = dockerfile,
	    .list_files = files,
	    .inspect_only = save == NULL,
	    .out_fd = out_fd,
	    .no_cache = no_cache,
	    .cancel = (volatile int *)&cmd_interrupted,
	};
	if (packctx_run(&po, &p, &err) != 0) {
		sanitize_printf(stderr, 0, "snapbuild: %s\n", err);
		if (cmd_interrupted)
			rc = CMD_EXIT_INTERRUPTED;
		goto out;
	}
	if (tmp && (fsync(out_fd) != 0 || rename(tmp, save) != 0)) {
		fprintf(stderr, "snapbuild: cannot write %s: %s\n", save, strerror(errno));
		packctx_clear(&p);
		goto out;
	}
	free(tmp);
	tmp = NULL;
	json_object *res = packctx_json(&p, files);
	if (save && strcmp(save, "-") == 0) {
		/* Standard output holds the archive: the summary goes to standard error. */
		char *b = output_bytes(p.result.archive_size);
		if (ctx->json)
			fprintf(stderr, "%s\n",
			        json_object_to_json_string_ext(res, JSON_C_TO_STRING_PRETTY));
		else
			fprintf(stderr, "wrote the archive to standard output (%s, sha256 %s)\n", b,
			        p.result.sha256);
		free(b);
	} else if (ctx->json) {
		cmd_print_json(res);
	} else {
		char *total = output_bytes((uint64_t)json_int(res, "total_bytes"));
		printf("%lld files, %s\n", (long long)json_int(res, "file_count"), total);
		free(total);
		json_object *arr = NULL;
		if (json_object_object_get_ex(res, "largest", &arr) &&
		    json_object_array_length(arr)) {
			printf("largest files:\n");
			for (size_t i = 0; i < json_object_array_length(arr); i++)
				print_file(json_object_array_get_idx(arr, i));
		}
		if (json_object_object_get_ex(res, "excluded", &arr) &&
		    json_object_array_length(arr)) {
			printf("excluded by .dockerignore:\n");
			for (size_t i = 0; i < json_object_array_length(arr); i++)
				sanitize_printf(
				    stdout, 0, "  %s\n",
				    json_object_get_string(json_object_array_get_idx(arr, i)));
		}
		if (json_object_object_get_ex(res, "warnings", &arr))
			for (size_t i = 0; i < json_object_array_length(arr); i++)
				sanitize_printf(
				    stdout, 0, "warning: %s\n",
				    json_object_get_string(json_object_array_get_idx(arr, i)));
		if (files && json_object_object_get_ex(res, "files", &arr)) {
			printf("files:\n");
			for (size_t i = 0; i < json_object_array_length(arr); i++)
				print_file(json_object_array_get_idx(arr, i));
		}
		if (save) {
			char *b = output_bytes(p.result.archive_size);
			printf("wrote %s (%s, sha256 %s)\n", save, b, p.result.sha256);
			free(b);
		}
	}
	json_object_put(res);
	packctx_clear(&p);
	rc = 0;
out:
	if (tmp)
		unlink(tmp);
	free(tmp);
	free(err);
	if (out_fd >= 0)
		close(out_fd);
	return rc;
}
