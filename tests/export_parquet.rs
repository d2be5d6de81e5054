//! `retrace export parquet` end to end: the dataset read back by two independent readers.
//!
//! `tests/parquet/check_parquet.py` reads it with pyarrow (hive-partitioned datasets, file
//! metadata) and DuckDB (`read_parquet(..., hive_partitioning = 1)`), and checks it against
//! docs/parquet.md (columns, types, schema version), against `retrace analyze`'s CSV files of
//! the same capture and options (row for row, value for value) and against `retrace replay
//! --stats` (event rows per kind). The Python packages live in the venv
//! `scripts/install-deps.sh` creates (`RETRACE_PY_VENV`, default `/opt/retrace-py`); without
//! it the reading tests are skipped with a message, except under `RETRACE_REQUIRE_BPF=1`
//! (CI), where they fail.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

mod common;
use common::*;

#[path = "../segment/tests/util/mod.rs"]
mod util;

use retrace_analyze::synth::{write_shop_capture, ShopOptions};

/// The venv's Python with pyarrow and DuckDB.
fn venv_python() -> Option<PathBuf> {
    common::venv_python(
        "pyarrow.dataset, pyarrow.parquet, duckdb",
        true,
        "the Python venv with pyarrow and duckdb",
    )
}

/// `retrace analyze` into `out/report`, `retrace replay --stats` into `out/stats.json` and
/// `retrace export parquet` into `out/dataset`, of the same captures with the same options.
fn analyze_and_export(captures: &[&Path], extra: &[&str], out: &Path) -> (PathBuf, PathBuf) {
    let report = out.join("report");
    let dataset = out.join("dataset");
    let caps: Vec<&str> = captures.iter().map(|c| path(c)).collect();
    let mut args = vec!["analyze", "--quiet"];
    args.extend(&caps);
    args.extend(["--out", path(&report)]);
    args.extend_from_slice(extra);
    let o = retrace(&args);
    assert!(o.status.success(), "analyze: {}", text(&o));
    let mut args = vec!["replay", "--stats", "--output", "jsonl"];
    args.extend(&caps);
    // The replay's window options are the same words.
    args.extend(extra.chunks(2).filter(|c| c[0] != "--services").flatten());
    let o = retrace(&args);
    assert!(o.status.success(), "replay: {}", text(&o));
    std::fs::write(out.join("stats.json"), &o.stdout).expect("write stats");
    let mut args = vec!["export", "parquet"];
    args.extend(&caps);
    args.extend(["--out", path(&dataset)]);
    args.extend_from_slice(extra);
    let o = retrace(&args);
    assert!(o.status.success(), "export: {}", text(&o));
    (report, dataset)
}

/// Runs the checker; returns its output.
fn check(py: &Path, dataset: &Path, report: &Path, stats: &Path) -> Output {
    Command::new(py)
        .arg(root().join("tests/parquet/check_parquet.py"))
        .arg(dataset)
        .arg(report)
        .arg(stats)
        .arg(root().join("docs/parquet.md"))
        .output()
        .expect("run the checker")
}

fn csv_records(p: &Path) -> u64 {
    csv::Reader::from_path(p)
        .expect("csv")
        .records()
        .inspect(|r| assert!(r.is_ok(), "{r:?}"))
        .count() as u64
}

/// Files of a dataset (relative path → bytes).
fn files(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).expect("read_dir").flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else {
                let rel = p.strip_prefix(dir).expect("inside").to_path_buf();
                out.push((rel, std::fs::read(&p).expect("read")));
            }
        }
    }
    out.sort();
    out
}

#[test]
fn a_scenario_reads_back_equal_to_its_csvs_and_replay() {
    let Some(py) = venv_python() else { return };
    let dir = root().join("scenarios/api-down");
    let tmp = tempfile::tempdir().expect("tmp");
    let services = services_file(&dir).expect("services");
    let (report, dataset) = analyze_and_export(
        &[&dir.join("capture")],
        &["--services", path(&services)],
        tmp.path(),
    );
    let o = check(&py, &dataset, &report, &tmp.path().join("stats.json"));
    assert!(o.status.success(), "{}", text(&o));
    let summary: serde_json::Value = serde_json::from_slice(&o.stdout).expect("JSON summary");
    eprintln!("{summary}");
    // The checker compared with the CSVs; this test checks that there was something to compare.
    let requests = csv_records(&report.join("requests.csv"));
    assert!(requests > 1000, "{summary}");
    assert_eq!(summary["requests"].as_u64(), Some(requests));
    assert_eq!(summary["duckdb"]["requests"].as_u64(), Some(requests));
    assert!(summary["findings"].as_u64() > Some(0), "{summary}");
    assert!(summary["events"].as_u64() > Some(requests), "{summary}");
}

