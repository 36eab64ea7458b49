"""Snapshot management through the daemon: snapshot.* over RPC and `snapbuild
snapshots` against snapbuild-sim.

Snapshots are made through the simulator's API directly (or loaded from a state file
when a test needs known ages and sizes), then listed, read, aliased and retired
through the daemon; answers are compared with what the API itself returns.  The
access rules are checked with connections made as other users (root only).
"""
import fcntl
import json
import os
import pty
import re
import select
import socket
import struct
import subprocess
import tempfile
import termios
import time
import unittest
import urllib.error
import urllib.request

from harness import CLI, Conn, clean_env, wait_for
from simharness import API_KEY, Sim, wait_job

NOBODY = 65534
STRANGER = 65533  # a uid with no account at all


def api(sim, method, path, body=None, key=API_KEY):
    """The simulator's management API, directly: (status, parsed body or None)."""
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(sim.url + path, data=data, method=method,
                                 headers={"Authorization": "Bearer " + key,
                                          "Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            raw = r.read()
            return r.status, (json.loads(raw) if raw else None)
    except urllib.error.HTTPError as e:
        raw = e.read()
        return e.code, (json.loads(raw) if raw else None)


def api_ok(sim, method, path, body=None):
    status, obj = api(sim, method, path, body)
    if status >= 300:
        raise AssertionError("%s %s: %s %r" % (method, path, status, obj))
    return obj


def error_of(msg):
    if "error" not in msg:
        raise AssertionError("expected an error, got %r" % msg)
    return msg["error"]


def run_pty(argv, env, cols=120, timeout=30):
    """Runs argv with stdout on a pseudo-terminal cols wide; (rc, stdout, stderr)."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, cols, 0, 0))
    p = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=slave, stderr=subprocess.PIPE,
                         env=env)
    os.close(slave)
    out = b""
    deadline = time.monotonic() + timeout
    try:
        while True:
            ready, _, _ = select.select([master], [], [], max(0.0, deadline - time.monotonic()))
            if not ready:
                p.kill()
                raise AssertionError("%r did not finish on the pty" % (argv,))
            try:
                chunk = os.read(master, 65536)
            except OSError:  # EIO: the last writer closed the terminal
                break
            if not chunk:
                break
            out += chunk
    finally:
        os.close(master)
    err = p.stderr.read()
    p.stderr.close()
    p.wait(timeout)
    return p.returncode, out.decode().replace("\r\n", "\n"), err.decode()


class ConnAs(Conn):
    """A connection made by another user: a child process takes on uid, connects (the
    daemon reads the peer credentials at connect time) and hands the socket back."""

    def __init__(self, path, uid, timeout=10.0):
        a, b = socket.socketpair()
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                a.close()
                os.setgroups([])
                os.setgid(uid)
                os.setuid(uid)
                s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                s.connect(path)
                socket.send_fds(b, [b"x"], [s.fileno()])
                code = 0
            finally:
                os._exit(code)
        b.close()
        _, status = os.waitpid(pid, 0)
        _, fds, _, _ = socket.recv_fds(a, 1, 1)
        a.close()
        if status != 0 or not fds:
            raise AssertionError("could not connect to %s as uid %d" % (path, uid))
        self.sock = socket.socket(fileno=fds[0])
        self.sock.settimeout(timeout)
        self.buf = b""
        self.next_id = 0


class SnapshotsTest(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.mkdtemp(prefix="sbs-")
        self.addCleanup(subprocess.run, ["rm", "-rf", self.tmp])

    def start(self, *sim_args, config="", env=None, **daemon_kw):
        self.sim = Sim(*sim_args)
        self.addCleanup(self.sim.stop)
        self.d = self.sim.daemon(config=config, tmp=tempfile.mkdtemp(dir=self.tmp),
                                 env=env or {}, **daemon_kw)
        self.addCleanup(self.d.__exit__, None, None, None)
        return self.d

    def create(self, n, tags=None, ttl=None):
        """n snapshots made through the API directly, oldest first."""
        out = []
        for i in range(n):
            body = {"image": "registry.example.com/app:v%d" % i, "architecture": "amd64"}
            if tags is not None:
                body["tags"] = tags(i) if callable(tags) else tags
            if ttl:
                body["ttl"] = ttl
            out.append(api_ok(self.sim, "POST", "/v1/snapshots", body))
        return out

    def rpc(self, method, params=None):
        with self.d.conn() as c:
            return c.call(method, params)

    def result(self, method, params=None):
        with self.d.conn() as c:
            return c.result(method, params)

    def cli(self, *args, **env):
        return self.d.cli(*args, env=clean_env(**env))

    def sim_requests(self, method, prefix):
        return [r for r in self.sim.requests()
                if r["method"] == method and r["path"].startswith(prefix)]

    def aliases(self):
        a = self.sim.sim("GET", "aliases")
        a = a.get("aliases", a) if isinstance(a, dict) else a
        return {x["alias"]: x["snapshot_id"] for x in a}

    # --- list -------------------------------------------------------------------------

    def test_list_pages_follow_the_cursor_and_equal_the_api(self):
        self.start()
        made = self.create(7)
        pages, params = [], {"limit": 3}
        while True:
            page = self.result("snapshot.list", params)
            direct = api_ok(self.sim, "GET", "/v1/snapshots?limit=3" +
                            ("&cursor=" + params["cursor"] if "cursor" in params else ""))
            self.assertEqual(page, direct)
            pages.append(page)
            if page["next_cursor"] is None:
                break
            params["cursor"] = page["next_cursor"]
        self.assertEqual([len(p["data"]) for p in pages], [3, 3, 1])
        ids = [s["id"] for p in pages for s in p["data"]]
        self.assertEqual(ids, [s["id"] for s in reversed(made)])
        # the limit and cursor reached the API as query parameters
        uris = [r["uri"] for r in self.sim_requests("GET", "/v1/snapshots")]
        self.assertTrue(any("limit=3" in u and "cursor=" + pages[0]["next_cursor"] in u
                            for u in uris), uris)

    def test_list_filters_by_every_tag_given(self):
        self.start()
        odd = "a b&c=d/é"  # needs escaping in a query string
        made = self.create(6, tags=lambda i: {"team": "core" if i % 2 else "web",
                                               "odd": odd if i % 3 == 0 else "plain"})
        page = self.result("snapshot.list", {"tags": {"team": "core"}})
        self.assertEqual([s["id"] for s in page["data"]],
                         [s["id"] for s in reversed(made) if s["tags"]["team"] == "core"])
        page = self.result("snapshot.list", {"tags": {"team": "web", "odd": odd}})
        self.assertEqual([s["id"] for s in page["data"]], [made[0]["id"]])
        page = self.result("snapshot.list", {"tags": {"team": "nobody"}})
        self.assertEqual(page, {"data": [], "next_cursor": None})
        r = self.cli("snapshots", "list", "--tag", "team=web", "--tag", "odd=" + odd, "-o", "json")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual([s["id"] for s in json.loads(r.stdout)["data"]], [made[0]["id"]])

    def test_exclude_retired(self):
        self.start()
        made = self.create(4)
        for s in made[1:3]:
            self.result("snapshot.retire", {"id": s["id"]})
        everything = self.result("snapshot.list")
        self.assertEqual(len(everything["data"]), 4)
        retired = {s["id"] for s in everything["data"] if s["retired_at"] is not None}
        self.assertEqual(retired, {made[1]["id"], made[2]["id"]})
        active = self.result("snapshot.list", {"exclude_retired": True})
        self.assertEqual([s["id"] for s in active["data"]], [made[3]["id"], made[0]["id"]])
        self.assertEqual(self.result("snapshot.list", {"exclude_retired": False}), everything)
        r = self.cli("snapshots", "list", "--exclude-retired", "-o", "json")
        self.assertEqual(json.loads(r.stdout), active)

    # --- get, alias, unalias, retire -------------------------------------------------

    def test_get_by_id_and_by_alias(self):
        self.start()
        a, b = self.create(2, tags={"k": "v"})
        self.assertEqual(self.result("snapshot.get", {"id": a["id"]}),
                         api_ok(self.sim, "GET", "/v1/snapshots/" + a["id"]))
        res = self.result("snapshot.alias", {"id": b["id"], "alias": "app@v1"})
        self.assertEqual(res, {"snapshot_id": b["id"], "alias": "app@v1"})
        self.assertEqual(self.result("snapshot.get", {"id": "@app@v1"}),
                         api_ok(self.sim, "GET", "/v1/snapshots/" + b["id"]))
        # a snapshot named by alias works for alias and retire too
        self.result("snapshot.alias", {"id": "@app@v1", "alias": "latest"})
        self.assertEqual(self.aliases(), {"app@v1": b["id"], "latest": b["id"]})

    def test_alias_upsert_moves_the_alias(self):
        self.start()
        a, b = self.create(2)
        self.result("snapshot.alias", {"id": a["id"], "alias": "svc@prod"})
        self.assertEqual(self.aliases(), {"svc@prod": a["id"]})
        r = self.cli("snapshots", "alias", b["id"], "svc@prod")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn("svc@prod now points at snapshot " + b["id"], r.stdout)
        self.assertEqual(self.aliases(), {"svc@prod": b["id"]})
        self.assertEqual(self.result("snapshot.get", {"id": "@svc@prod"})["id"], b["id"])

    def test_unalias(self):
        self.start()
        (a,) = self.create(1)
        self.result("snapshot.alias", {"id": a["id"], "alias": "gone"})
        self.assertEqual(self.result("snapshot.unalias", {"alias": "gone"}),
                         {"alias": "gone", "snapshot_id": a["id"]})
        self.assertEqual(self.aliases(), {})
        self.assertEqual(error_of(self.rpc("snapshot.get", {"id": "@gone"}))["code"], -32001)
        # deleting an alias is idempotent: again is fine, and says nothing was there
        self.assertEqual(self.result("snapshot.unalias", {"alias": "gone"}),
                         {"alias": "gone", "snapshot_id": None})
        self.assertEqual(len(self.sim_requests("DELETE", "/v1/snapshot-aliases/gone")), 2)
        r = self.cli("snapshots", "unalias", "gone")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn("did not exist", r.stdout)

    def test_retire_by_id_and_alias_is_idempotent(self):
        self.start()
        a, b = self.create(2)
        first = self.result("snapshot.retire", {"id": a["id"]})
        self.assertIsNotNone(first["retired_at"])
        self.assertEqual(first, api_ok(self.sim, "GET", "/v1/snapshots/" + a["id"]))
        again = self.result("snapshot.retire", {"id": a["id"]})
        self.assertEqual(again["retired_at"], first["retired_at"])
        self.result("snapshot.alias", {"id": b["id"], "alias": "old"})
        r = self.cli("snapshots", "retire", "@old", "-o", "json")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(json.loads(r.stdout), api_ok(self.sim, "GET", "/v1/snapshots/" + b["id"]))
        self.assertIsNotNone(json.loads(r.stdout)["retired_at"])

    def test_retried_like_the_sdk(self):
        self.start()
        (a,) = self.create(1)
        self.sim.faults(request_fail=[{"method": "GET", "path": "/v1/snapshots", "status": 503,
                                       "count": 1},
                                      {"method": "POST", "path": "/v1/snapshots/" + a["id"] +
                                       "/retire", "status": 502, "count": 1}])
        self.assertEqual(len(self.result("snapshot.list")["data"]), 1)
        self.assertEqual([r["status"] for r in self.sim_requests("GET", "/v1/snapshots")],
                         [503, 200])
        self.assertIsNotNone(self.result("snapshot.retire", {"id": a["id"]})["retired_at"])
        self.assertEqual([r["status"] for r in self.sim_requests("POST", "/v1/snapshots/")][-2:],
                         [502, 200])

    # --- errors ----------------------------------------------------------------------

    def test_not_found_carries_status_and_hint(self):
        self.start()
        missing = "00000000-0000-4000-8000-000000000000"
        for method, params in (("snapshot.get", {"id": missing}),
                               ("snapshot.get", {"id": "@nothing"}),
                               ("snapshot.retire", {"id": missing}),
                               ("snapshot.alias", {"id": missing, "alias": "x"})):
            e = error_of(self.rpc(method, params))
            self.assertEqual(e["code"], -32001, (method, e))
            self.assertEqual(e["data"]["status"], 404)
            self.assertIn("check the id or alias", e["data"]["hint"])
            self.assertTrue(e["message"])
        r = self.cli("snapshots", "get", missing)
        self.assertEqual(r.returncode, 1)
        self.assertIn("snapshot not found", r.stderr)
        self.assertIn("hint: not found: check the id or alias", r.stderr)
        r = self.cli("snapshots", "get", missing, "-o", "json")
        self.assertEqual(json.loads(r.stdout)["error"]["data"]["status"], 404)

    def test_wrong_key_is_401_with_a_hint(self):
        self.start(env={"TOGETHER_API_KEY": "sk-wrong-key-1234"})
        e = error_of(self.rpc("snapshot.list"))
        self.assertEqual(e["code"], -32004)
        self.assertEqual(e["data"]["status"], 401)
        self.assertIn("API key", e["data"]["hint"])
        r = self.cli("snapshots", "list")
        self.assertEqual(r.returncode, 1)
        self.assertIn("hint: the daemon's API key was refused", r.stderr)
        # not retried: a wrong key stays wrong
        self.assertEqual(len(self.sim_requests("GET", "/v1/snapshots")), 2)
        self.assertNotIn("sk-wrong-key-1234", r.stderr + r.stdout + self.d.log())

    def test_without_a_key_says_how_to_give_one(self):
        self.start(env={"TOGETHER_API_KEY": ""})
        e = error_of(self.rpc("snapshot.get", {"id": "@x"}))
        self.assertEqual(e["code"], -32004)
        self.assertIn("TOGETHER_API_KEY", e["data"]["hint"])
        self.assertEqual(self.sim_requests("GET", "/v1/"), [])

    def test_invalid_params_name_the_field(self):
        self.start()
        cases = [
            ("snapshot.list", {"limit": 0}, "limit"),
            ("snapshot.list", {"limit": 101}, "limit"),
            ("snapshot.list", {"limit": "3"}, "limit"),
            ("snapshot.list", {"cursor": 5}, "cursor"),
            ("snapshot.list", {"cursor": ""}, "cursor"),
            ("snapshot.list", {"tags": ["a"]}, "tags"),
            ("snapshot.list", {"tags": {"a": 1}}, "tags.a"),
            ("snapshot.list", {"tags": {"": "x"}}, "tags"),
            ("snapshot.list", {"exclude_retired": "yes"}, "exclude_retired"),
            ("snapshot.list", {"colour": "red"}, "colour"),
            ("snapshot.list", [1], "params"),
            ("snapshot.get", {}, "id"),
            ("snapshot.get", {"id": "not-a-uuid"}, "id"),
            ("snapshot.get", {"id": "@"}, "id"),
            ("snapshot.get", {"id": "@a b"}, "id"),
            ("snapshot.alias", {"id": "@x"}, "alias"),
            ("snapshot.alias", {"id": "@x", "alias": "a/b"}, "alias"),
            ("snapshot.alias", {"alias": "x"}, "id"),
            ("snapshot.unalias", {}, "alias"),
            ("snapshot.unalias", {"alias": "@x"}, "alias"),
            ("snapshot.retire", {"id": 7}, "id"),
        ]
        for method, params, field in cases:
            e = error_of(self.rpc(method, params))
            self.assertEqual(e["code"], -32602, (method, params, e))
            self.assertIn(field, e["message"], (method, params))
        # nothing reached the API
        self.assertEqual(self.sim_requests("GET", "/v1/") + self.sim_requests("POST", "/v1/"), [])

    def test_caller_going_away_cancels_cleanly(self):
        self.start("--latency-ms", "500")
        c = Conn(self.d.socket)
        c.send("snapshot.list", {"limit": 5})
        wait_for(lambda: self.sim_requests("GET", "/v1/snapshots"), 10, "the list request")
        c.close()
        # the API's late answer finds nobody waiting for it, and harms nothing
        wait_for(lambda: self.sim_requests("GET", "/v1/snapshots")[0]["status"], 10,
                 "the simulator to answer")
        with self.d.conn() as c2:
            self.assertIn("version", c2.result("daemon.info"))
        # and a daemon stopped with a call in flight stops cleanly (no leak, exit 0)
        c3 = Conn(self.d.socket)
        c3.send("snapshot.get", {"id": "@x"})
        wait_for(lambda: self.sim_requests("GET", "/v1/snapshots/@x"), 10, "the get request")
        self.assertEqual(self.d.stop(), 0)
        self.assertIsNone(c3.read())
        c3.close()

    # --- the CLI -----------------------------------------------------------------------

    def test_cli_json_is_the_apis_objects(self):
        self.start()
        made = self.create(3, tags={"team": "core"})
        r = self.cli("snapshots", "list", "--limit", "2", "-o", "json")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(json.loads(r.stdout), api_ok(self.sim, "GET", "/v1/snapshots?limit=2"))
        r = self.cli("snapshot", "get", made[1]["id"], "-o", "json")
        self.assertEqual(json.loads(r.stdout), api_ok(self.sim, "GET", "/v1/snapshots/" + made[1]["id"]))
        r = self.cli("snapshots", "alias", made[0]["id"], "a1", "-o", "json")
        self.assertEqual(json.loads(r.stdout), {"snapshot_id": made[0]["id"], "alias": "a1"})
        r = self.cli("snapshots", "get", "@a1", "--output=json")
        self.assertEqual(json.loads(r.stdout), api_ok(self.sim, "GET", "/v1/snapshots/@a1"))

    def write_state(self, now):
        """A simulator state with known sizes, ages and tags, oldest first."""
        snaps = [
            {"id": "11111111-1111-4111-8111-111111111111", "byte_size": 5 * 1024 ** 3,
             "tags": {}, "ttl": 0, "created_at": now - 3 * 86400,
             "retired_at": now - 3 * 3600, "updated_at": now - 3 * 3600,
             "image": "x.example/old:1", "architecture": "amd64"},
            {"id": "22222222-2222-4222-8222-222222222222", "byte_size": 1536,
             "tags": {"zone": "eu", "app": "web", "owner": "team-with-a-rather-long-name"},
             "ttl": 86400, "created_at": now - 420, "retired_at": 0, "updated_at": now - 420,
             "image": "x.example/new:1", "architecture": "arm64"},
        ]
        state = os.path.join(self.tmp, "simstate")
        os.makedirs(state)
        with open(os.path.join(state, "state.json"), "w") as f:
            json.dump({"snapshots": snaps, "aliases": []}, f)
        return state

    def test_cli_table_in_a_pipe(self):
        state = self.write_state(time.time())
        self.start("--state-dir", state)
        self.create(3, tags={"k": "v"})
        marker_pager = "sed 's/^/PAGED:/'"
        r = self.cli("snapshots", "list", "--limit", "4", PAGER=marker_pager)
        self.assertEqual(r.returncode, 0, r.stderr)
        lines = r.stdout.splitlines()
        self.assertNotIn("PAGED:", r.stdout)  # no pager in a pipe
        self.assertEqual(re.split(r"\s{2,}", lines[0]),
                         ["ID", "SIZE", "MEMORY", "RETIRED", "AGE", "TAGS"])
        self.assertEqual(len(lines), 5)  # one page only
        rows = [re.split(r"\s{2,}", l) for l in lines[1:]]
        self.assertEqual(rows[3], ["22222222-2222-4222-8222-222222222222", "1.5 KiB", "no",
                                   "-", "7 mins ago",
                                   "app=web, owner=team-with-a-rather-long-name, zone=eu"])
        self.assertEqual([r[2:6] for r in rows[:3]], [["no", "-", "just now", "k=v"]] * 3)
        # The next page of the same list: the filters again, and the cursor.
        self.assertIn("more: snapbuild snapshots list --limit 4 --cursor 22222222-", r.stderr)
        r = self.cli("snapshots", "list", "--cursor", "22222222-2222-4222-8222-222222222222")
        self.assertEqual(re.split(r"\s{2,}", r.stdout.splitlines()[1]),
                         ["11111111-1111-4111-8111-111111111111", "5.0 GiB", "no",
                          "3 hours ago", "3 days ago", "-"])
        self.assertNotIn("…", r.stdout)
        r = self.cli("snapshots", "get", "22222222-2222-4222-8222-222222222222")
        self.assertEqual(r.returncode, 0, r.stderr)
        for section in ("Identity", "Storage", "Retention", "Lifecycle"):
            self.assertIn("\n%s\n" % section, r.stdout)
        self.assertRegex(r.stdout, r"size:\s+1.5 KiB \(1536 bytes\)")
        self.assertRegex(r.stdout, r"ttl:\s+86400 s \(1d 0h\): retired automatically at")
        self.assertRegex(r.stdout, r"created:\s+\S+ \S+ \S+ \(7 mins ago\)")
        self.assertRegex(r.stdout, r"status:\s+active")
        r = self.cli("snapshots", "get", "11111111-1111-4111-8111-111111111111")
        self.assertRegex(r.stdout, r"retired:\s+\S+ \S+ \S+ \(3 hours ago\)")
        self.assertRegex(r.stdout, r"status:\s+retired 3 hours ago")
        self.assertRegex(r.stdout, r"ttl:\s+none")

    def test_cli_table_on_a_terminal_pages_everything_through_the_pager(self):
        state = self.write_state(time.time())
        self.start("--state-dir", state)
        long_tags = {"description": "x" * 60, "a": "1"}
        made = self.create(5, tags=lambda i: long_tags if i == 2 else {"n": str(i)})
        env = clean_env(PAGER="echo \"LESS=$LESS\"; sed 's/^/PAGED:/'")
        env.pop("LESS", None)
        rc, out, err = run_pty([CLI, "--socket", self.d.socket, "snapshots", "list",
                                "--page-size", "3"], env, cols=120)
        self.assertEqual(rc, 0, err)
        lines = out.splitlines()
        self.assertEqual(lines[0], "LESS=FRX")  # less gets -F -R -X unless LESS is set
        self.assertTrue(all(l.startswith("PAGED:") for l in lines[1:]), out)
        table = [l[len("PAGED:"):] for l in lines[1:]]
        self.assertEqual(sum(1 for l in table if l.startswith("ID ")), 1)
        ids = [l.split()[0] for l in table[1:]]
        expected = [s["id"] for s in reversed(made)] + ["22222222-2222-4222-8222-222222222222",
                                                        "11111111-1111-4111-8111-111111111111"]
        self.assertEqual(ids, expected)  # all three pages
        self.assertEqual(len(self.sim_requests("GET", "/v1/snapshots")), 3)
        # pages line up: TAGS starts in the same column on every line
        col = table[0].index("TAGS")
        self.assertTrue(all(l[col - 2:col] == "  " and l[col] != " " for l in table), table)
        # cut to the terminal's width, with an ellipsis
        self.assertTrue(all(len(l) <= 120 for l in table), table)
        long_row = table[1 + ids.index(made[2]["id"])]
        self.assertTrue(long_row.endswith("…"), long_row)
        self.assertEqual(len(long_row), 120)
        full = "a=1, description=" + "x" * 60
        self.assertTrue(full.startswith(long_row[col:-1]))
        # in a pipe nothing is cut
        r = self.cli("snapshots", "list", "--limit", "3")
        self.assertIn(full, r.stdout)

    def test_quitting_the_pager_stops_fetching(self):
        self.start("--latency-ms", "300")
        self.create(6)
        env = clean_env(PAGER="exit 0")
        rc, out, err = run_pty([CLI, "--socket", self.d.socket, "snapshots", "list",
                                "--limit", "1"], env)
        self.assertEqual(rc, 0, err)
        self.assertLess(len(self.sim_requests("GET", "/v1/snapshots")), 6)

    def test_cli_usage(self):
        self.start()
        r = self.cli("snapshots")
        self.assertEqual(r.returncode, 2)
        for sub in ("list", "get", "alias", "unalias", "retire"):
            self.assertIn("  " + sub + " ", r.stderr)
        r = self.cli("snapshot", "help", "list")
        self.assertEqual(r.returncode, 0)
        self.assertIn("--exclude-retired", r.stdout)
        r = self.cli("snapshots", "--help")
        self.assertEqual(r.returncode, 0)
        self.assertIn("snapshots help", r.stdout)
        for args in (("list", "--limit", "0"), ("list", "--limit", "x"), ("list", "--tag", "novalue"),
                     ("list", "extra"), ("get",), ("alias", "x"), ("retire", "a", "b"),
                     ("frobnicate",)):
            r = self.cli("snapshots", *args)
            self.assertEqual(r.returncode, 2, args)
        self.assertEqual(self.sim_requests("GET", "/v1/"), [])

    # --- jobs link to their snapshot ------------------------------------------------

    def test_inspect_shows_the_snapshot_live(self):
        d = self.start()
        job = self.result("build.submit", {"image": "docker.io/library/alpine:3.20"})
        job = wait_job(d, job["id"])
        self.assertEqual(job["state"], "succeeded", job)
        r = self.cli("inspect", job["id"])
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn("Snapshot %s (live)" % job["snapshot_id"], r.stdout)
        self.assertRegex(r.stdout, r"status:\s+active")
        self.result("snapshot.retire", {"id": job["snapshot_id"]})
        self.assertRegex(self.cli("inspect", job["id"]).stdout, r"status:\s+retired")
        self.sim.faults(request_fail=[{"method": "GET", "path": "/v1/snapshots/",
                                       "status": 403, "count": 1}])
        r = self.cli("inspect", job["id"])
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn("Job " + job["id"], r.stdout)
        self.assertRegex(r.stdout, r"Snapshot details could not be fetched: .+ — .*scope")
        r = self.cli("inspect", job["id"], "-o", "json")
        self.assertEqual(json.loads(r.stdout)["snapshot_id"], job["snapshot_id"])

    # --- rights ------------------------------------------------------------------------

    @unittest.skipUnless(os.geteuid() == 0, "connecting as other users needs root")
    def test_only_owners_and_admins_change_snapshots(self):
        os.chmod(self.tmp, 0o755)
        pub = os.path.join(self.tmp, "pub")
        os.mkdir(pub, 0o755)
        d = self.start(config="socket_mode = 0666\n", socket_path=os.path.join(pub, "s.sock"))
        (foreign,) = self.create(1)  # not built by any job
        api_ok(self.sim, "POST", "/v1/snapshots/%s/aliases" % foreign["id"], {"alias": "shared"})

        def as_user(uid, method, params=None):
            with ConnAs(d.socket, uid) as c:
                return c.call(method, params)

        self.assertEqual(as_user(NOBODY, "daemon.info")["result"]["caller"]["uid"], NOBODY)
        job = as_user(NOBODY, "build.submit", {"image": "docker.io/library/alpine:3.20"})["result"]
        job = wait_job(d, job["id"])
        self.assertEqual(job["state"], "succeeded", job)
        self.assertEqual(job["uid"], NOBODY)
        mine = job["snapshot_id"]

        # a tag naming only a prefix of their job's id proves nothing
        (forged,) = self.create(1, tags={"snapbuild.job": job["id"][:8]})

        # anyone may read
        self.assertEqual(len(as_user(NOBODY, "snapshot.list")["result"]["data"]), 3)
        self.assertEqual(as_user(STRANGER, "snapshot.get", {"id": "@shared"})["result"]["id"],
                         foreign["id"])
        # not theirs: refused before anything changes
        denied = [
            (NOBODY, "snapshot.retire", {"id": foreign["id"]}),
            (NOBODY, "snapshot.retire", {"id": "@shared"}),
            (NOBODY, "snapshot.alias", {"id": foreign["id"], "alias": "mine"}),
            (NOBODY, "snapshot.alias", {"id": mine, "alias": "shared"}),  # moves another's
            (NOBODY, "snapshot.unalias", {"alias": "shared"}),
            (NOBODY, "snapshot.retire", {"id": forged["id"]}),
            (STRANGER, "snapshot.retire", {"id": mine}),
            (STRANGER, "snapshot.alias", {"id": mine, "alias": "x"}),
        ]
        for uid, method, params in denied:
            e = error_of(as_user(uid, method, params))
            self.assertEqual(e["code"], -32002, (uid, method, params, e))
            self.assertIn("owner of the job", e["data"]["hint"])
        self.assertEqual(self.sim_requests("POST", "/v1/snapshots/%s/retire" % foreign["id"]), [])
        self.assertEqual(self.sim_requests("DELETE", "/v1/snapshot-aliases/"), [])
        self.assertEqual(self.aliases(), {"shared": foreign["id"]})
        # their own job's snapshot: theirs to change
        self.assertEqual(as_user(NOBODY, "snapshot.alias", {"id": mine, "alias": "mine"})["result"],
                         {"snapshot_id": mine, "alias": "mine"})
        self.assertEqual(as_user(NOBODY, "snapshot.alias", {"id": "@mine", "alias": "mine"})["result"],
                         {"snapshot_id": mine, "alias": "mine"})
        self.assertEqual(as_user(NOBODY, "snapshot.unalias", {"alias": "mine"})["result"],
                         {"alias": "mine", "snapshot_id": mine})
        self.assertEqual(as_user(NOBODY, "snapshot.unalias", {"alias": "never"})["result"],
                         {"alias": "never", "snapshot_id": None})
        self.assertIsNotNone(as_user(NOBODY, "snapshot.retire", {"id": mine})["result"]["retired_at"])
        # root (the admin) may change anything
        self.assertIsNotNone(self.result("snapshot.retire", {"id": "@shared"})["retired_at"])
        self.assertEqual(self.result("snapshot.alias", {"id": mine, "alias": "shared"}),
                         {"snapshot_id": mine, "alias": "shared"})


if __name__ == "__main__":
    unittest.main()
