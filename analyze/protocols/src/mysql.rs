//! MySQL / MariaDB client/server protocol: handshake (reported only when it fails),
//! `COM_QUERY`, `COM_STMT_PREPARE` / `COM_STMT_EXECUTE` (the statement text remembered from
//! the prepare), OK / ERR (error code and SQLSTATE) / result-set replies.

use std::collections::{HashMap, VecDeque};

use crate::util::{normalize_sql, text, MAX_TARGET};
use crate::{Outcome, Req, Resp, Text};

const COM_QUIT: u8 = 0x01;
const COM_QUERY: u8 = 0x03;
const COM_STMT_PREPARE: u8 = 0x16;
const COM_STMT_EXECUTE: u8 = 0x17;
const COM_STMT_SEND_LONG_DATA: u8 = 0x18;
const COM_STMT_CLOSE: u8 = 0x19;
/// Prepared statements remembered per connection.
const MAX_STATEMENTS: usize = 256;

fn command_name(c: u8) -> &'static str {
    match c {
        0x02 => "COM_INIT_DB",
        COM_QUERY => "COM_QUERY",
        0x04 => "COM_FIELD_LIST",
        0x09 => "COM_STATISTICS",
        0x0e => "COM_PING",
        0x11 => "COM_CHANGE_USER",
        COM_STMT_PREPARE => "COM_STMT_PREPARE",
        COM_STMT_EXECUTE => "COM_STMT_EXECUTE",
        0x1a => "COM_STMT_RESET",
        0x1b => "COM_SET_OPTION",
        0x1c => "COM_STMT_FETCH",
        0x1f => "COM_RESET_CONNECTION",
        _ => "COM_OTHER",
    }
}

fn known_command(c: u8) -> bool {
    matches!(c, 0x01..=0x04 | 0x09 | 0x0e | 0x11 | 0x16..=0x1c | 0x1f)
}

/// A packet header: payload length and sequence id.
fn header(b: &[u8]) -> Option<(usize, u8)> {
    let h = b.get(..4)?;
    Some((
        usize::from(h[0]) | usize::from(h[1]) << 8 | usize::from(h[2]) << 16,
        h[3],
    ))
}

pub(crate) fn looks_like_request(b: &[u8], size: u64) -> bool {
    let Some((len, seq)) = header(b) else {
        return false;
    };
    let Some(&cmd) = b.get(4) else { return false };
    if seq != 0 || len == 0 || !known_command(cmd) {
        return false;
    }
    let total = len as u64 + 4;
    if total == size {
        // COM_QUERY and COM_STMT_PREPARE carry text.
        return !matches!(cmd, COM_QUERY | COM_STMT_PREPARE)
            || b[5..]
                .iter()
                .take(32)
                .all(|&c| c >= 0x20 || c.is_ascii_whitespace());
    }
    // Several packets (COM_STMT_CLOSE then a query), or a prefix of a big query.
    (total < size && b.len() as u64 >= total.min(64))
        || (total > size && matches!(cmd, COM_QUERY | COM_STMT_PREPARE) && b.len() >= 16)
}

pub(crate) fn looks_like_greeting(b: &[u8]) -> bool {
    let Some((len, seq)) = header(b) else {
        return false;
    };
    seq == 0
        && (20..1024).contains(&len)
        && b.get(4) == Some(&0x0a)
        && b.get(5).is_some_and(u8::is_ascii_digit)
}

/// Per-connection state.
#[derive(Default)]
pub(crate) struct State {
    /// Handshake in progress (greeting seen or handshake response sent, no OK/ERR yet).
    handshake: bool,
    /// Commands waiting for their reply (the command byte, and the query of a prepare).
    waiting: VecDeque<(u8, Vec<u8>)>,
    statements: HashMap<u32, Vec<u8>>,
}

