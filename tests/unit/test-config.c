/*
 * Configuration layers and their checks: defaults < file < environment < flags,
 * API key sources, URL normalisation and the derived builder URL, and refusal of
 * bad values with a message naming the key, variable or flag they came from.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <grp.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "config.h"
#include "log.h"

static char tmpdir[] = "/tmp/test-config-XXXXXX";

static int setup(void **state)
{
	(void)state;
	return mkdtemp(tmpdir) == NULL ? -1 : 0;
}

static int teardown(void **state)
{
	char *cmd;
	(void)state;
	if (asprintf(&cmd, "rm -rf '%s'", tmpdir) < 0)
		return -1;
	int rc = system(cmd);
	free(cmd);
	return rc == 0 ? 0 : -1;
}

static char *write_file(const char *name, const char *text)
{
	char *path;
	FILE *fp;
	assert_true(asprintf(&path, "%s/%s", tmpdir, name) > 0);
	fp = fopen(path, "w");
	assert_non_null(fp);
	fputs(text, fp);
	fclose(fp);
	return path;
}

static char *const no_env[] = {NULL};

static void assert_err_contains(char *err, const char *needle)
{
	assert_non_null(err);
	if (strstr(err, needle) == NULL)
		fail_msg("error '%s' does not mention '%s'", err, needle);
	free(err);
}

static void test_defaults(void **state)
{
	char *const env[] = {"XDG_RUNTIME_DIR=/run/user/1234", "XDG_STATE_HOME=/home/u/.state",
	                     "XDG_CONFIG_HOME=/home/u/.cfg", "HOME=/home/u", NULL};
	char *const env_home[] = {"HOME=/home/u", NULL};
	struct config *cfg = config_new_defaults(env);
	struct config *cfg_home = config_new_defaults(env_home);
	char *err = NULL;
	(void)state;

	/* One name everywhere: the package ships /etc/snapbuild/snapbuildd.conf. */
	if (geteuid() == 0) {
		assert_string_equal(cfg->socket_path, "/run/snapbuild/snapbuild.sock");
		assert_string_equal(cfg->state_dir, "/var/lib/snapbuild");
		assert_string_equal(cfg->config_file, "/etc/snapbuild/snapbuildd.conf");
		assert_string_equal(cfg_home->config_file, "/etc/snapbuild/snapbuildd.conf");
	} else {
		assert_string_equal(cfg->socket_path, "/run/user/1234/snapbuild/snapbuild.sock");
		assert_string_equal(cfg->state_dir, "/home/u/.state/snapbuild");
		assert_string_equal(cfg->config_file, "/home/u/.cfg/snapbuild/snapbuildd.conf");
		assert_string_equal(cfg_home->config_file,
		                    "/home/u/.config/snapbuild/snapbuildd.conf");
	}
	assert_false(cfg->config_file_explicit);
	config_free(cfg_home);
	assert_int_equal(config_validate(cfg, &err), 0);
	assert_string_equal(cfg->base_url, "https://api.bartender.codesandbox.io");
	assert_string_equal(cfg->builder_url, "https://builder.codesandbox.io");
	assert_string_equal(cfg->remote_arch, "amd64");
	assert_string_equal(cfg->local_engine, "auto");
	assert_int_equal(cfg->max_concurrent, 2);
	assert_int_equal(cfg->socket_mode, 0600);
	assert_int_equal(cfg->log_level, LOG_LEVEL_INFO);
	assert_false(cfg->local_build);
	assert_null(cfg->api_key);
	assert_int_equal(config_idle_exit(cfg, false), 0);
	assert_int_equal(config_idle_exit(cfg, true), CONFIG_IDLE_EXIT_DEFAULT);
	assert_non_null(cfg->tmp_dir);
	config_free(cfg);
}

