#!/bin/sh
# The integration tests with every daemon they start (through tests/integration/harness.py's
# Daemon) running under valgrind: a definite leak or a memory error in any of them fails the
# test that ran it (valgrind exits 99, the harness reports the daemon's exit status) and is
# listed at the end from valgrind's own logs.
#
#   scripts/valgrind.sh [BUILD_DIR] [CTEST_ARGS...]
#
# BUILD_DIR (default build-valgrind) is configured as a plain RelWithDebInfo build:
# valgrind cannot run an ASan binary.  Extra arguments go to ctest, e.g. -R test_remote.
# The harness stretches its start and stop waits (SNAPBUILD_DAEMON_WRAPPER); a test with
# a tight deadline of its own may still time out under valgrind's slowdown.  Daemons a
# test starts without the harness (kill -9 recovery, start-up flag checks, the
# unprivileged daemon of test_isolation) run without valgrind.
set -eu
cd "$(dirname "$0")/.."

build=${1:-build-valgrind}
[ $# -gt 0 ] && shift
command -v valgrind >/dev/null || { echo "valgrind is not installed" >&2; exit 2; }

cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build "$build" -j"$(nproc)"

logs=$(mktemp -d "${TMPDIR:-/tmp}/snapbuild-valgrind.XXXXXX")
SNAPBUILD_DAEMON_WRAPPER="valgrind --quiet --leak-check=full --errors-for-leak-kinds=definite \
--show-leak-kinds=definite --error-exitcode=99 --track-fds=no --log-file=$logs/snapbuildd.%p.log"
export SNAPBUILD_DAEMON_WRAPPER

status=0
ctest --test-dir "$build" -L integration --output-on-failure --timeout 1800 "$@" || status=1

runs=$(find "$logs" -name 'snapbuildd.*.log' | wc -l)
# --quiet: a log holds something only when valgrind found something.
bad=$(find "$logs" -name 'snapbuildd.*.log' -size +0c | sort)
echo "== valgrind: $runs daemon runs, logs in $logs"
if [ -n "$bad" ]; then
	echo "== valgrind found errors in:"
	for f in $bad; do
		echo "--- $f"
		cat "$f"
	done
	status=1
else
	echo "== valgrind: no definite leaks, no memory errors"
fi
exit $status
