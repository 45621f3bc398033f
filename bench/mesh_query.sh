#!/usr/bin/env bash
# Global queries over a mesh against the same rows on one node. deploy/mesh.sh brings up six
# nodes in two regions of three (one network namespace each); every node gets its own share
# of Influx points, and one more node, alone on loopback with the mesh off, gets all of them.
# For each query, in the same run: the median latency of a global query entered at n1 against
# the same query on the lone node (ratio mesh / one), and the bytes n1 received from the
# other region (its flowmesh_mesh_cross_region_received_bytes_total) against the size of the
# answer as an Arrow stream.
# All seven processes share this machine's cores: the mesh does not get more CPU than the
# lone node, so the ratio is the price of splitting, shipping and merging, not a speedup.
# Usage: bench/mesh_query.sh [rows per node (200000)] [runs per query (15)]
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
. bench/lib.sh
require_root "the mesh benchmark (network namespaces)"
apt_install curl iproute2 python3
rows=${1:-200000}; runs=${2:-15}
bench_setup
mesh_dir=$work/mesh
trap 'deploy/mesh.sh down --dir "$mesh_dir" >/dev/null 2>&1 || true; stop_node; rm -rf "$work"' EXIT

deploy/mesh.sh up -n 6 -r 2 --dir "$mesh_dir" --bin "$bin" --prefix fmb --subnet 10.215.0 >/dev/null
start_node --no-capture

python3 - "$rows" "$runs" "$fport" <<'PY'
import json, random, statistics, sys, time, urllib.parse, urllib.request

rows, runs, lone_port = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
mesh = [f"http://10.215.0.{11 + i}:20416" for i in range(6)]
lone = f"http://127.0.0.1:{lone_port}"
services = [f"svc{i}" for i in range(40)]
endpoints = [f"/api/v{i}" for i in range(25)]

def post(url, body):
    req = urllib.request.Request(url, data=body.encode(), method="POST")
    with urllib.request.urlopen(req, timeout=120) as r:
        assert r.status == 204, r.status

# every node's share: `rows` rows (one field per point), one point per second per series
now = int(time.time())
t0 = time.time()
for i, node in enumerate(mesh):
    rnd = random.Random(i)
    lines = []
    for k in range(rows):
        s, e = rnd.choice(services), rnd.choice(endpoints)
        lines.append(f"http_requests,service={s},endpoint={e} latency_ms={rnd.random() * 200:.3f} {now - 3600 + k % 3600}")
        if len(lines) == 20000 or k == rows - 1:
            body = "\n".join(lines) + "\n"
            post(f"{node}/api/v2/write?precision=s", body)
            post(f"{lone}/api/v2/write?precision=s", body)
            lines = []
print(f"loaded {rows:,} rows into each of 6 mesh nodes and {6 * rows:,} into the lone node "
      f"in {time.time() - t0:.0f} s")

def metric(base, name):
    with urllib.request.urlopen(f"{base}/metrics") as r:
        for line in r.read().decode().splitlines():
            if line.startswith(name + " "):
                return float(line.split()[1])
    raise SystemExit(f"{name} missing at {base}")

def sql(base, query, scope):
    req = urllib.request.Request(
        f"{base}/v1/sql?scope={scope}&strict=true", data=query.encode(), method="POST",
        headers={"content-type": "text/plain", "accept": "application/vnd.apache.arrow.stream"})
    t = time.perf_counter()
    with urllib.request.urlopen(req, timeout=120) as r:
        body = r.read()
    return (time.perf_counter() - t) * 1000, len(body)

def rows_of(base, query, scope):
    req = urllib.request.Request(
        f"{base}/v1/sql?scope={scope}&strict=true", data=query.encode(), method="POST",
        headers={"content-type": "text/plain", "accept": "application/json"})
    with urllib.request.urlopen(req, timeout=120) as r:
        return json.load(r)["rows"]

queries = {
    "count": "SELECT count(*) FROM ext_metrics.metrics",
    "per series sum/avg, first 40":
        "SELECT tags, count(*), sum(value), avg(value) FROM ext_metrics.metrics "
        "WHERE field = 'latency_ms' GROUP BY tags ORDER BY tags LIMIT 40",
    "top 10 series by max":
        "SELECT tags, max(value) AS m FROM ext_metrics.metrics GROUP BY tags ORDER BY m DESC, tags LIMIT 10",
    "per minute (60 groups)":
        "SELECT date_trunc('minute', time) AS t, count(*), sum(value) FROM ext_metrics.metrics "
        "GROUP BY t ORDER BY t",
}
print(f"{'query':<34} {'mesh ms':>8} {'one ms':>8} {'ratio':>6} {'crossed B':>10} {'answer B':>9} {'crossed/answer':>14}")
for name, q in queries.items():
    # the same answer both ways (the lone node holds every row)
    got, want = rows_of(mesh[0], q, "global"), rows_of(lone, q, "node")
    def same(a, b):
        if isinstance(a, float) or isinstance(b, float):
            return abs(a - b) <= 1e-9 * max(1.0, abs(a), abs(b))
        return a == b
    assert len(got) == len(want), f"{name}: {len(got)} rows from the mesh, {len(want)} from one node"
    for g, w in zip(got, want):
        assert all(same(a, b) for a, b in zip(g, w)), f"{name}: mesh {g} != one node {w}"
    for _ in range(2):  # warm up
        sql(mesh[0], q, "global"); sql(lone, q, "node")
    mesh_ms, lone_ms, crossed = [], [], []
    for _ in range(runs):
        before = metric(mesh[0], "flowmesh_mesh_cross_region_received_bytes_total")
        ms, size = sql(mesh[0], q, "global")
        crossed.append(metric(mesh[0], "flowmesh_mesh_cross_region_received_bytes_total") - before)
        mesh_ms.append(ms)
        lone_ms.append(sql(lone, q, "node")[0])
    m, o, c = statistics.median(mesh_ms), statistics.median(lone_ms), statistics.median(crossed)
    print(f"{name:<34} {m:>8.1f} {o:>8.1f} {m / o:>6.2f} {c:>10,.0f} {size:>9,} {c / size:>14.2f}")
PY
