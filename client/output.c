/*
 * Human output for the CLI.  Nothing here talks to the daemon: commands hand it
 * JSON and it decides how that looks on a terminal or in a pipe.  Every text from
 * the daemon or the service goes through the sanitiser (sanitize.h) on its way out:
 * table cells as one-line fields, log lines with colour only when colour is on.
 */
#include "output.h"

#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "sanitize.h"
#include "util.h"

const char *json_str(json_object *o, const char *key)
{
	json_object *v = NULL;
	if (o && json_object_object_get_ex(o, key, &v) && json_object_is_type(v, json_type_string))
		return json_object_get_string(v);
	return "";
}

int64_t json_int(json_object *o, const char *key)
{
	json_object *v = NULL;
	if (o && json_object_object_get_ex(o, key, &v) && v)
		return json_object_get_int64(v);
	return 0;
}

double json_num(json_object *o, const char *key)
{
	json_object *v = NULL;
	if (o && json_object_object_get_ex(o, key, &v) && v)
		return json_object_get_double(v);
	return 0;
}

char *output_age(double then, double now)
{
	double d = now - then;
	if (then <= 0)
		return xstrdup("-");
	if (d < 0)
		d = 0;
	if (d < 45)
		return xstrdup("just now");
	struct {
		double secs;
		const char *one, *many;
	} units[] = {{86400 * 365, "year", "years"},
	             {86400 * 30, "month", "months"},
	             {86400, "day", "days"},
	             {3600, "hour", "hours"},
	             {60, "min", "mins"}};
	for (size_t i = 0; i < sizeof(units) / sizeof(units[0]); i++) {
		if (d >= units[i].secs) {
			long n = (long)(d / units[i].secs + 0.5);
			if (n < 1)
				n = 1;
			return xasprintf("%ld %s ago", n, n == 1 ? units[i].one : units[i].many);
		}
	}
	return xstrdup("1 min ago");
}

char *output_bytes(uint64_t n)
{
	return format_bytes(n);
}

bool output_color_allowed(void)
{
	const char *nc = getenv("NO_COLOR");
	return nc == NULL || *nc == '\0';
}

bool output_color(FILE *fp)
{
	return output_color_allowed() && isatty(fileno(fp));
}

unsigned output_text_flags(FILE *fp)
{
	return output_color(fp) ? SANITIZE_COLOR : 0;
}

/* --- tables --------------------------------------------------------------------- */

struct table {
	size_t ncols, nrows;
	char **cells; /* nrows * ncols, row 0 = headers */
};

struct table *table_new(size_t ncols, const char *const *headers)
{
	struct table *t = xcalloc(1, sizeof(*t));
	t->ncols = ncols;
	table_add(t, headers);
	return t;
}

void table_add(struct table *t, const char *const *cells)
{
	t->cells = xrealloc(t->cells, (t->nrows + 1) * t->ncols * sizeof(char *));
	for (size_t i = 0; i < t->ncols; i++)
		t->cells[t->nrows * t->ncols + i] = sanitize(cells[i], SANITIZE_FIELD);
	t->nrows++;
}

/* Display width in code points (good enough for our ASCII and "…"). */
static size_t text_width(const char *s)
{
	size_t w = 0;
	for (; *s; s++)
		w += ((unsigned char)*s & 0xc0) != 0x80;
	return w;
}

static void cut(char **cell, size_t max)
{
	if (text_width(*cell) <= max)
		return;
	size_t bytes = 0, w = 0;
	const char *s = *cell;
	while (s[bytes] && w < max - 1) {
		bytes++;
		while (((unsigned char)s[bytes] & 0xc0) == 0x80)
			bytes++;
		w++;
	}
	char *c = xasprintf("%.*s…", (int)bytes, s);
	free(*cell);
	*cell = c;
}

void table_print(struct table *t, FILE *fp, size_t max_width)
{
	size_t *w = xcalloc(t->ncols, sizeof(size_t));
	for (size_t r = 0; r < t->nrows; r++) {
		for (size_t c = 0; c < t->ncols; c++) {
			char **cell = &t->cells[r * t->ncols + c];
			if (max_width)
				cut(cell, max_width);
			size_t cw = text_width(*cell);
			if (cw > w[c])
				w[c] = cw;
		}
	}
	for (size_t r = 0; r < t->nrows; r++) {
		for (size_t c = 0; c < t->ncols; c++) {
			const char *cell = t->cells[r * t->ncols + c];
			if (c + 1 == t->ncols)
				fprintf(fp, "%s\n", cell);
			else
				fprintf(fp, "%s%*s", cell, (int)(w[c] - text_width(cell) + 3), "");
		}
	}
	free(w);
}

