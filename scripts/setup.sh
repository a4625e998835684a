#!/usr/bin/env bash
# Installs every build and test dependency of ipfly from Debian (apt) and npm. Idempotent:
# already-installed packages are skipped, npm kits are only reinstalled when their lockfile changed.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"

mapfile -t pkgs < <(grep -vE '^\s*(#|$)' "$ROOT/scripts/deps-apt.txt")
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing ${missing[*]}" >&2
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# Node.js + npm (test tools only). Debian's nodejs/npm are used unless a Node.js that already
# ships npm is installed (e.g. NodeSource's), which conflicts with Debian's npm package.
if ! command -v npm >/dev/null 2>&1; then
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends nodejs npm >/dev/null
fi

# npm test tools: real IPFS implementations (js-ipfs RPC node, Helia trustless gateway).
# js-ipfs needs --omit=optional (an optional dependency is hosted outside the registry); Helia
# needs its optional native addons.
for kit in "$ROOT"/tests/ipfs-node "$ROOT"/tests/trustless-gateway; do
  [ -f "$kit/package-lock.json" ] || continue
  omit=(); [ "$(basename "$kit")" = ipfs-node ] && omit=(--omit=optional)
  stamp="$kit/node_modules/.ipfly-lock-sha"
  want="$(sha256sum "$kit/package-lock.json" | cut -d' ' -f1)"
  if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
    echo "setup: npm ci in ${kit#$ROOT/}" >&2
    (cd "$kit" && npm ci "${omit[@]}" --no-audit --no-fund --loglevel=error >/dev/null)
    echo "$want" > "$stamp"
  fi
done
echo "setup: dependencies ready" >&2
