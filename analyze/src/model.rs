//! The result of an analysis: what the report, `retrace check` and `retrace diff` read.

use serde::{Deserialize, Serialize};

/// Health of a service or an edge.
#[derive(
    Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default,
)]
#[serde(rename_all = "snake_case")]
pub enum Health {
    /// Nothing wrong seen.
    #[default]
    Ok,
    /// Something deserves a look.
    Warning,
    /// Clearly broken or far outside its objective.
    Critical,
}

impl std::fmt::Display for Health {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl Health {
    /// `ok`, `warning` or `critical`.
    pub fn name(self) -> &'static str {
        match self {
            Health::Ok => "ok",
            Health::Warning => "warning",
            Health::Critical => "critical",
        }
    }
}

/// One service: a group of processes (instances), or a peer seen only from the outside.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct ServiceStats {
    /// Service name.
    pub service: String,
    /// Distinct processes (node, pid) of this service seen in the capture; 0 for peers with no
    /// captured process.
    pub instances: u32,
    /// Requests this service served (as the server of an edge): exchanges seen on either end
    /// of its connections, and the queries of a resolver. Not its callers' connection attempts
    /// that failed (refused, timed out): those never reached it; see `calls` and
    /// `failed_connections`.
    pub requests: u64,
    /// Of those, failed (5xx, protocol error reply, no response before the connection was
    /// closed or reset).
    pub errors: u64,
    /// `errors / requests`, 0 when there were none.
    pub error_rate: f64,
    /// Median latency of served requests, ms.
    pub p50_ms: Option<f64>,
    /// 95th percentile latency, ms.
    pub p95_ms: Option<f64>,
    /// 99th percentile latency, ms.
    pub p99_ms: Option<f64>,
    /// Health.
    pub status: Health,
    /// Why the status is not ok.
    pub reasons: Vec<String>,
    /// How the service was identified: `cgroup`, `container`, `unit`, `exe+port`, `exe`,
    /// `services-file`, `address`, `dns`.
    pub kind: String,
    /// Executables of its processes (distinct, sorted).
    pub executables: Vec<String>,
    /// Ports its processes listen on (distinct, sorted).
    pub ports: Vec<u16>,
    /// Requests this service made to others (as the client of an edge), connection attempts
    /// that failed included.
    pub requests_sent: u64,
    /// Requests its callers addressed to it, as they counted them (the sum of its inbound
    /// edges' requests): the `requests` it served plus the `failed_connections`.
    #[serde(default)]
    pub calls: u64,
    /// Connection attempts of its callers that failed (refused, timed out, reset while
    /// connecting): failed requests of its callers' edges, not requests it served.
    #[serde(default)]
    pub failed_connections: u64,
    /// Latency objective used for its status, ms.
    pub latency_objective_ms: f64,
}

/// Traffic from one client service to one server service over one protocol.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct EdgeStats {
    /// Client service.
    pub client: String,
    /// Server service.
    pub server: String,
    /// Protocol name (`http`, `postgres`, ... or `tcp` when nothing was parsed).
    pub protocol: String,
    /// Connections established.
    pub connections: u64,
    /// Connection attempts that failed (refused, reset, timed out).
    pub failed_connections: u64,
    /// Requests (including failed connection attempts, which count as failed requests).
    pub requests: u64,
    /// Failed requests.
    pub errors: u64,
    /// Median latency, ms (client side when the client was captured, else server side).
    pub p50_ms: Option<f64>,
    /// 95th percentile latency, ms.
    pub p95_ms: Option<f64>,
    /// 99th percentile latency, ms.
    pub p99_ms: Option<f64>,
    /// TCP retransmits on the edge's connections.
    pub retransmits: u64,
    /// Bytes written by the client.
    pub bytes_sent: u64,
    /// Bytes read by the client.
    pub bytes_received: u64,
    /// Health.
    pub status: Health,
    /// Why the status is not ok.
    pub reasons: Vec<String>,
    /// Requests per second over the capture window.
    pub rate_per_s: f64,
    /// Server-side median latency, ms, when the server side was captured.
    pub server_p50_ms: Option<f64>,
    /// Server-side 99th percentile latency, ms.
    pub server_p99_ms: Option<f64>,
}

