/*
 * Drives libsnapbuild's edges for test_libsnapbuild, one check per argument, against
 * the daemon at $SNAPBUILD_SOCKET; prints one line per check ("ok NAME" or
 * "FAIL NAME: why") and exits 1 if any failed.
 *
 *   errors        bad params, an unknown method, a missing job: codes and error JSON
 *   stop JOB      a follow stopped by its callback; the handle refuses further calls
 *   threads       eight threads, a handle each, calling at once
 */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "snapbuild.h"

static int failures;

static void check(int ok, const char *name, const char *why)
{
	if (ok) {
		printf("ok %s\n", name);
	} else {
		printf("FAIL %s: %s\n", name, why ? why : "");
		failures++;
	}
}

static void check_errors(void)
{
	char *err = NULL, *res = NULL, *ej;
	struct snapbuild *sb = snapbuild_connect(NULL, &err);
	check(sb != NULL, "connect", err);
	if (sb == NULL)
		return;

	check(snapbuild_call(sb, "daemon.version", "[1,", &res, &err) == -1 && err != NULL &&
	          strstr(err, "not valid JSON") != NULL && res == NULL &&
	          snapbuild_last_error_code(sb) == 0,
	      "bad-json", err);
	snapbuild_free(err);
	err = NULL;
	check(snapbuild_call(sb, "daemon.version", "5", &res, &err) == -1 &&
	          strstr(err, "object or array") != NULL,
	      "params-not-object", err);
	snapbuild_free(err);
	err = NULL;

	check(snapbuild_call(sb, "no.such.method", NULL, &res, &err) == -1 &&
	          snapbuild_last_error_code(sb) == -32601,
	      "unknown-method", err);
	ej = snapbuild_last_error_json(sb);
	check(ej != NULL && strstr(ej, "\"code\":-32601") != NULL, "error-json", ej);
	snapbuild_free(ej);
	snapbuild_free(err);
	err = NULL;

	check(snapbuild_call(sb, "build.get", "{\"id\":\"00000000-0000-4000-8000-000000000000\"}",
	                     &res, &err) == -1 &&
	          snapbuild_last_error_code(sb) == -32001,
	      "not-found", err);
	snapbuild_free(err);
	err = NULL;

	/* After errors the connection still works, and a success clears the last error. */
	check(snapbuild_call(sb, "daemon.version", "{}", &res, &err) == 0 && res != NULL &&
	          strstr(res, "\"protocol_version\":2") != NULL &&
	          snapbuild_last_error_code(sb) == 0 && snapbuild_last_error_json(sb) == NULL,
	      "still-usable", err);
	snapbuild_free(res);
	snapbuild_free(err);
	err = NULL;
	check(snapbuild_call(sb, "daemon.info", NULL, NULL, &err) == 0, "result-dropped", err);
	snapbuild_free(err);
	snapbuild_close(sb);
	snapbuild_close(NULL);
	snapbuild_free(NULL);
}

static int stop_at_first(const char *event_json, void *arg)
{
	int *n = arg;
	(*n)++;
	return strstr(event_json, "\"seq\":1,") != NULL || strstr(event_json, "\"seq\":1}") != NULL;
}

static void check_stop(const char *job)
{
	char *err = NULL, *params;
	int n = 0;
	struct snapbuild *sb = snapbuild_connect(NULL, &err);
	check(sb != NULL, "connect", err);
	if (sb == NULL)
		return;
	check(snapbuild_follow(sb, job, stop_at_first, &n, &err) == -1 && n == 1 &&
	          strcmp(err, "stopped by the caller") == 0,
	      "follow-stopped", err);
	snapbuild_free(err);
	err = NULL;
	params = malloc(strlen(job) + 16);
	sprintf(params, "{\"id\":\"%s\"}", job);
	check(snapbuild_call(sb, "build.get", params, NULL, &err) == -1 &&
	          strstr(err, "abandoned") != NULL,
	      "abandoned-after-stop", err);
	snapbuild_free(err);
	free(params);
	snapbuild_close(sb);
}

static void *thread_main(void *arg)
{
	int *ok = arg;
	char *err = NULL, *res = NULL;
	struct snapbuild *sb = snapbuild_connect(NULL, &err);
	*ok = sb != NULL;
	for (int i = 0; *ok && i < 50; i++) {
		*ok = snapbuild_call(sb, "daemon.version", NULL, &res, &err) == 0 &&
		      strstr(res, "\"protocol_version\":2") != NULL;
		snapbuild_free(res);
		res = NULL;
	}
	snapbuild_free(err);
	snapbuild_close(sb);
	return NULL;
}

static void check_threads(void)
{
	pthread_t t[8];
	int ok[8], all = 1;
	for (int i = 0; i < 8; i++)
		pthread_create(&t[i], NULL, thread_main, &ok[i]);
	for (int i = 0; i < 8; i++) {
		pthread_join(t[i], NULL);
		all &= ok[i];
	}
	check(all, "threads", "a thread's calls failed");
}

int main(int argc, char **argv)
{
	for (int i = 1; i < argc; i++) {
		if (strcmp(argv[i], "errors") == 0)
			check_errors();
		else if (strcmp(argv[i], "stop") == 0 && i + 1 < argc)
			check_stop(argv[++i]);
		else if (strcmp(argv[i], "threads") == 0)
			check_threads();
		else
			check(0, argv[i], "unknown check");
	}
	return failures ? 1 : 0;
}
