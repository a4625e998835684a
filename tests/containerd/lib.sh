# Shared helpers of the containerd tests: a private containerd + ipfly-snapshotter under one
# temporary directory, stopped by PID and unmounted on exit. Source it; needs $SNAPSHOTTER.
set -euo pipefail

need() {
  for t in "$@"; do
    command -v "$t" >/dev/null || { echo "FAIL: required tool '$t' is missing" >&2; exit 1; }
  done
}

D=""
SNAP_PID=""
CTRD_PID=""

# Everything mounted under $D, deepest first.
mounts_under() {
  awk -v d="$1" '$2 == d || index($2, d "/") == 1 {print $2}' /proc/mounts | sort -r
}

stop_pid() {  # PID: SIGTERM, wait up to 10 s, then SIGKILL
  local p=$1 i
  [ -n "$p" ] || return 0
  kill -TERM "$p" 2>/dev/null || return 0
  for i in $(seq 100); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
  kill -KILL "$p" 2>/dev/null || true
  wait "$p" 2>/dev/null || true
}

teardown() {
  local rc=$?
  set +e
  stop_pid "$CTRD_PID"
  stop_pid "$SNAP_PID"
  if [ -n "$D" ]; then
    for m in $(mounts_under "$D"); do umount "$m" 2>/dev/null || umount -l "$m"; done
    if [ -n "$(mounts_under "$D")" ]; then echo "FAIL: mounts left under $D" >&2; rc=1; fi
    # Sanitizer builds: any report fails the test.
    if grep -qE "ERROR: AddressSanitizer|runtime error:|ERROR: LeakSanitizer" \
        "$D/snapshotter.log" 2>/dev/null; then
      echo "FAIL: sanitizer report in the ipfly-snapshotter log" >&2
      rc=1
    fi
    if [ $rc -ne 0 ]; then
      echo "---- ipfly-snapshotter log"; tail -50 "$D/snapshotter.log" 2>/dev/null
      echo "---- containerd log"; tail -30 "$D/containerd.log" 2>/dev/null
    fi
    rm -rf "$D"
  fi
  exit $rc
}

make_env() {
  D=$(mktemp -d /tmp/ipfly-ctr.XXXXXX)
  trap teardown EXIT
  trap 'exit 130' INT TERM
}

# start_snapshotter [extra flags...]: ipfly-snapshotter on $D/snap.sock, root $D/snap.
start_snapshotter() {
  "$SNAPSHOTTER" --socket "$D/snap.sock" --root "$D/snap" --log-level "${SNAP_LOG:-info}" \
    "$@" >>"$D/snapshotter.log" 2>&1 &
  SNAP_PID=$!
  local i
  for i in $(seq 100); do [ -S "$D/snap.sock" ] && return 0; sleep 0.1; done
  echo "FAIL: ipfly-snapshotter did not create $D/snap.sock" >&2
  return 1
}

start_containerd() {
  cat >"$D/containerd.toml" <<TOML
version = 2
root = "$D/root"
state = "$D/state"
disabled_plugins = ["io.containerd.grpc.v1.cri"]
[grpc]
  address = "$D/containerd.sock"
[plugins."io.containerd.internal.v1.opt"]
  path = "$D/opt"
[proxy_plugins]
  [proxy_plugins.ipfly]
    type = "snapshot"
    address = "$D/snap.sock"
TOML
  containerd --config "$D/containerd.toml" >>"$D/containerd.log" 2>&1 &
  CTRD_PID=$!
  local i
  for i in $(seq 100); do
    ctr -a "$D/containerd.sock" version >/dev/null 2>&1 && return 0
    sleep 0.1
  done
  echo "FAIL: containerd did not start" >&2
  return 1
}

CTR() { ctr -a "$D/containerd.sock" -n ipflytest "$@"; }
