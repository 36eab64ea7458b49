"""The CLI as together-sandbox and docker users expect it: --dockerfile from the current
directory (outside the context too, with its own .dockerignore), failed builds that name
their job, a prune that keeps recent history, the SDKs' environment variables, service
errors that say what was asked where, job id prefixes, one-line option errors with a
suggestion, and followers that survive a daemon restart.

Each test runs the real CLI against a real daemon and the simulator (its introspection
shows what the builder received); a pseudo-terminal where the terminal matters.
"""
import errno
import json
import os
import pty
import re
import select
import signal
import subprocess
import tempfile
import time
import unittest

from harness import CLI, Daemon, clean_env, wait_for
from simharness import API_KEY, Sim, submit_ok, wait_job, write_tree

EXIT_USAGE = 2
RED_CROSS = "\x1b[31m✖\x1b[0m"


def run_in_pty(args, env, cwd=None, answer=None, timeout=60):
    """The CLI on a pseudo-terminal (stdin, stdout and stderr); answer is typed once the
    CLI has asked a question (its output ends with "] ").  Returns (rc, output)."""
    master, slave = pty.openpty()
    p = subprocess.Popen([CLI] + args, env=env, cwd=cwd, stdin=slave, stdout=slave,
                         stderr=slave, close_fds=True)
    os.close(slave)
    out = bytearray()
    deadline = time.monotonic() + timeout
    answered = False
    while time.monotonic() < deadline:
        ready, _, _ = select.select([master], [], [], 0.1)
        if ready:
            try:
                chunk = os.read(master, 65536)
            except OSError as e:
                if e.errno != errno.EIO:
                    raise
                break
            if not chunk:
                break
            out += chunk
            if answer is not None and not answered and out.rstrip(b" ").endswith(b"]"):
                os.write(master, answer.encode())
                answered = True
        elif p.poll() is not None and not select.select([master], [], [], 0.1)[0]:
            break
    os.close(master)
    rc = p.wait(10)
    return rc, bytes(out).replace(b"\r\n", b"\n").decode(errors="replace")


class WithSim(unittest.TestCase):
    """A simulator and a daemon on it, one per class."""

    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.mkdtemp(prefix="sbhab-")
        cls.sim = Sim()
        cls.d = cls.sim.daemon(config="reuse_max_age = 0\n")

    @classmethod
    def tearDownClass(cls):
        cls.d.stop()
        cls.sim.stop()
        subprocess.run(["rm", "-rf", cls.tmp])

    def env(self, **extra):
        e = clean_env(SNAPBUILD_SOCKET=self.d.socket)
        e.pop("NO_COLOR", None)
        e.update(extra)
        return e

    def cli(self, *args, cwd=None, env=None):
        return subprocess.run([CLI] + list(args), cwd=cwd, env=env or self.env(),
                              capture_output=True, text=True, timeout=120,
                              stdin=subprocess.DEVNULL)

    def tree(self, files):
        root = tempfile.mkdtemp(dir=self.tmp)
        write_tree(root, files)
        return root

    def build_of(self, job):
        return self.sim.build(job["build_id"])

    def job_of_detached(self, r):
        self.assertEqual(r.returncode, 0, r.stderr)
        return wait_job(self.d, r.stdout.strip())


