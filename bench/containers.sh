#!/usr/bin/env bash
# Issue 5 benchmarks, one command: `bash bench/containers.sh` (root, after a build).
# Both arms run in this one invocation against the same ipfly-registry on loopback:
#   ordinary: `ctr image pull` + `ctr run` on containerd's overlayfs snapshotter (downloads and
#             unpacks every layer)
#   lazy:     `ctr-remote image rpull --snapshotter ipfly` + `ctr run --snapshotter ipfly`
# for a ~230 MB python image whose command reads a small part of it. Measured: time from pull
# start to the container's first output line [lazy <= 0.25 x ordinary], bytes transferred,
# directly and behind a userspace proxy adding 20 ms per round trip and capping each direction
# at 100 Mbit/s (bench/throttle_proxy.py; there is no netem here). Then the snapshotter's RSS
# with 50 lazy layers attached [<= 128 MiB]. Each arm starts from empty caches (fresh
# containerd root, fresh snapshotter root and block cache, page cache dropped).
set -euo pipefail
BENCH="$(cd "$(dirname "$0")" && pwd)"
export IPFLY_BIN_DIR="${IPFLY_BIN_DIR:-$BENCH/../build}"
source "$BENCH/../tests/e2e/lib.sh"
[ "$(id -u)" = 0 ] || ipfly_die "run as root (FUSE, containerd, runc)"
ipfly_need containerd runc ctr ctr-remote skopeo curl pigz python3
W=$(mktemp -d /tmp/ipfly-cbench.XXXXXX)
trap 'ipfly_e2e_cleanup "$W"' EXIT
drop() { sync; echo 3 > /proc/sys/vm/drop_caches; }

REG=$(ipfly_freeport); R=127.0.0.1:$REG
ipfly_start_registry "$W/reg" "$REG"
echo "ipfly container benchmarks ($(nproc) cores, loopback)"
ipfly_make_python_image "$W/py.tar" "sample/python:1" >/dev/null
skopeo copy -q --dest-tls-verify=false "oci-archive:$W/py.tar" "docker://$R/bench/python:1"
SIZE=$(curl -sf -H 'Accept: application/vnd.oci.image.manifest.v1+json' \
  "http://$R/v2/bench/python/manifests/1" | python3 -c 'import json,sys; m=json.load(sys.stdin); print(sum(l["size"] for l in m["layers"]) + m["config"]["size"])')
echo "image: $R/bench/python:1, $SIZE bytes of config + layers (3 gzip layers)"

# first_output DIR CMD...: seconds from $T0 to the first line CMD prints (the line in $LINE)
first_output() {
  local line
  LINE=""; FIRST=""
  while IFS= read -r line; do
    [ -z "$FIRST" ] && { FIRST=$(ipfly_since "$T0"); LINE=$line; }
  done < <("$@")
  [ -n "$FIRST" ] || ipfly_die "no output from $*"
}

