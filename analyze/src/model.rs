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

/// A compact row of a [`RequestTable`]: strings are ids into the table's string pool, and what
/// the rows of a connection share (the services, the protocol, each end's node, process and
/// address) is one [`Ends`] of the table's, named by id. 80 bytes (a test keeps the size; rows
/// are most of what the analysis keeps, `docs/ARCHITECTURE.md`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct RequestRow {
    pub ts_ns: u64,
    pub latency_ns: u64,
    pub server_latency_ns: u64,
    /// Index of the row's [`Ends`] in [`RequestTable::ends`].
    pub ends: u32,
    pub method: u32,
    pub target: u32,
    pub route: u32,
    pub status: u32,
    /// What the trace linking knows of the row's spans.
    pub spans: SpanFacts,
}

/// Who took part in a request, as the rows of one connection share it: the client and server
/// services, the protocol, the node that saw the request, and the node, process and `ip:port`
/// of each end (string ids; the node and process of an end that was not captured: `EMPTY`
/// and 0, as in [`Ends::NONE`]). Kept once per distinct value ([`EndsIds`]): a row names its own
/// by a `u32`. The client's address has its ephemeral port, so there are about as many as
/// connections (a request per connection costs 40 bytes more than the inline fields it
/// replaces, a keep-alive connection's thousand requests 40 bytes in all).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) struct Ends {
    pub client: u32,
    pub server: u32,
    pub protocol: u32,
    pub node: u32,
    /// Node and process of the client's end.
    pub client_node: u32,
    pub client_pid: u32,
    /// Node and process of the server's end.
    pub server_node: u32,
    pub server_pid: u32,
    /// `ip:port` of each end (string ids), empty when unknown.
    pub client_addr: u32,
    pub server_addr: u32,
}

impl Ends {
    /// Nothing known: every string empty, no process.
    pub const NONE: Ends = Ends {
        client: EMPTY,
        server: EMPTY,
        protocol: EMPTY,
        node: EMPTY,
        client_node: EMPTY,
        client_pid: 0,
        server_node: EMPTY,
        server_pid: 0,
        client_addr: EMPTY,
        server_addr: EMPTY,
    };

    /// (node, pid) of the client's end.
    pub fn client_process(&self) -> (u32, u32) {
        (self.client_node, self.client_pid)
    }

    /// (node, pid) of the server's end.
    pub fn server_process(&self) -> (u32, u32) {
        (self.server_node, self.server_pid)
    }
}

/// The distinct [`Ends`] of a table being built, each with its id (its index).
#[derive(Debug, Default)]
pub(crate) struct EndsIds {
    list: Vec<Ends>,
    ids: crate::engine::Map<Ends, u32>,
}

impl EndsIds {
    /// The id of `e`, added when new.
    pub fn id(&mut self, e: Ends) -> u32 {
        let next = self.list.len() as u32;
        let id = *self.ids.entry(e).or_insert(next);
        if id == next {
            self.list.push(e);
        }
        id
    }

    /// Every distinct value so far, indexed by id.
    pub fn list(&self) -> &[Ends] {
        &self.list
    }

    /// The list, indexed by id (the ids' map let go).
    pub fn into_list(self) -> Vec<Ends> {
        self.list
    }
}

impl RequestRow {
    /// The request failed.
    pub fn error(&self) -> bool {
        self.spans.flags & SpanFacts::ERROR != 0
    }

    /// The W3C trace id, B3 id or `X-Request-ID` the request carried (a string id).
    pub fn trace_id(&self) -> u32 {
        self.spans.trace_id
    }
}

/// The spans of one request row: a CLIENT span when the client's end was captured, a SERVER
/// span when the server's end was, and where the row's top span hangs in its trace.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct SpanFacts {
    /// [`SpanFacts::CLIENT`], [`SpanFacts::SERVER`] and [`SpanFacts::ERROR`] (the row's
    /// request failed: [`RequestRow::error`]).
    pub flags: u8,
    /// The trace header id the request carried, a string id ([`RequestRow::trace_id`]).
    pub trace_id: u32,
    /// Thread of the client's end (the thread that wrote the request; its node and process
    /// are the row's [`Ends`]').
    pub client_tid: u32,
    /// Thread of the server's end (the thread that read the request).
    pub server_tid: u32,
    /// When the server read the request's first byte (wall ns; the row's `ts_ns` when the
    /// server end alone was captured).
    pub server_ts_ns: u64,
    /// Row whose SERVER span is the parent of this row's top span, [`NO_ROW`] for a root.
    pub parent: u32,
    /// Row of the root of this row's trace.
    pub root: u32,
    /// How the top span was linked to its parent.
    pub link: Link,
    /// Confidence of that link, percent.
    pub confidence: u8,
}

