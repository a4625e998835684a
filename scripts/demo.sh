#!/usr/bin/env bash
# The main job: import a sample file tree into the embedded block store and read it back by CID
# (CIDs, throughput); then, as root, start ipfly-registry, ipfly-snapshotter and a private
# containerd on loopback, push a ~230 MB sample image, run a container from it lazily and print
# the time to first output and the bytes fetched against the image size. Works in build/demo/.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
IPFLY="${IPFLY:-$ROOT/build/cli/ipfly}"
WORK="$ROOT/build/demo"
SAMPLE="${SAMPLE:-/usr/include}"
rm -rf "$WORK"; mkdir -p "$WORK"
STORE="$WORK/store"
now() { date +%s.%N; }
rate() { awk -v b="$1" -v s="$2" 'BEGIN { printf "%.1f MB/s", (s > 0 ? b / s / 1e6 : 0) }'; }

files=$(find "$SAMPLE" -type f | wc -l)
bytes=$(du -sb "$SAMPLE" | cut -f1)
echo "== import the sample tree $SAMPLE ($files files, $((bytes / 1048576)) MiB) into $STORE"
t0=$(now)
root=$("$IPFLY" add -r -Q --store "$STORE" "$SAMPLE")
t1=$(now)
secs=$(awk -v a="$t0" -v b="$t1" 'BEGIN { print b - a }')
echo "   root CID  $root"
echo "   import    ${secs}s  $(rate "$bytes" "$secs")"

echo "== read it back by CID and compare"
t0=$(now)
"$IPFLY" get "$root" -o "$WORK/readback" --store "$STORE"
t1=$(now)
secs=$(awk -v a="$t0" -v b="$t1" 'BEGIN { print b - a }')
diff -r --no-dereference "$SAMPLE" "$WORK/readback" >/dev/null
echo "   identical tree; get ${secs}s  $(rate "$bytes" "$secs")"

echo "== a 256 MiB file: add, then cat by CID"
head -c $((256 << 20)) /dev/urandom > "$WORK/big.bin"
t0=$(now)
big=$("$IPFLY" add -q --store "$STORE" "$WORK/big.bin")
t1=$(now)
s_add=$(awk -v a="$t0" -v b="$t1" 'BEGIN { print b - a }')
t0=$(now)
sum_out=$("$IPFLY" cat "$big" --store "$STORE" | sha256sum | cut -d' ' -f1)
t1=$(now)
s_cat=$(awk -v a="$t0" -v b="$t1" 'BEGIN { print b - a }')
sum_in=$(sha256sum "$WORK/big.bin" | cut -d' ' -f1)
[ "$sum_in" = "$sum_out" ] || { echo "MISMATCH reading back $big" >&2; exit 1; }
echo "   CID       $big"
echo "   add       ${s_add}s  $(rate $((256 << 20)) "$s_add")"
echo "   cat       ${s_cat}s  $(rate $((256 << 20)) "$s_cat") (sha256 verified)"
echo "   inspect:"; "$IPFLY" cid inspect "$big" | sed 's/^/     /'
rm -f "$WORK/big.bin"

if [ "$(id -u)" != 0 ]; then
  echo "== (the container part needs root: FUSE mounts, containerd, runc — run as root to see it)"
  echo "== done: everything read back byte for byte"
  exit 0
fi

echo "== a container started lazily from IPFS: ipfly-registry + ipfly-snapshotter + containerd"
export IPFLY_BIN_DIR="${IPFLY_BIN_DIR:-$ROOT/build}"
source "$ROOT/tests/e2e/lib.sh"
C="$WORK/containers"
mkdir -p "$C"
trap 'ipfly_e2e_cleanup "$C"' EXIT
REG=$(ipfly_freeport); MET=$(ipfly_freeport); R=127.0.0.1:$REG
ipfly_start_registry "$C/reg" "$REG"
ipfly_start_snapshotter "$C" --resolver "http://$R" --source "gateway=http://$R" \
  --metrics "127.0.0.1:$MET"
ipfly_start_containerd "$C" "$C/snap.sock"
echo "   ipfly-registry on $R, ipfly-snapshotter on $C/snap.sock, containerd on $IPFLY_CTR_SOCK"
ipfly_make_python_image "$C/py.tar" "$R/sample/python:1" | sed 's/^/   built /'
t0=$(now)
skopeo copy -q --dest-tls-verify=false "oci-archive:$C/py.tar" "docker://$R/sample/python:1"
echo "   pushed $R/sample/python:1 into IPFS through the registry in $(awk -v a="$t0" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }') s (layers indexed at ingest)"
size=$(curl -sf -H 'Accept: application/vnd.oci.image.manifest.v1+json' \
  "http://$R/v2/sample/python/manifests/1" | python3 -c 'import json,sys; print(sum(l["size"] for l in json.load(sys.stdin)["layers"]))')
t0=$(now)
ctr-remote -a "$IPFLY_CTR_SOCK" -n demo image rpull --plain-http --snapshotter ipfly "$R/sample/python:1" >/dev/null
t_pull=$(awk -v a="$t0" -v b="$(now)" 'BEGIN { printf "%.2f", b - a }')
first=""
while IFS= read -r line; do
  [ -z "$first" ] && first=$(awk -v a="$t0" -v b="$(now)" 'BEGIN { printf "%.2f", b - a }')
  echo "   container says: $line"
done < <(ctr -a "$IPFLY_CTR_SOCK" -n demo run --rm --snapshotter ipfly "$R/sample/python:1" demo1)
[ -n "$first" ] || { echo "the container printed nothing" >&2; exit 1; }
fetched=$(ipfly_lazy_fetched "http://127.0.0.1:$MET")
echo "   lazy pull ${t_pull} s; time to first output ${first} s (pull start -> first line)"
awk -v f="$fetched" -v s="$size" 'BEGIN { printf "   fetched %.1f MB of the %.1f MB image (%.1f %%)\n", f / 1e6, s / 1e6, 100 * f / s }'
"$ROOT/build/cli/ipfly" status --snapshotter "http://127.0.0.1:$MET" | sed 's/^/   /'
echo "== done: everything read back byte for byte, the container ran lazily"
