"""What reaches a terminal: hostile bytes put where another user or the service can put
them come out of every command visibly escaped, never acted on.

A scripted service (a small HTTP server here, builder and management API in one) sends a
build log line full of escape sequences and control characters (OSC 0 window title,
OSC 52 clipboard write, CSI 2J, cursor moves, BEL, BS, SO/SI, DEL, C1 controls encoded
as UTF-8 and as raw bytes, invalid UTF-8), fails a build with such an error (a carriage
return in it too), answers registrations with a snapshot id that carries an OSC, lists
snapshots whose tags and project hold escapes, and refuses an alias lookup with a hostile
error message.  A job is submitted with a hostile tag.

For logs, logs --raw, inspect, wait, jobs, snapshots list and get, create (live on a
terminal, plain in a pipe) and an error answer, the test checks the exact bytes of every
line that carries hostile text against the rule of client/sanitize.h (modelled below:
SGR colour kept only when colour is on, everything else escaped as \\xNN or \\u00NN), and
checks the whole output: valid UTF-8, no C0 control but tab and newline, no C1 control,
ESC only in a complete SGR (and none at all without colour).  Each command runs in a
pipe and on a pseudo-terminal, with colour and with NO_COLOR.
"""
import errno
import http.server
import json
import os
import pty
import re
import select
import subprocess
import tempfile
import threading
import time
import unittest
import uuid

from harness import CLI, Conn, Daemon, clean_env
from simharness import submit_ok, wait_job, write_tree

API_KEY = "sk-test-terminal-0123456789"
ESC = b"\x1b"

# A build log line: every class of hostile byte, and one honest colour.
LOG_LINE = (b"evil \x1b]0;owned\x07 clip \x1b]52;c;cm0gLXJmIH4=\x07 cls \x1b[2J\x1b[1;1H "
            b"\x1b[31mred\x1b[0m bel\x07 bs\x08 so\x0e si\x0f del\x7f csi\xc2\x9b2J "
            b"osc\xc2\x9d0;t\xc2\x9c raw\x9b bad\xff dcs \x1bP+q\x1b\\ end")
# A builder's error: a carriage return that would overwrite the line, a newline.
BUILD_ERROR = ("boom \x1b]0;owned\x07 \x1b[2J\rFORGED \x1b[32mgreen\x1b[0m \u009b2J "
               "\u009d0;x\u009c bel\x07 two\nlines")
SNAPSHOT_ID = "11111111-2222-4333-8444-555555555555"
# What the service answers a registration with: an id that sets the window title.
REGISTERED_ID = "22222222-2222-4333-8444-555555555555\x1b]0;snap\x07"
HOSTILE_TAG = "\x1b]52;c;cm0=\x07\u009b31mtag\x1b[31mred\x1b[0m\tnext\nline"
PROJECT = "proj\x1b[2J\u009dx"
NOT_FOUND = "no snapshot \x1b]0;owned\x07 here \u009b2J\x1b[5m"


# --- the rule, modelled -------------------------------------------------------------------

SGR = re.compile(rb"\x1b\[[0-9;:]{0,61}m")


def sanitize(data, color=False, field=False):
    """client/sanitize.c in Python: bytes in, bytes out."""
    if isinstance(data, str):
        data = data.encode("utf-8", "surrogateescape")
    out, i, painted = bytearray(), 0, False
    while i < len(data):
        c = data[i]
        m = SGR.match(data, i) if c == 0x1b else None
        if m:
            if color:
                out += m.group()
                painted = set(m.group()[2:-1]) - {ord("0")} != set()
            i = m.end()
        elif c < 0x20 or c == 0x7f:
            out += bytes([c]) if c in (9, 10) and not field else b"\\x%02x" % c
            i += 1
        elif c < 0x80:
            out.append(c)
            i += 1
        else:
            n = 2 if c < 0xe0 else 3 if c < 0xf0 else 4
            try:
                ch = data[i:i + n].decode("utf-8")
                if len(ch) != 1:
                    raise UnicodeDecodeError("utf-8", b"", 0, 1, "short")
            except UnicodeDecodeError:
                out += b"\\x%02x" % c
                i += 1
                continue
            out += b"\\u%04x" % ord(ch) if ord(ch) <= 0x9f else data[i:i + n]
            i += n
    if painted:
        out += b"\x1b[0m"
    return bytes(out)


