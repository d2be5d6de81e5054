//! L7 protocol detection and parsing from captured payload prefixes, and redaction of secrets.
//!
//! The capture daemon keeps, for every L7 message it sees on a TCP socket, the first bytes of
//! the message (the *prefix*, 512 bytes by default) and its real size. This crate turns those
//! prefixes into [`Exchange`]s (a request paired with its response) offline, and holds the one
//! piece of parsing that must run at capture time: [`redact::redact_in_place`].
//!
//! - [`detect`] tells the protocol from the first bytes (never from the port).
//! - [`Session`] is one side of one TCP connection: feed it the messages of that socket in
//!   time order ([`Session::push`]) and it returns the exchanges it could pair, FIFO for the
//!   protocols that pipeline (HTTP/1, Redis, Memcached, PostgreSQL), by stream id for HTTP/2 and
//!   gRPC, by query id for DNS over TCP.
//! - [`dns::parse`] decodes a DNS message (UDP payloads come from the `dns` stream).
//!
//! Supported: HTTP/1.x (httparse), HTTP/2 and gRPC (HPACK via loona-hpack), PostgreSQL (startup,
//! simple and extended query protocol), MySQL/MariaDB (text and binary protocol), Redis (RESP2/3
//! and inline commands), Memcached (text and meta commands), DNS (simple-dns).
//!
//! **Invariant**: no input makes any function of this crate panic; bytes that cannot be parsed
//! are counted in [`ParseStats`]. Memory per session is bounded ([`MAX_PENDING`] requests).

use serde::Serialize;

pub mod dns;
mod http1;
mod http2;
mod memcached;
mod mysql;
mod postgres;
pub mod redact;
mod redis;
mod session;
mod util;

pub use session::{Session, MAX_PENDING};

/// The strings of an [`Exchange`]: short ones (methods, statuses, most paths and routes) are
/// stored inline, without an allocation.
pub type Text = compact_str::CompactString;

/// An application protocol recognized from the bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub enum Protocol {
    /// HTTP/1.0 and HTTP/1.1.
    Http1,
    /// HTTP/2 (cleartext, prior knowledge).
    Http2,
    /// gRPC over HTTP/2.
    Grpc,
    /// PostgreSQL frontend/backend protocol v3.
    Postgres,
    /// MySQL / MariaDB client/server protocol.
    Mysql,
    /// Redis RESP.
    Redis,
    /// Memcached text protocol.
    Memcached,
    /// DNS (over UDP, or TCP with its length prefix).
    Dns,
    /// Not recognized.
    Unknown,
}

impl Protocol {
    /// Short lower-case name: "http", "http2", "grpc", "postgres", "mysql", "redis",
    /// "memcached", "dns", "unknown".
    pub fn name(self) -> &'static str {
        match self {
            Protocol::Http1 => "http",
            Protocol::Http2 => "http2",
            Protocol::Grpc => "grpc",
            Protocol::Postgres => "postgres",
            Protocol::Mysql => "mysql",
            Protocol::Redis => "redis",
            Protocol::Memcached => "memcached",
            Protocol::Dns => "dns",
            Protocol::Unknown => "unknown",
        }
    }
}

impl std::fmt::Display for Protocol {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Which side of a connection a [`Session`] follows: the messages fed to it are written
/// (`egress`) or read by this side.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
pub enum Role {
    /// The side that connected: it writes requests and reads responses.
    Client,
    /// The side that accepted: it reads requests and writes responses.
    Server,
}

/// One request and (when seen) its response.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Exchange {
    /// Protocol of the exchange ([`Protocol::Grpc`] for gRPC calls on an HTTP/2 connection).
    pub protocol: Protocol,
    /// Timestamp of the first byte of the request (written by the client / read by the server).
    pub request_ts: u64,
    /// Timestamp of the first byte of the response (read by the client / written by the
    /// server); `None` when no response was seen.
    pub response_ts: Option<u64>,
    /// `GET`, `query`, `execute`, `SET`, `COM_QUERY`, `get`, DNS query type, ...
    pub method: Text,
    /// Path with query, query text, key, DNS name (truncated to 256 bytes).
    pub target: Text,
    /// Route template (`/users/{id}`), normalized statement, command.
    pub route: Text,
    /// `200`, `OK`, `ERROR 23505`, `WRONGTYPE`, `NXDOMAIN`, `NOT_FOUND` (gRPC) ...; empty when
    /// the response was not seen or could not be parsed.
    pub status: Text,
    /// 5xx, gRPC status other than OK, protocol error reply, database error, DNS server error.
    pub error: bool,
    /// Trace id of a W3C `traceparent` header, else of a B3 header (`b3`, `X-B3-TraceId`).
    pub trace_id: Option<Text>,
    /// `X-Request-ID` header.
    pub request_id: Option<Text>,
    /// `Host` header or `:authority`.
    pub host: Option<Text>,
    /// Bytes of the request (headers and body).
    pub request_bytes: u64,
    /// Bytes of the response.
    pub response_bytes: u64,
    /// Part of the request or response needed to parse it was beyond the captured prefix.
    pub truncated: bool,
    /// Where the response must end for it to be whole (HTTP/1 with a `Content-Length`), as a
    /// position in the bytes this side saw going the responses' way since it was first seen:
    /// a connection whose kernel count of bytes that way stays below it at its close cut the
    /// response off (the client got the status line, not the body).
    pub response_end: Option<u64>,
}

