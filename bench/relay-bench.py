#!/usr/bin/env python3
"""Benchmark of snapbuildd's log relay: builder log stream -> daemon -> build.logs followers.

    bench/relay-bench.py [--bin-dir build] [--lines 200000] [--followers 1,50]
                         [--latency-lines 3000] [--interval-ms 1] [--latency-followers 1]
                         [--only source,throughput,latency-stamp,latency-stamp-nagle,latency-sim]
                         [--perf DIR [--perf-freq HZ]]

Everything runs on this machine: snapbuild-sim (or a small stamping SSE server of this
script's own), one snapbuildd pointed at it through TOGETHER_BASE_URL, and the followers,
which are plain Unix-socket JSON-RPC clients in this process (one selector loop).

Throughput (issue 4: >= 100,000 lines/s to one follower).  The simulator holds the build
before its first line (fault `hold: "start"`) until the daemon follows its log stream and
every follower has attached (`build.logs {follow: true}`) and caught up with the stored
events; then the build is released and emits --lines extra lines as one burst
(`--log-lines N --log-interval-ms 0`).  Rates are build lines received divided by the time
from the first to the last build line received (per follower, and for all followers
together).  Every follower is checked: event seq contiguous from 1 to the answer's
last_seq, every build line of the simulator's log received exactly once, and the extra
lines in order 1..N.  A follower the daemon drops as a slow reader reconnects with
after_seq and the drop is counted.  0 followers measures the daemon's ingest alone (read,
parse, store).  `source` measures the simulator alone: the same burst read straight from
its SSE stream by this script, the ceiling of the whole chain.  --perf DIR records the
daemon with `perf record --call-graph dwarf` during each throughput run.

Latency (issue 4: p99 < 10 ms at 1,000 lines/s), measured two ways:
  latency-stamp: this script's own SSE builder (a child process) sends one line every
    --interval-ms, each line carrying time.time() taken just before its send(); the
    follower's latency is its time.time() at recv() minus that stamp (same machine, same
    clock).  The daemon's own event `time` splits it into builder->daemon and
    daemon->follower.  The server sets TCP_NODELAY on the stream, as Go's net/http and
    nginx do; latency-stamp-nagle is the same without it (Nagle's algorithm on).
  latency-sim: snapbuild-sim paces its log at --interval-ms (a Dockerfile with enough RUN
    steps for --latency-lines lines); its lines carry no emission time, so a second reader
    of this script reads the same SSE stream straight from the simulator, and the latency
    is follower recv time minus direct-reader recv time for the same line (the daemon's
    added latency; both readers are in this process's loop).  The simulator gets
    EVENT_PRECISE_TIMER=1 so that it can pace at 1 ms (see run_latency_sim).
Not a test: numbers depend on the machine.  Results go in BENCHMARKS.md.
"""
import argparse
import datetime
import http.server
import io
import json
import math
import os
import re
import selectors
import signal
import socket
import socketserver
import statistics
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
import urllib.request
import uuid

HERE = os.path.dirname(os.path.abspath(__file__))

SEQ_RE = re.compile(rb'"seq":(\d+),"time":')
BUILD_MARK = b'"kind":"log","step":"build"'
EVENT_START = b'{"jsonrpc":"2.0","method":"build.event"'
# Event times are RFC 3339 strings in UTC (protocol 3): "2026-12-04T20:14:10.123456Z".
STAMP_RE = re.compile(rb'"time":"([^"]+)","kind":"log","step":"build","text":"stamp (\d+) ([0-9.]+)"')
BUILD_TIME_RE = re.compile(rb'"time":"([^"]+)","kind":"log","step":"build"')


def event_time(text):
    """Seconds since the epoch of an event's RFC 3339 time (bytes or str)."""
    if isinstance(text, bytes):
        text = text.decode()
    return datetime.datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def percentile(values, p):
    """Nearest-rank percentile of a non-empty list."""
    s = sorted(values)
    return s[max(0, math.ceil(p / 100.0 * len(s)) - 1)]


def cpu_seconds(pid):
    """User plus system CPU time the process has used so far."""
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def self_cpu():
    t = os.times()
    return t.user + t.system


def machine():
    model = "?"
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return "nproc %d, CPU %s, kernel %s" % (os.cpu_count(), model, os.uname().release)


def loadavg():
    return "%.2f %.2f %.2f" % os.getloadavg()


