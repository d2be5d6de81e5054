//! `retrace analyze` end to end on a capture written with the real capture writer.

use std::process::Command;

use retrace_analyze::synth::{write_shop_capture, ShopOptions};

fn retrace() -> Command {
    Command::new(env!("CARGO_BIN_EXE_retrace"))
}

#[test]
fn analyze_writes_the_report_from_a_capture() {
    let dir = tempfile::tempdir().expect("tmp");
    let cap = dir.path().join("cap");
    let opts = ShopOptions {
        requests: 1200,
        ..Default::default()
    };
    let events = write_shop_capture(&cap, &opts).expect("capture");
    assert!(events > 1200 * 12);
    let out = dir.path().join("report");
    let st = retrace()
        .args(["analyze", "--quiet"])
        .arg(&cap)
        .arg("--out")
        .arg(&out)
        .status()
        .expect("run");
    assert!(st.success());
    for f in [
        "index.html",
        "services.csv",
        "edges.csv",
        "requests.csv",
        "endpoints.csv",
        "summary.json",
    ] {
        assert!(out.join(f).metadata().expect(f).len() > 0, "{f}");
    }
    let summary: retrace_analyze::Analysis =
        serde_json::from_slice(&std::fs::read(out.join("summary.json")).expect("json"))
            .expect("parse");
    assert_eq!(summary.events, events);
    assert_eq!(summary.nodes, vec!["node-a".to_string()]);
    let front = summary
        .edges_between("wrk", "nginx:8080")
        .next()
        .expect("edge");
    assert_eq!(front.requests, 1200);
    assert_eq!(front.protocol, "http");
    // requests.csv has one line per request plus the header.
    let lines = std::fs::read_to_string(out.join("requests.csv"))
        .expect("csv")
        .lines()
        .count() as u64;
    assert_eq!(lines, summary.total_requests + 1);

    // Analyzing again gives the same bytes.
    let out2 = dir.path().join("report2");
    let st = retrace()
        .args(["analyze", "--quiet"])
        .arg(&cap)
        .arg("--out")
        .arg(&out2)
        .status()
        .expect("run");
    assert!(st.success());
    for f in ["index.html", "edges.csv", "requests.csv", "summary.json"] {
        assert_eq!(
            std::fs::read(out.join(f)).expect("a"),
            std::fs::read(out2.join(f)).expect("b"),
            "{f}"
        );
    }
}

#[test]
fn a_malformed_services_file_is_reported_with_its_line() {
    let dir = tempfile::tempdir().expect("tmp");
    let cap = dir.path().join("cap");
    write_shop_capture(
        &cap,
        &ShopOptions {
            requests: 20,
            ..Default::default()
        },
    )
    .expect("capture");
    let yaml = dir.path().join("services.yaml");
    std::fs::write(&yaml, "services:\n  - name: api\n    port: not-a-port\n").expect("write");
    let out = retrace()
        .args(["analyze", "--quiet"])
        .arg(&cap)
        .arg("--out")
        .arg(dir.path().join("r"))
        .arg("--services")
        .arg(&yaml)
        .output()
        .expect("run");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("services.yaml:3:"), "{err}");
    assert!(!err.contains("panicked"), "{err}");
}

#[test]
fn a_missing_capture_is_a_clear_error() {
    let dir = tempfile::tempdir().expect("tmp");
    let out = retrace()
        .args(["analyze", "--quiet"])
        .arg(dir.path().join("nope"))
        .arg("--out")
        .arg(dir.path().join("r"))
        .output()
        .expect("run");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("nope"), "{err}");
    assert!(!err.contains("panicked"), "{err}");
}
