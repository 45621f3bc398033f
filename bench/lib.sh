# Shared by the capture-overhead benchmarks: a flowmesh node started and stopped around
# each round, and the off/on ratio summary.
# shellcheck shell=bash

bench_setup() { # builds the release binary; sets bin, work, fport
    cargo build --release -p flowmesh-node >&2
    bin=${CARGO_TARGET_DIR:-target}/release/flowmesh
    work=$(mktemp -d)
    fport=$(free_port)
    node_pid=""
}

redis_start() { # redis-server on $rport (set here) in $work; it and the node stop on exit
    rport=$(free_port)
    redis-server --port "$rport" --bind 127.0.0.1 --save '' --appendonly no --daemonize yes --dir "$work" --pidfile "$work/redis.pid" >/dev/null
    trap 'stop_node; redis-cli -p "$rport" shutdown nosave >/dev/null 2>&1 || true; rm -rf "$work"' EXIT
    for _ in $(seq 50); do redis-cli -p "$rport" ping >/dev/null 2>&1 && break; sleep 0.1; done
}

redis_rps() { # $1 requests per test, $2 pipeline: mean requests/s over the SET and GET tests
    redis-benchmark -h 127.0.0.1 -p "$rport" -n "$1" -t set,get -P "$2" -q --csv |
        python3 -c 'import csv,sys; r=list(csv.reader(sys.stdin)); print(sum(float(x[1]) for x in r[1:])/ (len(r)-1))'
}

redis_captured() { # SET and GET server rows captured for the redis on $rport
    sql "SELECT count(*) FROM flow_log.l7_flow_log WHERE server_port = $rport AND observation_point = 'server' AND request_type IN ('SET', 'GET')"
}

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

start_node() { # $1: extra flag (e.g. --no-capture)
    "$bin" up --data-dir "$work/data" --listen "127.0.0.1:$fport" --peer-listen 127.0.0.1:0 --flight-listen 127.0.0.1:0 $1 > "$work/node.log" 2>&1 &
    node_pid=$!
    for _ in $(seq 100); do curl -sf "127.0.0.1:$fport/v1/status" >/dev/null && return 0; sleep 0.1; done
    echo "node did not start" >&2; cat "$work/node.log" >&2; exit 1
}

node_cpu_seconds() { # user + system CPU the node has used so far
    python3 - "$node_pid" <<'PY'
import os, sys
f = open(f"/proc/{sys.argv[1]}/stat").read().rsplit(")", 1)[1].split()
print((int(f[11]) + int(f[12])) / os.sysconf("SC_CLK_TCK"))
PY
}

stop_node() {
    [ -n "$node_pid" ] || return 0
    kill "$node_pid"; wait "$node_pid" 2>/dev/null || true; node_pid=""
    rm -rf "$work/data"
}

sql() { # first cell of the first row
    "$bin" sql --server "http://127.0.0.1:$fport" --format json "$1" |
        python3 -c 'import json,sys; print(json.load(sys.stdin)["rows"][0][0])'
}

lost_and_dropped() {
    sql "SELECT sum(value) FROM system.metrics WHERE name IN ('flowmesh_capture_kernel_lost_events_total','flowmesh_capture_dropped_rows_total')"
}

# summarize LABEL "off values" "on values" captured sent
summarize() {
    python3 - "$@" <<'PY'
import statistics, sys
label, off, on = sys.argv[1], [float(x) for x in sys.argv[2].split()], [float(x) for x in sys.argv[3].split()]
cap, sent = int(sys.argv[4]), int(sys.argv[5])
mo, mn = statistics.median(off), statistics.median(on)
print(label)
print(f"capture off: median {mo:,.0f} req/s  (rounds: {', '.join(f'{x:,.0f}' for x in off)})")
print(f"capture on:  median {mn:,.0f} req/s  (rounds: {', '.join(f'{x:,.0f}' for x in on)})")
print(f"ratio on/off: {mn / mo:.3f}  (throughput loss {100 * (1 - mn / mo):.1f}%)")
print(f"captured server rows / requests sent: {cap} / {sent} = {cap / sent:.4f}")
PY
}
