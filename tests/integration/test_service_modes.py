"""What the real builder leaves open, each way it might go: the daemon must give
every log line exactly once and a succeeded job whatever the service does.

The simulator models the unknowns (tests/sim/README.md): log events with numeric
ids, other ids or none (--log-ids on|opaque|off); a reconnect that honours
Last-Event-ID, replays from the start or continues where the last stream stopped
(--reconnect resume|replay|continue); heartbeats on quiet streams or none
(--heartbeat); 200, 201 or 202 for an accepted submit (--submit-status).  The matrix
drops the stream, or lets it go silent past the daemon's stall timeout (1 s here:
stall_timeout_seconds, a normal setting), in every combination.
"""
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import unittest

from harness import Daemon, clean_env, wait_for
from simharness import API_KEY, Sim, submit_ok, wait_job, write_tree

DOCKERFILE = (b"FROM debian:12\nRUN echo building\nCOPY . /app\nRUN make -C /app\n"
              b"RUN echo done\n")
STALL_CONFIG = "stall_timeout_seconds = 1\n"
FAKE_SERVICE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fake_service.py")


def stored_build_lines(d, job_id):
    """The job's build lines as the builder sent them (raw, colour codes kept)."""
    events = d.call("build.logs", {"id": job_id, "limit": 100000})["events"]
    return [e.get("raw", e["text"]) for e in events
            if e["kind"] == "log" and e["step"] == "build"]