impl Exchange {
    /// Latency from the first byte of the request to the first byte of the response.
    pub fn latency_ns(&self) -> Option<u64> {
        self.response_ts.map(|r| r.saturating_sub(self.request_ts))
    }
}

/// What a [`Session`] saw, for the report's data-quality figures.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct ParseStats {
    /// Messages (pushes) fed.
    pub pushes: u64,
    /// Requests and responses recognized.
    pub messages: u64,
    /// Recognized messages whose end lies beyond the captured prefix.
    pub truncated: u64,
    /// Pushes that could not be parsed at all (unknown protocol, binary garbage).
    pub unparsed: u64,
    /// Pushes that continued a message already started (no new message in them).
    pub continuations: u64,
    /// Responses that matched no outstanding request.
    pub unmatched_responses: u64,
    /// Requests dropped from the pending queue because it was full.
    pub evicted: u64,
    /// Exchanges returned.
    pub exchanges: u64,
}

/// Tells the protocol of a connection from the first bytes written by its client.
pub fn detect(first_request_bytes: &[u8]) -> Protocol {
    detect_request(first_request_bytes, first_request_bytes.len() as u64)
}

/// Whether `b` starts with an HTTP/1 request line's method.
fn http1_method(b: &[u8]) -> bool {
    const METHODS: [&[u8]; 10] = [
        b"GET ",
        b"POST ",
        b"PUT ",
        b"DELETE ",
        b"HEAD ",
        b"OPTIONS ",
        b"PATCH ",
        b"CONNECT ",
        b"TRACE ",
        b"PROPFIND ",
    ];
    METHODS.iter().any(|m| {
        b.starts_with(m)
            && b.get(m.len())
                .is_some_and(|&c| c == b'/' || c == b'*' || c == b'h')
    })
}

/// [`detect`] on a request prefix of a message of real size `size`.
pub(crate) fn detect_request(b: &[u8], size: u64) -> Protocol {
    if b.is_empty() {
        return Protocol::Unknown;
    }
    if http2::is_preface(b) {
        return Protocol::Http2;
    }
    if http1_method(b) {
        return Protocol::Http1;
    }
    if mysql::looks_like_request(b, size) {
        return Protocol::Mysql;
    }
    if postgres::looks_like_request(b, size) {
        return Protocol::Postgres;
    }
    if redis::looks_like_request(b) {
        return Protocol::Redis;
    }
    if memcached::looks_like_request(b) {
        return Protocol::Memcached;
    }
    if dns::looks_like_tcp_query(b, size) || dns::looks_like_udp_query(b) {
        return Protocol::Dns;
    }
    Protocol::Unknown
}

/// Detection from the first bytes written by the server (for connections whose requests were
/// not captured, and protocols where the server speaks first).
pub(crate) fn detect_response(b: &[u8], size: u64) -> Protocol {
    if b.is_empty() {
        return Protocol::Unknown;
    }
    if b.starts_with(b"HTTP/1.") {
        return Protocol::Http1;
    }
    if mysql::looks_like_greeting(b) {
        return Protocol::Mysql;
    }
    if postgres::looks_like_response(b, size) {
        return Protocol::Postgres;
    }
    if http2::looks_like_server_start(b) {
        return Protocol::Http2;
    }
    if redis::looks_like_response(b) {
        return Protocol::Redis;
    }
    if memcached::looks_like_response(b) {
        return Protocol::Memcached;
    }
    Protocol::Unknown
}

/// A request start found in a pushed payload.
#[derive(Debug, Default)]
pub(crate) struct Req {
    pub protocol: Option<Protocol>,
    pub method: Text,
    pub target: Text,
    pub route: Text,
    pub trace_id: Option<Text>,
    pub request_id: Option<Text>,
    pub host: Option<Text>,
    /// Offset of the message in the push (turned into a length by the session).
    pub offset: u64,
    pub truncated: bool,
    /// Stream id (HTTP/2) or query id (DNS) that pairs the response.
    pub key: Option<u32>,
    /// Connection set-up (startup, authentication): reported only when it fails.
    pub hidden: bool,
}

/// A response (or part of one) found in a pushed payload.
#[derive(Debug, Default)]
pub(crate) struct Resp {
    /// Status to record; empty leaves the current one.
    pub status: Text,
    pub error: bool,
    pub offset: u64,
    pub truncated: bool,
    pub key: Option<u32>,
    /// The response is complete (no more messages of it will follow).
    pub complete: bool,
    /// Only carries a status for the current response, does not start a new one.
    pub continues: bool,
    /// Where the message ends, relative to the push (headers and declared body), when its
    /// length is known; may lie beyond the push (the body follows in later ones).
    pub end: Option<u64>,
}

/// What a parser made of a push.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// New messages (possibly none, e.g. a password message inside the startup phase).
    Parsed,
    /// Not the start of a message: bytes continuing one already started.
    Continuation,
    /// Not this protocol.
    Garbage,
}
