//! The findings engine: what went wrong, where, when and why, from the capture's timeline.
//!
//! Inputs: the analysis (every request, failed connects included, with the traces' parent
//! links), and [`collect::NetFacts`] (per-edge, per-bucket connects, retransmits, resets and
//! RTT; the life of every named process), collected in the streaming pass. Detectors, each
//! with Coroot's inspection thresholds by default ([`FindingsConfig`]):
//!
//! - **connection failures** to a service (refused, timed out, reset while opening), in
//!   episodes (failures less than `episode_gap_s` apart), tied to the service's processes
//!   (exited: code, signal, OOM kill; restarted; never listening; running but refusing), with
//!   the resets its exit caused and its callers' errors that followed attached;
//! - **retransmits** on an edge above its baseline (buckets with enough data retransmits, per
//!   request of the edge), with the edge's latency, errors and RTT during versus before;
//! - **resets** (who reset, after what: an exit of the resetting side), unless they are the
//!   evidence of a connection failure finding;
//! - **upstream errors / latency**: a caller's served errors or p99 rising during a finding
//!   of a service it calls (directly or through others: the chain users down → api 503 →
//!   nginx 503), with the number of its failed requests whose own call failed (traces);
//! - **DNS**: NXDOMAIN, server errors, timeouts, slow p95, per resolver and name;
//! - **log errors** rising above a service's baseline (`log_errors`), and the error log
//!   patterns of a service as evidence on its other findings of the same time.
//! - **Memory** (`memory.rs`, from the profiles): allocating stacks judged leaks, RSS growing
//!   outside the tracked heap; an OOM kill of the same process follows from them.
//! - **OOM kills** and **restarts** not already the cause of another finding.
//!
//! The output is sorted and numbered deterministically: the same capture gives the same
//! findings, byte for byte.

pub(crate) mod collect;
pub mod config;
mod log_errors;
mod memory;

use std::collections::{BTreeMap, BTreeSet};

pub use config::FindingsConfig;

use crate::model::{Analysis, DnsStats, Finding, RequestView, Severity, TcpPoint};
use crate::report::format_wall;
use collect::{EdgeBucket, Hist, NetFacts, ProcFact};

const S: u64 = 1_000_000_000;
/// How many sample requests a finding keeps.
const SAMPLES: usize = 4;

/// Fills `analysis.findings`, `analysis.tcp` and `analysis.dns`.
pub(crate) fn detect(a: &mut Analysis, net: &NetFacts, cfg: &FindingsConfig) {
    let (findings, tcp, dns) = {
        let cx = Cx::new(a, net, cfg);
        let dns = cx.dns_stats();
        let mut out = Out::default();
        cx.connection_failures(&mut out);
        cx.retransmits(&mut out);
        cx.zero_windows(&mut out);
        cx.resets(&mut out);
        cx.errors(&mut out);
        cx.dns_findings(&dns, &mut out);
        cx.memory(&mut out);
        cx.processes(&mut out);
        cx.log_errors(&mut out);
        cx.log_evidence(&mut out);
        (out.finish(), cx.tcp_points(), dns)
    };
    a.findings = findings;
    a.tcp = tcp;
    a.dns = dns;
}

/// Findings under construction; `caused_by` holds indexes into `list` until [`Out::finish`].
#[derive(Default)]
struct Out {
    list: Vec<(Finding, Vec<usize>)>,
    /// Processes (service, pid) already the cause of a finding.
    cited: BTreeSet<(String, u32)>,
    /// Services whose served errors and latency are explained by a finding, and when.
    explained: Vec<(String, u64, u64)>,
    /// Memory findings by (service, pid): what an OOM kill of the process follows from.
    memory_causes: BTreeMap<(String, u32), usize>,
}

impl Out {
    fn push(&mut self, f: Finding, caused_by: Vec<usize>) -> usize {
        self.list.push((f, caused_by));
        self.list.len() - 1
    }

    /// Sorted by start (then severity, kind, service, edge), numbered F1, F2...
    fn finish(self) -> Vec<Finding> {
        let mut order: Vec<usize> = (0..self.list.len()).collect();
        order.sort_by(|&x, &y| {
            let (a, b) = (&self.list[x].0, &self.list[y].0);
            (
                a.start_ns,
                std::cmp::Reverse(a.severity),
                &a.kind,
                &a.service,
                &a.edge,
            )
                .cmp(&(
                    b.start_ns,
                    std::cmp::Reverse(b.severity),
                    &b.kind,
                    &b.service,
                    &b.edge,
                ))
                .then(x.cmp(&y))
        });
        let mut id = vec![String::new(); self.list.len()];
        for (n, &i) in order.iter().enumerate() {
            id[i] = format!("F{}", n + 1);
        }
        let mut out = Vec::with_capacity(order.len());
        for &i in &order {
            let (f, by) = &self.list[i];
            let mut f = f.clone();
            f.id = id[i].clone();
            f.caused_by = by.iter().filter_map(|&j| id.get(j).cloned()).collect();
            out.push(f);
        }
        out
    }
}

/// Latency percentiles of a set of requests, ms.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
struct Lat {
    n: u64,
    errors: u64,
    p50: Option<f64>,
    p99: Option<f64>,
}

impl Lat {
    fn of<'r>(rows: impl Iterator<Item = RequestView<'r>>) -> Self {
        let mut v: Vec<u64> = Vec::new();
        let (mut n, mut errors) = (0, 0);
        for r in rows {
            n += 1;
            errors += u64::from(r.error);
            if let Some(l) = r.latency_ns {
                v.push(l);
            }
        }
        v.sort_unstable();
        let q = |q: f64| -> Option<f64> {
            if v.is_empty() {
                return None;
            }
            let rank = ((q * v.len() as f64).ceil() as usize).clamp(1, v.len());
            Some(v[rank - 1] as f64 / 1e6)
        };
        Lat {
            n,
            errors,
            p50: q(0.5),
            p99: q(0.99),
        }
    }

    fn rate(&self) -> f64 {
        if self.n == 0 {
            0.0
        } else {
            self.errors as f64 / self.n as f64
        }
    }

    fn text(&self) -> String {
        format!(
            "{} requests, {} errors ({:.1}%), p50 {}, p99 {}",
            self.n,
            self.errors,
            self.rate() * 100.0,
            crate::report::human_ms(self.p50),
            crate::report::human_ms(self.p99)
        )
    }
}

/// (requests, errors) per bucket, per edge (client, server).
type EdgeRequests<'a> = BTreeMap<(&'a str, &'a str), BTreeMap<u64, (u64, u64)>>;

/// Failed connects per cause, per bucket, per edge.
type EdgeFailures<'a> = BTreeMap<(&'a str, &'a str), BTreeMap<u64, BTreeMap<&'a str, u64>>>;

/// Detection context.
struct Cx<'a> {
    a: &'a Analysis,
    net: &'a NetFacts,
    cfg: &'a FindingsConfig,
    /// Requests per edge and bucket: (requests, errors).
    edge_buckets: EdgeRequests<'a>,
    /// Rows (in time order) by server and by client, so that a window's requests are found
    /// without a pass over all of them.
    by_server: BTreeMap<&'a str, Vec<u32>>,
    by_client: BTreeMap<&'a str, Vec<u32>>,
}