impl SpanFacts {
    /// [`SpanFacts::flags`]: the client's end was captured (a CLIENT span).
    pub const CLIENT: u8 = 1;
    /// [`SpanFacts::flags`]: the server's end was captured (a SERVER span).
    pub const SERVER: u8 = 2;
    /// [`SpanFacts::flags`]: the row's request failed.
    pub const ERROR: u8 = 4;

    /// The client's end was captured (a CLIENT span).
    pub fn client(&self) -> bool {
        self.flags & Self::CLIENT != 0
    }

    /// The server's end was captured (a SERVER span).
    pub fn server(&self) -> bool {
        self.flags & Self::SERVER != 0
    }

    /// These facts with the request's trace header id and whether it failed.
    pub fn of_request(self, trace_id: u32, error: bool) -> Self {
        let mut f = Self { trace_id, ..self };
        f.set(Self::ERROR, error);
        f
    }

    /// Sets or clears `flag`.
    pub fn set(&mut self, flag: u8, on: bool) {
        if on {
            self.flags |= flag;
        } else {
            self.flags &= !flag;
        }
    }
}

impl Default for SpanFacts {
    fn default() -> Self {
        Self {
            flags: 0,
            trace_id: EMPTY,
            client_tid: 0,
            server_tid: 0,
            server_ts_ns: 0,
            parent: NO_ROW,
            root: NO_ROW,
            link: Link::Root,
            confidence: 100,
        }
    }
}

/// "No row" in [`SpanFacts`].
pub(crate) const NO_ROW: u32 = u32::MAX;

/// Which end of an exchange a span describes (OpenTelemetry's span kinds).
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[serde(rename_all = "snake_case")]
pub enum SpanKind {
    /// The caller's end: from writing the request to reading the response's first byte.
    Client,
    /// The callee's end: from reading the request to writing the response's first byte.
    Server,
}

impl SpanKind {
    /// `client` or `server`.
    pub fn name(self) -> &'static str {
        match self {
            SpanKind::Client => "client",
            SpanKind::Server => "server",
        }
    }
}

/// The rule that gave a span its parent.
#[derive(
    Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Default,
)]
#[serde(rename_all = "snake_case")]
pub enum Link {
    /// No parent: the root of its trace.
    #[default]
    Root,
    /// A SERVER span under the CLIENT span of the same exchange (same connection, both ends
    /// captured, on one node or across nodes).
    Connection,
    /// A CLIENT span under the SERVER span whose request its thread was serving (it wrote the
    /// call after reading that request and before writing its response).
    Thread,
    /// A CLIENT span under the SERVER span of its process that carried the same trace header
    /// (W3C `traceparent`, B3, `X-Request-ID`) and was in progress when the call was made.
    Header,
    /// A CLIENT span of an event-loop proxy under the one inbound request of the same method
    /// and target that was in progress when the call was made and answered after it.
    Proxy,
}

impl Link {
    /// The `link` column: empty for roots, else `connection`, `thread`, `header`, `proxy`.
    pub fn name(self) -> &'static str {
        match self {
            Link::Root => "",
            Link::Connection => "connection",
            Link::Thread => "thread",
            Link::Header => "header",
            Link::Proxy => "proxy",
        }
    }
}

