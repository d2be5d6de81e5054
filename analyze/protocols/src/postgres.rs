//! PostgreSQL frontend/backend protocol v3: startup and authentication (reported only when
//! they fail), simple query `Q`, extended query protocol (`Parse`/`Bind`/`Execute`/`Sync`, one
//! exchange per `Sync`), `ErrorResponse` (SQLSTATE), `ReadyForQuery` ending each response.

use std::collections::HashMap;

use crate::util::{be_u32, normalize_sql, text, MAX_TARGET};
use crate::{Outcome, Req, Resp, Text};

const PROTOCOL_V3: u32 = 196_608;
const SSL_REQUEST: u32 = 80_877_103;
const GSSENC_REQUEST: u32 = 80_877_104;
const CANCEL_REQUEST: u32 = 80_877_102;
/// Prepared statements remembered per connection (name → query).
const MAX_STATEMENTS: usize = 256;
/// Longest message accepted as plausible.
const MAX_LEN: u32 = 1 << 30;

fn frontend_tag(t: u8) -> bool {
    matches!(
        t,
        b'Q' | b'P'
            | b'B'
            | b'E'
            | b'D'
            | b'C'
            | b'H'
            | b'S'
            | b'X'
            | b'F'
            | b'p'
            | b'c'
            | b'd'
            | b'f'
    )
}

fn backend_tag(t: u8) -> bool {
    matches!(
        t,
        b'R' | b'S'
            | b'K'
            | b'Z'
            | b'T'
            | b'D'
            | b'C'
            | b'E'
            | b'N'
            | b'1'
            | b'2'
            | b'3'
            | b'n'
            | b's'
            | b't'
            | b'I'
            | b'A'
            | b'G'
            | b'H'
            | b'W'
            | b'c'
            | b'd'
            | b'V'
            | b'v'
    )
}

/// Startup-phase message (no tag): length and code.
fn startup(b: &[u8]) -> Option<(u32, u32)> {
    let len = be_u32(b, 0)?;
    let code = be_u32(b, 4)?;
    let ok = matches!(
        code,
        PROTOCOL_V3 | SSL_REQUEST | GSSENC_REQUEST | CANCEL_REQUEST
    ) && (8..=10_000).contains(&len);
    ok.then_some((len, code))
}

/// Whether a chain of tagged messages with plausible lengths covers `b` (or runs past its
/// end, when the message is bigger than the prefix).
fn chain_ok(b: &[u8], size: u64, tag_ok: fn(u8) -> bool) -> bool {
    let mut pos = 0usize;
    let mut n = 0;
    while pos < b.len() {
        if !tag_ok(b[pos]) {
            return false;
        }
        let Some(len) = be_u32(b, pos + 1) else {
            return size > b.len() as u64 && n > 0;
        };
        if !(4..MAX_LEN).contains(&len) {
            return false;
        }
        pos = pos.saturating_add(1 + len as usize);
        n += 1;
    }
    pos as u64 <= size.max(b.len() as u64) && (pos == b.len() || size > b.len() as u64)
}

pub(crate) fn looks_like_request(b: &[u8], size: u64) -> bool {
    if let Some((len, _)) = startup(b) {
        return len as u64 <= size;
    }
    b.first()
        .is_some_and(|&t| matches!(t, b'Q' | b'P' | b'B' | b'p' | b'X'))
        && chain_ok(b, size, frontend_tag)
}

pub(crate) fn looks_like_response(b: &[u8], size: u64) -> bool {
    b.first()
        .is_some_and(|&t| matches!(t, b'R' | b'E' | b'Z' | b'1' | b'T' | b'C'))
        && chain_ok(b, size, backend_tag)
}

/// Per-connection state.
#[derive(Default)]
pub(crate) struct State {
    /// Named prepared statements: name → query text.
    statements: HashMap<Vec<u8>, Vec<u8>>,
    /// Extended-protocol messages seen since the last Sync.
    unit: Option<Unit>,
    /// An SSLRequest / GSSENCRequest waits for its one-byte answer.
    ssl_requested: bool,
}

