//! HTTP/1.x requests and responses (httparse), with pipelining.

use crate::util::{b3_trace_id, route_template, text, traceparent_trace_id, MAX_TARGET};
use crate::{Outcome, Req, Resp, Text};

/// Headers read per message (more are skipped: httparse then reports an error we recover from).
const MAX_HEADERS: usize = 48;

/// Body framing of a message.
enum Body {
    Len(u64),
    /// Chunked, or until the connection closes: the next message cannot be located.
    Unknown,
}

fn body_of(headers: &[httparse::Header<'_>], default_empty: bool) -> Body {
    for h in headers {
        // The length first: most names differ from both in it.
        match h.name.len() {
            14 if h.name.eq_ignore_ascii_case("content-length") => {
                return match crate::util::parse_dec(h.value.trim_ascii()) {
                    Some(n) => Body::Len(n),
                    None => Body::Unknown,
                };
            }
            17 if h.name.eq_ignore_ascii_case("transfer-encoding") => return Body::Unknown,
            _ => {}
        }
    }
    if default_empty {
        Body::Len(0)
    } else {
        Body::Unknown
    }
}

/// Parses the requests that start in `b` (a prefix of `size` bytes).
pub(crate) fn parse_requests(b: &[u8], size: u64, out: &mut Vec<Req>) -> Outcome {
    let mut off = 0usize;
    while off < b.len() {
        let buf = &b[off..];
        // Uninitialized slots: httparse writes those it returns (no 48-slot fill per message).
        let mut headers = [std::mem::MaybeUninit::<httparse::Header<'_>>::uninit(); MAX_HEADERS];
        let mut req = httparse::Request::new(&mut []);
        match req.parse_with_uninit_headers(buf, &mut headers) {
            Ok(httparse::Status::Complete(n)) => {
                let method = req.method.unwrap_or("");
                let path = req.path.unwrap_or("");
                let mut r = new_req(method.as_bytes(), path.as_bytes(), off);
                for h in req.headers.iter() {
                    header(&mut r, h.name.as_bytes(), h.value);
                }
                // Requests without a length have no body.
                let body = body_of(req.headers, true);
                out.push(r);
                match body {
                    Body::Len(len) => {
                        let next = (off + n) as u64 + len;
                        if next > b.len() as u64 {
                            if next > size {
                                if let Some(last) = out.last_mut() {
                                    last.truncated = true;
                                }
                            }
                            break;
                        }
                        off = next as usize;
                    }
                    Body::Unknown => break,
                }
            }
            Ok(httparse::Status::Partial) => {
                // Cut by the prefix (or the message really continues in the next write).
                match partial_request(buf, off) {
                    Some(mut r) => {
                        r.truncated = true;
                        out.push(r);
                    }
                    None if out.is_empty() => return Outcome::Continuation,
                    None => {}
                }
                break;
            }
            Err(httparse::Error::TooManyHeaders) => match partial_request(buf, off) {
                Some(r) => {
                    out.push(r);
                    break;
                }
                None => break,
            },
            Err(_) => {
                if out.is_empty() {
                    return if crate::http1_method(buf) {
                        Outcome::Parsed
                    } else {
                        Outcome::Garbage
                    };
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

fn new_req(method: &[u8], path: &[u8], off: usize) -> Req {
    Req {
        method: text(method, 16),
        target: text(path, MAX_TARGET),
        route: route_template(path),
        offset: off as u64,
        ..Req::default()
    }
}

fn header(r: &mut Req, name: &[u8], value: &[u8]) {
    // The length first: most names are none of these.
    match name.len() {
        4 if name.eq_ignore_ascii_case(b"host") => {
            r.host = Some(text(value.trim_ascii(), 128));
        }
        11 if name.eq_ignore_ascii_case(b"traceparent") => {
            r.trace_id = traceparent_trace_id(value);
        }
        // B3, when no traceparent came first (W3C wins when both are sent).
        2 if r.trace_id.is_none() && name.eq_ignore_ascii_case(b"b3") => {
            r.trace_id = b3_trace_id(value);
        }
        12 if r.trace_id.is_none() && name.eq_ignore_ascii_case(b"x-b3-traceid") => {
            r.trace_id = b3_trace_id(value);
        }
        12 if name.eq_ignore_ascii_case(b"x-request-id") => {
            r.request_id = Some(text(value.trim_ascii(), 128));
        }
        _ => {}
    }
}

/// A request whose header block is incomplete: request line and whatever header lines are
/// whole.
fn partial_request(buf: &[u8], off: usize) -> Option<Req> {
    let line_end = memchr::memchr(b'\n', buf).unwrap_or(buf.len());
    let line = buf[..line_end]
        .strip_suffix(b"\r")
        .unwrap_or(&buf[..line_end]);
    let mut parts = line.splitn(3, |&c| c == b' ');
    let method = parts.next()?;
    let path = parts.next()?;
    if !crate::http1_method(buf) || path.is_empty() {
        return None;
    }
    let mut r = new_req(method, path, off);
    let mut pos = line_end + 1;
    while pos < buf.len() {
        let Some(e) = memchr::memchr(b'\n', &buf[pos..]) else {
            break;
        };
        let l = &buf[pos..pos + e];
        let l = l.strip_suffix(b"\r").unwrap_or(l);
        if l.is_empty() {
            break;
        }
        if let Some(colon) = memchr::memchr(b':', l) {
            header(&mut r, &l[..colon], &l[colon + 1..]);
        }
        pos += e + 1;
    }
    Some(r)
}

/// Parses the responses that start in `b`.
pub(crate) fn parse_responses(b: &[u8], size: u64, out: &mut Vec<Resp>) -> Outcome {
    let mut off = 0usize;
    while off < b.len() {
        let buf = &b[off..];
        let mut headers = [std::mem::MaybeUninit::<httparse::Header<'_>>::uninit(); MAX_HEADERS];
        let mut resp = httparse::Response::new(&mut []);
        let parsed = httparse::ParserConfig::default().parse_response_with_uninit_headers(
            &mut resp,
            buf,
            &mut headers,
        );
        let code = resp.code;
        match parsed {
            Ok(httparse::Status::Complete(n)) => {
                let code = code.unwrap_or(0);
                let informational = (100..200).contains(&code);
                out.push(status(code, off, !informational, false));
                if informational {
                    off += n;
                    continue;
                }
                let no_body = code == 204 || code == 304;
                let body = if no_body {
                    Body::Len(0)
                } else {
                    body_of(resp.headers, false)
                };
                match body {
                    Body::Len(len) => {
                        let next = (off + n) as u64 + len;
                        if let Some(r) = out.last_mut() {
                            r.end = Some(next);
                        }
                        if next > b.len() as u64 {
                            break;
                        }
                        off = next as usize;
                    }
                    Body::Unknown => break,
                }
            }
            Ok(httparse::Status::Partial) | Err(httparse::Error::TooManyHeaders) => {
                match code.or_else(|| partial_status(buf)) {
                    Some(code) => {
                        let complete = !(100..200).contains(&code);
                        out.push(status(
                            code,
                            off,
                            complete,
                            (off as u64 + buf.len() as u64) < size,
                        ))
                    }
                    None if out.is_empty() => {
                        return if buf.starts_with(b"HTTP/") || b"HTTP/".starts_with(buf) {
                            Outcome::Parsed
                        } else {
                            Outcome::Continuation
                        }
                    }
                    None => {}
                }
                break;
            }
            Err(_) => {
                if out.is_empty() {
                    return if buf.starts_with(b"HTTP/") {
                        Outcome::Parsed
                    } else {
                        Outcome::Garbage
                    };
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

/// Status code of a status line that httparse could not finish.
fn partial_status(buf: &[u8]) -> Option<u16> {
    let rest = buf.strip_prefix(b"HTTP/1.")?;
    let code = rest.get(2..5)?;
    crate::util::parse_dec(code).and_then(|c| u16::try_from(c).ok())
}

fn status(code: u16, off: usize, complete: bool, truncated: bool) -> Resp {
    Resp {
        status: status_text(code),
        error: code >= 500,
        offset: off as u64,
        truncated,
        complete,
        ..Resp::default()
    }
}

/// Status code as text, without the formatting machinery for the common ones.
fn status_text(code: u16) -> Text {
    let s = match code {
        200 => "200",
        201 => "201",
        204 => "204",
        301 => "301",
        302 => "302",
        304 => "304",
        400 => "400",
        401 => "401",
        403 => "403",
        404 => "404",
        429 => "429",
        500 => "500",
        502 => "502",
        503 => "503",
        504 => "504",
        _ => return compact_str::format_compact!("{code}"),
    };
    Text::const_new(s)
}
