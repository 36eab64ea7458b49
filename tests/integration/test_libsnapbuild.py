"""libsnapbuild as a third-party program uses it: the build tree is installed with
`cmake --install` into a temporary prefix, examples/libsnapbuild/submit-and-wait.c is
compiled with nothing but `pkg-config --cflags --libs snapbuild` (PKG_CONFIG_PATH
pointing at that prefix) and run against snapbuildd + snapbuild-sim: it connects,
submits a context, follows it and waits for success.  Also: the library's exported
ABI (soname, symbol versions, no json-c in the header).
"""
import os
import re
import shutil
import subprocess
import tempfile
import unittest

from harness import BIN_DIR, clean_env
from simharness import Sim, submit_ok, wait_job, write_tree

SOURCE_DIR = os.environ.get(
    "SNAPBUILD_SOURCE_DIR",
    os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
EXAMPLE = os.path.join(SOURCE_DIR, "examples", "libsnapbuild", "submit-and-wait.c")
PUBLIC = ["snapbuild_connect", "snapbuild_call", "snapbuild_submit", "snapbuild_follow",
          "snapbuild_last_error_code", "snapbuild_last_error_json", "snapbuild_close",
          "snapbuild_free", "snapbuild_version"]


def cache_value(name):
    """A value from the build tree's CMakeCache.txt ('' when absent)."""
    with open(os.path.join(BIN_DIR, "CMakeCache.txt")) as f:
        for line in f:
            m = re.match(r"%s:[A-Z]+=(.*)$" % re.escape(name), line.strip())
            if m:
                return m.group(1)
    return ""


def sanitizer_flags():
    """A sanitized tree's library needs its runtime in the program that loads it."""
    if cache_value("SNAPBUILD_SANITIZE").upper() in ("ON", "1", "TRUE", "YES"):
        return ["-fsanitize=address,undefined"]
    return []


def run(args, **kw):
    kw.setdefault("capture_output", True)
    kw.setdefault("text", True)
    kw.setdefault("timeout", 300)
    return subprocess.run(args, **kw)


class InstalledLibrary(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        if not shutil.which("pkg-config"):
            raise unittest.SkipTest("pkg-config is not installed")
        cls.tmp = tempfile.mkdtemp(prefix="sb-lib-")
        cls.prefix = os.path.join(cls.tmp, "prefix")
        r = run(["cmake", "--install", BIN_DIR, "--prefix", cls.prefix])
        if r.returncode != 0:
            raise AssertionError("cmake --install failed:\n" + r.stdout + r.stderr)
        libdir = os.path.dirname(cls.find(cls.prefix, "libsnapbuild.so.1"))
        cls.libdir = libdir
        cls.env = clean_env(PKG_CONFIG_PATH=os.path.join(libdir, "pkgconfig"))
        r = run(["pkg-config", "--cflags", "--libs", "snapbuild"], env=cls.env)
        if r.returncode != 0:
            raise AssertionError("pkg-config does not know snapbuild:\n" + r.stderr)
        cls.pkg_flags = r.stdout.split()
        cls.program = os.path.join(cls.tmp, "submit-and-wait")
        cc = cache_value("CMAKE_C_COMPILER") or "cc"
        r = run([cc, "-std=c99", "-Wall", "-Wextra", "-Werror", "-o", cls.program, EXAMPLE]
                + sanitizer_flags() + cls.pkg_flags, env=cls.env)
        if r.returncode != 0:
            raise AssertionError("the example does not build:\n" + r.stderr)

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.tmp, ignore_errors=True)

    @staticmethod
    def find(root, name):
        for d, _, files in os.walk(root):
            if name in files:
                return os.path.join(d, name)
        raise AssertionError("%s is not installed under %s" % (name, root))

    def test_pkg_config_points_into_the_prefix(self):
        inc = [f[2:] for f in self.pkg_flags if f.startswith("-I")]
        libs = [f[2:] for f in self.pkg_flags if f.startswith("-L")]
        self.assertIn("-lsnapbuild", self.pkg_flags)
        self.assertTrue(os.path.isfile(os.path.join(inc[0], "snapbuild.h")))
        self.assertTrue(os.path.exists(os.path.join(libs[0], "libsnapbuild.so")))
        self.assertEqual(os.path.realpath(libs[0]), os.path.realpath(self.libdir))

    def test_header_has_no_json_c(self):
        with open(self.find(self.prefix, "snapbuild.h")) as f:
            text = f.read()
        self.assertNotIn("json_object", text)
        self.assertNotIn("json-c", text.replace("no json-c", ""))
        for name in PUBLIC:
            self.assertIn(name + "(", text)

    def test_soname_and_symbol_versions(self):
        lib = os.path.join(self.libdir, "libsnapbuild.so.1")
        r = run(["readelf", "-dW", lib])
        self.assertIn("Library soname: [libsnapbuild.so.1]", r.stdout)
        r = run(["readelf", "--dyn-syms", "-W", lib])
        exported = {}
        for line in r.stdout.splitlines():
            f = line.split()
            if len(f) >= 8 and f[6] != "UND" and "@" in f[7]:
                name, _, ver = f[7].partition("@")
                exported[name] = ver.lstrip("@")
        for name in PUBLIC:
            self.assertEqual(exported.get(name), "SNAPBUILD_1", name)
        # The library's own helpers (proto, json handling) stay inside it.
        for name, ver in exported.items():
            self.assertIn(ver, ("SNAPBUILD_1", "SNAPBUILD_PRIVATE"), name)
        self.assertNotIn("xmalloc", exported)
        self.assertNotIn("jsonrpc_decode", exported)

    def test_submit_follow_wait_against_the_simulator(self):
        ctx = os.path.join(self.tmp, "app")
        write_tree(ctx, {"Dockerfile": b"FROM debian:12\nCOPY . /app\nRUN make\n",
                         "main.c": b"int main(void){return 0;}\n",
                         ".dockerignore": b"secret.key\n", "secret.key": b"k"})
        with Sim() as sim, sim.daemon(tmp=tempfile.mkdtemp(dir=self.tmp)) as d:
            env = dict(self.env, SNAPBUILD_SOCKET=d.socket, LD_LIBRARY_PATH=self.libdir)
            r = run([self.program, ctx, '{"alias": "lib@v1", "tags": {"via": "libsnapbuild"}}'],
                    env=env, timeout=120)
            self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
            lines = r.stdout.splitlines()
            self.assertEqual(lines[0], "libsnapbuild 0.1.0")
            job_id = lines[1].split()[1]
            events = [l for l in lines if l.startswith("event ")]
            self.assertTrue(any('"kind":"state"' in e and '"succeeded"' in e for e in events),
                            events)
            self.assertTrue(any('"step":"build"' in e for e in events), events)
            self.assertIn('"state":"succeeded"', lines[-1])
            job = d.call("build.get", {"id": job_id})
            self.assertEqual(job["alias"], "lib@v1")
            self.assertEqual(job["context"], os.path.realpath(ctx))
            # Packed here with .dockerignore applied: 3 files, not the key.
            self.assertEqual(job["archive"]["files"], 3)
            self.assertEqual(len([s for s in sim.snapshots()
                                  if s.get("tags", {}).get("via") == "libsnapbuild"]), 1)

    def test_errors_are_reported_not_crashed_on(self):
        with Sim() as sim, sim.daemon(tmp=tempfile.mkdtemp(dir=self.tmp)) as d:
            env = dict(self.env, SNAPBUILD_SOCKET=d.socket, LD_LIBRARY_PATH=self.libdir)
            missing = os.path.join(self.tmp, "no-such-dir")
            r = run([self.program, missing], env=env)
            self.assertEqual(r.returncode, 1)
            self.assertIn("cannot open the context directory", r.stderr)
            ctx = os.path.join(self.tmp, "small")
            write_tree(ctx, {"Dockerfile": b"FROM debian:12\n"})
            r = run([self.program, ctx, '{"alias": 5}'], env=env)
            self.assertEqual(r.returncode, 1)
            self.assertIn("code -32602", r.stderr)
            r = run([self.program, ctx, "{not json"], env=env)
            self.assertEqual(r.returncode, 1)
            self.assertIn("params are not valid JSON", r.stderr)
        env = dict(self.env, SNAPBUILD_SOCKET=os.path.join(self.tmp, "nobody.sock"),
                   LD_LIBRARY_PATH=self.libdir)
        r = run([self.program, self.tmp], env=env)
        self.assertEqual(r.returncode, 3)
        self.assertIn("cannot connect to the snapbuild daemon", r.stderr)


class Edges(unittest.TestCase):
    """tests/tools/libsnapbuild-check (linked with the build tree's library): error
    codes and error JSON, a follow stopped by its callback, threads with a handle each."""

    CHECK = os.path.join(BIN_DIR, "tests", "tools", "libsnapbuild-check")

    def run_check(self, d, *args):
        r = run([self.CHECK] + list(args), env=clean_env(SNAPBUILD_SOCKET=d.socket), timeout=120)
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        self.assertNotIn("FAIL", r.stdout)
        return r.stdout.split()

    def test_edges(self):
        tmp = tempfile.mkdtemp(prefix="sb-lib-edges-")
        self.addCleanup(shutil.rmtree, tmp, True)
        ctx = os.path.join(tmp, "app")
        write_tree(ctx, {"Dockerfile": b"FROM debian:12\nRUN make\n"})
        with Sim() as sim, sim.daemon(tmp=tempfile.mkdtemp(dir=tmp)) as d:
            out = self.run_check(d, "errors", "threads")
            for name in ("bad-json", "params-not-object", "unknown-method", "error-json",
                         "not-found", "still-usable", "result-dropped", "threads"):
                self.assertIn(name, out)
            job = wait_job(d, submit_ok(d, ctx)["id"])
            out = self.run_check(d, "stop", job["id"])
            self.assertIn("follow-stopped", out)
            self.assertIn("abandoned-after-stop", out)
            # The daemon is unharmed by a follower that went away mid-answer.
            self.assertEqual(d.call("build.get", {"id": job["id"]})["state"], "succeeded")


if __name__ == "__main__":
    unittest.main()
