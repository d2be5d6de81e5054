//! Redis RESP (2 and 3): commands as arrays of bulk strings, inline commands, replies
//! (errors `-`/`!`), pipelining.

use crate::util::{find_crlf, parse_dec, text, upper_token, MAX_TARGET};
use crate::{Outcome, Req, Resp, Text};

/// Deepest nesting of aggregate replies followed.
const MAX_DEPTH: usize = 16;

/// Inline commands recognized at detection (those that cannot be Memcached commands).
const INLINE: [&[u8]; 12] = [
    b"PING", b"AUTH", b"SELECT", b"HELLO", b"INFO", b"EXISTS", b"KEYS", b"DEL", b"HGET", b"HSET",
    b"LPUSH", b"QUIT",
];

pub(crate) fn looks_like_request(b: &[u8]) -> bool {
    if b.first() == Some(&b'*') {
        let Some(e) = find_crlf(b) else {
            return b.len() > 1 && b[1..].iter().all(u8::is_ascii_digit);
        };
        return parse_dec(&b[1..e]).is_some_and(|n| n > 0)
            && b.get(e + 2).is_none_or(|&c| c == b'$');
    }
    let word_end = b
        .iter()
        .position(|&c| c == b' ' || c == b'\r')
        .unwrap_or(b.len());
    let word = &b[..word_end];
    word.iter().all(u8::is_ascii_uppercase)
        && INLINE.contains(&word)
        && b.get(word_end).is_some_and(|&c| c == b' ' || c == b'\r')
}

pub(crate) fn looks_like_response(b: &[u8]) -> bool {
    matches!(
        b.first(),
        Some(b'+' | b'-' | b':' | b'$' | b'*' | b'%' | b'_' | b'#' | b',')
    ) && matches!(skip_value(b, 0), Skip::Done(_) | Skip::Truncated)
        && (b.first() != Some(&b'-') || b.get(1).is_some_and(u8::is_ascii_uppercase))
}

/// Parses the commands that start in `b`.
pub(crate) fn parse_requests(b: &[u8], size: u64, out: &mut Vec<Req>) -> Outcome {
    let mut off = 0usize;
    while off < b.len() {
        let buf = &b[off..];
        // Empty inline commands (bare line ends) are ignored by the server.
        if buf[0] == b'\r' || buf[0] == b'\n' {
            off += 1;
            continue;
        }
        if buf[0] == b'*' {
            match command(buf) {
                Some((mut r, len)) => {
                    r.offset = off as u64;
                    match len {
                        Some(len) => {
                            out.push(r);
                            off += len;
                        }
                        None => {
                            r.truncated = size > b.len() as u64;
                            out.push(r);
                            break;
                        }
                    }
                }
                None => break,
            }
        } else if buf[0].is_ascii_alphabetic() {
            // Inline command: one line.
            let (line, len) = match find_crlf(buf) {
                Some(e) => (&buf[..e], Some(e + 2)),
                None => (buf, None),
            };
            let mut words = line.split(|&c| c == b' ').filter(|w| !w.is_empty());
            let Some(cmd) = words.next() else { break };
            let key = words.next().unwrap_or(b"");
            let cmd = upper_token(cmd);
            out.push(Req {
                method: cmd.clone(),
                target: text(key, MAX_TARGET),
                route: cmd,
                offset: off as u64,
                truncated: len.is_none() && size > b.len() as u64,
                ..Req::default()
            });
            match len {
                Some(len) => off += len,
                None => break,
            }
        } else {
            break;
        }
    }
    if out.is_empty() {
        Outcome::Garbage
    } else {
        Outcome::Parsed
    }
}

/// One command array: the request and its length when whole in `b`.
fn command(b: &[u8]) -> Option<(Req, Option<usize>)> {
    let e = find_crlf(b)?;
    let n = parse_dec(&b[1..e])?;
    let mut pos = e + 2;
    let mut cmd: &[u8] = b"";
    let mut key: &[u8] = b"";
    let mut whole = true;
    for i in 0..n {
        let rest = b.get(pos..).unwrap_or(b"");
        if rest.is_empty() {
            whole = false;
            break;
        }
        if rest[0] != b'$' {
            return if i == 0 {
                None
            } else {
                Some((req(cmd, key), None))
            };
        }
        let Some(le) = find_crlf(rest) else {
            whole = false;
            break;
        };
        let len = parse_dec(&rest[1..le])?;
        let start = pos + le + 2;
        let avail = &b[start.min(b.len())..];
        let arg = &avail[..avail.len().min(len as usize)];
        if i == 0 {
            cmd = arg;
        } else if i == 1 {
            key = arg;
        }
        let next = (start as u64).saturating_add(len).saturating_add(2);
        if next > b.len() as u64 {
            whole = false;
            break;
        }
        pos = next as usize;
    }
    if cmd.is_empty() && n > 0 && !whole {
        // The prefix ends before the command name: nothing to report.
        return if pos < b.len() {
            None
        } else {
            Some((req(b"?", b""), None))
        };
    }
    Some((req(cmd, key), if whole { Some(pos) } else { None }))
}

