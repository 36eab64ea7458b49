#!/usr/bin/env python3
"""snapbuild-sim against the contract (shared/reference/builder-api.md and
management-api.openapi.json): an SDK-like client drives it through the SDK's
sequence and checks every answer's shape; each fault is checked to do what it says
and to show in the introspection routes; bad requests get the documented 4xx.

Each test starts its own simulator (from $SNAPBUILD_BIN_DIR/tests/sim) and stops it
with SIGTERM, expecting a clean exit: under the sanitizer build that includes the
leak check.
"""

import gzip
import http.client
import io
import json
import os
import re
import signal
import subprocess
import tarfile
import tempfile
import time
import unittest
import uuid

BIN_DIR = os.environ.get("SNAPBUILD_BIN_DIR", os.path.join(os.path.dirname(__file__), "..", "..", "build"))
SIM = os.path.join(BIN_DIR, "tests", "sim", "snapbuild-sim")
SHARED = os.environ.get("SNAPBUILD_SHARED_DIR", os.path.join(os.path.dirname(__file__), "..", "..", "..", "shared"))
API_KEY = "sk-test-" + uuid.uuid4().hex
REGISTRY = "registry.sim.invalid/sim-namespace"
UUID_RE = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
TIME_RE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:\d\d)$")
# The SDK waits 1 s between log retries; the tests use a shorter pause.
RETRY_PAUSE = 0.05


def load_openapi():
    with open(os.path.join(SHARED, "reference", "management-api.openapi.json")) as f:
        return json.load(f)


OPENAPI = load_openapi()
SCHEMAS = OPENAPI["components"]["schemas"]


def wait_for(predicate, timeout=10.0, what="condition"):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError("timed out waiting for " + what)
        time.sleep(0.01)


def make_tgz(files, members=1):
    """files: {name: bytes | ('symlink', target) | (bytes, mode)}; stored as ./name, sorted.
    members > 1 splits the compressed stream into several gzip members."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as t:
        for name in sorted(files):
            v = files[name]
            info = tarfile.TarInfo("./" + name)
            if isinstance(v, tuple) and v[0] == "symlink":
                info.type = tarfile.SYMTYPE
                info.linkname = v[1]
                t.addfile(info)
                continue
            data, mode = (v, 0o644) if isinstance(v, bytes) else v
            info.size = len(data)
            info.mode = mode
            t.addfile(info, io.BytesIO(data))
    data = raw.getvalue()
    if members == 1:
        return gzip.compress(data)
    step = (len(data) + members - 1) // members
    return b"".join(gzip.compress(data[i:i + step]) for i in range(0, len(data), step))


def multipart(fields, files=(), boundary=None, quote=True):
    """fields: [(name, text)]; files: [(name, filename, content_type, bytes)]."""
    boundary = boundary or "----snapbuild" + uuid.uuid4().hex
    out = io.BytesIO()
    for name, value in fields:
        out.write(b"--%s\r\n" % boundary.encode())
        out.write(b'Content-Disposition: form-data; name="%s"\r\n\r\n' % name.encode())
        out.write(value.encode() if isinstance(value, str) else value)
        out.write(b"\r\n")
    for name, filename, ctype, data in files:
        out.write(b"--%s\r\n" % boundary.encode())
        out.write(b'Content-Disposition: form-data; name="%s"; filename="%s"\r\n' % (name.encode(), filename.encode()))
        out.write(b"Content-Type: %s\r\n\r\n" % ctype.encode())
        out.write(data)
        out.write(b"\r\n")
    out.write(b"--%s--\r\n" % boundary.encode())
    ctype = 'multipart/form-data; boundary="%s"' % boundary if quote else "multipart/form-data; boundary=" + boundary
    return out.getvalue(), ctype


def image_name():
    return "image-%s:%s" % (uuid.uuid4(), uuid.uuid4())


def sdk_fields(name=None, dockerfile="Dockerfile", cache_key=None, build_args="{}"):
    fields = [("image_name", image_name() if name is None else name), ("dockerfile", dockerfile),
              ("build_args", build_args), ("nydus_convert", "true")]
    if cache_key is not None:
        fields.append(("cache_key", cache_key))
    return fields


DOCKERFILE = b"FROM alpine:3.19\nWORKDIR /app\nCOPY . /app\nRUN echo hello && make \\\n    all\nCMD [\"/app/run\"]\n"


class Answer:
    def __init__(self, status, headers, body):
        self.status = status
        self.headers = headers
        self.body = body

    def json(self):
        return json.loads(self.body)


class Sim:
    def __init__(self, *args, env=None, state_dir=None):
        self.stderr = tempfile.TemporaryFile()
        e = dict(os.environ)
        e["SNAPBUILD_SIM_API_KEY"] = API_KEY
        e.update(env or {})
        argv = [SIM, "--listen", "127.0.0.1:0", "--log-interval-ms", "2"]
        if state_dir:
            argv += ["--state-dir", state_dir]
        self.proc = subprocess.Popen(argv + list(args), stdout=subprocess.PIPE, stderr=self.stderr, env=e)
        line = self.proc.stdout.readline().decode().strip()
        if not line:
            self.proc.wait(10)
            self.stderr.seek(0)
            raise AssertionError("simulator did not start: " + self.stderr.read().decode())
        self.host, port = line.rsplit(":", 1)
        self.port = int(port)

    def stop(self):
        """SIGTERM; returns (exit status, stderr)."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        rc = self.proc.wait(30)
        self.proc.stdout.close()
        self.stderr.seek(0)
        err = self.stderr.read().decode(errors="replace")
        self.stderr.close()
        return rc, err

    def conn(self, timeout=30):
        return http.client.HTTPConnection(self.host, self.port, timeout=timeout)

    def request(self, method, path, body=None, headers=None, auth=True):
        h = {}
        if auth:
            h["Authorization"] = "Bearer " + API_KEY
        if isinstance(body, (dict, list)):
            body = json.dumps(body).encode()
            h["Content-Type"] = "application/json"
        h.update(headers or {})
        c = self.conn()
        try:
            c.request(method, path, body=body, headers=h)
            r = c.getresponse()
            return Answer(r.status, {k.lower(): v for k, v in r.getheaders()}, r.read())
        finally:
            c.close()

    def sim(self, method, path, body=None):
        a = self.request(method, "/_sim/" + path, body, auth=False)
        assert a.status in (200, 204), (a.status, a.body)
        return a.json() if a.body else None

    def faults(self, **faults):
        return self.sim("POST", "faults", faults)

    def submit(self, files=None, members=1, fields=None, dockerfile_bytes=DOCKERFILE):
        files = files if files is not None else {"Dockerfile": dockerfile_bytes, "app/main.c": b"int main(){}\n"}
        body, ctype = multipart(fields or sdk_fields(),
                                [("context", "context.tar.gz", "application/gzip", make_tgz(files, members))])
        return self.request("POST", "/builds", body, {"Content-Type": ctype})

    def submit_ok(self, **kw):
        a = self.submit(**kw)
        assert a.status == 200, (a.status, a.body)
        return a.json()["build_id"]


