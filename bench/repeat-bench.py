#!/usr/bin/env python3
"""Repeat-build benchmark (issue 16): what a second build of the same context costs.

    bench/repeat-bench.py [--bin-dir build] [--scale 1] [--runs 3] [--keep DIR]

On the generated context (bench/gen-context.py, seed 1), in one run, with the CLI
(`snapbuild context DIR --save FILE`, the packer `snapbuild create` runs) and a pack cache
of its own ($XDG_CACHE_HOME in a temporary directory):

  cold      the cache empty (the pack fills it)
  nocache   --no-cache, for reference: the packer without any cache
  unchanged a repack, nothing changed              goal <= 0.1 x cold
  one file  a repack after one source file changed goal <= 0.2 x cold
  size      the archive against `tar -cf - . | pigz -6` goal <= 1.02 x

Every archive is compared (cmp) with a --no-cache pack of the same tree: they must be
the same bytes.  Then, against snapbuild-sim and a snapbuildd of their own: `snapbuild
create --context DIR --ci` once (a real build), and again: the second must return the
same snapshot with no upload (the simulator counts builds), goal < 0.5 s.

Each figure is the median of --runs runs of wall time on a warm page cache.  Not a
test: numbers depend on the machine.  Results go in BENCHMARKS.md ("Repeat builds").
"""
import argparse
import filecmp
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests", "integration"))


def timed(argv, env):
    t = time.monotonic()
    r = subprocess.run(argv, env=env, capture_output=True, text=True)
    dt = time.monotonic() - t
    if r.returncode != 0:
        raise SystemExit("%s failed: %s" % (" ".join(argv), r.stderr))
    return dt, r


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin-dir", default=os.path.join(HERE, "..", "build"))
    ap.add_argument("--scale", default="1")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--keep", help="generate the context here and keep it")
    args = ap.parse_args()
    os.environ["SNAPBUILD_BIN_DIR"] = os.path.abspath(args.bin_dir)
    cli = os.path.join(os.path.abspath(args.bin_dir), "client", "snapbuild")
    tmp = tempfile.mkdtemp(prefix="snapbuild-repeat-bench.")
    try:
        ctx = args.keep or os.path.join(tmp, "ctx")
        if not os.path.exists(os.path.join(ctx, "Dockerfile")):
            subprocess.run([sys.executable, os.path.join(HERE, "gen-context.py"), ctx,
                            "--seed", "1", "--scale", args.scale], check=True,
                           stdout=subprocess.DEVNULL)
        cache = os.path.join(tmp, "cache")
        env = dict(os.environ, XDG_CACHE_HOME=cache)
        out = lambda name: os.path.join(tmp, name + ".tar.gz")

        def pack(name, *extra):
            dt, r = timed([cli, "-o", "json", "context", ctx, "--save", out(name)] +
                          list(extra), env)
            return dt, json.loads(r.stdout)

        subprocess.run("tar -cf - -C '%s' . >/dev/null" % ctx, shell=True, check=True)
        res = {k: [] for k in ("cold", "nocache", "unchanged", "one")}
        changed = None
        for run in range(args.runs):
            shutil.rmtree(cache, ignore_errors=True)
            dt, info = pack("cold")
            res["cold"].append(dt)
            dt, _ = pack("nocache", "--no-cache")
            res["nocache"].append(dt)
            assert filecmp.cmp(out("cold"), out("nocache"), shallow=False), "cold != nocache"
            dt, _ = pack("unchanged")
            res["unchanged"].append(dt)
            assert filecmp.cmp(out("unchanged"), out("nocache"), shallow=False), \
                "unchanged repack differs from a cold pack"
            # One source file changes (a line added), as an edit between two builds does.
            src = os.path.join(ctx, "src")
            changed = changed or os.path.join(src, sorted(
                os.path.join(d, f) for d, _, fs in os.walk(src) for f in fs)[0])
            with open(changed, "a") as f:
                f.write("// edit %d %f\n" % (run, time.time()))
            dt, _ = pack("one")
            res["one"].append(dt)
            pack("one-nocache", "--no-cache")
            assert filecmp.cmp(out("one"), out("one-nocache"), shallow=False), \
                "repack after one change differs from a cold pack"
        pigz = os.path.join(tmp, "pigz.tar.gz")
        subprocess.run("tar -cf - -C '%s' . | pigz -6 > '%s'" % (ctx, pigz), shell=True,
                       check=True)
        ours, theirs = os.path.getsize(out("one-nocache")), os.path.getsize(pigz)
        med = {k: statistics.median(v) for k, v in res.items()}

        create = bench_create(ctx, env, tmp, args.runs)

        print("## Repeat builds (bench/repeat-bench.py --scale %s --runs %d)\n" %
              (args.scale, args.runs))
        print("context: %d files, %.1f MB; archive %.1f MB (tar | pigz -6: %.1f MB, %.4fx)\n" %
              (info["file_count"], info["total_bytes"] / 1e6, ours / 1e6, theirs / 1e6,
               ours / theirs))
        print("| pack | wall s (median) | vs cold | goal |")
        print("|---|---|---|---|")
        print("| cold (cache empty, filled) | %.2f | 1.00 | |" % med["cold"])
        print("| --no-cache | %.2f | %.2f | |" % (med["nocache"], med["nocache"] / med["cold"]))
        print("| unchanged | %.2f | %.3f | <= 0.1 |" %
              (med["unchanged"], med["unchanged"] / med["cold"]))
        print("| one file changed | %.2f | %.3f | <= 0.2 |" %
              (med["one"], med["one"] / med["cold"]))
        print("\nEvery archive: cmp-identical to a --no-cache pack of the same tree.\n")
        print("| create | wall s |")
        print("|---|---|")
        print("| first (packs, uploads, builds) | %.2f |" % create["first"])
        print("| identical again (median) | %.2f (goal < 0.5; builds on the simulator: %d) |"
              % (create["again"], create["builds"]))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def bench_create(ctx, env, tmp, runs):
    from simharness import Sim
    sim = Sim()
    try:
        d = sim.daemon(tmp=tempfile.mkdtemp(dir=tmp))
        try:
            base = [os.path.join(os.environ["SNAPBUILD_BIN_DIR"], "client", "snapbuild"),
                    "--socket", d.socket, "create", "--context", ctx, "--ci"]
            first, r1 = timed(base, env)
            again = []
            for _ in range(runs):
                dt, r = timed(base, env)
                if r.stdout != r1.stdout or "identical to job" not in r.stderr:
                    raise SystemExit("the second create did not reuse: %s" % r.stderr)
                again.append(dt)
            return {"first": first, "again": statistics.median(again),
                    "builds": len(sim.builds())}
        finally:
            d.stop()
    finally:
        sim.stop()


if __name__ == "__main__":
    main()
