"""snapbuild-sim for daemon tests: start it on a free loopback port, set faults,
read its introspection routes, and start a snapbuildd pointed at it.

The API key reaches the simulator through its environment and the daemon through
TOGETHER_API_KEY, never through argv.
"""
import json
import os
import signal
import subprocess
import tempfile
import urllib.request

from harness import BIN_DIR, Daemon, clean_env, wait_for

SIM = os.path.join(BIN_DIR, "tests", "sim", "snapbuild-sim")
API_KEY = "sk-test-0123456789abcdef-do-not-leak"


class Sim:
    def __init__(self, *args, log_interval_ms=2):
        self.stderr = tempfile.TemporaryFile()
        env = clean_env(SNAPBUILD_SIM_API_KEY=API_KEY)
        argv = [SIM, "--listen", "127.0.0.1:0", "--log-interval-ms", str(log_interval_ms)]
        self.proc = subprocess.Popen(argv + list(args), stdout=subprocess.PIPE,
                                     stderr=self.stderr, env=env)
        line = self.proc.stdout.readline().decode().strip()
        if not line:
            self.proc.wait(10)
            self.stderr.seek(0)
            raise AssertionError("simulator did not start: " + self.stderr.read().decode())
        self.addr = line
        self.url = "http://" + line

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        rc = self.proc.wait(30)
        self.proc.stdout.close()
        self.stderr.seek(0)
        err = self.stderr.read().decode(errors="replace")
        self.stderr.close()
        if rc != 0:
            raise AssertionError("snapbuild-sim exited with %s:\n%s" % (rc, err))

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()

    def sim(self, method, path, body=None):
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(self.url + "/_sim/" + path, data=data, method=method,
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=30) as r:
            raw = r.read()
        return json.loads(raw) if raw else None

    def faults(self, **faults):
        return self.sim("POST", "faults", faults)

    def builds(self):
        b = self.sim("GET", "builds")
        return b["builds"] if isinstance(b, dict) and "builds" in b else b

    def build(self, build_id):
        return self.sim("GET", "builds/" + build_id)

    def snapshots(self):
        s = self.sim("GET", "snapshots")
        return s["snapshots"] if isinstance(s, dict) and "snapshots" in s else s

    def deletes(self):
        d = self.sim("GET", "deletes")
        return d["deletes"] if isinstance(d, dict) and "deletes" in d else d

    def requests(self):
        r = self.sim("GET", "requests")
        return r["requests"] if isinstance(r, dict) and "requests" in r else r

    def release(self, build_id):
        return self.sim("POST", "builds/%s/release" % build_id)

    def daemon(self, config="", **kw):
        env = clean_env(TOGETHER_API_KEY=API_KEY, TOGETHER_BASE_URL=self.url)
        env.update(kw.pop("env", {}))
        return Daemon(env=env, config=config, **kw)


def wait_job(d, job_id, states=("succeeded", "failed", "cancelled"), timeout=60):
    """Polls build.get until the job is in one of states; returns the job."""
    def done():
        j = d.call("build.get", {"id": job_id})
        return j if j["state"] in states else None
    return wait_for(done, timeout, "job %s to reach %s" % (job_id, "/".join(states)))


def write_tree(root, files):
    """Creates files (path -> bytes) under root, with their directories."""
    for path, data in files.items():
        full = os.path.join(root, path)
        os.makedirs(os.path.dirname(full), exist_ok=True)
        with open(full, "wb") as f:
            f.write(data)


def submit(d, ctx, **params):
    """build.submit of ctx packed as the CLI packs it, the archive passed as an fd; the
    answer object."""
    with d.conn() as c:
        return c.submit(ctx, params)


def submit_ok(d, ctx, **params):
    """submit(), failing the test on an error; the job."""
    msg = submit(d, ctx, **params)
    if "error" in msg:
        raise AssertionError("build.submit failed: %r" % msg["error"])
    return msg["result"]
