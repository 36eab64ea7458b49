/*
 * Child processes on the loop, with real /bin/sh children: output cut into lines
 * (carriage-return progress collapsed, escapes stripped, overlong lines split), exit
 * statuses, stdin delivery, the process group, termination of the whole group, no
 * descriptor leaks, an environment exactly as given, and freeing from callbacks.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdbool.h>
#include <sys/wait.h>
#include <unistd.h>

#include <event2/event.h>

#include "ansi.h"
#include "child.h"
#include "util.h"

#define MAX_LINES 64

struct run {
	struct child *child;
	char *lines[2][MAX_LINES];
	size_t nlines[2];
	bool exited;
	int wstatus;
	/* terminate on the first stdout line, with this grace (ms); -1: never */
	int terminate_grace;
	/* child_free on the first stdout line */
	bool free_on_line;
	pid_t first_line_pid;
};

static struct event_base *base;
static char *const test_env[] = {"PATH=/usr/bin:/bin", "LANG=C", NULL};

static void run_line_cb(void *arg, int stream, const char *line)
{
	struct run *r = arg;

	assert_true(stream == 1 || stream == 2);
	assert_true(r->nlines[stream - 1] < MAX_LINES);
	if (stream == 1 && r->nlines[0] == 0) {
		r->first_line_pid = (pid_t)atol(line);
		if (r->terminate_grace >= 0)
			child_terminate(r->child, r->terminate_grace);
		if (r->free_on_line) {
			child_free(r->child);
			r->child = NULL;
		}
	}
	r->lines[stream - 1][r->nlines[stream - 1]++] = xstrdup(line);
}

static void run_exit_cb(void *arg, int wstatus)
{
	struct run *r = arg;

	assert_false(r->exited);
	r->exited = true;
	r->wstatus = wstatus;
}

static const struct child_cbs run_cbs = {run_line_cb, run_exit_cb};

static void tick_cb(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	(void)arg;
}

/* Run the loop until cond(arg) holds, failing after a generous deadline. */
static void loop_until(bool (*cond)(void *), void *arg)
{
	struct timeval tick = {0, 20000};
	struct event *ev = event_new(base, -1, EV_PERSIST, tick_cb, NULL);
	double deadline = now_seconds() + 20;

	event_add(ev, &tick);
	while (!cond(arg)) {
		assert_true(now_seconds() < deadline);
		event_base_loop(base, EVLOOP_ONCE);
	}
	event_free(ev);
}

static bool run_exited(void *arg)
{
	return ((struct run *)arg)->exited;
}

static void run_free(struct run *r)
{
	int s;
	size_t i;

	for (s = 0; s < 2; s++)
		for (i = 0; i < r->nlines[s]; i++)
			free(r->lines[s][i]);
	child_free(r->child);
}

/* Start sh -c script (with the given environment) and wait for on_exit. */
static void run_sh_full(struct run *r, const char *script, char *const *envp, const char *cwd,
                        const char *input, size_t input_len)
{
	char *argv[] = {"sh", "-c", (char *)script, NULL};
	struct child_spec spec = {argv, envp, cwd, input, input_len};
	char *err = NULL;

	r->child = child_spawn(&spec, &run_cbs, r, &err);
	assert_null(err);
	assert_non_null(r->child);
	loop_until(run_exited, r);
}

static void run_sh(struct run *r, const char *script)
{
	memset(r, 0, sizeof(*r));
	r->terminate_grace = -1;
	run_sh_full(r, script, test_env, NULL, NULL, 0);
}

static void assert_lines(struct run *r, int stream, const char *const *want)
{
	size_t i;

	for (i = 0; want[i] != NULL; i++) {
		assert_true(i < r->nlines[stream - 1]);
		assert_string_equal(r->lines[stream - 1][i], want[i]);
	}
	assert_int_equal(r->nlines[stream - 1], i);
}

