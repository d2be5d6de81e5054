//! `retrace export otlp CAPTURE... --out traces.json`: every span of the analysis as OTLP/JSON.
//!
//! The file is one `ExportTraceServiceRequest` in the OTLP/JSON encoding
//! (`{"resourceSpans":[...]}`): one resource per (service, node) with `service.name` and
//! `host.name`, one scope `retrace`, and its spans in time order, one per line. As the OTLP
//! specification asks of JSON (and unlike protobuf's canonical JSON mapping), trace and span
//! ids are lower-case hex, enums (`kind`, `status.code`) are integers; 64-bit integers
//! (times, `intValue`) are decimal strings.
//!
//! Attributes follow the OpenTelemetry semantic conventions: HTTP
//! (`http.request.method`, `url.path`, `url.query`, `http.route` on SERVER spans,
//! `http.response.status_code`), databases (`db.system`, `db.operation.name`,
//! `db.query.text` for SQL: the statement as captured, secrets already redacted by the
//! capture), gRPC (`rpc.*`), DNS (`dns.question.name`), the network ends (`server.address`,
//! `server.port`, `client.address`, `client.port`, `network.protocol.name`), the process
//! (`process.pid`, `thread.id`), and ours: `retrace.link` (the rule that gave the span its
//! parent) and `retrace.link.confidence`. A span's status is ERROR (code 2) when the analysis
//! marked it failed, and as OpenTelemetry has it for HTTP: a SERVER span on 5xx, a CLIENT span
//! on 4xx and 5xx; the message is the status seen (`HTTP 502`, `ECONNREFUSED`, ...).
//!
//! With `--batch N` the file is JSON Lines instead: each line a complete request of one
//! resource and at most N spans (what the Collector's `otlpjsonfile` receiver reads; small
//! enough to send line by line to an OTLP/HTTP endpoint).
//!
//! The file is written as it goes (through a buffer): a first pass over the spans groups them
//! by resource (two numbers a span), the second writes each resource's spans.

use std::borrow::Cow;
use std::collections::HashMap;
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use retrace_analyze::{Analysis, Link, SpanKind, SpanView};

use crate::cmd::analyze::Input;

/// Arguments of `retrace export otlp`.
#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(flatten)]
    input: Input,
    /// File to write (`-`: standard output).
    #[arg(long, short, value_name = "FILE.json")]
    out: PathBuf,
    /// Write JSON Lines: one complete request of at most N spans (of one resource) per line,
    /// as the Collector's `otlpjsonfile` receiver reads, and small enough for an OTLP/HTTP
    /// endpoint's request limit when each line is sent on its own.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    batch: Option<u32>,
}

/// Runs `retrace export otlp`.
pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let t0 = Instant::now();
    let analysis = args.input.analyze()?;
    let t1 = Instant::now();
    let layout = match args.batch {
        Some(n) => Layout::Lines(n as usize),
        None => Layout::Document,
    };
    let stats = super::write_output(&args.out, |w| write_otlp(&analysis, layout, w))?;
    if !args.input.quiet {
        eprintln!(
            "{} spans of {} traces, {} resources (service, node), {} request(s) written to {} \
             (analysis {:.2} s, export {:.2} s)",
            stats.spans,
            analysis.traces.len(),
            stats.resources,
            stats.requests,
            args.out.display(),
            (t1 - t0).as_secs_f64(),
            t1.elapsed().as_secs_f64(),
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// What [`write_otlp`] wrote.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct OtlpStats {
    /// Spans.
    pub spans: u64,
    /// Resources: (service, node) pairs.
    pub resources: u64,
    /// `ExportTraceServiceRequest`s (lines with [`Layout::Lines`], else 1).
    pub requests: u64,
}

/// How the spans are laid out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Layout {
    /// One request holding every resource, a span a line.
    Document,
    /// JSON Lines: one request a line, of one resource and at most this many spans.
    Lines(usize),
}

/// The scope every span is under.
const SCOPE: &str = "retrace";

