#!/usr/bin/env bash
# Issue 5 end to end with real parts: ipfly-registry, ipfly-snapshotter, a private containerd
# 1.6 with runc, skopeo pushes, ctr-remote lazy pulls, a Go client that pulls like CRI.
#   - busybox image and a >= 200 MiB python image pushed to ipfly-registry, pulled lazily with
#     `ctr-remote image rpull`: containerd's content store holds no layer blob, the containers
#     print the expected output, and only a small fraction of the layer bytes was fetched;
#   - the same image through the CRI-style client (cri.layer-digest labels -> resolver);
#   - an IPFS-format image (descriptors with ipfs:// URLs + ipfly annotations);
#   - fallback: an image only docker-registry has pulls and runs on the overlay path, counted;
#   - kill -9 of the snapshotter, restart, a new container from the same lazy image;
#   - `ctr image rm --sync` removes the snapshots and releases the span caches.
# Root only (FUSE, mounts, containers). Fails (never skips) when a tool is missing.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
[ "$(id -u)" = 0 ] || ipfly_die "needs root"
ipfly_need containerd runc ctr ctr-remote skopeo docker-registry curl pigz go python3
for b in registry_shim/ipfly-registry snapshotter/ipfly-snapshotter cli/ipfly; do
  [ -x "$IPFLY_BIN_DIR/$b" ] || ipfly_die "$IPFLY_BIN_DIR/$b is not built"
done
W=$(mktemp -d /tmp/ipfly-e2e.XXXXXX)
trap 'ipfly_e2e_cleanup "$W"' EXIT
step() { echo "--- $*"; }
check() { if eval "$1"; then echo "ok: $2"; else ipfly_die "$2 ($1)"; fi; }

REG=$(ipfly_freeport); UP=$(ipfly_freeport); MET=$(ipfly_freeport)
R=127.0.0.1:$REG
ipfly_start_registry "$W/reg" "$REG"
ipfly_start_docker_registry "$W/dreg" "$UP"
SNAP_ARGS=(--resolver "http://$R" --source "gateway=http://$R" --metrics "127.0.0.1:$MET")
ipfly_start_snapshotter "$W" "${SNAP_ARGS[@]}"
ipfly_start_containerd "$W" "$W/snap.sock"
CTR=(ctr -a "$IPFLY_CTR_SOCK" -n e2e)
M="http://127.0.0.1:$MET"
layer_blobs_in_content_store() {  # IMAGE_TAR: how many of its layer blobs containerd holds
  local n=0 d
  for d in $(ipfly_image_layers "$1"); do
    "${CTR[@]}" content ls -q | grep -qx "$d" && n=$((n+1))
  done
  echo "$n"
}

step "busybox image: push to ipfly-registry, lazy pull, run"
ipfly_make_busybox_image "$W/bb.tar" "$R/e2e/bb:1" >/dev/null
skopeo copy -q --dest-tls-verify=false "oci-archive:$W/bb.tar" "docker://$R/e2e/bb:1"
ctr-remote -a "$IPFLY_CTR_SOCK" -n e2e image rpull --plain-http --snapshotter ipfly "$R/e2e/bb:1" >/dev/null
out=$("${CTR[@]}" run --rm --snapshotter ipfly "$R/e2e/bb:1" bb1)
check '[ "$out" = "hello from layer 2" ]' "busybox container printed '$out'"
check '[ "$(layer_blobs_in_content_store "$W/bb.tar")" = 0 ]' "no busybox layer blob was downloaded by containerd"
check '[ "$(ipfly_metric "$M" ipfly_snapshotter_lazy_mounts_total)" -ge 2 ]' "2 lazy mounts counted"

