#!/usr/bin/env bash
# nginx + wrk throughput with eBPF capture off and on, in the same run, alternating rounds.
# Prints requests/s per round, the on/off ratio, and how many requests capture recorded.
# Usage: bench/nginx_wrk.sh [seconds per round (10)] [rounds (3)] [connections (50)]
# Needs root. Builds the release binary. Installs nginx and wrk if missing.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
. bench/lib.sh
require_root "the benchmark"
apt_install nginx wrk curl
secs=${1:-10}; rounds=${2:-3}; conns=${3:-50}
bench_setup
nport=$(free_port)
cat > "$work/nginx.conf" <<CONF
worker_processes 1; daemon on; pid $work/nginx.pid; error_log $work/error.log;
events { worker_connections 4096; }
http { access_log off; client_body_temp_path $work; proxy_temp_path $work; fastcgi_temp_path $work;
       uwsgi_temp_path $work; scgi_temp_path $work;
       server { listen 127.0.0.1:$nport; keepalive_requests 1000000; location / { return 200 "hello\n"; } } }
CONF
nginx -c "$work/nginx.conf"
trap 'stop_node; nginx -c "$work/nginx.conf" -s stop 2>/dev/null || true; rm -rf "$work"' EXIT

run_wrk() { wrk -t2 -c"$conns" -d"${secs}s" "http://127.0.0.1:$nport/" > "$work/wrk.txt"; }
off=(); on=(); captured_total=0; sent_total=0
for r in $(seq "$rounds"); do
    start_node --no-capture; run_wrk; off+=("$(awk '/Requests\/sec/ {print $2}' "$work/wrk.txt")"); stop_node
    start_node ""; cpu0=$(node_cpu_seconds); run_wrk; on+=("$(awk '/Requests\/sec/ {print $2}' "$work/wrk.txt")")
    sent=$(awk '/requests in/ {print $1}' "$work/wrk.txt"); sleep 3; cpu=$(python3 -c "print($(node_cpu_seconds) - $cpu0)")
    captured=$(sql "SELECT count(*) FROM flow_log.l7_flow_log WHERE server_port = $nport AND observation_point = 'server'")
    echo "round $r: off ${off[-1]} req/s, on ${on[-1]} req/s; wrk completed $sent, captured $captured server rows, lost+dropped $(lost_and_dropped), node CPU $(python3 -c "print(f'{$cpu:.1f} s = {1e6 * $cpu / max($captured, 1):.1f} µs per request')")" >&2
    stop_node
    captured_total=$((captured_total + captured)); sent_total=$((sent_total + sent))
done
summarize "nginx+wrk, $conns connections, $rounds rounds x ${secs}s each way" "${off[*]}" "${on[*]}" "$captured_total" "$sent_total"
