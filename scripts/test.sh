#!/bin/sh
# The whole test suite: install what is missing, build a normal and an
# AddressSanitizer+UndefinedBehaviorSanitizer tree, and run every test with ctest in each.
set -eu
cd "$(dirname "$0")/.."

./scripts/setup.sh

jobs=$(nproc)
cmake -S . -B build -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build build -j"$jobs"
cmake -S . -B build-asan -DCMAKE_BUILD_TYPE=Debug -DSNAPBUILD_SANITIZE=ON -DSNAPBUILD_FUZZ=ON \
	-DCMAKE_C_COMPILER=clang >/dev/null
cmake --build build-asan -j"$jobs"

status=0
echo "== tests: normal build"
ctest --test-dir build --output-on-failure -j"$jobs" || status=1
echo "== tests: ASan+UBSan build"
ctest --test-dir build-asan --output-on-failure -j"$jobs" || status=1
exit $status
