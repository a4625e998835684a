# shellcheck shell=bash
# Shared by the real-client registry tests (tests/clients/*_test.sh). Sourced after the test's
# `set -euo pipefail`. Builds on tests/e2e/lib.sh (ipfly_start_registry, ipfly_e2e_cleanup, ...).
#
# Network safety: every test re-executes itself inside fresh network, mount and PID namespaces
# (`unshare --net --mount --pid --fork --kill-child`) whose only interface is `lo`, so nothing a
# client does (Docker Hub fallback, short-name search, DNS) can leave the machine; the PID
# namespace guarantees that every process the test started dies with it, and the private mount
# namespace drops every mount dockerd/podman made.
IPFLY_CLIENTS_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=tests/e2e/lib.sh
source "$IPFLY_CLIENTS_DIR/../e2e/lib.sh"

# ipfly_clients_isolate "$0" "$@": call first; re-execs the script in a loopback-only netns.
ipfly_clients_isolate() {
  if [ "${IPFLY_CLIENTS_INNER:-}" != 1 ]; then
    [ "$(id -u)" = 0 ] || ipfly_die "needs root (network namespace, containers)"
    ipfly_need unshare ip
    IPFLY_CLIENTS_INNER=1 exec unshare --net --mount --pid --fork --mount-proc --kill-child \
      --propagation private bash "$@"
  fi
  ip link set lo up
  ipfly_clients_assert_lo_only
}

# ipfly_clients_assert_lo_only: the test's network namespace has only lo and no route (a connect
# to any non-loopback address fails at once with ENETUNREACH). Checked at start and at the end.
ipfly_clients_assert_lo_only() {
  local links; links=$(ip -o link show | awk -F': ' '{print $2}' | tr '\n' ' ')
  [ "$links" = "lo " ] || ipfly_die "network namespace has interfaces other than lo: $links"
  [ -z "$(ip route show)" ] || ipfly_die "unexpected routes in the test netns: $(ip route show)"
  echo "netns: only lo (routes: none)"
}

# ipfly_clients_hide DIR...: a private empty tmpfs over each DIR (only inside this test's mount
# namespace), so that daemons find no system state there and write none (dockerd's
# /etc/docker/key.json, /run/docker/plugins; a system containerd socket in /run/containerd).
# A missing DIR is created first and removed again by ipfly_clients_cleanup.
ipfly_clients_hide() {
  local d
  for d in "$@"; do
    if [ ! -d "$d" ]; then mkdir -p "$d"; IPFLY_CLIENTS_RMDIRS+=("$d"); fi
    mount -t tmpfs -o size=16m,mode=0755 tmpfs "$d" || ipfly_die "cannot mount a tmpfs on $d"
  done
}
IPFLY_CLIENTS_RMDIRS=()
# ipfly_clients_cleanup W: ipfly_e2e_cleanup, then removes the directories ipfly_clients_hide created.
ipfly_clients_cleanup() {
  ipfly_e2e_cleanup "$1"
  local d
  for d in "${IPFLY_CLIENTS_RMDIRS[@]}"; do umount -l "$d" 2>/dev/null || true; rmdir "$d" 2>/dev/null || true; done
}

# logged FILE ERE: the access log FILE has a line matching ERE, waiting up to 5 s (the shim logs
# a request after its response went out, so a fast client can finish before the line is written).
logged() { ipfly_wait 5 grep -qE "$2" "$1"; }

step() { echo "--- $*"; }
check() { if eval "$1"; then echo "ok: $2"; else ipfly_die "$2 ($1)"; fi; }

# ipfly_manifest_digest URL: the Docker-Content-Digest of a manifest (HEAD, any manifest type).
ipfly_manifest_digest() {
  curl -sfI -H 'Accept: application/vnd.oci.image.manifest.v1+json, application/vnd.oci.image.index.v1+json, application/vnd.docker.distribution.manifest.v2+json, application/vnd.docker.distribution.manifest.list.v2+json' \
    "$1" | tr -d '\r' | awk -F': ' 'tolower($1) == "docker-content-digest" { print $2 }'
}

# ipfly_manifest_layers URL: the layer digests of an image manifest (OCI or Docker schema2).
ipfly_manifest_layers() {
  curl -sf -H 'Accept: application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.v2+json' "$1" |
    python3 -c 'import json, sys; print(" ".join(l["digest"] for l in json.load(sys.stdin)["layers"]))'
}

# ipfly_clients_start_shims W: a docker-registry (port UP, in W/up), an ipfly-registry that takes
# pushes (port REG, in W/reg) and one that mirrors UP (port MIR, in W/mir). Sets REG MIR UP,
# R (REG's host:port), LOG MLOG (their logs) and M MM (their URLs).
# shellcheck disable=SC2034
ipfly_clients_start_shims() {
  REG=$(ipfly_freeport); MIR=$(ipfly_freeport); UP=$(ipfly_freeport); R=127.0.0.1:$REG
  ipfly_start_docker_registry "$1/up" "$UP"
  ipfly_start_registry "$1/reg" "$REG"
  ipfly_start_registry "$1/mir" "$MIR" --upstream "http://127.0.0.1:$UP"
  LOG=$1/reg/registry.log; MLOG=$1/mir/registry.log
  M=http://$R; MM=http://127.0.0.1:$MIR
}

# ipfly_clients_shim_health URL... -- LOG...: the end of every client test: no 5xx response in any
# shim's request metrics, no error line in any shim log, and still only lo.
# check() evals its first argument, which reads the locals errs, u and logs.
# shellcheck disable=SC2016,SC2034
ipfly_clients_shim_health() {
  local urls=() logs u errs
  while [ $# -gt 0 ] && [ "$1" != -- ]; do urls+=("$1"); shift; done
  if [ $# -gt 0 ]; then shift; fi
  logs=("$@")
  step "shim health"
  for u in "${urls[@]}"; do
    errs=$(curl -sf "$u/metrics" | awk '$1 ~ /^ipfly_registry_requests_total\{.*code="5/ { s += $2 } END { print s + 0 }')
    check '[ "$errs" = 0 ]' "no 5xx responses from $u"
  done
  check '! grep -qE "\[(error|critical)\]" "${logs[@]}"' "no errors in the shim logs"
  ipfly_clients_assert_lo_only
}

# ipfly_clients_start_auth_registry DIR PORT USER PASSWORD: an ipfly-registry whose writes need
# htpasswd (bcrypt) credentials; pulls stay anonymous.
ipfly_clients_start_auth_registry() {
  local dir=$1 port=$2 user=$3 pw=$4 hash
  mkdir -p "$dir"
  hash=$(python3 -W ignore -c 'import crypt, sys; print(crypt.crypt(sys.argv[1], crypt.mksalt(crypt.METHOD_BLOWFISH, rounds=16)))' "$pw")
  case $hash in [$]2*) ;; *) ipfly_die "no bcrypt from python3 crypt: $hash" ;; esac
  echo "$user:$hash" > "$dir/htpasswd"
  printf '[store]\ndir = "%s"\n[registry]\nhtpasswd = "%s"\n' "$dir/store" "$dir/htpasswd" > "$dir/cfg.toml"
  "$IPFLY_BIN_DIR/registry_shim/ipfly-registry" --listen "127.0.0.1:$port" --root "$dir/root" --config "$dir/cfg.toml" \
    > "$dir/registry.log" 2>&1 &
  IPFLY_PIDS+=("$!")
  ipfly_wait 20 curl -s -o /dev/null "http://127.0.0.1:$port/v2/_catalog" || { cat "$dir/registry.log" >&2; ipfly_die "ipfly-registry (htpasswd) did not start"; }
}
