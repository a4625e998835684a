#!/usr/bin/env bash
# Issue 4, real clients: the Docker engine (dockerd 20.10 started here) against ipfly-registry,
# all inside a network namespace that has only `lo` (dockerd falls back to Docker Hub silently).
#   - `docker push` of an image built offline, `docker pull` into a clean engine, `docker run`;
#     the digest docker reports equals the shim's; docker's HEAD-then-GET-by-digest pull
#     is seen in the shim's access log;
#   - htpasswd push auth: anonymous push and a wrong password refused, `docker login` + push + pull;
#   - `docker manifest create/push` of a manifest list, pulled and run;
#   - the IPFS-format view (`ipfs/clients/bb:1`, descriptors with ipfs:// URLs) pulls and runs;
#   - `--registry-mirror` = the shim, whose `--upstream` is a docker-registry holding
#     `library/mirrored`: `docker pull mirrored:1` (a docker.io name) is served through the
#     shim — proved by its access log and its ipfly_registry_upstream_* counters — and runs;
#     after the upstream is stopped, a re-pull is served from the shim's own copy.
# Root only. Fails (never skips) when a tool is missing.
# check() evals its first argument: variables in single quotes are meant.
# shellcheck disable=SC2016,SC2034
set -euo pipefail
# shellcheck source=tests/clients/common.sh
source "$(dirname "$0")/common.sh"
ipfly_clients_isolate "$0" "$@"
DOCKER_BIN=/usr/bin/docker   # docker.io's client; another docker client may be first in PATH
ipfly_need dockerd containerd runc skopeo docker-registry curl python3 sha256sum
[ -x "$DOCKER_BIN" ] || ipfly_die "$DOCKER_BIN (docker.io) is not installed"
[ -x "$IPFLY_BIN_DIR/registry_shim/ipfly-registry" ] || ipfly_die "$IPFLY_BIN_DIR/registry_shim/ipfly-registry is not built"
W=$(mktemp -d /tmp/ipfly-clients-docker.XXXXXX)
trap 'ipfly_clients_cleanup "$W"' EXIT
T0=$(ipfly_now)
# dockerd must start its own containerd (hide a system socket) and write nothing system-wide.
ipfly_clients_hide /run/containerd /run/docker /etc/docker /var/lib/containers

# Two shims: REG takes pushes (no upstream); MIR is the engine's --registry-mirror, with the
# docker-registry UP as its upstream.
ipfly_clients_start_shims "$W"

# start_dockerd NAME [flags...]: a private engine; sets D (the client command).
start_dockerd() {
  local n=$1; shift
  mkdir -p "$W/$n"
  echo '{}' > "$W/$n/daemon.json"
  dockerd --config-file "$W/$n/daemon.json" --iptables=false --ip6tables=false --ip-masq=false \
    --ip-forward=false --bridge=none --storage-driver=vfs --data-root "$W/$n/data" \
    --exec-root "$W/$n/exec" --pidfile "$W/$n/dockerd.pid" --host "unix://$W/$n/docker.sock" "$@" \
    > "$W/$n/dockerd.log" 2>&1 &
  IPFLY_PIDS+=("$!")
  D=(env DOCKER_HOST="unix://$W/$n/docker.sock" DOCKER_CONFIG="$W/$n/client" "$DOCKER_BIN")
  ipfly_wait 30 "${D[@]}" version || { tail -30 "$W/$n/dockerd.log" >&2; ipfly_die "dockerd did not start"; }
}
RUN=(run --rm --network none)
repo_digest() { "${D[@]}" image inspect --format '{{range .RepoDigests}}{{println .}}{{end}}' "$1"; }

step "dockerd with --registry-mirror=$MM (loopback-only netns)"
start_dockerd d1 --registry-mirror "$MM"
"${D[@]}" info --format '{{.RegistryConfig.Mirrors}}' | grep -qF "$MM/" || ipfly_die "mirror not configured"

