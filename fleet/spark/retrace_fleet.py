#!/usr/bin/env python3
"""retrace_fleet: the fleet's service map, RED per service, edge and endpoint, and SLO results,
computed on Spark from the Parquet datasets `retrace export parquet` wrote for many nodes.

    spark-submit fleet/spark/retrace_fleet.py --out RESULT DATASET [DATASET...]
    spark-submit --master local[2] fleet/spark/retrace_fleet.py --out RESULT ds-a ds-b ds-c

A DATASET is the directory of one or more exports (`DATASET/table=requests/...`; the datasets
of several exports can be copied into one tree, their files are named apart): local paths,
hdfs://, s3a://... whatever the cluster's Hadoop reads. RESULT/fleet.json gets the results
(services, edges, endpoints, slo: one object per row, sorted); a summary goes to stdout.

What it reads (schema v1, docs/parquet.md): `requests` (one row per request a node saw), the
`spans` of each request (which of its ends the export captured, with the addresses of both
ends) and the objectives in `slo`.

One request, two exports. An export of one node alone sees a call to another node from one
end: the client's node has a row whose server is named by its address (`10.0.0.2:8080`) and
no server span, the server's node a row whose client is an address and no client span. The
job puts the fleet back together by address: every captured server end names the service
behind its address (`server_address` -> `server`), every captured client end the service
behind its (ephemeral) address. A request end alone in its export whose other end another
export captured is counted by that other end only. Then each request counts once:

- a service's RED (what it served) counts its server ends, and the client ends of calls to
  servers no export captured (their latency: the server's own when captured, else the
  client's), as `retrace analyze` does;
- an edge's RED (the caller's view) counts client ends, the server's name resolved, and the
  server ends of calls from clients no export captured (named by address);
- SLOs judge the calls as the callers saw them (failed connects included; latency objectives
  the answered calls' latency against the threshold), with each service's objectives from the
  exports' `slo` tables.

An export of several nodes together (`retrace export parquet a b c`) has both ends of a
call in one row; the same rules count it once. Counts are exact. Percentiles are exact
(Spark's `percentile`, linear interpolation between closest ranks, as polars' in `retrace
analyze`); `--approx-percentiles` uses `percentile_approx` (accuracy 10,000: a rank error of at
most 1/10,000 of a group's size) for groups too large to sort.
"""
import argparse
import json
import os
import sys

from pyspark.sql import SparkSession
from pyspark.sql import functions as F
from pyspark.sql.window import Window
from pyspark.sql.utils import AnalysisException

SCHEMA_VERSION = "1"
PERCENTILES = [0.5, 0.95, 0.99]


def read_table(spark, roots, table):
    """The table `table` of every dataset, with `export`: which export a row came from
    (dataset index and the export's key in the file names)."""
    frames = []
    for i, root in enumerate(roots):
        path = root.rstrip("/") + "/table=" + table
        try:
            df = spark.read.option("basePath", path).parquet(path)
        except AnalysisException as e:
            if "PATH_NOT_FOUND" in str(e) or "Path does not exist" in str(e):
                continue
            raise
        key = F.regexp_extract(F.input_file_name(), r"part-([0-9a-f]+)-[0-9]+\.parquet$", 1)
        frames.append(df.withColumn("export", F.concat_ws("/", F.lit(str(i)), key)))
    if not frames:
        return None
    out = frames[0]
    for f in frames[1:]:
        out = out.unionByName(f, allowMissingColumns=True)
    return out


def percentiles(col, approx):
    """Aggregates p50, p95, p99 of `col` (nulls ignored)."""
    if approx:
        q = F.percentile_approx(col, PERCENTILES, 10000)
    else:
        q = F.percentile(col, PERCENTILES)
    return q.alias("q")


def red(df, keys, latency_col, approx):
    """Requests, errors and percentiles (ms) per `keys`."""
    return (
        df.groupBy(*keys)
        .agg(
            F.count(F.lit(1)).alias("requests"),
            F.sum(F.col("error").cast("long")).alias("errors"),
            percentiles(F.col(latency_col), approx),
        )
        .select(
            *keys,
            "requests",
            "errors",
            F.col("q")[0].alias("p50_ms"),
            F.col("q")[1].alias("p95_ms"),
            F.col("q")[2].alias("p99_ms"),
        )
    )


