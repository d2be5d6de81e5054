//! HTTP/2 (cleartext) and gRPC: frames walked in the captured prefix, HEADERS blocks decoded
//! with HPACK (loona-hpack, one decoder per direction so the dynamic tables stay in step),
//! exchanges paired by stream id. When a header block is cut by the prefix, the decoder of that
//! direction is out of step for good: later blocks are not decoded (counted, not guessed).

use loona_hpack::Decoder;

use crate::util::{b3_trace_id, route_template, text, traceparent_trace_id, MAX_TARGET};
use crate::{Outcome, Protocol, Req, Resp, Text};

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
const DATA: u8 = 0;
const HEADERS: u8 = 1;
const RST_STREAM: u8 = 3;
const SETTINGS: u8 = 4;
const CONTINUATION: u8 = 9;
const END_STREAM: u8 = 0x1;
const END_HEADERS: u8 = 0x4;
const PADDED: u8 = 0x8;
const PRIORITY: u8 = 0x20;
/// Largest header block buffered across CONTINUATION frames.
const MAX_BLOCK: usize = 64 * 1024;

pub(crate) fn is_preface(b: &[u8]) -> bool {
    b.len() >= 14 && (b.starts_with(PREFACE) || PREFACE.starts_with(b))
}

/// A server's first bytes: a SETTINGS frame on stream 0.
pub(crate) fn looks_like_server_start(b: &[u8]) -> bool {
    match frame_header(b) {
        Some((len, t, _, stream)) => t == SETTINGS && stream == 0 && len % 6 == 0 && len <= 6 * 16,
        None => false,
    }
}

fn frame_header(b: &[u8]) -> Option<(usize, u8, u8, u32)> {
    let h = b.get(..9)?;
    let len = usize::from(h[0]) << 16 | usize::from(h[1]) << 8 | usize::from(h[2]);
    let stream = u32::from_be_bytes([h[5], h[6], h[7], h[8]]) & 0x7fff_ffff;
    Some((len, h[3], h[4], stream))
}

/// One direction's HPACK decoder and a header block being assembled.
struct Side {
    decoder: Decoder<'static>,
    broken: bool,
    block: Vec<u8>,
    block_stream: u32,
    block_flags: u8,
}

impl Default for Side {
    fn default() -> Self {
        Side {
            decoder: Decoder::new(),
            broken: false,
            block: Vec::new(),
            block_stream: 0,
            block_flags: 0,
        }
    }
}

/// Per-connection state.
#[derive(Default)]
pub(crate) struct State {
    client: Side,
    server: Side,
}

/// Headers of interest in one block.
#[derive(Default)]
struct Fields {
    method: Option<Text>,
    path: Option<Vec<u8>>,
    authority: Option<Text>,
    status: Option<Text>,
    grpc_status: Option<u32>,
    grpc: bool,
    trace_id: Option<Text>,
    request_id: Option<Text>,
}

impl State {
    pub(crate) fn parse_requests(&mut self, b: &[u8], size: u64, out: &mut Vec<Req>) -> Outcome {
        let mut body = b;
        let mut any = false;
        if b.starts_with(PREFACE) {
            body = &b[PREFACE.len()..];
            any = true;
        } else if PREFACE.starts_with(b) && !b.is_empty() {
            return Outcome::Parsed;
        }
        let off0 = b.len() - body.len();
        let truncated_push = size > b.len() as u64;
        let side = &mut self.client;
        let r = walk(body, off0, truncated_push, side, |ev| match ev {
            Event::Headers {
                stream,
                fields,
                offset,
                end_stream: _,
            } => {
                if fields.method.is_none() && fields.path.is_none() {
                    return; // trailers
                }
                let path = fields.path.unwrap_or_default();
                out.push(Req {
                    protocol: Some(if fields.grpc {
                        Protocol::Grpc
                    } else {
                        Protocol::Http2
                    }),
                    method: fields.method.unwrap_or_default(),
                    target: text(&path, MAX_TARGET),
                    route: if fields.grpc {
                        text(&path, MAX_TARGET)
                    } else {
                        route_template(&path)
                    },
                    trace_id: fields.trace_id,
                    request_id: fields.request_id,
                    host: fields.authority,
                    offset: offset as u64,
                    key: Some(stream),
                    ..Req::default()
                });
            }
            Event::Undecodable { stream, offset } => out.push(Req {
                protocol: Some(Protocol::Http2),
                offset: offset as u64,
                key: Some(stream),
                truncated: true,
                ..Req::default()
            }),
            _ => {}
        });
        if r || any {
            Outcome::Parsed
        } else {
            Outcome::Garbage
        }
    }

    pub(crate) fn parse_responses(&mut self, b: &[u8], size: u64, out: &mut Vec<Resp>) -> Outcome {
        let truncated_push = size > b.len() as u64;
        let r = walk(b, 0, truncated_push, &mut self.server, |ev| match ev {
            Event::Headers {
                stream,
                fields,
                offset,
                end_stream,
            } => {
                let (status, error) = match (fields.grpc_status, fields.status) {
                    (Some(g), _) => (Text::from(grpc_status_name(g)), g != 0),
                    (None, Some(s)) => {
                        let error = s.starts_with('5');
                        (s, error)
                    }
                    (None, None) => (Text::default(), false),
                };
                out.push(Resp {
                    status,
                    error,
                    offset: offset as u64,
                    key: Some(stream),
                    complete: end_stream,
                    ..Resp::default()
                });
            }
            Event::EndStream { stream, offset } => out.push(Resp {
                offset: offset as u64,
                key: Some(stream),
                complete: true,
                continues: true,
                ..Resp::default()
            }),
            Event::Reset { stream, offset } => out.push(Resp {
                status: "RST_STREAM".into(),
                error: true,
                offset: offset as u64,
                key: Some(stream),
                complete: true,
                ..Resp::default()
            }),
            Event::Undecodable { stream, offset } => out.push(Resp {
                offset: offset as u64,
                key: Some(stream),
                truncated: true,
                ..Resp::default()
            }),
        });
        if r {
            Outcome::Parsed
        } else {
            Outcome::Continuation
        }
    }
}

