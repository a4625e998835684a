#!/usr/bin/env bash
# Issue 4, real clients: containerd 1.6 (`ctr`, a private containerd started here) against
# ipfly-registry, inside a network namespace that has only `lo`.
#   - `ctr image import` of an offline image, `ctr image push --plain-http` to the shim,
#     `ctr image pull --plain-http` into an empty namespace (same digest), `ctr run` prints the file;
#   - the IPFS-format view (`ipfs/clients/bb:1`, descriptors with ipfs:// URLs) pulls and runs;
#   - the shim as a containerd mirror: `ctr image pull --hosts-dir` with a hosts.toml that sends
#     docker.io to the shim (upstream: a docker-registry holding library/mirrored):
#     `docker.io/library/mirrored:1` is served through the shim (access log with `?ns=docker.io`,
#     ipfly_registry_upstream_* counters) and runs.
# Root only. Fails (never skips) when a tool is missing.
# check() evals its first argument: variables in single quotes are meant.
# shellcheck disable=SC2016,SC2034
set -euo pipefail
# shellcheck source=tests/clients/common.sh
source "$(dirname "$0")/common.sh"
ipfly_clients_isolate "$0" "$@"
ipfly_need containerd containerd-shim-runc-v2 runc ctr skopeo docker-registry curl python3 sha256sum
[ -x "$IPFLY_BIN_DIR/registry_shim/ipfly-registry" ] || ipfly_die "$IPFLY_BIN_DIR/registry_shim/ipfly-registry is not built"
W=$(mktemp -d /tmp/ipfly-clients-ctr.XXXXXX)
trap 'ipfly_clients_cleanup "$W"' EXIT
T0=$(ipfly_now)
# containerd's runc state (/run/containerd/runc) and skopeo's blob-info cache stay private.
ipfly_clients_hide /run/containerd /var/lib/containers

ipfly_clients_start_shims "$W"

# Each namespace downloads its own blobs (the default "shared" would let a pull into a second
# namespace reuse the pushed namespace's blobs without asking the registry).
ipfly_start_containerd "$W" "" '[plugins."io.containerd.metadata.v1.bolt"]
  content_sharing_policy = "isolated"'
CTR=(ctr -a "$IPFLY_CTR_SOCK")
# native snapshotter: no overlay-on-overlay trouble under /tmp.
RUN=(run --rm --snapshotter native)

step "ctr image import (offline image), push to the shim"
ipfly_make_busybox_image "$W/bb.tar" "$R/clients/bb:1" >/dev/null
"${CTR[@]}" -n src image import --snapshotter native "$W/bb.tar" >/dev/null
D1=$("${CTR[@]}" -n src image ls | awk -v r="$R/clients/bb:1" '$1 == r { print $3 }')
check '[ -n "$D1" ]' "imported $R/clients/bb:1 ($D1)"
"${CTR[@]}" -n src image push --plain-http "$R/clients/bb:1" > "$W/push.out" 2>&1 || { cat "$W/push.out" >&2; ipfly_die "ctr push failed"; }
check '[ "$(ipfly_manifest_digest "$M/v2/clients/bb/manifests/1")" = "$D1" ]' "shim's digest for clients/bb:1 is $D1"
check 'logged "$LOG" "PUT /v2/clients/bb/manifests/1 201"' "access log: manifest PUT 201"

step "ctr image pull from the shim into an empty namespace, run"
"${CTR[@]}" -n dst image pull --plain-http --snapshotter native "$R/clients/bb:1" > "$W/pull.out" 2>&1 || { cat "$W/pull.out" >&2; ipfly_die "ctr pull failed"; }
got=$("${CTR[@]}" -n dst image ls | awk -v r="$R/clients/bb:1" '$1 == r { print $3 }')
check '[ "$got" = "$D1" ]' "pulled digest $got"
check 'logged "$LOG" "GET /v2/clients/bb/manifests/$D1 200"' "access log: containerd GET manifest by digest"
for d in $(ipfly_image_layers "$W/bb.tar"); do
  check 'logged "$LOG" "GET /v2/clients/bb/blobs/$d 200"' "layer $d pulled from the shim"
