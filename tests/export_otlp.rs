//! `retrace export otlp` end to end, on the scenarios' committed captures.
//!
//! The export is validated by an independent implementation of the OTLP schema:
//! `tests/otlp/validate_otlp.py` parses it with the classes PyPI's `opentelemetry-proto`
//! generates and protobuf's `json_format` (unknown fields refused), then checks it against the
//! analysis's spans.csv and traces.csv (see the script's doc). The Python packages live in the
//! venv `scripts/install-deps.sh` creates (`RETRACE_PY_VENV`, default `/opt/retrace-py`).
//! Without that venv the validation tests are skipped with a message, except under
//! `RETRACE_REQUIRE_BPF=1` (CI), where they fail.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

mod common;
use common::*;

use retrace_analyze::synth::{write_shop_capture, ShopOptions};

/// The venv's Python with OpenTelemetry's generated classes.
fn venv_python() -> Option<PathBuf> {
    common::venv_python(
        "opentelemetry.proto.collector.trace.v1.trace_service_pb2, google.protobuf.json_format",
        true,
        "the Python venv with opentelemetry-proto",
    )
}

/// `retrace analyze` (for spans.csv and traces.csv) and `retrace export otlp` of the same
/// capture with the same options, into `out/report` and `out/traces.json`.
fn analyze_and_export(capture: &Path, extra: &[&str], out: &Path) -> (PathBuf, PathBuf) {
    let report = out.join("report");
    let json = out.join("traces.json");
    let mut args = vec!["analyze", "--quiet", path(capture), "--out", path(&report)];
    args.extend_from_slice(extra);
    let o = retrace(&args);
    assert!(o.status.success(), "analyze: {}", text(&o));
    let mut args = vec!["export", "otlp", path(capture), "--out", path(&json)];
    args.extend_from_slice(extra);
    let o = retrace(&args);
    assert!(o.status.success(), "export: {}", text(&o));
    (report, json)
}

/// Runs the validator; returns its output.
fn validate(py: &Path, json: &Path, report: &Path) -> Output {
    Command::new(py)
        .arg(root().join("tests/otlp/validate_otlp.py"))
        .arg(json)
        .arg(report.join("spans.csv"))
        .arg(report.join("traces.csv"))
        .output()
        .expect("run the validator")
}

fn csv_records(p: &Path) -> usize {
    csv::Reader::from_path(p)
        .expect("csv")
        .records()
        .inspect(|r| assert!(r.is_ok(), "{r:?}"))
        .count()
}

#[test]
fn bundled_captures_validate_against_the_otlp_schema() {
    let Some(py) = venv_python() else { return };
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(root().join("scenarios"))
        .expect("scenarios/")
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.join("capture").is_dir())
        .collect();
    dirs.sort();
    assert!(dirs.len() >= 4, "{dirs:?}");
    for dir in dirs {
        let tmp = tempfile::tempdir().expect("tmp");
        let services = services_file(&dir);
        let mut extra = Vec::new();
        if let Some(s) = &services {
            extra.extend(["--services", path(s)]);
        }
        let (report, json) = analyze_and_export(&dir.join("capture"), &extra, tmp.path());
        let o = validate(&py, &json, &report);
        assert!(
            o.status.success(),
            "{}: the export does not validate:\n{}",
            dir.display(),
            text(&o)
        );
        let summary: serde_json::Value =
            serde_json::from_slice(&o.stdout).expect("the validator's summary is JSON");
        let spans = summary["spans"].as_u64().expect("spans");
        // The validator compared against spans.csv; this test checks it counted something.
        assert_eq!(spans as usize, csv_records(&report.join("spans.csv")));
        assert!(spans > 1000, "{}: {summary}", dir.display());
        assert!(
            summary["with_parent"].as_u64() > Some(spans / 2),
            "{summary}"
        );
        eprintln!("{}: {summary}", dir.display());
    }
}

