/*
 * Engine command lines, exactly: build, login and push for docker, podman and
 * buildah; the per-job credential store; build-argument parsing; registry host
 * and prefix; and engine detection against a PATH of stand-in executables.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include <fcntl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "engine.h"
#include "util.h"

static void assert_argv(char **got, const char *const *want)
{
	size_t i;

	assert_non_null(got);
	for (i = 0; want[i] != NULL; i++) {
		assert_non_null(got[i]);
		assert_string_equal(got[i], want[i]);
	}
	assert_null(got[i]);
	engine_argv_free(got);
}

static const char *const build_args[] = {"A=1", "B=two words", NULL};
static const struct engine_build build = {
    .context_dir = "/job/context",
    .dockerfile = "docker/Dockerfile.prod",
    .platform = "linux/arm64",
    .image_ref = "reg.example.com:5000/ns/image-a:b",
    .build_args = build_args,
    .isolation = "chroot",
};
static const char *const vfs[] = {"--storage-driver", "vfs", NULL};

static void test_names(void **state)
{
	enum engine_kind k;

	(void)state;
	assert_string_equal(engine_name(ENGINE_DOCKER), "docker");
	assert_string_equal(engine_name(ENGINE_PODMAN), "podman");
	assert_string_equal(engine_name(ENGINE_BUILDAH), "buildah");
	assert_int_equal(engine_parse("podman", &k), 0);
	assert_int_equal(k, ENGINE_PODMAN);
	assert_int_equal(engine_parse("buildah", &k), 0);
	assert_int_equal(k, ENGINE_BUILDAH);
	assert_int_equal(engine_parse("Docker", &k), -1);
	assert_int_equal(engine_parse("auto", &k), -1);
}

static void test_build_argv(void **state)
{
	static const char *const docker[] = {"docker",
	                                     "build",
	                                     "--platform",
	                                     "linux/arm64",
	                                     "--progress=plain",
	                                     "-f",
	                                     "docker/Dockerfile.prod",
	                                     "-t",
	                                     "reg.example.com:5000/ns/image-a:b",
	                                     "--build-arg",
	                                     "A",
	                                     "--build-arg",
	                                     "B",
	                                     "/job/context",
	                                     NULL};
	static const char *const podman[] = {"podman",       "--storage-driver",
	                                     "vfs",          "build",
	                                     "--platform",   "linux/arm64",
	                                     "-f",           "docker/Dockerfile.prod",
	                                     "-t",           "reg.example.com:5000/ns/image-a:b",
	                                     "--isolation",  "chroot",
	                                     "--build-arg",  "A",
	                                     "--build-arg",  "B",
	                                     "/job/context", NULL};
	static const char *const buildah[] = {"buildah",      "--storage-driver",
	                                      "vfs",          "bud",
	                                      "--platform",   "linux/arm64",
	                                      "-f",           "docker/Dockerfile.prod",
	                                      "-t",           "reg.example.com:5000/ns/image-a:b",
	                                      "--isolation",  "chroot",
	                                      "--build-arg",  "A",
	                                      "--build-arg",  "B",
	                                      "/job/context", NULL};
	static const char *const minimal[] = {"buildah", "bud",   "-f", "Dockerfile",
	                                      "-t",      "r/i:t", "/c", NULL};
	struct engine_opts plain = {NULL, true, "/job"};
	struct engine_opts with_vfs = {vfs, true, "/job"};
	struct engine_build b = {"/c", "Dockerfile", NULL, "r/i:t", NULL, NULL};

	(void)state;
	/* docker has no --isolation: the option is dropped, not passed through. */
	assert_argv(engine_build_argv(ENGINE_DOCKER, &plain, &build), docker);
	assert_argv(engine_build_argv(ENGINE_PODMAN, &with_vfs, &build), podman);
	assert_argv(engine_build_argv(ENGINE_BUILDAH, &with_vfs, &build), buildah);
	assert_argv(engine_build_argv(ENGINE_BUILDAH, &plain, &b), minimal);
}