done
out=$("${CTR[@]}" -n dst "${RUN[@]}" "$R/clients/bb:1" c1)
check '[ "$out" = "hello from layer 2" ]' "ctr run printed '$out'"

step "IPFS-format view: ctr pulls $R/ipfs/clients/bb:1 (descriptors with ipfs:// urls) and runs it"
DV=sha256:$(curl -sf "$M/v2/ipfs/clients/bb/manifests/1" | sha256sum | cut -d' ' -f1)
"${CTR[@]}" -n view image pull --plain-http --snapshotter native "$R/ipfs/clients/bb:1" > "$W/pull-view.out" 2>&1 || { cat "$W/pull-view.out" >&2; ipfly_die "ctr pull of the view failed"; }
got=$("${CTR[@]}" -n view image ls | awk -v r="$R/ipfs/clients/bb:1" '$1 == r { print $3 }')
check '[ "$got" = "$DV" ] && [ "$DV" != "$D1" ]' "pulled the view, its own digest $DV"
out=$("${CTR[@]}" -n view "${RUN[@]}" "$R/ipfs/clients/bb:1" c3)
check '[ "$out" = "hello from layer 2" ]' "ctr run of the IPFS view printed '$out'"

step "the shim as containerd's docker.io mirror (hosts.toml), upstream docker-registry"
MARKER=mirrored ipfly_make_busybox_image "$W/mir.tar" "library/mirrored:1" >/dev/null
skopeo copy -q --dest-tls-verify=false "oci-archive:$W/mir.tar" "docker://127.0.0.1:$UP/library/mirrored:1"
DM=$(ipfly_manifest_digest "http://127.0.0.1:$UP/v2/library/mirrored/manifests/1")
mkdir -p "$W/hosts/docker.io"
cat > "$W/hosts/docker.io/hosts.toml" <<TOML
server = "https://registry-1.docker.io"
[host."$MM"]
  capabilities = ["pull", "resolve"]
TOML
miss0=$(ipfly_metric "$MM" ipfly_registry_upstream_misses_total)
"${CTR[@]}" -n mirror image pull --hosts-dir "$W/hosts" --snapshotter native docker.io/library/mirrored:1 > "$W/pull-mirror.out" 2>&1 \
  || { cat "$W/pull-mirror.out" >&2; tail -20 "$MLOG" >&2; ipfly_die "ctr pull through the mirror failed"; }
got=$("${CTR[@]}" -n mirror image ls | awk '$1 == "docker.io/library/mirrored:1" { print $3 }')
check '[ "$got" = "$DM" ]' "pulled docker.io/library/mirrored:1 with the upstream's digest $DM"
miss1=$(ipfly_metric "$MM" ipfly_registry_upstream_misses_total)
check '[ "$miss1" -gt "$miss0" ]' "the shim fetched from its upstream (misses $miss0 -> $miss1)"
check 'logged "$MLOG" "GET /v2/library/mirrored/manifests/[^ ]*ns=docker.io[^ ]* 200"' "access log: containerd asked the shim with ?ns=docker.io"
for d in $(ipfly_image_layers "$W/mir.tar"); do
  check 'logged "$MLOG" "GET /v2/library/mirrored/blobs/$d(\?[^ ]*)? 200"' "layer $d went through the shim"
done
out=$("${CTR[@]}" -n mirror "${RUN[@]}" docker.io/library/mirrored:1 c2)
check '[ "$out" = "hello from layer 2 mirrored" ]' "ctr run printed '$out'"

ipfly_clients_shim_health "$M" "$MM" -- "$LOG" "$MLOG"
echo "PASS ctr_test ($(ipfly_since "$T0") s)"