#[test]
fn nodes_and_hours_are_partitions_and_hostile_strings_come_back_intact() {
    let Some(py) = venv_python() else { return };
    let tmp = tempfile::tempdir().expect("tmp");
    // A synthetic node whose capture runs from 06:00 to past 07:00 (one request a second),
    // one request carrying what a path can carry, and a bundled capture of another node.
    let cap = tmp.path().join("synth");
    let hostile = "/x\"\\</script>,\";é{id}?q=\u{2028}%2F";
    let opts = ShopOptions {
        requests: 3700,
        rate: 1,
        odd_path: Some(hostile.into()),
        ..Default::default()
    };
    write_shop_capture(&cap, &opts).expect("capture");
    let checkout = root().join("scenarios/checkout/capture");
    let out = tmp.path().join("out");
    let (report, dataset) = analyze_and_export(&[&cap, &checkout], &[], &out);
    let o = check(&py, &dataset, &report, &out.join("stats.json"));
    assert!(o.status.success(), "{}", text(&o));
    let summary: serde_json::Value = serde_json::from_slice(&o.stdout).expect("JSON summary");
    eprintln!("{summary}");
    let per_node = &summary["duckdb_requests_per_node"];
    assert!(per_node["node-a"].as_u64() > Some(3000), "{summary}");
    assert!(per_node["checkout"].as_u64() > Some(1000), "{summary}");
    // The synthetic capture is written with the clock of now: an hour is crossed.
    let hours: Vec<String> = std::fs::read_dir(dataset.join("table=requests/node=node-a"))
        .expect("node=node-a")
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(hours.len(), 2, "{hours:?}");
    assert!(hours.iter().all(|h| h.starts_with("hour=")), "{hours:?}");
    assert!(dataset
        .join("table=events_l7/node=checkout/hour=2026-11-24T07")
        .is_dir());
    // The hostile path, byte for byte, through DuckDB.
    let glob = dataset.join("table=requests/**/*.parquet");
    let q = format!(
        "import duckdb, sys; r = duckdb.connect().execute(\"SELECT count(*) FROM \
         read_parquet('{}', hive_partitioning = 1) WHERE target = ?\", [sys.argv[1]]).fetchone(); \
         print(r[0])",
        glob.display()
    );
    let o = Command::new(&py)
        .args(["-c", &q, hostile])
        .output()
        .expect("python");
    assert!(o.status.success(), "{}", text(&o));
    let n: u64 = String::from_utf8_lossy(&o.stdout)
        .trim()
        .parse()
        .expect("count");
    assert!(
        n >= 1,
        "the hostile target is not in the dataset: {}",
        text(&o)
    );
}

#[test]
fn the_checker_rejects_a_dataset_that_differs() {
    let Some(py) = venv_python() else { return };
    let tmp = tempfile::tempdir().expect("tmp");
    let services = root().join("scenarios/common/services.yaml");
    let capture = root().join("scenarios/checkout/capture");
    let (report, dataset) =
        analyze_and_export(&[&capture], &["--services", path(&services)], tmp.path());
    let stats = tmp.path().join("stats.json");
    assert!(check(&py, &dataset, &report, &stats).status.success());
    // Three seconds of the same capture against the whole one's CSVs and counts.
    let short = tmp.path().join("short");
    let o = retrace(&[
        "export",
        "parquet",
        path(&capture),
        "--services",
        path(&services),
        "--to",
        "+3s",
        "--out",
        path(&short),
    ]);
    assert!(o.status.success(), "{}", text(&o));
    let o = check(&py, &short, &report, &stats);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(text(&o).contains("MISMATCH"), "{}", text(&o));
    // A file of one table under another's name.
    let l7 = std::fs::read_dir(dataset.join("table=events_l7/node=checkout"))
        .expect("l7")
        .flatten()
        .next()
        .expect("an hour")
        .path();
    let tcp_dir = dataset.join("table=events_tcp/node=checkout/hour=extra");
    std::fs::create_dir_all(&tcp_dir).expect("mkdir");
    let f = std::fs::read_dir(&l7)
        .expect("files")
        .flatten()
        .next()
        .expect("a file");
    std::fs::copy(f.path(), tcp_dir.join("part-x-0.parquet")).expect("copy");
    let o = check(&py, &dataset, &report, &stats);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(text(&o).contains("retrace.table"), "{}", text(&o));
}

