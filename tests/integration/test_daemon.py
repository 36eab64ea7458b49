#!/usr/bin/env python3
"""snapbuildd as a process: started on a temporary socket and state directory and
called through the CLI and raw sockets; socket activation, sd_notify, refusing a
second instance, many clients at once, hostile input, SIGHUP reload, fd passing."""
import json
import os
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import threading
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import (DAEMON, Conn, Daemon, can_connect, clean_env, pid_gone, public_copy,  # noqa: E402
                     run_cli, wait_for)


class CliTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.d = Daemon()

    @classmethod
    def tearDownClass(cls):
        cls.d.__exit__(None, None, None)

    def test_daemon_info_text(self):
        r = self.d.cli("daemon", "info")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn("snapbuildd ", r.stdout)
        self.assertIn(self.d.socket, r.stdout)
        self.assertIn(self.d.state_dir, r.stdout)
        self.assertIn("https://builder.codesandbox.io", r.stdout)

    def test_daemon_info_json_before_and_after_command(self):
        for args in (("-o", "json", "daemon", "info"), ("daemon", "info", "-o", "json"),
                     ("daemon", "info", "--output=json")):
            r = self.d.cli(*args)
            self.assertEqual(r.returncode, 0, r.stderr)
            info = json.loads(r.stdout)
            self.assertEqual(info["protocol_version"], 3)
            self.assertEqual(info["socket"], self.d.socket)
            self.assertEqual(info["state_dir"], self.d.state_dir)
            self.assertEqual(info["pid"], self.d.proc.pid)
            self.assertEqual(info["api_url"], "https://api.bartender.codesandbox.io")
            self.assertEqual(info["builder_url"], "https://builder.codesandbox.io")
            self.assertFalse(info["api_key_configured"])
            self.assertEqual(info["max_concurrent"], 2)
            self.assertEqual(info["queue"]["total"], 0)
            self.assertEqual(info["backends"]["default"], "remote")
            self.assertGreaterEqual(info["uptime"], 0)

    def test_socket_from_environment(self):
        r = run_cli("daemon", "info", "-o", "json", env=clean_env(SNAPBUILD_SOCKET=self.d.socket))
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(json.loads(r.stdout)["socket"], self.d.socket)

    def test_version(self):
        r = self.d.cli("version")
        self.assertEqual(r.returncode, 0)
        self.assertRegex(r.stdout, r"snapbuild \S+ \(protocol 3\)\nsnapbuildd \S+ \(protocol 3\)")
        r = self.d.cli("version", "-o", "json")
        v = json.loads(r.stdout)
        self.assertEqual(v["client"]["protocol_version"], 3)
        self.assertEqual(v["daemon"]["protocol_version"], 3)

    def test_help_and_usage_errors(self):
        r = run_cli("help")
        self.assertEqual(r.returncode, 0)
        for name in ("daemon", "version", "help"):
            self.assertIn(name, r.stdout)
        self.assertIn("Exit codes", r.stdout)
        r = run_cli("help", "daemon")
        self.assertEqual(r.returncode, 0)
        self.assertIn("usage: snapbuild daemon info", r.stdout)
        r = run_cli("daemon", "--help")
        self.assertEqual(r.returncode, 0)
        self.assertIn("usage: snapbuild daemon info", r.stdout)
        self.assertEqual(run_cli().returncode, 2)
        self.assertEqual(run_cli("no-such-command").returncode, 2)
        self.assertEqual(run_cli("daemon").returncode, 2)
        self.assertEqual(run_cli("daemon", "explode").returncode, 2)
        self.assertEqual(run_cli("-o", "yaml", "version").returncode, 2)
        self.assertEqual(run_cli("--bogus", "version").returncode, 2)

    def test_unreachable_daemon_exit_3(self):
        missing = os.path.join(self.d.tmp, "nobody-here.sock")
        r = run_cli("--socket", missing, "daemon", "info")
        self.assertEqual(r.returncode, 3)
        self.assertIn("not reachable at " + missing, r.stderr)
        self.assertIn("snapbuildd", r.stderr)
        # a socket file with no daemon behind it
        stale = os.path.join(self.d.tmp, "stale.sock")
        s = socket.socket(socket.AF_UNIX)
        s.bind(stale)
        s.close()
        r = run_cli("--socket", stale, "daemon", "info")
        self.assertEqual(r.returncode, 3)
        # version still prints the client's own version
        r = run_cli("--socket", missing, "version")
        self.assertEqual(r.returncode, 0)
        self.assertIn("not reachable", r.stdout)

    def test_peer_credentials(self):
        with self.d.conn() as c:
            info = c.result("daemon.info")
        self.assertEqual(info["caller"]["pid"], os.getpid())
        self.assertEqual(info["caller"]["uid"], os.geteuid())
        self.assertEqual(info["caller"]["gid"], os.getegid())

    def test_file_modes(self):
        self.assertEqual(stat.S_IMODE(os.stat(self.d.socket).st_mode), 0o600)
        self.assertEqual(stat.S_IMODE(os.stat(self.d.state_dir).st_mode), 0o700)
        db = os.path.join(self.d.state_dir, "snapbuild.db")
        self.assertTrue(os.path.exists(db))
        self.assertEqual(stat.S_IMODE(os.stat(db).st_mode), 0o600)


