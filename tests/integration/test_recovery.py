"""kill -9 at any moment loses nothing and registers nothing twice.

For each state of a remote job (and the building state of a local one), hold the
job there with the simulator's holds and faults, SIGKILL the daemon, start it again
on the same state directory, let things finish, then check: exactly one correct
terminal state, exactly one snapshot per succeeded job, every cancelled build got
its DELETE, and a follower that reconnects sees each log line once.
"""
import json
import os
import shutil
import sqlite3
import subprocess
import tempfile
import unittest

from harness import Conn, Daemon, clean_env, wait_for
from simharness import API_KEY, Sim, wait_job

import test_local_engine as tle

DOCKERFILE = b"FROM debian:12\nRUN echo one\nCOPY . /app\nRUN make -C /app\n"


class Recovery(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.mkdtemp(prefix="sbk-")
        self.addCleanup(shutil.rmtree, self.tmp, True)
        self.ctx = os.path.join(self.tmp, "ctx")
        os.makedirs(self.ctx)
        with open(os.path.join(self.ctx, "Dockerfile"), "wb") as f:
            f.write(DOCKERFILE)
        with open(os.path.join(self.ctx, "Makefile"), "w") as f:
            f.write("all:\n")
        self.sim = Sim(log_interval_ms=2)
        self.addCleanup(self.sim.stop)
        self.dtmp = tempfile.mkdtemp(dir=self.tmp)
        self.config = ""
        self.env = clean_env(TOGETHER_API_KEY=API_KEY, TOGETHER_BASE_URL=self.sim.url)
        self.d = None

    def start_daemon(self):
        self.d = Daemon(env=self.env, config=self.config, tmp=self.dtmp,
                        socket_path=os.path.join(self.dtmp, "s.sock"),
                        state_dir=os.path.join(self.dtmp, "state"))
        self.addCleanup(self._stop, self.d)
        return self.d

    @staticmethod
    def _stop(d):
        """The last daemon must stop cleanly; the ones we killed are already gone."""
        if d.proc.returncode is None:
            d.__exit__(None, None, None)
        else:
            d.stop()

    def kill_daemon(self):
        self.d.proc.kill()
        self.d.proc.wait()

    def restart(self):
        self.kill_daemon()
        return self.start_daemon()

    def submit(self, **params):
        with self.d.conn() as c:
            return c.submit_result(self.ctx, params)

    def state(self, job_id, state, timeout=60):
        return wait_job(self.d, job_id, states=(state,), timeout=timeout)

    def snapshots_of(self, job_id):
        return [s for s in self.sim.snapshots() if s["tags"].get("snapbuild.job") == job_id]

    def assert_succeeded_once(self, job_id):
        job = wait_job(self.d, job_id)
        self.assertEqual(job["state"], "succeeded", job)
        snaps = self.snapshots_of(job_id)
        self.assertEqual([s["id"] for s in snaps], [job["snapshot_id"]])
        self.assertEqual(snaps[0]["image"], job["image_ref"])
        return job

    def all_requests_answered(self):
        """Nothing the killed daemon sent is still being worked on (log streams aside)."""
        return all(r["status"] != 0 or r.get("dropped") or r.get("client_closed")
                   or r["path"].endswith("/logs") or r["path"].startswith("/_sim/")
                   for r in self.sim.requests())

    # --- remote states ---

    def test_queued(self):
        self.config = "max_concurrent = 1\n"
        self.start_daemon()
        self.sim.faults(hold="start")
        first = self.submit()["id"]
        b = self.state(first, "building")["build_id"]
        second = self.submit()["id"]
        self.state(second, "queued")
        self.restart()
        self.assertEqual(self.d.call("build.get", {"id": second})["state"], "queued")
        self.sim.faults(hold=False)
        self.sim.release(b)
        self.assert_succeeded_once(first)
        self.assert_succeeded_once(second)

    def test_uploading(self):
        self.start_daemon()
        self.sim.faults(latency_ms=3000)
        job = self.submit()["id"]
        self.state(job, "uploading")
        self.kill_daemon()
        self.sim.faults(latency_ms=None)
        wait_for(self.all_requests_answered, 30, "the simulator to finish the lost upload")
        self.start_daemon()
        self.assert_succeeded_once(job)

    def test_building_follower_sees_each_line_once(self):
        self.start_daemon()
        self.sim.faults(hold="end")
        job = self.submit()["id"]
        b = self.state(job, "building")["build_id"]
        wait_for(lambda: self.sim.build(b).get("held"), 30, "the build to be held")
        # A follower collects what it can before the daemon dies under it.
        seen = []
        with Conn(self.d.socket, timeout=5) as c:
            c.send("build.logs", {"id": job, "follow": True})
            wait_for(lambda: self._drain(c, seen), 30, "the build's lines to arrive")
        self.restart()
        self.sim.release(b)
        rest = []
        with Conn(self.d.socket, timeout=60) as c:
            ans = c.call("build.logs", {"id": job, "after_seq": seen[-1]["seq"], "follow": True},
                         on_notify=lambda m: rest.append(m["params"]))
        self.assertEqual(ans["result"]["job"]["state"], "succeeded")
        events = seen + rest
        seqs = [e["seq"] for e in events]
        self.assertEqual(seqs, list(range(1, len(seqs) + 1)))
        lines = [e["text"] for e in events if e["kind"] == "log" and e["step"] == "build"]
        stored = [e["text"] for e in self.d.call("build.logs", {"id": job})["events"]
                  if e["kind"] == "log" and e["step"] == "build"]
        self.assertEqual(lines, stored)
        self.assertEqual(len(lines), self.sim.build(b)["lines_emitted"])
        logs = [r for r in self.sim.requests() if r["path"].endswith("/logs")]
        self.assertTrue(logs[-1].get("last_event_id"), logs[-1])
        self.assert_succeeded_once(job)

    def _drain(self, conn, seen):
        """Reads notifications until the held build has sent its last line."""
        msg = conn.read()
        if msg and "id" not in msg:
            seen.append(msg["params"])
        return any(e["kind"] == "log" and e["text"].startswith("#") and "converting" in e["text"]
                   for e in seen[-3:]) and len(seen) > 5

    def hold_before(self, state, alias=None):
        """A job held in `state` by slowing every API answer down."""
        self.start_daemon()
        self.sim.faults(hold="end")
        params = {"alias": alias} if alias else {}
        job = self.submit(**params)["id"]
        b = self.state(job, "building")["build_id"]
        wait_for(lambda: self.sim.build(b).get("held"), 30, "the build to be held")
        self.sim.faults(latency_ms=1500, hold=False)
        self.sim.release(b)
        self.state(job, state)
        self.kill_daemon()
        wait_for(self.all_requests_answered, 30, "the simulator to answer what was in flight")
        self.sim.faults(latency_ms=None)
        self.start_daemon()
        return job

    def test_registering(self):
        job = self.hold_before("registering")
        self.assert_succeeded_once(job)

    def test_aliasing(self):
        job = self.hold_before("aliasing", alias="rec@v1")
        job = self.assert_succeeded_once(job)
        aliases = self.sim.sim("GET", "aliases")
        aliases = aliases.get("aliases", aliases) if isinstance(aliases, dict) else aliases
        self.assertEqual([(a["alias"], a["snapshot_id"]) for a in aliases],
                         [("rec@v1", job["snapshot_id"])])

    def test_ambiguous_registration_then_kill(self):
        self.start_daemon()
        self.sim.faults(register_commit_then={"mode": "drop", "count": 5})
        job = self.submit()["id"]
        wait_for(lambda: self.snapshots_of(job), 60, "the snapshot to be committed")
        self.kill_daemon()
        self.sim.faults(register_commit_then=None)
        self.start_daemon()
        self.assert_succeeded_once(job)

    def test_cancelling(self):
        self.start_daemon()
        self.sim.faults(hold="end")
        job = self.submit()["id"]
        b = self.state(job, "building")["build_id"]
        wait_for(lambda: self.sim.build(b).get("held"), 30, "the build to be held")
        self.sim.faults(request_fail=[{"method": "DELETE", "path": "/builds/", "status": 503,
                                       "count": 100}])
        with self.d.conn() as c:
            self.assertEqual(c.result("build.cancel", {"id": job})["state"], "cancelling")
        wait_for(lambda: [r for r in self.sim.requests() if r["method"] == "DELETE"], 30,
                 "a first DELETE")
        self.kill_daemon()
        self.sim.faults(request_fail=[])
        self.start_daemon()
        self.assertEqual(wait_job(self.d, job)["state"], "cancelled")
        self.assertIn(b, [x["build_id"] for x in self.sim.deletes()])
        self.assertEqual(self.sim.build(b)["status"], "cancelled")
        self.assertEqual(self.snapshots_of(job), [])

    # --- states that cannot be resumed as they were ---

    def edit_db(self, sql, *args):
        db = sqlite3.connect(os.path.join(self.dtmp, "state", "snapbuild.db"))
        db.execute(sql, args)
        db.commit()
        db.close()

    def test_packing_left_by_an_older_daemon_fails_with_reason(self):
        """Jobs no longer exist before their archive is held; an older daemon that
        packed contexts itself could leave one in 'packing'."""
        self.config = "max_concurrent = 1\n"
        self.start_daemon()
        self.sim.faults(hold="start")
        first = self.submit()["id"]
        self.state(first, "building")
        second = self.submit()["id"]
        self.state(second, "queued")
        self.kill_daemon()
        self.edit_db("UPDATE jobs SET state = 'packing' WHERE id = ?", second)
        self.start_daemon()
        job = wait_job(self.d, second)
        self.assertEqual(job["state"], "failed")
        self.assertIn("packing", job["error"])
        self.assertIn("submit the job again", job["hint"])

    def test_missing_spool_fails_with_reason(self):
        self.config = "max_concurrent = 1\n"
        self.start_daemon()
        self.sim.faults(hold="start")
        first = self.submit()["id"]
        self.state(first, "building")
        with open(os.path.join(self.ctx, "other.txt"), "w") as f:
            f.write("a different context, so a different spool file\n")
        second = self.submit()["id"]
        digest = self.state(second, "queued")["archive"]["sha256"]
        self.kill_daemon()
        os.unlink(os.path.join(self.dtmp, "state", "spool", digest + ".tar.gz"))
        self.start_daemon()
        job = wait_job(self.d, second)
        self.assertEqual(job["state"], "failed")
        self.assertIn("spool", job["error"])

    def test_events_of_old_jobs_are_deleted_at_start(self):
        self.start_daemon()
        old = self.submit()["id"]
        self.assert_succeeded_once(old)
        self.assertTrue(self.d.call("build.logs", {"id": old})["events"])
        self.kill_daemon()
        import time
        self.edit_db("UPDATE jobs SET finished_at = ? WHERE id = ?", time.time() - 31 * 86400, old)
        self.start_daemon()
        logs = self.d.call("build.logs", {"id": old})
        self.assertEqual(logs["events"], [])
        self.assertEqual(logs["job"]["state"], "succeeded")

    # --- local ---

    def test_local_building(self):
        bindir = os.path.join(self.tmp, "bin")
        os.makedirs(bindir)
        shutil.copy(os.path.join(tle.FAKES, "docker"), os.path.join(bindir, "docker"))
        with open(os.path.join(bindir, "fake-config.json"), "w") as f:
            json.dump({"build_sleep": 60}, f)
        self.env["PATH"] = bindir + ":" + self.env.get("PATH", "/usr/bin:/bin")
        self.config = "local_build = true\nlocal_engine = docker\n"
        self.start_daemon()
        job = self.submit(backend="local")["id"]

        def sleeping():
            ev = self.d.call("build.logs", {"id": job})["events"]
            return any(e["text"].endswith("sleeping") for e in ev)
        wait_for(sleeping, 60, "the local build to be running")
        with open(os.path.join(bindir, "fake-sleep.pid")) as f:
            sleeper = int(f.read())
        self.kill_daemon()
        # The orphaned build is the engine's; the next start builds again.
        with open(os.path.join(bindir, "fake-config.json"), "w") as f:
            json.dump({}, f)
        tmp = os.path.join(self.dtmp, "state", "tmp")
        left = os.listdir(tmp)
        self.assertEqual(len(left), 1, left)  # the killed build's directory, auth file and all
        self.start_daemon()
        job = self.assert_succeeded_once(job)
        self.assertEqual(job["backend"], "local")
        self.assertEqual(os.listdir(tmp), [])
        with open(os.path.join(bindir, "fake-record.jsonl")) as f:
            runs = [json.loads(l)["argv"] for l in f]
        builds = [a for a in runs if "build" in a]
        self.assertEqual(len(builds), 2)
        self.assertTrue(any("push" in a for a in runs))
        try:
            os.kill(sleeper, 9)
        except ProcessLookupError:
            pass


if __name__ == "__main__":
    unittest.main()