# arm NAME HOSTPORT: one measured run on fresh daemons; sets T_<NAME>, B_<NAME> (bytes via the
# proxy count file when given as $3)
run_ordinary() {  # DIR HOSTPORT
  local d=$1 hp=$2
  ipfly_start_containerd "$d" "$d/none.sock"
  drop
  T0=$(ipfly_now)
  ctr -a "$IPFLY_CTR_SOCK" -n b image pull --plain-http "$hp/bench/python:1" >/dev/null
  first_output ctr -a "$IPFLY_CTR_SOCK" -n b run --rm "$hp/bench/python:1" o1
  [ "$LINE" = "python ready" ] || ipfly_die "ordinary arm printed '$LINE'"
}
run_lazy() {  # DIR HOSTPORT
  local d=$1 hp=$2 met
  met=$(ipfly_freeport)
  ipfly_start_snapshotter "$d" --resolver "http://$hp" --source "gateway=http://$hp" --metrics "127.0.0.1:$met"
  ipfly_start_containerd "$d" "$d/snap.sock"
  drop
  T0=$(ipfly_now)
  ctr-remote -a "$IPFLY_CTR_SOCK" -n b image rpull --plain-http --snapshotter ipfly "$hp/bench/python:1" >/dev/null
  first_output ctr -a "$IPFLY_CTR_SOCK" -n b run --rm --snapshotter ipfly "$hp/bench/python:1" l1
  [ "$LINE" = "python ready" ] || ipfly_die "lazy arm printed '$LINE'"
  LAZY_FETCHED=$(ipfly_lazy_fetched "http://127.0.0.1:$met")
  FALLBACKS=$(curl -sf "http://127.0.0.1:$met/metrics" | awk '/^ipfly_snapshotter_fallbacks_total/ { s += $2 } END { print s + 0 }')
}
stop_all_but_registry() {  # stops what the arm started (PIDs after the first $KEEP)
  local i
  for (( i=${#IPFLY_PIDS[@]}-1; i>=KEEP; i-- )); do ipfly_stop_pid "${IPFLY_PIDS[$i]}"; done
  IPFLY_PIDS=("${IPFLY_PIDS[@]:0:KEEP}")
  { grep -F " $W/arm" /proc/self/mounts || true; } | awk '{print $2}' | sort -r | while read -r m; do umount -l "$m" 2>/dev/null || true; done
}

measure() {  # LABEL HOSTPORT [COUNT_FILE]
  local label=$1 hp=$2 cf=${3:-} b0 b1
  KEEP=${#IPFLY_PIDS[@]}
  local tag; tag=$(echo "$label" | tr -c 'a-zA-Z0-9\n' '_')
  [ -n "$cf" ] && b0=$(cut -d' ' -f1 "$cf")
  run_ordinary "$W/arm-o-$tag" "$hp"; local to=$FIRST
  [ -n "$cf" ] && { sleep 0.3; b1=$(cut -d' ' -f1 "$cf"); BO=$((b1 - b0)); b0=$b1; }
  stop_all_but_registry
  run_lazy "$W/arm-l-$tag" "$hp"; local tl=$FIRST
  [ -n "$cf" ] && { sleep 0.3; b1=$(cut -d' ' -f1 "$cf"); BL=$((b1 - b0)); }
  stop_all_but_registry
  printf '%-36s ordinary %7.2f s   lazy %6.2f s   ratio %.3f  [<= 0.25]\n' "$label: first output" "$to" "$tl" \
    "$(awk -v a="$tl" -v b="$to" 'BEGIN { print a / b }')"
  if [ -n "$cf" ]; then
    printf '%-36s ordinary %7.1f MB  lazy %6.1f MB  (%.1f %% of the image)\n' "$label: bytes transferred" \
      "$(awk -v b="$BO" 'BEGIN { print b / 1e6 }')" "$(awk -v b="$BL" 'BEGIN { print b / 1e6 }')" \
      "$(awk -v b="$BL" -v s="$SIZE" 'BEGIN { print 100 * b / s }')"
  else
    printf '%-36s ordinary %7.1f MB  lazy %6.1f MB of layer data fetched by the snapshotter (%.1f %%)\n' \
      "$label: bytes" "$(awk -v s="$SIZE" 'BEGIN { print s / 1e6 }')" \
      "$(awk -v b="$LAZY_FETCHED" 'BEGIN { print b / 1e6 }')" "$(awk -v b="$LAZY_FETCHED" -v s="$SIZE" 'BEGIN { print 100 * b / s }')"
  fi
  [ "${FALLBACKS:-0}" = 0 ] || echo "  WARNING: $FALLBACKS layer(s) fell back to the ordinary path in the lazy arm"
}

# Direct (loopback) and through a counting proxy without limits (bytes), then slow link.
measure "loopback" "$R"
PX=$(ipfly_freeport)
python3 "$BENCH/throttle_proxy.py" "$PX" "$R" 0 100000 "$W/count-fast" & IPFLY_PIDS+=("$!")
ipfly_wait 10 curl -sf "http://127.0.0.1:$PX/v2/"
measure "loopback via proxy" "127.0.0.1:$PX" "$W/count-fast"
PS=$(ipfly_freeport)
python3 "$BENCH/throttle_proxy.py" "$PS" "$R" 20 100 "$W/count-slow" & IPFLY_PIDS+=("$!")
ipfly_wait 10 curl -sf "http://127.0.0.1:$PS/v2/"
measure "20 ms, 100 Mbit/s" "127.0.0.1:$PS" "$W/count-slow"

# --- snapshotter RSS with 50 lazy layers attached ------------------------------------------
python3 - "$W/layers" <<'PY'
import os, sys
# 50 layers of real files (~2 MB each) from /usr/share, one directory per layer.
base, out = sys.argv[1], []
files = []
for d, dirs, fs in os.walk("/usr/share"):
    dirs.sort()
    for f in sorted(fs):
        p = os.path.join(d, f)
        if os.path.isfile(p) and not os.path.islink(p):
            files.append(p)
per, i = 2 << 20, 0
for n in range(50):
    ld = os.path.join(base, "l%02d" % n)
    os.makedirs(os.path.join(ld, "data%02d" % n))
    size = 0
    while size < per and i < len(files):
        p = files[i]; i += 1
        dst = os.path.join(ld, "data%02d" % n, "%05d_%s" % (i, os.path.basename(p)))
        with open(p, "rb") as a, open(dst, "wb") as b:
            data = a.read(); b.write(data); size += len(data)
PY
args=(); for n in $(seq -w 0 49); do args+=(--dir "$W/layers/l$n"); done
mkdir -p "$W/layers/base" && ipfly_busybox_rootfs "$W/layers/base"
python3 "$IPFLY_E2E_DIR/make_oci_image.py" "$W/fifty.tar" "bench/fifty:1" --cmd /bin/ls --cmd / \
  --dir "$W/layers/base" "${args[@]}" >/dev/null
skopeo copy -q --dest-tls-verify=false "oci-archive:$W/fifty.tar" "docker://$R/bench/fifty:1"
met=$(ipfly_freeport)
ipfly_start_snapshotter "$W/arm-rss" --resolver "http://$R" --source "gateway=http://$R" --metrics "127.0.0.1:$met"
ipfly_start_containerd "$W/arm-rss" "$W/arm-rss/snap.sock"
ctr-remote -a "$IPFLY_CTR_SOCK" -n b image rpull --plain-http --snapshotter ipfly "$R/bench/fifty:1" >/dev/null
ctr -a "$IPFLY_CTR_SOCK" -n b run --rm --snapshotter ipfly "$R/bench/fifty:1" f1 >/dev/null
attached=$(curl -sf "http://127.0.0.1:$met/metrics" | awk '$1 == "ipfly_snapshotter_lazy_layers_attached" { print $2 }')
rss=$(awk '/VmRSS/ { print $2 }' "/proc/$IPFLY_SNAP_PID/status")
hwm=$(awk '/VmHWM/ { print $2 }' "/proc/$IPFLY_SNAP_PID/status")
printf 'snapshotter RSS with %d lazy layers attached: %.1f MiB (peak %.1f MiB)  [<= 128 MiB]\n' \
  "$attached" "$(awk -v k="$rss" 'BEGIN { print k / 1024 }')" "$(awk -v k="$hwm" 'BEGIN { print k / 1024 }')"