static void test_login_argv(void **state)
{
	static const char *const docker[] = {"docker",
	                                     "login",
	                                     "--username",
	                                     "robot$ns+1",
	                                     "--password-stdin",
	                                     "reg.example.com:5000",
	                                     NULL};
	static const char *const podman[] = {
	    "podman",     "login",      "--authfile",       "/job/auth.json",
	    "--username", "robot$ns+1", "--password-stdin", "reg.example.com:5000",
	    NULL};
	static const char *const buildah[] = {"buildah",
	                                      "--storage-driver",
	                                      "vfs",
	                                      "login",
	                                      "--tls-verify=false",
	                                      "--authfile",
	                                      "/job/auth.json",
	                                      "--username",
	                                      "robot$ns+1",
	                                      "--password-stdin",
	                                      "reg.example.com:5000",
	                                      NULL};
	struct engine_opts verify = {NULL, true, "/job"};
	struct engine_opts insecure_vfs = {vfs, false, "/job"};
	struct engine_opts insecure = {NULL, false, "/job"};

	(void)state;
	/* docker has no --tls-verify: it trusts loopback registries on its own. */
	assert_argv(
	    engine_login_argv(ENGINE_DOCKER, &insecure, "reg.example.com:5000", "robot$ns+1"),
	    docker);
	assert_argv(engine_login_argv(ENGINE_PODMAN, &verify, "reg.example.com:5000", "robot$ns+1"),
	            podman);
	assert_argv(
	    engine_login_argv(ENGINE_BUILDAH, &insecure_vfs, "reg.example.com:5000", "robot$ns+1"),
	    buildah);
}

static void test_push_argv(void **state)
{
	static const char *const docker[] = {"docker", "push", "reg/ns/image-a:b", NULL};
	static const char *const podman[] = {"podman",     "push",           "--tls-verify=false",
	                                     "--authfile", "/job/auth.json", "reg/ns/image-a:b",
	                                     NULL};
	static const char *const buildah[] = {
	    "buildah",        "--storage-driver", "vfs", "push", "--authfile",
	    "/job/auth.json", "reg/ns/image-a:b", NULL};
	struct engine_opts insecure = {NULL, false, "/job"};
	struct engine_opts verify_vfs = {vfs, true, "/job"};

	(void)state;
	assert_argv(engine_push_argv(ENGINE_DOCKER, &insecure, "reg/ns/image-a:b"), docker);
	assert_argv(engine_push_argv(ENGINE_PODMAN, &insecure, "reg/ns/image-a:b"), podman);
	assert_argv(engine_push_argv(ENGINE_BUILDAH, &verify_vfs, "reg/ns/image-a:b"), buildah);
}

static void test_rmi_argv(void **state)
{
	static const char *const docker[] = {"docker", "rmi", "reg/ns/image-a:b", NULL};
	static const char *const buildah[] = {"buildah", "--storage-driver", "vfs",
	                                      "rmi",     "reg/ns/image-a:b", NULL};
	struct engine_opts plain = {NULL, false, "/job"};
	struct engine_opts with_vfs = {vfs, false, "/job"};

	(void)state;
	assert_argv(engine_rmi_argv(ENGINE_DOCKER, &plain, "reg/ns/image-a:b"), docker);
	assert_argv(engine_rmi_argv(ENGINE_BUILDAH, &with_vfs, "reg/ns/image-a:b"), buildah);
}

