"""The local build backend (daemon/localbuild.c), driven directly through
tests/tools/localbuild-driver, which runs one build on an event loop and prints its
events as JSON lines.

FakeEngineTest: docker and podman are stand-ins (tests/integration/fakes) placed
first on PATH that record their arguments, environment and stdin: exact command
lines, the password only on login's stdin, a minimal environment without the API
key, push retries, build and login failures with their last lines, a missing
engine, hostile archives, and cancel during a long build (process group gone,
job directory gone).

RealBuildahTest: buildah (vfs storage, chroot isolation) builds a FROM scratch image
from a context with a static busybox, runs a RUN step, and pushes to a real
docker-registry with htpasswd auth on a loopback port; the registry's HTTP API must
then serve the manifest under the pushed tag, with the files the build made.
"""
import base64
import gzip
import io
import json
import os
import selectors
import shutil
import signal
import socket
import subprocess
import tarfile
import tempfile
import time
import unittest
import urllib.error
import urllib.request

import harness

BIN_DIR = os.environ.get("SNAPBUILD_BIN_DIR",
                         os.path.join(os.path.dirname(__file__), "../../build"))
DRIVER = os.path.join(BIN_DIR, "tests", "tools", "localbuild-driver")
FAKES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fakes")

API_KEY = "tgr-api-key-must-never-reach-an-engine"
PASSWORD = "registry-pa55word-only-on-stdin"
USERNAME = "robot$ns+builder"
IMAGE = "image-0b6a4c1e-7f0e-4a57-9a53-5f0d7c1b2a3d:0b6a4c1e-7f0e-4a57-9a53-5f0d7c1b2a3d"


def wait_for(cond, timeout=15.0, what="condition"):
    return harness.wait_for(cond, timeout, what)


def live_group_members(pgid):
    """Pids of processes in process group pgid that are still running (not zombies)."""
    pids = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open("/proc/%s/stat" % name) as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except (FileNotFoundError, ProcessLookupError):
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            pids.append(int(name))
    return pids


def pid_running(pid):
    try:
        with open("/proc/%d/stat" % pid) as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def make_archive(path, files, links=(), extra=()):
    """A context archive as the SDK makes it: ./<relative path>, sorted.
    files: {relpath: bytes}; links: [(relpath, target)]; extra: raw TarInfo/bytes pairs."""
    with tarfile.open(path, "w:gz") as tar:
        for rel in sorted(files):
            data = files[rel]
            info = tarfile.TarInfo("./" + rel)
            info.size = len(data)
            info.mode = 0o755 if rel.endswith(".sh") or rel == "busybox" else 0o644
            info.mtime = 1700000000
            tar.addfile(info, io.BytesIO(data))
        for rel, target in links:
            info = tarfile.TarInfo("./" + rel)
            info.type = tarfile.SYMTYPE
            info.linkname = target
            tar.addfile(info)
        for info, data in extra:
            tar.addfile(info, io.BytesIO(data) if data is not None else None)


class Driver:
    """One localbuild-driver run; events are the parsed JSON lines of its stdout."""

    def __init__(self, args, env):
        self.proc = subprocess.Popen([DRIVER] + args, env=env, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE)
        self.events = []
        self._buf = b""
        self._sel = selectors.DefaultSelector()
        self._sel.register(self.proc.stdout, selectors.EVENT_READ)

    def read_until(self, pred, timeout=60.0):
        """Reads events until pred(event) holds for one; returns it."""
        deadline = time.monotonic() + timeout
        while True:
            while b"\n" in self._buf:
                line, self._buf = self._buf.split(b"\n", 1)
                ev = json.loads(line)
                self.events.append(ev)
                if pred(ev):
                    return ev
            left = deadline - time.monotonic()
            if left <= 0:
                self.kill()
                raise AssertionError("driver timed out; events so far: %r" % self.events)
            if self._sel.select(timeout=left):
                chunk = os.read(self.proc.stdout.fileno(), 65536)
                if not chunk:
                    raise AssertionError("driver ended without that event; stderr: %s; "
                                         "events: %r" % (self.proc.stderr.read().decode(),
                                                         self.events))
                self._buf += chunk

    def finish(self, timeout=60.0):
        done = self.read_until(lambda e: e["event"] == "done", timeout)
        rc = self.proc.wait(timeout=10)
        self.stderr = self.proc.stderr.read().decode()
        self.close()
        return done, rc

    def kill(self):
        """Cleanup: SIGTERM first, so the driver cancels and takes its engine's
        process group down with it; SIGKILL only if that does not end it."""
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.close()

    def close(self):
        if not self.proc.stdout.closed:
            self._sel.close()
            self.proc.stdout.close()
            self.proc.stderr.close()

    def logs(self, step=None):
        return [e["line"] for e in self.events
                if e["event"] == "log" and (step is None or e["step"] == step)]

    def steps(self):
        return [e["step"] for e in self.events if e["event"] == "step"]

    def job_dir(self):
        dirs = [e["path"] for e in self.events if e["event"] == "dir"]
        return dirs[0] if dirs else None


