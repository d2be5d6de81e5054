//! Tests of the traces section on synthetic captures: which traces are chosen, the waterfall's
//! order and nesting, escaping of captured strings, and the anchors linking traces, spans and
//! requests.

use std::collections::BTreeSet;

use retrace_segment::Event;

use super::*;
use crate::services::ServiceRule;
use crate::synth::{self, ShopOptions};
use crate::{analyze_events, ServicesFile};

fn run(evs: &[Event], services: ServicesFile) -> Analysis {
    let clock = synth::synth_clock();
    analyze_events(
        evs.iter().map(|e| ("node-a", clock.to_wall(e.ts), e)),
        services,
    )
    .expect("analysis")
}

fn shop(opts: &ShopOptions) -> Analysis {
    run(&synth::shop(Vec::new(), opts), ServicesFile::default())
}

fn section(a: &Analysis) -> String {
    let mut h = String::new();
    render(a, &mut h);
    h
}

/// Values of attribute `attr` (`id`, `href`) starting with `prefix`, in document order.
fn attrs(h: &str, attr: &str, prefix: &str) -> Vec<String> {
    let pat = format!("{attr}=\"{prefix}");
    h.match_indices(&pat)
        .filter_map(|(i, _)| {
            let rest = &h[i + pat.len()..];
            rest.find('"').map(|e| rest[..e].to_string())
        })
        .collect()
}

/// The waterfall rows of the trace rendered with id `trace-{id}`: (span id, indent px).
fn rows_of(h: &str, trace_id: u128) -> Vec<(String, usize)> {
    let start = h
        .find(&format!("id=\"trace-{trace_id:032x}\""))
        .expect("trace rendered");
    let end = start + h[start..].find("</details>").expect("closed");
    let part = &h[start..end];
    part.match_indices("id=\"span-")
        .map(|(i, _)| {
            let rest = &part[i + 9..];
            let id = rest[..16].to_string();
            let pad = rest
                .find("padding-left:")
                .map(|p| &rest[p + 13..])
                .and_then(|r| r.split("px").next())
                .and_then(|v| v.parse().ok())
                .expect("indent");
            (id, pad)
        })
        .collect()
}

#[test]
fn slowest_traces_are_chosen_slowest_first_and_failed_ones_in_time_order() {
    let a = shop(&ShopOptions {
        requests: 600,
        ..Default::default()
    });
    let (slowest, failed) = choose(&a.traces);
    assert_eq!(slowest.len(), SLOWEST);
    let mut all: Vec<u64> = a.traces.iter().map(|t| t.duration_ns).collect();
    all.sort_unstable_by(|x, y| y.cmp(x));
    let got: Vec<u64> = slowest.iter().map(|&i| a.traces[i].duration_ns).collect();
    assert_eq!(got, all[..SLOWEST], "the slowest, slowest first");
    assert_eq!(failed.len(), FAILED);
    assert!(failed.iter().all(|&i| a.traces[i].errors > 0));
    let roots: Vec<usize> = failed.iter().map(|&i| a.traces[i].root as usize).collect();
    assert!(roots.windows(2).all(|w| w[0] < w[1]), "time order");
    // The refused curl (a trace of one failed span) is a kind of its own: it is among them.
    assert!(
        failed
            .iter()
            .any(|&i| a.traces[i].root_service(&a.requests) == "curl"),
        "{:?}",
        failed.iter().map(|&i| &a.traces[i]).collect::<Vec<_>>()
    );
}