impl State {
    pub(crate) fn parse_requests(&mut self, b: &[u8], size: u64, out: &mut Vec<Req>) -> Outcome {
        let mut pos = 0usize;
        let mut any = false;
        while pos < b.len() {
            let Some((len, seq)) = header(&b[pos..]) else {
                break;
            };
            let end = pos.saturating_add(4 + len);
            let whole = end <= b.len();
            let body = &b[(pos + 4).min(b.len())..end.min(b.len())];
            if seq != 0 {
                // Handshake response or authentication data.
                if pos == 0 && seq == 1 && self.waiting.is_empty() && body.len() >= 32 {
                    self.handshake = true;
                    let user = body.get(32..).map(cstr).unwrap_or(b"");
                    out.push(Req {
                        method: "CONNECT".into(),
                        target: text(user, 64),
                        route: "CONNECT".into(),
                        hidden: true,
                        ..Req::default()
                    });
                    return Outcome::Parsed;
                }
                if pos == 0 && (self.handshake || seq > 1) {
                    return Outcome::Parsed;
                }
                if !any {
                    return Outcome::Continuation;
                }
                break;
            }
            let Some(&cmd) = body.first() else { break };
            if !known_command(cmd) {
                if !any {
                    return Outcome::Continuation;
                }
                break;
            }
            any = true;
            let arg = &body[1..];
            match cmd {
                COM_QUIT | COM_STMT_CLOSE | COM_STMT_SEND_LONG_DATA => {
                    if cmd == COM_STMT_CLOSE {
                        if let Some(id) = le_u32(arg) {
                            self.statements.remove(&id);
                        }
                    }
                }
                _ => {
                    let query: &[u8] = match cmd {
                        COM_QUERY | COM_STMT_PREPARE | 0x02 => arg,
                        COM_STMT_EXECUTE | 0x1a | 0x1c => le_u32(arg)
                            .and_then(|id| self.statements.get(&id))
                            .map(Vec::as_slice)
                            .unwrap_or(b""),
                        _ => b"",
                    };
                    let route = if query.is_empty() || cmd == 0x02 {
                        Text::from(command_name(cmd))
                    } else {
                        normalize_sql(query)
                    };
                    out.push(Req {
                        method: command_name(cmd).into(),
                        target: text(query, MAX_TARGET),
                        route,
                        offset: pos as u64,
                        truncated: !whole && size > b.len() as u64,
                        ..Req::default()
                    });
                    let keep = if cmd == COM_STMT_PREPARE && whole {
                        arg.to_vec()
                    } else {
                        Vec::new()
                    };
                    if self.waiting.len() < 1024 {
                        self.waiting.push_back((cmd, keep));
                    }
                }
            }
            pos = end;
        }
        if any {
            Outcome::Parsed
        } else {
            Outcome::Garbage
        }
    }

    pub(crate) fn parse_responses(&mut self, b: &[u8], size: u64, out: &mut Vec<Resp>) -> Outcome {
        let Some((len, seq)) = header(b) else {
            return Outcome::Continuation;
        };
        let Some(&first) = b.get(4) else {
            return Outcome::Continuation;
        };
        if looks_like_greeting(b) && self.waiting.is_empty() {
            self.handshake = true;
            return Outcome::Parsed;
        }
        if self.handshake {
            match first {
                0x00 | 0xff => {
                    self.handshake = false;
                    out.push(ok_or_err(b, len));
                }
                // Auth switch request / more data: the handshake goes on.
                _ => {}
            }
            return Outcome::Parsed;
        }
        if seq != 1 {
            // Replies to commands start at sequence id 1: this continues one.
            return Outcome::Continuation;
        }
        let (cmd, query) = self.waiting.pop_front().unwrap_or((0, Vec::new()));
        let mut r = ok_or_err(b, len);
        r.truncated = size > b.len() as u64 && (len + 4) > b.len();
        if cmd == COM_STMT_PREPARE && first == 0x00 && self.statements.len() < MAX_STATEMENTS {
            if let Some(id) = b.get(5..).and_then(le_u32) {
                self.statements.insert(id, query);
            }
        }
        out.push(r);
        Outcome::Parsed
    }
}

/// The reply that starts with packet `b` (OK, ERR, or a result set).
fn ok_or_err(b: &[u8], len: usize) -> Resp {
    let body = &b[4.min(b.len())..b.len().min(4 + len)];
    if body.first() == Some(&0xff) {
        let code = body
            .get(1..3)
            .map(|c| u16::from_le_bytes([c[0], c[1]]))
            .unwrap_or(0);
        return Resp {
            status: compact_str::format_compact!("ERROR {code}"),
            error: true,
            complete: true,
            ..Resp::default()
        };
    }
    Resp {
        status: "OK".into(),
        complete: true,
        ..Resp::default()
    }
}

fn le_u32(b: &[u8]) -> Option<u32> {
    let s = b.get(..4)?;
    Some(u32::from_le_bytes([s[0], s[1], s[2], s[3]]))
}

fn cstr(b: &[u8]) -> &[u8] {
    let end = memchr::memchr(0, b).unwrap_or(b.len());
    &b[..end]
}