class Profile:
    """perf record of one process while a phase runs (--perf DIR); a no-op without it."""

    def __init__(self, args, pid, name):
        self.proc = None
        if args.perf:
            os.makedirs(args.perf, exist_ok=True)
            self.path = os.path.join(args.perf, name + ".data")
            self.proc = subprocess.Popen(["perf", "record", "-q", "-F", str(args.perf_freq),
                                          "--call-graph", "dwarf,16384", "-o", self.path,
                                          "-p", str(pid)], stdout=subprocess.DEVNULL)
            time.sleep(0.5)  # perf attaches asynchronously

    def stop(self):
        if self.proc is not None:
            self.proc.send_signal(signal.SIGINT)
            self.proc.wait()

    def report(self):
        if self.proc is not None:
            print("    perf profile of the daemon: %s (perf report -i %s --no-children)"
                  % (self.path, self.path))


# --- readers --------------------------------------------------------------------------


class Follower:
    """One build.logs {follow: true} connection to the daemon.

    mode "count": events are checked with byte searches only (seq contiguity, build line
    count, extra lines in order), cheap enough for 50 followers of 200,000 lines.
    mode "stamp": build lines "stamp K T" are recorded with (K, T, event time, recv time).
    mode "times": each build line's (event time, recv time) is recorded, in order.
    """

    def __init__(self, sock_path, job_id, mode="count", extra_total=0):
        self.sock_path = sock_path
        self.job_id = job_id
        self.mode = mode
        self.extra_re = (re.compile(rb"extra output line (\d+) of %d\"" % extra_total)
                         if extra_total else None)
        self.next_seq = 1
        self.next_extra = 1
        self.build_lines = 0
        self.first_build = self.last_build = None
        self.records = []
        self.answer = None
        self.drops = 0
        self.drop_reasons = []
        self.errors = []
        self.sock = None
        self.connect()

    def connect(self):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.connect(self.sock_path)
        req = {"jsonrpc": "2.0", "id": 1, "method": "build.logs",
               "params": {"id": self.job_id, "after_seq": self.next_seq - 1, "follow": True}}
        self.sock.sendall(json.dumps(req).encode() + b"\n")
        self.sock.setblocking(False)
        self.buf = b""

    @property
    def done(self):
        return self.answer is not None or bool(self.errors)

    def fail(self, msg):
        self.errors.append(msg)

    def on_eof(self):
        """The daemon closed the connection: reconnect where we stopped (a slow-reader drop)."""
        self.sock.close()
        if self.answer is None:
            self.drops += 1
            self.connect()
            return True
        return False

    def on_data(self, data, now):
        data = self.buf + data
        cut = data.rfind(b"\n") + 1
        part, self.buf = data[:cut], data[cut:]
        if not part:
            return
        seqs = SEQ_RE.findall(part)
        if seqs:
            got = list(map(int, seqs))
            want = list(range(self.next_seq, self.next_seq + len(got)))
            if got != want:
                bad = next(i for i in range(len(got)) if got[i] != want[i])
                self.fail("seq %d where %d was due" % (got[bad], want[bad]))
            self.next_seq = got[-1] + 1
        nb = part.count(BUILD_MARK)
        if nb:
            if self.first_build is None:
                self.first_build = now
            self.last_build = now
            self.build_lines += nb
            if self.extra_re is not None:
                extra = self.extra_re.findall(part)
                if extra:
                    got = list(map(int, extra))
                    if got != list(range(self.next_extra, self.next_extra + len(got))):
                        self.fail("extra lines out of order near %d" % self.next_extra)
                    self.next_extra = got[-1] + 1
            if self.mode == "stamp":
                for m in STAMP_RE.finditer(part):
                    self.records.append((int(m.group(2)), float(m.group(3)),
                                         event_time(m.group(1)), now))
            elif self.mode == "times":
                for m in BUILD_TIME_RE.finditer(part):
                    self.records.append((event_time(m.group(1)), now))
        if part.count(EVENT_START) != part.count(b"\n"):
            for line in part.split(b"\n"):
                if not line or line.startswith(EVENT_START):
                    continue
                msg = json.loads(line)
                if msg.get("method") == "daemon.dropped":
                    self.drop_reasons.append(msg["params"].get("reason"))
                elif "result" in msg:
                    self.answer = msg["result"]
                    if self.answer["last_seq"] != self.next_seq - 1:
                        self.fail("answer last_seq %d, last event seen %d"
                                  % (self.answer["last_seq"], self.next_seq - 1))
                elif "error" in msg:
                    self.fail("build.logs failed: %r" % msg["error"])


