//! Pairing of requests and responses on one side of one TCP connection.

use std::collections::VecDeque;

use crate::{
    detect_request, detect_response, dns, http1, http2, memcached, mysql, postgres, redis,
    Exchange, Outcome, ParseStats, Protocol, Req, Resp, Role, Text,
};

/// Most requests a session keeps waiting for their responses; older ones are returned without
/// a response (and counted in [`ParseStats::evicted`]) when more arrive.
pub const MAX_PENDING: usize = 1024;

/// Pushes with a payload tried for detection before a session gives up on a connection.
const DETECT_ATTEMPTS: u32 = 8;

/// Protocol-specific parser state.
enum State {
    Unknown,
    Http1,
    Http2(Box<http2::State>),
    Postgres(postgres::State),
    Mysql(mysql::State),
    Redis,
    Memcached,
    Dns,
}

/// A request waiting for (the end of) its response: the exchange it will become, built in
/// place (no copies of its strings from one struct to the next).
struct Pending {
    /// `protocol` is set when the exchange is returned ([`Session::complete`]).
    x: Exchange,
    /// Protocol of the request when it differs from the connection's (gRPC).
    protocol: Option<Protocol>,
    /// Stream id (HTTP/2) or query id (DNS) that pairs the response.
    key: Option<u32>,
    /// Connection set-up: reported only when it fails.
    hidden: bool,
    complete: bool,
}

/// Turns the offsets of the messages found in a push of `size` bytes into their lengths: each
/// runs to the next one's offset (clamped to the push), the last to the end of the push.
fn lengths_from_offsets<'a>(offsets: impl Iterator<Item = &'a mut u64>, size: u64) {
    let mut prev: Option<&mut u64> = None;
    for next in offsets {
        if let Some(p) = prev.take() {
            let start = (*p).min(size);
            *p = (*next).clamp(start, size) - start;
        }
        prev = Some(next);
    }
    if let Some(p) = prev {
        *p = size - (*p).min(size);
    }
}

impl Pending {
    /// A pending request sent at `ts`; its `offset` is by now its length in bytes (see
    /// [`lengths_from_offsets`]).
    fn new(req: Req, ts: u64) -> Self {
        Pending {
            x: Exchange {
                protocol: Protocol::Unknown,
                request_ts: ts,
                response_ts: None,
                method: req.method,
                target: req.target,
                route: req.route,
                status: Text::default(),
                error: false,
                trace_id: req.trace_id,
                request_id: req.request_id,
                host: req.host,
                request_bytes: req.offset,
                response_bytes: 0,
                truncated: req.truncated,
                response_end: None,
            },
            protocol: req.protocol,
            key: req.key,
            hidden: req.hidden,
            complete: false,
        }
    }
}

/// One side of one TCP connection: feed its L7 messages in time order, get exchanges.
///
/// Requests wait in a FIFO queue (bounded by [`MAX_PENDING`]); a response completes the oldest
/// request still waiting (HTTP/1, Redis, Memcached, MySQL, PostgreSQL: pipelining is FIFO) or
/// the request with the same stream id / query id (HTTP/2, gRPC, DNS over TCP). Because only
/// prefixes are captured, a response whose end was not seen is closed when the next request
/// arrives, and requests sent before a truncated response push are taken as answered by it.
/// Completed exchanges are returned by the next `push` (so that bytes continuing their
/// response can still be counted) or by [`Session::finish`].
pub struct Session {
    role: Role,
    protocol: Protocol,
    grpc_seen: bool,
    state: State,
    detect_attempts: u32,
    pending: VecDeque<Pending>,
    done: Vec<Exchange>,
    /// Timestamp of the last response push that was cut short, and the requests sent before it.
    last_truncated_response: Option<u64>,
    /// Direction of the previous push (`true`: requests), to tell a new message that could
    /// not be parsed (after a change of direction) from bytes continuing one.
    last_was_request: Option<bool>,
    stats: ParseStats,
    reqs: Vec<Req>,
    resps: Vec<Resp>,
    /// Bytes seen going the responses' way so far (pushes and folded bytes): where the next
    /// response push starts, for [`Exchange::response_end`].
    response_stream: u64,
}

impl Session {
    /// A session for the given side of a connection.
    pub fn new(role: Role) -> Self {
        Session {
            role,
            protocol: Protocol::Unknown,
            grpc_seen: false,
            state: State::Unknown,
            detect_attempts: 0,
            pending: VecDeque::new(),
            done: Vec::new(),
            last_truncated_response: None,
            last_was_request: None,
            stats: ParseStats::default(),
            reqs: Vec::new(),
            resps: Vec::new(),
            response_stream: 0,
        }
    }