static void test_precedence(void **state)
{
	char *file = write_file("prec.conf", "# a comment\n"
	                                     "\n"
	                                     "max_concurrent = 3\n"
	                                     "base_url = https://file.example.com\n"
	                                     "remote_architecture = arm64\n"
	                                     "log_level = debug   # trailing comment\n"
	                                     "local_engine = \"podman\"\n");
	char *const env[] = {"TOGETHER_BASE_URL=https://env.example.com/",
	                     "TOGETHER_LOCAL_BUILD=yes", NULL};
	char *argv[] = {"snapbuildd", "--max-concurrent", "5", NULL};
	struct config *cfg = config_new_defaults(no_env);
	char *err = NULL;
	(void)state;

	assert_int_equal(config_read_file(cfg, file, true, &err), 0);
	assert_int_equal(cfg->max_concurrent, 3);
	assert_string_equal(cfg->base_url, "https://file.example.com");
	assert_int_equal(config_apply_env(cfg, env, &err), 0);
	assert_int_equal(config_apply_flags(cfg, 3, argv, &err), 0);
	assert_int_equal(config_validate(cfg, &err), 0);

	assert_int_equal(cfg->max_concurrent, 5);                      /* flag over file */
	assert_string_equal(cfg->base_url, "https://env.example.com"); /* env over file */
	assert_true(cfg->local_build);                                 /* env over default */
	assert_string_equal(cfg->remote_arch, "arm64");                /* file over default */
	assert_int_equal(cfg->log_level, LOG_LEVEL_DEBUG);
	assert_string_equal(cfg->local_engine, "podman");
	/* no api.bartender. prefix: the builder lives at the same URL */
	assert_string_equal(cfg->builder_url, "https://env.example.com");
	config_free(cfg);
	free(file);
}

static void test_urls(void **state)
{
	char *const env[] = {"TOGETHER_BASE_URL=http://api.bartender.localhost:8080/v1/", NULL};
	char *const env_override[] = {"TOGETHER_BASE_URL=https://api.bartender.example.org",
	                              "SNAPBUILD_BUILDER_URL=http://127.0.0.1:9/", NULL};
	struct config *cfg;
	char *err = NULL, *u;
	(void)state;

	cfg = config_new_defaults(no_env);
	assert_int_equal(config_apply_env(cfg, env, &err), 0);
	assert_int_equal(config_validate(cfg, &err), 0);
	assert_string_equal(cfg->base_url, "http://api.bartender.localhost:8080");
	assert_string_equal(cfg->builder_url, "http://builder.localhost:8080");
	config_free(cfg);

	cfg = config_new_defaults(no_env);
	assert_int_equal(config_apply_env(cfg, env_override, &err), 0);
	assert_int_equal(config_validate(cfg, &err), 0);
	assert_string_equal(cfg->builder_url, "http://127.0.0.1:9");
	config_free(cfg);

	u = config_derive_builder_url("https://api.bartender.codesandbox.io");
	assert_string_equal(u, "https://builder.codesandbox.io");
	free(u);
	u = config_derive_builder_url("https://x.api.bartender.io");
	assert_string_equal(u, "https://x.api.bartender.io");
	free(u);
}

