"""The snapbuild daemon's API for Python programs (standard library only).

    import snapbuild
    with snapbuild.Client() as c:                      # $SNAPBUILD_SOCKET or the default
        job = c.submit("./app", alias="app@v1")       # packed here, with your rights
        for event in c.follow(job["id"]):
            if event["kind"] == "log":
                print(event["text"])
        job = c.wait(job["id"])                        # the job, in a terminal state

`call`, `follow` and `wait` speak the daemon's JSON-RPC protocol (proto/PROTOCOL.md)
over its Unix socket.  `submit` packs the context through libsnapbuild (ctypes), the
same packer as the snapbuild CLI and its .dockerignore handling, and hands the daemon
the archive's descriptor.  Errors the daemon answers raise `Error`, carrying the JSON-RPC
`code`, `message` and `hint`.

A Client is one connection: use it from one thread at a time.  Every call blocks until
the daemon answers (`follow` yields as events come; it uses a connection of its own).
"""
import ctypes
import json
import os
import socket as _socket

__all__ = ["Client", "Error", "ConnectError", "PROTOCOL_VERSION", "default_socket_path"]

PROTOCOL_VERSION = 2
SYSTEM_SOCKET = "/run/snapbuild/snapbuild.sock"

# JSON-RPC error codes of the protocol.
PARSE_ERROR = -32700
INVALID_REQUEST = -32600
METHOD_NOT_FOUND = -32601
INVALID_PARAMS = -32602
INTERNAL_ERROR = -32603
NOT_FOUND = -32001
PERMISSION_DENIED = -32002
INVALID_STATE = -32003
UPSTREAM_ERROR = -32004
CONTEXT_ERROR = -32005
STORAGE_ERROR = -32006
BUSY = -32007

TERMINAL_STATES = ("succeeded", "failed", "cancelled")


class Error(Exception):
    """A failure.  `code` is the daemon's JSON-RPC error code, or None when the daemon
    gave none (it could not be reached, the connection broke, the packer failed);
    `hint` says what to do about it, when the daemon said; `data` is the error's data."""

    def __init__(self, message, code=None, hint=None, data=None):
        super().__init__(message)
        self.message = message
        self.code = code
        self.hint = hint
        self.data = data

    def __str__(self):
        return self.message + ("\nhint: " + self.hint if self.hint else "")

    @classmethod
    def from_rpc(cls, err):
        data = err.get("data") if isinstance(err.get("data"), dict) else None
        return cls(err.get("message", "error"), err.get("code"),
                   data.get("hint") if data else None, data)


class ConnectError(Error):
    """The daemon cannot be reached, or speaks another protocol."""


def default_socket_path():
    """$SNAPBUILD_SOCKET, else for root the system socket, else the user daemon's
    socket, or the system socket when only that one exists (as the CLI chooses)."""
    v = os.environ.get("SNAPBUILD_SOCKET")
    if v:
        return v
    if os.geteuid() == 0:
        return SYSTEM_SOCKET
    rt = os.environ.get("XDG_RUNTIME_DIR")
    if not rt or not rt.startswith("/"):
        rt = "/run/user/%d" % os.geteuid()
    path = os.path.join(rt, "snapbuild", "snapbuild.sock")
    if not os.path.exists(path) and os.path.exists(SYSTEM_SOCKET):
        return SYSTEM_SOCKET
    return path


class _Conn:
    """One JSON-RPC connection: requests numbered from 1, answers matched by id."""

    def __init__(self, path, timeout):
        self.sock = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
        self.sock.settimeout(timeout)
        try:
            self.sock.connect(path)
        except OSError as e:
            self.sock.close()
            raise ConnectError("cannot connect to the snapbuild daemon at %s: %s"
                               % (path, e.strerror or e)) from None
        self.buf = b""
        self.next_id = 0

    def close(self):
        self.sock.close()

    def send(self, method, params):
        self.next_id += 1
        msg = {"jsonrpc": "2.0", "id": self.next_id, "method": method}
        if params is not None:
            msg["params"] = params
        try:
            self.sock.sendall(json.dumps(msg).encode() + b"\n")
        except OSError as e:
            raise Error("cannot send to the daemon: %s" % (e.strerror or e)) from None
        return self.next_id

    def read(self):
        while b"\n" not in self.buf:
            try:
                chunk = self.sock.recv(65536)
            except OSError as e:
                raise Error("cannot read from the daemon: %s" % (e.strerror or e)) from None
            if not chunk:
                raise Error("the daemon closed the connection")
            self.buf += chunk
        line, self.buf = self.buf.split(b"\n", 1)
        try:
            return json.loads(line)
        except ValueError as e:
            raise Error("the daemon sent invalid JSON: %s" % e) from None

    def messages(self, method, params):
        """Yields the notifications that arrive before the answer, then the answer."""
        rid = self.send(method, params)
        while True:
            msg = self.read()
            if not isinstance(msg, dict):
                continue
            if "id" not in msg:
                yield msg
                continue
            if msg["id"] == rid or (msg["id"] is None and "error" in msg):
                yield msg
                return

    def call(self, method, params):
        for msg in self.messages(method, params):
            if "id" in msg:
                if "error" in msg:
                    raise Error.from_rpc(msg["error"])
                return msg.get("result")
        raise AssertionError("unreachable")