/// One span, as read from a [`RequestTable`] (ids are numbers; print them as 32 and 16 lower
/// hex digits).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SpanView<'a> {
    /// The request row the span belongs to.
    pub request: usize,
    /// Trace id (never 0).
    pub trace_id: u128,
    /// Span id (never 0).
    pub span_id: u64,
    /// The parent's span id; `None` for a root.
    pub parent_span_id: Option<u64>,
    /// CLIENT or SERVER.
    pub kind: SpanKind,
    /// The service the span belongs to (the client for a CLIENT span).
    pub service: &'a str,
    /// The service on the other end.
    pub peer: &'a str,
    /// Protocol name.
    pub protocol: &'a str,
    /// Method (GET, query, SET, CONNECT for connection failures...).
    pub method: &'a str,
    /// Route template or normalized statement.
    pub route: &'a str,
    /// Raw target (path with query, statement, key...).
    pub target: &'a str,
    /// Status (`200`, `ECONNREFUSED`...).
    pub status: &'a str,
    /// Failed.
    pub error: bool,
    /// Start, wall ns since the epoch.
    pub start_ns: u64,
    /// Duration (to the response's first byte), none when no response was seen.
    pub duration_ns: Option<u64>,
    /// How the span got its parent.
    pub link: Link,
    /// Confidence of the link, 0..=1 (1 for roots).
    pub confidence: f64,
    /// Node the span was seen on.
    pub node: &'a str,
    /// Process and thread (the thread that wrote the request for a CLIENT span, that read it
    /// for a SERVER span; 0 when unknown).
    pub pid: u32,
    /// Thread id.
    pub tid: u32,
    /// `ip:port` of the server's end, empty when unknown.
    pub server_address: &'a str,
    /// `ip:port` of the client's end, empty when unknown.
    pub client_address: &'a str,
}

impl RequestView<'_> {
    /// A caller's connection attempt that failed (`CONNECT` of protocol `tcp`): a failed
    /// request of its edge that never reached the server, so not one the server served.
    pub fn is_failed_connect(&self) -> bool {
        self.error && self.method == "CONNECT" && self.protocol == "tcp"
    }
}

impl SpanView<'_> {
    /// The span's name as OpenTelemetry names it: `{method} {route}` for HTTP and gRPC, the
    /// normalized statement or command for databases and caches, `{method}` alone when there
    /// is no route.
    pub fn name(&self) -> String {
        span_name(self.protocol, self.method, self.route)
    }
}

/// See [`SpanView::name`].
pub fn span_name(protocol: &str, method: &str, route: &str) -> String {
    let mut out = String::new();
    write_span_name(&mut out, protocol, method, route);
    out
}

/// [`span_name`] appended to `out`.
pub fn write_span_name(out: &mut String, protocol: &str, method: &str, route: &str) {
    match protocol {
        // A failed connect: method and route are both `CONNECT`.
        _ if route.is_empty() || route == method => out.push_str(method),
        "http" | "http2" | "grpc" => {
            out.push_str(method);
            out.push(' ');
            out.push_str(route);
        }
        _ => out.push_str(route),
    }
}

/// One trace: spans linked into one tree (40 bytes: a long capture holds a million; its id
/// and root's names come from the [`RequestTable`], see [`TraceSummary::trace_id`]).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct TraceSummary {
    /// The request row of the root span.
    pub root: u32,
    /// Service of the root span: a string of the table's pool.
    pub(crate) root_service_id: u32,
    /// Name of the root span: a string of the table's pool.
    pub(crate) root_name_id: u32,
    /// Spans in the trace.
    pub spans: u32,
    /// Start of the earliest span, wall ns.
    pub start_ns: u64,
    /// From the earliest start to the latest end, ns.
    pub duration_ns: u64,
    /// Distinct services in the trace (both ends of every span).
    pub services: u32,
    /// Failed spans.
    pub errors: u32,
}

impl TraceSummary {
    /// Trace id (that of its root row, [`RequestTable::trace_id_of_root`]).
    pub fn trace_id(&self, table: &RequestTable) -> u128 {
        table.trace_id_of_root(self.root as usize)
    }

    /// Service of the root span.
    pub fn root_service<'a>(&self, table: &'a RequestTable) -> &'a str {
        table.s(self.root_service_id)
    }

    /// Name of the root span (`{method} {route}`, as OTel names spans).
    pub fn root_name<'a>(&self, table: &'a RequestTable) -> &'a str {
        table.s(self.root_name_id)
    }
}

