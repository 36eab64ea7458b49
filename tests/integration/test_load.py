"""Load, scaled to stay fast: concurrent clients submitting jobs while followers follow
them, against snapbuild-sim.

Checked: no job lost or duplicated (every submitted id ends succeeded, build.list holds
exactly the submitted ids, also paged 7 at a time through next_cursor, the simulator registered exactly one snapshot per job, tagged
with its id); every follower saw each event of its job exactly once and in order, the
same events the store keeps; no descriptor leaked (the daemon's /proc/<pid>/fd: files,
pipes and Unix sockets back to where they were, TCP connections no more than libcurl's
connection cache keeps).  The full size (100 clients x 20 jobs + 200 followers) and the
daemon.info latency while a 450 MB context is packed are bench/load-bench.py's.

run_load() is shared with bench/load-bench.py.
"""
import os
import queue
import subprocess
import tempfile
import threading
import time
import unittest

from harness import Conn, wait_for
from simharness import Sim, wait_job

DOCKERFILE = b"FROM debian:12\nRUN echo building\nCOPY . /app\nRUN make -C /app\n"


def write_context(root):
    files = {"Dockerfile": DOCKERFILE, "Makefile": b"all:\n\ttrue\n",
             "src/main.c": b"int main(void){return 0;}\n"}
    for path, data in files.items():
        full = os.path.join(root, path)
        os.makedirs(os.path.dirname(full), exist_ok=True)
        with open(full, "wb") as f:
            f.write(data)


def fd_kinds(pid):
    """The daemon's open descriptors by kind: unix and tcp sockets, and the rest."""
    unix, tcp = set(), set()
    with open("/proc/%d/net/unix" % pid) as f:
        next(f)
        unix = {line.split()[6] for line in f if len(line.split()) > 6}
    for name in ("tcp", "tcp6"):
        try:
            with open("/proc/%d/net/%s" % (pid, name)) as f:
                next(f)
                tcp |= {line.split()[9] for line in f}
        except FileNotFoundError:
            pass
    kinds = {"unix": 0, "tcp": 0, "other": 0}
    for fd in os.listdir("/proc/%d/fd" % pid):
        try:
            target = os.readlink("/proc/%d/fd/%s" % (pid, fd))
        except FileNotFoundError:
            continue
        inode = target[8:-1] if target.startswith("socket:[") else None
        kinds["unix" if inode in unix else "tcp" if inode in tcp else "other"] += 1
    return kinds


class LoadResult:
    def __init__(self):
        self.submitted = []
        self.followed = {}  # job id -> list of (seq, text) per follower
        self.errors = []
        self.submit_seconds = 0.0
        self.seconds = 0.0


def run_load(d, ctx, clients, jobs_per_client, followers, timeout=600):
    """clients threads each submit jobs_per_client jobs (the context as a directory fd,
    one connection each) while followers threads follow them, each job by one
    follower; returns a LoadResult once every follower has seen its job end."""
    r = LoadResult()
    lock = threading.Lock()
    todo = queue.Queue()
    t0 = time.monotonic()

    def submitter(k):
        try:
            with Conn(d.socket, timeout=120) as c:
                for m in range(jobs_per_client):
                    job = c.submit_result(ctx, {"tags": {"client": str(k)}})
                    with lock:
                        r.submitted.append(job["id"])
                    todo.put(job["id"])
        except Exception as e:  # reported by the caller
            with lock:
                r.errors.append("client %d: %r" % (k, e))

    def follower():
        while True:
            job_id = todo.get()
            if job_id is None:
                return
            seen = []
            try:
                with Conn(d.socket, timeout=timeout) as c:
                    ans = c.call("build.logs", {"id": job_id, "follow": True},
                                 on_notify=lambda m: seen.append((m["params"]["seq"],
                                                                  m["params"]["text"]))
                                 if m["method"] == "build.event" else None)
                if "error" in ans:
                    raise AssertionError(ans["error"])
            except Exception as e:
                with lock:
                    r.errors.append("follower of %s: %r" % (job_id, e))
            with lock:
                r.followed.setdefault(job_id, []).append(seen)

    subs = [threading.Thread(target=submitter, args=(k,)) for k in range(clients)]
    fols = [threading.Thread(target=follower) for _ in range(followers)]
    for t in fols + subs:
        t.start()
    for t in subs:
        t.join(timeout)
    r.submit_seconds = time.monotonic() - t0
    for _ in fols:
        todo.put(None)
    for t in fols:
        t.join(timeout)
    r.seconds = time.monotonic() - t0
    return r