class ProtocolMismatchTest(unittest.TestCase):
    def test_cli_refuses_a_daemon_of_another_protocol(self):
        tmp = tempfile.mkdtemp(prefix="sbd-proto-")
        self.addCleanup(subprocess.run, ["rm", "-rf", tmp])
        path = os.path.join(tmp, "old.sock")
        srv = socket.socket(socket.AF_UNIX)
        srv.bind(path)
        srv.listen(4)
        self.addCleanup(srv.close)
        seen = []

        def serve():
            # An older daemon: answers daemon.version with protocol 1, records the rest.
            while True:
                try:
                    c, _ = srv.accept()
                except OSError:
                    return
                f = c.makefile("rwb")
                for line in f:
                    req = json.loads(line)
                    seen.append(req["method"])
                    res = {"version": "0.0.9", "protocol_version": 1}
                    f.write(json.dumps({"jsonrpc": "2.0", "id": req["id"],
                                        "result": res}).encode() + b"\n")
                    f.flush()
                c.close()
        threading.Thread(target=serve, daemon=True).start()
        r = run_cli("--socket", path, "jobs")
        self.assertEqual(r.returncode, 1, r.stdout + r.stderr)
        self.assertIn("speaks protocol 1, this snapbuild protocol 3", r.stderr)
        self.assertEqual(seen, ["daemon.version"])


class ProtocolTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.d = Daemon()

    @classmethod
    def tearDownClass(cls):
        cls.d.__exit__(None, None, None)

    def assertAlive(self):
        self.assertIsNone(self.d.proc.poll(), "daemon died:\n" + self.d.log())
        self.assertEqual(self.d.call("daemon.version")["protocol_version"], 3)

    def test_unknown_method(self):
        with self.d.conn() as c:
            m = c.call("daemon.nope")
        self.assertEqual(m["error"]["code"], -32601)

    def test_batch_and_notifications(self):
        with self.d.conn() as c:
            c.send_raw(b'[{"jsonrpc":"2.0","method":"daemon.version","id":"a"},'
                       b'{"jsonrpc":"2.0","method":"daemon.version"},'
                       b'{"jsonrpc":"2.0","method":"nope","id":"b"},'
                       b'{"foo":1}]\n')
            answers = c.read()
            self.assertIsInstance(answers, list)
            self.assertEqual(len(answers), 3)
            by_id = {a["id"]: a for a in answers}
            self.assertEqual(by_id["a"]["result"]["protocol_version"], 3)
            self.assertEqual(by_id["b"]["error"]["code"], -32601)
            self.assertEqual(by_id[None]["error"]["code"], -32600)
            # notifications alone get nothing: the next answer is the next request's
            c.send_raw(b'[{"jsonrpc":"2.0","method":"daemon.version"}]\n'
                       b'{"jsonrpc":"2.0","method":"daemon.info"}\n')
            c.send("daemon.version", id="after")
            self.assertEqual(c.read()["id"], "after")
            c.send_raw(b"[]\n")
            self.assertEqual(c.read()["error"]["code"], -32600)

    def test_garbage_oversize_and_bad_utf8_keep_connection(self):
        with self.d.conn() as c:
            c.send_raw(b"this is not json\n")
            self.assertEqual(c.read()["error"]["code"], -32700)
            c.send_raw(b'{"jsonrpc":"2.0","method":"daemon.version","id":1} junk\n')
            self.assertEqual(c.read()["error"]["code"], -32700)
            c.send_raw(b'{"jsonrpc":"2.0","method":"x\xff","id":1}\n')
            m = c.read()
            self.assertEqual(m["error"]["code"], -32700)
            self.assertIsNone(m["id"])
            # 2 MiB in one line, sent in pieces: one -32600, then business as usual
            big = b'{"jsonrpc":"2.0","method":"daemon.version","params":["' + b"x" * (2 << 20) + b'"],"id":5}\n'
            for i in range(0, len(big), 300000):
                c.send_raw(big[i:i + 300000])
            m = c.read()
            self.assertEqual(m["error"]["code"], -32600)
            self.assertIsNone(m["id"])
            self.assertEqual(c.result("daemon.version")["protocol_version"], 3)
            # blank lines are ignored
            c.send_raw(b"\n\r\n   \n")
            self.assertEqual(c.result("daemon.version")["protocol_version"], 3)
            # just under the limit is fine
            params = ["y" * ((1 << 20) - 200)]
            self.assertEqual(c.result("daemon.version", params)["protocol_version"], 3)
        self.assertAlive()

    def test_random_bytes_and_half_written_messages(self):
        rnd = open("/dev/urandom", "rb")
        for _ in range(20):
            with self.d.conn() as c:
                c.send_raw(rnd.read(4096))
        for partial in (b'{"jsonrpc":"2.0","method":"daemon.in', b"[", b'{"a":', b"\xf0\x9f"):
            with self.d.conn() as c:
                c.send_raw(partial)
            # shut down writing: the daemon owes nothing for a half line, and closes
            with self.d.conn() as c:
                c.send_raw(partial)
                c.sock.shutdown(socket.SHUT_WR)
                self.assertIsNone(c.read_line())
        rnd.close()
        self.assertAlive()

    def test_split_byte_by_byte_and_merged(self):
        with self.d.conn() as c:
            line = b'{"jsonrpc":"2.0","method":"daemon.version","id":"slow"}\n'
            for b in line:
                c.send_raw(bytes([b]))
            self.assertEqual(c.read()["id"], "slow")
            many = b"".join(b'{"jsonrpc":"2.0","method":"daemon.version","id":%d}\n' % i
                            for i in range(500))
            c.send_raw(many)
            ids = [c.read()["id"] for _ in range(500)]
            self.assertEqual(ids, list(range(500)))

    def test_half_close_still_answered(self):
        with self.d.conn() as c:
            c.send_raw(b'{"jsonrpc":"2.0","method":"daemon.version","id":1}\n'
                       b'{"jsonrpc":"2.0","method":"daemon.info","id":2}\n')
            c.sock.shutdown(socket.SHUT_WR)
            self.assertEqual(c.read()["id"], 1)
            self.assertEqual(c.read()["id"], 2)
            self.assertIsNone(c.read_line())

    def test_200_concurrent_connections(self):
        conns = [Conn(self.d.socket) for _ in range(200)]
        try:
            for i, c in enumerate(conns):
                c.send("daemon.info", id=i)
            for i, c in enumerate(conns):
                m = c.read()
                self.assertEqual(m["id"], i)
                self.assertEqual(m["result"]["caller"]["pid"], os.getpid())
        finally:
            for c in conns:
                c.close()

    def test_200_concurrent_clients_threads(self):
        errors = []

        def one(i):
            try:
                with Conn(self.d.socket) as c:
                    r = c.call("daemon.version", [i])
                    if r.get("result", {}).get("protocol_version") != 3:
                        errors.append(r)
            except Exception as e:  # noqa: BLE001 - reported below
                errors.append(e)
        threads = [threading.Thread(target=one, args=(i,)) for i in range(200)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        self.assertEqual(errors, [])

    def test_passed_fd_is_closed_when_unclaimed(self):
        r, w = os.pipe()
        try:
            with self.d.conn() as c:
                res = c.call("daemon.version", fds=[w])
                self.assertEqual(res["result"]["protocol_version"], 3)
                os.close(w)
                w = -1
                # daemon.version does not claim it, so the daemon closed its copy: EOF
                os.set_blocking(r, True)
                self.assertEqual(os.read(r, 1), b"")
        finally:
            os.close(r)
            if w >= 0:
                os.close(w)

    def test_extra_fds_are_closed(self):
        pipes = [os.pipe() for _ in range(3)]
        with self.d.conn() as c:
            c.call("daemon.version", fds=[w for _, w in pipes])
        for r, w in pipes:
            os.close(w)
            self.assertEqual(os.read(r, 1), b"")
            os.close(r)

    def test_slow_reader_is_dropped(self):
        c = Conn(self.d.socket, timeout=30)
        c.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        req = b'{"jsonrpc":"2.0","method":"daemon.info","id":1}\n' * 1000
        sent = 0
        try:
            # about 20 MiB of answers owed, never read while sending
            while sent < 30000:
                c.send_raw(req)
                sent += 1000
        except (BrokenPipeError, ConnectionResetError):
            pass
        got = 0
        try:
            while c.read_line() is not None:
                got += 1
        except ConnectionResetError:
            pass
        c.close()
        self.assertLess(got, sent)
        wait_for(lambda: "slow reader" in self.d.log(), 10, "the drop to be logged")
        self.assertAlive()


class StartupTest(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.mkdtemp(prefix="sbd-start-")

    def tearDown(self):
        subprocess.run(["rm", "-rf", self.tmp])

    def run_daemon(self, *args, env=None, timeout=10):
        return subprocess.run([DAEMON] + list(args), env=env or clean_env(), capture_output=True,
                              text=True, timeout=timeout)

    def test_long_runtime_dir_is_refused_not_overflowed(self):
        # The default socket path of a non-root daemon comes from $XDG_RUNTIME_DIR, which
        # the config layer does not check: it must never be copied past sun_path's end
        # (an overflow under ASan, a truncated bind in release builds).
        os.chmod(self.tmp, 0o755)
        runtime = os.path.join(self.tmp, "r" * 150, "x" * 100)
        os.makedirs(runtime)
        subprocess.run(["chmod", "-R", "0777", os.path.join(self.tmp, "r" * 150)], check=True)
        env = clean_env(XDG_RUNTIME_DIR=runtime, XDG_STATE_HOME=runtime, HOME=runtime)
        argv = [public_copy()["daemon"]]
        if os.geteuid() == 0:
            argv = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"] + argv
        r = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=10)
        self.assertEqual(r.returncode, 1, r.stderr)
        self.assertNotIn("AddressSanitizer", r.stderr)
        self.assertIn("longer than a Unix socket allows", r.stderr)
        self.assertEqual([n for n in os.listdir(runtime) if n != "snapbuild"], [])

    def test_version_and_help_flags(self):
        r = self.run_daemon("--version")
        self.assertEqual(r.returncode, 0)
        self.assertIn("protocol 3", r.stdout)
        r = self.run_daemon("--help")
        self.assertEqual(r.returncode, 0)
        self.assertIn("--socket", r.stdout)

    def test_invalid_values_refused_naming_key(self):
        sock = os.path.join(self.tmp, "s.sock")
        state = os.path.join(self.tmp, "state")
        cases = [
            (clean_env(TOGETHER_REMOTE_ARCHITECTURE="x86"), [], "TOGETHER_REMOTE_ARCHITECTURE"),
            (clean_env(TOGETHER_LOCAL_BUILD="perhaps"), [], "TOGETHER_LOCAL_BUILD"),
            (clean_env(TOGETHER_BASE_URL="not a url"), [], "TOGETHER_BASE_URL"),
            (None, ["--max-concurrent", "zero"], "--max-concurrent"),
            (None, ["--log-level", "loud"], "--log-level"),
            (None, ["--config", os.path.join(self.tmp, "missing.conf")], "missing.conf"),
        ]
        for env, args, key in cases:
            r = self.run_daemon("--socket", sock, "--state-dir", state, *args, env=env)
            self.assertEqual(r.returncode, 1, (key, r.stderr))
            self.assertIn(key, r.stderr)
            self.assertFalse(os.path.exists(sock))

    def test_second_daemon_refuses(self):
        with Daemon(tmp=self.tmp) as d:
            # same socket, another state directory
            r = self.run_daemon("--socket", d.socket, "--state-dir", os.path.join(self.tmp, "other"))
            self.assertEqual(r.returncode, 1)
            self.assertIn("already", r.stderr)
            # same state directory, another socket
            r = self.run_daemon("--socket", os.path.join(self.tmp, "other.sock"), "--state-dir",
                                d.state_dir)
            self.assertEqual(r.returncode, 1)
            self.assertIn("state directory", r.stderr)
            # the first one is untouched
            self.assertEqual(d.call("daemon.info")["pid"], d.proc.pid)
        self.assertFalse(os.path.exists(d.socket), "socket left behind after stop")

    def test_refuses_when_another_program_answers(self):
        sock = os.path.join(self.tmp, "busy.sock")
        srv = socket.socket(socket.AF_UNIX)
        srv.bind(sock)
        srv.listen(1)
        try:
            r = self.run_daemon("--socket", sock, "--state-dir", os.path.join(self.tmp, "st"))
            self.assertEqual(r.returncode, 1)
            self.assertIn("already answering", r.stderr)
        finally:
            srv.close()

    def test_stale_socket_replaced_and_non_socket_kept(self):
        sock = os.path.join(self.tmp, "stale.sock")
        s = socket.socket(socket.AF_UNIX)
        s.bind(sock)
        s.close()
        with Daemon(tmp=self.tmp, socket_path=sock) as d:
            self.assertEqual(d.call("daemon.info")["socket"], sock)
            self.assertIn("stale", d.log())
        regular = os.path.join(self.tmp, "file.sock")
        with open(regular, "w") as f:
            f.write("precious")
        r = self.run_daemon("--socket", regular, "--state-dir", os.path.join(self.tmp, "st2"))
        self.assertEqual(r.returncode, 1)
        self.assertIn("not a socket", r.stderr)
        with open(regular) as f:
            self.assertEqual(f.read(), "precious")

    def test_socket_group_mode(self):
        import grp
        group = grp.getgrgid(os.getegid()).gr_name
        with Daemon(tmp=self.tmp, args=["--socket-group", group]) as d:
            st = os.stat(d.socket)
            self.assertEqual(stat.S_IMODE(st.st_mode), 0o660)
            self.assertEqual(st.st_gid, os.getegid())

    def test_notify_ready_and_stopping(self):
        nsock_path = os.path.join(self.tmp, "notify.sock")
        nsock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        nsock.bind(nsock_path)
        nsock.settimeout(10)
        try:
            d = Daemon(tmp=self.tmp, env=clean_env(NOTIFY_SOCKET=nsock_path), wait=False)
            messages = []

            def until(word):
                while not any(word in m for m in messages):
                    messages.append(nsock.recv(4096).decode())
                return True
            until("READY=1")
            ready = next(m for m in messages if "READY=1" in m)
            # READY comes once the listener is armed: a client connects at once
            self.assertTrue(can_connect(d.socket))
            self.assertTrue(any("STATUS=" in m for m in messages))
            self.assertIn("READY=1", ready)
            d.signal(signal.SIGTERM)
            until("STOPPING=1")
            self.assertEqual(d.proc.wait(10), 0)
            d.stop()
        finally:
            nsock.close()

    def test_watchdog(self):
        nsock_path = os.path.join(self.tmp, "wd.sock")
        nsock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        nsock.bind(nsock_path)
        nsock.settimeout(10)
        try:
            env = clean_env(NOTIFY_SOCKET=nsock_path, WATCHDOG_USEC=200000)
            # WATCHDOG_PID must name the daemon itself; without it any pid is accepted
            d = Daemon(tmp=self.tmp, env=env, wait=False)
            seen = []
            while not any("WATCHDOG=1" in m for m in seen):
                seen.append(nsock.recv(4096).decode())
            d.stop()
        finally:
            nsock.close()

    def test_socket_activation(self):
        sock = os.path.join(self.tmp, "activated.sock")
        state = os.path.join(self.tmp, "state")
        # the daemon is told another path; it must use the socket it is given
        p = subprocess.Popen(["systemd-socket-activate", "-l", sock, DAEMON,
                              "--socket", os.path.join(self.tmp, "ignored.sock"),
                              "--state-dir", state],
                             env=clean_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        try:
            # The socket file appears at bind(), before listen(): connecting is the
            # sure sign (the probe starts the daemon, as any client's connection would).
            wait_for(lambda: can_connect(sock), 10, "systemd-socket-activate to listen")
            with Conn(sock) as c:
                info = c.result("daemon.info")
            self.assertTrue(info["socket_activated"])
            self.assertEqual(info["socket"], sock)
            self.assertFalse(os.path.exists(os.path.join(self.tmp, "ignored.sock")))
            # a second connection goes to the same daemon
            with Conn(sock) as c:
                self.assertEqual(c.result("daemon.info")["pid"], info["pid"])
            os.kill(info["pid"], signal.SIGTERM)
            wait_for(lambda: pid_gone(info["pid"]), 10, "the activated daemon to stop")
        finally:
            p.terminate()
            p.wait(10)
            p.stdout.close()

    def test_idle_exit_when_socket_activated(self):
        sock = os.path.join(self.tmp, "idle.sock")
        p = subprocess.Popen(["systemd-socket-activate", "-l", sock, DAEMON, "--idle-exit", "1",
                              "--state-dir", os.path.join(self.tmp, "state")],
                             env=clean_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        try:
            # The socket file appears at bind(), before listen(): connecting is the
            # sure sign (the probe starts the daemon, as any client's connection would).
            wait_for(lambda: can_connect(sock), 10, "systemd-socket-activate to listen")
            with Conn(sock) as c:
                pid = c.result("daemon.info")["pid"]
            wait_for(lambda: pid_gone(pid), 10, "the idle daemon to exit")
        finally:
            p.terminate()
            p.wait(10)
            out = p.stdout.read().decode(errors="replace")
            p.stdout.close()
        self.assertIn("idle", out)

    def test_idle_exit_default(self):
        """Socket-activated and unconfigured: 300 s; configured 0: never; by hand: never."""
        def activated(name, *args):
            sock = os.path.join(self.tmp, name + ".sock")
            p = subprocess.Popen(["systemd-socket-activate", "-l", sock, DAEMON,
                                  "--state-dir", os.path.join(self.tmp, name), *args],
                                 env=clean_env(), stdout=subprocess.PIPE,
                                 stderr=subprocess.STDOUT)
            try:
                # The socket file appears at bind(), before listen(): connecting is the
                # sure sign (the probe starts the daemon, as any client's connection would).
                wait_for(lambda: can_connect(sock), 10, "systemd-socket-activate to listen")
                with Conn(sock) as c:
                    pid = c.result("daemon.info")["pid"]
                os.kill(pid, signal.SIGTERM)
                wait_for(lambda: pid_gone(pid), 10, "the activated daemon to stop")
            finally:
                p.terminate()
                p.wait(10)
                out = p.stdout.read().decode(errors="replace")
                p.stdout.close()
            self.assertIn("ready in", out)
            return out

        self.assertIn("exits after 300 s with no job and no client", activated("unset"))
        self.assertIn("exits after 42 s", activated("flag", "--idle-exit", "42"))
        self.assertNotIn("exits after", activated("zero", "--idle-exit", "0"))
        conf = os.path.join(self.tmp, "zero.conf")
        with open(conf, "w") as f:
            f.write("idle_exit_seconds = 0\n")
        self.assertNotIn("exits after", activated("zero-file", "--config", conf))
        with Daemon(tmp=tempfile.mkdtemp(dir=self.tmp)) as d:
            d.call("daemon.info")
            self.assertIn("ready in", d.log())
            self.assertNotIn("exits after", d.log())

    def test_sighup_reload(self):
        with Daemon(tmp=self.tmp, config="max_concurrent = 2\n") as d:
            self.assertEqual(d.call("daemon.info")["max_concurrent"], 2)
            with open(d.config_path, "w") as f:
                f.write("max_concurrent = 4\nremote_architecture = arm64\n")
            d.signal(signal.SIGHUP)
            wait_for(lambda: d.call("daemon.info")["max_concurrent"] == 4, 10, "the reload")
            info = d.call("daemon.info")
            self.assertEqual(info["backends"]["remote"]["architecture"], "arm64")
            # a broken file is refused and the running values stay
            with open(d.config_path, "w") as f:
                f.write("max_concurrent = many\n")
            d.signal(signal.SIGHUP)
            wait_for(lambda: "not reloaded" in d.log(), 10, "the refused reload")
            self.assertEqual(d.call("daemon.info")["max_concurrent"], 4)
            self.assertEqual(d.call("daemon.info")["socket"], d.socket)

    def test_api_key_never_shown(self):
        secret = "sk-test-secret-0123456789"
        keyfile = os.path.join(self.tmp, "key")
        with open(keyfile, "w") as f:
            f.write(secret + "\n")
        for env, args in ((clean_env(TOGETHER_API_KEY=secret), []),
                          (clean_env(), ["--api-key-file", keyfile]),
                          (clean_env(CREDENTIALS_DIRECTORY=self.tmp), [])):
            if "CREDENTIALS_DIRECTORY" in env:
                os.rename(keyfile, os.path.join(self.tmp, "api-key"))
            with Daemon(tmp=tempfile.mkdtemp(dir=self.tmp), env=env,
                        args=args + ["--log-level", "debug"]) as d:
                r = d.cli("daemon", "info", "-o", "json")
                self.assertTrue(json.loads(r.stdout)["api_key_configured"])
                self.assertNotIn(secret, r.stdout)
                r = d.cli("daemon", "info")
                self.assertIn("key configured", r.stdout)
                self.assertNotIn(secret, r.stdout)
                self.assertNotIn(secret, d.log())

    def test_sigint_stops_cleanly(self):
        d = Daemon(tmp=self.tmp)
        with d.conn() as c:
            c.result("daemon.info")
            d.signal(signal.SIGINT)
            self.assertEqual(d.proc.wait(10), 0)
            # our connection was closed by the daemon
            self.assertIsNone(c.read_line())
        d.stop()
        self.assertFalse(os.path.exists(d.socket))


if __name__ == "__main__":
    unittest.main(verbosity=2)