#[test]
fn waterfall_rows_follow_the_tree_depth_first_and_are_indented_by_depth() {
    let a = shop(&ShopOptions {
        requests: 300,
        ..Default::default()
    });
    let h = section(&a);
    let (slowest, _) = choose(&a.traces);
    let t = &a.traces[slowest[0]];
    let rows = a.requests.rows_of_traces(&[t.root as usize]);
    let spans = layout(&a, &rows[&(t.root as usize)]);
    // (wrk -> nginx, when nginx's call is linked to its inbound request,) nginx -> a Python
    // backend -> redis: a CLIENT span, then the SERVER span under it, one level deeper each
    // time.
    let got: Vec<(&str, SpanKind, usize)> =
        spans.iter().map(|(s, d)| (s.service, s.kind, *d)).collect();
    assert!(got.len() == 4 || got.len() == 6, "{got:?}");
    let k = got.len() - 4;
    let backend = got[k + 1].0;
    assert!(backend.starts_with("python3:1808"), "{got:?}");
    assert_eq!(
        got[k..],
        [
            ("nginx:8080", SpanKind::Client, k),
            (backend, SpanKind::Server, k + 1),
            (backend, SpanKind::Client, k + 2),
            ("redis-server:6379", SpanKind::Server, k + 3),
        ]
    );
    if k == 2 {
        assert_eq!(
            got[..2],
            [
                ("wrk", SpanKind::Client, 0),
                ("nginx:8080", SpanKind::Server, 1)
            ]
        );
    }
    for w in spans.windows(2) {
        assert_eq!(w[1].0.parent_span_id, Some(w[0].0.span_id), "a chain");
    }
    // The page shows the same rows, in that order, indented by depth.
    let rendered = rows_of(&h, t.trace_id(&a.requests));
    let want: Vec<(String, usize)> = spans
        .iter()
        .map(|(s, d)| (format!("{:016x}", s.span_id), 6 + d * 14))
        .collect();
    assert_eq!(rendered, want);
    // Each row names its span and its request.
    let root = &spans[0].0;
    let row = &h[h
        .find(&format!("id=\"span-{:016x}\"", root.span_id))
        .expect("row")..];
    let row = &row[..row.find("</a>").expect("end")];
    assert!(row.contains(&format!("href=\"#req-{}\"", root.request)));
    assert!(row.contains(&esc(&root.name())));
    assert!(row.contains("linked") || row.contains("root of the trace"));
}

#[test]
fn a_call_made_while_serving_two_requests_nests_under_its_own_and_siblings_keep_time_order() {
    // Several calls under one SERVER span: children sorted by start, each CLIENT span directly
    // followed by its SERVER span.
    let a = shop(&ShopOptions {
        requests: 200,
        ..Default::default()
    });
    for t in a.traces.iter().take(50) {
        let rows = a.requests.rows_of_traces(&[t.root as usize]);
        let spans = layout(&a, &rows[&(t.root as usize)]);
        assert_eq!(spans.len(), t.spans as usize, "every span once");
        let ids: BTreeSet<u64> = spans.iter().map(|(s, _)| s.span_id).collect();
        assert_eq!(ids.len(), spans.len());
        for (k, (s, d)) in spans.iter().enumerate() {
            match s.parent_span_id {
                None => assert_eq!(*d, 0),
                Some(p) => {
                    // Its parent is the nearest row above one level up.
                    let above = spans[..k]
                        .iter()
                        .rev()
                        .find(|(_, pd)| *pd + 1 == *d)
                        .expect("a parent row above");
                    assert_eq!(above.0.span_id, p);
                }
            }
        }
    }
}

#[test]
fn failed_and_unanswered_spans_are_red_and_open_ended() {
    let a = shop(&ShopOptions {
        requests: 600,
        ..Default::default()
    });
    let h = section(&a);
    // The refused connection of curl: no response, failed, a hatched bar to the end.
    let t = a
        .traces
        .iter()
        .find(|t| t.root_service(&a.requests) == "curl")
        .expect("curl's trace");
    let start = h
        .find(&format!("id=\"trace-{:032x}\"", t.trace_id(&a.requests)))
        .expect("shown among the failed");
    let part = &h[start..start + h[start..].find("</details>").expect("end")];
    assert!(part.contains("wf-bar client err open"), "{part}");
    assert!(part.contains("ECONNREFUSED"));
    assert!(part.contains("no response"));
    assert!(part.contains("failed at <a href=\"#span-"));
    // A 500 of the second backend: its SERVER span is red, a solid bar.
    assert!(h.contains("wf-bar server err\""), "a failed server span");
    assert!(h.contains("<span class=\"wf-status\">500</span>"));
}