class Dockerfile(WithSim):
    def test_dockerfile_from_the_current_directory_inside_the_context(self):
        root = self.tree({"app/Dockerfile": b"FROM a\n", "app/Dockerfile.prod": b"FROM prod\n",
                          "app/x.txt": b"x"})
        r = self.cli("create", "--context", "./app", "--dockerfile", "./app/Dockerfile.prod",
                     "--detach", cwd=root)
        job = self.job_of_detached(r)
        self.assertEqual(job["state"], "succeeded", job)
        self.assertEqual(job["dockerfile"], "Dockerfile.prod")
        b = self.build_of(job)
        self.assertEqual(b["dockerfile"], "Dockerfile.prod")
        self.assertEqual(b["dockerfile_text"], "FROM prod\n")
        # -f, and an absolute path, say the same.
        r = self.cli("create", "-c", "app", "-f", os.path.join(root, "app/Dockerfile.prod"),
                     "-d", cwd=root)
        self.assertEqual(self.job_of_detached(r)["dockerfile"], "Dockerfile.prod")

    def test_a_path_only_the_context_has_is_still_taken_from_there(self):
        root = self.tree({"app/Dockerfile.dev": b"FROM dev\n"})
        r = self.cli("create", "--context", "app", "--dockerfile", "Dockerfile.dev", "-d",
                     cwd=root)
        job = self.job_of_detached(r)
        self.assertEqual(self.build_of(job)["dockerfile_text"], "FROM dev\n")

    def test_dockerfile_outside_the_context_is_sent_under_a_generated_name(self):
        root = self.tree({"app/Dockerfile": b"FROM inside\n", "app/keep.txt": b"k",
                          "app/secret.key": b"s", "app/.dockerignore": b"keep.txt\n",
                          "docker/Dockerfile.prod": b"FROM outside\nCOPY . /app\n",
                          "docker/Dockerfile.prod.dockerignore": b"secret.key\n"})
        r = self.cli("create", "--context", "app", "-f", "docker/Dockerfile.prod", "-d",
                     cwd=root)
        job = self.job_of_detached(r)
        self.assertEqual(job["state"], "succeeded", job)
        b = self.build_of(job)
        name = b["dockerfile"]
        self.assertRegex(name, r"^\.dockerfile\.[0-9a-f]{20}$")
        self.assertEqual(job["dockerfile"], name)
        self.assertEqual(b["dockerfile_text"], "FROM outside\nCOPY . /app\n")
        paths = sorted(f["path"] for f in b["files"])
        # The Dockerfile's own ignore file wins over the context's, as in docker.
        self.assertEqual(paths, sorted(["./" + name, "./.dockerignore", "./Dockerfile",
                                        "./keep.txt"]))
        # `context` shows what create sends, and names the member.
        r = self.cli("-o", "json", "context", "app", "-f", "docker/Dockerfile.prod", "--files",
                     cwd=root)
        shown = json.loads(r.stdout)
        self.assertEqual(shown["dockerfile"], name)
        self.assertEqual(sorted(f["path"] for f in shown["files"]), paths)
        # The same Dockerfile, the same name: the archive stays reproducible.
        r2 = self.cli("create", "--context", "app", "-f", "docker/Dockerfile.prod", "-d",
                      cwd=root)
        job2 = self.job_of_detached(r2)
        self.assertEqual(self.build_of(job2)["dockerfile"], name)
        self.assertEqual(job2["archive"]["sha256"], job["archive"]["sha256"])

    def test_outside_dockerfile_without_its_own_ignore_file_uses_the_contexts(self):
        root = self.tree({"app/a": b"a", "app/b": b"b", "app/.dockerignore": b"b\n",
                          "Dockerfile.ci": b"FROM ci\n"})
        r = self.cli("create", "--context", "app", "-f", "Dockerfile.ci", "-d", cwd=root)
        b = self.build_of(self.job_of_detached(r))
        self.assertEqual(sorted(f["path"] for f in b["files"]),
                         sorted(["./" + b["dockerfile"], "./.dockerignore", "./a"]))

    def test_missing_dockerfile_says_where_it_looked(self):
        root = self.tree({"app/Dockerfile": b"FROM a\n"})
        r = self.cli("create", "--context", "app", "-f", "nope/Dockerfile", cwd=root)
        self.assertEqual(r.returncode, 1, r.stderr)
        self.assertIn("Dockerfile nope/Dockerfile", r.stderr)
        self.assertIn("from the current directory", r.stderr)


