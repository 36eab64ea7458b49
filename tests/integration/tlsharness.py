"""Real TLS and proxy infrastructure for daemon tests: a certificate authority made with
openssl, nginx (TLS + HTTP/2, proxy_buffering off) in front of snapbuild-sim, and
tinyproxy as a CONNECT proxy.  Everything listens on 127.0.0.1 high ports, lives in
a temporary directory and is stopped by the test that started it; readiness is a
port that accepts connections, never a sleep.
"""
import os
import signal
import shutil
import socket
import subprocess
import tempfile

from harness import wait_for

NGINX = shutil.which("nginx") or "/usr/sbin/nginx"
TINYPROXY = shutil.which("tinyproxy") or "/usr/bin/tinyproxy"


def free_port():
    """A loopback port nobody listens on (bound and released: good enough on loopback)."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def port_open(port):
    s = socket.socket()
    s.settimeout(1)
    try:
        s.connect(("127.0.0.1", port))
        return True
    except OSError:
        return False
    finally:
        s.close()


def _openssl(*args, cwd):
    subprocess.run(["openssl"] + list(args), cwd=cwd, check=True, capture_output=True)


class CA:
    """A throw-away certificate authority and the server certificates it signs."""

    def __init__(self, directory, name="snapbuild test CA"):
        self.dir = directory
        self.name = name.replace(" ", "-")
        self.key = os.path.join(directory, self.name + ".key")
        self.pem = os.path.join(directory, self.name + ".pem")
        _openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                 "-nodes", "-keyout", self.key, "-out", self.pem, "-days", "2",
                 "-subj", "/CN=" + name,
                 "-addext", "basicConstraints=critical,CA:TRUE",
                 "-addext", "keyUsage=critical,keyCertSign,cRLSign", cwd=directory)

    def issue(self, name, sans, expired=False):
        """A server certificate for sans ("IP:127.0.0.1,DNS:localhost"): (cert, key) paths."""
        key = os.path.join(self.dir, name + ".key")
        csr = os.path.join(self.dir, name + ".csr")
        crt = os.path.join(self.dir, name + ".pem")
        ext = os.path.join(self.dir, name + ".ext")
        with open(ext, "w") as f:
            f.write("basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\n"
                    "extendedKeyUsage=serverAuth\nsubjectAltName=%s\n" % sans)
        _openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
                 "-keyout", key, "-out", csr, "-subj", "/CN=" + name, cwd=self.dir)
        if expired:
            self._sign_expired(csr, crt, ext)
        else:
            _openssl("x509", "-req", "-in", csr, "-CA", self.pem, "-CAkey", self.key,
                     "-CAcreateserial", "-days", "2", "-extfile", ext, "-out", crt,
                     cwd=self.dir)
        return crt, key

    def _sign_expired(self, csr, crt, ext):
        """openssl x509 cannot date a certificate in the past; openssl ca can."""
        db = os.path.join(self.dir, "ca-db")
        os.makedirs(os.path.join(db, "new"), exist_ok=True)
        open(os.path.join(db, "index.txt"), "w").close()
        with open(os.path.join(db, "serial"), "w") as f:
            f.write("1000\n")
        conf = os.path.join(db, "ca.cnf")
        with open(conf, "w") as f:
            f.write("[ca]\ndefault_ca = test\n[test]\ndir = %s\ndatabase = $dir/index.txt\n"
                    "new_certs_dir = $dir/new\nserial = $dir/serial\ndefault_md = sha256\n"
                    "policy = any\nunique_subject = no\n[any]\ncommonName = supplied\n" % db)
        _openssl("ca", "-batch", "-config", conf, "-cert", self.pem, "-keyfile", self.key,
                 "-startdate", "20200101000000Z", "-enddate", "20200102000000Z",
                 "-extfile", ext, "-in", csr, "-out", crt, cwd=self.dir)


class Nginx:
    """nginx terminating TLS (HTTP/2 offered by ALPN) in front of upstream "host:port".

    servers: a list of (cert, key); each gets its own port, in self.ports.  The access
    log records, per request: port, protocol, connection number, request number on that
    connection, method, path and status (self.access()).
    """

    def __init__(self, upstream, servers, directory=None):
        self.dir = directory or tempfile.mkdtemp(prefix="sbtls-nginx-")
        # Worker processes run as nobody when nginx starts as root: let them in.
        os.chmod(self.dir, 0o755)
        self.ports = [free_port() for _ in servers]
        self.access_log = os.path.join(self.dir, "access.log")
        self.error_log = os.path.join(self.dir, "error.log")
        blocks = []
        for port, (crt, key) in zip(self.ports, servers):
            blocks.append("""
    server {
        listen 127.0.0.1:%d ssl http2;
        ssl_certificate %s;
        ssl_certificate_key %s;
        location / {
            proxy_pass http://%s;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_buffering off;
            proxy_request_buffering off;
            proxy_read_timeout 1h;
        }
    }""" % (port, crt, key, upstream))
        self.conf = os.path.join(self.dir, "nginx.conf")
        with open(self.conf, "w") as f:
            f.write("""
