#!/usr/bin/env python3
"""Submit a context directory to the snapbuild daemon, print its build log as it
happens, wait for the job and print the snapshot id.  Exit 0 only on success.

    PYTHONPATH=client/python examples/python/submit_and_wait.py ./app alias=app@v1
"""
import sys

import snapbuild


def main(argv):
    if len(argv) < 2:
        print("usage: submit_and_wait.py CONTEXT_DIR [PARAM=VALUE...]", file=sys.stderr)
        return 2
    params = dict(a.split("=", 1) for a in argv[2:])
    try:
        with snapbuild.Client() as c:
            job = c.submit(argv[1], **params)
            print("job", job["id"])
            for event in c.follow(job["id"]):
                if event["kind"] == "log":
                    print("log", event["step"], event["text"])
                elif event["kind"] == "state":
                    print("state", event["state"])
            job = c.wait(job["id"])
    except snapbuild.Error as e:
        print("submit_and_wait: %s (code %s)" % (e, e.code), file=sys.stderr)
        return 3 if isinstance(e, snapbuild.ConnectError) else 1
    print("result", job["state"], job.get("snapshot_id"))
    return 0 if job["state"] == "succeeded" else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv))
