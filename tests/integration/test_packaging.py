"""Packaging: the Debian package, its systemd units, maintainer scripts, man pages and
bash completion.

The package is built once per run with `cpack -G DEB` from the build directory under test
(into a temporary directory), listed with `dpkg-deb -c` and unpacked with `dpkg-deb -x`;
every test then looks at what the package really ships: units that `systemd-analyze verify`
accepts with the package's own binaries and man pages, files where the units expect them,
maintainer scripts that run against a temporary root (DPKG_ROOT) and a completion that
completes. A binary that its helper has not built yet is the only thing skipped.
"""

import gzip
import json
import os
import re
import shlex
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import time
import unittest

SOURCE_DIR = os.environ.get(
    "SNAPBUILD_SOURCE_DIR",
    os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
)
BIN_DIR = os.environ.get("SNAPBUILD_BIN_DIR")
PACKAGING = os.path.join(SOURCE_DIR, "packaging")

SYSTEM_UNITS = "usr/lib/systemd/system"
USER_UNITS = "usr/lib/systemd/user"
PACKAGING_FILES = [
    f"{SYSTEM_UNITS}/snapbuildd.service",
    f"{SYSTEM_UNITS}/snapbuildd.socket",
    f"{USER_UNITS}/snapbuildd.service",
    f"{USER_UNITS}/snapbuildd.socket",
    "usr/lib/sysusers.d/snapbuild.conf",
    "usr/lib/tmpfiles.d/snapbuild.conf",
    "etc/snapbuild/snapbuildd.conf",
    "usr/share/bash-completion/completions/snapbuild",
    "usr/share/snapbuild/local-backend.conf",
]
MAN_PAGES = [  # snapbuild(3) is in libsnapbuild-dev
    "usr/share/man/man1/snapbuild.1.gz",
    "usr/share/man/man8/snapbuildd.8.gz",
    "usr/share/man/man5/snapbuildd.conf.5.gz",
    "usr/share/man/man1/snapbuild-sim.1.gz",
]
# Build-tree path -> path in the package.
BINARIES = {
    "daemon/snapbuildd": "usr/sbin/snapbuildd",
    "client/snapbuild": "usr/bin/snapbuild",
    "tests/sim/snapbuild-sim": "usr/bin/snapbuild-sim",
}
CONFIG_KEYS = [
    "api_key_file", "base_url", "builder_url", "local_build", "remote_architecture",
    "max_concurrent", "local_engine", "socket_mode", "socket_group", "admin_group",
    "idle_exit_seconds", "event_retention_days", "log_level", "socket", "state_dir", "tmp_dir",
    "local_engine_args", "local_isolation", "stall_timeout_seconds", "max_context_bytes",
    "max_connections_per_user", "ca_file", "proxy", "no_proxy", "max_queued_per_user",
    "max_spool_bytes_per_user", "max_log_bytes", "metrics_listen", "reuse_max_age",
    "default_cache_key",
]

WORK = None  # temporary directory of this run
DEB = None  # the package
DEV_DEB = None  # libsnapbuild-dev
DEV_CONTENTS = None  # its paths, as CONTENTS
ROOT = None  # the package unpacked
CONTROL = None  # its control files
CONTENTS = None  # paths listed by dpkg-deb -c, without the leading "./"


def run(args, **kwargs):
    kwargs.setdefault("stdout", subprocess.PIPE)
    kwargs.setdefault("stderr", subprocess.PIPE)
    kwargs.setdefault("text", True)
    kwargs.setdefault("timeout", 300)
    return subprocess.run(args, **kwargs)


def setUpModule():
    global WORK, DEB, ROOT, CONTROL, CONTENTS, DEV_DEB, DEV_CONTENTS
    if not BIN_DIR:
        raise unittest.SkipTest("SNAPBUILD_BIN_DIR is not set (run through ctest)")
    for tool in ("cpack", "dpkg-deb"):
        if not shutil.which(tool):
            raise unittest.SkipTest(f"{tool} is not installed")
    WORK = tempfile.mkdtemp(prefix="snapbuild-packaging-")
    out = os.path.join(WORK, "package")
    r = run(["cpack", "-G", "DEB", "--config", os.path.join(BIN_DIR, "CPackConfig.cmake"),
             "-B", out])
    if r.returncode != 0:
        shutil.rmtree(WORK)
        raise AssertionError(f"cpack failed:\n{r.stdout}\n{r.stderr}")
    debs = sorted(f for f in os.listdir(out) if f.endswith(".deb"))
    assert [d.split("_")[0] for d in debs] == ["libsnapbuild-dev", "snapbuild"], debs
    DEV_DEB, DEB = (os.path.join(out, d) for d in debs)
    CONTENTS = deb_contents(DEB)
    DEV_CONTENTS = deb_contents(DEV_DEB)
    ROOT = os.path.join(WORK, "root")
    CONTROL = os.path.join(WORK, "control")
    run(["dpkg-deb", "-x", DEB, ROOT], check=True)
    run(["dpkg-deb", "-e", DEB, CONTROL], check=True)


def deb_contents(deb):
    """Paths listed by dpkg-deb -c, without the leading "./"."""
    r = run(["dpkg-deb", "-c", deb], check=True)
    contents = set()
    for line in r.stdout.splitlines():
        path = line.split(None, 5)[5].split(" -> ")[0]
        contents.add(path[2:].rstrip("/") if path.startswith("./") else path)
    return contents


def tearDownModule():
    if WORK:
        shutil.rmtree(WORK, ignore_errors=True)


def read_unit(path):
    """(section, key, value) for each assignment, in order; keys may repeat."""
    entries, section = [], None
    with open(path) as f:
        for line in f:
            line = line.strip()
            if not line or line[0] in "#;":
                continue
            if line.startswith("["):
                section = line.strip("[]")
                continue
            key, _, value = line.partition("=")
            entries.append((section, key.strip(), value.strip()))
    return entries


