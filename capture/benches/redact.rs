//! The cost of redaction on the capture's hot path: `redact_event` (what the writer thread
//! runs on every event before it is written) over the events of the committed scenario
//! captures (real nginx, Python, PostgreSQL, Redis traffic: payloads, exec arguments, log
//! writes, TCP events), in ns per event, with the built-in rules and with the built-in rules
//! plus a user's rules file (2 headers, 2 keys, 2 patterns), next to the writer's own cost
//! per event (`CaptureWriter::append_ref`, encoding and zstd level 1 included) for the ratio.
//!
//! Run: `cargo bench -p retrace-capture --bench redact` (`BENCH_REPS` passes, default 20).

use std::hint::black_box;
use std::path::PathBuf;
use std::time::Instant;

use retrace_capture::daemon::redact_event;
use retrace_capture::redact_rules;
use retrace_protocols::redact::UserRules;
use retrace_segment::{Capture, CaptureOptions, CaptureWriter, Event, StateSnapshot};

fn scenario_events() -> Vec<Event> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../scenarios");
    let mut out = Vec::new();
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(&root)
        .expect("scenarios")
        .filter_map(Result::ok)
        .map(|e| e.path().join("capture"))
        .filter(|p| p.is_dir())
        .collect();
    dirs.sort();
    for dir in dirs {
        let c = Capture::open(&dir).expect("capture");
        for i in 0..c.segment_paths().len() {
            let r = c.open_segment(i).expect("segment");
            for b in 0..r.blocks().len() {
                out.extend(r.read_block(b).expect("block"));
            }
        }
    }
    out
}

/// ns per event of `f` over every event, each a fresh copy (the copy measured apart).
fn per_event(events: &[Event], reps: usize, mut f: impl FnMut(&mut Event) -> usize) -> f64 {
    let start = Instant::now();
    let mut n = 0usize;
    for _ in 0..reps {
        for ev in events {
            let mut e = ev.clone();
            n += f(black_box(&mut e));
            black_box(&e);
        }
    }
    black_box(n);
    start.elapsed().as_secs_f64() * 1e9 / (reps * events.len()) as f64
}

fn main() {
    let reps: usize = std::env::var("BENCH_REPS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20);
    let events = scenario_events();
    let payloads = events
        .iter()
        .filter(|e| {
            matches!(
                e.body,
                retrace_segment::EventBody::L7(_)
                    | retrace_segment::EventBody::Log(_)
                    | retrace_segment::EventBody::Udp(_)
                    | retrace_segment::EventBody::ProcExec(_)
            )
        })
        .count();
    let user = redact_rules::parse(
        "headers: [X-Tenant-Secret, X-Internal-Token]\nkeys: [tenant_key, ssn]\n\
         patterns:\n  - 'sk_live_[0-9a-zA-Z]{24}'\n  - 'card=(\\d{12,19})'\n",
    )
    .expect("rules");
    let none = UserRules::default();

    let copy = per_event(&events, reps, |_| 0);
    let builtin = per_event(&events, reps, |e| redact_event(e, &none));
    let with_user = per_event(&events, reps, |e| redact_event(e, &user));

    // The writer's own cost per event, for the ratio.
    let tmp = tempfile::tempdir().expect("tmp");
    let mut write_ns = f64::MAX;
    for rep in 0..3 {
        let opts = CaptureOptions {
            dir: tmp.path().join(format!("w{rep}")),
            zstd_level: 1,
            ..CaptureOptions::default()
        };
        let mut w = CaptureWriter::create(opts, StateSnapshot::default()).expect("writer");
        let start = Instant::now();
        for _ in 0..reps.div_ceil(4) {
            for ev in &events {
                w.append_ref(ev).expect("append");
            }
        }
        w.close().expect("close");
        let ns = start.elapsed().as_secs_f64() * 1e9 / (reps.div_ceil(4) * events.len()) as f64;
        write_ns = write_ns.min(ns);
    }
    let b = (builtin - copy).max(0.0);
    let u = (with_user - copy).max(0.0);
    println!(
        "redaction: {} events of the scenario captures ({payloads} with payloads or arguments), \
         {reps} passes",
        events.len()
    );
    println!("  copy of an event (baseline)     {copy:8.1} ns/event");
    println!(
        "  built-in rules                  {b:8.1} ns/event above the copy ({:.1}% of the writer's {write_ns:.0} ns/event)",
        b * 100.0 / write_ns
    );
    println!(
        "  built-in + user rules (2+2+2)   {u:8.1} ns/event above the copy ({:.1}% of the writer's)",
        u * 100.0 / write_ns
    );
}
