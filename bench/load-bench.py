#!/usr/bin/env python3
"""Load benchmark of snapbuildd against snapbuild-sim (issue 6).

    bench/load-bench.py [--bin-dir build] [--clients 100] [--jobs 20] [--followers 200]
                        [--max-concurrent 8] [--context-dir DIR] [--only load,pack]

load: --clients threads each submit --jobs jobs (a small context passed as a directory
  fd, one connection per client) while --followers threads follow them (build.logs
  follow, each job by one follower), against one daemon and one simulator.  Checked as
  tests/integration/test_load.py checks (that file's run_load and check_load): every id
  ends succeeded, build.list holds exactly the submitted ids, the simulator registered one
  snapshot per job, every follower saw each event once, in order, as stored; and the
  daemon's descriptors after the run (files, pipes and Unix sockets as before, TCP
  connections within libcurl's connection cache).  Reports the wall time, jobs/s and
  the daemon's CPU time and peak RSS.

pack: daemon.info round trips, one at a time on one connection, while the daemon packs
  a ~450 MB context (bench/gen-context.py, seed 1, generated under --context-dir or a
  temporary directory) for a build.submit; p50/p99/max latency while the daemon takes in the packed archive, the same
  on the idle daemon for comparison, and the packing time.  Target: p99 < 10 ms.

Not a test: numbers depend on the machine.  Results go in BENCHMARKS.md ("Load").
"""
import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests", "integration"))


def cpu_seconds(pid):
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_kib(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    return 0


def percentile(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p / 100.0 * (len(xs) - 1))))]


def bench_load(args, tmp):
    import test_load as tl
    from harness import pack
    from simharness import Sim, wait_job
    ctx = os.path.join(tmp, "ctx")
    tl.write_context(ctx)
    with Sim() as sim:
        d = sim.daemon(config="max_concurrent = %d\nlog_level = warn\nreuse_max_age = 0\n" %
                       args.max_concurrent,
                       tmp=tempfile.mkdtemp(dir=tmp))
        try:
            fd = os.open(ctx, os.O_RDONLY | os.O_DIRECTORY)
            with d.conn() as c:
                warm = c.result("build.submit", {}, fds=[fd])
            os.close(fd)
            wait_job(d, warm["id"])
            before = tl.fd_kinds(d.proc.pid)
            cpu0 = cpu_seconds(d.proc.pid)
            r = tl.run_load(d, ctx, args.clients, args.jobs, args.followers, timeout=3600)
            cpu = cpu_seconds(d.proc.pid) - cpu0
            n = args.clients * args.jobs
            r.submitted.append(warm["id"])
            r.followed[warm["id"]] = []
            tc = unittest.TestCase()
            tc.maxDiff = 2000
            tl.check_load(tc, d, sim, r, n + 1)
            tcp_limit = before["tcp"] + 4 * args.max_concurrent
            t0 = time.monotonic()
            while True:
                after = tl.fd_kinds(d.proc.pid)
                ok = (after["unix"] <= before["unix"] and after["other"] <= before["other"]
                      and after["tcp"] <= tcp_limit)
                if ok or time.monotonic() - t0 > 30:
                    break
                time.sleep(0.2)
            print("load: %d clients x %d jobs + %d followers, max_concurrent %d"
                  % (args.clients, args.jobs, args.followers, args.max_concurrent))
            print("  all %d jobs succeeded, listed once, one snapshot each; every follower saw "
                  "each event once" % n)
            print("  submitting took %.1f s; all done in %.1f s: %.1f jobs/s"
                  % (r.submit_seconds, r.seconds, n / r.seconds))
            print("  daemon CPU %.1f s (%.1f ms/job), peak RSS (VmHWM) %.1f MiB"
                  % (cpu, 1000 * cpu / n, rss_kib(d.proc.pid) / 1024.0))
            print("  descriptors before %r, after %r: %s" % (before, after,
                                                               "ok" if ok else "LEAK?"))
        finally:
            d.stop()


def info_latencies(d, stop, out):
    from harness import Conn
    with Conn(d.socket, timeout=60) as c:
        while not stop():
            t = time.perf_counter()
            c.result("daemon.info")
            out.append(time.perf_counter() - t)


def bench_pack(args, tmp):
    from harness import pack
    from simharness import Sim, wait_job
    base = args.context_dir or tmp
    ctx = tempfile.mkdtemp(prefix="load-ctx-", dir=base)
    try:
        t0 = time.monotonic()
        subprocess.run([sys.executable, os.path.join(HERE, "gen-context.py"), ctx], check=True)
        size = int(subprocess.run(["du", "-sb", ctx], capture_output=True, text=True)
                   .stdout.split()[0])
        files = sum(len(f) for _, _, f in os.walk(ctx))
        print("pack: context %s: %d files, %.0f MB (generated in %.0f s)"
              % (ctx, files, size / 1e6, time.monotonic() - t0))
        with Sim() as sim:
            d = sim.daemon(config="log_level = warn\n", tmp=tempfile.mkdtemp(dir=tmp))
            try:
                idle = []
                t_end = time.monotonic() + 3
                info_latencies(d, lambda: time.monotonic() > t_end, idle)
                packing = []
                # Packed by the client first; what the daemon does while the call is
                # pending is the intake: copy, hash and check the archive on a worker.
                fd, archive = pack(ctx)
                state = {"packing": True}
                job = {}

                def submit():
                    with d.conn() as c:
                        job.update(c.result("build.submit", {"archive": archive}, fds=[fd]))
                    state["packing"] = False
                    state["t"] = time.monotonic() - t0
                t0 = time.monotonic()
                w = threading.Thread(target=submit)
                w.start()
                info_latencies(d, lambda: not state["packing"], packing)
                w.join()
                os.close(fd)
                j = wait_job(d, job["id"], timeout=3600)
                for name, xs in (("idle", idle), ("while packing", packing)):
                    ms = [x * 1000 for x in xs]
                    print("  daemon.info %s: %d calls, p50 %.2f ms, p99 %.2f ms, max %.2f ms"
                          % (name, len(ms), statistics.median(ms), percentile(ms, 99), max(ms)))
                print("  packing took %.1f s (archive %s bytes, %s files); job %s; peak RSS "
                      "(VmHWM) %.1f MiB" % (state["t"], j["archive"]["bytes"] if j["archive"]
                                            else "?", j["archive"]["files"] if j["archive"]
                                            else "?", j["state"], rss_kib(d.proc.pid) / 1024.0))
            finally:
                d.stop()
    finally:
        shutil.rmtree(ctx, ignore_errors=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--bin-dir", default=os.path.join(HERE, "..", "build"))
    ap.add_argument("--clients", type=int, default=100)
    ap.add_argument("--jobs", type=int, default=20)
    ap.add_argument("--followers", type=int, default=200)
    ap.add_argument("--max-concurrent", type=int, default=8)
    ap.add_argument("--context-dir")
    ap.add_argument("--only", default="load,pack")
    args = ap.parse_args()
    os.environ["SNAPBUILD_BIN_DIR"] = os.path.abspath(args.bin_dir)
    only = args.only.split(",")
    tmp = tempfile.mkdtemp(prefix="load-bench-")
    try:
        if "load" in only:
            bench_load(args, tmp)
        if "pack" in only:
            bench_pack(args, tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
