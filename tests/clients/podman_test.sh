#!/usr/bin/env bash
# Issue 4, real clients: podman and buildah against ipfly-registry (loopback-only netns).
#   - an image built offline (oci-archive) loaded into podman, `podman push` to the shim: the
#     digest podman wrote equals the shim's Docker-Content-Digest and the manifest bytes hash to it;
#   - `podman pull` back into an empty storage, by tag and by digest: same digest, and
#     `podman run` prints the file of the top layer;
#   - Docker schema2 push (`--format v2s2`) of the same image, pulled and run;
#   - zstd layers (`--compression-format zstd`; the resolver reports a layer index) and a
#     manifest list (`podman manifest push --all`), pulled and run;
#   - `buildah build` FROM the shim's image (pulled by buildah from the shim), `buildah push` of
#     the result to a second repository, pulled and run by podman;
#   - every layer blob of the pushed manifests reads back from the shim with its sha256;
#   - the IPFS-format view (`ipfs/clients/bb:1`, descriptors with ipfs:// URLs) pulls and runs;
#   - htpasswd push auth: anonymous push and a wrong password refused, `podman login` + push,
#     anonymous pull;
#   - the shim as a docker.io mirror in registries.conf (upstream: docker-registry holding
#     library/mirrored): `podman pull docker.io/library/mirrored:1` goes through the shim.
# Root only. Fails (never skips) when a tool is missing.
# check() evals its first argument: variables in single quotes are meant.
# shellcheck disable=SC2016,SC2034
set -euo pipefail
# shellcheck source=tests/clients/common.sh
source "$(dirname "$0")/common.sh"
ipfly_clients_isolate "$0" "$@"
ipfly_need podman buildah conmon runc curl python3 sha256sum
[ -x "$IPFLY_BIN_DIR/registry_shim/ipfly-registry" ] || ipfly_die "$IPFLY_BIN_DIR/registry_shim/ipfly-registry is not built"
W=$(mktemp -d /tmp/ipfly-clients-podman.XXXXXX)
trap 'ipfly_clients_cleanup "$W"' EXIT
T0=$(ipfly_now)
# podman/buildah state outside --root/--runroot (tmpdir, blob-info cache, CNI lock) stays private.
ipfly_clients_hide /run/libpod /run/containers /var/lib/containers /etc/cni/net.d

# Private storage for each tool; no system config, no short-name search, no mirrors.
printf 'unqualified-search-registries = []\nshort-name-mode = "disabled"\n' > "$W/registries.conf"
export CONTAINERS_REGISTRIES_CONF="$W/registries.conf"
store() { echo "--root $W/$1/root --runroot $W/$1/run --storage-driver vfs"; }
read -ra PM <<< "podman $(store pm) --cgroup-manager cgroupfs --events-backend file"
read -ra PM2 <<< "podman $(store pm2) --cgroup-manager cgroupfs --events-backend file"
read -ra BA <<< "buildah $(store ba)"
RUN=(run --rm --ulimit nofile=1024:1024 --ulimit nproc=4096:4096 --network none)

REG=$(ipfly_freeport); R=127.0.0.1:$REG
ipfly_start_registry "$W/reg" "$REG"
LOG=$W/reg/registry.log
ACCEPT='application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.v2+json'

# verify_manifest REPO REF WANT_DIGEST: the manifest bytes hash to WANT_DIGEST and every blob it
# references reads back with its digest.
verify_manifest() {
  local repo=$1 ref=$2 want=$3 got d
  curl -sf -H "Accept: $ACCEPT" "http://$R/v2/$repo/manifests/$ref" -o "$W/m.json"
  got=sha256:$(sha256sum < "$W/m.json" | cut -d' ' -f1)
  check '[ "$got" = "$want" ]' "$repo:$ref manifest bytes hash to $want"
  for d in $(python3 -c 'import json,sys; m=json.load(open(sys.argv[1])); print(m["config"]["digest"], *[l["digest"] for l in m["layers"]])' "$W/m.json"); do
    got=sha256:$(curl -sf "http://$R/v2/$repo/blobs/$d" | sha256sum | cut -d' ' -f1)
    check '[ "$got" = "$d" ]' "$repo blob $d reads back"
  done
}

step "podman: load an offline image, push to the shim (default format)"
ipfly_make_busybox_image "$W/bb.tar" "clients/bb:1" >/dev/null
"${PM[@]}" pull -q "oci-archive:$W/bb.tar" >/dev/null
"${PM[@]}" push -q --tls-verify=false --digestfile "$W/d1" localhost/clients/bb:1 "$R/clients/bb:1"
D1=$(cat "$W/d1")
check '[ "$(ipfly_manifest_digest "http://$R/v2/clients/bb/manifests/1")" = "$D1" ]' "shim's digest for clients/bb:1 is podman's $D1"
check 'logged "$LOG" "PUT /v2/clients/bb/manifests/1 201"' "access log: manifest PUT 201"
verify_manifest clients/bb 1 "$D1"

