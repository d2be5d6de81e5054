//! Property tests of `redact_in_place`: never panics, never changes the length, never touches
//! the bytes of a request without secrets, and leaves no secret byte behind.

use proptest::prelude::*;
use retrace_protocols::redact::{redact_in_place, MASK, SECRET_KEYS};

/// A header name that is not a secret one (letters, digits, dashes).
fn plain_header_name() -> impl Strategy<Value = String> {
    "[A-Za-z][A-Za-z0-9-]{0,20}".prop_filter("not a secret header", |n| {
        let l = n.to_ascii_lowercase();
        !matches!(
            l.as_str(),
            "authorization" | "proxy-authorization" | "cookie" | "set-cookie"
        )
    })
}

/// A header value with no secret in it: no secret parameter name (`sig=0` in any header is one:
/// the parameter rules apply to every text) and no bearer token.
fn header_value() -> impl Strategy<Value = String> {
    "[!-~][ -~]{0,40}".prop_filter("no secret parameter or token", |v| {
        let l = v.to_ascii_lowercase().replace('-', "_");
        !l.contains("bearer") && !SECRET_KEYS.iter().any(|k| l.contains(&k.replace('-', "_")))
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn never_panics_never_resizes(mut bytes in proptest::collection::vec(any::<u8>(), 0..1024)) {
        let len = bytes.len();
        let _ = redact_in_place(&mut bytes);
        prop_assert_eq!(bytes.len(), len);
        // Idempotent: a second pass finds nothing new to change.
        let once = bytes.clone();
        let _ = redact_in_place(&mut bytes);
        prop_assert_eq!(bytes, once);
    }

    #[test]
    fn plain_requests_untouched(
        method in "(GET|POST|PUT|DELETE|HEAD)",
        path in "/[a-z0-9/._-]{0,40}",
        headers in proptest::collection::vec((plain_header_name(), header_value()), 0..10),
        cut in 0usize..2048,
    ) {
        let mut req = format!("{method} {path} HTTP/1.1\r\n");
        for (n, v) in &headers {
            req.push_str(&format!("{n}: {v}\r\n"));
        }
        req.push_str("\r\n");
        let mut bytes = req.into_bytes();
        bytes.truncate(cut.min(bytes.len()));
        let before = bytes.clone();
        prop_assert_eq!(redact_in_place(&mut bytes), 0);
        prop_assert_eq!(bytes, before);
    }

    #[test]
    fn secrets_hidden_even_when_cut(
        name in "(authorization|proxy-authorization|cookie|set-cookie)",
        upper in proptest::collection::vec(any::<bool>(), 20),
        secret in "[A-Za-z0-9+/=._;-]{1,60}",
        others in proptest::collection::vec((plain_header_name(), header_value()), 0..5),
        cut_back in 0usize..40,
    ) {
        // ASCII case variations only (a regex `(?i)` would also produce the Kelvin sign).
        let name: String = name
            .chars()
            .zip(upper.iter().cycle())
            .map(|(c, &u)| if u { c.to_ascii_uppercase() } else { c })
            .collect();
        let mut req = String::from("POST /login HTTP/1.1\r\n");
        for (n, v) in &others {
            req.push_str(&format!("{n}: {v}\r\n"));
        }
        let value_at = req.len() + name.len() + 2;
        req.push_str(&format!("{name}: {secret}\r\nAccept: */*\r\n\r\n"));
        let mut bytes = req.into_bytes();
        // Cut somewhere inside (or after) the secret value.
        let cut = (value_at + secret.len()).saturating_sub(cut_back).max(value_at + 1);
        bytes.truncate(cut);
        let n = redact_in_place(&mut bytes);
        prop_assert_eq!(n, 1);
        prop_assert!(bytes[value_at..].iter().take(secret.len()).all(|&b| b == MASK));
        let s = String::from_utf8_lossy(&bytes);
        prop_assert!(secret.len() < 4 || !s.contains(secret.as_str()));
    }

    #[test]
    fn postgres_password_hidden(pw in proptest::collection::vec(1u8..=255, 1..200), cut in 6usize..220) {
        let mut msg = vec![b'p'];
        msg.extend_from_slice(&((pw.len() + 5) as u32).to_be_bytes());
        msg.extend_from_slice(&pw);
        msg.push(0);
        msg.truncate(cut.min(msg.len()));
        prop_assert_eq!(redact_in_place(&mut msg), 1);
        prop_assert!(msg[5..].iter().all(|&b| b == MASK));
    }
}
