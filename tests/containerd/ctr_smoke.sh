#!/bin/bash
# Smoke test of the ordinary (fallback) path with a real containerd + runc:
#   import a busybox image, run a container on the ipfly snapshotter, remove the image
#   (containerd GC must remove every snapshot), and survive kill -9 of the snapshotter.
#   ctr_smoke.sh SNAPSHOTTER_BIN IPFLY_BIN
set -euo pipefail
SNAPSHOTTER=$(realpath "$1")
IPFLY=$(realpath "$2")
HERE=$(cd "$(dirname "$0")" && pwd)
. "$HERE/lib.sh"
need containerd ctr runc busybox tar gzip sha256sum
[ "$(id -u)" = 0 ] || { echo "FAIL: needs root" >&2; exit 1; }
make_env

fail() { echo "FAIL: $*" >&2; exit 1; }
IMG=docker.io/library/bbtest:latest
"$HERE/make-busybox-image" "$D/bb.tar" "$IMG" >/dev/null

start_snapshotter --metrics 127.0.0.1:0
start_containerd

CTR image import --snapshotter ipfly "$D/bb.tar" >/dev/null
out=$(CTR run --snapshotter ipfly --rm "$IMG" c1 /bin/busybox echo hello)
[ "$out" = "hello" ] || fail "container printed '$out', expected 'hello'"
out=$(CTR run --snapshotter ipfly --rm "$IMG" c2 /bin/busybox cat /etc/hello.txt)
[ "$out" = "hello from layer 2" ] || fail "layer 2 content: '$out'"
n=$(CTR snapshots --snapshotter ipfly ls | tail -n +2 | wc -l)
[ "$n" -eq 2 ] || fail "expected 2 committed layer snapshots after unpack, got $n"
echo "ok: container on ipfly snapshots printed hello ($n layer snapshots)"

# Metrics and status of the fallback path.
port=$(sed -n 's|.*metrics on http://127.0.0.1:\([0-9]*\)/metrics.*|\1|p' "$D/snapshotter.log" | tail -1)
[ -n "$port" ] || fail "no metrics port in the snapshotter log"
metrics=$(curl -sf "http://127.0.0.1:$port/metrics") || fail "GET /metrics failed"
echo "$metrics" | grep -q '^ipfly_snapshotter_rpc_total{method="Prepare",code="OK"} [1-9]' ||
  fail "no successful Prepare counted in /metrics"
echo "$metrics" | grep -q '^ipfly_snapshotter_lazy_mounts_total 0$' || fail "lazy mounts counted"
# The containers' active snapshots leave the backend at containerd's next GC (asynchronous).
status_ok() {
  curl -sf "http://127.0.0.1:$port/status" | python3 -c '
import json, sys
d = json.load(sys.stdin)
kinds = sorted(s["kind"] for s in d["snapshots"])
assert kinds == ["committed", "committed"], kinds
assert not any("lazy" in s for s in d["snapshots"])
' 2>>"$D/status.err"
}
ok=""
for i in $(seq 50); do status_ok && { ok=1; break; }; sleep 0.1; done
[ -n "$ok" ] || fail "/status does not list the 2 committed snapshots: $(tail -2 "$D/status.err")"
st=$("$IPFLY" status --snapshotter "127.0.0.1:$port" --all) || fail "ipfly status failed"
echo "$st" | grep -q "2 snapshots, 0 lazy" || fail "ipfly status: $st"
echo "$st" | grep -q "^fallbacks" || fail "ipfly status shows no fallback line: $st"
echo "$st"
echo "ok: /metrics, /status and 'ipfly status' report the ordinary snapshots"

# Crash: kill -9, restart; the state survives and a new container runs.
kill -KILL "$SNAP_PID"; wait "$SNAP_PID" 2>/dev/null || true
SNAP_PID=""
start_snapshotter  # its stale FUSE mount is cleaned by the snapshotter itself
n2=-1
for i in $(seq 40); do  # containerd redials the proxy socket with backoff (up to ~3 s)
  if ls_out=$(CTR snapshots --snapshotter ipfly ls 2>>"$D/ctr.err"); then
    n2=$(echo "$ls_out" | tail -n +2 | wc -l)
    break
  fi
  sleep 0.25
done
[ "$n2" -eq "$n" ] || fail "after kill -9 + restart: $n2 snapshots, expected $n"
out=""
for i in $(seq 30); do  # containerd reconnects to the new socket with backoff
  out=$(CTR run --snapshotter ipfly --rm "$IMG" c3 /bin/busybox echo again 2>>"$D/ctr.err") && break
  sleep 0.5
done
[ "$out" = "again" ] || fail "after restart the container printed '$out'; $(tail -3 "$D/ctr.err")"
echo "ok: kill -9 + restart keeps the snapshots; a new container runs"

# GC: removing the image removes every snapshot of the ipfly snapshotter.
CTR image rm --sync "$IMG" >/dev/null
left=""
for i in $(seq 50); do
  left=$(CTR snapshots --snapshotter ipfly ls | tail -n +2)
  [ -z "$left" ] && break
  sleep 0.1
done
[ -z "$left" ] || fail "snapshots left after 'ctr image rm --sync': $left"
ids=$(ls "$D/snap/snapshots")
[ -z "$ids" ] || fail "snapshot directories left after GC: $ids"
echo "ok: ctr image rm --sync leaves no snapshots and no directories"
