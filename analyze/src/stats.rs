//! Aggregation (with polars): edges, services, endpoints and time series from request rows,
//! and the health rules.

use std::collections::{BTreeMap, BTreeSet};

use polars::prelude::*;

use crate::engine::{Interner, Map};
use crate::model::{
    ends_of, Analysis, EdgeStats, EndpointStats, Ends, Health, RequestRow, RequestTable,
    SeriesPoint, ServiceSeries, ServiceStats, TraceCoverage, NO_LATENCY,
};
use crate::services::ServicesFile;
use crate::AnalyzeError;

/// Error rate above which an edge or service is a warning.
pub const ERROR_RATE_WARNING: f64 = 0.01;
/// Error rate above which an edge or service is critical.
pub const ERROR_RATE_CRITICAL: f64 = 0.05;

/// One connection (or failed attempt) of an edge.
#[derive(Clone, Copy, Debug)]
pub(crate) struct ConnRow {
    pub client: u32,
    pub server: u32,
    pub protocol: u32,
    pub failed: bool,
    pub bytes_sent: u64,
    pub bytes_received: u64,
    pub retransmits: u64,
}

/// What is known about a service before aggregation.
#[derive(Default, Debug, Clone)]
pub(crate) struct ServiceInfo {
    pub kind: String,
    pub instances: BTreeSet<(u16, u32)>,
    pub executables: BTreeSet<String>,
    pub ports: BTreeSet<u16>,
}

pub(crate) struct Input<'a> {
    /// The request rows, in any order; not linked yet: [`aggregate`] links them once they
    /// are in time order.
    pub rows: Vec<RequestRow>,
    /// What the rows share, by [`RequestRow::ends`].
    pub ends: Vec<Ends>,
    /// Whether each row is a request its server served (or, seen only from the client, was
    /// sent to serve); not a connection attempt that failed: that is a failed request of its
    /// caller only.
    pub served: Vec<bool>,
    pub conns: Vec<ConnRow>,
    pub strings: Interner,
    pub services: BTreeMap<String, ServiceInfo>,
    pub services_file: &'a ServicesFile,
    pub window_start: u64,
    pub window_end: u64,
    /// Mixed into span and trace ids.
    pub id_seed: u64,
    /// What the trace linker needs of each row beyond the row (`links[i]` belongs to
    /// `rows[i]`).
    pub links: Vec<crate::traces::LinkIn>,
    /// The thread starts, for the trace linker; `None`: no linking (`--no-traces`).
    pub spawns: Option<crate::traces::Spawns>,
}

fn pe(e: PolarsError) -> AnalyzeError {
    AnalyzeError::Aggregate(e.to_string())
}

/// Chooses a time-series bucket width: the smallest "round" width giving at most 120 buckets.
pub fn bucket_width_ns(window_ns: u64) -> u64 {
    const S: u64 = 1_000_000_000;
    const STEPS: [u64; 17] = [
        S / 10,
        S / 4,
        S / 2,
        S,
        2 * S,
        5 * S,
        10 * S,
        15 * S,
        30 * S,
        60 * S,
        120 * S,
        300 * S,
        600 * S,
        900 * S,
        1800 * S,
        3600 * S,
        7200 * S,
    ];
    for step in STEPS {
        if window_ns / step < 120 {
            return step;
        }
    }
    let day = 86_400 * S;
    let mut step = 6 * 3600 * S;
    while window_ns / step >= 120 && step < 365 * day {
        step *= 2;
    }
    step
}

struct Agg {
    n: u64,
    errors: u64,
    p50: Option<f64>,
    p95: Option<f64>,
    p99: Option<f64>,
    sp50: Option<f64>,
    sp99: Option<f64>,
}

fn quantiles(lat: &str, server_lat: bool) -> Vec<Expr> {
    let q = |c: &str, p: f64, name: &str| {
        col(c)
            .quantile(lit(p), QuantileMethod::Linear)
            .alias(name.to_string())
    };
    let mut v = vec![
        len().cast(DataType::UInt64).alias("n"),
        col("error").cast(DataType::UInt64).sum().alias("errors"),
        q(lat, 0.50, "p50"),
        q(lat, 0.95, "p95"),
        q(lat, 0.99, "p99"),
    ];
    if server_lat {
        v.push(q("slat", 0.50, "sp50"));
        v.push(q("slat", 0.99, "sp99"));
    }
    v
}