#[test]
fn the_validator_rejects_broken_exports() {
    let Some(py) = venv_python() else { return };
    let tmp = tempfile::tempdir().expect("tmp");
    let services = root().join("scenarios/common/services.yaml");
    // The first three seconds of the healthy capture: a small file.
    let (report, json) = analyze_and_export(
        &root().join("scenarios/checkout/capture"),
        &["--services", path(&services), "--to", "+3s"],
        tmp.path(),
    );
    let good = std::fs::read_to_string(&json).expect("export");
    let o = validate(&py, &json, &report);
    assert!(o.status.success(), "{}", text(&o));

    let first = |needle: &str| -> (usize, usize) {
        let at = good.find(needle).expect(needle);
        let start = at + needle.len();
        let end = start + good[start..].find('"').expect("closing quote");
        (start, end)
    };
    let replace = |range: (usize, usize), with: &str| {
        format!("{}{}{}", &good[..range.0], with, &good[range.1..])
    };
    let (t0, t1) = first("\"traceId\":\"");
    let trace_b64 = {
        // The first trace id as protobuf's canonical JSON would write it (base64).
        let hex = &good[t0..t1];
        let bytes: Vec<u8> = (0..16)
            .map(|i| u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).expect("hex"))
            .collect();
        base64(&bytes)
    };
    let one_span_line = good
        .lines()
        .find(|l| l.starts_with("{\"traceId\"") && l.ends_with("},"))
        .expect("a span line");
    let cases: Vec<(&str, String, &str)> = vec![
        (
            "a base64 id",
            replace((t0, t1), &trace_b64),
            "lower-case hex",
        ),
        (
            "an unknown field",
            good.replacen("\"kind\":", "\"kinds\":3,\"kind\":", 1),
            "json_format.Parse",
        ),
        (
            "an enum by a name protobuf does not know",
            good.replacen(",\"kind\":2,", ",\"kind\":\"SERVER\",", 1),
            "json_format.Parse",
        ),
        (
            "a parent that does not exist",
            replace(first("\"parentSpanId\":\""), "0123456789abcdef"),
            "parent 0123456789abcdef is not in the export",
        ),
        (
            "a span left out",
            good.replacen(&format!("{one_span_line}\n"), "", 1),
            "lines in spans.csv",
        ),
        (
            "an integer attribute as a JSON number",
            good.replacen("{\"intValue\":\"200\"}", "{\"intValue\":200}", 1),
            "decimal string",
        ),
        (
            "an INTERNAL span",
            good.replacen("\"kind\":2", "\"kind\":1", 1),
            "kind",
        ),
        (
            "a status code changed",
            good.replacen(
                "\"http.response.status_code\",\"value\":{\"intValue\":\"200\"}",
                "\"http.response.status_code\",\"value\":{\"intValue\":\"503\"}",
                1,
            ),
            "http.response.status_code 503, status 200",
        ),
    ];
    for (what, doc, expected) in cases {
        assert_ne!(doc, good, "{what}: the corruption changed nothing");
        let bad = tmp.path().join("bad.json");
        std::fs::write(&bad, &doc).expect("write");
        let o = validate(&py, &bad, &report);
        let t = text(&o);
        assert_eq!(o.status.code(), Some(1), "{what}: not rejected:\n{t}");
        assert!(
            t.contains(expected),
            "{what}: expected {expected:?} in:\n{t}"
        );
    }
}

/// Standard base64 with padding (what protobuf's JSON writes for bytes).
fn base64(b: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut s = String::new();
    for c in b.chunks(3) {
        let n = (u32::from(c[0]) << 16)
            | (u32::from(*c.get(1).unwrap_or(&0)) << 8)
            | u32::from(*c.get(2).unwrap_or(&0));
        for i in 0..4 {
            if i <= c.len() {
                s.push(char::from(A[(n >> (18 - 6 * i)) as usize & 63]));
            } else {
                s.push('=');
            }
        }
    }
    s
}

