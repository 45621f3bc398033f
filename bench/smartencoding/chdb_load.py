#!/usr/bin/env python3
"""Loads an l7_flow_log Parquet file (generate.py) into a chDB MergeTree table and prints, as one
JSON object on stdout, the bytes on disk (tag columns, whole row) and the CPU seconds of the insert.

Usage: chdb_load.py IN.parquet --tags {string,lowcardinality} [--codec C] [--workdir DIR]

- Tag columns are String or LowCardinality(String); the others keep their native types. No
  PARTITION BY (the data spans one hour; DeepFlow partitions by hour). ORDER BY (l7_protocol,
  auto_service_1, endpoint, time): protocol and server service first, as queries filter on them
  and their correlated tags then come in runs.
- Codec: by default ClickHouse's own (since 26.x size-aware: LZ4 for parts under 100 MB, ZSTD(3)
  for larger ones, so a merge can switch a table to ZSTD(3) depending on the row count); "codec"
  in the output says which the final part got. --codec pins one for all parts.
- Background merges are stopped during `INSERT INTO t SELECT * FROM file(...)`, so insert CPU is
  the statement's own (Parquet decoding, sorting, compressing one part per insert block); merging
  is measured separately by `OPTIMIZE TABLE t FINAL` (after START MERGES).
- CPU is getrusage(RUSAGE_SELF) user + system around each statement. chDB runs in this process
  and RUSAGE_SELF sums all its threads; stderr shows the main thread's share (RUSAGE_THREAD)
  beside it as evidence that the worker threads are counted.
- tag_bytes: data_compressed_bytes of the tag columns in system.columns (all their streams:
  LowCardinality dictionaries and keys). row_bytes: bytes_on_disk of the active parts (all
  columns, marks, primary index, checksums).
"""

import argparse
import json
import os
import resource
import shutil
import sys
import tempfile
import time

from chdb.session import Session

NUMERIC = [("time", "DateTime64(6, 'UTC')"), ("response_duration", "UInt64"),
           ("request_length", "UInt64"), ("response_length", "UInt64"),
           ("response_code", "Nullable(Int32)"), ("client_port", "UInt16"),
           ("server_port", "UInt16"), ("process_id_0", "UInt32"), ("process_id_1", "UInt32")]
TAGS = ["region", "cluster", "node", "signal_source", "observation_point", "l7_protocol",
        "request_type", "request_domain", "endpoint", "response_status", "ip_0", "ip_1",
        "process_kname_0", "process_kname_1", "auto_service_0", "auto_service_1", "pod_0",
        "pod_1", "pod_ns_0", "pod_ns_1", "pod_node_0", "pod_node_1"]
ORDER_BY = "(l7_protocol, auto_service_1, endpoint, time)"
ACTIVE = "database = 'bench' AND table = 't' AND active"


def cpu_s(who=resource.RUSAGE_SELF):
    r = resource.getrusage(who)
    return r.ru_utime + r.ru_stime


def timed(sess, sql):
    """Runs sql; returns (process CPU s, main-thread CPU s, wall s)."""
    c0, m0, w0 = cpu_s(), cpu_s(resource.RUSAGE_THREAD), time.monotonic()
    sess.query(sql)
    return cpu_s() - c0, cpu_s(resource.RUSAGE_THREAD) - m0, time.monotonic() - w0


def rows_of(sess, sql):
    return json.loads(str(sess.query(sql, "JSON")))["data"]


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("input")
    ap.add_argument("--tags", choices=["string", "lowcardinality"], required=True)
    ap.add_argument("--codec", help="default_compression_codec, e.g. LZ4 or 'ZSTD(3)'; "
                    "default: ClickHouse's size-aware choice")
    ap.add_argument("--workdir", help="chDB data directory (kept); default: a temporary one")
    args = ap.parse_args()
    workdir = args.workdir or tempfile.mkdtemp(prefix="chdb-")
    tag_type = "String" if args.tags == "string" else "LowCardinality(String)"
    codec = f", default_compression_codec = '{args.codec}'" if args.codec else ""
    columns = [f"{n} {t}" for n, t in NUMERIC] + [f"{n} {tag_type}" for n in TAGS]

    sess = Session(workdir)
    sess.query("CREATE DATABASE IF NOT EXISTS bench")
    sess.query("DROP TABLE IF EXISTS bench.t SYNC")
    # min_bytes_for_wide_part = 0: wide parts, with per-column sizes, whatever the row count
    sess.query(f"CREATE TABLE bench.t ({', '.join(columns)}) ENGINE = MergeTree "
               f"ORDER BY {ORDER_BY} SETTINGS min_bytes_for_wide_part = 0{codec}")
    sess.query("SYSTEM STOP MERGES bench.t")
    insert = timed(sess, f"INSERT INTO bench.t SELECT * FROM file('{os.path.abspath(args.input)}', Parquet)")
    parts_after_insert = rows_of(
        sess, f"SELECT count() AS n FROM system.parts WHERE {ACTIVE}")[0]["n"]
    sess.query("SYSTEM START MERGES bench.t")
    optimize = timed(sess, "OPTIMIZE TABLE bench.t FINAL")

    per_column = {r["name"]: int(r["b"]) for r in rows_of(
        sess, "SELECT name, data_compressed_bytes AS b FROM system.columns "
              "WHERE database = 'bench' AND table = 't'")}
    parts = rows_of(sess, "SELECT sum(bytes_on_disk) AS bytes, sum(rows) AS rows, count() AS n, "
                          "arrayStringConcat(groupUniqArray(default_compression_codec), ',') "
                          f"AS codec FROM system.parts WHERE {ACTIVE}")[0]
    sess.close()
    if not args.workdir:
        shutil.rmtree(workdir, ignore_errors=True)

    rows, row_bytes = int(parts["rows"]), int(parts["bytes"])
    tag_bytes = sum(per_column[n] for n in TAGS)
    print(f"chdb {tag_type}: insert {insert[0]:.2f} s CPU ({insert[1]:.2f} s on the main thread, "
          f"{insert[2]:.2f} s wall, {parts_after_insert} parts); optimize {optimize[0]:.2f} s CPU "
          f"({optimize[1]:.2f} s main thread, {optimize[2]:.2f} s wall); "
          f"{parts['n']} active part(s)",
          file=sys.stderr)
    print(json.dumps({
        "engine": f"chdb-{args.tags}", "rows": rows, "tag_bytes": tag_bytes, "row_bytes": row_bytes,
        "tag_bytes_per_row": tag_bytes / rows, "row_bytes_per_row": row_bytes / rows,
        "codec": parts["codec"],
        "insert_cpu_s": round(insert[0], 3), "optimize_cpu_s": round(optimize[0], 3),
        "insert_wall_s": round(insert[2], 3), "optimize_wall_s": round(optimize[2], 3),
        "per_column": per_column}))


if __name__ == "__main__":
    main()
