#!/usr/bin/env bash
# Builds the libFuzzer targets with clang (ASan + UBSan) into build-fuzz/ and runs each for
# FUZZ_SECONDS (default 20) from its seed corpus in fuzz/corpus/<name>/. Any crash fails.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
B="$ROOT/build-fuzz"
export CCACHE_DIR="${CCACHE_DIR:-$HOME/.cache/ccache}"
CC=clang CXX=clang++ cmake -S "$ROOT" -B "$B" -G Ninja -DIPFLY_FUZZ=ON -DBUILD_TESTING=OFF \
  -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
ninja -C "$B" -j"$(nproc)" $(cd "$ROOT/fuzz" && ls *_fuzz.cc | sed 's/\.cc$//') >/dev/null
for src in "$ROOT"/fuzz/*_fuzz.cc; do
  name="$(basename "$src" .cc)"
  work="$B/corpus-$name"
  mkdir -p "$work"
  seeds=()
  [ -d "$ROOT/fuzz/corpus/$name" ] && seeds=("$ROOT/fuzz/corpus/$name")
  echo "fuzz: $name for ${FUZZ_SECONDS:-20} s" >&2
  (cd "$B" && "./fuzz/$name" -max_total_time="${FUZZ_SECONDS:-20}" -max_len=65536 \
     -print_final_stats=0 "$work" "${seeds[@]}" >"$B/$name.log" 2>&1) || {
    echo "fuzz: $name FAILED:" >&2; tail -40 "$B/$name.log" >&2; exit 1; }
done
echo "fuzz: all targets ran clean" >&2
