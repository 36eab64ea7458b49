"""Shared helpers for integration tests: start snapbuildd on a temporary socket and
state directory, talk JSON-RPC to it over the Unix socket, and run the snapbuild CLI.

Binaries come from $SNAPBUILD_BIN_DIR (the cmake build directory).  Everything
waits on a condition with a deadline; nothing sleeps to hide a race.
"""
import atexit
import json
import os
import shlex
import shutil
import signal
import socket
import subprocess
import tempfile
import time

BIN_DIR = os.environ.get("SNAPBUILD_BIN_DIR", os.path.join(os.path.dirname(__file__), "../../build"))
DAEMON = os.path.join(BIN_DIR, "daemon", "snapbuildd")
CLI = os.path.join(BIN_DIR, "client", "snapbuild")
# A command the daemon runs under, e.g. "valgrind --leak-check=full" (scripts/valgrind.sh);
# waits for it to start are stretched by SLOWDOWN.
WRAPPER = shlex.split(os.environ.get("SNAPBUILD_DAEMON_WRAPPER", ""))
SLOWDOWN = 10.0 if WRAPPER else 1.0

# Variables that would leak the developer's own set-up into a test daemon.
_SCRUB = ("TOGETHER_API_KEY", "TOGETHER_BASE_URL", "TOGETHER_LOCAL_BUILD",
          "TOGETHER_REMOTE_ARCHITECTURE", "SNAPBUILD_BUILDER_URL", "SNAPBUILD_SOCKET",
          "SNAPBUILD_STATE_DIR", "SNAPBUILD_CONFIG", "SNAPBUILD_LOG_LEVEL",
          "CREDENTIALS_DIRECTORY", "NOTIFY_SOCKET", "LISTEN_FDS", "LISTEN_PID",
          "LISTEN_FDNAMES", "WATCHDOG_USEC", "WATCHDOG_PID", "JOURNAL_STREAM")


# The client's pack cache lives in a directory of this run, not in the user's ~/.cache.
_CACHE_HOME = tempfile.mkdtemp(prefix="sb-cache-")
atexit.register(shutil.rmtree, _CACHE_HOME, True)


def clean_env(**extra):
    env = {k: v for k, v in os.environ.items() if k not in _SCRUB}
    env["XDG_CACHE_HOME"] = _CACHE_HOME
    env.update({k: str(v) for k, v in extra.items()})
    return env


def wait_for(cond, timeout=10.0, what="condition"):
    """Polls cond() until it returns something truthy; fails after timeout seconds."""
    deadline = time.monotonic() + timeout
    delay = 0.002
    while True:
        v = cond()
        if v:
            return v
        if time.monotonic() > deadline:
            raise AssertionError("timed out waiting for " + what)
        time.sleep(delay)
        delay = min(delay * 2, 0.05)


def pid_gone(pid):
    """True when pid has exited (gone, or a zombie waiting for its parent)."""
    try:
        with open("/proc/%d/stat" % pid) as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        return True


def can_connect(path):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        s.connect(path)
        return True
    except OSError:
        return False
    finally:
        s.close()


class Conn:
    """One JSON-RPC connection: send requests, read lines (answers and notifications)."""

    def __init__(self, path, timeout=10.0):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(timeout)
        self.sock.connect(path)
        self.buf = b""
        self.next_id = 0

    def close(self):
        self.sock.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def send_raw(self, data, fds=None):
        if fds:
            # The fd rides with the first byte; the rest follows as plain data.
            n = socket.send_fds(self.sock, [data], fds)
            self.sock.sendall(data[n:])
        else:
            self.sock.sendall(data)

    def send(self, method, params=None, id=True, fds=None):
        msg = {"jsonrpc": "2.0", "method": method}
        if params is not None:
            msg["params"] = params
        if id is True:
            self.next_id += 1
            id = self.next_id
        if id is not None:
            msg["id"] = id
        self.send_raw(json.dumps(msg).encode() + b"\n", fds)
        return id

    def read_line(self):
        """The next line, or None at end of stream."""
        while b"\n" not in self.buf:
            chunk = self.sock.recv(65536)
            if not chunk:
                return None
            self.buf += chunk
        line, self.buf = self.buf.split(b"\n", 1)
        return line

    def read(self):
        line = self.read_line()
        return None if line is None else json.loads(line)

    def call(self, method, params=None, fds=None, on_notify=None):
        """Sends a request and returns its answer object (result or error)."""
        id = self.send(method, params, fds=fds)
        while True:
            msg = self.read()
            if msg is None:
                raise ConnectionError("daemon closed the connection")
            if "id" not in msg:
                if on_notify:
                    on_notify(msg)
                continue
            if msg["id"] == id:
                return msg

    def result(self, method, params=None, **kw):
        msg = self.call(method, params, **kw)
        if "error" in msg:
            raise AssertionError("%s failed: %r" % (method, msg["error"]))
        return msg["result"]

    def submit(self, ctx, params=None, **kw):
        """build.submit of ctx as a client does it: packed here, with this process's
        rights, by the real packer; the archive passed as an fd.  The answer object."""
        p = dict(params or {})
        fd, archive = pack(ctx, dockerfile=p.get("dockerfile"))
        try:
            p.setdefault("context", ctx)
            p["archive"] = archive
            return self.call("build.submit", p, fds=[fd], **kw)
        finally:
            os.close(fd)

    def submit_result(self, ctx, params=None, **kw):
        msg = self.submit(ctx, params, **kw)
        if "error" in msg:
            raise AssertionError("build.submit failed: %r" % (msg["error"],))
        return msg["result"]