class DirectSSE:
    """Reads a build's SSE log straight from the builder over HTTP/1.1 (chunked)."""

    def __init__(self, addr, build_id, key):
        host, port = addr.rsplit(":", 1)
        self.sock = socket.create_connection((host, int(port)))
        self.sock.sendall(("GET /builds/%s/logs HTTP/1.1\r\nHost: %s\r\nAuthorization: Bearer %s\r\n"
                           "Accept: text/event-stream\r\n\r\n" % (build_id, addr, key)).encode())
        self.sock.setblocking(False)
        self.raw = b""
        self.body = b""
        self.headers_done = False
        self.chunk_left = None
        self.finished = False
        self.events = 0
        self.times = []  # recv time of each event, in order
        self.first = self.last = None
        self.final = None

    @property
    def done(self):
        return self.finished

    def on_eof(self):
        self.sock.close()
        self.finished = True
        return False

    def _dechunk(self):
        """Moves whole chunk payloads from raw to body (chunk_left: None = at a size line,
        > 0 = payload bytes to come, 0 = the CRLF after a payload)."""
        raw, pos = self.raw, 0
        while not self.finished:
            if self.chunk_left is None:
                i = raw.find(b"\r\n", pos)
                if i < 0:
                    break
                size = int(raw[pos:i].split(b";")[0], 16)
                pos = i + 2
                if size == 0:
                    self.finished = True
                self.chunk_left = size
            elif self.chunk_left > 0:
                take = raw[pos:pos + self.chunk_left]
                if not take:
                    break
                self.body += take
                pos += len(take)
                self.chunk_left -= len(take)
            else:
                if len(raw) - pos < 2:
                    break
                pos += 2
                self.chunk_left = None
        self.raw = raw[pos:]

    def on_data(self, data, now):
        self.raw += data
        if not self.headers_done:
            i = self.raw.find(b"\r\n\r\n")
            if i < 0:
                return
            head = self.raw[:i].decode()
            if " 200 " not in head.split("\r\n")[0]:
                raise SystemExit("builder log stream answered: " + head.split("\r\n")[0])
            self.raw = self.raw[i + 4:]
            self.headers_done = True
        self._dechunk()
        cut = self.body.rfind(b"\n\n") + 2
        if cut < 2:
            return
        part, self.body = self.body[:cut], self.body[cut:]
        n = part.count(b"\ndata: ") + (1 if part.startswith(b"data: ") else 0)
        if b'data: {"done"' in part or b'data: {"error"' in part:
            n -= 1
            self.final = part[part.rfind(b"data: {"):].split(b"\n")[0]
        if n > 0:
            if self.first is None:
                self.first = now
            self.last = now
            self.events += n
            self.times.extend([now] * n)


def pump(readers, timeout):
    """Runs the readers until each is done; False when timeout seconds were not enough
    (the readers still going are closed)."""
    sel = selectors.DefaultSelector()
    for r in readers:
        sel.register(r.sock, selectors.EVENT_READ, r)
    deadline = time.monotonic() + timeout
    live = [r for r in readers if not r.done]
    while live:
        left = deadline - time.monotonic()
        if left <= 0:
            for r in live:
                r.sock.close()
            sel.close()
            return False
        for key, _ in sel.select(min(left, 1.0)):
            r = key.data
            now = time.time()
            try:
                data = r.sock.recv(1 << 20)
            except BlockingIOError:
                continue
            if data:
                r.on_data(data, now)
            else:
                sel.unregister(r.sock)
                if r.on_eof():
                    sel.register(r.sock, selectors.EVENT_READ, r)
            if r.done:
                try:
                    sel.unregister(r.sock)
                except (KeyError, ValueError):
                    pass
        live = [r for r in readers if not r.done]
    sel.close()
    return True


# --- set-up helpers -------------------------------------------------------------------


def make_context(root, dockerfile):
    os.makedirs(root, exist_ok=True)
    with open(os.path.join(root, "Dockerfile"), "w") as f:
        f.write(dockerfile)
    return root


def submit(d, ctx):
    """Packed by the client's packer and passed as an archive, as clients do (protocol 2)."""
    with d.conn() as c:
        return c.submit_result(ctx)


def wait_building(d, job_id, held_check=None):
    """Waits until the job follows its build's log; returns the job."""
    def ready():
        j = d.call("build.get", {"id": job_id})
        if j["state"] in ("failed", "cancelled", "succeeded"):
            raise SystemExit("job ended early: %r" % j)
        if j["state"] != "building" or not j.get("build_id"):
            return None
        return j if held_check is None or held_check(j) else None
    return wait_for(ready, 60, "the job to follow its build log")