class FakeEngineTest(unittest.TestCase):
    REGISTRY_URL = "127.0.0.1:5999/ns"

    def setUp(self):
        self.tmp = tempfile.mkdtemp(prefix="test-local-engine-")
        self.bin = os.path.join(self.tmp, "bin")
        os.mkdir(self.bin)
        shutil.copy(os.path.join(FAKES, "docker"), os.path.join(self.bin, "docker"))
        os.symlink("docker", os.path.join(self.bin, "podman"))
        self.tmp_root = os.path.join(self.tmp, "jobs")
        os.mkdir(self.tmp_root)
        self.archive = os.path.join(self.tmp, "context.tar.gz")
        make_archive(self.archive, {"Dockerfile": b"FROM scratch\nCOPY hello.txt /\n",
                                    "hello.txt": b"hello\n",
                                    "sub/Dockerfile.alt": b"FROM scratch\n"},
                     links=[("link-to-hello", "hello.txt")])
        self.password_file = os.path.join(self.tmp, "password")
        with open(self.password_file, "w") as f:
            f.write(PASSWORD + "\n")
        self.child_path = self.bin + ":/usr/bin:/bin"
        self.ref = "127.0.0.1:5999/ns/" + IMAGE

    def tearDown(self):
        shutil.rmtree(self.tmp, ignore_errors=True)

    def configure(self, **cfg):
        with open(os.path.join(self.bin, "fake-config.json"), "w") as f:
            json.dump(cfg, f)

    def records(self):
        try:
            with open(os.path.join(self.bin, "fake-record.jsonl")) as f:
                return [json.loads(line) for line in f]
        except FileNotFoundError:
            return []

    def driver_env(self):
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": "/home/snaptest",
               "LANG": "C.UTF-8", "TOGETHER_API_KEY": API_KEY,
               "DOCKER_HOST": "unix:///run/test-docker.sock",
               "SNAPBUILD_UNRELATED": "not-for-children"}
        for k in ("ASAN_OPTIONS", "UBSAN_OPTIONS"):
            if k in os.environ:
                env[k] = os.environ[k]
        return env

    def start(self, engine="docker", extra=(), path=None):
        args = ["--engine", engine, "--archive", self.archive,
                "--registry-url", self.REGISTRY_URL, "--username", USERNAME,
                "--password-file", self.password_file, "--image-name", IMAGE,
                "--tmp-root", self.tmp_root, "--path", path or self.child_path]
        d = Driver(args + list(extra), self.driver_env())
        self.addCleanup(d.kill)
        return d

    def run_build(self, engine="docker", extra=(), path=None):
        d = self.start(engine, extra, path)
        done, rc = d.finish()
        return d, done, rc

    def assert_clean(self):
        self.assertEqual(os.listdir(self.tmp_root), [], "job directory left behind")

    def assert_no_secrets(self, records):
        for r in records:
            for a in r["argv"]:
                self.assertNotIn(PASSWORD, a)
                self.assertNotIn(API_KEY, a)
            for k, v in r["env"].items():
                self.assertNotIn(PASSWORD, v)
                self.assertNotIn(API_KEY, v)
            if "login" not in r["argv"]:
                self.assertEqual(r["stdin"], "", "stdin given to %r" % r["argv"])

    def test_docker_command_lines(self):
        d, done, rc = self.run_build(
            "docker", ["--dockerfile", "./sub/Dockerfile.alt", "--platform", "linux/amd64",
                       "--build-args", '{"A":"1","B":"two words"}'])
        self.assertIsNone(done["error"], d.events)
        self.assertEqual(done["image_ref"], self.ref)
        self.assertEqual(rc, 0)
        self.assertEqual(d.steps(), ["build", "auth", "push"])
        job = d.job_dir()
        self.assertTrue(job.startswith(os.path.realpath(self.tmp_root) + "/snapbuild-local-"))
        ctx = job + "/context"
        recs = self.records()
        self.assertEqual([r["argv"] for r in recs], [
            ["docker", "build", "--platform", "linux/amd64", "--progress=plain",
             "-f", "sub/Dockerfile.alt", "-t", self.ref,
             "--build-arg", "A", "--build-arg", "B", ctx],
            ["docker", "login", "--username", USERNAME, "--password-stdin", "127.0.0.1:5999"],
            ["docker", "push", self.ref],
            ["docker", "rmi", self.ref],
        ])
        for r in recs:
            self.assertEqual(r["cwd"], ctx)
            # Each engine command leads its own process group.
            self.assertEqual(r["pgid"], r["pid"])
        base = {"PATH": self.child_path, "HOME": "/home/snaptest", "LANG": "C.UTF-8",
                "TMPDIR": job + "/tmp", "DOCKER_HOST": "unix:///run/test-docker.sock"}
        auth = dict(base, DOCKER_CONFIG=job + "/docker")
        # Build-arg values reach the engine through its environment, never its argv.
        build = dict(base, A="1", B="two words")
        self.assertEqual([r["env"] for r in recs], [build, auth, auth, base])
        self.assertEqual(recs[1]["stdin"], PASSWORD)
        self.assert_no_secrets(recs)
        # The build saw the whole context, symlinks as symlinks.
        self.assertIn("context unpacked: 3 files, 49 bytes", d.logs("build"))
        # Escapes stripped and carriage-return progress collapsed.
        self.assertIn("#3 DONE 0.1s", d.logs("build"))
        self.assertIn("5f70bf18a086: Pushing 100%", d.logs("push"))
        self.assertTrue(all("\x1b" not in l and "\r" not in l for l in d.logs()))
        self.assertIn("Login Succeeded", d.logs("auth"))
        self.assert_clean()

    def test_podman_command_lines(self):
        d, done, rc = self.run_build(
            "podman", ["--platform", "linux/arm64", "--engine-arg", "--storage-driver",
                       "--engine-arg", "vfs", "--isolation", "chroot", "--insecure"])
        self.assertIsNone(done["error"], d.events)
        self.assertEqual(rc, 0)
        job = d.job_dir()
        ctx = job + "/context"
        recs = self.records()
        g = ["podman", "--storage-driver", "vfs"]
        authfile = job + "/auth.json"
        self.assertEqual([r["argv"] for r in recs], [
            g + ["build", "--platform", "linux/arm64", "-f", "Dockerfile", "-t", self.ref,
                 "--isolation", "chroot", ctx],
            g + ["login", "--tls-verify=false", "--authfile", authfile, "--username", USERNAME,
                 "--password-stdin", "127.0.0.1:5999"],
            g + ["push", "--tls-verify=false", "--authfile", authfile, self.ref],
            g + ["rmi", self.ref],
        ])
        base = {"PATH": self.child_path, "HOME": "/home/snaptest", "LANG": "C.UTF-8",
                "TMPDIR": job + "/tmp", "DOCKER_HOST": "unix:///run/test-docker.sock"}
        auth = dict(base, REGISTRY_AUTH_FILE=authfile)
        self.assertEqual([r["env"] for r in recs], [base, auth, auth, base])
        self.assertEqual(recs[1]["stdin"], PASSWORD)
        self.assert_no_secrets(recs)
        self.assertIn("Successfully tagged " + self.ref, d.logs("build"))
        self.assert_clean()

    def test_keep_image(self):
        d, done, rc = self.run_build("docker", ["--keep-image"])
        self.assertIsNone(done["error"], d.events)
        self.assertEqual([r["argv"][1] for r in self.records()], ["build", "login", "push"])

    def test_push_retried(self):
        self.configure(push_fail_times=2)
        d, done, rc = self.run_build("docker")
        self.assertIsNone(done["error"], d.events)
        self.assertEqual(rc, 0)
        recs = self.records()
        pushes = [r for r in recs if r["argv"][1] == "push"]
        self.assertEqual(len(pushes), 3)
        # Login once, not per attempt; pushes spaced by the backoff (0.5 s, then 1 s).
        self.assertEqual([r["argv"][1] for r in recs].count("login"), 1)
        self.assertGreaterEqual(pushes[1]["time"] - pushes[0]["time"], 0.45)
        self.assertGreaterEqual(pushes[2]["time"] - pushes[1]["time"], 0.95)
        self.assertIn("push failed (attempt 1 of 3), retrying in 0.5 s", d.logs("push"))
        self.assertIn("push failed (attempt 2 of 3), retrying in 1.0 s", d.logs("push"))
        self.assertEqual(d.steps(), ["build", "auth", "push"])
        self.assert_clean()

    def test_push_fails_after_three_attempts(self):
        self.configure(push_fail_times=10)
        d, done, rc = self.run_build("docker")
        self.assertEqual(rc, 1)
        err = done["error"]
        self.assertTrue(err.startswith("push failed after 3 attempts (docker exit code 1); "
                                       "last lines of output:\n"), err)
        self.assertIn("received unexpected HTTP status: 502 Bad Gateway (attempt 3)", err)
        self.assertNotIn("(attempt 2)", err)
        self.assertIsNone(done["image_ref"])
        argvs = [r["argv"][1] for r in self.records()]
        self.assertEqual(argvs, ["build", "login", "push", "push", "push", "rmi"])
        self.assert_clean()

    def test_build_failure_reports_last_lines(self):
        self.configure(build_fail=True)
        d, done, rc = self.run_build("docker")
        self.assertEqual(rc, 1)
        err = done["error"]
        lines = err.split("\n")
        self.assertEqual(lines[0], "build failed (docker exit code 1); last lines of output:")
        self.assertEqual(len(lines), 1 + 10)
        self.assertEqual(lines[-1], "ERROR: failed to solve: process \"/bin/sh -c false\" "
                                    "did not complete successfully: exit code: 1")
        self.assertIn("#3 14.14 noise line 14", lines)
        self.assertNotIn("#3 0.0 noise line 0", lines)
        # Not retried, and nothing after it.
        self.assertEqual([r["argv"][1] for r in self.records()], ["build"])
        self.assertEqual(d.steps(), ["build"])
        self.assert_clean()

    def test_login_refused(self):
        self.configure(login_fail=True)
        d, done, rc = self.run_build("podman")
        err = done["error"]
        self.assertTrue(err.startswith("registry login to 127.0.0.1:5999 refused (podman exit "
                                       "code 1); last lines of output:\n"), err)
        self.assertIn("unauthorized: incorrect username or password", err)
        self.assertEqual([r["argv"][1] for r in self.records()], ["build", "login"])
        self.assert_clean()

    def test_engine_not_installed(self):
        empty = os.path.join(self.tmp, "empty")
        os.mkdir(empty)
        d, done, rc = self.run_build("docker", path=empty)
        self.assertEqual(rc, 1)
        self.assertIn("cannot run the docker engine: docker: not found in PATH (%s)" % empty,
                      done["error"])
        self.assertIn("apt-get install docker.io", done["error"])
        self.assert_clean()

    def test_missing_dockerfile(self):
        d, done, rc = self.run_build("docker", ["--dockerfile", "nope/Dockerfile"])
        self.assertEqual(done["error"], "the Dockerfile 'nope/Dockerfile' is not in the build "
                                        "context")
        self.assertEqual(self.records(), [])
        d, done, rc = self.run_build("docker", ["--dockerfile", "../Dockerfile"])
        self.assertEqual(done["error"], "the Dockerfile path '../Dockerfile' is not inside the "
                                        "context")
        self.assert_clean()

    def test_hostile_archives(self):
        outside = os.path.join(self.tmp, "outside")
        os.mkdir(outside)
        dotdot = tarfile.TarInfo("./../../escaped.txt")
        dotdot.size = 3
        link = tarfile.TarInfo("./evil")
        link.type = tarfile.SYMTYPE
        link.linkname = outside
        through = tarfile.TarInfo("./evil/pwned.txt")
        through.size = 3
        dev = tarfile.TarInfo("./null")
        dev.type = tarfile.CHRTYPE
        dev.devmajor, dev.devminor = 1, 3
        hard = tarfile.TarInfo("./hard")
        hard.type = tarfile.LNKTYPE
        hard.linkname = "/etc/passwd"
        cases = [
            ([(dotdot, b"bad")], "entry './../../escaped.txt' lies outside the context"),
            ([(link, None), (through, b"bad")], "evil/pwned.txt"),
            ([(dev, None)], "entry './null' is not a file, directory or symbolic link"),
            ([(hard, None)], "entry './hard' is not a file, directory or symbolic link"),
        ]
        for extra, want in cases:
            make_archive(self.archive, {"Dockerfile": b"FROM scratch\n"}, extra=extra)
            d, done, rc = self.run_build("docker")
            self.assertTrue(done["error"].startswith("cannot unpack the build context: "),
                            done["error"])
            self.assertIn(want, done["error"])
            self.assertEqual(os.listdir(outside), [])
            self.assertFalse(os.path.exists(os.path.join(self.tmp, "escaped.txt")))
            self.assertEqual(self.records(), [])
            self.assert_clean()

    def test_cancel_during_build(self):
        self.configure(build_sleep=60)
        d = self.start("docker", ["--grace-ms", "3000"])
        d.read_until(lambda e: e["event"] == "log" and e["line"] == "#3 sleeping")
        job = d.job_dir()
        self.assertTrue(os.path.isdir(job))
        build = self.records()[0]
        pgid = build["pgid"]
        with open(os.path.join(self.bin, "fake-sleep.pid")) as f:
            grandchild = int(f.read())
        self.assertTrue(pid_running(grandchild))
        self.assertIn(grandchild, live_group_members(pgid))
        d.proc.send_signal(signal.SIGTERM)
        done, rc = d.finish(timeout=20)
        self.assertEqual(done["error"], "cancelled")
        self.assertEqual(rc, 1)
        # The engine and everything it started are gone, and so is the job directory.
        wait_for(lambda: not live_group_members(pgid), what="process group to go")
        self.assertFalse(pid_running(grandchild))
        self.assertFalse(os.path.exists(job))
        self.assert_clean()
        self.assertEqual([r["argv"][1] for r in self.records()], ["build"])


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


