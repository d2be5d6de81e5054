//! Memcached text protocol (classic and meta commands), with pipelining.

use crate::util::{find_crlf, parse_dec, text, MAX_TARGET};
use crate::{Outcome, Req, Resp, Text};

/// Commands followed by a data block of `<bytes>` (the 4th argument; `cas` has one more).
const STORAGE: [&[u8]; 6] = [b"set", b"add", b"replace", b"append", b"prepend", b"cas"];
const OTHER: [&[u8]; 17] = [
    b"get",
    b"gets",
    b"gat",
    b"gats",
    b"delete",
    b"incr",
    b"decr",
    b"touch",
    b"stats",
    b"version",
    b"flush_all",
    b"verbosity",
    b"mg",
    b"md",
    b"ma",
    b"mn",
    b"me",
];

fn known(cmd: &[u8]) -> bool {
    STORAGE.contains(&cmd) || OTHER.contains(&cmd) || cmd == b"ms" || cmd == b"quit"
}

pub(crate) fn looks_like_request(b: &[u8]) -> bool {
    let end = b
        .iter()
        .position(|&c| c == b' ' || c == b'\r')
        .unwrap_or(b.len());
    known(&b[..end]) && b.get(end).is_some_and(|&c| c == b' ' || c == b'\r')
}

const REPLIES: [&[u8]; 16] = [
    b"VALUE ",
    b"END\r\n",
    b"STORED\r\n",
    b"NOT_STORED\r\n",
    b"EXISTS\r\n",
    b"NOT_FOUND\r\n",
    b"DELETED\r\n",
    b"TOUCHED\r\n",
    b"ERROR\r\n",
    b"CLIENT_ERROR ",
    b"SERVER_ERROR ",
    b"VERSION ",
    b"STAT ",
    b"OK\r\n",
    b"HD",
    b"EN\r\n",
];

pub(crate) fn looks_like_response(b: &[u8]) -> bool {
    REPLIES.iter().any(|r| b.starts_with(r))
}

/// Parses the commands that start in `b`.
pub(crate) fn parse_requests(b: &[u8], size: u64, out: &mut Vec<Req>) -> Outcome {
    let mut off = 0usize;
    let mut any = false;
    while off < b.len() {
        let buf = &b[off..];
        let (line, line_len) = match find_crlf(buf) {
            Some(e) => (&buf[..e], Some(e + 2)),
            None => (buf, None),
        };
        let mut words = line.split(|&c| c == b' ').filter(|w| !w.is_empty());
        let Some(cmd) = words.next() else { break };
        if !known(cmd) {
            if !any {
                // Unknown commands get an ERROR reply: still a request, when it looks like one.
                if off == 0
                    && cmd.iter().all(u8::is_ascii_lowercase)
                    && line_len.is_some()
                    && cmd.len() <= 32
                {
                    out.push(req(cmd, b"", off, false));
                    return Outcome::Parsed;
                }
                return Outcome::Garbage;
            }
            break;
        }
        any = true;
        let args: [&[u8]; 6] = {
            let mut a: [&[u8]; 6] = [b""; 6];
            for (i, w) in words.take(6).enumerate() {
                a[i] = w;
            }
            a
        };
        let noreply = line.ends_with(b" noreply")
            || (cmd.len() == 2 && cmd[0] == b'm' && line.windows(2).any(|w| w == b" q"));
        let truncated = line_len.is_none() && size > b.len() as u64;
        if cmd != b"quit" && !noreply {
            out.push(req(cmd, args[0], off, truncated));
        }
        let Some(ll) = line_len else { break };
        let mut next = (off + ll) as u64;
        // Data block.
        let data = if STORAGE.contains(&cmd) {
            parse_dec(args[3])
        } else if cmd == b"ms" {
            parse_dec(args[1])
        } else {
            None
        };
        if let Some(n) = data {
            next = next.saturating_add(n).saturating_add(2);
        }
        if next > b.len() as u64 {
            break;
        }
        off = next as usize;
    }
    if any || !out.is_empty() {
        Outcome::Parsed
    } else {
        Outcome::Garbage
    }
}