def attach_followers(d, job, n, mode="count", extra_total=0):
    """n followers of the job, each caught up with the events stored so far."""
    fs = [Follower(d.socket, job["id"], mode, extra_total) for _ in range(n)]
    if not fs:
        return fs
    last = d.call("build.get", {"id": job["id"]})["last_seq"]
    sel = selectors.DefaultSelector()
    for f in fs:
        sel.register(f.sock, selectors.EVENT_READ, f)
    deadline = time.monotonic() + 30
    while any(f.next_seq <= last for f in fs):
        if time.monotonic() > deadline:
            raise SystemExit("followers did not catch up with the stored events")
        for key, _ in sel.select(1.0):
            data = key.data.sock.recv(1 << 20)
            if not data:
                raise SystemExit("daemon closed a follower during the replay")
            key.data.on_data(data, time.time())
    sel.close()
    for f in fs:
        if f.errors:
            raise SystemExit("follower failed during replay: %s" % f.errors)
    return fs


def sim_held(sim):
    def check(job):
        b = sim.build(job["build_id"])
        return b["held"] and b["active_streams"] >= 1
    return check


# --- throughput -----------------------------------------------------------------------


def run_source(args):
    """The simulator alone: its burst read straight from its SSE stream."""
    faults = json.dumps({"hold": "start"})
    with Sim("--log-lines", str(args.lines), "--faults", faults, log_interval_ms=0) as sim:
        tgz = io.BytesIO()
        with tarfile.open(fileobj=tgz, mode="w:gz") as t:
            data = DOCKERFILE_THROUGHPUT.encode()
            info = tarfile.TarInfo("./Dockerfile")
            info.size = len(data)
            t.addfile(info, io.BytesIO(data))
        boundary = "benchboundary%s" % uuid.uuid4().hex
        parts = []
        for name, value in (("image_name", "bench:latest"), ("dockerfile", "Dockerfile"),
                            ("build_args", "{}"), ("nydus_convert", "false")):
            parts.append(("--%s\r\nContent-Disposition: form-data; name=\"%s\"\r\n\r\n%s\r\n"
                          % (boundary, name, value)).encode())
        parts.append(("--%s\r\nContent-Disposition: form-data; name=\"context\"; "
                      "filename=\"context.tar.gz\"\r\nContent-Type: application/gzip\r\n\r\n"
                      % boundary).encode() + tgz.getvalue() + b"\r\n")
        body = b"".join(parts) + ("--%s--\r\n" % boundary).encode()
        req = urllib.request.Request(sim.url + "/builds", data=body, method="POST", headers={
            "Authorization": "Bearer " + API_KEY,
            "Content-Type": "multipart/form-data; boundary=" + boundary})
        with urllib.request.urlopen(req, timeout=30) as r:
            build_id = json.loads(r.read())["build_id"]
        wait_for(lambda: sim.build(build_id)["held"], 30, "the build to be held")
        reader = DirectSSE(sim.addr, build_id, API_KEY)
        wait_for(lambda: sim.build(build_id)["active_streams"] >= 1, 30, "the stream")
        c0 = cpu_seconds(sim.proc.pid)
        t_release = time.time()
        sim.release(build_id)
        pump([reader], 300)
        sim_cpu = cpu_seconds(sim.proc.pid) - c0
        total = sim.build(build_id)["log_lines"]
    if reader.events != total:
        raise SystemExit("direct reader got %d lines of %d" % (reader.events, total))
    window = reader.last - reader.first
    print("source  simulator -> direct SSE reader: %d lines in %.3f s = %.0f lines/s "
          "(release -> first line %.1f ms; simulator CPU %.2f s)"
          % (total, window, total / window, (reader.first - t_release) * 1000, sim_cpu))