/* True when no live (non-zombie) process belongs to process group pgid. */
static bool group_gone(pid_t pgid)
{
	DIR *d = opendir("/proc");
	struct dirent *de;
	bool gone = true;

	assert_non_null(d);
	while (gone && (de = readdir(d)) != NULL) {
		char path[300], buf[512], *p, state;
		int pgrp = 0;
		FILE *f;

		if (de->d_name[0] < '0' || de->d_name[0] > '9')
			continue;
		snprintf(path, sizeof(path), "/proc/%s/stat", de->d_name);
		f = fopen(path, "r");
		if (f == NULL)
			continue;
		if (fgets(buf, sizeof(buf), f) != NULL && (p = strrchr(buf, ')')) != NULL &&
		    sscanf(p + 1, " %c %*d %d", &state, &pgrp) == 2 && pgrp == pgid && state != 'Z')
			gone = false;
		fclose(f);
	}
	closedir(d);
	return gone;
}

/* True when pid is not running (absent, or a zombie nobody reaped yet). */
static bool process_gone(pid_t pid)
{
	char path[64], buf[512], *p;
	bool gone = true;
	FILE *f;

	snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
	f = fopen(path, "r");
	if (f == NULL)
		return true;
	if (fgets(buf, sizeof(buf), f) != NULL && (p = strrchr(buf, ')')) != NULL)
		gone = p[2] == 'Z';
	fclose(f);
	return gone;
}

static bool process_gone_cb(void *arg)
{
	return process_gone(*(pid_t *)arg);
}

static bool group_gone_cb(void *arg)
{
	return group_gone(*(pid_t *)arg);
}

static bool pid_absent(void *arg)
{
	return kill(*(pid_t *)arg, 0) == -1 && errno == ESRCH;
}

static int setup(void **state)
{
	(void)state;
	base = event_base_new();
	child_init(base);
	return 0;
}

static int teardown(void **state)
{
	(void)state;
	child_shutdown();
	event_base_free(base);
	return 0;
}

static void test_lines_split(void **state)
{
	static const char *const out[] = {"one", "", "two", "three", NULL};
	static const char *const err[] = {"err1", NULL};
	struct run r;

	(void)state;
	run_sh(&r, "printf 'one\\n\\ntw'; printf 'o\\n'; printf err1 >&2; printf three");
	assert_lines(&r, 1, out);
	assert_lines(&r, 2, err);
	assert_true(WIFEXITED(r.wstatus));
	assert_int_equal(WEXITSTATUS(r.wstatus), 0);
	run_free(&r);
}

static void test_cr_progress_collapsed(void **state)
{
	static const char *const out[] = {"100%", "next", "done", NULL};
	struct run r;

	(void)state;
	run_sh(&r, "printf '10%%\\r50%%\\r100%%\\nnext\\r\\n50%%\\r\\033[Kdone\\r\\n'");
	assert_lines(&r, 1, out);
	run_free(&r);
}

static void test_ansi_stripped(void **state)
{
	static const char *const out[] = {"red plain end", "#1 [internal] load", NULL};
	struct run r;

	(void)state;
	/* The second line is the escape-only line docker draws between steps: dropped. */
	run_sh(&r, "printf '\\033[1;31mred\\033[0m plain \\033]0;title\\007end\\n'; "
	           "printf '\\033[2K\\033[1A\\n'; printf '\\033(B#1 [internal] load\\n'");
	assert_lines(&r, 1, out);
	run_free(&r);
}

static void test_ansi_strip_function(void **state)
{
	static const struct {
		const char *in, *out;
	} cases[] = {
	    {"plain", "plain"},
	    {"\x1b[31mred\x1b[0m", "red"},
	    {"a\x1b[?25lb\x1b[?25hc", "abc"},
	    {"\x1b]8;;http://x\x1b\\link\x1b]8;;\x1b\\", "link"},
	    {"tab\there", "tab\there"},
	    {"cut\x1b[1", "cut"},
	    {"esc\x1b", "esc"},
	    {"ctl\x1b\tkept", "ctl\tkept"},
	    {"utf\x1b\xc3\xa9-8", "utf\xc3\xa9-8"},
	    {"\x1b[1;2 qcursor", "cursor"},
	    {"keep\r\x1b[Kcr", "keep\rcr"},
	    {"\x1b"
	     "7saved\x1b"
	     "8",
	     "saved"},
	};
	size_t i;

	(void)state;
	for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		char *s = ansi_strip(cases[i].in);

		assert_string_equal(s, cases[i].out);
		free(s);
	}
}