static void test_auth_store(void **state)
{
	char *s;

	(void)state;
	s = engine_auth_env(ENGINE_DOCKER, "/tmp/job");
	assert_string_equal(s, "DOCKER_CONFIG=/tmp/job/docker");
	free(s);
	s = engine_auth_env(ENGINE_PODMAN, "/tmp/job");
	assert_string_equal(s, "REGISTRY_AUTH_FILE=/tmp/job/auth.json");
	free(s);
	s = engine_auth_env(ENGINE_BUILDAH, "/tmp/job");
	assert_string_equal(s, "REGISTRY_AUTH_FILE=/tmp/job/auth.json");
	free(s);
	s = engine_auth_path(ENGINE_DOCKER, "/tmp/job");
	assert_string_equal(s, "/tmp/job/docker");
	free(s);
}

static void test_build_args_parse(void **state)
{
	static const char *const want[] = {"Z=last", "A=1",    "PI=3.5", "ON=true",
	                                   "EMPTY=", "EQ=a=b", NULL};
	static const char *const none[] = {NULL};
	static const char *const bad[] = {"[1,2]",        "{\"A\":{}}",   "{\"A\":[1]}",
	                                  "{\"A\":null}", "{\"\":\"x\"}", "{\"A=B\":\"x\"}",
	                                  "{\"A\":",      "nope"};
	char **out, *err;
	size_t i;

	(void)state;
	assert_int_equal(engine_build_args_parse("{\"Z\":\"last\",\"A\":1,\"PI\":3.5,\"ON\":true,"
	                                         "\"EMPTY\":\"\",\"EQ\":\"a=b\"}",
	                                         &out, &err),
	                 0);
	assert_null(err);
	assert_argv(out, want);
	assert_int_equal(engine_build_args_parse("{}", &out, &err), 0);
	assert_argv(out, none);
	assert_int_equal(engine_build_args_parse(NULL, &out, &err), 0);
	assert_argv(out, none);
	for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		assert_int_equal(engine_build_args_parse(bad[i], &out, &err), -1);
		assert_null(out);
		assert_non_null(err);
		free(err);
	}
}

static void test_registry_url(void **state)
{
	static const struct {
		const char *url, *host, *prefix;
	} cases[] = {
	    {"registry.example.com/ns", "registry.example.com", "registry.example.com/ns"},
	    {"127.0.0.1:5000/team/sub", "127.0.0.1:5000", "127.0.0.1:5000/team/sub"},
	    {"https://reg.example.com:443/ns/", "reg.example.com:443", "reg.example.com:443/ns"},
	    {"reg.example.com", "reg.example.com", "reg.example.com"},
	};
	size_t i;

	(void)state;
	for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		char *host = engine_registry_host(cases[i].url);
		char *prefix = engine_registry_prefix(cases[i].url);

		assert_string_equal(host, cases[i].host);
		assert_string_equal(prefix, cases[i].prefix);
		free(host);
		free(prefix);
	}
}

/* A directory for stand-in executables, and a socket path inside it. */
static char detect_dir[64];

static void detect_add(const char *name)
{
	char *path = xasprintf("%s/%s", detect_dir, name);
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0755);

	assert_true(fd >= 0);
	assert_int_equal(write(fd, "#!/bin/sh\n", 10), 10);
	close(fd);
	free(path);
}

static int detect_setup(void **state)
{
	(void)state;
	strcpy(detect_dir, "/tmp/test-engine-XXXXXX");
	assert_non_null(mkdtemp(detect_dir));
	unsetenv("XDG_RUNTIME_DIR");
	return 0;
}

static int detect_teardown(void **state)
{
	static const char *const names[] = {"docker", "podman", "buildah", "docker.sock", "plain"};
	size_t i;

	(void)state;
	for (i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
		char *path = xasprintf("%s/%s", detect_dir, names[i]);

		unlink(path);
		free(path);
	}
	rmdir(detect_dir);
	unsetenv("DOCKER_HOST");
	return 0;
}

