#!/usr/bin/env bash
# A local flowmesh mesh: N nodes in M regions, each node in its own network namespace with
# its own address, joined to the host through one bridge. Each region is one dictionary
# (Raft) group; all nodes join one libp2p mesh.
#
#   deploy/mesh.sh up      [-n NODES] [-r REGIONS] [--dir DIR] [--bin FLOWMESH] [--prefix P]
#                          [--subnet A.B.C] [--token T] [--no-tls] [--capture]
#   deploy/mesh.sh traffic [--dir DIR] [--seconds S]  writes request points into every node
#   deploy/mesh.sh status  [--dir DIR]                one line per node, as the mesh sees it
#   deploy/mesh.sh sql     [--dir DIR] [--scope S] [--strict] SQL   runs SQL on n1
#                                                     (scope global unless told)
#   deploy/mesh.sh kill|start NAME [--dir DIR]        kill -9 / start one node (e.g. n5)
#   deploy/mesh.sh down    [--dir DIR]                stops every node, removes namespaces,
#                                                     bridge and DIR
#
# Node k (1-based) is n<k> at <subnet>.<10+k>, namespace <prefix>-n<k>, in region r<j> where
# the nodes are cut into M contiguous regions (n1..n3 → r1, n4..n6 → r2 for 6 and 2). Every
# node uses the standard ports on its own address: HTTP 20416, Flight SQL 20417, peer (Raft
# and mesh queries) 20418, libp2p 20419. The host reaches them through the bridge at
# <subnet>.1. Capture is off unless --capture: then each node traces only the sockets of its
# own namespace (`[capture] own_netns_only`), so processes started in a namespace
# (`ip netns exec <prefix>-n<k> …`) are that node's host. The peer port speaks mutual TLS with certificates deploy/certs.sh
# makes in DIR/pki (one per node, for its address) unless --no-tls. Defaults: 6 nodes,
# 2 regions, DIR /tmp/flowmesh-mesh, prefix fm, subnet 10.213.0, the binary from
# `cargo build` (release if built, else debug).
set -euo pipefail
cd "$(dirname "$0")/.."
root_dir=$PWD

die() { echo "mesh.sh: $*" >&2; exit 1; }

cmd=${1:-}; [ -n "$cmd" ] || die "usage: deploy/mesh.sh up|traffic|status|sql|kill|start|down [options]"
shift
nodes=6 regions=2 dir=/tmp/flowmesh-mesh bin="" prefix=fm subnet=10.213.0 token="" seconds=10
scope=global strict="" target="" sql_text="" tls=1 capture=false
while [ $# -gt 0 ]; do
    case $1 in
        -n|--nodes) nodes=$2; shift 2 ;;
        -r|--regions) regions=$2; shift 2 ;;
        --dir) dir=$2; shift 2 ;;
        --bin) bin=$2; shift 2 ;;
        --prefix) prefix=$2; shift 2 ;;
        --subnet) subnet=$2; shift 2 ;;
        --token) token=$2; shift 2 ;;
        --seconds) seconds=$2; shift 2 ;;
        --scope) scope=$2; shift 2 ;;
        --strict) strict=--strict; shift ;;
        --no-tls) tls=0; shift ;;
        --capture) capture=true; shift ;;
        -*) die "unknown option $1" ;;
        *) if [ "$cmd" = sql ]; then sql_text=$1; else target=$1; fi; shift ;;
    esac
done

[ "$(id -u)" -eq 0 ] || die "needs root (network namespaces)"

state=$dir/mesh.env
load_state() {
    [ -f "$state" ] || die "no mesh in $dir (deploy/mesh.sh up first)"
    # shellcheck disable=SC1090
    . "$state"
}

