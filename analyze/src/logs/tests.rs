//! Logs through the whole analyzer, on synthetic events (`crate::synth`): a client calls an
//! api that logs INFO per request and ERROR with a traceback for a known set of requests,
//! which it answers 500.

use retrace_segment::{Event, EventBody, LogWrite};

use super::*;
use crate::synth::{self, Synth};
use crate::{analyze_events, Analysis, ServicesFile};

const MS: u64 = 1_000_000;
const S: u64 = 1_000_000_000;

fn run(evs: &[Event]) -> Analysis {
    let clock = synth::synth_clock();
    analyze_events(
        evs.iter().map(|e| ("node-a", clock.to_wall(e.ts), e)),
        ServicesFile::default(),
    )
    .expect("analysis")
}

fn log(s: &mut Synth<Vec<Event>>, ts: u64, pid: u32, fd: i32, text: &str, keep: usize) {
    let b = text.as_bytes();
    s.push(Event::new(
        ts,
        EventBody::Log(LogWrite {
            pid,
            tid: pid,
            fd,
            path: String::new(),
            size: b.len() as u64,
            payload: b[..keep.min(b.len())].to_vec(),
        }),
    ));
}

const FAILING: [u32; 4] = [7, 19, 20, 33];

/// 40 requests 100 ms apart; requests in FAILING are answered 500 after an ERROR record with a
/// traceback (cut off by a 120-byte prefix for request 33); the others are logged INFO.
fn service() -> Vec<Event> {
    let t0 = 1_000 * S;
    let mut s = Synth::new(Vec::new());
    s.exec(t0, 10, 1, "/usr/bin/curl", &["curl"]);
    s.exec(t0, 20, 1, "/usr/bin/python3", &["python3", "api.py"]);
    s.listen(t0 + MS, 20, 18081);
    let c = s.connect(t0 + 10 * MS, 10, 20, 18081);
    for i in 0..40u32 {
        let t = t0 + 100 * MS + u64::from(i) * 100 * MS;
        let req = format!("GET /items/{i} HTTP/1.1\r\nHost: a\r\n\r\n");
        let failing = FAILING.contains(&i);
        let resp: &[u8] = if failing {
            b"HTTP/1.1 500 Internal Server Error\r\nContent-Length: 0\r\n\r\n"
        } else {
            b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"
        };
        // the server reads at t + 20 µs and answers 5 ms later; it logs at t + 2 ms
        let line = if failing {
            format!(
                "2026-12-06 12:00:00,000 ERROR api: failed to load item {i}\nTraceback (most \
                 recent call last):\n  File \"/srv/api.py\", line 40, in get\n    load({i})\n\
                 ValueError: item {i} is broken\n"
            )
        } else {
            format!("2026-12-06 12:00:00,000 INFO api: GET /items/{i} 200\n")
        };
        let keep = if i == 33 { 120 } else { line.len() };
        log(&mut s, t + 2 * MS, 20, 2, &line, keep);
        if i % 10 == 5 {
            log(
                &mut s,
                t + 3 * MS,
                20,
                2,
                &format!("2026-12-06 12:00:00,000 WARNING api: slow lookup for item {i}\n"),
                1000,
            );
        }
        s.exchange(
            &c,
            t,
            req.as_bytes(),
            req.len() as u64,
            resp,
            resp.len() as u64,
            5 * MS,
        );
    }
    s.finish()
}

#[test]
fn levels_patterns_and_the_failing_requests() {
    let a = run(&service());
    let l = &a.logs;
    assert_eq!(l.event_count, 40 + 4);
    assert_eq!(l.writes, 44);
    assert_eq!(l.cut_off_writes, 1);
    let got: Vec<(&str, Level, &str, u64)> = l
        .patterns
        .iter()
        .map(|p| (p.id.as_str(), p.level, p.template.as_str(), p.count))
        .collect();
    let ts = "<TS>";
    assert_eq!(
        got,
        [
            (
                "P1",
                Level::Error,
                format!("{ts} ERROR api: failed to load item <NUM>").as_str(),
                4
            ),
            (
                "P2",
                Level::Warning,
                format!("{ts} WARNING api: slow lookup for item <NUM>").as_str(),
                4
            ),
            (
                "P3",
                Level::Info,
                format!("{ts} INFO api: GET /items/<NUM> <NUM>").as_str(),
                36
            ),
        ]
    );
    assert!(
        l.patterns.iter().all(|p| p.service == "python3:18081"),
        "{:?}",
        l.services
    );
    // the error events: one each, 5 lines (4 for the cut one: what was cut off is counted)
    let errors: Vec<&LogEvent> = l.events.iter().filter(|e| e.level.is_error()).collect();
    assert_eq!(errors.len(), 4);
    for (e, i) in errors.iter().zip(FAILING) {
        if i == 33 {
            assert!(e.lines < 5 && e.cut_off_bytes > 0, "{e:?}");
        } else {
            assert_eq!((e.lines, e.cut_off_bytes), (5, 0), "{e:?}");
        }
        // attached to the request it was logged for: the 500 for /items/i
        let row = e.request.expect("attached") as usize;
        let r = a.requests.get(row).expect("row");
        assert_eq!(r.target, format!("/items/{i}"));
        assert_eq!(r.status, "500");
    }
    assert_eq!(l.patterns[0].failed_request_count, 4);
    // the info lines are not attached (only errors are)
    assert!(l
        .events
        .iter()
        .filter(|e| !e.level.is_error())
        .all(|e| e.request.is_none()));
    // per second: 40 requests over 4 s
    let total: u64 = l.patterns[2].per_second.iter().map(|x| x.1).sum();
    assert_eq!(total, 36);
}