/// How much of the traffic the linking covered.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
pub struct TraceCoverage {
    /// Traces (trees) found.
    pub traces: u64,
    /// Spans in all.
    pub spans: u64,
    /// SERVER spans.
    pub server_spans: u64,
    /// Of those, whose CLIENT end was captured (a parent exists in the capture).
    pub server_spans_with_client: u64,
    /// Of those, linked to it.
    pub server_spans_linked: u64,
    /// CLIENT spans.
    pub client_spans: u64,
    /// Of those, made by a process that served requests (a parent could exist).
    pub client_spans_in_servers: u64,
    /// Of those, linked to a parent.
    pub client_spans_linked: u64,
    /// Links by rule (`connection`, `thread`, `header`, `proxy`).
    pub by_link: std::collections::BTreeMap<String, u64>,
    /// CLIENT spans of event-loop processes left unlinked because several inbound requests
    /// could have made them.
    pub ambiguous: u64,
}

impl TraceCoverage {
    /// Linked share of the SERVER spans whose client was captured (1 when there were none).
    pub fn server_share(&self) -> f64 {
        share(self.server_spans_linked, self.server_spans_with_client)
    }

    /// Linked share of the CLIENT spans of processes that served requests (1 when none).
    pub fn client_share(&self) -> f64 {
        share(self.client_spans_linked, self.client_spans_in_servers)
    }
}

fn share(a: u64, b: u64) -> f64 {
    if b == 0 {
        1.0
    } else {
        a as f64 / b as f64
    }
}

/// Where the time of an endpoint's requests went: in the service itself, or waiting for each
/// downstream service (summed over the endpoint's SERVER spans and the CLIENT spans linked
/// under them).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct TimeBreakdown {
    /// Service.
    pub service: String,
    /// Span name (`GET /checkout/{id}`).
    pub name: String,
    /// SERVER spans with a duration.
    pub requests: u64,
    /// Their summed duration, ms.
    pub total_ms: f64,
    /// Of which not spent waiting for a downstream call, ms.
    pub self_ms: f64,
    /// Time waiting for each downstream service (largest first).
    pub downstream: Vec<DownstreamTime>,
}

/// Time an endpoint spent waiting for one downstream service.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct DownstreamTime {
    /// Downstream service.
    pub service: String,
    /// Protocol.
    pub protocol: String,
    /// Calls.
    pub calls: u64,
    /// Summed duration of the calls (clipped to the parent span), ms.
    pub total_ms: f64,
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
    /// What the rows share, by [`RequestRow::ends`].
    pub(crate) ends: Vec<Ends>,
    /// Mixed into span and trace ids, so that two captures do not give the same ids.
    pub(crate) id_seed: u64,
}

/// The [`Ends`] of row `r` among `ends` ([`Ends::NONE`] for an id out of range).
pub(crate) fn ends_of<'a>(ends: &'a [Ends], r: &RequestRow) -> &'a Ends {
    ends.get(r.ends as usize).unwrap_or(&Ends::NONE)
}

/// Bits of a span id that number the span within its capture (the rest is the capture's seed).
const SPAN_NUMBER_BITS: u32 = 40;

impl RequestTable {
    /// Number of requests.
    pub fn len(&self) -> usize {
        self.rows.len()
    }

    /// No requests.
    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// String `id` of the pool.
    pub(crate) fn string(&self, id: u32) -> &str {
        self.s(id)
    }

    fn s(&self, id: u32) -> &str {
        self.strings
            .get(id as usize)
            .map(String::as_str)
            .unwrap_or("")
    }

    /// The [`Ends`] of row `r` ([`Ends::NONE`] for an id out of range).
    pub(crate) fn ends_of(&self, r: &RequestRow) -> &Ends {
        ends_of(&self.ends, r)
    }