#[test]
fn hostile_strings_come_out_as_valid_json() {
    let tmp = tempfile::tempdir().expect("tmp");
    let cap = tmp.path().join("cap");
    // What an HTTP request line can carry (httparse refuses control characters and DEL in
    // it: the unit tests of the writer give it those): quotes, backslashes, U+2028, non-ASCII,
    // a would-be end of the JSON document and of an HTML script.
    let hostile = "/x\"\\</script>\"}]}\u{2028}\u{85}é{id}?q=\"\\n\"}&t=\u{2029}";
    let opts = ShopOptions {
        requests: 200,
        odd_path: Some(hostile.into()),
        ..Default::default()
    };
    write_shop_capture(&cap, &opts).expect("capture");
    let (report, json) = analyze_and_export(&cap, &[], tmp.path());
    let bytes = std::fs::read(&json).expect("export");
    let doc: serde_json::Value = serde_json::from_slice(&bytes).expect("the export is JSON");
    let spans: Vec<&serde_json::Value> = doc["resourceSpans"]
        .as_array()
        .expect("resourceSpans")
        .iter()
        .flat_map(|r| r["scopeSpans"][0]["spans"].as_array().expect("spans"))
        .collect();
    assert_eq!(spans.len(), csv_records(&report.join("spans.csv")));
    let attr = |s: &serde_json::Value, k: &str| -> Option<String> {
        s["attributes"]
            .as_array()?
            .iter()
            .find(|a| a["key"] == k)
            .and_then(|a| a["value"]["stringValue"].as_str())
            .map(str::to_string)
    };
    // The protocol parsers turn control characters into spaces (the unit tests of the writer
    // give it raw ones); everything else comes out as it went in.
    let seen: String = hostile
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    let (want_path, want_query) = seen.split_once('?').expect("query");
    let odd: Vec<_> = spans
        .iter()
        .filter(|s| attr(s, "url.path").as_deref() == Some(want_path))
        .collect();
    // Client and server spans of wrk -> nginx and nginx -> backend.
    assert_eq!(odd.len(), 4, "{hostile:?} not found intact");
    for s in odd {
        assert_eq!(attr(s, "url.query").as_deref(), Some(want_query));
    }
    assert!(
        !bytes.iter().any(|&b| b < 0x20 && b != b'\n'),
        "raw control characters in the file"
    );
    if let Some(py) = venv_python() {
        let o = validate(&py, &json, &report);
        assert!(o.status.success(), "{}", text(&o));
    }
}

