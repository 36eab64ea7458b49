/*
 * Dockerfile → BuildKit plain-progress lines.  The Dockerfile is parsed the way
 * BuildKit's frontend reads it (parser directives, comments, line continuations with
 * the escape character, heredocs), then each stage's steps are narrated: the
 * internal steps, FROM with its resolve and extract lines, a few output lines per
 * RUN (some with ANSI colours, as real tools print them), COPY/ADD/WORKDIR, then the
 * export and push.  Digests and timings come from a generator seeded by the input,
 * so the same submit gives the same log.
 */
#include "buildlog.h"

#include <ctype.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <json-c/json.h>

#include "util.h"

#define SIM_BUILDLOG_MAX_SEGMENTS 3

struct sim_instr {
	char *cmd;  /* upper case */
	char *args; /* rest of the logical line */
	char *heredoc;
	int line; /* physical line where it starts */
};

struct sim_dockerfile {
	struct sim_instr *v;
	size_t n;
};

struct sim_buildlog_gen {
	struct sim_buildlog *log;
	size_t cap, sigcap;
	uint64_t rng;
	int step;
	bool instant;    /* lines pushed now come with the one before */
	uint64_t prefix; /* signature of the Dockerfile so far (the layer cache's key) */
	const struct sim_buildlog_params *params;
};

static const char *const sim_known_instructions[] = {
    "FROM",    "RUN",        "CMD",         "LABEL",  "MAINTAINER", "EXPOSE",  "ENV",
    "ADD",     "COPY",       "ENTRYPOINT",  "VOLUME", "USER",       "WORKDIR", "ARG",
    "ONBUILD", "STOPSIGNAL", "HEALTHCHECK", "SHELL",  NULL};

static uint64_t sim_buildlog_rand(struct sim_buildlog_gen *g)
{
	g->rng ^= g->rng << 13;
	g->rng ^= g->rng >> 7;
	g->rng ^= g->rng << 17;
	return g->rng;
}

static unsigned sim_buildlog_ms(struct sim_buildlog_gen *g, unsigned lo, unsigned hi)
{
	return lo + (unsigned)(sim_buildlog_rand(g) % (hi - lo + 1));
}

static void sim_buildlog_hex(struct sim_buildlog_gen *g, char out[65])
{
	static const char digits[] = "0123456789abcdef";
	for (int i = 0; i < 64; i++)
		out[i] = digits[sim_buildlog_rand(g) & 15];
	out[64] = '\0';
}

static void sim_buildlog_push(struct sim_buildlog_gen *g, char *line)
{
	struct sim_buildlog *log = g->log;
	if (log->n == g->cap) {
		g->cap = g->cap ? g->cap * 2 : 64;
		log->lines = xrealloc(log->lines, g->cap * sizeof(*log->lines));
		log->instant = xrealloc(log->instant, g->cap);
	}
	log->instant[log->n] = g->instant;
	log->lines[log->n++] = line;
}

static uint64_t sim_sig_mix(uint64_t h, const void *data, size_t len)
{
	const unsigned char *p = data;
	for (size_t i = 0; i < len; i++)
		h = (h ^ p[i]) * 1099511628211ull;
	return h;
}

/* Fold an instruction into the prefix signature. */
static void sim_sig_instr(struct sim_buildlog_gen *g, const struct sim_instr *in)
{
	g->prefix = sim_sig_mix(g->prefix, in->cmd, strlen(in->cmd) + 1);
	g->prefix = sim_sig_mix(g->prefix, in->args, strlen(in->args) + 1);
	if (in->heredoc != NULL)
		g->prefix = sim_sig_mix(g->prefix, in->heredoc, strlen(in->heredoc) + 1);
}

/* Record the step at hand under the prefix signature; true when the cache has it. */
static bool sim_sig_step(struct sim_buildlog_gen *g)
{
	struct sim_buildlog *log = g->log;
	if (log->nsigs == g->sigcap) {
		g->sigcap = g->sigcap ? g->sigcap * 2 : 16;
		log->sigs = xrealloc(log->sigs, g->sigcap * sizeof(*log->sigs));
	}
	log->sigs[log->nsigs++] = g->prefix;
	for (size_t i = 0; i < g->params->ncached; i++)
		if (g->params->cached[i] == g->prefix)
			return true;
	return false;
}

