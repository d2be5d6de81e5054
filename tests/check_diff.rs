//! `retrace check` and `retrace diff` end to end, on the scenarios' committed captures.

use std::process::Command;

mod common;
use common::*;

#[test]
fn check_passes_on_the_healthy_capture_and_writes_junit() {
    let dir = tempfile::tempdir().expect("tmp");
    let junit = dir.path().join("junit.xml");
    let o = retrace(&[
        "check",
        "scenarios/checkout/capture",
        "--expect",
        "scenarios/checkout/scenario.yaml",
        "--junit",
        path(&junit),
    ]);
    let t = text(&o);
    assert_eq!(o.status.code(), Some(0), "{t}");
    assert!(t.contains("PASS  edge nginx -> api (http): exists"), "{t}");
    assert!(!t.contains("FAIL"), "{t}");
    let lines = t.lines().filter(|l| l.starts_with("PASS")).count();
    let xml = std::fs::read_to_string(&junit).expect("junit written");
    assert!(xml.contains(&format!("<testsuite name=\"retrace check scenarios/checkout/capture\" tests=\"{lines}\" failures=\"0\"")), "{xml}");
    assert_eq!(xml.matches("<testcase ").count(), lines);
}

#[test]
fn check_fails_when_the_api_went_down() {
    // The healthy scenario's expectations against the api-down capture.
    let dir = tempfile::tempdir().expect("tmp");
    let junit = dir.path().join("junit.xml");
    let o = retrace(&[
        "check",
        "scenarios/api-down/capture",
        "--expect",
        "scenarios/checkout/scenario.yaml",
        "--junit",
        path(&junit),
    ]);
    let t = text(&o);
    assert_eq!(o.status.code(), Some(1), "{t}");
    assert!(
        t.lines()
            .any(|l| l.starts_with("FAIL  edge client -> nginx (http): error rate <= 0.50%")),
        "{t}"
    );
    let xml = std::fs::read_to_string(&junit).expect("junit written");
    assert!(xml.contains("<failure message=\"measured: "), "{xml}");
}

#[test]
fn check_asserts_where_traces_go() {
    // The healthy capture: every checkout's trace reaches every service behind nginx.
    let o = retrace(&[
        "check",
        "scenarios/checkout/capture",
        "--expect",
        "scenarios/checkout/scenario.yaml",
    ]);
    let t = text(&o);
    assert_eq!(o.status.code(), Some(0), "{t}");
    for line in [
        "PASS  traces: client spans linked >= 95.00% (measured: ",
        "PASS  traces: server spans linked >= 99.00% (measured: ",
        "PASS  route nginx \"GET /checkout/{id}\": reaches api, users, redis, postgres in >= \
         95.00% of its traces (measured: ",
        "PASS  route nginx \"GET /products/{id}\": reaches api, postgres in >= 95.00% of its \
         traces (measured: ",
    ] {
        assert!(t.lines().any(|l| l.starts_with(line)), "{line}\n{t}");
    }
    // The api stopped for 8 of 24 s: the checkouts nginx could not pass on reached nothing
    // behind it; JUnit says which route and what was missing.
    let dir = tempfile::tempdir().expect("tmp");
    let junit = dir.path().join("junit.xml");
    let o = retrace(&[
        "check",
        "scenarios/api-down/capture",
        "--expect",
        "scenarios/checkout/scenario.yaml",
        "--junit",
        path(&junit),
    ]);
    let t = text(&o);
    assert_eq!(o.status.code(), Some(1), "{t}");
    let line = t
        .lines()
        .find(|l| l.starts_with("FAIL  route nginx \"GET /checkout/{id}\": reaches api,"))
        .unwrap_or_else(|| panic!("no failed route in:\n{t}"));
    assert!(line.contains("; missing api in "), "{line}");
    let xml = std::fs::read_to_string(&junit).expect("junit written");
    assert!(
        xml.contains("<testcase classname=\"route nginx &quot;GET /checkout/{id}&quot;\""),
        "{xml}"
    );
    // A route that does not exist fails; a misspelled key is an error with its line.
    let f = dir.path().join("exp.yaml");
    std::fs::write(
        &f,
        "traces:\n  routes:\n    - { service: nginx, name: GET /nowhere, reaches: [api] }\n",
    )
    .expect("write");
    let o = retrace(&[
        "check",
        "scenarios/checkout/capture",
        "--expect",
        path(&f),
        "--services",
        "scenarios/common/services.yaml",
    ]);
    let t = text(&o);
    assert_eq!(o.status.code(), Some(1), "{t}");
    assert!(t.contains("measured: no trace holds this route (nginx's SERVER spans: GET /checkout/{id}, GET /products/{id})"), "{t}");
    std::fs::write(&f, "traces:\n  min_client_linked: 95%\n  min_linked: 1\n").expect("write");
    let o = retrace(&["check", "scenarios/checkout/capture", "--expect", path(&f)]);
    let t = text(&o);
    assert_eq!(o.status.code(), Some(2), "{t}");
    assert!(t.contains(&format!("{}:3:", f.display())), "{t}");
    assert!(t.contains("unknown field `min_linked`"), "{t}");
}

