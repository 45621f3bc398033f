#!/usr/bin/env python3
"""Prints the storage benchmark side by side: rows, tag and whole-row bytes on disk per row and
insert CPU seconds per engine, and flowmesh's ratios to chDB String and LowCardinality(String)
with the issue's targets.

Usage: report.py RESULT.json...  (one JSON object per file, from chdb_load.py or flowmesh's
smartencoding_load; the last line starting with '{' is read; missing or invalid files are skipped).
Several flowmesh results (one per segment sort order, told apart by their "sort") each get their
ratios.
"insert+optimize CPU s" adds optimize_cpu_s where an engine reports one (chDB's OPTIMIZE FINAL,
flowmesh's compaction of the hour into one segment).
"""

import json
import sys

# metric: (label, target flowmesh/String, target flowmesh/LowCardinality)
METRICS = {
    "tag_bytes_per_row": ("tag B/row", 0.20, 0.33),
    "row_bytes_per_row": ("row B/row", None, 0.70),
    "insert_cpu_s": ("insert CPU s", None, 0.20),
    "insert_and_optimize_cpu_s": ("insert+optimize CPU s", None, None),
}


def load(path):
    try:
        with open(path) as f:
            line = [l for l in f if l.startswith("{")][-1]
        result = json.loads(line)
    except FileNotFoundError:
        return None
    except (OSError, IndexError, json.JSONDecodeError) as e:
        print(f"skipped {path}: {e}", file=sys.stderr)
        return None
    result["insert_and_optimize_cpu_s"] = result["insert_cpu_s"] + result.get("optimize_cpu_s", 0)
    return result


def label(result):
    """An engine's name; flowmesh results add their segment sort key."""
    sort = result.get("sort")
    return f"{result['engine']} ({sort})" if sort else result["engine"]


def ratio_cell(fm, base, key, target):
    if fm is None or base is None or not base[key]:
        return "-"
    r = fm[key] / base[key]
    if target is None:
        return f"{r:.3f}"
    return f"{r:.3f} (≤{target:.2f} {'ok' if r <= target else 'MISSED'})"


def print_table(head, rows):
    widths = [max(len(str(row[i])) for row in [head, *rows]) for i in range(len(head))]
    for row in [head, *rows]:
        print("  ".join(str(c).ljust(w) if i == 0 else str(c).rjust(w)
                        for i, (c, w) in enumerate(zip(row, widths))))


def main():
    results = [r for r in map(load, sys.argv[1:]) if r]
    by_engine = {r["engine"]: r for r in results}
    s, lc = (by_engine.get(e) for e in ("chdb-string", "chdb-lowcardinality"))
    if len({r["rows"] for r in results}) > 1:
        print("warning: engines loaded different row counts", file=sys.stderr)
    print_table(["engine", "rows", "codec", *(m[0] for m in METRICS.values())],
                [[label(r), f"{r['rows']:,}", r.get("codec", ""),
                  *(f"{r[key]:.2f}" for key in METRICS)] for r in results])
    flowmesh = [r for r in results if r["engine"] == "flowmesh"]
    if not flowmesh:
        print("(no flowmesh result: ratios not computed)")
    for fm in flowmesh:
        print()
        print_table([f"{label(fm)} / chDB", "String", "LowCardinality"],
                    [[f"  {name}", ratio_cell(fm, s, key, t_string), ratio_cell(fm, lc, key, t_lc)]
                     for key, (name, t_string, t_lc) in METRICS.items()])


if __name__ == "__main__":
    main()