static void test_invalid_values_name_their_key(void **state)
{
	struct config *cfg = config_new_defaults(no_env);
	char *err = NULL;
	char *const bad_arch[] = {"TOGETHER_REMOTE_ARCHITECTURE=x86", NULL};
	char *const bad_local[] = {"TOGETHER_LOCAL_BUILD=maybe", NULL};
	char *const bad_url[] = {"TOGETHER_BASE_URL=ftp://example.com", NULL};
	char *argv_bad_n[] = {"snapbuildd", "--max-concurrent", "0", NULL};
	char *argv_unknown[] = {"snapbuildd", "--frobnicate", NULL};
	char *argv_missing[] = {"snapbuildd", "--socket", NULL};
	char *argv_extra[] = {"snapbuildd", "stray", NULL};
	char *argv_engine[] = {"snapbuildd", "--local-engine=lxc", NULL};
	char *file_bad = write_file("bad.conf", "\nmax_concurrent = lots\n");
	char *file_unknown = write_file("unknown.conf", "max_concurent = 2\n");
	char *file_syntax = write_file("syntax.conf", "just words\n");
	char *file_mode = write_file("mode.conf", "socket_mode = 0999\n");
	(void)state;

	assert_int_equal(config_apply_env(cfg, bad_arch, &err), -1);
	assert_err_contains(err, "TOGETHER_REMOTE_ARCHITECTURE");
	assert_int_equal(config_apply_env(cfg, bad_local, &err), -1);
	assert_err_contains(err, "TOGETHER_LOCAL_BUILD");
	assert_int_equal(config_apply_env(cfg, bad_url, &err), -1);
	assert_err_contains(err, "TOGETHER_BASE_URL");
	assert_int_equal(config_apply_flags(cfg, 3, argv_bad_n, &err), -1);
	assert_err_contains(err, "--max-concurrent");
	assert_int_equal(config_apply_flags(cfg, 2, argv_unknown, &err), -1);
	assert_err_contains(err, "--frobnicate");
	assert_int_equal(config_apply_flags(cfg, 2, argv_missing, &err), -1);
	assert_err_contains(err, "--socket");
	assert_int_equal(config_apply_flags(cfg, 2, argv_extra, &err), -1);
	assert_err_contains(err, "stray");
	assert_int_equal(config_apply_flags(cfg, 2, argv_engine, &err), -1);
	assert_err_contains(err, "--local-engine");
	assert_int_equal(config_read_file(cfg, file_bad, true, &err), -1);
	assert_err_contains(err, ":2: max_concurrent");
	assert_int_equal(config_read_file(cfg, file_unknown, true, &err), -1);
	assert_err_contains(err, "max_concurent");
	assert_int_equal(config_read_file(cfg, file_syntax, true, &err), -1);
	assert_err_contains(err, ":1:");
	assert_int_equal(config_read_file(cfg, file_mode, true, &err), -1);
	assert_err_contains(err, "socket_mode");
	/* a missing file is fine unless it was asked for */
	assert_int_equal(config_read_file(cfg, "/nonexistent/snapbuild.conf", false, &err), 0);
	assert_int_equal(config_read_file(cfg, "/nonexistent/snapbuild.conf", true, &err), -1);
	assert_err_contains(err, "/nonexistent/snapbuild.conf");
	/* nothing above changed the values */
	assert_int_equal(cfg->max_concurrent, 2);
	assert_string_equal(cfg->remote_arch, "amd64");
	config_free(cfg);
	free(file_bad);
	free(file_unknown);
	free(file_syntax);
	free(file_mode);
}

