#!/usr/bin/env bash
# Runs the whole ipfly test suite: installs dependencies (idempotent), builds with warnings as
# errors, runs every unit and integration test (real IPFS nodes on loopback), checks formatting,
# and runs each libFuzzer target for a bounded time. Exits non-zero on any failure.
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

step "tests"
cd "$ROOT/build"
ctest --output-on-failure -j2 --timeout 1500
