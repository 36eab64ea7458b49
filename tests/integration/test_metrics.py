"""Metrics: daemon.metrics, `snapbuild daemon metrics` and GET /metrics (metrics_listen)
serve one OpenMetrics text, which a strict parser written here accepts, and which moves
as a build runs against snapbuild-sim.
"""
import math
import os
import re
import subprocess
import tempfile
import unittest
import urllib.error
import urllib.request

from harness import Daemon
from simharness import Sim, submit_ok, wait_job, write_tree

CONTENT_TYPE = "application/openmetrics-text; version=1.0.0; charset=utf-8"
NAME = r"[a-zA-Z_:][a-zA-Z0-9_:]*"
LABEL = r"[a-zA-Z_][a-zA-Z0-9_]*"
TYPES = {"counter", "gauge", "histogram", "gaugehistogram", "summary", "info", "stateset",
         "unknown"}
# Suffixes each family type's samples may carry.
SUFFIXES = {"counter": ("_total", "_created"), "gauge": ("",),
            "histogram": ("_bucket", "_sum", "_count", "_created")}


class ParseError(AssertionError):
    pass


def parse_labels(text, lineno):
    """{name: value} from the inside of {...}, with \\\\, \\" and \\n escapes."""
    labels, i = {}, 0
    while i < len(text):
        m = re.compile(r"(%s)=\"" % LABEL).match(text, i)
        if not m:
            raise ParseError("line %d: bad label at %r" % (lineno, text[i:]))
        name, i, value = m.group(1), m.end(), ""
        while True:
            if i >= len(text):
                raise ParseError("line %d: unterminated label value" % lineno)
            c = text[i]
            if c == "\\":
                esc = text[i + 1:i + 2]
                if esc not in ("\\", '"', "n"):
                    raise ParseError("line %d: bad escape \\%s" % (lineno, esc))
                value += "\n" if esc == "n" else esc
                i += 2
            elif c == '"':
                i += 1
                break
            elif c == "\n":
                raise ParseError("line %d: newline in a label value" % lineno)
            else:
                value += c
                i += 1
        if name in labels:
            raise ParseError("line %d: label %s twice" % (lineno, name))
        labels[name] = value
        if i < len(text):
            if text[i] != ",":
                raise ParseError("line %d: expected ',' in labels" % lineno)
            i += 1
    return labels


def parse_number(s, lineno):
    if s in ("+Inf", "-Inf", "NaN"):
        return float(s.replace("Inf", "inf"))
    if not re.fullmatch(r"[-+]?(\d+(\.\d*)?|\.\d+)([eE][-+]?\d+)?", s):
        raise ParseError("line %d: %r is not a number" % (lineno, s))
    return float(s)


def parse_openmetrics(text):
    """Families {name: {"type", "help", "samples": [(name, labels, value)]}}; raises
    ParseError on anything the OpenMetrics text format does not allow (of what this
    daemon may produce): no # EOF at the end, text after it, blank lines, a sample
    outside its family or with a wrong suffix, a family declared twice or interleaved,
    a duplicate series, a bad histogram."""
    if not text.endswith("# EOF\n"):
        raise ParseError("the text does not end with '# EOF\\n'")
    lines = text[:-1].split("\n")
    if lines.count("# EOF") != 1:
        raise ParseError("'# EOF' is not the last line only")
    families, current, seen_series = {}, None, set()
    for lineno, line in enumerate(lines[:-1], 1):
        if line == "":
            raise ParseError("line %d: blank line" % lineno)
        if line.startswith("#"):
            m = re.fullmatch(r"# (TYPE|HELP|UNIT) (%s) (.*)" % NAME, line)
            if not m:
                raise ParseError("line %d: bad comment %r" % (lineno, line))
            kind, name, rest = m.groups()
            if kind == "TYPE":
                if name in families:
                    raise ParseError("line %d: family %s declared twice" % (lineno, name))
                if rest not in TYPES:
                    raise ParseError("line %d: unknown type %r" % (lineno, rest))
                families[name] = {"type": rest, "help": None, "samples": []}
                current = name
            else:
                if name != current:
                    raise ParseError("line %d: %s of %s outside it" % (lineno, kind, name))
                families[name][kind.lower()] = rest
            continue
        m = re.fullmatch(r"(%s)(\{(.*)\})? (\S+)" % NAME, line)
        if not m:
            raise ParseError("line %d: bad sample %r" % (lineno, line))
        sname, _, labeltext, value = m.groups()
        if current is None:
            raise ParseError("line %d: sample before any TYPE" % lineno)
        fam = families[current]
        suffix = sname[len(current):] if sname.startswith(current) else None
        if suffix is None or suffix not in SUFFIXES.get(fam["type"], ("",)):
            raise ParseError("line %d: %s is not a sample of %s %s" %
                             (lineno, sname, fam["type"], current))
        labels = parse_labels(labeltext or "", lineno)
        key = (sname, tuple(sorted(labels.items())))
        if key in seen_series:
            raise ParseError("line %d: series %r twice" % (lineno, key))
        seen_series.add(key)
        v = parse_number(value, lineno)
        if fam["type"] in ("counter",) and suffix == "_total" and (v < 0 or math.isnan(v)):
            raise ParseError("line %d: negative counter" % lineno)
        fam["samples"].append((sname, labels, v))
    # A family may have no samples (snapbuild_api_requests before any request).
    for name, fam in families.items():
        if fam["type"] == "histogram":
            check_histogram(name, fam["samples"])
    return families


