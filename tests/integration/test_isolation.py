"""Isolation between users and secrecy of the API key, with real users.

The tests run as root and create, for the duration of this file, an unprivileged
user (sbtest-*), an admin user (member of the configured admin_group) and a group
for the socket; clients run as those users through setpriv.  Checked:

- the socket's mode and group are as configured, and only the group may connect;
- another user cannot see, follow, wait for, cancel, retry or prune root's jobs:
  every answer is the -32001 a job id that does not exist gets, byte for byte once
  the id is replaced, also for id prefixes (an ambiguous prefix must not reveal that
  other users' jobs share it); root and admin_group members see and control all;
- the daemon never reads what a user points it at: paths, directory and O_PATH
  descriptors of /etc, another user's 0700 directory, the daemon's state directory and
  the API key's directory are refused (raw RPC as another user), and nothing of them
  reaches an answer, the spool or the simulator;
- the client packs with its user's rights: `snapbuild context /etc --save` and
  `create --context /etc` as another user fail naming what it may not read (shadow),
  a private subtree fails the pack unless .dockerignore leaves it out — against a
  root daemon and one running as an unprivileged user alike;
- hostile archives sent raw by another user (absolute and .. members, hard links out,
  device nodes, FIFOs, no Dockerfile, plain tar, a gzip bomb, over max_context_bytes,
  cut short, changed digest) are refused with clear errors, leave no job and no spool
  file, and the daemon serves on;
- local builds only for root, the admin group and the daemon's own user;
- the API key is nowhere: not in the database (and -wal/-shm), the state directory,
  the daemon's log (at debug level), any RPC answer or notification of a full build,
  /proc/<daemon>/cmdline or environ, nor the argv, environment or stdin of any child
  of a local build (stand-in docker from fakes/ first on PATH); the registry password
  reaches the engine on login's stdin only.
"""
import json
import os
import pwd
import grp
import secrets
import shutil
import socket
import sqlite3
import stat
import subprocess
import sys
import tempfile
import unittest
import uuid

import base64
import gzip
import hashlib
import io
import tarfile

from harness import (SLOWDOWN, WRAPPER, Conn, can_connect, clean_env, pack, public_copy,
                     wait_for)
from simharness import API_KEY, Sim, wait_job, write_tree

HERE = os.path.dirname(os.path.abspath(__file__))
FAKES = os.path.join(HERE, "fakes")
DOCKERFILE = b"FROM debian:12\nRUN echo building\nCOPY . /app\n"

# Runs as another user: one connection per request, answers and notifications as JSON.
# A request may carry "archive": DIR (packed here by the real CLI, as this user),
# "fd": PATH with "fd_kind" path|dir|file (opened as this user: O_PATH, O_DIRECTORY,
# O_RDONLY), or "blob": base64 bytes handed over in an unlinked file as they are.
CLIENT = r"""
import base64, json, os, socket, sys, tempfile
sys.path.insert(0, sys.argv[1])
from harness import Conn, pack
out = []
for r in json.load(sys.stdin):
    try:
        c = Conn(sys.argv[2], timeout=r.get("timeout", 10))
    except OSError as e:
        out.append({"connect_errno": e.errno})
        continue
    params, fds = r.get("params"), None
    try:
        if r.get("archive"):
            fd, archive = pack(r["archive"], dockerfile=(params or {}).get("dockerfile"))
            params = dict(params or {}, archive=archive)
            fds = [fd]
        elif r.get("fd"):
            kind = r.get("fd_kind", "dir")
            flags = {"path": os.O_PATH, "dir": os.O_RDONLY | os.O_DIRECTORY,
                     "file": os.O_RDONLY}[kind]
            fds = [os.open(r["fd"], flags)]
        elif "blob" in r:
            f = tempfile.TemporaryFile()
            f.write(base64.b64decode(r["blob"]))
            f.flush()
            fds = [os.dup(f.fileno())]
            f.close()
    except OSError as e:
        out.append({"open_errno": e.errno})
        c.close()
        continue
    notes = []
    try:
        ans = c.call(r["method"], params, fds=fds, on_notify=notes.append)
    except socket.timeout:
        ans = {"timeout": True}
    except ConnectionError:
        ans = {"closed": True}
    c.close()
    for fd in fds or ():
        os.close(fd)
    out.append({"answer": ans, "notes": notes})
print(json.dumps(out))
"""

USERS = {}


def setUpModule():
    if os.geteuid() != 0:
        raise unittest.SkipTest("needs root to create users")
    for tool in ("useradd", "userdel", "groupadd", "groupdel", "setpriv"):
        if shutil.which(tool) is None:
            raise unittest.SkipTest(tool + " is missing")
    sfx = secrets.token_hex(4)
    names = {"other": "sbtest-" + sfx, "admin": "sbadm-" + sfx, "mallory": "sbmal-" + sfx,
             "admin_group": "sbadmg-" + sfx, "sock_group": "sbsock-" + sfx}
    try:
        subprocess.run(["groupadd", "-r", names["admin_group"]], check=True)
        subprocess.run(["groupadd", "-r", names["sock_group"]], check=True)
        for key in ("other", "mallory"):
            subprocess.run(["useradd", "-M", "-r", "-s", "/usr/sbin/nologin", names[key]],
                           check=True)
        subprocess.run(["useradd", "-M", "-r", "-s", "/usr/sbin/nologin", "-G",
                        "%s,%s" % (names["admin_group"], names["sock_group"]), names["admin"]],
                       check=True)
    finally:
        USERS.update(names)


def tearDownModule():
    for key in ("other", "admin", "mallory"):
        if key in USERS:
            subprocess.run(["userdel", USERS[key]], stderr=subprocess.DEVNULL)
    for key in ("admin_group", "sock_group"):
        if key in USERS:
            subprocess.run(["groupdel", USERS[key]], stderr=subprocess.DEVNULL)


def user_env():
    """The environment of a process run as another user: binaries and harness from a
    copy it can reach, whatever the checkout's permissions."""
    return clean_env(HOME="/", SNAPBUILD_BIN_DIR=public_copy()["dir"])