fn signal_name(sig: i32) -> String {
    let name = match sig {
        1 => "SIGHUP",
        2 => "SIGINT",
        3 => "SIGQUIT",
        6 => "SIGABRT",
        9 => "SIGKILL",
        11 => "SIGSEGV",
        15 => "SIGTERM",
        _ => "",
    };
    if name.is_empty() {
        format!("signal {sig}")
    } else {
        format!("{name} (signal {sig})")
    }
}

/// How a process ended, for people.
fn how(e: &collect::Exit) -> String {
    if e.oom {
        "OOM-killed".to_string()
    } else if e.signal != 0 {
        format!("killed by {}", signal_name(e.signal))
    } else {
        format!("exited with code {}", e.code)
    }
}

fn proc_label(p: &ProcFact) -> String {
    if p.comm.is_empty() {
        format!("{}/{}", p.node, p.pid)
    } else {
        format!("{}/{} {}", p.node, p.pid, p.comm)
    }
}

impl<'a> Cx<'a> {
    fn new(a: &'a Analysis, net: &'a NetFacts, cfg: &'a FindingsConfig) -> Self {
        let mut edge_buckets: EdgeRequests<'a> = BTreeMap::new();
        let mut by_server: BTreeMap<&str, Vec<u32>> = BTreeMap::new();
        let mut by_client: BTreeMap<&str, Vec<u32>> = BTreeMap::new();
        for (i, r) in a.requests.iter().enumerate() {
            let i = u32::try_from(i).unwrap_or(u32::MAX);
            by_server.entry(r.server).or_default().push(i);
            by_client.entry(r.client).or_default().push(i);
            let b = edge_buckets
                .entry((r.client, r.server))
                .or_default()
                .entry(net.bucket(r.ts_ns))
                .or_default();
            b.0 += 1;
            b.1 += u64::from(r.error);
        }
        Self {
            a,
            net,
            cfg,
            edge_buckets,
            by_server,
            by_client,
        }
    }

