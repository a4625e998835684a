#!/usr/bin/env bash
# Registry benchmark (issue 4), one command: `bash bench/registry.sh` (after a build; IPFLY_BIN_DIR
# selects the build dir). Both arms run in this one invocation on loopback: ipfly-registry vs
# docker-registry (distribution), same machine, same image: a single-layer image whose layer is
# SIZE_MIB (default 200) MiB of incompressible data, gzip'd.
#   push: `skopeo copy oci:IMG docker://REG/...` into a fresh registry      [shim >= 0.6 x docker-registry]
#   pull: `skopeo copy docker://REG/... oci:OUT` into an empty layout       [shim >= 0.8 x docker-registry]
#   50 concurrent pulls of the image (curl, manifest + blobs): p99 latency   [shim <= 2 x docker-registry]
# Each figure is the median of RUNS (default 3) runs. Ratios are throughput ratios (docker time /
# shim time) for push/pull, and the p99 ratio (shim / docker) for the concurrent pulls.
set -euo pipefail
BENCH="$(cd "$(dirname "$0")" && pwd)"
export IPFLY_BIN_DIR="${IPFLY_BIN_DIR:-$BENCH/../build}"
source "$BENCH/../tests/e2e/lib.sh"
ipfly_need skopeo docker-registry curl python3 gzip
SIZE_MIB=${SIZE_MIB:-200}
RUNS=${RUNS:-3}
W=$(mktemp -d /tmp/ipfly-rbench.XXXXXX)
# set +e: a failing step inside the cleanup must not skip the rm.
trap 'set +e; ipfly_e2e_cleanup "$W"; rm -rf "$W"' EXIT

# --- the image: OCI layout with one gzip layer ----------------------------------------------------
mkdir -p "$W/src/data" "$W/img/blobs/sha256"
head -c "$((SIZE_MIB * 1024 * 1024))" /dev/urandom > "$W/src/data/blob.bin"
tar --sort=name --owner=0 --group=0 --numeric-owner --mtime=@0 -C "$W/src" -cf - . | gzip -1 -n > "$W/layer.tgz"
sha() { sha256sum "$1" | cut -d' ' -f1; }
sz() { stat -c %s "$1"; }
L=$(sha "$W/layer.tgz"); mv "$W/layer.tgz" "$W/img/blobs/sha256/$L"
printf '{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":["sha256:%s"]}}' \
  "$(tar --sort=name --owner=0 --group=0 --numeric-owner --mtime=@0 -C "$W/src" -cf - . | sha256sum | cut -d' ' -f1)" > "$W/config.json"
C=$(sha "$W/config.json"); mv "$W/config.json" "$W/img/blobs/sha256/$C"
printf '{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:%s","size":%d},"layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":"sha256:%s","size":%d}]}' \
  "$C" "$(sz "$W/img/blobs/sha256/$C")" "$L" "$(sz "$W/img/blobs/sha256/$L")" > "$W/manifest.json"
M=$(sha "$W/manifest.json"); mv "$W/manifest.json" "$W/img/blobs/sha256/$M"
printf '{"imageLayoutVersion":"1.0.0"}' > "$W/img/oci-layout"
printf '{"schemaVersion":2,"manifests":[{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:%s","size":%d,"annotations":{"org.opencontainers.image.ref.name":"1"}}]}' \
  "$M" "$(sz "$W/img/blobs/sha256/$M")" > "$W/img/index.json"
rm -rf "$W/src"
LAYER_BYTES=$(sz "$W/img/blobs/sha256/$L")
echo "ipfly-registry vs docker-registry ($(nproc) cores, loopback): 1 layer, $LAYER_BYTES bytes (gzip), median of $RUNS"

median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
start_arm() {  # ARM DIR PORT
  if [ "$1" = shim ]; then ipfly_start_registry "$2" "$3"; else ipfly_start_docker_registry "$2" "$3"; fi
  ARM_PID=${IPFLY_PIDS[-1]}
}
stop_arm() { ipfly_stop_pid "$ARM_PID"; }