    /// The `i`-th request.
    pub fn get(&self, i: usize) -> Option<RequestView<'_>> {
        let r = self.rows.get(i)?;
        let e = self.ends_of(r);
        let lat = |v: u64| (v != NO_LATENCY).then_some(v);
        Some(RequestView {
            ts_ns: r.ts_ns,
            client: self.s(e.client),
            server: self.s(e.server),
            protocol: self.s(e.protocol),
            method: self.s(r.method),
            target: self.s(r.target),
            route: self.s(r.route),
            status: self.s(r.status),
            error: r.error(),
            latency_ns: lat(r.latency_ns),
            server_latency_ns: lat(r.server_latency_ns),
            trace_id: (r.trace_id() != EMPTY).then(|| self.s(r.trace_id())),
            node: self.s(e.node),
        })
    }

    /// All requests in time order.
    pub fn iter(&self) -> impl Iterator<Item = RequestView<'_>> + '_ {
        (0..self.rows.len()).filter_map(move |i| self.get(i))
    }

    /// Span id of row `i`'s span of `kind` (never 0): the capture's seed in the top 24 bits,
    /// the span's number (`2i + 1` for a CLIENT span, `2i + 2` for a SERVER span) in the low
    /// 40. Ids are structured, not random: unique within a capture (and, by the seed, across
    /// captures), and the ids of a table in time order are nearly consecutive, so that a
    /// column of them (Parquet, CSV under gzip) compresses to almost nothing where random ids
    /// cost 8 bytes each. Nothing reads randomness from span ids.
    pub fn span_id(&self, i: usize, kind: SpanKind) -> u64 {
        let k = match kind {
            SpanKind::Client => 1,
            SpanKind::Server => 2,
        };
        let number = ((i as u64) << 1).wrapping_add(k) & ((1 << SPAN_NUMBER_BITS) - 1);
        ((self.id_seed >> SPAN_NUMBER_BITS) << SPAN_NUMBER_BITS | number).max(1)
    }

    /// Trace id of the trace whose root is row `root` (never 0): the capture's seed in the
    /// high 64 bits, the root's row number plus one in the low 64. Structured like the span
    /// ids (see [`RequestTable::span_id`]); the W3C "random" trace flag is never claimed, so
    /// a sampler that needs random bits hashes the id (as the OpenTelemetry Collector's
    /// probabilistic sampler does by default).
    pub fn trace_id_of_root(&self, root: usize) -> u128 {
        let number = (root as u64).wrapping_add(1);
        ((u128::from(self.id_seed) << 64) | u128::from(number)).max(1)
    }

    /// Row whose SERVER span is the parent of row `i`'s top span (its CLIENT span when the
    /// client was captured, else its SERVER span); `None` for a root.
    pub fn parent_of(&self, i: usize) -> Option<usize> {
        let p = self.rows.get(i)?.spans.parent;
        (p != NO_ROW).then_some(p as usize)
    }

    /// Row of the root of row `i`'s trace.
    pub fn root_of(&self, i: usize) -> usize {
        self.rows.get(i).map(|r| r.spans.root as usize).unwrap_or(i)
    }

    /// Row `i`'s spans: its CLIENT span, then its SERVER span (each when captured).
    pub fn spans_of(&self, i: usize) -> impl Iterator<Item = SpanView<'_>> + '_ {
        [SpanKind::Client, SpanKind::Server]
            .into_iter()
            .filter_map(move |k| self.span(i, k))
    }

    /// Every span, row by row (time order of the rows).
    pub fn spans(&self) -> impl Iterator<Item = SpanView<'_>> + '_ {
        (0..self.rows.len()).flat_map(move |i| self.spans_of(i))
    }

    /// Row `i`'s span of `kind`, if that end was captured.
    pub fn span(&self, i: usize, kind: SpanKind) -> Option<SpanView<'_>> {
        let r = self.rows.get(i)?;
        let f = &r.spans;
        let e = self.ends_of(r);
        let lat = |v: u64| (v != NO_LATENCY).then_some(v);
        let trace_id = self.trace_id_of_root(f.root as usize);
        let top_parent = self.parent_of(i).map(|p| self.span_id(p, SpanKind::Server));
        let (link, confidence) = (f.link, f64::from(f.confidence) / 100.0);
        let v = match kind {
            SpanKind::Client if f.client() => SpanView {
                request: i,
                trace_id,
                span_id: self.span_id(i, SpanKind::Client),
                parent_span_id: top_parent,
                kind,
                service: self.s(e.client),
                peer: self.s(e.server),
                protocol: self.s(e.protocol),
                method: self.s(r.method),
                route: self.s(r.route),
                target: self.s(r.target),
                status: self.s(r.status),
                error: r.error(),
                start_ns: r.ts_ns,
                duration_ns: lat(r.latency_ns),
                link,
                confidence,
                node: self.s(e.client_node),
                pid: e.client_pid,
                tid: f.client_tid,
                server_address: self.s(e.server_addr),
                client_address: self.s(e.client_addr),
            },
            SpanKind::Server if f.server() => {
                let (parent_span_id, link, confidence) = if f.client() {
                    (
                        Some(self.span_id(i, SpanKind::Client)),
                        Link::Connection,
                        1.0,
                    )
                } else {
                    (top_parent, link, confidence)
                };
                SpanView {
                    request: i,
                    trace_id,
                    span_id: self.span_id(i, SpanKind::Server),
                    parent_span_id,
                    kind,
                    service: self.s(e.server),
                    peer: self.s(e.client),
                    protocol: self.s(e.protocol),
                    method: self.s(r.method),
                    route: self.s(r.route),
                    target: self.s(r.target),
                    status: self.s(r.status),
                    error: r.error(),
                    start_ns: f.server_ts_ns,
                    duration_ns: lat(r.server_latency_ns),
                    link,
                    confidence,
                    node: self.s(e.server_node),
                    pid: e.server_pid,
                    tid: f.server_tid,
                    server_address: self.s(e.server_addr),
                    client_address: self.s(e.client_addr),
                }
            }
            _ => return None,
        };
        Some(v)
    }

    /// The rows of each of the traces rooted at `roots`, in time order (one pass over the
    /// table).
    pub fn rows_of_traces(&self, roots: &[usize]) -> std::collections::BTreeMap<usize, Vec<usize>> {
        let mut out: std::collections::BTreeMap<usize, Vec<usize>> =
            roots.iter().map(|&r| (r, Vec::new())).collect();
        for (i, r) in self.rows.iter().enumerate() {
            if let Some(v) = out.get_mut(&(r.spans.root as usize)) {
                v.push(i);
            }
        }
        out
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
    /// Clock offset of every node against the first (several nodes only): estimated from
    /// the connections between them, corrected before the merge.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub clock_offsets: Vec<retrace_replay::ClockOffset>,
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
    /// How much of the traffic the trace linking covered.
    #[serde(default)]
    pub trace_coverage: TraceCoverage,
    /// Where each endpoint's time went (sorted by service, name).
    #[serde(default)]
    pub time_breakdown: Vec<TimeBreakdown>,
    /// Service level objectives, burn-rate breaches and alert rules.
    #[serde(default)]
    pub slo: crate::slo::SloReport,
    /// Every trace, by the time of its root; not in summary.json (traces.csv).
    #[serde(skip)]
    pub traces: Vec<TraceSummary>,
    /// Trace linking was skipped (`--no-traces`): no spans.csv, traces.csv or waterfalls.
    #[serde(skip)]
    pub traces_skipped: bool,
    /// Every request, in time order (for requests.csv); not in summary.json.
    #[serde(skip)]
    pub requests: RequestTable,
    /// What went wrong, where, when and why (the findings engine), by start time.
    #[serde(default)]
    pub findings: Vec<Finding>,
    /// TCP time series per edge (tcp.csv); not in summary.json.
    #[serde(skip)]
    pub tcp: Vec<TcpPoint>,
    /// DNS per resolver and name (dns.csv); not in summary.json.
    #[serde(skip)]
    pub dns: Vec<DnsStats>,
    /// Log events and patterns (logs.csv, log_patterns.csv); not in summary.json.
    #[serde(skip)]
    pub logs: crate::logs::LogReport,
    /// Memory-leak suspects, memory over time, CPU and off-CPU profiles (`crate::profiles`).
    #[serde(default, skip_serializing_if = "crate::profiles::Profiles::is_empty")]
    pub profiles: crate::profiles::Profiles,
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

// ---------------------------------------------------------------------------------------------
// Findings (issue 12): what went wrong, where, when and why. Made by `crate::findings`.

/// How bad a finding is.
#[derive(
    Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default,
)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    /// Worth knowing, not a problem by itself.
    #[default]
    Info,
    /// Something deserves a look.
    Warning,
    /// Clearly broken.
    Critical,
}

