#!/usr/bin/env bash
# ipfly benchmarks (issue 2), one command: `bash bench/run.sh`. Starts a js-ipfs node (Kubo RPC
# API) and a Helia trustless gateway on loopback, measures ipfly against the named peer in the
# same run, and prints ratios (target in brackets). Needs a built tree (scripts/build.sh).
#   ipfly get 256 MiB via trustless gateway  vs  curl of the same content as one CAR   [>= 0.8]
#   ipfly get 256 MiB via Kubo RPC           vs  curl of /api/v0/cat                  [>= 0.8]
#   ipfly add --only-hash 1 GiB              vs  openssl dgst -sha256                  [>= 0.7]
#   peak RSS of ipfly add / get on 1 GiB                                              [<= 64 MiB]
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
IPFLY="${IPFLY:-$ROOT/build/cli/ipfly}"
RUNS="${RUNS:-3}"
W="$(mktemp -d /tmp/ipfly-bench.XXXXXX)"
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$W"; }
trap cleanup EXIT
[ -x "$IPFLY" ] || { echo "build first: scripts/build.sh" >&2; exit 1; }
freeport() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
API=$(freeport); GWP=$(freeport); HEL=$(freeport)

head -c $((256 << 20)) /dev/urandom > "$W/obj256"
pids+=("$("$ROOT/tests/ipfs-node/start-jsipfs.sh" "$W/jsipfs" "$API" "$GWP")")
pids+=("$("$ROOT/tests/trustless-gateway/start-helia-gateway.sh" "$W/helia" "$HEL" --add-v1 "$W/obj256")")
RPC="http://127.0.0.1:$API"; GW="http://127.0.0.1:$HEL"
CID=$(grep '^ADDED' "$W/helia.log" | awk '{print $2}')
CID_RPC=$(curl -sf -X POST -F "file=@$W/obj256" "$RPC/api/v0/add?cid-version=1&cid-base=base32" | tail -1 | python3 -c 'import json,sys; print(json.load(sys.stdin)["Hash"])')
[ "$CID" = "$CID_RPC" ] || { echo "CID mismatch between nodes: $CID vs $CID_RPC" >&2; exit 1; }
SUM=$(sha256sum "$W/obj256" | cut -d' ' -f1)

# best-of-N wall time of a command, in seconds
best() {
  local b=""
  for _ in $(seq "$RUNS"); do
    local t0 t1; t0=$(date +%s.%N); "$@" >/dev/null; t1=$(date +%s.%N)
    b=$(awk -v a="$t0" -v c="$t1" -v b="$b" 'BEGIN { t = c - a; if (b == "" || t < b) print t; else print b }')
  done
  echo "$b"
}
ipfly_get() { "$IPFLY" get "$CID" -o "$W/out" --store "$W/st" --source "$1"; }
# best-of-N for ipfly: a fresh store before each run (every block comes from the source), and
# the output checked after each run; neither is timed.
best_get() {
  local b=""
  for _ in $(seq "$RUNS"); do
    rm -rf "$W/st" "$W/out"
    local t0 t1; t0=$(date +%s.%N); ipfly_get "$1" >/dev/null; t1=$(date +%s.%N)
    [ "$(sha256sum "$W/out" | cut -d' ' -f1)" = "$SUM" ] || { echo "WRONG BYTES via $1" >&2; exit 1; }
    b=$(awk -v a="$t0" -v c="$t1" -v b="$b" 'BEGIN { t = c - a; if (b == "" || t < b) print t; else print b }')
  done
  echo "$b"
}
curl_car() { curl -sf -o "$W/car" -H 'Accept: application/vnd.ipld.car' "$GW/ipfs/$CID?format=car"; }
curl_cat() { curl -sf -o "$W/cat" -X POST "$RPC/api/v0/cat?arg=$CID"; }
report() {  # name, peer, t_ipfly, t_peer, bytes, target
  awk -v n="$1" -v p="$2" -v ti="$3" -v tp="$4" -v b="$5" -v tg="$6" 'BEGIN {
    printf "%-34s %8.1f MB/s   %-26s %8.1f MB/s   ratio %.2f  [target >= %s]\n",
      n, b / ti / 1e6, p, b / tp / 1e6, tp / ti, tg }'
}
SZ=$((256 << 20))
echo "ipfly benchmarks ($(nproc) cores; best of $RUNS runs; loopback)"
t_car=$(best curl_car); t_gw=$(best_get "gateway=$GW")
report "ipfly get 256MiB (gateway)" "curl CAR (same gateway)" "$t_gw" "$t_car" "$SZ" 0.8
t_cat=$(best curl_cat); t_rpc=$(best_get "kubo=$RPC")
report "ipfly get 256MiB (Kubo RPC)" "curl /api/v0/cat" "$t_rpc" "$t_cat" "$SZ" 0.8

head -c $((1 << 30)) /dev/urandom > "$W/g1"
t_ssl=$(best openssl dgst -sha256 "$W/g1"); t_hash=$(best "$IPFLY" add --only-hash -q "$W/g1")
report "ipfly add --only-hash 1GiB" "openssl dgst -sha256" "$t_hash" "$t_ssl" $((1 << 30)) 0.7

rss() { /usr/bin/time -f %M "$@" 2>&1 >/dev/null | tail -1; }
rm -rf "$W/st1"
rss_add=$(rss "$IPFLY" add -q --store "$W/st1" "$W/g1")
G1=$("$IPFLY" add -q --only-hash "$W/g1")
rss_get=$(rss "$IPFLY" get "$G1" -o "$W/g1.out" --store "$W/st1")
cmp -s "$W/g1" "$W/g1.out" || { echo "WRONG BYTES reading back 1 GiB" >&2; exit 1; }
printf "%-34s %8.1f MiB  [target <= 64 MiB]\n" "peak RSS ipfly add 1GiB (store)" "$(awk -v k="$rss_add" 'BEGIN{print k/1024}')"
printf "%-34s %8.1f MiB  [target <= 64 MiB]\n" "peak RSS ipfly get 1GiB (store)" "$(awk -v k="$rss_get" 'BEGIN{print k/1024}')"
rm -rf "$W/st" "$W/out"
rss_gget=$(rss "$IPFLY" get "$CID" -o "$W/out" --store "$W/st" --source "kubo=$RPC")
printf "%-34s %8.1f MiB  [target <= 64 MiB]\n" "peak RSS ipfly get 256MiB (Kubo RPC)" "$(awk -v k="$rss_gget" 'BEGIN{print k/1024}')"