def list_all(d, limit):
    """Every job, newest first, following next_cursor with pages of limit."""
    listed, cursor = [], None
    for _ in range(100000):
        p = {"limit": limit, "all_users": True}
        if cursor:
            p["cursor"] = cursor
        page = d.call("build.list", p)
        listed += page["jobs"]
        cursor = page["next_cursor"]
        if not cursor:
            return listed
    raise AssertionError("build.list pages never end")


def check_load(test, d, sim, r, expected_jobs):
    """The assertions of the load test, also run by the benchmark."""
    test.assertEqual(r.errors, [])
    test.assertEqual(len(r.submitted), expected_jobs)
    test.assertEqual(len(set(r.submitted)), expected_jobs)
    listed = list_all(d, 1000)
    test.assertEqual(sorted(j["id"] for j in listed), sorted(r.submitted))
    # Small pages, many cursors: the same jobs in the same order, none twice or skipped.
    test.assertEqual([j["id"] for j in list_all(d, 7)], [j["id"] for j in listed])
    test.assertEqual({j["state"] for j in listed}, {"succeeded"})
    snaps = sim.snapshots()
    test.assertEqual(sorted(s["tags"]["snapbuild.job"] for s in snaps), sorted(r.submitted))
    test.assertEqual(len({s["id"] for s in snaps}), expected_jobs)
    by_id = {j["id"]: j for j in listed}
    test.assertEqual(set(r.followed), set(r.submitted))
    for job_id, runs in r.followed.items():
        stored = []
        after = 0
        while True:
            page = d.call("build.logs", {"id": job_id, "after_seq": after, "limit": 10000})
            stored += [(e["seq"], e["text"]) for e in page["events"]]
            after = page["last_seq"]
            if not page["more"]:
                break
        test.assertEqual([s for s, _ in stored], list(range(1, by_id[job_id]["last_seq"] + 1)))
        for seen in runs:
            test.assertEqual(seen, stored, job_id)


class LoadTest(unittest.TestCase):
    CLIENTS, JOBS, FOLLOWERS, MAX_CONCURRENT = 16, 8, 32, 8

    def test_concurrent_clients_and_followers(self):
        tmp = tempfile.mkdtemp(prefix="sbl-")
        self.addCleanup(subprocess.run, ["rm", "-rf", tmp])
        ctx = os.path.join(tmp, "ctx")
        write_context(ctx)
        sim = Sim()
        self.addCleanup(sim.stop)
        # Every job builds: identical submits are the point, not reuse.
        d = sim.daemon(config="max_concurrent = %d\nreuse_max_age = 0\n" % self.MAX_CONCURRENT,
                       tmp=tempfile.mkdtemp(dir=tmp))
        self.addCleanup(d.__exit__, None, None, None)
        # One job first, so what the daemon opens once (libcurl, the spool) is counted.
        with d.conn() as c:
            warm = c.submit_result(ctx)
        self.assertEqual(wait_job(d, warm["id"])["state"], "succeeded")
        before = fd_kinds(d.proc.pid)

        # libcurl keeps idle connections to the API, as many as ran at once (12 to 22
        # here), so TCP sockets may stay above where they were; a leak of one per job
        # would pass any bound below the number of jobs, over two rounds twice that.
        half = self.JOBS // 2
        tcp_limit = before["tcp"] + 4 * self.MAX_CONCURRENT
        r1 = run_load(d, ctx, self.CLIENTS, half, self.FOLLOWERS, timeout=120)
        wait_for(lambda: self.settled(d, before, tcp_limit), 20,
                 "descriptors to settle after round 1 (before: %r)" % before)
        r2 = run_load(d, ctx, self.CLIENTS, self.JOBS - half, self.FOLLOWERS, timeout=120)
        wait_for(lambda: self.settled(d, before, tcp_limit), 20,
                 "descriptors to settle after round 2 (before: %r)" % before)
        # The warm-up job counts too: listed and registered once, followed by nobody.
        r1.submitted += r2.submitted + [warm["id"]]
        r1.errors += r2.errors
        r1.followed.update(r2.followed)
        r1.followed[warm["id"]] = []
        check_load(self, d, sim, r1, self.CLIENTS * self.JOBS + 1)

    @staticmethod
    def settled(d, before, tcp_limit):
        """The daemon's descriptors, if files, pipes and Unix sockets are back to where
        they were before and TCP connections at most tcp_limit; else None."""
        now = fd_kinds(d.proc.pid)
        ok = (now["unix"] <= before["unix"] and now["other"] <= before["other"]
              and now["tcp"] <= tcp_limit)
        return now if ok else None


if __name__ == "__main__":
    unittest.main()
