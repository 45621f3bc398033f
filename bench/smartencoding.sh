#!/usr/bin/env bash
# Storage of l7_flow_log tags: the same generated rows, loaded from one Parquet file into flowmesh
# and into chDB MergeTree with String and with LowCardinality(String) tag columns. Prints, side by
# side, bytes on disk per row (tag columns, whole row) and insert CPU seconds, with flowmesh's
# ratios to both and the issue's targets. Details in the headers of bench/smartencoding/*.py.
# Usage: bench/smartencoding.sh [rows (10000000)]
# Env: SMARTENCODING_INPUT=FILE  load this Parquet file (from generate.py) instead of generating;
#      FLOWMESH_LOAD=CMD         the flowmesh loader (default: the smartencoding_load example of
#                                flowmesh-node, built with --release in $CARGO_TARGET_DIR or target/);
#      FLOWMESH_SORTS='A,B C,D'  flowmesh segment sort columns, one load per item (default: three
#                                orders, see below; time sorts first unless named);
#      CHDB_CODEC=C              pin chDB's codec (LZ4, 'ZSTD(3)'); default: ClickHouse's own;
#      SMARTENCODING_RESULTS=DIR keep every engine's JSON result in DIR.
# Installs pyarrow and chdb with pip if missing.
set -euo pipefail
given_input=${SMARTENCODING_INPUT:+$(realpath "$SMARTENCODING_INPUT")}
cd "$(dirname "$0")/.."
rows=${1:-10000000}

pip_install() { # MODULE PACKAGE: installs PACKAGE unless MODULE imports
    python3 -c "import $1" 2>/dev/null ||
        python3 -m pip install --quiet --disable-pip-version-check "$2" >&2
}
pip_install pyarrow pyarrow
pip_install chdb chdb

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
input=${given_input:-$work/l7_flow_log.parquet}
[ -n "$given_input" ] || python3 bench/smartencoding/generate.py "$rows" "$input" >&2

for tags in string lowcardinality; do
    python3 bench/smartencoding/chdb_load.py "$input" --tags "$tags" \
        ${CHDB_CODEC:+--codec "$CHDB_CODEC"} > "$work/chdb-$tags.json"
done

# flowmesh, once per segment sort order: time first (as the node's tables are sorted now); tags
# first and time last, as chDB's ORDER BY (pod_1 standing for auto_service_1, which rows do not
# store); and the order that gave the fewest bytes
default_sorts="l7_protocol,pod_1,endpoint l7_protocol,pod_1,endpoint,time"
default_sorts+=" l7_protocol,pod_1,observation_point,pod_0,endpoint,time"
read -ra sorts <<< "${FLOWMESH_SORTS:-$default_sorts}"
if [ -n "${FLOWMESH_LOAD:-}" ]; then
    read -ra flowmesh_load <<< "$FLOWMESH_LOAD"
else
    cargo build --release -p flowmesh-node --example smartencoding_load >&2
    flowmesh_load=("${CARGO_TARGET_DIR:-target}/release/examples/smartencoding_load")
fi
for i in "${!sorts[@]}"; do
    if ! "${flowmesh_load[@]}" --input "$input" --data-dir "$work/flowmesh-$i" \
        --sort-columns "${sorts[$i]}" >"$work/flowmesh-$i.json"; then
        echo "flowmesh skipped: '${flowmesh_load[*]} --input $input --data-dir ...' failed" >&2
        rm -f "$work/flowmesh-$i.json"
    fi
    rm -rf "$work/flowmesh-$i"
done

[ -z "${SMARTENCODING_RESULTS:-}" ] || { mkdir -p "$SMARTENCODING_RESULTS"; cp "$work"/*.json "$SMARTENCODING_RESULTS"/; }
python3 bench/smartencoding/report.py "$work"/chdb-string.json "$work"/chdb-lowcardinality.json \
    "$work"/flowmesh-*.json