def as_user(user, socket_path, requests, timeout=120):
    """Runs the requests as user (its own uid, gid and groups); returns the answers."""
    pw = pwd.getpwnam(user)
    argv = ["setpriv", "--reuid=%d" % pw.pw_uid, "--regid=%d" % pw.pw_gid, "--init-groups",
            sys.executable, "-B", "-c", CLIENT, public_copy()["harness_dir"], socket_path]
    r = subprocess.run(argv, input=json.dumps(requests), capture_output=True, text=True,
                       timeout=timeout, env=user_env())
    if r.returncode != 0:
        raise AssertionError("client as %s failed: %s" % (user, r.stderr))
    return json.loads(r.stdout)


def cli_as(user, socket_path, *args, timeout=120):
    """The snapbuild CLI run as user; the CompletedProcess."""
    pw = pwd.getpwnam(user)
    argv = ["setpriv", "--reuid=%d" % pw.pw_uid, "--regid=%d" % pw.pw_gid, "--init-groups",
            public_copy()["cli"], "--socket", socket_path] + list(args)
    return subprocess.run(argv, capture_output=True, text=True, timeout=timeout,
                          env=user_env(), cwd="/")


def targz(members, gz=True):
    """A .tar.gz (plain tar when gz is False) of members: (name, type, data or link)."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as t:
        for name, kind, data in members:
            ti = tarfile.TarInfo(name)
            ti.type = kind
            if kind == tarfile.REGTYPE:
                ti.size = len(data)
                t.addfile(ti, io.BytesIO(data))
            else:
                if kind in (tarfile.SYMTYPE, tarfile.LNKTYPE):
                    ti.linkname = data
                t.addfile(ti)
    return gzip.compress(raw.getvalue(), mtime=0) if gz else raw.getvalue()


def blob_request(data, declare=None, params=None):
    """A raw build.submit of data, declared as data unless declare overrides."""
    archive = {"sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}
    archive.update(declare or {})
    return {"method": "build.submit", "params": dict(params or {}, archive=archive),
            "blob": base64.b64encode(data).decode()}


class Recorder(Conn):
    """A connection that keeps every line the daemon sent."""

    def __init__(self, path, lines, timeout=60):
        super().__init__(path, timeout)
        self.lines = lines

    def read_line(self):
        line = super().read_line()
        if line is not None:
            self.lines.append(line)
        return line


def descendants(pid):
    """Pids of every living descendant of pid."""
    parent = {}
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                with open("/proc/%s/stat" % name) as f:
                    parent[int(name)] = int(f.read().rsplit(")", 1)[1].split()[1])
            except (FileNotFoundError, ProcessLookupError, IndexError):
                pass
    out = []
    for p in parent:
        q = parent.get(p)
        while q is not None and q > 1:
            if q == pid:
                out.append(p)
                break
            q = parent.get(q)
    return out


def read_proc(pid, what):
    try:
        with open("/proc/%d/%s" % (pid, what), "rb") as f:
            return f.read()
    except (FileNotFoundError, ProcessLookupError):
        return None


class IsolationBase(unittest.TestCase):
    def setUp(self):
        # Traversable by the test users: they reach the socket and their contexts here.
        self.tmp = tempfile.mkdtemp(prefix="sbi-")
        os.chmod(self.tmp, 0o755)
        self.addCleanup(subprocess.run, ["rm", "-rf", self.tmp])
        self.ctx = os.path.join(self.tmp, "ctx")
        write_tree(self.ctx, {"Dockerfile": DOCKERFILE, "src/a.txt": b"a\n"})
        subprocess.run(["chmod", "-R", "a+rX", self.ctx], check=True)

    def start(self, config, *sim_args, args=(), env=None):
        self.sim = Sim(*sim_args)
        self.addCleanup(self.sim.stop)
        dtmp = os.path.join(self.tmp, "d%d" % len(os.listdir(self.tmp)))
        os.makedirs(os.path.join(dtmp, "run"), mode=0o755)
        os.chmod(dtmp, 0o755)
        d = self.sim.daemon(config=config, tmp=dtmp, args=args, env=env or {})
        self.addCleanup(d.__exit__, None, None, None)
        return d

    def submit(self, d, ctx=None, **params):
        with d.conn() as c:
            return c.submit_result(ctx or self.ctx, params)


class SocketTest(IsolationBase):
    def test_socket_group_and_mode(self):
        d = self.start("socket_group = %s\n" % USERS["sock_group"])
        st = os.stat(d.socket)
        self.assertTrue(stat.S_ISSOCK(st.st_mode))
        self.assertEqual(stat.S_IMODE(st.st_mode), 0o660)
        self.assertEqual(st.st_gid, grp.getgrnam(USERS["sock_group"]).gr_gid)
        # Not in the group: the kernel refuses the connection.
        [r] = as_user(USERS["other"], d.socket, [{"method": "daemon.info"}])
        self.assertEqual(r.get("connect_errno"), 13, r)
        # In the group: served, with its own credentials.
        [r] = as_user(USERS["admin"], d.socket, [{"method": "daemon.info"}])
        self.assertEqual(r["answer"]["result"]["caller"]["uid"],
                         pwd.getpwnam(USERS["admin"]).pw_uid)

    def test_explicit_mode_without_group(self):
        d = self.start("socket_mode = 0666\n")
        st = os.stat(d.socket)
        self.assertEqual(stat.S_IMODE(st.st_mode), 0o666)
        self.assertEqual(st.st_gid, os.getegid())
        [r] = as_user(USERS["other"], d.socket, [{"method": "daemon.info"}])
        self.assertEqual(r["answer"]["result"]["caller"]["uid"],
                         pwd.getpwnam(USERS["other"]).pw_uid)


class VisibilityTest(IsolationBase):
    CONFIG = "socket_mode = 0666\nadmin_group = %s\n"

    def test_other_user_cannot_touch_roots_jobs(self):
        d = self.start(self.CONFIG % USERS["admin_group"])
        done = wait_job(d, self.submit(d)["id"])
        self.assertEqual(done["state"], "succeeded", done)
        self.sim.faults(hold="end")
        running = self.submit(d, no_cache=True)["id"]  # built again, not reused
        wait_job(d, running, states=("building",))
        missing = str(uuid.uuid4())

        def probes(job_id):
            return [{"method": "build.get", "params": {"id": job_id}},
                    {"method": "build.logs", "params": {"id": job_id}},
                    {"method": "build.logs", "params": {"id": job_id, "follow": True}},
                    {"method": "build.wait", "params": {"id": job_id}},
                    {"method": "build.cancel", "params": {"id": job_id}},
                    {"method": "build.retry", "params": {"id": job_id}}]

        ids = [running, done["id"], running[:8], done["id"][:13], missing, missing[:8]]
        reqs = [p for i in ids for p in probes(i)]
        answers = as_user(USERS["other"], d.socket, reqs)
        self.assertEqual(len(answers), len(reqs))
        per_id = len(probes("x"))
        ref_full, ref_prefix = answers[4 * per_id:5 * per_id], answers[5 * per_id:]

        def norm(answer, job_id):
            return json.dumps(answer, sort_keys=True).replace(job_id, "ID")

        for k, job_id in enumerate(ids):
            ref, ref_id = (ref_full, missing) if len(job_id) == 36 else (ref_prefix, missing[:8])
            for j, p in enumerate(probes(job_id)):
                a = answers[k * per_id + j]
                what = "%s %s" % (p["method"], job_id)
                self.assertEqual(a["notes"], [], what)
                err = a["answer"].get("error")
                self.assertIsNotNone(err, what + ": " + repr(a))
                self.assertEqual(err["code"], -32001, what)
                # Identical to the answer for an id nobody has, once the id is replaced.
                self.assertEqual(norm(a["answer"], job_id), norm(ref[j]["answer"], ref_id), what)

        lists = as_user(USERS["other"], d.socket, [
            {"method": "build.list"}, {"method": "build.list", "params": {"state": "building"}},
            {"method": "build.list", "params": {"all_users": True}},
            {"method": "build.prune", "params": {"all_users": True}},
            {"method": "build.prune"}, {"method": "daemon.info"}])
        self.assertEqual(lists[0]["answer"]["result"]["jobs"], [])
        self.assertEqual(lists[1]["answer"]["result"]["jobs"], [])
        self.assertEqual(lists[2]["answer"]["error"]["code"], -32002)
        self.assertEqual(lists[3]["answer"]["error"]["code"], -32002)
        self.assertEqual(lists[4]["answer"]["result"]["deleted"], 0)

        # Nothing happened to root's jobs.
        j = d.call("build.get", {"id": running})
        self.assertEqual((j["state"], j["cancel_requested"]), ("building", False))
        self.assertEqual(d.call("build.get", {"id": done["id"]})["state"], "succeeded")
        self.assertEqual(len(d.call("build.list")["jobs"]), 2)

        # The other user's own job: it sees it, root and the admin group see all.
        self.sim.faults(hold=False)
        mine = as_user(USERS["other"], d.socket,
                       [{"method": "build.submit", "params": {}, "archive": self.ctx}])[0]
        mine = mine["answer"]["result"]
        self.assertEqual(mine["uid"], pwd.getpwnam(USERS["other"]).pw_uid)
        wait_job(d, mine["id"])
        own = as_user(USERS["other"], d.socket, [
            {"method": "build.list"}, {"method": "build.wait", "params": {"id": mine["id"]}},
            {"method": "build.logs", "params": {"id": mine["id"][:8], "follow": True}}])
        self.assertEqual([j["id"] for j in own[0]["answer"]["result"]["jobs"]], [mine["id"]])
        self.assertEqual(own[1]["answer"]["result"]["job"]["state"], "succeeded")
        self.assertTrue(own[2]["notes"])
        self.assertEqual(own[2]["answer"]["result"]["job"]["id"], mine["id"])
        self.assertEqual({j["id"] for j in d.call("build.list")["jobs"]},
                         {running, done["id"], mine["id"]})

        adm = as_user(USERS["admin"], d.socket, [
            {"method": "build.list"}, {"method": "build.list", "params": {"all_users": True}},
            {"method": "build.get", "params": {"id": mine["id"]}},
            {"method": "build.logs", "params": {"id": done["id"]}},
            {"method": "build.cancel", "params": {"id": running}}])
        self.assertEqual(len(adm[0]["answer"]["result"]["jobs"]), 3)
        self.assertEqual(len(adm[1]["answer"]["result"]["jobs"]), 3)
        self.assertEqual(adm[2]["answer"]["result"]["id"], mine["id"])
        self.assertTrue(adm[3]["answer"]["result"]["events"])
        self.assertIn(adm[4]["answer"]["result"]["state"], ("cancelling", "cancelled"))
        self.assertEqual(wait_job(d, running)["state"], "cancelled")

    def test_prefix_shared_with_other_users_jobs_reveals_nothing(self):
        config = self.CONFIG % USERS["admin_group"]
        d = self.start(config)
        base = wait_job(d, self.submit(d)["id"])
        d.stop()
        # Jobs whose ids share a prefix: two of root's, one of the other user's.
        other_uid = pwd.getpwnam(USERS["other"]).pw_uid
        db = sqlite3.connect(os.path.join(d.state_dir, "snapbuild.db"))
        cols = [r[1] for r in db.execute("PRAGMA table_info(jobs)")]
        row = db.execute("SELECT * FROM jobs WHERE id = ?", (base["id"],)).fetchone()
        row = dict(zip(cols, row))
        made = {"abcd0000-0000-4000-8000-000000000001": 0,
                "abcd0000-0000-4000-8000-000000000002": 0,
                "abcd1111-0000-4000-8000-000000000003": other_uid,
                "abce0000-0000-4000-8000-000000000004": 0}
        for job_id, uid in made.items():
            row.update(id=job_id, uid=uid)
            db.execute("INSERT INTO jobs (%s) VALUES (%s)"
                       % (",".join(cols), ",".join("?" * len(cols))), [row[c] for c in cols])
        db.commit()
        db.close()
        d2 = self.sim.daemon(config=config, tmp=d.tmp, state_dir=d.state_dir)
        self.addCleanup(d2.__exit__, None, None, None)
        answers = as_user(USERS["other"], d2.socket, [
            {"method": "build.get", "params": {"id": "abcd"}},
            {"method": "build.get", "params": {"id": "abce"}},
            {"method": "build.get", "params": {"id": "abcf"}},
            {"method": "build.get", "params": {"id": "abcd0000"}},
            {"method": "build.get", "params": {"id": "abcd1"}}])
        # Its own job is the one it can see under the shared prefix.
        self.assertEqual(answers[0]["answer"].get("result", {}).get("id"),
                         "abcd1111-0000-4000-8000-000000000003", answers[0])
        for i, prefix in ((1, "abce"), (3, "abcd0000")):
            self.assertEqual(json.dumps(answers[i]["answer"]).replace(prefix, "P"),
                             json.dumps(answers[2]["answer"]).replace("abcf", "P"), prefix)
        self.assertEqual(answers[4]["answer"]["result"]["id"],
                         "abcd1111-0000-4000-8000-000000000003")
        # Root may see all: for it the prefix is ambiguous.
        with d2.conn() as c:
            self.assertEqual(c.call("build.get", {"id": "abcd"})["error"]["code"], -32602)



MARKER = b"private-marker-" + secrets.token_hex(8).encode()


class ContextTrustTest(IsolationBase):
    """The daemon never opens a path, or anything below a descriptor, a user gives it."""

    def setUp(self):
        super().setUp()
        # Root's private directory: a context nobody else may read.
        self.private = os.path.join(self.tmp, "root-private")
        write_tree(self.private, {"Dockerfile": DOCKERFILE, "private.txt": MARKER})
        os.chmod(self.private, 0o700)
        self.creds = os.path.join(self.tmp, "creds")
        write_tree(self.creds, {"api-key": API_KEY.encode() + b"\n"})
        os.chmod(self.creds, 0o700)

    def start_trusting(self, extra=""):
        d = self.start("socket_mode = 0666\nadmin_group = %s\napi_key_file = %s\n%s"
                       % (USERS["admin_group"], os.path.join(self.creds, "api-key"), extra))
        return d

    def nothing_leaked(self, d, answers):
        text = json.dumps(answers).encode()
        for secret in (MARKER, API_KEY.encode(), b"root:"):
            self.assertNotIn(secret, text)
        self.assertEqual(d.call("build.list", {"all_users": True})["jobs"], [])
        self.assertEqual(self.sim.builds(), [])
        spool = os.path.join(d.state_dir, "spool")
        self.assertEqual(os.listdir(spool), [])

    def test_paths_and_directory_descriptors_are_refused(self):
        d = self.start_trusting()
        targets = ["/etc", self.private, d.state_dir, self.creds, "/"]
        fake = {"sha256": "0" * 64, "bytes": 10}
        reqs = []
        for t in targets:
            for kind in ("path", "dir"):
                reqs.append({"method": "build.submit", "fd": t, "fd_kind": kind,
                             "params": {"dockerfile": "hostname", "archive": fake}})
                reqs.append({"method": "build.submit", "fd": t, "fd_kind": kind,
                             "params": {"archive": fake}})
                reqs.append({"method": "context.inspect", "fd": t, "fd_kind": kind,
                             "params": {"save": True, "list_files": True}})
            reqs.append({"method": "build.submit", "params": {"context": t}})
            reqs.append({"method": "context.inspect", "params": {"context": t}})
        reqs.append({"method": "context.save", "params": {"sha256": "0" * 64},
                     "fd": "/etc/hostname", "fd_kind": "file"})
        for user in (USERS["other"], USERS["admin"]):
            answers = as_user(user, d.socket, reqs)
            self.assertEqual(len(answers), len(reqs))
            for req, a in zip(reqs, answers):
                what = "%s as %s: %r" % (user, req["method"], req.get("fd") or req.get("params"))
                if "open_errno" in a:
                    # The kernel refused this user the descriptor (a 0700 directory).
                    self.assertEqual(a["open_errno"], 13, what)
                    continue
                err = a["answer"].get("error")
                self.assertIsNotNone(err, what + " answered " + repr(a))
                self.assertIn(err["code"], (-32005, -32601), what + repr(err))
                self.assertIn("too old", err["data"]["hint"], what)
            self.nothing_leaked(d, answers)
        # Root itself gets the same answers: there is no path the daemon will read.
        with d.conn() as c:
            a = c.call("build.submit", {"context": self.private})
            self.assertEqual(a["error"]["code"], -32005)
            fd = os.open(self.private, os.O_RDONLY | os.O_DIRECTORY)
            a = c.call("build.submit", {"archive": fake}, fds=[fd])
            os.close(fd)
            self.assertEqual(a["error"]["code"], -32005)
        self.nothing_leaked(d, [a])
        self.assertTrue(d.call("daemon.info")["api_key_configured"])

    def test_context_label_with_control_characters_is_refused(self):
        # The label reaches the daemon's log and other users' listings: refused raw.
        d = self.start_trusting()
        reqs = [{"method": "build.submit", "params": {"context": label}, "archive": self.ctx}
                for label in ("/tmp/\x1b]0;pwned\x07", "a\nb", "x\u009by", "ok\x7f")]
        for a in as_user(USERS["other"], d.socket, reqs):
            self.assertEqual(a["answer"]["error"]["code"], -32602, a)
            self.assertIn("printable", a["answer"]["error"]["message"])
        self.nothing_leaked(d, [])
        self.assertNotIn("\x1b]0;", d.log())

    def test_client_packs_with_its_users_rights(self):
        d = self.start_trusting()
        outdir = os.path.join(self.tmp, "out")
        os.mkdir(outdir)
        os.chmod(outdir, 0o777)
        out = os.path.join(outdir, "etc.tgz")
        r = cli_as(USERS["other"], d.socket, "context", "/etc", "--dockerfile", "hostname",
                   "--save", out)
        self.assertEqual(r.returncode, 1, r.stdout + r.stderr)
        self.assertRegex(r.stderr, r"cannot read \./\S+: Permission denied")
        self.assertFalse(os.path.exists(out))
        self.assertEqual(os.listdir(outdir), [])  # not even the temporary file
        r = cli_as(USERS["other"], d.socket, "create", "--context", "/etc", "--dockerfile",
                   "hostname", "--ci")
        self.assertEqual(r.returncode, 1, r.stdout + r.stderr)
        self.assertIn("Permission denied", r.stderr)
        r = cli_as(USERS["other"], d.socket, "create", "--context", self.private, "--ci")
        self.assertEqual(r.returncode, 1, r.stdout + r.stderr)
        self.assertIn("Permission denied", r.stderr)
        self.nothing_leaked(d, [r.stdout, r.stderr])
        # What the user may read builds, as that user.
        r = cli_as(USERS["other"], d.socket, "create", "--context", self.ctx, "--ci")
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        job = d.call("build.list", {"all_users": True})["jobs"][0]
        self.assertEqual(job["uid"], pwd.getpwnam(USERS["other"]).pw_uid)
        self.assertEqual(job["snapshot_id"], r.stdout.strip())

    def test_hostile_archives_are_refused(self):
        d = self.start_trusting("max_context_bytes = 1M\n")
        df = ("Dockerfile", tarfile.REGTYPE, DOCKERFILE)
        good = targz([df, ("src/a.txt", tarfile.REGTYPE, b"a\n")])
        bomb_raw = io.BytesIO()
        with tarfile.open(fileobj=bomb_raw, mode="w") as t:
            t.addfile(_sized("Dockerfile", 8 << 20), io.BytesIO(bytes(8 << 20)))
        bomb = gzip.compress(bomb_raw.getvalue(), 9)
        self.assertLess(len(bomb), 64 << 10)
        cases = [
            ("absolute", blob_request(targz([df, ("/etc/cron.d/x", tarfile.REGTYPE, b"x")])),
             "absolute or leaves the context"),
            ("dotdot", blob_request(targz([df, ("../../x", tarfile.REGTYPE, b"x")])),
             "leaves the context"),
            ("hardlink", blob_request(targz([df, ("l", tarfile.LNKTYPE, "../../etc/shadow")])),
             "hard link"),
            ("device", blob_request(targz([df, ("dev", tarfile.CHRTYPE, None)])), "device node"),
            ("fifo", blob_request(targz([df, ("p", tarfile.FIFOTYPE, None)])), "FIFO"),
            ("no dockerfile", blob_request(targz([("a", tarfile.REGTYPE, b"a")])),
             "no Dockerfile"),
            ("dockerfile dir", blob_request(targz([("Dockerfile", tarfile.DIRTYPE, None)])),
             "no Dockerfile"),
            ("plain tar", blob_request(targz([df], gz=False)), "not gzip"),
            ("garbage", blob_request(b"\x1f\x8b" + os.urandom(4000)), "not a gzip-compressed"),
            ("bomb", blob_request(bomb), "unpacks to more than 1048576"),
            ("declared over cap", blob_request(good, declare={"bytes": 2 << 20}),
             "max_context_bytes"),
            ("cut short", blob_request(good[:len(good) // 2],
                                       declare={"bytes": len(good),
                                                "sha256": hashlib.sha256(good).hexdigest()}),
             ""),
            ("other digest", blob_request(good, declare={"sha256": "ab" * 32}),
             "not the one declared"),
        ]
        reqs = [c[1] for c in cases]
        answers = as_user(USERS["other"], d.socket, reqs)
        for (name, _, needle), a in zip(cases, answers):
            err = a["answer"].get("error")
            self.assertIsNotNone(err, name + ": " + repr(a))
            self.assertEqual(err["code"], -32005, name + ": " + repr(err))
            self.assertIn(needle, err["message"], name)
            self.assertTrue(err["data"]["hint"], name)
            self.assertNotIn("\x1b", err["message"])
        self.nothing_leaked(d, answers)
        # The daemon serves on, and the same user's good archive builds.
        [a] = as_user(USERS["other"], d.socket, [blob_request(good)])
        job = wait_job(d, a["answer"]["result"]["id"])
        self.assertEqual(job["state"], "succeeded", job)
        files = sorted(f["path"] for f in self.sim.build(job["build_id"])["files"])
        self.assertEqual(files, ["Dockerfile", "src/a.txt"])

    def test_local_builds_only_for_trusted_callers(self):
        fakebin = os.path.join(self.tmp, "fakebin")
        os.makedirs(fakebin)
        shutil.copy(os.path.join(FAKES, "docker"), os.path.join(fakebin, "docker"))
        os.chmod(fakebin, 0o755)
        path = fakebin + ":/usr/local/bin:/usr/bin:/bin"
        d = self.start("socket_mode = 0666\nadmin_group = %s\nlocal_build = true\n"
                       "local_engine = docker\n" % USERS["admin_group"], env={"PATH": path})
        req = {"method": "build.submit", "params": {"backend": "local"}, "archive": self.ctx}
        [a] = as_user(USERS["other"], d.socket, [req])
        err = a["answer"]["error"]
        self.assertEqual(err["code"], -32002, err)
        self.assertIn("systemctl --user", err["data"]["hint"])
        r = cli_as(USERS["other"], d.socket, "create", "--context", self.ctx, "--local", "--ci")
        self.assertEqual(r.returncode, 1, r.stderr)
        self.assertIn("only for root", r.stderr)
        # The admin group may.
        [a] = as_user(USERS["admin"], d.socket, [req])
        job = wait_job(d, a["answer"]["result"]["id"])
        self.assertEqual((job["state"], job["backend"]), ("succeeded", "local"), job)
        # A remote build needs no privilege; retrying the admin's local job as the other
        # user is refused as not found (it is not theirs).
        [a, b] = as_user(USERS["other"], d.socket, [
            {"method": "build.submit", "params": {"backend": "remote"}, "archive": self.ctx},
            {"method": "build.retry", "params": {"id": job["id"]}}])
        self.assertIn("result", a["answer"], a)
        self.assertEqual(b["answer"]["error"]["code"], -32001)
        d.stop()
        # With local_build off, not even root.
        d2 = self.start("local_engine = docker\n", env={"PATH": path})
        with d2.conn() as c:
            err = c.submit(self.ctx, {"backend": "local"})["error"]
        self.assertEqual(err["code"], -32002)
        self.assertIn("off", err["message"])


def _sized(name, size):
    ti = tarfile.TarInfo(name)
    ti.size = size
    return ti


class UnprivilegedDaemonTest(IsolationBase):
    """The daemon runs as an unprivileged user (as the packaged service does): clients
    hand it archives; what it can read itself (its state, its key) no client can reach
    through it, and a client's unreadable files fail the client's own pack."""

    def test_unprivileged_daemon(self):
        pw = pwd.getpwnam(USERS["other"])
        self.sim = Sim()
        self.addCleanup(self.sim.stop)
        home = os.path.join(self.tmp, "daemon-home")
        os.makedirs(home)
        os.chown(home, pw.pw_uid, pw.pw_gid)
        sock = os.path.join(home, "run", "snapbuild.sock")
        state = os.path.join(home, "state")
        log = open(os.path.join(self.tmp, "unpriv.log"), "wb")
        self.addCleanup(log.close)
        proc = subprocess.Popen(
            ["setpriv", "--reuid=%d" % pw.pw_uid, "--regid=%d" % pw.pw_gid, "--clear-groups",
             public_copy()["daemon"], "--socket", sock, "--state-dir", state,
             "--socket-mode", "0666"],
            env=clean_env(TOGETHER_API_KEY=API_KEY, TOGETHER_BASE_URL=self.sim.url, HOME=home),
            stdout=log, stderr=log, stdin=subprocess.DEVNULL)

        def stop():
            proc.terminate()
            self.assertEqual(proc.wait(30), 0)
        self.addCleanup(stop)
        wait_for(lambda: proc.poll() is None and os.path.exists(sock) and can_connect(sock),
                 10 * SLOWDOWN, "the unprivileged daemon to listen")
        os.chmod(home, 0o755)
        os.chmod(os.path.join(home, "run"), 0o755)
        # Another user points it at the daemon's own state: refused.
        fake = {"sha256": "0" * 64, "bytes": 1}
        answers = as_user(USERS["admin"], sock, [
            {"method": "build.submit", "fd": state, "fd_kind": "path",
             "params": {"archive": fake, "dockerfile": "snapbuild.db"}},
            {"method": "build.submit", "params": {"context": state}}])
        for a in answers:
            self.assertEqual(a["answer"]["error"]["code"], -32005, a)

        private = os.path.join(self.ctx, "private")
        write_tree(private, {"key.pem": b"k", "deep/more.txt": b"m"})
        os.chmod(private, 0o700)
        with open(os.path.join(self.ctx, "secret.key"), "wb") as f:
            f.write(b"s")
        os.chmod(os.path.join(self.ctx, "secret.key"), 0o600)
        r = cli_as(USERS["admin"], sock, "create", "--context", self.ctx, "--ci")
        self.assertEqual(r.returncode, 1, r.stdout + r.stderr)
        self.assertRegex(r.stderr, "private|secret.key")
        self.assertRegex(r.stderr, "(?i)permission denied")
        self.assertEqual(self.sim.builds(), [])
        # Left out by .dockerignore, the unreadable parts are never opened.
        write_tree(self.ctx, {".dockerignore": b"private\nsecret.key\n"})
        subprocess.run(["chmod", "a+r", os.path.join(self.ctx, ".dockerignore")], check=True)
        r = cli_as(USERS["admin"], sock, "create", "--context", self.ctx, "--ci")
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        job = UserDaemon(sock).call("build.list", {"all_users": True})["jobs"][0]
        self.assertEqual(job["state"], "succeeded", job)
        files = [f["path"] for f in self.sim.build(job["build_id"])["files"]]
        self.assertIn("./src/a.txt", files)
        self.assertFalse([f for f in files if "private" in f or "secret" in f], files)
        self.assertEqual(os.listdir(os.path.join(state, "spool")), [job["archive"]["sha256"]
                                                                     + ".tar.gz"])


class SharedDaemonTest(IsolationBase):
    """Two ordinary users on one daemon: one cannot take the other's alias, starve the
    other's build in the queue, or fill the spool."""

    def start_shared(self, extra=""):
        return self.start("socket_mode = 0666\nadmin_group = %s\n%s"
                          % (USERS["admin_group"], extra))

    def test_alias_stays_with_its_owner(self):
        d = self.start_shared()
        alice, mallory = USERS["other"], USERS["mallory"]
        [a] = as_user(alice, d.socket, [{"method": "build.submit",
                                         "params": {"alias": "app@prod"},
                                         "archive": self.ctx}])
        job = wait_job(d, a["answer"]["result"]["id"])
        self.assertEqual(job["state"], "succeeded", job)
        owned = job["snapshot_id"]
        # Mallory's build with the same alias is refused before anything is taken in.
        builds = len(self.sim.builds())
        [m] = as_user(mallory, d.socket, [{"method": "build.submit",
                                           "params": {"alias": "app@prod"},
                                           "archive": self.ctx}])
        err = m["answer"]["error"]
        self.assertEqual(err["code"], -32002, err)
        self.assertIn(owned, err["message"])
        self.assertIn("owner", err["data"]["hint"])
        self.assertEqual(len(self.sim.builds()), builds)
        r = cli_as(mallory, d.socket, "create", "--context", self.ctx, "--alias", "app@prod",
                   "--ci")
        self.assertEqual(r.returncode, 1, r.stdout + r.stderr)
        # Her own job without the alias, then a retry of Alice's alias through the API:
        # refused as well.
        [m] = as_user(mallory, d.socket, [{"method": "build.submit", "params": {},
                                           "archive": self.ctx}])
        mine = wait_job(d, m["answer"]["result"]["id"])
        [m] = as_user(mallory, d.socket, [{"method": "snapshot.alias",
                                           "params": {"id": mine["snapshot_id"],
                                                      "alias": "app@prod"}}])
        self.assertEqual(m["answer"]["error"]["code"], -32002)
        # The alias never moved; Alice may point it again (a new build of hers).
        self.assertEqual(d.call("snapshot.get", {"id": "@app@prod"})["id"], owned)
        [a] = as_user(alice, d.socket, [{"method": "build.retry", "params": {"id": job["id"]}}])
        again = wait_job(d, a["answer"]["result"]["id"])
        self.assertEqual(again["state"], "succeeded", again)
        self.assertEqual(d.call("snapshot.get", {"id": "@app@prod"})["id"],
                         again["snapshot_id"])
        # A free alias is anyone's.
        [m] = as_user(mallory, d.socket, [{"method": "build.submit",
                                           "params": {"alias": "mallory@dev"},
                                           "archive": self.ctx}])
        self.assertEqual(wait_job(d, m["answer"]["result"]["id"])["state"], "succeeded")

    def test_alias_taken_between_submit_and_aliasing_is_left_alone(self):
        d = self.start_shared()
        alice, mallory = USERS["other"], USERS["mallory"]
        # Mallory's build holds at the builder with a free alias; meanwhile Alice's
        # build takes it.  When Mallory's build ends, the alias is checked again.
        self.sim.faults(hold="end")
        [m] = as_user(mallory, d.socket, [{"method": "build.submit",
                                           "params": {"alias": "race@1"},
                                           "archive": self.ctx}])
        slow = wait_job(d, m["answer"]["result"]["id"], states=("building",))
        self.sim.faults(hold=False)
        [a] = as_user(alice, d.socket, [{"method": "build.submit",
                                         "params": {"alias": "race@1"},
                                         "archive": self.ctx}])
        first = wait_job(d, a["answer"]["result"]["id"])
        self.assertEqual(first["state"], "succeeded", first)
        self.sim.release(slow["build_id"])
        late = wait_job(d, slow["id"])
        self.assertEqual(late["state"], "failed", late)
        self.assertIn("another user's build", late["error"])
        self.assertTrue(late["snapshot_id"])
        self.assertEqual(d.call("snapshot.get", {"id": "@race@1"})["id"], first["snapshot_id"])

    def test_fair_queue_and_per_user_limits(self):
        d = self.start_shared("max_concurrent = 1\nmax_queued_per_user = 5\n")
        alice, mallory = USERS["other"], USERS["mallory"]
        self.sim.faults(hold="start")
        reqs = [{"method": "build.submit", "params": {"tags": {"n": str(i)}},
                 "archive": self.ctx} for i in range(6)]
        answers = as_user(mallory, d.socket, reqs)
        ids = [a["answer"]["result"]["id"] for a in answers[:5]]
        # The sixth is over her share (one runs, five wait... the running one counts out).
        last = answers[5]["answer"]
        if "error" in last:
            self.assertEqual(last["error"]["code"], -32007, last)
            self.assertIn("max_queued_per_user", last["error"]["message"])
        else:
            ids.append(last["result"]["id"])
        wait_job(d, ids[0], states=("uploading", "building"))
        over = as_user(mallory, d.socket, reqs[:1])[0]["answer"]
        self.assertEqual(over["error"]["code"], -32007, over)
        [a] = as_user(alice, d.socket, [{"method": "build.submit", "params": {},
                                         "archive": self.ctx}])
        victim = a["answer"]["result"]
        # Alice's one job is next, ahead of Mallory's backlog.
        self.assertEqual(d.call("build.get", {"id": victim["id"]})["queue_position"], 1)
        positions = [d.call("build.get", {"id": i}).get("queue_position") for i in ids[1:]]
        self.assertEqual(positions, list(range(2, 2 + len(positions))))
        started = []

        def next_started():
            self.sim.faults(hold="start")
            for b in self.sim.builds():
                self.sim.release(b.get("build_id") or b.get("id"))
            jobs = {j["id"]: j for j in d.call("build.list", {"all_users": True})["jobs"]}
            running = [i for i, j in jobs.items()
                       if j["state"] in ("uploading", "building") and i not in started]
            started.extend(running)
            return victim["id"] in started
        wait_for(next_started, 60, "the victim's job to start")
        # Only Mallory's first job ran before it.
        self.assertEqual(started.index(victim["id"]), 1, started)
        self.sim.faults(hold=False)

    def test_spool_quota(self):
        d = self.start_shared("max_spool_bytes_per_user = 1K\n")
        big = os.path.join(self.tmp, "big")
        write_tree(big, {"Dockerfile": DOCKERFILE, "noise.bin": os.urandom(4096)})
        subprocess.run(["chmod", "-R", "a+rX", big], check=True)
        [a] = as_user(USERS["other"], d.socket, [{"method": "build.submit", "params": {},
                                                  "archive": big}])
        err = a["answer"]["error"]
        self.assertEqual(err["code"], -32007, err)
        self.assertIn("max_spool_bytes_per_user", err["message"])
        self.assertIn("prune", err["data"]["hint"])
        self.assertEqual(os.listdir(os.path.join(d.state_dir, "spool")), [])