static void sim_buildlog_addf(struct sim_buildlog_gen *g, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static void sim_buildlog_addf(struct sim_buildlog_gen *g, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	sim_buildlog_push(g, xvasprintf(fmt, ap));
	va_end(ap);
}

/* A copy fit for one log line: control characters become spaces. */
static char *sim_buildlog_clean(const char *s)
{
	char *out = xstrdup(s);
	for (char *p = out; *p != '\0'; p++)
		if ((unsigned char)*p < 0x20 || *p == 0x7f)
			*p = ' ';
	return out;
}

static char *sim_trim(char *s)
{
	while (*s == ' ' || *s == '\t')
		s++;
	size_t n = strlen(s);
	while (n > 0 && (s[n - 1] == ' ' || s[n - 1] == '\t' || s[n - 1] == '\r'))
		s[--n] = '\0';
	return s;
}

/* Heredoc terminators named in args ("<<EOF", "<<-'EOF'"): how many were found. */
static size_t sim_heredoc_words(const char *args, char words[][64], int strip[], size_t max)
{
	size_t n = 0;
	for (const char *p = strstr(args, "<<"); p != NULL && n < max; p = strstr(p, "<<")) {
		p += 2;
		int dash = 0;
		if (*p == '-') {
			dash = 1;
			p++;
		}
		char quote = (*p == '"' || *p == '\'') ? *p++ : '\0';
		size_t len = 0;
		while ((isalnum((unsigned char)p[len]) || p[len] == '_') && len < 63)
			len++;
		if (len == 0)
			continue;
		memcpy(words[n], p, len);
		words[n][len] = '\0';
		strip[n] = dash;
		n++;
		p += len;
		if (quote != '\0' && *p == quote)
			p++;
	}
	return n;
}

/* The next line of a buffer being split in place (NULL at the end). */
static char *sim_next_line(char **cursor)
{
	char *line = *cursor;
	if (line == NULL)
		return NULL;
	char *nl = strchr(line, '\n');
	if (nl != NULL) {
		*nl = '\0';
		*cursor = nl + 1;
	} else {
		*cursor = NULL;
		if (line[0] == '\0')
			return NULL;
	}
	return line;
}

static void sim_dockerfile_add(struct sim_dockerfile *df, char *logical, int line)
{
	char *s = sim_trim(logical);
	size_t wl = strcspn(s, " \t");
	struct sim_instr in = {0};
	in.cmd = xstrndup(s, wl);
	for (char *p = in.cmd; *p != '\0'; p++)
		*p = (char)toupper((unsigned char)*p);
	in.args = xstrdup(sim_trim(s + wl));
	in.line = line;
	df->v = xrealloc(df->v, (df->n + 1) * sizeof(*df->v));
	df->v[df->n++] = in;
}

static void sim_dockerfile_parse(const char *text, struct sim_dockerfile *df)
{
	char *copy = xstrdup(text);
	char escape = '\\';
	bool directives = true;
	char *logical = NULL;
	int start_line = 0, lineno = 0;
	char *cursor = copy;
	memset(df, 0, sizeof(*df));
	for (char *raw = sim_next_line(&cursor); raw != NULL; raw = sim_next_line(&cursor)) {
		lineno++;
		char *line = sim_trim(raw);
		if (directives) {
			if (line[0] == '#' && strchr(line, '=') != NULL) {
				char *d = sim_trim(line + 1);
				if (strncasecmp(d, "escape", 6) == 0) {
					char *v = sim_trim(strchr(d, '=') + 1);
					if (v[0] == '`')
						escape = '`';
				}
				continue;
			}
			directives = false;
		}
		if (line[0] == '\0' || line[0] == '#')
			continue;
		size_t len = strlen(line);
		bool cont = line[len - 1] == escape;
		if (cont)
			line[len - 1] = '\0';
		if (logical == NULL) {
			logical = xstrdup(line);
			start_line = lineno;
		} else {
			char *joined = xasprintf("%s %s", logical, sim_trim(line));
			free(logical);
			logical = joined;
		}
		if (cont)
			continue;
		sim_dockerfile_add(df, logical, start_line);
		free(logical);
		logical = NULL;
		struct sim_instr *in = &df->v[df->n - 1];
		char words[4][64];
		int strip[4];
		size_t nw = sim_heredoc_words(in->args, words, strip, 4);
		for (size_t w = 0; w < nw; w++) {
			char *body = xstrdup("");
			for (raw = sim_next_line(&cursor); raw != NULL;
			     raw = sim_next_line(&cursor)) {
				lineno++;
				char *l = raw;
				size_t ll = strlen(l);
				if (ll > 0 && l[ll - 1] == '\r')
					l[--ll] = '\0';
				if (strip[w])
					while (*l == '\t')
						l++;
				if (strcmp(l, words[w]) == 0)
					break;
				char *nb = xasprintf("%s%s%s", body, body[0] ? "\n" : "", l);
				free(body);
				body = nb;
			}
			if (in->heredoc == NULL) {
				in->heredoc = body;
			} else {
				char *nb = xasprintf("%s\n%s", in->heredoc, body);
				free(in->heredoc);
				free(body);
				in->heredoc = nb;
			}
			if (raw == NULL)
				break;
		}
	}
	if (logical != NULL) {
		sim_dockerfile_add(df, logical, start_line);
		free(logical);
	}
	free(copy);
}

static void sim_dockerfile_free(struct sim_dockerfile *df)
{
	for (size_t i = 0; i < df->n; i++) {
		free(df->v[i].cmd);
		free(df->v[i].args);
		free(df->v[i].heredoc);
	}
	free(df->v);
}

static bool sim_instr_known(const char *cmd)
{
	for (size_t i = 0; sim_known_instructions[i] != NULL; i++)
		if (strcmp(cmd, sim_known_instructions[i]) == 0)
			return true;
	return false;
}

/* Skips leading --flag[=value] words; returns the rest. */
static const char *sim_skip_flags(const char *args)
{
	while (args[0] == '-' && args[1] == '-') {
		args += strcspn(args, " \t");
		while (*args == ' ' || *args == '\t')
			args++;
	}
	return args;
}

/* FROM's image and stage name, as new strings (stage NULL when unnamed). */
static void sim_from_parse(const char *args, char **image, char **stage)
{
	const char *p = sim_skip_flags(args);
	size_t il = strcspn(p, " \t");
	*image = xstrndup(p, il);
	*stage = NULL;
	p += il;
	while (*p == ' ' || *p == '\t')
		p++;
	if (strncasecmp(p, "as", 2) == 0 && (p[2] == ' ' || p[2] == '\t')) {
		p += 2;
		while (*p == ' ' || *p == '\t')
			p++;
		size_t sl = strcspn(p, " \t");
		if (sl > 0)
			*stage = xstrndup(p, sl);
	}
}

/* docker.io/library/alpine:latest for "alpine". */
static char *sim_image_normalize(const char *image)
{
	const char *slash = strchr(image, '/');
	const char *last = strrchr(image, '/');
	bool has_registry = slash != NULL && (memchr(image, '.', (size_t)(slash - image)) ||
	                                      memchr(image, ':', (size_t)(slash - image)) ||
	                                      strncmp(image, "localhost/", 10) == 0);
	const char *name = last ? last + 1 : image;
	bool tagged = strchr(name, ':') != NULL || strchr(image, '@') != NULL;
	return xasprintf("%s%s%s%s", has_registry ? "" : "docker.io/",
	                 (!has_registry && slash == NULL) ? "library/" : "", image,
	                 tagged ? "" : ":latest");
}

/* Exit status of a shell command as the simulation sees it: 0 unless false/exit N. */
static int sim_command_status(const char *command)
{
	char *copy = xstrdup(command);
	int status = 0;
	char *save = NULL;
	for (char *seg = strtok_r(copy, ";&\n", &save); seg != NULL;
	     seg = strtok_r(NULL, ";&\n", &save)) {
		char *s = sim_trim(seg);
		if (strcmp(s, "false") == 0 || strcmp(s, "/bin/false") == 0 ||
		    strcmp(s, "/usr/bin/false") == 0) {
			status = 1;
			break;
		}
		if (strncmp(s, "exit", 4) == 0 && (s[4] == ' ' || s[4] == '\t')) {
			long v = strtol(s + 5, NULL, 10);
			if (v != 0) {
				status = (int)(v & 255) ? (int)(v & 255) : 1;
				break;
			}
		}
	}
	free(copy);
	return status;
}

/* The command a RUN executes, and how BuildKit names the process. */
static void sim_run_command(const struct sim_instr *in, char **command, char **process)
{
	const char *args = sim_skip_flags(in->args);
	if (args[0] == '[') {
		struct json_object *arr = json_tokener_parse(args);
		if (arr != NULL && json_object_is_type(arr, json_type_array)) {
			char *joined = xstrdup("");
			for (size_t i = 0; i < json_object_array_length(arr); i++) {
				const char *w =
				    json_object_get_string(json_object_array_get_idx(arr, i));
				char *nj = xasprintf("%s%s%s", joined, i ? " " : "", w ? w : "");
				free(joined);
				joined = nj;
			}
			json_object_put(arr);
			*command = joined;
			*process = xstrdup(joined);
			return;
		}
		json_object_put(arr);
	}
	*command = in->heredoc ? xstrdup(in->heredoc) : xstrdup(args);
	*process = xasprintf("/bin/sh -c %s", args);
}

static void sim_buildlog_run_output(struct sim_buildlog_gen *g, int step, const char *command,
                                    unsigned *t)
{
	char *copy = xstrdup(command);
	char *save = NULL;
	int shown = 0;
	for (char *seg = strtok_r(copy, ";&|\n", &save);
	     seg != NULL && shown < SIM_BUILDLOG_MAX_SEGMENTS;
	     seg = strtok_r(NULL, ";&|\n", &save)) {
		char *s = sim_trim(seg);
		if (s[0] == '\0')
			continue;
		*t += sim_buildlog_ms(g, 20, 400);
		char *clean = sim_buildlog_clean(s);
		if (strncmp(clean, "echo ", 5) == 0) {
			char *msg = sim_trim(clean + 5);
			size_t ml = strlen(msg);
			if (ml >= 2 && (msg[0] == '"' || msg[0] == '\'') && msg[ml - 1] == msg[0]) {
				msg[ml - 1] = '\0';
				msg++;
			}
			sim_buildlog_addf(g, "#%d %u.%03u %s", step, *t / 1000, *t % 1000, msg);
		} else {
			sim_buildlog_addf(g, "#%d %u.%03u + %s", step, *t / 1000, *t % 1000, clean);
		}
		free(clean);
		shown++;
	}
	free(copy);
	*t += sim_buildlog_ms(g, 20, 300);
	sim_buildlog_addf(g, "#%d %u.%03u \x1b[32m\x1b[1mok\x1b[0m step finished (%d commands)",
	                  step, *t / 1000, *t % 1000, shown);
}

static void sim_buildlog_extra(struct sim_buildlog_gen *g, int step, size_t count, unsigned *t)
{
	g->log->burst_start = g->log->n;
	for (size_t i = 0; i < count; i++) {
		if (i % 64 == 0)
			(*t)++;
		sim_buildlog_addf(g, "#%d %u.%03u extra output line %zu of %zu", step, *t / 1000,
		                  *t % 1000, i + 1, count);
	}
	g->log->burst_end = g->log->n;
}

/* Fails the build: the message goes to the log and becomes the error event. */
static void sim_buildlog_fail(struct sim_buildlog_gen *g, char *message)
{
	sim_buildlog_addf(g, "ERROR: %s", message);
	g->log->error = message;
}

static void sim_buildlog_stage_steps(const struct sim_dockerfile *df, size_t from, size_t *end,
                                     int *count)
{
	*count = 0;
	size_t i = from + 1;
	for (; i < df->n && strcmp(df->v[i].cmd, "FROM") != 0; i++) {
		const char *c = df->v[i].cmd;
		if (!strcmp(c, "RUN") || !strcmp(c, "COPY") || !strcmp(c, "ADD") ||
		    !strcmp(c, "WORKDIR"))
			(*count)++;
	}
	*end = i;
}

static bool sim_is_stage(char **stages, size_t nstages, const char *image)
{
	for (size_t i = 0; i < nstages; i++)
		if (stages[i] != NULL && strcasecmp(stages[i], image) == 0)
			return true;
	return false;
}

/* Narrates the stages; returns false when a step failed (error set). */
static bool sim_buildlog_stages(struct sim_buildlog_gen *g, const struct sim_dockerfile *df,
                                const struct sim_buildlog_params *params)
{
	size_t nstages = 0;
	char **stages = NULL;
	bool ok = true, context_loaded = false, extra_done = params->extra_lines == 0;
	for (size_t i = 0; i < df->n; i++) {
		if (strcmp(df->v[i].cmd, "FROM") != 0)
			continue;
		char *image, *stage;
		sim_from_parse(df->v[i].args, &image, &stage);
		free(image);
		stages = xrealloc(stages, (nstages + 1) * sizeof(*stages));
		stages[nstages++] = stage;
	}
	for (size_t i = 0; i < df->n; i++) {
		if (strcmp(df->v[i].cmd, "FROM") != 0)
			continue;
		char *image, *stage;
		sim_from_parse(df->v[i].args, &image, &stage);
		free(stage);
		if (strcasecmp(image, "scratch") != 0 && !sim_is_stage(stages, nstages, image)) {
			char *norm = sim_image_normalize(image);
			int step = ++g->step;
			sim_buildlog_addf(g, "#%d [internal] load metadata for %s", step, norm);
			unsigned ms = sim_buildlog_ms(g, 200, 1500);
			sim_buildlog_addf(g, "#%d DONE %u.%us", step, ms / 1000, ms % 1000 / 100);
			free(norm);
		}
		free(image);
	}
	int step = ++g->step;
	sim_buildlog_addf(g, "#%d [internal] load .dockerignore", step);
	sim_buildlog_addf(g, "#%d transferring context: 2B done", step);
	sim_buildlog_addf(g, "#%d DONE 0.0s", step);

	size_t si = 0;
	for (size_t i = 0; i < df->n && ok; si++) {
		size_t end;
		int count;
		char *image, *stage;
		sim_buildlog_stage_steps(df, i, &end, &count);
		sim_from_parse(df->v[i].args, &image, &stage);
		char *label = nstages > 1 ? xasprintf("%s ", stage ? stage : "") : xstrdup("");
		if (nstages > 1 && stage == NULL) {
			free(label);
			label = xasprintf("stage-%zu ", si);
		}
		bool external =
		    strcasecmp(image, "scratch") != 0 && !sim_is_stage(stages, nstages, image);
		int total = count + (external ? 1 : 0), k = 0;
		sim_sig_instr(g, &df->v[i]);
		if (external && sim_sig_step(g)) {
			char *norm = sim_image_normalize(image);
			char digest[65];
			sim_buildlog_hex(g, digest);
			step = ++g->step;
			g->instant = true;
			sim_buildlog_addf(g, "#%d [%s%d/%d] FROM %s@sha256:%s", step, label, ++k,
			                  total, norm, digest);
			sim_buildlog_addf(g, "#%d CACHED", step);
			g->instant = false;
			free(norm);
		} else if (external) {
			char *norm = sim_image_normalize(image);
			char digest[65], layer[65];
			sim_buildlog_hex(g, digest);
			sim_buildlog_hex(g, layer);
			step = ++g->step;
			unsigned mb = sim_buildlog_ms(g, 2, 90);
			sim_buildlog_addf(g, "#%d [%s%d/%d] FROM %s@sha256:%s", step, label, ++k,
			                  total, norm, digest);
			sim_buildlog_addf(g, "#%d resolve %s@sha256:%s 0.0s done", step, norm,
			                  digest);
			sim_buildlog_addf(g, "#%d sha256:%s %u.%02uMB / %u.%02uMB 0.%us done", step,
			                  layer, mb, mb % 100, mb, mb % 100, mb % 10);
			sim_buildlog_addf(g, "#%d extracting sha256:%s 0.%us done", step, layer,
			                  mb % 7 + 1);
			sim_buildlog_addf(g, "#%d DONE 0.%us", step, mb % 9 + 1);
			free(norm);
		}
		for (size_t j = i + 1; j < end && ok; j++) {
			const struct sim_instr *in = &df->v[j];
			bool run = strcmp(in->cmd, "RUN") == 0;
			bool copy = strcmp(in->cmd, "COPY") == 0 || strcmp(in->cmd, "ADD") == 0;
			sim_sig_instr(g, in);
			if (copy && strstr(in->args, "--from") == NULL)
				g->prefix = sim_sig_mix(g->prefix, &params->context_hash,
				                        sizeof(params->context_hash));
			if (!run && !copy && strcmp(in->cmd, "WORKDIR") != 0)
				continue;
			if (copy && !context_loaded && strstr(in->args, "--from") == NULL) {
				context_loaded = true;
				step = ++g->step;
				sim_buildlog_addf(g, "#%d [internal] load build context", step);
				sim_buildlog_addf(g, "#%d transferring context: %.2fkB done", step,
				                  (double)params->context_bytes / 1000.0);
				sim_buildlog_addf(g, "#%d DONE 0.1s", step);
			}
			char *args = sim_buildlog_clean(in->args);
			step = ++g->step;
			k++;
			bool cached = sim_sig_step(g);
			g->instant = cached;
			sim_buildlog_addf(g, "#%d [%s%d/%d] %s %s", step, label, k, total, in->cmd,
			                  args);
			if (cached) {
				sim_buildlog_addf(g, "#%d CACHED", step);
				g->instant = false;
			} else if (run) {
				char *command, *process;
				unsigned t = sim_buildlog_ms(g, 50, 200);
				sim_run_command(in, &command, &process);
				char *clean_process = sim_buildlog_clean(process);
				sim_buildlog_run_output(g, step, command, &t);
				if (!extra_done) {
					sim_buildlog_extra(g, step, params->extra_lines, &t);
					extra_done = true;
				}
				int status = sim_command_status(command);
				if (status != 0) {
					sim_buildlog_addf(g,
					                  "#%d ERROR: process \"%s\" did not "
					                  "complete successfully: exit code: %d",
					                  step, clean_process, status);
					sim_buildlog_addf(g, "------");
					sim_buildlog_addf(g, " > [%s%d/%d] RUN %s:", label, k,
					                  total, args);
					sim_buildlog_addf(g, "------");
					sim_buildlog_fail(
					    g, xasprintf("failed to solve: step [%s%d/%d] RUN %s: "
					                 "process \"%s\" did not complete "
					                 "successfully: exit code: %d",
					                 label, k, total, args, clean_process,
					                 status));
					ok = false;
				} else {
					sim_buildlog_addf(g, "#%d DONE %u.%us", step, t / 1000,
					                  t % 1000 / 100);
				}
				free(command);
				free(process);
				free(clean_process);
			} else {
				sim_buildlog_addf(g, "#%d DONE 0.%us", step,
				                  sim_buildlog_ms(g, 0, 3));
			}
			free(args);
		}
		free(label);
		free(image);
		free(stage);
		i = end;
	}
	if (ok && !extra_done) {
		unsigned t = 0;
		step = ++g->step;
		sim_buildlog_addf(g, "#%d [internal] build output", step);
		sim_buildlog_extra(g, step, params->extra_lines, &t);
		sim_buildlog_addf(g, "#%d DONE 0.1s", step);
	}
	for (size_t i = 0; i < nstages; i++)
		free(stages[i]);
	free(stages);
	return ok;
}

/* BuildKit's own refusals of a Dockerfile; NULL when it would go ahead. */
static char *sim_dockerfile_refusal(const struct sim_dockerfile *df)
{
	if (df->n == 0)
		return xstrdup("failed to solve: the Dockerfile cannot be empty");
	for (size_t i = 0; i < df->n; i++)
		if (!sim_instr_known(df->v[i].cmd)) {
			char *c = sim_buildlog_clean(df->v[i].cmd);
			char *m = xasprintf("failed to solve: dockerfile parse error on line %d: "
			                    "unknown instruction: %s",
			                    df->v[i].line, c);
			free(c);
			return m;
		}
	for (size_t i = 0; i < df->n; i++) {
		if (strcmp(df->v[i].cmd, "FROM") == 0)
			return NULL;
		if (strcmp(df->v[i].cmd, "ARG") != 0)
			return xasprintf("failed to solve: dockerfile parse error on line %d: no "
			                 "build stage in current context",
			                 df->v[i].line);
	}
	return xstrdup("failed to solve: dockerfile parse error: no build stage in current "
	               "context");
}

struct sim_buildlog *sim_buildlog_new(const struct sim_buildlog_params *params)
{
	struct sim_buildlog_gen g = {0};
	struct sim_dockerfile df;
	uint64_t h = 1469598103934665603ull;
	for (const char *p = params->dockerfile_text; *p != '\0'; p++)
		h = (h ^ (unsigned char)*p) * 1099511628211ull;
	for (const char *p = params->image_ref; *p != '\0'; p++)
		h = (h ^ (unsigned char)*p) * 1099511628211ull;
	g.rng = h ? h : 1;
	g.prefix = 1469598103934665603ull;
	g.params = params;
	g.log = xcalloc(1, sizeof(*g.log));

	char *name = sim_buildlog_clean(params->dockerfile_name);
	const char *base = strrchr(name, '/') ? strrchr(name, '/') + 1 : name;
	int step = ++g.step;
	sim_buildlog_addf(&g, "#%d [internal] load build definition from %s", step, base);
	sim_buildlog_addf(&g, "#%d transferring dockerfile: %zuB done", step,
	                  strlen(params->dockerfile_text));
	sim_buildlog_addf(&g, "#%d DONE 0.0s", step);
	free(name);

	sim_dockerfile_parse(params->dockerfile_text, &df);
	char *refusal = sim_dockerfile_refusal(&df);
	if (refusal != NULL) {
		sim_buildlog_fail(&g, refusal);
		goto out;
	}
	if (!sim_buildlog_stages(&g, &df, params))
		goto out;

	char digest[65], config[65];
	sim_buildlog_hex(&g, digest);
	sim_buildlog_hex(&g, config);
	step = ++g.step;
	sim_buildlog_addf(&g, "#%d exporting to image", step);
	sim_buildlog_addf(&g, "#%d exporting layers 0.%us done", step, sim_buildlog_ms(&g, 1, 9));
	sim_buildlog_addf(&g, "#%d exporting manifest sha256:%s 0.0s done", step, digest);
	sim_buildlog_addf(&g, "#%d exporting config sha256:%s 0.0s done", step, config);
	sim_buildlog_addf(&g, "#%d naming to %s done", step, params->image_ref);
	sim_buildlog_addf(&g, "#%d pushing layers %u.%us done", step, sim_buildlog_ms(&g, 0, 3),
	                  sim_buildlog_ms(&g, 0, 9));
	sim_buildlog_addf(&g, "#%d pushing manifest for %s@sha256:%s 0.%us done", step,
	                  params->image_ref, digest, sim_buildlog_ms(&g, 1, 5));
	sim_buildlog_addf(&g, "#%d DONE %u.%us", step, sim_buildlog_ms(&g, 1, 4),
	                  sim_buildlog_ms(&g, 0, 9));
	if (params->nydus) {
		step = ++g.step;
		sim_buildlog_addf(&g, "#%d converting to nydus image", step);
		sim_buildlog_addf(&g, "#%d converting layers %u.%us done", step,
		                  sim_buildlog_ms(&g, 0, 2), sim_buildlog_ms(&g, 0, 9));
		sim_buildlog_addf(&g, "#%d pushing nydus manifest for %s 0.%us done", step,
		                  params->image_ref, sim_buildlog_ms(&g, 1, 9));
		sim_buildlog_addf(&g, "#%d DONE %u.%us", step, sim_buildlog_ms(&g, 1, 3),
		                  sim_buildlog_ms(&g, 0, 9));
	}
	if (params->forced_error != NULL)
		sim_buildlog_fail(&g, sim_buildlog_clean(params->forced_error));
out:
	sim_dockerfile_free(&df);
	return g.log;
}

void sim_buildlog_free(struct sim_buildlog *log)
{
	if (log == NULL)
		return;
	for (size_t i = 0; i < log->n; i++)
		free(log->lines[i]);
	free(log->lines);
	free(log->instant);
	free(log->sigs);
	free(log->error);
	free(log);
}
