#!/bin/bash
# containerd's snapshotter test suite against ipfly-snapshotter.
#   run_suite.sh direct     SNAPSHOTTER_BIN OUT_DIR   one snapshotter process per subtest
#   run_suite.sh containerd SNAPSHOTTER_BIN OUT_DIR   through a private containerd's proxy plugin
# Builds the Go test binary into OUT_DIR (offline, Debian's Go packages). Missing tools fail.
# IPFLY_SUITE_LAZY=1: the direct run starts each snapshotter with its lazy layers (FUSE) on.
set -euo pipefail
MODE=$1
SNAPSHOTTER=$(realpath "$2")
OUT=$(realpath -m "$3")
HERE=$(cd "$(dirname "$0")" && pwd)
. "$HERE/lib.sh"
need go containerd ctr flock
[ -x "$SNAPSHOTTER" ] || { echo "FAIL: $SNAPSHOTTER is not executable" >&2; exit 1; }
[ "$(id -u)" = 0 ] || { echo "FAIL: the suite mounts overlays and needs root" >&2; exit 1; }

mkdir -p "$OUT"
TEST_BIN="$OUT/ipfly-suite.test"
(
  flock 9
  cd "$HERE/suite"
  GO111MODULE=off GOPATH=/usr/share/gocode GOPROXY=off GOFLAGS= GOCACHE="${GOCACHE:-$OUT/go-cache}" \
    go test -c -o "$TEST_BIN.tmp" . && mv "$TEST_BIN.tmp" "$TEST_BIN"
) 9>"$OUT/ipfly-suite.lock"

case "$MODE" in
  direct)
    IPFLY_SNAPSHOTTER="$SNAPSHOTTER" "$TEST_BIN" -test.run '^TestDirect$' -test.v -test.timeout 150s \
      | tee "$OUT/suite-direct.log" | grep -E '^\s*(--- |PASS|FAIL|ok)' ;;
  containerd)
    make_env
    start_snapshotter
    start_containerd
    IPFLY_CONTAINERD_ADDRESS="$D/containerd.sock" "$TEST_BIN" -test.run '^TestViaContainerd$' -test.v \
      -test.timeout 150s | tee "$OUT/suite-containerd.log" | grep -E '^\s*(--- |PASS|FAIL|ok)' ;;
  *) echo "usage: $0 direct|containerd SNAPSHOTTER_BIN OUT_DIR" >&2; exit 2 ;;
esac
# pipefail: the test binary's status decides; also insist that nothing failed.
if grep -q -- '--- FAIL' "$OUT/suite-$MODE.log"; then exit 1; fi
grep -q '^PASS$' "$OUT/suite-$MODE.log"