impl Severity {
    /// `info`, `warning` or `critical`.
    pub fn name(self) -> &'static str {
        match self {
            Severity::Info => "info",
            Severity::Warning => "warning",
            Severity::Critical => "critical",
        }
    }
}

/// One thing that went wrong: when, where, what, why, and the evidence.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
pub struct Finding {
    /// `F1`, `F2`... in the order of the findings (by start time); other findings refer to it.
    pub id: String,
    /// Start, wall ns since the epoch.
    pub start_ns: u64,
    /// End, wall ns since the epoch.
    pub end_ns: u64,
    /// How bad.
    pub severity: Severity,
    /// `connection_failures`, `retransmits`, `zero_window`, `resets`, `upstream_errors`,
    /// `upstream_latency`, `errors`, `dns`, `oom_kill`, `restart`, `log_errors`,
    /// `memory_leak`, `memory_growth`.
    pub kind: String,
    /// The service it is about.
    pub service: String,
    /// The edge it is about (`client -> server`), empty when none.
    pub edge: String,
    /// Processes involved (`node/pid comm`), empty when none.
    pub processes: Vec<String>,
    /// One sentence: what happened.
    pub summary: String,
    /// Why, as far as the capture tells.
    pub likely_cause: String,
    /// The evidence, one fact a line (counts, before/during, process events, sample requests).
    pub evidence: Vec<String>,
    /// The findings this one follows from (ids), for a chain.
    pub caused_by: Vec<String>,
    /// Rows of requests.csv that illustrate it (a few).
    pub sample_requests: Vec<usize>,
}

