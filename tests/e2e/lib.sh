# Starting and stopping ipfly's daemons and a private containerd on loopback (sourced by the
# end-to-end tests, scripts/demo.sh and bench/). Every process started here is recorded in
# IPFLY_PIDS and stopped by PID in ipfly_e2e_cleanup; mounts under the work dir are undone.
#   IPFLY_BIN_DIR  build dir (default <repo>/build)
# shellcheck disable=SC2034
IPFLY_E2E_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
IPFLY_REPO="$(cd "$IPFLY_E2E_DIR/../.." && pwd)"
IPFLY_BIN_DIR="${IPFLY_BIN_DIR:-$IPFLY_REPO/build}"
IPFLY_PIDS=()
source "$IPFLY_E2E_DIR/images.sh"

ipfly_die() { echo "FAIL: $*" >&2; exit 1; }
ipfly_need() { for t in "$@"; do command -v "$t" >/dev/null || ipfly_die "required tool '$t' is not installed (scripts/setup.sh installs it)"; done; }
ipfly_freeport() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
ipfly_now() { date +%s.%N; }
ipfly_since() { awk -v a="$1" -v b="$(ipfly_now)" 'BEGIN { printf "%.3f", b - a }'; }
ipfly_sock_ready() {  # SOCKET: a unix socket that accepts connections
  python3 -c 'import socket,sys; s=socket.socket(socket.AF_UNIX); s.connect(sys.argv[1])' "$1" 2>/dev/null
}
ipfly_wait() {  # SECONDS CMD... : polls CMD every 0.05 s
  local n=$(( $1 * 20 )); shift
  for _ in $(seq "$n"); do "$@" >/dev/null 2>&1 && return 0; sleep 0.05; done
  return 1
}

# ipfly_start_registry DIR PORT [args...]: ipfly-registry with its own root under DIR.
ipfly_start_registry() {
  local dir=$1 port=$2; shift 2
  mkdir -p "$dir"
  "$IPFLY_BIN_DIR/registry_shim/ipfly-registry" --listen "127.0.0.1:$port" --root "$dir/root" "$@" \
    > "$dir/registry.log" 2>&1 &
  IPFLY_PIDS+=("$!")
  ipfly_wait 20 curl -sf "http://127.0.0.1:$port/v2/" || { cat "$dir/registry.log" >&2; ipfly_die "ipfly-registry did not start"; }
}

# ipfly_start_docker_registry DIR PORT: the reference registry (distribution), loopback only.
ipfly_start_docker_registry() {
  local dir=$1 port=$2
  mkdir -p "$dir/data"
  printf 'version: 0.1\nlog: {level: error}\nstorage: {filesystem: {rootdirectory: %s}, delete: {enabled: true}}\nhttp: {addr: 127.0.0.1:%s}\n' \
    "$dir/data" "$port" > "$dir/config.yml"
  docker-registry serve "$dir/config.yml" > "$dir/docker-registry.log" 2>&1 &
  IPFLY_PIDS+=("$!")
  ipfly_wait 20 curl -sf "http://127.0.0.1:$port/v2/" || ipfly_die "docker-registry did not start"
}

# ipfly_start_snapshotter DIR [args...]: socket DIR/snap.sock, root DIR/snap, its own block
# store and cache under DIR/snap-store (config DIR/snap.toml, written once; extra TOML lines in
# IPFLY_SNAP_TOML).
ipfly_start_snapshotter() {
  local dir=$1; shift
  mkdir -p "$dir"
  [ -f "$dir/snap.toml" ] || printf '[store]\ndir = "%s"\n%s\n' "$dir/snap-store" "${IPFLY_SNAP_TOML:-}" > "$dir/snap.toml"
  "$IPFLY_BIN_DIR/snapshotter/ipfly-snapshotter" --config "$dir/snap.toml" --socket "$dir/snap.sock" --root "$dir/snap" "$@" \
    >> "$dir/snapshotter.log" 2>&1 &
  IPFLY_SNAP_PID=$!
  IPFLY_PIDS+=("$IPFLY_SNAP_PID")
  ipfly_wait 20 ipfly_sock_ready "$dir/snap.sock" || { cat "$dir/snapshotter.log" >&2; ipfly_die "ipfly-snapshotter did not start"; }
}

