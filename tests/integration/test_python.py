"""The Python module `snapbuild` (client/python) against snapbuildd + snapbuild-sim.

call/follow/wait are plain Python and run in this process; submit packs through
libsnapbuild with ctypes, so it runs in a child (examples/python/submit_and_wait.py and
small scripts) with nothing but PYTHONPATH=client/python and SNAPBUILD_LIBRARY naming
the library of the build tree under test (in a sanitized tree, with its runtime
preloaded, as Python itself is not built with it).
"""
import json
import os
import re
import subprocess
import sys
import tempfile
import unittest

from harness import BIN_DIR, Daemon, clean_env
from simharness import Sim, submit_ok, write_tree

SOURCE_DIR = os.environ.get(
    "SNAPBUILD_SOURCE_DIR",
    os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
PYDIR = os.path.join(SOURCE_DIR, "client", "python")
EXAMPLE = os.path.join(SOURCE_DIR, "examples", "python", "submit_and_wait.py")
LIBRARY = os.path.join(BIN_DIR, "client", "libsnapbuild.so.1")
sys.path.insert(0, PYDIR)
import snapbuild  # noqa: E402

DOCKERFILE = b"FROM debian:12\nCOPY . /app\nRUN make -C /app\n"


def sanitizer_env():
    with open(os.path.join(BIN_DIR, "CMakeCache.txt")) as f:
        cache = f.read()
    if not re.search(r"^SNAPBUILD_SANITIZE:BOOL=ON$", cache, re.M):
        return {}
    cc = re.search(r"^CMAKE_C_COMPILER:[A-Z]+=(.*)$", cache, re.M).group(1)
    rt = subprocess.run([cc, "-print-file-name=libclang_rt.asan-x86_64.so"],
                        capture_output=True, text=True).stdout.strip()
    # Python's own allocations are not ours to judge: leaks are checked in the C tests.
    return {"LD_PRELOAD": rt, "ASAN_OPTIONS": "detect_leaks=0:abort_on_error=1"}


class PythonModule(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.mkdtemp(prefix="sb-py-")
        self.addCleanup(subprocess.run, ["rm", "-rf", self.tmp])
        self.ctx = os.path.join(self.tmp, "app")
        write_tree(self.ctx, {"Dockerfile": DOCKERFILE, "Makefile": b"all:\n\ttrue\n",
                              ".dockerignore": b"*.key\n", "id.key": b"secret"})
        self.sim = Sim()
        self.addCleanup(self.sim.stop)
        self.d = self.sim.daemon(tmp=tempfile.mkdtemp(dir=self.tmp))
        self.addCleanup(self.d.__exit__, None, None, None)

    def child(self, args, **env):
        e = clean_env(PYTHONPATH=PYDIR, SNAPBUILD_LIBRARY=LIBRARY, SNAPBUILD_SOCKET=self.d.socket)
        e.update(sanitizer_env())
        e.update(env)
        return subprocess.run([sys.executable, "-B"] + args, env=e, capture_output=True,
                              text=True, timeout=120)

    def test_example_submits_follows_and_waits_for_success(self):
        r = self.child([EXAMPLE, self.ctx, "alias=py@v1"])
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        lines = r.stdout.splitlines()
        job_id = lines[0].split()[1]
        self.assertIn("state succeeded", lines)
        self.assertTrue([l for l in lines if l.startswith("log build ")], lines)
        result = lines[-1].split()
        self.assertEqual(result[:2], ["result", "succeeded"])
        self.assertEqual([s["id"] for s in self.sim.snapshots()], [result[2]])
        job = self.d.call("build.get", {"id": job_id})
        self.assertEqual(job["alias"], "py@v1")
        self.assertEqual(job["archive"]["files"], 3)  # the .key file left out

    def test_only_pythonpath_in_a_checkout(self):
        """A script in a checkout needs nothing but PYTHONPATH=client/python: the module
        finds the library of the checkout's build/ (the tree under test only when it
        is that one)."""
        if os.path.realpath(BIN_DIR) != os.path.realpath(os.path.join(SOURCE_DIR, "build")):
            self.skipTest("the build under test is not the checkout's build/")
        e = clean_env(PYTHONPATH=PYDIR, SNAPBUILD_SOCKET=self.d.socket)
        e.pop("SNAPBUILD_LIBRARY", None)
        r = subprocess.run([sys.executable, "-B", EXAMPLE, self.ctx], env=e,
                           capture_output=True, text=True, timeout=120)
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        self.assertEqual(r.stdout.splitlines()[-1].split()[:2], ["result", "succeeded"])

    def test_submit_refused_raises_with_code_and_hint(self):
        script = ("import snapbuild, json\n"
                  "c = snapbuild.Client()\n"
                  "try:\n"
                  "    c.submit(%r, alias='bad alias!')\n"
                  "except snapbuild.Error as e:\n"
                  "    print(json.dumps([e.code, e.message, e.hint]))\n"
                  "try:\n"
                  "    c.submit(%r)\n"
                  "except snapbuild.Error as e:\n"
                  "    print(json.dumps([e.code, e.message, e.hint]))\n"
                  % (self.ctx, os.path.join(self.tmp, "missing")))
        r = self.child(["-c", script])
        self.assertEqual(r.returncode, 0, r.stderr)
        bad_alias, missing = (json.loads(l) for l in r.stdout.splitlines())
        self.assertEqual(bad_alias[0], snapbuild.INVALID_PARAMS)
        self.assertIsNone(missing[0])
        self.assertIn("cannot open the context directory", missing[1])

    def test_submit_to_a_daemon_without_key_carries_the_hint(self):
        with Daemon(tmp=tempfile.mkdtemp(dir=self.tmp)) as d:
            script = ("import snapbuild, json\n"
                      "try:\n"
                      "    snapbuild.Client().submit(%r)\n"
                      "except snapbuild.Error as e:\n"
                      "    print(json.dumps([e.code, e.message, e.hint]))\n" % self.ctx)
            r = self.child(["-c", script], SNAPBUILD_SOCKET=d.socket)
        self.assertEqual(r.returncode, 0, r.stderr)
        code, message, hint = json.loads(r.stdout)
        self.assertEqual(code, snapbuild.UPSTREAM_ERROR)
        self.assertIn("API key", message + hint)
        self.assertTrue(hint)

    def test_call_follow_wait_in_process(self):
        job = submit_ok(self.d, self.ctx, alias="inproc@v1")
        with snapbuild.Client(self.d.socket, timeout=60) as c:
            self.assertEqual(c.call("daemon.version")["protocol_version"], 2)
            info = c.call("daemon.info")
            self.assertEqual(info["caller"]["uid"], os.getuid())
            events = list(c.follow(job["id"]))
            seqs = [e["seq"] for e in events]
            self.assertEqual(seqs, sorted(set(seqs)))
            self.assertEqual(seqs[0], 1)
            self.assertEqual([e["state"] for e in events if e["kind"] == "state"][-1],
                             "succeeded")
            # Again from the middle: exactly the rest.
            rest = list(c.follow(job["id"], after_seq=seqs[2]))
            self.assertEqual([e["seq"] for e in rest], seqs[3:])
            done = c.wait(job["id"])
            self.assertEqual(done["state"], "succeeded")
            self.assertEqual(c.call("build.get", id=job["id"])["snapshot_id"],
                             done["snapshot_id"])

    def test_errors_carry_code_and_hint(self):
        with snapbuild.Client(self.d.socket, timeout=60) as c:
            with self.assertRaises(snapbuild.Error) as cm:
                c.call("no.such.method")
            self.assertEqual(cm.exception.code, snapbuild.METHOD_NOT_FOUND)
            with self.assertRaises(snapbuild.Error) as cm:
                c.call("build.get", id="00000000-0000-4000-8000-000000000000")
            self.assertEqual(cm.exception.code, snapbuild.NOT_FOUND)
            with self.assertRaises(snapbuild.Error) as cm:
                list(c.follow("00000000-0000-4000-8000-000000000000"))
            self.assertEqual(cm.exception.code, snapbuild.NOT_FOUND)
            # The connection is still usable after errors.
            self.assertIn("version", c.call("daemon.version"))
        with self.assertRaises(snapbuild.ConnectError) as cm:
            snapbuild.Client(os.path.join(self.tmp, "nobody.sock"))
        self.assertIsNone(cm.exception.code)

    def test_hint_is_kept(self):
        e = snapbuild.Error.from_rpc({"code": -32004, "message": "no API key",
                                      "data": {"hint": "give it one"}})
        self.assertEqual((e.code, e.message, e.hint), (-32004, "no API key", "give it one"))
        self.assertEqual(str(e), "no API key\nhint: give it one")


if __name__ == "__main__":
    unittest.main()
