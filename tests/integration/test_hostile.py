"""Hostile input: over the socket, from the network, in contexts, and a full disk.

Socket (SocketTest): truncated lines, messages over and at the 1 MiB limit, 100,000
levels of nesting, invalid UTF-8, wrongly typed params for every build.* method, file
descriptors attached to garbage, and 10,000 seeded random messages: each gets the
JSON-RPC error PROTOCOL.md names, the connection stays usable where it says so, the
daemon keeps answering daemon.info and leaks no descriptor.

Followers (FollowerTest): clients that follow a 200,000-line build and stop reading
are held back, not buffered for (about 1 MiB queued each, the rest waits in the store):
the daemon's RSS stays bounded, nobody is dropped, a reader that keeps up gets every
line exactly once, and the stalled ones get everything once they read again.

Network (NetworkTest): a scripted builder (a small HTTP server here) sends a 10 MiB SSE
line (stored cut to 1 MiB with the truncation marker), a line that never ends (memory
bounded, the job can still be cancelled), garbage bytes (every stored line is valid
UTF-8 and the job ends), and status bodies that are not JSON (the job fails, saying so).

Contexts (ContextTest): 100,000 tiny files (the million of the issue, scaled to keep
the suite fast) with the daemon's RSS bounded while packing; files that vanish, shrink
and grow while a context is packed (the job succeeds with a valid archive or fails
with a context error, never a corrupt upload); symlink loops, FIFOs, character and
block devices and sockets (skipped with a warning, symlinks kept as links).

Storage (StorageFullTest): with the database capped (SNAPBUILD_TEST_MAX_PAGE_COUNT), a
chatty build fills it: the job fails with a storage error, and the daemon keeps
answering daemon.info, build.list and build.get.
"""
import http.server
import json
import os
import random
import re
import socket
import stat
import subprocess
import tempfile
import threading
import time
import unittest
import uuid

from harness import DAEMON, WRAPPER, Conn, Daemon, clean_env, wait_for
from simharness import API_KEY, Sim, submit_ok, wait_job, write_tree

DOCKERFILE = b"FROM debian:12\nRUN echo building\nCOPY . /app\n"
MARKER = " \u2026[truncated]"
MiB = 1 << 20
# Keeps ASan's quarantine of freed memory from passing for growth (ignored otherwise).
ASAN_SMALL = "quarantine_size_mb=16:thread_local_quarantine_size_kb=64"




def _sanitized():
    with open(DAEMON, "rb") as f:
        return b"__asan_init" in f.read()


# Memory bounds in MiB are doubled for a daemon built with ASan (shadow memory,
# redzones, an allocator that keeps freed chunks), and more under a wrapper (valgrind).
MEM_FACTOR = 4 if WRAPPER else 2 if _sanitized() else 1


def daemon_env(**extra):
    opts = os.environ.get("ASAN_OPTIONS", "")
    extra["ASAN_OPTIONS"] = (opts + ":" if opts else "") + ASAN_SMALL
    return extra


def rss_kib(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS for %d" % pid)


def fd_count(pid):
    return len(os.listdir("/proc/%d/fd" % pid))


class RssWatch:
    """Samples a process's RSS on a thread; peak_growth() is in MiB over the start."""

    def __init__(self, pid):
        self.pid = pid
        self.base = rss_kib(pid)
        self.peak = self.base
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)
        self._t.start()

    def _run(self):
        while not self._stop.is_set():
            try:
                self.peak = max(self.peak, rss_kib(self.pid))
            except (FileNotFoundError, ProcessLookupError, AssertionError):
                return  # the process is gone or exiting
            self._stop.wait(0.01)

    def stop(self):
        self._stop.set()
        self._t.join()
        return self

    def growth_mib(self):
        g = (self.peak - self.base) / 1024.0
        if os.environ.get("SNAPBUILD_TEST_VERBOSE"):
            print("RSS %d KiB -> peak %d KiB (+%.1f MiB)" % (self.base, self.peak, g))
        return g


def assert_bounded(test, watch, mib):
    """The RSS grew by less than mib MiB (times MEM_FACTOR) while watched."""
    growth = watch.growth_mib()
    test.assertLess(growth, mib * MEM_FACTOR, "RSS grew by %.1f MiB" % growth)


def all_events(d, job_id):
    events, after = [], 0
    while True:
        r = d.call("build.logs", {"id": job_id, "after_seq": after, "limit": 5000})
        events += r["events"]
        after = r["last_seq"]
        if not r["more"]:
            return events


class Raw:
    """A socket for bytes that are not JSON-RPC; reads answers line by line."""

    def __init__(self, path, timeout=20):
        self.c = Conn(path, timeout)

    def send(self, data, fds=None):
        self.c.send_raw(data, fds)

    def answer(self):
        line = self.c.read_line()
        if line is None:
            raise AssertionError("the daemon closed the connection")
        return json.loads(line)

    def alive(self):
        """The connection still serves requests."""
        self.c.send("daemon.version", id="ping")
        while True:
            m = self.answer()
            if m.get("id") == "ping":
                return m["result"]["protocol_version"] == 3

    def close(self):
        self.c.close()


# --- over the socket -------------------------------------------------------------------

class SocketTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        # No API key and an unreachable API: whatever the random messages start ends fast.
        env = clean_env(TOGETHER_BASE_URL="http://127.0.0.1:9", **daemon_env())
        cls.d = Daemon(env=env)
        cls.fds_before = fd_count(cls.d.proc.pid)

    @classmethod
    def tearDownClass(cls):
        cls.d.__exit__(None, None, None)

    def raw(self):
        r = Raw(self.d.socket)
        self.addCleanup(r.close)
        return r

    def assert_error(self, answer, code, id=None):
        self.assertEqual(answer.get("jsonrpc"), "2.0", answer)
        self.assertEqual(answer["error"]["code"], code, answer)
        self.assertEqual(answer.get("id", "absent"), id, answer)
        self.assertTrue(answer["error"]["message"], answer)

    def test_truncated_messages(self):
        r = self.raw()
        r.send(b'{"jsonrpc":"2.0","id":1,"method":"daemon.in\n')
        self.assert_error(r.answer(), -32700)
        r.send(b'{"jsonrpc":"2.0","id":2,"method":"daemon.info","params":{"a":[1,2\n')
        self.assert_error(r.answer(), -32700)
        self.assertTrue(r.alive())
        # Half a line, then the client shuts its side: nothing answered, then closed.
        r.send(b'{"jsonrpc":"2.0","id":3,"method":"daemon.info"')
        r.c.sock.shutdown(socket.SHUT_WR)
        self.assertIsNone(r.c.read_line())
        # Half a line, then gone altogether.
        s = socket.socket(socket.AF_UNIX)
        s.connect(self.d.socket)
        s.sendall(b'{"jsonrpc":"2.0","id":4,"meth')
        s.close()
        self.assertEqual(self.d.call("daemon.version")["protocol_version"], 3)

    def test_oversize_messages(self):
        r = self.raw()
        # Exactly 1 MiB without the newline: served.
        head = b'{"jsonrpc":"2.0","id":"big","method":"daemon.version","params":{"pad":"'
        tail = b'"}}'
        msg = head + b"x" * (MiB - len(head) - len(tail)) + tail
        self.assertEqual(len(msg), MiB)
        r.send(msg + b"\n")
        self.assertEqual(r.answer()["id"], "big")
        # One byte more, and a much longer one: -32600, id null, and the line skipped.
        r.send(msg[:-2] + b'x"}}\n')
        a = r.answer()
        self.assert_error(a, -32600)
        self.assertIn("1048576", a["error"]["data"]["detail"])
        r.send(b"[" * (5 * MiB) + b"\n")
        self.assert_error(r.answer(), -32600)
        self.assertTrue(r.alive())
        # A long line in small pieces is still one line.
        for _ in range(40):
            r.send(b" " * 65536)
        r.send(b'{"jsonrpc":"2.0","id":7,"method":"daemon.version"}\n')
        self.assert_error(r.answer(), -32600)
        self.assertTrue(r.alive())

    def test_deep_nesting(self):
        r = self.raw()
        for blob in (b"[" * 100000, b"[" * 100000 + b"]" * 100000,
                     b'{"a":' * 100000 + b"1" + b"}" * 100000):
            r.send(blob + b"\n")
            self.assert_error(r.answer(), -32700)
        deep = b'{"jsonrpc":"2.0","id":5,"method":"build.get","params":{"id":' + \
            b"[" * 5000 + b"]" * 5000 + b"}}"
        r.send(deep + b"\n")
        self.assertIn(r.answer()["error"]["code"], (-32700, -32602))
        self.assertTrue(r.alive())

    def test_invalid_utf8(self):
        r = self.raw()
        bad = [b"\xff", b"\xc0\xaf", b"\xe0\x80\xaf", b"\xed\xa0\x80", b"\xf4\x90\x80\x80",
               b"\xc3", b"\x80", b"\xf8\x88\x80\x80\x80"]
        for b in bad:
            r.send(b'{"jsonrpc":"2.0","id":1,"method":"daemon.version","params":{"x":"' +
                   b + b'"}}\n')
            self.assert_error(r.answer(), -32700)
            r.send(b + b"\n")
            self.assert_error(r.answer(), -32700)
        ok = '{"jsonrpc":"2.0","id":"\u00e9\u6f22\U0001f600","method":"daemon.version"}\n'
        r.send(ok.encode())
        self.assertEqual(r.answer()["id"], "\u00e9\u6f22\U0001f600")
        self.assertTrue(r.alive())

    def test_wrong_types_for_every_build_method(self):
        job = str(uuid.uuid4())
        wrong = [1, 1.5, True, None, [], {}, "s", [1], {"a": 1}]
        typed = {
            "build.submit": {"image": "s", "dockerfile": "s", "alias": "s", "tags": {},
                             "ttl": 1, "cache_key": "s", "build_args": {}, "backend": "s",
                             "architecture": "s", "context": "s"},
            "build.get": {"id": "s"}, "build.wait": {"id": "s"}, "build.cancel": {"id": "s"},
            "build.retry": {"id": "s"},
            "build.logs": {"id": "s", "after_seq": 1, "follow": True, "limit": 1},
            "build.list": {"limit": 1, "cursor": "s", "all_users": True, "state": "s"},
            "build.prune": {"older_than": 1, "all_users": True},
        }
        with Conn(self.d.socket) as c:
            for method, fields in typed.items():
                for params in ([], [1, 2], "x", 3, True):
                    a = c.call(method, params)
                    self.assertIn(a["error"]["code"], (-32600, -32602), (method, params, a))
                a = c.call(method, {"no_such_param": 1})
                self.assertEqual(a["error"]["code"], -32602, (method, a))
                for field, good in fields.items():
                    for value in wrong:
                        if value is None or type(value) is type(good) or \
                                (field == "state" and isinstance(value, list)):
                            continue
                        params = {"id": job} if "id" in fields and field != "id" else {}
                        params[field] = value
                        a = c.call(method, params)
                        self.assertEqual(a["error"]["code"], -32602, (method, params, a))
                        self.assertIn(field, a["error"]["message"], (method, params, a))
            self.assertEqual(c.result("daemon.version")["protocol_version"], 3)

    def test_envelopes(self):
        r = self.raw()
        cases = [
            (b'{"jsonrpc":"1.0","id":1,"method":"daemon.info"}', -32600, 1),
            (b'{"id":1,"method":"daemon.info"}', -32600, 1),
            (b'{"jsonrpc":"2.0","id":1,"method":5}', -32600, 1),
            (b'{"jsonrpc":"2.0","id":{"a":1},"method":"daemon.info"}', -32600, None),
            (b'{"jsonrpc":"2.0","id":1,"method":"daemon.info","params":null}', -32600, 1),
            (b'{"jsonrpc":"2.0","id":1,"method":"nope.nope"}', -32601, 1),
            (b'[]', -32600, None), (b'"x"', -32600, None), (b'17', -32600, None),
            (b'{"jsonrpc":"2.0","id":1,"method":"daemon.info"} x', -32700, None),
            (b"{'jsonrpc':'2.0'}", -32700, None), (b'{"a":1,/*c*/"b":2}', -32700, None),
            (b'{"jsonrpc":"2.0","id":1,"method":"daemon.info"\x01}', -32700, None),
        ]
        for line, code, id in cases:
            r.send(line + b"\n")
            self.assert_error(r.answer(), code, id)
        r.send(b"[1,2]\n")
        a = r.answer()
        self.assertEqual([e["error"]["code"] for e in a], [-32600, -32600])
        r.send(b'\n   \r\n{"jsonrpc":"2.0","method":"daemon.info"}\n')  # blank and notification
        self.assertTrue(r.alive())

    def test_descriptors_on_garbage_are_closed(self):
        r = self.raw()
        # One round trip first, so the daemon has accepted this connection before counting.
        r.send(b'{"jsonrpc":"2.0","id":0,"method":"daemon.version"}\n')
        r.answer()
        before = fd_count(self.d.proc.pid)
        lines = [b"garbage\n", b'{"jsonrpc":"2.0","id":1,"method":"nope"}\n',
                 b'{"jsonrpc":"2.0","id":1,"method":"daemon.version"}\n',
                 b'{"jsonrpc":"2.0","id":1,"method":"build.get","params":{"id":"x"}}\n',
                 b'[{"jsonrpc":"2.0","id":1,"method":"daemon.version"},2]\n',
                 b"\xff\n", b"[" * 200 + b"\n"]
        for i in range(70):
            fd = os.open("/", os.O_RDONLY | os.O_DIRECTORY)
            r.send(lines[i % len(lines)], fds=[fd, fd] if i % 3 == 0 else [fd])
            os.close(fd)
            r.answer()
        self.assertTrue(r.alive())
        wait_for(lambda: fd_count(self.d.proc.pid) <= before, 10, "descriptors to be closed")

    def test_ten_thousand_random_messages(self):
        rng = random.Random(20251128)
        methods = ["daemon.info", "daemon.version", "build.submit", "build.get", "build.list",
                   "build.logs", "build.wait", "build.cancel", "build.retry", "build.prune",
                   "context.inspect", "context.save", "snapshot.list", "snapshot.get",
                   "snapshot.alias", "snapshot.unalias", "snapshot.retire", "", "build.",
                   ".", "build.get.x", "x" * 300, "daemon.info\u0000", "\u00e9"]
        keys = ["id", "after_seq", "follow", "limit", "state", "cursor", "all_users", "image",
                "dockerfile", "alias", "tags", "ttl", "cache_key", "build_args", "backend",
                "architecture", "older_than", "sha256", "save", "list_files", "alias", "x"]

        def value(depth=0):
            k = rng.randrange(10 if depth < 4 else 6)
            if k == 0:
                return rng.randrange(-2 ** 63, 2 ** 63)
            if k == 1:
                return rng.choice([0, -1, 1, 2 ** 31, 1e308, -0.0, 0.5])
            if k == 2:
                return rng.choice([True, False, None])
            if k in (3, 4, 5):
                n = rng.randrange(0, 40)
                s = "".join(chr(rng.choice([rng.randrange(32, 127), rng.randrange(0, 0x2FFFF)]))
                            for _ in range(n))
                return s.encode("utf-8", "replace").decode("utf-8", "replace")
            if k in (6, 7):
                return [value(depth + 1) for _ in range(rng.randrange(0, 5))]
            return {rng.choice(keys): value(depth + 1) for _ in range(rng.randrange(0, 5))}

        def request():
            m = {}
            if rng.random() < 0.95:
                m["jsonrpc"] = "2.0" if rng.random() < 0.9 else value()
            if rng.random() < 0.95:
                m["method"] = rng.choice(methods) if rng.random() < 0.9 else value()
            if rng.random() < 0.8:
                p = value()
                if isinstance(p, dict):
                    # Never a context path: the daemon would pack whatever it names.
                    p.pop("context", None)
                    if m.get("method") == "build.wait" or (m.get("method") == "build.logs"
                                                           and p.get("follow") is True):
                        p["id"] = str(uuid.uuid4())  # no such job: answered at once
                m["params"] = p
            if rng.random() < 0.85:
                m["id"] = rng.choice([rng.randrange(1 << 40), "s%d" % rng.randrange(100), None,
                                      1.5, value()])
            return m

        def message():
            k = rng.random()
            if k < 0.55:
                return json.dumps(request()).encode()
            if k < 0.65:
                return json.dumps([request() for _ in range(rng.randrange(0, 6))]).encode()
            if k < 0.75:
                t = json.dumps(request()).encode()
                return t[:rng.randrange(len(t))]
            if k < 0.85:
                return json.dumps(value()).encode()
            if k < 0.92:
                b = bytes(rng.randrange(256) for _ in range(rng.randrange(1, 200)))
                return b.replace(b"\n", b" ")
            t = bytearray(json.dumps(request()).encode())
            for _ in range(rng.randrange(1, 4)):
                t[rng.randrange(len(t))] = rng.randrange(256)
            return bytes(t).replace(b"\n", b" ")

        msgs = [message() for _ in range(10000)]
        sent = 0
        answers = 0
        for chunk_start in range(0, len(msgs), 250):
            r = Raw(self.d.socket, timeout=60)
            chunk = msgs[chunk_start:chunk_start + 250]
            r.send(b"".join(m + b"\n" for m in chunk))
            sent += len(chunk)
            r.c.send("daemon.info", id="sentinel-%d" % chunk_start)
            while True:
                a = r.answer()  # every line is JSON
                answers += 1
                if isinstance(a, dict) and a.get("id") == "sentinel-%d" % chunk_start:
                    self.assertIn("result", a)
                    break
            r.close()
        self.assertEqual(sent, 10000)
        self.assertGreater(answers, 5000)
        self.assertIsNone(self.d.proc.poll())
        info = self.d.call("daemon.info")
        self.assertEqual(info["pid"], self.d.proc.pid)
        wait_for(lambda: fd_count(self.d.proc.pid) <= self.fds_before + 2, 20,
                 "the daemon's descriptors to settle")


