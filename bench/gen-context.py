#!/usr/bin/env python3
"""Generate the packing benchmark's build context: about 20,000 files and 450 MB.

Three kinds of content, as in a real application context:
  src/           source-like text (compresses about 4x)
  node_modules/  a node_modules-like tree: many small packages of JS, JSON, Markdown
  assets/        incompressible blobs (images, archives, models)
plus a Dockerfile.  Output is the same for the same --seed.  --node-modules-scale
multiplies the node_modules tree alone (to show that an ignored node_modules costs
nothing whatever its size).

usage: gen-context.py DIR [--seed N] [--scale F] [--node-modules-scale F]
"""
import argparse
import os
import random

WORDS = ("const let var function return if else for while import export from async await "
         "new this class extends super static get set try catch finally throw typeof "
         "null undefined true false int char void struct unsigned size_t uint64_t "
         "self def lambda yield None True False pass with as in not and or is "
         "buffer request response config options handler result error value index "
         "count length items data path name node parent child next prev state event "
         "context module exports require props render component update create delete").split()
PUNCT = ["(", ")", "{", "}", ";", ",", ".", " = ", " == ", " + ", " - ", " * ", " => ", ": ", "[", "]"]


def make_lines(rnd, n):
    lines = []
    for _ in range(n):
        depth = rnd.randint(0, 4)
        toks = []
        for _ in range(rnd.randint(2, 12)):
            r = rnd.random()
            if r < 0.55:
                toks.append(rnd.choice(WORDS))
            elif r < 0.75:
                toks.append(rnd.choice(WORDS) + "_" + rnd.choice(WORDS) + str(rnd.randint(0, 99)))
            elif r < 0.85:
                toks.append(str(rnd.randint(0, 100000)))
            else:
                toks.append('"%s"' % rnd.choice(WORDS))
            toks.append(rnd.choice(PUNCT))
        lines.append("    " * depth + "".join(toks) + "\n")
    return lines


def write_text(rnd, pool, path, size):
    out, total = [], 0
    while total < size:
        line = rnd.choice(pool)
        out.append(line)
        total += len(line)
    with open(path, "w") as f:
        f.write("".join(out))
    return total


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("dir")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--scale", type=float, default=1.0)
    ap.add_argument("--node-modules-scale", type=float, default=1.0)
    a = ap.parse_args()
    rnd = random.Random(a.seed)
    pool = make_lines(rnd, 6000)
    files = total = 0
    os.makedirs(a.dir, exist_ok=True)
    with open(os.path.join(a.dir, "Dockerfile"), "w") as f:
        f.write("FROM node:20\nWORKDIR /app\nCOPY . .\nRUN npm ci\nCMD [\"node\", \"src/index.js\"]\n")
    files += 1

    # src/: 6,000 files, 15 KB on average, 60 per directory.
    n_src = int(6000 * a.scale)
    for i in range(n_src):
        d = os.path.join(a.dir, "src", "mod%03d" % (i // 60))
        os.makedirs(d, exist_ok=True)
        ext = rnd.choice([".js", ".ts", ".py", ".c", ".go"])
        total += write_text(rnd, pool, os.path.join(d, "file%04d%s" % (i, ext)),
                            rnd.randint(2000, 28000))
        files += 1

    # assets/: incompressible blobs, 220 MB in all.
    n_blob = int(40 * a.scale)
    os.makedirs(os.path.join(a.dir, "assets"), exist_ok=True)
    for b in range(n_blob):
        size = rnd.randint(3 * 1024 * 1024, 8 * 1024 * 1024)
        with open(os.path.join(a.dir, "assets", "blob%02d.bin" % b), "wb") as f:
            f.write(rnd.randbytes(size))
        total += size
        files += 1

    # node_modules/ last, so that its scale changes nothing else.
    # Packages of ~13 files, 12 KB on average; some nested deeper.
    n_pkg = int(1000 * a.scale * a.node_modules_scale)
    for p in range(n_pkg):
        base = os.path.join(a.dir, "node_modules", "pkg-%04d" % p)
        if p % 7 == 0:
            base = os.path.join(base, "node_modules", "dep-%04d" % p)
        os.makedirs(os.path.join(base, "lib"), exist_ok=True)
        os.makedirs(os.path.join(base, "dist"), exist_ok=True)
        with open(os.path.join(base, "package.json"), "w") as f:
            f.write('{"name": "pkg-%d", "version": "1.%d.0", "main": "lib/index.js"}\n' % (p, p % 50))
        total += write_text(rnd, pool, os.path.join(base, "README.md"), rnd.randint(1000, 8000))
        files += 2
        for k in range(11):
            sub = "lib" if k < 7 else "dist"
            total += write_text(rnd, pool, os.path.join(base, sub, "m%02d.js" % k),
                                rnd.randint(2000, 22000))
            files += 1

    print("%d files, %d bytes" % (files, total))


if __name__ == "__main__":
    main()