def fleet_requests(spark, roots):
    """Every request once per end that saw it, with the fleet's names and which views it
    counts in: `in_services` (what its server served) and `in_edges` (what its caller saw)."""
    req = read_table(spark, roots, "requests")
    if req is None:
        raise SystemExit("retrace_fleet: no table=requests in " + ", ".join(roots))
    spans = read_table(spark, roots, "spans")
    ends = spans.groupBy("export", "request_index").agg(
        F.max(F.when(F.col("kind") == "client", 1).otherwise(0)).alias("has_client"),
        F.max(F.when(F.col("kind") == "server", 1).otherwise(0)).alias("has_server"),
        F.max("server_address").alias("server_address"),
        F.max("client_address").alias("client_address"),
    )
    r = req.join(ends, ["export", "request_index"], "left").fillna(
        {"has_client": 0, "has_server": 0, "server_address": "", "client_address": ""}
    )
    # The fleet's address books: who answers at an address, who calls from one.
    servers = (
        r.filter((F.col("has_server") == 1) & (F.col("server_address") != ""))
        .groupBy("server_address")
        .agg(
            F.max("server").alias("server_name"),
            F.collect_set("export").alias("server_exports"),
        )
    )
    clients = (
        r.filter((F.col("has_client") == 1) & (F.col("client_address") != ""))
        .groupBy("client_address")
        .agg(
            F.max("client").alias("client_name"),
            F.collect_set("export").alias("client_exports"),
        )
    )
    r = r.join(F.broadcast(servers), "server_address", "left").join(
        F.broadcast(clients), "client_address", "left"
    )
    client_half = (F.col("has_client") == 1) & (F.col("has_server") == 0)
    server_half = (F.col("has_server") == 1) & (F.col("has_client") == 0)
    # A client end whose server another export captured: the server end counts it as served.
    # (Within one export, the analysis already joined what it could: a client end left alone
    # there, a request the server died on, say, stands as it is.)
    served_elsewhere = (
        client_half
        & F.col("server_name").isNotNull()
        & ~F.array_contains(F.col("server_exports"), F.col("export"))
    )
    # A server end whose client another export captured: the client end counts the call.
    called_elsewhere = (
        server_half
        & F.col("client_name").isNotNull()
        & ~F.array_contains(F.col("client_exports"), F.col("export"))
    )
    endpoint_route = F.when(F.col("route") != "", F.col("route")).otherwise(F.col("target"))
    endpoint = (
        F.when(
            (F.col("method") == endpoint_route) | (endpoint_route == ""), F.col("method")
        )
        .when(F.col("method") == "", endpoint_route)
        .otherwise(F.concat_ws(" ", F.col("method"), endpoint_route))
    )
    return r.select(
        "export",
        "node",
        "client",
        F.when(served_elsewhere, F.col("server_name")).otherwise(F.col("server")).alias("server"),
        "protocol",
        "method",
        endpoint.alias("endpoint"),
        "error",
        (F.col("latency_ns") / 1e6).alias("lat_ms"),
        F.col("latency_ns"),
        (F.coalesce(F.col("server_latency_ns"), F.col("latency_ns")) / 1e6).alias("svc_lat_ms"),
        (~served_elsewhere).alias("in_services"),
        (~called_elsewhere).alias("in_edges"),
    )


def fold_failed_connects(calls):
    """Failed connects (protocol `tcp`: no byte went either way) counted on their edge's usual
    protocol, the one of most of its other calls (`retrace analyze` takes the one of most
    connections, the same on every edge that keeps to one protocol)."""
    usual = (
        calls.filter(F.col("protocol") != "tcp")
        .groupBy("client", "server", "protocol")
        .agg(F.count(F.lit(1)).alias("n"))
        .withColumn(
            "rank",
            F.row_number().over(
                Window.partitionBy("client", "server").orderBy(F.desc("n"), "protocol")
            ),
        )
        .filter(F.col("rank") == 1)
        .select("client", "server", F.col("protocol").alias("usual"))
    )
    return (
        calls.join(usual, ["client", "server"], "left")
        .withColumn(
            "protocol",
            F.when(
                (F.col("protocol") == "tcp") & F.col("usual").isNotNull(), F.col("usual")
            ).otherwise(F.col("protocol")),
        )
        .drop("usual")
    )


def objectives(spark, roots, reqs):
    """Each service's objectives from the exports' `slo` tables, names resolved as the
    requests' are (a client node's export names a remote server by its address)."""
    slo = read_table(spark, roots, "slo")
    if slo is None:
        return None
    servers = reqs.filter(F.col("in_services")).select("server").distinct()
    names = (
        read_table(spark, roots, "spans")
        .filter((F.col("kind") == "server") & (F.col("server_address") != ""))
        .groupBy("server_address")
        .agg(F.max("service").alias("name"))
    )
    slo = slo.join(F.broadcast(names), slo["service"] == names["server_address"], "left")
    return (
        slo.select(
            F.coalesce(F.col("name"), F.col("service")).alias("service"),
            "objective",
            "target",
            "threshold_ms",
        )
        .distinct()
        .join(servers.withColumnRenamed("server", "service"), "service", "inner")
    )


