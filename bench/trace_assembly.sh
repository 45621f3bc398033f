#!/usr/bin/env bash
# Trace assembly latency (issue 6): the three-host shop of node/tests/e2e_trace_mesh.rs
# (deploy/mesh.sh --capture: client on n1; nginx and PostgreSQL on n2; a Python service and
# redis-server on n3), release build. The service answers /fan/<n> with five redis GETs and
# three PostgreSQL SELECTs, so each request's trace is 20 kernel rows over the three nodes:
# the client's, nginx's server and client rows, the service's server row, and both ends of
# the eight calls. Each trace is assembled from n1 (which holds one of the 20 rows) with
# scope=global, REPEATS times, and the latencies are printed.
# Usage: bench/trace_assembly.sh [traces (20)] [repeats (5)]
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
require_root "the trace assembly benchmark (network namespaces, eBPF)"
apt_install curl iproute2 python3 nginx redis-server postgresql
python3 -c 'import psycopg2, opentelemetry.sdk, opentelemetry.exporter.otlp.proto.http' 2>/dev/null ||
    python3 -m pip install --quiet --disable-pip-version-check psycopg2-binary opentelemetry-sdk \
        opentelemetry-exporter-otlp-proto-http
log=$(mktemp)
trap 'rm -f "$log"' EXIT
if ! TRACES=${1:-20} REPEATS=${2:-5} cargo test --release -p flowmesh-node --test e2e_trace_mesh \
    -- --ignored --exact assembly_latency --nocapture > "$log" 2>&1; then
    tail -60 "$log" >&2
    exit 1
fi
grep -E '^(assembly|latency|rows per)' "$log"
