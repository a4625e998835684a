#!/usr/bin/env bash
# Issue 3 benchmarks (lazy layers through FUSE), one command: `bash bench/layer.sh` (root, after a
# build). Starts a js-ipfs node (Kubo RPC API) on loopback and prints each figure with its peer
# measured in the same run and the target in brackets.
#   warm read of a 256 MiB file (span cache filled, page cache dropped) vs ext4       [>= 0.7]
#   5 % of a ~200 MiB gzip layer's files read lazily from the node: bytes fetched vs the
#     compressed bytes of the spans touched [<= 3x] and vs the blob [<= 15 %]; time vs fetching
#     and extracting the whole blob from the same node                                 [<= 0.3]
#   /usr/share/doc (~5000 small files) `find | xargs cat`: warm [<= 2x] / cold [<= 3x] ext4
#   (index span 512 KiB unless SPAN=4MiB etc.; PARTS=gzip: only the gzip layer figures)
#   index size vs uncompressed [<= 1.5 %]; index build vs `gzip -dc > /dev/null`      [>= 0.7]
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
IPFLY="${IPFLY:-$ROOT/build/cli/ipfly}"
W="$(mktemp -d /tmp/ipfly-lbench.XXXXXX)"
pids=(); mounts=()
cleanup() {
  for m in "${mounts[@]}"; do kill "$m" 2>/dev/null || true; done; sleep 1
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  umount -l "$W"/mnt* 2>/dev/null || true; rm -rf "$W"
}
trap cleanup EXIT
[ "$(id -u)" = 0 ] || { echo "run as root (FUSE mounts, drop_caches)" >&2; exit 1; }
now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.3f", b - a }'; }
drop() { sync; echo 3 > /proc/sys/vm/drop_caches; }
freeport() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
mount_layer() {  # DIR LOG args... ; waits until mounted
  local dir=$1 log=$2; shift 2
  mkdir -p "$dir"
  "$IPFLY" mount "$@" "$dir" > "$log" 2>&1 &
  mounts+=("$!")
  for _ in $(seq 600); do grep -q '^mounted ' "$log" && return 0; sleep 0.1; done
  cat "$log" >&2; return 1
}
unmount_last() { local p=${mounts[-1]}; kill "$p"; wait "$p" 2>/dev/null || true; unset 'mounts[-1]'; }

API=$(freeport); GWP=$(freeport)
pids+=("$("$ROOT/tests/ipfs-node/start-jsipfs.sh" "$W/jsipfs" "$API" "$GWP")")
RPC="http://127.0.0.1:$API"
echo "ipfly layer benchmarks ($(nproc) cores, loopback js-ipfs node)"

# --- a ~200 MiB gzip layer of real files ------------------------------------------------------
python3 - "$W/list" <<'PY'
import os, sys
out, total, limit = [], 0, 560 << 20
for base in ["/usr/lib/x86_64-linux-gnu", "/usr/share", "/usr/lib"]:
    for d, _, fs in os.walk(base):
        for f in sorted(fs):
            p = os.path.join(d, f)
            if os.path.islink(p) or not os.path.isfile(p): continue
            total += os.path.getsize(p); out.append(p)
            if total > limit: break
        if total > limit: break
    if total > limit: break
open(sys.argv[1], "w").write("\n".join(out) + "\n")
PY
tar -cf "$W/big.tar" -T "$W/list" 2>/dev/null
pigz -6 -c "$W/big.tar" > "$W/big.tgz"
BLOB_SIZE=$(stat -c %s "$W/big.tgz"); TAR_SIZE=$(stat -c %s "$W/big.tar")
t0=$(now); gzip -dc "$W/big.tgz" > /dev/null; t_gz=$(since "$t0")
t0=$(now); IDX=$("$IPFLY" index "$W/big.tgz" --span "${SPAN:-512KiB}" --store "$W/st0" 2> "$W/index.log" | tail -1); t_idx=$(since "$t0")
IDX_BYTES=$(grep '^index' "$W/index.log" | sed -E 's/.*\(([0-9]+) bytes.*/\1/')
awk -v u="$TAR_SIZE" -v i="$IDX_BYTES" -v b="$BLOB_SIZE" 'BEGIN {
  printf "layer: %.1f MiB gzip, %.1f MiB tar\n", b/1048576, u/1048576
  printf "%-44s %6.2f %% of uncompressed             [target <= 1.5 %%]\n", "index size", 100*i/u }'
awk -v a="$t_idx" -v g="$t_gz" -v b="$BLOB_SIZE" 'BEGIN {
  printf "%-44s %6.1f MB/s vs gzip -dc %6.1f MB/s  ratio %.2f  [target >= 0.7]\n",
    "index build (local file, incl. import)", b/a/1e6, b/g/1e6, g/a }'

CID=$(curl -sf -X POST -F "file=@$W/big.tgz" "$RPC/api/v0/add?cid-version=1&cid-base=base32" | tail -1 | python3 -c 'import json,sys; print(json.load(sys.stdin)["Hash"])')
"$IPFLY" car export "$IDX" -o "$W/idx.car" --store "$W/st0"
"$IPFLY" car import "$W/idx.car" --store "$W/st1" > /dev/null 2>&1
# 5 % of the files by bytes, chosen at random (fixed seed). A file that would take the pick
# past 5 % (+2 % of it) is passed over: with one 110 MiB library in the list, "the next file"
# could otherwise turn the 5 % into 19 %.
python3 - "$W/list" "$W/pick" <<'PY'
import os, random, sys
files = [l.strip() for l in open(sys.argv[1]) if l.strip()]
total = sum(os.path.getsize(f) for f in files)
random.seed(5); random.shuffle(files)
pick, acc = [], 0
for f in files:
    if acc >= total * 0.05: break
    s = os.path.getsize(f)
    if acc + s > total * 0.05 * 1.02: continue
    pick.append(f.lstrip("/")); acc += s