step "podman: pull back into an empty storage, by tag and by digest, and run"
"${PM2[@]}" pull -q --tls-verify=false "$R/clients/bb:1" >/dev/null
got=$("${PM2[@]}" image inspect --format '{{.Digest}}' "$R/clients/bb:1")
check '[ "$got" = "$D1" ]' "pulled image digest $got"
check 'logged "$LOG" "GET /v2/clients/bb/manifests/1 200"' "access log: podman GET manifest by tag"
"${PM2[@]}" pull -q --tls-verify=false "$R/clients/bb@$D1" >/dev/null
out=$("${PM2[@]}" "${RUN[@]}" "$R/clients/bb:1")
check '[ "$out" = "hello from layer 2" ]' "podman run printed '$out'"
out=$("${PM2[@]}" "${RUN[@]}" "$R/clients/bb@$D1" /bin/sh -c 'echo $((6*7)); ls /bin/busybox')
check '[ "$out" = "$(printf "42\n/bin/busybox")" ]' "podman run by digest ran a shell: '$out'"

step "podman: Docker schema2 push, pull, run"
"${PM[@]}" push -q --tls-verify=false --format v2s2 --digestfile "$W/d2" localhost/clients/bb:1 "$R/clients/bb:v2s2"
D2=$(cat "$W/d2")
mt=$(curl -sf -H "Accept: $ACCEPT" "http://$R/v2/clients/bb/manifests/v2s2" | python3 -c 'import json,sys; print(json.load(sys.stdin)["mediaType"])')
check '[ "$mt" = application/vnd.docker.distribution.manifest.v2+json ]' "v2s2 manifest stored as $mt"
verify_manifest clients/bb v2s2 "$D2"
"${PM2[@]}" pull -q --tls-verify=false "$R/clients/bb:v2s2" >/dev/null
# Same config as clients/bb:1, so the same local image: its RepoDigests gain the v2s2 digest.
check '"${PM2[@]}" image inspect --format "{{.RepoDigests}}" "$R/clients/bb:v2s2" | grep -qF "$R/clients/bb@$D2"' "pulled v2s2 image has RepoDigest $D2"
out=$("${PM2[@]}" "${RUN[@]}" "$R/clients/bb:v2s2")
check '[ "$out" = "hello from layer 2" ]' "podman run (v2s2) printed '$out'"

step "buildah: build FROM the shim's image, push to another repository"
mkdir -p "$W/ctx"
echo "built by buildah" > "$W/ctx/built.txt"
printf 'FROM %s/clients/bb:1\nCOPY built.txt /etc/built.txt\nCMD ["/bin/cat", "/etc/built.txt", "/etc/hello.txt"]\n' "$R" > "$W/ctx/Containerfile"
"${BA[@]}" build -q --tls-verify=false --pull-always -f "$W/ctx/Containerfile" -t localhost/clients/built:1 "$W/ctx" >/dev/null
"${BA[@]}" inspect --type image localhost/clients/built:1 > "$W/ba.json"
base=$(python3 -c 'import json,sys; print(json.loads(json.load(open(sys.argv[1]))["Manifest"])["annotations"]["org.opencontainers.image.base.digest"])' "$W/ba.json")
check '[ "$base" = "$D1" ]' "buildah built FROM the shim's $D1"
"${BA[@]}" push -q --tls-verify=false --digestfile "$W/d3" localhost/clients/built:1 "docker://$R/clients/built:1"
D3=$(cat "$W/d3")
check '[ "$(ipfly_manifest_digest "http://$R/v2/clients/built/manifests/1")" = "$D3" ]' "shim's digest for clients/built:1 is buildah's $D3"
verify_manifest clients/built 1 "$D3"
logged "$LOG" 'POST /v2/clients/built/blobs/uploads/\?.*mount=.* 201' || true
mounts=$(grep -cE 'POST /v2/clients/built/blobs/uploads/\?.*mount=.* 201' "$LOG" || true)
check '[ "$mounts" -ge 1 ]' "buildah push mounted $mounts blobs from clients/bb (201)"
"${PM2[@]}" pull -q --tls-verify=false "$R/clients/built:1" >/dev/null
check '[ "$("${PM2[@]}" image inspect --format "{{.Digest}}" "$R/clients/built:1")" = "$D3" ]' "podman pulled buildah's image ($D3)"
out=$("${PM2[@]}" "${RUN[@]}" "$R/clients/built:1")
check '[ "$out" = "$(printf "built by buildah\nhello from layer 2")" ]' "podman run of the buildah image printed both files"

