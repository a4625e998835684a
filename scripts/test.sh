#!/usr/bin/env bash
# Runs the whole ipfly test suite: installs dependencies (idempotent), builds with warnings as
# errors, checks formatting, runs each libFuzzer target for a bounded time, runs the unit tests
# again under ASan+UBSan, then every unit and integration test (real IPFS nodes, real FUSE mounts
# on loopback) through ctest. Exits non-zero on any failure.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
cd "$ROOT"
step() { printf '\n==> %s\n' "$*" >&2; }

step "dependencies"
bash scripts/setup.sh

step "build (warnings are errors)"
BUILD_DIR="$ROOT/build" bash scripts/build.sh -DIPFLY_WERROR=ON -DBUILD_TESTING=ON

step "format check (.clang-format)"
mapfile -t files < <(git ls-files '*.h' '*.cc')
clang-format --dry-run --Werror "${files[@]}"

step "fuzz the parsers (${FUZZ_SECONDS:-20} s each)"
bash scripts/fuzz.sh

step "unit tests under AddressSanitizer + UndefinedBehaviorSanitizer"
BUILD_DIR="$ROOT/build-asan" \
  TARGETS="core_tests ipfs_fetch_tests layer_tests fusefs_tests fusefs_mount_child snapshotter_tests powergate_tests" \
  bash scripts/build.sh -DIPFLY_SANITIZE=ON -DIPFLY_WERROR=ON -DBUILD_TESTING=ON
for t in core/core_tests ipfs_fetch/ipfs_fetch_tests layer/layer_tests fusefs/fusefs_tests \
         snapshotter/snapshotter_tests ipfs_fetch/powergate/powergate_tests; do
  echo "asan: $t" >&2
  (cd "$ROOT/build-asan" && ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=halt_on_error=1 \
     "./$t" --gtest_brief=1 > "$ROOT/build-asan/$(basename "$t").log" 2>&1) || {
    echo "asan: $t FAILED" >&2; tail -60 "$ROOT/build-asan/$(basename "$t").log" >&2; exit 1; }
done

step "tests"
cd "$ROOT/build"
ctest --output-on-failure -j2 --timeout 1500