    /// Protocol of the connection ([`Protocol::Unknown`] until recognized; [`Protocol::Grpc`]
    /// once a gRPC call was seen on an HTTP/2 connection).
    pub fn protocol(&self) -> Protocol {
        if self.protocol == Protocol::Http2 && self.grpc_seen {
            Protocol::Grpc
        } else {
            self.protocol
        }
    }

    /// What was parsed so far.
    pub fn stats(&self) -> &ParseStats {
        &self.stats
    }

    /// Feeds one message of this socket: `egress` when written by the socket's owner, `size`
    /// its real size, `payload` the captured prefix (at most `size` bytes). Returns the
    /// exchanges completed before this message.
    pub fn push(&mut self, ts: u64, egress: bool, size: u64, payload: &[u8]) -> Vec<Exchange> {
        let mut out = Vec::new();
        self.push_into(ts, egress, size, payload, &mut out);
        out
    }

    /// Like [`Session::push`], appending the completed exchanges to `out` (a buffer the
    /// caller reuses).
    pub fn push_into(
        &mut self,
        ts: u64,
        egress: bool,
        size: u64,
        payload: &[u8],
        out: &mut Vec<Exchange>,
    ) {
        let before = out.len();
        self.stats.pushes += 1;
        let size = size.max(payload.len() as u64);
        if size == 0 {
            return;
        }
        let is_request = matches!(
            (self.role, egress),
            (Role::Client, true) | (Role::Server, false)
        );
        let stream_at = self.response_stream;
        if !is_request {
            self.response_stream += size;
        }
        if matches!(self.state, State::Unknown) && !self.try_detect(is_request, payload, size) {
            self.stats.unparsed += 1;
            return;
        }
        let flipped = self.last_was_request.is_some_and(|r| r != is_request);
        if is_request {
            self.on_request(ts, size, payload, flipped, out);
        } else {
            self.on_response(ts, stream_at, size, payload, flipped, out);
        }
        self.last_was_request = Some(is_request);
        self.stats.exchanges += (out.len() - before) as u64;
    }

    /// Adds bytes that belong to the last message in that direction (syscalls the capture
    /// folded into counters).
    pub fn add_bytes(&mut self, egress: bool, bytes: u64) {
        let is_request = matches!(
            (self.role, egress),
            (Role::Client, true) | (Role::Server, false)
        );
        if !is_request {
            self.response_stream += bytes;
        }
        self.add_continuation(is_request, bytes);
    }

    /// Ends the session: completed exchanges, then requests still waiting (with the response
    /// seen so far, or none).
    pub fn finish(mut self) -> Vec<Exchange> {
        let mut out = std::mem::take(&mut self.done);
        while let Some(p) = self.pending.pop_front() {
            if let Some(x) = self.complete(p) {
                out.push(x);
            }
        }
        self.stats.exchanges += out.len() as u64;
        out
    }

    fn try_detect(&mut self, is_request: bool, payload: &[u8], size: u64) -> bool {
        if payload.is_empty() || self.detect_attempts >= DETECT_ATTEMPTS {
            return false;
        }
        self.detect_attempts += 1;
        let p = if is_request {
            detect_request(payload, size)
        } else {
            detect_response(payload, size)
        };
        self.protocol = p;
        self.state = match p {
            Protocol::Unknown => return false,
            Protocol::Http1 => State::Http1,
            Protocol::Http2 | Protocol::Grpc => {
                self.protocol = Protocol::Http2;
                State::Http2(Box::default())
            }
            Protocol::Postgres => State::Postgres(postgres::State::default()),
            Protocol::Mysql => State::Mysql(mysql::State::default()),
            Protocol::Redis => State::Redis,
            Protocol::Memcached => State::Memcached,
            Protocol::Dns => State::Dns,
        };
        true
    }

    fn keyed(&self) -> bool {
        matches!(self.state, State::Http2(_) | State::Dns)
    }

