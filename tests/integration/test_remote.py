"""Remote builds end to end: snapbuildd + snapbuild-sim + the CLI.

Each test starts its own simulator and daemon, submits real contexts (passed as a
file descriptor, as the CLI does) and checks what the simulator received and
registered, what the job records say and what followers saw.
"""
import json
import os
import socket
import stat
import subprocess
import tempfile
import threading
import unittest

from harness import CLI, Conn, pack, run_cli, wait_for
from simharness import API_KEY, Sim, submit, submit_ok, wait_job, write_tree

DOCKERFILE = b"FROM debian:12\nRUN echo building\nCOPY . /app\nRUN make -C /app\n"


def follow(d, job_id, after=0):
    """build.logs follow: returns (events, final answer)."""
    events = []
    with Conn(d.socket, timeout=60) as c:
        ans = c.call("build.logs", {"id": job_id, "after_seq": after, "follow": True},
                     on_notify=lambda m: events.append(m["params"]))
    return events, ans


def build_lines(events):
    return [e["text"] for e in events if e["kind"] == "log" and e["step"] == "build"]


class RemoteTest(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.mkdtemp(prefix="sbr-")
        # Cleanups run last-in first-out: the tree goes after the daemons using it.
        self.addCleanup(subprocess.run, ["rm", "-rf", self.tmp])
        self.ctx = os.path.join(self.tmp, "app")
        write_tree(self.ctx, {"Dockerfile": DOCKERFILE, "Makefile": b"all:\n\ttrue\n",
                              "src/main.c": b"int main(void){return 0;}\n"})

    def start(self, *sim_args, config="", log_interval_ms=2):
        self.sim = Sim(*sim_args, log_interval_ms=log_interval_ms)
        self.addCleanup(self.sim.stop)
        self.d = self.sim.daemon(config=config, tmp=tempfile.mkdtemp(dir=self.tmp))
        self.addCleanup(self.d.__exit__, None, None, None)
        return self.d

    # --- happy paths ---

    def test_context_job_registers_snapshot_with_alias_and_tags(self):
        d = self.start()
        job = submit_ok(d, self.ctx, alias="app@v1", tags={"team": "core"}, ttl=3600,
                        build_args={"MODE": "release"}, cache_key="apps/app")
        # The archive is held before the job exists: it starts queued.
        self.assertEqual(job["state"], "queued")
        self.assertEqual(job["archive"]["files"], len(os.listdir(self.ctx)))
        job = wait_job(d, job["id"])
        self.assertEqual(job["state"], "succeeded", job)
        snaps = self.sim.snapshots()
        self.assertEqual(len(snaps), 1)
        s = snaps[0]
        self.assertEqual(s["id"], job["snapshot_id"])
        self.assertEqual(s["image"], job["image_ref"])
        self.assertEqual(s["architecture"], "amd64")
        self.assertEqual(s["ttl"], 3600)
        self.assertEqual(s["tags"], {"team": "core", "snapbuild.job": job["id"]})
        aliases = self.sim.sim("GET", "aliases")
        aliases = aliases.get("aliases", aliases) if isinstance(aliases, dict) else aliases
        self.assertEqual([(a["alias"], a["snapshot_id"]) for a in aliases],
                         [("app@v1", job["snapshot_id"])])
        b = self.sim.build(job["build_id"])
        self.assertEqual(b["image_name"], job["image_name"])
        self.assertRegex(job["image_name"], r"^image-[0-9a-f-]{36}:[0-9a-f-]{36}$")
        self.assertEqual(b["dockerfile"], "Dockerfile")
        self.assertEqual(json.loads(b["build_args"]), {"MODE": "release"})
        self.assertEqual(b["nydus_convert"], "true")
        self.assertEqual(b["cache_key"], "apps/app")
        self.assertEqual(b["context"]["filename"], "context.tar.gz")
        self.assertEqual(b["context"]["content_type"], "application/gzip")
        # The registered image is exactly the builder's reference for this build.
        self.assertTrue(job["image_ref"].endswith("/" + job["image_name"]))

    def test_image_job_builds_from_one_line_dockerfile(self):
        d = self.start()
        with d.conn() as c:
            job = c.result("build.submit", {"image": "docker.io/library/alpine:3.20"})
        job = wait_job(d, job["id"])
        self.assertEqual(job["state"], "succeeded", job)
        b = self.sim.build(job["build_id"])
        self.assertEqual(b["dockerfile_text"], "FROM docker.io/library/alpine:3.20\n")
        self.assertEqual([f["path"] for f in b["files"]], ["./Dockerfile"])

    def test_cache_key_omitted_when_unset(self):
        # With no key from the client and no default one (test_reuse: the default).
        d = self.start(config="default_cache_key = none\n")
        job = wait_job(d, submit_ok(d, self.ctx)["id"])
        fields = self.sim.build(job["build_id"])["fields"]
        names = [f["name"] if isinstance(f, dict) else f for f in fields]
        self.assertNotIn("cache_key", names)
        self.assertEqual(sorted(names),
                         sorted(["image_name", "dockerfile", "build_args", "nydus_convert", "context"]))

    def test_received_files_are_what_dockerignore_allows(self):
        write_tree(self.ctx, {
            ".dockerignore": b"node_modules\n*.log\n!keep.log\nsecret/\n",
            "node_modules/a/index.js": b"x", "debug.log": b"x", "keep.log": b"k",
            "secret/key.pem": b"k", "docs/readme.md": b"d",
        })
        os.symlink("src/main.c", os.path.join(self.ctx, "link"))
        d = self.start()
        job = wait_job(d, submit_ok(d, self.ctx)["id"])
        self.assertEqual(job["state"], "succeeded", job)
        files = self.sim.build(job["build_id"])["files"]
        got = sorted(f["path"] for f in files if f["type"] != "dir")
        self.assertEqual(got, ["./.dockerignore", "./Dockerfile", "./Makefile", "./docs/readme.md",
                               "./keep.log", "./link", "./src/main.c"])
        link = [f for f in files if f["path"] == "./link"][0]
        self.assertEqual((link["type"], link["link"]), ("symlink", "src/main.c"))
        self.assertTrue(all(f["uid"] == 0 and f["gid"] == 0 for f in files))

    def test_cli_create_prints_only_the_snapshot_id_when_piped(self):
        d = self.start()
        r = d.cli("create", "--context", self.ctx, "--alias", "cli@v1", "--tag", "k=v", timeout=60)
        self.assertEqual(r.returncode, 0, r.stderr)
        snap = r.stdout.strip()
        self.assertEqual([s["id"] for s in self.sim.snapshots()], [snap])
        self.assertIn("==> building", r.stderr)
        self.assertIn("#1 [internal] load build definition from Dockerfile", r.stderr)
        jobs = json.loads(d.cli("jobs", "-o", "json").stdout)["jobs"]
        self.assertEqual(jobs[0]["snapshot_id"], snap)
        table = d.cli("jobs").stdout.splitlines()
        self.assertEqual(table[0].split(), ["ID", "STATE", "BACKEND", "ALIAS", "SNAPSHOT", "AGE"])
        self.assertIn("succeeded", table[1])

    def test_cli_create_detach_and_wait(self):
        d = self.start()
        r = d.cli("create", "--context", self.ctx, "--detach")
        self.assertEqual(r.returncode, 0, r.stderr)
        job_id = r.stdout.strip()
        w = d.cli("wait", job_id[:8], timeout=60)
        self.assertEqual(w.returncode, 0, w.stdout + w.stderr)
        self.assertIn("succeeded", w.stdout)

    def test_cli_create_ctrl_c_cancels_the_job(self):
        d = self.start()
        self.sim.faults(hold="end")
        import signal
        from harness import CLI, clean_env
        p = subprocess.Popen([CLI, "--socket", d.socket, "create", "--context", self.ctx],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             env=clean_env(), text=True)
        self.addCleanup(p.kill)
        job = wait_for(lambda: (d.call("build.list")["jobs"] or [None])[0], 30, "the job")
        b = wait_job(d, job["id"], states=("building",))["build_id"]
        wait_for(lambda: self.sim.build(b).get("held"), 30, "the build to be held")
        p.send_signal(signal.SIGINT)
        out, err = p.communicate(timeout=60)
        self.assertEqual(p.returncode, 130, err)
        self.assertIn("cancelled job", err)
        self.assertEqual(wait_job(d, job["id"])["state"], "cancelled")
        self.assertEqual([x["build_id"] for x in self.sim.deletes()], [b])

    def test_cli_create_live_view_on_a_terminal(self):
        d = self.start()
        cmd = "%s --socket %s create --context %s --alias tty@v1" % (
            __import__("harness").CLI, d.socket, self.ctx)
        r = subprocess.run(["script", "-qec", cmd, "/dev/null"], capture_output=True,
                           text=True, timeout=120, env=dict(__import__("harness").clean_env(),
                                                            TERM="xterm"))
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        snap = self.sim.snapshots()[0]["id"]
        self.assertIn("Snapshot created: %s (tty@v1)" % snap, r.stdout)
        self.assertIn("\x1b[", r.stdout)  # colour on a terminal
        self.assertIn("upload [", r.stdout)
        r = subprocess.run(["script", "-qec", cmd, "/dev/null"], capture_output=True,
                           text=True, timeout=120,
                           env=dict(__import__("harness").clean_env(), TERM="xterm",
                                    NO_COLOR="1"))
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        self.assertNotIn("\x1b[3", r.stdout)  # NO_COLOR: no colours

    # --- faults ---

    def test_submit_503_then_success_is_retried(self):
        d = self.start()
        self.sim.faults(submit_fail={"count": 2, "status": 503})
        job = wait_job(d, submit_ok(d, self.ctx)["id"])
        self.assertEqual(job["state"], "succeeded", job)
        posts = [r for r in self.sim.requests() if r["method"] == "POST" and r["path"] == "/builds"]
        self.assertEqual([r["status"] for r in posts], [503, 503, 200])

    def test_submit_429_honours_retry_after(self):
        d = self.start()
        self.sim.faults(submit_fail={"count": 1, "status": 429, "retry_after": 1})
        job = wait_job(d, submit_ok(d, self.ctx)["id"])
        self.assertEqual(job["state"], "succeeded", job)
        posts = [r for r in self.sim.requests() if r["method"] == "POST" and r["path"] == "/builds"]
        self.assertEqual([r["status"] for r in posts], [429, 200])

    def test_submit_fails_after_three_attempts_with_hint(self):
        d = self.start()
        self.sim.faults(submit_fail={"count": 5, "status": 500})
        job = wait_job(d, submit_ok(d, self.ctx)["id"])
        self.assertEqual(job["state"], "failed")
        self.assertIn("uploading the context failed", job["error"])
        self.assertTrue(job["hint"])
        posts = [r for r in self.sim.requests() if r["method"] == "POST" and r["path"] == "/builds"]
        self.assertEqual(len(posts), 3)

    def test_log_404_while_scheduling_is_retried(self):
        d = self.start()
        self.sim.faults(logs_404=3)
        job_id = submit_ok(d, self.ctx)["id"]
        events, ans = follow(d, job_id)
        self.assertEqual(ans["result"]["job"]["state"], "succeeded")
        job = ans["result"]["job"]
        logs = [r for r in self.sim.requests() if r["path"].endswith("/logs")]
        self.assertEqual([r["status"] for r in logs][:4], [404, 404, 404, 200])
        self.assertEqual(build_lines(events), self.expected_lines(job))

    def expected_lines(self, job):
        """The build's log as the simulator emitted it, from an SDK-like reader."""
        import http.client
        host, port = self.sim.addr.rsplit(":", 1)
        c = http.client.HTTPConnection(host, int(port), timeout=30)
        c.request("GET", "/builds/%s/logs" % job["build_id"],
                  headers={"Authorization": "Bearer " + API_KEY, "Accept": "text/event-stream"})
        body = c.getresponse().read().decode()
        c.close()
        lines = []
        for block in body.split("\n\n"):
            data = [l[6:] if l.startswith("data: ") else l[5:] for l in block.split("\n")
                    if l.startswith("data:")]
            if not data:
                continue
            text = "\n".join(data)
            if text.startswith("{"):
                continue
            lines.append(strip_ansi(text))
        return lines

    def test_dropped_stream_resumes_without_duplicates(self):
        d = self.start()
        self.sim.faults(logs_drop_after={"events": 5, "count": 3})
        job_id = submit_ok(d, self.ctx)["id"]
        events, ans = follow(d, job_id)
        job = ans["result"]["job"]
        self.assertEqual(job["state"], "succeeded", job)
        lines = build_lines(events)
        self.assertEqual(lines, self.expected_lines(job))
        seqs = [e["seq"] for e in events]
        self.assertEqual(seqs, sorted(set(seqs)))
        logs = [r for r in self.sim.requests() if r["path"].endswith("/logs")]
        self.assertGreaterEqual(len(logs), 4)
        # Reconnects resume after the last event the daemon stored.
        self.assertTrue(any(r.get("last_event_id") for r in logs[1:]))

    def test_stalled_stream_is_reconnected(self):
        d = self.start(config="stall_timeout_seconds = 1\n")
        self.sim.faults(logs_stall={"ms": 5000, "after": 3, "count": 1})
        job_id = submit_ok(d, self.ctx)["id"]
        events, ans = follow(d, job_id)
        job = ans["result"]["job"]
        self.assertEqual(job["state"], "succeeded", job)
        self.assertEqual(build_lines(events), self.expected_lines(job))

    def test_error_event_fails_the_job(self):
        d = self.start()
        write_tree(self.ctx, {"Dockerfile": b"FROM debian:12\nRUN false\n"})
        job = wait_job(d, submit_ok(d, self.ctx)["id"])
        self.assertEqual(job["state"], "failed")
        self.assertIn("RUN false", job["error"])
        self.assertEqual(self.sim.snapshots(), [])

    def test_missing_image_ref_fails_the_job(self):
        d = self.start()
        self.sim.faults(status_no_image_ref=True)
        job = wait_job(d, submit_ok(d, self.ctx)["id"])
        self.assertEqual(job["state"], "failed")
        self.assertIn("no image reference", job["error"])
        self.assertEqual(self.sim.snapshots(), [])

    def test_ambiguous_registration_makes_one_snapshot(self):
        for mode in ("500", "drop"):
            with self.subTest(mode=mode):
                d = self.start()
                self.sim.faults(register_commit_then={"mode": mode, "count": 1})
                job = wait_job(d, submit_ok(d, self.ctx)["id"])
                self.assertEqual(job["state"], "succeeded", job)
                snaps = self.sim.snapshots()
                self.assertEqual(len(snaps), 1, snaps)
                self.assertEqual(snaps[0]["id"], job["snapshot_id"])

    def test_unauthorized_key_fails_with_hint(self):
        self.sim = Sim()
        self.addCleanup(self.sim.stop)
        from harness import Daemon, clean_env
        d = Daemon(env=clean_env(TOGETHER_API_KEY="wrong-key", TOGETHER_BASE_URL=self.sim.url),
                   tmp=tempfile.mkdtemp(dir=self.tmp))
        self.addCleanup(d.__exit__, None, None, None)
        job = wait_job(d, submit_ok(d, self.ctx)["id"])
        self.assertEqual(job["state"], "failed")
        self.assertIn("API key", job["hint"])

    def test_submit_without_a_key_says_how_to_give_one(self):
        self.sim = Sim()
        self.addCleanup(self.sim.stop)
        from harness import Daemon, clean_env
        d = Daemon(env=clean_env(TOGETHER_BASE_URL=self.sim.url), tmp=tempfile.mkdtemp(dir=self.tmp))
        self.addCleanup(d.__exit__, None, None, None)
        err = submit(d, self.ctx)["error"]
        self.assertEqual(err["code"], -32004)
        self.assertIn("no API key", err["message"])
        self.assertIn("TOGETHER_API_KEY", err["data"]["hint"])
        self.assertEqual(d.call("build.list")["jobs"], [])
        self.assertEqual(self.sim.builds(), [])

    # --- cancel ---

    def test_cancel_while_queued(self):
        d = self.start(config="max_concurrent = 1\n")
        self.sim.faults(hold="start")
        first = submit_ok(d, self.ctx)["id"]
        wait_job(d, first, states=("building",))
        second = submit_ok(d, self.ctx)["id"]
        j = wait_job(d, second, states=("queued",))
        self.assertEqual(j["queue_position"], 1)
        with d.conn() as c:
            self.assertEqual(c.result("build.cancel", {"id": second})["state"], "cancelled")
        with d.conn() as c:
            self.assertEqual(c.result("build.cancel", {"id": first})["state"], "cancelling")
        self.assertEqual(wait_job(d, first)["state"], "cancelled")
        self.assertEqual(len(self.sim.builds()), 1)

    def test_cancel_while_building_sends_delete(self):
        d = self.start()
        self.sim.faults(hold="end")
        job_id = submit_ok(d, self.ctx)["id"]
        job = wait_job(d, job_id, states=("building",))
        wait_for(lambda: self.sim.build(job["build_id"]).get("held"), 30, "the build to be held")
        r = d.cli("cancel", job_id)
        self.assertEqual(r.returncode, 0, r.stderr)
        job = wait_job(d, job_id)
        self.assertEqual(job["state"], "cancelled")
        self.assertEqual([x["build_id"] for x in self.sim.deletes()], [job["build_id"]])
        with d.conn() as c:
            err = c.call("build.cancel", {"id": job_id})["error"]
        self.assertEqual(err["code"], -32003)

    def test_cancel_while_uploading(self):
        d = self.start()
        self.sim.faults(latency_ms=1500)
        job_id = submit_ok(d, self.ctx)["id"]
        wait_job(d, job_id, states=("uploading",))
        with d.conn() as c:
            # The submit is in flight: the cancel waits for its answer.
            self.assertEqual(c.result("build.cancel", {"id": job_id})["state"], "cancelling")
        job = wait_job(d, job_id)
        self.assertEqual(job["state"], "cancelled")
        # The build the submit created was deleted, not left to run unseen.
        builds = self.sim.builds()
        self.assertEqual(len(builds), 1)
        self.assertEqual(job["build_id"], builds[0].get("build_id") or builds[0].get("id"))
        self.assertEqual([x["build_id"] for x in self.sim.deletes()], [job["build_id"]])
        self.assertEqual(self.sim.snapshots(), [])

    def test_cancel_while_registering_retires_the_snapshot(self):
        d = self.start()
        # The registration commits but its answer is lost, and the lookup that follows
        # fails for a while: the job sits in registering with a snapshot it cannot see.
        self.sim.faults(register_commit_then={"mode": "500", "count": 1},
                        request_fail=[{"method": "GET", "path": "/v1/snapshots",
                                       "status": 503, "count": 2}])
        job_id = submit_ok(d, self.ctx)["id"]

        def lost():
            ev = d.call("build.logs", {"id": job_id})["events"]
            return any("registration answer lost" in e["text"] for e in ev)
        wait_for(lost, 60, "the registration's answer to be lost")
        with d.conn() as c:
            self.assertEqual(c.result("build.cancel", {"id": job_id})["state"], "cancelling")
        job = wait_job(d, job_id, timeout=60)
        self.assertEqual(job["state"], "cancelled", job)
        snaps = self.sim.snapshots()
        self.assertEqual(len(snaps), 1, snaps)
        # The snapshot registered as the cancel came is retired, not left behind.
        self.assertEqual(job["snapshot_id"], snaps[0]["id"])
        self.assertTrue(snaps[0].get("retired_at"), snaps[0])

    def test_log_is_clipped_at_max_log_bytes(self):
        d = self.start(config="max_log_bytes = 2K\n")
        self.sim.faults(log_lines=400)
        job = wait_job(d, submit_ok(d, self.ctx)["id"])
        self.assertEqual(job["state"], "succeeded", job)
        events = d.call("build.logs", {"id": job["id"], "limit": 100000})["events"]
        build = [e for e in events if e["kind"] == "log" and e.get("step") == "build"]
        kept = sum(len(e["text"]) for e in build)
        self.assertLessEqual(kept, 2048)
        self.assertTrue(build)
        marks = [e for e in events if "[output clipped, log limit 2.0 KiB reached]" in e["text"]]
        self.assertEqual(len(marks), 1, [e["text"] for e in events][-5:])
        counted = [e for e in events if "lines past the log limit were counted" in e["text"]]
        self.assertEqual(len(counted), 1)
        self.assertGreater(int(counted[0]["text"].split()[0]), 300)
        # State changes are never clipped: the job's end is there.
        self.assertEqual([e["text"] for e in events if e["kind"] == "state"][-1], "succeeded")

    # --- followers ---

    def test_two_followers_see_identical_sequences_and_replay_matches(self):
        d = self.start(log_interval_ms=5)
        job_id = submit_ok(d, self.ctx)["id"]
        results = [None, None]

        def run(i):
            results[i] = follow(d, job_id)
        ts = [threading.Thread(target=run, args=(i,)) for i in range(2)]
        for t in ts:
            t.start()
        for t in ts:
            t.join(60)
        a, b = results[0][0], results[1][0]
        self.assertEqual([(e["seq"], e["text"]) for e in a], [(e["seq"], e["text"]) for e in b])
        self.assertEqual([e["seq"] for e in a], list(range(1, len(a) + 1)))
        replay, ans = follow(d, job_id)
        self.assertEqual(replay, a)
        # A follower that reconnects after seq N gets exactly the rest.
        tail, _ = follow(d, job_id, after=10)
        self.assertEqual(tail, a[10:])
        plain = d.call("build.logs", {"id": job_id})
        self.assertEqual(plain["events"], a)
        self.assertFalse(plain["more"])

    def test_logs_cli_replays_finished_job(self):
        d = self.start()
        job = wait_job(d, submit_ok(d, self.ctx)["id"])
        r = d.cli("logs", job["id"])
        self.assertEqual(r.returncode, 0, r.stderr)
        for line in self.expected_lines(job):
            self.assertIn(line, r.stdout)

    # --- contexts and params ---

    def test_fifo_symlink_loop_and_unreadable_file(self):
        os.mkfifo(os.path.join(self.ctx, "pipe"))
        os.symlink("loop", os.path.join(self.ctx, "loop"))
        d = self.start()
        job = wait_job(d, submit_ok(d, self.ctx)["id"])
        self.assertEqual(job["state"], "succeeded", job)
        paths = [f["path"] for f in self.sim.build(job["build_id"])["files"]]
        self.assertNotIn("./pipe", paths)
        self.assertIn("./loop", paths)
        # The client packs, and tells its user what it skipped.
        r = d.cli("create", "--context", self.ctx, "--ci")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn("warning: skipped FIFO ./pipe", r.stderr)
        # Unreadable files are test_isolation's (they need a user other than root).

    def test_dockerfile_outside_context_is_refused(self):
        d = self.start()
        fd, archive = pack(self.ctx)
        self.addCleanup(os.close, fd)
        for bad in ("../Dockerfile", "/etc/passwd", "a/../../Dockerfile"):
            with d.conn() as c:
                err = c.call("build.submit", {"dockerfile": bad, "archive": archive},
                             fds=[fd])["error"]
            self.assertEqual(err["code"], -32602, bad)
            self.assertIn("dockerfile", err["message"])
        # (The CLI sends a Dockerfile from outside the context in the archive, under a
        # generated name, as docker does: test_cli_habits.)  A symlink in the context
        # that leads out of it is refused by the client before asking the daemon.
        os.symlink("/etc/hostname", os.path.join(self.ctx, "Outside"))
        r = d.cli("create", "--context", self.ctx, "--dockerfile", "Outside", "--ci")
        self.assertEqual(r.returncode, 1, r.stderr)
        self.assertIn("outside the context", r.stderr)
        self.assertEqual(self.sim.builds(), [])

    def test_invalid_params_name_the_field(self):
        d = self.start()
        cases = {
            "ttl": {"ttl": 0}, "tags": {"tags": {"a": 1}}, "cache_key": {"cache_key": "Bad:Tag"},
            "backend": {"backend": "moon"}, "architecture": {"architecture": "mips"},
            "alias": {"alias": "a b"}, "build_args": {"build_args": []}, "bogus": {"bogus": 1},
        }
        for field, p in cases.items():
            err = submit(d, self.ctx, **p)["error"]
            self.assertEqual(err["code"], -32602, field)
            self.assertIn(field, err["message"])

    def test_retry_reuses_the_packed_context(self):
        d = self.start()
        first = wait_job(d, submit_ok(d, self.ctx)["id"])
        r = d.cli("retry", first["id"])
        self.assertEqual(r.returncode, 0, r.stderr)
        second = wait_job(d, r.stdout.strip())
        self.assertEqual(second["state"], "succeeded")
        self.assertEqual(second["retry_of"], first["id"])
        self.assertEqual(second["archive"]["sha256"], first["archive"]["sha256"])
        self.assertNotEqual(second["snapshot_id"], first["snapshot_id"])
        # A bare prune keeps the last 7 days; --all (no terminal: no question) does not.
        p = d.cli("prune")
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertIn("deleted 0 jobs", p.stdout)
        self.assertEqual(len(d.call("build.list")["jobs"]), 2)
        p = d.cli("prune", "--all")
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertIn("deleted 2 jobs", p.stdout)
        self.assertEqual(os.listdir(os.path.join(d.state_dir, "spool")), [])

    def test_client_killed_while_packing_leaves_no_job_and_no_file(self):
        # A sparse 20 GB file: packing it takes long enough to be caught in the act.
        with open(os.path.join(self.ctx, "huge.img"), "wb") as f:
            f.truncate(20 << 30)
        d = self.start()
        tmpdir = os.path.join(self.tmp, "clienttmp")
        os.mkdir(tmpdir)
        env = dict(os.environ, TMPDIR=tmpdir)
        p = subprocess.Popen([CLI, "--socket", d.socket, "create", "--context", self.ctx,
                              "--ci"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)

        def packing():
            # The archive is an unlinked file in TMPDIR, open in the client.
            try:
                links = [os.readlink("/proc/%d/fd/%s" % (p.pid, n))
                         for n in os.listdir("/proc/%d/fd" % p.pid)]
            except OSError:
                return False
            return any(l.startswith(tmpdir) for l in links)
        wait_for(packing, 30, "the client to start packing")
        p.kill()
        p.communicate()
        self.assertEqual(os.listdir(tmpdir), [])
        self.assertEqual(d.call("build.list")["jobs"], [])
        self.assertEqual(os.listdir(os.path.join(d.state_dir, "spool")), [])
        self.assertEqual(self.sim.builds(), [])
        self.assertTrue(d.call("daemon.info"))

    def test_context_save_never_replaces_what_is_not_a_file(self):
        # A FIFO (as /dev/null would be) is written to, never renamed over.
        fifo = os.path.join(self.tmp, "fifo")
        os.mkfifo(fifo)
        got = []
        t = threading.Thread(target=lambda: got.append(open(fifo, "rb").read()))
        t.start()
        r = run_cli("context", self.ctx, "--save", fifo)
        t.join(30)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertTrue(stat.S_ISFIFO(os.stat(fifo).st_mode))
        self.assertEqual(got[0][:2], b"\x1f\x8b")
        # "-" is standard output; the summary goes to standard error.
        p = subprocess.run([CLI, "context", self.ctx, "--save", "-"], capture_output=True)
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertEqual(p.stdout, got[0])
        self.assertIn(b"wrote the archive to standard output", p.stderr)

    def test_context_needs_no_daemon(self):
        r = run_cli("--socket", os.path.join(self.tmp, "nothing.sock"), "context", self.ctx,
                    "--files")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn("./Dockerfile", r.stdout)

    def test_context_inspect_and_save_match_the_upload(self):
        write_tree(self.ctx, {".dockerignore": b"*.tmp\n", "junk.tmp": b"x" * 100})
        d = self.start()
        out = os.path.join(self.tmp, "ctx.tar.gz")
        r = d.cli("context", self.ctx, "--save", out)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn("junk.tmp", r.stdout)
        job = wait_job(d, submit_ok(d, self.ctx)["id"])
        import urllib.request
        with urllib.request.urlopen(self.sim.url + "/_sim/builds/%s/context" % job["build_id"]) as u:
            uploaded = u.read()
        with open(out, "rb") as f:
            self.assertEqual(f.read(), uploaded)


def strip_ansi(s):
    import re
    return re.sub(r"\x1b\[[0-?]*[ -/]*[@-~]", "", s)


if __name__ == "__main__":
    unittest.main()