#[test]
fn captured_strings_are_escaped_in_waterfalls_and_requests() {
    let evil_path = "/<script>alert(1)</script>\"'&";
    let evil_service = "<script>x</script>\"r'&";
    let evs = synth::shop(
        Vec::new(),
        &ShopOptions {
            requests: 100,
            odd_path: Some(evil_path.into()),
            ..Default::default()
        },
    );
    let services = ServicesFile {
        latency_objective_ms: None,
        services: vec![ServiceRule {
            name: evil_service.into(),
            comm: None,
            exe: None,
            cmdline: Some(crate::services::Pattern(
                regex::Regex::new("--port 1808").expect("regex"),
            )),
            port: None,
            ports: None,
            cgroup: None,
            latency_objective_ms: None,
        }],
    };
    let a = run(&evs, services);
    // The trace of the request with the odd path, rendered as the page would.
    let row = a
        .requests
        .iter()
        .position(|r| r.target == evil_path && r.server == evil_service)
        .expect("odd request");
    let root = a.requests.root_of(row);
    let t = a
        .traces
        .iter()
        .find(|t| t.root as usize == root)
        .expect("its trace");
    let rows = a.requests.rows_of_traces(&[root]);
    let spans = layout(&a, &rows[&root]);
    assert!(
        spans.iter().any(|(s, _)| s.service == evil_service),
        "{:?}",
        spans
            .iter()
            .map(|(s, _)| (s.service, s.target))
            .collect::<Vec<_>>()
    );
    assert!(spans.iter().any(|(s, _)| s.target == evil_path));
    let mut h = String::new();
    let colors = Colors::new(&a);
    let shown = waterfall(t, &spans, &colors, &mut h);
    requests(&a, &[(t, shown)], &mut h);
    breakdown(&a, &colors, &mut h);
    let mut page = section(&a);
    page.push_str(&h);
    for s in [&page, &h] {
        assert!(!s.contains("<script>x"), "service escaped");
        assert!(!s.contains("<script>alert"), "target escaped");
        assert!(!s.contains("r'&"), "quotes escaped");
    }
    assert!(h.contains(&esc(evil_service)), "service shown");
    assert!(
        h.contains(&esc(evil_path)),
        "target shown (title and requests)"
    );
    assert!(
        page.contains(&esc(evil_service)),
        "in the page: breakdown and waterfalls"
    );
    assert!(!page.contains("<script"), "no script element at all");
}

#[test]
fn every_link_has_its_anchor_and_every_request_links_back() {
    let a = shop(&ShopOptions {
        requests: 600,
        ..Default::default()
    });
    let page = crate::report::render_html(&a);
    let ids: BTreeSet<String> = attrs(&page, "id", "").into_iter().collect();
    let ids_list = attrs(&page, "id", "");
    assert_eq!(ids.len(), ids_list.len(), "ids are unique");
    let hrefs = attrs(&page, "href", "#");
    assert!(!hrefs.is_empty());
    for r in &hrefs {
        assert!(ids.contains(r), "#{r} has no anchor");
    }
    // Every waterfall row links to its request, every request to its row and its trace.
    let spans = attrs(&page, "id", "span-");
    let reqs = attrs(&page, "id", "req-");
    assert!(spans.len() >= reqs.len() && !reqs.is_empty());
    for r in &reqs {
        assert!(hrefs.contains(&format!("req-{r}")));
    }
    let traces = attrs(&page, "id", "trace-");
    let shown: BTreeSet<&String> = traces.iter().filter(|t| t.len() == 32).collect();
    assert!(shown.len() >= SLOWEST);
    for t in shown {
        assert!(
            hrefs.contains(&format!("trace-{t}")),
            "a request links to {t}"
        );
    }
    // The request rows are those of the traces shown.
    for r in &reqs {
        let i: usize = r.parse().expect("index");
        let root = a.requests.root_of(i);
        let t = a.requests.trace_id_of_root(root);
        assert!(ids.contains(&format!("trace-{t:032x}")));
    }
}