fn req(cmd: &[u8], key: &[u8], off: usize, truncated: bool) -> Req {
    let c = text(cmd, 16);
    Req {
        method: c.clone(),
        route: c,
        target: text(key, MAX_TARGET),
        offset: off as u64,
        truncated,
        ..Req::default()
    }
}

/// Parses the replies that start in `b`.
pub(crate) fn parse_responses(b: &[u8], size: u64, out: &mut Vec<Resp>) -> Outcome {
    let mut off = 0usize;
    while off < b.len() {
        let buf = &b[off..];
        let start = off;
        let Some(e) = find_crlf(buf) else {
            if out.is_empty()
                && !looks_like_response(buf)
                && !buf.iter().all(u8::is_ascii_uppercase)
            {
                return Outcome::Continuation;
            }
            // A reply line cut by the prefix.
            out.push(reply(buf, start, size > b.len() as u64));
            break;
        };
        let line = &buf[..e];
        let word_end = line.iter().position(|&c| c == b' ').unwrap_or(line.len());
        let word = &line[..word_end];
        let is_reply = word.iter().all(|&c| c.is_ascii_uppercase() || c == b'_')
            && !word.is_empty()
            || parse_dec(word).is_some();
        if !is_reply {
            if out.is_empty() {
                return Outcome::Continuation;
            }
            break;
        }
        match word {
            b"VALUE" | b"STAT" => {
                // Items until END.
                let hit = word == b"VALUE";
                let mut pos = off;
                let mut complete = false;
                loop {
                    let rest = &b[pos..];
                    let Some(le) = find_crlf(rest) else { break };
                    let l = &rest[..le];
                    if l == b"END" {
                        pos += le + 2;
                        complete = true;
                        break;
                    }
                    let mut p = (pos + le + 2) as u64;
                    if l.starts_with(b"VALUE ") {
                        let n = l.split(|&c| c == b' ').nth(3).and_then(parse_dec);
                        match n {
                            Some(n) => p = p.saturating_add(n).saturating_add(2),
                            None => break,
                        }
                    } else if !l.starts_with(b"STAT ") {
                        break;
                    }
                    if p > b.len() as u64 {
                        break;
                    }
                    pos = p as usize;
                }
                out.push(Resp {
                    status: if hit { "HIT".into() } else { "OK".into() },
                    offset: start as u64,
                    complete: true,
                    truncated: !complete && size > b.len() as u64,
                    ..Resp::default()
                });
                if !complete {
                    break;
                }
                off = pos;
            }
            b"VA" => {
                // Meta get hit: data block follows.
                let n = line
                    .split(|&c| c == b' ')
                    .nth(1)
                    .and_then(parse_dec)
                    .unwrap_or(0);
                out.push(reply(line, start, false));
                let next = ((off + e + 2) as u64).saturating_add(n).saturating_add(2);
                if next > b.len() as u64 {
                    break;
                }
                off = next as usize;
            }
            _ => {
                out.push(reply(line, start, false));
                off += e + 2;
            }
        }
    }
    if out.is_empty() {
        Outcome::Continuation
    } else {
        Outcome::Parsed
    }
}

fn reply(line: &[u8], off: usize, truncated: bool) -> Resp {
    let word_end = line
        .iter()
        .position(|&c| c == b' ' || c == b'\r')
        .unwrap_or(line.len());
    let word = &line[..word_end];
    let status = match word {
        b"END" | b"EN" => Text::const_new("MISS"),
        w if parse_dec(w).is_some() => Text::const_new("OK"),
        w => text(w, 32),
    };
    let error = matches!(word, b"ERROR" | b"CLIENT_ERROR" | b"SERVER_ERROR");
    Resp {
        status,
        error,
        offset: off as u64,
        truncated,
        complete: true,
        ..Resp::default()
    }
}