/// One bucket of one edge's TCP time series (tcp.csv).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
pub struct TcpPoint {
    /// Bucket start, wall ns.
    pub ts_ns: u64,
    /// Client service.
    pub client: String,
    /// Server service.
    pub server: String,
    /// Connections established by the client in the bucket.
    pub connects: u64,
    /// Connection attempts that failed.
    pub failed_connects: u64,
    /// The failures by cause (`ECONNREFUSED:3 ETIMEDOUT:1`).
    pub failure_cause: String,
    /// Segments retransmitted (either end).
    pub retransmits: u64,
    /// Of those, SYN-ACKs the server sent again (handshakes it had to repeat).
    pub synack_retransmits: u64,
    /// Socket-sampler passes that found the client unable to send: the server advertised a
    /// zero window (it stopped reading requests).
    pub zero_window_client: u64,
    /// Passes that found the server unable to send: the client stopped reading responses.
    pub zero_window_server: u64,
    /// Median smoothed RTT sampled by the client, µs.
    pub rtt_p50_us: Option<u32>,
    /// 99th percentile smoothed RTT, µs.
    pub rtt_p99_us: Option<u32>,
    /// Resets the client sent (received by the server's side).
    pub resets_sent: u64,
    /// Resets the client received.
    pub resets_received: u64,
    /// Connections opened (the clients' connects; a server's accepts when its client was not
    /// captured).
    pub opened: u64,
    /// Connections closed.
    pub closed: u64,
    /// Median lifetime of the connections closed in the bucket (opening seen), ms.
    pub lifetime_p50_ms: Option<f64>,
    /// 99th percentile lifetime, ms.
    pub lifetime_p99_ms: Option<f64>,
    /// Bytes from client to server.
    pub bytes_sent: u64,
    /// Bytes from server to client.
    pub bytes_received: u64,
}

/// DNS queries to one resolver for one name (dns.csv).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
pub struct DnsStats {
    /// The resolver (server service).
    pub resolver: String,
    /// The name asked.
    pub name: String,
    /// Queries.
    pub queries: u64,
    /// Answered NXDOMAIN.
    pub nxdomain: u64,
    /// Answered with a server error (SERVFAIL, REFUSED...).
    pub server_errors: u64,
    /// Never answered.
    pub timeouts: u64,
    /// Median latency of answered queries, ms.
    pub p50_ms: Option<f64>,
    /// 95th percentile, ms.
    pub p95_ms: Option<f64>,
    /// First query, wall ns.
    pub first_ns: u64,
    /// Last query, wall ns.
    pub last_ns: u64,
}
