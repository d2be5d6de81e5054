//! Log errors rising: a service's error-level log events (error and critical) per bucket
//! above its baseline (the lower quartile of its error events per bucket over the capture:
//! the quiet level, 0 for a service whose errors come in bursts; Coroot's inspection: log
//! errors > 0), in windows; and the error patterns of a service as evidence on its other
//! findings of the same time.
//!
//! Counts come from the log patterns (exact even when events were not kept for logs.csv), at
//! one-second resolution.

use std::collections::{BTreeMap, BTreeSet};

use super::{Cx, Out, SAMPLES};
use crate::model::{Finding, Severity};

/// Error patterns named in an evidence line at most.
const TOP_PATTERNS: usize = 3;
/// Other findings get a service's log errors from this long before their start, ns.
const EVIDENCE_SLACK_NS: u64 = 1_000_000_000;

impl Cx<'_> {
    /// The error patterns of `service` in [start, end], most frequent first: (id, template,
    /// events).
    fn error_patterns(&self, service: &str, start: u64, end: u64) -> Vec<(&str, &str, u64)> {
        let mut v: Vec<(&str, &str, u64)> = self
            .a
            .logs
            .patterns
            .iter()
            .filter(|p| p.level.is_error() && p.service == service)
            .filter_map(|p| {
                let n: u64 = p
                    .per_second
                    .iter()
                    .filter(|(s, _)| *s + 1_000_000_000 > start && *s <= end)
                    .map(|x| x.1)
                    .sum();
                (n > 0).then_some((p.id.as_str(), p.template.as_str(), n))
            })
            .collect();
        v.sort_by(|a, b| b.2.cmp(&a.2).then(a.0.cmp(b.0)));
        v
    }

    fn patterns_text(pats: &[(&str, &str, u64)]) -> String {
        let mut s: Vec<String> = pats
            .iter()
            .take(TOP_PATTERNS)
            .map(|(id, t, n)| format!("{id} ×{n} «{t}»"))
            .collect();
        if pats.len() > TOP_PATTERNS {
            s.push(format!("{} more", pats.len() - TOP_PATTERNS));
        }
        s.join(", ")
    }

    /// Findings for services whose error log events rose.
    pub(super) fn log_errors(&self, out: &mut Out) {
        let c = &self.cfg.log_errors;
        let net = self.net;
        let logs = &self.a.logs;
        if logs.patterns.is_empty() {
            return;
        }
        let last = net.bucket(self.a.window_end_ns);
        let gap = (super::gap_ns(self.cfg) / net.bucket_ns.max(1)).max(1);
        for (service, secs) in logs.errors_per_second() {
            let mut buckets: BTreeMap<u64, u64> = BTreeMap::new();
            for (&s, &n) in &secs {
                *buckets.entry(net.bucket(s)).or_default() += n;
            }
            // baseline: the lower quartile of every bucket of the capture (empty ones included)
            let mut all: Vec<u64> = (0..=last)
                .map(|b| buckets.get(&b).copied().unwrap_or(0))
                .collect();
            all.sort_unstable();
            let baseline = all.get(all.len() / 4).copied().unwrap_or(0);
            let mut windows: Vec<(u64, u64, u64)> = Vec::new();
            for (&b, &n) in &buckets {
                if n < c.min_per_bucket || (n as f64) <= c.ratio * baseline as f64 {
                    continue;
                }
                match windows.last_mut() {
                    Some(w) if b <= w.1 + gap => {
                        w.1 = b;
                        w.2 += n;
                    }
                    _ => windows.push((b, b, n)),
                }
            }
            for (first, last_b, total) in windows {
                if total < c.min_total {
                    continue;
                }
                let start = net.start_ns + first * net.bucket_ns;
                let end = (net.start_ns + (last_b + 1) * net.bucket_ns)
                    .min(self.a.window_end_ns.max(start));
                self.log_errors_window(out, service, start, end, total, baseline);
            }
        }
    }

    fn log_errors_window(
        &self,
        out: &mut Out,
        service: &str,
        start: u64,
        end: u64,
        total: u64,
        baseline: u64,
    ) {
        let logs = &self.a.logs;
        let pats = self.error_patterns(service, start, end);
        let Some(&(top_id, top_template, top_n)) = pats.first() else {
            return;
        };
        // processes, and the failed requests the window's kept error events were logged for
        let mut procs: BTreeSet<String> = BTreeSet::new();
        let mut rows: BTreeSet<usize> = BTreeSet::new();
        let mut events = 0u64;
        for e in logs.events.iter().filter(|e| {
            e.level.is_error()
                && logs.service_of(e) == service
                && e.ts_ns >= start.saturating_sub(1_000_000_000)
                && e.ts_ns <= end
        }) {
            events += 1;
            let node = logs
                .nodes
                .get(usize::from(e.node))
                .map_or("", String::as_str);
            procs.insert(format!("{node}/{}", e.pid));
            if let Some(r) = e.request {
                if self.a.requests.get(r as usize).is_some_and(|r| r.error) {
                    rows.insert(r as usize);
                }
            }
        }
        let mut evidence = vec![
            format!(
                "{total} error log events in {:.0} s; baseline (lower quartile per {:.0} s \
                 bucket over the capture): {baseline}",
                end.saturating_sub(start) as f64 / 1e9,
                self.net.bucket_ns as f64 / 1e9
            ),
            format!("patterns: {}", Self::patterns_text(&pats)),
        ];
        if events > 0 {
            evidence.push(format!(
                "{} of its error events were logged while serving a failed request",
                rows.len()
            ));
        }
        let others: Vec<&str> = out
            .list
            .iter()
            .filter(|(f, _)| {
                f.service == service
                    && f.start_ns <= end
                    && f.end_ns.saturating_add(EVIDENCE_SLACK_NS) >= start
            })
            .map(|(f, _)| f.kind.as_str())
            .collect();
        if !others.is_empty() {
            evidence.push(format!(
                "at the same time, {service}'s other findings: {}",
                others.join(", ")
            ));
        }
        let severity = if total >= self.cfg.log_errors.critical {
            Severity::Critical
        } else {
            Severity::Warning
        };
        let f = Finding {
            start_ns: start,
            end_ns: end,
            severity,
            kind: "log_errors".into(),
            service: service.to_string(),
            processes: procs.into_iter().collect(),
            summary: format!(
                "{service} logged {total} errors (baseline {baseline} per bucket); mostly {top_id}"
            ),
            likely_cause: format!(
                "what {service} logged: {top_id} ×{top_n} «{top_template}» (see its log patterns)"
            ),
            evidence,
            sample_requests: rows.into_iter().take(SAMPLES).collect(),
            ..Default::default()
        };
        out.push(f, Vec::new());
    }

    /// The error patterns of each finding's service in its window, as evidence.
    pub(super) fn log_evidence(&self, out: &mut Out) {
        if self.a.logs.patterns.is_empty() {
            return;
        }
        for (f, _) in out.list.iter_mut() {
            if f.kind == "log_errors" || f.service.is_empty() {
                continue;
            }
            let pats = self.error_patterns(
                &f.service,
                f.start_ns.saturating_sub(EVIDENCE_SLACK_NS),
                f.end_ns,
            );
            if pats.is_empty() {
                continue;
            }
            let n: u64 = pats.iter().map(|p| p.2).sum();
            f.evidence.push(format!(
                "{}'s error log events in the window: {n} ({})",
                f.service,
                Self::patterns_text(&pats)
            ));
        }
    }
}
