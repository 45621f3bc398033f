#!/usr/bin/env bash
# redis-server + redis-benchmark throughput with eBPF capture off and on, in the same run,
# alternating rounds. Prints requests/s per round, the on/off ratio, and captured rows.
# Usage: bench/redis_benchmark.sh [requests per round (200000)] [rounds (3)] [pipeline (1)]
# Needs root. Builds the release binary. Installs redis if missing.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
. bench/lib.sh
require_root "the benchmark"
apt_install redis-server redis-tools curl
n=${1:-200000}; rounds=${2:-3}; pipeline=${3:-1}
bench_setup
redis_start
off=(); on=(); captured_total=0; sent_total=0
for r in $(seq "$rounds"); do
    start_node --no-capture; off+=("$(redis_rps "$n" "$pipeline")"); stop_node
    start_node ""; cpu0=$(node_cpu_seconds); on+=("$(redis_rps "$n" "$pipeline")"); sleep 3; cpu=$(python3 -c "print($(node_cpu_seconds) - $cpu0)")
    captured=$(redis_captured)
    echo "round $r: off ${off[-1]} req/s, on ${on[-1]} req/s; captured $captured of $((2 * n)) SET+GET server rows, lost+dropped $(lost_and_dropped), node CPU $(python3 -c "print(f'{$cpu:.1f} s = {1e6 * $cpu / max($captured, 1):.1f} µs per request')")" >&2
    stop_node
    captured_total=$((captured_total + captured)); sent_total=$((sent_total + 2 * n))
done
summarize "redis-benchmark SET+GET, -P $pipeline, $rounds rounds x $n requests per test each way" "${off[*]}" "${on[*]}" "$captured_total" "$sent_total"
