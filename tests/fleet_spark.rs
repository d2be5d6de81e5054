//! The fleet path: `fleet/spark/retrace_fleet.py` in Spark's local mode on the Parquet
//! datasets of four captures: the three nodes of `tests/fleet/capture` (a live run of
//! `tests/fleet.rs`: a client node, a server node whose clock was 2.5 s slow, an idle node)
//! and the api-down scenario's node (nginx, an api stopped for 8 s, users, Redis, PostgreSQL:
//! errors and failed connects), each exported **on its own** (`retrace export parquet
//! CAPTURE`, as each node of a fleet would), against `retrace analyze` of the four captures
//! together (which joins the two ends of each
//! cross-node call after correcting the clocks). The job must give the same service map,
//! the same RED per service, edge and endpoint, and the same SLO counts: counts exactly,
//! percentiles to the nanosecond (summary.json's precision: 6 decimals of a millisecond).
//!
//! Needs Java 17 and the venv with PySpark (`scripts/install-deps.sh`); skipped with a
//! message without them, except under `RETRACE_REQUIRE_BPF=1` (CI), where they must be there.
//! Prints the time the Spark run took.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use common::{path, retrace, root, text, RunDir};
use serde_json::Value;

/// The venv's Python when it has PySpark and Java runs.
fn spark_python() -> Option<PathBuf> {
    let java = Command::new("java")
        .arg("-version")
        .output()
        .is_ok_and(|o| o.status.success());
    common::venv_python("pyspark", java, "PySpark in the venv, or Java")
}

fn num(v: &Value) -> Option<f64> {
    v.as_f64()
}

/// Same count, and percentiles within half a nanosecond (the analysis rounds to 1e-6 ms).
fn same_red(what: &str, spark: &Value, analyze: &Value) {
    for k in ["requests", "errors"] {
        assert_eq!(
            spark[k].as_u64(),
            analyze[k].as_u64(),
            "{what}: {k}: spark {spark} analyze {analyze}"
        );
    }
    for k in ["p50_ms", "p95_ms", "p99_ms"] {
        match (num(&spark[k]), num(&analyze[k])) {
            (Some(s), Some(a)) => assert!(
                (s - a).abs() <= 0.5e-6 + 1e-12,
                "{what}: {k}: spark {s} analyze {a}"
            ),
            (None, None) => {}
            (s, a) => panic!("{what}: {k}: spark {s:?} analyze {a:?}"),
        }
    }
}

fn export(capture: &Path, services: &Path, out: &Path) {
    let o = retrace(&[
        "export",
        "parquet",
        "--quiet",
        "--services",
        path(services),
        path(capture),
        "--out",
        path(out),
    ]);
    assert!(o.status.success(), "{}", text(&o));
}