def check_histogram(name, samples):
    groups = {}
    for sname, labels, v in samples:
        rest = tuple(sorted((k, x) for k, x in labels.items() if k != "le"))
        groups.setdefault(rest, {"buckets": [], "sum": None, "count": None})
        g = groups[rest]
        if sname.endswith("_bucket"):
            if "le" not in labels:
                raise ParseError("%s: a bucket without le" % name)
            g["buckets"].append((parse_number(labels["le"], 0), v, labels["le"]))
        elif sname.endswith("_sum"):
            g["sum"] = v
        elif sname.endswith("_count"):
            g["count"] = v
    for rest, g in groups.items():
        les = [b[0] for b in g["buckets"]]
        if les != sorted(les) or len(set(les)) != len(les):
            raise ParseError("%s%s: buckets out of order" % (name, rest))
        if not les or les[-1] != math.inf:
            raise ParseError("%s%s: no +Inf bucket" % (name, rest))
        counts = [b[1] for b in g["buckets"]]
        if counts != sorted(counts):
            raise ParseError("%s%s: buckets not cumulative" % (name, rest))
        if g["count"] is None or g["count"] != counts[-1]:
            raise ParseError("%s%s: _count is not the +Inf bucket" % (name, rest))
        if g["sum"] is None or g["sum"] < 0:
            raise ParseError("%s%s: no or negative _sum" % (name, rest))
        for le, _, text in g["buckets"]:
            # Canonical numbers: an integral bound is written 1.0, not 1.
            if le != math.inf and "." not in text and "e" not in text:
                raise ParseError("%s%s: le=%r is not canonical" % (name, rest, text))


def value(families, family, sample=None, **labels):
    """The value of one series (exactly one must match)."""
    sample = sample or family
    got = [v for n, l, v in families[family]["samples"]
           if n == sample and all(l.get(k) == str(x) for k, x in labels.items())]
    if len(got) != 1:
        raise AssertionError("%d series %s%r" % (len(got), sample, labels))
    return got[0]


def metrics(d):
    return parse_openmetrics(d.call("daemon.metrics")["text"])


class Parser(unittest.TestCase):
    """The parser itself refuses what it should, so the tests below can fail."""

    GOOD = ("# TYPE a counter\n# HELP a A.\na_total{x=\"1\"} 2\n"
            "# TYPE h histogram\nh_bucket{le=\"1.0\"} 1\nh_bucket{le=\"+Inf\"} 2\n"
            "h_sum 3.5\nh_count 2\n# EOF\n")

    def test_accepts_good_text(self):
        f = parse_openmetrics(self.GOOD)
        self.assertEqual(value(f, "a", "a_total", x=1), 2)

    def test_refuses_bad_text(self):
        bad = {
            "no eof": self.GOOD[:-6],
            "after eof": self.GOOD + "a_total 1\n",
            "blank": self.GOOD.replace("# TYPE h", "\n# TYPE h"),
            "no _total": self.GOOD.replace("a_total{", "a{"),
            "twice": self.GOOD.replace("# TYPE h histogram", "# TYPE a gauge"),
            "dup": self.GOOD.replace("a_total{x=\"1\"} 2\n", "a_total{x=\"1\"} 2\n" * 2),
            "count": self.GOOD.replace("h_count 2", "h_count 3"),
            "not cumulative": self.GOOD.replace("le=\"1.0\"} 1", "le=\"1.0\"} 5"),
            "le": self.GOOD.replace("le=\"1.0\"", "le=\"1\""),
            "label": self.GOOD.replace("x=\"1\"", "x=1"),
            "number": self.GOOD.replace("h_sum 3.5", "h_sum three"),
        }
        for what, text in bad.items():
            with self.subTest(what=what):
                self.assertRaises(ParseError, parse_openmetrics, text)