# ipfly_start_containerd DIR [SNAPSHOTTER_SOCK [EXTRA_TOML]]: private containerd (no CRI), with
# the ipfly proxy plugin when SNAPSHOTTER_SOCK is not empty, and EXTRA_TOML appended to its
# config; sets IPFLY_CTR_SOCK.
ipfly_start_containerd() {
  local dir=$1 snap=${2:-} extra=${3:-}
  mkdir -p "$dir/ctd"
  cat > "$dir/ctd/config.toml" <<TOML
version = 2
root = "$dir/ctd/root"
state = "$dir/ctd/state"
disabled_plugins = ["io.containerd.grpc.v1.cri"]
[grpc]
  address = "$dir/ctd/containerd.sock"
[plugins."io.containerd.internal.v1.opt"]
  path = "$dir/ctd/opt"
TOML
  if [ -n "$snap" ]; then
    cat >> "$dir/ctd/config.toml" <<TOML
[proxy_plugins]
  [proxy_plugins.ipfly]
    type = "snapshot"
    address = "$snap"
TOML
  fi
  if [ -n "$extra" ]; then printf '%s\n' "$extra" >> "$dir/ctd/config.toml"; fi
  containerd --config "$dir/ctd/config.toml" > "$dir/containerd.log" 2>&1 &
  IPFLY_PIDS+=("$!")
  IPFLY_CTR_SOCK="$dir/ctd/containerd.sock"
  ipfly_wait 20 ctr -a "$IPFLY_CTR_SOCK" version || { cat "$dir/containerd.log" >&2; ipfly_die "containerd did not start"; }
}

ipfly_stop_pid() {  # PID: SIGTERM, then SIGKILL after 10 s
  local p=$1
  kill "$p" 2>/dev/null || return 0
  for _ in $(seq 200); do kill -0 "$p" 2>/dev/null || { wait "$p" 2>/dev/null || true; return 0; }; sleep 0.05; done
  kill -9 "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true
}

# ipfly_e2e_cleanup DIR: stops everything (newest first), unmounts leftovers under DIR.
ipfly_e2e_cleanup() {
  local dir=$1 i
  for (( i=${#IPFLY_PIDS[@]}-1; i>=0; i-- )); do ipfly_stop_pid "${IPFLY_PIDS[$i]}"; done
  IPFLY_PIDS=()
  if [ -n "$dir" ] && [ -d "$dir" ]; then
    { grep -F " $dir" /proc/self/mounts || true; } | awk '{print $2}' | sort -r | while read -r m; do
      umount -l "$m" 2>/dev/null || true
    done
    rm -rf "$dir"
  fi
}

# ipfly_metric URL NAME[{labels}]: the value of one Prometheus sample (0 if absent).
ipfly_metric() {
  curl -sf "$1/metrics" | awk -v n="$2" '$1 == n { print $2; found=1 } END { if (!found) print 0 }'
}

# ipfly_lazy_fetched METRICS_URL [DIGEST...]: compressed bytes fetched by the snapshotter's lazy
# layers (each layer counted once, however many snapshots share it), optionally only for the
# given layer digests.
ipfly_lazy_fetched() {
  local url=$1; shift
  curl -sf "$url/status" | python3 -c '
import json, sys
want = set(sys.argv[1:])
seen = {}
for s in json.load(sys.stdin).get("snapshots", []):
    l = s.get("lazy")
    if not l or (want and l.get("digest") not in want):
        continue
    seen[l["blob_cid"]] = max(seen.get(l["blob_cid"], 0), l.get("bytes_fetched", 0))
print(sum(seen.values()))' "$@"
}

# ipfly_image_layers IMAGE_TAR: the layer digests of an OCI archive made by make_oci_image.py.
ipfly_image_layers() {
  python3 - "$1" <<'PY'
import json, subprocess, sys
t = sys.argv[1]
idx = json.loads(subprocess.check_output(["tar", "-xOf", t, "./index.json"]))
m = json.loads(subprocess.check_output(
    ["tar", "-xOf", t, "./blobs/sha256/" + idx["manifests"][0]["digest"].split(":")[1]]))
print(" ".join(l["digest"] for l in m["layers"]))
PY
}