def unit_value(entries, key, section=None):
    values = [v for s, k, v in entries if k == key and (section is None or s == section)]
    return values[-1] if values else None


def built(rel):
    path = os.path.join(BIN_DIR, rel)
    return path if os.access(path, os.X_OK) else None


def in_root(path):
    return os.path.join(ROOT, path.lstrip("/"))


class PackageContents(unittest.TestCase):
    def test_packaging_files_are_in_the_package(self):
        for path in PACKAGING_FILES:
            with self.subTest(path=path):
                self.assertIn(path, CONTENTS)
                self.assertTrue(os.path.isfile(in_root(path)))

    def test_man_pages_are_in_the_package(self):
        if not shutil.which("scdoc"):
            self.skipTest("scdoc is not installed, so no man page was built")
        for path in MAN_PAGES:
            with self.subTest(path=path):
                self.assertIn(path, CONTENTS)
                with gzip.open(in_root(path), "rt") as f:
                    page = f.read()
                name, section = re.match(r".*/([^/]+)\.(\d)\.gz$", path).groups()
                self.assertRegex(page, rf'\.TH "{re.escape(name)}" "{section}"')
                self.assertIn(".SH NAME", page)

    def test_built_binaries_are_in_the_package(self):
        for rel, packaged in BINARIES.items():
            with self.subTest(binary=packaged):
                if not built(rel):
                    self.skipTest(f"{rel} is not built yet")
                self.assertIn(packaged, CONTENTS, f"no install() rule puts {rel} in {packaged}")
                mode = os.stat(in_root(packaged)).st_mode
                self.assertTrue(mode & stat.S_IXOTH, oct(mode))

    def test_no_build_tree_paths_leak_into_the_package(self):
        for path in PACKAGING_FILES:
            with self.subTest(path=path):
                with open(in_root(path)) as f:
                    text = f.read()
                self.assertNotIn(BIN_DIR, text)
                self.assertNotIn(SOURCE_DIR, text)
                self.assertNotRegex(text, r"@[A-Z_]+@", "a configure_file() variable is left")
        for path in CONTENTS:
            self.assertFalse(path.startswith("usr/local"), path)

    def test_package_metadata(self):
        r = run(["dpkg-deb", "-f", DEB, "Package", "Architecture", "Depends", "Recommends"],
                check=True)
        fields = dict(line.split(": ", 1) for line in r.stdout.splitlines() if ": " in line)
        self.assertEqual(fields["Package"], "snapbuild")
        self.assertNotEqual(fields["Architecture"], "all")
        self.assertIn("systemd", fields.get("Recommends", ""))
        if built("daemon/snapbuildd"):
            # From dpkg-shlibdeps, or the list written for systems without it.
            self.assertIn("libc6", fields.get("Depends", ""))

    def test_library_is_in_the_package_and_its_ldconfig_trigger(self):
        libs = sorted(p for p in CONTENTS if os.path.basename(p).startswith("libsnapbuild.so"))
        self.assertEqual([os.path.basename(p) for p in libs],
                         ["libsnapbuild.so.0.1.0", "libsnapbuild.so.1"])
        self.assertTrue(os.path.islink(in_root(libs[1])))
        with open(os.path.join(CONTROL, "shlibs")) as f:
            self.assertEqual(f.read().split(), ["libsnapbuild", "1", "snapbuild", "(=", "0.1.0)"])
        with open(os.path.join(CONTROL, "triggers")) as f:
            self.assertIn("activate-noawait ldconfig", f.read())

    def test_python_module_is_in_the_package_for_the_system_python(self):
        self.assertIn("usr/lib/python3/dist-packages/snapbuild/__init__.py", CONTENTS)
        self.assertFalse([p for p in CONTENTS if "__pycache__" in p])
        site = in_root("usr/lib/python3/dist-packages")
        r = run([sys.executable, "-B", "-c", "import snapbuild; print(snapbuild.__file__)"],
                env=dict(os.environ, PYTHONPATH=site), cwd="/")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(r.stdout.strip(), os.path.join(site, "snapbuild", "__init__.py"))


class DevPackage(unittest.TestCase):
    """libsnapbuild-dev: what a C program needs to build against libsnapbuild."""

    def test_contents(self):
        lib = next(p for p in CONTENTS if p.endswith("/libsnapbuild.so.1"))
        libdir = os.path.dirname(lib)
        for path in ("usr/include/snapbuild.h", f"{libdir}/libsnapbuild.so",
                     f"{libdir}/pkgconfig/snapbuild.pc", "usr/share/man/man3/snapbuild.3.gz"):
            with self.subTest(path=path):
                self.assertIn(path, DEV_CONTENTS)
        # Nothing of the main package twice (dpkg would refuse to install both).
        self.assertEqual(DEV_CONTENTS & CONTENTS - {"usr", "usr/lib", "usr/share",
                                                    "usr/share/man", "usr/include"}, set())

    def test_metadata_and_no_maintainer_scripts(self):
        r = run(["dpkg-deb", "-f", DEV_DEB, "Package", "Depends", "Section"], check=True)
        fields = dict(line.split(": ", 1) for line in r.stdout.splitlines() if ": " in line)
        self.assertEqual(fields["Package"], "libsnapbuild-dev")
        self.assertEqual(fields["Depends"], "snapbuild (= 0.1.0)")
        self.assertEqual(fields["Section"], "libdevel")
        r = run(["dpkg-deb", "--ctrl-tarfile", DEV_DEB], stdout=subprocess.PIPE, text=False)
        names = run(["tar", "t"], input=r.stdout, text=False).stdout.decode().split()
        self.assertEqual(sorted(names), ["./control", "./md5sums"])

    def test_pkg_config_file_resolves_inside_the_package(self):
        root = tempfile.mkdtemp(dir=WORK)
        run(["dpkg-deb", "-x", DEB, root], check=True)
        run(["dpkg-deb", "-x", DEV_DEB, root], check=True)
        pc = next(p for p in DEV_CONTENTS if p.endswith("snapbuild.pc"))
        env = dict(os.environ, PKG_CONFIG_PATH=os.path.dirname(os.path.join(root, pc)))
        r = run(["pkg-config", "--cflags", "--libs", "snapbuild"], env=env)
        self.assertEqual(r.returncode, 0, r.stderr)
        inc = [f[2:] for f in r.stdout.split() if f.startswith("-I")][0]
        libdir = [f[2:] for f in r.stdout.split() if f.startswith("-L")][0]
        self.assertTrue(os.path.isfile(os.path.join(inc, "snapbuild.h")))
        self.assertTrue(os.path.isfile(os.path.join(libdir, "libsnapbuild.so")))