class Metrics(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.mkdtemp(prefix="sb-metrics-")
        self.addCleanup(subprocess.run, ["rm", "-rf", self.tmp])
        self.ctx = os.path.join(self.tmp, "app")
        write_tree(self.ctx, {"Dockerfile": b"FROM debian:12\nCOPY . /app\nRUN make -C /app\n",
                              "Makefile": b"all:\n\ttrue\n"})

    def start(self, config="metrics_listen = 127.0.0.1:0\n"):
        self.sim = Sim()
        self.addCleanup(self.sim.stop)
        d = self.sim.daemon(config=config, tmp=tempfile.mkdtemp(dir=self.tmp))
        self.addCleanup(d.__exit__, None, None, None)
        return d

    def get(self, url):
        with urllib.request.urlopen(url, timeout=30) as r:
            return r.status, r.headers.get("Content-Type"), r.read().decode()

    def test_every_family_is_there_from_the_start(self):
        d = self.start()
        f = metrics(d)
        self.assertEqual(
            {n: f[n]["type"] for n in f},
            {"snapbuild_jobs": "gauge", "snapbuild_jobs_finished": "counter",
             "snapbuild_job_stage_seconds": "histogram", "snapbuild_api_requests": "counter",
             "snapbuild_api_retries": "counter", "snapbuild_log_lines": "counter",
             "snapbuild_connections": "gauge", "snapbuild_context_bytes": "counter"})
        for fam in f.values():
            self.assertTrue(fam["help"])
        self.assertEqual(value(f, "snapbuild_jobs", state="queued"), 0)
        self.assertEqual(value(f, "snapbuild_jobs", state="succeeded"), 0)
        for stage in ("intake", "queued", "uploading", "building", "registering"):
            self.assertEqual(value(f, "snapbuild_job_stage_seconds",
                                   "snapbuild_job_stage_seconds_count", stage=stage), 0)
        for backend in ("remote", "local"):
            for result in ("succeeded", "failed", "cancelled"):
                self.assertEqual(value(f, "snapbuild_jobs_finished",
                                       "snapbuild_jobs_finished_total", backend=backend,
                                       result=result), 0)
        # This very connection.
        self.assertGreaterEqual(value(f, "snapbuild_connections"), 1)

    def test_a_build_moves_them(self):
        d = self.start()
        before = metrics(d)
        job = submit_ok(d, self.ctx, alias="m@v1")
        job = wait_job(d, job["id"])
        self.assertEqual(job["state"], "succeeded")
        after = metrics(d)

        def delta(family, sample=None, **labels):
            return value(after, family, sample, **labels) - value(before, family, sample,
                                                                  **labels)

        self.assertEqual(delta("snapbuild_jobs", state="succeeded"), 1)
        self.assertEqual(delta("snapbuild_jobs_finished", "snapbuild_jobs_finished_total",
                               backend="remote", result="succeeded"), 1)
        for stage in ("intake", "queued", "uploading", "building", "registering"):
            with self.subTest(stage=stage):
                self.assertEqual(delta("snapbuild_job_stage_seconds",
                                       "snapbuild_job_stage_seconds_count", stage=stage), 1)
        self.assertEqual(value(after, "snapbuild_api_requests", "snapbuild_api_requests_total",
                               api="submit", code=200), 1)
        self.assertGreaterEqual(value(after, "snapbuild_api_requests",
                                      "snapbuild_api_requests_total", api="logs", code=200), 1)
        self.assertGreaterEqual(sum(v for n, l, v in after["snapbuild_api_requests"]["samples"]
                                    if l["api"] == "management"), 1)
        build_lines = [e for e in d.call("build.logs", {"id": job["id"]})["events"]
                       if e["kind"] == "log"]
        self.assertEqual(delta("snapbuild_log_lines", "snapbuild_log_lines_total"),
                         len(build_lines))
        spooled = os.path.getsize(os.path.join(
            d.state_dir, "spool", job["archive"]["sha256"] + ".tar.gz"))
        self.assertEqual(delta("snapbuild_context_bytes", "snapbuild_context_bytes_total"),
                         spooled)

    def test_retries_are_counted(self):
        d = self.start()
        self.sim.faults(submit_fail={"count": 1, "status": 503})
        job = wait_job(d, submit_ok(d, self.ctx)["id"])
        self.assertEqual(job["state"], "succeeded")
        f = metrics(d)
        self.assertEqual(value(f, "snapbuild_api_retries", "snapbuild_api_retries_total",
                               api="submit"), 1)
        self.assertEqual(value(f, "snapbuild_api_requests", "snapbuild_api_requests_total",
                               api="submit", code=503), 1)
        self.assertEqual(value(f, "snapbuild_api_requests", "snapbuild_api_requests_total",
                               api="submit", code=200), 1)

    def test_failed_and_cancelled_jobs(self):
        d = self.start()
        bad = os.path.join(self.tmp, "bad")
        write_tree(bad, {"Dockerfile": b"FROM debian:12\nRUN false\n"})
        self.assertEqual(wait_job(d, submit_ok(d, bad)["id"])["state"], "failed")
        self.sim.faults(hold="end")
        job = submit_ok(d, self.ctx)
        wait_job(d, job["id"], states=("building",))
        d.call("build.cancel", {"id": job["id"]})
        self.assertEqual(wait_job(d, job["id"])["state"], "cancelled")
        f = metrics(d)
        for result in ("failed", "cancelled"):
            self.assertEqual(value(f, "snapbuild_jobs_finished", "snapbuild_jobs_finished_total",
                                   backend="remote", result=result), 1)
        # The cancel deleted the remote build.
        self.assertGreaterEqual(sum(v for n, l, v in f["snapbuild_api_requests"]["samples"]
                                    if l["api"] == "delete"), 1)

    def test_http_cli_and_rpc_serve_the_same_text(self):
        d = self.start()
        addr = d.call("daemon.info")["metrics_listen"]
        self.assertRegex(addr, r"^127\.0\.0\.1:\d+$")
        self.assertNotEqual(addr, "127.0.0.1:0")
        status, ctype, text = self.get("http://%s/metrics" % addr)
        self.assertEqual(status, 200)
        self.assertEqual(ctype, CONTENT_TYPE)
        http = parse_openmetrics(text)
        rpc = d.call("daemon.metrics")
        self.assertEqual(rpc["content_type"], CONTENT_TYPE)
        cli = d.cli("daemon", "metrics")
        self.assertEqual(cli.returncode, 0, cli.stderr)
        self.assertEqual(cli.stdout, rpc["text"])
        for f in (parse_openmetrics(rpc["text"]), parse_openmetrics(cli.stdout)):
            self.assertEqual(set(f), set(http))
        # Only /metrics, only GET and HEAD.
        with self.assertRaises(urllib.error.HTTPError) as cm:
            self.get("http://%s/other" % addr)
        self.assertEqual(cm.exception.code, 404)
        req = urllib.request.Request("http://%s/metrics" % addr, data=b"x", method="POST")
        with self.assertRaises(urllib.error.HTTPError) as cm:
            urllib.request.urlopen(req, timeout=30)
        self.assertEqual(cm.exception.code, 405)
        # The daemon still answers on its socket, and the listener after that.
        self.assertIn("version", d.call("daemon.version"))
        self.assertEqual(self.get("http://%s/metrics" % addr)[0], 200)

    def test_off_by_default(self):
        d = self.start(config="")
        self.assertIsNone(d.call("daemon.info")["metrics_listen"])
        self.assertIn("# EOF", d.call("daemon.metrics")["text"])

    def test_a_bad_address_is_refused_at_start(self):
        for bad in ("9464", "localhost", "127.0.0.1:99999", "::1:80", "127.0.0.1:x"):
            with self.subTest(bad=bad):
                d = Daemon(config="metrics_listen = %s\n" % bad, wait=False,
                           tmp=tempfile.mkdtemp(dir=self.tmp))
                rc = d.proc.wait(30)
                log = d.log()
                d.stop()
                self.assertNotEqual(rc, 0)
                self.assertIn("metrics_listen", log)


if __name__ == "__main__":
    unittest.main()
