#!/usr/bin/env python3
"""Reads a `retrace export parquet` dataset back with two independent readers (pyarrow,
DuckDB) and checks it against what `retrace analyze` and `retrace replay` wrote for the same
capture and options.

    check_parquet.py DATASET REPORT_DIR REPLAY_STATS.json docs/parquet.md

- every file: the schema documented in docs/parquet.md (names, pyarrow types, nullability),
  the schema version and table name in its key-value metadata, row groups of at most
  1,048,576 rows, the rows' hour equal to the `hour=` partition;
- the event tables: rows per `kind` equal to `retrace replay --stats`'s events by kind;
- the analysis tables: as many rows as their CSV files, and the requests, spans, traces, TCP
  series, findings and SLO rows equal to the CSVs' value for value (times to the nanosecond,
  durations to the CSVs' rounding);
- DuckDB's `read_parquet(..., hive_partitioning = 1)` sees the same rows per table and per
  node as pyarrow's hive-partitioned dataset, and the same sums.

Prints a JSON summary on success; exits 1 with the first mismatch otherwise.
"""

import csv
import json
import math
import pathlib
import re
import sys
import time

import duckdb
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq

MAX_ROW_GROUP = 1 << 20
CSV_OF = {
    "requests": "requests.csv",
    "spans": "spans.csv",
    "traces": "traces.csv",
    "tcp": "tcp.csv",
    "findings": "findings.csv",
    "slo": "slo.csv",
    "breaches": "breaches.csv",
    "alerts": "alerts.csv",
}


class Mismatch(Exception):
    pass


def check(cond, msg):
    if not cond:
        raise Mismatch(msg)


def documented(doc_path):
    """docs/parquet.md: schema version, and table -> [(column, type, nullable)]."""
    text = pathlib.Path(doc_path).read_text()
    m = re.search(r"\*\*Schema version: (\d+)\.\*\*", text)
    check(m, "no schema version in the doc")
    tables, cur = {}, None
    for line in text.splitlines():
        h = re.match(r"^### `([a-z0-9_]+)`$", line)
        if h:
            cur = h.group(1)
            tables[cur] = []
            continue
        if cur and line.startswith("| ") and not line.startswith("| column") and not line.startswith("|---"):
            cells = line[2:].split(" | ")
            if len(cells) >= 3:
                tables[cur].append((cells[0], cells[1], cells[2] == "yes"))
    return m.group(1), tables


def wall(ns):
    """requests.csv's time format: RFC 3339, UTC, nine digits."""
    s, n = divmod(ns, 1_000_000_000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(s)) + f".{n:09d}Z"


