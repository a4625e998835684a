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
echo "== done: everything read back byte for byte"
