"""Local builds through the daemon, for real: snapbuildd drives buildah (vfs storage,
chroot isolation), logs in to a real docker-registry on loopback with credentials
snapbuild-sim hands out, pushes, and registers the pushed reference with the
simulator.  The registry's HTTP API must serve the manifest under that tag, and the
simulator must have registered exactly that reference.
"""
import os
import shutil
import subprocess
import tempfile
import unittest

import test_local_engine as tle
from harness import Conn, wait_for
from simharness import Sim, wait_job


class LocalDaemonTest(unittest.TestCase):
    # The registry set-up (htpasswd auth, free loopback port) is the engine test's.
    setUpClass = classmethod(tle.RealBuildahTest.setUpClass.__func__)
    tearDownClass = classmethod(tle.RealBuildahTest.tearDownClass.__func__)
    registry_status = classmethod(tle.RealBuildahTest.registry_status.__func__)
    stop_registry = classmethod(tle.RealBuildahTest.stop_registry.__func__)
    registry_get = tle.RealBuildahTest.registry_get

    def setUp(self):
        self.work = tempfile.mkdtemp(prefix="case-", dir=self.tmp)
        self.addCleanup(shutil.rmtree, self.work, True)
        self.sim = Sim("--registry", "127.0.0.1:%d/snapns" % self.port,
                       "--registry-username", self.user,
                       "--registry-password", self.password)
        self.addCleanup(self.sim.stop)
        config = ("local_build = true\n"
                  "local_engine = buildah\n"
                  "local_isolation = chroot\n"
                  "local_engine_args = --root=%s/storage --runroot=%s/run --storage-driver=vfs\n"
                  "tmp_dir = %s/jobs\n" % (self.work, self.work, self.work))
        self.d = self.sim.daemon(config=config, tmp=tempfile.mkdtemp(dir=self.work))
        self.addCleanup(self.d.__exit__, None, None, None)
        self.ctx = os.path.join(self.work, "ctx")
        os.makedirs(os.path.join(self.ctx, "app"))
        shutil.copy(tle.BUSYBOX, os.path.join(self.ctx, "busybox"))
        with open(os.path.join(self.ctx, "app", "hello.txt"), "w") as f:
            f.write("hello from the context\n")

    def write_dockerfile(self, text):
        with open(os.path.join(self.ctx, "Dockerfile"), "w") as f:
            f.write(text)

    def test_build_push_register_alias(self):
        self.write_dockerfile('FROM scratch\nCOPY busybox /bin/busybox\nCOPY app/ /app/\n'
                              'RUN ["/bin/busybox", "sh", "-c", "/bin/busybox echo built > /built.txt"]\n')
        info = self.d.call("daemon.info")
        self.assertEqual(info["backends"]["local"]["engine"], "buildah")
        r = self.d.cli("create", "--context", self.ctx, "--local", "--alias", "local@v1",
                       timeout=300)
        self.assertEqual(r.returncode, 0, r.stderr)
        snap = r.stdout.strip()
        job = self.d.call("build.list")["jobs"][0]
        self.assertEqual((job["state"], job["backend"], job["snapshot_id"]),
                         ("succeeded", "local", snap))
        ref = job["image_ref"]
        self.assertEqual(ref, "127.0.0.1:%d/snapns/%s" % (self.port, job["image_name"]))
        snaps = self.sim.snapshots()
        self.assertEqual([(s["id"], s["image"]) for s in snaps], [(snap, ref)])
        name, tag = job["image_name"].split(":")
        status, _, _ = self.registry_get(
            "/v2/snapns/%s/manifests/%s" % (name, tag),
            ["application/vnd.oci.image.manifest.v1+json",
             "application/vnd.docker.distribution.manifest.v2+json"])
        self.assertEqual(status, 200)
        events = self.d.call("build.logs", {"id": job["id"]})["events"]
        steps = []
        for e in events:
            if e["step"] and e["step"] not in steps:
                steps.append(e["step"])
        self.assertEqual(steps, ["pack", "build", "auth", "push", "register", "alias"])
        self.assertIn("pushing", [e["text"] for e in events if e["kind"] == "state"])
        self.assertEqual(os.listdir(os.path.join(self.work, "jobs")), [])

    def test_cancel_during_long_build(self):
        self.write_dockerfile('FROM scratch\nCOPY busybox /bin/busybox\n'
                              'RUN ["/bin/busybox", "sh", "-c", '
                              '"echo long-step-started; /bin/busybox sleep 120"]\n')
        with self.d.conn() as c:
            job = c.submit_result(self.ctx, {"backend": "local"})
        seen = []

        def started():
            ev = self.d.call("build.logs", {"id": job["id"]})["events"]
            seen[:] = ev
            return any(e["text"] == "long-step-started" for e in ev)
        wait_for(started, 240, "the RUN step to start")
        sleepers = [p for p in tle.live_processes() if p[1] == "/bin/busybox sleep 120"
                    and self.d.proc.pid in tle.ancestors(p[0])]
        self.assertEqual(len(sleepers), 1, sleepers)
        pid, _, pgid = sleepers[0]
        r = self.d.cli("cancel", job["id"])
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(wait_job(self.d, job["id"], timeout=120)["state"], "cancelled")
        wait_for(lambda: not tle.live_group_members(pgid), 60, "the build's process group to go")
        self.assertFalse(tle.pid_running(pid))
        self.assertEqual(os.listdir(os.path.join(self.work, "jobs")), [])
        self.assertEqual(self.sim.snapshots(), [])


if __name__ == "__main__":
    unittest.main()
