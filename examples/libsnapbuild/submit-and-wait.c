/*
 * An example libsnapbuild program: submit a context directory to the snapbuild
 * daemon, print the build's log as it happens, wait for the job to end and print the
 * snapshot id.  Exit 0 only when the build succeeded.
 *
 *   cc -o submit-and-wait submit-and-wait.c $(pkg-config --cflags --libs snapbuild)
 *   ./submit-and-wait ./app '{"alias": "app@v1"}'
 *
 * The socket is $SNAPBUILD_SOCKET or the default one.  It parses no JSON beyond what
 * it needs, with strstr, to stay free of any JSON library: a real program would use one.
 */
#include <snapbuild.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The string value of "key" in a flat JSON object, or NULL (no escapes handled). */
static char *json_string_member(const char *json, const char *key)
{
	char pat[64];
	const char *p, *end;
	char *v;

	snprintf(pat, sizeof(pat), "\"%s\":\"", key);
	p = strstr(json, pat);
	if (p == NULL)
		return NULL;
	p += strlen(pat);
	end = strchr(p, '"');
	if (end == NULL)
		return NULL;
	v = malloc((size_t)(end - p) + 1);
	if (v == NULL)
		return NULL;
	memcpy(v, p, (size_t)(end - p));
	v[end - p] = '\0';
	return v;
}

static int print_event(const char *event_json, void *arg)
{
	int *events = arg;
	(*events)++;
	printf("event %s\n", event_json);
	return 0;
}

int main(int argc, char **argv)
{
	struct snapbuild *sb;
	char *err = NULL, *job = NULL, *id = NULL, *done = NULL, *params = NULL;
	int events = 0, rc = 1;

	if (argc < 2 || argc > 3) {
		fprintf(stderr, "usage: %s CONTEXT_DIR [PARAMS_JSON]\n", argv[0]);
		return 2;
	}
	sb = snapbuild_connect(NULL, &err);
	if (sb == NULL) {
		fprintf(stderr, "submit-and-wait: %s\n", err);
		snapbuild_free(err);
		return 3;
	}
	printf("libsnapbuild %s\n", snapbuild_version());
	if (snapbuild_submit(sb, argv[1], argc == 3 ? argv[2] : NULL, &job, &err) < 0) {
		fprintf(stderr, "submit-and-wait: submit: %s (code %d)\n", err,
		        snapbuild_last_error_code(sb));
		goto out;
	}
	id = json_string_member(job, "id");
	if (id == NULL) {
		fprintf(stderr, "submit-and-wait: no job id in %s\n", job);
		goto out;
	}
	printf("job %s\n", id);
	if (snapbuild_follow(sb, id, print_event, &events, &err) < 0) {
		fprintf(stderr, "submit-and-wait: follow: %s\n", err);
		goto out;
	}
	params = malloc(strlen(id) + 16);
	if (params == NULL)
		goto out;
	sprintf(params, "{\"id\":\"%s\"}", id);
	if (snapbuild_call(sb, "build.wait", params, &done, &err) < 0) {
		fprintf(stderr, "submit-and-wait: wait: %s\n", err);
		goto out;
	}
	printf("events %d\n", events);
	printf("result %s\n", done);
	rc = strstr(done, "\"state\":\"succeeded\"") != NULL ? 0 : 1;
out:
	free(params);
	free(id);
	snapbuild_free(done);
	snapbuild_free(job);
	snapbuild_free(err);
	snapbuild_close(sb);
	return rc;
}