#[test]
fn the_same_events_give_the_same_report() {
    let evs = service();
    assert_eq!(run(&evs).logs, run(&evs).logs);
}

#[test]
fn the_report_files_hold_the_events_and_patterns_escaped() {
    let mut evs = service();
    let t = evs.last().map_or(0, |e| e.ts) + MS;
    let mut s = Synth::new(Vec::new());
    log(
        &mut s,
        t,
        20,
        1,
        "=cmd|' /C calc'!A0 INFO <script>alert(1)</script>\n",
        1000,
    );
    evs.extend(s.finish());
    let a = run(&evs);
    let dir = tempfile::tempdir().expect("tempdir");
    crate::write_report(&a, dir.path()).expect("report");
    let read = |f: &str| std::fs::read_to_string(dir.path().join(f)).expect(f);
    let text = read("logs.csv");
    let mut logs = csv::Reader::from_reader(text.as_bytes());
    let rows: Vec<csv::StringRecord> = logs.records().map(|r| r.expect("csv row")).collect();
    assert_eq!(rows.len(), 45);
    let errors: Vec<&csv::StringRecord> = rows.iter().filter(|r| &r[3] == "error").collect();
    assert_eq!(errors.len(), 4);
    // the four with their request and trace; the hostile line made inert
    assert!(errors
        .iter()
        .all(|r| !r[11].is_empty() && r[12].len() == 32));
    let hostile = rows.last().expect("rows");
    assert!(hostile[5].starts_with("'=cmd"), "{hostile:?}");
    let text = read("log_patterns.csv");
    let mut pats = csv::Reader::from_reader(text.as_bytes());
    let pats: Vec<csv::StringRecord> = pats.records().map(|r| r.expect("csv row")).collect();
    let counts: u64 = pats
        .iter()
        .map(|r| r[4].parse::<u64>().expect("count"))
        .sum();
    assert_eq!(counts, 45);
    let html = read("index.html");
    assert!(html.contains("<section id=\"logs\">"));
    assert!(!html.contains("<script>alert(1)"), "captured text escaped");
    assert!(html.contains("&lt;script&gt;alert(1)"));
    assert!(html.contains("id=\"log-P1\""));
    // the findings' failed requests show the error line logged for them
    assert!(html.contains("<th>error logged</th>"), "{html}");
    assert!(html.contains(
        "<a href=\"#log-P1\">P1</a> <code>2026-12-06 12:00:00,000 ERROR api: failed to load item"
    ));
}

#[test]
fn rising_log_errors_are_a_finding_and_evidence_on_the_others() {
    let a = run(&service());
    let f: Vec<_> = a
        .findings
        .iter()
        .filter(|f| f.kind == "log_errors")
        .collect();
    assert_eq!(f.len(), 1, "{:#?}", a.findings);
    let f = f[0];
    assert_eq!(f.service, "python3:18081");
    assert_eq!(f.severity, crate::Severity::Warning);
    assert!(f.summary.contains("logged 4 errors"), "{}", f.summary);
    assert!(f.likely_cause.contains("P1 ×4"), "{}", f.likely_cause);
    let targets: Vec<&str> = f
        .sample_requests
        .iter()
        .filter_map(|&i| a.requests.get(i).map(|r| r.target))
        .collect();
    assert_eq!(targets, ["/items/7", "/items/19", "/items/20", "/items/33"]);
    // the served errors of the same service and time carry the patterns as evidence
    for other in a
        .findings
        .iter()
        .filter(|g| g.kind != "log_errors" && g.service == f.service)
    {
        assert!(
            other
                .evidence
                .iter()
                .any(|e| e.contains("error log events in the window")),
            "{other:#?}"
        );
    }
    // a higher threshold: no finding
    let mut cfg = crate::FindingsConfig::default();
    cfg.log_errors.min_total = 5;
    let clock = synth::synth_clock();
    let evs = service();
    let mut an = crate::Analyzer::new(ServicesFile::default());
    an.findings_config(cfg);
    let node = an.node("node-a");
    for e in &evs {
        an.push(node, clock.to_wall(e.ts), e);
    }
    let b = an.finish(Default::default()).expect("analysis");
    assert!(b.findings.iter().all(|f| f.kind != "log_errors"));
}

#[test]
fn kept_events_are_bounded_and_patterns_still_count_them_all() {
    let mut c = Collector {
        keep_at_most: 10,
        ..Default::default()
    };
    for i in 0..25u64 {
        let text = format!("ERROR user {i} not found\n");
        let w = LogWrite {
            pid: 5,
            tid: 5,
            fd: 2,
            path: String::new(),
            size: text.len() as u64,
            payload: text.into_bytes(),
        };
        c.push(0, 1_000 * S + i * MS, &w);
    }
    let r = c.finish(|_, pid| format!("svc{pid}"), vec!["n".into()]);
    assert_eq!((r.events.len(), r.not_kept, r.event_count), (10, 15, 25));
    assert_eq!(r.patterns.len(), 1);
    assert_eq!(r.patterns[0].count, 25);
    assert_eq!(r.patterns[0].template, "ERROR user <NUM> not found");
    assert_eq!(r.patterns[0].service, "svc5");
}