open(sys.argv[2], "w").write("\n".join(pick) + "\n")
print("picked %d of %d files, %.2f %% of the bytes" % (len(pick), len(files), 100.0 * acc / total))
PY
drop
t0=$(now)
mount_layer "$W/mnt1" "$W/m1.log" "$CID" --index "$IDX" --store "$W/st1" --source "kubo=$RPC"
(cd "$W/mnt1" && xargs -d '\n' cat < "$W/pick" > /dev/null)
t_lazy=$(since "$t0")
unmount_last
NET=$(grep '^network:' "$W/m1.log" | awk '{print $2}')
SPANS=$(grep 'spans touched' "$W/m1.log" | sed -E 's/.*spans touched: ([0-9]+).*/\1/')
drop
t0=$(now); mkdir -p "$W/full"; curl -sf -X POST "$RPC/api/v0/cat?arg=$CID" | tar -xz -C "$W/full"; t_full=$(since "$t0")
awk -v n="$NET" -v s="$SPANS" -v b="$BLOB_SIZE" -v tl="$t_lazy" -v tf="$t_full" 'BEGIN {
  printf "%-44s %6.1f MiB = %.2fx spans touched (%.1f MiB)  [target <= 3x]\n", "5% of files: bytes fetched", n/1048576, n/s, s/1048576
  printf "%-44s %6.2f %% of the blob                   [target <= 15 %%]\n", "5% of files: fetched vs blob", 100*n/b
  printf "%-44s %6.2f s vs fetch+extract whole %.2f s  ratio %.2f  [target <= 0.3]\n", "5% of files: time (mount + reads)", tl, tf, tl/tf }'

[ "${PARTS:-all}" = gzip ] && exit 0  # PARTS=gzip: only the index and 5 % figures above

# --- warm reads of a 256 MiB file -------------------------------------------------------------
mkdir -p "$W/f256"; head -c $((256 << 20)) /dev/urandom > "$W/f256/file"
tar -C "$W/f256" -cf - file | gzip -1 > "$W/f256.tgz"
C2=$("$IPFLY" add -q --store "$W/st2" "$W/f256.tgz"); I2=$("$IPFLY" index "$W/f256.tgz" --store "$W/st2" 2>/dev/null | tail -1)
mount_layer "$W/mnt2" "$W/m2.log" "$C2" --index "$I2" --store "$W/st2"
cat "$W/mnt2/file" > /dev/null   # fills the span cache
# Let the writeback of everything written above settle, then five alternating rounds and the
# median of each arm (a single round is at the mercy of the VM's disk: both arms see 2x spikes).
sync; sleep 2
tf=(); te=()
for _ in 1 2 3 4 5; do
  drop; t0=$(now); cat "$W/mnt2/file" > /dev/null; tf+=("$(since "$t0")")
  drop; t0=$(now); cat "$W/f256/file" > /dev/null; te+=("$(since "$t0")")
done
median() { printf '%s\n' "$@" | sort -g | sed -n 3p; }
t_fuse=$(median "${tf[@]}"); t_ext4=$(median "${te[@]}")
best() { printf '%s\n' "$@" | sort -g | head -1; }
echo "  rounds: fuse ${tf[*]} s; ext4 ${te[*]} s; best of five: fuse $(best "${tf[@]}") s, ext4 $(best "${te[@]}") s"
cmp -s "$W/mnt2/file" "$W/f256/file" || { echo "WRONG BYTES in warm read" >&2; exit 1; }
unmount_last
awk -v a="$t_fuse" -v e="$t_ext4" 'BEGIN {
  printf "%-44s %6.1f MB/s vs ext4 %6.1f MB/s  ratio %.2f  [target >= 0.7]\n", "warm 256 MiB read (span cache, cold pages)", 268435456/a/1e6, 268435456/e/1e6, e/a }'

# --- many small files ---------------------------------------------------------------------------
tar -C /usr/share -czf "$W/doc.tgz" doc
mkdir -p "$W/docx"; tar -C "$W/docx" -xzf "$W/doc.tgz"
C3=$("$IPFLY" add -q --store "$W/st3" "$W/doc.tgz"); I3=$("$IPFLY" index "$W/doc.tgz" --store "$W/st3" 2>/dev/null | tail -1)
NFILES=$(find "$W/docx" -type f | wc -l)
drop
mount_layer "$W/mnt3" "$W/m3.log" "$C3" --index "$I3" --store "$W/st3"
t0=$(now); (cd "$W/mnt3" && find . -type f -print0 | xargs -0 cat > /dev/null); t_cold=$(since "$t0")
t0=$(now); (cd "$W/mnt3" && find . -type f -print0 | xargs -0 cat > /dev/null); t_warm=$(since "$t0")
unmount_last
drop
t0=$(now); (cd "$W/docx" && find . -type f -print0 | xargs -0 cat > /dev/null); e_cold=$(since "$t0")
t0=$(now); (cd "$W/docx" && find . -type f -print0 | xargs -0 cat > /dev/null); e_warm=$(since "$t0")
awk -v n="$NFILES" -v c="$t_cold" -v w="$t_warm" -v ec="$e_cold" -v ew="$e_warm" 'BEGIN {
  printf "%-44s %6.3f s vs ext4 %6.3f s  = %.2fx  [target <= 3x]\n", "small files cold (" n " files)", c, ec, c/ec
  printf "%-44s %6.3f s vs ext4 %6.3f s  = %.2fx  [target <= 2x]\n", "small files warm", w, ew, w/ew }'