step "python image (>= 200 MiB): lazy pull + run reads a small fraction"
ipfly_make_python_image "$W/py.tar" "$R/e2e/py:1"
size=$(tar -xOf "$W/py.tar" ./index.json >/dev/null; python3 - "$W/py.tar" <<'PY'
import json, subprocess, sys
t = sys.argv[1]
idx = json.loads(subprocess.check_output(["tar", "-xOf", t, "./index.json"]))
m = json.loads(subprocess.check_output(["tar", "-xOf", t, "./blobs/sha256/" + idx["manifests"][0]["digest"].split(":")[1]]))
print(sum(l["size"] for l in m["layers"]))
PY
)
check '[ "$size" -ge $((200 << 20)) ]' "python image layers total $size bytes"
skopeo copy -q --dest-tls-verify=false "oci-archive:$W/py.tar" "docker://$R/e2e/py:1"
t0=$(ipfly_now)
ctr-remote -a "$IPFLY_CTR_SOCK" -n e2e image rpull --plain-http --snapshotter ipfly "$R/e2e/py:1" >/dev/null
out=$("${CTR[@]}" run --rm --snapshotter ipfly "$R/e2e/py:1" py1)
echo "pull + run: $(ipfly_since "$t0") s"
check '[ "$out" = "python ready" ]' "python container printed '$out'"
check '[ "$(layer_blobs_in_content_store "$W/py.tar")" = 0 ]' "no python layer blob was downloaded by containerd"
for d in $(ipfly_image_layers "$W/py.tar"); do
  if grep -q "GET /v2/e2e/py/blobs/$d" "$W/reg/registry.log"; then ipfly_die "the registry log shows a download of layer $d"; fi
done
echo "ok: the registry log shows no layer blob download (containerd fetched manifest and config only)"
# shellcheck disable=SC2046
fetched=$(ipfly_lazy_fetched "$M" $(ipfly_image_layers "$W/py.tar"))
echo "fetched $fetched of $size layer bytes"
check '[ "$fetched" -gt 0 ] && [ "$fetched" -lt $((size / 10)) ]' "python run fetched < 10 % of the image ($fetched / $size)"

step "CRI-style client (cri.layer-digest -> resolver)"
MARKER=cri ipfly_make_busybox_image "$W/cri.tar" "$R/e2e/cri:1" >/dev/null
skopeo copy -q --dest-tls-verify=false "oci-archive:$W/cri.tar" "docker://$R/e2e/cri:1"
(cd "$IPFLY_E2E_DIR/cripull" && GO111MODULE=off GOPATH=/usr/share/gocode GOPROXY=off go build -o "$W/cripull" .)
before=$(ipfly_metric "$M" ipfly_snapshotter_lazy_mounts_total)
"$W/cripull" -address "$IPFLY_CTR_SOCK" -namespace cri -snapshotter ipfly "$R/e2e/cri:1"
out=$(ctr -a "$IPFLY_CTR_SOCK" -n cri run --rm --snapshotter ipfly "$R/e2e/cri:1" cri1)
check '[ "$out" = "hello from layer 2 cri" ]' "CRI-pulled container printed '$out'"
after=$(ipfly_metric "$M" ipfly_snapshotter_lazy_mounts_total)
check '[ "$after" -eq $((before + 2)) ]' "both CRI-pulled layers were mounted lazily ($before -> $after)"
n=$(curl -sf "$M/status" | grep -c '"resolved_by": "resolver"' || true)
check '[ "$n" -ge 2 ]' "layers resolved by digest at the registry's resolver API ($n)"
check '[ "$(layer_blobs_in_content_store "$W/cri.tar")" = 0 ]' "no CRI layer blob was downloaded by containerd"

step "IPFS-format image (descriptors with ipfs:// URLs and ipfly annotations)"
MARKER=ipfs ipfly_make_busybox_image "$W/ipfs.tar" "$R/e2e/ipfsimg:1" >/dev/null
skopeo copy -q --dest-tls-verify=false "oci-archive:$W/ipfs.tar" "docker://$R/e2e/ipfsimg:1"
curl -sf -H 'Accept: application/vnd.oci.image.manifest.v1+json' "http://$R/v2/ipfs/e2e/ipfsimg/manifests/1" > "$W/ipfs-manifest.json"
check 'grep -q "ipfs://" "$W/ipfs-manifest.json" && grep -q "containerd.io/snapshot/ipfly.cid" "$W/ipfs-manifest.json"' "the ipfs/ view carries ipfs:// URLs and ipfly annotations"
ctr-remote -a "$IPFLY_CTR_SOCK" -n ipfsfmt image rpull --plain-http --snapshotter ipfly "$R/ipfs/e2e/ipfsimg:1" >/dev/null
out=$(ctr -a "$IPFLY_CTR_SOCK" -n ipfsfmt run --rm --snapshotter ipfly "$R/ipfs/e2e/ipfsimg:1" ipfs1)
check '[ "$out" = "hello from layer 2 ipfs" ]' "IPFS-format image container printed '$out'"
n=$(curl -sf "$M/status" | grep -c '"resolved_by": "ipfly-labels"' || true)
check '[ "$n" -ge 2 ]' "IPFS-format layers were resolved from their ipfly labels ($n)"
check '[ "$(layer_blobs_in_content_store "$W/ipfs.tar")" = 0 ]' "no IPFS-format layer blob was downloaded by containerd"