step "docker push (an offline image loaded with docker load)"
ipfly_make_busybox_image "$W/bb.tar" "clients/bb:1" >/dev/null
skopeo copy -q "oci-archive:$W/bb.tar" "docker-archive:$W/bb-docker.tar:$R/clients/bb:1"
"${D[@]}" load -q -i "$W/bb-docker.tar" >/dev/null
"${D[@]}" push "$R/clients/bb:1" > "$W/push.out"
D1=$(grep -o 'digest: sha256:[0-9a-f]*' "$W/push.out" | cut -d' ' -f2)
check '[ -n "$D1" ] && [ "$(ipfly_manifest_digest "$M/v2/clients/bb/manifests/1")" = "$D1" ]' "shim's digest for clients/bb:1 is docker's $D1"
got=sha256:$(curl -sf -H 'Accept: application/vnd.docker.distribution.manifest.v2+json' "$M/v2/clients/bb/manifests/1" | sha256sum | cut -d' ' -f1)
check '[ "$got" = "$D1" ]' "manifest bytes hash to $D1"
check 'logged "$LOG" "PUT /v2/clients/bb/manifests/1 201"' "access log: manifest PUT 201"

step "docker push of a second tag (same layers) and a second repository (cross-repo mount)"
"${D[@]}" tag "$R/clients/bb:1" "$R/clients/other:1"
"${D[@]}" push "$R/clients/other:1" > "$W/push2.out"
D1b=$(grep -o 'digest: sha256:[0-9a-f]*' "$W/push2.out" | cut -d' ' -f2)
check '[ "$D1b" = "$D1" ]' "same manifest digest in clients/other"
check 'logged "$LOG" "POST /v2/clients/other/blobs/uploads/\?(.*&)?mount=sha256(%3A|:)[0-9a-f]+ 201"' "docker mounted a layer across repositories (201)"

step "docker pull into a clean engine, run"
"${D[@]}" rmi -f "$R/clients/bb:1" "$R/clients/other:1" >/dev/null
check '[ -z "$("${D[@]}" images -q)" ]' "engine has no images"
"${D[@]}" pull -q "$R/clients/bb:1" >/dev/null
check 'repo_digest "$R/clients/bb:1" | grep -qxF "$R/clients/bb@$D1"' "pulled image has RepoDigest $D1"
check 'logged "$LOG" "HEAD /v2/clients/bb/manifests/1 200" && logged "$LOG" "GET /v2/clients/bb/manifests/$D1 200"' "access log: docker HEAD by tag, GET by digest"
for d in $(ipfly_manifest_layers "$M/v2/clients/bb/manifests/1"); do
  check 'logged "$LOG" "GET /v2/clients/bb/blobs/$d 200"' "layer $d pulled from the shim"
done
out=$("${D[@]}" "${RUN[@]}" "$R/clients/bb:1")
check '[ "$out" = "hello from layer 2" ]' "docker run printed '$out'"
out=$("${D[@]}" "${RUN[@]}" "$R/clients/bb@$D1" /bin/sh -c 'echo $((6*7))')
check '[ "$out" = 42 ]' "docker run by digest ran a shell"

step "docker manifest create/push (a Docker manifest list), pull, run"
"${D[@]}" manifest create --insecure "$R/clients/list:1" "$R/clients/bb@$D1" >/dev/null
DL=$("${D[@]}" manifest push --insecure "$R/clients/list:1" | tail -1)  # "Pushed ref ..." lines, then the digest
check '[ "$(ipfly_manifest_digest "$M/v2/clients/list/manifests/1")" = "$DL" ]' "shim's digest for the list is docker's $DL"
ct=$(curl -sfI -H 'Accept: application/vnd.docker.distribution.manifest.list.v2+json' "$M/v2/clients/list/manifests/1" | tr -d '\r' | awk -F': ' 'tolower($1) == "content-type" { print $2 }')
check '[ "$ct" = application/vnd.docker.distribution.manifest.list.v2+json ]' "served as $ct"
mapfile -t ids < <("${D[@]}" images -q | sort -u)
"${D[@]}" rmi -f "${ids[@]}" >/dev/null   # so that the image is pulled again
"${D[@]}" pull -q "$R/clients/list:1" >/dev/null
check 'repo_digest "$R/clients/list:1" | grep -qxF "$R/clients/list@$DL"' "pulled the list, RepoDigest $DL"
# (Whether dockerd GETs the child manifest again depends on its content-store manifest cache,
# which containerd garbage-collects at its own pace: not asserted.)
check 'logged "$LOG" "GET /v2/clients/list/manifests/($DL|1) 200"' "docker fetched the list from the shim"
out=$("${D[@]}" "${RUN[@]}" "$R/clients/list:1")
check '[ "$out" = "hello from layer 2" ]' "docker run of the list printed '$out'"