declare -A PUSH PULL P99 PUSHES PULLS P99S
# Arms alternate within each run, so that load from elsewhere on the machine hits both alike.
for run in $(seq "$RUNS"); do
  for arm in docker shim; do
    # A fresh registry per run: skopeo's blob-info cache must not turn the push into a mount.
    port=$(ipfly_freeport); dir="$W/$arm-$run"; start_arm "$arm" "$dir" "$port"
    t0=$(ipfly_now)
    skopeo copy -q --dest-tls-verify=false "oci:$W/img:1" "docker://127.0.0.1:$port/bench/img:1"
    PUSHES[$arm]+="$(ipfly_since "$t0") "
    sync
    t0=$(ipfly_now)
    skopeo copy -q --src-tls-verify=false "docker://127.0.0.1:$port/bench/img:1" "oci:$dir/out:1"
    PULLS[$arm]+="$(ipfly_since "$t0") "
    cmp -s "$dir/out/blobs/sha256/$L" "$W/img/blobs/sha256/$L" || ipfly_die "$arm: pulled layer differs"
    rm -rf "$dir/out"
    # 50 concurrent pulls (manifest + config + layer), latency of each whole pull.
    P99S[$arm]+="$(python3 - "$port" "$L" "$C" <<'PY'
import sys, time, hashlib, threading, http.client
port, layer, config = int(sys.argv[1]), sys.argv[2], sys.argv[3]
lat, errs = [], []
def pull():
    t = time.time()
    try:
        for path, accept in (("/v2/bench/img/manifests/1", "application/vnd.oci.image.manifest.v1+json"),
                             ("/v2/bench/img/blobs/sha256:" + config, "*/*"),
                             ("/v2/bench/img/blobs/sha256:" + layer, "*/*")):
            c = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
            c.request("GET", path, headers={"Accept": accept})
            r = c.getresponse()
            h = hashlib.sha256()
            while True:
                b = r.read(1 << 20)
                if not b: break
                h.update(b)
            if r.status != 200: errs.append(r.status)
            if "blobs" in path and h.hexdigest() != path.rsplit(":", 1)[1]: errs.append("digest")
            c.close()
    except Exception as e:
        errs.append(repr(e))
    lat.append(time.time() - t)
ts = [threading.Thread(target=pull) for _ in range(50)]
for t in ts: t.start()
for t in ts: t.join()
if errs:
    print("errors:", errs[:5], file=sys.stderr); sys.exit(1)
lat.sort()
print("%.3f" % lat[min(len(lat) - 1, int(0.99 * len(lat)))])
PY
) "
    stop_arm
    rm -rf "$dir"
  done
done
for arm in docker shim; do
  PUSH[$arm]=$(tr ' ' '\n' <<< "${PUSHES[$arm]}" | grep . | median)
  PULL[$arm]=$(tr ' ' '\n' <<< "${PULLS[$arm]}" | grep . | median)
  P99[$arm]=$(tr ' ' '\n' <<< "${P99S[$arm]}" | grep . | median)
  echo "  $arm: push ${PUSH[$arm]} s (runs: ${PUSHES[$arm]}), pull ${PULL[$arm]} s (runs: ${PULLS[$arm]}), 50-pull p99 ${P99[$arm]} s (runs: ${P99S[$arm]})"
done
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", a / b }'; }
mib_s() { awk -v n="$LAYER_BYTES" -v t="$1" 'BEGIN { printf "%.0f", n / t / 1048576 }'; }
echo "push throughput: shim $(mib_s "${PUSH[shim]}") MiB/s, docker-registry $(mib_s "${PUSH[docker]}") MiB/s, ratio $(ratio "${PUSH[docker]}" "${PUSH[shim]}") [>= 0.6]"
echo "pull throughput: shim $(mib_s "${PULL[shim]}") MiB/s, docker-registry $(mib_s "${PULL[docker]}") MiB/s, ratio $(ratio "${PULL[docker]}" "${PULL[shim]}") [>= 0.8]"
echo "50 concurrent pulls p99: shim ${P99[shim]} s, docker-registry ${P99[docker]} s, ratio $(ratio "${P99[shim]}" "${P99[docker]}") [<= 2]"
