/*
 * snapbuild snapshots (or snapshot): Together snapshots through the daemon, which
 * holds the API key.  `list` shows a table (ID, SIZE, MEMORY, RETIRED, AGE, TAGS); on
 * a terminal every page streams into $PAGER, the next page fetched only as the pager
 * reads on, with fixed column widths so pages line up and the tags cut to the
 * terminal's width; in a pipe it prints one page whole.  `get` shows one snapshot in
 * sections; `alias`, `unalias` and `retire` change one.  With -o json every command
 * prints the daemon's result, which for list, get and retire is the API's own object.
 * Every field the service sends (ids, tags, times, error messages) is shown through the
 * sanitiser (sanitize.h): the tags and names may be another user's.
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <time.h>
#include <unistd.h>

#include "client.h"
#include "cmd.h"
#include "output.h"
#include "sanitize.h"
#include "util.h"

/* Widest rendering of each fixed column: a UUID, output_bytes, "yes"/"no" under its
 * header, output_age ("11 months ago"). */
#define SNAP_W_ID      36
#define SNAP_W_SIZE    10
#define SNAP_W_MEMORY  6
#define SNAP_W_AGE     13
#define SNAP_GAP       2
#define SNAP_W_TAGSMIN 12

static int cmd_snapshots_exec(struct cmd_ctx *ctx);

const struct cmd_entry cmd_snapshots_entry = {
    .name = "snapshots",
    .alias = "snapshot",
    .usage = "create|list|get|alias|unalias|retire [ARGS]",
    .summary = "create, list, show, alias and retire snapshots (snapshots --help)",
    .exec = cmd_snapshots_exec,
};

struct snap_sub {
	const char *name;
	const char *usage;
	const char *summary;
	int (*exec)(struct cmd_ctx *ctx, int argc, char **argv);
};

static const struct snap_sub *snap_sub_find(const char *name);

static int snap_create(struct cmd_ctx *ctx, int argc, char **argv);

static void snap_sub_usage(const struct snap_sub *s, FILE *fp)
{
	fprintf(fp, "usage: snapbuild snapshots %s %s\n  %s\n", s->name, s->usage, s->summary);
	if (s->exec == snap_create)
		fprintf(fp, "\n%s", cmd_create_entry.help);
}

