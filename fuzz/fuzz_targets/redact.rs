//! Redaction (`retrace_protocols::redact`) on arbitrary bytes around a planted secret, with
//! invariants rather than no-panic alone:
//! - the length never changes, and every byte that changes becomes `*` (or, for an HPACK
//!   string length, loses its Huffman bit): redaction only hides, it never writes new text;
//! - a second pass finds nothing more to hide in what the first left (nothing secret is left
//!   half-masked);
//! - the planted secret (an HTTP secret header, a `key=value` or JSON secret parameter, a
//!   bearer token, a Redis `AUTH`, a PostgreSQL password message, or `--password VALUE` in a
//!   command line), whatever the bytes around it, comes out as `*` only.
#![no_main]

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use retrace_protocols::redact::{redact_args, redact_in_place, MASK, SECRET_KEYS};

/// The documented secret headers (module doc of `redact`).
const HEADERS: [&str; 9] = [
    "Authorization",
    "Proxy-Authorization",
    "Cookie",
    "Set-Cookie",
    "X-Api-Key",
    "Api-Key",
    "X-Auth-Token",
    "X-Access-Token",
    "X-Amz-Security-Token",
];

#[derive(Arbitrary, Debug)]
enum Plant {
    Header(u8),
    Param(u8),
    Json(u8),
    Bearer,
    RedisAuth,
    PgPassword,
}

#[derive(Arbitrary, Debug)]
struct Input<'a> {
    plant: Plant,
    /// Turned into letters and digits: the secret.
    secret: &'a [u8],
    prefix: &'a [u8],
    suffix: &'a [u8],
    /// Redacted alone, as a payload and as command-line arguments.
    raw: &'a [u8],
}

/// Checks what redaction may do to `before` to give `after`.
fn only_hides(before: &[u8], after: &[u8]) {
    assert_eq!(before.len(), after.len(), "redaction changed the length");
    for (i, (&b, &a)) in before.iter().zip(after).enumerate() {
        assert!(
            a == b || a == MASK || a == b & 0x7f,
            "byte {i} became {a:#04x} (was {b:#04x})"
        );
    }
    let mut again = after.to_vec();
    redact_in_place(&mut again);
    assert_eq!(
        again,
        after,
        "a second pass hid more: {:?} -> {:?}",
        String::from_utf8_lossy(after),
        String::from_utf8_lossy(&again)
    );
}

fuzz_target!(|input: Input<'_>| {
    // Arbitrary bytes alone.
    let mut raw = input.raw.to_vec();
    redact_in_place(&mut raw);
    only_hides(input.raw, &raw);

    // A planted secret.
    let secret: Vec<u8> = input
        .secret
        .iter()
        .take(64)
        .map(|b| {
            b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"[usize::from(*b) % 62]
        })
        .collect();
    if secret.is_empty() {
        return;
    }
    let mut buf: Vec<u8> = Vec::new();
    let at;
    match input.plant {
        Plant::Header(n) => {
            buf.extend_from_slice(input.prefix);
            buf.extend_from_slice(b"\r\n");
            buf.extend_from_slice(HEADERS[usize::from(n) % HEADERS.len()].as_bytes());
            buf.extend_from_slice(b": ");
            at = buf.len();
            buf.extend_from_slice(&secret);
            buf.extend_from_slice(b"\r\n");
        }
        Plant::Param(n) => {
            buf.extend_from_slice(input.prefix);
            buf.extend_from_slice(b"?");
            buf.extend_from_slice(SECRET_KEYS[usize::from(n) % SECRET_KEYS.len()].as_bytes());
            buf.extend_from_slice(b"=");
            at = buf.len();
            buf.extend_from_slice(&secret);
            buf.extend_from_slice(b"&");
        }
        Plant::Json(n) => {
            buf.extend_from_slice(input.prefix);
            buf.extend_from_slice(b"{\"");
            buf.extend_from_slice(SECRET_KEYS[usize::from(n) % SECRET_KEYS.len()].as_bytes());
            buf.extend_from_slice(b"\": \"");
            at = buf.len();
            buf.extend_from_slice(&secret);
            buf.extend_from_slice(b"\"}");
        }
        Plant::Bearer => {
            buf.extend_from_slice(input.prefix);
            buf.extend_from_slice(b" Bearer ");
            at = buf.len();
            buf.extend_from_slice(&secret);
            buf.extend_from_slice(b" ");
        }
        Plant::RedisAuth => {
            buf.extend_from_slice(format!("*2\r\n$4\r\nAUTH\r\n${}\r\n", secret.len()).as_bytes());
            at = buf.len();
            buf.extend_from_slice(&secret);
            buf.extend_from_slice(b"\r\n");
        }
        Plant::PgPassword => {
            buf.push(b'p');
            buf.extend_from_slice(&(4 + secret.len() as u32 + 1).to_be_bytes());
            at = buf.len();
            buf.extend_from_slice(&secret);
            buf.push(0);
        }
    }
    buf.extend_from_slice(input.suffix);
    let before = buf.clone();
    let n = redact_in_place(&mut buf);
    only_hides(&before, &buf);
    assert!(
        n > 0,
        "nothing redacted in {:?}",
        String::from_utf8_lossy(&before)
    );
    assert!(
        buf[at..at + secret.len()].iter().all(|&b| b == MASK),
        "{:?} left the secret in {:?}",
        input.plant,
        String::from_utf8_lossy(&buf)
    );

    // Command lines: arguments split at NUL as /proc/PID/cmdline does, then the secret as the
    // value of `--password`.
    let mut args: Vec<String> = input
        .raw
        .split(|&b| b == 0)
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect();
    let n_args = args.len();
    args.push("--password".into());
    args.push(String::from_utf8_lossy(&secret).into_owned());
    redact_args(&mut args);
    assert_eq!(args.len(), n_args + 2);
    assert!(
        args[n_args + 1].bytes().all(|b| b == MASK),
        "--password's value kept: {:?}",
        args[n_args + 1]
    );
});