def run_throughput(args, nfollowers):
    faults = json.dumps({"hold": "start"})
    tmp = tempfile.mkdtemp(prefix="sb-relay-")
    ctx = make_context(os.path.join(tmp, "ctx"), DOCKERFILE_THROUGHPUT)
    with Sim("--log-lines", str(args.lines), "--faults", faults, log_interval_ms=0) as sim, \
            sim.daemon(tmp=tmp) as d:
        job = submit(d, ctx)
        job = wait_building(d, job["id"], sim_held(sim))
        fs = attach_followers(d, job, nfollowers, "count", args.lines)
        load0 = loadavg()
        dc0, sc0, mc0 = cpu_seconds(d.proc.pid), cpu_seconds(sim.proc.pid), self_cpu()
        prof = Profile(args, d.proc.pid, "throughput-%d" % nfollowers)
        t_release = time.time()
        sim.release(job["build_id"])
        finished = True
        if fs:
            finished = pump(fs, args.timeout)
        else:
            with d.conn() as c:
                c.sock.settimeout(600)
                c.result("build.wait", {"id": job["id"]})
        dc1, sc1, mc1 = cpu_seconds(d.proc.pid), cpu_seconds(sim.proc.pid), self_cpu()
        prof.stop()
        load1 = loadavg()
        sb = sim.build(job["build_id"])
        final = d.call("build.get", {"id": job["id"]})
        # The daemon's own receive times of the first and last build line (event `time`).
        with d.conn() as c:
            evs = c.result("build.logs", {"id": job["id"], "after_seq": 0, "limit": 10000})
            build_times = [event_time(e["time"]) for e in evs["events"] if e["step"] == "build"]
            after = evs["last_seq"]
            while evs["more"]:
                evs = c.result("build.logs", {"id": job["id"], "after_seq": after,
                                              "limit": 10000})
                build_times += [event_time(e["time"]) for e in evs["events"]
                                if e["step"] == "build"]
                after = evs["last_seq"]
    subprocess.run(["rm", "-rf", tmp])

    total = sb["log_lines"]
    problems = []
    if not finished:
        problems.append("%d of %d followers still going after %d s"
                        % (sum(1 for f in fs if not f.done), len(fs), args.timeout))
    if final["state"] != "succeeded":
        problems.append("job ended %s: %s" % (final["state"], final.get("error")))
    for i, f in enumerate(fs):
        for e in f.errors:
            problems.append("follower %d: %s" % (i, e))
        if f.build_lines != total:
            problems.append("follower %d: %d build lines of %d" % (i, f.build_lines, total))
        if f.next_extra != args.lines + 1:
            problems.append("follower %d: extra lines up to %d of %d"
                            % (i, f.next_extra - 1, args.lines))
        if f.answer is None or f.answer["last_seq"] != final["last_seq"]:
            problems.append("follower %d: did not end at last_seq %d" % (i, final["last_seq"]))
    ingest = build_times[-1] - build_times[0]
    if len(build_times) != total:
        problems.append("the store holds %d build lines of %d" % (len(build_times), total))
    if not fs:
        print("throughput  no follower (ingest only), %d build lines (%d extra): %s"
              % (total, args.lines, "all stored" if not problems else "PROBLEMS"))
        for p in problems[:20]:
            print("    " + p)
        print("    daemon ingest (event time of first..last build line): %.3f s = %.0f lines/s"
              % (ingest, len(build_times) / ingest))
        print("    CPU during the run: daemon %.2f s (%.2f us per line), simulator %.2f s; "
              "load average %s -> %s" % (dc1 - dc0, (dc1 - dc0) * 1e6 / total, sc1 - sc0,
                                         load0, load1))
        prof.report()
        return not problems
    rates = [f.build_lines / max(f.last_build - f.first_build, 1e-9) for f in fs]
    first = min(f.first_build for f in fs)
    last = max(f.last_build for f in fs)
    agg = sum(f.build_lines for f in fs) / (last - first)
    drops = sum(f.drops for f in fs)
    print("throughput  %d follower%s, %d build lines each (%d extra): %s"
          % (nfollowers, "" if nfollowers == 1 else "s", total, args.lines,
             "all verified" if not problems else "PROBLEMS"))
    for p in problems[:20]:
        print("    " + p)
    print("    release -> first line at a follower %.1f ms; window first..last %.3f s"
          % ((first - t_release) * 1000, last - first))
    if nfollowers == 1:
        print("    per follower: %.0f lines/s" % rates[0])
    else:
        print("    aggregate: %.0f lines/s; per follower: median %.0f, min %.0f, max %.0f lines/s"
              % (agg, statistics.median(rates), min(rates), max(rates)))
    print("    daemon ingest (event time of first..last build line): %.3f s = %.0f lines/s"
          % (ingest, len(build_times) / ingest))
    reasons = [r for f in fs for r in f.drop_reasons]
    print("    connections closed by the daemon (each follower reconnected with after_seq): %d; "
          "daemon.dropped notices received: %d%s"
          % (drops, len(reasons), " (%s)" % reasons[0] if reasons else ""))
    print("    CPU during the run: daemon %.2f s (%.2f us per line per follower), simulator "
          "%.2f s, this script %.2f s; load average %s -> %s"
          % (dc1 - dc0, (dc1 - dc0) * 1e6 / (total * nfollowers), sc1 - sc0, mc1 - mc0,
             load0, load1))
    prof.report()
    return not problems