#[test]
fn check_reports_malformed_files_with_their_line() {
    let dir = tempfile::tempdir().expect("tmp");
    let f = dir.path().join("exp.yaml");
    std::fs::write(&f, "edges:\n  - edge: nginx -> api\n    max_p99: 30\n").expect("write");
    let o = retrace(&["check", "scenarios/checkout/capture", "--expect", path(&f)]);
    let t = text(&o);
    assert_eq!(o.status.code(), Some(2), "{t}");
    assert!(t.contains(&format!("{}:3:", f.display())), "{t}");
    assert!(
        t.contains("unknown field `max_p99`, expected one of"),
        "{t}"
    );
}

#[test]
fn diff_of_a_capture_with_itself_is_clean() {
    let dir = tempfile::tempdir().expect("tmp");
    let o = retrace(&[
        "diff",
        "scenarios/checkout/capture",
        "scenarios/checkout/capture",
        "--services",
        "scenarios/common/services.yaml",
        "--fail-on",
        "p99 > +0%, errors > +0pp, new-edge, gone-edge, rate < -0%",
        "--out",
        path(dir.path()),
    ]);
    let t = text(&o);
    assert_eq!(o.status.code(), Some(0), "{t}");
    assert!(t.contains("0 rule(s) crossed"), "{t}");
}

#[test]
fn diff_checkout_against_api_down_fails_on_errors() {
    let dir = tempfile::tempdir().expect("tmp");
    let junit = dir.path().join("junit.xml");
    let o = retrace(&[
        "diff",
        "scenarios/checkout/capture",
        "scenarios/api-down/capture",
        "--services",
        "scenarios/common/services.yaml",
        "--out",
        path(dir.path()),
        "--junit",
        path(&junit),
    ]);
    let t = text(&o);
    assert_eq!(o.status.code(), Some(1), "{t}");
    assert!(t.contains("FAIL (errors > +0.5pp)"), "{t}");
    let csv = std::fs::read_to_string(dir.path().join("diff.csv")).expect("diff.csv");
    assert!(
        csv.starts_with("kind,subject,protocol,presence,metric,base,candidate,change,verdict\n")
    );
    assert!(
        csv.lines()
            .any(|l| l.starts_with("edge,client -> nginx,http,both,errors,")
                && l.ends_with("FAIL (errors > +0.5pp)")),
        "{csv}"
    );
    let html = std::fs::read_to_string(dir.path().join("diff.html")).expect("diff.html");
    assert!(html.contains("client -&gt; nginx"));
    assert!(!html.contains("<script"));
    assert!(std::fs::read_to_string(&junit)
        .expect("junit")
        .contains("<failure "));
}

#[test]
fn diff_without_out_writes_nothing() {
    let cwd = tempfile::tempdir().expect("tmp");
    let base = root().join("scenarios/checkout/capture");
    let cand = root().join("scenarios/api-down/capture");
    let o = Command::new(env!("CARGO_BIN_EXE_retrace"))
        .args(["diff", path(&base), path(&cand)])
        .current_dir(cwd.path())
        .output()
        .expect("run retrace");
    let t = text(&o);
    assert_eq!(o.status.code(), Some(1), "{t}");
    assert!(t.contains("rule(s) crossed"), "{t}");
    assert!(!t.contains("wrote"), "{t}");
    let left: Vec<_> = std::fs::read_dir(cwd.path())
        .expect("read cwd")
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert!(left.is_empty(), "diff wrote {left:?} without --out");
}

#[test]
fn diff_rejects_bad_rules() {
    let o = retrace(&[
        "diff",
        "scenarios/checkout/capture",
        "scenarios/api-down/capture",
        "--fail-on",
        "p99 > +20%, latency > 3",
    ]);
    let t = text(&o);
    assert_eq!(o.status.code(), Some(2), "{t}");
    assert!(t.contains("unknown metric \"latency\""), "{t}");
}

#[test]
fn check_passes_the_api_down_capture_against_its_own_expectations() {
    // The stopped api's refused connects are its callers' failed calls, not requests it
    // served: the expectations assert them as such.
    let o = retrace(&[
        "check",
        "scenarios/api-down/capture",
        "--expect",
        "scenarios/api-down/scenario.yaml",
    ]);
    let t = text(&o);
    assert_eq!(o.status.code(), Some(0), "{t}");
    assert!(
        t.lines()
            .any(|l| l.starts_with("PASS  service api: failed connections")),
        "{t}"
    );
    assert!(
        t.lines().any(|l| l.starts_with("PASS  service api: calls")),
        "{t}"
    );
}