step "fallback: an image only docker-registry has"
MARKER=fallback ipfly_make_busybox_image "$W/fb.tar" "127.0.0.1:$UP/e2e/fb:1" >/dev/null
skopeo copy -q --dest-tls-verify=false "oci-archive:$W/fb.tar" "docker://127.0.0.1:$UP/e2e/fb:1"
ctr-remote -a "$IPFLY_CTR_SOCK" -n e2e image rpull --plain-http --snapshotter ipfly "127.0.0.1:$UP/e2e/fb:1" >/dev/null
out=$("${CTR[@]}" run --rm --snapshotter ipfly "127.0.0.1:$UP/e2e/fb:1" fb1)
check '[ "$out" = "hello from layer 2 fallback" ]' "fallback container printed '$out'"
fb=$(curl -sf "$M/metrics" | awk '/^ipfly_snapshotter_fallbacks_total/ { s += $2 } END { print s + 0 }')
check '[ "$fb" -ge 2 ]' "fallbacks counted in metrics ($fb)"
"$IPFLY_BIN_DIR/cli/ipfly" status --snapshotter "$M" > "$W/status.txt"
cat "$W/status.txt"
check 'grep -qi fallback "$W/status.txt"' "ipfly status shows the fallbacks"

step "kill -9 the snapshotter, restart, run a new container from the lazy image"
kill -9 "$IPFLY_SNAP_PID"; wait "$IPFLY_SNAP_PID" 2>/dev/null || true
# Restarted with a 1 MiB span cache cap: the span caches of layers no container uses are evicted.
ipfly_start_snapshotter "$W" "${SNAP_ARGS[@]}" --span-cache-max-size 1MiB
# containerd's gRPC connection to the proxy plugin backs off after the crash (up to ~3 s).
ipfly_wait 20 "${CTR[@]}" snapshots --snapshotter ipfly ls || ipfly_die "containerd does not reach the restarted snapshotter"
out=$("${CTR[@]}" run --rm --snapshotter ipfly "$R/e2e/py:1" py2)
check '[ "$out" = "python ready" ]' "after restart the python container printed '$out'"
span_cache_under_cap() { [ "$(ipfly_metric "$M" ipfly_snapshotter_span_cache_bytes)" -le $((1 << 20)) ]; }
ipfly_wait 10 span_cache_under_cap
check 'span_cache_under_cap && [ "$(ipfly_metric "$M" ipfly_snapshotter_span_cache_evictions_total)" -ge 1 ]' \
  "span caches evicted down to the 1 MiB cap ($(ipfly_metric "$M" ipfly_snapshotter_span_cache_bytes) bytes, $(ipfly_metric "$M" ipfly_snapshotter_span_cache_evictions_total) layers evicted)"
check '"$IPFLY_BIN_DIR/cli/ipfly" status --snapshotter "$M" | grep -q "^span cache: .* of 1.0 MiB"' "ipfly status shows the span cache and its cap"

step "containerd GC: image rm --sync removes snapshots and releases span caches"
for img in "$R/e2e/bb:1" "$R/e2e/py:1" "127.0.0.1:$UP/e2e/fb:1"; do "${CTR[@]}" image rm --sync "$img" >/dev/null; done
ctr -a "$IPFLY_CTR_SOCK" -n cri image rm --sync "$R/e2e/cri:1" >/dev/null
ctr -a "$IPFLY_CTR_SOCK" -n ipfsfmt image rm --sync "$R/ipfs/e2e/ipfsimg:1" >/dev/null
left=$("${CTR[@]}" snapshots --snapshotter ipfly ls | tail -n +2 | wc -l)
check '[ "$left" = 0 ]' "no snapshots left ($left)"
spans=$(find "$W/snap/layers/spans" -type f | wc -l)
check '[ "$spans" = 0 ]' "span caches released ($spans files left)"
echo "PASS"
