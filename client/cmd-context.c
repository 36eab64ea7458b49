/*
 * snapbuild context DIR: what a build of DIR would send — counts and bytes, the
 * largest files, what .dockerignore excluded, warnings — without uploading.
 * --files lists every file; --save FILE writes the exact archive that would be
 * uploaded (the daemon packs it and copies it into FILE, opened here).
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "client.h"
#include "cmd.h"
#include "output.h"
#include "util.h"

static int cmd_context_exec(struct cmd_ctx *ctx);
const struct cmd_entry cmd_context_entry = {
    .name = "context",
    .usage = "[--dockerfile FILE] [--files] [--save FILE] [-o table|json] DIR",
    .summary = "show what a build of DIR would send (.dockerignore applied)",
    .exec = cmd_context_exec,
};

static void print_file(json_object *f)
{
	char *b = output_bytes((uint64_t)json_int(f, "size"));
	printf("  %10s  %s%s\n", b, json_str(f, "path"),
	       strcmp(json_str(f, "type"), "symlink") == 0 ? " (symlink)" : "");
	free(b);
}

static int save_archive(struct cmd_ctx *ctx, struct sb_client *c, const char *sha, const char *path)
{
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	if (fd < 0) {
		fprintf(stderr, "snapbuild: cannot write %s: %s\n", path, strerror(errno));
		return 1;
	}
	json_object *params = json_object_new_object();
	json_object_object_add(params, "sha256", json_object_new_string(sha));
	json_object *res = NULL;
	int rc = cmd_call_notify(ctx, c, "context.save", params, fd, NULL, NULL, &res);
	close(fd);
	if (rc == 0 && !ctx->json) {
		char *b = output_bytes((uint64_t)json_int(res, "bytes"));
		printf("wrote %s (%s, sha256 %s)\n", path, b, sha);
		free(b);
	}
	json_object_put(res);
	return rc;
}

static int cmd_context_exec(struct cmd_ctx *ctx)
{
	static const struct option opts[] = {
	    {"dockerfile", required_argument, NULL, 'f'},
	    {"files", no_argument, NULL, 'l'},
	    {"save", required_argument, NULL, 's'},
	    {"output", required_argument, NULL, 'o'},
	    {"help", no_argument, NULL, 'h'},
	    {NULL, 0, NULL, 0},
	};
	json_object *params = json_object_new_object();
	const char *save = NULL;
	bool files = false;
	int opt;
	optind = 0;
	while ((opt = getopt_long(ctx->argc, ctx->argv, "f:s:o:h", opts, NULL)) != -1) {
		switch (opt) {
		case 'f':
			json_object_object_add(params, "dockerfile",
			                       json_object_new_string(optarg));
			break;
		case 'l':
			files = true;
			json_object_object_add(params, "list_files", json_object_new_boolean(1));
			break;
		case 's':
			save = optarg;
			json_object_object_add(params, "save", json_object_new_boolean(1));
			break;
		case 'o':
			if (cmd_set_output(ctx, &cmd_context_entry, optarg) != CMD_EXIT_OK) {
				json_object_put(params);
				return CMD_EXIT_USAGE;
			}
			break;
		case 'h':
			cmd_print_usage(&cmd_context_entry, stdout);
			json_object_put(params);
			return 0;
		default:
			json_object_put(params);
			return cmd_usage_error(&cmd_context_entry, "unknown option");
		}
	}
	if (optind != ctx->argc - 1) {
		json_object_put(params);
		return cmd_usage_error(&cmd_context_entry, "give exactly one directory");
	}
	const char *dir = ctx->argv[optind];
	int dirfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (dirfd < 0) {
		fprintf(stderr, "snapbuild: cannot open context directory %s: %s\n", dir,
		        strerror(errno));
		json_object_put(params);
		return 1;
	}
	struct sb_client *c = cmd_connect(ctx);
	json_object *res = NULL;
	int rc = cmd_call_notify(ctx, c, "context.inspect", params, dirfd, NULL, NULL, &res);
	close(dirfd);
	if (rc != 0)
		goto out;
	if (ctx->json) {
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
				printf("  %s\n",
				       json_object_get_string(json_object_array_get_idx(arr, i)));
		}
		if (json_object_object_get_ex(res, "warnings", &arr))
			for (size_t i = 0; i < json_object_array_length(arr); i++)
				printf("warning: %s\n",
				       json_object_get_string(json_object_array_get_idx(arr, i)));
		if (files && json_object_object_get_ex(res, "files", &arr)) {
			printf("files:\n");
			for (size_t i = 0; i < json_object_array_length(arr); i++)
				print_file(json_object_array_get_idx(arr, i));
		}
	}
	if (save) {
		json_object *a = NULL;
		json_object_object_get_ex(res, "archive", &a);
		rc = save_archive(ctx, c, json_str(a, "sha256"), save);
	}
out:
	json_object_put(res);
	sb_client_close(c);
	return rc;
}