class Daemon:
    """snapbuildd in a temporary directory.  Use as a context manager or call stop()."""

    def __init__(self, args=(), env=None, tmp=None, socket_path=None, state_dir=None,
                 wait=True, config=None):
        self._own_tmp = tmp is None
        self.tmp = tmp or tempfile.mkdtemp(prefix="sbd-")
        self.socket = socket_path or os.path.join(self.tmp, "run", "snapbuild.sock")
        self.state_dir = state_dir or os.path.join(self.tmp, "state")
        self.log_path = os.path.join(self.tmp, "daemon-%d.log" % time.monotonic_ns())
        argv = [DAEMON, "--socket", self.socket, "--state-dir", self.state_dir]
        if config is not None:
            self.config_path = os.path.join(self.tmp, "snapbuild.conf")
            with open(self.config_path, "w") as f:
                f.write(config)
            argv += ["--config", self.config_path]
        argv = WRAPPER + argv + list(args)
        self.env = env if env is not None else clean_env()
        self._log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(argv, env=self.env, stdout=self._log, stderr=self._log,
                                     stdin=subprocess.DEVNULL)
        if wait:
            self.wait_ready()

    def wait_ready(self, timeout=10.0):
        def ready():
            if self.proc.poll() is not None:
                raise AssertionError("snapbuildd exited with %s:\n%s" % (self.proc.returncode, self.log()))
            return can_connect(self.socket)
        wait_for(ready, timeout * SLOWDOWN, "snapbuildd to listen on " + self.socket)

    def log(self):
        if not self._log.closed:
            self._log.flush()
        with open(self.log_path, "r", errors="replace") as f:
            return f.read()

    def conn(self):
        return Conn(self.socket)

    def call(self, method, params=None):
        with self.conn() as c:
            return c.result(method, params)

    def cli(self, *args, env=None, timeout=30):
        return run_cli("--socket", self.socket, *args, env=env, timeout=timeout)

    def signal(self, sig):
        self.proc.send_signal(sig)

    def stop(self, timeout=10.0):
        """SIGTERM and wait; returns the exit status."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout * SLOWDOWN)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                raise AssertionError("snapbuildd did not stop on SIGTERM:\n" + self.log())
        if not self._log.closed:
            self._log.close()
        return self.proc.returncode

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        rc = self.stop()
        log = self.log()
        if self._own_tmp:
            subprocess.run(["rm", "-rf", self.tmp])
        # A sanitizer report or a crash at shutdown fails the test that ran the daemon.
        if rc != 0 and exc[0] is None:
            raise AssertionError("snapbuildd exited with %s:\n%s" % (rc, log))


_PUBLIC = {}


def public_copy():
    """A 0755 directory holding copies of the CLI, the daemon and this module, for
    tests that act as another user: the checkout may sit under a private (0700)
    directory such as a home or a mktemp -d, which that user cannot enter.  Returns
    {"dir", "cli", "daemon", "harness_dir"}; made once per process, removed at exit."""
    if not _PUBLIC:
        import atexit
        import shutil
        top = tempfile.mkdtemp(prefix="sb-public-")
        os.chmod(top, 0o755)
        for sub in ("client", "daemon", "py"):
            os.mkdir(os.path.join(top, sub), 0o755)
        cli = os.path.join(top, "client", "snapbuild")
        daemon = os.path.join(top, "daemon", "snapbuildd")
        shutil.copy2(CLI, cli)
        # The CLI links libsnapbuild, found beside it ($ORIGIN).
        lib = os.path.join(os.path.dirname(CLI), "libsnapbuild.so.1")
        shutil.copy2(lib, os.path.join(top, "client", "libsnapbuild.so.1"))
        os.chmod(os.path.join(top, "client", "libsnapbuild.so.1"), 0o755)
        shutil.copy2(DAEMON, daemon)
        shutil.copy2(__file__, os.path.join(top, "py", "harness.py"))
        for p in (cli, daemon, os.path.join(top, "py", "harness.py")):
            os.chmod(p, 0o755)
        _PUBLIC.update(dir=top, cli=cli, daemon=daemon, harness_dir=os.path.join(top, "py"))
        atexit.register(shutil.rmtree, top, True)
    return _PUBLIC


def pack(ctx, dockerfile=None, env=None):
    """Packs ctx as `snapbuild context --save` does (the client's packer, this process's
    rights); returns an fd of the archive (an unlinked file, at offset 0) and
    {"sha256", "bytes"}, what build.submit takes."""
    fd, path = tempfile.mkstemp(prefix="sb-archive-", suffix=".tar.gz")
    os.close(fd)
    try:
        args = ["-o", "json", "context", ctx, "--save", path]
        if dockerfile:
            args += ["--dockerfile", dockerfile]
        r = run_cli(*args, env=env, timeout=120)
        if r.returncode != 0:
            raise AssertionError("packing %s failed: %s" % (ctx, r.stderr))
        a = json.loads(r.stdout)["archive"]
        return os.open(path, os.O_RDONLY), {"sha256": a["sha256"], "bytes": a["bytes"]}
    finally:
        os.unlink(path)


def run_cli(*args, env=None, timeout=30):
    return subprocess.run([CLI] + list(args), env=env if env is not None else clean_env(),
                          capture_output=True, text=True, timeout=timeout)