_lib = None


def _library():
    """libsnapbuild: $SNAPBUILD_LIBRARY, else, when this module runs from a checkout
    (client/python), the library built in that checkout's build/ directory, else the
    installed one."""
    global _lib
    if _lib is not None:
        return _lib
    here = os.path.dirname(os.path.abspath(__file__))
    in_tree = os.path.join(here, "..", "..", "..", "build", "client", "libsnapbuild.so.1")
    candidates = [os.environ.get("SNAPBUILD_LIBRARY"),
                  in_tree if os.path.exists(in_tree) else None, "libsnapbuild.so.1"]
    errors = []
    for name in candidates:
        if not name:
            continue
        try:
            lib = ctypes.CDLL(name)
            break
        except OSError as e:
            errors.append(str(e))
    else:
        raise Error("cannot load libsnapbuild (install the snapbuild package, or set "
                    "SNAPBUILD_LIBRARY to libsnapbuild.so.1): " + "; ".join(errors))
    out = ctypes.POINTER(ctypes.c_void_p)
    lib.snapbuild_connect.argtypes = [ctypes.c_char_p, out]
    lib.snapbuild_connect.restype = ctypes.c_void_p
    lib.snapbuild_submit.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_char_p, out,
                                     out]
    lib.snapbuild_submit.restype = ctypes.c_int
    lib.snapbuild_last_error_json.argtypes = [ctypes.c_void_p]
    lib.snapbuild_last_error_json.restype = ctypes.c_void_p
    lib.snapbuild_close.argtypes = [ctypes.c_void_p]
    lib.snapbuild_close.restype = None
    lib.snapbuild_free.argtypes = [ctypes.c_void_p]
    lib.snapbuild_free.restype = None
    _lib = lib
    return lib


def _take_string(lib, ptr):
    """The library's malloc'd string as str (None for NULL), freed."""
    if not ptr:
        return None
    try:
        return ctypes.string_at(ptr).decode("utf-8", "replace")
    finally:
        lib.snapbuild_free(ptr)


class Client:
    """A connection to snapbuildd.  socket: its path (default: default_socket_path());
    timeout: seconds any one read or write may wait (None: forever)."""

    def __init__(self, socket=None, timeout=None):
        self.socket_path = socket or default_socket_path()
        self.timeout = timeout
        self._conn = _Conn(self.socket_path, timeout)
        try:
            v = self._conn.call("daemon.version", None)
        except Error as e:
            self._conn.close()
            raise ConnectError("the daemon at %s did not answer daemon.version: %s"
                               % (self.socket_path, e.message)) from None
        if not isinstance(v, dict) or v.get("protocol_version") != PROTOCOL_VERSION:
            self._conn.close()
            raise ConnectError("the daemon at %s speaks protocol %s, this module %d: install "
                               "matching versions" % (self.socket_path,
                                                      (v or {}).get("protocol_version"),
                                                      PROTOCOL_VERSION))

    def close(self):
        self._conn.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def call(self, method, **params):
        """Calls method with params (none: no params member); returns the result."""
        return self._conn.call(method, params or None)

    def submit(self, context_dir=None, **params):
        """build.submit: packs context_dir here, with this process's rights, through
        libsnapbuild, and passes the archive to the daemon.  params: alias, tags,
        dockerfile, backend, ...; without context_dir, image=.  Returns the job."""
        lib = _library()
        err = ctypes.c_void_p()
        sb = lib.snapbuild_connect(self.socket_path.encode(), ctypes.byref(err))
        if not sb:
            raise ConnectError(_take_string(lib, err.value) or "cannot connect")
        try:
            job = ctypes.c_void_p()
            rc = lib.snapbuild_submit(sb, os.fsencode(context_dir) if context_dir else None,
                                      json.dumps(params).encode(), ctypes.byref(job),
                                      ctypes.byref(err))
            if rc != 0:
                message = _take_string(lib, err.value)
                rpc = _take_string(lib, lib.snapbuild_last_error_json(sb))
                if rpc:
                    raise Error.from_rpc(json.loads(rpc))
                raise Error(message or "build.submit failed")
            return json.loads(_take_string(lib, job.value))
        finally:
            lib.snapbuild_close(sb)

    def follow(self, job_id, after_seq=0):
        """Yields the job's events (dicts: seq, kind, ...) after after_seq, stored ones
        first, then live ones, until the job ends.  On a connection of its own."""
        conn = _Conn(self.socket_path, self.timeout)
        try:
            for msg in conn.messages("build.logs", {"id": job_id, "after_seq": after_seq,
                                                     "follow": True}):
                if "id" in msg:
                    if "error" in msg:
                        raise Error.from_rpc(msg["error"])
                    return
                if msg.get("method") == "build.event" and isinstance(msg.get("params"), dict):
                    yield msg["params"]
        finally:
            conn.close()

    def wait(self, job_id):
        """Blocks until the job is in a terminal state; returns the job."""
        return self._conn.call("build.wait", {"id": job_id})["job"]
