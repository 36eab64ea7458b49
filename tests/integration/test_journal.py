"""Logging to the journal with structured fields.

No journald runs in CI, so the daemon runs with tests/tools/journal-shim.c preloaded:
it replaces libsystemd's sd_journal_sendv and writes every message's fields to a file.
The daemon decides to use the journal exactly as under systemd: JOURNAL_STREAM names
its stderr's device and inode.  A build against snapbuild-sim must then leave one
job's story under SNAPBUILD_JOB=<id>, with SNAPBUILD_STATE= and SNAPBUILD_UID=, and
nothing on stderr; without JOURNAL_STREAM (or with one naming another file) the
plain stderr lines stay; a journal that refuses falls back to "<N>" lines on stderr.
"""
import os
import signal
import subprocess
import tempfile
import unittest

from harness import BIN_DIR, DAEMON, SLOWDOWN, WRAPPER, Conn, can_connect, clean_env, wait_for
from simharness import API_KEY, Sim, wait_job, write_tree

SHIM = os.path.join(BIN_DIR, "tests", "tools", "libjournal-shim.so")


def read_records(path):
    """The shim's records: a list of {field: value} (a field may repeat: last wins)."""
    if not os.path.exists(path):
        return []
    with open(path, "rb") as f:
        data = f.read()
    records, i = [], 0
    while i < len(data):
        nl = data.index(b"\n", i)
        n, i = int(data[i:nl]), nl + 1
        rec = {}
        for _ in range(n):
            nl = data.index(b"\n", i)
            size, i = int(data[i:nl]), nl + 1
            field = data[i:i + size].decode()
            assert data[i + size:i + size + 1] == b"\n", "a record is cut"
            i += size + 1
            key, eq, val = field.partition("=")
            assert eq, "a field without '=': %r" % field
            rec[key] = val
        records.append(rec)
    return records


class Journal(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.mkdtemp(prefix="sb-journal-")
        self.addCleanup(subprocess.run, ["rm", "-rf", self.tmp])
        self.ctx = os.path.join(self.tmp, "app")
        write_tree(self.ctx, {"Dockerfile": b"FROM debian:12\nRUN make\n"})
        self.sim = Sim()
        self.addCleanup(self.sim.stop)
        self.journal = os.path.join(self.tmp, "journal")

    def daemon(self, journal_stream="match", **env):
        """Starts snapbuildd with the shim; returns (proc, socket, stderr path)."""
        name = "d%d" % len(os.listdir(self.tmp))
        sock = os.path.join(self.tmp, name + ".sock")
        stderr_path = os.path.join(self.tmp, name + ".stderr")
        err = open(stderr_path, "wb")
        self.addCleanup(err.close)
        st = os.fstat(err.fileno())
        e = clean_env(TOGETHER_API_KEY=API_KEY, TOGETHER_BASE_URL=self.sim.url,
                      LD_PRELOAD=SHIM, SNAPBUILD_JOURNAL_SHIM_FILE=self.journal, **env)
        if journal_stream == "match":
            e["JOURNAL_STREAM"] = "%d:%d" % (st.st_dev, st.st_ino)
        elif journal_stream:
            e["JOURNAL_STREAM"] = journal_stream
        proc = subprocess.Popen(WRAPPER + [DAEMON, "--socket", sock, "--state-dir",
                                           os.path.join(self.tmp, name + "-state")],
                                env=e, stdout=subprocess.DEVNULL, stderr=err,
                                stdin=subprocess.DEVNULL)

        def stop():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
            self.assertEqual(proc.wait(60 * SLOWDOWN), 0, "snapbuildd failed: " + self.stderr(stderr_path))
        self.addCleanup(stop)
        wait_for(lambda: proc.poll() is None and can_connect(sock) or proc.poll() is not None,
                 30 * SLOWDOWN, "snapbuildd to listen")
        self.assertIsNone(proc.poll(), self.stderr(stderr_path))
        self.stop = stop
        return proc, sock, stderr_path

    def stderr(self, path):
        with open(path, errors="replace") as f:
            return f.read()

    def build(self, sock):
        with Conn(sock, timeout=60) as c:
            job = c.submit_result(self.ctx, {"alias": "j@v1"})

        class D:
            def call(_, method, params=None):
                with Conn(sock, timeout=60) as c:
                    return c.result(method, params)
        done = wait_job(D(), job["id"])
        self.assertEqual(done["state"], "succeeded")
        return job["id"]

    def test_a_jobs_story_carries_its_fields(self):
        _, sock, stderr_path = self.daemon()
        job_id = self.build(sock)
        self.stop()
        records = read_records(self.journal)
        self.assertTrue(records, "nothing reached the journal")
        for r in records:
            self.assertEqual(r["SYSLOG_IDENTIFIER"], "snapbuildd")
            self.assertIn(r["PRIORITY"], ("2", "3", "4", "6", "7"))
            self.assertTrue(r["MESSAGE"])
        # Nothing was written to stderr: every message went to the journal.
        self.assertEqual(self.stderr(stderr_path), "")
        story = [r for r in records if r.get("SNAPBUILD_JOB") == job_id]
        self.assertEqual([r["SNAPBUILD_UID"] for r in story], [str(os.getuid())] * len(story))
        states = [r["SNAPBUILD_STATE"] for r in story]
        self.assertEqual(states, ["queued", "uploading", "building", "registering",
                                  "aliasing", "succeeded"])
        self.assertIn("submitted by uid %d" % os.getuid(), story[0]["MESSAGE"])
        self.assertEqual(story[1]["MESSAGE"], "job %s: queued -> uploading" % job_id)
        self.assertRegex(story[-1]["MESSAGE"], r"^job %s succeeded: snapshot \S+$" % job_id)
        self.assertTrue(all(r["PRIORITY"] == "6" for r in story))
        # Messages about no job carry no job fields.
        ready = [r for r in records if r["MESSAGE"].startswith("ready in")]
        self.assertEqual(len(ready), 1)
        self.assertNotIn("SNAPBUILD_JOB", ready[0])

    def test_plain_stderr_without_the_journal(self):
        for stream in (None, "1:1"):  # unset, or naming another file than stderr
            with self.subTest(journal_stream=stream):
                _, sock, stderr_path = self.daemon(journal_stream=stream)
                job_id = self.build(sock)
                self.stop()
                text = self.stderr(stderr_path)
                self.assertIn("snapbuildd: job %s: queued -> uploading\n" % job_id, text)
                self.assertIn("snapbuildd: job %s succeeded: snapshot " % job_id, text)
                self.assertNotIn("\n<6>", "\n" + text)
                self.assertEqual(read_records(self.journal), [])

    def test_a_refusing_journal_falls_back_to_priority_prefixes(self):
        _, sock, stderr_path = self.daemon(SNAPBUILD_JOURNAL_SHIM_FAIL="1")
        job_id = self.build(sock)
        self.stop()
        text = self.stderr(stderr_path)
        self.assertIn("<6>job %s: queued -> uploading\n" % job_id, text)
        self.assertEqual(read_records(self.journal), [])


if __name__ == "__main__":
    unittest.main()