#[derive(Default)]
struct Unit {
    query: Vec<u8>,
    offset: u64,
    executes: bool,
    truncated: bool,
}

impl State {
    pub(crate) fn parse_requests(&mut self, b: &[u8], size: u64, out: &mut Vec<Req>) -> Outcome {
        let mut pos = 0usize;
        let mut any = false;
        if let Some((len, code)) = startup(b) {
            any = true;
            match code {
                PROTOCOL_V3 => {
                    let db = startup_param(&b[8..b.len().min(len as usize)], b"database")
                        .or_else(|| startup_param(&b[8..b.len().min(len as usize)], b"user"));
                    out.push(Req {
                        method: "startup".into(),
                        target: db.map(|d| text(d, MAX_TARGET)).unwrap_or_default(),
                        route: "startup".into(),
                        hidden: true,
                        ..Req::default()
                    });
                }
                SSL_REQUEST | GSSENC_REQUEST => self.ssl_requested = true,
                _ => {} // CancelRequest: no reply on this connection.
            }
            pos = len as usize;
        }
        while pos < b.len() {
            let tag = b[pos];
            if !frontend_tag(tag) {
                if !any {
                    return if self.unit.is_some() {
                        Outcome::Continuation
                    } else {
                        Outcome::Garbage
                    };
                }
                break;
            }
            let Some(len) = be_u32(b, pos + 1) else {
                if !any {
                    return Outcome::Garbage;
                }
                break;
            };
            if !(4..MAX_LEN).contains(&len) {
                if !any {
                    return Outcome::Garbage;
                }
                break;
            }
            any = true;
            let end = pos.saturating_add(1 + len as usize);
            let whole = end <= b.len();
            let body = &b[(pos + 5).min(b.len())..end.min(b.len())];
            match tag {
                b'Q' => out.push(Req {
                    method: "query".into(),
                    target: text(cstr(body), MAX_TARGET),
                    route: normalize_sql(cstr(body)),
                    offset: pos as u64,
                    truncated: !whole,
                    ..Req::default()
                }),
                b'P' => {
                    let name = cstr(body);
                    let query = cstr(body.get(name.len() + 1..).unwrap_or(b""));
                    if !name.is_empty() && whole && self.statements.len() < MAX_STATEMENTS {
                        self.statements.insert(name.to_vec(), query.to_vec());
                    }
                    let u = self.unit.get_or_insert_with(|| Unit {
                        offset: pos as u64,
                        ..Unit::default()
                    });
                    u.query = query.to_vec();
                    u.truncated |= !whole;
                }
                b'B' => {
                    let portal = cstr(body);
                    let stmt = cstr(body.get(portal.len() + 1..).unwrap_or(b""));
                    let known = self.statements.get(stmt).cloned();
                    let u = self.unit.get_or_insert_with(|| Unit {
                        offset: pos as u64,
                        ..Unit::default()
                    });
                    if u.query.is_empty() {
                        if let Some(q) = known {
                            u.query = q;
                        }
                    }
                }
                b'E' => {
                    let u = self.unit.get_or_insert_with(|| Unit {
                        offset: pos as u64,
                        ..Unit::default()
                    });
                    u.executes = true;
                }
                b'S' => {
                    let u = self.unit.take().unwrap_or(Unit {
                        offset: pos as u64,
                        ..Unit::default()
                    });
                    out.push(unit_req(u));
                }
                b'D' | b'C' | b'H' => {
                    self.unit.get_or_insert_with(|| Unit {
                        offset: pos as u64,
                        ..Unit::default()
                    });
                }
                // 'p' (password, part of startup), 'X' terminate, 'F' function call, copy data.
                _ => {}
            }
            pos = end;
        }
        // A batch whose Sync lies beyond the prefix.
        if size > b.len() as u64 {
            if let Some(mut u) = self.unit.take() {
                u.truncated = true;
                out.push(unit_req(u));
            }
        }
        if any {
            Outcome::Parsed
        } else {
            Outcome::Garbage
        }
    }