fn u32s(df: &DataFrame, name: &str) -> Result<Vec<u32>, AnalyzeError> {
    Ok(df
        .column(name)
        .map_err(pe)?
        .u32()
        .map_err(pe)?
        .iter()
        .map(|v| v.unwrap_or(0))
        .collect())
}

/// Dense ids of the keys, in order of first appearance: the id of each, and the keys by id.
fn dense_ids<K: Copy + Eq + std::hash::Hash>(keys: impl Iterator<Item = K>) -> (Vec<u32>, Vec<K>) {
    let mut ids: Map<K, u32> = Map::default();
    let mut distinct = Vec::new();
    let per_key = keys
        .map(|k| {
            *ids.entry(k).or_insert_with(|| {
                distinct.push(k);
                (distinct.len() - 1) as u32
            })
        })
        .collect();
    (per_key, distinct)
}

/// The keys of the groups of `df`, from their dense ids in column `id`.
fn keys_of<K: Copy>(df: &DataFrame, id: &str, keys: &[K]) -> Result<Vec<K>, AnalyzeError> {
    u32s(df, id)?
        .into_iter()
        .map(|i| {
            keys.get(i as usize)
                .copied()
                .ok_or_else(|| AnalyzeError::Aggregate(format!("no key for {id} {i}")))
        })
        .collect()
}

fn u64s(df: &DataFrame, name: &str) -> Result<Vec<u64>, AnalyzeError> {
    Ok(df
        .column(name)
        .map_err(pe)?
        .u64()
        .map_err(pe)?
        .iter()
        .map(|v| v.unwrap_or(0))
        .collect())
}

/// Rounds to 1e-6 (ns resolution for ms values): stable, readable output.
fn round6(x: f64) -> f64 {
    (x * 1e6).round() / 1e6
}

fn f64s(df: &DataFrame, name: &str) -> Result<Vec<Option<f64>>, AnalyzeError> {
    let ca = df.column(name).map_err(pe)?.f64().map_err(pe)?;
    Ok(ca.iter().map(|v| v.map(round6)).collect())
}

fn aggs(df: &DataFrame, server_lat: bool) -> Result<Vec<Agg>, AnalyzeError> {
    let n = u64s(df, "n")?;
    let errors = u64s(df, "errors")?;
    let p50 = f64s(df, "p50")?;
    let p95 = f64s(df, "p95")?;
    let p99 = f64s(df, "p99")?;
    let (sp50, sp99) = if server_lat {
        (f64s(df, "sp50")?, f64s(df, "sp99")?)
    } else {
        (vec![None; n.len()], vec![None; n.len()])
    };
    Ok((0..n.len())
        .map(|i| Agg {
            n: n[i],
            errors: errors[i],
            p50: p50[i],
            p95: p95[i],
            p99: p99[i],
            sp50: sp50[i],
            sp99: sp99[i],
        })
        .collect())
}

fn ms(ns: u64) -> Option<f64> {
    (ns != NO_LATENCY).then(|| ns as f64 / 1e6)
}

fn rate(errors: u64, n: u64) -> f64 {
    if n == 0 {
        0.0
    } else {
        errors as f64 / n as f64
    }
}

fn pct(x: f64) -> String {
    format!("{:.1}%", x * 100.0)
}

/// What the health rules look at.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Signals {
    pub requests: u64,
    pub errors: u64,
    pub p95: Option<f64>,
    pub p99: Option<f64>,
    pub objective_ms: f64,
    pub failed_connections: u64,
    pub connections: u64,
    pub retransmits: u64,
}

