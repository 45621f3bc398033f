#!/usr/bin/env bash
# Two node binaries side by side on the redis-benchmark workload of redis_benchmark.sh:
# capture off, capture on with BEFORE, capture on with AFTER, alternating per round.
# Prints requests/s, captured SET+GET server rows and the node's CPU per request.
# Usage: bench/capture_ab.sh BEFORE AFTER [requests per test (100000)] [rounds (2)]
# (e.g. a copy of target/release/flowmesh kept before a change, and the rebuilt one).
# Needs root. Installs redis if missing.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
. bench/lib.sh
require_root "the benchmark"
apt_install redis-server redis-tools curl
before=$1; after=$2; n=${3:-100000}; rounds=${4:-2}
work=$(mktemp -d); fport=$(free_port); node_pid=""
redis_start
for r in $(seq "$rounds"); do
    for variant in off before after; do
        case $variant in
            off) bin=$before; flag=--no-capture ;;
            before) bin=$before; flag="" ;;
            after) bin=$after; flag="" ;;
        esac
        start_node "$flag"; cpu0=$(node_cpu_seconds); rps=$(redis_rps "$n" 1); sleep 3
        cpu=$(python3 -c "print($(node_cpu_seconds) - $cpu0)")
        captured=0
        if [ "$variant" != off ]; then
            captured=$(redis_captured)
        fi
        echo "round $r $variant: $rps req/s, captured $captured of $((2 * n)), node CPU $(python3 -c "print(f'{$cpu:.2f} s = {1e6 * $cpu / (2 * $n):.1f} µs per request')")"
        stop_node
    done
done