static void test_repair_utf8(void **state)
{
	static const struct {
		const char *in, *out;
		size_t fixed;
	} cases[] = {
	    {"plain", "plain", 0},
	    {"caf\xc3\xa9 \xe6\xbc\xa2 \xf0\x9f\x98\x80",
	     "caf\xc3\xa9 \xe6\xbc\xa2 \xf0\x9f\x98\x80", 0},
	    {"caf\xe9!", "caf?!", 1},
	    {"\xff\xfe", "??", 2},
	    {"cut \xe6\xbc", "cut ??", 2},
	    {"\xc0\xaf overlong", "?? overlong", 2},
	    {"\xed\xa0\x80 surrogate", "??? surrogate", 3},
	    {"\xf4\x90\x80\x80 too high", "???? too high", 4},
	};
	size_t i;

	(void)state;
	for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		char *s = xstrdup(cases[i].in);

		assert_int_equal(ansi_repair_utf8(s, strlen(s)), cases[i].fixed);
		assert_string_equal(s, cases[i].out);
		free(s);
	}
}

static void test_exit_codes(void **state)
{
	struct run r;

	(void)state;
	run_sh(&r, "exit 3");
	assert_true(WIFEXITED(r.wstatus));
	assert_int_equal(WEXITSTATUS(r.wstatus), 3);
	run_free(&r);

	run_sh(&r, "kill -KILL $$");
	assert_true(WIFSIGNALED(r.wstatus));
	assert_int_equal(WTERMSIG(r.wstatus), SIGKILL);
	run_free(&r);
}

static void test_stdin_delivered(void **state)
{
	static const char *const out[] = {"got:s3cret pass", NULL};
	struct run r;
	char *big;

	(void)state;
	memset(&r, 0, sizeof(r));
	r.terminate_grace = -1;
	run_sh_full(&r, "read -r p; echo \"got:$p\"", test_env, NULL, "s3cret pass\n", 12);
	assert_lines(&r, 1, out);
	run_free(&r);

	/* More than a pipe holds: the rest goes out as the child reads. */
	big = xmalloc(300000);
	memset(big, 'x', 300000);
	memset(&r, 0, sizeof(r));
	r.terminate_grace = -1;
	run_sh_full(&r, "wc -c", test_env, NULL, big, 300000);
	free(big);
	assert_int_equal(r.nlines[0], 1);
	assert_int_equal(atol(r.lines[0][0]), 300000);
	run_free(&r);

	/* No stdin given: /dev/null, so a reader sees end of file at once. */
	run_sh(&r, "cat; echo eof");
	assert_int_equal(r.nlines[0], 1);
	assert_string_equal(r.lines[0][0], "eof");
	run_free(&r);
}

static void test_stdin_not_read(void **state)
{
	struct run r;
	char *big;

	(void)state;
	/* The child exits without reading: the write fails quietly, no SIGPIPE. */
	big = xmalloc(300000);
	memset(big, 'x', 300000);
	memset(&r, 0, sizeof(r));
	r.terminate_grace = -1;
	run_sh_full(&r, "exec 0<&-; exit 0", test_env, NULL, big, 300000);
	free(big);
	assert_true(WIFEXITED(r.wstatus));
	run_free(&r);
}

static void test_own_process_group(void **state)
{
	struct run r;
	char want[64];

	(void)state;
	run_sh(&r, "echo \"$$ $(cut -d' ' -f5 /proc/$$/stat)\"");
	assert_int_equal(r.nlines[0], 1);
	snprintf(want, sizeof(want), "%d %d", (int)child_pid(r.child), (int)child_pid(r.child));
	assert_string_equal(r.lines[0][0], want);
	assert_int_not_equal(child_pid(r.child), getpgrp());
	run_free(&r);
}

static void test_terminate_kills_group(void **state)
{
	struct run r;
	pid_t pgid;

	(void)state;
	memset(&r, 0, sizeof(r));
	r.terminate_grace = 5000;
	run_sh_full(&r, "sleep 100 & echo $!; wait", test_env, NULL, NULL, 0);
	pgid = child_pid(r.child);
	assert_true(r.first_line_pid > 0);
	assert_true(WIFSIGNALED(r.wstatus));
	assert_int_equal(WTERMSIG(r.wstatus), SIGTERM);
	/* Dying processes close their pipes a moment before they are gone. */
	loop_until(process_gone_cb, &r.first_line_pid);
	loop_until(group_gone_cb, &pgid);
	run_free(&r);
}

