"""The snapbuild CLI's own conventions: help that reaches each command (and each
snapshots subcommand), -o table|json, usage errors with suggestions, and the socket
it talks to by default.

Help and usage errors need no daemon: those tests point the CLI at a socket nobody
listens on, so a command that tried to connect instead would exit 3.  The default
socket is checked as an unprivileged user (setpriv) in a private mount namespace
(unshare) with its own /run, so the system socket path is real but the machine's
/run is left alone.
"""
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import unittest

from harness import Daemon, clean_env, public_copy, run_cli, wait_for

NOBODY = 65534
SYSTEM_SOCKET = "/run/snapbuild/snapbuild.sock"

EXIT_USAGE = 2
EXIT_UNREACHABLE = 3


class Help(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.mkdtemp(prefix="sbcli-")
        self.nowhere = os.path.join(self.tmp, "nobody.sock")

    def tearDown(self):
        os.rmdir(self.tmp)

    def cli(self, *args):
        return run_cli("--socket", self.nowhere, *args)

    def commands(self):
        r = self.cli("help")
        self.assertEqual(r.returncode, 0, r.stderr)
        names = re.findall(r"(?m)^  ([a-z]+)\b", r.stdout.split("Options:")[0])
        self.assertIn("create", names)
        self.assertIn("snapshots", names)
        return names

    def test_create_help(self):
        for flag in ("--help", "-h"):
            with self.subTest(flag=flag):
                r = self.cli("create", flag)
                self.assertEqual(r.returncode, 0, r.stderr)
                self.assertEqual(r.stderr, "")
                self.assertTrue(r.stdout.startswith("usage: snapbuild create "), r.stdout)
                for option in ("--context", "--image", "--detach", "-o table|json"):
                    self.assertIn(option, r.stdout)
        # After other options and operands too: getopt finds it anywhere before "--".
        r = self.cli("create", "--context", "somewhere", "--help")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertTrue(r.stdout.startswith("usage: snapbuild create "), r.stdout)

    def test_help_command_matches_command_help(self):
        r = self.cli("help", "create")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(r.stdout, self.cli("create", "--help").stdout)
        # --help before the command is the CLI's own: the same as `help create`.
        self.assertEqual(self.cli("--help", "create").stdout, r.stdout)
        r = self.cli("help", "ls")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertTrue(r.stdout.startswith("usage: snapbuild jobs "), r.stdout)

    def test_every_command_handles_its_help(self):
        for name in self.commands():
            for flag in ("--help", "-h"):
                with self.subTest(command=name, flag=flag):
                    r = self.cli(name, flag)
                    self.assertEqual(r.returncode, 0, r.stderr)
                    self.assertEqual(r.stderr, "")
                    self.assertTrue(r.stdout.startswith("usage: snapbuild " + name + " "),
                                    r.stdout)

    def test_snapshots_subcommand_help(self):
        r = self.cli("snapshots", "list", "--help")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertTrue(r.stdout.startswith("usage: snapbuild snapshots list "), r.stdout)
        for option in ("--limit", "--cursor", "--exclude-retired", "--tag"):
            self.assertIn(option, r.stdout)
        self.assertNotIn("unalias", r.stdout)
        for sub in ("get", "alias", "unalias", "retire"):
            with self.subTest(subcommand=sub):
                r = self.cli("snapshot", sub, "x", "-h")
                self.assertEqual(r.returncode, 0, r.stderr)
                self.assertTrue(r.stdout.startswith("usage: snapbuild snapshots %s " % sub),
                                r.stdout)
        r = self.cli("snapshots", "--help")
        self.assertEqual(r.returncode, 0, r.stderr)
        for sub in ("list", "get", "alias", "unalias", "retire"):
            self.assertRegex(r.stdout, r"(?m)^  %s " % sub)
        self.assertEqual(self.cli("snapshots", "help", "list").stdout,
                         self.cli("snapshots", "list", "--help").stdout)

    def test_help_after_double_dash_is_an_operand(self):
        # "--help" after "--" is a job id, so cancel goes to the (absent) daemon.
        r = self.cli("cancel", "--", "--help")
        self.assertEqual(r.returncode, EXIT_UNREACHABLE, r.stdout + r.stderr)
        self.assertIn("not reachable", r.stderr)

    def test_unknown_command_suggests(self):
        for typo, meant in (("creat", "create"), ("snapshts", "snapshots"),
                            ("inpsect", "inspect"), ("job", "jobs")):
            with self.subTest(typo=typo):
                r = self.cli(typo)
                self.assertEqual(r.returncode, EXIT_USAGE)
                self.assertIn("unknown command '%s'" % typo, r.stderr)
                self.assertIn("did you mean '%s'?" % meant, r.stderr)
                self.assertEqual(r.stdout, "")
        r = self.cli("frobnicate")
        self.assertEqual(r.returncode, EXIT_USAGE)
        self.assertIn("unknown command 'frobnicate'", r.stderr)
        self.assertNotIn("did you mean", r.stderr)
        self.assertIn("snapbuild help", r.stderr)
        r = self.cli("help", "creat")
        self.assertEqual(r.returncode, EXIT_USAGE)
        self.assertIn("did you mean 'create'?", r.stderr)
        r = self.cli("snapshots", "lst")
        self.assertEqual(r.returncode, EXIT_USAGE)
        self.assertIn("did you mean 'list'?", r.stderr)

    def test_bad_output_format(self):
        for args in (("-o", "yaml", "jobs"), ("jobs", "-o", "yaml"), ("jobs", "--output=xml")):
            with self.subTest(args=args):
                r = self.cli(*args)
                self.assertEqual(r.returncode, EXIT_USAGE)
                self.assertIn("table or json", r.stderr)


class OutputFormats(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        # Nothing listens on the discard port: the build fails at once, and is listed.
        cls.d = Daemon(args=["--base-url", "http://127.0.0.1:9"],
                       env=clean_env(TOGETHER_API_KEY="test-key"))
        cls.ctx = os.path.join(cls.d.tmp, "ctx")
        os.makedirs(cls.ctx)
        with open(os.path.join(cls.ctx, "Dockerfile"), "w") as f:
            f.write("FROM scratch\n")
        r = cls.d.cli("create", "--context", cls.ctx, "--detach")
        assert r.returncode == 0, r.stderr
        cls.job = r.stdout.strip()
        wait_for(lambda: cls.d.call("build.get", {"id": cls.job})["state"] == "failed",
                 30, "the build to fail")

    @classmethod
    def tearDownClass(cls):
        cls.d.__exit__(None, None, None)

    def test_table_is_text(self):
        table = self.d.cli("jobs", "-o", "table")
        self.assertEqual(table.returncode, 0, table.stderr)
        self.assertRegex(table.stdout, r"^ID\s+STATE\s+BACKEND")
        self.assertIn(self.job, table.stdout)
        for args in (("jobs",), ("jobs", "-o", "text"), ("-o", "table", "jobs"),
                     ("ls", "--output=table"), ("jobs", "-otable")):
            with self.subTest(args=args):
                r = self.d.cli(*args)
                self.assertEqual(r.returncode, 0, r.stderr)
                self.assertEqual(r.stdout, table.stdout)

    def test_json(self):
        r = self.d.cli("jobs", "-o", "json")
        self.assertEqual(r.returncode, 0, r.stderr)
        jobs = json.loads(r.stdout)["jobs"]
        self.assertEqual([j["id"] for j in jobs], [self.job])
        # The last -o wins, wherever it is.
        r = self.d.cli("-o", "json", "jobs", "-o", "table")
        self.assertRegex(r.stdout, r"^ID\s+STATE")

    def test_inspect_table_and_json(self):
        r = self.d.cli("inspect", self.job, "-o", "table")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn("Job " + self.job, r.stdout)
        r = self.d.cli("inspect", "-o", "json", self.job)
        self.assertEqual(json.loads(r.stdout)["id"], self.job)

    def test_logs_json_lines(self):
        r = self.d.cli("logs", "-o", "json", self.job)
        self.assertEqual(r.returncode, 0, r.stderr)
        events = [json.loads(line) for line in r.stdout.splitlines()]
        self.assertGreater(len(events), 0)
        seqs = [e["seq"] for e in events]
        self.assertEqual(seqs, sorted(seqs))
        text = self.d.cli("logs", self.job)
        self.assertEqual(len(text.stdout.splitlines()), len(events))


# Runs in the private mount namespace, as root: a fresh /run, then for each case the
# sockets it asks for, and the CLI as an unprivileged user.  Prints JSON results.
NAMESPACE_SCRIPT = r"""
import json, os, socket, subprocess, sys, time
cli, daemon, work, cases = sys.argv[1], sys.argv[2], sys.argv[3], json.loads(sys.argv[4])
subprocess.run(["mount", "-t", "tmpfs", "-o", "mode=0755", "tmpfs", "/run"], check=True)
os.mkdir("/run/snapbuild", 0o755)
runtime = os.path.join(work, "runtime")
user_socket = os.path.join(runtime, "snapbuild", "snapbuild.sock")
os.makedirs(os.path.dirname(user_socket))
for d in (runtime, os.path.dirname(user_socket)):
    os.chown(d, 65534, 65534)
    os.chmod(d, 0o700)

def bind(path):
    s = socket.socket(socket.AF_UNIX)
    s.bind(path)
    os.chown(path, 65534, 65534)
    return s

out = []
for case in cases:
    held = []
    if "user" in case["sockets"]:
        held.append(bind(user_socket))
    proc = None
    if "system" in case["sockets"]:
        # The system daemon itself, so the CLI's answer shows it got through.
        proc = subprocess.Popen(
            [daemon, "--socket", "/run/snapbuild/snapbuild.sock",
             "--socket-mode", case.get("mode", "0666"),
             "--state-dir", os.path.join(work, "state")],
            env={"PATH": os.environ["PATH"]}, stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 20
        while not os.path.exists("/run/snapbuild/snapbuild.sock"):
            assert proc.poll() is None and time.monotonic() < deadline, "no system daemon"
            time.sleep(0.02)
    env = {"PATH": os.environ["PATH"], "XDG_RUNTIME_DIR": runtime}
    env.update(case.get("env", {}))
    results = {}
    for name, args in (("help", ["help"]), ("version", ["version"]), ("jobs", ["jobs"])):
        r = subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
                            cli, *args], env=env, capture_output=True, text=True,
                           timeout=60)
        results[name] = {"rc": r.returncode, "stdout": r.stdout, "stderr": r.stderr}
    if proc is not None:
        proc.terminate()
        proc.wait(timeout=30)
    for s in held:
        s.close()
    for path in (user_socket, "/run/snapbuild/snapbuild.sock"):
        if os.path.exists(path):
            os.unlink(path)
    out.append(results)
print(json.dumps(out))
"""


class DefaultSocket(unittest.TestCase):
    """Where a non-root user's CLI connects without --socket or $SNAPBUILD_SOCKET."""

    @classmethod
    def setUpClass(cls):
        if os.geteuid() != 0:
            raise unittest.SkipTest("needs root for a private mount namespace")
        for tool in ("unshare", "setpriv", "mount"):
            if shutil.which(tool) is None:
                raise unittest.SkipTest(tool + " is missing")
        if subprocess.run(["unshare", "-m", "true"], capture_output=True).returncode != 0:
            raise unittest.SkipTest("cannot make a mount namespace here")
        cls.work = tempfile.mkdtemp(prefix="sbcli-sock-")
        os.chmod(cls.work, 0o755)
        cls.user_socket = os.path.join(cls.work, "runtime", "snapbuild", "snapbuild.sock")
        cls.cases = [
            {"sockets": []},
            {"sockets": ["system"]},
            {"sockets": ["user", "system"]},
            {"sockets": ["system"], "env": {"SNAPBUILD_SOCKET": "/elsewhere.sock"}},
            {"sockets": ["system"], "mode": "0660"},
        ]
        # The CLI runs as nobody: from a copy it can reach, whatever the checkout's mode.
        pub = public_copy()
        r = subprocess.run(["unshare", "-m", sys.executable, "-c", NAMESPACE_SCRIPT, pub["cli"],
                            pub["daemon"], cls.work, json.dumps(cls.cases)],
                           capture_output=True, text=True, timeout=120)
        if r.returncode != 0:
            shutil.rmtree(cls.work, ignore_errors=True)
            raise AssertionError("namespace script failed:\n" + r.stderr)
        cls.results = json.loads(r.stdout)

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.work, ignore_errors=True)

    def default_in(self, results):
        m = re.search(r"daemon socket \(now (\S+);", results["help"]["stdout"])
        self.assertIsNotNone(m, results["help"])
        return m.group(1)

    def test_user_socket_when_neither_exists(self):
        r = self.results[0]
        self.assertEqual(self.default_in(r), self.user_socket)
        self.assertEqual(r["version"]["rc"], 0)
        self.assertIn("not reachable at " + self.user_socket, r["version"]["stdout"])

    def test_system_socket_when_only_it_exists(self):
        r = self.results[1]
        self.assertEqual(self.default_in(r), SYSTEM_SOCKET)
        self.assertEqual(r["version"]["rc"], 0, r["version"]["stderr"])
        self.assertRegex(r["version"]["stdout"], r"(?m)^snapbuildd \S+ \(protocol \d+\)$")

    def test_user_socket_wins_when_both_exist(self):
        r = self.results[2]
        self.assertEqual(self.default_in(r), self.user_socket)
        # Bound but not listening: the CLI tried the user's socket, not the system's.
        self.assertIn("not reachable at " + self.user_socket, r["version"]["stdout"])

    def test_environment_wins(self):
        self.assertEqual(self.default_in(self.results[3]), "/elsewhere.sock")

    def test_daemon_down_says_how_to_start_it(self):
        r = self.results[0]["jobs"]
        self.assertEqual(r["rc"], 3)
        self.assertIn("systemctl --user start snapbuildd.socket", r["stderr"])

    def test_system_socket_without_the_group_says_how_to_join(self):
        r = self.results[4]
        self.assertEqual(self.default_in(r), SYSTEM_SOCKET)
        self.assertEqual(r["jobs"]["rc"], 3)
        self.assertIn("Permission denied", r["jobs"]["stderr"])
        self.assertIn("usermod -aG snapbuild", r["jobs"]["stderr"])


if __name__ == "__main__":
    unittest.main(verbosity=2)