REAL_TOOLS = ("buildah", "docker-registry", "htpasswd")
BUSYBOX = "/bin/busybox"


class RealBuildahTest(unittest.TestCase):
    """buildah and docker-registry for real (installed by scripts/setup.sh)."""

    @classmethod
    def setUpClass(cls):
        missing = [t for t in REAL_TOOLS if shutil.which(t) is None]
        if not os.path.exists(BUSYBOX):
            missing.append("busybox-static")
        if missing:
            raise AssertionError("missing %s: run scripts/setup.sh" % ", ".join(missing))
        if os.geteuid() != 0:
            raise unittest.SkipTest("buildah without root needs user namespaces and subuid "
                                    "ranges set up for this user")
        cls.tmp = tempfile.mkdtemp(prefix="test-local-buildah-")
        cls.user, cls.password = "snapuser", "s3cret-registry-pw"
        htpasswd = subprocess.run(["htpasswd", "-Bbn", cls.user, cls.password], check=True,
                                  capture_output=True, text=True).stdout
        with open(os.path.join(cls.tmp, "htpasswd"), "w") as f:
            f.write(htpasswd)
        cls.registry = None
        for _ in range(3):
            cls.port = free_port()
            config = os.path.join(cls.tmp, "registry.yml")
            with open(config, "w") as f:
                f.write("version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n"
                        "    rootdirectory: %s/registry-data\n"
                        "http:\n  addr: 127.0.0.1:%d\nauth:\n  htpasswd:\n    realm: test\n"
                        "    path: %s/htpasswd\n" % (cls.tmp, cls.port, cls.tmp))
            cls.registry_log = open(os.path.join(cls.tmp, "registry.log"), "w")
            cls.registry = subprocess.Popen(["docker-registry", "serve", config],
                                            stdout=cls.registry_log,
                                            stderr=subprocess.STDOUT)
            try:
                wait_for(lambda: cls.registry.poll() is not None or cls.registry_status() == 401,
                         what="registry to listen")
            except Exception:
                cls.stop_registry()
                raise
            if cls.registry.poll() is None:
                break
            cls.stop_registry()
        else:
            raise AssertionError("docker-registry did not start")

    @classmethod
    def registry_status(cls):
        try:
            urllib.request.urlopen("http://127.0.0.1:%d/v2/" % cls.port, timeout=2)
            return 200
        except urllib.error.HTTPError as e:
            return e.code
        except OSError:
            return None

    @classmethod
    def stop_registry(cls):
        if cls.registry is not None and cls.registry.poll() is None:
            cls.registry.terminate()
            try:
                cls.registry.wait(timeout=10)
            except subprocess.TimeoutExpired:
                cls.registry.kill()
                cls.registry.wait()
        cls.registry_log.close()

    @classmethod
    def tearDownClass(cls):
        cls.stop_registry()
        shutil.rmtree(cls.tmp, ignore_errors=True)

    def setUp(self):
        self.work = tempfile.mkdtemp(prefix="case-", dir=self.tmp)
        self.tmp_root = os.path.join(self.work, "jobs")
        os.mkdir(self.tmp_root)
        self.password_file = os.path.join(self.work, "password")
        with open(self.password_file, "w") as f:
            f.write(self.password)
        # A private store, so the test neither sees nor leaves images elsewhere.
        self.storage = ["--engine-arg=--root=%s/storage" % self.work,
                        "--engine-arg=--runroot=%s/run" % self.work,
                        "--engine-arg=--storage-driver=vfs"]

    def tearDown(self):
        shutil.rmtree(self.work, ignore_errors=True)

    def driver(self, archive, image, extra=()):
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": self.work,
               "LANG": "C.UTF-8", "TOGETHER_API_KEY": API_KEY}
        for k in ("ASAN_OPTIONS", "UBSAN_OPTIONS"):
            if k in os.environ:
                env[k] = os.environ[k]
        args = ["--engine", "buildah", "--archive", archive,
                "--registry-url", "127.0.0.1:%d/snapns" % self.port,
                "--username", self.user, "--password-file", self.password_file,
                "--image-name", image, "--tmp-root", self.tmp_root,
                "--path", "/usr/sbin:/usr/bin:/sbin:/bin", "--platform", "linux/amd64",
                "--isolation", "chroot", "--insecure"] + self.storage + list(extra)
        d = Driver(args, env)
        self.addCleanup(d.kill)
        return d

    def registry_get(self, path, accept):
        req = urllib.request.Request("http://127.0.0.1:%d%s" % (self.port, path))
        token = base64.b64encode(("%s:%s" % (self.user, self.password)).encode()).decode()
        req.add_header("Authorization", "Basic " + token)
        req.add_header("Accept", ", ".join(accept))
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, dict(resp.headers), resp.read()

    def test_build_run_and_push(self):
        archive = os.path.join(self.work, "context.tar.gz")
        with open(BUSYBOX, "rb") as f:
            busybox = f.read()
        dockerfile = (b"FROM scratch\n"
                      b"COPY busybox /bin/busybox\n"
                      b"COPY app/ /app/\n"
                      b"ARG GREETING\n"
                      b"RUN [\"/bin/busybox\", \"sh\", \"-c\", "
                      b"\"/bin/busybox echo \\\"$GREETING\\\" > /greeting.txt && "
                      b"/bin/busybox cat /app/hello.txt >> /greeting.txt\"]\n")
        make_archive(archive, {"Dockerfile": dockerfile, "busybox": busybox,
                               "app/hello.txt": b"hello from the context\n"})
        name, tag = "image-5d1c7a0e-real", "5d1c7a0e-1111-4a57-9a53-5f0d7c1b2a3d"
        d = self.driver(archive, "%s:%s" % (name, tag),
                        ["--build-args", '{"GREETING":"hi there"}'])
        done, rc = d.finish(timeout=120)
        self.assertIsNone(done["error"], "\n".join(d.logs()) + "\n" + d.stderr)
        self.assertEqual(rc, 0)
        ref = "127.0.0.1:%d/snapns/%s:%s" % (self.port, name, tag)
        self.assertEqual(done["image_ref"], ref)
        self.assertEqual(d.steps(), ["build", "auth", "push"])
        self.assertIn("Login Succeeded!", d.logs("auth"))
        self.assertEqual(os.listdir(self.tmp_root), [])

        accept = ["application/vnd.oci.image.manifest.v1+json",
                  "application/vnd.docker.distribution.manifest.v2+json"]
        status, headers, body = self.registry_get("/v2/snapns/%s/manifests/%s" % (name, tag),
                                                  accept)
        self.assertEqual(status, 200)
        self.assertIn(headers["Content-Type"], accept)
        self.assertTrue(headers["Docker-Content-Digest"].startswith("sha256:"))
        manifest = json.loads(body)
        self.assertEqual(manifest["schemaVersion"], 2)
        # The pushed layers hold what the build copied and what its RUN step wrote.
        files = {}
        for layer in manifest["layers"]:
            _, _, blob = self.registry_get("/v2/snapns/%s/blobs/%s" % (name, layer["digest"]),
                                           ["*/*"])
            with tarfile.open(fileobj=io.BytesIO(gzip.decompress(blob))) as tar:
                for m in tar.getmembers():
                    if m.isfile():
                        files[m.name.lstrip("./")] = tar.extractfile(m).read()
        self.assertEqual(files["app/hello.txt"], b"hello from the context\n")
        self.assertEqual(files["greeting.txt"], b"hi there\nhello from the context\n")
        self.assertEqual(files["bin/busybox"], busybox)
        _, _, config = self.registry_get(
            "/v2/snapns/%s/blobs/%s" % (name, manifest["config"]["digest"]), ["*/*"])
        self.assertEqual(json.loads(config)["architecture"], "amd64")

        # The local tag was removed after the push.
        images = subprocess.run(["buildah", "--root=%s/storage" % self.work,
                                 "--runroot=%s/run" % self.work, "--storage-driver=vfs",
                                 "images", "--format", "{{.Name}}:{{.Tag}}"],
                                capture_output=True, text=True, check=True).stdout
        self.assertNotIn(tag, images)

    def test_wrong_password_refused(self):
        archive = os.path.join(self.work, "context.tar.gz")
        make_archive(archive, {"Dockerfile": b"FROM scratch\nCOPY a.txt /\n", "a.txt": b"a\n"})
        with open(self.password_file, "w") as f:
            f.write("not-the-password")
        d = self.driver(archive, "image-wrongpw:t1")
        done, rc = d.finish(timeout=120)
        self.assertTrue(done["error"].startswith(
            "registry login to 127.0.0.1:%d refused (buildah exit code" % self.port),
            done["error"])
        self.assertEqual(d.steps(), ["build", "auth"])
        self.assertEqual(os.listdir(self.tmp_root), [])

    def test_cancel_during_run_step(self):
        archive = os.path.join(self.work, "context.tar.gz")
        with open(BUSYBOX, "rb") as f:
            busybox = f.read()
        make_archive(archive, {
            "Dockerfile": b"FROM scratch\nCOPY busybox /bin/busybox\n"
                          b"RUN [\"/bin/busybox\", \"sh\", \"-c\", "
                          b"\"echo long-step-started; /bin/busybox sleep 120\"]\n",
            "busybox": busybox})
        d = self.driver(archive, "image-cancel:t1")
        d.read_until(lambda e: e["event"] == "log" and e["line"] == "long-step-started",
                     timeout=120)
        job = d.job_dir()
        sleepers = [p for p in live_processes()
                    if p[1] == "/bin/busybox sleep 120" and d.proc.pid in ancestors(p[0])]
        self.assertEqual(len(sleepers), 1, sleepers)
        pid, _, pgid = sleepers[0]
        d.proc.send_signal(signal.SIGTERM)
        done, rc = d.finish(timeout=60)
        self.assertEqual(done["error"], "cancelled")
        wait_for(lambda: not live_group_members(pgid), what="buildah's process group to go")
        self.assertFalse(pid_running(pid))
        self.assertFalse(os.path.exists(job))
        self.assertEqual(os.listdir(self.tmp_root), [])
        # Stopped while its RUN step ran, buildah still removed its build container.
        containers = subprocess.run(
            ["buildah", "--root=%s/storage" % self.work, "--runroot=%s/run" % self.work,
             "--storage-driver=vfs", "containers", "--quiet"],
            capture_output=True, text=True, check=True).stdout
        self.assertEqual(containers, "")


def ancestors(pid):
    """Parent, grandparent, ... of pid."""
    out = []
    while pid > 1:
        try:
            with open("/proc/%d/stat" % pid) as f:
                pid = int(f.read().rsplit(")", 1)[1].split()[1])
        except (FileNotFoundError, ProcessLookupError):
            break
        out.append(pid)
    return out


def live_processes():
    """(pid, command line, pgid) of every running process."""
    procs = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open("/proc/%s/cmdline" % name, "rb") as f:
                cmd = f.read().replace(b"\0", b" ").decode(errors="replace").strip()
            with open("/proc/%s/stat" % name) as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except (FileNotFoundError, ProcessLookupError):
            continue
        if fields[0] != "Z":
            procs.append((int(name), cmd, int(fields[2])))
    return procs


if __name__ == "__main__":
    unittest.main()