class Stream:
    """One connection to the log stream, parsed after the WHATWG SSE rules."""

    def __init__(self, sim, build_id, last_event_id=None):
        self.conn = sim.conn()
        headers = {"Authorization": "Bearer " + API_KEY, "Accept": "text/event-stream"}
        if last_event_id is not None:
            headers["Last-Event-ID"] = str(last_event_id)
        self.conn.request("GET", "/builds/%s/logs" % build_id, headers=headers)
        self.resp = self.conn.getresponse()
        self.status = self.resp.status
        self.dropped = False
        self.comments = 0

    def events(self):
        """Yields (id, data); sets dropped when the stream ends without a final event."""
        ev_id, data = None, []
        try:
            while True:
                line = self.resp.readline()
                if not line:
                    self.dropped = True
                    return
                line = line.decode().rstrip("\n").rstrip("\r")
                if line == "":
                    if data:
                        yield ev_id, "\n".join(data)
                    data = []
                    continue
                if line.startswith(":"):
                    self.comments += 1
                    continue
                field, _, value = line.partition(":")
                if value.startswith(" "):
                    value = value[1:]
                if field == "id":
                    ev_id = int(value)
                elif field == "data":
                    data.append(value)
        except (http.client.IncompleteRead, ConnectionError, http.client.HTTPException):
            self.dropped = True

    def read_all(self):
        out = []
        for ev in self.events():
            out.append(ev)
            if is_final(ev[1]):
                break
        self.close()
        return out

    def close(self):
        self.conn.close()


def is_final(data):
    if not data.startswith("{"):
        return False
    try:
        obj = json.loads(data)
    except ValueError:
        return False
    return isinstance(obj, dict) and ("done" in obj or "error" in obj)


def sdk_follow(sim, build_id, use_last_event_id=False, max_connects=50):
    """The SDK's log loop: 404/408/429/5xx retried up to 5 attempts; a dropped stream
    reconnects with the attempt counter reset.  Returns (events, final, connects)."""
    events, attempts, connects, last = [], 0, 0, None
    while connects < max_connects:
        connects += 1
        s = Stream(sim, build_id, last if use_last_event_id else None)
        if s.status != 200:
            s.resp.read()
            s.close()
            if s.status in (404, 408, 429) or s.status >= 500:
                attempts += 1
                if attempts >= 5:
                    raise AssertionError("log stream kept answering %d" % s.status)
                time.sleep(RETRY_PAUSE)
                continue
            raise AssertionError("log stream answered %d" % s.status)
        for ev_id, data in s.events():
            events.append((ev_id, data))
            last = ev_id
            if is_final(data):
                s.close()
                return events, json.loads(data), connects
        s.close()
        attempts = 0
        time.sleep(RETRY_PAUSE)
    raise AssertionError("too many reconnects")


class SimTestCase(unittest.TestCase):
    sim_args = ()

    def setUp(self):
        self.s = Sim(*self.sim_args)

    def tearDown(self):
        rc, err = self.s.stop()
        self.assertEqual(rc, 0, "simulator exited with %d: %s" % (rc, err))
        self.assertNotIn("Sanitizer", err)
        self.assertNotIn("runtime error", err)

    # --- shape checks against the reference ---

    def check_schema(self, obj, name):
        schema = SCHEMAS[name]
        self.assertIsInstance(obj, dict)
        self.assertEqual(set(obj), set(schema["properties"]), name + " has exactly the spec's fields")
        for field in schema["required"]:
            self.assertIn(field, obj)
        for field, prop in schema["properties"].items():
            types = prop.get("type", "object")
            types = types if isinstance(types, list) else [types]
            v = obj[field]
            ok = {
                "string": isinstance(v, str),
                "integer": isinstance(v, int) and not isinstance(v, bool),
                "boolean": isinstance(v, bool),
                "null": v is None,
                "array": isinstance(v, list),
                "object": isinstance(v, dict),
            }
            self.assertTrue(any(ok[t] for t in types), "%s.%s = %r is not %s" % (name, field, v, types))
            if isinstance(v, str) and prop.get("format") == "uuid":
                self.assertRegex(v, UUID_RE)
            if isinstance(v, str) and prop.get("format") == "date-time":
                self.assertRegex(v, TIME_RE)

    def check_snapshot(self, obj):
        self.check_schema(obj, "Snapshot")
        for v in obj["tags"].values():
            self.assertIsInstance(v, str)

    def check_error(self, answer, status, parameter=None):
        self.assertEqual(answer.status, status, answer.body)
        self.assertEqual(answer.headers.get("content-type"), "application/json")
        body = answer.json()
        self.assertIsInstance(body.get("code"), str)
        self.assertIsInstance(body.get("message"), str)
        self.assertTrue(body["message"])
        self.assertIsInstance(body.get("errors"), list)
        if parameter is not None:
            self.assertIn(parameter, [e.get("parameter") for e in body["errors"]], body)
        return body

    def register(self, image, architecture="amd64", **extra):
        body = {"image": image, "architecture": architecture}
        body.update(extra)
        return self.s.request("POST", "/v1/snapshots", body)


