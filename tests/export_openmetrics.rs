//! `retrace export openmetrics` loaded into a real Prometheus TSDB: `promtool tsdb
//! create-blocks-from openmetrics` (Debian's `prometheus` package, installed by
//! `scripts/install-deps.sh`) parses the file and writes blocks, `promtool tsdb dump` reads
//! every sample back, and the last value of each series is compared with what `retrace
//! analyze` wrote for the same capture: services.csv, edges.csv, endpoints.csv, tcp.csv.
//! Without promtool the tests are skipped with a message, except under
//! `RETRACE_REQUIRE_BPF=1` (CI), where they fail.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

mod common;
use common::*;

use retrace_analyze::synth::{write_shop_capture, ShopOptions};

fn promtool() -> Option<PathBuf> {
    let ok = Command::new("promtool")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if ok {
        return Some(PathBuf::from("promtool"));
    }
    assert!(
        std::env::var_os("RETRACE_REQUIRE_BPF").is_none_or(|v| v != "1"),
        "promtool is missing but RETRACE_REQUIRE_BPF=1 requires this test to run \
         (scripts/install-deps.sh installs Debian's prometheus)"
    );
    eprintln!("SKIPPED: no promtool (Debian's prometheus package: scripts/install-deps.sh)");
    None
}

/// A series: metric name and labels (sorted).
type Series = (String, BTreeMap<String, String>);

/// Loads `file` into a TSDB under `dir` and dumps it: each series' samples (ms, value).
fn load(promtool: &Path, file: &Path, dir: &Path) -> BTreeMap<Series, Vec<(i64, f64)>> {
    let db = dir.join("tsdb");
    let o = Command::new(promtool)
        .args([
            "tsdb",
            "create-blocks-from",
            "openmetrics",
            path(file),
            path(&db),
        ])
        .output()
        .expect("promtool");
    assert!(
        o.status.success(),
        "promtool refused the file: {}",
        text(&o)
    );
    // `tsdb dump` opens the directory as a database, write-ahead log included.
    std::fs::create_dir_all(db.join("wal")).expect("wal");
    let o = Command::new(promtool)
        .args(["tsdb", "dump", path(&db)])
        .output()
        .expect("promtool dump");
    assert!(o.status.success(), "dump: {}", text(&o));
    let mut out: BTreeMap<Series, Vec<(i64, f64)>> = BTreeMap::new();
    for line in String::from_utf8(o.stdout).expect("utf-8").lines() {
        let (labels, rest) = parse_labels(line);
        let mut it = rest.split_whitespace();
        let value: f64 = it.next().expect("value").parse().expect("number");
        let ts: i64 = it.next().expect("ts").parse().expect("ms");
        let mut labels = labels;
        let name = labels.remove("__name__").expect("__name__");
        out.entry((name, labels)).or_default().push((ts, value));
    }
    for v in out.values_mut() {
        v.sort_by_key(|s| s.0);
    }
    out
}

/// `{k="v", ...} rest` as the dump prints it (Go-quoted values) → labels and rest.
fn parse_labels(line: &str) -> (BTreeMap<String, String>, &str) {
    let mut labels = BTreeMap::new();
    let b = line.as_bytes();
    assert_eq!(b[0], b'{', "{line}");
    let mut i = 1;
    loop {
        while b[i] == b' ' || b[i] == b',' {
            i += 1;
        }
        if b[i] == b'}' {
            return (labels, &line[i + 1..]);
        }
        let eq = i + line[i..].find('=').expect("=");
        let key = line[i..eq].to_string();
        i = eq + 2; // `="`
        let mut val = String::new();
        let mut chars = line[i..].char_indices();
        loop {
            let (k, c) = chars.next().expect("closing quote");
            match c {
                '"' => {
                    i += k + 1;
                    break;
                }
                '\\' => {
                    let (_, e) = chars.next().expect("escape");
                    match e {
                        'n' => val.push('\n'),
                        't' => val.push('\t'),
                        'u' => {
                            let hex: String =
                                (0..4).map(|_| chars.next().expect("hex").1).collect();
                            let cp = u32::from_str_radix(&hex, 16).expect("hex");
                            val.push(char::from_u32(cp).expect("char"));
                        }
                        other => val.push(other),
                    }
                }
                c => val.push(c),
            }
        }
        labels.insert(key, val);
    }
}

