"""Repeat builds: build reuse and the default cache key, end to end with snapbuild-sim.

A job identical to a succeeded one of the same user (same archive, same options) takes
its snapshot without uploading or building anything, unless its snapshot is retired,
the options differ, reuse_max_age says no or the client asks for no_cache; and a build
without a cache key gets a stable one per user and project.
"""
import os
import subprocess
import tempfile
import unittest

from harness import Conn
from simharness import Sim, submit_ok, wait_job, write_tree

DOCKERFILE = b"FROM debian:12\nRUN echo building\nCOPY . /app\n"


def job_lines(d, job_id):
    with Conn(d.socket, timeout=30) as c:
        ans = c.call("build.logs", {"id": job_id})
    return [e["text"] for e in ans["result"]["events"] if e["kind"] == "log"]


class ReuseTest(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.mkdtemp(prefix="sbreuse-")
        self.addCleanup(subprocess.run, ["rm", "-rf", self.tmp])
        self.ctx = os.path.join(self.tmp, "app")
        write_tree(self.ctx, {"Dockerfile": DOCKERFILE, "src/main.c": b"int main(){}\n"})

    def start(self, config=""):
        self.sim = Sim()
        self.addCleanup(self.sim.stop)
        self.d = self.sim.daemon(config=config, tmp=tempfile.mkdtemp(dir=self.tmp))
        self.addCleanup(self.d.__exit__, None, None, None)
        return self.d

    def build(self, **params):
        job = submit_ok(self.d, self.ctx, **params)
        job = wait_job(self.d, job["id"])
        self.assertEqual(job["state"], "succeeded", job)
        return job

    def test_identical_job_reuses_the_snapshot_and_sets_its_alias(self):
        self.start()
        first = self.build(alias="app@v1", build_args={"A": "1", "B": "2"})
        self.assertIsNone(first["reused_from"])
        # The same context and options (build args in another order), another alias.
        second = self.build(alias="app@v2", build_args={"B": "2", "A": "1"})
        self.assertEqual(second["reused_from"], first["id"])
        self.assertEqual(second["snapshot_id"], first["snapshot_id"])
        self.assertEqual(second["archive"]["sha256"], first["archive"]["sha256"])
        self.assertIsNone(second["build_id"])
        self.assertEqual(len(self.sim.builds()), 1)  # nothing uploaded, nothing built
        aliases = self.sim.sim("GET", "aliases")
        aliases = aliases.get("aliases", aliases) if isinstance(aliases, dict) else aliases
        self.assertEqual(sorted((a["alias"], a["snapshot_id"]) for a in aliases),
                         [("app@v1", first["snapshot_id"]), ("app@v2", first["snapshot_id"])])
        lines = job_lines(self.d, second["id"])
        self.assertTrue(any(l.startswith("identical to job %s" % first["id"][:8])
                            and first["snapshot_id"] in l and "--no-cache" in l
                            for l in lines), lines)
        # The record survives a restart.
        self.d.stop()
        self.d = self.sim.daemon(tmp=self.d.tmp)
        self.addCleanup(self.d.__exit__, None, None, None)
        again = self.d.call("build.get", {"id": second["id"]})
        self.assertEqual(again["reused_from"], first["id"])

    def test_different_options_build_again(self):
        self.start()
        first = self.build(build_args={"A": "1"})
        for params in ({"build_args": {"A": "2"}}, {"tags": {"team": "x"}}, {"ttl": 60},
                       {"cache_key": "apps/other"}, {"architecture": "arm64"}):
            job = self.build(**params)
            self.assertIsNone(job["reused_from"], params)
            self.assertNotEqual(job["snapshot_id"], first["snapshot_id"], params)
        self.assertEqual(len(self.sim.builds()), 6)

    def test_changed_context_builds_again(self):
        self.start()
        first = self.build()
        write_tree(self.ctx, {"src/main.c": b"int main(){return 1;}\n"})
        second = self.build()
        self.assertIsNone(second["reused_from"])
        self.assertNotEqual(second["archive"]["sha256"], first["archive"]["sha256"])

    def test_retired_snapshot_is_not_reused(self):
        self.start()
        first = self.build()
        self.d.call("snapshot.retire", {"id": first["snapshot_id"]})
        second = self.build()
        self.assertIsNone(second["reused_from"])
        self.assertNotEqual(second["snapshot_id"], first["snapshot_id"])
        # The new build is the one reused from now on.
        third = self.build()
        self.assertEqual(third["reused_from"], second["id"])

    def test_no_cache_builds_again_without_the_default_key(self):
        self.start()
        first = self.build()
        second = self.build(no_cache=True)
        self.assertIsNone(second["reused_from"])
        self.assertNotEqual(second["snapshot_id"], first["snapshot_id"])
        self.assertIsNone(second["cache_key"])
        self.assertIsNone(self.sim.build(second["build_id"]).get("cache_key"))

    def test_reuse_max_age_zero_turns_reuse_off(self):
        self.start(config="reuse_max_age = 0\n")
        self.build()
        self.assertIsNone(self.build()["reused_from"])
        self.assertEqual(len(self.sim.builds()), 2)

    def test_default_cache_key_per_user_and_project(self):
        self.start()
        first = self.build()
        uid = os.getuid()
        self.assertRegex(first["cache_key"], r"^snapbuild/u%d/[0-9a-f]{16}$" % uid)
        self.assertEqual(self.sim.build(first["build_id"])["cache_key"], first["cache_key"])
        other = os.path.join(self.tmp, "other")
        write_tree(other, {"Dockerfile": DOCKERFILE})
        job = wait_job(self.d, submit_ok(self.d, other)["id"])
        self.assertRegex(job["cache_key"], r"^snapbuild/u%d/[0-9a-f]{16}$" % uid)
        self.assertNotEqual(job["cache_key"], first["cache_key"])
        # Without a context path, an alias's namespace names the project.
        a = wait_job(self.d, submit_ok(self.d, self.ctx, context="", alias="proj@a")["id"])
        b = wait_job(self.d, submit_ok(self.d, other, context="", alias="proj@b")["id"])
        c = wait_job(self.d, submit_ok(self.d, other, context="", alias="else@b")["id"])
        self.assertRegex(a["cache_key"], r"^snapbuild/u%d/[0-9a-f]{16}$" % uid)
        self.assertEqual(a["cache_key"], b["cache_key"])
        self.assertNotEqual(a["cache_key"], c["cache_key"])
        # A key the client gives wins.
        self.assertEqual(self.build(cache_key="apps/mine")["cache_key"], "apps/mine")

    def test_default_cache_key_none(self):
        self.start(config="default_cache_key = none\n")
        job = self.build()
        self.assertIsNone(job["cache_key"])
        self.assertIsNone(self.sim.build(job["build_id"]).get("cache_key"))

    def test_cli_create_reuses_and_no_cache_builds(self):
        self.start()
        r1 = self.d.cli("create", "--context", self.ctx, "--ci", timeout=60)
        self.assertEqual(r1.returncode, 0, r1.stderr)
        r2 = self.d.cli("create", "--context", self.ctx, "--ci", timeout=60)
        self.assertEqual(r2.returncode, 0, r2.stderr)
        self.assertEqual(r2.stdout, r1.stdout)
        self.assertIn("identical to job", r2.stderr)
        self.assertEqual(len(self.sim.builds()), 1)
        r3 = self.d.cli("create", "--context", self.ctx, "--ci", "--no-cache", timeout=60)
        self.assertEqual(r3.returncode, 0, r3.stderr)
        self.assertNotEqual(r3.stdout, r1.stdout)
        self.assertEqual(len(self.sim.builds()), 2)


if __name__ == "__main__":
    unittest.main()