class TestSdkSequence(SimTestCase):
    def test_full_sequence(self):
        name = image_name()
        files = {"Dockerfile": DOCKERFILE, "app/main.c": b"int main(){}\n", "run.sh": (b"#!/bin/sh\n", 0o755),
                 "link": ("symlink", "run.sh")}
        a = self.s.submit(files=files, fields=sdk_fields(name, cache_key="team/app"))
        self.assertEqual(a.status, 200, a.body)
        self.assertEqual(set(a.json()), {"build_id"})
        build_id = a.json()["build_id"]
        self.assertIsInstance(build_id, str)

        events, final, connects = sdk_follow(self.s, build_id)
        self.assertEqual(final, {"done": True})
        self.assertEqual(connects, 1)
        self.assertEqual([e[0] for e in events], list(range(1, len(events) + 1)))
        lines = [d for _, d in events[:-1]]
        self.assertEqual(lines[0], "#1 [internal] load build definition from Dockerfile")
        self.assertTrue(any(re.match(r"^#\d+ \[\d/\d\] RUN echo hello && make", l) for l in lines), lines)
        self.assertIn("hello", [l.split(" ", 2)[2] for l in lines if re.match(r"^#\d+ \d+\.\d{3} ", l)])
        self.assertTrue(any(re.match(r"^#\d+ DONE \d+\.\ds$", l) for l in lines))
        self.assertTrue(any("\x1b[" in l for l in lines), "some lines carry ANSI colours")

        status = self.s.request("GET", "/builds/" + build_id)
        self.assertEqual(status.status, 200)
        st = status.json()
        self.assertEqual(st["status"], "succeeded")
        self.assertEqual(st["id"], build_id)
        self.assertEqual(st["image_ref"], REGISTRY + "/" + name)

        reg = self.register(st["image_ref"], tags={"snapbuild.job": "job-1", "team": "x"}, ttl=3600)
        self.assertEqual(reg.status, 201, reg.body)
        snap = reg.json()
        self.check_snapshot(snap)
        self.assertEqual(snap["tags"], {"snapbuild.job": "job-1", "team": "x"})
        self.assertEqual(snap["ttl"], 3600)
        self.assertIsNone(snap["retired_at"])
        self.assertIs(snap["memory"], False)

        al = self.s.request("POST", "/v1/snapshots/%s/aliases" % snap["id"], {"alias": "myapp@latest"})
        self.assertEqual(al.status, 204)
        self.assertEqual(al.body, b"")
        got = self.s.request("GET", "/v1/snapshots/@myapp@latest")
        self.assertEqual(got.status, 200)
        self.check_snapshot(got.json())
        self.assertEqual(got.json()["id"], snap["id"])
        self.assertEqual(self.s.request("GET", "/v1/snapshots/" + snap["id"]).json(), got.json())
        aliases = self.s.request("GET", "/v1/snapshots/%s/aliases" % snap["id"]).json()
        self.assertEqual(len(aliases), 1)
        self.check_schema(aliases[0], "SnapshotAlias")
        self.assertEqual(aliases[0]["alias"], "myapp@latest")

        # Introspection: what was received and registered.
        b = self.s.sim("GET", "builds/" + build_id)
        self.assertEqual(b["image_name"], name)
        self.assertEqual(b["cache_key"], "team/app")
        self.assertEqual(b["nydus_convert"], "true")
        self.assertEqual(b["build_args"], "{}")
        self.assertEqual(b["context"]["filename"], "context.tar.gz")
        self.assertEqual(b["context"]["content_type"], "application/gzip")
        by_path = {f["path"]: f for f in b["files"]}
        self.assertEqual(sorted(by_path), ["./Dockerfile", "./app/main.c", "./link", "./run.sh"])
        self.assertEqual(by_path["./run.sh"]["mode"], 0o755)
        self.assertEqual(by_path["./Dockerfile"]["size"], len(DOCKERFILE))
        self.assertEqual(by_path["./link"]["type"], "symlink")
        self.assertEqual(by_path["./link"]["link"], "run.sh")
        self.assertEqual(b["dockerfile_text"], DOCKERFILE.decode())
        ctx = self.s.request("GET", "/_sim/builds/%s/context" % build_id, auth=False)
        self.assertEqual(ctx.status, 200)
        self.assertEqual(len(ctx.body), b["context"]["size"])
        snaps = self.s.sim("GET", "snapshots")
        self.assertEqual(len(snaps), 1)
        self.assertEqual(snaps[0]["image"], REGISTRY + "/" + name)
        self.assertEqual(snaps[0]["architecture"], "amd64")
        reqs = self.s.sim("GET", "requests")
        self.assertEqual([(r["method"], r["path"].split("/")[1], r["status"]) for r in reqs[:3]],
                         [("POST", "builds", 200), ("GET", "builds", 200), ("GET", "builds", 200)])
        self.assertEqual(reqs[0]["headers"]["Authorization"], "Bearer ***")
        self.assertGreater(reqs[0]["body_size"], 0)
        self.assertTrue(all(r["authorized"] for r in reqs if not r["path"].startswith("/_sim/")))
        self.assertNotIn(API_KEY, json.dumps(reqs))

    def test_multi_member_gzip_context(self):
        files = {"Dockerfile": DOCKERFILE}
        files.update({"f%03d" % i: os.urandom(3000) for i in range(40)})
        build_id = self.s.submit_ok(files=files, members=4)
        b = self.s.sim("GET", "builds/" + build_id)
        self.assertEqual(b["context"]["entries"], 41)
        self.assertEqual(sdk_follow(self.s, build_id)[1], {"done": True})

    def test_dockerfile_in_subdirectory_and_dot_slash(self):
        files = {"docker/Dockerfile.dev": b"FROM scratch\nCOPY . /\n", "x": b"1"}
        build_id = self.s.submit_ok(files=files, fields=sdk_fields(dockerfile="./docker/Dockerfile.dev"))
        events, final, _ = sdk_follow(self.s, build_id)
        self.assertEqual(final, {"done": True})
        self.assertEqual(events[0][1], "#1 [internal] load build definition from Dockerfile.dev")

    def test_multistage_labels(self):
        df = b"FROM golang:1.22 AS builder\nRUN go build\nFROM alpine\nCOPY --from=builder /out /out\n"
        build_id = self.s.submit_ok(dockerfile_bytes=df)
        lines = [d for _, d in sdk_follow(self.s, build_id)[0]]
        self.assertTrue(any("[builder 2/2] RUN go build" in l for l in lines), lines)
        self.assertTrue(any("[stage-1 2/2] COPY --from=builder /out /out" in l for l in lines), lines)


class TestBuildOutcomes(SimTestCase):
    def follow_error(self, dockerfile):
        build_id = self.s.submit_ok(dockerfile_bytes=dockerfile)
        events, final, _ = sdk_follow(self.s, build_id)
        st = self.s.request("GET", "/builds/" + build_id).json()
        self.assertEqual(st["status"], "failed")
        self.assertNotIn("image_ref", st)
        return final, events

    def test_run_false_fails_naming_the_step(self):
        final, events = self.follow_error(b"FROM alpine\nRUN echo ok\nRUN false\nRUN echo never\n")
        self.assertIn("[3/4] RUN false", final["error"])
        self.assertFalse(any("never" in d for _, d in events))

    def test_run_exit_code(self):
        final, _ = self.follow_error(b"FROM alpine\nRUN make && exit 3\n")
        self.assertIn("exit code: 3", final["error"])
        self.assertIn("RUN make && exit 3", final["error"])

    def test_refused_dockerfiles(self):
        self.assertIn("cannot be empty", self.follow_error(b"# nothing\n")[0]["error"])
        self.assertIn("unknown instruction: FORM", self.follow_error(b"FORM alpine\n")[0]["error"])
        self.assertIn("no build stage", self.follow_error(b"RUN true\n")[0]["error"])

    def test_build_fail_fault(self):
        self.s.faults(build_fail="registry push failed: quota exceeded")
        self.assertEqual(self.s.sim("GET", "faults")["build_fail"], "registry push failed: quota exceeded")
        final, _ = self.follow_error(DOCKERFILE)
        self.assertEqual(final, {"error": "registry push failed: quota exceeded"})
        self.s.faults(build_fail=None)
        self.assertEqual(sdk_follow(self.s, self.s.submit_ok())[1], {"done": True})

    def test_status_no_image_ref(self):
        self.s.faults(status_no_image_ref=True)
        build_id = self.s.submit_ok()
        self.assertEqual(sdk_follow(self.s, build_id)[1], {"done": True})
        st = self.s.request("GET", "/builds/" + build_id).json()
        self.assertEqual(st["status"], "succeeded")
        self.assertNotIn("image_ref", st)
        self.assertTrue(self.s.sim("GET", "builds/" + build_id)["image_ref"].startswith(REGISTRY + "/"))

    def test_log_lines_burst(self):
        self.s.faults(log_lines=5000)
        build_id = self.s.submit_ok()
        events, final, _ = sdk_follow(self.s, build_id)
        self.assertEqual(final, {"done": True})
        extra = [d for _, d in events if "extra output line" in d]
        self.assertEqual(len(extra), 5000)
        self.assertTrue(extra[-1].endswith("extra output line 5000 of 5000"))
        self.assertEqual([e[0] for e in events], list(range(1, len(events) + 1)))

    def test_unknown_build(self):
        missing = str(uuid.uuid4())
        self.check_error(self.s.request("GET", "/builds/" + missing), 404)
        s = Stream(self.s, missing)
        self.assertEqual(s.status, 404)
        s.close()