/// Writes every span of `a` as OTLP/JSON `ExportTraceServiceRequest`s: one, or one a line.
pub fn write_otlp(a: &Analysis, layout: Layout, w: &mut dyn Write) -> std::io::Result<OtlpStats> {
    // Pass 1: the resources, and each one's spans (row, kind) in time order.
    let mut index: HashMap<(&str, &str), usize> = HashMap::new();
    let mut resources: Vec<Resource<'_>> = Vec::new();
    for s in a.requests.spans() {
        let i = *index.entry((s.service, s.node)).or_insert_with(|| {
            resources.push(Resource {
                service: s.service,
                node: s.node,
                spans: Vec::new(),
            });
            resources.len() - 1
        });
        resources[i].spans.push((s.request, s.kind));
    }
    drop(index);
    resources.sort_unstable_by(|x, y| (x.service, x.node).cmp(&(y.service, y.node)));

    // Pass 2: write them.
    let mut stats = OtlpStats::default();
    let mut attrs: Vec<(&'static str, Value<'_>)> = Vec::new();
    let mut write_spans = |w: &mut dyn Write, spans: &[(usize, SpanKind)], sep: &[u8]| {
        let mut n = 0;
        for &(row, kind) in spans {
            let Some(s) = a.requests.span(row, kind) else {
                continue;
            };
            w.write_all(if n == 0 { &sep[1..] } else { sep })?;
            write_span(w, &s, &mut attrs)?;
            n += 1;
        }
        std::io::Result::Ok(n)
    };
    match layout {
        Layout::Document => {
            w.write_all(b"{\"resourceSpans\":[")?;
            for (ri, r) in resources.iter().enumerate() {
                w.write_all(if ri > 0 { b",\n" } else { b"\n" })?;
                write_resource_start(w, r)?;
                stats.spans += write_spans(w, &r.spans, b",\n")?;
                w.write_all(b"]}]}")?;
            }
            w.write_all(b"\n]}\n")?;
            stats.requests = 1;
        }
        Layout::Lines(n) => {
            for r in &resources {
                for chunk in r.spans.chunks(n.max(1)) {
                    w.write_all(b"{\"resourceSpans\":[")?;
                    write_resource_start(w, r)?;
                    stats.spans += write_spans(w, chunk, b",")?;
                    w.write_all(b"]}]}]}\n")?;
                    stats.requests += 1;
                }
            }
        }
    }
    stats.resources = resources.len() as u64;
    Ok(stats)
}

/// A resource's object up to its spans' opening bracket.
fn write_resource_start(w: &mut dyn Write, r: &Resource<'_>) -> std::io::Result<()> {
    w.write_all(b"{\"resource\":{\"attributes\":[")?;
    let service_name = if r.service.is_empty() {
        "unknown_service"
    } else {
        r.service
    };
    write_attr(w, "service.name", &Value::Str(service_name.into()))?;
    if !r.node.is_empty() {
        w.write_all(b",")?;
        write_attr(w, "host.name", &Value::Str(r.node.into()))?;
    }
    w.write_all(b"]},\"scopeSpans\":[{\"scope\":{\"name\":")?;
    json_str(w, SCOPE)?;
    w.write_all(b",\"version\":")?;
    json_str(w, env!("CARGO_PKG_VERSION"))?;
    w.write_all(b"},\"spans\":[")
}

/// The spans of one (service, node): rows and kinds, in time order.
struct Resource<'a> {
    service: &'a str,
    node: &'a str,
    spans: Vec<(usize, SpanKind)>,
}

/// An attribute's value.
#[derive(Clone, Debug, PartialEq)]
enum Value<'a> {
    Str(Cow<'a, str>),
    Int(i64),
    Double(f64),
}

/// One span object.
fn write_span<'a>(
    w: &mut dyn Write,
    s: &SpanView<'a>,
    attrs: &mut Vec<(&'static str, Value<'a>)>,
) -> std::io::Result<()> {
    write!(
        w,
        "{{\"traceId\":\"{:032x}\",\"spanId\":\"{:016x}\"",
        s.trace_id, s.span_id
    )?;
    if let Some(p) = s.parent_span_id {
        write!(w, ",\"parentSpanId\":\"{p:016x}\"")?;
    }
    w.write_all(b",\"name\":")?;
    json_str(w, &s.name())?;
    let end = s.start_ns.saturating_add(s.duration_ns.unwrap_or(0));
    write!(
        w,
        ",\"kind\":{},\"startTimeUnixNano\":\"{}\",\"endTimeUnixNano\":\"{end}\",\"attributes\":[",
        otlp_kind(s.kind),
        s.start_ns
    )?;
    span_attributes(s, attrs);
    for (i, (k, v)) in attrs.iter().enumerate() {
        if i > 0 {
            w.write_all(b",")?;
        }
        write_attr(w, k, v)?;
    }
    w.write_all(b"]")?;
    if let Some(message) = error_message(s) {
        w.write_all(b",\"status\":{\"code\":2,\"message\":")?;
        json_str(w, &message)?;
        w.write_all(b"}")?;
    }
    w.write_all(b"}")
}

