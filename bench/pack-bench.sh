#!/bin/sh
# Packing benchmark: the client packs contexts now (the daemon only takes the archive
# in), so this measures the CLI itself, `snapbuild context DIR --save FILE` — the same
# packctx_run/pack_run that `snapbuild create` runs before build.submit, with the
# caller's rights, archive written to a file, fsync'd and renamed — against
# `tar -cf - -C DIR . | pigz -6` on the same tree in the same run, then the same
# packing with node_modules in .dockerignore, for node_modules at 1x and 4x its size.
# The context is bench/gen-context.py's (seed 1, SCALE=1 by default).  Every contender
# reads a warm page cache; each figure is the median of RUNS runs (default 3).  Elapsed
# time, peak RSS of the packing process (the largest process of a pipeline) and CPU
# time (user + system, all threads and processes) come from `/usr/bin/time -v`; CPU
# time is the figure to trust on a loaded machine.  Prints a Markdown report on stdout.
#
# Targets: wall time at most 0.6x tar | pigz -6; peak RSS under 64 MiB.
#
# usage: bench/pack-bench.sh [BUILD_DIR]     (default: build/; needs BUILD_DIR/client/snapbuild)
#        RUNS=5 SCALE=0.5 bench/pack-bench.sh build
set -eu

src=$(cd "$(dirname "$0")/.." && pwd)
build=${1:-$src/build}
bin=$build/client/snapbuild
runs=${RUNS:-3}
scale=${SCALE:-1}
[ -x "$bin" ] || { echo "pack-bench: build $bin first (cmake --build $build --target snapbuild)" >&2; exit 1; }
for tool in pigz tar python3 /usr/bin/time; do
	command -v "$tool" >/dev/null || { echo "pack-bench: $tool is missing (apt-get install pigz time)" >&2; exit 1; }
done

work=$(mktemp -d "${TMPDIR:-/tmp}/snapbuild-pack-bench.XXXXXX")
trap 'rm -rf "$work"' EXIT INT TERM

# measure NAME CMD...: run CMD once, append "seconds peak_kb cpu_seconds" to $work/NAME.
measure() {
	name=$1
	shift
	/usr/bin/time -v -o "$work/time.out" "$@" >"$work/last.out"
	awk -F': ' '
		/Elapsed \(wall clock\)/ { n = split($2, t, ":"); s = 0; for (i = 1; i <= n; i++) s = s * 60 + t[i] }
		/Maximum resident set size/ { kb = $2 }
		/User time/ { u = $2 }
		/System time/ { y = $2 }
		END { printf "%.2f %d %.2f\n", s, kb, u + y }' "$work/time.out" >>"$work/$name"
}

# median NAME FIELD: the median of column FIELD (1 seconds, 2 peak KB, 3 CPU seconds).
median() {
	sort -n -k"$2","$2" "$work/$1" | awk -v f="$2" '{ v[NR] = $f } END { print v[int((NR + 1) / 2)] }'
}

warm() {
	tar -cf - -C "$1" . | cat >/dev/null
}

# ours NAME DIR: snapbuild context DIR --save FILE, counts from its JSON.
ours() {
	rm -f "$work/$1.tar.gz"
	measure "$1" "$bin" context -o json "$2" --save "$work/$1.tar.gz" --no-cache
	python3 -c 'import json, sys; r = json.load(sys.stdin); print(r["file_count"], r["total_bytes"], r["archive"]["bytes"])' \
		<"$work/last.out" >"$work/$1.count"
}

echo "generating the context..." >&2
gen=$(python3 "$src/bench/gen-context.py" "$work/ctx" --scale "$scale")
warm "$work/ctx"

echo "packing, $runs runs of each..." >&2
i=0
while [ "$i" -lt "$runs" ]; do
	ours snapbuild "$work/ctx"
	measure pigz sh -c "tar -cf - -C '$work/ctx' . | pigz -6 >'$work/pigz.tar.gz'"
	i=$((i + 1))
done
gzip -t "$work/snapbuild.tar.gz"
size_ours=$(stat -c %s "$work/snapbuild.tar.gz")
size_pigz=$(stat -c %s "$work/pigz.tar.gz")
rm -f "$work/snapbuild.tar.gz" "$work/pigz.tar.gz"

echo "node_modules in .dockerignore, at 1x and 4x..." >&2
printf 'node_modules\n' >"$work/ctx/.dockerignore"
python3 "$src/bench/gen-context.py" "$work/ctx4" --scale "$scale" --node-modules-scale 4 >"$work/gen4.out"
printf 'node_modules\n' >"$work/ctx4/.dockerignore"
warm "$work/ctx"
warm "$work/ctx4"
i=0
while [ "$i" -lt "$runs" ]; do
	ours ignored1 "$work/ctx"
	ours ignored4 "$work/ctx4"
	i=$((i + 1))
done
rm -f "$work"/ignored*.tar.gz
nm1=$(du -sm "$work/ctx/node_modules" | cut -f1)
nm4=$(du -sm "$work/ctx4/node_modules" | cut -f1)
nmf1=$(find "$work/ctx/node_modules" -type f | wc -l)
nmf4=$(find "$work/ctx4/node_modules" -type f | wc -l)

pct() {
	awk -v a="$1" -v b="$2" 'BEGIN { printf "%+.2f%%", (a - b) * 100 / b }'
}
ratio() {
	awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2fx", a / b }'
}
mib() {
	awk -v k="$1" 'BEGIN { printf "%.1f", k / 1024 }'
}
row() {
	printf '| %s | %s s | %s s | %s MiB | %s |\n' "$1" "$(median "$2" 1)" "$(median "$2" 3)" \
		"$(mib "$(median "$2" 2)")" "$3"
}
packed() {
	printf '%s files, %s bytes' "$(cut -d' ' -f1 "$work/$1.count")" "$(cut -d' ' -f2 "$work/$1.count")"
}

cat <<REPORT
Machine: $(nproc) CPUs, $(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -1), $(free -g | awk '/^Mem:/ { print $2 }') GiB RAM; $(uname -sr); load average at the end: $(cut -d' ' -f1-3 /proc/loadavg).
Context: $gen (bench/gen-context.py, seed 1, scale $scale); warm page cache; median of $runs runs.
Command: \`RUNS=$runs SCALE=$scale bench/pack-bench.sh $build\`

| Packer | Time | CPU | Peak RSS | Output |
|---|---|---|---|---|
$(row "\`snapbuild context DIR --save FILE\` (level 6, $(nproc) threads)" snapbuild "$size_ours bytes ($(pct "$size_ours" "$size_pigz") vs pigz)")
$(row "\`tar -cf - -C DIR . \| pigz -6\`" pigz "$size_pigz bytes")

Wall time, snapbuild / tar | pigz -6: **$(ratio "$(median snapbuild 1)" "$(median pigz 1)")** (target ≤ 0.60x); CPU: $(ratio "$(median snapbuild 3)" "$(median pigz 3)"); snapbuild's peak RSS $(mib "$(median snapbuild 2)") MiB (target < 64 MiB).

With \`node_modules\` in .dockerignore (the directory is skipped unread):

| Context | node_modules | Packed | Time | CPU | Peak RSS |
|---|---|---|---|---|---|
| 1x | $nm1 MiB, $nmf1 files | $(packed ignored1) | $(median ignored1 1) s | $(median ignored1 3) s | $(mib "$(median ignored1 2)") MiB |
| 4x | $nm4 MiB, $nmf4 files | $(packed ignored4) | $(median ignored4 1) s | $(median ignored4 3) s | $(mib "$(median ignored4 2)") MiB |
REPORT