step "IPFS-format view: docker pulls $R/ipfs/clients/bb:1 (descriptors with ipfs:// urls) and runs it"
DV=sha256:$(curl -sf "$M/v2/ipfs/clients/bb/manifests/1" | sha256sum | cut -d' ' -f1)
check '[ "$DV" != "$D1" ]' "the view has its own digest $DV"
"${D[@]}" pull -q "$R/ipfs/clients/bb:1" >/dev/null
check 'repo_digest "$R/ipfs/clients/bb:1" | grep -qxF "$R/ipfs/clients/bb@$DV"' "pulled the view, RepoDigest $DV"
out=$("${D[@]}" "${RUN[@]}" "$R/ipfs/clients/bb:1")
check '[ "$out" = "hello from layer 2" ]' "docker run of the IPFS view printed '$out'"

step "docker pull of a docker.io name through the mirror (upstream: docker-registry)"
MARKER=mirrored ipfly_make_busybox_image "$W/mir.tar" "library/mirrored:1" >/dev/null
skopeo copy -q --format v2s2 --dest-tls-verify=false "oci-archive:$W/mir.tar" "docker://127.0.0.1:$UP/library/mirrored:1"
DM=sha256:$(curl -sf -H 'Accept: application/vnd.docker.distribution.manifest.v2+json' "http://127.0.0.1:$UP/v2/library/mirrored/manifests/1" | sha256sum | cut -d' ' -f1)
L1=$(ipfly_image_layers "$W/mir.tar" | cut -d' ' -f1)
check '[ "$(curl -s -o /dev/null -w "%{http_code}" "$MM/ipfly/v1/layers/$L1")" = 404 ]' "the mirror shim does not have layer $L1 before the pull"
miss0=$(ipfly_metric "$MM" ipfly_registry_upstream_misses_total)
bytes0=$(ipfly_metric "$MM" ipfly_registry_upstream_bytes_total)
"${D[@]}" pull mirrored:1 > "$W/pull-mirror.out" 2>&1 || { cat "$W/pull-mirror.out" "$W/d1/dockerd.log" >&2; ipfly_die "docker pull mirrored:1 failed"; }
check 'grep -qF "Digest: $DM" "$W/pull-mirror.out"' "docker pulled mirrored:1 with the upstream's digest $DM"
check 'repo_digest mirrored:1 | grep -qxF "mirrored@$DM"' "RepoDigest mirrored@$DM"
miss1=$(ipfly_metric "$MM" ipfly_registry_upstream_misses_total)
bytes1=$(ipfly_metric "$MM" ipfly_registry_upstream_bytes_total)
echo "upstream misses $miss0 -> $miss1, bytes $bytes0 -> $bytes1"
check '[ "$miss1" -gt "$miss0" ] && [ "$bytes1" -gt "$bytes0" ]' "the shim fetched from its upstream (ipfly_registry_upstream_* counters)"
check 'logged "$MLOG" "GET /v2/library/mirrored/manifests/(1|sha256:[0-9a-f]+) 200"' "access log: dockerd asked the shim for library/mirrored"
for d in $(ipfly_image_layers "$W/mir.tar"); do
  check 'logged "$MLOG" "GET /v2/library/mirrored/blobs/$d 200"' "layer $d went through the shim"
done
out=$("${D[@]}" "${RUN[@]}" mirrored:1)
check '[ "$out" = "hello from layer 2 mirrored" ]' "docker run mirrored:1 printed '$out'"