/// `SPAN_KIND_SERVER` (2) or `SPAN_KIND_CLIENT` (3).
fn otlp_kind(k: SpanKind) -> u8 {
    match k {
        SpanKind::Server => 2,
        SpanKind::Client => 3,
    }
}

/// A JSON string, escaped as JSON requires (quote, backslash, control characters).
pub(super) fn json_str(w: &mut dyn Write, s: &str) -> std::io::Result<()> {
    serde_json::to_writer(w, s).map_err(std::io::Error::from)
}

/// `{"key":K,"value":{...}}`.
fn write_attr(w: &mut dyn Write, key: &str, v: &Value<'_>) -> std::io::Result<()> {
    w.write_all(b"{\"key\":")?;
    json_str(w, key)?;
    match v {
        Value::Str(s) => {
            w.write_all(b",\"value\":{\"stringValue\":")?;
            json_str(w, s)?;
            w.write_all(b"}}")
        }
        // int64 is a decimal string in the proto3 JSON mapping.
        Value::Int(i) => write!(w, ",\"value\":{{\"intValue\":\"{i}\"}}}}"),
        Value::Double(d) => {
            w.write_all(b",\"value\":{\"doubleValue\":")?;
            // Finite by construction (a share); JSON has no NaN.
            serde_json::to_writer(&mut *w, &if d.is_finite() { *d } else { 0.0 })
                .map_err(std::io::Error::from)?;
            w.write_all(b"}}")
        }
    }
}

fn is_http(protocol: &str) -> bool {
    matches!(protocol, "http" | "http2" | "grpc")
}

fn is_sql(protocol: &str) -> bool {
    matches!(protocol, "postgres" | "mysql")
}

/// The HTTP status code of an HTTP span (`None` for other protocols, gRPC's named statuses
/// and spans without a response).
fn http_status(s: &SpanView<'_>) -> Option<u16> {
    if !matches!(s.protocol, "http" | "http2") {
        return None;
    }
    s.status
        .parse::<u16>()
        .ok()
        .filter(|c| (100..=599).contains(c))
}

/// Whether the span is an error for OpenTelemetry: failed in the analysis, or an HTTP status
/// that is an error for its kind (SERVER: 5xx, CLIENT: 4xx and 5xx).
fn is_otel_error(s: &SpanView<'_>) -> bool {
    s.error
        || match (http_status(s), s.kind) {
            (Some(c), SpanKind::Server) => c >= 500,
            (Some(c), SpanKind::Client) => c >= 400,
            (None, _) => false,
        }
}

/// The status message of an error span (see [`is_otel_error`]): `HTTP 502`, else the status
/// seen.
fn error_message(s: &SpanView<'_>) -> Option<String> {
    if !is_otel_error(s) {
        return None;
    }
    Some(match http_status(s) {
        Some(c) => format!("HTTP {c}"),
        None if s.status.is_empty() => "failed".to_string(),
        None => s.status.to_string(),
    })
}

/// `db.system` of a protocol.
fn db_system(protocol: &str) -> Option<&'static str> {
    match protocol {
        "postgres" => Some("postgresql"),
        "mysql" => Some("mysql"),
        "redis" => Some("redis"),
        "memcached" => Some("memcached"),
        _ => None,
    }
}

/// `network.protocol.name` (and version) of a protocol.
fn network_protocol(protocol: &str) -> Option<(&'static str, Option<&'static str>)> {
    match protocol {
        "http" => Some(("http", None)),
        "http2" | "grpc" => Some(("http", Some("2"))),
        "postgres" => Some(("postgresql", None)),
        "mysql" => Some(("mysql", None)),
        "redis" => Some(("redis", None)),
        "memcached" => Some(("memcached", None)),
        "dns" => Some(("dns", None)),
        _ => None,
    }
}

/// The operation of a SQL statement: its first keyword, upper case (`SELECT`, `BEGIN`).
fn sql_operation(statement: &str) -> Option<String> {
    let word: &str = statement
        .trim_start_matches(|c: char| c.is_whitespace() || c == '(')
        .split(|c: char| !c.is_ascii_alphabetic())
        .next()
        .unwrap_or("");
    (!word.is_empty()).then(|| word.to_ascii_uppercase())
}