class ServiceModes(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.mkdtemp(prefix="sbm-")
        self.addCleanup(shutil.rmtree, self.tmp, True)
        self.ctx = os.path.join(self.tmp, "app")
        write_tree(self.ctx, {"Dockerfile": DOCKERFILE, "Makefile": b"all:\n\ttrue\n"})

    def start(self, *sim_args, config=STALL_CONFIG, base_url=None, env=None):
        self.sim = Sim(*sim_args)
        self.addCleanup(self.sim.stop)
        e = {"TOGETHER_BASE_URL": base_url} if base_url else {}
        e.update(env or {})
        d = self.sim.daemon(config=config, tmp=tempfile.mkdtemp(dir=self.tmp), env=e)
        self.addCleanup(d.__exit__, None, None, None)
        return d

    def sim_log(self, build_id):
        return self.sim.sim("GET", "builds/%s/log" % build_id)["lines"]

    def assert_exactly_once(self, d, job):
        self.assertEqual(job["state"], "succeeded", job)
        want = self.sim_log(job["build_id"])
        self.assertGreater(len(want), 10)
        self.assertEqual(stored_build_lines(d, job["id"]), want)

    def run_mode(self, ids, reconnect, fault):
        d = self.start("--log-ids", ids, "--reconnect", reconnect, "--heartbeat", "0")
        if fault == "drop":
            self.sim.faults(logs_drop_after={"events": 4, "count": 2})
        else:
            # silent for far longer than the stall timeout: only the daemon ends it
            self.sim.faults(logs_stall={"ms": 600000, "after": 4, "count": 1})
        job = wait_job(d, submit_ok(d, self.ctx)["id"])
        self.assert_exactly_once(d, job)
        build = self.sim.build(job["build_id"])
        self.assertGreaterEqual(build["log_connects"], 2 if fault == "silence" else 3)
        logs = [r for r in self.sim.requests() if r["path"].endswith("/logs")]
        if ids == "off":
            self.assertFalse(any(r.get("last_event_id") for r in logs))
        else:
            self.assertTrue(all(r.get("last_event_id") for r in logs[1:]), logs)
        if fault == "silence":
            self.assertIn("no data on the log stream for 1 s", d.log())
            self.assertIn("stall_timeout_seconds", d.log())

    # --- quiet steps: heartbeats keep a stream, the backstop ends a silent one ---

    def test_heartbeats_keep_a_quiet_stream_past_the_stall_timeout(self):
        d = self.start("--heartbeat-ms", "100")
        self.sim.faults(hold="end")
        job_id = submit_ok(d, self.ctx)["id"]
        job = wait_job(d, job_id, states=("building",))
        build_id = job["build_id"]
        # Fifteen heartbeats are 1.5 s of a step printing nothing: past the 1 s timeout.
        wait_for(lambda: self.sim.build(build_id)["heartbeats"] >= 15, 30, "15 heartbeats")
        self.assertEqual(self.sim.build(build_id)["log_connects"], 1)
        self.sim.release(build_id)
        job = wait_job(d, job_id)
        self.assert_exactly_once(d, job)
        self.assertEqual(self.sim.build(build_id)["log_connects"], 1)
        self.assertNotIn("no data on the log stream", d.log())

    def test_a_silent_quiet_step_is_reconnected_by_the_backstop_and_never_fails(self):
        # resume: each reconnect gets nothing new, so six connections are more silent
        # attempts than the five a failing stream gets; replay: each repeats the log
        for ids, reconnect, connects in (("on", "resume", 6), ("off", "replay", 3)):
            with self.subTest(ids=ids, reconnect=reconnect):
                d = self.start("--log-ids", ids, "--reconnect", reconnect, "--heartbeat", "0")
                self.sim.faults(hold="end")
                job_id = submit_ok(d, self.ctx)["id"]
                build_id = wait_job(d, job_id, states=("building",))["build_id"]
                wait_for(lambda: self.sim.build(build_id)["log_connects"] >= connects, 60,
                         "%d connections through the silence" % connects)
                self.assertEqual(d.call("build.get", {"id": job_id})["state"], "building")
                self.sim.release(build_id)
                self.assert_exactly_once(d, wait_job(d, job_id))
                self.assertIn("no data on the log stream for 1 s", d.log())

    # --- a restart while the build runs, against a service without ids that replays ---

    def test_restart_against_a_replaying_service_without_ids_stores_nothing_twice(self):
        self.sim = Sim("--log-ids", "off", "--reconnect", "replay")
        self.addCleanup(self.sim.stop)
        dtmp = tempfile.mkdtemp(dir=self.tmp)
        env = clean_env(TOGETHER_API_KEY=API_KEY, TOGETHER_BASE_URL=self.sim.url)
        kw = dict(env=env, config="", tmp=dtmp, socket_path=os.path.join(dtmp, "s.sock"),
                  state_dir=os.path.join(dtmp, "state"))
        d = Daemon(**kw)
        self.sim.faults(hold="end")
        job_id = submit_ok(d, self.ctx)["id"]
        build_id = wait_job(d, job_id, states=("building",))["build_id"]
        wait_for(lambda: self.sim.build(build_id)["held"], 30, "the build to be held")
        n = len(self.sim_log(build_id))
        wait_for(lambda: len(stored_build_lines(d, job_id)) == n, 30, "every line stored")
        d.proc.kill()
        d.proc.wait()
        d.stop()
        d = Daemon(**kw)
        self.addCleanup(d.__exit__, None, None, None)
        wait_for(lambda: self.sim.build(build_id)["log_connects"] >= 2, 30, "the re-attach")
        self.sim.release(build_id)
        self.assert_exactly_once(d, wait_job(d, job_id))

    # --- the submit's answers ---

    def test_submit_answered_201_or_202_is_accepted(self):
        for status in ("201", "202"):
            with self.subTest(status=status):
                d = self.start("--submit-status", status)
                job = wait_job(d, submit_ok(d, self.ctx)["id"])
                self.assertEqual(job["state"], "succeeded", job)
                posts = [r for r in self.sim.requests() if r["path"] == "/builds"]
                self.assertEqual([r["status"] for r in posts], [int(status)])

    def test_submit_4xx_is_not_uploaded_again(self):
        for status in (400, 401, 413):
            with self.subTest(status=status):
                d = self.start()
                self.sim.faults(submit_fail={"count": 3, "status": status})
                job = wait_job(d, submit_ok(d, self.ctx)["id"])
                self.assertEqual(job["state"], "failed", job)
                posts = [r for r in self.sim.requests() if r["path"] == "/builds"]
                self.assertEqual([r["status"] for r in posts], [status])

    def test_submit_5xx_and_408_are_retried_honouring_retry_after(self):
        d = self.start()
        self.sim.faults(request_fail=[
            {"method": "POST", "path": "/builds", "status": 507, "count": 1, "retry_after": 1},
            {"method": "POST", "path": "/builds", "status": 408, "count": 1}])
        job = wait_job(d, submit_ok(d, self.ctx)["id"])
        self.assertEqual(job["state"], "succeeded", job)
        posts = [r for r in self.sim.requests() if r["path"] == "/builds"]
        self.assertEqual([r["status"] for r in posts], [507, 408, 200])

    # --- base URLs ---

    def test_trailing_slashes_in_the_base_and_builder_urls_make_no_double_slash(self):
        for base, builder in (("/", None), ("/v1/", None), ("//", "/")):
            with self.subTest(base=base, builder=builder):
                sim = Sim()
                self.addCleanup(sim.stop)
                env = {"TOGETHER_BASE_URL": sim.url + base}
                if builder:
                    env["SNAPBUILD_BUILDER_URL"] = sim.url + builder
                self.sim = sim
                d = sim.daemon(config="", tmp=tempfile.mkdtemp(dir=self.tmp), env=env)
                self.addCleanup(d.__exit__, None, None, None)
                info = d.call("daemon.info")
                self.assertEqual((info["api_url"], info["builder_url"]), (sim.url, sim.url))
                job = wait_job(d, submit_ok(d, self.ctx, alias="app@v1")["id"])
                self.assertEqual(job["state"], "succeeded", job)
                paths = [r["path"] for r in sim.requests()]
                self.assertIn("/builds", paths)
                self.assertIn("/v1/snapshots", paths)
                self.assertFalse([p for p in paths if "//" in p], paths)

    def test_builder_host_is_derived_from_an_api_bartender_host_prefix(self):
        cases = [("https://api.bartender.example.test/", "https://api.bartender.example.test",
                  "https://builder.example.test"),
                 ("https://api.bartender.example.test:8443/v1/",
                  "https://api.bartender.example.test:8443", "https://builder.example.test:8443"),
                 # only a host prefix is replaced, never the text elsewhere in the URL
                 ("https://gw.example.test/api.bartender.x/", "https://gw.example.test/api.bartender.x",
                  "https://gw.example.test/api.bartender.x")]
        for base, api_url, builder_url in cases:
            with self.subTest(base=base):
                env = clean_env(TOGETHER_API_KEY=API_KEY, TOGETHER_BASE_URL=base)
                with Daemon(env=env, config="", tmp=tempfile.mkdtemp(dir=self.tmp)) as d:
                    info = d.call("daemon.info")
                    self.assertEqual((info["api_url"], info["builder_url"]), (api_url, builder_url))

    # --- times from the management API ---

    def test_rfc3339_times_with_z_offsets_and_fractions(self):
        sid = "33333333-3333-4333-8333-333333333333"
        then = time.time() - (3 * 3600 + 600)  # 3 h 10 min ago; a lost offset is off by hours

        def rfc3339(offset_min, frac, zulu=True):
            s = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(then + offset_min * 60)) + frac
            if zulu and offset_min == 0:
                return s + "Z"
            sign = "+" if offset_min >= 0 else "-"
            return s + "%s%02d:%02d" % (sign, abs(offset_min) // 60, abs(offset_min) % 60)

        forms = [rfc3339(0, ""), rfc3339(0, ".123456"), rfc3339(120, ""),
                 rfc3339(-330, ".5"), rfc3339(0, ".25", zulu=False)]
        answers = [{"json": {"id": sid, "byte_size": 1, "tags": {}, "ttl": None,
                             "memory": False, "created_at": f, "retired_at": None,
                             "updated_at": f}} for f in forms]
        script = os.path.join(self.tmp, "script.json")
        with open(script, "w") as f:
            json.dump({"GET /v1/snapshots/" + sid: answers}, f)
        fake = subprocess.Popen([sys.executable, "-B", FAKE_SERVICE, "--script", script,
                                 "--log", os.path.join(self.tmp, "requests.jsonl")],
                                stdout=subprocess.PIPE)
        self.addCleanup(fake.wait)
        self.addCleanup(fake.kill)
        url = "http://" + fake.stdout.readline().decode().strip()
        fake.stdout.close()
        env = clean_env(TOGETHER_API_KEY=API_KEY, TOGETHER_BASE_URL=url)
        with Daemon(env=env, config="", tmp=tempfile.mkdtemp(dir=self.tmp)) as d:
            for form in forms:
                with self.subTest(created_at=form):
                    r = d.cli("snapshots", "get", sid)
                    self.assertEqual(r.returncode, 0, r.stderr)
                    self.assertRegex(r.stdout, r"created:\s+\S+ \S+ \S+ \(3 hours ago\)")

    # --- the simulator's own check for a second registration ---

    def test_sim_flags_a_second_snapshot_of_one_build(self):
        d = self.start(config="")
        self.sim.faults(register_commit_then="500")
        job = wait_job(d, submit_ok(d, self.ctx)["id"])
        self.assertEqual(job["state"], "succeeded", job)
        snaps = self.sim.snapshots()
        self.assertEqual([(s["build_id"], s["duplicate"]) for s in snaps],
                         [(job["build_id"], False)])
        # A client that registers blindly again is caught.
        body = json.dumps({"image": job["image_ref"], "architecture": "amd64"}).encode()
        import urllib.request
        req = urllib.request.Request(self.sim.url + "/v1/snapshots", data=body, method="POST",
                                     headers={"Authorization": "Bearer " + API_KEY,
                                              "Content-Type": "application/json"})
        urllib.request.urlopen(req, timeout=30).close()
        snaps = self.sim.snapshots()
        self.assertEqual([(s["build_id"], s["duplicate"]) for s in snaps],
                         [(job["build_id"], False), (job["build_id"], True)])


def _add_matrix():
    for ids in ("on", "opaque", "off"):
        for reconnect in ("resume", "replay", "continue"):
            for fault in ("drop", "silence"):
                def test(self, ids=ids, reconnect=reconnect, fault=fault):
                    self.run_mode(ids, reconnect, fault)
                test.__doc__ = "ids %s, reconnect %s, the stream %s" % (
                    ids, reconnect, "drops" if fault == "drop" else "goes silent")
                setattr(ServiceModes, "test_matrix_ids_%s_%s_%s" % (ids, reconnect, fault), test)


_add_matrix()

if __name__ == "__main__":
    unittest.main()