def slo_results(obj, reqs):
    """Requests and bad requests per objective, over the calls as the callers saw them."""
    calls = reqs.filter(F.col("in_edges"))
    avail = (
        calls.groupBy("server")
        .agg(
            F.count(F.lit(1)).alias("requests"),
            F.sum(F.col("error").cast("long")).alias("bad"),
        )
        .withColumn("objective", F.lit("availability"))
    )
    lat = (
        calls.filter(F.col("latency_ns").isNotNull())
        .join(
            F.broadcast(
                obj.filter(F.col("objective") == "latency").select(
                    F.col("service").alias("server"), "threshold_ms"
                )
            ),
            "server",
        )
        .groupBy("server")
        .agg(
            F.count(F.lit(1)).alias("requests"),
            F.sum((F.col("latency_ns") > F.col("threshold_ms") * 1e6).cast("long")).alias("bad"),
        )
        .withColumn("objective", F.lit("latency"))
    )
    counts = avail.unionByName(lat).withColumnRenamed("server", "service")
    return obj.join(counts, ["service", "objective"], "left").select(
        "service",
        "objective",
        "target",
        "threshold_ms",
        F.coalesce(F.col("requests"), F.lit(0)).alias("requests"),
        F.coalesce(F.col("bad"), F.lit(0)).alias("bad"),
        F.when(
            F.col("requests") > 0,
            F.round(100.0 * (F.col("requests") - F.col("bad")) / F.col("requests"), 6),
        ).alias("actual"),
    )


def rows(df, order):
    return [r.asDict() for r in df.orderBy(*order).collect()]


def main(argv):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("datasets", nargs="+", help="dataset directories (retrace export parquet)")
    ap.add_argument("--out", required=True, help="directory for fleet.json")
    ap.add_argument(
        "--approx-percentiles",
        action="store_true",
        help="percentile_approx (accuracy 10000) instead of exact percentiles",
    )
    args = ap.parse_args(argv)

    spark = (
        SparkSession.builder.appName("retrace-fleet")
        # Spark reads Parquet's TIMESTAMP(NANOS) only as integers (ns since the epoch).
        .config("spark.sql.legacy.parquet.nanosAsLong", "true")
        .config("spark.ui.showConsoleProgress", "false")
        .getOrCreate()
    )
    spark.sparkContext.setLogLevel("ERROR")
    reqs = fleet_requests(spark, args.datasets).cache()
    approx = args.approx_percentiles
    services = red(
        reqs.filter(F.col("in_services") & (F.col("method") != "CONNECT")),
        ["server"],
        "svc_lat_ms",
        approx,
    ).withColumnRenamed("server", "service")
    # Services that only call (no request served): listed with 0, as `retrace analyze` does.
    callers = (
        reqs.filter(F.col("in_edges"))
        .select(F.col("client").alias("service"))
        .distinct()
        .join(services.select("service"), "service", "left_anti")
        .select(
            "service",
            F.lit(0).cast("long").alias("requests"),
            F.lit(0).cast("long").alias("errors"),
            F.lit(None).cast("double").alias("p50_ms"),
            F.lit(None).cast("double").alias("p95_ms"),
            F.lit(None).cast("double").alias("p99_ms"),
        )
    )
    services = services.unionByName(callers)
    calls = fold_failed_connects(reqs.filter(F.col("in_edges")))
    edges = red(calls, ["client", "server", "protocol"], "lat_ms", approx)
    endpoints = red(
        reqs.filter(F.col("in_services") & (F.col("method") != "CONNECT")),
        ["server", "protocol", "endpoint"],
        "svc_lat_ms",
        approx,
    ).withColumnRenamed("server", "service")
    obj = objectives(spark, args.datasets, reqs)
    result = {
        "schema_version": SCHEMA_VERSION,
        "percentiles": "approx (accuracy 10000)" if approx else "exact",
        "nodes": sorted(r["node"] for r in reqs.select("node").distinct().collect()),
        "services": rows(services, ["service"]),
        "edges": rows(edges, ["client", "server", "protocol"]),
        "endpoints": rows(endpoints, ["service", "protocol", "endpoint"]),
        "slo": rows(slo_results(obj, reqs), ["service", "objective"]) if obj is not None else [],
    }
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "fleet.json"), "w") as f:
        json.dump(result, f, indent=1, sort_keys=True)
        f.write("\n")
    print(
        f"retrace_fleet: {len(result['nodes'])} node(s), {len(result['services'])} service(s), "
        f"{len(result['edges'])} edge(s), {len(result['endpoints'])} endpoint(s), "
        f"{len(result['slo'])} objective(s) -> {os.path.join(args.out, 'fleet.json')}"
    )
    for e in result["edges"]:
        print(f"  {e['client']} -> {e['server']} ({e['protocol']}): {e['requests']} requests, "
              f"{e['errors']} errors, p99 {e['p99_ms']} ms")
    spark.stop()


if __name__ == "__main__":
    main(sys.argv[1:])
