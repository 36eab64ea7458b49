/*
 * Test support for the HTTP and API tests: runs tests/integration/fake_service.py
 * with a script of answers, reads back the requests it received, and runs the
 * event loop until a condition holds or a deadline passes.
 */
#ifndef SNAPBUILD_TEST_FAKE_SERVICE_H
#define SNAPBUILD_TEST_FAKE_SERVICE_H

#include <stdbool.h>
#include <sys/types.h>

#include <json-c/json.h>

struct event_base;

struct fake_service {
	pid_t pid;
	char dir[64];
	char *log_path;
	char *base_url; /* "http://127.0.0.1:PORT" */
};

/* Starts the service with a JSON script (see fake_service.py); aborts the test on failure. */
struct fake_service *fake_service_start(const char *script_json);
/* Starts $SNAPBUILD_BIN_DIR/tests/sim/snapbuild-sim (NULL when it is not built) with a
 * fast build log and the given faults; stop it with fake_service_stop. */
struct fake_service *sim_start(const char *api_key, const char *faults_json);
void fake_service_stop(struct fake_service *fs);
/* "http://127.0.0.1:PORT" + path, freshly allocated. */
char *fake_service_url(const struct fake_service *fs, const char *path);
/* The requests received so far, as an array the caller puts. */
json_object *fake_service_requests(const struct fake_service *fs);
/* Waits (polling the log, up to timeout_s) until at least n requests were received. */
json_object *fake_service_wait_requests(const struct fake_service *fs, size_t n, double timeout_s);

/* Runs the loop until *flag is true or timeout_s passes; returns *flag. */
bool test_loop_until(struct event_base *base, const bool *flag, double timeout_s);
/* Runs the loop for a while regardless (to show that something does NOT happen). */
void test_loop_for(struct event_base *base, double seconds);
/* A URL where nothing listens. */
char *test_closed_port_url(void);

#endif
