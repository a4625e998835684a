#!/usr/bin/env bash
# The first of the README's two commands: installs every dependency (Debian packages + npm test
# tools), builds ipfly, and runs the main job on the embedded default (no daemon, no network).
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
bash "$ROOT/scripts/setup.sh"
echo "==> building (first build takes a few minutes; ccache makes later ones fast)" >&2
bash "$ROOT/scripts/build.sh" -DBUILD_TESTING=ON
exec bash "$ROOT/scripts/demo.sh"