static void test_terminate_signals_the_group(void **state)
{
	static const char *const out[] = {"ready", "grandchild-term", "leader-term", NULL};
	struct run r;
	pid_t pgid;

	(void)state;
	/* Every member of the group hears the SIGTERM, not just the leader. */
	memset(&r, 0, sizeof(r));
	r.terminate_grace = 5000;
	run_sh_full(&r,
	            "trap 'wait; echo leader-term; exit 7' TERM; "
	            "sh -c 'trap \"echo grandchild-term; exit 0\" TERM; echo ready; sleep 100 & "
	            "wait' & wait",
	            test_env, NULL, NULL, 0);
	pgid = child_pid(r.child);
	assert_true(WIFEXITED(r.wstatus));
	assert_int_equal(WEXITSTATUS(r.wstatus), 7);
	assert_lines(&r, 1, out);
	loop_until(group_gone_cb, &pgid);
	run_free(&r);
}

static void test_terminate_escalates_to_kill(void **state)
{
	struct run r;
	pid_t pgid;

	(void)state;
	/* Both the shell and its sleep ignore SIGTERM: the grace ends in SIGKILL. */
	memset(&r, 0, sizeof(r));
	r.terminate_grace = 300;
	run_sh_full(&r, "trap '' TERM; sleep 100 & echo $!; wait", test_env, NULL, NULL, 0);
	pgid = child_pid(r.child);
	assert_true(WIFSIGNALED(r.wstatus));
	assert_int_equal(WTERMSIG(r.wstatus), SIGKILL);
	/* Dying processes close their pipes a moment before they are gone. */
	loop_until(process_gone_cb, &r.first_line_pid);
	loop_until(group_gone_cb, &pgid);
	run_free(&r);
}

static void test_no_fd_leak(void **state)
{
	static const char *const out[] = {"0", "1", "2", NULL};
	struct run r;
	int fd, high;

	(void)state;
	/* A descriptor opened without O_CLOEXEC, as careless code elsewhere might. */
	fd = open("/dev/null", O_RDONLY);
	assert_true(fd >= 0);
	high = dup2(fd, 57);
	assert_int_equal(high, 57);
	run_sh(&r, "ls /proc/$$/fd");
	close(fd);
	close(high);
	assert_lines(&r, 1, out);
	run_free(&r);
}

static void test_environment_exact(void **state)
{
	static char *const envp[] = {"PATH=/usr/bin:/bin", "HOME=/nonexistent", "FOO=bar baz",
	                             NULL};
	static const char *const out[] = {"PATH=/usr/bin:/bin", "HOME=/nonexistent", "FOO=bar baz",
	                                  NULL};
	char *argv[] = {"env", NULL};
	struct child_spec spec = {argv, envp, NULL, NULL, 0};
	struct run r;
	char *err = NULL;

	(void)state;
	setenv("SNAPBUILD_TEST_SECRET", "must-not-leak", 1);
	memset(&r, 0, sizeof(r));
	r.terminate_grace = -1;
	r.child = child_spawn(&spec, &run_cbs, &r, &err);
	assert_non_null(r.child);
	loop_until(run_exited, &r);
	unsetenv("SNAPBUILD_TEST_SECRET");
	assert_lines(&r, 1, out);
	run_free(&r);
}

static void test_cwd(void **state)
{
	struct run r;

	(void)state;
	memset(&r, 0, sizeof(r));
	r.terminate_grace = -1;
	run_sh_full(&r, "pwd", test_env, "/proc", NULL, 0);
	assert_int_equal(r.nlines[0], 1);
	assert_string_equal(r.lines[0][0], "/proc");
	run_free(&r);
}

