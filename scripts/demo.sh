#!/usr/bin/env bash
# The main job (for now): import a sample file tree into the embedded block store, read it back
# by CID and compare, printing the CIDs and the throughput. Uses build/demo/ as its store.
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

if [ "$(id -u)" = 0 ]; then
  echo "== the same tree as a gzip image layer, mounted lazily through FUSE"
  tar -C "$(dirname "$SAMPLE")" -czf "$WORK/layer.tgz" "$(basename "$SAMPLE")"
  lsize=$(stat -c %s "$WORK/layer.tgz")
  layer=$("$IPFLY" add -q --store "$STORE" "$WORK/layer.tgz")
  index=$("$IPFLY" index "$WORK/layer.tgz" --store "$STORE" 2>/dev/null | tail -1)
  rm -rf "$STORE/spans"
  echo "   layer CID $layer ($((lsize / 1048576)) MiB gzip); index CID $index"
  mkdir -p "$WORK/mnt"
  t0=$(now)
  "$IPFLY" mount "$layer" "$WORK/mnt" --index "$index" --store "$STORE" > "$WORK/mount.log" 2>&1 &
  mpid=$!
  for _ in $(seq 300); do grep -q '^mounted ' "$WORK/mount.log" && break; sleep 0.05; done
  name=$(basename "$SAMPLE")
  cmp "$WORK/mnt/$name/stdio.h" "$SAMPLE/stdio.h"
  t1=$(now)
  echo "   mounted and read $name/stdio.h in $(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.3f", b - a }') s (identical to the original)"
  kill "$mpid"; wait "$mpid" || true
  sed -n 's/^.*: \([0-9]*\) compressed bytes read of \([0-9]*\).*/   read \1 of \2 compressed bytes of the layer to get there/p' "$WORK/mount.log"
fi
echo "== done: everything read back byte for byte"
