#!/usr/bin/env python3
"""Write the seed archives of the fuzz-intake target into tests/fuzz/corpus/intake/.

Small .tar.gz files a client could send to build.submit, good and hostile: what
daemon/intake.c accepts (a plain context, a symlinked Dockerfile, names without "./",
a hard link inside) and what it must refuse (".." and absolute members, a hard link
out, a device node, a FIFO, no Dockerfile, a Dockerfile that is a directory, a symlink
loop, a truncated stream, a tar without gzip).  The output is the same bytes on every
run (gzip mtime 0, fixed member times), so regenerating changes nothing.

usage: tests/fuzz/gen-intake-corpus.py [OUT_DIR]
"""
import gzip
import io
import os
import sys
import tarfile

DOCKERFILE = b"FROM debian:12\nCOPY . /app\n"


def member(name, kind=tarfile.REGTYPE, data=b"", link="", mode=0o644):
    info = tarfile.TarInfo(name)
    info.type = kind
    info.mode = mode
    info.mtime = 0
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    info.linkname = link
    if kind == tarfile.REGTYPE:
        info.size = len(data)
    if kind in (tarfile.CHRTYPE, tarfile.BLKTYPE):
        info.devmajor, info.devminor = 1, 3
    return info, (io.BytesIO(data) if kind == tarfile.REGTYPE else None)


def tar_bytes(members, fmt=tarfile.PAX_FORMAT):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=fmt) as t:
        for info, f in members:
            t.addfile(info, f)
    return buf.getvalue()


def gz(raw):
    buf = io.BytesIO()
    with gzip.GzipFile(fileobj=buf, mode="wb", compresslevel=9, mtime=0, filename="") as g:
        g.write(raw)
    return buf.getvalue()


def main():
    out = sys.argv[1] if len(sys.argv) > 1 else os.path.join(
        os.path.dirname(os.path.abspath(__file__)), "corpus", "intake")
    os.makedirs(out, exist_ok=True)
    good = [member("./", tarfile.DIRTYPE, mode=0o755),
            member("./Dockerfile", data=DOCKERFILE),
            member("./src/", tarfile.DIRTYPE, mode=0o755),
            member("./src/app.py", data=b"print('hello')\n"),
            member("./etc", tarfile.SYMTYPE, link="/etc")]
    seeds = {
        "good": gz(tar_bytes(good)),
        "good-ustar-no-dot": gz(tar_bytes([member("Dockerfile", data=DOCKERFILE),
                                           member("a/b.txt", data=b"b\n")],
                                          tarfile.USTAR_FORMAT)),
        "good-symlink-dockerfile": gz(tar_bytes([
            member("./Dockerfile", tarfile.SYMTYPE, link="docker/../docker/Dockerfile.real"),
            member("./docker/Dockerfile.real", data=DOCKERFILE)])),
        "good-hardlink-inside": gz(tar_bytes([
            member("./Dockerfile", data=DOCKERFILE),
            member("./copy", tarfile.LNKTYPE, link="./Dockerfile")])),
        "good-long-name": gz(tar_bytes([
            member("./Dockerfile", data=DOCKERFILE),
            member("./" + "/".join(["d%02d" % i for i in range(40)]) + "/f", data=b"x")])),
        "bad-dotdot": gz(tar_bytes([member("./Dockerfile", data=DOCKERFILE),
                                    member("./a/../../escape", data=b"x")])),
        "bad-absolute": gz(tar_bytes([member("./Dockerfile", data=DOCKERFILE),
                                      member("/etc/cron.d/x", data=b"x")])),
        "bad-hardlink-out": gz(tar_bytes([member("./Dockerfile", data=DOCKERFILE),
                                          member("./shadow", tarfile.LNKTYPE,
                                                 link="../../etc/shadow")])),
        "bad-device": gz(tar_bytes([member("./Dockerfile", data=DOCKERFILE),
                                    member("./null", tarfile.CHRTYPE)])),
        "bad-fifo": gz(tar_bytes([member("./Dockerfile", data=DOCKERFILE),
                                  member("./pipe", tarfile.FIFOTYPE)])),
        "bad-no-dockerfile": gz(tar_bytes([member("./src/app.py", data=b"x\n")])),
        "bad-dockerfile-dir": gz(tar_bytes([member("./Dockerfile/", tarfile.DIRTYPE,
                                                   mode=0o755)])),
        "bad-symlink-loop": gz(tar_bytes([member("./Dockerfile", tarfile.SYMTYPE, link="a"),
                                          member("./a", tarfile.SYMTYPE, link="Dockerfile")])),
        "bad-plain-tar": tar_bytes([member("Dockerfile", data=DOCKERFILE)],
                                   tarfile.USTAR_FORMAT)[:1536],
    }
    whole = seeds["good"]
    seeds["bad-truncated"] = whole[:len(whole) // 2]
    for name, data in seeds.items():
        with open(os.path.join(out, name), "wb") as f:
            f.write(data)
    print("%d seeds, %d bytes in %s" % (len(seeds), sum(map(len, seeds.values())), out))


if __name__ == "__main__":
    main()
