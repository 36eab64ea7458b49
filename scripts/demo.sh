#!/bin/sh
# The main job, end to end on one machine: builds snapbuild, starts snapbuild-sim
# (standing in for Together's builder and management APIs) and snapbuildd on a
# private socket, then builds examples/hello into a snapshot with the CLI, showing
# the live log and the snapshot id; then builds it again unchanged (the daemon reuses
# the snapshot at once) and after an edit (the builder's layer cache: the steps before
# the COPY print CACHED and take no time).  Everything runs under a temporary directory
# that is removed at the end.
set -eu
cd "$(dirname "$0")/.."
top=$(pwd)

./scripts/setup.sh
cmake -S . -B build -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build build -j"$(nproc)" --target snapbuildd snapbuild snapbuild-sim >/dev/null

work=$(mktemp -d /tmp/snapbuild-demo.XXXXXX)
sim_pid=""
daemon_pid=""
cleanup() {
	[ -n "$daemon_pid" ] && kill "$daemon_pid" 2>/dev/null && wait "$daemon_pid" 2>/dev/null
	[ -n "$sim_pid" ] && kill "$sim_pid" 2>/dev/null && wait "$sim_pid" 2>/dev/null
	rm -rf "$work"
}
trap cleanup EXIT INT TERM

# A demo key, known to the simulator and the daemon only (never on a command line).
key="demo-$(od -An -N8 -tx1 /dev/urandom | tr -d ' \n')"

SNAPBUILD_SIM_API_KEY="$key" build/tests/sim/snapbuild-sim --listen 127.0.0.1:0 \
	--log-interval-ms 60 >"$work/sim.addr" 2>"$work/sim.log" &
sim_pid=$!
i=0
until [ -s "$work/sim.addr" ]; do
	i=$((i + 1))
	[ $i -gt 200 ] && { echo "demo: the simulator did not start:" >&2; cat "$work/sim.log" >&2; exit 1; }
	sleep 0.05
done
addr=$(head -n 1 "$work/sim.addr")
echo "snapbuild-sim listening on http://$addr"

TOGETHER_API_KEY="$key" TOGETHER_BASE_URL="http://$addr" build/daemon/snapbuildd \
	--socket "$work/snapbuild.sock" --state-dir "$work/state" 2>"$work/daemon.log" &
daemon_pid=$!
export SNAPBUILD_SOCKET="$work/snapbuild.sock"
i=0
until build/client/snapbuild daemon info >/dev/null 2>&1; do
	i=$((i + 1))
	[ $i -gt 200 ] && { echo "demo: snapbuildd did not start:" >&2; cat "$work/daemon.log" >&2; exit 1; }
	sleep 0.05
done
echo "snapbuildd listening on $SNAPBUILD_SOCKET"
echo
# A copy of the example, to edit between builds; the pack cache in the demo's directory.
cp -R "$top/examples/hello" "$work/hello"
export XDG_CACHE_HOME="$work/cache"
now() { date +%s.%N; }
took() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "(%.2f s)\n", b - a }'; }

echo "\$ snapbuild create --context hello --alias hello@v1"
t=$(now)
build/client/snapbuild create --context "$work/hello" --alias hello@v1
took "$t"
echo
echo "\$ snapbuild create --context hello --alias hello@v1     # again, nothing changed"
t=$(now)
build/client/snapbuild create --context "$work/hello" --alias hello@v1
took "$t"
echo
echo "\$ echo '# edited' >> hello/src/serve.sh && snapbuild create --context hello --alias hello@v2"
echo '# edited' >>"$work/hello/src/serve.sh"
t=$(now)
build/client/snapbuild create --context "$work/hello" --alias hello@v2
took "$t"
echo
echo "\$ snapbuild jobs"
build/client/snapbuild jobs