# --- latency: a stamping builder of our own -------------------------------------------


class StampHandler(http.server.BaseHTTPRequestHandler):
    """The builder and management routes the daemon uses, minimal; logs carry time stamps."""

    protocol_version = "HTTP/1.1"
    server_version = "relay-bench-stamp/1"

    def log_message(self, fmt, *a):
        pass

    def _body(self):
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            out = b""
            while True:
                size = int(self.rfile.readline().split(b";")[0], 16)
                if size == 0:
                    self.rfile.readline()
                    return out
                out += self.rfile.read(size)
                self.rfile.readline()
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def _json(self, status, obj):
        data = json.dumps(obj).encode() if obj is not None else b""
        self.send_response(status)
        if obj is not None:
            self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_POST(self):
        body = self._body()
        path = self.path.split("?")[0]
        srv = self.server
        if path == "/builds":
            bid = str(uuid.uuid4())
            srv.builds[bid] = "running"
            self._json(200, {"build_id": bid})
        elif path == "/_bench/go":
            srv.go.set()
            self._json(200, {})
        elif path == "/v1/snapshots":
            req = json.loads(body or b"{}")
            snap = {"id": str(uuid.uuid4()), "image": req.get("image"),
                    "architecture": req.get("architecture", "amd64"),
                    "tags": req.get("tags", {}), "created_at": "2025-01-01T00:00:00Z"}
            self._json(201, snap)
        elif path.startswith("/v1/snapshots/") and path.endswith("/aliases"):
            self._json(204, None)
        else:
            self._json(404, {"code": "not_found", "message": "no route"})

    def do_DELETE(self):
        bid = self.path.split("?")[0].split("/")[-1]
        self.server.builds[bid] = "cancelled"
        self._json(200, {"id": bid, "status": "cancelled"})

    def do_GET(self):
        path = self.path.split("?")[0]
        parts = path.strip("/").split("/")
        srv = self.server
        if len(parts) == 3 and parts[0] == "builds" and parts[2] == "logs":
            self._logs(parts[1])
        elif len(parts) == 2 and parts[0] == "builds":
            st = srv.builds.get(parts[1])
            if st is None:
                self._json(404, {"code": "not_found", "message": "build not found"})
                return
            obj = {"id": parts[1], "status": st}
            if st == "succeeded":
                obj["image_ref"] = "registry.bench.invalid/ns/image-%s:latest" % parts[1]
            self._json(200, obj)
        elif path == "/_bench/streams":
            self._json(200, {"streams": srv.streams})
        elif path == "/v1/snapshots":
            self._json(200, {"data": [], "next_cursor": None})
        else:
            self._json(404, {"code": "not_found", "message": "no route"})

    def _logs(self, bid):
        srv = self.server
        if bid not in srv.builds:
            self._json(404, {"code": "not_found", "message": "build not found"})
            return
        start = int(self.headers.get("Last-Event-ID") or 0)
        if srv.nodelay:
            self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        self.wfile.flush()
        srv.streams += 1
        sock = self.connection

        def chunk(payload):
            sock.sendall(b"%x\r\n%s\r\n" % (len(payload), payload))

        srv.go.wait()
        interval = srv.interval_ms / 1000.0
        t0 = time.monotonic()
        for k in range(start + 1, srv.lines + 1):
            due = t0 + (k - start) * interval
            delay = due - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            chunk(b"id: %d\ndata: stamp %d %.6f\n\n" % (k, k, time.time()))
        srv.builds[bid] = "succeeded"
        chunk(b"id: %d\ndata: {\"done\": true}\n\n" % (srv.lines + 1))
        sock.sendall(b"0\r\n\r\n")