/// `ip:port` or `[ip6]:port` split into address and port.
fn split_host_port(a: &str) -> Option<(&str, u16)> {
    let (host, port) = a.rsplit_once(':')?;
    let port: u16 = port.parse().ok()?;
    let host = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    (!host.is_empty()).then_some((host, port))
}

/// The numeric code of a gRPC status name.
fn grpc_code(name: &str) -> Option<i64> {
    const NAMES: [&str; 17] = [
        "OK",
        "CANCELLED",
        "UNKNOWN",
        "INVALID_ARGUMENT",
        "DEADLINE_EXCEEDED",
        "NOT_FOUND",
        "ALREADY_EXISTS",
        "PERMISSION_DENIED",
        "RESOURCE_EXHAUSTED",
        "FAILED_PRECONDITION",
        "ABORTED",
        "OUT_OF_RANGE",
        "UNIMPLEMENTED",
        "INTERNAL",
        "UNAVAILABLE",
        "DATA_LOSS",
        "UNAUTHENTICATED",
    ];
    NAMES.iter().position(|n| *n == name).map(|i| i as i64)
}

/// The span's attributes, into `out` (cleared first).
fn span_attributes<'a>(s: &SpanView<'a>, out: &mut Vec<(&'static str, Value<'a>)>) {
    out.clear();
    let p = s.protocol;
    let st = |v: &'a str| Value::Str(Cow::Borrowed(v));
    if is_http(p) {
        if !s.method.is_empty() {
            out.push(("http.request.method", st(s.method)));
        }
        if !s.target.is_empty() {
            let (path, query) = match s.target.split_once('?') {
                Some((path, query)) => (path, Some(query)),
                None => (s.target, None),
            };
            out.push(("url.path", st(path)));
            if let Some(q) = query {
                out.push(("url.query", st(q)));
            }
        }
        if s.kind == SpanKind::Server && !s.route.is_empty() {
            out.push(("http.route", st(s.route)));
        }
        if let Some(c) = http_status(s) {
            out.push(("http.response.status_code", Value::Int(i64::from(c))));
        }
        if p == "grpc" {
            out.push(("rpc.system", st("grpc")));
            let full = s.route.strip_prefix('/').unwrap_or(s.route);
            if let Some((service, method)) = full.rsplit_once('/') {
                out.push(("rpc.service", st(service)));
                out.push(("rpc.method", st(method)));
            }
            if let Some(c) = grpc_code(s.status) {
                out.push(("rpc.grpc.status_code", Value::Int(c)));
            }
        }
    } else if let Some(system) = db_system(p) {
        out.push(("db.system", st(system)));
        let op = if is_sql(p) {
            sql_operation(s.target)
                .or_else(|| sql_operation(s.route))
                .map(Cow::Owned)
                .unwrap_or(Cow::Borrowed(s.method))
        } else {
            Cow::Owned(s.method.to_ascii_uppercase())
        };
        if !op.is_empty() {
            out.push(("db.operation.name", Value::Str(op)));
        }
        if is_sql(p) && !s.target.is_empty() {
            out.push(("db.query.text", st(s.target)));
        }
    } else if p == "dns" && !s.target.is_empty() {
        out.push(("dns.question.name", st(s.target)));
    }
    if let Some((host, port)) = split_host_port(s.server_address) {
        out.push(("server.address", st(host)));
        out.push(("server.port", Value::Int(i64::from(port))));
    }
    if let Some((host, port)) = split_host_port(s.client_address) {
        out.push(("client.address", st(host)));
        out.push(("client.port", Value::Int(i64::from(port))));
    }
    if let Some((name, version)) = network_protocol(p) {
        out.push(("network.protocol.name", st(name)));
        if let Some(v) = version {
            out.push(("network.protocol.version", st(v)));
        }
    }
    if s.pid != 0 {
        out.push(("process.pid", Value::Int(i64::from(s.pid))));
    }
    if s.tid != 0 {
        out.push(("thread.id", Value::Int(i64::from(s.tid))));
    }
    if is_otel_error(s) {
        let kind = match http_status(s) {
            Some(c) => Cow::Owned(c.to_string()),
            None if s.status.is_empty() => Cow::Borrowed("_OTHER"),
            None => Cow::Borrowed(s.status),
        };
        out.push(("error.type", Value::Str(kind)));
    }
    if s.link != Link::Root {
        out.push(("retrace.link", st(s.link.name())));
        out.push(("retrace.link.confidence", Value::Double(s.confidence)));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn span<'a>(protocol: &'a str, kind: SpanKind, status: &'a str, error: bool) -> SpanView<'a> {
        SpanView {
            request: 0,
            trace_id: 0x0102_0304_0506_0708_090a_0b0c_0d0e_0f10,
            span_id: 0xab,
            parent_span_id: Some(0xcd),
            kind,
            service: "api",
            peer: "users",
            protocol,
            method: "GET",
            route: "/users/{id}",
            target: "/users/7?x=1&y=\"2\"",
            status,
            error,
            start_ns: 1_700_000_000_000_000_000,
            duration_ns: Some(1_500_000),
            link: Link::Thread,
            confidence: 0.75,
            node: "n1",
            pid: 10,
            tid: 11,
            server_address: "127.0.0.1:8080",
            client_address: "[::1]:40000",
        }
    }

    fn render(s: &SpanView<'_>) -> serde_json::Value {
        let mut buf = Vec::new();
        write_span(&mut buf, s, &mut Vec::new()).expect("write");
        serde_json::from_slice(&buf).expect("valid JSON")
    }

    fn attr<'v>(v: &'v serde_json::Value, key: &str) -> Option<&'v serde_json::Value> {
        v["attributes"]
            .as_array()
            .expect("attributes")
            .iter()
            .find(|a| a["key"] == key)
            .map(|a| &a["value"])
    }

    #[test]
    fn http_server_span() {
        let v = render(&span("http", SpanKind::Server, "404", false));
        assert_eq!(v["traceId"], "0102030405060708090a0b0c0d0e0f10");
        assert_eq!(v["spanId"], "00000000000000ab");
        assert_eq!(v["parentSpanId"], "00000000000000cd");
        assert_eq!(v["name"], "GET /users/{id}");
        assert_eq!(v["kind"], 2);
        assert_eq!(v["startTimeUnixNano"], "1700000000000000000");
        assert_eq!(v["endTimeUnixNano"], "1700000000001500000");
        assert_eq!(
            attr(&v, "url.path").expect("path")["stringValue"],
            "/users/7"
        );
        assert_eq!(
            attr(&v, "url.query").expect("query")["stringValue"],
            "x=1&y=\"2\""
        );
        assert_eq!(
            attr(&v, "http.route").expect("route")["stringValue"],
            "/users/{id}"
        );
        assert_eq!(
            attr(&v, "http.response.status_code").expect("code")["intValue"],
            "404"
        );
        assert_eq!(attr(&v, "client.address").expect("c")["stringValue"], "::1");
        assert_eq!(attr(&v, "client.port").expect("c")["intValue"], "40000");
        assert_eq!(attr(&v, "server.port").expect("s")["intValue"], "8080");
        assert_eq!(
            attr(&v, "retrace.link").expect("l")["stringValue"],
            "thread"
        );
        assert_eq!(
            attr(&v, "retrace.link.confidence").expect("c")["doubleValue"],
            0.75
        );
        // 404 is no error for the server.
        assert!(v.get("status").is_none(), "{v}");
        assert!(attr(&v, "error.type").is_none());
    }

    #[test]
    fn error_status_by_kind_and_flag() {
        // A client span: 4xx is an error; no route attribute.
        let v = render(&span("http", SpanKind::Client, "404", false));
        assert_eq!(v["kind"], 3);
        assert_eq!(v["status"]["code"], 2);
        assert_eq!(v["status"]["message"], "HTTP 404");
        assert_eq!(attr(&v, "error.type").expect("type")["stringValue"], "404");
        assert!(attr(&v, "http.route").is_none());
        // A server span: 5xx.
        let v = render(&span("http", SpanKind::Server, "503", true));
        assert_eq!(v["status"]["message"], "HTTP 503");
        // Failed without an HTTP status: the status seen.
        let mut s = span("tcp", SpanKind::Client, "ECONNREFUSED", true);
        s.duration_ns = None;
        let v = render(&s);
        assert_eq!(v["status"]["message"], "ECONNREFUSED");
        assert_eq!(v["endTimeUnixNano"], v["startTimeUnixNano"]);
        let v = render(&span("redis", SpanKind::Client, "", true));
        assert_eq!(v["status"]["message"], "failed");
        assert_eq!(
            attr(&v, "error.type").expect("type")["stringValue"],
            "_OTHER"
        );
    }

    #[test]
    fn database_attributes() {
        let mut s = span("postgres", SpanKind::Client, "OK", false);
        s.method = "query";
        s.route = "SELECT price FROM products WHERE id = ?";
        s.target = "  select price FROM products WHERE id = 4";
        let v = render(&s);
        assert_eq!(v["name"], "SELECT price FROM products WHERE id = ?");
        assert_eq!(
            attr(&v, "db.system").expect("sys")["stringValue"],
            "postgresql"
        );
        assert_eq!(
            attr(&v, "db.operation.name").expect("op")["stringValue"],
            "SELECT"
        );
        assert_eq!(
            attr(&v, "db.query.text").expect("text")["stringValue"],
            "  select price FROM products WHERE id = 4"
        );
        assert!(attr(&v, "url.path").is_none());
        let mut s = span("redis", SpanKind::Server, "OK", false);
        s.method = "get";
        s.route = "GET";
        s.target = "user:1";
        let v = render(&s);
        assert_eq!(
            attr(&v, "db.operation.name").expect("op")["stringValue"],
            "GET"
        );
        assert!(attr(&v, "db.query.text").is_none());
        assert_eq!(
            attr(&v, "network.protocol.name").expect("p")["stringValue"],
            "redis"
        );
    }

    #[test]
    fn grpc_attributes() {
        let mut s = span("grpc", SpanKind::Server, "UNAVAILABLE", true);
        s.method = "POST";
        s.route = "/shop.Cart/Add";
        s.target = "/shop.Cart/Add";
        let v = render(&s);
        assert_eq!(
            attr(&v, "rpc.service").expect("s")["stringValue"],
            "shop.Cart"
        );
        assert_eq!(attr(&v, "rpc.method").expect("m")["stringValue"], "Add");
        assert_eq!(
            attr(&v, "rpc.grpc.status_code").expect("c")["intValue"],
            "14"
        );
        assert_eq!(
            attr(&v, "network.protocol.version").expect("v")["stringValue"],
            "2"
        );
        assert_eq!(v["status"]["message"], "UNAVAILABLE");
    }

    #[test]
    fn hostile_strings_are_escaped() {
        // Quotes, backslashes, every control character, DEL, U+2028, the replacement character
        // left by invalid UTF-8, and a would-be end of the document.
        let mut hostile: String = (0u8..0x20).map(char::from).collect();
        hostile.push_str("\"\\/\u{7f}\u{2028}\u{fffd}é\"}]}\n{\"x\":1");
        let mut s = span("http", SpanKind::Server, "200", false);
        s.target = &hostile;
        s.route = &hostile;
        s.status = &hostile;
        s.error = true;
        let v = render(&s);
        assert_eq!(
            attr(&v, "url.path").expect("path")["stringValue"],
            hostile.split_once('?').map_or(hostile.as_str(), |x| x.0)
        );
        assert_eq!(v["name"], format!("GET {hostile}"));
        assert_eq!(v["status"]["message"], hostile.as_str());
        let mut buf = Vec::new();
        json_str(&mut buf, &hostile).expect("write");
        let text = String::from_utf8(buf).expect("utf-8");
        assert!(!text.bytes().any(|b| b < 0x20), "{text:?}");
        assert!(text.starts_with("\"\\u0000\\u0001"), "{text}");
    }

    #[test]
    fn addresses_and_operations() {
        assert_eq!(split_host_port("127.0.0.1:5432"), Some(("127.0.0.1", 5432)));
        assert_eq!(split_host_port("[fe80::1]:53"), Some(("fe80::1", 53)));
        assert_eq!(split_host_port(""), None);
        assert_eq!(split_host_port("host:99999"), None);
        assert_eq!(split_host_port(":80"), None);
        assert_eq!(sql_operation("(select 1)"), Some("SELECT".to_string()));
        assert_eq!(sql_operation("BEGIN"), Some("BEGIN".to_string()));
        assert_eq!(sql_operation("?"), None);
        assert_eq!(grpc_code("OK"), Some(0));
        assert_eq!(grpc_code("UNAUTHENTICATED"), Some(16));
        assert_eq!(grpc_code("nope"), None);
    }
}