class TestLogStream(SimTestCase):
    def test_logs_404_then_stream(self):
        self.s.faults(logs_404=2)
        build_id = self.s.submit_ok()
        events, final, connects = sdk_follow(self.s, build_id)
        self.assertEqual(final, {"done": True})
        self.assertEqual(connects, 3)
        self.assertEqual(self.s.sim("GET", "builds/" + build_id)["log_connects"], 3)
        self.assertEqual(self.s.sim("GET", "faults")["logs_404"], 0)
        statuses = [r["status"] for r in self.s.sim("GET", "requests") if r["path"].endswith("/logs")]
        self.assertEqual(statuses, [404, 404, 200])

    def test_drop_after_k_events_twice(self):
        self.s.faults(logs_drop_after={"events": 5, "count": 2})
        build_id = self.s.submit_ok()
        s = Stream(self.s, build_id)
        first = list(s.events())
        s.close()
        self.assertTrue(s.dropped)
        self.assertEqual([e[0] for e in first], [1, 2, 3, 4, 5])
        # The SDK reconnects without Last-Event-ID and sees the start again.
        events, final, connects = sdk_follow(self.s, build_id)
        self.assertEqual(final, {"done": True})
        self.assertEqual(connects, 2)
        self.assertEqual(events[0][0], 1)
        logs = [r for r in self.s.sim("GET", "requests") if r["path"].endswith("/logs")]
        self.assertEqual([r["dropped"] for r in logs], [True, True, False])

    def test_drop_then_resume_with_last_event_id(self):
        self.s.faults(logs_drop_after=7)
        build_id = self.s.submit_ok()
        events, final, connects = sdk_follow(self.s, build_id, use_last_event_id=True)
        self.assertEqual(connects, 2)
        self.assertEqual([e[0] for e in events], list(range(1, len(events) + 1)), "no gap, no duplicate")
        logs = [r for r in self.s.sim("GET", "requests") if r["path"].endswith("/logs")]
        self.assertEqual([r["last_event_id"] for r in logs], [None, "7"])

    def test_last_event_id_resume_and_replay_after_end(self):
        build_id = self.s.submit_ok()
        full = Stream(self.s, build_id).read_all()
        final_id = full[-1][0]
        resumed = Stream(self.s, build_id, last_event_id=10).read_all()
        self.assertEqual(resumed, full[10:])
        end = Stream(self.s, build_id, last_event_id=final_id).read_all()
        self.assertEqual(end, [full[-1]])
        beyond = Stream(self.s, build_id, last_event_id=final_id + 100).read_all()
        self.assertEqual(beyond, [full[-1]])
        again = Stream(self.s, build_id).read_all()
        self.assertEqual(again, full)

    def test_stall_before_first_byte(self):
        self.s.faults(logs_stall_ms=400)
        build_id = self.s.submit_ok()
        t0 = time.monotonic()
        s = Stream(self.s, build_id)
        self.assertGreaterEqual(time.monotonic() - t0, 0.35)
        self.assertEqual(s.read_all()[-1][1], '{"done": true}')
        self.assertIsNone(self.s.sim("GET", "faults")["logs_stall"])

    def test_stall_after_events(self):
        self.s.faults(logs_stall={"ms": 400, "after": 3})
        build_id = self.s.submit_ok()
        s = Stream(self.s, build_id)
        times = []
        for ev in s.events():
            times.append((ev[0], time.monotonic()))
            if is_final(ev[1]):
                break
        s.close()
        self.assertGreaterEqual(times[3][1] - times[2][1], 0.35)

    def test_hold_end_and_release(self):
        self.s.faults(hold=True)
        build_id = self.s.submit_ok()
        b = wait_for(lambda: (lambda b: b["held"] and b)(self.s.sim("GET", "builds/" + build_id)), what="hold")
        self.assertEqual(b["lines_emitted"], b["log_lines"])
        self.assertEqual(self.s.request("GET", "/builds/" + build_id).json()["status"], "running")
        s = Stream(self.s, build_id)
        got = []
        for ev in s.events():
            got.append(ev)
            if len(got) == b["log_lines"]:
                break
        self.assertFalse(any(is_final(d) for _, d in got))
        rel = self.s.sim("POST", "builds/%s/release" % build_id)
        self.assertTrue(rel["was_held"])
        rest = []
        for ev in s.events():
            rest.append(ev)
            if is_final(ev[1]):
                break
        s.close()
        self.assertEqual(rest, [(b["log_lines"] + 1, '{"done": true}')])
        self.assertEqual(self.s.request("GET", "/builds/" + build_id).json()["status"], "succeeded")

    def test_hold_start(self):
        self.s.faults(hold="start")
        build_id = self.s.submit_ok()
        wait_for(lambda: self.s.sim("GET", "builds/" + build_id)["held"], what="hold")
        self.assertEqual(self.s.sim("GET", "builds/" + build_id)["lines_emitted"], 0)
        self.assertEqual(self.s.request("GET", "/builds/" + build_id).json()["status"], "running")
        self.s.sim("POST", "builds/%s/release" % build_id)
        self.assertEqual(sdk_follow(self.s, build_id)[1], {"done": True})

    def test_cancel(self):
        self.s.faults(hold=True)
        build_id = self.s.submit_ok()
        s = Stream(self.s, build_id)
        first = next(s.events())
        self.assertEqual(first[0], 1)
        d = self.s.request("DELETE", "/builds/" + build_id)
        self.assertEqual(d.status, 200)
        self.assertEqual(d.json()["status"], "cancelled")
        rest = []
        for ev in s.events():
            rest.append(ev)
            if is_final(ev[1]):
                break
        s.close()
        self.assertEqual(json.loads(rest[-1][1]), {"error": "build cancelled"})
        self.assertEqual(self.s.request("GET", "/builds/" + build_id).json()["status"], "cancelled")
        missing = str(uuid.uuid4())
        self.check_error(self.s.request("DELETE", "/builds/" + missing), 404)
        deletes = self.s.sim("GET", "deletes")
        self.assertEqual([(x["build_id"], x["found"]) for x in deletes], [(build_id, True), (missing, False)])
        self.assertEqual(deletes[0]["was"], "running")
        self.assertEqual(self.s.sim("GET", "builds/" + build_id)["delete_count"], 1)

    def test_client_leaving_is_noticed(self):
        self.s.faults(hold=True)
        build_id = self.s.submit_ok()
        s = Stream(self.s, build_id)
        next(s.events())
        self.assertEqual(self.s.sim("GET", "builds/" + build_id)["active_streams"], 1)
        s.close()
        wait_for(lambda: self.s.sim("GET", "builds/" + build_id)["active_streams"] == 0, what="close")


