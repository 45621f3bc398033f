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
work=$(mktemp -d); fport=$(free_port); node_pid=""; rport=$(free_port)
redis-server --port "$rport" --bind 127.0.0.1 --save '' --appendonly no --daemonize yes --dir "$work" --pidfile "$work/redis.pid" >/dev/null
trap 'stop_node; redis-cli -p "$rport" shutdown nosave >/dev/null 2>&1 || true; rm -rf "$work"' EXIT
for _ in $(seq 50); do redis-cli -p "$rport" ping >/dev/null 2>&1 && break; sleep 0.1; done
run_bench() {
    redis-benchmark -h 127.0.0.1 -p "$rport" -n "$n" -t set,get -q --csv |
        python3 -c 'import csv,sys; r=list(csv.reader(sys.stdin)); print(sum(float(x[1]) for x in r[1:])/ (len(r)-1))'
}
for r in $(seq "$rounds"); do
    for variant in off before after; do
        case $variant in
            off) bin=$before; flag=--no-capture ;;
            before) bin=$before; flag="" ;;
            after) bin=$after; flag="" ;;
        esac
        start_node "$flag"; cpu0=$(node_cpu_seconds); rps=$(run_bench); sleep 3
        cpu=$(python3 -c "print($(node_cpu_seconds) - $cpu0)")
        captured=0
        if [ "$variant" != off ]; then
            captured=$(sql "SELECT count(*) FROM flow_log.l7_flow_log WHERE server_port = $rport AND observation_point = 'server' AND request_type IN ('SET', 'GET')")
        fi
        echo "round $r $variant: $rps req/s, captured $captured of $((2 * n)), node CPU $(python3 -c "print(f'{$cpu:.2f} s = {1e6 * $cpu / (2 * $n):.1f} µs per request')")"
        stop_node
    done
done