/// Requests to one route of one service.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct EndpointStats {
    /// Server service.
    pub service: String,
    /// Protocol name.
    pub protocol: String,
    /// Method and route template, e.g. `GET /users/{id}`, or a normalized statement.
    pub route: String,
    /// Requests.
    pub requests: u64,
    /// Failed requests.
    pub errors: u64,
    /// Median latency, ms.
    pub p50_ms: Option<f64>,
    /// 95th percentile latency, ms.
    pub p95_ms: Option<f64>,
    /// 99th percentile latency, ms.
    pub p99_ms: Option<f64>,
}

/// One request/response exchange, or a failed connection attempt, as read from a
/// [`RequestTable`].
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RequestView<'a> {
    /// Wall-clock time of the request's first byte, ns since the epoch.
    pub ts_ns: u64,
    /// Client service.
    pub client: &'a str,
    /// Server service.
    pub server: &'a str,
    /// Protocol name.
    pub protocol: &'a str,
    /// Method (GET, query, SET, CONNECT for connection failures...).
    pub method: &'a str,
    /// Target (path, statement, key...).
    pub target: &'a str,
    /// Route template.
    pub route: &'a str,
    /// Status (`200`, `ERROR 23505`, `ECONNREFUSED`, `no response (reset)`...).
    pub status: &'a str,
    /// Failed.
    pub error: bool,
    /// Latency, ns (client side when captured), none when no response was seen.
    pub latency_ns: Option<u64>,
    /// Server-side latency, ns, when the server side was captured.
    pub server_latency_ns: Option<u64>,
    /// W3C trace id, when the request carried one.
    pub trace_id: Option<&'a str>,
    /// Node the request was seen on.
    pub node: &'a str,
}

/// A compact row of a [`RequestTable`]: strings are ids into the table's string pool.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct RequestRow {
    pub ts_ns: u64,
    pub latency_ns: u64,
    pub server_latency_ns: u64,
    pub client: u32,
    pub server: u32,
    pub protocol: u32,
    pub method: u32,
    pub target: u32,
    pub route: u32,
    pub status: u32,
    pub trace_id: u32,
    pub node: u32,
    pub error: bool,
}

/// Sentinel for "no latency" in [`RequestRow`].
pub(crate) const NO_LATENCY: u64 = u64::MAX;
/// Id of the empty string in a [`RequestTable`]'s pool.
pub(crate) const EMPTY: u32 = 0;

/// Every request of an analysis in time order, stored compactly (strings interned).
#[derive(Clone, Debug, PartialEq, Default)]
pub struct RequestTable {
    pub(crate) strings: Vec<String>,
    pub(crate) rows: Vec<RequestRow>,
}

impl RequestTable {
    /// Number of requests.
    pub fn len(&self) -> usize {
        self.rows.len()
    }

    /// No requests.
    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    fn s(&self, id: u32) -> &str {
        self.strings
            .get(id as usize)
            .map(String::as_str)
            .unwrap_or("")
    }

    /// The `i`-th request.
    pub fn get(&self, i: usize) -> Option<RequestView<'_>> {
        let r = self.rows.get(i)?;
        let lat = |v: u64| (v != NO_LATENCY).then_some(v);
        Some(RequestView {
            ts_ns: r.ts_ns,
            client: self.s(r.client),
            server: self.s(r.server),
            protocol: self.s(r.protocol),
            method: self.s(r.method),
            target: self.s(r.target),
            route: self.s(r.route),
            status: self.s(r.status),
            error: r.error,
            latency_ns: lat(r.latency_ns),
            server_latency_ns: lat(r.server_latency_ns),
            trace_id: (r.trace_id != EMPTY).then(|| self.s(r.trace_id)),
            node: self.s(r.node),
        })
    }

    /// All requests in time order.
    pub fn iter(&self) -> impl Iterator<Item = RequestView<'_>> + '_ {
        (0..self.rows.len()).filter_map(move |i| self.get(i))
    }
}

/// One point of a service's time series.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct SeriesPoint {
    /// Start of the bucket, wall ns.
    pub start_ns: u64,
    /// Requests in the bucket.
    pub requests: u64,
    /// Failed requests in the bucket.
    pub errors: u64,
    /// Median latency in the bucket, ms.
    pub p50_ms: Option<f64>,
    /// 99th percentile latency in the bucket, ms.
    pub p99_ms: Option<f64>,
}