static void test_detect(void **state)
{
	enum engine_kind k = ENGINE_DOCKER;
	char *err, *host, *sock;
	struct sockaddr_un sun;
	int fd;

	(void)state;
	host = xasprintf("unix://%s/docker.sock", detect_dir);
	setenv("DOCKER_HOST", host, 1);

	/* Nothing installed: every engine named, with a way to install one. */
	assert_int_equal(engine_detect("auto", detect_dir, &k, &err), -1);
	assert_non_null(strstr(err, "docker: not found in PATH; podman: not found in PATH; "
	                            "buildah: not found in PATH"));
	assert_non_null(strstr(err, "apt-get install buildah"));
	free(err);

	/* A file that is not executable does not count. */
	sock = xasprintf("%s/plain", detect_dir);
	fd = open(sock, O_WRONLY | O_CREAT, 0644);
	close(fd);
	free(sock);
	assert_int_equal(engine_detect("auto", detect_dir, &k, &err), -1);
	free(err);

	detect_add("buildah");
	assert_int_equal(engine_detect("auto", detect_dir, &k, &err), 0);
	assert_null(err);
	assert_int_equal(k, ENGINE_BUILDAH);

	/* docker without a daemon is passed over by auto, with the reason kept. */
	detect_add("docker");
	assert_int_equal(engine_detect("auto", detect_dir, &k, &err), 0);
	assert_int_equal(k, ENGINE_BUILDAH);
	detect_add("podman");
	assert_int_equal(engine_detect("auto", detect_dir, &k, &err), 0);
	assert_int_equal(k, ENGINE_PODMAN);

	/* ... but taken when asked for by name. */
	assert_int_equal(engine_detect("docker", detect_dir, &k, &err), 0);
	assert_int_equal(k, ENGINE_DOCKER);

	/* A listening daemon socket makes auto pick docker. */
	fd = socket(AF_UNIX, SOCK_STREAM, 0);
	memset(&sun, 0, sizeof(sun));
	sun.sun_family = AF_UNIX;
	snprintf(sun.sun_path, sizeof(sun.sun_path), "%s/docker.sock", detect_dir);
	assert_int_equal(bind(fd, (struct sockaddr *)&sun, sizeof(sun)), 0);
	assert_int_equal(listen(fd, 1), 0);
	assert_int_equal(engine_detect("auto", detect_dir, &k, &err), 0);
	assert_int_equal(k, ENGINE_DOCKER);
	close(fd);
	free(host);
}

static void test_detect_by_name(void **state)
{
	enum engine_kind k;
	char *err;

	(void)state;
	detect_add("buildah");
	assert_int_equal(engine_detect("podman", detect_dir, &k, &err), -1);
	assert_non_null(strstr(err, "local engine podman: not found in PATH"));
	assert_non_null(strstr(err, "apt-get install podman"));
	free(err);
	assert_int_equal(engine_detect("docker", detect_dir, &k, &err), -1);
	assert_non_null(strstr(err, "apt-get install docker.io"));
	free(err);
	assert_int_equal(engine_detect("rkt", detect_dir, &k, &err), -1);
	assert_non_null(strstr(err, "unknown local engine 'rkt'"));
	free(err);
	assert_int_equal(engine_detect("buildah", detect_dir, &k, &err), 0);
	assert_int_equal(k, ENGINE_BUILDAH);
	/* An empty PATH element is not the current directory. */
	assert_int_equal(chdir(detect_dir), 0);
	assert_int_equal(engine_detect("buildah", ":", &k, &err), -1);
	free(err);
	assert_int_equal(chdir("/"), 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_names),
	    cmocka_unit_test(test_build_argv),
	    cmocka_unit_test(test_login_argv),
	    cmocka_unit_test(test_push_argv),
	    cmocka_unit_test(test_rmi_argv),
	    cmocka_unit_test(test_auth_store),
	    cmocka_unit_test(test_build_args_parse),
	    cmocka_unit_test(test_registry_url),
	    cmocka_unit_test_setup_teardown(test_detect, detect_setup, detect_teardown),
	    cmocka_unit_test_setup_teardown(test_detect_by_name, detect_setup, detect_teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
