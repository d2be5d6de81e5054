//! `retrace export chrome` of a time window, parsed by an independent JSON reader (Python's
//! `json`, `tests/chrome/check_chrome.py`) and checked against the spans.csv `retrace
//! analyze` wrote for the same capture and window: one complete event per span, on its
//! process and thread, with its times, name and status; flows paired and bound to slices, one
//! per span whose parent is in the window.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

mod common;
use common::*;

/// Debian's Python (`python3` of the base system: only its standard library is used).
fn python() -> PathBuf {
    let debian = PathBuf::from("/usr/bin/python3");
    if debian.exists() {
        debian
    } else {
        PathBuf::from("python3")
    }
}

fn export_and_analyze(capture: &Path, extra: &[&str], out: &Path) -> (PathBuf, PathBuf) {
    let json = out.join("trace.json");
    let report = out.join("report");
    let mut args = vec!["export", "chrome", path(capture), "--out", path(&json)];
    args.extend_from_slice(extra);
    let o = retrace(&args);
    assert!(o.status.success(), "export: {}", text(&o));
    let mut args = vec!["analyze", "--quiet", path(capture), "--out", path(&report)];
    args.extend_from_slice(extra);
    let o = retrace(&args);
    assert!(o.status.success(), "analyze: {}", text(&o));
    (json, report.join("spans.csv"))
}

fn check(json: &Path, spans: &Path) -> Output {
    Command::new(python())
        .arg(root().join("tests/chrome/check_chrome.py"))
        .arg(json)
        .arg(spans)
        .output()
        .expect("run the checker")
}

#[test]
fn windows_of_the_trace_scenarios_match_their_spans() {
    for name in ["traces", "traces-worker", "traces-header"] {
        let dir = root().join("scenarios").join(name);
        let services = services_file(&dir).expect("services");
        let tmp = tempfile::tempdir().expect("tmp");
        let (json, spans) = export_and_analyze(
            &dir.join("capture"),
            &[
                "--services",
                path(&services),
                "--from",
                "+2s",
                "--to",
                "+6s",
            ],
            tmp.path(),
        );
        let o = check(&json, &spans);
        assert!(o.status.success(), "{name}: {}", text(&o));
        let summary: serde_json::Value = serde_json::from_slice(&o.stdout).expect("JSON");
        eprintln!("{name}: {summary}");
        assert!(summary["spans"].as_u64() > Some(500), "{name}: {summary}");
        assert!(summary["flows"].as_u64() > Some(50), "{name}: {summary}");
        assert!(summary["threads"].as_u64() > Some(2), "{name}: {summary}");
    }
}

#[test]
fn the_checker_rejects_a_trace_that_differs() {
    let dir = root().join("scenarios/traces");
    let services = services_file(&dir).expect("services");
    let tmp = tempfile::tempdir().expect("tmp");
    let (json, spans) = export_and_analyze(
        &dir.join("capture"),
        &[
            "--services",
            path(&services),
            "--from",
            "+2s",
            "--to",
            "+4s",
        ],
        tmp.path(),
    );
    assert!(check(&json, &spans).status.success());
    let good = std::fs::read_to_string(&json).expect("trace");
    let first_x = good
        .lines()
        .find(|l| l.starts_with("{\"ph\":\"X\""))
        .expect("a span");
    let first_f = good
        .lines()
        .find(|l| l.starts_with("{\"ph\":\"f\""))
        .expect("a flow end");
    let cases = [
        (
            "a span left out",
            good.replacen(&format!("{first_x}\n"), "", 1),
            "spans.csv",
        ),
        (
            "a flow without its end",
            good.replacen(&format!("{first_f}\n"), "", 1),
            "phases",
        ),
        (
            "a span moved to another thread",
            good.replacen(",\"tid\":", ",\"tid\":1", 1),
            "thread",
        ),
    ];
    for (what, doc, expected) in cases {
        assert!(doc != good, "{what}: nothing changed");
        let bad = tmp.path().join("bad.json");
        std::fs::write(&bad, doc).expect("write");
        let o = check(&bad, &spans);
        assert_eq!(
            o.status.code(),
            Some(1),
            "{what}: not rejected: {}",
            text(&o)
        );
        assert!(text(&o).contains(expected), "{what}: {}", text(&o));
    }
}

#[test]
fn the_same_window_gives_the_same_bytes_and_bad_arguments_exit_2() {
    let capture = root().join("scenarios/traces-worker/capture");
    let tmp = tempfile::tempdir().expect("tmp");
    let mut outs = Vec::new();
    for n in ["a.json", "b.json"] {
        let out = tmp.path().join(n);
        let o = retrace(&[
            "export",
            "chrome",
            "--quiet",
            path(&capture),
            "--from",
            "+1s",
            "--to",
            "+3s",
            "--out",
            path(&out),
        ]);
        assert!(o.status.success(), "{}", text(&o));
        outs.push(std::fs::read(&out).expect("read"));
    }
    assert!(outs[0].len() > 1000);
    assert!(outs[0] == outs[1], "two exports of one window differ");
    let o = retrace(&[
        "export",
        "chrome",
        path(&capture),
        "--to",
        "later",
        "--out",
        "x.json",
    ]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).contains("later"), "{}", text(&o));
    let o = retrace(&[
        "export",
        "chrome",
        path(&capture),
        "--out",
        path(tmp.path()),
    ]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).contains("is a directory"), "{}", text(&o));
}
