#!/usr/bin/env bash
# nginx + wrk throughput with eBPF capture off and on, in the same run, alternating rounds.
# Prints requests/s for each round, the on/off ratio, and how many requests capture saw.
# Usage: bench/nginx_wrk.sh [seconds per round (10)] [rounds (3)] [connections (50)]
# Needs root. Builds the release binary. Installs nginx and wrk if missing.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
require_root "the benchmark"
apt_install nginx wrk curl
secs=${1:-10}; rounds=${2:-3}; conns=${3:-50}
cargo build --release -p flowmesh-node >&2
bin=${CARGO_TARGET_DIR:-target}/release/flowmesh
work=$(mktemp -d)
nport=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
fport=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
cat > "$work/nginx.conf" <<CONF
worker_processes 1; daemon on; pid $work/nginx.pid; error_log $work/error.log;
events { worker_connections 4096; }
http { access_log off; client_body_temp_path $work; proxy_temp_path $work; fastcgi_temp_path $work;
       uwsgi_temp_path $work; scgi_temp_path $work;
       server { listen 127.0.0.1:$nport; keepalive_requests 1000000; location / { return 200 "hello\n"; } } }
CONF
nginx -c "$work/nginx.conf"
node_pid=""
cleanup() {
    [ -n "$node_pid" ] && kill "$node_pid" 2>/dev/null && wait "$node_pid" 2>/dev/null || true
    nginx -c "$work/nginx.conf" -s stop 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT

start_node() { # $1: extra flag
    "$bin" up --data-dir "$work/data" --listen "127.0.0.1:$fport" $1 > "$work/node.log" 2>&1 &
    node_pid=$!
    for _ in $(seq 100); do curl -sf "127.0.0.1:$fport/v1/status" >/dev/null && return 0; sleep 0.1; done
    echo "node did not start" >&2; cat "$work/node.log" >&2; exit 1
}
stop_node() { kill "$node_pid"; wait "$node_pid" 2>/dev/null || true; node_pid=""; }
run_wrk() { wrk -t2 -c"$conns" -d"${secs}s" "http://127.0.0.1:$nport/" | tee -a "$work/wrk.txt" | awk '/Requests\/sec/ {print $2}'; }
requests_of_last_run() { grep -E '^ +[0-9]+ requests in' "$work/wrk.txt" | tail -1 | awk '{print $1}'; }
sql() { "$bin" sql --server "http://127.0.0.1:$fport" --format json "$1" | python3 -c 'import json,sys; print(json.load(sys.stdin)["rows"][0][0])'; }

off=(); on=(); captured_total=0; sent_total=0
for r in $(seq "$rounds"); do
    start_node --no-capture; off+=("$(run_wrk)"); stop_node
    start_node ""; on+=("$(run_wrk)"); sent=$(requests_of_last_run); sleep 3
    captured=$(sql "SELECT count(*) FROM flow_log.l7_flow_log WHERE server_port = $nport AND observation_point = 'server'")
    lost=$(sql "SELECT sum(value) FROM system.metrics WHERE name IN ('flowmesh_capture_kernel_lost_events_total','flowmesh_capture_dropped_rows_total')")
    stop_node; rm -rf "$work/data"
    echo "round $r: off ${off[-1]} req/s, on ${on[-1]} req/s; wrk completed $sent, captured $captured server rows, lost events + dropped rows $lost" >&2
    captured_total=$((captured_total + captured)); sent_total=$((sent_total + sent))
done
python3 - "${off[*]}" "${on[*]}" "$captured_total" "$sent_total" "$secs" "$conns" <<'PY'
import statistics, sys
off = [float(x) for x in sys.argv[1].split()]; on = [float(x) for x in sys.argv[2].split()]
cap, sent, secs, conns = int(sys.argv[3]), int(sys.argv[4]), sys.argv[5], sys.argv[6]
mo, mn = statistics.median(off), statistics.median(on)
print(f"nginx+wrk, {conns} connections, {len(off)} rounds x {secs}s each way")
print(f"capture off: median {mo:,.0f} req/s  (rounds: {', '.join(f'{x:,.0f}' for x in off)})")
print(f"capture on:  median {mn:,.0f} req/s  (rounds: {', '.join(f'{x:,.0f}' for x in on)})")
print(f"ratio on/off: {mn / mo:.3f}  (throughput loss {100 * (1 - mn / mo):.1f}%)")
print(f"captured server rows / wrk completed requests: {cap} / {sent} = {cap / sent:.4f}")
PY