static void test_not_found(void **state)
{
	static char *const envp[] = {"PATH=/nonexistent-dir", NULL};
	char *argv[] = {"no-such-engine", NULL};
	struct child_spec spec = {argv, envp, NULL, NULL, 0};
	struct run r;
	char *err = NULL;

	(void)state;
	memset(&r, 0, sizeof(r));
	assert_null(child_spawn(&spec, &run_cbs, &r, &err));
	assert_non_null(err);
	assert_non_null(strstr(err, "no-such-engine: not found in PATH (/nonexistent-dir)"));
	free(err);

	/* Only the child's PATH counts, not the daemon's. */
	argv[0] = "sh";
	assert_null(child_spawn(&spec, &run_cbs, &r, &err));
	assert_non_null(err);
	free(err);
}

static void test_missing_cwd(void **state)
{
	char *argv[] = {"sh", "-c", "true", NULL};
	struct child_spec spec = {argv, test_env, "/nonexistent-dir", NULL, 0};
	struct run r;
	char *err = NULL;

	(void)state;
	memset(&r, 0, sizeof(r));
	assert_null(child_spawn(&spec, &run_cbs, &r, &err));
	assert_non_null(err);
	assert_non_null(strstr(err, "in /nonexistent-dir: No such file or directory"));
	free(err);
}

static void test_long_lines(void **state)
{
	struct run r;

	(void)state;
	run_sh(&r, "head -c 70000 /dev/zero | tr '\\000' a; echo; echo short");
	assert_int_equal(r.nlines[0], 3);
	assert_int_equal(strlen(r.lines[0][0]), CHILD_LINE_MAX);
	assert_int_equal(strlen(r.lines[0][1]), 70000 - CHILD_LINE_MAX);
	assert_string_equal(r.lines[0][2], "short");
	run_free(&r);

	/* Progress redrawn far past the line limit, never a newline: only the end. */
	run_sh(&r, "i=0; while [ $i -lt 12000 ]; do printf 'progress %05d\\r' $i; i=$((i+1)); "
	           "done; echo finished");
	assert_int_equal(r.nlines[0], 1);
	assert_string_equal(r.lines[0][0], "finished");
	run_free(&r);
}

static void test_free_from_callback(void **state)
{
	struct run r;
	char *argv[] = {"sh", "-c", "echo $$; exec sleep 100", NULL};
	struct child_spec spec = {argv, test_env, NULL, NULL, 0};
	char *err = NULL;
	double deadline = now_seconds() + 10;

	(void)state;
	memset(&r, 0, sizeof(r));
	r.terminate_grace = -1;
	r.free_on_line = true;
	r.child = child_spawn(&spec, &run_cbs, &r, &err);
	assert_non_null(r.child);
	while (r.first_line_pid == 0) {
		assert_true(now_seconds() < deadline);
		event_base_loop(base, EVLOOP_ONCE);
	}
	assert_null(r.child);
	/* Abandoned: killed, and still reaped by the loop (no zombie left behind). */
	loop_until(pid_absent, &r.first_line_pid);
	assert_false(r.exited);
	run_free(&r);
}

static void test_output_outlives_process(void **state)
{
	struct run r;
	double start = now_seconds();
	pid_t pgid;

	(void)state;
	/* A grandchild keeps stdout open: on_exit comes after CHILD_DRAIN_MS anyway. */
	run_sh(&r, "sleep 30 & echo started");
	pgid = child_pid(r.child);
	assert_true(now_seconds() - start >= CHILD_DRAIN_MS / 1000.0 - 0.1);
	assert_true(WIFEXITED(r.wstatus));
	assert_int_equal(r.nlines[0], 1);
	kill(-pgid, SIGKILL);
	run_free(&r);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test_setup_teardown(test_lines_split, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_cr_progress_collapsed, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_ansi_stripped, setup, teardown),
	    cmocka_unit_test(test_ansi_strip_function),
	    cmocka_unit_test(test_repair_utf8),
	    cmocka_unit_test_setup_teardown(test_exit_codes, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_stdin_delivered, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_stdin_not_read, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_own_process_group, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_terminate_kills_group, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_terminate_signals_the_group, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_terminate_escalates_to_kill, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_no_fd_leak, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_environment_exact, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_cwd, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_not_found, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_missing_cwd, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_long_lines, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_free_from_callback, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_output_outlives_process, setup, teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