step "re-pull through the mirror with the upstream stopped: served from the shim's IPFS copy"
ipfly_stop_pid "${IPFLY_PIDS[0]}"   # docker-registry (started first)
check '! curl -sf -o /dev/null "http://127.0.0.1:$UP/v2/"' "upstream is down"
"${D[@]}" rmi -f mirrored:1 >/dev/null
hits0=$(ipfly_metric "$MM" ipfly_registry_upstream_hits_total)
blobs0=$(grep -c "GET /v2/library/mirrored/blobs/sha256:[0-9a-f]* 200" "$MLOG")
"${D[@]}" pull -q mirrored:1 >/dev/null || { tail -20 "$W/d1/dockerd.log" >&2; ipfly_die "re-pull through the mirror failed"; }
more_blob_gets() { [ "$(grep -c "GET /v2/library/mirrored/blobs/sha256:[0-9a-f]* 200" "$MLOG")" -gt "$blobs0" ]; }
ipfly_wait 5 more_blob_gets || true
blobs1=$(grep -c "GET /v2/library/mirrored/blobs/sha256:[0-9a-f]* 200" "$MLOG")
check '[ "$blobs1" -gt "$blobs0" ]' "the layers were served again by the shim ($blobs0 -> $blobs1 blob GETs)"
check 'repo_digest mirrored:1 | grep -qxF "mirrored@$DM"' "re-pulled mirrored@$DM"
out=$("${D[@]}" "${RUN[@]}" mirrored:1)
check '[ "$out" = "hello from layer 2 mirrored" ]' "docker run after re-pull printed '$out'"
hits1=$(ipfly_metric "$MM" ipfly_registry_upstream_hits_total)
check '[ "$hits1" -gt "$hits0" ]' "served from the shim's copy (upstream hits $hits0 -> $hits1)"

step "push authentication (htpasswd): docker login, push, pull"
AUTH=$(ipfly_freeport); A=127.0.0.1:$AUTH
ipfly_clients_start_auth_registry "$W/auth" "$AUTH" alice s3cret
"${D[@]}" tag mirrored:1 "$A/auth/bb:1"
check '! "${D[@]}" push "$A/auth/bb:1" > "$W/push-anon.out" 2>&1' "anonymous docker push is refused"
check 'logged "$W/auth/registry.log" "GET /v2/ 401" && grep -q "no basic auth credentials" "$W/push-anon.out"' "the shim challenged (GET /v2/ 401 Basic), docker has no credentials"
check '! grep -q "PUT /v2/auth/bb/manifests/1 201" "$W/auth/registry.log"' "no manifest was stored"
check '! echo wrong | "${D[@]}" login -u alice --password-stdin "$A" > /dev/null 2>&1' "docker login with a wrong password fails"
echo s3cret | "${D[@]}" login -u alice --password-stdin "$A" > "$W/login.out" 2>&1 || { cat "$W/login.out" >&2; ipfly_die "docker login failed"; }
"${D[@]}" push "$A/auth/bb:1" > "$W/push-auth.out" || { cat "$W/push-auth.out" "$W/auth/registry.log" >&2; ipfly_die "authenticated docker push failed"; }
DA=$(grep -o 'digest: sha256:[0-9a-f]*' "$W/push-auth.out" | cut -d' ' -f2)
check '[ -n "$DA" ] && [ "$(ipfly_manifest_digest "http://$A/v2/auth/bb/manifests/1")" = "$DA" ]' "authenticated push stored $DA (anonymous HEAD works)"
"${D[@]}" rmi -f "$A/auth/bb:1" mirrored:1 >/dev/null
"${D[@]}" pull -q "$A/auth/bb:1" >/dev/null
check 'repo_digest "$A/auth/bb:1" | grep -qxF "$A/auth/bb@$DA"' "docker pull (logged in) of the pushed image"
check 'curl -sf -o /dev/null "http://$A/v2/auth/bb/manifests/1"' "anonymous HTTP pull of the manifest"
# Not asserted: an anonymous *docker* pull from this shim fails ("no basic auth credentials"),
# because GET /v2/ answers 401 + Basic to anonymous clients and docker then insists on
# credentials for every request (distribution's htpasswd mode behaves the same way).
"${D[@]}" logout "$A" > /dev/null

step "docker search through the shim"
"${D[@]}" search "$R/clients" > "$W/search.out"
check 'grep -q "clients/bb" "$W/search.out" && grep -q "clients/other" "$W/search.out"' "docker search lists clients/bb and clients/other"

ipfly_clients_shim_health "$M" "$MM" "http://$A" -- "$LOG" "$MLOG" "$W/auth/registry.log"
echo "PASS docker_test ($(ipfly_since "$T0") s)"
