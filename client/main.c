/*
 * snapbuild: global options, then one command from the table in cmd.c.
 *
 *   snapbuild [--socket PATH] [-o table|json] COMMAND [ARGS] [-o table|json]
 *
 * `-o` is also taken after the command (before a `--`), so it can be appended to any
 * command line.  `--help` is ours only before the command name (`snapbuild --help
 * create` is `snapbuild help create`); after it, it belongs to the command, which may
 * have subcommands with usages of their own (`snapbuild snapshots list --help`).
 */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cmd.h"
#include "protocol.h"
#include "util.h"

static void main_usage(FILE *fp)
{
	fprintf(fp, "usage: snapbuild [--socket PATH] [-o table|json] COMMAND [ARGS]\n"
	            "Try `snapbuild help`.\n");
}

static void main_interrupt_cb(int sig)
{
	(void)sig;
	cmd_interrupted = 1;
}

/*
 * Recognises an output option at argv[i]: returns how many arguments it used (0 if
 * it is not one), -1 on a bad value.
 */
static int main_output_option(int argc, char **argv, int i, bool *json)
{
	const char *a = argv[i], *v = NULL;
	int used = 1, o;

	if (strcmp(a, "-o") == 0 || strcmp(a, "--output") == 0) {
		if (i + 1 >= argc) {
			fprintf(stderr, "snapbuild: %s needs a value: table or json\n", a);
			return -1;
		}
		v = argv[i + 1];
		used = 2;
	} else if (strncmp(a, "--output=", 9) == 0) {
		v = a + 9;
	} else if (strncmp(a, "-o", 2) == 0) {
		v = a + 2;
	} else if (strcmp(a, "--json") == 0) {
		v = "json";
	} else {
		return 0;
	}
	o = cmd_output_format(v);
	if (o < 0) {
		fprintf(stderr, "snapbuild: unknown output format '%s': use table or json\n", v);
		return -1;
	}
	*json = o == 1;
	return used;
}

int main(int argc, char **argv)
{
	struct cmd_ctx ctx = {.socket_path = sb_default_socket_path()};
	const struct cmd_entry *e;
	struct sigaction sa;
	bool help = false;
	int i, k, n;

	for (i = 1; i < argc; i++) {
		const char *a = argv[i];
		if (strcmp(a, "--socket") == 0) {
			if (i + 1 >= argc) {
				fprintf(stderr, "snapbuild: --socket needs a path\n");
				return CMD_EXIT_USAGE;
			}
			ctx.socket_path = argv[++i];
		} else if (strncmp(a, "--socket=", 9) == 0) {
			ctx.socket_path = a + 9;
		} else if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
			help = true;
		} else if (strcmp(a, "--version") == 0) {
			printf("snapbuild %s (protocol %d)\n", SNAPBUILD_VERSION,
			       SNAPBUILD_PROTOCOL_VERSION);
			return CMD_EXIT_OK;
		} else if ((n = main_output_option(argc, argv, i, &ctx.json)) != 0) {
			if (n < 0)
				return CMD_EXIT_USAGE;
			i += n - 1;
		} else if (a[0] == '-') {
			static const char *const globals[] = {"--socket", "--output",  "--json",
			                                      "--help",   "--version", NULL};
			const char *near = cmd_closest(a, globals);
			fprintf(stderr, "snapbuild: unknown option '%s'%s%s%s (snapbuild help)\n",
			        a, near ? "; did you mean '" : "", near ? near : "",
			        near ? "'?" : "");
			return CMD_EXIT_USAGE;
		} else {
			break;
		}
	}
	if (i >= argc) {
		if (help) {
			char *hargv[] = {"help", NULL};
			ctx.argc = 1;
			ctx.argv = hargv;
			return cmd_help_entry.exec(&ctx);
		}
		main_usage(stderr);
		return CMD_EXIT_USAGE;
	}
	e = cmd_find(argv[i]);
	if (e == NULL)
		return cmd_unknown_command(argv[i]);
	if (help) {
		cmd_print_usage(e, stdout);
		return CMD_EXIT_OK;
	}

	/* The command's own arguments, minus output options before any "--". */
	ctx.argv = xcalloc((size_t)(argc - i + 1), sizeof(char *));
	ctx.argv[0] = argv[i];
	k = 1;
	for (int j = i + 1; j < argc; j++) {
		if (strcmp(argv[j], "--") == 0) {
			while (j < argc)
				ctx.argv[k++] = argv[j++];
			break;
		}
		n = main_output_option(argc, argv, j, &ctx.json);
		if (n < 0) {
			free(ctx.argv);
			return CMD_EXIT_USAGE;
		}
		if (n > 0) {
			j += n - 1;
			continue;
		}
		ctx.argv[k++] = argv[j];
	}
	ctx.argc = k;

	/* No SA_RESTART: a blocking read must return so the command can stop cleanly. */
	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = main_interrupt_cb;
	sigemptyset(&sa.sa_mask);
	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGTERM, &sa, NULL);
	signal(SIGPIPE, SIG_IGN);

	n = e->exec(&ctx);
	free(ctx.argv);
	return n;
}