    pub(crate) fn parse_responses(&mut self, b: &[u8], size: u64, out: &mut Vec<Resp>) -> Outcome {
        if self.ssl_requested && size == 1 && matches!(b, [b'N'] | [b'S'] | [b'G']) {
            self.ssl_requested = false;
            // Refused: the startup message follows; accepted: the rest is encrypted.
            return Outcome::Parsed;
        }
        let mut pos = 0usize;
        let mut started = false;
        let mut status = Text::default();
        let mut error = false;
        let mut start = 0u64;
        while pos < b.len() {
            let tag = b[pos];
            let len = be_u32(b, pos + 1);
            let valid = backend_tag(tag) && len.is_some_and(|l| (4..MAX_LEN).contains(&l));
            if !valid {
                if out.is_empty() && !started {
                    return if pos == 0 && be_u32(b, pos + 1).is_none() && backend_tag(tag) {
                        Outcome::Parsed
                    } else {
                        Outcome::Continuation
                    };
                }
                break;
            }
            let len = len.unwrap_or(4);
            if !started {
                started = true;
                start = pos as u64;
            }
            let end = pos.saturating_add(1 + len as usize);
            let body = &b[(pos + 5).min(b.len())..end.min(b.len())];
            match tag {
                b'E' => {
                    let (code, fatal) = error_fields(body);
                    status = compact_str::format_compact!("ERROR {code}");
                    error = true;
                    if fatal {
                        out.push(Resp {
                            status: std::mem::take(&mut status),
                            error,
                            offset: start,
                            complete: true,
                            ..Resp::default()
                        });
                        started = false;
                        error = false;
                    }
                }
                b'C' if status.is_empty() => status = "OK".into(),
                b'Z' => {
                    if status.is_empty() {
                        status = "OK".into();
                    }
                    out.push(Resp {
                        status: std::mem::take(&mut status),
                        error,
                        offset: start,
                        complete: true,
                        ..Resp::default()
                    });
                    started = false;
                    error = false;
                }
                _ => {}
            }
            pos = end;
        }
        if started {
            // The end of this response (its ReadyForQuery) comes later or lies beyond the
            // prefix: report what is known, the session closes it.
            out.push(Resp {
                status,
                error,
                offset: start,
                complete: false,
                truncated: size > b.len() as u64,
                ..Resp::default()
            });
        }
        Outcome::Parsed
    }
}

fn unit_req(u: Unit) -> Req {
    let method = if u.executes || u.query.is_empty() {
        "execute"
    } else {
        "prepare"
    };
    Req {
        method: method.into(),
        target: text(&u.query, MAX_TARGET),
        route: normalize_sql(&u.query),
        offset: u.offset,
        truncated: u.truncated,
        ..Req::default()
    }
}

/// A NUL-terminated string at the start of `b` (all of `b` when unterminated).
fn cstr(b: &[u8]) -> &[u8] {
    let end = memchr::memchr(0, b).unwrap_or(b.len());
    &b[..end]
}

fn startup_param<'a>(mut b: &'a [u8], name: &[u8]) -> Option<&'a [u8]> {
    while !b.is_empty() && b[0] != 0 {
        let k = cstr(b);
        let rest = b.get(k.len() + 1..)?;
        let v = cstr(rest);
        if k == name {
            return Some(v);
        }
        b = rest.get(v.len() + 1..)?;
    }
    None
}

/// SQLSTATE (`C` field) and whether the severity is FATAL or PANIC.
fn error_fields(mut b: &[u8]) -> (Text, bool) {
    let mut code = Text::const_new("?");
    let mut fatal = false;
    while let Some(&f) = b.first() {
        if f == 0 {
            break;
        }
        let v = cstr(&b[1..]);
        match f {
            b'C' => code = text(v, 8),
            b'V' => fatal = v == b"FATAL" || v == b"PANIC",
            _ => {}
        }
        b = b.get(v.len() + 2..).unwrap_or(b"");
    }
    (code, fatal)
}
