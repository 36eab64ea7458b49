/*
 * Human output shared by the CLI's commands: relative ages ("7 mins ago"), byte
 * sizes, aligned tables, terminal and colour detection (NO_COLOR respected), and
 * the printer that turns a job's events into a live view or plain log lines.  Table
 * cells and event texts pass through the sanitiser (sanitize.h) before they are shown.
 */
#ifndef SNAPBUILD_OUTPUT_H
#define SNAPBUILD_OUTPUT_H

#include <json-c/json.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

/* "just now", "1 min ago", "7 mins ago", "3 hours ago", "2 days ago" (malloc'd). */
char *output_age(double then, double now);
/* "512 B", "1.5 KiB", "12.0 MiB" (malloc'd). */
char *output_bytes(uint64_t n);
/* NO_COLOR unset or empty. */
bool output_color_allowed(void);
/* Whether to use colour on fp: a terminal and NO_COLOR unset or empty. */
bool output_color(FILE *fp);
/* The sanitize() flags for multi-line text (a message, a log line) bound for fp:
 * SANITIZE_COLOR when colour is on there, else 0. */
unsigned output_text_flags(FILE *fp);

/* A table: add rows of cells (each sanitised as a one-line field), then print with
 * columns aligned. */
struct table;
struct table *table_new(size_t ncols, const char *const *headers);
void table_add(struct table *t, const char *const *cells);
/* max_width > 0: cells longer than max_width are cut with an ellipsis (terminals only). */
void table_print(struct table *t, FILE *fp, size_t max_width);
void table_free(struct table *t);

/* Events of a job, as `build.event` notifications or build.logs results carry them. */
struct event_printer;
enum event_style {
	EVENT_STYLE_LIVE,  /* a terminal: steps, a progress bar, the log */
	EVENT_STYLE_PLAIN, /* a pipe or --ci: plain lines */
	EVENT_STYLE_RAW,   /* the log as the builder sent it, its colours kept (not with
	                      NO_COLOR) and every other control escaped */
};
struct event_printer *event_printer_new(FILE *fp, enum event_style style);
void event_printer_print(struct event_printer *p, json_object *event);
/* Ends a pending progress line. */
void event_printer_finish(struct event_printer *p);
void event_printer_free(struct event_printer *p);

/* Field accessors that tolerate absence: "" / 0 / false. */
const char *json_str(json_object *o, const char *key);
int64_t json_int(json_object *o, const char *key);
double json_num(json_object *o, const char *key);

#endif