static void test_api_key_sources(void **state)
{
	char *keyfile = write_file("key", "  sk-from-file \n");
	char *credfile = write_file("api-key", "sk-from-credentials\n");
	char *empty = write_file("empty-key", "\n");
	char *conf, *credenv, *flagarg;
	char *const env_key[] = {"TOGETHER_API_KEY=sk-from-env", NULL};
	struct config *cfg;
	char *err = NULL;
	(void)state;

	assert_true(asprintf(&conf, "api_key_file = %s\n", keyfile) > 0);
	char *conffile = write_file("key.conf", conf);
	assert_true(asprintf(&credenv, "CREDENTIALS_DIRECTORY=%s", tmpdir) > 0);
	char *const env_both[] = {"TOGETHER_API_KEY=sk-from-env", credenv, NULL};

	/* file only */
	cfg = config_new_defaults(no_env);
	assert_int_equal(config_read_file(cfg, conffile, true, &err), 0);
	assert_int_equal(config_validate(cfg, &err), 0);
	assert_string_equal(cfg->api_key, "sk-from-file");
	assert_string_equal(cfg->api_key_file, keyfile);
	config_free(cfg);

	/* the environment beats the file */
	cfg = config_new_defaults(no_env);
	assert_int_equal(config_read_file(cfg, conffile, true, &err), 0);
	assert_int_equal(config_apply_env(cfg, env_key, &err), 0);
	assert_int_equal(config_validate(cfg, &err), 0);
	assert_string_equal(cfg->api_key, "sk-from-env");
	assert_null(cfg->api_key_file);
	config_free(cfg);

	/* systemd credentials beat TOGETHER_API_KEY */
	cfg = config_new_defaults(no_env);
	assert_int_equal(config_apply_env(cfg, env_both, &err), 0);
	assert_int_equal(config_validate(cfg, &err), 0);
	assert_string_equal(cfg->api_key, "sk-from-credentials");
	config_free(cfg);

	/* a flag beats everything */
	assert_true(asprintf(&flagarg, "--api-key-file=%s", keyfile) > 0);
	char *argv[] = {"snapbuildd", flagarg, NULL};
	cfg = config_new_defaults(no_env);
	assert_int_equal(config_apply_env(cfg, env_both, &err), 0);
	assert_int_equal(config_apply_flags(cfg, 2, argv, &err), 0);
	assert_int_equal(config_validate(cfg, &err), 0);
	assert_string_equal(cfg->api_key, "sk-from-file");
	config_free(cfg);

	/* an empty key file is no key: the daemon starts without one */
	char *argv_empty[] = {"snapbuildd", "--api-key-file", empty, NULL};
	cfg = config_new_defaults(no_env);
	assert_int_equal(config_apply_flags(cfg, 3, argv_empty, &err), 0);
	assert_int_equal(config_validate(cfg, &err), 0);
	assert_null(err);
	assert_null(cfg->api_key);
	assert_string_equal(cfg->api_key_file, empty);
	config_free(cfg);

	/* a missing key file is refused, naming where it was configured */

	char *argv_missing[] = {"snapbuildd", "--api-key-file", "/nonexistent/key", NULL};
	cfg = config_new_defaults(no_env);
	assert_int_equal(config_apply_flags(cfg, 3, argv_missing, &err), 0);
	assert_int_equal(config_validate(cfg, &err), -1);
	assert_err_contains(err, "/nonexistent/key");
	config_free(cfg);

	free(keyfile);
	free(credfile);
	free(empty);
	free(conf);
	free(conffile);
	free(credenv);
	free(flagarg);
}

/*
 * The system unit's fallback for a missing /etc/snapbuild/api-key is a credential
 * holding one blank line (SetCredential=api-key:\n): that is no key, and a key from
 * elsewhere still counts; a real credential still beats them.
 */
static void test_blank_credential_is_no_key(void **state)
{
	char *credpath, *credenv, *conf, *conffile;
	char *keyfile = write_file("key-beside-blank-cred", "sk-from-file\n");
	struct config *cfg;
	char *err = NULL;
	(void)state;

	assert_true(asprintf(&credpath, "%s/blank-cred", tmpdir) > 0);
	assert_int_equal(mkdir(credpath, 0700), 0);
	free(credpath);
	credpath = write_file("blank-cred/api-key", "\n");
	assert_true(asprintf(&credenv, "CREDENTIALS_DIRECTORY=%s/blank-cred", tmpdir) > 0);
	char *const env_blank[] = {credenv, NULL};
	char *const env_blank_key[] = {credenv, "TOGETHER_API_KEY=sk-from-env", NULL};

	/* blank credential alone: validated, and no key */
	cfg = config_new_defaults(no_env);
	assert_int_equal(config_apply_env(cfg, env_blank, &err), 0);
	assert_int_equal(config_validate(cfg, &err), 0);
	assert_null(err);
	assert_null(cfg->api_key);
	assert_int_equal(cfg->key_source, CONFIG_KEY_NONE);
	config_free(cfg);

	/* a blank credential does not hide TOGETHER_API_KEY ... */
	cfg = config_new_defaults(no_env);
	assert_int_equal(config_apply_env(cfg, env_blank_key, &err), 0);
	assert_int_equal(config_validate(cfg, &err), 0);
	assert_string_equal(cfg->api_key, "sk-from-env");
	config_free(cfg);

	/* ... nor api_key_file from the configuration file */
	assert_true(asprintf(&conf, "api_key_file = %s\n", keyfile) > 0);
	conffile = write_file("key-beside-blank-cred.conf", conf);
	cfg = config_new_defaults(no_env);
	assert_int_equal(config_read_file(cfg, conffile, true, &err), 0);
	assert_int_equal(config_apply_env(cfg, env_blank, &err), 0);
	assert_int_equal(config_validate(cfg, &err), 0);
	assert_string_equal(cfg->api_key, "sk-from-file");
	config_free(cfg);

	/* white space only is blank too; a real credential is taken */
	free(write_file("blank-cred/api-key", " \t \n\n"));
	cfg = config_new_defaults(no_env);
	assert_int_equal(config_apply_env(cfg, env_blank_key, &err), 0);
	assert_int_equal(config_validate(cfg, &err), 0);
	assert_string_equal(cfg->api_key, "sk-from-env");
	config_free(cfg);
	free(write_file("blank-cred/api-key", "sk-from-credentials\n"));
	cfg = config_new_defaults(no_env);
	assert_int_equal(config_apply_env(cfg, env_blank_key, &err), 0);
	assert_int_equal(config_validate(cfg, &err), 0);
	assert_string_equal(cfg->api_key, "sk-from-credentials");
	config_free(cfg);

	free(credpath);
	free(credenv);
	free(conf);
	free(conffile);
	free(keyfile);
}

