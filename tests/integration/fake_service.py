#!/usr/bin/env python3
"""A scripted HTTP server for testing the daemon's HTTP client and API layers.

Unlike the simulator, it knows nothing of builds: a test gives it a script saying
exactly what to answer to each request, and reads back exactly what it received.

    fake_service.py --script SCRIPT.json --log REQUESTS.jsonl

prints "127.0.0.1:PORT" on its first stdout line once it listens.  The script maps
"METHOD /path" (query excluded) to a list of answers used in turn, the last one
repeating.  An answer is an object:

    status      HTTP status (200)
    headers     extra response headers
    body        text body;  json: a JSON body;  body_repeat: [text, count]
    delay       seconds to wait before answering
    sse         a streamed answer, sent chunked: a list of items, each either a
                string written as is, or one of
                  {"sleep": s}          pause
                  {"drop": true}        reset the connection (RST), no clean end
                  {"stall": true}       send nothing more until the client leaves
                  {"big_line": n}       "data: " + n bytes of "x" + blank line
                  {"endless_line": true} "data: " + "x" forever
                the stream ends cleanly after the last item.

Every request is appended to the log as one JSON line with method, path (with
query), headers (lower-case names), body_len, body (when under 64 KiB, as text) and,
for multipart/form-data, its parts (name, filename, content_type, size, sha256,
value when small).
"""

import argparse
import hashlib
import json
import socket
import struct
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class State:
    def __init__(self, script, log_path):
        self.script = script
        self.log_path = log_path
        self.counters = {}
        self.lock = threading.Lock()

    def next_answer(self, key):
        with self.lock:
            answers = self.script.get(key)
            if not answers:
                return {"status": 404, "json": {"code": "not_found", "message": "no script for " + key}}
            i = self.counters.get(key, 0)
            self.counters[key] = i + 1
            return answers[min(i, len(answers) - 1)]

    def record(self, entry):
        with self.lock:
            with open(self.log_path, "a") as f:
                f.write(json.dumps(entry) + "\n")


def parse_multipart(body, content_type):
    boundary = None
    for param in content_type.split(";")[1:]:
        k, _, v = param.strip().partition("=")
        if k.lower() == "boundary":
            boundary = v.strip('"')
    if boundary is None:
        return None
    parts = []
    delim = b"--" + boundary.encode()
    for chunk in body.split(delim)[1:]:
        if chunk.startswith(b"--"):
            break
        chunk = chunk[2:] if chunk.startswith(b"\r\n") else chunk
        head, _, data = chunk.partition(b"\r\n\r\n")
        if data.endswith(b"\r\n"):
            data = data[:-2]
        part = {"name": None, "filename": None, "content_type": None}
        for line in head.decode("utf-8", "replace").split("\r\n"):
            name, _, value = line.partition(":")
            if name.lower() == "content-disposition":
                for p in value.split(";")[1:]:
                    k, _, v = p.strip().partition("=")
                    part[k.lower()] = v.strip('"')
            elif name.lower() == "content-type":
                part["content_type"] = value.strip()
        part["size"] = len(data)
        part["sha256"] = hashlib.sha256(data).hexdigest()
        if len(data) <= 4096:
            part["value"] = data.decode("utf-8", "replace")
        parts.append(part)
    return parts


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "fake-service"

    def log_message(self, fmt, *args):
        pass

    def handle(self):
        # a scripted drop closes the socket under the handler's feet: not an error
        try:
            super().handle()
        except (OSError, ValueError):
            pass

    def finish(self):
        try:
            super().finish()
        except (OSError, ValueError):
            pass

    def read_body(self):
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            out = b""
            while True:
                size = int(self.rfile.readline().strip().split(b";")[0], 16)
                if size == 0:
                    self.rfile.readline()
                    return out
                out += self.rfile.read(size)
                self.rfile.readline()
        n = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(n) if n else b""

    def handle_any(self):
        body = self.read_body()
        path = self.path.split("?", 1)[0]
        entry = {
            "method": self.command,
            "path": self.path,
            "headers": {k.lower(): v for k, v in self.headers.items()},
            "body_len": len(body),
            "time": time.time(),
        }
        if len(body) < 65536:
            entry["body"] = body.decode("utf-8", "replace")
        ctype = self.headers.get("Content-Type", "")
        if ctype.lower().startswith("multipart/form-data"):
            entry["parts"] = parse_multipart(body, ctype)
        self.server.state.record(entry)
        self.answer(self.server.state.next_answer(self.command + " " + path))

    do_GET = do_POST = do_DELETE = do_PUT = handle_any

    def answer(self, a):
        if a.get("delay"):
            time.sleep(a["delay"])
        status = a.get("status", 200)
        headers = dict(a.get("headers", {}))
        if "sse" in a:
            self.send_response(status)
            headers.setdefault("Content-Type", "text/event-stream")
            for k, v in headers.items():
                self.send_header(k, v)
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            self.stream(a["sse"])
            return
        if "json" in a:
            body = json.dumps(a["json"]).encode()
            headers.setdefault("Content-Type", "application/json")
        elif "body_repeat" in a:
            text, count = a["body_repeat"]
            body = text.encode() * count
        else:
            body = a.get("body", "").encode("utf-8", "surrogateescape")
        self.send_response(status)
        for k, v in headers.items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def chunk(self, data):
        if isinstance(data, str):
            data = data.encode("utf-8", "surrogateescape")
        if data:
            self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
            self.wfile.flush()

    def stream(self, items):
        try:
            for item in items:
                if isinstance(item, str):
                    self.chunk(item)
                elif "sleep" in item:
                    time.sleep(item["sleep"])
                elif item.get("drop"):
                    self.wfile.flush()
                    self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                                               struct.pack("ii", 1, 0))
                    self.connection.close()
                    self.close_connection = True
                    return
                elif item.get("stall"):
                    while True:
                        time.sleep(0.05)
                        self.connection.setblocking(False)
                        try:
                            if self.connection.recv(1) == b"":
                                raise ConnectionResetError
                        except BlockingIOError:
                            pass
                        finally:
                            self.connection.setblocking(True)
                elif "big_line" in item:
                    self.chunk("data: ")
                    left = item["big_line"]
                    while left > 0:
                        n = min(left, 1 << 16)
                        self.chunk(b"x" * n)
                        left -= n
                    self.chunk("\n\n")
                elif item.get("endless_line"):
                    self.chunk("data: ")
                    while True:
                        self.chunk(b"x" * (1 << 16))
            self.wfile.write(b"0\r\n\r\n")
            self.wfile.flush()
        except (BrokenPipeError, ConnectionResetError, OSError):
            self.close_connection = True


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--script", required=True)
    ap.add_argument("--log", required=True)
    args = ap.parse_args()
    with open(args.script) as f:
        script = json.load(f)
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    server.state = State(script, args.log)
    print("127.0.0.1:%d" % server.server_address[1], flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    sys.exit(main())