    /// The rows of `idx` (row numbers in time order) in `[from, to)`.
    fn slice<'s>(
        &'s self,
        idx: Option<&'s Vec<u32>>,
        from: u64,
        to: u64,
    ) -> impl Iterator<Item = (usize, RequestView<'a>)> + 's {
        let a: &'a Analysis = self.a;
        let t = &a.requests;
        let idx: &'s [u32] = idx.map_or(&[], Vec::as_slice);
        let ts = |i: &u32| t.rows.get(*i as usize).map_or(u64::MAX, |r| r.ts_ns);
        let lo = idx.partition_point(|i| ts(i) < from);
        let hi = idx.partition_point(|i| ts(i) < to).max(lo);
        idx[lo..hi]
            .iter()
            .filter_map(move |&i| t.get(i as usize).map(|r| (i as usize, r)))
    }

    /// Rows whose server is `s`, in `[from, to)`.
    fn of_server(
        &self,
        s: &str,
        from: u64,
        to: u64,
    ) -> impl Iterator<Item = (usize, RequestView<'a>)> + '_ {
        self.slice(self.by_server.get(s), from, to)
    }

    /// Rows whose client is `c`, in `[from, to)`.
    fn of_client(
        &self,
        c: &str,
        from: u64,
        to: u64,
    ) -> impl Iterator<Item = (usize, RequestView<'a>)> + '_ {
        self.slice(self.by_client.get(c), from, to)
    }

    /// `07:52:00.841 (+8.01 s)`.
    fn when(&self, ts: u64) -> String {
        let wall = format_wall(ts);
        format!(
            "{} (+{:.2} s)",
            wall.get(11..23).unwrap_or(&wall),
            ts.saturating_sub(self.a.window_start_ns) as f64 / 1e9
        )
    }

    fn rows(&self) -> impl Iterator<Item = (usize, RequestView<'a>)> + 'a {
        let t = &self.a.requests;
        (0..t.len()).filter_map(move |i| t.get(i).map(|r| (i, r)))
    }

    fn procs_of(&self, service: &str) -> impl Iterator<Item = &'a ProcFact> + 'a {
        let service = service.to_string();
        self.net
            .processes
            .iter()
            .filter(move |p| p.service == service)
    }

    /// Requests `server` served (rows where it is the server, failed connects excluded) in
    /// `[from, to)`.
    fn served(&self, server: &str, from: u64, to: u64) -> Lat {
        Lat::of(
            self.of_server(server, from, to)
                .map(|(_, r)| r)
                .filter(|r| !is_connect_failure(r)),
        )
    }

    /// The callers of `service` (clients of its edges, itself excluded), sorted.
    fn callers(&self, service: &str) -> BTreeSet<&'a str> {
        self.a
            .edges
            .iter()
            .filter(|e| e.server == service && e.client != service)
            .map(|e| e.client.as_str())
            .collect()
    }

    /// Before/during evidence of `service`'s served requests, and whether they got worse.
    fn served_change(&self, service: &str, from: u64, to: u64) -> (Lat, Lat, bool, bool) {
        let before = self.served(service, self.a.window_start_ns, from);
        let after = self.served(service, to, u64::MAX);
        let outside = Lat {
            n: before.n + after.n,
            errors: before.errors + after.errors,
            ..before
        };
        let during = self.served(service, from, to);
        let c = &self.cfg.errors;
        let errors_rose = during.errors >= c.min_errors
            && during.rate() >= c.min_rate
            && during.rate() >= c.ratio * outside.rate();
        let l = &self.cfg.latency;
        let latency_rose = match (during.p99, before.p99.or(after.p99)) {
            (Some(d), Some(b)) => d >= l.min_ms && d >= l.ratio * b,
            _ => false,
        };
        (before, during, errors_rose, latency_rose)
    }

    /// Served requests of `caller` in `[from, to)` that failed with a failed call of theirs
    /// (traces: a child row of theirs failed).
    fn failed_with_failed_call(&self, caller: &str, from: u64, to: u64) -> u64 {
        let t = &self.a.requests;
        let mut parents: BTreeSet<usize> = BTreeSet::new();
        for (i, r) in self.of_client(caller, from, to) {
            if r.error {
                if let Some(p) = t.parent_of(i) {
                    parents.insert(p);
                }
            }
        }
        parents
            .iter()
            .filter(|&&p| t.get(p).is_some_and(|r| r.error && r.server == caller))
            .count() as u64
    }

    /// Findings on the callers of `affected` (and theirs) whose served errors or latency rose
    /// in `[from, to)`, caused by finding `root`.
    fn chain(&self, out: &mut Out, root: usize, affected: &str, from: u64, to: u64) {
        let mut seen: BTreeSet<String> = BTreeSet::new();
        seen.insert(affected.to_string());
        let mut frontier: Vec<(String, usize)> = vec![(affected.to_string(), root)];
        let mut depth = 0;
        while let Some((svc, cause)) = frontier.pop() {
            depth += 1;
            if depth > 32 {
                break;
            }
            for caller in self.callers(&svc) {
                if !seen.insert(caller.to_string()) {
                    continue;
                }
                let (before, during, errors_rose, latency_rose) =
                    self.served_change(caller, from, to);
                if !errors_rose && !latency_rose {
                    continue;
                }
                let linked = self.failed_with_failed_call(caller, from, to);
                let (kind, what) = if errors_rose {
                    (
                        "upstream_errors",
                        format!(
                            "{caller} failed {} of {} requests ({:.1}%) while {svc} was failing",
                            during.errors,
                            during.n,
                            during.rate() * 100.0
                        ),
                    )
                } else {
                    (
                        "upstream_latency",
                        format!(
                            "{caller} slowed down: p99 {} (before {}) while {svc} was slow",
                            crate::report::human_ms(during.p99),
                            crate::report::human_ms(before.p99)
                        ),
                    )
                };
                let mut evidence = vec![
                    format!("served before: {}", before.text()),
                    format!("served during: {}", during.text()),
                ];
                if linked > 0 {
                    evidence.push(format!(
                        "{linked} of its failed requests made a call that failed (traces)"
                    ));
                }
                let samples = self.sample_rows(
                    self.of_server(caller, from, to),
                    |r| r.error || !errors_rose,
                    !errors_rose,
                );
                let f = Finding {
                    start_ns: from,
                    end_ns: to,
                    severity: if errors_rose {
                        Severity::Warning
                    } else {
                        Severity::Info
                    },
                    kind: kind.to_string(),
                    service: caller.to_string(),
                    summary: what,
                    likely_cause: format!("its calls to {svc} (see the finding it follows)"),
                    evidence,
                    sample_requests: samples,
                    ..Default::default()
                };
                let i = out.push(f, vec![cause]);
                out.explained.push((caller.to_string(), from, to));
                frontier.push((caller.to_string(), i));
            }
        }
    }

    /// A few rows in `[from, to)` matching `keep`: the first ones, or the slowest.
    fn sample_rows<'r>(
        &self,
        rows: impl Iterator<Item = (usize, RequestView<'r>)>,
        keep: impl Fn(&RequestView<'_>) -> bool,
        slowest: bool,
    ) -> Vec<usize> {
        let mut v: Vec<(usize, u64)> = rows
            .filter(|(_, r)| keep(r))
            .map(|(i, r)| (i, r.latency_ns.unwrap_or(0)))
            .collect();
        if slowest {
            v.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
            v.truncate(SAMPLES);
            v.sort_unstable();
        } else {
            // spread over the window: first, then evenly
            let n = v.len();
            if n > SAMPLES {
                v = (0..SAMPLES).map(|k| v[k * n / SAMPLES]).collect();
            }
        }
        v.into_iter().map(|(i, _)| i).collect()
    }

    // ---------------------------------------------------------------------------------------
    // Connection failures

    fn connection_failures(&self, out: &mut Out) {
        let mut by_server: BTreeMap<&str, Vec<(usize, RequestView<'a>)>> = BTreeMap::new();
        for (i, r) in self.rows() {
            if is_connect_failure(&r) {
                by_server.entry(r.server).or_default().push((i, r));
            }
        }
        let gap = (self.cfg.episode_gap_s * 1e9) as u64;
        for (server, fails) in by_server {
            let mut start = 0;
            for k in 1..=fails.len() {
                let split = k == fails.len() || fails[k].1.ts_ns - fails[k - 1].1.ts_ns > gap;
                if split {
                    self.connection_episode(out, server, &fails[start..k]);
                    start = k;
                }
            }
        }
    }

    fn connection_episode(&self, out: &mut Out, server: &str, fails: &[(usize, RequestView<'a>)]) {
        let cfg = &self.cfg.connection_failures;
        let n = fails.len() as u64;
        if n < cfg.min || fails.is_empty() {
            return;
        }
        let start = fails[0].1.ts_ns;
        let end = fails[fails.len() - 1].1.ts_ns;
        let mut causes: BTreeMap<&str, u64> = BTreeMap::new();
        let mut callers: BTreeMap<&str, u64> = BTreeMap::new();
        for (_, r) in fails {
            *causes.entry(r.status).or_default() += 1;
            *callers.entry(r.client).or_default() += 1;
        }
        let list = |m: &BTreeMap<&str, u64>| {
            m.iter()
                .map(|(k, v)| format!("{k} {v}"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let mut evidence = vec![format!(
            "{n} failed connects from {} to {} ({}) between {} and {}",
            callers
                .iter()
                .map(|(k, v)| format!("{k} ({v})"))
                .collect::<Vec<_>>()
                .join(", "),
            server,
            list(&causes),
            self.when(start),
            self.when(end)
        )];
        // The server's processes: exits before the episode, starts after.
        let procs: Vec<&ProcFact> = self.procs_of(server).collect();
        let exit = procs
            .iter()
            .filter_map(|p| p.life.exit.map(|e| (e, *p)))
            .filter(|(e, _)| e.ts <= start.saturating_add(S) && e.ts + 600 * S >= start)
            .max_by_key(|(e, p)| (e.ts, p.pid));
        let restart = procs
            .iter()
            .filter_map(|p| {
                let t = p.life.listen.or(p.life.exec)?;
                let after = exit.map_or(start, |(e, _)| e.ts);
                (t >= after && t <= end.saturating_add(gap_ns(self.cfg))).then_some((t, *p))
            })
            .min_by_key(|(t, p)| (*t, p.pid));
        let mut processes = Vec::new();
        let mut cited = Vec::new();
        let refused = causes.contains_key("ECONNREFUSED");
        let timed_out = causes.contains_key("ETIMEDOUT");
        let mut cause = match exit {
            Some((e, p)) => {
                processes.push(proc_label(p));
                cited.push((p.service.clone(), p.pid));
                evidence.push(format!(
                    "{server} process {} {} at {}",
                    proc_label(p),
                    how(&e),
                    self.when(e.ts)
                ));
                format!(
                    "{server} was not listening: its process exited ({}) at {}",
                    how(&e),
                    self.when(e.ts)
                )
            }
            None if procs.is_empty() => {
                if timed_out && !refused {
                    format!(
                        "{server} did not answer the handshake: no captured process serves it \
                         (host down, firewall drop or packet loss)"
                    )
                } else {
                    format!(
                        "nothing was listening on {server}: no captured process serves it \
                         (never listening, or not captured)"
                    )
                }
            }
            None if !procs
                .iter()
                .any(|p| p.life.listen.is_some_and(|t| t <= start))
                && procs.iter().all(|p| p.life.listen.is_some()) =>
            {
                format!("{server} was not listening yet: its processes listened only later")
            }
            None if refused => format!(
                "{server}'s processes were running but refused: its port was closed or its \
                 listen backlog overflowed"
            ),
            None if timed_out => format!(
                "{server}'s processes were running but the handshake timed out: accept queue \
                 full, firewall drop or packet loss"
            ),
            None => format!(
                "{server} reset connections as they opened: accepted by the kernel, never read \
                 (going down or overloaded)"
            ),
        };
        if let Some((t, p)) = restart {
            processes.push(proc_label(p));
            cited.push((p.service.clone(), p.pid));
            let what = if p.life.listen == Some(t) {
                "listening again"
            } else {
                "started again"
            };
            evidence.push(format!(
                "{server} process {} {what} at {}",
                proc_label(p),
                self.when(t)
            ));
            cause.push_str(&format!("; {what} at {}", self.when(t)));
        } else if exit.is_some() {
            cause.push_str("; not restarted within the episode");
        }
        // Resets the exit caused on the callers' open connections.
        let resets: u64 = callers
            .keys()
            .map(|c| {
                self.net
                    .sum(c, server, start.saturating_sub(2 * S), start + S, |b| {
                        b.resets_to_client
                    })
            })
            .sum();
        if resets > 0 {
            evidence.push(format!(
                "{resets} of the callers' open connections to {server} were reset as it went down"
            ));
        }
        // The callers' errors that followed.
        let to = end.saturating_add(S);
        let mut affected = Vec::new();
        for c in callers.keys() {
            let (before, during, errors_rose, latency_rose) = self.served_change(c, start, to);
            if during.n == 0 {
                continue;
            }
            let linked = self.failed_with_failed_call(c, start, to);
            evidence.push(format!(
                "{c} (caller) served during: {}; before: {}{}",
                during.text(),
                before.text(),
                if linked > 0 {
                    format!("; {linked} of its failed requests had a failed call (traces)")
                } else {
                    String::new()
                }
            ));
            if errors_rose || latency_rose {
                affected.push((c.to_string(), during));
            }
        }
        let mut samples: Vec<usize> = fails.iter().take(2).map(|(i, _)| *i).collect();
        for (c, _) in &affected {
            samples.extend(
                self.sample_rows(self.of_server(c, start, to), |r| r.error, false)
                    .into_iter()
                    .take(2),
            );
        }
        let severity = if n >= cfg.critical {
            Severity::Critical
        } else {
            Severity::Warning
        };
        let f = Finding {
            start_ns: start,
            end_ns: end,
            severity,
            kind: "connection_failures".into(),
            service: server.to_string(),
            edge: if callers.len() == 1 {
                format!(
                    "{} -> {server}",
                    callers.keys().next().copied().unwrap_or("")
                )
            } else {
                String::new()
            },
            processes,
            summary: format!(
                "{n} connections to {server} failed ({}) over {:.1} s{}",
                list(&causes),
                (end - start) as f64 / 1e9,
                affected
                    .iter()
                    .map(|(c, d)| format!(
                        "; {c} failed {} of {} requests meanwhile",
                        d.errors, d.n
                    ))
                    .collect::<String>()
            ),
            likely_cause: cause,
            evidence,
            sample_requests: samples,
            ..Default::default()
        };
        let i = out.push(f, Vec::new());
        out.cited.extend(cited);
        for (c, _) in affected {
            out.explained.push((c.clone(), start, to));
            self.chain(out, i, &c, start, to);
        }
    }

    // ---------------------------------------------------------------------------------------
    // Retransmits

    fn retransmits(&self, out: &mut Out) {
        let c = &self.cfg.retransmits;
        for ((client, server), buckets) in &self.net.edges {
            let reqs = self.edge_buckets.get(&(client.as_str(), server.as_str()));
            let anomalous: Vec<u64> = buckets
                .iter()
                .filter(|(b, e)| {
                    let n = reqs.and_then(|m| m.get(b)).map_or(0, |x| x.0);
                    e.retransmits >= c.min_per_bucket
                        && e.retransmits as f64 >= c.min_rate * n as f64
                })
                .map(|(b, _)| *b)
                .collect();
            let mut windows: Vec<(u64, u64)> = Vec::new();
            for b in anomalous {
                match windows.last_mut() {
                    Some(w) if b <= w.1 + 1 + c.gap_buckets => w.1 = b,
                    _ => windows.push((b, b)),
                }
            }
            for (first, last) in windows {
                self.retransmit_window(out, client, server, first, last);
            }
        }
    }

    fn retransmit_window(&self, out: &mut Out, client: &str, server: &str, first: u64, last: u64) {
        let net = self.net;
        let buckets = match net.edges.get(&(client.to_string(), server.to_string())) {
            Some(b) => b,
            None => return,
        };
        let inside = |b: &u64| *b >= first && *b <= last;
        let total: u64 = buckets
            .iter()
            .filter(|(b, _)| inside(b))
            .map(|(_, e)| e.retransmits)
            .sum();
        if total < self.cfg.retransmits.min_total {
            return;
        }
        let closing: u64 = buckets
            .iter()
            .filter(|(b, _)| inside(b))
            .map(|(_, e)| e.retransmits_closing)
            .sum();
        let by_server: u64 = buckets
            .iter()
            .filter(|(b, _)| inside(b))
            .map(|(_, e)| e.retransmits_by_server)
            .sum();
        let by_client = (total + closing).saturating_sub(by_server);
        let synacks: u64 = buckets
            .iter()
            .filter(|(b, _)| inside(b))
            .map(|(_, e)| e.synack_retransmits)
            .sum();
        let outside: u64 = buckets
            .iter()
            .filter(|(b, _)| !inside(b))
            .map(|(_, e)| e.retransmits)
            .sum();
        let nb = net.buckets(self.a.window_end_ns);
        let width = last - first + 1;
        let secs = |buckets: u64| (buckets * net.bucket_ns) as f64 / 1e9;
        let rate_in = total as f64 / secs(width).max(1e-9);
        let rate_out = outside as f64 / secs(nb.saturating_sub(width)).max(1e-9);
        let start = net.start_ns + first * net.bucket_ns;
        let end = (net.start_ns + (last + 1) * net.bucket_ns).min(self.a.window_end_ns.max(start));
        let mut rtt_in = Hist::default();
        let mut rtt_out = Hist::default();
        for (b, e) in buckets {
            if inside(b) {
                rtt_in.merge(&e.rtt);
            } else {
                rtt_out.merge(&e.rtt);
            }
        }
        let on_edge = |r: &RequestView<'_>| r.client == client && r.server == server;
        let before = Lat::of(
            self.of_client(client, 0, start)
                .map(|(_, r)| r)
                .filter(on_edge),
        );
        let during = Lat::of(
            self.of_client(client, start, end)
                .map(|(_, r)| r)
                .filter(on_edge),
        );
        let us = |v: Option<u32>| {
            v.map_or("–".to_string(), |x| {
                crate::report::human_ms(Some(f64::from(x) / 1000.0))
            })
        };
        let mut evidence = vec![
            format!(
                "{total} data segments retransmitted on {client} -> {server} in {:.0} s \
                 ({rate_in:.1}/s; {rate_out:.2}/s outside the window){}",
                secs(width),
                if closing > 0 {
                    format!(", and {closing} FINs sent again")
                } else {
                    String::new()
                }
            ),
            format!(
                "sent again by {client}: {by_client} (its segments or {server}'s ACKs lost); \
                 by {server}: {by_server} (its segments or {client}'s ACKs lost)"
            ),
            format!("edge requests during: {}", during.text()),
            format!("edge requests before: {}", before.text()),
        ];
        if synacks > 0 {
            evidence.push(format!(
                "{synacks} of them SYN-ACKs {server} sent again: handshakes it had to repeat, \
                 each delaying its connect by at least 1 s"
            ));
        }
        if rtt_in.count() > 0 {
            evidence.push(format!(
                "RTT (client's srtt) p99 during {}, outside {}",
                us(rtt_in.quantile(0.99)),
                us(rtt_out.quantile(0.99))
            ));
        }
        let e = &self.cfg.errors;
        let failing = during.errors >= e.min_errors && during.rate() >= e.min_rate;
        let ratio = self.cfg.latency.ratio;
        let slower = match (during.p99, before.p99) {
            (Some(d), Some(b)) => d >= ratio * b && d >= self.cfg.latency.min_ms,
            _ => false,
        };
        let rtt_rose = match (rtt_in.quantile(0.99), rtt_out.quantile(0.99)) {
            (Some(d), Some(o)) => f64::from(d) >= ratio * f64::from(o),
            _ => false,
        };
        // Retransmits that neither slowed nor failed the edge's requests nor raised its RTT
        // are worth knowing, not a problem.
        let severity = if failing {
            Severity::Critical
        } else if slower || rtt_rose {
            Severity::Warning
        } else {
            Severity::Info
        };
        let (cb, cd, cerr, clat) = self.served_change(client, start, end);
        if cd.n > 0 {
            evidence.push(format!(
                "{client} served during: {}; before: {}",
                cd.text(),
                cb.text()
            ));
        }
        let f = Finding {
            start_ns: start,
            end_ns: end,
            severity,
            kind: "retransmits".into(),
            service: server.to_string(),
            edge: format!("{client} -> {server}"),
            summary: format!(
                "{total} TCP retransmits on {client} -> {server} ({rate_in:.1}/s){}",
                if slower {
                    format!(
                        "; requests p99 {} (before {})",
                        crate::report::human_ms(during.p99),
                        crate::report::human_ms(before.p99)
                    )
                } else if severity == Severity::Info {
                    "; no visible effect on the edge's requests".to_string()
                } else {
                    String::new()
                }
            ),
            likely_cause: if synacks * 2 > total {
                format!(
                    "{server}'s accept queue full (its listen backlog: the kernel drops the \
                     handshake's last ACK and sends the SYN-ACK again) or {client}'s ACKs lost: \
                     {synacks} of {total} retransmits are repeated handshakes, each delaying a \
                     connect by at least 1 s"
                )
            } else {
                format!(
                    "packet loss or congestion between {client} and {server}: segments were \
                     lost and sent again (each loss costs the request at least one \
                     retransmission timeout)"
                )
            },
            evidence,
            sample_requests: self.sample_rows(self.of_client(client, start, end), on_edge, true),
            ..Default::default()
        };
        let i = out.push(f, Vec::new());
        if cerr || clat {
            // The client's own served requests are in the evidence; the chain goes on above.
            out.explained.push((client.to_string(), start, end));
            self.chain(out, i, client, start, end);
        }
    }

    // ---------------------------------------------------------------------------------------
    // Zero windows

    /// A reader that stopped reading: the socket sampler found an edge's sockets unable to
    /// send because the other end advertised a zero window (its receive buffer full).
    fn zero_windows(&self, out: &mut Out) {
        let net = self.net;
        for ((client, server), buckets) in &net.edges {
            let with: Vec<u64> = buckets
                .iter()
                .filter(|(_, e)| e.zero_window_client + e.zero_window_server > 0)
                .map(|(b, _)| *b)
                .collect();
            let mut windows: Vec<(u64, u64)> = Vec::new();
            for b in with {
                match windows.last_mut() {
                    Some(w) if b <= w.1 + 3 => w.1 = b,
                    _ => windows.push((b, b)),
                }
            }
            for (first, last) in windows {
                let inside = |b: &u64| *b >= first && *b <= last;
                let (mut at_client, mut at_server) = (0u64, 0u64);
                for (_, e) in buckets.iter().filter(|(b, _)| inside(b)) {
                    at_client += e.zero_window_client;
                    at_server += e.zero_window_server;
                }
                let start = net.start_ns + first * net.bucket_ns;
                let end = (net.start_ns + (last + 1) * net.bucket_ns)
                    .min(self.a.window_end_ns.max(start));
                let on_edge = |r: &RequestView<'_>| r.client == client && r.server == server;
                let during = Lat::of(
                    self.of_client(client, start, end)
                        .map(|(_, r)| r)
                        .filter(on_edge),
                );
                let before = Lat::of(
                    self.of_client(client, 0, start)
                        .map(|(_, r)| r)
                        .filter(on_edge),
                );
                // The end that stopped reading is the other one of the end that could not send.
                let (reader, blocked, what) = if at_client >= at_server {
                    (server, client, "requests")
                } else {
                    (client, server, "responses")
                };
                let passes = at_client.max(at_server);
                let mut evidence = vec![
                    format!(
                        "socket-sampler passes that found {client} unable to send (zero window \
                         from {server}): {at_client}; {server} unable to send (zero window \
                         from {client}): {at_server}"
                    ),
                    format!("edge requests during: {}", during.text()),
                    format!("edge requests before: {}", before.text()),
                ];
                if at_client > 0 && at_server > 0 {
                    evidence.push("both ends stopped reading at times".to_string());
                }
                let f = Finding {
                    start_ns: start,
                    end_ns: end,
                    severity: if passes >= 3 {
                        Severity::Warning
                    } else {
                        Severity::Info
                    },
                    kind: "zero_window".into(),
                    service: reader.to_string(),
                    edge: format!("{client} -> {server}"),
                    summary: format!(
                        "{reader} stopped reading {what} from {blocked}: a zero window on \
                         {client} -> {server} ({passes} sampler passes)"
                    ),
                    likely_cause: format!(
                        "{reader}'s receive buffers on the edge are full: its application \
                         does not read them (stuck, blocked on something else, or slower than \
                         {blocked} writes), so {blocked} cannot send and waits"
                    ),
                    evidence,
                    sample_requests: self.sample_rows(
                        self.of_client(client, start, end),
                        on_edge,
                        true,
                    ),
                    ..Default::default()
                };
                out.push(f, Vec::new());
            }
        }
    }

    // ---------------------------------------------------------------------------------------
    // Resets

    fn resets(&self, out: &mut Out) {
        let net = self.net;
        for ((client, server), buckets) in &net.edges {
            let with: Vec<(u64, &EdgeBucket)> = buckets
                .iter()
                .filter(|(_, e)| e.resets_to_client + e.resets_to_server > 0)
                .map(|(b, e)| (*b, e))
                .collect();
            let mut windows: Vec<(u64, u64)> = Vec::new();
            for (b, _) in &with {
                match windows.last_mut() {
                    Some(w) if *b <= w.1 + 3 => w.1 = *b,
                    _ => windows.push((*b, *b)),
                }
            }
            for (first, last) in windows {
                let (mut to_client, mut to_server) = (0, 0);
                for (_, e) in with.iter().filter(|(b, _)| *b >= first && *b <= last) {
                    to_client += e.resets_to_client;
                    to_server += e.resets_to_server;
                }
                if to_client + to_server < self.cfg.resets.min {
                    continue;
                }
                let start = net.start_ns + first * net.bucket_ns;
                let end = (net.start_ns + (last + 1) * net.bucket_ns)
                    .min(self.a.window_end_ns.max(start));
                // Already the evidence of a connection failure of the same server?
                let explained = out.list.iter().any(|(f, _)| {
                    f.kind == "connection_failures"
                        && f.service == *server
                        && f.start_ns <= end + 2 * S
                        && f.end_ns + 2 * S >= start
                });
                if explained && to_server == 0 {
                    continue;
                }
                let resetter = if to_client >= to_server {
                    server
                } else {
                    client
                };
                let victim = if to_client >= to_server {
                    client
                } else {
                    server
                };
                let exit = self
                    .procs_of(resetter)
                    .filter_map(|p| p.life.exit.map(|e| (e, p)))
                    .filter(|(e, _)| e.ts + 2 * S >= start && e.ts <= end)
                    .min_by_key(|(e, p)| (e.ts, p.pid));
                let cut: Vec<usize> = self
                    .of_client(client, start.saturating_sub(5 * S), end)
                    .filter(|(_, r)| {
                        r.server == server.as_str()
                            && (r.status == crate::engine::NO_RESPONSE_RESET
                                || r.status == crate::engine::INCOMPLETE_RESPONSE_RESET)
                    })
                    .map(|(i, _)| i)
                    .collect();
                let mut evidence = vec![format!(
                    "resets received by {client}: {to_client}; by {server}: {to_server}"
                )];
                let mut processes = Vec::new();
                let cause = match exit {
                    Some((e, p)) => {
                        processes.push(proc_label(p));
                        evidence.push(format!(
                            "{resetter} process {} {} at {}",
                            proc_label(p),
                            how(&e),
                            self.when(e.ts)
                        ));
                        format!(
                            "{resetter} reset {victim}'s connections after its process {} at {}",
                            how(&e),
                            self.when(e.ts)
                        )
                    }
                    None => format!(
                        "{resetter} aborted connections of {victim} (a closed socket with unread \
                         data, SO_LINGER 0, or a segment for a connection it no longer knew)"
                    ),
                };
                if !cut.is_empty() {
                    evidence.push(format!(
                        "{} requests cut off by the resets (no response, or an incomplete one)",
                        cut.len()
                    ));
                }
                let f = Finding {
                    start_ns: start,
                    end_ns: end,
                    severity: if cut.is_empty() {
                        Severity::Info
                    } else {
                        Severity::Warning
                    },
                    kind: "resets".into(),
                    service: resetter.to_string(),
                    edge: format!("{client} -> {server}"),
                    processes,
                    summary: format!(
                        "{} TCP resets on {client} -> {server}, sent by {resetter}",
                        to_client + to_server
                    ),
                    likely_cause: cause,
                    evidence,
                    sample_requests: cut.into_iter().take(SAMPLES).collect(),
                    ..Default::default()
                };
                out.push(f, Vec::new());
            }
        }
    }

    // ---------------------------------------------------------------------------------------
    // Errors with no finding below them

    fn errors(&self, out: &mut Out) {
        let c = &self.cfg.errors;
        let net = self.net;
        let mut by_service: BTreeMap<&str, BTreeMap<u64, (u64, u64)>> = BTreeMap::new();
        for (_, r) in self.rows() {
            if is_connect_failure(&r) || r.protocol == "dns" {
                continue;
            }
            let b = by_service
                .entry(r.server)
                .or_default()
                .entry(net.bucket(r.ts_ns))
                .or_default();
            b.0 += 1;
            b.1 += u64::from(r.error);
        }
        let gap = (gap_ns(self.cfg) / net.bucket_ns.max(1)).max(1);
        // Candidates; those whose failed requests made failed calls last, so that the
        // service at the bottom of a chain is the root and the others follow from it.
        let mut candidates: Vec<(bool, &str, u64, u64)> = Vec::new();
        for (service, buckets) in by_service {
            let mut windows: Vec<(u64, u64)> = Vec::new();
            for (&b, &(n, e)) in &buckets {
                if e < 2 || (e as f64) < c.min_rate * n as f64 {
                    continue;
                }
                match windows.last_mut() {
                    Some(w) if b <= w.1 + gap => w.1 = b,
                    _ => windows.push((b, b)),
                }
            }
            for (first, last) in windows {
                let start = net.start_ns + first * net.bucket_ns;
                let end = (net.start_ns + (last + 1) * net.bucket_ns)
                    .min(self.a.window_end_ns.max(start));
                let calls_failed = self.failed_with_failed_call(service, start, end) > 0;
                candidates.push((calls_failed, service, start, end));
            }
        }
        candidates.sort();
        for (_, service, start, end) in candidates {
            let explained = out
                .explained
                .iter()
                .any(|(s, from, to)| s == service && *from <= end && *to >= start);
            if explained {
                continue;
            }
            let (before, during, errors_rose, _) = self.served_change(service, start, end);
            if !errors_rose {
                continue;
            }
            self.errors_window(out, service, start, end, before, during);
        }
    }

    fn errors_window(
        &self,
        out: &mut Out,
        service: &str,
        start: u64,
        end: u64,
        before: Lat,
        during: Lat,
    ) {
        let t = &self.a.requests;
        let mut statuses: BTreeMap<&str, u64> = BTreeMap::new();
        let mut failed_rows: BTreeSet<usize> = BTreeSet::new();
        for (i, r) in self.of_server(service, start, end) {
            if r.error && !is_connect_failure(&r) {
                *statuses.entry(r.status).or_default() += 1;
                failed_rows.insert(i);
            }
        }
        // Their failed calls (traces), by callee.
        let mut callees: BTreeMap<&str, BTreeSet<usize>> = BTreeMap::new();
        for (i, r) in self.of_client(service, start, end) {
            if r.error {
                if let Some(p) = t.parent_of(i).filter(|p| failed_rows.contains(p)) {
                    callees.entry(r.server).or_default().insert(p);
                }
            }
        }
        let mut top: Vec<(&str, u64)> = statuses.into_iter().collect();
        top.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
        let top_text = top
            .iter()
            .take(3)
            .map(|(s, n)| format!("{s} ×{n}"))
            .collect::<Vec<_>>()
            .join(", ");
        let callee = callees
            .iter()
            .map(|(s, v)| (v.len(), *s))
            .max_by(|a, b| a.0.cmp(&b.0).then(b.1.cmp(a.1)));
        let mut evidence = vec![
            format!("served during: {}", during.text()),
            format!("served before: {}", before.text()),
            format!("statuses: {top_text}"),
        ];
        let cause = match callee {
            Some((k, callee)) if k as u64 * 2 >= during.errors => {
                evidence.push(format!(
                    "{k} of its {} failed requests had a failed call to {callee} (traces)",
                    during.errors
                ));
                format!("its calls to {callee} failed ({k} of its failed requests; traces)")
            }
            _ => format!(
                "{service} itself: its failed requests made no failed call the capture saw \
                 (statuses {top_text})"
            ),
        };
        let severity = if during.rate() >= crate::stats::ERROR_RATE_CRITICAL {
            Severity::Critical
        } else {
            Severity::Warning
        };
        let f = Finding {
            start_ns: start,
            end_ns: end,
            severity,
            kind: "errors".into(),
            service: service.to_string(),
            summary: format!(
                "{service} failed {} of {} requests ({:.1}%; {})",
                during.errors,
                during.n,
                during.rate() * 100.0,
                if before.n == 0 {
                    "from the capture's start".to_string()
                } else {
                    format!("{:.1}% before", before.rate() * 100.0)
                }
            ),
            likely_cause: cause,
            evidence,
            sample_requests: self.sample_rows(
                self.of_server(service, start, end),
                |r| r.error && !is_connect_failure(r),
                false,
            ),
            ..Default::default()
        };
        let i = out.push(f, Vec::new());
        out.explained.push((service.to_string(), start, end));
        self.chain(out, i, service, start, end);
    }

    // ---------------------------------------------------------------------------------------
    // DNS

    fn dns_stats(&self) -> Vec<DnsStats> {
        let mut m: BTreeMap<(&str, &str), (DnsStats, Vec<u64>)> = BTreeMap::new();
        for (_, r) in self.rows() {
            if r.protocol != "dns" {
                continue;
            }
            let (d, lat) = m.entry((r.server, r.target)).or_insert_with(|| {
                (
                    DnsStats {
                        resolver: r.server.to_string(),
                        name: r.target.to_string(),
                        first_ns: r.ts_ns,
                        ..Default::default()
                    },
                    Vec::new(),
                )
            });
            d.queries += 1;
            d.last_ns = r.ts_ns;
            if r.status == "NXDOMAIN" {
                d.nxdomain += 1;
            } else if r.status == crate::engine::DNS_NO_RESPONSE {
                d.timeouts += 1;
            } else if r.error {
                d.server_errors += 1;
            }
            if let Some(l) = r.latency_ns {
                lat.push(l);
            }
        }
        m.into_values()
            .map(|(mut d, mut lat)| {
                lat.sort_unstable();
                let q = |q: f64| {
                    (!lat.is_empty()).then(|| {
                        let rank = ((q * lat.len() as f64).ceil() as usize).clamp(1, lat.len());
                        lat[rank - 1] as f64 / 1e6
                    })
                };
                d.p50_ms = q(0.5);
                d.p95_ms = q(0.95);
                d
            })
            .collect()
    }

    fn dns_findings(&self, dns: &[DnsStats], out: &mut Out) {
        let c = &self.cfg.dns;
        for d in dns {
            let mut what = Vec::new();
            let mut severity = Severity::Warning;
            if d.nxdomain >= c.nxdomain_min && d.nxdomain > 0 {
                what.push(format!("{} NXDOMAIN", d.nxdomain));
            }
            if d.server_errors >= c.server_errors_min && d.server_errors > 0 {
                what.push(format!("{} server errors", d.server_errors));
                severity = Severity::Critical;
            }
            if d.timeouts >= c.timeouts_min && d.timeouts > 0 {
                what.push(format!("{} unanswered", d.timeouts));
                severity = Severity::Critical;
            }
            let slow = d.p95_ms.is_some_and(|p| p > c.p95_ms);
            if slow {
                what.push(format!(
                    "p95 {} > {} ms",
                    crate::report::human_ms(d.p95_ms),
                    c.p95_ms
                ));
            }
            if what.is_empty() {
                continue;
            }
            let cause = if d.timeouts > 0 || d.server_errors > 0 {
                format!("the resolver {} failed or did not answer", d.resolver)
            } else if d.nxdomain > 0 {
                format!(
                    "the name {} does not exist (a typo, a missing record, or search domains \
                     tried first)",
                    d.name
                )
            } else {
                format!("slow resolution by {}", d.resolver)
            };
            let (resolver, name) = (d.resolver.as_str(), d.name.as_str());
            let samples = self.sample_rows(
                self.of_server(resolver, d.first_ns, d.last_ns + 1),
                |r| {
                    r.protocol == "dns"
                        && r.target == name
                        && (r.error || r.status == "NXDOMAIN" || slow)
                },
                slow,
            );
            out.push(
                Finding {
                    start_ns: d.first_ns,
                    end_ns: d.last_ns,
                    severity,
                    kind: "dns".into(),
                    service: d.resolver.clone(),
                    summary: format!(
                        "DNS {} at {}: {} of {} queries",
                        d.name,
                        d.resolver,
                        what.join(", "),
                        d.queries
                    ),
                    likely_cause: cause,
                    evidence: vec![format!(
                        "{} queries, {} NXDOMAIN, {} server errors, {} unanswered, p50 {}, p95 {}",
                        d.queries,
                        d.nxdomain,
                        d.server_errors,
                        d.timeouts,
                        crate::report::human_ms(d.p50_ms),
                        crate::report::human_ms(d.p95_ms)
                    )],
                    sample_requests: samples,
                    ..Default::default()
                },
                Vec::new(),
            );
        }
    }

    // ---------------------------------------------------------------------------------------
    // Processes: OOM kills and restarts

    fn processes(&self, out: &mut Out) {
        let mut by_service: BTreeMap<&str, Vec<&ProcFact>> = BTreeMap::new();
        for p in &self.net.processes {
            by_service.entry(p.service.as_str()).or_default().push(p);
        }
        for (service, procs) in by_service {
            let mut ooms = 0;
            for p in &procs {
                let oom_at = p.life.exit.filter(|e| e.oom).map(|e| e.ts).or(p.life.oom);
                if let Some(t) = oom_at {
                    ooms += 1;
                    if ooms < self.cfg.oom_kills_min {
                        continue;
                    }
                    out.push(
                        Finding {
                            start_ns: t,
                            end_ns: t,
                            severity: Severity::Critical,
                            kind: "oom_kill".into(),
                            service: service.to_string(),
                            processes: vec![proc_label(p)],
                            summary: format!("{service} process {} was OOM-killed", proc_label(p)),
                            likely_cause: "its memory reached its cgroup's limit or the node ran \
                                           out of memory: the kernel's OOM killer chose it"
                                .into(),
                            evidence: std::iter::once(format!("OOM kill at {}", self.when(t)))
                                .chain(self.oom_growth(service, p.pid))
                                .collect(),
                            ..Default::default()
                        },
                        out.memory_causes
                            .get(&(service.to_string(), p.pid))
                            .copied()
                            .into_iter()
                            .collect(),
                    );
                }
            }
            // Abnormal exits (signal, non-zero code, OOM) and whether another process of the
            // service came up after.
            let mut restarts = Vec::new();
            let mut exits = Vec::new();
            for p in &procs {
                let Some(e) = p.life.exit else { continue };
                if e.signal == 0 && e.code == 0 && !e.oom {
                    continue;
                }
                let next = procs
                    .iter()
                    .filter_map(|q| q.life.listen.or(q.life.exec).map(|t| (t, *q)))
                    .filter(|(t, q)| *t >= e.ts && q.pid != p.pid)
                    .min_by_key(|(t, q)| (*t, q.pid));
                if out.cited.contains(&(p.service.clone(), p.pid)) {
                    continue;
                }
                match next {
                    Some((t, q)) => restarts.push((e, *p, t, q)),
                    None => exits.push((e, *p)),
                }
            }
            if !restarts.is_empty() {
                let n = restarts.len() as u64;
                let start = restarts.iter().map(|r| r.0.ts).min().unwrap_or(0);
                let end = restarts.iter().map(|r| r.2).max().unwrap_or(start);
                out.push(
                    Finding {
                        start_ns: start,
                        end_ns: end,
                        severity: if n >= self.cfg.restarts_min {
                            Severity::Warning
                        } else {
                            Severity::Info
                        },
                        kind: "restart".into(),
                        service: service.to_string(),
                        processes: restarts
                            .iter()
                            .flat_map(|r| [proc_label(r.1), proc_label(r.3)])
                            .collect(),
                        summary: format!("{service} restarted {n} time(s)"),
                        likely_cause: restarts
                            .first()
                            .map(|r| format!("its process {}", how(&r.0)))
                            .unwrap_or_default(),
                        evidence: restarts
                            .iter()
                            .map(|(e, p, t, q)| {
                                format!(
                                    "{} {} at {}; {} up at {}",
                                    proc_label(p),
                                    how(e),
                                    self.when(e.ts),
                                    proc_label(q),
                                    self.when(*t)
                                )
                            })
                            .collect(),
                        ..Default::default()
                    },
                    Vec::new(),
                );
            }
            for (e, p) in exits {
                if e.oom {
                    continue; // its own finding above
                }
                out.push(
                    Finding {
                        start_ns: e.ts,
                        end_ns: e.ts,
                        severity: Severity::Info,
                        kind: "process_exit".into(),
                        service: service.to_string(),
                        processes: vec![proc_label(p)],
                        summary: format!("{service} process {} {}", proc_label(p), how(&e)),
                        likely_cause: "stopped (a signal) or failed (a non-zero exit code); not \
                                       started again in the capture"
                            .into(),
                        evidence: vec![format!("exit at {}", self.when(e.ts))],
                        ..Default::default()
                    },
                    Vec::new(),
                );
            }
        }
    }

    // ---------------------------------------------------------------------------------------
    // tcp.csv

    fn tcp_points(&self) -> Vec<TcpPoint> {
        let net = self.net;
        // Failed connects per edge and bucket, by cause.
        let mut failed: EdgeFailures<'_> = BTreeMap::new();
        for (_, r) in self.rows() {
            if is_connect_failure(&r) {
                *failed
                    .entry((r.client, r.server))
                    .or_default()
                    .entry(net.bucket(r.ts_ns))
                    .or_default()
                    .entry(r.status)
                    .or_default() += 1;
            }
        }
        let mut keys: BTreeSet<(String, String)> = net.edges.keys().cloned().collect();
        keys.extend(failed.keys().map(|(c, s)| (c.to_string(), s.to_string())));
        let empty = BTreeMap::new();
        let mut out = Vec::new();
        for (client, server) in keys {
            let buckets = net
                .edges
                .get(&(client.clone(), server.clone()))
                .unwrap_or(&empty);
            let fails = failed.get(&(client.as_str(), server.as_str()));
            let mut idx: BTreeSet<u64> = buckets.keys().copied().collect();
            if let Some(f) = fails {
                idx.extend(f.keys().copied());
            }
            for b in idx {
                let e = buckets.get(&b).cloned().unwrap_or_default();
                let f = fails.and_then(|f| f.get(&b));
                out.push(TcpPoint {
                    ts_ns: net.start_ns + b * net.bucket_ns,
                    client: client.clone(),
                    server: server.clone(),
                    connects: e.connects,
                    failed_connects: f.map_or(0, |m| m.values().sum()),
                    failure_cause: f.map_or(String::new(), |m| {
                        m.iter()
                            .map(|(k, v)| format!("{k}:{v}"))
                            .collect::<Vec<_>>()
                            .join(" ")
                    }),
                    retransmits: e.retransmits + e.retransmits_closing,
                    synack_retransmits: e.synack_retransmits,
                    zero_window_client: e.zero_window_client,
                    zero_window_server: e.zero_window_server,
                    rtt_p50_us: e.rtt.quantile(0.5),
                    rtt_p99_us: e.rtt.quantile(0.99),
                    resets_sent: e.resets_to_server,
                    resets_received: e.resets_to_client,
                    opened: e.opened,
                    closed: e.closed,
                    lifetime_p50_ms: lifetime_quantile(&e.lifetimes, 0.5),
                    lifetime_p99_ms: lifetime_quantile(&e.lifetimes, 0.99),
                    bytes_sent: e.bytes_sent,
                    bytes_received: e.bytes_received,
                });
            }
        }
        out
    }
}

/// The `q` quantile (nearest rank) of lifetimes in ns, in ms.
fn lifetime_quantile(v: &[u64], q: f64) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    let mut v = v.to_vec();
    v.sort_unstable();
    let rank = ((q * v.len() as f64).ceil() as usize).clamp(1, v.len());
    Some(v[rank - 1] as f64 / 1e6)
}

fn gap_ns(cfg: &FindingsConfig) -> u64 {
    (cfg.episode_gap_s * 1e9) as u64
}

/// A failed connect: a `CONNECT` row of protocol `tcp` that failed.
fn is_connect_failure(r: &RequestView<'_>) -> bool {
    r.is_failed_connect()
}

impl NetFacts {
    /// Bucket index of `ts`.
    pub(crate) fn bucket(&self, ts: u64) -> u64 {
        ts.saturating_sub(self.start_ns) / self.bucket_ns.max(1)
    }

    /// Buckets up to `end` (at least one).
    fn buckets(&self, end: u64) -> u64 {
        self.bucket(end) + 1
    }

    /// Sum of `f` over the buckets of edge `client -> server` overlapping `[from, to)`.
    fn sum(
        &self,
        client: &str,
        server: &str,
        from: u64,
        to: u64,
        f: impl Fn(&EdgeBucket) -> u64,
    ) -> u64 {
        let Some(m) = self.edges.get(&(client.to_string(), server.to_string())) else {
            return 0;
        };
        let (a, b) = (self.bucket(from), self.bucket(to));
        m.range(a..=b).map(|(_, e)| f(e)).sum()
    }
}

#[cfg(test)]
mod tests;