    fn on_request(
        &mut self,
        ts: u64,
        size: u64,
        payload: &[u8],
        flipped: bool,
        out: &mut Vec<Exchange>,
    ) {
        let mut reqs = std::mem::take(&mut self.reqs);
        reqs.clear();
        let outcome = match &mut self.state {
            State::Unknown => Outcome::Garbage,
            State::Http1 => http1::parse_requests(payload, size, &mut reqs),
            State::Http2(s) => s.parse_requests(payload, size, &mut reqs),
            State::Postgres(s) => s.parse_requests(payload, size, &mut reqs),
            State::Mysql(s) => s.parse_requests(payload, size, &mut reqs),
            State::Redis => redis::parse_requests(payload, size, &mut reqs),
            State::Memcached => memcached::parse_requests(payload, size, &mut reqs),
            State::Dns => dns::parse_tcp_requests(payload, size, &mut reqs),
        };
        // After a response, bytes that do not parse still start a new request (one that could
        // not be read, e.g. an empty or garbled prefix): count it, without details.
        // (Not the body that follows a `100 Continue`.)
        // (The queue, which can be long, is scanned last, only when the rest holds.)
        let outcome = if flipped
            && outcome != Outcome::Parsed
            && !self.keyed()
            && !self
                .pending
                .iter()
                .any(|p| !p.complete && p.x.status.starts_with('1'))
        {
            self.stats.unparsed += 1;
            reqs.clear();
            reqs.push(Req {
                truncated: true,
                ..Req::default()
            });
            Outcome::Parsed
        } else {
            outcome
        };
        match outcome {
            Outcome::Garbage => {
                self.stats.unparsed += 1;
                self.add_continuation(true, size);
            }
            Outcome::Continuation => {
                self.stats.continuations += 1;
                self.add_continuation(true, size);
            }
            Outcome::Parsed if reqs.is_empty() => {
                // Messages that open no exchange (password, close, quit...).
                self.stats.messages += 1;
                self.add_continuation(true, size);
            }
            Outcome::Parsed => {
                out.append(&mut self.done);
                if !self.keyed() {
                    self.close_answered(out);
                }
                // Offsets to lengths first (each runs to the next request, the last to the end
                // of the push), so that the requests are then moved only once.
                lengths_from_offsets(reqs.iter_mut().map(|r| &mut r.offset), size);
                for req in reqs.drain(..) {
                    if req.protocol == Some(Protocol::Grpc) {
                        self.grpc_seen = true;
                    }
                    self.stats.messages += 1;
                    if req.truncated {
                        self.stats.truncated += 1;
                    }
                    if self.pending.len() >= MAX_PENDING {
                        if let Some(old) = self.pending.pop_front() {
                            self.stats.evicted += 1;
                            if let Some(x) = self.complete(old) {
                                out.push(x);
                            }
                        }
                    }
                    self.pending.push_back(Pending::new(req, ts));
                }
            }
        }
        self.reqs = reqs;
    }

    /// Before new requests (FIFO protocols): responses whose end was not seen are over, and
    /// requests sent before a truncated response push were answered in its unseen bytes.
    fn close_answered(&mut self, out: &mut Vec<Exchange>) {
        let cutoff = self.last_truncated_response.take();
        while let Some(front) = self.pending.front() {
            let answered = front.complete
                || front.x.response_ts.is_some()
                || cutoff.is_some_and(|t| front.x.request_ts <= t);
            if !answered {
                break;
            }
            let Some(mut p) = self.pending.pop_front() else {
                break;
            };
            if p.x.response_ts.is_none() {
                p.x.response_ts = cutoff;
                p.x.truncated = true;
            } else if !p.complete {
                p.x.truncated = true;
            }
            if let Some(x) = self.complete(p) {
                out.push(x);
            }
        }
    }

