//! What retrace's fuzz targets share: the framing that turns one fuzz input into the messages
//! of one side of a connection, and the checks every L7 session must pass whatever it is fed.
//!
//! An input is a role byte (bit 0: the session follows the server side) then messages, each a
//! header byte (bit 0: written by the session's owner, `egress`; bit 1: the real size is
//! larger than the captured prefix, as when the capture cut it), a 16-bit little-endian
//! length and that many payload bytes (fewer when the input ends first). The seeds in
//! `fuzz/seeds/` are real messages from the committed scenario captures in this framing
//! (`scripts/fuzz-seeds.py` writes them).

use retrace_protocols::{Exchange, Protocol, Role, Session};

/// Longest target an exchange may carry (the protocols crate's `MAX_TARGET`).
pub const MAX_TARGET: usize = 256;

/// One captured message of a connection side.
#[derive(Debug, Clone, Copy)]
pub struct Message<'a> {
    pub egress: bool,
    pub size: u64,
    pub payload: &'a [u8],
}

/// Splits a fuzz input into a role and messages (see the crate doc).
pub fn messages(data: &[u8]) -> (Role, Vec<Message<'_>>) {
    let Some((&role, mut rest)) = data.split_first() else {
        return (Role::Client, Vec::new());
    };
    let role = if role & 1 == 1 {
        Role::Server
    } else {
        Role::Client
    };
    let mut out = Vec::new();
    while rest.len() >= 3 {
        let flags = rest[0];
        let len = usize::from(u16::from_le_bytes([rest[1], rest[2]]));
        rest = &rest[3..];
        let payload = &rest[..len.min(rest.len())];
        rest = &rest[payload.len()..];
        let size = payload.len() as u64 + if flags & 2 != 0 { 4096 } else { 0 };
        out.push(Message {
            egress: flags & 1 == 1,
            size,
            payload,
        });
    }
    (role, out)
}

/// Encodes messages in the framing [`messages`] reads (for seeds and regression inputs).
pub fn encode(role: Role, msgs: &[(bool, &[u8])]) -> Vec<u8> {
    let mut out = vec![u8::from(role == Role::Server)];
    for (egress, payload) in msgs {
        let len = payload.len().min(usize::from(u16::MAX));
        out.push(u8::from(*egress));
        out.extend_from_slice(&(len as u16).to_le_bytes());
        out.extend_from_slice(&payload[..len]);
    }
    out
}

/// Feeds `opener` (messages that make the session recognize `expected`) then the fuzz
/// input's messages to one session, and checks what it returns: every exchange's strings are
/// bounded and free of control characters (they reach HTML, CSV and terminals), the
/// statistics count what was returned, and the pending queue stays bounded.
pub fn run_session(data: &[u8], opener: &[(bool, &[u8])], expected: Option<Protocol>) {
    let (role, msgs) = messages(data);
    let mut s = Session::new(role);
    let mut got: Vec<Exchange> = Vec::new();
    let mut ts = 1_000u64;
    for (egress, payload) in opener {
        // The opener is written as the role's client would see it: requests first.
        let egress = if role == Role::Client {
            *egress
        } else {
            !*egress
        };
        s.push_into(ts, egress, payload.len() as u64, payload, &mut got);
        ts += 1_000;
    }
    if let Some(p) = expected {
        assert_eq!(
            s.protocol(),
            p,
            "the opener must select the protocol under test"
        );
    }
    for m in &msgs {
        s.push_into(ts, m.egress, m.size, m.payload, &mut got);
        ts += 1_000;
    }
    let returned = got.len() as u64;
    let pushes = s.stats().pushes;
    assert_eq!(pushes, (opener.len() + msgs.len()) as u64);
    assert_eq!(
        s.stats().exchanges,
        returned,
        "stats count what push returned"
    );
    let rest = s.finish();
    assert!(
        rest.len() <= retrace_protocols::MAX_PENDING + msgs.len() + opener.len(),
        "finish returned {} exchanges",
        rest.len()
    );
    for x in got.iter().chain(&rest) {
        check_exchange(x);
    }
}

/// The bounds every exchange keeps whatever the bytes.
pub fn check_exchange(x: &Exchange) {
    assert!(
        x.target.len() <= MAX_TARGET,
        "target of {} bytes",
        x.target.len()
    );
    for (name, s) in [
        ("method", &x.method),
        ("target", &x.target),
        ("route", &x.route),
        ("status", &x.status),
    ] {
        assert!(
            !s.chars().any(char::is_control),
            "control character in {name}: {s:?}"
        );
    }
}

/// First messages that make a session recognize each protocol (a client's request, or for
/// MySQL a query), so that a target reaches that protocol's parser with most of its inputs.
pub mod openers {
    pub const HTTP1: &[(bool, &[u8])] = &[(true, b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")];
    pub const HTTP2: &[(bool, &[u8])] = &[(
        true,
        b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00",
    )];
    pub const POSTGRES: &[(bool, &[u8])] = &[(
        true,
        b"\x00\x00\x00\x17\x00\x03\x00\x00user\x00postgres\x00\x00",
    )];
    pub const MYSQL: &[(bool, &[u8])] = &[(true, b"\x09\x00\x00\x00\x03SELECT 1")];
    pub const REDIS: &[(bool, &[u8])] = &[(true, b"*1\r\n$4\r\nPING\r\n")];
    pub const MEMCACHED: &[(bool, &[u8])] = &[(true, b"get key\r\n")];
    pub const DNS: &[(bool, &[u8])] = &[(
        true,
        b"\x00\x1d\x12\x34\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00\x07example\x03com\x00\x00\x01\x00\x01",
    )];
}