OWN_SEQUENCES = re.compile(rb"\r\x1b\[K")


def assert_terminal_safe(test, out, color, what):
    """No control but tab and newline, no C1, valid UTF-8, ESC only in an SGR (and
    only with colour).  The CLI's own progress redraw (CR, erase line) is allowed."""
    rest = OWN_SEQUENCES.sub(b"", out)
    if color:
        rest = SGR.sub(b"", rest)
    test.assertNotIn(ESC, rest, what)
    text = rest.decode("utf-8")  # strict
    bad = [ch for ch in text if (ord(ch) < 0x20 and ch not in "\t\n") or 0x7f <= ord(ch) <= 0x9f]
    test.assertEqual(bad, [], what)


# --- the scripted service -------------------------------------------------------------------

def snapshot(sid, job_id=""):
    return {"id": sid, "organization_id": "org\x1b]0;org\x07", "project_id": PROJECT,
            "byte_size": 1234, "memory": False, "ttl": None,
            "tags": {"note": HOSTILE_TAG, "snapbuild.job": job_id},
            "created_at": "2024-01-01T00:00:00Z", "updated_at": "\x1b[2Jnot a time",
            "retired_at": None}


class Service:
    """Builder and management API.  A build with the cache key "fail" fails."""

    def __init__(self):
        self.builds = {}
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a):
                pass

            def body(self):
                return self.rfile.read(int(self.headers.get("Content-Length") or 0))

            def reply(self, code, obj):
                data = json.dumps(obj).encode() if obj is not None else b""
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_POST(self):
                body = self.body()
                path = self.path.split("?")[0]
                if path == "/builds":
                    m = re.search(rb'name="image_name"\r\n\r\n([^\r]*)\r\n', body)
                    bid = str(uuid.uuid4())
                    outer.builds[bid] = {
                        "image": m.group(1).decode() if m else "x:y",
                        "failing": re.search(rb'name="cache_key"\r\n\r\nfail', body) is not None}
                    return self.reply(200, {"build_id": bid})
                if path == "/v1/snapshots":
                    return self.reply(201, snapshot(REGISTERED_ID))
                self.reply(204, None)

            def do_DELETE(self):
                self.reply(200, {"status": "cancelled"})

            def do_GET(self):
                path = self.path.split("?")[0]
                parts = path.strip("/").split("/")
                if parts[0] == "builds" and parts[1] in outer.builds:
                    failing = outer.builds[parts[1]]["failing"]
                    if len(parts) == 3:
                        return self.logs(failing)
                    if failing:
                        return self.reply(200, {"id": parts[1], "status": "failed",
                                                "error": BUILD_ERROR})
                    return self.reply(200, {"id": parts[1], "status": "succeeded",
                                            "image_ref": "registry.invalid/ns/" +
                                            outer.builds[parts[1]]["image"]})
                if path == "/v1/snapshots":
                    return self.reply(200, {"data": [snapshot(SNAPSHOT_ID, "job-x")],
                                            "next_cursor": None})
                if path == "/v1/snapshots/" + SNAPSHOT_ID:
                    return self.reply(200, snapshot(SNAPSHOT_ID, "job-x"))
                self.reply(404, {"code": "not_found", "message": NOT_FOUND})

            def logs(self, failing):
                self.send_response(200)
                self.send_header("Content-Type", "text/event-stream")
                self.send_header("Connection", "close")
                self.end_headers()
                end = json.dumps({"error": BUILD_ERROR} if failing else {"done": True})
                self.wfile.write(b"id: 1\ndata: #1 start\n\nid: 2\ndata: " + LOG_LINE +
                                 b"\n\nid: 3\ndata: " + end.encode() + b"\n\n")
                self.wfile.flush()
                self.close_connection = True

        class Server(http.server.ThreadingHTTPServer):
            daemon_threads = True

            def handle_error(self, request, client_address):
                pass

        self.server = Server(("127.0.0.1", 0), Handler)
        self.url = "http://127.0.0.1:%d" % self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