#[test]
fn the_same_capture_gives_the_same_bytes() {
    let tmp = tempfile::tempdir().expect("tmp");
    let capture = root().join("scenarios/traces/capture");
    let mut sets = Vec::new();
    for n in ["a", "b"] {
        let out = tmp.path().join(n);
        let o = retrace(&[
            "export",
            "parquet",
            "--quiet",
            path(&capture),
            "--out",
            path(&out),
        ]);
        assert!(o.status.success(), "{}", text(&o));
        sets.push(files(&out));
    }
    assert!(
        sets[0].len() > 5,
        "{:?}",
        sets[0].iter().map(|f| &f.0).collect::<Vec<_>>()
    );
    assert!(sets[0] == sets[1], "two exports of one capture differ");
}

#[test]
fn bad_arguments_exit_2_and_leave_nothing_behind() {
    let tmp = tempfile::tempdir().expect("tmp");
    let capture = root().join("scenarios/checkout/capture");
    // An output directory that holds something.
    let full = tmp.path().join("full");
    std::fs::create_dir_all(&full).expect("mkdir");
    std::fs::write(full.join("keep.txt"), "mine").expect("write");
    let o = retrace(&["export", "parquet", path(&capture), "--out", path(&full)]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).contains("not empty"), "{}", text(&o));
    assert_eq!(
        std::fs::read_to_string(full.join("keep.txt")).expect("kept"),
        "mine"
    );
    // A capture that does not exist: no dataset, no temporary directory.
    let out = tmp.path().join("out");
    let o = retrace(&[
        "export",
        "parquet",
        "/nonexistent/capture",
        "--out",
        path(&out),
    ]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).contains("/nonexistent/capture"), "{}", text(&o));
    let left: Vec<_> = std::fs::read_dir(tmp.path())
        .expect("tmp")
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert_eq!(
        left,
        vec![std::ffi::OsString::from("full")],
        "left behind: {left:?}"
    );
    // A time that is not one.
    let o = retrace(&[
        "export",
        "parquet",
        path(&capture),
        "--from",
        "soon",
        "--out",
        path(&out),
    ]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(!out.exists());
}

#[test]
fn every_event_kind_has_its_table() {
    use proptest::strategy::{Strategy, ValueTree};
    let Some(py) = venv_python() else { return };
    let tmp = tempfile::tempdir().expect("tmp");
    // Arbitrary events of every kind (hostile strings, extreme numbers), one a millisecond.
    let cap = tmp.path().join("arbitrary");
    let opts = retrace_segment::CaptureOptions {
        dir: cap.clone(),
        node: retrace_analyze::synth::synth_node("node-z"),
        ..Default::default()
    };
    let mut writer =
        retrace_segment::CaptureWriter::create(opts, Default::default()).expect("writer");
    let mut runner = proptest::test_runner::TestRunner::deterministic();
    let strategy = util::arb_body();
    let t0 = 1_000_000_000_000u64;
    let mut kinds = std::collections::BTreeSet::new();
    for i in 0..4000u64 {
        let mut body = strategy.new_tree(&mut runner).expect("value").current();
        // The replay and the analysis sum counts and sizes without saturating (a debug build
        // panics on overflow): keep the arbitrary ones below 2^32.
        use retrace_segment::{EventBody as B, TcpStep};
        match &mut body {
            B::Loss(l) => l.count %= 1 << 32,
            B::Tcp(t) => {
                if let TcpStep::Closed {
                    bytes_sent,
                    bytes_received,
                } = &mut t.step
                {
                    *bytes_sent %= 1 << 32;
                    *bytes_received %= 1 << 32;
                }
            }
            B::L7(m) => {
                m.size %= 1 << 32;
                m.folded_bytes %= 1 << 32;
            }
            B::Udp(u) => u.size %= 1 << 32,
            B::Log(l) => l.size %= 1 << 32,
            _ => {}
        }
        kinds.insert(body.kind().name());
        writer
            .append(retrace_segment::Event::new(t0 + i * 1_000_000, body))
            .expect("append");
    }
    writer.close().expect("close");
    assert_eq!(
        kinds.len(),
        retrace_segment::EventKind::ALL.len(),
        "{kinds:?}"
    );
    let out = tmp.path().join("out");
    let (report, dataset) = analyze_and_export(&[&cap], &[], &out);
    let o = check(&py, &dataset, &report, &out.join("stats.json"));
    assert!(o.status.success(), "{}", text(&o));
    let summary: serde_json::Value = serde_json::from_slice(&o.stdout).expect("JSON summary");
    let tables = summary["tables"].as_object().expect("tables");
    let event_tables = tables.keys().filter(|t| t.starts_with("events_")).count();
    assert_eq!(event_tables, 20, "{summary}");
    assert!(summary["events"].as_u64() >= Some(4000), "{summary}");
}
