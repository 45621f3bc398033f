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
rport=$(free_port)
redis-server --port "$rport" --bind 127.0.0.1 --save '' --appendonly no --daemonize yes --dir "$work" --pidfile "$work/redis.pid" >/dev/null
trap 'stop_node; redis-cli -p "$rport" shutdown nosave >/dev/null 2>&1 || true; rm -rf "$work"' EXIT
for _ in $(seq 50); do redis-cli -p "$rport" ping >/dev/null 2>&1 && break; sleep 0.1; done

run_bench() { # prints total requests/s over the SET and GET tests
    redis-benchmark -h 127.0.0.1 -p "$rport" -n "$n" -t set,get -P "$pipeline" -q --csv |
        python3 -c 'import csv,sys; r=list(csv.reader(sys.stdin)); print(sum(float(x[1]) for x in r[1:])/ (len(r)-1))'
}
off=(); on=(); captured_total=0; sent_total=0
for r in $(seq "$rounds"); do
    start_node --no-capture; off+=("$(run_bench)"); stop_node
    start_node ""; cpu0=$(node_cpu_seconds); on+=("$(run_bench)"); sleep 3; cpu=$(python3 -c "print($(node_cpu_seconds) - $cpu0)")
    captured=$(sql "SELECT count(*) FROM flow_log.l7_flow_log WHERE server_port = $rport AND observation_point = 'server' AND request_type IN ('SET', 'GET')")
    echo "round $r: off ${off[-1]} req/s, on ${on[-1]} req/s; captured $captured of $((2 * n)) SET+GET server rows, lost+dropped $(lost_and_dropped), node CPU $(python3 -c "print(f'{$cpu:.1f} s = {1e6 * $cpu / max($captured, 1):.1f} µs per request')")" >&2
    stop_node
    captured_total=$((captured_total + captured)); sent_total=$((sent_total + 2 * n))
done
summarize "redis-benchmark SET+GET, -P $pipeline, $rounds rounds x $n requests per test each way" "${off[*]}" "${on[*]}" "$captured_total" "$sent_total"
