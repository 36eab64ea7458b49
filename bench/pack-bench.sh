#!/bin/sh
# Packing benchmark (issue 4): a generated context of about 20,000 files / 450 MB
# (bench/gen-context.py) packed by snapbuild (snapbuild-pack-bench: the daemon's
# pack_run, spool file fsync'd and renamed) against `tar -cf - | pigz -6` and
# `tar -czf` on the same tree in the same run, then the same packing with node_modules
# in .dockerignore, for node_modules at 1x and 4x its size.  Every contender reads a
# warm page cache; each figure is the median of RUNS runs (default 3).  Elapsed time
# peak RSS and CPU time (user + system, all threads and processes) come from
# /usr/bin/time; CPU time is the figure to trust on a loaded machine.  Prints a Markdown report on stdout.
#
# usage: bench/pack-bench.sh [BUILD_DIR]     (default: build/; needs snapbuild-pack-bench)
set -eu

src=$(cd "$(dirname "$0")/.." && pwd)
build=${1:-$src/build}
bin=$build/bench/snapbuild-pack-bench
runs=${RUNS:-3}
[ -x "$bin" ] || { echo "pack-bench: build $bin first (cmake --build $build --target snapbuild-pack-bench)" >&2; exit 1; }
for tool in pigz tar gzip python3 /usr/bin/time; do
	command -v "$tool" >/dev/null || { echo "pack-bench: $tool is missing (scripts/setup.sh)" >&2; exit 1; }
done

work=$(mktemp -d "${TMPDIR:-/tmp}/snapbuild-pack-bench.XXXXXX")
trap 'rm -rf "$work"' EXIT INT TERM
mkdir "$work/spool"

# measure NAME CMD...: run CMD once, append "seconds peak_kb cpu_seconds" to $work/NAME.
measure() {
	name=$1
	shift
	/usr/bin/time -f "%e %M %U %S" -o "$work/time.out" "$@" >"$work/last.out"
	awk '{ printf "%s %s %.2f\n", $1, $2, $3 + $4 }' "$work/time.out" >>"$work/$name"
}

# median NAME FIELD: the median of column FIELD (1 seconds, 2 peak KB, 3 CPU seconds).
median() {
	sort -n -k"$2","$2" "$work/$1" | awk -v f="$2" '{ v[NR] = $f } END { print v[int((NR + 1) / 2)] }'
}

warm() {
	tar -cf - -C "$1" . | cat >/dev/null
}

ours() {
	rm -f "$work"/spool/*.tar.gz
	measure "$1" "$bin" -l 6 -o "$work/spool" "$2"
	sed -n 's/.*archive=\([^ ]*\).*/\1/p' "$work/last.out" >"$work/$1.path"
	sed -n 's/.*files=\([0-9]*\) bytes=\([0-9]*\).*/\1 \2/p' "$work/last.out" >"$work/$1.count"
}

echo "generating the context..." >&2
gen=$(python3 "$src/bench/gen-context.py" "$work/ctx")
warm "$work/ctx"

echo "packing, $runs runs of each..." >&2
i=0
while [ "$i" -lt "$runs" ]; do
	ours snapbuild "$work/ctx"
	measure pigz sh -c "tar -cf - -C '$work/ctx' . | pigz -6 >'$work/pigz.tar.gz'"
	measure targz tar -czf "$work/targz.tar.gz" -C "$work/ctx" .
	i=$((i + 1))
done
gzip -t "$(cat "$work/snapbuild.path")"
size_ours=$(stat -c %s "$(cat "$work/snapbuild.path")")
size_pigz=$(stat -c %s "$work/pigz.tar.gz")
size_targz=$(stat -c %s "$work/targz.tar.gz")
rm -f "$work"/spool/*.tar.gz "$work/pigz.tar.gz" "$work/targz.tar.gz"

echo "node_modules in .dockerignore, at 1x and 4x..." >&2
printf 'node_modules\n' >"$work/ctx/.dockerignore"
python3 "$src/bench/gen-context.py" "$work/ctx4" --node-modules-scale 4 >"$work/gen4.out"
printf 'node_modules\n' >"$work/ctx4/.dockerignore"
warm "$work/ctx"
warm "$work/ctx4"
i=0
while [ "$i" -lt "$runs" ]; do
	ours ignored1 "$work/ctx"
	ours ignored4 "$work/ctx4"
	i=$((i + 1))
done
nm1=$(du -sm "$work/ctx/node_modules" | cut -f1)
nm4=$(du -sm "$work/ctx4/node_modules" | cut -f1)
nmf1=$(find "$work/ctx/node_modules" -type f | wc -l)
nmf4=$(find "$work/ctx4/node_modules" -type f | wc -l)

pct() {
	awk -v a="$1" -v b="$2" 'BEGIN { printf "%+.2f%%", (a - b) * 100 / b }'
}
mib() {
	awk -v k="$1" 'BEGIN { printf "%.1f", k / 1024 }'
}
row() {
	printf '| %s | %s s | %s s | %s MiB | %s |\n' "$1" "$(median "$2" 1)" "$(median "$2" 3)" \
		"$(mib "$(median "$2" 2)")" "$3"
}

cat <<REPORT
Machine: $(nproc) CPUs, $(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -1), $(free -g | awk '/^Mem:/ { print $2 }') GiB RAM; $(uname -sr); load average at the end: $(cut -d' ' -f1-3 /proc/loadavg).
Context: $gen (bench/gen-context.py, seed 1); warm page cache; median of $runs runs.
Command: \`bench/pack-bench.sh $build\`

| Packer | Time | CPU | Peak RSS | Output |
|---|---|---|---|---|
$(row "snapbuild (pack_run, level 6, $(nproc) threads)" snapbuild "$size_ours bytes ($(pct "$size_ours" "$size_pigz") vs pigz)")
$(row "tar -cf - \| pigz -6" pigz "$size_pigz bytes")
$(row "tar -czf" targz "$size_targz bytes ($(pct "$size_targz" "$size_pigz") vs pigz)")

With \`node_modules\` in .dockerignore (the directory is skipped unread):

| Context | node_modules | Packed | Time | CPU | Peak RSS |
|---|---|---|---|---|---|
| 1x | $nm1 MiB, $nmf1 files | $(cut -d' ' -f1 "$work/ignored1.count") files, $(cut -d' ' -f2 "$work/ignored1.count") bytes | $(median ignored1 1) s | $(median ignored1 3) s | $(mib "$(median ignored1 2)") MiB |
| 4x | $nm4 MiB, $nmf4 files | $(cut -d' ' -f1 "$work/ignored4.count") files, $(cut -d' ' -f2 "$work/ignored4.count") bytes | $(median ignored4 1) s | $(median ignored4 3) s | $(mib "$(median ignored4 2)") MiB |
REPORT