fn csv_rows(p: &Path) -> Vec<BTreeMap<String, String>> {
    let mut r = csv::Reader::from_path(p).expect("csv");
    let headers = r.headers().expect("headers").clone();
    r.records()
        .map(|rec| {
            let rec = rec.expect("record");
            headers
                .iter()
                .zip(rec.iter())
                .map(|(h, v)| (h.to_string(), v.to_string()))
                .collect()
        })
        .collect()
}

fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// The last value of a series, `None` when it is not in the TSDB.
fn last(db: &BTreeMap<Series, Vec<(i64, f64)>>, name: &str, l: &[(&str, &str)]) -> Option<f64> {
    db.get(&(name.to_string(), labels(l)))
        .and_then(|v| v.last())
        .map(|s| s.1)
}

fn num(row: &BTreeMap<String, String>, k: &str) -> f64 {
    row[k]
        .parse()
        .unwrap_or_else(|_| panic!("{k}: {:?}", row[k]))
}

/// Analyzes and exports `capture`, loads the metrics, and compares them with the CSVs.
/// Returns the number of series compared.
fn check_capture(promtool: &Path, capture: &Path, extra: &[&str], dir: &Path) -> usize {
    let report = dir.join("report");
    let metrics = dir.join("metrics.txt");
    let mut args = vec!["analyze", "--quiet", path(capture), "--out", path(&report)];
    args.extend_from_slice(extra);
    let o = retrace(&args);
    assert!(o.status.success(), "{}", text(&o));
    let mut args = vec![
        "export",
        "openmetrics",
        path(capture),
        "--out",
        path(&metrics),
    ];
    args.extend_from_slice(extra);
    let o = retrace(&args);
    assert!(o.status.success(), "{}", text(&o));
    let exposition = std::fs::read_to_string(&metrics).expect("metrics");
    assert!(exposition.ends_with("# EOF\n"));
    let samples = exposition.lines().filter(|l| !l.starts_with('#')).count();
    let db = load(promtool, &metrics, dir);
    let loaded: usize = db.values().map(Vec::len).sum();
    assert_eq!(
        loaded, samples,
        "samples in the TSDB against lines in the file"
    );
    let mut compared = 0;

    for s in csv_rows(&report.join("services.csv")) {
        if num(&s, "requests") == 0.0 {
            continue;
        }
        let l = [("service", s["service"].as_str())];
        for (metric, col) in [
            ("retrace_service_requests_total", "requests"),
            ("retrace_service_request_errors_total", "errors"),
        ] {
            assert_eq!(last(&db, metric, &l), Some(num(&s, col)), "{metric} {l:?}");
            compared += 1;
        }
    }
    for e in csv_rows(&report.join("edges.csv")) {
        let l = [
            ("client", e["client"].as_str()),
            ("server", e["server"].as_str()),
            ("protocol", e["protocol"].as_str()),
        ];
        for (metric, col) in [
            ("retrace_edge_requests_total", "requests"),
            ("retrace_edge_request_errors_total", "errors"),
        ] {
            assert_eq!(last(&db, metric, &l), Some(num(&e, col)), "{metric} {l:?}");
            compared += 1;
        }
        // The median lies in the histogram where the counts say.
        let count = last(&db, "retrace_edge_request_duration_seconds_count", &l).expect("count");
        let inf = [l[0], l[1], l[2], ("le", "+Inf")];
        assert_eq!(
            last(&db, "retrace_edge_request_duration_seconds_bucket", &inf),
            Some(count)
        );
        if let Ok(p50_ms) = e["p50_ms"].parse::<f64>() {
            for le in [
                "0.005", "0.01", "0.025", "0.05", "0.1", "0.25", "0.5", "1", "2.5", "10",
            ] {
                let b = [l[0], l[1], l[2], ("le", le)];
                let below = last(&db, "retrace_edge_request_duration_seconds_bucket", &b)
                    .expect("bucket")
                    / count;
                let le_ms = le.parse::<f64>().expect("le") * 1e3;
                if le_ms >= p50_ms + 0.001 {
                    assert!(
                        below >= 0.5,
                        "{l:?}: p50 {p50_ms} ms, {below} of it <= {le}"
                    );
                } else if le_ms < p50_ms - 0.001 {
                    assert!(
                        below <= 0.5,
                        "{l:?}: p50 {p50_ms} ms, {below} of it <= {le}"
                    );
                }
            }
            compared += 1;
        }
    }
    for e in csv_rows(&report.join("endpoints.csv")) {
        let l = [
            ("service", e["service"].as_str()),
            ("protocol", e["protocol"].as_str()),
            ("endpoint", e["route"].as_str()),
        ];
        for (metric, col) in [
            ("retrace_endpoint_requests_total", "requests"),
            ("retrace_endpoint_request_errors_total", "errors"),
        ] {
            assert_eq!(last(&db, metric, &l), Some(num(&e, col)), "{metric} {l:?}");
            compared += 1;
        }
    }
    let mut tcp: BTreeMap<(String, String), [f64; 6]> = BTreeMap::new();
    for p in csv_rows(&report.join("tcp.csv")) {
        let t = tcp
            .entry((p["client"].clone(), p["server"].clone()))
            .or_default();
        for (i, col) in [
            "connects",
            "failed_connects",
            "retransmits",
            "resets_sent",
            "resets_received",
            "synack_retransmits",
        ]
        .iter()
        .enumerate()
        {
            t[i] += num(&p, col);
        }
    }
    for ((c, s), sums) in &tcp {
        let l = [("client", c.as_str()), ("server", s.as_str())];
        for (i, metric) in [
            "retrace_tcp_connects_total",
            "retrace_tcp_connect_failures_total",
            "retrace_tcp_retransmits_total",
            "retrace_tcp_resets_sent_total",
            "retrace_tcp_resets_received_total",
            "retrace_tcp_synack_retransmits_total",
        ]
        .iter()
        .enumerate()
        {
            assert_eq!(last(&db, metric, &l), Some(sums[i]), "{metric} {l:?}");
            compared += 1;
        }
    }
    // Counters never go down, and samples are one bucket apart at most once started.
    for ((name, l), samples) in &db {
        if name.ends_with("_total") {
            assert!(
                samples.windows(2).all(|w| w[0].1 <= w[1].1),
                "{name} {l:?} decreases"
            );
        }
    }
    compared
}