# --- followers that do not read ----------------------------------------------------------

# Runs as another uid: opens connections, each with a megabyte of a line never ended,
# and reports what the daemon did with each; holds them until stdin closes.
FLOOD = r"""
import json, socket, sys
path, n, size = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
held, refused, errors = [], [], []
for i in range(n):
    s = socket.socket(socket.AF_UNIX)
    try:
        s.connect(path)
    except OSError as e:
        errors.append(e.errno)
        continue
    s.settimeout(0.2)
    try:
        s.sendall(b'{"jsonrpc":"2.0","id":1,"method":"daemon.info","params":{"x":"'
                  + b"a" * size)
    except OSError:
        pass
    try:
        line = s.recv(65536)
    except socket.timeout:
        held.append(s)
        continue
    except OSError:
        line = b""
    refused.append(line.decode(errors="replace"))
    s.close()
# A refusal delayed past the short wait above is still a refusal: look once more.
still = []
for s in held:
    s.settimeout(1.0 if not still else 0.05)
    try:
        line = s.recv(65536)
        refused.append(line.decode(errors="replace"))
        s.close()
    except socket.timeout:
        still.append(s)
    except OSError:
        refused.append("")
held = still
print(json.dumps({"held": len(held), "refused": refused, "errors": errors}), flush=True)
sys.stdin.read()
"""