# --- running the CLI ------------------------------------------------------------------------

def run_pipe(args, env):
    r = subprocess.run([CLI] + args, env=env, capture_output=True, timeout=60,
                       stdin=subprocess.DEVNULL)
    return r.returncode, r.stdout, r.stderr


def run_pty(args, env):
    """The CLI with stdout and stderr on one pseudo-terminal; what it wrote, with the
    terminal's own newline translation (\\r\\n for \\n) undone."""
    master, slave = pty.openpty()
    p = subprocess.Popen([CLI] + args, env=env, stdin=subprocess.DEVNULL, stdout=slave,
                         stderr=slave, close_fds=True)
    os.close(slave)
    out = bytearray()
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        ready, _, _ = select.select([master], [], [], 0.2)
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
        elif p.poll() is not None and not select.select([master], [], [], 0.2)[0]:
            break
    os.close(master)
    rc = p.wait(10)
    return rc, bytes(out).replace(b"\r\n", b"\n"), b""


MODES = [  # (name, runner, NO_COLOR, colour expected for a terminal's own texts)
    ("pipe", run_pipe, False, False),
    ("pipe NO_COLOR", run_pipe, True, False),
    ("pty", run_pty, False, True),
    ("pty NO_COLOR", run_pty, True, False),
]


class TerminalTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.mkdtemp(prefix="sbt-")
        cls.service = Service()
        env = clean_env(TOGETHER_API_KEY=API_KEY, TOGETHER_BASE_URL=cls.service.url)
        cls.d = Daemon(env=env, tmp=tempfile.mkdtemp(dir=cls.tmp))
        cls.ctx = os.path.join(cls.tmp, "ctx")
        write_tree(cls.ctx, {"Dockerfile": b"FROM debian:12\nRUN true\n"})
        cls.ok = wait_job(cls.d, submit_ok(cls.d, cls.ctx, tags={"note": HOSTILE_TAG})["id"])
        cls.failed = wait_job(cls.d, submit_ok(cls.d, cls.ctx, cache_key="fail")["id"])

    @classmethod
    def tearDownClass(cls):
        cls.d.stop()
        cls.service.close()
        subprocess.run(["rm", "-rf", cls.tmp])

    def env(self, no_color):
        e = clean_env(SNAPBUILD_SOCKET=self.d.socket, PAGER="cat", COLUMNS="200")
        e.pop("NO_COLOR", None)
        if no_color:
            e["NO_COLOR"] = "1"
        return e

    def run_modes(self, args, check, modes=MODES):
        """Runs args in every mode; check(out, err, colour, name) per run."""
        for name, runner, no_color, color in modes:
            with self.subTest(args=args, mode=name):
                rc, out, err = runner(args, self.env(no_color))
                what = "%s (%s):\n%r\n%r" % (" ".join(args), name, out, err)
                assert_terminal_safe(self, out, color, what)
                assert_terminal_safe(self, err, color, what)
                check(rc, out, err, color, name == "pipe" or name == "pty", what)

    def events(self, job_id):
        with Conn(self.d.socket) as c:
            return c.result("build.logs", {"id": job_id})["events"]

    def hostile_event(self, job_id):
        return next(e for e in self.events(job_id) if e["text"].startswith("evil"))

    def test_the_jobs_are_as_the_service_made_them(self):
        self.assertEqual(self.ok["state"], "succeeded", self.ok)
        self.assertEqual(self.ok["snapshot_id"], REGISTERED_ID)
        self.assertEqual(self.failed["state"], "failed", self.failed)
        self.assertIn("\x1b]0;owned\x07", self.failed["error"])
        ev = self.hostile_event(self.ok["id"])
        self.assertIn("\x07", ev["text"])     # the daemon keeps BEL and the C1s ...
        self.assertIn("\u009b", ev["text"])
        self.assertIn("\x1b]0;owned", ev["raw"])  # ... and the raw line keeps it all

    def test_logs(self):
        ev = self.hostile_event(self.ok["id"])
        want = sanitize(ev["text"]) + b"\n"
        self.assertIn(b"evil  clip  cls  red bel\\x07 bs\\x08 so\\x0e si\\x0f del\\x7f "
                      b"csi\\u009b2J osc\\u009d0;t\\u009c raw", want)

        def check(rc, out, err, color, _, what):
            self.assertEqual(rc, 0, what)
            line = next(l for l in out.splitlines(True) if l.startswith(b"evil"))
            self.assertEqual(line, want, what)
        self.run_modes(["logs", self.ok["id"]], check)

    def test_logs_raw(self):
        ev = self.hostile_event(self.ok["id"])

        def check(rc, out, err, _, colour_on, what):
            # --raw keeps the builder's colour unless NO_COLOR says otherwise, in a pipe too.
            self.assertEqual(rc, 0, what)
            want = sanitize(ev["raw"], color=colour_on) + b"\n"
            line = next(l for l in out.splitlines(True) if l.startswith(b"evil"))
            self.assertEqual(line, want, what)
            self.assertIn(b"evil \\x1b]0;owned\\x07 clip \\x1b]52;c;cm0gLXJmIH4=\\x07 cls "
                          b"\\x1b[2J\\x1b[1;1H ", line, what)
            self.assertIn(b" dcs \\x1bP+q\\x1b\\ end", line, what)
            self.assertEqual(b"\x1b[31mred\x1b[0m" in line, colour_on, what)
            self.assertIn(b"red", line)
            assert_terminal_safe(self, out, colour_on, what)

        for name, runner, no_color, _ in MODES:
            with self.subTest(mode=name):
                rc, out, err = runner(["logs", "--raw", self.ok["id"]], self.env(no_color))
                check(rc, out, err, None, not no_color, name)

    def test_failed_job_error_in_logs_inspect_and_wait(self):
        error = self.failed["error"]

        def check_logs(rc, out, err, color, _, what):
            self.assertIn(sanitize(error, color=color) + b"\n", out, what)
            self.assertIn(b"\\x0dFORGED", out, what)
        self.run_modes(["logs", self.failed["id"]], check_logs)

        def check_inspect(rc, out, err, color, _, what):
            self.assertEqual(rc, 0, what)
            self.assertIn(b"  error:        " + sanitize(error, color=color) + b"\n", out, what)
        self.run_modes(["inspect", self.failed["id"]], check_inspect)

        def check_wait(rc, out, err, color, _, what):
            self.assertEqual(rc, 1, what)
            self.assertEqual(out, self.failed["id"].encode() + b" failed: " +
                             sanitize(error, color=color) + b"\n", what)
        self.run_modes(["wait", self.failed["id"]], check_wait,
                       [m for m in MODES if m[1] is run_pipe])

    def test_inspect_wait_and_jobs_show_service_ids_and_tags_escaped(self):
        sid = sanitize(REGISTERED_ID, field=True)
        self.assertEqual(sid, b"22222222-2222-4333-8444-555555555555\\x1b]0;snap\\x07")
        tag = sanitize("note=" + HOSTILE_TAG, field=True)

        def check_inspect(rc, out, err, color, _, what):
            self.assertIn(b"  snapshot:     " + sid + b"\n", out, what)
            self.assertIn(b"  tags:         " + tag + b"\n", out, what)
        self.run_modes(["inspect", self.ok["id"]], check_inspect)

        def check_wait(rc, out, err, color, _, what):
            self.assertEqual(rc, 0, what)
            self.assertEqual(out, b"%s succeeded %s\n" % (self.ok["id"].encode(), sid), what)
        self.run_modes(["wait", self.ok["id"]], check_wait)

        def check_jobs(rc, out, err, color, _, what):
            self.assertEqual(rc, 0, what)
            # Ids are cut to 12 characters, as docker ps cuts them.
            row = next(l for l in out.splitlines() if l.startswith(self.ok["id"][:12].encode()))
            self.assertIn(b"   " + sid[:12] + b"   ", row, what)
        self.run_modes(["jobs"], check_jobs)

        def check_jobs_whole(rc, out, err, color, _, what):
            self.assertEqual(rc, 0, what)
            row = next(l for l in out.splitlines() if l.startswith(self.ok["id"].encode()))
            self.assertIn(sid, row, what)
        self.run_modes(["jobs", "--no-trunc"], check_jobs_whole)

    def test_snapshots_list_and_get(self):
        tags = sanitize("note=" + HOSTILE_TAG + ", snapbuild.job=job-x", field=True)

        def check_list(rc, out, err, color, _, what):
            self.assertEqual(rc, 0, what)
            row = next(l for l in out.splitlines() if l.startswith(SNAPSHOT_ID.encode()))
            self.assertTrue(row.endswith(tags), what)
        self.run_modes(["snapshots", "list"], check_list,
                       [m for m in MODES if m[1] is run_pipe])

        def check_list_tty(rc, out, err, color, _, what):
            self.assertEqual(rc, 0, what)
            row = next(l for l in out.splitlines() if l.startswith(SNAPSHOT_ID.encode()))
            self.assertIn(tags[:40], row, what)
        self.run_modes(["snapshots", "list"], check_list_tty,
                       [m for m in MODES if m[1] is run_pty])

        def check_get(rc, out, err, color, _, what):
            self.assertEqual(rc, 0, what)
            for line in (b"  project:       proj\\x1b[2J\\u009dx\n",
                         b"  organization:  org\\x1b]0;org\\x07\n",
                         b"  tags:          " + tags + b"\n",
                         b"  updated:       \\x1b[2Jnot a time\n"):
                self.assertIn(line, out, what)
        self.run_modes(["snapshots", "get", SNAPSHOT_ID], check_get)

    def test_error_answers_from_the_daemon(self):
        with Conn(self.d.socket) as c:
            message = c.call("snapshot.get", {"id": "@evil"})["error"]["message"]
        self.assertIn("no snapshot", message)

        def check_service_error(rc, out, err, color, _, what):
            self.assertEqual(rc, 1, what)
            self.assertIn(b"snapbuild: " + sanitize(message, color=color) + b"\n", out + err,
                          what)
        self.run_modes(["snapshots", "get", "@evil"], check_service_error)

        def check_params_error(rc, out, err, color, _, what):
            self.assertEqual(rc, 2, what)  # a parameter the daemon refused: usage error
            self.assertIn(b"bad\\x1b]0;x\\x07alias", out + err, what)
        self.run_modes(["create", "--context", self.ctx, "--alias", "bad\x1b]0;x\x07alias"],
                       check_params_error)

    def test_create_live_and_plain(self):
        sid = sanitize(REGISTERED_ID, field=True)

        def check_ok(rc, out, err, color, _, what):
            self.assertEqual(rc, 0, what)
            both = out + err
            self.assertIn(b"evil  clip  cls  red bel\\x07 bs\\x08", both, what)
            self.assertIn(sid + b"\n", both, what)
        self.run_modes(["create", "--context", self.ctx], check_ok)

        error = self.failed["error"]

        def check_failed(rc, out, err, color, _, what):
            self.assertEqual(rc, 1, what)
            both = out + err
            job = re.search(rb"Build failed \(job ([0-9a-f-]{12})\)", both).group(1)
            cross = b"\x1b[31m\xe2\x9c\x96\x1b[0m" if color else "✖".encode()
            want = (cross + b" Build failed (job " + job + b"): " + sanitize(error, color=color)
                    + b"\n")
            self.assertIn(want, both, what)
            self.assertIn(b"boom \\x1b]0;owned\\x07 \\x1b[2J\\x0dFORGED green \\u009b2J "
                          b"\\u009d0;x\\u009c bel\\x07 two\nlines\n", SGR.sub(b"", want))
            self.assertIn(b"snapbuild logs " + job + b"\n", both, what)
            self.assertEqual(both.count(b"FORGED"), 1, what)
            self.assertEqual(b"\x1b[32mgreen\x1b[0m" in want, color, what)
        self.run_modes(["create", "--context", self.ctx, "--cache-key", "fail"], check_failed)


if __name__ == "__main__":
    unittest.main()