#[test]
fn a_scenario_loads_into_prometheus_equal_to_its_csvs() {
    let Some(promtool) = promtool() else { return };
    let dir = root().join("scenarios/api-down");
    let services = services_file(&dir).expect("services");
    let tmp = tempfile::tempdir().expect("tmp");
    let n = check_capture(
        &promtool,
        &dir.join("capture"),
        &["--services", path(&services)],
        tmp.path(),
    );
    eprintln!("{n} series compared with the CSVs");
    assert!(n > 20, "{n}");
}

#[test]
fn hostile_label_values_are_escaped() {
    let Some(promtool) = promtool() else { return };
    let tmp = tempfile::tempdir().expect("tmp");
    let cap = tmp.path().join("cap");
    let hostile = "/x\"\\</script>,é\\n{id}?q='%2F";
    let opts = ShopOptions {
        requests: 300,
        odd_path: Some(hostile.into()),
        ..Default::default()
    };
    write_shop_capture(&cap, &opts).expect("capture");
    let n = check_capture(&promtool, &cap, &[], tmp.path());
    assert!(n > 10, "{n}");
    // The hostile route (the path without its query) is a label value escaped in the file;
    // check_capture found it intact in the TSDB (endpoints.csv's routes).
    let text = std::fs::read_to_string(tmp.path().join("metrics.txt")).expect("metrics");
    let route = hostile.split('?').next().expect("path");
    let escaped = format!(
        "endpoint=\"GET {}\"",
        route.replace('\\', "\\\\").replace('"', "\\\"")
    );
    assert!(
        text.contains(&escaped),
        "no escaped {escaped:?} in the file: {:?}",
        text.lines()
            .filter(|l| l.contains("script"))
            .take(3)
            .collect::<Vec<_>>()
    );
}

#[test]
fn bad_arguments_exit_2() {
    let tmp = tempfile::tempdir().expect("tmp");
    let capture = root().join("scenarios/checkout/capture");
    let o = retrace(&[
        "export",
        "openmetrics",
        path(&capture),
        "--out",
        path(tmp.path()),
    ]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).contains("is a directory"), "{}", text(&o));
    let out = tmp.path().join("m.txt");
    let o = retrace(&["export", "openmetrics", "/nonexistent", "--out", path(&out)]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(!out.exists());
}