/* Unset: 300 s when socket-activated; 0 configured: never; by hand: never. */
static void test_idle_exit(void **state)
{
	char *zero = write_file("idle-zero.conf", "idle_exit_seconds = 0\n");
	char *argv[] = {"snapbuildd", "--idle-exit", "7", NULL};
	char *err = NULL;
	struct config *cfg = config_new_defaults(no_env);
	(void)state;

	assert_int_equal(CONFIG_IDLE_EXIT_DEFAULT, 300);
	assert_int_equal(config_idle_exit(cfg, true), 300);
	assert_int_equal(config_idle_exit(cfg, false), 0);
	assert_int_equal(config_read_file(cfg, zero, true, &err), 0);
	assert_int_equal(config_validate(cfg, &err), 0);
	assert_int_equal(config_idle_exit(cfg, true), 0);
	assert_int_equal(config_idle_exit(cfg, false), 0);
	assert_int_equal(config_apply_flags(cfg, 3, argv, &err), 0);
	assert_int_equal(config_idle_exit(cfg, true), 7);
	assert_int_equal(config_idle_exit(cfg, false), 0);
	config_free(cfg);

	cfg = config_new_defaults(no_env);
	/* no negative values */
	assert_int_equal(config_set(cfg, "idle_exit_seconds", "-1", "idle_exit_seconds", &err), -1);
	assert_err_contains(err, "from 0");
	config_free(cfg);
	free(zero);
}

static void test_socket_group_mode(void **state)
{
	struct group *gr = getgrgid(getegid());
	struct config *cfg;
	char *err = NULL;
	(void)state;

	assert_non_null(gr);
	cfg = config_new_defaults(no_env);
	assert_int_equal(config_set(cfg, "socket_group", gr->gr_name, "test", &err), 0);
	assert_int_equal(config_validate(cfg, &err), 0);
	assert_int_equal(cfg->socket_mode, 0660);
	config_free(cfg);

	/* an explicit mode stays */
	cfg = config_new_defaults(no_env);
	assert_int_equal(config_set(cfg, "socket_mode", "0600", "test", &err), 0);
	assert_int_equal(config_set(cfg, "socket_group", gr->gr_name, "test", &err), 0);
	assert_int_equal(config_validate(cfg, &err), 0);
	assert_int_equal(cfg->socket_mode, 0600);
	config_free(cfg);

	cfg = config_new_defaults(no_env);
	assert_int_equal(config_set(cfg, "admin_group", "no-such-group-here", "test", &err), 0);
	assert_int_equal(config_validate(cfg, &err), -1);
	assert_err_contains(err, "admin_group");
	config_free(cfg);
}