/// Health from error rate, latency against an objective, failed connections, retransmits.
pub(crate) fn health(sig: Signals) -> (Health, Vec<String>) {
    let Signals {
        requests,
        errors,
        p95,
        p99,
        objective_ms,
        failed_connections,
        connections,
        retransmits,
    } = sig;
    let mut status = Health::Ok;
    let mut reasons = Vec::new();
    let mut raise = |h: Health, why: String, status: &mut Health| {
        *status = (*status).max(h);
        reasons.push(why);
    };
    let er = rate(errors, requests);
    if er > ERROR_RATE_CRITICAL {
        raise(
            Health::Critical,
            format!("error rate {} > 5%", pct(er)),
            &mut status,
        );
    } else if er > ERROR_RATE_WARNING {
        raise(
            Health::Warning,
            format!("error rate {} > 1%", pct(er)),
            &mut status,
        );
    }
    if failed_connections > 0 {
        let fr = rate(failed_connections, failed_connections + connections);
        let h = if fr > ERROR_RATE_CRITICAL {
            Health::Critical
        } else {
            Health::Warning
        };
        raise(
            h,
            format!("{failed_connections} failed connections"),
            &mut status,
        );
    }
    match (p95, p99) {
        (Some(p95), _) if p95 > objective_ms => raise(
            Health::Critical,
            format!("p95 {p95:.0} ms > objective {objective_ms:.0} ms"),
            &mut status,
        ),
        (_, Some(p99)) if p99 > objective_ms => raise(
            Health::Warning,
            format!("p99 {p99:.0} ms > objective {objective_ms:.0} ms"),
            &mut status,
        ),
        _ => {}
    }
    if retransmits > 0 {
        raise(
            Health::Warning,
            format!("{retransmits} TCP retransmits"),
            &mut status,
        );
    }
    (status, reasons)
}

pub(crate) fn aggregate(input: Input<'_>) -> Result<Analysis, AnalyzeError> {
    let Input {
        mut rows,
        ends,
        mut served,
        conns,
        mut strings,
        services,
        services_file,
        window_start,
        window_end,
        id_seed,
        mut links,
        spawns,
    } = input;
    // Time order (ties by the other fields, then by position: a stable order), sorting small
    // keys rather than whole rows, then moving the rows in place (a sorted copy would double
    // the table's memory at its peak).
    let mut order: Vec<(u64, u32)> = rows
        .iter()
        .enumerate()
        .map(|(i, r)| (r.ts_ns, i as u32))
        .collect();
    order.sort_unstable_by(|&(ta, ia), &(tb, ib)| {
        ta.cmp(&tb).then_with(|| {
            let (a, b) = (&rows[ia as usize], &rows[ib as usize]);
            let (ea, eb) = (ends_of(&ends, a), ends_of(&ends, b));
            (ea.client, ea.server, a.method, a.target, a.status, ia)
                .cmp(&(eb.client, eb.server, b.method, b.target, b.status, ib))
        })
    });
    let order: Vec<u32> = order.into_iter().map(|(_, i)| i).collect();
    if spawns.is_none() {
        links = Vec::new();
    }
    let with_links = !links.is_empty();
    crate::permute::permute(order, |a, b| {
        rows.swap(a, b);
        served.swap(a, b);
        if with_links {
            links.swap(a, b);
        }
    });

    // The trace linker reads the sorted rows on a thread of its own while this one computes
    // the RED metrics from them: neither writes them until both are done. (One after the
    // other, their memory would not add up at the analysis' peak, 35-40 MiB less on the
    // 10 M-event benchmark, but the aggregation would take ~0.9 s longer: 1.6-2.0 -> 2.5-2.8 s.)
    let (red, linked) = std::thread::scope(|scope| {
        let linking = spawns.as_ref().map(|spawns| {
            let (rows, ends, links) = (&rows, &ends, &links);
            scope.spawn(move || crate::traces::link(rows, ends, links, spawns))
        });
        let red = red_metrics(
            (&rows, &ends),
            served,
            &mut strings,
            &conns,
            &services,
            services_file,
            (window_start, window_end),
        );
        (red, linking.map(|h| h.join()))
    });
    let red = red?;
    drop(links);
    let mut cp = crate::input::Checkpoints::new();
    let coverage = match linked {
        Some(Ok(linked)) => Some(linked.apply(&mut rows)),
        Some(Err(_)) => {
            return Err(AnalyzeError::Aggregate(
                "the trace linker failed unexpectedly".into(),
            ))
        }
        None => {
            crate::traces::unlinked(&mut rows);
            None
        }
    };
    cp.at("aggregate: links applied");
    let traces = match coverage {
        Some(_) => crate::traces::summarize(&rows, &ends, &mut strings),
        None => crate::traces::Summary::skipped(),
    };
    cp.at("aggregate: traces");
    let requests = RequestTable {
        rows,
        ends,
        strings: std::mem::take(&mut strings.strings),
        id_seed,
    };
    Ok(Analysis {
        window_start_ns: window_start,
        window_end_ns: window_end,
        services: red.services,
        edges: red.edges,
        endpoints: red.endpoints,
        series: red.series,
        bucket_ns: red.bucket_ns,
        total_requests: red.total_requests,
        total_errors: red.total_errors,
        requests,
        traces_skipped: traces.skipped,
        trace_coverage: TraceCoverage {
            traces: traces.traces.len() as u64,
            ..coverage.unwrap_or_default()
        },
        traces: traces.traces,
        time_breakdown: traces.breakdown,
        ..Default::default()
    })
}