def hour_name(ns):
    return time.strftime("%Y-%m-%dT%H", time.gmtime(ns // 1_000_000_000))


def ms_matches(csv_value, ns):
    """A CSV duration in ms (3 decimals, empty for none) against integer ns (or None)."""
    if ns is None:
        return csv_value == ""
    return csv_value != "" and abs(float(csv_value) - ns / 1e6) <= 0.0005 + 1e-9


def num_matches(csv_value, v, decimals):
    if v is None:
        return csv_value == ""
    return csv_value != "" and abs(float(csv_value) - v) <= 0.5 * 10 ** -decimals + 1e-9


def read_csv(path):
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


# Rows of a batch of the exporter (BATCH_ROWS): the blocks of `events_l7` ordered by connection.
BLOCK = 65536


def ns_column(table, name):
    """A timestamp column as integer ns (pyarrow would make µs datetimes)."""
    return table.column(name).cast(pa.int64()).to_pylist()


def rows_of(table):
    """The rows as dicts, timestamps as integer ns."""
    cols = {}
    for i, f in enumerate(table.schema):
        c = table.column(i)
        cols[f.name] = c.cast(pa.int64()) if pa.types.is_timestamp(f.type) else c
    return pa.table(cols).to_pylist()


def check_files(root, table, columns, version):
    """Schema, metadata, row groups and partition hours of every file of `table`."""
    files = sorted((root / f"table={table}").rglob("*.parquet"))
    check(files, f"{table}: no files")
    rows = 0
    for f in files:
        pf = pq.ParquetFile(f)
        meta = pf.metadata
        kv = meta.metadata or {}
        check(kv.get(b"retrace.schema_version") == version.encode(),
              f"{f}: schema version {kv.get(b'retrace.schema_version')!r}, documented {version}")
        check(kv.get(b"retrace.table") == table.encode(), f"{f}: retrace.table {kv.get(b'retrace.table')!r}")
        schema = pf.schema_arrow
        got = [(fl.name, str(fl.type), fl.nullable) for fl in schema]
        check(got == columns, f"{f}: columns {got}\n  documented {columns}")
        for i in range(meta.num_row_groups):
            check(meta.row_group(i).num_rows <= MAX_ROW_GROUP, f"{f}: row group {i} too big")
        parts = dict(p.split("=", 1) for p in f.relative_to(root).parts[1:-1])
        t = pf.read()
        rows += t.num_rows
        time_col = "time" if "time" in schema.names else "start" if "start" in schema.names else None
        if "hour" in parts:
            check(time_col, f"{f}: hour partition without a time column")
            hours = {hour_name(ns) for ns in ns_column(t, time_col)}
            check(hours <= {parts["hour"]}, f"{f}: rows of hours {sorted(hours)} in hour={parts['hour']}")
        if time_col and t.num_rows:
            ts = ns_column(t, time_col)
            if table == "events_l7":
                # Blocks of BLOCK rows in time order, each ordered by connection, then time
                # (docs/parquet.md, "Row order").
                keys = list(zip(*(ns_column(t, c) for c in ("pid", "fd", "conn_start", "time"))))
                blocks = [slice(i, i + BLOCK) for i in range(0, t.num_rows, BLOCK)]
                for b in blocks:
                    check(keys[b] == sorted(keys[b]), f"{f}: a block not ordered by connection, then time")
                for a, b in zip(blocks, blocks[1:]):
                    check(max(ts[a]) <= min(ts[b]), f"{f}: blocks not in time order")
            elif table.startswith("events_") or table in ("requests",):
                check(ts == sorted(ts), f"{f}: rows not in time order")
    return rows, files


def dataset(root, table):
    return ds.dataset(root / f"table={table}", format="parquet", partitioning="hive")


def check_requests(root, report):
    t = dataset(root, "requests").to_table()
    csv_rows = read_csv(report / "requests.csv")
    check(t.num_rows == len(csv_rows), f"requests: {t.num_rows} rows, requests.csv {len(csv_rows)}")
    idx = t.column("request_index").to_pylist()
    check(sorted(idx) == list(range(len(csv_rows))), "requests: request_index is not 0..n-1")
    times = ns_column(t, "time")
    cols = {n: t.column(n).to_pylist() for n in
            ("client", "server", "protocol", "method", "target", "route", "status", "error",
             "latency_ns", "server_latency_ns", "trace_id", "node")}
    for k, i in enumerate(idx):
        c = csv_rows[i]
        where = f"requests row {i}"
        check(wall(times[k]) == c["ts"], f"{where}: time {wall(times[k])}, csv {c['ts']}")
        for n in ("client", "server", "protocol", "method", "target", "route", "status", "node"):
            check(cols[n][k] == c[n], f"{where}: {n} {cols[n][k]!r}, csv {c[n]!r}")
        check(cols["error"][k] == (c["error"] == "1"), f"{where}: error")
        check((cols["trace_id"][k] or "") == c["trace_id"], f"{where}: trace_id")
        check(ms_matches(c["latency_ms"], cols["latency_ns"][k]),
              f"{where}: latency_ns {cols['latency_ns'][k]}, csv {c['latency_ms']}")
        check(ms_matches(c["server_latency_ms"], cols["server_latency_ns"][k]),
              f"{where}: server_latency_ns {cols['server_latency_ns'][k]}, csv {c['server_latency_ms']}")
    return t.num_rows


def check_spans(root, report):
    t = dataset(root, "spans").to_table()
    csv_rows = read_csv(report / "spans.csv")
    check(t.num_rows == len(csv_rows), f"spans: {t.num_rows} rows, spans.csv {len(csv_rows)}")
    by_id = {c["span_id"]: c for c in csv_rows}
    check(len(by_id) == len(csv_rows), "spans.csv: span ids not unique")
    starts = ns_column(t, "start")
    names = ("trace_id", "span_id", "parent_span_id", "kind", "service", "peer", "protocol",
             "name", "target", "status", "error", "link", "confidence", "pid", "tid",
             "server_address", "client_address", "request_index", "duration_ns", "node")
    cols = {n: t.column(n).to_pylist() for n in names}
    for k in range(t.num_rows):
        c = by_id.get(cols["span_id"][k])
        check(c is not None, f"span {cols['span_id'][k]} is not in spans.csv")
        where = f"span {cols['span_id'][k]}"
        check(wall(starts[k]) == c["start"], f"{where}: start")
        for n in ("trace_id", "kind", "service", "peer", "protocol", "name", "target", "status",
                  "server_address", "client_address", "node"):
            check(cols[n][k] == c[n], f"{where}: {n} {cols[n][k]!r}, csv {c[n]!r}")
        check((cols["parent_span_id"][k] or "") == c["parent_span_id"], f"{where}: parent")
        check((cols["link"][k] or "") == c["link"], f"{where}: link")
        check(num_matches(c["confidence"], cols["confidence"][k], 2), f"{where}: confidence")
        check(cols["error"][k] == (c["error"] == "1"), f"{where}: error")
        for n, cn in (("pid", "pid"), ("tid", "tid"), ("request_index", "request_index")):
            check(str(cols[n][k]) == c[cn], f"{where}: {n}")
        check(ms_matches(c["duration_ms"], cols["duration_ns"][k]), f"{where}: duration")
    return t.num_rows


def check_traces(root, report):
    t = dataset(root, "traces").to_table()
    csv_rows = read_csv(report / "traces.csv")
    check(t.num_rows == len(csv_rows), f"traces: {t.num_rows} rows, traces.csv {len(csv_rows)}")
    by_id = {c["trace_id"]: c for c in csv_rows}
    starts = ns_column(t, "start")
    rows = rows_of(t)
    for k, r in enumerate(rows):
        c = by_id.get(r["trace_id"])
        check(c is not None, f"trace {r['trace_id']} not in traces.csv")
        check(wall(starts[k]) == c["start"], f"trace {r['trace_id']}: start")
        for n in ("root_service", "root_name"):
            check(r[n] == c[n], f"trace {r['trace_id']}: {n}")
        for n in ("spans", "services", "errors"):
            check(str(r[n]) == c[n], f"trace {r['trace_id']}: {n}")
        check(str(r["root_request_index"]) == c["root_request_index"], f"trace {r['trace_id']}: root")
        check(ms_matches(c["duration_ms"], r["duration_ns"]), f"trace {r['trace_id']}: duration")
    return t.num_rows


def check_tcp(root, report):
    csv_rows = read_csv(report / "tcp.csv")
    if not (root / "table=tcp").exists():
        check(not csv_rows, f"tcp: no table, tcp.csv has {len(csv_rows)} rows")
        return 0
    t = dataset(root, "tcp").to_table().sort_by([("time", "ascending"), ("client", "ascending"),
                                                 ("server", "ascending")])
    check(t.num_rows == len(csv_rows), f"tcp: {t.num_rows} rows, tcp.csv {len(csv_rows)}")
    key = lambda c: (c["ts"], c["client"], c["server"])
    csv_by = {key(c): c for c in csv_rows}
    times = ns_column(t, "time")
    for k, r in enumerate(rows_of(t)):
        c = csv_by.get((wall(times[k]), r["client"], r["server"]))
        check(c is not None, f"tcp row {r} not in tcp.csv")
        for n in ("connects", "failed_connects", "retransmits", "resets_sent", "resets_received"):
            check(str(r[n]) == c[n], f"tcp {key(c)}: {n} {r[n]}, csv {c[n]}")
        for n in ("rtt_p50_us", "rtt_p99_us"):
            check(("" if r[n] is None else str(r[n])) == c[n], f"tcp {key(c)}: {n}")
        check(r["failure_cause"] == c["failure_cause"], f"tcp {key(c)}: failure_cause")
    return t.num_rows


def check_count(root, report, table):
    csv_rows = read_csv(report / CSV_OF[table])
    d = root / f"table={table}"
    n = dataset(root, table).count_rows() if d.exists() else 0
    check(n == len(csv_rows), f"{table}: {n} rows, {CSV_OF[table]} {len(csv_rows)}")
    return n, csv_rows


def check_findings(root, report):
    n, csv_rows = check_count(root, report, "findings")
    if n:
        t = dataset(root, "findings").to_table()
        got = sorted(f"{r['id']}: {r['summary']}" for r in rows_of(t))
        check(got == sorted(c["summary"] for c in csv_rows), "findings: summaries differ")
    return n


def check_slo(root, report):
    n, csv_rows = check_count(root, report, "slo")
    if n:
        rows = {(r["service"], r["objective"]): r for r in dataset(root, "slo").to_table().to_pylist()}
        for c in csv_rows:
            r = rows.get((c["service"], c["objective"]))
            check(r is not None, f"slo {c['service']} {c['objective']} missing")
            check(str(r["requests"]) == c["requests"] and str(r["bad"]) == c["bad"],
                  f"slo {c['service']} {c['objective']}: requests/bad")
            check(r["status"] == c["status"], f"slo {c['service']}: status")
            check(num_matches(c["actual"], r["actual"], 4), f"slo {c['service']}: actual")
    return n


def duckdb_counts(con, root, table):
    glob = str(root / f"table={table}" / "**" / "*.parquet")
    total = con.execute(
        f"SELECT count(*) FROM read_parquet('{glob}', hive_partitioning = 1)").fetchone()[0]
    return glob, total


def main():
    root, report, stats_path, doc = map(pathlib.Path, sys.argv[1:5])
    version, tables = documented(doc)
    stats = json.loads(stats_path.read_text())
    summary = {"schema_version": version, "tables": {}, "duckdb": {}}
    present = sorted(p.name.split("=", 1)[1] for p in root.glob("table=*"))
    for t in present:
        check(t in tables, f"table {t} is not documented")

    # Files: schema, metadata, row groups, partitions.
    files_rows = {}
    for t in present:
        rows, files = check_files(root, t, tables[t], version)
        files_rows[t] = rows
        summary["tables"][t] = {"rows": rows, "files": len(files)}

    # pyarrow's hive-partitioned datasets see every row, with node and hour as columns.
    for t in present:
        d = dataset(root, t)
        check(d.count_rows() == files_rows[t], f"{t}: the dataset has {d.count_rows()} rows")

    # Events: rows per kind = the replay's count.
    by_kind = {}
    for t in present:
        if t.startswith("events_"):
            kinds = dataset(root, t).to_table(columns=["kind"]).column("kind").to_pylist()
            for k in kinds:
                by_kind[k] = by_kind.get(k, 0) + 1
    want = {k: v for k, v in stats["events_by_kind"].items() if v}
    check(by_kind == want, f"events by kind {by_kind}, replay {want}")
    summary["events"] = sum(by_kind.values())

    # Analysis tables against the CSVs.
    summary["requests"] = check_requests(root, report)
    if (report / "spans.csv").exists():
        summary["spans"] = check_spans(root, report)
        summary["traces"] = check_traces(root, report)
    summary["tcp"] = check_tcp(root, report)
    summary["findings"] = check_findings(root, report)
    summary["slo"] = check_slo(root, report)
    for t in ("breaches", "alerts"):
        summary[t] = check_count(root, report, t)[0]

    # DuckDB, the second reader.
    con = duckdb.connect()
    for t in present:
        glob, total = duckdb_counts(con, root, t)
        check(total == files_rows[t], f"DuckDB reads {total} rows of {t}, pyarrow {files_rows[t]}")
        summary["duckdb"][t] = total
    glob = str(root / "table=requests" / "**" / "*.parquet")
    per_node = dict(con.execute(
        f"SELECT node, count(*) FROM read_parquet('{glob}', hive_partitioning = 1) GROUP BY node").fetchall())
    csv_per_node = {}
    for c in read_csv(report / "requests.csv"):
        csv_per_node[c["node"]] = csv_per_node.get(c["node"], 0) + 1
    check(per_node == csv_per_node, f"DuckDB requests per node {per_node}, requests.csv {csv_per_node}")
    lat_duck = con.execute(
        f"SELECT sum(latency_ns)::HUGEINT, count(latency_ns), sum(error::INT) FROM read_parquet('{glob}', hive_partitioning = 1)").fetchone()
    req = dataset(root, "requests").to_table(columns=["latency_ns", "error"])
    lat_pa = sum(v for v in req.column("latency_ns").to_pylist() if v is not None)
    errs = sum(1 for v in req.column("error").to_pylist() if v)
    check(int(lat_duck[0] or 0) == lat_pa and lat_duck[2] == errs,
          f"DuckDB sums {lat_duck}, pyarrow {lat_pa} {errs}")
    typ = con.execute(
        f"SELECT typeof(time), typeof(latency_ns), typeof(error) FROM read_parquet('{glob}', hive_partitioning = 1) LIMIT 1").fetchone()
    check(typ[0].startswith("TIMESTAMP") and typ[1] == "BIGINT" and typ[2] == "BOOLEAN",
          f"DuckDB types {typ}")
    summary["duckdb_requests_per_node"] = per_node
    summary["duckdb_types"] = list(typ)
    print(json.dumps(summary, sort_keys=True))


if __name__ == "__main__":
    try:
        main()
    except Mismatch as e:
        print(f"MISMATCH: {e}", file=sys.stderr)
        sys.exit(1)
