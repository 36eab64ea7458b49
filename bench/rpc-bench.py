#!/usr/bin/env python3
"""Benchmark of snapbuildd's RPC path, start-up and idle footprint.

    bench/rpc-bench.py [--bin-dir build] [--calls 20000] [--pipelined 200000] [--window 128]

Starts its own daemon on a temporary socket and state directory and reports:
  - start to READY=1 (sd_notify on a test NOTIFY_SOCKET), median and worst of 20 starts;
  - idle resident memory (VmRSS) after READY, and again after the round trips;
  - daemon.info round trips over one connection, one at a time;
  - daemon.info round trips over one connection, pipelined (up to --window in flight).
Targets (issue 2): >= 30,000/s pipelined, <= 4 MiB idle RSS, <= 20 ms to READY.
Not a test: numbers depend on the machine.  Results go in BENCHMARKS.md.
"""
import argparse
import os
import selectors
import shutil
import socket
import statistics
import subprocess
import tempfile
import time

REQ = b'{"jsonrpc":"2.0","method":"daemon.info","id":1}\n'


def start(daemon, tmp, n):
    notify = os.path.join(tmp, "notify-%d-%d.sock" % (n, time.monotonic_ns()))
    ns = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    ns.bind(notify)
    ns.settimeout(10)
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "NOTIFY_SOCKET": notify,
           "HOME": tmp}
    sock = os.path.join(tmp, "d%d-%d.sock" % (n, time.monotonic_ns()))
    t0 = time.perf_counter()
    p = subprocess.Popen([daemon, "--socket", sock, "--state-dir", os.path.join(tmp, "state%d" % n),
                          "--log-level", "warn"], env=env, stdin=subprocess.DEVNULL)
    while b"READY=1" not in ns.recv(4096):
        pass
    ready = time.perf_counter() - t0
    ns.close()
    return p, sock, ready


def cpu_seconds(pid):
    """User plus system CPU time the process has used so far."""
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def memory_kib(pid):
    """VmRSS, its anonymous (private) part, and the proportional set size."""
    out = {}
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.split(":")[0] in ("VmRSS", "RssAnon"):
                out[line.split(":")[0]] = int(line.split()[1])
    with open("/proc/%d/smaps_rollup" % pid) as f:
        for line in f:
            if line.startswith("Pss:"):
                out["Pss"] = int(line.split()[1])
    return out


def one_at_a_time(sock_path, calls):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.connect(sock_path)
    f = s.makefile("rb")
    t0 = time.perf_counter()
    for _ in range(calls):
        s.sendall(REQ)
        if not f.readline().endswith(b"\n"):
            raise SystemExit("short answer")
    dt = time.perf_counter() - t0
    f.close()
    s.close()
    return calls / dt


def pipelined(sock_path, calls, window):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.connect(sock_path)
    s.setblocking(False)
    sel = selectors.DefaultSelector()
    sel.register(s, selectors.EVENT_READ | selectors.EVENT_WRITE)
    sent = answered = 0
    out = b""
    t0 = time.perf_counter()
    while answered < calls:
        for _, ev in sel.select():
            if ev & selectors.EVENT_WRITE:
                if not out and sent < calls and sent - answered < window:
                    n = min(window - (sent - answered), calls - sent)
                    out = REQ * n
                    sent += n
                if out:
                    try:
                        out = out[s.send(out):]
                    except BlockingIOError:
                        pass
            if ev & selectors.EVENT_READ:
                try:
                    data = s.recv(1 << 20)
                except BlockingIOError:
                    continue
                if not data:
                    raise SystemExit("daemon closed the connection")
                answered += data.count(b"\n")
    dt = time.perf_counter() - t0
    s.close()
    return calls / dt


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin-dir", default=os.environ.get("SNAPBUILD_BIN_DIR", "build"))
    ap.add_argument("--calls", type=int, default=20000)
    ap.add_argument("--pipelined", type=int, default=200000)
    ap.add_argument("--window", type=int, default=128)
    ap.add_argument("--starts", type=int, default=20)
    a = ap.parse_args()
    daemon = os.path.join(a.bin_dir, "daemon", "snapbuildd")
    tmp = tempfile.mkdtemp(prefix="sb-bench-")
    try:
        fresh, warm = [], []
        for i in range(a.starts):
            p, _, ready = start(daemon, tmp, i)
            fresh.append(ready * 1000)
            p.terminate()
            p.wait()
            # the same state directory again: the usual restart
            p, _, ready = start(daemon, tmp, i)
            warm.append(ready * 1000)
            p.terminate()
            p.wait()
        p, sock, _ = start(daemon, tmp, a.starts)
        time.sleep(0.5)  # let start-up settle before sampling idle memory
        idle = memory_kib(p.pid)
        c0 = cpu_seconds(p.pid)
        single = one_at_a_time(sock, a.calls)
        c1 = cpu_seconds(p.pid)
        pipe = pipelined(sock, a.pipelined, a.window)
        c2 = cpu_seconds(p.pid)
        time.sleep(0.2)
        after = memory_kib(p.pid)
        p.terminate()
        p.wait()
        print("start to READY=1      fresh state dir: median %.1f ms, worst %.1f ms; existing: "
              "median %.1f ms, worst %.1f ms (%d starts each)"
              % (statistics.median(fresh), max(fresh), statistics.median(warm), max(warm), a.starts))
        print("idle memory           VmRSS %.1f MiB (anonymous %.1f MiB, PSS %.1f MiB) after READY; "
              "VmRSS %.1f MiB after the round trips"
              % (idle["VmRSS"] / 1024, idle["RssAnon"] / 1024, idle["Pss"] / 1024,
                 after["VmRSS"] / 1024))
        print("daemon.info 1-by-1    %.0f calls/s wall (%d calls); daemon CPU %.1f us/call"
              % (single, a.calls, (c1 - c0) * 1e6 / a.calls))
        print("daemon.info pipelined %.0f calls/s wall (%d calls, window %d); daemon CPU %.1f us/call "
              "= %.0f calls/s per core"
              % (pipe, a.pipelined, a.window, (c2 - c1) * 1e6 / a.pipelined,
                 a.pipelined / max(c2 - c1, 1e-9)))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