class UnitsFindTheirFiles(unittest.TestCase):
    """Every path the units name is in the package, or made by its sysusers/tmpfiles."""

    @classmethod
    def setUpClass(cls):
        cls.service = read_unit(in_root(f"{SYSTEM_UNITS}/snapbuildd.service"))
        cls.socket = read_unit(in_root(f"{SYSTEM_UNITS}/snapbuildd.socket"))
        cls.user_service = read_unit(in_root(f"{USER_UNITS}/snapbuildd.service"))
        cls.user_socket = read_unit(in_root(f"{USER_UNITS}/snapbuildd.socket"))
        with open(in_root("usr/lib/sysusers.d/snapbuild.conf")) as f:
            cls.sysusers = [shlex.split(line) for line in f if line.strip() and line[0] != "#"]
        with open(in_root("usr/lib/tmpfiles.d/snapbuild.conf")) as f:
            cls.tmpfiles = [line.split() for line in f if line.strip() and line[0] != "#"]

    def test_exec_start_binary_is_packaged(self):
        for name, unit in (("system", self.service), ("user", self.user_service)):
            with self.subTest(unit=name):
                argv = unit_value(unit, "ExecStart").split()
                self.assertEqual(argv[0], "/usr/sbin/snapbuildd")
                if not built("daemon/snapbuildd"):
                    self.skipTest("daemon/snapbuildd is not built yet")
                self.assertTrue(os.access(in_root(argv[0]), os.X_OK), argv[0])

    def test_config_and_state_paths(self):
        argv = unit_value(self.service, "ExecStart").split()
        config = argv[argv.index("--config") + 1]
        self.assertTrue(os.path.isfile(in_root(config)), config)
        self.assertIn(config.lstrip("/"), CONTENTS)
        state = argv[argv.index("--state-dir") + 1]
        self.assertEqual(state, "/var/lib/" + unit_value(self.service, "StateDirectory"))

    def test_user_and_groups_come_from_sysusers(self):
        users = {fields[1] for fields in self.sysusers if fields[0] == "u"}
        groups = users | {fields[1] for fields in self.sysusers if fields[0] == "g"}
        self.assertIn(unit_value(self.service, "User"), users)
        self.assertIn(unit_value(self.service, "Group"), groups)
        self.assertIn(unit_value(self.socket, "SocketGroup"), groups)
        home = [fields[4] for fields in self.sysusers if fields[0] == "u"][0]
        self.assertEqual(home, "/var/lib/" + unit_value(self.service, "StateDirectory"))

    def test_credential_directory_comes_from_tmpfiles(self):
        credential = unit_value(self.service, "LoadCredential")
        name, _, path = credential.partition(":")
        self.assertEqual(name, "api-key")
        created = {fields[1]: fields for fields in self.tmpfiles if fields[0] == "d"}
        directory = os.path.dirname(path)
        self.assertIn(directory, created)
        _, _, mode, owner, group = created[directory][:5]
        self.assertEqual((mode, owner, group),
                         ("0750", "root", unit_value(self.service, "Group")))

    def test_the_daemon_defaults_to_the_packaged_configuration(self):
        """One name everywhere: the file the unit passes is the daemon's own default."""
        argv = unit_value(self.service, "ExecStart").split()
        config = argv[argv.index("--config") + 1]
        self.assertEqual(config, "/etc/snapbuild/snapbuildd.conf")
        daemon = built("daemon/snapbuildd")
        if not daemon:
            self.skipTest("daemon/snapbuildd is not built yet")
        r = run([daemon, "--help"], timeout=30)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn(config, r.stdout)
        self.assertIn("$XDG_CONFIG_HOME/snapbuild/snapbuildd.conf", r.stdout)

    def test_missing_key_file_does_not_stop_the_service(self):
        """SetCredential= is the default systemd uses when LoadCredential='s file is
        missing (systemd.exec(5)); it must be a non-empty value (systemd refuses an empty
        one) that the daemon takes as no key, so it starts and says how to give one."""
        loads = [v for s, k, v in self.service if k == "LoadCredential" and v]
        sets = [v for s, k, v in self.service if k == "SetCredential"]
        self.assertEqual([v.partition(":")[0] for v in loads], ["api-key"])
        self.assertEqual(len(sets), 1, sets)
        name, _, raw = sets[0].partition(":")
        self.assertEqual(name, "api-key")
        self.assertNotEqual(raw, "")
        value = raw.encode().decode("unicode_escape")
        self.assertEqual(value.strip(), "", "the fallback credential must be blank")

        daemon = built("daemon/snapbuildd")
        if not daemon:
            self.skipTest("daemon/snapbuildd is not built yet")
        work = tempfile.mkdtemp(dir=WORK)
        creds = os.path.join(work, "credentials")
        os.makedirs(creds)
        with open(os.path.join(creds, "api-key"), "w") as f:
            f.write(value)
        sock = os.path.join(work, "s.sock")
        env = {k: v for k, v in os.environ.items()
               if not k.startswith(("TOGETHER_", "SNAPBUILD_", "LISTEN_", "NOTIFY_SOCKET",
                                    "WATCHDOG_"))}
        env["CREDENTIALS_DIRECTORY"] = creds
        config = os.path.join(work, "empty.conf")
        open(config, "w").close()
        proc = subprocess.Popen([daemon, "--config", config, "--socket", sock,
                                 "--state-dir", os.path.join(work, "state")],
                                env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                text=True)
        try:
            answers = self.rpc_when_listening(proc, sock, ["daemon.info", "snapshot.list"])
        finally:
            proc.send_signal(signal.SIGTERM)
            try:
                _, log = proc.communicate(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                _, log = proc.communicate()
        self.assertEqual(proc.returncode, 0, log)
        self.assertFalse(answers[0]["result"]["api_key_configured"])
        error = answers[1]["error"]
        self.assertIn("no API key", error["message"])
        self.assertIn("/etc/snapbuild/api-key", error["data"]["hint"])
        self.assertIn("no API key configured", log)

    def rpc_when_listening(self, proc, sock, methods):
        deadline = time.monotonic() + 30
        while True:
            if proc.poll() is not None:
                self.fail("the daemon exited: " + proc.stderr.read())
            try:
                c = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                c.connect(sock)
                break
            except OSError:
                c.close()
                self.assertLess(time.monotonic(), deadline, "the daemon never listened")
                time.sleep(0.05)
        answers = []
        with c, c.makefile("rwb") as f:
            for i, method in enumerate(methods, 1):
                f.write(json.dumps({"jsonrpc": "2.0", "id": i, "method": method}).encode()
                        + b"\n")
                f.flush()
                while True:
                    msg = json.loads(f.readline())
                    if msg.get("id") == i:
                        answers.append(msg)
                        break
        return answers

    def test_socket_lives_in_the_preserved_runtime_directory(self):
        for name, service, socket, prefix in (
            ("system", self.service, self.socket, "/run/"),
            ("user", self.user_service, self.user_socket, "%t/"),
        ):
            with self.subTest(unit=name):
                listen = unit_value(socket, "ListenStream")
                runtime = unit_value(service, "RuntimeDirectory")
                self.assertEqual(os.path.dirname(listen), prefix + runtime)
                # The daemon exits when idle; the socket must survive it.
                self.assertEqual(unit_value(service, "RuntimeDirectoryPreserve"), "yes")
                self.assertEqual(unit_value(service, "Type"), "notify")
        self.assertEqual(unit_value(self.socket, "SocketMode"), "0660")
        self.assertEqual(unit_value(self.user_socket, "SocketMode"), "0600")

    def test_documentation_pages_are_packaged(self):
        if not shutil.which("scdoc"):
            self.skipTest("scdoc is not installed, so no man page was built")
        for unit in (self.service, self.socket, self.user_service, self.user_socket):
            for ref in unit_value(unit, "Documentation").split():
                with self.subTest(ref=ref):
                    name, section = re.fullmatch(r"man:([\w.-]+)\((\d)\)", ref).groups()
                    path = f"usr/share/man/man{section}/{name}.{section}.gz"
                    if name.startswith("snapbuild"):
                        self.assertIn(path, CONTENTS)

    def test_local_backend_drop_in_is_where_the_texts_say(self):
        path = "usr/share/snapbuild/local-backend.conf"
        for text_path in (f"{SYSTEM_UNITS}/snapbuildd.service", "etc/snapbuild/snapbuildd.conf"):
            with self.subTest(file=text_path), open(in_root(text_path)) as f:
                self.assertIn("/" + path, f.read())


def fake_executable(path):
    with open(path, "w") as f:
        f.write("#!/bin/sh\nexit 0\n")
    os.chmod(path, 0o755)


class SystemdAnalyze(unittest.TestCase):
    """systemd-analyze on copies of the packaged units whose ExecStart= names the
    unpacked binary (systemd-analyze checks it is executable) and with MANPATH on the
    package's man pages (it checks every Documentation= page)."""

    @classmethod
    def setUpClass(cls):
        if not shutil.which("systemd-analyze"):
            raise unittest.SkipTest("systemd-analyze is not installed (package systemd)")
        cls.dir = tempfile.mkdtemp(dir=WORK)
        daemon = in_root("usr/sbin/snapbuildd")
        if not os.access(daemon, os.X_OK):
            daemon = built("daemon/snapbuildd")
        if not daemon:
            # Not built yet: the units are still checked, against a stand-in.
            daemon = os.path.join(cls.dir, "snapbuildd")
            fake_executable(daemon)
        cls.env = dict(os.environ, MANPATH=in_root("usr/share/man"), SYSTEMD_LOG_LEVEL="info")
        cls.man = [] if shutil.which("scdoc") and shutil.which("man") else ["--man=no"]
        for kind, src in (("system", SYSTEM_UNITS), ("user", USER_UNITS)):
            os.makedirs(os.path.join(cls.dir, kind))
            for name in ("snapbuildd.service", "snapbuildd.socket"):
                with open(in_root(f"{src}/{name}")) as f:
                    text = f.read()
                text = text.replace("ExecStart=/usr/sbin/snapbuildd", "ExecStart=" + daemon)
                with open(os.path.join(cls.dir, kind, name), "w") as f:
                    f.write(text)

    def unit(self, kind, name):
        return os.path.join(self.dir, kind, name)

    def verify(self, *args, env=None):
        r = run(["systemd-analyze", *args], env=env or self.env)
        # verify exits 0 on unknown keys and bad values: any message is a failure.
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(r.stderr.strip(), "")
        return r

    def test_verify_system_units(self):
        self.verify("verify", *self.man, self.unit("system", "snapbuildd.service"),
                    self.unit("system", "snapbuildd.socket"))

    def test_verify_user_units(self):
        runtime = tempfile.mkdtemp(dir=self.dir)
        env = dict(self.env, XDG_RUNTIME_DIR=runtime)
        self.verify("--user", "verify", *self.man, self.unit("user", "snapbuildd.service"),
                    self.unit("user", "snapbuildd.socket"), env=env)

    def local_backend_unit(self):
        """The system service with the local-backend drop-in, every option of it on."""
        unit_dir = os.path.join(self.dir, "local")
        os.makedirs(os.path.join(unit_dir, "snapbuildd.service.d"), exist_ok=True)
        for name in ("snapbuildd.service", "snapbuildd.socket"):
            shutil.copy(self.unit("system", name), unit_dir)
        with open(in_root("usr/share/snapbuild/local-backend.conf")) as f:
            text = re.sub(r"(?m)^#([A-Z]\w*=)", r"\1", f.read())
        with open(os.path.join(unit_dir, "snapbuildd.service.d", "local-backend.conf"),
                  "w") as f:
            f.write(text)
        return os.path.join(unit_dir, "snapbuildd.service")

    def test_verify_local_backend_drop_in(self):
        service = self.local_backend_unit()
        self.verify("verify", *self.man, service)
        # The drop-in is read: with it the engines' needs are granted.
        r = self.verify("security", "--offline=yes", service)
        self.assertRegex(r.stdout, r"✗ NoNewPrivileges=")

    def test_security_exposure_is_ok(self):
        r = run(["systemd-analyze", "security", "--offline=yes", "--threshold=20",
                 self.unit("system", "snapbuildd.service")], env=self.env)
        m = re.search(r"Overall exposure level for snapbuildd\.service: (\d+\.\d) (\w+)",
                      r.stdout)
        self.assertIsNotNone(m, r.stdout + r.stderr)
        print(f"\nsystemd-analyze security: {m.group(1)} {m.group(2)}", file=sys.stderr)
        self.assertLessEqual(float(m.group(1)), 2.0, r.stdout)
        self.assertEqual(m.group(2), "OK")
        self.assertEqual(r.returncode, 0, r.stderr)


class MaintainerScripts(unittest.TestCase):
    def test_scripts_parse_and_are_executable(self):
        for name in ("postinst", "prerm", "postrm"):
            with self.subTest(script=name):
                path = os.path.join(CONTROL, name)
                with open(path) as f:
                    self.assertEqual(f.readline().strip(), "#!/bin/sh")
                self.assertEqual(stat.S_IMODE(os.stat(path).st_mode), 0o755)
                r = run(["sh", "-n", path])
                self.assertEqual(r.returncode, 0, r.stderr)

    def test_configuration_is_a_conffile(self):
        with open(os.path.join(CONTROL, "conffiles")) as f:
            conffiles = f.read().split()
        self.assertEqual(conffiles, ["/etc/snapbuild/snapbuildd.conf"])
        for path in conffiles:
            self.assertIn(path.lstrip("/"), CONTENTS)

    def test_install_upgrade_remove_purge_in_a_dpkg_root(self):
        """The scripts, run as dpkg --root would run them: they create the user and
        /etc/snapbuild, enable the socket and nothing else, and clean up on purge."""
        if os.geteuid() != 0:
            self.skipTest("systemd-tmpfiles --root needs root to chown /etc/snapbuild")
        for tool in ("systemd-sysusers", "systemd-tmpfiles", "deb-systemd-helper"):
            if not shutil.which(tool):
                self.skipTest(f"{tool} is not installed")
        root = tempfile.mkdtemp(dir=WORK)
        run(["dpkg-deb", "-x", DEB, root], check=True)
        os.makedirs(os.path.join(root, "etc"), exist_ok=True)
        for name in ("passwd", "group", "shadow", "gshadow"):
            if os.path.exists(f"/etc/{name}"):
                shutil.copy(f"/etc/{name}", os.path.join(root, "etc", name))
        # What dpkg --root sets for maintainer scripts (deb-systemd-helper insists).
        env = dict(os.environ, DPKG_ROOT=root, DPKG_MAINTSCRIPT_PACKAGE="snapbuild")

        def script(name, *args):
            r = run(["sh", "-e", os.path.join(CONTROL, name), *args], env=env)
            self.assertEqual(r.returncode, 0, f"{name} {args}: {r.stdout}{r.stderr}")

        script("postinst", "configure")
        passwd = self.entries(root, "passwd", "snapbuild")
        self.assertEqual(len(passwd), 1)
        self.assertEqual(passwd[0][5], "/var/lib/snapbuild")
        group = self.entries(root, "group", "snapbuild")
        self.assertEqual(len(group), 1)
        etc = os.stat(os.path.join(root, "etc/snapbuild"))
        self.assertEqual(stat.S_IMODE(etc.st_mode), 0o750)
        self.assertEqual((etc.st_uid, etc.st_gid), (0, int(group[0][2])))

        wants = os.path.join(root, "etc/systemd/system/sockets.target.wants/snapbuildd.socket")
        self.assertEqual(os.readlink(wants), "/usr/lib/systemd/system/snapbuildd.socket")
        # Nothing pulls the service in: only a connection to the socket starts it.
        for dirpath, _, files in os.walk(os.path.join(root, "etc/systemd/system")):
            self.assertNotIn("snapbuildd.service", files, dirpath)

        # An upgrade: same user, still enabled.
        script("postinst", "configure", "0.0.1")
        self.assertEqual(len(self.entries(root, "passwd", "snapbuild")), 1)
        self.assertTrue(os.path.islink(wants))

        # An administrator who disabled the socket keeps it disabled across upgrades.
        run(["deb-systemd-helper", "disable", "snapbuildd.socket"], env=env, check=True)
        script("postinst", "configure", "0.0.2")
        self.assertFalse(os.path.lexists(wants))
        run(["deb-systemd-helper", "enable", "snapbuildd.socket"], env=env, check=True)

        # Removal, then purge (dpkg removes the conffile before postrm purge).
        state = os.path.join(root, "var/lib/snapbuild")
        os.makedirs(os.path.join(state, "spool"))
        with open(os.path.join(state, "jobs.db"), "w") as f:
            f.write("state")
        with open(os.path.join(root, "etc/snapbuild/api-key"), "w") as f:
            f.write("secret")
        script("prerm", "remove")
        script("postrm", "remove")
        self.assertTrue(os.path.isdir(state))
        os.unlink(os.path.join(root, "etc/snapbuild/snapbuildd.conf"))
        script("postrm", "purge")
        self.assertFalse(os.path.exists(state))
        self.assertFalse(os.path.lexists(wants))
        self.assertFalse(os.path.lexists(os.path.join(root, "etc/systemd/system/snapbuildd.socket")),
                         "the socket is still masked after purge")
        # The key is the administrator's, not the package's.
        self.assertTrue(os.path.isfile(os.path.join(root, "etc/snapbuild/api-key")))

    @staticmethod
    def entries(root, db, name):
        with open(os.path.join(root, "etc", db)) as f:
            return [line.rstrip("\n").split(":") for line in f if line.split(":")[0] == name]


class Configuration(unittest.TestCase):
    def setUp(self):
        with open(in_root("etc/snapbuild/snapbuildd.conf")) as f:
            self.lines = f.read().splitlines()

    def test_every_key_is_there_commented_out(self):
        commented = {m.group(1) for m in
                     (re.match(r"#(\w+) =", line) for line in self.lines) if m}
        self.assertEqual(commented, set(CONFIG_KEYS))
        active = [line for line in self.lines if line.strip() and not line.startswith("#")]
        self.assertEqual(active, [], "the default configuration sets nothing")

    def test_every_key_is_explained_in_the_file_and_the_man_page(self):
        with open(os.path.join(PACKAGING, "man", "snapbuildd.conf.5.scd")) as f:
            page = f.read()
        for key in CONFIG_KEYS:
            with self.subTest(key=key):
                i = next(i for i, line in enumerate(self.lines) if line.startswith(f"#{key} ="))
                while re.match(r"#\w+ =", self.lines[i - 1]):  # keys explained together
                    i -= 1
                self.assertTrue(self.lines[i - 1].startswith("# "), "no explanation above it")
                self.assertRegex(page, rf"(?m)^\*{key}\* =")


    def test_the_daemon_accepts_every_value_shown(self):
        """Each commented key, set to the value the file shows, is accepted by the
        daemon, which then starts; an unknown key is refused (the check can fail)."""
        daemon = built("daemon/snapbuildd")
        if not daemon:
            self.skipTest("daemon/snapbuildd is not built yet")
        work = tempfile.mkdtemp(dir=WORK)
        shown = [line[1:] for line in self.lines if re.match(r"#\w+ = \S", line)]
        self.assertGreater(len(shown), 5)
        # The socket and state directory of this run, not the system's.
        shown = [line for line in shown if not line.startswith(("socket ", "state_dir "))]
        good = os.path.join(work, "good.conf")
        with open(good, "w") as f:
            f.write("\n".join(shown) + "\n")
        bad = os.path.join(work, "bad.conf")
        with open(bad, "w") as f:
            f.write("no_such_key = 1\n")
        env = {k: v for k, v in os.environ.items()
               if not k.startswith(("TOGETHER_", "SNAPBUILD_", "LISTEN_", "NOTIFY_SOCKET",
                                    "CREDENTIALS_DIRECTORY", "WATCHDOG_"))}

        def start(config, name):
            sock = os.path.join(work, name + ".sock")
            proc = subprocess.Popen(
                [daemon, "--config", config, "--socket", sock,
                 "--state-dir", os.path.join(work, name + "-state")],
                env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
            return proc, sock

        proc, _ = start(bad, "bad")
        try:
            _, err = proc.communicate(timeout=30)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        self.assertNotEqual(proc.returncode, 0)
        self.assertIn("no_such_key", err)

        proc, sock = start(good, "good")
        try:
            deadline = time.monotonic() + 30
            while True:
                if proc.poll() is not None:
                    self.fail(f"the daemon refused {shown}: {proc.stderr.read()}")
                try:
                    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as c:
                        c.connect(sock)
                    break
                except OSError:
                    self.assertLess(time.monotonic(), deadline, "the daemon never listened")
                    time.sleep(0.05)
        finally:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            proc.stderr.close()


FLAG = r"(?<![\w-])(--?[a-z][\w-]*)"


class ManPagesMatchTheBinaries(unittest.TestCase):
    """Every option a built binary's own help names is documented in its man page."""

    def page(self, name):
        with open(os.path.join(PACKAGING, "man", name + ".scd")) as f:
            return f.read()

    def check_help(self, rel, args, page):
        binary = built(rel)
        if not binary:
            self.skipTest(f"{rel} is not built yet")
        r = run([binary, *args], timeout=30)
        self.assertEqual(r.returncode, 0, r.stderr)
        flags = set(re.findall(FLAG, r.stdout)) - {"-"}
        self.assertGreater(len(flags), 2, r.stdout)
        documented = set(re.findall(r"\*(--?[a-z][\w-]*)\*", self.page(page)))
        self.assertEqual(flags - documented, set(), f"options of {rel} missing in {page}")

    def test_snapbuildd(self):
        self.check_help("daemon/snapbuildd", ["--help"], "snapbuildd.8")

    def test_snapbuild_sim(self):
        self.check_help("tests/sim/snapbuild-sim", ["--help"], "snapbuild-sim.1")

    def test_snapbuild_commands_and_options(self):
        client = built("client/snapbuild")
        if not client:
            self.skipTest("client/snapbuild is not built yet")
        page = self.page("snapbuild.1")
        documented = set(re.findall(r"\*(--?[a-z][\w-]*)\*", page))
        headings = set(re.findall(r"(?m)^\*([a-z]+)\b", page))
        r = run([client, "help"], timeout=30)
        for command in re.findall(r"(?m)^  ([a-z][a-z-]*)\b", r.stdout):
            with self.subTest(command=command):
                self.assertIn(command, headings)
                usage = run([client, "help", command], timeout=30).stdout.split("\n\n")[0]
                usage = re.sub(r"\(DURATION:[^)]*\)", "", usage)
                self.assertEqual(set(re.findall(FLAG, usage)) - documented, set())
        r = run([client, "snapshots", "help"], timeout=30)
        if r.returncode == 0:
            self.assertEqual(set(re.findall(FLAG, r.stdout)) - documented, set(),
                             "snapshots options missing in snapbuild.1")


class Completion(unittest.TestCase):
    """The packaged completion, driven the way bash drives it, with a stand-in client
    that answers `jobs -o json` like the real one."""

    JOBS = '{"jobs":[{"id":"job-aaa","state":"queued","snapshot":{"id":"snap-x"}},' \
           '{"id":"job-abb","state":"building"},{"id":"zzz"}]}'

    @classmethod
    def setUpClass(cls):
        if not shutil.which("bash"):
            raise unittest.SkipTest("bash is not installed")
        cls.dir = tempfile.mkdtemp(dir=WORK)
        cls.client = os.path.join(cls.dir, "snapbuild")
        cls.calls = os.path.join(cls.dir, "calls")
        with open(cls.client, "w") as f:
            f.write(f'#!/bin/sh\necho "$*" >> {cls.calls}\n'
                    f"printf '%s\\n' '{cls.JOBS}'\n")
        os.chmod(cls.client, 0o755)
        cls.down = os.path.join(cls.dir, "down")
        with open(cls.down, "w") as f:
            f.write("#!/bin/sh\necho 'cannot connect to the daemon' >&2\nexit 69\n")
        os.chmod(cls.down, 0o755)
        cls.modes = ["plain"]
        if os.path.exists("/usr/share/bash-completion/bash_completion"):
            cls.modes.append("bash-completion")

    def complete(self, mode, *words):
        """COMPREPLY for the words, the last being the one under the cursor."""
        preamble = ""
        if mode == "bash-completion":
            preamble = "source /usr/share/bash-completion/bash_completion\n"
        line = " ".join(words)
        script = preamble + (
            f"source {in_root('usr/share/bash-completion/completions/snapbuild')}\n"
            "COMP_WORDS=(\"$@\"); COMP_CWORD=$(($# - 1))\n"
            "COMP_LINE=\"$LINE\"; COMP_POINT=${#COMP_LINE}\n"
            "_snapbuild snapbuild \"${COMP_WORDS[COMP_CWORD]}\" \"${COMP_WORDS[COMP_CWORD-1]}\"\n"
            "printf '%s\\n' \"${COMPREPLY[@]}\"\n")
        r = run(["bash", "-c", script, "bash", *words], env=dict(os.environ, LINE=line),
                cwd=self.dir, timeout=30)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(r.stderr, "")
        return sorted(x for x in r.stdout.splitlines() if x)

    def each_mode(self):
        for mode in self.modes:
            with self.subTest(mode=mode):
                yield mode

    def test_commands(self):
        commands = ["cancel", "context", "create", "daemon", "help", "inspect", "jobs", "logs",
                    "ls", "prune", "retry", "snapshot", "snapshots", "version", "wait"]
        for mode in self.each_mode():
            self.assertEqual(self.complete(mode, "snapbuild", ""), commands)
            self.assertEqual(self.complete(mode, "snapbuild", "cr"), ["create"])
            self.assertEqual(self.complete(mode, "snapbuild", "--socket", "/s", "-o", "json",
                                           "in"), ["inspect"])
            self.assertEqual(self.complete(mode, "snapbuild", "help", "sn"),
                             ["snapshot", "snapshots"])
            self.assertEqual(self.complete(mode, "snapbuild", "-o", ""), ["json", "table"])
            self.assertEqual(self.complete(mode, "snapbuild", "jobs", "-o", "t"), ["table"])
            self.assertEqual(self.complete(mode, "snapbuild", "--s"), ["--socket"])

    def test_create_flags_and_values(self):
        flags = ["--alias", "--arch", "--build-arg", "--cache-key", "--ci", "--context",
                 "--detach", "--dockerfile", "--file", "--help", "--image", "--local",
                 "--no-cache", "--progress", "--quiet", "--remote", "--tag", "--ttl", "-a", "-c",
                 "-d", "-f", "-i", "-k", "-o", "-q", "-t"]
        for mode in self.each_mode():
            self.assertEqual(self.complete(mode, "snapbuild", "create", "-"), flags)
            self.assertEqual(self.complete(mode, "snapbuild", "create", "--arch", ""),
                             ["amd64", "arm64"])
            self.assertEqual(self.complete(mode, "snapbuild", "create", "--tag", ""), [])
            self.assertEqual(self.complete(mode, "snapbuild", "create", "--progress", ""),
                             ["auto", "plain", "quiet", "tty"])
            # snapshots create is create.
            self.assertEqual(self.complete(mode, "snapbuild", "snapshots", "create", "-"),
                             flags)
            os.makedirs(os.path.join(self.dir, "ctx-dir"), exist_ok=True)
            self.assertEqual(self.complete(mode, "snapbuild", "create", "--context", "ctx-"),
                             ["ctx-dir"])

    def test_man_page_flags_are_all_completed(self):
        with open(os.path.join(PACKAGING, "man", "snapbuild.1.scd")) as f:
            page = f.read()
        create = page[page.index("*create*"):page.index("*jobs*")]
        documented = set(re.findall(r"\*(--?[\w-]+)\*", create))
        for mode in self.each_mode():
            completed = set(self.complete(mode, "snapbuild", "create", "-"))
            self.assertEqual(documented - completed, set())
            commands = set(re.findall(r"(?m)^\*([a-z]+)\*", page[page.index("# COMMANDS"):
                                                               page.index("# EXIT STATUS")]))
            self.assertEqual(commands - set(self.complete(mode, "snapbuild", "")), set())

    def test_subcommands(self):
        for mode in self.each_mode():
            self.assertEqual(self.complete(mode, "snapbuild", "snapshots", ""),
                             ["alias", "create", "get", "help", "list", "retire", "unalias"])
            self.assertEqual(self.complete(mode, "snapbuild", "snapshots", "list", "--e"),
                             ["--exclude-retired"])
            self.assertEqual(self.complete(mode, "snapbuild", "snapshots", "list", "--tag",
                                           ""), [])
            self.assertEqual(self.complete(mode, "snapbuild", "snapshot", "re"), ["retire"])
            self.assertEqual(self.complete(mode, "snapbuild", "daemon", ""), ["info", "metrics"])
            self.assertEqual(self.complete(mode, "snapbuild", "daemon", "-"), ["--help", "-o"])
            self.assertEqual(self.complete(mode, "snapbuild", "snapshots", "--h"), ["--help"])
            self.assertEqual(self.complete(mode, "snapbuild", "snapshots", "get", "-"),
                             ["--help", "-o"])
            self.assertEqual(self.complete(mode, "snapbuild", "cancel", "-"), ["--help", "-o"])
            self.assertEqual(self.complete(mode, "snapbuild", "logs", "--f"), ["--follow"])
            self.assertEqual(self.complete(mode, "snapbuild", "context", "dir", "--s"),
                             ["--save"])
            self.assertEqual(self.complete(mode, "snapbuild", "jobs", "--state", "s"),
                             ["succeeded"])
            # context's -f takes the Dockerfile, so "x" is its value, not the directory.
            os.makedirs(os.path.join(self.dir, "ctx-dir"), exist_ok=True)
            self.assertEqual(self.complete(mode, "snapbuild", "context", "-f", "x", "ctx-"),
                             ["ctx-dir"])

    def test_job_ids_come_from_the_daemon(self):
        for mode in self.each_mode():
            if os.path.exists(self.calls):
                os.unlink(self.calls)
            self.assertEqual(self.complete(mode, self.client, "logs", ""),
                             ["job-aaa", "job-abb", "zzz"])
            self.assertEqual(self.complete(mode, self.client, "logs", "-f", "job-a"),
                             ["job-aaa", "job-abb"])
            self.assertEqual(self.complete(mode, self.client, "--socket", "/tmp/s.sock",
                                           "cancel", "job-aaa", ""), ["job-abb", "zzz"])
            # One job only for wait, inspect, retry.
            self.assertEqual(self.complete(mode, self.client, "wait", "job-aaa", ""), [])
            with open(self.calls) as f:
                calls = f.read().splitlines()
            self.assertEqual(calls, ["-o json jobs", "-o json jobs",
                                     "--socket /tmp/s.sock -o json jobs"])

    def test_every_option_of_the_client_is_completed(self):
        """The client's own usage lines against the completion, command by command."""
        client = built("client/snapbuild")
        if not client:
            self.skipTest("client/snapbuild is not built yet")
        r = run([client, "help"])
        self.assertEqual(r.returncode, 0, r.stderr)
        listed = re.findall(r"(?m)^  ([a-z][a-z-]*)\b", r.stdout)
        self.assertIn("help", listed)
        mode = self.modes[-1]
        commands = self.complete(mode, "snapbuild", "")
        self.assertEqual(set(listed) - set(commands), set(), "commands the completion lacks")
        global_opts = set(re.findall(r"(?<![\w-])(--?[a-z][\w-]*)",
                                     r.stdout.split("Commands:")[0]))
        self.assertEqual(global_opts - set(self.complete(mode, "snapbuild", "-")), set())
        for command in listed:
            with self.subTest(command=command):
                r = run([client, "help", command])
                self.assertEqual(r.returncode, 0, r.stderr)
                usage = r.stdout.split("\n\n")[0]
                usage = re.sub(r"\(DURATION:[^)]*\)", "", usage)
                flags = set(re.findall(r"(?<![\w-])(--?[a-z][\w-]*)", usage))
                completed = set(self.complete(mode, "snapbuild", command, "-"))
                self.assertEqual(flags - completed, set())

    def test_every_snapshots_subcommand_option_is_completed(self):
        client = built("client/snapbuild")
        if not client:
            self.skipTest("client/snapbuild is not built yet")
        r = run([client, "snapshots", "help"], timeout=30)
        if r.returncode != 0:
            self.skipTest("this client has no `snapshots help`")
        subs = re.findall(r"(?m)^  ([a-z]+)\b(.*)$", r.stdout)
        self.assertIn("list", [sub for sub, _ in subs])
        mode = self.modes[-1]
        self.assertEqual({sub for sub, _ in subs} -
                         set(self.complete(mode, "snapbuild", "snapshots", "")), set())
        for sub, usage in subs:
            with self.subTest(subcommand=sub):
                flags = set(re.findall(FLAG, usage))
                completed = set(self.complete(mode, "snapbuild", "snapshots", sub, "-"))
                self.assertEqual(flags - completed, set())

    def test_unreachable_daemon_completes_nothing_quietly(self):
        for mode in self.each_mode():
            self.assertEqual(self.complete(mode, self.down, "inspect", ""), [])
            self.assertEqual(self.complete(mode, os.path.join(self.dir, "missing"),
                                           "cancel", ""), [])


if __name__ == "__main__":
    unittest.main(verbosity=2)