#[test]
fn spark_on_four_per_node_parquet_exports_equals_analyze_of_the_four_together() {
    let Some(python) = spark_python() else {
        return;
    };
    let caps = root().join("tests/fleet/capture");
    let services = root().join("scenarios/common/services.yaml");
    let cap_paths: Vec<PathBuf> = ["node-a", "node-b", "node-c"]
        .iter()
        .map(|n| caps.join(n))
        .chain([root().join("scenarios/api-down/capture")])
        .collect();
    let work = RunDir(
        tempfile::Builder::new()
            .prefix("retrace-fleet-spark-")
            .tempdir()
            .expect("tmp")
            .keep(),
    );
    let mut datasets = Vec::new();
    for (i, cap) in cap_paths.iter().enumerate() {
        let ds = work.0.join(format!("parquet-{i}"));
        export(cap, &services, &ds);
        datasets.push(ds);
    }
    // The reference: all four analyzed together.
    let report = work.0.join("analyze");
    let mut args = vec!["analyze", "--quiet", "--services", path(&services)];
    args.extend(["--out", path(&report)]);
    args.extend(cap_paths.iter().map(|p| path(p)));
    let o = retrace(&args);
    assert!(o.status.success(), "{}", text(&o));
    let analysis: Value =
        serde_json::from_slice(&std::fs::read(report.join("summary.json")).expect("summary"))
            .expect("JSON");

    let out = work.0.join("fleet");
    let started = Instant::now();
    let o = Command::new(&python)
        .arg(root().join("fleet/spark/retrace_fleet.py"))
        .arg("--out")
        .arg(&out)
        .args(&datasets)
        .env(
            "PYSPARK_SUBMIT_ARGS",
            "--master local[2] --conf spark.sql.shuffle.partitions=2 --conf spark.ui.enabled=false \
             --driver-java-options '-XX:TieredStopAtLevel=1 -XX:+UseSerialGC' \
             --driver-memory 1g pyspark-shell",
        )
        .env("SPARK_LOCAL_IP", "127.0.0.1")
        .output()
        .expect("run the Spark job");
    let took = started.elapsed().as_secs_f64();
    assert!(o.status.success(), "{}", text(&o));
    eprintln!("fleet_spark: the Spark job (local[2]) took {took:.1} s");
    eprintln!("{}", String::from_utf8_lossy(&o.stdout));
    let fleet: Value =
        serde_json::from_slice(&std::fs::read(out.join("fleet.json")).expect("fleet.json"))
            .expect("JSON");
    assert_eq!(fleet["percentiles"], "exact");

    // Services: every one of the analysis, the same numbers.
    let services = fleet["services"].as_array().expect("services");
    let expected = analysis["services"].as_array().expect("services");
    assert_eq!(services.len(), expected.len(), "{services:?}");
    for a in expected {
        let s = services
            .iter()
            .find(|s| s["service"] == a["service"])
            .unwrap_or_else(|| panic!("spark lacks service {}", a["service"]));
        same_red(&format!("service {}", a["service"]), s, a);
    }
    // The service map: the same edges (the cross-node one named by service at both ends).
    let edges = fleet["edges"].as_array().expect("edges");
    let expected = analysis["edges"].as_array().expect("edges");
    assert_eq!(edges.len(), expected.len(), "{edges:?}");
    for a in expected {
        let s = edges
            .iter()
            .find(|s| {
                s["client"] == a["client"]
                    && s["server"] == a["server"]
                    && s["protocol"] == a["protocol"]
            })
            .unwrap_or_else(|| panic!("spark lacks edge {a}"));
        same_red(&format!("edge {} -> {}", a["client"], a["server"]), s, a);
    }
    assert!(
        edges
            .iter()
            .any(|e| e["client"] == "python3" && e["server"] == "python3:8080"),
        "the cross-node edge, named by service at both ends: {edges:?}"
    );
    // Endpoints.
    let endpoints = fleet["endpoints"].as_array().expect("endpoints");
    let expected = analysis["endpoints"].as_array().expect("endpoints");
    assert_eq!(endpoints.len(), expected.len(), "{endpoints:?}");
    for a in expected {
        let s = endpoints
            .iter()
            .find(|s| {
                s["service"] == a["service"]
                    && s["protocol"] == a["protocol"]
                    && s["endpoint"] == a["route"]
            })
            .unwrap_or_else(|| panic!("spark lacks endpoint {a}"));
        same_red(&format!("endpoint {}", a["route"]), s, a);
    }
    // SLOs: the same objectives judged on the same requests.
    let slo = fleet["slo"].as_array().expect("slo");
    let expected = analysis["slo"]["objectives"]
        .as_array()
        .expect("objectives");
    assert!(!expected.is_empty());
    assert_eq!(slo.len(), expected.len(), "{slo:?}");
    for a in expected {
        let s = slo
            .iter()
            .find(|s| s["service"] == a["service"] && s["objective"] == a["objective"])
            .unwrap_or_else(|| panic!("spark lacks objective {a}"));
        for k in ["requests", "bad"] {
            assert_eq!(s[k].as_u64(), a[k].as_u64(), "slo {k}: {s} vs {a}");
        }
        let (sa, aa) = (num(&s["actual"]), num(&a["actual"]));
        assert!(
            matches!((sa, aa), (Some(x), Some(y)) if (x - y).abs() < 1e-6),
            "slo actual: {s} vs {a}"
        );
    }
    // What the analysis knows from the server's own log: 200 requests served.
    let log = std::fs::read_to_string(caps.join("server.log")).expect("server.log");
    let served = log.lines().filter(|l| l.ends_with(" 200")).count() as u64;
    let server = services
        .iter()
        .find(|s| s["service"] == "python3:8080")
        .expect("the server");
    assert_eq!(server["requests"].as_u64(), Some(served));
}