class FailedBuild(WithSim):
    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.ctx = os.path.join(cls.tmp, "failing")
        write_tree(cls.ctx, {"Dockerfile": b"FROM debian:12\nRUN false\n"})

    def check_names_the_job(self, text, rc):
        self.assertEqual(rc, 1, text)
        m = re.search(r"✖(?:\x1b\[0m)? Build failed \(job ([0-9a-f-]{12})\): (.*)\n", text)
        self.assertIsNotNone(m, text)
        short, error = m.group(1), m.group(2)
        self.assertIn("snapbuild logs " + short + "\n", text)
        job = self.d.call("build.get", {"id": short})
        self.assertEqual(job["state"], "failed")
        self.assertTrue(job["id"].startswith(short))
        self.assertEqual(error, job["error"])
        # The CLI shows the error once (the builder's own log line aside).
        self.assertEqual(text.count(job["error"]), 1, text)
        self.assertNotIn("read the build log above", text)
        return job

    def test_in_a_pipe(self):
        r = self.cli("create", "--context", self.ctx)
        self.assertEqual(r.stdout, "")
        self.check_names_the_job(r.stderr, r.returncode)

    def test_with_ci(self):
        rc, out = run_in_pty(["create", "--context", self.ctx, "--ci"], self.env())
        self.check_names_the_job(out, rc)
        self.assertNotIn(RED_CROSS, out)

    def test_quiet(self):
        r = self.cli("create", "--context", self.ctx, "-q")
        self.assertEqual(r.stdout, "")
        self.assertNotIn("==>", r.stderr)
        self.check_names_the_job(r.stderr, r.returncode)

    def test_on_a_colour_terminal_the_cross_is_red(self):
        rc, out = run_in_pty(["create", "--context", self.ctx], self.env())
        self.check_names_the_job(out, rc)
        self.assertIn(RED_CROSS + " Build failed (job ", out)
        rc, out = run_in_pty(["create", "--context", self.ctx], self.env(NO_COLOR="1"))
        self.check_names_the_job(out, rc)
        self.assertNotIn("\x1b[31m", out)

    def test_inspect_points_at_the_log_command(self):
        r = self.cli("create", "--context", self.ctx, "-d")
        job = wait_job(self.d, r.stdout.strip())
        r = self.cli("inspect", job["id"])
        self.assertIn("snapbuild logs " + job["id"], r.stdout)
        self.assertNotIn("above", r.stdout)