enum Event {
    Headers {
        stream: u32,
        fields: Fields,
        offset: usize,
        end_stream: bool,
    },
    EndStream {
        stream: u32,
        offset: usize,
    },
    Reset {
        stream: u32,
        offset: usize,
    },
    Undecodable {
        stream: u32,
        offset: usize,
    },
}

/// Walks the frames in `b`; returns whether it looked like HTTP/2 framing.
fn walk(
    b: &[u8],
    base: usize,
    truncated_push: bool,
    side: &mut Side,
    mut emit: impl FnMut(Event),
) -> bool {
    let mut pos = 0usize;
    let mut frames = 0;
    while let Some((len, t, flags, stream)) = frame_header(&b[pos..]) {
        if t > 9 || len > 1 << 24 {
            break;
        }
        frames += 1;
        let start = pos + 9;
        let end = start + len;
        let whole = end <= b.len();
        let payload = &b[start.min(b.len())..end.min(b.len())];
        let offset = base + pos;
        match t {
            HEADERS | CONTINUATION => {
                let fragment = if t == HEADERS {
                    side.block.clear();
                    side.block_stream = stream;
                    side.block_flags = flags;
                    header_fragment(payload, flags)
                } else if stream == side.block_stream {
                    Some(payload)
                } else {
                    None
                };
                if !whole {
                    // Cut by the prefix: the decoder cannot follow any more.
                    side.broken = true;
                }
                match fragment {
                    Some(f) if whole && side.block.len() + f.len() <= MAX_BLOCK => {
                        side.block.extend_from_slice(f)
                    }
                    _ => side.broken = true,
                }
                if flags & END_HEADERS != 0 || !whole {
                    let end_stream = side.block_flags & END_STREAM != 0;
                    if side.broken {
                        emit(Event::Undecodable {
                            stream: side.block_stream,
                            offset,
                        });
                        if end_stream && whole {
                            emit(Event::EndStream {
                                stream: side.block_stream,
                                offset,
                            });
                        }
                    } else {
                        let mut fields = Fields::default();
                        let block = std::mem::take(&mut side.block);
                        let ok = side
                            .decoder
                            .decode_with_cb(&block, |n, v| field(&mut fields, &n, &v))
                            .is_ok();
                        side.block = block;
                        if ok {
                            emit(Event::Headers {
                                stream: side.block_stream,
                                fields,
                                offset,
                                end_stream,
                            });
                        } else {
                            side.broken = true;
                            emit(Event::Undecodable {
                                stream: side.block_stream,
                                offset,
                            });
                        }
                    }
                    side.block.clear();
                }
            }
            DATA if flags & END_STREAM != 0 && stream != 0 => {
                emit(Event::EndStream { stream, offset })
            }
            RST_STREAM if stream != 0 => emit(Event::Reset { stream, offset }),
            _ => {}
        }
        if !whole {
            break;
        }
        pos = end;
    }
    let _ = truncated_push;
    frames > 0
}

/// The header block fragment of a HEADERS frame payload (padding and priority removed).
fn header_fragment(p: &[u8], flags: u8) -> Option<&[u8]> {
    let mut start = 0usize;
    let mut end = p.len();
    if flags & PADDED != 0 {
        let pad = usize::from(*p.first()?);
        start += 1;
        end = end.checked_sub(pad)?;
    }
    if flags & PRIORITY != 0 {
        start += 5;
    }
    p.get(start..end)
}

fn field(f: &mut Fields, name: &[u8], value: &[u8]) {
    match name {
        b":method" => f.method = Some(text(value, 16)),
        b":path" => f.path = Some(value.to_vec()),
        b":authority" => f.authority = Some(text(value, 128)),
        b":status" => f.status = Some(text(value, 8)),
        b"grpc-status" => {
            f.grpc_status = crate::util::parse_dec(value).and_then(|v| u32::try_from(v).ok())
        }
        b"content-type" => f.grpc = value.starts_with(b"application/grpc"),
        b"traceparent" => f.trace_id = traceparent_trace_id(value),
        b"b3" | b"x-b3-traceid" if f.trace_id.is_none() => f.trace_id = b3_trace_id(value),
        b"x-request-id" => f.request_id = Some(text(value, 128)),
        _ => {}
    }
}

/// Canonical name of a gRPC status code.
fn grpc_status_name(code: u32) -> &'static str {
    match code {
        0 => "OK",
        1 => "CANCELLED",
        2 => "UNKNOWN",
        3 => "INVALID_ARGUMENT",
        4 => "DEADLINE_EXCEEDED",
        5 => "NOT_FOUND",
        6 => "ALREADY_EXISTS",
        7 => "PERMISSION_DENIED",
        8 => "RESOURCE_EXHAUSTED",
        9 => "FAILED_PRECONDITION",
        10 => "ABORTED",
        11 => "OUT_OF_RANGE",
        12 => "UNIMPLEMENTED",
        13 => "INTERNAL",
        14 => "UNAVAILABLE",
        15 => "DATA_LOSS",
        16 => "UNAUTHENTICATED",
        _ => "GRPC_UNKNOWN_CODE",
    }
}