class TestSubmitFaults(SimTestCase):
    def test_submit_fail_503_twice(self):
        self.s.faults(submit_fail={"count": 2, "status": 503})
        for _ in range(2):
            self.check_error(self.s.submit(), 503)
        self.assertEqual(self.s.submit().status, 200)
        self.assertEqual([r["status"] for r in self.s.sim("GET", "requests") if r["path"] == "/builds"],
                         [503, 503, 200])
        self.assertEqual(len(self.s.sim("GET", "builds")), 1)

    def test_submit_fail_429_retry_after(self):
        self.s.faults(submit_fail={"count": 1, "status": 429, "retry_after": 1})
        self.assertEqual(self.s.sim("GET", "faults")["submit_fail"], {"count": 1, "status": 429, "retry_after": 1})
        a = self.s.submit()
        self.check_error(a, 429)
        self.assertEqual(a.headers.get("retry-after"), "1")
        self.assertIsNone(self.s.sim("GET", "faults")["submit_fail"])

    def test_latency(self):
        self.s.faults(latency_ms=300)
        t0 = time.monotonic()
        self.assertEqual(self.s.request("GET", "/v1/snapshots").status, 200)
        self.assertGreaterEqual(time.monotonic() - t0, 0.28)

    def test_request_fail_rule(self):
        self.s.faults(request_fail=[{"method": "GET", "path": "/builds/", "status": 502, "count": 1}])
        build_id = self.s.submit_ok()
        self.check_error(self.s.request("GET", "/builds/" + build_id), 502)
        self.assertEqual(self.s.request("GET", "/builds/" + build_id).status, 200)

    def test_faults_endpoint(self):
        bad = self.s.request("POST", "/_sim/faults", {"no_such_fault": 1}, auth=False)
        self.check_error(bad, 400, "faults")
        # All or nothing: the valid key of a rejected body is not applied.
        self.check_error(self.s.request("POST", "/_sim/faults", {"logs_404": 3, "hold": "later"}, auth=False), 400)
        self.assertEqual(self.s.sim("GET", "faults")["logs_404"], 0)
        self.check_error(self.s.request("POST", "/_sim/faults", b"{not json", auth=False), 400)
        self.s.faults(logs_404=3, latency_ms=5, register_commit_then="500")
        f = self.s.sim("GET", "faults")
        self.assertEqual((f["logs_404"], f["latency_ms"], f["register_commit_then"]),
                         (3, 5, {"mode": "500", "count": 1}))
        cleared = self.s.sim("DELETE", "faults")
        self.assertEqual((cleared["logs_404"], cleared["latency_ms"], cleared["register_commit_then"]), (0, None, None))
        self.s.faults(logs_404=1)
        self.assertEqual(self.s.faults(clear=True)["logs_404"], 0)


class TestFaultFlags(SimTestCase):
    sim_args = ("--faults", '{"submit_fail": {"count": 1, "status": 500}}', "--log-lines", "100")

    def test_faults_from_flags(self):
        self.check_error(self.s.submit(), 500)
        build_id = self.s.submit_ok()
        events = sdk_follow(self.s, build_id)[0]
        self.assertEqual(len([d for _, d in events if "extra output line" in d]), 100)