fn req(cmd: &[u8], key: &[u8]) -> Req {
    let cmd = upper_token(cmd);
    Req {
        method: cmd.clone(),
        target: text(key, MAX_TARGET),
        route: cmd,
        ..Req::default()
    }
}

/// Result of skipping one RESP value.
enum Skip {
    Done(usize),
    Truncated,
    Invalid,
}

/// Skips one RESP value starting at `b[0]`.
fn skip_value(b: &[u8], depth: usize) -> Skip {
    if depth > MAX_DEPTH {
        return Skip::Invalid;
    }
    let Some(&t) = b.first() else {
        return Skip::Truncated;
    };
    let Some(e) = find_crlf(b) else {
        return if b.len() > 4096 {
            Skip::Invalid
        } else {
            Skip::Truncated
        };
    };
    let Some(line) = b.get(1..e) else {
        return Skip::Invalid;
    };
    let after = e + 2;
    match t {
        b'+' | b'-' | b':' | b'_' | b',' | b'#' | b'(' => Skip::Done(after),
        b'$' | b'!' | b'=' => {
            if line == b"-1" {
                return Skip::Done(after);
            }
            let Some(len) = parse_dec(line) else {
                return Skip::Invalid;
            };
            let end = (after as u64).saturating_add(len).saturating_add(2);
            if end > b.len() as u64 {
                Skip::Truncated
            } else {
                Skip::Done(end as usize)
            }
        }
        b'*' | b'%' | b'~' | b'>' | b'|' => {
            if line == b"-1" {
                return Skip::Done(after);
            }
            let Some(n) = parse_dec(line) else {
                return Skip::Invalid;
            };
            let n = if matches!(t, b'%' | b'|') {
                n.saturating_mul(2)
            } else {
                n
            };
            let mut pos = after;
            for _ in 0..n {
                match skip_value(&b[pos..], depth + 1) {
                    Skip::Done(len) => pos += len,
                    other => return other,
                }
            }
            Skip::Done(pos)
        }
        _ => Skip::Invalid,
    }
}

/// Parses the replies that start in `b`.
pub(crate) fn parse_responses(b: &[u8], size: u64, out: &mut Vec<Resp>) -> Outcome {
    let mut off = 0usize;
    while off < b.len() {
        let buf = &b[off..];
        let t = buf[0];
        let (status, error) = match t {
            b'-' | b'!' => (error_code(buf), true),
            b'>' => (Text::default(), false),
            _ => (Text::const_new("OK"), false),
        };
        match skip_value(buf, 0) {
            Skip::Done(len) => {
                if t != b'>' {
                    out.push(Resp {
                        status,
                        error,
                        offset: off as u64,
                        complete: true,
                        ..Resp::default()
                    });
                }
                off += len;
            }
            Skip::Truncated => {
                if t != b'>' {
                    out.push(Resp {
                        status,
                        error,
                        offset: off as u64,
                        complete: true,
                        truncated: size > b.len() as u64,
                        ..Resp::default()
                    });
                }
                break;
            }
            Skip::Invalid => {
                if out.is_empty() {
                    return Outcome::Continuation;
                }
                break;
            }
        }
    }
    if out.is_empty() {
        Outcome::Continuation
    } else {
        Outcome::Parsed
    }
}

/// First word of an error reply (`ERR`, `WRONGTYPE`, `NOAUTH`, ...).
fn error_code(b: &[u8]) -> Text {
    let body = if b[0] == b'!' {
        // Bulk error: skip the length line.
        match find_crlf(b) {
            Some(e) => &b[e + 2..],
            None => b"",
        }
    } else {
        &b[1..]
    };
    let end = body
        .iter()
        .position(|&c| c == b' ' || c == b'\r' || c == b'\n')
        .unwrap_or(body.len());
    let word = upper_token(&body[..end]);
    if word.is_empty() {
        Text::const_new("ERR")
    } else {
        word
    }
}
