#!/usr/bin/env bash
# Issue 6 benchmark (Powergate cold fallback), one command: `bash bench/powergate.sh`.
# Builds the two binaries it needs if they are missing (BUILD_DIR, default build/), starts on
# loopback the Helia trustless gateway (tests/trustless-gateway) and the fake Powergate (gRPC + IPFS proxy) holding
# the same 200 MiB gzip layer blob cold (Filecoin only), thaws it with `ipfly thaw --wait`, then
# reads it with `ipfly cat` (fresh store and cache each time, same CID):
#   direct gateway path     sources = gateway=<Helia trustless gateway>
#   Powergate, IPFS proxy   no IPFS source; [powergate] address + ipfs_proxy (block by block)
#   Powergate, Get          no IPFS source; [powergate] address only (stream, re-import, verify)
# and prints MB/s and the ratio Powergate / gateway [target >= 0.5].
# Everything started here is stopped by PID on exit. SIZE_MIB=200 by default.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
BUILD_DIR="${BUILD_DIR:-$ROOT/build}"
IPFLY="${IPFLY:-$BUILD_DIR/cli/ipfly}"
FAKE="${FAKE_POWERGATE:-$BUILD_DIR/ipfs_fetch/powergate/ipfly-fake-powergate}"
SIZE_MIB="${SIZE_MIB:-200}"
if [ ! -x "$IPFLY" ] || [ ! -x "$FAKE" ]; then
  echo "building ipfly and ipfly-fake-powergate in $BUILD_DIR" >&2
  (cd "$ROOT" && BUILD_DIR="$BUILD_DIR" TARGETS="ipfly ipfly-fake-powergate" scripts/build.sh >&2)
fi
W="$(mktemp -d /tmp/ipfly-pgbench.XXXXXX)"
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  rm -rf "$W"
}
trap cleanup EXIT
now() { date +%s.%N; }
freeport() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
mbps() { awk -v b="$1" -v s="$2" 'BEGIN { printf "%.1f", b / s / 1e6 }'; }

echo "ipfly Powergate benchmark ($(nproc) cores, loopback, ${SIZE_MIB} MiB layer)"
# --- the layer: a gzip tar of incompressible data (the bytes are what the fetch path moves) ---
mkdir -p "$W/tree"
head -c $((SIZE_MIB << 20)) /dev/urandom > "$W/tree/data.bin"
tar -C "$W/tree" -cf - . | gzip -1 > "$W/layer.tgz"
BLOB_SIZE=$(stat -c %s "$W/layer.tgz")

# --- the IPFS node (direct gateway path): the offline Helia trustless gateway of the tests ---
GWP=$(freeport)
pids+=("$("$ROOT/tests/trustless-gateway/start-helia-gateway.sh" "$W/helia" "$GWP" --add-v1 "$W/layer.tgz")")
CID_IPFS=$(grep '^ADDED' "$W/helia.log" | awk '{print $2}')

# --- the fake Powergate, the layer cold (Filecoin only) -------------------------------------
"$FAKE" --add "$W/layer.tgz:cold" --thaw-ms 2000 --token bench-token > "$W/pg.log" 2>&1 &
pids+=("$!")
for _ in $(seq 100); do grep -q '^ready ' "$W/pg.log" && break; sleep 0.1; done
grep -q '^ready ' "$W/pg.log" || { cat "$W/pg.log" >&2; exit 1; }
GRPC=$(sed -n 's/^ready grpc=\([^ ]*\) .*/\1/p' "$W/pg.log")
PROXY=$(sed -n 's/^ready .*proxy=\(.*\)$/\1/p' "$W/pg.log")
CID=$(awk '/^object cold/ {print $3}' "$W/pg.log")
[ "$CID" = "$CID_IPFS" ] || { echo "CID mismatch: powergate $CID, helia $CID_IPFS" >&2; exit 1; }
echo "layer blob $BLOB_SIZE bytes, CID $CID (same in Helia and Powergate)"

export IPFLY_POWERGATE_TOKEN=bench-token
config() {  # NAME EXTRA_TOML -> path of a config with a fresh store
  mkdir -p "$W/$1"
  printf '[store]\ndir = "%s"\n%s\n' "$W/$1/store" "$2" > "$W/$1/config.toml"
  echo "$W/$1/config.toml"
}
PG="[powergate]
address = \"$GRPC\"
unfreeze_max_price = 1000000
job_poll_ms = 200
state_dir = \"$W/pgstate\""

# --- thaw --------------------------------------------------------------------------------
C=$(config thaw "$PG")
t0=$(now)
"$IPFLY" thaw --config "$C" --wait "$CID"
echo "thaw: $(awk -v a="$t0" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }') s (fake retrieval time 2.0 s)"

read_once() {  # CONFIG [ipfly args...] -> seconds; checks the bytes
  local c=$1; shift
  local t0 t1
  t0=$(now)
  "$IPFLY" cat --config "$c" "$@" "$CID" > "$W/out.bin"
  t1=$(now)
  cmp -s "$W/out.bin" "$W/layer.tgz" || { echo "read returned wrong bytes" >&2; exit 1; }
  rm -f "$W/out.bin"
  awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.3f", b - a }'
}

S_GW=$(read_once "$(config gw "")" --source "gateway=http://127.0.0.1:$GWP")
S_PX=$(read_once "$(config px "$PG
ipfs_proxy = \"$PROXY\"")")
S_GET=$(read_once "$(config get "$PG")")
GW=$(mbps "$BLOB_SIZE" "$S_GW"); PX=$(mbps "$BLOB_SIZE" "$S_PX"); GET=$(mbps "$BLOB_SIZE" "$S_GET")
printf '%-40s %8s s %8s MB/s\n' "direct gateway (Helia, trustless)" "$S_GW" "$GW"
printf '%-40s %8s s %8s MB/s   ratio %s [>= 0.5]\n' "Powergate via IPFS proxy (verified cat)" "$S_PX" "$PX" \
  "$(awk -v a="$PX" -v b="$GW" 'BEGIN { printf "%.2f", a / b }')"
printf '%-40s %8s s %8s MB/s   ratio %s [>= 0.5]\n' "Powergate via Get (re-import, verify)" "$S_GET" "$GET" \
  "$(awk -v a="$GET" -v b="$GW" 'BEGIN { printf "%.2f", a / b }')"