void table_free(struct table *t)
{
	if (t == NULL)
		return;
	for (size_t i = 0; i < t->nrows * t->ncols; i++)
		free(t->cells[i]);
	free(t->cells);
	free(t);
}

/* --- events -------------------------------------------------------------------- */

struct event_printer {
	FILE *fp;
	enum event_style style;
	bool color;         /* the printer's own colours */
	unsigned flags;     /* for the texts it prints: colour passes in them or not */
	bool progress_open; /* a progress line waits to be ended */
	char *step;
	double progress_start;
	double last_plain_progress;
};

struct event_printer *event_printer_new(FILE *fp, enum event_style style)
{
	struct event_printer *p = xcalloc(1, sizeof(*p));
	p->fp = fp;
	p->style = style;
	p->color = style == EVENT_STYLE_LIVE && output_color(fp);
	/* --raw is asked for to see the builder's colours, in a pipe too: only NO_COLOR
	 * turns them off.  The other styles keep colour only where they paint their own. */
	if (p->color || (style == EVENT_STYLE_RAW && output_color_allowed()))
		p->flags = SANITIZE_COLOR;
	return p;
}

void event_printer_finish(struct event_printer *p)
{
	if (p->progress_open) {
		fputc('\n', p->fp);
		p->progress_open = false;
	}
	fflush(p->fp);
}

void event_printer_free(struct event_printer *p)
{
	if (p == NULL)
		return;
	event_printer_finish(p);
	free(p->step);
	free(p);
}

static const char *paint(struct event_printer *p, const char *code)
{
	return p->color ? code : "";
}

static void print_progress(struct event_printer *p, json_object *ev)
{
	int64_t sent = json_int(ev, "sent"), total = json_int(ev, "total");
	double t = parse_rfc3339(json_str(ev, "time"));
	if (p->style != EVENT_STYLE_LIVE) {
		if (sent == total || t - p->last_plain_progress >= 2) {
			p->last_plain_progress = t;
			sanitize_printf(p->fp, 0, "%s\n", json_str(ev, "text"));
		}
		return;
	}
	if (!p->progress_open)
		p->progress_start = t;
	char *a = output_bytes((uint64_t)sent), *b = output_bytes((uint64_t)total);
	double el = t - p->progress_start;
	char *rate = output_bytes(el > 0.05 ? (uint64_t)((double)sent / el) : 0);
	int width = 30, fill = total > 0 ? (int)((double)sent * width / (double)total) : 0;
	char bar[31];
	memset(bar, '#', (size_t)fill);
	memset(bar + fill, '-', (size_t)(width - fill));
	bar[width] = '\0';
	/* No speed before there is one to tell. */
	fprintf(p->fp, "\r\033[K  upload [%s%s%s] %s / %s", paint(p, "\033[36m"), bar,
	        paint(p, "\033[0m"), a, b);
	if (el > 0.05)
		fprintf(p->fp, "  %s/s", rate);
	free(a);
	free(b);
	free(rate);
	p->progress_open = true;
	if (sent == total)
		event_printer_finish(p);
	fflush(p->fp);
}

void event_printer_print(struct event_printer *p, json_object *ev)
{
	const char *kind = json_str(ev, "kind");
	const char *step = json_str(ev, "step");
	if (strcmp(kind, "progress") == 0) {
		print_progress(p, ev);
		return;
	}
	event_printer_finish(p);
	if (strcmp(kind, "state") == 0) {
		fprintf(p->fp, "%s==> ", paint(p, "\033[1;34m"));
		sanitize_fputs(json_str(ev, "text"), SANITIZE_FIELD, p->fp);
		fprintf(p->fp, "%s\n", paint(p, "\033[0m"));
	} else if (strcmp(kind, "warning") == 0) {
		fprintf(p->fp, "%swarning:%s ", paint(p, "\033[33m"), paint(p, "\033[0m"));
		sanitize_fputs(json_str(ev, "text"), p->flags, p->fp);
		fputc('\n', p->fp);
	} else {
		const char *text = json_str(ev, "text");
		if (p->style == EVENT_STYLE_RAW && *json_str(ev, "raw"))
			text = json_str(ev, "raw");
		if (p->style == EVENT_STYLE_LIVE && *step && strcmp(step, "build") != 0) {
			fprintf(p->fp, "%s[", paint(p, "\033[2m"));
			sanitize_fputs(step, SANITIZE_FIELD, p->fp);
			fprintf(p->fp, "]%s ", paint(p, "\033[0m"));
		}
		sanitize_fputs(text, p->flags, p->fp);
		fputc('\n', p->fp);
	}
	if (*step && (p->step == NULL || strcmp(p->step, step) != 0)) {
		free(p->step);
		p->step = xstrdup(step);
	}
	fflush(p->fp);
}
