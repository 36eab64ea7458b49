"""The daemon reaching the service as devboxes do: HTTPS with HTTP/2 through real nginx
(TLS, http2, proxy_buffering off) in front of snapbuild-sim, a CA of the test's own
given with ca_file, and a real CONNECT proxy (tinyproxy).

nginx's access log says which protocol each request used and on which connection, so
the tests check HTTP/2 and connection reuse from the server's side.
"""
import os
import signal
import subprocess
import tempfile
import unittest

from harness import Conn, wait_for
from simharness import API_KEY, Sim, submit_ok, wait_job, write_tree
from tlsharness import CA, Nginx, Tinyproxy, free_port

DOCKERFILE = b"FROM debian:12\nRUN echo building\nCOPY . /app\nRUN make -C /app\n"


def follow(d, job_id):
    """build.logs follow: (events, final answer)."""
    events = []
    with Conn(d.socket, timeout=120) as c:
        ans = c.call("build.logs", {"id": job_id, "after_seq": 0, "follow": True},
                     on_notify=lambda m: events.append(m["params"]))
    return events, ans


def build_lines(events):
    return [e["text"] for e in events if e["kind"] == "log" and e["step"] == "build"]


class TLSTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.pki = tempfile.mkdtemp(prefix="sbtls-pki-")
        os.chmod(cls.pki, 0o755)
        cls.ca = CA(cls.pki)
        cls.good = cls.ca.issue("good", "IP:127.0.0.1,DNS:localhost")
        cls.wrong_name = cls.ca.issue("wrong-name", "DNS:wrong-name.invalid")
        cls.expired = cls.ca.issue("expired", "IP:127.0.0.1", expired=True)
        for f in os.listdir(cls.pki):
            os.chmod(os.path.join(cls.pki, f), 0o644)

    @classmethod
    def tearDownClass(cls):
        subprocess.run(["rm", "-rf", cls.pki])

    def setUp(self):
        self.tmp = tempfile.mkdtemp(prefix="sbtls-")
        self.addCleanup(subprocess.run, ["rm", "-rf", self.tmp])
        self.ctx = os.path.join(self.tmp, "app")
        write_tree(self.ctx, {"Dockerfile": DOCKERFILE, "Makefile": b"all:\n\ttrue\n",
                              "src/main.c": b"int main(void){return 0;}\n"})
        self.sim = Sim(log_interval_ms=2)
        self.addCleanup(self.sim.stop)
        # port 0: the good certificate, 1: another name, 2: expired
        self.nginx = Nginx(self.sim.addr, [self.good, self.wrong_name, self.expired])
        self.addCleanup(self.nginx.stop)

    def daemon(self, config="", base_url=None, env=None):
        conf = "log_level = debug\n" + config
        d = self.sim.daemon(config=conf, tmp=tempfile.mkdtemp(dir=self.tmp),
                            env=dict({"TOGETHER_BASE_URL": base_url or self.nginx.url(0)},
                                     **(env or {})))
        self.addCleanup(d.__exit__, None, None, None)
        return d

    def proxy(self):
        p = Tinyproxy()
        self.addCleanup(p.stop)
        return p

    def assert_key_kept(self, d, *logs):
        for text in (d.log(),) + logs:
            self.assertNotIn(API_KEY, text)

    def assert_full_build(self, d):
        job_id = submit_ok(d, self.ctx, alias="tls@v1")["id"]
        events, ans = follow(d, job_id)
        job = ans["result"]["job"]
        self.assertEqual(job["state"], "succeeded", job)
        lines = build_lines(events)
        self.assertTrue(any("RUN make -C /app" in l for l in lines), lines)
        self.assertEqual(lines, self.sim_lines(job))
        self.assertEqual([s["id"] for s in self.sim.snapshots()], [job["snapshot_id"]])
        return job, events

    def requests(self, port_index=0):
        port = self.nginx.ports[port_index]
        return [r for r in self.nginx.access() if r[0] == port]

    # --- HTTPS, HTTP/2 ---

    def test_full_build_over_https_http2_with_ca_file(self):
        # Big enough for HTTP/2 flow control to pace the upload through nginx.
        big = os.urandom(3 << 20)
        write_tree(self.ctx, {"data/blob.bin": big})
        d = self.daemon("ca_file = %s\n" % self.ca.pem)
        job, _ = self.assert_full_build(d)
        files = {f["path"]: f for f in self.sim.build(job["build_id"])["files"]}
        self.assertEqual(files["./data/blob.bin"]["size"], len(big))
        reqs = self.requests()
        self.assertTrue(reqs)
        self.assertEqual({r[1] for r in reqs}, {"HTTP/2.0"}, reqs)
        post = [r for r in reqs if r[4] == "POST" and r[5] == "/builds"][0]
        logs = [r for r in reqs if r[5].endswith("/logs")][0]
        status = [r for r in reqs if r[4] == "GET" and r[5] == "/builds/" + job["build_id"]][0]
        # The upload, the log stream and the status share one multiplexed connection.
        self.assertEqual(post[2], logs[2], reqs)
        self.assertEqual(post[2], status[2], reqs)
        # Registration must never be re-sent by libcurl: a connection of its own.
        register = [r for r in reqs if r[4] == "POST" and r[5] == "/v1/snapshots"][0]
        self.assertEqual(register[3], 1, reqs)
        self.assert_key_kept(d)

    def test_untrusted_certificate_names_host_problem_and_ca_file(self):
        d = self.daemon()
        job = wait_job(d, submit_ok(d, self.ctx)["id"])
        self.assertEqual(job["state"], "failed", job)
        host = "127.0.0.1:%d" % self.nginx.ports[0]
        self.assertIn("cannot verify the TLS certificate of " + host, job["error"])
        self.assertIn("unknown issuer", job["error"])
        self.assertIn("ca_file", job["hint"])
        self.assertIn(d.config_path, job["hint"])
        self.assertNotIn("check the network", job["hint"])

    def test_ca_file_takes_effect_on_reload(self):
        d = self.daemon()
        self.assertEqual(wait_job(d, submit_ok(d, self.ctx)["id"])["state"], "failed")
        with open(d.config_path, "a") as f:
            f.write("ca_file = %s\n" % self.ca.pem)
        d.signal(signal.SIGHUP)
        wait_for(lambda: "configuration reloaded" in d.log(), 30, "the reload")
        self.assert_full_build(d)

    def test_certificate_for_another_name(self):
        d = self.daemon("ca_file = %s\n" % self.ca.pem, base_url=self.nginx.url(1))
        job = wait_job(d, submit_ok(d, self.ctx)["id"])
        self.assertEqual(job["state"], "failed", job)
        self.assertIn("127.0.0.1:%d" % self.nginx.ports[1], job["error"])
        self.assertIn("name mismatch", job["error"])
        self.assertIn("another host name", job["hint"])

    def test_expired_certificate(self):
        d = self.daemon("ca_file = %s\n" % self.ca.pem, base_url=self.nginx.url(2))
        job = wait_job(d, submit_ok(d, self.ctx)["id"])
        self.assertEqual(job["state"], "failed", job)
        self.assertIn("expired", job["error"])
        self.assertIn("clock", job["hint"])

    def test_unreadable_ca_file_is_refused_at_start(self):
        bad = os.path.join(self.tmp, "not-a-ca.pem")
        with open(bad, "w") as f:
            f.write("hello\n")
        d = self.sim.daemon(config="ca_file = %s\n" % bad, tmp=tempfile.mkdtemp(dir=self.tmp),
                            wait=False)
        d.proc.wait(30)
        self.assertEqual(d.stop(), 1)
        self.assertIn("invalid ca_file '%s': no PEM certificate" % bad, d.log())

    def test_sse_reconnect_over_http2_without_duplicates(self):
        d = self.daemon("ca_file = %s\n" % self.ca.pem)
        # The simulator drops the stream under nginx, which resets the HTTP/2 stream.
        self.sim.faults(logs_drop_after={"events": 5, "count": 3})
        job, events = self.assert_full_build(d)
        seqs = [e["seq"] for e in events]
        self.assertEqual(seqs, sorted(set(seqs)))
        # exactly the simulator's log: nothing lost, nothing repeated by the resumes
        self.assertEqual(build_lines(events), self.sim_lines(job))
        logs = [r for r in self.requests() if r[5].endswith("/logs")]
        self.assertGreaterEqual(len(logs), 4)
        self.assertEqual({r[1] for r in logs}, {"HTTP/2.0"})

    def test_sse_survives_nginx_reload(self):
        d = self.daemon("ca_file = %s\n" % self.ca.pem)
        self.sim.faults(hold="end")
        job_id = submit_ok(d, self.ctx)["id"]
        job = wait_job(d, job_id, states=("building",))
        b = job["build_id"]
        wait_for(lambda: self.sim.build(b).get("held"), 60, "the build to be held")
        connects = self.sim.build(b)["log_connects"]
        # Old workers close their connections (GOAWAY) once the reload is done; the
        # daemon reconnects to the new ones and resumes after the last line it has.
        self.nginx.reload()
        wait_for(lambda: self.sim.build(b)["log_connects"] > connects, 60,
                 "the log stream to be reconnected")
        self.sim.release(b)
        events, ans = follow(d, job_id)
        job = ans["result"]["job"]
        self.assertEqual(job["state"], "succeeded", job)
        self.assertEqual(build_lines(events), self.sim_lines(job))
        logs = [r for r in self.requests() if r[5].endswith("/logs")]
        self.assertGreaterEqual(len(logs), 2)
        self.assertEqual({r[1] for r in logs}, {"HTTP/2.0"})
        self.assertGreater(len({r[2] for r in logs}), 1)  # the new worker's connection

    def test_cancel_over_http2(self):
        d = self.daemon("ca_file = %s\n" % self.ca.pem)
        self.sim.faults(hold="end")
        job_id = submit_ok(d, self.ctx)["id"]
        job = wait_job(d, job_id, states=("building",))
        wait_for(lambda: self.sim.build(job["build_id"]).get("held"), 60, "the build to be held")
        r = d.cli("cancel", job_id)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(wait_job(d, job_id)["state"], "cancelled")
        self.assertEqual([x["build_id"] for x in self.sim.deletes()], [job["build_id"]])
        deletes = [r for r in self.requests() if r[4] == "DELETE"]
        self.assertEqual([(r[1], r[6]) for r in deletes], [("HTTP/2.0", 200)])

    # --- proxies ---

    def test_full_build_through_the_proxy_key(self):
        p = self.proxy()
        # The configured proxy wins over a dead one in the environment.
        d = self.daemon("ca_file = %s\nproxy = %s\n" % (self.ca.pem, p.url),
                        env={"https_proxy": "http://127.0.0.1:%d" % free_port()})
        self.assert_full_build(d)
        log = p.log()
        self.assertIn("CONNECT", log)
        self.assertIn("127.0.0.1:%d" % self.nginx.ports[0], log)
        self.assertEqual({r[1] for r in self.requests()}, {"HTTP/2.0"})
        self.assert_key_kept(d, log)

    def test_full_build_through_https_proxy_from_the_environment(self):
        p = self.proxy()
        d = self.daemon("ca_file = %s\n" % self.ca.pem, env={"https_proxy": p.url})
        self.assert_full_build(d)
        self.assertIn("CONNECT", p.log())
        self.assert_key_kept(d, p.log())

    def test_plain_http_goes_through_a_tunnel_too(self):
        p = self.proxy()
        d = self.daemon("proxy = %s\n" % p.url, base_url=self.sim.url)
        self.assert_full_build(d)
        log = p.log()
        self.assertIn("CONNECT", log)
        self.assert_key_kept(d, log)

    def test_no_proxy_bypasses_a_dead_proxy(self):
        dead = "http://127.0.0.1:%d" % free_port()
        d = self.daemon("ca_file = %s\nproxy = %s\nno_proxy = localhost,127.0.0.0/8\n"
                        % (self.ca.pem, dead))
        self.assert_full_build(d)

    def test_proxy_down_names_the_proxy(self):
        dead = "http://user:secret@127.0.0.1:%d" % free_port()
        d = self.daemon("ca_file = %s\nproxy = %s\n" % (self.ca.pem, dead))
        job = wait_job(d, submit_ok(d, self.ctx)["id"])
        self.assertEqual(job["state"], "failed", job)
        shown = dead.replace("user:secret@", "")
        self.assertIn("cannot reach the proxy " + shown, job["error"])
        self.assertNotIn("secret", job["error"])
        self.assertIn("proxy", job["hint"])
        self.assertNotIn("secret", d.log())

    def test_untrusted_certificate_through_the_proxy(self):
        p = self.proxy()
        d = self.daemon("proxy = %s\n" % p.url)
        job = wait_job(d, submit_ok(d, self.ctx)["id"])
        self.assertEqual(job["state"], "failed", job)
        self.assertIn("through the proxy " + p.url, job["error"])
        self.assertIn("unknown issuer", job["error"])
        self.assertIn("ca_file", job["hint"])

    # --- helpers ---

    def sim_lines(self, job):
        """The build's log as the simulator emitted it, read straight from it."""
        import http.client
        import re
        host, port = self.sim.addr.rsplit(":", 1)
        c = http.client.HTTPConnection(host, int(port), timeout=60)
        c.request("GET", "/builds/%s/logs" % job["build_id"],
                  headers={"Authorization": "Bearer " + API_KEY, "Accept": "text/event-stream"})
        body = c.getresponse().read().decode()
        c.close()
        lines = []
        for block in body.split("\n\n"):
            data = [l[6:] if l.startswith("data: ") else l[5:] for l in block.split("\n")
                    if l.startswith("data:")]
            if data and not data[0].startswith("{"):
                lines.append(re.sub(r"\x1b\[[0-9;]*m", "", "\n".join(data)))
        return lines


if __name__ == "__main__":
    unittest.main()