step "podman: zstd push (layer index built at ingest), manifest list push (podman manifest), pull, run"
read -ra PM3 <<< "podman $(store pm3) --cgroup-manager cgroupfs --events-backend file"
# Forget the gzip copies already pushed (the blob-info cache is this test's tmpfs), otherwise
# podman 4.3 reuses them instead of compressing with zstd.
rm -f /var/lib/containers/cache/blob-info-cache-v1.boltdb
"${PM[@]}" push -q --tls-verify=false --compression-format zstd --digestfile "$W/dz" localhost/clients/bb:1 "$R/clients/zstd:1"
DZ=$(cat "$W/dz")
verify_manifest clients/zstd 1 "$DZ"
check 'grep -q "application/vnd.oci.image.layer.v1.tar+zstd" "$W/m.json"' "layers pushed as tar+zstd"
LZ=$(ipfly_manifest_layers "http://$R/v2/clients/zstd/manifests/1" | cut -d' ' -f1)
curl -sf "http://$R/ipfly/v1/layers/$LZ" -o "$W/resolve.json"
check 'python3 -c "import json,sys; r=json.load(open(sys.argv[1])); sys.exit(0 if r[\"index_cid\"] and r[\"mediaType\"].endswith(\"+zstd\") else 1)" "$W/resolve.json"' "resolver: zstd layer has a layer index ($(cat "$W/resolve.json"))"
"${PM3[@]}" pull -q --tls-verify=false "$R/clients/zstd:1" >/dev/null
check '[ "$("${PM3[@]}" image inspect --format "{{.Digest}}" "$R/clients/zstd:1")" = "$DZ" ]' "pulled the zstd image ($DZ)"
out=$("${PM3[@]}" "${RUN[@]}" "$R/clients/zstd:1")
check '[ "$out" = "hello from layer 2" ]' "podman run (zstd) printed '$out'"
"${PM[@]}" manifest create localhost/clients/list:1 >/dev/null
"${PM[@]}" manifest add localhost/clients/list:1 containers-storage:localhost/clients/bb:1 >/dev/null
"${PM[@]}" manifest push -q --tls-verify=false --all --digestfile "$W/dl" localhost/clients/list:1 "docker://$R/clients/list:1"
DL=$(cat "$W/dl")
check '[ "$(ipfly_manifest_digest "http://$R/v2/clients/list/manifests/1")" = "$DL" ]' "shim's digest for the list clients/list:1 is podman's $DL"
ct=$(curl -sfI -H 'Accept: application/vnd.oci.image.index.v1+json, application/vnd.docker.distribution.manifest.list.v2+json' "http://$R/v2/clients/list/manifests/1" | tr -d '\r' | awk -F': ' 'tolower($1) == "content-type" { print $2 }')
check '[ "$ct" = application/vnd.oci.image.index.v1+json ] || [ "$ct" = application/vnd.docker.distribution.manifest.list.v2+json ]' "the list is served as $ct"
"${PM3[@]}" pull -q --tls-verify=false "$R/clients/list:1" >/dev/null
check 'logged "$LOG" "GET /v2/clients/list/manifests/sha256:[0-9a-f]+ 200"' "podman resolved the list's child manifest by digest"
out=$("${PM3[@]}" "${RUN[@]}" "$R/clients/list:1")
check '[ "$out" = "hello from layer 2" ]' "podman run of the list printed '$out'"

step "IPFS-format view: podman pulls $R/ipfs/clients/bb:1 (descriptors with ipfs:// urls) and runs it"
curl -sf "http://$R/v2/ipfs/clients/bb/manifests/1" -o "$W/view.json"
check 'python3 -c "import json,sys; m=json.load(open(sys.argv[1])); sys.exit(0 if all(d[\"urls\"][0].startswith(\"ipfs://\") for d in [m[\"config\"]] + m[\"layers\"]) else 1)" "$W/view.json"' "view manifest: every descriptor has an ipfs:// URL"
"${PM2[@]}" pull -q --tls-verify=false "$R/ipfs/clients/bb:1" >/dev/null
DV=sha256:$(sha256sum < "$W/view.json" | cut -d' ' -f1)
check '"${PM2[@]}" image inspect --format "{{.RepoDigests}}" "$R/ipfs/clients/bb:1" | grep -qF "$R/ipfs/clients/bb@$DV"' "pulled the view, digest $DV"
out=$("${PM2[@]}" "${RUN[@]}" "$R/ipfs/clients/bb:1")
check '[ "$out" = "hello from layer 2" ]' "podman run of the IPFS view printed '$out'"