class ConnectionLimitsTest(unittest.TestCase):
    """One local user floods the socket: per-user connection and input bounds hold, the
    daemon's memory stays bounded, and other users and root are still served."""

    ATTACKER, VICTIM = 65534, 65533

    def setUp(self):
        if os.geteuid() != 0:
            self.skipTest("needs root to act as other uids")
        self.tmp = tempfile.mkdtemp(prefix="sbl-")
        os.chmod(self.tmp, 0o755)
        self.addCleanup(subprocess.run, ["rm", "-rf", self.tmp])
        os.makedirs(os.path.join(self.tmp, "run"), mode=0o755)
        self.d = Daemon(env=clean_env(**daemon_env()), tmp=self.tmp,
                        config="socket_mode = 0666\nmax_connections_per_user = 64\n")
        self.addCleanup(self.d.__exit__, None, None, None)

    def as_uid(self, uid, *argv, **kw):
        return ["setpriv", "--reuid=%d" % uid, "--regid=%d" % uid, "--clear-groups"] + list(argv)

    def victim_info(self):
        script = ("import json,socket,sys\ns=socket.socket(socket.AF_UNIX)\n"
                  "s.connect(sys.argv[1])\n"
                  "s.sendall(b'{\"jsonrpc\":\"2.0\",\"id\":7,\"method\":\"daemon.info\"}\\n')\n"
                  "print(s.makefile().readline())")
        r = subprocess.run(self.as_uid(self.VICTIM, "python3", "-c", script, self.d.socket),
                           capture_output=True, text=True, timeout=30)
        self.assertEqual(r.returncode, 0, r.stderr)
        return json.loads(r.stdout)

    def flood(self, n, size):
        p = subprocess.Popen(self.as_uid(self.ATTACKER, "python3", "-c", FLOOD, self.d.socket,
                                         str(n), str(size)),
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        self.addCleanup(p.kill)
        report = json.loads(p.stdout.readline())
        report["lines"] = [json.loads(l.splitlines()[0]) for l in report["refused"] if l.strip()]
        return p, report

    def end(self, p):
        p.stdin.close()
        p.stdout.close()
        p.wait(30)

    def test_flood_of_unfinished_lines(self):
        watch = RssWatch(self.d.proc.pid)
        p, report = self.flood(600, MiB - 100)
        # The daemon answers others while the flood is held open.
        v = self.victim_info()
        self.assertEqual(v["result"]["caller"]["uid"], self.VICTIM, v)
        self.assertEqual(self.d.call("daemon.version")["protocol_version"], 3)
        watch.stop()
        self.end(p)
        # Past 16 MiB of unfinished input its connections are dropped with a notice.
        self.assertLessEqual(report["held"], 17, report["held"])
        self.assertGreaterEqual(len(report["lines"]), 600 - 17 - len(report["errors"]))
        for m in report["lines"]:
            self.assertEqual(m.get("method"), "daemon.dropped", m)
            self.assertIn("unfinished messages", m["params"]["reason"])
        assert_bounded(self, watch, 256)

    def test_flood_of_connections(self):
        p, report = self.flood(600, 10)
        v = self.victim_info()
        self.assertEqual(v["result"]["caller"]["uid"], self.VICTIM, v)
        self.end(p)
        # At most its share of connections was kept; the rest got one polite line.
        self.assertEqual(report["held"], 64, report["held"])
        self.assertEqual(len(report["lines"]), 600 - 64 - len(report["errors"]))
        for b in report["lines"]:
            self.assertEqual(b["error"]["code"], -32007, b)
            self.assertIn("max_connections_per_user", b["error"]["message"])
            self.assertIsNone(b["id"])
        # Once they are closed, the same user may connect again.
        def again():
            p2, r2 = self.flood(3, 10)
            self.end(p2)
            return r2["held"] == 3
        wait_for(again, 10, "the attacker's closed connections to be counted out")


class FollowerTest(unittest.TestCase):
    def test_followers_that_do_not_read_are_held_back_not_buffered(self):
        """Backpressure, not buffering: a follower that stops reading gets no more than
        about 1 MiB queued; the rest waits in the store until it reads again, and then
        it gets every event once, in order."""
        tmp = tempfile.mkdtemp(prefix="sbh-")
        self.addCleanup(subprocess.run, ["rm", "-rf", tmp])
        ctx = os.path.join(tmp, "ctx")
        write_tree(ctx, {"Dockerfile": DOCKERFILE})
        lines = 200000
        sim = Sim("--log-lines", str(lines))
        self.addCleanup(sim.stop)
        d = sim.daemon(tmp=tempfile.mkdtemp(dir=tmp), env=daemon_env())
        self.addCleanup(d.__exit__, None, None, None)
        sim.faults(hold="start")
        job = submit_ok(d, ctx)["id"]
        wait_job(d, job, states=("building",))

        slow = []
        for _ in range(3):
            s = socket.socket(socket.AF_UNIX)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            s.connect(d.socket)
            s.sendall(json.dumps({"jsonrpc": "2.0", "id": 1, "method": "build.logs",
                                  "params": {"id": job, "follow": True}}).encode() + b"\n")
            slow.append(s)
        self.addCleanup(lambda: [s.close() for s in slow])

        seqs, texts, result = [], [], {}
        drops = [0]

        def reader():
            after = 0
            while True:
                with Conn(d.socket, timeout=120) as c:
                    c.send("build.logs", {"id": job, "follow": True, "after_seq": after})
                    while True:
                        line = c.read_line()
                        if line is None:
                            drops[0] += 1
                            break
                        m = json.loads(line)
                        if "id" in m:
                            result.update(m)
                            return
                        if m["method"] == "build.event":
                            seqs.append(m["params"]["seq"])
                            texts.append(m["params"]["text"])
                            after = m["params"]["seq"]
        t = threading.Thread(target=reader)
        t.start()
        # Every follower is listening before the build starts.
        wait_for(lambda: d.call("daemon.info") and True, 10)
        watch = RssWatch(d.proc.pid)
        for b in sim.builds():
            sim.release(b["id"])
        t.join(180)
        self.assertFalse(t.is_alive())
        self.assertEqual(result["result"]["job"]["state"], "succeeded", result)
        # The reading follower kept up: never dropped, every event once, in order.
        self.assertEqual(drops[0], 0)
        self.assertEqual(seqs, list(range(1, len(seqs) + 1)))
        self.assertEqual(len(seqs), result["result"]["last_seq"])
        self.assertEqual(sum(1 for x in texts if "extra output line" in x), lines)
        # Three unread followers of ~45 MiB of notifications each did not grow the daemon.
        watch.stop()
        assert_bounded(self, watch, 64)
        self.assertNotIn("dropping client", d.log())
        # Now they read: each gets everything, then its answer.
        for s in slow:
            s.settimeout(60)
            buf, got, answer = b"", [], None
            while answer is None:
                chunk = s.recv(1 << 20)
                self.assertTrue(chunk, "connection closed before the answer")
                buf += chunk
                *complete, buf = buf.split(b"\n")
                for line in complete:
                    m = json.loads(line)
                    if "id" in m:
                        answer = m
                    else:
                        self.assertEqual(m["method"], "build.event")
                        got.append(m["params"]["seq"])
            self.assertEqual(got, list(range(1, len(got) + 1)))
            self.assertEqual(len(got), answer["result"]["last_seq"])
            self.assertEqual(answer["result"]["job"]["state"], "succeeded")


# --- from the network ------------------------------------------------------------------

class Builder:
    """A scripted image builder on a loopback port.  POST /builds stores the upload;
    GET /builds/{id}/logs and GET /builds/{id} do what the test sets in .logs/.status."""

    def __init__(self):
        self.builds = {}
        self.deletes = []
        self.sent = 0
        self.logs = None
        self.status = None
        self.stop_stream = threading.Event()
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a):
                pass

            def body(self):
                if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                    data = b""
                    while True:
                        n = int(self.rfile.readline().split(b";")[0], 16)
                        if n == 0:
                            self.rfile.readline()
                            return data
                        data += self.rfile.read(n)
                        self.rfile.readline()
                return self.rfile.read(int(self.headers.get("Content-Length", 0)))

            def reply(self, code, body, ctype="application/json"):
                self.send_response(code)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_POST(self):
                body = self.body()
                m = re.search(rb'name="image_name"\r\n\r\n([^\r]*)\r\n', body)
                bid = str(uuid.uuid4())
                outer.builds[bid] = {"image_name": m.group(1).decode() if m else "x:y"}
                self.reply(200, json.dumps({"build_id": bid}).encode())

            def do_DELETE(self):
                bid = self.path.rsplit("/", 1)[-1]
                outer.deletes.append(bid)
                outer.stop_stream.set()
                self.reply(200, json.dumps({"id": bid, "status": "cancelled"}).encode())

            def do_GET(self):
                parts = self.path.split("?")[0].strip("/").split("/")
                build = outer.builds.get(parts[1]) if len(parts) > 1 else None
                if build is None:
                    return self.reply(404, b'{"code":"not_found","message":"no build"}')
                if len(parts) == 3 and parts[2] == "logs":
                    self.send_response(200)
                    self.send_header("Content-Type", "text/event-stream")
                    self.send_header("Connection", "close")
                    self.end_headers()
                    try:
                        outer.logs(outer, self.wfile, self.headers.get("Last-Event-ID"))
                    except (BrokenPipeError, ConnectionResetError):
                        pass
                    self.close_connection = True
                    return
                ref = "registry.sim.invalid/sim-namespace/" + build["image_name"]
                code, body = outer.status(ref) if outer.status else (
                    200, json.dumps({"id": parts[1], "status": "succeeded",
                                     "image_ref": ref}).encode())
                self.reply(code, body)

        class Server(http.server.ThreadingHTTPServer):
            daemon_threads = True

            def handle_error(self, request, client_address):
                pass  # the daemon hung up on an idle keep-alive connection

        self.server = Server(("127.0.0.1", 0), Handler)
        self.url = "http://127.0.0.1:%d" % self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def write(self, w, data):
        w.write(data)
        w.flush()
        self.sent += len(data)

    def close(self):
        self.stop_stream.set()
        self.server.shutdown()
        self.server.server_close()


