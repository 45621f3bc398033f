#!/usr/bin/env bash
# Parse throughput of each protocol parser over its recorded fixtures (node/protocols), on one
# thread: rows/s and MB/s of captured payload, per wall second and per CPU second.
# Usage: bench/protocol_parse.sh [seconds per protocol (1)] [protocol...]
# No root and no capture: it builds and runs only the parser crate's benchmark.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-1}
if [ $# -gt 0 ]; then shift; fi
FLOWMESH_BENCH_SECONDS=$seconds exec cargo bench -p flowmesh-protocols --bench parse_throughput -- "$@"