    /// `stream_at`: where this push starts among the bytes going the responses' way.
    fn on_response(
        &mut self,
        ts: u64,
        stream_at: u64,
        size: u64,
        payload: &[u8],
        flipped: bool,
        out: &mut Vec<Exchange>,
    ) {
        let mut resps = std::mem::take(&mut self.resps);
        resps.clear();
        let outcome = match &mut self.state {
            State::Unknown => Outcome::Garbage,
            State::Http1 => http1::parse_responses(payload, size, &mut resps),
            State::Http2(s) => s.parse_responses(payload, size, &mut resps),
            State::Postgres(s) => s.parse_responses(payload, size, &mut resps),
            State::Mysql(s) => s.parse_responses(payload, size, &mut resps),
            State::Redis => redis::parse_responses(payload, size, &mut resps),
            State::Memcached => memcached::parse_responses(payload, size, &mut resps),
            State::Dns => dns::parse_tcp_responses(payload, size, &mut resps),
        };
        let truncated_push = size > payload.len() as u64;
        match outcome {
            Outcome::Garbage | Outcome::Continuation => {
                if outcome == Outcome::Garbage {
                    self.stats.unparsed += 1;
                } else {
                    self.stats.continuations += 1;
                }
                // Without a parse, the timing still holds for FIFO protocols: after a change of
                // direction, the oldest request without a response got its first byte now.
                if !self.keyed() && flipped {
                    if let Some(p) = self.pending.iter_mut().find(|p| !p.complete) {
                        if p.x.response_ts.is_none() {
                            p.x.response_ts = Some(ts);
                            p.x.response_bytes += size;
                            self.resps = resps;
                            return;
                        }
                    }
                }
                self.add_continuation(false, size);
            }
            Outcome::Parsed => {
                let n = resps.len();
                if n > 0 {
                    out.append(&mut self.done);
                } else {
                    self.stats.messages += 1;
                    self.add_continuation(false, size);
                }
                lengths_from_offsets(resps.iter_mut().map(|r| &mut r.offset), size);
                for r in resps.drain(..) {
                    if !r.continues {
                        self.stats.messages += 1;
                    }
                    if r.truncated {
                        self.stats.truncated += 1;
                    }
                    let slot = match r.key {
                        Some(k) => self
                            .pending
                            .iter_mut()
                            .find(|p| p.key == Some(k) && !p.complete),
                        None => self.pending.iter_mut().find(|p| !p.complete),
                    };
                    let Some(p) = slot else {
                        if !r.continues {
                            self.stats.unmatched_responses += 1;
                        }
                        continue;
                    };
                    if p.x.response_ts.is_none() {
                        p.x.response_ts = Some(ts);
                    }
                    p.x.response_bytes += r.offset;
                    if !r.status.is_empty() && (!p.x.error || r.error) {
                        p.x.status = r.status;
                    }
                    p.x.error |= r.error;
                    p.x.truncated |= r.truncated;
                    // A HEAD response declares the length of a body it does not carry.
                    if let Some(end) = r.end.filter(|_| p.x.method != "HEAD") {
                        p.x.response_end = Some(stream_at + end);
                    }
                    p.complete |= r.complete;
                }
                self.collect_complete();
            }
        }
        if truncated_push && !self.keyed() {
            self.last_truncated_response = Some(ts);
        }
        self.resps = resps;
    }

    /// Moves completed requests to `done`: from the front only for FIFO protocols, from
    /// anywhere when responses carry ids.
    fn collect_complete(&mut self) {
        if self.keyed() {
            let mut i = 0;
            while i < self.pending.len() {
                if self.pending[i].complete {
                    if let Some(p) = self.pending.remove(i) {
                        if let Some(x) = self.complete(p) {
                            self.done.push(x);
                        }
                    }
                } else {
                    i += 1;
                }
            }
        } else {
            while self.pending.front().is_some_and(|p| p.complete) {
                if let Some(p) = self.pending.pop_front() {
                    if let Some(x) = self.complete(p) {
                        self.done.push(x);
                    }
                }
            }
        }
    }

    /// Bytes continuing the last message in one direction.
    fn add_continuation(&mut self, is_request: bool, bytes: u64) {
        if is_request {
            if let Some(p) = self.pending.back_mut() {
                p.x.request_bytes += bytes;
            }
        } else if let Some(p) = self
            .pending
            .iter_mut()
            .rev()
            .find(|p| p.x.response_ts.is_some())
        {
            p.x.response_bytes += bytes;
        } else if let Some(x) = self.done.last_mut() {
            x.response_bytes += bytes;
        }
    }

    fn complete(&self, p: Pending) -> Option<Exchange> {
        if p.hidden && !p.x.error {
            return None;
        }
        let mut x = p.x;
        x.protocol = p.protocol.unwrap_or(self.protocol);
        Some(x)
    }
}

#[cfg(test)]
mod tests {
    use super::lengths_from_offsets;

    fn lengths(offsets: &[u64], size: u64) -> Vec<u64> {
        let mut v = offsets.to_vec();
        lengths_from_offsets(v.iter_mut(), size);
        v
    }

    #[test]
    fn offsets_become_lengths() {
        assert_eq!(lengths(&[], 10), Vec::<u64>::new());
        assert_eq!(lengths(&[0], 10), vec![10]);
        assert_eq!(lengths(&[0, 4, 9], 10), vec![4, 5, 1]);
        // Offsets beyond the push, or going backwards, give empty messages, never underflow.
        assert_eq!(lengths(&[0, 12, 3], 10), vec![10, 0, 7]);
        assert_eq!(lengths(&[5, 2], 10), vec![0, 8]);
        assert_eq!(lengths(&[11], 10), vec![0]);
    }
}