class UserDaemon:
    """Enough of harness.Daemon for wait_job: calls as root on another daemon's socket."""

    def __init__(self, socket_path):
        self.socket = socket_path

    def call(self, method, params=None):
        with Conn(self.socket) as c:
            return c.result(method, params)


def find_secret(secret, blobs):
    """Names of the blobs ({name: bytes}) that contain secret."""
    s = secret.encode()
    return sorted(name for name, b in blobs.items() if b is not None and s in b)


def tree_blobs(root, prefix):
    out = {}
    for dirpath, _, files in os.walk(root):
        for name in files:
            p = os.path.join(dirpath, name)
            try:
                with open(p, "rb") as f:
                    out[prefix + os.path.relpath(p, root)] = f.read()
            except OSError:
                pass
    return out


class SecretsTest(IsolationBase):
    def test_api_key_nowhere_after_a_remote_build(self):
        d = self.start("", args=("--log-level", "debug"))
        lines = []
        blobs = {}
        # Under a wrapper (valgrind) /proc shows the wrapper's own start-up environment,
        # which the daemon cannot reach: nothing to check there.
        procs = ("cmdline",) if WRAPPER else ("cmdline", "environ")
        for what in procs:
            blobs["/proc/daemon/" + what] = read_proc(d.proc.pid, what)
        if not WRAPPER:
            self.assertNotIn(b"TOGETHER_API_KEY", blobs["/proc/daemon/environ"])
        saved = os.path.join(self.tmp, "saved.tar.gz")

        def rec():
            return Recorder(d.socket, lines)

        with rec() as c:
            info = c.result("daemon.info")
            self.assertTrue(info["api_key_configured"])
            c.result("daemon.version")
            job = c.submit_result(self.ctx, {"alias": "sec@v1", "tags": {"t": "v"}})
            ans = c.call("build.logs", {"id": job["id"], "follow": True}, on_notify=lambda m: None)
            self.assertEqual(ans["result"]["job"]["state"], "succeeded", ans)
            c.result("build.wait", {"id": job["id"]})
            c.result("build.get", {"id": job["id"]})
            c.result("build.list", {"all_users": True})
            c.result("build.logs", {"id": job["id"]})
            snap = c.result("snapshot.get", {"id": ans["result"]["job"]["snapshot_id"]})
            c.result("snapshot.list", {"tags": {"t": "v"}})
            c.result("snapshot.get", {"id": "@sec@v1"})
            retry = c.result("build.retry", {"id": job["id"]})
            c.result("build.wait", {"id": retry["id"]})
            c.call("build.cancel", {"id": job["id"]})
            c.call("snapshot.get", {"id": str(uuid.uuid4())})
            c.call("no.such.method")
        r = d.cli("context", self.ctx, "--files", "--save", saved)
        self.assertEqual(r.returncode, 0, r.stderr)
        blobs["cli context --files"] = (r.stdout + r.stderr).encode()
        self.assertEqual(snap["id"], ans["result"]["job"]["snapshot_id"])
        for r in (d.cli("jobs", "-o", "json"), d.cli("logs", job["id"]), d.cli("daemon", "info")):
            blobs["cli " + " ".join(r.args[3:])] = (r.stdout + r.stderr).encode()
        blobs["rpc answers"] = b"\n".join(lines)
        self.assertGreater(len(lines), 30)
        with open(saved, "rb") as f:
            blobs["context --save output"] = f.read()
        if not WRAPPER:
            blobs["/proc/daemon/environ (later)"] = read_proc(d.proc.pid, "environ")
        # Every byte the daemon wrote: database, WAL, spool, and its log.
        d.stop()
        blobs.update(tree_blobs(d.state_dir, "state/"))
        self.assertIn("state/snapbuild.db", blobs)
        blobs["daemon log"] = d.log().encode()
        self.assertIn("http: POST", blobs["daemon log"].decode())
        self.assertEqual(find_secret(API_KEY, blobs), [])
        # The check can fail: the key is where we put it on purpose.
        self.assertEqual(find_secret(API_KEY, {"probe": b"x" + API_KEY.encode()}), ["probe"])

    def test_local_build_children_never_see_the_api_key(self):
        password = "reg-pass-" + secrets.token_hex(8)
        fakebin = os.path.join(self.tmp, "fakebin")
        os.makedirs(fakebin)
        shutil.copy(os.path.join(FAKES, "docker"), os.path.join(fakebin, "docker"))
        with open(os.path.join(fakebin, "fake-config.json"), "w") as f:
            json.dump({"build_sleep": 2}, f)
        path = fakebin + ":/usr/local/bin:/usr/bin:/bin"
        d = self.start("local_build = true\nlocal_engine = docker\n", "--registry-password", password,
                       args=("--log-level", "debug"), env={"PATH": path})
        lines = []
        with Recorder(d.socket, lines) as c:
            job = c.submit_result(self.ctx, {"backend": "local"})
        # While the build sleeps: every process under the daemon, as /proc shows it.
        wait_for(lambda: os.path.exists(os.path.join(fakebin, "fake-sleep.pid")), 30,
                 "the stand-in build to start")
        seen = {}
        for pid in descendants(d.proc.pid):
            for what in ("cmdline", "environ"):
                seen["/proc/%d/%s" % (pid, what)] = read_proc(pid, what)
        cmdlines = [v or b"" for k, v in seen.items() if k.endswith("cmdline")]
        self.assertTrue(any(b"docker" in v for v in cmdlines), seen.keys())
        with Recorder(d.socket, lines) as c:
            ans = c.call("build.logs", {"id": job["id"], "follow": True}, on_notify=lambda m: None)
            c.result("build.list")
        self.assertEqual(ans["result"]["job"]["state"], "succeeded", ans)
        with open(os.path.join(fakebin, "fake-record.jsonl")) as f:
            records = [json.loads(l) for l in f]
        self.assertTrue({"build", "login", "push"} <= {r["argv"][1] for r in records}, records)
        for i, r in enumerate(records):
            seen["record %d argv" % i] = json.dumps(r["argv"]).encode()
            seen["record %d env" % i] = json.dumps(r["env"]).encode()
            seen["record %d stdin" % i] = r["stdin"].encode()
            self.assertNotIn("TOGETHER_API_KEY", r["env"])
        self.assertEqual(find_secret(API_KEY, seen), [])
        login = [i for i, r in enumerate(records) if r["argv"][1] == "login"]
        self.assertEqual(len(login), 1)
        self.assertIn("--password-stdin", records[login[0]]["argv"])
        self.assertEqual(find_secret(password, seen), ["record %d stdin" % login[0]])
        d.stop()
        rest = tree_blobs(d.state_dir, "state/")
        rest["daemon log"] = d.log().encode()
        rest["rpc answers"] = b"\n".join(lines)
        self.assertEqual(find_secret(API_KEY, rest), [])
        self.assertEqual(find_secret(password, rest), [])


if __name__ == "__main__":
    unittest.main()