/// A service's requests over time.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct ServiceSeries {
    /// Service name.
    pub service: String,
    /// Buckets in time order (empty buckets included).
    pub points: Vec<SeriesPoint>,
}

/// Counts of what the protocol parsers could and could not make sense of.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
pub struct PayloadStats {
    /// L7 messages fed to the parsers.
    pub messages: u64,
    /// Messages whose captured prefix was shorter than the message.
    pub truncated: u64,
    /// Messages no parser recognised (unknown protocol).
    pub unknown: u64,
    /// Messages that looked like a protocol but could not be parsed (garbage).
    pub unparsed: u64,
    /// Connections whose protocol could not be detected.
    pub unknown_connections: u64,
    /// L7 messages on sockets never seen connecting or accepting (role guessed).
    pub orphan_messages: u64,
    /// DNS datagrams parsed.
    pub dns_messages: u64,
    /// UDP datagrams that were not DNS or could not be parsed.
    pub dns_unparsed: u64,
}

/// A capture node as seen in the analysis.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
pub struct NodeSummary {
    /// Node name.
    pub name: String,
    /// Hostname.
    pub hostname: String,
    /// Kernel release.
    pub kernel: String,
    /// Events read from this node.
    pub events: u64,
}

/// Everything an analysis found.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
pub struct Analysis {
    /// Names of the nodes the captures came from (sorted).
    pub nodes: Vec<String>,
    /// Details of each node (sorted by name).
    pub node_details: Vec<NodeSummary>,
    /// First event, wall ns since the epoch.
    pub window_start_ns: u64,
    /// Last event, wall ns since the epoch.
    pub window_end_ns: u64,
    /// Events read.
    pub events: u64,
    /// Events read, by kind name.
    pub events_by_kind: std::collections::BTreeMap<String, u64>,
    /// Events the capture says it dropped (loss markers and manifest totals).
    pub dropped: u64,
    /// Dropped, by kind name.
    pub dropped_by_kind: std::collections::BTreeMap<String, u64>,
    /// Blocks that could not be read (torn tails, bad checksums).
    pub damaged_blocks: u64,
    /// Segments listed in a manifest but missing on disk.
    pub missing_segments: Vec<String>,
    /// `events / (events + dropped)`, 1 when nothing was dropped; lowered by damage.
    pub completeness: f64,
    /// Problems met while reading (damage, missing files), for the report.
    pub warnings: Vec<String>,
    /// Services, sorted by name.
    pub services: Vec<ServiceStats>,
    /// Edges, sorted by client, server, protocol.
    pub edges: Vec<EdgeStats>,
    /// Endpoints, sorted by service, protocol, route.
    pub endpoints: Vec<EndpointStats>,
    /// Request time series per server service (sorted by service).
    pub series: Vec<ServiceSeries>,
    /// Width of a time-series bucket, ns.
    pub bucket_ns: u64,
    /// Parser statistics.
    pub payload: PayloadStats,
    /// Total requests (including failed connection attempts).
    pub total_requests: u64,
    /// Total failed requests.
    pub total_errors: u64,
    /// Marks recorded in the capture: (wall ns, note).
    pub marks: Vec<(u64, String)>,
    /// Every request, in time order (for requests.csv); not in summary.json.
    #[serde(skip)]
    pub requests: RequestTable,
}

impl Analysis {
    /// Window length in seconds (at least one nanosecond).
    pub fn window_secs(&self) -> f64 {
        let ns = self
            .window_end_ns
            .saturating_sub(self.window_start_ns)
            .max(1);
        ns as f64 / 1e9
    }

    /// The service named `name`.
    pub fn service(&self, name: &str) -> Option<&ServiceStats> {
        self.services.iter().find(|s| s.service == name)
    }

    /// The edges from `client` to `server` (any protocol).
    pub fn edges_between<'a>(
        &'a self,
        client: &'a str,
        server: &'a str,
    ) -> impl Iterator<Item = &'a EdgeStats> + 'a {
        self.edges
            .iter()
            .filter(move |e| e.client == client && e.server == server)
    }
}