step "the shim as podman's docker.io mirror (registries.conf), upstream docker-registry"
UP=$(ipfly_freeport); MIR=$(ipfly_freeport); MM=http://127.0.0.1:$MIR
ipfly_start_docker_registry "$W/up" "$UP"
ipfly_start_registry "$W/mir" "$MIR" --upstream "http://127.0.0.1:$UP"
MLOG=$W/mir/registry.log
MARKER=mirrored ipfly_make_busybox_image "$W/mir.tar" "library/mirrored:1" >/dev/null
"${PM[@]}" pull -q "oci-archive:$W/mir.tar" >/dev/null
"${PM[@]}" push -q --tls-verify=false localhost/library/mirrored:1 "127.0.0.1:$UP/library/mirrored:1"
DM=$(ipfly_manifest_digest "http://127.0.0.1:$UP/v2/library/mirrored/manifests/1")
cat > "$W/registries-mirror.conf" <<TOML
unqualified-search-registries = []
short-name-mode = "disabled"
[[registry]]
prefix = "docker.io"
location = "docker.io"
[[registry.mirror]]
location = "127.0.0.1:$MIR"
insecure = true
TOML
miss0=$(ipfly_metric "$MM" ipfly_registry_upstream_misses_total)
CONTAINERS_REGISTRIES_CONF="$W/registries-mirror.conf" "${PM2[@]}" pull -q docker.io/library/mirrored:1 >/dev/null
check '"${PM2[@]}" image inspect --format "{{.RepoDigests}}" docker.io/library/mirrored:1 | grep -qF "docker.io/library/mirrored@$DM"' "pulled docker.io/library/mirrored:1 with the upstream's digest $DM"
miss1=$(ipfly_metric "$MM" ipfly_registry_upstream_misses_total)
check '[ "$miss1" -gt "$miss0" ]' "the shim fetched from its upstream (misses $miss0 -> $miss1)"
check 'logged "$MLOG" "GET /v2/library/mirrored/manifests/1 200"' "access log: podman asked the mirror shim for library/mirrored:1"
for d in $(ipfly_manifest_layers "http://127.0.0.1:$UP/v2/library/mirrored/manifests/1"); do
  check 'logged "$MLOG" "GET /v2/library/mirrored/blobs/$d 200"' "layer $d went through the shim"
done
out=$("${PM2[@]}" "${RUN[@]}" docker.io/library/mirrored:1)
check '[ "$out" = "hello from layer 2 mirrored" ]' "podman run of the mirrored image printed '$out'"

step "push authentication (htpasswd): podman login, push; anonymous podman pull"
AUTH=$(ipfly_freeport); A=127.0.0.1:$AUTH
ipfly_clients_start_auth_registry "$W/auth" "$AUTH" alice s3cret
export REGISTRY_AUTH_FILE=$W/auth.json
echo '{"auths": {}}' > "$REGISTRY_AUTH_FILE"
check '! "${PM[@]}" push -q --tls-verify=false localhost/clients/bb:1 "$A/auth/bb:1" 2>/dev/null' "anonymous podman push is refused"
check 'logged "$W/auth/registry.log" "(POST|PUT|PATCH|HEAD) /v2/auth/bb/[^ ]* 401"' "access log: the shim answered 401"
check '! grep -q "PUT /v2/auth/bb/manifests/1 201" "$W/auth/registry.log"' "no manifest was stored"
check '! "${PM[@]}" login --tls-verify=false -u alice -p wrong "$A" >/dev/null 2>&1' "podman login with a wrong password fails"
"${PM[@]}" login --tls-verify=false -u alice -p s3cret "$A" >/dev/null
"${PM[@]}" push -q --tls-verify=false --digestfile "$W/da" localhost/clients/bb:1 "$A/auth/bb:1"
DA=$(cat "$W/da")
check '[ "$(ipfly_manifest_digest "http://$A/v2/auth/bb/manifests/1")" = "$DA" ]' "authenticated push stored $DA"
"${PM[@]}" logout "$A" >/dev/null
read -ra PM4 <<< "podman $(store pm4) --cgroup-manager cgroupfs --events-backend file"
"${PM4[@]}" pull -q --tls-verify=false "$A/auth/bb:1" >/dev/null
check '[ "$("${PM4[@]}" image inspect --format "{{.Digest}}" "$A/auth/bb:1")" = "$DA" ]' "anonymous podman pull of the pushed image"
check 'logged "$W/auth/registry.log" "GET /v2/auth/bb/manifests/1 200"' "access log: anonymous GET manifest 200"

ipfly_clients_shim_health "http://$R" "$MM" "http://$A" -- "$LOG" "$MLOG" "$W/auth/registry.log"
echo "PASS podman_test ($(ipfly_since "$T0") s)"