daemon off;
master_process on;
worker_processes 1;
# after a reload, old workers close the connections they still hold (streams) after 1 s
worker_shutdown_timeout 1s;
pid %(d)s/nginx.pid;
error_log %(d)s/error.log info;
events { worker_connections 512; }
http {
    log_format probe '$server_port $server_protocol $connection $connection_requests '
                     '$request_method $uri $status';
    access_log %(d)s/access.log probe;
    client_body_temp_path %(d)s/client_body;
    proxy_temp_path %(d)s/proxy;
    fastcgi_temp_path %(d)s/fastcgi;
    uwsgi_temp_path %(d)s/uwsgi;
    scgi_temp_path %(d)s/scgi;
    client_max_body_size 0;
    keepalive_timeout 300s;
    %(blocks)s
}
""" % {"d": self.dir, "blocks": "\n".join(blocks)})
        self.proc = subprocess.Popen([NGINX, "-p", self.dir, "-c", self.conf, "-e", self.error_log],
                                     stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.PIPE)
        wait_for(self._ready, 30, "nginx to listen")

    def _ready(self):
        if self.proc.poll() is not None:
            raise AssertionError("nginx exited with %s: %s\n%s" % (
                self.proc.returncode, self.proc.stderr.read().decode(errors="replace"),
                self.errors()))
        return all(port_open(p) for p in self.ports)

    def url(self, i=0):
        return "https://127.0.0.1:%d" % self.ports[i]

    def errors(self):
        try:
            with open(self.error_log, errors="replace") as f:
                return f.read()
        except FileNotFoundError:
            return ""

    def access(self):
        """[(port, protocol, connection, request_on_connection, method, path, status)]"""
        out = []
        try:
            with open(self.access_log) as f:
                for line in f:
                    p = line.split()
                    if len(p) == 7:
                        out.append((int(p[0]), p[1], int(p[2]), int(p[3]), p[4], p[5], int(p[6])))
        except FileNotFoundError:
            pass
        return out

    def reload(self):
        """SIGHUP: new workers take over, the old ones close their connections."""
        self.proc.send_signal(signal.SIGHUP)

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGQUIT)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc.stderr.close()
        shutil.rmtree(self.dir, ignore_errors=True)


class Tinyproxy:
    """tinyproxy on a loopback port, as an HTTP CONNECT proxy; its log in self.log()."""

    def __init__(self, directory=None):
        self.dir = directory or tempfile.mkdtemp(prefix="sbtls-proxy-")
        os.chmod(self.dir, 0o755)
        self.port = free_port()
        self.log_path = os.path.join(self.dir, "tinyproxy.log")
        open(self.log_path, "w").close()
        os.chmod(self.log_path, 0o666)
        self.conf = os.path.join(self.dir, "tinyproxy.conf")
        user = ""
        if os.geteuid() == 0:
            user = "User nobody\nGroup nogroup\n"
        with open(self.conf, "w") as f:
            # No ConnectPort line: CONNECT to any port (the test servers use high ones).
            f.write("%sPort %d\nListen 127.0.0.1\nTimeout 600\nLogFile \"%s\"\nLogLevel Info\n"
                    "MaxClients 64\nAllow 127.0.0.1\n" % (user, self.port, self.log_path))
        self.proc = subprocess.Popen([TINYPROXY, "-d", "-c", self.conf],
                                     stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.PIPE)
        wait_for(self._ready, 30, "tinyproxy to listen")

    def _ready(self):
        if self.proc.poll() is not None:
            raise AssertionError("tinyproxy exited with %s: %s\n%s" % (
                self.proc.returncode, self.proc.stderr.read().decode(errors="replace"),
                self.log()))
        return port_open(self.port)

    @property
    def url(self):
        return "http://127.0.0.1:%d" % self.port

    def log(self):
        with open(self.log_path, errors="replace") as f:
            return f.read()

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc.stderr.close()
        shutil.rmtree(self.dir, ignore_errors=True)