class TestManagement(SimTestCase):
    def test_register_commit_then_500_makes_duplicates(self):
        self.s.faults(register_commit_then="500")
        image = REGISTRY + "/" + image_name()
        self.check_error(self.register(image, tags={"snapbuild.job": "j1"}), 500)
        self.assertEqual(self.register(image, tags={"snapbuild.job": "j1"}).status, 201)
        snaps = self.s.sim("GET", "snapshots")
        self.assertEqual([s["image"] for s in snaps], [image, image])
        page = self.s.request("GET", "/v1/snapshots?tags[snapbuild.job]=j1").json()
        self.assertEqual(len(page["data"]), 2)

    def test_register_commit_then_drop(self):
        self.s.faults(register_commit_then={"mode": "drop", "count": 1})
        image = REGISTRY + "/" + image_name()
        with self.assertRaises((http.client.RemoteDisconnected, ConnectionError)):
            self.register(image, architecture="arm64", tags={"snapbuild.job": "j2"})
        snaps = self.s.sim("GET", "snapshots")
        self.assertEqual([(s["image"], s["architecture"]) for s in snaps], [(image, "arm64")])
        found = self.s.request("GET", "/v1/snapshots?tags%5Bsnapbuild.job%5D=j2").json()["data"]
        self.assertEqual([s["id"] for s in found], [snaps[0]["id"]])
        self.assertTrue([r for r in self.s.sim("GET", "requests") if r["dropped"]])

    def test_pagination_and_filters(self):
        ids = []
        for i in range(45):
            a = self.register("docker.io/library/img%d:v1" % i, tags={"n": str(i), "parity": str(i % 2)})
            ids.append(a.json()["id"])
        seen, cursor, pages = [], None, 0
        while True:
            path = "/v1/snapshots" + ("?cursor=" + cursor if cursor else "")
            page = self.s.request("GET", path).json()
            self.check_schema(page, "SnapshotPage")
            for snap in page["data"]:
                self.check_snapshot(snap)
            seen += [x["id"] for x in page["data"]]
            pages += 1
            cursor = page["next_cursor"]
            if cursor is None:
                break
        self.assertEqual(pages, 3)
        self.assertEqual(seen, list(reversed(ids)), "newest first, each once")
        small = self.s.request("GET", "/v1/snapshots?limit=7&tags[parity]=1").json()
        self.assertEqual(len(small["data"]), 7)
        self.assertTrue(all(x["tags"]["parity"] == "1" for x in small["data"]))
        rest = self.s.request("GET", "/v1/snapshots?limit=100&tags[parity]=1&cursor=" + small["next_cursor"]).json()
        self.assertEqual(len(rest["data"]), 15)
        self.assertIsNone(rest["next_cursor"])
        one = self.s.request("GET", "/v1/snapshots?tags[n]=3&tags[parity]=1").json()["data"]
        self.assertEqual([x["id"] for x in one], [ids[3]])
        self.assertEqual(self.s.request("GET", "/v1/snapshots?tags[n]=3&tags[parity]=0").json()["data"], [])
        exact = self.s.request("GET", "/v1/snapshots?limit=45").json()
        self.assertEqual((len(exact["data"]), exact["next_cursor"]), (45, None))
        retired = self.s.request("POST", "/v1/snapshots/%s/retire" % ids[0])
        self.assertEqual(retired.status, 200)
        self.check_snapshot(retired.json())
        self.assertRegex(retired.json()["retired_at"], TIME_RE)
        again = self.s.request("POST", "/v1/snapshots/%s/retire" % ids[0]).json()
        self.assertEqual(again["retired_at"], retired.json()["retired_at"])
        active = self.s.request("GET", "/v1/snapshots?limit=100&exclude_retired=true").json()["data"]
        self.assertEqual(len(active), 44)
        self.assertEqual(len(self.s.request("GET", "/v1/snapshots?limit=100&exclude_retired=false").json()["data"]), 45)
        batch = self.s.request("GET", "/v1/snapshots/batch?ids[]=%s&ids[]=%s&ids[]=%s" % (ids[5], uuid.uuid4(), ids[2]))
        self.assertEqual([x["id"] for x in batch.json()], [ids[5], ids[2]])
        for bad in ("limit=0", "limit=101", "limit=abc", "cursor=nope", "cursor=%s" % uuid.uuid4(),
                    "exclude_retired=maybe", "tags=x"):
            self.check_error(self.s.request("GET", "/v1/snapshots?" + bad), 400, bad.split("=")[0])
        self.check_error(self.s.request("GET", "/v1/snapshots/batch?ids[]=%s&ids[]=%s" % (ids[1], ids[1])), 400, "ids[]")
        self.check_error(self.s.request("GET", "/v1/snapshots/batch"), 400, "ids[]")

    def test_ttl_retires(self):
        snap = self.register("alpine:3", ttl=1).json()
        self.assertEqual(snap["ttl"], 1)
        wait_for(lambda: self.s.request("GET", "/v1/snapshots/" + snap["id"]).json()["retired_at"], what="ttl")

    def test_create_validation(self):
        cases = [
            ({}, "image"),
            ({"image": 5}, "image"),
            ({"image": ""}, "image"),
            ({"image": "Bad Image"}, "image"),
            ({"image": "a:b", "architecture": "x86"}, "architecture"),
            ({"image": "a:b", "architecture": None}, "architecture"),
            ({"image": "a:b", "ttl": 0}, "ttl"),
            ({"image": "a:b", "ttl": "60"}, "ttl"),
            ({"image": "a:b", "ttl": 1.5}, "ttl"),
            ({"image": "a:b", "ttl": True}, "ttl"),
            ({"image": "a:b", "tags": ["x"]}, "tags"),
            ({"image": "a:b", "tags": {"k": 1}}, "tags[k]"),
        ]
        for body, param in cases:
            with self.subTest(body=body):
                self.check_error(self.s.request("POST", "/v1/snapshots", body), 400, param)
        self.check_error(self.s.request("POST", "/v1/snapshots", b"{\"image\": "), 400, "body")
        self.check_error(self.s.request("POST", "/v1/snapshots", b"[1]"), 400, "body")
        self.check_error(self.s.request("POST", "/v1/snapshots", b""), 400, "body")
        self.assertEqual(self.s.sim("GET", "snapshots"), [])
        ok = self.s.request("POST", "/v1/snapshots", {"image": "localhost:5000/ns/app@sha256:abc"})
        self.assertEqual(ok.status, 201)
        self.assertIsNone(self.s.sim("GET", "snapshots")[0]["architecture"])

    def test_not_found_and_bad_ids(self):
        missing = str(uuid.uuid4())
        self.check_error(self.s.request("GET", "/v1/snapshots/" + missing), 404)
        self.check_error(self.s.request("GET", "/v1/snapshots/not-a-uuid"), 400, "id")
        self.check_error(self.s.request("POST", "/v1/snapshots/%s/retire" % missing), 404)
        self.check_error(self.s.request("GET", "/v1/snapshots/%s/aliases" % missing), 404)
        self.check_error(self.s.request("POST", "/v1/snapshots/%s/aliases" % missing, {"alias": "a"}), 404)
        self.check_error(self.s.request("GET", "/v1/snapshots/@nothing"), 404)
        self.assertEqual(self.s.request("DELETE", "/v1/snapshot-aliases/nothing").status, 204)

    def test_alias_forms_upsert_delete(self):
        a = self.register("alpine:1").json()["id"]
        b = self.register("alpine:2").json()["id"]
        for alias in ("latest", "web@prod"):
            self.assertEqual(self.s.request("POST", "/v1/snapshots/%s/aliases" % a, {"alias": alias}).status, 204)
        self.assertEqual(self.s.request("GET", "/v1/snapshots/@latest").json()["id"], a)
        self.assertEqual(self.s.request("GET", "/v1/snapshots/@web%40prod").json()["id"], a)
        self.assertEqual(self.s.request("POST", "/v1/snapshots/%s/aliases" % b, {"alias": "web@prod"}).status, 204)
        self.assertEqual(self.s.request("GET", "/v1/snapshots/@web@prod").json()["id"], b)
        self.assertEqual([x["alias"] for x in self.s.request("GET", "/v1/snapshots/%s/aliases" % a).json()], ["latest"])
        self.assertEqual(self.s.request("DELETE", "/v1/snapshot-aliases/web@prod").status, 204)
        self.check_error(self.s.request("GET", "/v1/snapshots/@web@prod"), 404)
        for bad in ({}, {"alias": 3}, {"alias": ""}, {"alias": "a@b@c"}, {"alias": "has space"}, {"alias": "@tag"}):
            with self.subTest(body=bad):
                self.check_error(self.s.request("POST", "/v1/snapshots/%s/aliases" % a, bad), 400, "alias")
        self.assertEqual(len(self.s.sim("GET", "aliases")), 1)

    def test_credentials(self):
        a = self.s.request("POST", "/v1/container-registries/default/credentials")
        self.assertEqual(a.status, 201)
        self.check_schema(a.json(), "ContainerRegistryCredential")
        self.assertEqual(a.json()["registry_url"], REGISTRY)


class TestCredentialsFlags(SimTestCase):
    sim_args = ("--registry", "127.0.0.1:5999/team-ns", "--registry-username", "robot",
                "--registry-password", "s3cret")

    def test_configured_registry(self):
        cred = self.s.request("POST", "/v1/container-registries/default/credentials").json()
        self.assertEqual((cred["username"], cred["password"], cred["registry_url"]),
                         ("robot", "s3cret", "127.0.0.1:5999/team-ns"))
        name = image_name()
        build_id = self.s.submit_ok(fields=sdk_fields(name))
        sdk_follow(self.s, build_id)
        self.assertEqual(self.s.request("GET", "/builds/" + build_id).json()["image_ref"],
                         "127.0.0.1:5999/team-ns/" + name)