static void test_socket_path_length(void **state)
{
	char longpath[200];
	struct config *cfg = config_new_defaults(no_env);
	char *err = NULL;
	(void)state;

	memset(longpath, 'a', sizeof(longpath) - 1);
	longpath[0] = '/';
	longpath[sizeof(longpath) - 1] = '\0';
	assert_int_equal(config_set(cfg, "socket", longpath, "--socket", &err), -1);
	assert_err_contains(err, "--socket");
	/* relative paths are made absolute */
	assert_int_equal(config_set(cfg, "state_dir", "rel/state", "--state-dir", &err), 0);
	assert_true(cfg->state_dir[0] == '/');
	config_free(cfg);
}

static void test_ca_file_and_proxy(void **state)
{
	char *pem = write_file("ca.pem", "# a private CA\n-----BEGIN CERTIFICATE-----\nMIIB\n"
	                                 "-----END CERTIFICATE-----\n");
	char *junk = write_file("junk.pem", "not a certificate\n");
	char *file, *text;
	char *argv[] = {"snapbuildd", "--proxy",          "proxy.corp:3128",
	                "--no-proxy", ".corp,10.0.0.0/8", NULL};
	struct config *cfg = config_new_defaults(no_env);
	char *err = NULL;
	(void)state;

	assert_true(
	    asprintf(&text, "ca_file = %s\nproxy = http://user:pw@proxy.example:8080\n", pem) > 0);
	file = write_file("tls.conf", text);
	free(text);
	assert_int_equal(config_read_file(cfg, file, true, &err), 0);
	assert_string_equal(cfg->ca_file, pem);
	assert_string_equal(cfg->proxy, "http://user:pw@proxy.example:8080");
	assert_null(cfg->no_proxy);
	/* flags win; a proxy without a scheme is an http:// one, as for curl */
	assert_int_equal(config_apply_flags(cfg, 5, argv, &err), 0);
	assert_string_equal(cfg->proxy, "http://proxy.corp:3128");
	assert_string_equal(cfg->no_proxy, ".corp,10.0.0.0/8");
	assert_int_equal(config_validate(cfg, &err), 0);

	/* a file that holds no certificate is refused when the configuration is checked */
	assert_int_equal(config_set(cfg, "ca_file", junk, "f:3: ca_file", &err), 0);
	assert_int_equal(config_validate(cfg, &err), -1);
	assert_err_contains(err, "no PEM certificate");
	assert_int_equal(config_set(cfg, "ca_file", "/nonexistent/ca.pem", "--ca-file", &err), 0);
	assert_int_equal(config_validate(cfg, &err), -1);
	assert_err_contains(err, "/nonexistent/ca.pem");
	assert_int_equal(config_set(cfg, "ca_file", "", "f:4: ca_file", &err), 0);
	assert_null(cfg->ca_file);
	assert_int_equal(config_validate(cfg, &err), 0);

	assert_int_equal(config_set(cfg, "proxy", "ftp://proxy:21", "f:5: proxy", &err), -1);
	assert_err_contains(err, "f:5: proxy");
	assert_int_equal(config_set(cfg, "proxy", "http://", "--proxy", &err), -1);
	assert_err_contains(err, "--proxy");
	assert_int_equal(config_set(cfg, "proxy", "socks5h://127.0.0.1:1080", "p", &err), 0);
	assert_string_equal(cfg->proxy, "socks5h://127.0.0.1:1080");
	assert_int_equal(config_set(cfg, "proxy", "", "p", &err), 0);
	assert_null(cfg->proxy);
	config_free(cfg);
	free(pem);
	free(junk);
	free(file);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_defaults),
	    cmocka_unit_test(test_precedence),
	    cmocka_unit_test(test_urls),
	    cmocka_unit_test(test_invalid_values_name_their_key),
	    cmocka_unit_test(test_api_key_sources),
	    cmocka_unit_test(test_blank_credential_is_no_key),
	    cmocka_unit_test(test_idle_exit),
	    cmocka_unit_test(test_socket_group_mode),
	    cmocka_unit_test(test_socket_path_length),
	    cmocka_unit_test(test_ca_file_and_proxy),
	};
	return cmocka_run_group_tests(tests, setup, teardown);
}