#[test]
fn export_is_deterministic_windowed_and_writes_to_stdout() {
    let tmp = tempfile::tempdir().expect("tmp");
    let cap = root().join("scenarios/checkout/capture");
    let services = root().join("scenarios/common/services.yaml");
    let a = tmp.path().join("a.json");
    let o = retrace(&[
        "export",
        "otlp",
        path(&cap),
        "--services",
        path(&services),
        "--out",
        path(&a),
    ]);
    assert!(o.status.success(), "{}", text(&o));
    let t = text(&o);
    assert!(t.contains("spans of 960 traces"), "{t}");
    let o = retrace(&[
        "export",
        "otlp",
        "--quiet",
        path(&cap),
        "--services",
        path(&services),
        "--out",
        "-",
    ]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(o.stderr.is_empty(), "{}", text(&o));
    let full = std::fs::read(&a).expect("a");
    assert!(o.stdout == full, "standard output differs from the file");
    let w = tmp.path().join("w.json");
    let o = retrace(&[
        "export",
        "otlp",
        path(&cap),
        "--services",
        path(&services),
        "--from",
        "+5s",
        "--to",
        "+10s",
        "--out",
        path(&w),
    ]);
    assert!(o.status.success(), "{}", text(&o));
    let count = |p: &Path| {
        std::fs::read_to_string(p)
            .expect("read")
            .matches("\"spanId\":")
            .count()
    };
    let (n_full, n_window) = (count(&a), count(&w));
    assert!(
        n_window > 0 && n_window * 3 < n_full,
        "window {n_window} of {n_full} spans"
    );
}

#[test]
fn bad_input_gives_clear_errors() {
    let tmp = tempfile::tempdir().expect("tmp");
    let out = tmp.path().join("t.json");
    let o = retrace(&[
        "export",
        "otlp",
        "/nonexistent/capture",
        "--out",
        path(&out),
    ]);
    let t = text(&o);
    assert_eq!(o.status.code(), Some(2), "{t}");
    assert!(t.contains("/nonexistent/capture"), "{t}");
    assert!(!out.exists());
    let missing_dir = tmp.path().join("no/such/dir/t.json");
    let o = retrace(&[
        "export",
        "otlp",
        "scenarios/checkout/capture",
        "--quiet",
        "--out",
        path(&missing_dir),
    ]);
    let t = text(&o);
    assert_eq!(o.status.code(), Some(2), "{t}");
    assert!(
        t.contains("creating") && t.contains("no/such/dir/t.json"),
        "{t}"
    );
    // No format: clap's usage error.
    let o = retrace(&["export", "scenarios/checkout/capture"]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    // Nothing left beside the file asked for.
    let left: Vec<_> = std::fs::read_dir(tmp.path())
        .expect("tmp")
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert!(left.is_empty(), "{left:?}");
}

#[test]
fn writes_through_links_and_fifos_without_replacing_them() {
    let tmp = tempfile::tempdir().expect("tmp");
    let cap = "scenarios/checkout/capture";
    let plain = tmp.path().join("plain.json");
    let o = retrace(&[
        "export",
        "otlp",
        "--quiet",
        cap,
        "--to",
        "+2s",
        "--out",
        path(&plain),
    ]);
    assert!(o.status.success(), "{}", text(&o));
    let want = std::fs::read(&plain).expect("plain");
    // A symbolic link: its target is written, the link stays.
    let target = tmp.path().join("target.json");
    std::fs::write(&target, "old").expect("write");
    let link = tmp.path().join("link.json");
    std::os::unix::fs::symlink(&target, &link).expect("symlink");
    let o = retrace(&[
        "export",
        "otlp",
        "--quiet",
        cap,
        "--to",
        "+2s",
        "--out",
        path(&link),
    ]);
    assert!(o.status.success(), "{}", text(&o));
    let m = std::fs::symlink_metadata(&link).expect("link");
    assert!(m.file_type().is_symlink(), "the link was replaced");
    assert!(std::fs::read(&target).expect("target") == want);
    // A FIFO: read by another thread, still a FIFO afterwards.
    let fifo = tmp.path().join("fifo");
    let st = Command::new("mkfifo").arg(&fifo).status().expect("mkfifo");
    assert!(st.success());
    let reader = {
        let fifo = fifo.clone();
        std::thread::spawn(move || std::fs::read(fifo).expect("read the fifo"))
    };
    let o = retrace(&[
        "export",
        "otlp",
        "--quiet",
        cap,
        "--to",
        "+2s",
        "--out",
        path(&fifo),
    ]);
    assert!(o.status.success(), "{}", text(&o));
    // (Checked before joining the reader, which a replaced FIFO would leave blocked.)
    use std::os::unix::fs::FileTypeExt as _;
    let m = std::fs::symlink_metadata(&fifo).expect("fifo");
    assert!(m.file_type().is_fifo(), "the FIFO was replaced");
    let got = reader.join().expect("reader");
    assert!(got == want, "the FIFO carried {} bytes", got.len());
    // A directory is refused.
    let o = retrace(&["export", "otlp", "--quiet", cap, "--out", path(tmp.path())]);
    let t = text(&o);
    assert_eq!(o.status.code(), Some(2), "{t}");
    assert!(t.contains("is a directory"), "{t}");
}

#[test]
fn batches_are_json_lines_of_complete_requests() {
    let tmp = tempfile::tempdir().expect("tmp");
    let capture = root().join("scenarios/checkout/capture");
    let services = root().join("scenarios/common/services.yaml");
    let (report, json) = analyze_and_export(&capture, &["--services", path(&services)], tmp.path());
    let lines = tmp.path().join("traces.jsonl");
    let o = retrace(&[
        "export",
        "otlp",
        "--quiet",
        path(&capture),
        "--services",
        path(&services),
        "--batch",
        "700",
        "--out",
        path(&lines),
    ]);
    assert!(o.status.success(), "{}", text(&o));
    // The same spans as the single document, resource by resource, at most 700 a line.
    let spans_of = |doc: &serde_json::Value| -> Vec<(String, String)> {
        let mut v = Vec::new();
        for rs in doc["resourceSpans"].as_array().expect("resourceSpans") {
            let service = rs["resource"]["attributes"][0]["value"]["stringValue"].to_string();
            for s in rs["scopeSpans"][0]["spans"].as_array().expect("spans") {
                v.push((service.clone(), s["spanId"].to_string()));
            }
        }
        v
    };
    let whole: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&json).expect("json")).expect("JSON");
    let text_lines = std::fs::read_to_string(&lines).expect("jsonl");
    let mut from_lines = Vec::new();
    let mut n_lines = 0;
    for line in text_lines.lines() {
        let doc: serde_json::Value = serde_json::from_str(line).expect("each line is JSON");
        let spans = spans_of(&doc);
        assert!(
            !spans.is_empty() && spans.len() <= 700,
            "{} spans",
            spans.len()
        );
        assert_eq!(doc["resourceSpans"].as_array().map(Vec::len), Some(1));
        from_lines.extend(spans);
        n_lines += 1;
    }
    assert_eq!(from_lines, spans_of(&whole));
    assert!(n_lines > from_lines.len() / 700, "{n_lines} lines");
    if let Some(py) = venv_python() {
        let o = Command::new(&py)
            .arg(root().join("tests/otlp/validate_otlp.py"))
            .arg("--jsonl")
            .arg(&lines)
            .arg(report.join("spans.csv"))
            .arg(report.join("traces.csv"))
            .output()
            .expect("run the validator");
        assert!(o.status.success(), "{}", text(&o));
        let summary: serde_json::Value = serde_json::from_slice(&o.stdout).expect("summary");
        assert_eq!(summary["requests"].as_u64(), Some(n_lines as u64));
    }
}