#[test]
fn coverage_and_time_breakdown_show_the_analysis_figures() {
    let a = shop(&ShopOptions {
        requests: 300,
        ..Default::default()
    });
    let h = section(&a);
    let c = &a.trace_coverage;
    assert!(h.contains(&format!(
        "{} of {} whose client was captured",
        c.server_spans_linked, c.server_spans_with_client
    )));
    assert!(h.contains(&format!(
        "{} of {} made by processes that served requests",
        c.client_spans_linked, c.client_spans_in_servers
    )));
    for (rule, n) in &c.by_link {
        assert!(h.contains(&format!("{rule} {n}</span>")), "{rule} {n}");
    }
    // nginx's endpoint waits for both backends: one bar segment each, plus its own time.
    let b = a
        .time_breakdown
        .iter()
        .find(|b| b.service == "nginx:8080" && !b.downstream.is_empty())
        .expect("nginx breakdown");
    let start = h.find("id=\"time-breakdown\"").expect("section");
    let part = &h[start..];
    let at = part
        .find(&format!("<code>nginx:8080</code> {}<br>", esc(&b.name)))
        .expect("nginx row");
    let bar = &part[at..];
    let bar = &bar[..bar.find("class=\"tb-nums\"").expect("numbers")];
    assert_eq!(
        bar.matches("<span style=\"width:").count(),
        1 + b.downstream.len()
    );
    for d in &b.downstream {
        assert!(bar.contains(&format!("title=\"{} (", esc(&d.service))));
    }
}

#[test]
fn same_analysis_same_bytes_and_skipped_traces_say_so() {
    let mut a = shop(&ShopOptions {
        requests: 200,
        ..Default::default()
    });
    assert_eq!(section(&a), section(&a));
    a.traces_skipped = true;
    let h = section(&a);
    assert!(h.contains("--no-traces"));
    assert!(!h.contains("class=\"wf\""));
}

#[test]
fn failed_traces_cover_every_kind_and_the_whole_capture() {
    // String ids: 1 the client service, 2 and 3 two root names.
    let summary = |root: usize, errors: u32, name: u32| TraceSummary {
        root: root as u32,
        root_service_id: 1,
        root_name_id: name,
        start_ns: root as u64 * 1000,
        duration_ns: if root % 7 == 0 { 5_000 } else { 1_000 },
        spans: 3,
        services: 2,
        errors,
    };
    // 300 traces; every third failed, all alike but one late failure of another endpoint.
    let traces: Vec<TraceSummary> = (0..300)
        .map(|r| match r {
            290 => summary(r, 1, 3),
            _ if r % 3 == 0 => summary(r, 2, 2),
            _ => summary(r, 0, 2),
        })
        .collect();
    let (slowest, failed) = choose(&traces);
    // Ties of duration: the earliest first.
    let roots: Vec<usize> = slowest.iter().map(|&i| traces[i].root as usize).collect();
    assert_eq!(roots, [0, 7, 14, 21, 28, 35, 42, 49, 56, 63]);
    let roots: Vec<usize> = failed.iter().map(|&i| traces[i].root as usize).collect();
    assert_eq!(roots.len(), FAILED);
    assert_eq!(roots[0], 0, "the first failure: when it started");
    assert!(roots.contains(&290), "the other kind: {roots:?}");
    assert!(roots.iter().all(|r| r % 3 == 0 || *r == 290));
    assert!(roots.windows(2).all(|w| w[0] < w[1]), "time order");
    assert!(
        *roots.iter().max().unwrap_or(&0) >= 250,
        "spread: {roots:?}"
    );
    // Fewer failures than places: all of them.
    let few: Vec<TraceSummary> = (0..20).map(|r| summary(r, u32::from(r == 4), 2)).collect();
    let (_, failed) = choose(&few);
    assert_eq!(failed, [4]);
}

#[test]
fn a_report_without_traces_leaves_no_spans_of_an_earlier_one() {
    let mut a = shop(&ShopOptions {
        requests: 50,
        ..Default::default()
    });
    let dir = tempfile::tempdir().expect("tempdir");
    crate::write_report(&a, dir.path()).expect("report");
    for f in ["spans.csv", "traces.csv"] {
        assert!(dir.path().join(f).exists(), "{f} written");
    }
    a.traces_skipped = true;
    crate::write_report(&a, dir.path()).expect("report again");
    for f in ["spans.csv", "traces.csv", "cpu.folded"] {
        assert!(
            !dir.path().join(f).exists(),
            "{f} of the earlier run removed"
        );
    }
    assert!(dir.path().join("requests.csv").exists());
}