ip_of() { echo "$subnet.$((10 + $1))"; }
ns_of() { echo "$prefix-n$1"; }
region_of() { # region index (1-based) of node $1: M contiguous, near-equal runs
    echo $(( ($1 - 1) * regions / nodes + 1 ))
}
index_of() { # node number of name n<k>
    local k=${1#n}
    [[ $k =~ ^[0-9]+$ ]] && [ "$k" -ge 1 ] && [ "$k" -le "$nodes" ] || die "no node $1"
    echo "$k"
}

running() { # PID: alive and not a zombie waiting for its (re)parent to reap it
    [ -r "/proc/$1/stat" ] && ! awk '{ exit ($3 == "Z") ? 0 : 1 }' "/proc/$1/stat" 2>/dev/null
}

# start_node K: runs node K in its namespace, detached; its pid goes to DIR/n<K>/pid.
start_node() {
    local k=$1 d=$dir/n$1
    if [ -f "$d/pid" ] && running "$(cat "$d/pid")"; then
        die "n$k is already running (pid $(cat "$d/pid"))"
    fi
    RUST_LOG=${RUST_LOG:-info} setsid ip netns exec "$(ns_of "$k")" \
        "$bin" up --config "$d/flowmesh.toml" >>"$d/node.log" 2>&1 </dev/null &
    echo $! > "$d/pid"
}

wait_ready() { # K
    local url="http://$(ip_of "$1"):20416/v1/status"
    for _ in $(seq 600); do
        curl -sf --max-time 1 "$url" >/dev/null && return 0
        running "$(cat "$dir/n$1/pid")" || { tail -20 "$dir/n$1/node.log" >&2; die "n$1 exited"; }
        sleep 0.1
    done
    tail -20 "$dir/n$1/node.log" >&2
    die "n$1 did not answer $url"
}

write_config() { # K
    local k=$1 r ip j id=0 my_id=0 seeds="" peers="" last_region=0
    r=$(region_of "$k"); ip=$(ip_of "$k")
    for j in $(seq 1 "$nodes"); do
        local rj; rj=$(region_of "$j")
        # the first node of every region is a seed
        [ "$rj" = "$last_region" ] || seeds+="\"/ip4/$(ip_of "$j")/tcp/20419\", "
        last_region=$rj
        [ "$rj" = "$r" ] || continue
        # the region's nodes are its Raft group, numbered from 1
        id=$((id + 1))
        [ "$j" = "$k" ] && my_id=$id
        peers+="$id = \"$(ip_of "$j"):20418\""$'\n'
    done
    mkdir -p "$dir/n$k"
    cat > "$dir/n$k/flowmesh.toml" <<EOF
# node n$k of the local mesh in $dir (written by deploy/mesh.sh)
[node]
name = "n$k"
region = "r$r"
cluster = "r$r-c1"

[storage]
data_dir = "$dir/n$k/data"

[http]
listen = "$ip:20416"

[flight_sql]
listen = "$ip:20417"

[capture]
enabled = $capture
own_netns_only = true

[kubernetes]
enabled = false

[query]
peer_timeout = "5s"

[consensus]
node_id = $my_id
listen = "$ip:20418"
cluster_token = "$token"
$(if [ "$tls" = 1 ]; then printf 'tls_cert = "%s"\ntls_key = "%s"\ntls_ca = "%s"\n' \
    "$dir/pki/n$k.pem" "$dir/pki/n$k.key" "$dir/pki/ca.pem"; fi)

[consensus.peers]
$peers
[mesh]
enabled = true
listen = "/ip4/$ip/tcp/20419"
seeds = [${seeds%, }]
publish_interval = "1s"
dead_after = "4s"
EOF
}

up() {
    [ "$nodes" -ge 1 ] && [ "$regions" -ge 1 ] && [ "$regions" -le "$nodes" ] ||
        die "need 1 <= regions <= nodes"
    [ "$nodes" -le 200 ] || die "at most 200 nodes (one /24)"
    [ ${#prefix} -le 8 ] || die "prefix longer than 8 characters (interface names)"
    [ ! -f "$state" ] || die "a mesh is already up in $dir (deploy/mesh.sh down first)"
    if [ -z "$bin" ]; then
        local target=${CARGO_TARGET_DIR:-$root_dir/target}
        if [ -x "$target/release/flowmesh" ]; then bin=$target/release/flowmesh
        else cargo build -p flowmesh-node >&2; bin=$target/debug/flowmesh; fi
    fi
    [ -x "$bin" ] || die "no flowmesh binary at $bin"
    bin=$(realpath "$bin")
    [ -n "$token" ] || token=$(head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n')
    command -v curl >/dev/null || die "curl is needed"
    mkdir -p "$dir"
    dir=$(realpath "$dir")
    state=$dir/mesh.env
    printf 'nodes=%s\nregions=%s\nprefix=%s\nsubnet=%s\nbin=%q\ntoken=%s\ntls=%s\ncapture=%s\n' \
        "$nodes" "$regions" "$prefix" "$subnet" "$bin" "$token" "$tls" "$capture" > "$state"
    if [ "$tls" = 1 ]; then
        local specs=()
        for k in $(seq 1 "$nodes"); do specs+=("n$k=$(ip_of "$k")"); done
        "$root_dir/deploy/certs.sh" "$dir/pki" "${specs[@]}"
    fi

    local br="${prefix}br"
    ip link add "$br" type bridge
    ip addr add "$subnet.1/24" dev "$br"
    ip link set "$br" up
    for k in $(seq 1 "$nodes"); do
        local ns; ns=$(ns_of "$k")
        ip netns add "$ns"
        ip link add "${prefix}v$k" type veth peer name eth0 netns "$ns"
        ip link set "${prefix}v$k" master "$br" up
        ip -n "$ns" addr add "$(ip_of "$k")/24" dev eth0
        ip -n "$ns" link set lo up
        ip -n "$ns" link set eth0 up
        ip -n "$ns" route add default via "$subnet.1"
        write_config "$k"
    done
    # a region's nodes start together: a Raft group elects no leader alone
    for k in $(seq 1 "$nodes"); do start_node "$k"; done
    for k in $(seq 1 "$nodes"); do wait_ready "$k"; done
    wait_alive
    status
}

wait_alive() { # until the first node sees every node alive
    local url="http://$(ip_of 1):20416/v1/status"
    for _ in $(seq 600); do
        local alive
        alive=$(curl -sf --max-time 2 "$url" | python3 -c \
            'import json,sys; print(sum(1 for n in json.load(sys.stdin)["mesh"]["nodes"] if n["alive"]))' \
            2>/dev/null || echo 0)
        [ "$alive" = "$nodes" ] && return 0
        sleep 0.2
    done
    die "the mesh did not see all $nodes nodes alive"
}

status() {
    curl -sf --max-time 5 "http://$(ip_of 1):20416/v1/status" | python3 -c '
import json, sys
mesh = json.load(sys.stdin)["mesh"]
for n in sorted(mesh["nodes"], key=lambda n: int(n["name"].lstrip("n") or 0)):
    state = "alive" if n["alive"] else "DEAD"
    rows = sum(t.get("rows", 0) for t in n.get("tables", []))
    print("%-5s %-4s %-6s peer %-21s http %-21s rows %d" % (
        n["name"], n["region"], state, n["query_addr"], n["http_addr"], rows))
' || echo "n1 does not answer" >&2
}

# traffic: every node gets, each second, one point per (service, endpoint) of measurement
# `http_requests` (fields count, errors, latency_ms) through its own /api/v2/write.
traffic() {
    local end=$((SECONDS + seconds)) services=(cart user checkout db)
    while [ $SECONDS -lt "$end" ]; do
        local now; now=$(date +%s)
        for k in $(seq 1 "$nodes"); do
            local body=""
            for s in "${services[@]}"; do
                for e in /list /get; do
                    local c=$((RANDOM % 50 + 1))
                    body+="http_requests,service=$s,endpoint=$e,node=n$k count=${c}i,errors=$((RANDOM % 3))i,latency_ms=$((RANDOM % 200)).$((RANDOM % 10)) $now"$'\n'
                done
            done
            curl -sf --max-time 5 -XPOST --data-binary "$body" \
                "http://$(ip_of "$k"):20416/api/v2/write?precision=s" || echo "n$k refused a write" >&2
        done
        sleep 1
    done
    echo "wrote $seconds s of points into $nodes nodes"
}

down() {
    local k
    for k in $(seq 1 "$nodes"); do
        local pid_file=$dir/n$k/pid
        [ -f "$pid_file" ] || continue
        local pid; pid=$(cat "$pid_file")
        kill "$pid" 2>/dev/null || true
    done
    for k in $(seq 1 "$nodes"); do
        local pid_file=$dir/n$k/pid
        [ -f "$pid_file" ] || continue
        local pid; pid=$(cat "$pid_file")
        for _ in $(seq 100); do running "$pid" || break; sleep 0.1; done
        if running "$pid"; then
            echo "n$k did not stop within 10 s; killed" >&2
            kill -9 "$pid" 2>/dev/null || true
        fi
    done
    for k in $(seq 1 "$nodes"); do
        ip netns pids "$(ns_of "$k")" 2>/dev/null | xargs -r kill -9 2>/dev/null || true
        ip netns del "$(ns_of "$k")" 2>/dev/null || true
    done
    ip link del "${prefix}br" 2>/dev/null || true
    rm -rf "$dir"
}

case $cmd in
    up) up ;;
    traffic) load_state; traffic ;;
    status) load_state; status ;;
    sql)
        load_state
        [ -n "$sql_text" ] || die "usage: deploy/mesh.sh sql [--scope S] 'SELECT ...'"
        "$bin" sql --server "http://$(ip_of 1):20416" --scope "$scope" $strict "$sql_text" ;;
    kill)
        load_state; k=$(index_of "$target"); pid=$(cat "$dir/n$k/pid")
        kill -9 "$pid"
        for _ in $(seq 100); do running "$pid" || break; sleep 0.05; done
        echo "killed n$k" ;;
    start)
        load_state; k=$(index_of "$target")
        start_node "$k"; wait_ready "$k"; echo "n$k is up" ;;
    down)
        if [ -f "$state" ]; then load_state; down; else
            # nothing recorded: remove what the defaults would have made
            down
        fi ;;
    *) die "unknown command $cmd" ;;
esac
