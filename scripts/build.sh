#!/usr/bin/env bash
# Configures and builds ipfly into build/ (ccache, Ninja). Extra arguments go to cmake.
#   BUILD_DIR=build-asan scripts/build.sh -DIPFLY_SANITIZE=ON
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
BUILD_DIR="${BUILD_DIR:-$ROOT/build}"
export CCACHE_DIR="${CCACHE_DIR:-$HOME/.cache/ccache}"
cmake -S "$ROOT" -B "$BUILD_DIR" -G Ninja -DCMAKE_BUILD_TYPE="${BUILD_TYPE:-RelWithDebInfo}" "$@" >/dev/null
ninja -C "$BUILD_DIR" -j"${JOBS:-$(nproc)}" ${TARGETS:-}