DONE = b'id: 999\ndata: {"done": true}\n\n'


class NetworkTest(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.mkdtemp(prefix="sbn-")
        self.addCleanup(subprocess.run, ["rm", "-rf", self.tmp])
        self.ctx = os.path.join(self.tmp, "ctx")
        write_tree(self.ctx, {"Dockerfile": DOCKERFILE})
        self.builder = Builder()
        self.addCleanup(self.builder.close)
        self.sim = Sim()
        self.addCleanup(self.sim.stop)
        env = daemon_env(SNAPBUILD_BUILDER_URL=self.builder.url)
        # Every test builds the same context afresh: no reuse of an earlier build.
        self.d = self.sim.daemon(config="stall_timeout_seconds = 30\nreuse_max_age = 0\n", env=env,
                                 tmp=tempfile.mkdtemp(dir=self.tmp))
        self.addCleanup(self.d.__exit__, None, None, None)
        # One ordinary build first, so the baseline RSS has everything warmed up.
        self.builder.logs = lambda b, w, last: b.write(w, b"id: 1\ndata: warm\n\n" + DONE)
        job = wait_job(self.d, submit_ok(self.d, self.ctx)["id"])
        self.assertEqual(job["state"], "succeeded", job)

    def build_lines(self, job_id):
        return [e["text"] for e in all_events(self.d, job_id)
                if e["kind"] == "log" and e["step"] == "build"]

    def test_megabyte_lines_reach_steady_readers_and_the_disk_stays_bounded(self):
        # 150 lines of 1 MB: the followers that read steadily get them all, never dropped
        # as slow readers; the state directory keeps max_log_bytes of them, no more.
        def logs(b, w, last):
            for i in range(150):
                b.write(w, b"id: %d\ndata: %04d " % (i + 1, i) + b"y" * (1000 * 1000 - 5)
                        + b"\n\n")
            b.write(w, DONE)
        self.builder.logs = logs
        self.sim.faults(hold=False)
        before = sum(os.path.getsize(os.path.join(dp, f))
                     for dp, _, fs in os.walk(self.d.state_dir) for f in fs)
        job = submit_ok(self.d, self.ctx)["id"]
        r = self.d.cli("logs", "-f", job, timeout=300)
        self.assertEqual(r.returncode, 0, r.stderr[-500:])
        self.assertNotIn("dropping client", self.d.log())
        done = wait_job(self.d, job)
        self.assertEqual(done["state"], "succeeded", done)
        shown = [l for l in r.stdout.splitlines() if "yyyy" in l]
        stored = self.build_lines(job)
        self.assertEqual(len(shown), len(stored))
        self.assertGreater(len(stored), 30)
        self.assertLess(len(stored), 150)  # the rest were clipped at 64 MiB
        after = sum(os.path.getsize(os.path.join(dp, f))
                    for dp, _, fs in os.walk(self.d.state_dir) for f in fs)
        # The log's cap, plus room for the database's own pages and write-ahead log.
        self.assertLess(after - before, (64 + 32) * MiB)
        # A NUL inside a line through SSE keeps what follows it.
        self.builder.logs = lambda b, w, last: b.write(w, b"id: 1\ndata: a\x00b\n\n" + DONE)
        nul = wait_job(self.d, submit_ok(self.d, self.ctx)["id"])
        self.assertEqual(self.build_lines(nul["id"]), ["a\u2400b"])

    def test_ten_mib_line_is_cut_with_a_marker(self):
        def logs(b, w, last):
            b.write(w, b"id: 1\ndata: first\n\nid: 2\ndata: ")
            for _ in range(10):
                b.write(w, b"x" * MiB)
            b.write(w, b"\n\nid: 3\ndata: after\n\n" + DONE)
        self.builder.logs = logs
        watch = RssWatch(self.d.proc.pid)
        job = wait_job(self.d, submit_ok(self.d, self.ctx)["id"])
        watch.stop()
        self.assertEqual(job["state"], "succeeded", job)
        lines = self.build_lines(job["id"])
        self.assertEqual(lines[0], "first")
        self.assertEqual(lines[2], "after")
        self.assertTrue(lines[1].endswith(MARKER), lines[1][-40:])
        self.assertLessEqual(len(lines[1].encode()), MiB + len(MARKER.encode()))
        self.assertGreater(len(lines[1]), MiB // 2)
        assert_bounded(self, watch, 48)

    def test_never_ending_line_keeps_memory_bounded_and_cancels(self):
        def logs(b, w, last):
            b.write(w, b"id: 1\ndata: start\n\ndata: ")
            chunk = b"y" * (256 << 10)
            while not b.stop_stream.is_set():
                b.write(w, chunk)
        self.builder.logs = logs
        job = submit_ok(self.d, self.ctx)["id"]
        wait_job(self.d, job, states=("building",))
        watch = RssWatch(self.d.proc.pid)
        wait_for(lambda: self.builder.sent > 160 * MiB, 120, "160 MiB of one line")
        self.assertEqual(self.d.call("daemon.version")["protocol_version"], 3)
        with self.d.conn() as c:
            c.result("build.cancel", {"id": job})
        j = wait_job(self.d, job)
        watch.stop()
        self.assertEqual(j["state"], "cancelled", j)
        self.assertEqual(self.builder.deletes, [j["build_id"]])
        # The line never ended, so it was never stored.
        self.assertEqual(self.build_lines(job)[0], "start")
        self.assertNotIn("yyyy", " ".join(self.build_lines(job)))
        assert_bounded(self, watch, 48)

    def test_garbage_bytes(self):
        rng = random.Random(7)
        pieces = [b"data:", b"id:", b"event:", b"retry:", b": comment", b"\r", b"\n", b"\r\n",
                  b"\x00", b"\xff\xfe", b"\xed\xa0\x80", b"\xc3", b"\xe2\x80", b"\xef\xbb\xbf",
                  b"data: {\"done\": fals", b"id: 1\x00", b"id: \r\nX-Forged: 1", b"\x1b[31m",
                  b"data: {\"error\": 5}"]

        def logs(b, w, last):
            out = bytearray()
            while len(out) < 4 * MiB:
                if rng.random() < 0.3:
                    out += rng.choice(pieces)
                else:
                    out += bytes(rng.randrange(256) for _ in range(rng.randrange(1, 64)))
            b.write(w, bytes(out) + b"\n\n" + DONE)
        self.builder.logs = logs
        watch = RssWatch(self.d.proc.pid)
        job = wait_job(self.d, submit_ok(self.d, self.ctx)["id"], timeout=120)
        watch.stop()
        self.assertIn(job["state"], ("succeeded", "failed"), job)
        events = all_events(self.d, job["id"])  # json.loads refuses invalid text
        self.assertGreater(len(events), 10)
        for e in events:
            self.assertIsInstance(e["text"], str)
            e["text"].encode("utf-8")
        assert_bounded(self, watch, 48)
        self.assertEqual(self.d.call("daemon.version")["protocol_version"], 3)

    def test_status_that_is_not_json(self):
        self.builder.logs = lambda b, w, last: b.write(w, b"id: 1\ndata: ok\n\n" + DONE)
        bodies = [(200, b"<html><body>Bad gateway</body></html>"), (200, b'["not", "an object"]'),
                  (200, b'{"status": "succeeded", "image_ref": 42}'),
                  (200, b"{" * (6 * MiB)), (200, b"\xff\xfe\x00garbage")]
        for code, body in bodies:
            with self.subTest(body=body[:30]):
                self.builder.status = lambda ref, body=body, code=code: (code, body)
                job = wait_job(self.d, submit_ok(self.d, self.ctx)["id"], timeout=120)
                self.assertEqual(job["state"], "failed", job)
                self.assertRegex(job["error"], "status|image reference", job)
        # Only the warm-up build of setUp registered a snapshot.
        self.assertEqual(len(self.sim.snapshots()), 1)


class EngineOutputTest(unittest.TestCase):
    """A local engine that prints bytes that are not UTF-8 (Latin-1, binary, a cut
    character): the stored log and every answer stay valid UTF-8, the CLI reads them."""

    def test_engine_output_that_is_not_utf8(self):
        tmp = tempfile.mkdtemp(prefix="sbe-")
        self.addCleanup(subprocess.run, ["rm", "-rf", tmp])
        ctx = os.path.join(tmp, "ctx")
        write_tree(ctx, {"Dockerfile": DOCKERFILE})
        fakebin = os.path.join(tmp, "bin")
        os.makedirs(fakebin)
        with open(os.path.join(fakebin, "docker"), "w") as f:
            f.write("#!/usr/bin/env python3\nimport os, sys\nsys.stdin.read()\n"
                    "if sys.argv[1:2] == ['build']:\n"
                    "    os.write(2, b'#1 caf\\xe9 \\xff\\xfe\\x1b\\xc3\\xa9 bin\\x00ary\\n"
                    "#2 cut \\xe6\\xbc\\n#3 DONE\\n')\n")
        os.chmod(os.path.join(fakebin, "docker"), 0o755)
        sim = Sim()
        self.addCleanup(sim.stop)
        d = sim.daemon(config="local_build = true\nlocal_engine = docker\n",
                       tmp=tempfile.mkdtemp(dir=tmp),
                       env=daemon_env(PATH=fakebin + ":/usr/bin:/bin"))
        self.addCleanup(d.__exit__, None, None, None)
        job = wait_job(d, submit_ok(d, ctx, backend="local")["id"])
        self.assertEqual(job["state"], "succeeded", job)
        with Conn(d.socket) as c:
            c.send("build.logs", {"id": job["id"]})
            raw = c.read_line()
        raw.decode("utf-8")  # strict: raises on any invalid byte
        texts = [e["text"] for e in json.loads(raw)["result"]["events"]]
        # The NUL neither ends the line nor reaches the log raw.
        self.assertIn("#1 caf? ??\u00e9 bin\u2400ary", texts)
        self.assertIn("#2 cut ??", texts)
        r = d.cli("logs", job["id"])
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn("#2 cut ??", r.stdout)


# --- contexts ---------------------------------------------------------------------------

class ContextTest(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.mkdtemp(prefix="sbc-")
        self.addCleanup(subprocess.run, ["rm", "-rf", self.tmp])
        self.sim = Sim()
        self.addCleanup(self.sim.stop)
        self.d = self.sim.daemon(tmp=tempfile.mkdtemp(dir=self.tmp), env=daemon_env())
        self.addCleanup(self.d.__exit__, None, None, None)

    def test_hundred_thousand_tiny_files(self):
        # tmpfs when there is one: creating 100,000 files on a busy disk takes long.
        shm = "/dev/shm" if os.access("/dev/shm", os.W_OK) else None
        ctx = tempfile.mkdtemp(prefix="sbc-many-", dir=shm)
        self.addCleanup(subprocess.run, ["rm", "-rf", ctx])
        with open(os.path.join(ctx, "Dockerfile"), "wb") as f:
            f.write(DOCKERFILE)
        for i in range(100):
            sub = os.path.join(ctx, "d%03d" % i)
            os.mkdir(sub)
            for k in range(1000):
                fd = os.open(os.path.join(sub, "f%04d" % k), os.O_WRONLY | os.O_CREAT, 0o644)
                os.write(fd, b"%d\n" % k)
                os.close(fd)
        watch = RssWatch(self.d.proc.pid)
        job = wait_job(self.d, submit_ok(self.d, ctx)["id"], timeout=180)
        watch.stop()
        self.assertEqual(job["state"], "succeeded", job)
        self.assertGreaterEqual(job["archive"]["files"], 100001)
        b = self.sim.build(job["build_id"])
        self.assertGreaterEqual(b["context"]["entries"], 100001)
        assert_bounded(self, watch, 64)

    def test_files_vanish_and_grow_while_packing(self):
        ctx = os.path.join(self.tmp, "churn")
        names = ["f%03d" % i for i in range(300)]
        block = (b"0123456789abcdef" * 16384)  # 256 KiB, compressible
        write_tree(ctx, {"Dockerfile": DOCKERFILE})
        for n in names:
            with open(os.path.join(ctx, n), "wb") as f:
                f.write(block)
        rng = random.Random(3)
        stop = threading.Event()

        def churn():
            while not stop.is_set():
                p = os.path.join(ctx, rng.choice(names))
                k = rng.randrange(4)
                try:
                    if k == 0:
                        os.unlink(p)
                    elif k == 1:
                        with open(p, "ab") as f:
                            f.write(block[:rng.randrange(1, 65536)])
                    elif k == 2:
                        os.truncate(p, rng.randrange(0, 4096))
                    else:
                        with open(p, "wb") as f:
                            f.write(block)
                except OSError:
                    pass
        t = threading.Thread(target=churn)
        t.start()
        try:
            outcomes = []
            for _ in range(3):
                job = wait_job(self.d, submit_ok(self.d, ctx)["id"], timeout=120)
                outcomes.append(job)
        finally:
            stop.set()
            t.join()
        for job in outcomes:
            if job["state"] == "failed":
                # A context that changed underneath fails as a context problem, never as
                # a corrupt upload the builder refused.
                self.assertIn("packing the context failed", job["error"], job)
            else:
                self.assertEqual(job["state"], "succeeded", job)
                b = self.sim.build(job["build_id"])
                self.assertIn("./Dockerfile", [f["path"] for f in b["files"]])
        self.assertEqual(self.d.call("daemon.version")["protocol_version"], 3)

    def test_special_files(self):
        if os.geteuid() != 0:
            self.skipTest("mknod needs root")
        ctx = os.path.join(self.tmp, "special")
        write_tree(ctx, {"Dockerfile": DOCKERFILE, "dir/file.txt": b"f"})
        os.mkfifo(os.path.join(ctx, "fifo"))
        os.mknod(os.path.join(ctx, "chardev"), stat.S_IFCHR | 0o600, os.makedev(1, 3))
        os.mknod(os.path.join(ctx, "dir", "blockdev"), stat.S_IFBLK | 0o600, os.makedev(7, 200))
        sock = socket.socket(socket.AF_UNIX)
        sock.bind(os.path.join(ctx, "sock"))
        self.addCleanup(sock.close)
        os.symlink("loop-b", os.path.join(ctx, "loop-a"))
        os.symlink("loop-a", os.path.join(ctx, "loop-b"))
        os.symlink("self", os.path.join(ctx, "self"))
        os.symlink("..", os.path.join(ctx, "dir", "up"))
        os.symlink("/etc/passwd", os.path.join(ctx, "outside"))
        os.symlink("missing", os.path.join(ctx, "dangling"))
        job = wait_job(self.d, submit_ok(self.d, ctx)["id"], timeout=60)
        self.assertEqual(job["state"], "succeeded", job)
        files = {f["path"]: f for f in self.sim.build(job["build_id"])["files"]}
        for name in ("fifo", "chardev", "dir/blockdev", "sock"):
            self.assertNotIn("./" + name, files)
        for name, target in (("loop-a", "loop-b"), ("loop-b", "loop-a"), ("self", "self"),
                             ("dir/up", ".."), ("outside", "/etc/passwd"),
                             ("dangling", "missing")):
            self.assertEqual((files["./" + name]["type"], files["./" + name]["link"]),
                             ("symlink", target), name)
        self.assertEqual(files["./dir/file.txt"]["type"], "file")
        # The client packed it, and says what it skipped.
        r = self.d.cli("context", ctx)
        self.assertEqual(r.returncode, 0, r.stderr)
        warnings = [l for l in r.stdout.splitlines() if l.startswith("warning: ")]
        for name in ("fifo", "chardev", "blockdev", "sock"):
            self.assertTrue([w for w in warnings if name in w], (name, warnings))


# --- a full database ------------------------------------------------------------------

class StorageFullTest(unittest.TestCase):
    """The database capped (SNAPBUILD_TEST_MAX_PAGE_COUNT) and filled by a chatty build:
    that job fails with a storage error and a hint, the others keep their records, and
    the daemon keeps answering."""

    def test_full_database_fails_the_job_and_the_daemon_serves_on(self):
        tmp = tempfile.mkdtemp(prefix="sbf-")
        self.addCleanup(subprocess.run, ["rm", "-rf", tmp])
        ctx = os.path.join(tmp, "ctx")
        write_tree(ctx, {"Dockerfile": DOCKERFILE})
        sim = Sim()
        self.addCleanup(sim.stop)
        d = sim.daemon(tmp=tempfile.mkdtemp(dir=tmp),
                       env=daemon_env(SNAPBUILD_TEST_MAX_PAGE_COUNT="160"))
        self.addCleanup(d.__exit__, None, None, None)
        self.assertIn("capped at 160 pages", d.log())
        first = wait_job(d, submit_ok(d, ctx)["id"])
        self.assertEqual(first["state"], "succeeded", first)
        sim.faults(log_lines=100000)
        job = submit_ok(d, ctx, no_cache=True)["id"]  # built again, not reused
        j = wait_job(d, job, timeout=120)
        self.assertEqual(j["state"], "failed", j)
        self.assertIn("storage", j["error"])
        self.assertTrue(j["hint"])
        # Still serving: reads answer, and a write that cannot fit is refused cleanly.
        info = d.call("daemon.info")
        self.assertEqual(info["queue"]["failed"], 1)
        self.assertEqual({x["id"] for x in d.call("build.list")["jobs"]}, {first["id"], job})
        self.assertEqual(d.call("build.get", {"id": first["id"]})["state"], "succeeded")
        sim.faults(log_lines=0)
        with d.conn() as c:
            a = c.submit(ctx)
        if "error" in a:
            self.assertEqual(a["error"]["code"], -32006, a)
        else:
            self.assertIn(wait_job(d, a["result"]["id"])["state"], ("succeeded", "failed"))
        self.assertEqual(d.call("daemon.version")["protocol_version"], 3)
        self.assertIn("cannot write to the database", d.log())


if __name__ == "__main__":
    unittest.main()