class TestBadRequests(SimTestCase):
    def post_form(self, fields, files, quote=True, ctype=None):
        body, ct = multipart(fields, files, quote=quote)
        return self.s.request("POST", "/builds", body, {"Content-Type": ctype or ct})

    def ctx(self, data=None):
        return [("context", "context.tar.gz", "application/gzip",
                 data if data is not None else make_tgz({"Dockerfile": DOCKERFILE}))]

    def test_auth(self):
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "Basic " + API_KEY},
                        {"Authorization": API_KEY}):
            for path in ("/builds/x", "/v1/snapshots", "/nowhere"):
                with self.subTest(headers=headers, path=path):
                    self.check_error(self.s.request("GET", path, headers=headers, auth=False), 401)
        self.check_error(self.s.request("POST", "/builds", b"x", auth=False), 401)
        self.assertEqual(self.s.request("GET", "/_sim/health", auth=False).status, 200)
        self.assertEqual(self.s.request("GET", "/v1/snapshots", headers={"Authorization": "bearer " + API_KEY},
                                        auth=False).status, 200)
        self.assertNotIn(API_KEY, json.dumps(self.s.sim("GET", "requests")))

    def test_routes(self):
        self.check_error(self.s.request("GET", "/nowhere"), 404)
        self.check_error(self.s.request("GET", "/v1/nothing/here"), 404)
        self.check_error(self.s.request("PUT", "/v1/snapshots"), 405)
        self.check_error(self.s.request("GET", "/builds"), 405)
        self.check_error(self.s.request("GET", "/_sim/nothing", auth=False), 404)
        self.check_error(self.s.request("GET", "/builds/%00x"), 400)

    def test_malformed_multipart(self):
        good = sdk_fields()
        self.check_error(self.post_form(good, self.ctx(), ctype="application/json"), 400, "Content-Type")
        self.check_error(self.post_form(good, self.ctx(), ctype="multipart/form-data"), 400, "Content-Type")
        self.check_error(self.s.request("POST", "/builds", b"garbage",
                                        {"Content-Type": "multipart/form-data; boundary=abc"}), 400, "body")
        body, ct = multipart(good, self.ctx())
        self.check_error(self.s.request("POST", "/builds", body[:-30], {"Content-Type": ct}), 400, "body")
        no_cd = b"--b\r\nX-Other: 1\r\n\r\nvalue\r\n--b--\r\n"
        self.check_error(self.s.request("POST", "/builds", no_cd, {"Content-Type": "multipart/form-data; boundary=b"}),
                         400, "body")
        lf_only = body.replace(b"\r\n", b"\n")
        self.check_error(self.s.request("POST", "/builds", lf_only, {"Content-Type": ct}), 400, "body")
        self.check_error(self.s.request("POST", "/builds", b"", {"Content-Type": ct}), 400, "body")

    def test_unquoted_boundary_and_binary_context(self):
        files = {"Dockerfile": DOCKERFILE, "blob": b"\r\n--\r\n" * 1000 + os.urandom(20000)}
        a = self.post_form(sdk_fields(), self.ctx(make_tgz(files)), quote=False)
        self.assertEqual(a.status, 200, a.body)

    def test_missing_parts(self):
        full = sdk_fields()
        for i, (name, _) in enumerate(full):
            with self.subTest(part=name):
                body = self.check_error(self.post_form(full[:i] + full[i + 1:], self.ctx()), 400, name)
                self.assertIn(name, body["message"])
        body = self.check_error(self.post_form(full, []), 400, "context")
        self.assertIn("context", body["message"])
        self.check_error(self.post_form(full + [("context", "not a file")], []), 400, "context")
        self.check_error(self.post_form(full + [("dockerfile", "Dockerfile")], self.ctx()), 400, "dockerfile")

    def test_bad_context(self):
        tar = io.BytesIO()
        with tarfile.open(fileobj=tar, mode="w") as t:
            info = tarfile.TarInfo("./Dockerfile")
            info.size = len(DOCKERFILE)
            t.addfile(info, io.BytesIO(DOCKERFILE))
        plain = tar.getvalue()
        good = make_tgz({"Dockerfile": DOCKERFILE, "big": os.urandom(50000)})
        corrupt = bytearray(good)
        for i in range(200, 400):
            corrupt[i] ^= 0x55
        cases = {
            "plain tar": plain,
            "empty": b"",
            "text": b"hello world",
            "truncated gzip": good[: len(good) // 2],
            "corrupt gzip": bytes(corrupt),
            "gzip of text": gzip.compress(b"not a tar archive at all" * 100),
        }
        for what, data in cases.items():
            with self.subTest(what=what):
                self.check_error(self.post_form(sdk_fields(), self.ctx(data)), 400, "context")
        self.assertEqual(self.s.sim("GET", "builds"), [])

    def test_dockerfile_problems(self):
        ctx = self.ctx(make_tgz({"app/Dockerfile": DOCKERFILE, "Dockerfile.link": ("symlink", "app/Dockerfile"),
                                 "out": ("symlink", "../etc/passwd")}))
        for name in ("Dockerfile", "../Dockerfile", "/Dockerfile", "app", "out", ""):
            with self.subTest(dockerfile=name):
                self.check_error(self.post_form(sdk_fields(dockerfile=name), ctx), 400, "dockerfile")
        a = self.post_form(sdk_fields(dockerfile="Dockerfile.link"), ctx)
        self.assertEqual(a.status, 200, a.body)

    def test_field_values(self):
        cases = [
            (sdk_fields(cache_key="Upper/Case"), "cache_key"),
            (sdk_fields(cache_key="app:tag"), "cache_key"),
            (sdk_fields(cache_key=""), "cache_key"),
            (sdk_fields(cache_key="a" * 256), "cache_key"),
            (sdk_fields(cache_key="/lead"), "cache_key"),
            (sdk_fields(name="no-tag"), "image_name"),
            (sdk_fields(name="Upper:tag"), "image_name"),
            (sdk_fields(name=""), "image_name"),
            (sdk_fields(build_args="{not json"), "build_args"),
            (sdk_fields(build_args="[]"), "build_args"),
            (sdk_fields(build_args='{"A": 1}'), "build_args"),
            ([x if x[0] != "nydus_convert" else ("nydus_convert", "yes") for x in sdk_fields()], "nydus_convert"),
        ]
        for fields, param in cases:
            with self.subTest(fields=fields):
                self.check_error(self.post_form(fields, self.ctx()), 400, param)
        for key in ("a", "team/app-1.x_y", "a" * 255):
            with self.subTest(cache_key=key):
                self.assertEqual(self.post_form(sdk_fields(cache_key=key), self.ctx()).status, 200)
        a = self.post_form(sdk_fields(build_args='{"VERSION": "1.2"}'), self.ctx())
        self.assertEqual(a.status, 200)
        self.assertEqual(self.s.sim("GET", "builds/" + a.json()["build_id"])["build_args"], '{"VERSION": "1.2"}')


class TestHostileRequests(SimTestCase):
    def test_random_requests_get_answers_not_crashes(self):
        import random
        rnd = random.Random(1234)
        build_id = self.s.submit_ok()
        snap = self.register("alpine:3").json()["id"]
        paths = ["/builds", "/builds/" + build_id, "/builds/%s/logs" % build_id, "/v1/snapshots",
                 "/v1/snapshots/" + snap, "/v1/snapshots/%s/aliases" % snap, "/v1/snapshots/%s/retire" % snap,
                 "/v1/snapshots/@x", "/v1/snapshots/batch", "/v1/snapshot-aliases/x",
                 "/v1/container-registries/default/credentials", "/_sim/faults", "/_sim/builds/" + build_id]
        junk = [b"", b"{", b"[]", b"null", b'{"image": {}}', b'{"alias": null}', b"\x00\xff" * 50,
                b'{"tags": {"a": {"b": 1}}, "image": "x"}', b'{"logs_404": -1}', b'{"hold": []}',
                b"--x\r\nContent-Disposition: form-data; name=\"context\"; filename=\"c\"\r\n\r\n\x1f\x8b\r\n--x--\r\n"]
        ctypes = ["application/json", "multipart/form-data; boundary=x", "multipart/form-data; boundary=\"",
                  "text/plain", "multipart/form-data; boundary=" + "b" * 300]
        for _ in range(250):
            path = rnd.choice(paths)
            if rnd.random() < 0.3:
                path += rnd.choice(["?limit=%d" % rnd.randint(-5, 200), "?cursor=%00", "?tags[=1", "?ids[]=x",
                                    "?tags%5Ba%5D=%ff", "/%2e%2e", "%20", "?exclude_retired"])
            method = rnd.choice(["GET", "POST", "DELETE", "PUT", "PATCH"])
            body = rnd.choice(junk)
            a = self.s.request(method, path, body, {"Content-Type": rnd.choice(ctypes)})
            self.assertLess(a.status, 500, (method, path, a.body))
            if a.status >= 400:
                self.check_error(a, a.status)
        self.assertEqual(self.s.request("GET", "/_sim/health", auth=False).status, 200)


class TestStateDir(unittest.TestCase):
    def test_snapshots_and_aliases_survive_restart(self):
        with tempfile.TemporaryDirectory() as d:
            s = Sim(state_dir=d)
            try:
                snap = s.request("POST", "/v1/snapshots", {"image": "alpine:3", "architecture": "arm64",
                                                          "tags": {"k": "v"}}).json()
                self.assertEqual(s.request("POST", "/v1/snapshots/%s/aliases" % snap["id"],
                                           {"alias": "ns@t"}).status, 204)
            finally:
                self.assertEqual(s.stop()[0], 0)
            s = Sim(state_dir=d)
            try:
                again = s.request("GET", "/v1/snapshots/@ns@t").json()
                self.assertEqual(again, snap)
                self.assertEqual(s.sim("GET", "snapshots")[0]["architecture"], "arm64")
            finally:
                self.assertEqual(s.stop()[0], 0)


class TestCommandLine(unittest.TestCase):
    def run_sim(self, *args, env=None):
        e = {k: v for k, v in os.environ.items() if k != "SNAPBUILD_SIM_API_KEY"}
        e.update(env or {})
        return subprocess.run([SIM] + list(args), capture_output=True, text=True, env=e, timeout=30)

    def test_help_version_and_errors(self):
        h = self.run_sim("--help")
        self.assertEqual(h.returncode, 0)
        for flag in ("--listen", "--api-key", "--state-dir", "--registry", "--log-interval-ms", "--faults"):
            self.assertIn(flag, h.stdout)
        v = self.run_sim("--version")
        self.assertEqual(v.returncode, 0)
        self.assertRegex(v.stdout, r"^snapbuild-sim \d+\.\d+\.\d+\n$")
        self.assertEqual(self.run_sim().returncode, 2, "no API key")
        self.assertEqual(self.run_sim("--api-key", "k", "--bogus").returncode, 2)
        self.assertEqual(self.run_sim("--api-key", "k", "--faults", "{\"nope\": 1}").returncode, 2)
        self.assertEqual(self.run_sim("--api-key", "k", "--registry", "no-namespace").returncode, 2)
        for flag in ("--log-ids", "--reconnect", "--heartbeat", "--submit-status"):
            self.assertIn(flag, h.stdout)
        for bad in (["--log-ids", "sometimes"], ["--reconnect", "later"],
                    ["--submit-status", "204"], ["--heartbeat", "-1"]):
            r = self.run_sim("--api-key", "k", *bad)
            self.assertEqual(r.returncode, 2, bad)
            self.assertIn(bad[0], r.stderr)
        self.assertEqual(self.run_sim("--api-key", "k", "--listen", "nonsense").returncode, 1)


class TestLayerCache(SimTestCase):
    """Steps an earlier build with the same cache key made already print CACHED."""

    DF = b"FROM alpine:3.19\nWORKDIR /app\nCOPY . /app\nRUN make all\n"

    def build(self, cache_key, context, dockerfile=DF):
        fields = sdk_fields(cache_key=cache_key)
        files = {"Dockerfile": dockerfile, "app/main.c": context}
        tgz = gzip.compress(self.tar(files), mtime=0)
        body, ctype = multipart(fields, [("context", "context.tar.gz", "application/gzip", tgz)])
        a = self.s.request("POST", "/builds", body, {"Content-Type": ctype})
        self.assertEqual(a.status, 200, a.body)
        events, final, _ = sdk_follow(self.s, a.json()["build_id"])
        self.assertEqual(final, {"done": True})
        lines = [re.sub(r"@sha256:[0-9a-f]+", "", d) for _, d in events]
        steps = [l.split("] ", 1)[1] for l in lines if re.match(r"#\d+ \[\d+/\d+\] ", l)]
        cached = [l.split("] ", 1)[1] for i, l in enumerate(lines)
                  if re.match(r"#\d+ \[\d+/\d+\] ", l) and i + 1 < len(lines)
                  and lines[i + 1] == l.split(" ", 1)[0] + " CACHED"]
        return steps, cached

    @staticmethod
    def tar(files):
        raw = io.BytesIO()
        with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as t:
            for name in sorted(files):
                info = tarfile.TarInfo("./" + name)
                info.size = len(files[name])
                t.addfile(info, io.BytesIO(files[name]))
        return raw.getvalue()

    def test_same_key_same_dockerfile_and_context_is_all_cached(self):
        steps, cached = self.build("apps/one", b"int main(){}\n")
        self.assertEqual(cached, [])
        self.assertEqual(len(steps), 4)
        steps2, cached2 = self.build("apps/one", b"int main(){}\n")
        self.assertEqual(steps2, steps)
        self.assertEqual(cached2, steps)

    def test_changed_context_rebuilds_from_the_copy(self):
        steps, _ = self.build("apps/one", b"int main(){}\n")
        _, cached = self.build("apps/one", b"int main(){return 1;}\n")
        self.assertEqual([c.split(" ")[0] for c in cached], ["FROM", "WORKDIR"])

    def test_changed_step_rebuilds_from_there(self):
        self.build("apps/one", b"x\n")
        # (The Dockerfile is in the context too: any edit also changes what COPY . reads.)
        df = b"FROM alpine:3.19\nWORKDIR /src\nCOPY . /app\nRUN make all\n"
        _, cached = self.build("apps/one", b"x\n", dockerfile=df)
        self.assertEqual([c.split(" ")[0] for c in cached], ["FROM"])

    def test_other_key_or_no_key_caches_nothing(self):
        self.build("apps/one", b"x\n")
        self.assertEqual(self.build("apps/two", b"x\n")[1], [])
        self.assertEqual(self.build(None, b"x\n")[1], [])
        self.assertEqual(self.build(None, b"x\n")[1], [])


if __name__ == "__main__":
    unittest.main()