class StampServer(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True

    def handle_error(self, request, client_address):
        pass  # the daemon closing a kept-alive connection at exit is no news


def stamp_server_main(lines, interval_ms, nodelay):
    srv = StampServer(("127.0.0.1", 0), StampHandler)
    srv.builds = {}
    srv.streams = 0
    srv.go = threading.Event()
    srv.lines = lines
    srv.interval_ms = interval_ms
    srv.nodelay = nodelay
    print("127.0.0.1:%d" % srv.server_address[1], flush=True)
    srv.serve_forever()


def latency_summary(name, values_ms):
    return ("%s p50 %.2f ms, p90 %.2f, p99 %.2f, max %.2f (%d lines)"
            % (name, percentile(values_ms, 50), percentile(values_ms, 90),
               percentile(values_ms, 99), max(values_ms), len(values_ms)))


def run_latency_stamp(args, nfollowers, nodelay=True):
    tmp = tempfile.mkdtemp(prefix="sb-relay-")
    ctx = make_context(os.path.join(tmp, "ctx"), "FROM alpine:3.20\nRUN make\n")
    server = subprocess.Popen([sys.executable, os.path.abspath(__file__), "--stamp-server",
                               str(args.latency_lines), str(args.interval_ms),
                               "nodelay" if nodelay else "nagle"],
                              stdout=subprocess.PIPE)
    try:
        addr = server.stdout.readline().decode().strip()
        url = "http://" + addr

        def streams():
            with urllib.request.urlopen(url + "/_bench/streams", timeout=10) as r:
                return json.loads(r.read())["streams"]

        env = clean_env(TOGETHER_API_KEY=API_KEY, TOGETHER_BASE_URL=url)
        with Daemon(env=env, tmp=tmp) as d:
            job = submit(d, ctx)
            job = wait_building(d, job["id"], lambda j: streams() >= 1)
            fs = attach_followers(d, job, nfollowers, "stamp")
            load0 = loadavg()
            dc0 = cpu_seconds(d.proc.pid)
            urllib.request.urlopen(urllib.request.Request(url + "/_bench/go", data=b"{}",
                                                          method="POST"), timeout=10).read()
            pump(fs, 120 + args.latency_lines * args.interval_ms / 1000.0 * 3)
            dc1 = cpu_seconds(d.proc.pid)
            load1 = loadavg()
            final = d.call("build.get", {"id": job["id"]})
    finally:
        server.terminate()
        server.wait()
        subprocess.run(["rm", "-rf", tmp])
    problems = ["job ended %s: %s" % (final["state"], final.get("error"))] \
        if final["state"] != "succeeded" else []
    total, ingress, egress = [], [], []
    for i, f in enumerate(fs):
        problems += ["follower %d: %s" % (i, e) for e in f.errors]
        ks = [r[0] for r in f.records]
        if ks != list(range(1, args.latency_lines + 1)):
            problems.append("follower %d: stamped lines not 1..%d once each"
                            % (i, args.latency_lines))
        for _, stamp, evtime, recv in f.records:
            total.append((recv - stamp) * 1000)
            ingress.append((evtime - stamp) * 1000)
            egress.append((recv - evtime) * 1000)
    span = max(r[1] for r in fs[0].records) - min(r[1] for r in fs[0].records)
    print("latency (stamping builder, %s, %d follower%s, one line every %g ms = %.0f lines/s "
          "sent): %s" % ("TCP_NODELAY" if nodelay else "Nagle on", nfollowers,
                         "" if nfollowers == 1 else "s", args.interval_ms,
                         (args.latency_lines - 1) / span,
                         "all verified" if not problems else "PROBLEMS"))
    for p in problems[:20]:
        print("    " + p)
    print("    " + latency_summary("builder -> follower", total))
    print("    " + latency_summary("builder -> daemon  ", ingress))
    print("    " + latency_summary("daemon  -> follower", egress))
    print("    daemon CPU %.2f s; load average %s -> %s" % (dc1 - dc0, load0, load1))
    return not problems


def run_latency_sim(args, nfollowers):
    runs = max(1, args.latency_lines // 6)
    dockerfile = "FROM alpine:3.20\n" + "".join(
        "RUN echo step %d && make -j2 && ls /tmp\n" % i for i in range(runs))
    tmp = tempfile.mkdtemp(prefix="sb-relay-")
    ctx = make_context(os.path.join(tmp, "ctx"), dockerfile)
    faults = json.dumps({"hold": "start"})
    # libevent times its timers with CLOCK_MONOTONIC_COARSE unless asked for precise
    # timers; at HZ=250 that clock ticks every 4 ms and the simulator's 1 ms pace would
    # become one line every 4 ms.  Only the simulator gets the variable: the daemon runs
    # as it does in production.
    os.environ["EVENT_PRECISE_TIMER"] = "1"
    try:
        sim = Sim("--faults", faults, log_interval_ms=args.interval_ms)
    finally:
        del os.environ["EVENT_PRECISE_TIMER"]
    with sim, sim.daemon(tmp=tmp) as d:
        job = submit(d, ctx)
        job = wait_building(d, job["id"], sim_held(sim))
        direct = DirectSSE(sim.addr, job["build_id"], API_KEY)
        wait_for(lambda: sim.build(job["build_id"])["active_streams"] >= 2, 30, "both streams")
        fs = attach_followers(d, job, nfollowers, "times")
        load0 = loadavg()
        dc0 = cpu_seconds(d.proc.pid)
        sim.release(job["build_id"])
        pump(fs + [direct], 300 + args.latency_lines * args.interval_ms / 1000.0 * 3)
        dc1 = cpu_seconds(d.proc.pid)
        load1 = loadavg()
        total = sim.build(job["build_id"])["log_lines"]
        final = d.call("build.get", {"id": job["id"]})
    subprocess.run(["rm", "-rf", tmp])
    problems = ["job ended %s" % final["state"]] if final["state"] != "succeeded" else []
    if direct.events != total:
        problems.append("direct reader got %d lines of %d" % (direct.events, total))
    lat = []
    for i, f in enumerate(fs):
        problems += ["follower %d: %s" % (i, e) for e in f.errors]
        if len(f.records) != total:
            problems.append("follower %d: %d build lines of %d" % (i, len(f.records), total))
        lat += [(rec[1] - t) * 1000 for rec, t in zip(f.records, direct.times)]
    span = direct.last - direct.first
    print("latency (snapbuild-sim paced at %g ms, %d follower%s, %.0f lines/s as read "
          "directly): %s" % (args.interval_ms, nfollowers, "" if nfollowers == 1 else "s",
                             (total - 1) / span, "all verified" if not problems else "PROBLEMS"))
    for p in problems[:20]:
        print("    " + p)
    print("    " + latency_summary("direct reader -> follower", lat))
    print("    daemon CPU %.2f s; load average %s -> %s" % (dc1 - dc0, load0, load1))
    return not problems


DOCKERFILE_THROUGHPUT = "FROM alpine:3.20\nRUN make\n"


def main():
    if len(sys.argv) == 5 and sys.argv[1] == "--stamp-server":
        stamp_server_main(int(sys.argv[2]), float(sys.argv[3]), sys.argv[4] == "nodelay")
        return
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin-dir", default=os.environ.get("SNAPBUILD_BIN_DIR", "build"))
    ap.add_argument("--lines", type=int, default=200000)
    ap.add_argument("--followers", default="1,50")
    ap.add_argument("--latency-lines", type=int, default=3000)
    ap.add_argument("--latency-followers", default="1")
    ap.add_argument("--interval-ms", type=float, default=1.0)
    ap.add_argument("--only", default="source,throughput,latency-stamp,latency-stamp-nagle,"
                    "latency-sim")
    ap.add_argument("--perf", metavar="DIR", help="perf record the daemon during throughput runs")
    ap.add_argument("--perf-freq", type=int, default=499)
    ap.add_argument("--timeout", type=int, default=600, help="seconds a throughput run may take")
    a = ap.parse_args()
    os.environ["SNAPBUILD_BIN_DIR"] = os.path.abspath(a.bin_dir)
    sys.path.insert(0, os.path.join(HERE, "..", "tests", "integration"))
    global Daemon, clean_env, wait_for, Sim, API_KEY
    from harness import Daemon, clean_env, wait_for  # noqa: E402
    from simharness import API_KEY, Sim  # noqa: E402

    only = a.only.split(",")
    print("machine: %s; load average %s" % (machine(), loadavg()))
    ok = True
    if "source" in only:
        run_source(a)
    if "throughput" in only:
        for n in map(int, a.followers.split(",")):
            ok &= run_throughput(a, n)
    if "latency-stamp" in only:
        for n in map(int, a.latency_followers.split(",")):
            ok &= run_latency_stamp(a, n)
    if "latency-stamp-nagle" in only:
        for n in map(int, a.latency_followers.split(",")):
            ok &= run_latency_stamp(a, n, nodelay=False)
    if "latency-sim" in only:
        if a.interval_ms != int(a.interval_ms):
            raise SystemExit("snapbuild-sim paces in whole milliseconds")
        a.interval_ms = int(a.interval_ms)
        for n in map(int, a.latency_followers.split(",")):
            ok &= run_latency_sim(a, n)
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