static int snap_usage_error(const struct snap_sub *s, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static int snap_usage_error(const struct snap_sub *s, const char *fmt, ...)
{
	va_list ap;

	fprintf(stderr, "snapbuild snapshots %s: ", s->name);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fprintf(stderr, " (snapbuild snapshots %s --help)\n", s->name);
	return CMD_EXIT_USAGE;
}

/*
 * getopt_long over a subcommand's arguments (argv[0] is its name; -o never gets here,
 * snapbuild's main takes it first, nor does --help, cmd_snapshots_exec's).  Returns -1
 * to go on with optind at the first operand, else the exit code of a usage error (on_opt
 * prints its own for a bad value and returns nonzero).
 */
static int snap_opts(const struct snap_sub *s, int argc, char **argv, const struct option *opts,
                     const char *shorts, int (*on_opt)(void *arg, int opt, const char *val),
                     void *arg)
{
	static const struct option none[] = {{NULL, 0, NULL, 0}};
	char *name = xasprintf("snapshots %s", s->name);
	int opt, rc = -1;

	optind = 0;
	opterr = 0;
	while (rc < 0 && (opt = getopt_long(argc, argv, shorts ? shorts : ":", opts ? opts : none,
	                                    NULL)) != -1) {
		if (opt == '?' || opt == ':' || on_opt == NULL)
			rc = cmd_option_error(name, opt, argc, argv, opts ? opts : none);
		else if (on_opt(arg, opt, optarg) != 0)
			rc = CMD_EXIT_USAGE;
	}
	free(name);
	return rc;
}

static json_object *snap_id_params(const char *key, const char *value)
{
	json_object *p = json_object_new_object();

	json_object_object_add(p, key, json_object_new_string(value));
	return p;
}

/* --- rendering ---------------------------------------------------------------------- */

struct snap_tag {
	const char *key, *value;
};

static int snap_tag_cmp(const void *a, const void *b)
{
	return strcmp(((const struct snap_tag *)a)->key, ((const struct snap_tag *)b)->key);
}

/* "k=v, k2=v2" sorted by key, or "-" (malloc'd, sanitised: anyone may have set them). */
static char *snap_tags_text(json_object *s)
{
	json_object *tags = NULL;
	struct snap_tag *v;
	size_t n = 0, len = 1;
	char *out, *clean;

	if (!json_object_object_get_ex(s, "tags", &tags) ||
	    !json_object_is_type(tags, json_type_object) || json_object_object_length(tags) == 0)
		return xstrdup("-");
	v = xcalloc((size_t)json_object_object_length(tags), sizeof(*v));
	json_object_object_foreach(tags, k, val)
	{
		v[n].key = k;
		v[n].value = json_object_is_type(val, json_type_string)
		                 ? json_object_get_string(val)
		                 : json_object_to_json_string(val);
		len += strlen(k) + strlen(v[n].value) + 3;
		n++;
	}
	qsort(v, n, sizeof(*v), snap_tag_cmp);
	out = xmalloc(len);
	out[0] = '\0';
	for (size_t i = 0; i < n; i++) {
		if (i > 0)
			strcat(out, ", ");
		strcat(out, v[i].key);
		strcat(out, "=");
		strcat(out, v[i].value);
	}
	free(v);
	clean = sanitize(out, SANITIZE_FIELD);
	free(out);
	return clean;
}

/* Display width in code points (the API's text is UTF-8). */
static size_t snap_width(const char *s)
{
	size_t w = 0;

	for (; *s; s++)
		w += ((unsigned char)*s & 0xc0) != 0x80;
	return w;
}

/* s cut to max code points, the last one an ellipsis when anything was cut. */
static char *snap_cut(const char *s, size_t max)
{
	size_t bytes = 0, w = 0;

	if (max == 0 || snap_width(s) <= max)
		return xstrdup(s);
	while (s[bytes] && w < max - 1) {
		bytes++;
		while (((unsigned char)s[bytes] & 0xc0) == 0x80)
			bytes++;
		w++;
	}
	return xasprintf("%.*s…", (int)bytes, s);
}

static bool snap_is_null(json_object *o, const char *key)
{
	json_object *v = NULL;

	return !json_object_object_get_ex(o, key, &v) || v == NULL;
}

/* "active", or "retired 3 mins ago" (malloc'd). */
static char *snap_status_text(json_object *s)
{
	char *age, *out;

	if (snap_is_null(s, "retired_at"))
		return xstrdup("active");
	age = output_age(parse_rfc3339(json_str(s, "retired_at")), now_seconds());
	out = xasprintf("retired %s", age);
	free(age);
	return out;
}

static void snap_row(FILE *fp, const char *id, const char *size, const char *memory,
                     const char *retired, const char *age, const char *tags, size_t tags_max)
{
	char *t = snap_cut(tags, tags_max);

	fprintf(fp, "%-*s%*s%-*s%*s%-*s%*s%-*s%*s%-*s%*s%s\n", SNAP_W_ID, id, SNAP_GAP, "",
	        SNAP_W_SIZE, size, SNAP_GAP, "", SNAP_W_MEMORY, memory, SNAP_GAP, "", SNAP_W_AGE,
	        retired, SNAP_GAP, "", SNAP_W_AGE, age, SNAP_GAP, "", t);
	free(t);
}

static void snap_header(FILE *fp)
{
	snap_row(fp, "ID", "SIZE", "MEMORY", "RETIRED", "AGE", "TAGS", 0);
}

static void snap_print_row(FILE *fp, json_object *s, double now, size_t tags_max)
{
	char *id = sanitize(json_str(s, "id"), SANITIZE_FIELD);
	char *size = output_bytes((uint64_t)json_int(s, "byte_size"));
	char *age = output_age(parse_rfc3339(json_str(s, "created_at")), now);
	char *retired = snap_is_null(s, "retired_at")
	                    ? xstrdup("-")
	                    : output_age(parse_rfc3339(json_str(s, "retired_at")), now);
	char *tags = snap_tags_text(s);
	json_object *mem = NULL;
	bool memory = json_object_object_get_ex(s, "memory", &mem) && json_object_get_boolean(mem);

	snap_row(fp, id, size, memory ? "yes" : "no", retired, age, tags, tags_max);
	free(id);
	free(size);
	free(age);
	free(retired);
	free(tags);
}

/* Room left for TAGS on this terminal. */
static size_t snap_tags_room(void)
{
	struct winsize ws;
	size_t cols = 80,
	       used = SNAP_W_ID + SNAP_W_SIZE + SNAP_W_MEMORY + 2 * SNAP_W_AGE + 5 * SNAP_GAP;
	const char *env = getenv("COLUMNS");

	if (ioctl(STDOUT_FILENO, TIOCGWINSZ, &ws) == 0 && ws.ws_col > 0)
		cols = ws.ws_col;
	else if (env && atoi(env) > 0)
		cols = (size_t)atoi(env);
	return cols > used + SNAP_W_TAGSMIN ? cols - used : SNAP_W_TAGSMIN;
}

/* "  label:         value", the value a one-line field. */
static void snap_print_value(const char *label, const char *value)
{
	printf("  %-14s ", label);
	sanitize_fputs(value, SANITIZE_FIELD, stdout);
	putchar('\n');
}

static void snap_print_time(const char *label, const char *value)
{
	double t = parse_rfc3339(value);
	char buf[64];
	time_t secs = (time_t)t;
	char *age;

	if (value == NULL || *value == '\0') {
		printf("  %-14s -\n", label);
		return;
	}
	if (t <= 0) {
		snap_print_value(label, value);
		return;
	}
	strftime(buf, sizeof(buf), "%Y-%m-%d %H:%M:%S %Z", localtime(&secs));
	age = output_age(t, now_seconds());
	printf("  %-14s %s (%s)\n", label, buf, age);
	free(age);
}

/* A snapshot in sections: identity, storage, retention, lifecycle. */
/*
 * A snapshot in sections.  aliases: the API's list for it (NULL when it could not be
 * read: then only the alias it was asked by, if any, with why in aliases_error).
 */
static void snap_print_full(json_object *s, const char *alias, json_object *aliases,
                            const char *aliases_error)
{
	json_object *tags = NULL, *mem = NULL;
	char *size = output_bytes((uint64_t)json_int(s, "byte_size"));
	char *tagtext = snap_tags_text(s);
	char *status = snap_status_text(s);
	const char *job = "";
	int64_t ttl = json_int(s, "ttl");
	double created = parse_rfc3339(json_str(s, "created_at"));

	if (json_object_object_get_ex(s, "tags", &tags))
		job = json_str(tags, "snapbuild.job");
	sanitize_printf(stdout, SANITIZE_FIELD, "Snapshot %s", json_str(s, "id"));
	printf("\nIdentity\n");
	snap_print_value("id:", json_str(s, "id"));
	if (aliases != NULL) {
		size_t n = json_object_array_length(aliases);
		printf("  %-14s", "aliases:");
		if (n == 0)
			printf(" -");
		for (size_t i = 0; i < n; i++)
			sanitize_printf(stdout, SANITIZE_FIELD, "%s %s", i ? "," : "",
			                json_str(json_object_array_get_idx(aliases, i), "alias"));
		putchar('\n');
	} else {
		if (alias != NULL)
			snap_print_value("alias:", alias);
		if (aliases_error != NULL)
			sanitize_printf(stdout, output_text_flags(stdout),
			                "  %-14s could not be read: %s\n",
			                "aliases:", aliases_error);
	}
	snap_print_value("organization:",
	                 *json_str(s, "organization_id") ? json_str(s, "organization_id") : "-");
	snap_print_value("project:", json_str(s, "project_id"));
	if (*job) {
		char *text = xasprintf("%s (snapbuild inspect %s)", job, job);
		snap_print_value("built by job:", text);
		free(text);
	}
	printf("Storage\n");
	printf("  %-14s %s (%lld bytes)\n", "size:", size, (long long)json_int(s, "byte_size"));
	printf("  %-14s %s\n", "memory:",
	       json_object_object_get_ex(s, "memory", &mem) && json_object_get_boolean(mem)
	           ? "yes (includes a memory snapshot)"
	           : "no");
	printf("  %-14s %s\n", "tags:", tagtext);
	printf("Retention\n");
	printf("  %-14s %s\n", "status:", status);
	if (ttl > 0) {
		char dur[32], when[64];
		time_t at = (time_t)(created + (double)ttl);
		cmd_format_duration((double)ttl, dur, sizeof(dur));
		if (created > 0) {
			strftime(when, sizeof(when), "%Y-%m-%d %H:%M:%S %Z", localtime(&at));
			printf("  %-14s %lld s (%s): retired automatically at %s\n",
			       "ttl:", (long long)ttl, dur, when);
		} else {
			printf("  %-14s %lld s (%s)\n", "ttl:", (long long)ttl, dur);
		}
	} else {
		printf("  %-14s none (kept until retired)\n", "ttl:");
	}
	printf("Lifecycle\n");
	snap_print_time("created:", json_str(s, "created_at"));
	snap_print_time("updated:", json_str(s, "updated_at"));
	snap_print_time("retired:", json_str(s, "retired_at"));
	free(size);
	free(tagtext);
	free(status);
}

void cmd_print_snapshot_live(struct sb_client *c, const char *snapshot_id)
{
	struct sb_rpc_error e;
	json_object *s = NULL, *hint = NULL;
	char *err = NULL;
	int rc = sb_client_call(c, "snapshot.get", snap_id_params("id", snapshot_id), -1, NULL,
	                        NULL, &s, &e, &err);

	if (rc == SB_CALL_OK) {
		char *size = output_bytes((uint64_t)json_int(s, "byte_size"));
		char *tags = snap_tags_text(s);
		char *status = snap_status_text(s);
		sanitize_printf(stdout, SANITIZE_FIELD, "Snapshot %s (live)", snapshot_id);
		putchar('\n');
		printf("  %-13s %s\n", "size:", size);
		printf("  %-13s %s\n", "status:", status);
		printf("  %-13s %s\n", "tags:", tags);
		free(size);
		free(tags);
		free(status);
	} else if (rc == SB_CALL_RPC_ERROR) {
		json_object_object_get_ex(e.data, "hint", &hint);
		sanitize_printf(stdout, output_text_flags(stdout),
		                "Snapshot details could not be fetched: %s%s%s\n", e.message,
		                hint ? " — " : "", hint ? json_object_get_string(hint) : "");
		sb_rpc_error_clear(&e);
	} else {
		sanitize_printf(stdout, 0, "Snapshot details could not be fetched: %s\n",
		                err ? err : "interrupted");
	}
	free(err);
	json_object_put(s);
}

/* --- list --------------------------------------------------------------------------- */

struct snap_list_opts {
	json_object *params;
	json_object *tags;
	bool one_page; /* --limit or --cursor: that page, not all of them */
};

static int snap_list_opt(void *arg, int opt, const char *val)
{
	struct snap_list_opts *o = arg;
	const char *eq;
	char *end, *key;
	long n;

	switch (opt) {
	case 'n':
	case 'p':
		errno = 0;
		n = strtol(val, &end, 10);
		if (errno || *end || end == val || n < 1 || n > 100)
			return snap_usage_error(snap_sub_find("list"),
			                        "%s takes 1 to 100 (the API's page size), not '%s'",
			                        opt == 'n' ? "--limit" : "--page-size", val);
		json_object_object_add(o->params, "limit", json_object_new_int((int)n));
		o->one_page = o->one_page || opt == 'n';
		return 0;
	case 'c':
		json_object_object_add(o->params, "cursor", json_object_new_string(val));
		o->one_page = true;
		return 0;
	case 'C':
		return 0;
	case 'x':
		json_object_object_add(o->params, "exclude_retired", json_object_new_boolean(1));
		return 0;
	case 't':
		eq = strchr(val, '=');
		if (eq == NULL || eq == val)
			return snap_usage_error(snap_sub_find("list"), "--tag takes K=V, not '%s'",
			                        val);
		key = xstrndup(val, (size_t)(eq - val));
		json_object_object_add(o->tags, key, json_object_new_string(eq + 1));
		free(key);
		return 0;
	default:
		return snap_usage_error(snap_sub_find("list"), "unexpected option");
	}
}

/* The pager for a terminal: $PAGER (default less, with LESS=FRX unless LESS is set). */
static FILE *snap_pager_open(void)
{
	const char *pager = getenv("PAGER");
	FILE *fp;

	if (pager == NULL || *pager == '\0')
		pager = "less";
	if (getenv("LESS") == NULL)
		setenv("LESS", "FRX", 1);
	fflush(stdout);
	fp = popen(pager, "w");
	if (fp == NULL)
		return stdout;
	/* a small pipe: the next page is fetched when the pager has read this one */
	fcntl(fileno(fp), F_SETPIPE_SZ, 4096);
	return fp;
}

/* Every page from the first, into the pager, until the last page or the pager quits. */
static int snap_list_paged(struct cmd_ctx *ctx, struct sb_client *c, json_object *params)
{
	FILE *fp = snap_pager_open();
	size_t room = snap_tags_room();
	int rc = CMD_EXIT_OK;
	bool first = true, more;

	for (;;) {
		json_object *page = NULL, *data = NULL;
		const char *next;
		double now = now_seconds();

		rc = cmd_call(ctx, c, "snapshot.list", json_object_get(params), &page);
		if (rc != CMD_EXIT_OK)
			break;
		if (first)
			snap_header(fp);
		first = false;
		json_object_object_get_ex(page, "data", &data);
		for (size_t i = 0; i < json_object_array_length(data); i++)
			snap_print_row(fp, json_object_array_get_idx(data, i), now, room);
		next = json_str(page, "next_cursor");
		more = *next != '\0';
		if (more)
			json_object_object_add(params, "cursor", json_object_new_string(next));
		json_object_put(page);
		if (fflush(fp) != 0 || ferror(fp) || !more || cmd_interrupted)
			break;
	}
	if (fp != stdout)
		pclose(fp);
	return rc;
}

static int snap_list(struct cmd_ctx *ctx, int argc, char **argv)
{
	static const struct option opts[] = {
	    {"limit", required_argument, NULL, 'n'},
	    {"cursor", required_argument, NULL, 'c'},
	    {"exclude-retired", no_argument, NULL, 'x'},
	    {"tag", required_argument, NULL, 't'},
	    {"ci", no_argument, NULL, 'C'},
	    {"page-size", required_argument, NULL, 'p'},
	    {NULL, 0, NULL, 0},
	};
	struct snap_list_opts o = {json_object_new_object(), json_object_new_object(), false};
	bool ci = false;
	const struct snap_sub *s = snap_sub_find("list");
	struct sb_client *c;
	json_object *page = NULL, *data = NULL;
	const char *next;
	int rc = snap_opts(s, argc, argv, opts, ":n:c:xt:", snap_list_opt, &o);

	if (rc < 0 && optind < argc)
		rc = snap_usage_error(s, "unexpected argument '%s'", argv[optind]);
	if (rc >= 0)
		goto out;
	if (json_object_object_length(o.tags) > 0)
		json_object_object_add(o.params, "tags", json_object_get(o.tags));
	for (int i = 1; i < optind; i++)
		ci = ci || strcmp(argv[i], "--ci") == 0;
	c = cmd_connect(ctx);
	/* The pager pages through everything; a page asked for is that page, --ci plain. */
	if (!ctx->json && !o.one_page && !ci && isatty(STDOUT_FILENO)) {
		rc = snap_list_paged(ctx, c, o.params);
		sb_client_close(c);
		goto out;
	}
	rc = cmd_call(ctx, c, "snapshot.list", json_object_get(o.params), &page);
	sb_client_close(c);
	if (rc != CMD_EXIT_OK)
		goto out;
	if (ctx->json) {
		cmd_print_json(page);
		goto out;
	}
	snap_header(stdout);
	json_object_object_get_ex(page, "data", &data);
	for (size_t i = 0; i < json_object_array_length(data); i++)
		snap_print_row(stdout, json_object_array_get_idx(data, i), now_seconds(), 0);
	next = json_str(page, "next_cursor");
	if (*next) {
		/* The next page of the same list: the same filters, and the cursor. */
		fputs("more: snapbuild snapshots list", stderr);
		for (int i = 1; i < optind && i < argc; i++) {
			if (strcmp(argv[i], "--cursor") == 0 || strcmp(argv[i], "-c") == 0)
				i++;
			else if (strncmp(argv[i], "--cursor=", 9) != 0)
				sanitize_printf(stderr, SANITIZE_FIELD, " %s", argv[i]);
		}
		sanitize_printf(stderr, SANITIZE_FIELD, " --cursor %s", next);
		fputc('\n', stderr);
	}
out:
	json_object_put(page);
	json_object_put(o.params);
	json_object_put(o.tags);
	return rc;
}

/* --- get, alias, unalias, retire ---------------------------------------------------- */

/* Options, then exactly `want` operands; -1 to go on. */
static int snap_operands(const struct snap_sub *s, int argc, char **argv, int want)
{
	int rc = snap_opts(s, argc, argv, NULL, NULL, NULL, NULL);

	if (rc >= 0)
		return rc;
	if (argc - optind != want)
		return snap_usage_error(s, "expected %d argument%s", want, want == 1 ? "" : "s");
	return -1;
}

/* Calls method and prints its result as JSON or through print; the exit code. */
static int snap_call(struct cmd_ctx *ctx, const char *method, json_object *params,
                     void (*print)(json_object *res, const char *arg), const char *arg)
{
	struct sb_client *c = cmd_connect(ctx);
	json_object *res = NULL;
	int rc = cmd_call(ctx, c, method, params, &res);

	sb_client_close(c);
	if (rc == CMD_EXIT_OK) {
		if (ctx->json)
			cmd_print_json(res);
		else
			print(res, arg);
	}
	json_object_put(res);
	return rc;
}

/* The snapshot, then (for people) its aliases: the API lists them by snapshot id. */
static int snap_get(struct cmd_ctx *ctx, int argc, char **argv)
{
	int rc = snap_operands(snap_sub_find("get"), argc, argv, 1);
	const char *ref;
	struct sb_client *c;
	json_object *s = NULL, *aliases = NULL;
	struct sb_rpc_error e = {0};
	char *err = NULL;

	if (rc >= 0)
		return rc;
	ref = argv[optind];
	c = cmd_connect(ctx);
	rc = cmd_call(ctx, c, "snapshot.get", snap_id_params("id", ref), &s);
	if (rc == CMD_EXIT_OK && ctx->json) {
		cmd_print_json(s);
	} else if (rc == CMD_EXIT_OK) {
		int arc =
		    sb_client_call(c, "snapshot.aliases", snap_id_params("id", json_str(s, "id")),
		                   -1, NULL, NULL, &aliases, &e, &err);
		if (arc == SB_CALL_OK && !json_object_is_type(aliases, json_type_array)) {
			json_object_put(aliases);
			aliases = NULL;
		}
		snap_print_full(s, ref[0] == '@' ? ref + 1 : NULL, aliases,
		                arc == SB_CALL_OK          ? NULL
		                : arc == SB_CALL_RPC_ERROR ? e.message
		                                           : err);
	}
	sb_rpc_error_clear(&e);
	free(err);
	json_object_put(aliases);
	json_object_put(s);
	sb_client_close(c);
	return rc;
}

static void snap_alias_print(json_object *res, const char *arg)
{
	(void)arg;
	sanitize_printf(stdout, SANITIZE_FIELD, "alias %s now points at snapshot %s",
	                json_str(res, "alias"), json_str(res, "snapshot_id"));
	putchar('\n');
}

static int snap_alias(struct cmd_ctx *ctx, int argc, char **argv)
{
	json_object *p;
	int rc = snap_operands(snap_sub_find("alias"), argc, argv, 2);

	if (rc >= 0)
		return rc;
	p = snap_id_params("id", argv[optind]);
	json_object_object_add(p, "alias", json_object_new_string(argv[optind + 1]));
	return snap_call(ctx, "snapshot.alias", p, snap_alias_print, NULL);
}

static void snap_unalias_print(json_object *res, const char *arg)
{
	(void)arg;
	if (*json_str(res, "snapshot_id"))
		sanitize_printf(stdout, SANITIZE_FIELD,
		                "removed alias %s (it pointed at snapshot %s)",
		                json_str(res, "alias"), json_str(res, "snapshot_id"));
	else
		sanitize_printf(stdout, SANITIZE_FIELD, "alias %s did not exist: nothing to remove",
		                json_str(res, "alias"));
	putchar('\n');
}

static int snap_unalias(struct cmd_ctx *ctx, int argc, char **argv)
{
	int rc = snap_operands(snap_sub_find("unalias"), argc, argv, 1);

	if (rc >= 0)
		return rc;
	return snap_call(ctx, "snapshot.unalias", snap_id_params("alias", argv[optind]),
	                 snap_unalias_print, NULL);
}

static void snap_retire_print(json_object *res, const char *arg)
{
	(void)arg;
	sanitize_printf(stdout, SANITIZE_FIELD, "retired snapshot %s", json_str(res, "id"));
	putchar('\n');
	snap_print_time("retired:", json_str(res, "retired_at"));
}

static int snap_retire(struct cmd_ctx *ctx, int argc, char **argv)
{
	int rc = snap_operands(snap_sub_find("retire"), argc, argv, 1);

	if (rc >= 0)
		return rc;
	return snap_call(ctx, "snapshot.retire", snap_id_params("id", argv[optind]),
	                 snap_retire_print, NULL);
}

/* --- the command ------------------------------------------------------------------- */

static int snap_help(struct cmd_ctx *ctx, int argc, char **argv);

/* `snapshots create` is `create`, as in the together-sandbox CLI. */
static int snap_create(struct cmd_ctx *ctx, int argc, char **argv)
{
	struct cmd_ctx sub = *ctx;
	int rc;

	sub.argc = argc;
	sub.argv = argv;
	rc = cmd_create_entry.exec(&sub);
	ctx->json = sub.json;
	return rc;
}

static const struct snap_sub snap_subs[] = {
    {"create", "[OPTIONS]   (the same as `snapbuild create`: see `snapbuild create --help`)",
     "build a context (or an image) into a snapshot", snap_create},
    {"list",
     "[--limit N] [--cursor C] [--exclude-retired] [--tag K=V]... [--page-size N] [--ci] "
     "[-o table|json]",
     "list snapshots, newest first: on a terminal every page through $PAGER (fetched\n"
     "      --page-size at a time, default the API's 20), unless --limit N or --cursor C\n"
     "      asks for one page (or --ci); in a pipe one page (N default 20, 1 to 100)",
     snap_list},
    {"get", "[-o table|json] ID|@ALIAS",
     "show a snapshot: identity (with every alias pointing at it), storage, retention\n"
     "      and lifecycle",
     snap_get},
    {"alias", "[-o table|json] ID|@ALIAS ALIAS",
     "point ALIAS (tag or namespace@tag) at a snapshot, moving it if it exists", snap_alias},
    {"unalias", "[-o table|json] ALIAS", "remove an alias", snap_unalias},
    {"retire", "[-o table|json] ID|@ALIAS", "retire a snapshot: no new sandboxes start from it",
     snap_retire},
    {"help", "[SUBCOMMAND]", "show this help, or one subcommand's", snap_help},
};

#define SNAP_NSUBS (sizeof(snap_subs) / sizeof(snap_subs[0]))

static const struct snap_sub *snap_sub_find(const char *name)
{
	for (size_t i = 0; i < SNAP_NSUBS; i++)
		if (strcmp(snap_subs[i].name, name) == 0)
			return &snap_subs[i];
	return NULL;
}

static int snap_unknown(const char *name)
{
	const char *names[SNAP_NSUBS + 1];
	const char *near;

	for (size_t i = 0; i < SNAP_NSUBS; i++)
		names[i] = snap_subs[i].name;
	names[SNAP_NSUBS] = NULL;
	near = cmd_closest(name, names);
	if (near != NULL)
		fprintf(stderr,
		        "snapbuild snapshots: unknown subcommand '%s'; did you mean '%s'?\n", name,
		        near);
	else
		fprintf(stderr, "snapbuild snapshots: unknown subcommand '%s'\n", name);
	fprintf(stderr, "See `snapbuild snapshots help` for the list of subcommands.\n");
	return CMD_EXIT_USAGE;
}

static void snap_help_all(FILE *fp)
{
	fprintf(fp, "usage: snapbuild snapshots SUBCOMMAND [ARGS]   (alias: snapshot)\n"
	            "       snapbuild snapshots SUBCOMMAND --help   (or: snapbuild snapshots help "
	            "SUBCOMMAND)\n\n");
	for (size_t i = 0; i < SNAP_NSUBS; i++)
		fprintf(fp, "  %s %s\n      %s\n", snap_subs[i].name, snap_subs[i].usage,
		        snap_subs[i].summary);
	fprintf(fp, "\nThe daemon makes the calls with its own API key.  Changing a snapshot "
	            "(alias,\nunalias, retire) is for root, the admin group, the daemon's user "
	            "and the owner\nof the job that built it.\n");
}

static int snap_help(struct cmd_ctx *ctx, int argc, char **argv)
{
	const struct snap_sub *s;

	(void)ctx;
	if (argc < 2) {
		snap_help_all(stdout);
		return CMD_EXIT_OK;
	}
	s = snap_sub_find(argv[1]);
	if (s == NULL)
		return snap_unknown(argv[1]);
	snap_sub_usage(s, stdout);
	return CMD_EXIT_OK;
}

static bool snap_is_help(const char *arg)
{
	return strcmp(arg, "--help") == 0 || strcmp(arg, "-h") == 0;
}

/* --help anywhere before a "--" shows the subcommand's usage instead of running it. */
static int cmd_snapshots_exec(struct cmd_ctx *ctx)
{
	const struct snap_sub *s;

	if (ctx->argc < 2) {
		snap_help_all(stderr);
		return CMD_EXIT_USAGE;
	}
	if (snap_is_help(ctx->argv[1])) {
		snap_help_all(stdout);
		return CMD_EXIT_OK;
	}
	s = snap_sub_find(ctx->argv[1]);
	if (s == NULL)
		return snap_unknown(ctx->argv[1]);
	for (int i = 2; i < ctx->argc && strcmp(ctx->argv[i], "--") != 0; i++) {
		if (snap_is_help(ctx->argv[i])) {
			snap_sub_usage(s, stdout);
			return CMD_EXIT_OK;
		}
	}
	return s->exec(ctx, ctx->argc - 1, ctx->argv + 1);
}
