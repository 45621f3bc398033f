#!/usr/bin/env bash
# Prometheus remote_write ingest, flowmesh side by side with Prometheus: the same requests
# (node/examples/remote_write_load.rs: node_exporter-like series, one sample per series per
# scrape interval, ending now) sent to flowmesh's /api/v1/write and to Prometheus' own
# receiver (--web.enable-remote-write-receiver). Prints, for each: samples/s per core of the
# receiver's CPU, samples/s wall, bytes per sample on disk, and query latency when the node
# serves PromQL; then the ratios.
# Bytes: flowmesh's prometheus.samples segments after a clean stop (the WAL is then
# deleted) plus the tag dictionary directory, which holds the series' label strings;
# Prometheus' TSDB snapshot of its head (chunks + index, the form its blocks take).
# Usage: bench/remote_write.sh [series (10000)] [minutes (60)] [interval seconds (15)]
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
. bench/lib.sh
apt_install prometheus curl
series=${1:-10000}; minutes=${2:-60}; interval=${3:-15}
bench_setup
cargo build --release -p flowmesh-node --example remote_write_load >&2
load=${CARGO_TARGET_DIR:-target}/release/examples/remote_write_load
pport=$(free_port)
prom_pid=""
trap 'stop_node; [ -z "$prom_pid" ] || kill "$prom_pid" 2>/dev/null; rm -rf "$work"' EXIT

query_latency() { # $1: base URL of a Prometheus API; prints the median of 5 query_range runs in ms, or n/a
    local url=$1 first=$2 last=$3
    curl -sf -o /dev/null "$url/api/v1/query?query=up" || { echo n/a; return; }
    python3 - "$url" "$first" "$last" <<'PY'
import statistics, sys, time, urllib.parse, urllib.request
url, first, last = sys.argv[1], int(sys.argv[2]) / 1000, int(sys.argv[3]) / 1000
q = "sum by (mode) (rate(node_cpu_seconds_total[5m]))"
params = urllib.parse.urlencode({"query": q, "start": first + 300, "end": last, "step": 60})
times = []
for _ in range(5):
    t = time.perf_counter()
    with urllib.request.urlopen(f"{url}/api/v1/query_range?{params}") as r:
        r.read()
    times.append((time.perf_counter() - t) * 1000)
print(f"{statistics.median(times):.1f}")
PY
}

# flowmesh
start_node --no-capture
"$load" --url "http://127.0.0.1:$fport/api/v1/write" --pid "$node_pid" --series "$series" \
    --minutes "$minutes" --interval-s "$interval" > "$work/flowmesh.json"
read -r first last < <(python3 -c "import json; d=json.load(open('$work/flowmesh.json')); print(d['first_ms'], d['last_ms'])")
flowmesh_query=$(query_latency "http://127.0.0.1:$fport/prom" "$first" "$last")
kill "$node_pid"; wait "$node_pid" 2>/dev/null || true; node_pid=""
flowmesh_segments=$(find "$work/data" -path '*prometheus.samples*' -name '*.parquet' -printf '%s\n' | awk '{s+=$1} END {print s+0}')
flowmesh_dictionary=$(du -sb "$work/data/consensus" | cut -f1)

# Prometheus
cat > "$work/prometheus.yml" <<YML
global: {scrape_interval: 1h}
YML
prometheus --config.file="$work/prometheus.yml" --web.listen-address="127.0.0.1:$pport" \
    --storage.tsdb.path="$work/tsdb" --web.enable-remote-write-receiver --web.enable-admin-api \
    > "$work/prometheus.log" 2>&1 &
prom_pid=$!
for _ in $(seq 100); do curl -sf "127.0.0.1:$pport/-/ready" >/dev/null && break; sleep 0.2; done
"$load" --url "http://127.0.0.1:$pport/api/v1/write" --pid "$prom_pid" --series "$series" \
    --minutes "$minutes" --interval-s "$interval" > "$work/prometheus.json"
prometheus_query=$(query_latency "http://127.0.0.1:$pport" "$first" "$last")
snapshot=$(curl -sf -XPOST "127.0.0.1:$pport/api/v1/admin/tsdb/snapshot" | python3 -c 'import json,sys; print(json.load(sys.stdin)["data"]["name"])')
prometheus_bytes=$(du -sb "$work/tsdb/snapshots/$snapshot" | cut -f1)

python3 - "$work" "$flowmesh_segments" "$flowmesh_dictionary" "$prometheus_bytes" "$flowmesh_query" "$prometheus_query" <<'PY'
import json, sys
work, seg, dic, prom, fq, pq = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), sys.argv[5], sys.argv[6]
f = json.load(open(f"{work}/flowmesh.json")); p = json.load(open(f"{work}/prometheus.json"))
n = f["samples"]
print(f"remote_write: {f['series']} series, {n} samples, {f['requests']} requests each")
print(f"{'':28}{'flowmesh':>14}{'Prometheus':>14}{'ratio':>9}")
def row(name, a, b, fmt):
    print(f"{name:28}{fmt.format(a):>14}{fmt.format(b):>14}{a / b:>9.3f}")
row("samples/s per core", f["samples_per_cpu_s"], p["samples_per_cpu_s"], "{:,.0f}")
row("samples/s (wall)", f["samples_per_s"], p["samples_per_s"], "{:,.0f}")
row("receiver CPU s", f["receiver_cpu_s"], p["receiver_cpu_s"], "{:.2f}")
row("bytes/sample on disk", (seg + dic) / n, prom / n, "{:.3f}")
print(f"  flowmesh: segments {seg / n:.3f} B/sample + dictionary {dic / n:.3f} B/sample")
if fq != "n/a" and pq != "n/a":
    row("query_range ms (median)", float(fq), float(pq), "{:.1f}")
else:
    print(f"query_range ms: flowmesh {fq}, Prometheus {pq}")
PY