class Prune(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.mkdtemp(prefix="sbprune-")
        self.sim = Sim()
        self.d = self.sim.daemon(config="reuse_max_age = 0\n")
        self.ctx = os.path.join(self.tmp, "ctx")
        write_tree(self.ctx, {"Dockerfile": b"FROM a\n"})
        for _ in range(2):
            wait_job(self.d, submit_ok(self.d, self.ctx)["id"])

    def tearDown(self):
        self.d.stop()
        self.sim.stop()
        subprocess.run(["rm", "-rf", self.tmp])

    def jobs(self):
        return len(self.d.call("build.list")["jobs"])

    def test_bare_prune_keeps_the_last_week(self):
        r = self.d.cli("prune")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(r.stdout, "deleted 0 jobs finished more than 7 days ago\n")
        self.assertEqual(self.jobs(), 2)
        r = self.d.cli("prune", "--older-than", "0s")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(r.stdout, "deleted 2 jobs\n")
        self.assertEqual(self.jobs(), 0)

    def test_all_asks_on_a_terminal(self):
        env = clean_env(SNAPBUILD_SOCKET=self.d.socket)
        rc, out = run_in_pty(["prune", "--all"], env, answer="n\n")
        self.assertEqual(rc, 1, out)
        self.assertIn("[y/N]", out)
        self.assertIn("nothing deleted", out)
        self.assertEqual(self.jobs(), 2)
        rc, out = run_in_pty(["prune", "--all"], env, answer="y\n")
        self.assertEqual(rc, 0, out)
        self.assertIn("deleted 2 jobs", out)
        self.assertEqual(self.jobs(), 0)

    def test_all_with_force_does_not_ask(self):
        env = clean_env(SNAPBUILD_SOCKET=self.d.socket)
        rc, out = run_in_pty(["prune", "--all", "--force"], env)
        self.assertEqual(rc, 0, out)
        self.assertNotIn("[y/N]", out)
        self.assertIn("deleted 2 jobs", out)

    def test_all_and_older_than_together_is_a_usage_error(self):
        r = self.d.cli("prune", "--all", "--older-than", "1d")
        self.assertEqual(r.returncode, EXIT_USAGE, r.stderr)
        self.assertEqual(self.jobs(), 2)


class Environment(WithSim):
    def test_remote_architecture_from_the_callers_environment(self):
        ctx = self.tree({"Dockerfile": b"FROM a\n"})
        r = self.cli("create", "-c", ctx, "-d",
                     env=self.env(TOGETHER_REMOTE_ARCHITECTURE="arm64"))
        self.assertEqual(self.job_of_detached(r)["architecture"], "arm64")
        # A flag wins over the variable.
        r = self.cli("create", "-c", ctx, "-d", "--arch", "amd64",
                     env=self.env(TOGETHER_REMOTE_ARCHITECTURE="arm64"))
        self.assertEqual(self.job_of_detached(r)["architecture"], "amd64")
        r = self.cli("create", "-c", ctx, env=self.env(TOGETHER_REMOTE_ARCHITECTURE="sparc"))
        self.assertEqual(r.returncode, EXIT_USAGE, r.stderr)
        self.assertIn("TOGETHER_REMOTE_ARCHITECTURE", r.stderr)

    def test_local_build_from_the_callers_environment(self):
        ctx = self.tree({"Dockerfile": b"FROM a\n"})
        # This daemon does not build locally: the refusal shows the request was local.
        r = self.cli("create", "-c", ctx, "-d", env=self.env(TOGETHER_LOCAL_BUILD="1"))
        self.assertEqual(r.returncode, 1, r.stderr)
        self.assertIn("local", r.stderr)
        r = self.cli("create", "-c", ctx, "-d", "--remote",
                     env=self.env(TOGETHER_LOCAL_BUILD="1"))
        self.assertEqual(self.job_of_detached(r)["backend"], "remote")
        r = self.cli("create", "-c", ctx, "-d", env=self.env(TOGETHER_LOCAL_BUILD="0"))
        self.assertEqual(self.job_of_detached(r)["backend"], "remote")

    def test_help_says_so(self):
        r = self.cli("create", "--help")
        self.assertIn("TOGETHER_LOCAL_BUILD=1", r.stdout)
        self.assertIn("TOGETHER_REMOTE_ARCHITECTURE", r.stdout)

    def test_build_arg_without_a_value_comes_from_the_environment(self):
        ctx = self.tree({"Dockerfile": b"FROM a\nARG FOO\n"})
        r = self.cli("create", "-c", ctx, "-d", "--build-arg", "FOO", "--build-arg", "UNSET",
                     "--build-arg", "BAR=2", env=self.env(FOO="from env"))
        b = self.build_of(self.job_of_detached(r))
        self.assertEqual(json.loads(b["build_args"]), {"FOO": "from env", "BAR": "2"})


class ServiceErrors(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.mkdtemp(prefix="sbsvc-")
        self.sim = Sim()
        self.ctx = os.path.join(self.tmp, "ctx")
        write_tree(self.ctx, {"Dockerfile": b"FROM a\n"})

    def tearDown(self):
        self.sim.stop()
        subprocess.run(["rm", "-rf", self.tmp])

    def test_a_wrong_key_names_401_and_the_daemons_key(self):
        with self.sim.daemon(config="reuse_max_age = 0\n",
                             env={"TOGETHER_API_KEY": "sk-wrong"}) as d:
            host = self.sim.addr
            r = d.cli("create", "--context", self.ctx,
                      env=clean_env(TOGETHER_API_KEY=API_KEY))
            self.assertEqual(r.returncode, 1, r.stderr)
            self.assertIn("HTTP 401 from %s/builds" % host, r.stderr)
            self.assertIn("the daemon's API key was refused", r.stderr)
            self.assertIn("not your shell's", r.stderr)
            r = d.cli("snapshots", "list")
            self.assertEqual(r.returncode, 1, r.stderr)
            self.assertIn("HTTP 401 from %s/v1/snapshots" % host, r.stderr)

    def test_a_wrong_base_url_names_the_path_tried(self):
        with self.sim.daemon(config="reuse_max_age = 0\n",
                             env={"TOGETHER_BASE_URL": self.sim.url + "/wrong"}) as d:
            r = d.cli("snapshots", "get", "@app")
            self.assertEqual(r.returncode, 1, r.stderr)
            self.assertIn("HTTP 404 from %s/wrong/v1/snapshots/" % self.sim.addr, r.stderr)
            self.assertIn("base_url", r.stderr)
            self.assertIn("snapbuild daemon info", r.stderr)


class JobIds(WithSim):
    def test_prefixes(self):
        job = wait_job(self.d, submit_ok(self.d, self.tree({"Dockerfile": b"FROM a\n"}))["id"])
        r = self.cli("inspect", job["id"][:4])
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn(job["id"], r.stdout)
        r = self.cli("inspect", job["id"][:3])
        self.assertEqual(r.returncode, 1, r.stderr)
        self.assertIn("at least 4 characters", r.stderr)


class OptionErrors(unittest.TestCase):
    """No daemon: a usage error never connects (a socket nobody listens on: exit 3)."""

    def cli(self, *args):
        return subprocess.run([CLI, "--socket", "/nonexistent/s.sock"] + list(args),
                              env=clean_env(), capture_output=True, text=True, timeout=30)

    def check(self, args, want):
        r = self.cli(*args)
        self.assertEqual(r.returncode, EXIT_USAGE, (args, r.stderr))
        self.assertEqual(r.stdout, "")
        self.assertEqual(r.stderr.count("\n"), 1, (args, r.stderr))
        self.assertIn(want, r.stderr)

    def test_typos_get_one_line_and_a_suggestion(self):
        cases = [
            (["create", "--contxt", "app"], "unknown option '--contxt'; did you mean '--context'?"),
            (["create", "--dockerfiel=x"], "did you mean '--dockerfile'?"),
            (["create", "--ttl"], "--ttl needs a value"),
            (["create", "-x"], "unknown option '-x'"),
            (["create", "--detach=yes"], "--detach takes no value"),
            (["jobs", "--sate", "failed"], "did you mean '--state'?"),
            (["logs", "--folow", "abcd"], "did you mean '--follow'?"),
            (["prune", "--older-tan", "1d"], "did you mean '--older-than'?"),
            (["inspect", "--outptu", "json", "abcd"], "did you mean '--output'?"),
            (["snapshots", "list", "--limt", "2"], "did you mean '--limit'?"),
            (["context", "--fils", "."], "did you mean '--files'?"),
        ]
        for args, want in cases:
            with self.subTest(args=args):
                self.check(args, want)

    def test_bad_values_say_what_is_wanted(self):
        self.check(["snapshots", "list", "--limit", "500"], "--limit takes 1 to 100")
        self.check(["jobs", "--limit", "many"], "--limit takes")
        self.check(["create", "--arch", "x86"], "--arch takes amd64 or arm64")
        self.check(["create", "--progress", "fancy"], "--progress takes auto, tty, plain")
        self.check(["create", "--image", "py:3", "--cache-key", "k"],
                   "--cache-key needs a context")

    def test_a_parameter_the_daemon_refuses_is_a_usage_error_too(self):
        with Sim() as sim, sim.daemon(config="reuse_max_age = 0\n") as d:
            ctx = os.path.join(d.tmp, "ctx")
            write_tree(ctx, {"Dockerfile": b"FROM a\n"})
            r = d.cli("create", "--context", ctx, "--alias", "two words")
            self.assertEqual(r.returncode, EXIT_USAGE, r.stderr)
            self.assertIn("'alias'", r.stderr)
            r = d.cli("jobs", "--state", "bogus")
            self.assertEqual(r.returncode, EXIT_USAGE, r.stderr)

    def test_t_is_not_the_ttl(self):
        r = self.cli("create", "--help")
        self.assertIn("-a, -t, --alias ALIAS", r.stdout)
        self.assertNotRegex(r.stdout, r"-t, --ttl")


class Snapshots(WithSim):
    def test_snapshots_create_is_create(self):
        ctx = self.tree({"Dockerfile": b"FROM a\n"})
        r = self.cli("snapshots", "create", "--context", ctx, "-t", "app@v1")
        self.assertEqual(r.returncode, 0, r.stderr)
        sid = r.stdout.strip()
        job = self.d.call("build.list")["jobs"][0]
        self.assertEqual((job["snapshot_id"], job["alias"]), (sid, "app@v1"))
        r = self.cli("snapshots", "create", "--help")
        self.assertIn("--dockerfile", r.stdout)

    def test_list_one_page_and_ci(self):
        ctx = self.tree({"Dockerfile": b"FROM a\n"})
        for _ in range(3):
            wait_job(self.d, submit_ok(self.d, ctx, tags={"k": "v"})["id"])
        env = self.env(PAGER="sed 's/^/PAGED:/'")
        # --limit on a terminal: that page, no pager, and the hint repeats the filters.
        rc, out = run_in_pty(["snapshots", "list", "--limit", "2", "--tag", "k=v"], env)
        self.assertEqual(rc, 0, out)
        self.assertNotIn("PAGED:", out)
        self.assertEqual(len([l for l in out.splitlines() if re.match(r"[0-9a-f]{8}-", l)]), 2)
        self.assertRegex(out, r"more: snapbuild snapshots list --limit 2 --tag k=v --cursor \S+")
        rc, out = run_in_pty(["snapshots", "list", "--ci"], env)
        self.assertEqual(rc, 0, out)
        self.assertNotIn("PAGED:", out)
        self.assertIn("ID ", out)

    def test_get_shows_every_alias(self):
        ctx = self.tree({"Dockerfile": b"FROM a\n"})
        job = wait_job(self.d, submit_ok(self.d, ctx, alias="web@prod")["id"])
        self.assertEqual(self.cli("snapshots", "alias", job["snapshot_id"], "web@v7").returncode,
                         0)
        for ref in (job["snapshot_id"], "@web@v7"):
            r = self.cli("snapshots", "get", ref)
            self.assertEqual(r.returncode, 0, r.stderr)
            line = re.search(r"(?m)^  aliases:\s+(.*)$", r.stdout).group(1)
            self.assertEqual(sorted(line.split(", ")), ["web@prod", "web@v7"])
        aliases = self.d.call("snapshot.aliases", {"id": job["snapshot_id"]})
        self.assertEqual(sorted(a["alias"] for a in aliases), ["web@prod", "web@v7"])
        with self.d.conn() as c:
            err = c.call("snapshot.aliases", {"id": "@web@v7"})["error"]
        self.assertEqual(err["code"], -32602)

    def test_cache_key_needs_a_context(self):
        before = len(self.sim.builds())
        r = self.cli("create", "--image", "python:3.12", "--cache-key", "k")
        self.assertEqual(r.returncode, EXIT_USAGE, r.stderr)
        self.assertIn("--cache-key needs a context", r.stderr)
        self.assertEqual(len(self.sim.builds()), before)


class Output(WithSim):
    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        ctx = os.path.join(cls.tmp, "ctx")
        write_tree(ctx, {"Dockerfile": b"FROM a\n"})
        cls.job = wait_job(cls.d, submit_ok(cls.d, ctx, alias="a-rather-long-alias-name@v1",
                                            build_args={"VERSION": "1.2"})["id"])

    def test_jobs_fit_100_columns_with_short_ids(self):
        rc, out = run_in_pty(["jobs"], self.env(COLUMNS="100"))
        self.assertEqual(rc, 0, out)
        lines = [l for l in out.splitlines() if l]
        self.assertTrue(all(len(l) <= 100 for l in lines), lines)
        self.assertTrue(lines[1].startswith(self.job["id"][:12] + " "), lines)
        self.assertIn(self.job["snapshot_id"][:12] + " ", lines[1])
        self.assertNotIn(self.job["id"], out)

    def test_inspect_shows_history_and_build_args(self):
        r = self.cli("inspect", self.job["id"])
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn("  build args:   VERSION=1.2\n", r.stdout)
        history = re.findall(r"(?m)^    (\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3})  \+(\S+)\s+(\w+)$",
                             r.stdout)
        states = [h[2] for h in history]
        self.assertEqual(states, ["queued", "uploading", "building", "registering", "aliasing",
                                  "succeeded"])
        self.assertEqual(history[0][1], "0.0s")

    def test_times_are_rfc3339_in_jobs_and_events(self):
        rfc3339 = r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$"
        job = json.loads(self.cli("inspect", "-o", "json", self.job["id"]).stdout)
        for key in ("created_at", "updated_at", "finished_at"):
            self.assertRegex(job[key], rfc3339)
        r = self.cli("logs", "-o", "json", self.job["id"])
        for line in r.stdout.splitlines():
            self.assertRegex(json.loads(line)["time"], rfc3339)
        listed = json.loads(self.cli("jobs", "-o", "json").stdout)["jobs"][0]
        self.assertRegex(listed["created_at"], rfc3339)

    def test_empty_objects_on_one_line(self):
        r = self.cli("inspect", "-o", "json", self.job["id"])
        self.assertIn('"tags": {}', r.stdout)
        self.assertNotRegex(r.stdout, r"\{\s*\n\s*\}")

    def test_progress_modes(self):
        ctx = self.tree({"Dockerfile": b"FROM a\n"})
        rc, out = run_in_pty(["create", "-c", ctx, "--progress", "plain"], self.env())
        self.assertEqual(rc, 0, out)
        self.assertNotIn("\x1b[", out)
        self.assertIn("==> succeeded", out)
        rc, out = run_in_pty(["create", "-c", ctx, "-q"], self.env())
        self.assertEqual(rc, 0, out)
        self.assertRegex(out, r"^[0-9a-f-]{36}\n$")
        rc, out = run_in_pty(["create", "-c", ctx], self.env())
        self.assertEqual(rc, 0, out)
        self.assertIn("packed %s: 1 file, " % ctx, out)
        self.assertRegex(out, r"context \S+: 1 file, \d+ B → \d+ B gzip'd")
        self.assertNotIn("-/s", out)
        self.assertIn("✔", out)


class DocsAgree(unittest.TestCase):
    """--help, the man page, the README and the completion say the same thing."""
    ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..")

    def read(self, *path):
        with open(os.path.join(self.ROOT, *path)) as f:
            return f.read()

    def help(self, *args):
        r = subprocess.run([CLI, "--socket", "/nonexistent/s.sock"] + list(args),
                           env=clean_env(), capture_output=True, text=True, timeout=30)
        self.assertEqual(r.returncode, 0, r.stderr)
        return r.stdout

    def test_create_options(self):
        man = self.read("packaging", "man", "snapbuild.1.scd")
        man_create = man[man.index("*create* [_OPTIONS_]"):man.index("*jobs* [")]
        readme = self.read("README.md")
        completion = self.read("packaging", "completion", "snapbuild.bash")
        options = set(re.findall(r"(?m)^\s+(?:-\w, )*(?:-\w, )?(--[a-z-]+)", self.help("create", "--help")))
        self.assertIn("--progress", options)
        for option in options - {"--help", "--output"}:
            with self.subTest(option=option):
                self.assertIn("*" + option + "*", man_create)
                self.assertIn(option, completion)
        for option in ("--progress", "--dockerfile", "--build-arg K[=V]", "-q", "-t"):
            self.assertIn(option, readme)

    def test_prune_default(self):
        self.assertIn("(default: 7d)", self.help("prune", "--help"))
        self.assertIn("more than 7 days ago", self.read("packaging", "man", "snapbuild.1.scd"))
        self.assertIn("delete jobs finished more than 7 days ago", self.read("README.md"))

    def test_help_for_a_together_sandbox_user(self):
        text = self.help("help")
        for words in ("together-sandbox snapshots create", "TOGETHER_LOCAL_BUILD=1",
                      "TOGETHER_REMOTE_ARCHITECTURE", "snapbuild create --context ./app",
                      "options\nand their defaults"):
            self.assertIn(words, text)


class FollowAcrossARestart(unittest.TestCase):
    def test_logs_f_create_and_wait_go_on_after_a_restart(self):
        tmp = tempfile.mkdtemp(prefix="sbfollow-")
        self.addCleanup(subprocess.run, ["rm", "-rf", tmp])
        ctx = os.path.join(tmp, "ctx")
        write_tree(ctx, {"Dockerfile": b"FROM a\nRUN echo one\nRUN echo two\n"})
        with Sim() as sim:
            sim.faults(hold="end")
            dtmp = os.path.join(tmp, "d")
            os.mkdir(dtmp)
            where = dict(tmp=dtmp, socket_path=os.path.join(dtmp, "s.sock"),
                         state_dir=os.path.join(dtmp, "state"))
            d = sim.daemon(config="reuse_max_age = 0\n", **where)
            env = clean_env(SNAPBUILD_SOCKET=d.socket)
            job = submit_ok(d, ctx)
            logs = subprocess.Popen([CLI, "-o", "json", "logs", "-f", job["id"]], env=env,
                                    stdout=subprocess.PIPE, stderr=subprocess.PIPE)
            create = subprocess.Popen([CLI, "create", "--context", ctx, "--ci"], env=env,
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE)
            waiter = subprocess.Popen([CLI, "wait", job["id"]], env=env,
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE)

            def held():
                bs = sim.builds()
                return len(bs) == 2 and all(b["held"] for b in bs) and bs
            builds = wait_for(held, 60, "both builds to be held at their end")

            def connected():
                # The daemon's side of each client's connection carries the socket's
                # path: the listener and the three followers.
                with open("/proc/net/unix") as f:
                    return sum(line.rstrip().endswith(" " + d.socket) for line in f) >= 4
            wait_for(connected, 60, "logs -f, create and wait to be connected")
            d.stop()
            d = sim.daemon(config="reuse_max_age = 0\n", **where)
            try:
                for b in builds:
                    sim.release(b["id"])
                out, err = logs.communicate(timeout=120)
                cout, cerr = create.communicate(timeout=120)
                wout, werr = waiter.communicate(timeout=120)
            finally:
                d.stop()
        self.assertEqual(logs.returncode, 0, err)
        self.assertIn(b"reconnecting", err)
        seqs = [json.loads(line)["seq"] for line in out.splitlines()]
        self.assertEqual(seqs, list(range(1, len(seqs) + 1)), "a gap or a duplicate")
        events = [json.loads(line) for line in out.splitlines()]
        self.assertEqual(events[-1]["text"], "succeeded")
        self.assertEqual(create.returncode, 0, cerr)
        self.assertIn(b"reconnected", cerr)
        self.assertRegex(cout.decode(), r"^[0-9a-f-]{36}\n$")
        self.assertEqual(cerr.count(b"==> succeeded"), 1, cerr)
        self.assertEqual(waiter.returncode, 0, werr)
        self.assertIn(b"lost the daemon", werr)
        self.assertRegex(wout.decode(), r"^%s succeeded [0-9a-f-]{36}\n$" % job["id"])

    def test_a_daemon_that_does_not_come_back(self):
        tmp = tempfile.mkdtemp(prefix="sbgone-")
        self.addCleanup(subprocess.run, ["rm", "-rf", tmp])
        ctx = os.path.join(tmp, "ctx")
        write_tree(ctx, {"Dockerfile": b"FROM a\n"})
        with Sim() as sim:
            sim.faults(hold="end")
            d = sim.daemon(config="reuse_max_age = 0\n")
            job = submit_ok(d, ctx)
            env = clean_env(SNAPBUILD_SOCKET=d.socket, SNAPBUILD_RECONNECT_SECONDS="1")
            logs = subprocess.Popen([CLI, "logs", "-f", job["id"]], env=env,
                                    stdout=subprocess.PIPE, stderr=subprocess.PIPE)
            wait_for(lambda: any(b["held"] for b in sim.builds()), 60, "the build to be held")

            def connected():
                with open("/proc/net/unix") as f:
                    return sum(line.rstrip().endswith(" " + d.socket) for line in f) >= 2
            wait_for(connected, 60, "logs -f to be connected")
            d.stop()
            out, err = logs.communicate(timeout=120)
        self.assertEqual(logs.returncode, 3, err)
        self.assertIn(b"did not come back within 1 s", err)
        self.assertIn(b"snapbuild logs -f " + job["id"].encode(), err)
        self.assertIn(b"hint: ", err)


if __name__ == "__main__":
    unittest.main()