/// The RED metrics of [`aggregate`].
struct Red {
    services: Vec<ServiceStats>,
    edges: Vec<EdgeStats>,
    endpoints: Vec<EndpointStats>,
    series: Vec<ServiceSeries>,
    bucket_ns: u64,
    total_requests: u64,
    total_errors: u64,
}

/// Edges, services, endpoints and time series from the rows (time order, with the table's
/// `ends`; `served[i]`: row `i` was served, not a failed connect).
fn red_metrics(
    (rows, ends): (&[RequestRow], &[Ends]),
    served: Vec<bool>,
    strings: &mut Interner,
    conns: &[ConnRow],
    services: &BTreeMap<String, ServiceInfo>,
    services_file: &ServicesFile,
    (window_start, window_end): (u64, u64),
) -> Result<Red, AnalyzeError> {
    let mut cp = crate::input::Checkpoints::new();
    cp.at("aggregate: start");
    let window_ns = window_end.saturating_sub(window_start);
    let bucket_ns = bucket_width_ns(window_ns);
    let window_secs = window_ns.max(1) as f64 / 1e9;

    // Endpoint keys: "METHOD route" (route, else target).
    let mut endpoint_ids: Map<(u32, u32), u32> = Map::default();
    let mut endpoint = Vec::with_capacity(rows.len());
    for r in rows {
        let key = (r.method, if r.route != 0 { r.route } else { r.target });
        let id = match endpoint_ids.get(&key) {
            Some(&id) => id,
            None => {
                let m = strings.get(key.0);
                let rt = strings.get(key.1);
                let s = if m == rt || rt.is_empty() {
                    m.to_string()
                } else if m.is_empty() {
                    rt.to_string()
                } else {
                    format!("{m} {rt}")
                };
                let id = strings.intern(&s);
                endpoint_ids.insert(key, id);
                id
            }
        };
        endpoint.push(id);
    }

    // Two frames, one after the other, each with the columns its group-bys read (built
    // straight into polars' arrays): every request for the edges, the served ones for the
    // services, endpoints and series. Each grouping's key is one dense id made here (a
    // group-by on one integer column needs neither row-encoded keys nor their memory); the
    // results come back in the order of the ids, and the ids give back the keys.
    let ms_of = |name: &str, values: &mut dyn Iterator<Item = u64>| {
        Column::from(Float64Chunked::from_iter_options(name.into(), values.map(ms)).into_series())
    };
    let by_id = |lf: LazyFrame, id: &str, lat: &str, server_lat: bool| {
        lf.group_by([col(id)])
            .agg(quantiles(lat, server_lat))
            .sort([id], Default::default())
            .collect()
            .map_err(pe)
    };
    let e = |r: &RequestRow| ends_of(ends, r);
    let (edge_ids, edge_keys) = dense_ids(rows.iter().map(|r| {
        let e = e(r);
        (e.client, e.server, e.protocol)
    }));
    let edges_df = by_id(
        DataFrame::new_infer_height(vec![
            Column::new("edge".into(), edge_ids),
            Column::new(
                "error".into(),
                BooleanChunked::from_iter_values("error".into(), rows.iter().map(|r| r.error()))
                    .into_series(),
            ),
            ms_of("lat", &mut rows.iter().map(|r| r.latency_ns)),
            ms_of("slat", &mut rows.iter().map(|r| r.server_latency_ns)),
        ])
        .map_err(pe)?
        .lazy(),
        "edge",
        "lat",
        true,
    )?;
    // Services, their endpoints and series count what they served: not their callers' failed
    // connection attempts (edges count those).
    let served_rows = || {
        rows.iter()
            .zip(&served)
            .enumerate()
            .filter(|(_, (_, &s))| s)
            .map(|(i, (r, _))| (i, r))
    };
    let (endpoint_ids, endpoint_keys) =
        dense_ids(served_rows().map(|(i, r)| (e(r).server, e(r).protocol, endpoint[i])));
    drop(endpoint);
    let (series_ids, series_keys) = dense_ids(served_rows().map(|(_, r)| {
        (
            e(r).server,
            (r.ts_ns.saturating_sub(window_start)) / bucket_ns,
        )
    }));
    let served_lf = DataFrame::new_infer_height(vec![
        Column::new(
            "server".into(),
            served_rows()
                .map(|(_, r)| e(r).server)
                .collect::<Vec<u32>>(),
        ),
        Column::new("endpoint".into(), endpoint_ids),
        Column::new("series".into(), series_ids),
        Column::new(
            "error".into(),
            BooleanChunked::from_iter_values("error".into(), served_rows().map(|(_, r)| r.error()))
                .into_series(),
        ),
        // A service's own latency: server side when captured, else what its clients saw.
        ms_of(
            "svc_lat",
            &mut served_rows().map(|(_, r)| {
                if r.server_latency_ns != NO_LATENCY {
                    r.server_latency_ns
                } else {
                    r.latency_ns
                }
            }),
        ),
    ])
    .map_err(pe)?
    .lazy();
    cp.at("aggregate: sort, endpoints, data frame");
    let services_df = by_id(served_lf.clone(), "server", "svc_lat", false)?;
    let endpoints_df = by_id(served_lf.clone(), "endpoint", "svc_lat", false)?;
    let series_df = by_id(served_lf, "series", "svc_lat", false)?;
    cp.at("aggregate: polars");
    // Edges: requests from polars, connections from the connection rows.
    #[derive(Default)]
    struct ConnAgg {
        connections: u64,
        failed: u64,
        sent: u64,
        received: u64,
        retransmits: u64,
    }
    let mut conn_aggs: BTreeMap<(String, String, String), ConnAgg> = BTreeMap::new();
    // Failed connections go to the edge's usual protocol when it has one.
    let mut protos_of: BTreeMap<(u32, u32), BTreeMap<u32, u64>> = BTreeMap::new();
    for c in conns.iter().filter(|c| !c.failed) {
        *protos_of
            .entry((c.client, c.server))
            .or_default()
            .entry(c.protocol)
            .or_insert(0) += 1;
    }
    let tcp = strings.intern("tcp");
    let usual_protocol = |client: u32, server: u32| -> u32 {
        protos_of
            .get(&(client, server))
            .and_then(|m| {
                m.iter()
                    .filter(|(p, _)| **p != tcp)
                    .max_by(|a, b| a.1.cmp(b.1).then(b.0.cmp(a.0)))
                    .map(|(p, _)| *p)
            })
            .unwrap_or(tcp)
    };
    let name = |id: u32| strings.get(id).to_string();
    for c in conns {
        let protocol = if c.failed {
            usual_protocol(c.client, c.server)
        } else {
            c.protocol
        };
        let a = conn_aggs
            .entry((name(c.client), name(c.server), name(protocol)))
            .or_default();
        if c.failed {
            a.failed += 1;
        } else {
            a.connections += 1;
        }
        a.sent += c.bytes_sent;
        a.received += c.bytes_received;
        a.retransmits += c.retransmits;
    }
    let mut edge_reqs: BTreeMap<(String, String, String), Agg> = BTreeMap::new();
    {
        let keys = keys_of(&edges_df, "edge", &edge_keys)?;
        for (&(c, s, p), agg) in keys.iter().zip(aggs(&edges_df, true)?) {
            // Failed-connection rows carry protocol "tcp": fold them into the usual protocol.
            let proto = if p == tcp { usual_protocol(c, s) } else { p };
            let key = (name(c), name(s), name(proto));
            match edge_reqs.get_mut(&key) {
                Some(prev) if prev.p50.is_none() && agg.p50.is_some() => {
                    let (n, e) = (prev.n + agg.n, prev.errors + agg.errors);
                    *prev = Agg {
                        n,
                        errors: e,
                        ..agg
                    };
                }
                Some(prev) => {
                    prev.n += agg.n;
                    prev.errors += agg.errors;
                }
                None => {
                    edge_reqs.insert(key, agg);
                }
            }
        }
    }
    let mut keys: BTreeSet<(String, String, String)> = conn_aggs.keys().cloned().collect();
    keys.extend(edge_reqs.keys().cloned());
    let mut edges = Vec::new();
    for key in keys {
        let c = conn_aggs.get(&key);
        let r = edge_reqs.get(&key);
        let requests = r.map_or(0, |r| r.n);
        let errors = r.map_or(0, |r| r.errors);
        let (p50, p95, p99) = r.map_or((None, None, None), |r| (r.p50, r.p95, r.p99));
        let connections = c.map_or(0, |c| c.connections);
        let failed = c.map_or(0, |c| c.failed);
        let retransmits = c.map_or(0, |c| c.retransmits);
        let objective = services_file.objective_ms(&key.1);
        let (status, reasons) = health(Signals {
            requests,
            errors,
            p95,
            p99,
            objective_ms: objective,
            failed_connections: failed,
            connections,
            retransmits,
        });
        edges.push(EdgeStats {
            client: key.0,
            server: key.1,
            protocol: key.2,
            connections,
            failed_connections: failed,
            requests,
            errors,
            p50_ms: p50,
            p95_ms: p95,
            p99_ms: p99,
            retransmits,
            bytes_sent: c.map_or(0, |c| c.sent),
            bytes_received: c.map_or(0, |c| c.received),
            status,
            reasons,
            rate_per_s: round6(requests as f64 / window_secs),
            server_p50_ms: r.and_then(|r| r.sp50),
            server_p99_ms: r.and_then(|r| r.sp99),
        });
    }

    // Services.
    let mut served: Map<String, Agg> = Map::default();
    {
        let s = u32s(&services_df, "server")?;
        for (i, agg) in aggs(&services_df, false)?.into_iter().enumerate() {
            served.insert(name(s[i]), agg);
        }
    }
    let mut sent: Map<u32, u64> = Map::default();
    let mut calls: Map<u32, u64> = Map::default();
    for r in rows {
        *sent.entry(e(r).client).or_insert(0) += 1;
        *calls.entry(e(r).server).or_insert(0) += 1;
    }
    let mut services_out = Vec::new();
    for (svc, info) in services {
        let a = served.get(svc);
        let requests = a.map_or(0, |a| a.n);
        let errors = a.map_or(0, |a| a.errors);
        let (p50, p95, p99) = a.map_or((None, None, None), |a| (a.p50, a.p95, a.p99));
        let inbound = edges.iter().filter(|e| &e.server == svc);
        let (failed, conns_in) = inbound.fold((0, 0), |acc, e| {
            (acc.0 + e.failed_connections, acc.1 + e.connections)
        });
        let objective = services_file.objective_ms(svc);
        let (status, reasons) = health(Signals {
            requests,
            errors,
            p95,
            p99,
            objective_ms: objective,
            failed_connections: failed,
            connections: conns_in,
            retransmits: 0,
        });
        let id = strings.map_get(svc);
        services_out.push(ServiceStats {
            service: svc.clone(),
            instances: u32::try_from(info.instances.len()).unwrap_or(u32::MAX),
            requests,
            errors,
            error_rate: round6(rate(errors, requests)),
            p50_ms: p50,
            p95_ms: p95,
            p99_ms: p99,
            status,
            reasons,
            kind: info.kind.clone(),
            executables: info.executables.iter().cloned().collect(),
            ports: info.ports.iter().copied().collect(),
            requests_sent: id.and_then(|id| sent.get(&id)).copied().unwrap_or(0),
            calls: id.and_then(|id| calls.get(&id)).copied().unwrap_or(0),
            failed_connections: failed,
            latency_objective_ms: objective,
        });
    }

    // Endpoints.
    let mut endpoints = Vec::new();
    {
        let keys = keys_of(&endpoints_df, "endpoint", &endpoint_keys)?;
        for (&(s, p, e), a) in keys.iter().zip(aggs(&endpoints_df, false)?) {
            endpoints.push(EndpointStats {
                service: name(s),
                protocol: name(p),
                route: name(e),
                requests: a.n,
                errors: a.errors,
                p50_ms: a.p50,
                p95_ms: a.p95,
                p99_ms: a.p99,
            });
        }
    }
    endpoints.sort_by(|a, b| {
        (&a.service, &a.protocol, &a.route).cmp(&(&b.service, &b.protocol, &b.route))
    });

    // Time series, with empty buckets filled in.
    let buckets = (window_ns / bucket_ns + 1) as usize;
    let mut series_map: BTreeMap<String, Vec<SeriesPoint>> = BTreeMap::new();
    {
        let keys = keys_of(&series_df, "series", &series_keys)?;
        for (&(s, bucket), a) in keys.iter().zip(aggs(&series_df, false)?) {
            let points = series_map.entry(name(s)).or_insert_with(|| {
                (0..buckets)
                    .map(|k| SeriesPoint {
                        start_ns: window_start + k as u64 * bucket_ns,
                        requests: 0,
                        errors: 0,
                        p50_ms: None,
                        p99_ms: None,
                    })
                    .collect()
            });
            if let Some(p) = points.get_mut(bucket as usize) {
                p.requests = a.n;
                p.errors = a.errors;
                p.p50_ms = a.p50;
                p.p99_ms = a.p99;
            }
        }
    }
    let series = series_map
        .into_iter()
        .map(|(service, points)| ServiceSeries { service, points })
        .collect();

    let total_requests = rows.len() as u64;
    let total_errors = rows.iter().filter(|r| r.error()).count() as u64;
    cp.at("aggregate: edges, services, endpoints, series");
    Ok(Red {
        services: services_out,
        edges,
        endpoints,
        series,
        bucket_ns,
        total_requests,
        total_errors,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_suit_the_window() {
        let s = 1_000_000_000u64;
        assert_eq!(bucket_width_ns(10 * s), s / 10);
        assert_eq!(bucket_width_ns(60 * s), s);
        assert_eq!(bucket_width_ns(590 * s), 5 * s);
        assert_eq!(bucket_width_ns(600 * s), 10 * s);
        assert_eq!(bucket_width_ns(3600 * s), 60 * s);
        assert!(bucket_width_ns(30 * 86_400 * s) >= 6 * 3600 * s);
        for w in [0, 1, 7 * s, 3 * 86_400 * s, 400 * 86_400 * s] {
            let b = bucket_width_ns(w);
            assert!(w / b < 120 || b >= 365 * 86_400 * s, "{w} {b}");
        }
    }

    #[test]
    fn health_rules() {
        assert_eq!(
            health(Signals {
                requests: 1000,
                errors: 0,
                p95: Some(10.0),
                p99: Some(20.0),
                objective_ms: 500.0,
                failed_connections: 0,
                connections: 10,
                retransmits: 0
            })
            .0,
            Health::Ok
        );
        let (h, r) = health(Signals {
            requests: 1000,
            errors: 20,
            p95: None,
            p99: None,
            objective_ms: 500.0,
            failed_connections: 0,
            connections: 10,
            retransmits: 0,
        });
        assert_eq!(h, Health::Warning);
        assert_eq!(r, vec!["error rate 2.0% > 1%".to_string()]);
        assert_eq!(
            health(Signals {
                requests: 100,
                errors: 6,
                p95: None,
                p99: None,
                objective_ms: 500.0,
                failed_connections: 0,
                connections: 10,
                retransmits: 0
            })
            .0,
            Health::Critical
        );
        assert_eq!(
            health(Signals {
                requests: 100,
                errors: 0,
                p95: Some(100.0),
                p99: Some(600.0),
                objective_ms: 500.0,
                failed_connections: 0,
                connections: 10,
                retransmits: 0
            })
            .0,
            Health::Warning
        );
        assert_eq!(
            health(Signals {
                requests: 100,
                errors: 0,
                p95: Some(600.0),
                p99: Some(900.0),
                objective_ms: 500.0,
                failed_connections: 0,
                connections: 10,
                retransmits: 0
            })
            .0,
            Health::Critical
        );
        assert_eq!(
            health(Signals {
                requests: 100,
                errors: 0,
                p95: None,
                p99: None,
                objective_ms: 500.0,
                failed_connections: 1,
                connections: 100,
                retransmits: 0
            })
            .0,
            Health::Warning
        );
        assert_eq!(
            health(Signals {
                requests: 100,
                errors: 0,
                p95: None,
                p99: None,
                objective_ms: 500.0,
                failed_connections: 10,
                connections: 10,
                retransmits: 0
            })
            .0,
            Health::Critical
        );
        let (h, r) = health(Signals {
            requests: 100,
            errors: 0,
            p95: None,
            p99: None,
            objective_ms: 500.0,
            failed_connections: 0,
            connections: 10,
            retransmits: 3,
        });
        assert_eq!(h, Health::Warning);
        assert_eq!(r, vec!["3 TCP retransmits".to_string()]);
    }
}
