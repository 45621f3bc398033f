#!/usr/bin/env bash
# Runs one flowmesh node with eBPF capture on; API and UI on http://127.0.0.1:20416.
# Usage: scripts/up.sh [flowmesh up flags...]   (e.g. --data-dir /tmp/fm --listen 127.0.0.1:20500)
# Data goes to ./data unless --data-dir or FLOWMESH_DATA_DIR says otherwise.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
require_root "flowmesh up"
apt_install ca-certificates curl
profile=${FLOWMESH_PROFILE:-release}
if [ "$profile" = release ]; then
    cargo build --release -p flowmesh-node
else
    cargo build -p flowmesh-node
fi
target=${CARGO_TARGET_DIR:-target}/$profile
export FLOWMESH_DATA_DIR=${FLOWMESH_DATA_DIR:-$PWD/data}
exec "$target/flowmesh" up "$@"
