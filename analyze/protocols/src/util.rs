//! Small helpers shared by the parsers: bounded string extraction, route templates, SQL
//! statement normalization.

use crate::Text;

/// Longest `target` kept (bytes, cut on a char boundary).
pub(crate) const MAX_TARGET: usize = 256;
/// Longest `route` kept.
pub(crate) const MAX_ROUTE: usize = 200;

/// Whether every byte of `b` is printable ASCII (`0x20..0x7f`).
#[inline]
fn printable_ascii(b: &[u8]) -> bool {
    b.iter().all(|&c| (0x20..0x7f).contains(&c))
}

/// `b` as a `str` when it is printable ASCII (which is always valid UTF-8).
#[inline]
pub(crate) fn printable_str(b: &[u8]) -> Option<&str> {
    if printable_ascii(b) {
        // SAFETY: every byte is in 0x20..0x7f, i.e. ASCII, and ASCII is valid UTF-8.
        Some(unsafe { std::str::from_utf8_unchecked(b) })
    } else {
        None
    }
}

/// Lossy UTF-8 of at most `max` bytes of `b` (cut on a char boundary), control characters
/// replaced by spaces.
pub(crate) fn text(b: &[u8], max: usize) -> Text {
    let b = &b[..b.len().min(max)];
    // Fast path: printable ASCII (nearly always).
    if let Some(s) = printable_str(b) {
        return Text::from(s);
    }
    text_slow(b, max)
}

/// [`text`] for bytes that are not all printable ASCII.
#[cold]
fn text_slow(b: &[u8], max: usize) -> Text {
    let s = String::from_utf8_lossy(b);
    let mut out = Text::with_capacity(s.len());
    for c in s.chars() {
        if out.len() + c.len_utf8() > max {
            break;
        }
        out.push(if c.is_control() { ' ' } else { c });
    }
    out
}

/// Appends `b` as text (see [`text`]) without an intermediate allocation when it is printable
/// ASCII.
fn push_text(out: &mut Text, b: &[u8]) {
    if let Some(s) = printable_str(b) {
        out.push_str(s);
        return;
    }
    out.push_str(&text(b, MAX_ROUTE));
}

/// ASCII upper-case copy of a short token (at most 32 bytes).
pub(crate) fn upper_token(b: &[u8]) -> Text {
    let b = &b[..b.len().min(32)];
    let mut buf = [0u8; 32];
    for (d, &c) in buf.iter_mut().zip(b) {
        *d = if c.is_ascii_graphic() {
            c.to_ascii_uppercase()
        } else {
            b'?'
        };
    }
    let buf = &buf[..b.len()];
    debug_assert!(buf.is_ascii());
    // SAFETY: every byte written is ASCII (an upper-cased graphic ASCII byte or `?`), and
    // ASCII is valid UTF-8.
    Text::from(unsafe { std::str::from_utf8_unchecked(buf) })
}

/// Whether a path segment looks like an identifier: a number, a UUID, or a long hex string
/// (at least 16 hex digits, or at least 8 with a digit in them).
pub(crate) fn is_id_segment(seg: &[u8]) -> bool {
    if seg.is_empty() {
        return false;
    }
    if seg.iter().all(u8::is_ascii_digit) {
        return true;
    }
    if seg.len() == 36
        && seg.iter().enumerate().all(|(i, &c)| {
            if matches!(i, 8 | 13 | 18 | 23) {
                c == b'-'
            } else {
                c.is_ascii_hexdigit()
            }
        })
    {
        return true;
    }
    if seg.iter().all(u8::is_ascii_hexdigit) {
        return seg.len() >= 16 || (seg.len() >= 8 && seg.iter().any(u8::is_ascii_digit));
    }
    false
}

/// Route template of a request target: the path without query or fragment, with id-like
/// segments replaced by `{id}`.
pub(crate) fn route_template(target: &[u8]) -> Text {
    if target.len() > ROUTE_CACHE_KEY {
        return route_uncached(target);
    }
    // The same request is usually parsed several times in a row (client and server side of a
    // connection, then the proxied request): the route of a recent target is reused. (It is a
    // function of the target's bytes alone, compared in full.)
    let cached = ROUTES.try_with(|cache| {
        let Ok(mut c) = cache.try_borrow_mut() else {
            return route_uncached(target);
        };
        c.get_or_insert(target)
    });
    cached.unwrap_or_else(|_| route_uncached(target))
}

/// Longest target whose route is remembered.
const ROUTE_CACHE_KEY: usize = 32;
/// Routes remembered.
const ROUTE_CACHE_SLOTS: usize = 4;

/// The routes of the last few short targets (a ring).
struct RouteCache {
    keys: [[u8; ROUTE_CACHE_KEY]; ROUTE_CACHE_SLOTS],
    /// Length of each key; `usize::MAX`: an empty slot.
    lens: [usize; ROUTE_CACHE_SLOTS],
    routes: [Text; ROUTE_CACHE_SLOTS],
    /// The slot the next new route takes (always below [`ROUTE_CACHE_SLOTS`]).
    next: usize,
}

impl RouteCache {
    /// The route of `target` (at most [`ROUTE_CACHE_KEY`] bytes), remembered or computed.
    fn get_or_insert(&mut self, target: &[u8]) -> Text {
        let len = target.len();
        for i in 0..ROUTE_CACHE_SLOTS {
            if self.lens[i] == len && self.keys[i][..len] == *target {
                return self.routes[i].clone();
            }
        }
        let route = route_uncached(target);
        let i = self.next;
        self.keys[i][..len].copy_from_slice(target);
        self.lens[i] = len;
        self.routes[i] = route.clone();
        self.next = (i + 1) % ROUTE_CACHE_SLOTS;
        route
    }
}

thread_local! {
    static ROUTES: std::cell::RefCell<RouteCache> = const {
        std::cell::RefCell::new(RouteCache {
            keys: [[0; ROUTE_CACHE_KEY]; ROUTE_CACHE_SLOTS],
            lens: [usize::MAX; ROUTE_CACHE_SLOTS],
            routes: [const { Text::const_new("") }; ROUTE_CACHE_SLOTS],
            next: 0,
        })
    };
}

/// [`route_template`] without the cache.
fn route_uncached(target: &[u8]) -> Text {
    // One pass: the end of the path, and whether it is printable ASCII (short targets: a
    // plain loop beats a vectorized search's set-up).
    let mut end = target.len();
    let mut printable = true;
    for (i, &c) in target.iter().enumerate() {
        if c == b'?' || c == b'#' {
            end = i;
            break;
        }
        printable &= (0x20..0x7f).contains(&c);
    }
    let mut path = &target[..end];
    // Absolute form (proxies): drop scheme and authority.
    if let Some(rest) = strip_scheme(path) {
        path = rest;
    }
    // (`path` is a suffix of `target[..end]`: printable when that is.)
    if printable {
        route_ascii(path)
    } else {
        route_general(path)
    }
}

/// [`route_general`] for a printable ASCII path, built in a buffer on the stack: every byte is
/// a char, so the route is the first [`MAX_ROUTE`] bytes of the whole template.
fn route_ascii(path: &[u8]) -> Text {
    if path.is_empty() {
        return Text::const_new("/");
    }
    let mut buf = [0u8; MAX_ROUTE];
    let mut len = 0usize;
    for (i, seg) in path.split(|&c| c == b'/').enumerate() {
        if i > 0 {
            if len >= MAX_ROUTE {
                break;
            }
            buf[len] = b'/';
            len += 1;
        }
        let piece: &[u8] = if is_id_segment(seg) { b"{id}" } else { seg };
        // Byte by byte: segments are short, a call to copy them costs more.
        for &c in piece {
            if len >= MAX_ROUTE {
                break;
            }
            buf[len] = c;
            len += 1;
        }
    }
    let out = &buf[..len];
    debug_assert!(out.is_ascii());
    // SAFETY: `out` holds bytes of `path` (printable ASCII), `/` and `{id}`: all ASCII, and
    // ASCII is valid UTF-8.
    Text::from(unsafe { std::str::from_utf8_unchecked(out) })
}

/// Route template of a path (query, fragment and scheme already removed), for any bytes.
fn route_general(path: &[u8]) -> Text {
    let mut out = Text::default();
    for (i, seg) in path.split(|&c| c == b'/').enumerate() {
        if i > 0 {
            out.push('/');
        }
        if is_id_segment(seg) {
            out.push_str("{id}");
        } else {
            push_text(&mut out, seg);
        }
        if out.len() >= MAX_ROUTE {
            break;
        }
    }
    truncate_str(&mut out, MAX_ROUTE);
    if out.is_empty() {
        out.push('/');
    }
    out
}

fn strip_scheme(path: &[u8]) -> Option<&[u8]> {
    let p = path
        .strip_prefix(b"http://".as_slice())
        .or_else(|| path.strip_prefix(b"https://".as_slice()))?;
    let slash = p.iter().position(|&c| c == b'/').unwrap_or(p.len());
    Some(&p[slash..])
}

/// Truncates `s` to at most `max` bytes on a char boundary.
pub(crate) fn truncate_str(s: &mut Text, max: usize) {
    if s.len() > max {
        let mut cut = max;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        s.truncate(cut);
    }
}

/// Normalized SQL statement: literals (quoted strings, numbers, `$n` parameters) replaced by
/// `?`, whitespace collapsed, a trailing `;` dropped, at most [`MAX_ROUTE`] bytes.
pub(crate) fn normalize_sql(sql: &[u8]) -> Text {
    let mut out = Text::with_capacity(sql.len().min(MAX_ROUTE));
    let mut i = 0;
    let mut pending_space = false;
    while i < sql.len() && out.len() < MAX_ROUTE {
        let c = sql[i];
        if c.is_ascii_whitespace() {
            pending_space = !out.is_empty();
            i += 1;
            continue;
        }
        if pending_space {
            out.push(' ');
            pending_space = false;
        }
        let prev_ident = out
            .as_bytes()
            .last()
            .is_some_and(|&p| p.is_ascii_alphanumeric() || p == b'_');
        if c == b'\'' {
            // String literal, '' escapes a quote.
            i += 1;
            while i < sql.len() {
                if sql[i] == b'\'' {
                    if sql.get(i + 1) == Some(&b'\'') {
                        i += 2;
                        continue;
                    }
                    break;
                }
                i += 1;
            }
            i += 1;
            out.push('?');
        } else if (c.is_ascii_digit()
            || (c == b'$' && sql.get(i + 1).is_some_and(u8::is_ascii_digit)))
            && !prev_ident
        {
            i += 1;
            while i < sql.len() && (sql[i].is_ascii_alphanumeric() || sql[i] == b'.') {
                i += 1;
            }
            out.push('?');
        } else {
            out.push(if c.is_ascii() && !c.is_ascii_control() {
                c as char
            } else {
                '?'
            });
            i += 1;
        }
    }
    while out.ends_with(';') || out.ends_with(' ') {
        out.pop();
    }
    truncate_str(&mut out, MAX_ROUTE);
    out
}

/// Parses an ASCII decimal number.
pub(crate) fn parse_dec(b: &[u8]) -> Option<u64> {
    if b.is_empty() || b.len() > 19 {
        return None;
    }
    let mut n = 0u64;
    for &c in b {
        if !c.is_ascii_digit() {
            return None;
        }
        n = n * 10 + u64::from(c - b'0');
    }
    Some(n)
}

/// Position of the first `\r\n` in `b`.
pub(crate) fn find_crlf(b: &[u8]) -> Option<usize> {
    let mut from = 0;
    while let Some(i) = memchr::memchr(b'\r', &b[from..]) {
        let at = from + i;
        if b.get(at + 1) == Some(&b'\n') {
            return Some(at);
        }
        from = at + 1;
    }
    None
}

/// Big-endian u32 at `at`.
pub(crate) fn be_u32(b: &[u8], at: usize) -> Option<u32> {
    let s = b.get(at..at.checked_add(4)?)?;
    Some(u32::from_be_bytes([s[0], s[1], s[2], s[3]]))
}

/// Trace id of a W3C `traceparent` value (`00-<32 hex>-<16 hex>-<2 hex>`).
pub(crate) fn traceparent_trace_id(v: &[u8]) -> Option<Text> {
    let v = v.trim_ascii();
    if v.len() < 55 || v[2] != b'-' || v[35] != b'-' {
        return None;
    }
    let id = &v[3..35];
    if id.iter().all(u8::is_ascii_hexdigit) && id.iter().any(|&c| c != b'0') {
        Some(text(id, 32).to_ascii_lowercase())
    } else {
        None
    }
}

/// Trace id of a B3 header: `X-B3-TraceId` (16 or 32 hex digits) or the single `b3` header
/// (`<trace id>-<span id>[-<sampled>[-<parent>]]`), as 32 lower-case hex digits (a 64-bit id
/// padded with zeros on the left, as B3 says).
pub(crate) fn b3_trace_id(v: &[u8]) -> Option<Text> {
    let v = v.trim_ascii();
    let id = v.split(|&c| c == b'-').next()?;
    if !(id.len() == 16 || id.len() == 32)
        || !id.iter().all(u8::is_ascii_hexdigit)
        || id.iter().all(|&c| c == b'0')
    {
        return None;
    }
    let mut out = String::with_capacity(32);
    for _ in id.len()..32 {
        out.push('0');
    }
    out.extend(id.iter().map(|&c| char::from(c.to_ascii_lowercase())));
    Some(Text::from(out.as_str()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn b3() {
        let full = "463ac35c9f6413ad48485a3953bb6124";
        assert_eq!(
            b3_trace_id(format!("{full}-0020000000000001-1").as_bytes()).as_deref(),
            Some(full)
        );
        assert_eq!(
            b3_trace_id(b" 463AC35C9F6413AD ").as_deref(),
            Some("0000000000000000463ac35c9f6413ad")
        );
        assert_eq!(b3_trace_id(b"0"), None, "a sampling decision alone");
        assert_eq!(b3_trace_id(b"0000000000000000"), None);
        assert_eq!(b3_trace_id(b"xyz"), None);
    }

    #[test]
    fn routes() {
        assert_eq!(
            route_template(b"/users/42/orders/3fa85f64-5717-4562-b3fc-2c963f66afa6?x=1"),
            "/users/{id}/orders/{id}"
        );
        assert_eq!(
            route_template(b"/blob/deadbeefdeadbeefdeadbeef"),
            "/blob/{id}"
        );
        assert_eq!(route_template(b"/api/v2/facade"), "/api/v2/facade");
        assert_eq!(route_template(b"/c0ffee12/x"), "/{id}/x");
        assert_eq!(route_template(b"http://h:80/a/7"), "/a/{id}");
        assert_eq!(route_template(b"*"), "*");
        assert_eq!(route_template(b""), "/");
    }

    /// The route as built before the stack-buffer fast path: for every input.
    fn route_reference(target: &[u8]) -> Text {
        let end = target
            .iter()
            .position(|&c| c == b'?' || c == b'#')
            .unwrap_or(target.len());
        let mut path = &target[..end];
        if let Some(rest) = strip_scheme(path) {
            path = rest;
        }
        route_general(path)
    }

    /// Tricky pieces for targets: ids, near-ids, UTF-8 (valid and not), control bytes,
    /// separators, queries, long segments.
    const PIECES: [&[u8]; 24] = [
        b"/",
        b"//",
        b"api",
        b"42",
        b"0",
        b"c0ffee12",
        b"deadbeef",
        b"deadbeefdeadbeef",
        b"3fa85f64-5717-4562-b3fc-2c963f66afa6",
        b"3fa85f64-5717-4562-b3fc-2c963f66afaZ",
        b"caf\xc3\xa9",
        b"\xe2\x82\xac",
        b"\xc3",
        b"\xff\xfe",
        b"\x00",
        b"\t\r\n",
        b"\x7f",
        b"?q=1/2",
        b"#frag",
        b"http://h:80",
        b"https://x",
        b" ",
        b"{id}",
        b"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
    ];

    #[test]
    fn route_fast_path_matches_reference() {
        let mut cases: Vec<Vec<u8>> = vec![
            b"".to_vec(),
            b"/".to_vec(),
            b"*".to_vec(),
            b"/users/42".to_vec(),
            b"/a/b/c?x=1#y".to_vec(),
            b"http://host".to_vec(),
            b"http://host/a/1".to_vec(),
        ];
        // Routes cut at MAX_ROUTE inside a segment, inside `{id}`, at a `/`, and in UTF-8.
        for pad in 190..=205 {
            for tail in [&b"/123/x"[..], b"/abc", b"/\xc3\xa9\xc3\xa9", b"/\x01\x02"] {
                let mut t = vec![b'/'];
                t.extend(std::iter::repeat_n(b'a', pad));
                t.extend_from_slice(tail);
                cases.push(t);
                let mut t = b"/".to_vec();
                while t.len() < pad {
                    t.extend_from_slice(b"7/");
                }
                t.extend_from_slice(tail);
                cases.push(t);
            }
        }
        // Every pair and a pseudo-random sample of longer combinations of the pieces.
        for a in PIECES {
            for b in PIECES {
                cases.push([a, b].concat());
                cases.push([b"/".as_slice(), a, b"/", b].concat());
            }
        }
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        for _ in 0..20_000 {
            let mut t = Vec::new();
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            for k in 0..(x % 12) {
                let i = ((x >> (5 * k + 4)) % PIECES.len() as u64) as usize;
                t.extend_from_slice(PIECES[i]);
            }
            cases.push(t);
        }
        let mut fast = 0;
        for t in &cases {
            let got = route_template(t);
            assert_eq!(
                got,
                route_reference(t),
                "target {:?}",
                t.escape_ascii().to_string()
            );
            assert!(got.len() <= MAX_ROUTE);
            fast += usize::from(printable_ascii(t));
        }
        // Both paths were exercised.
        assert!(
            fast > 1000 && fast < cases.len() - 1000,
            "{fast} of {}",
            cases.len()
        );
    }

    /// Targets of one length that differ in one byte, repeated in patterns longer and shorter
    /// than the cache: every route is the target's own.
    #[test]
    fn route_cache_never_mixes_targets() {
        let targets: Vec<Vec<u8>> = (0..7u8)
            .flat_map(|i| {
                [
                    format!("/api/users/{i}").into_bytes(),
                    format!("/api/user{i}/x").into_bytes(),
                    format!("/api/users/{i}?q").into_bytes(),
                ]
            })
            .chain([
                b"/".to_vec(),
                b"".to_vec(),
                [b'/'; ROUTE_CACHE_KEY].to_vec(),
                [b'7'; ROUTE_CACHE_KEY + 1].to_vec(),
            ])
            .collect();
        for round in 0..3 {
            for (k, t) in targets.iter().enumerate() {
                for _ in 0..=(k + round) % 3 {
                    assert_eq!(route_template(t), route_reference(t), "{t:?}");
                }
            }
            for t in targets.iter().rev() {
                assert_eq!(route_template(t), route_reference(t), "{t:?}");
            }
        }
    }

    #[test]
    fn text_and_tokens() {
        assert_eq!(text(b"GET", 16), "GET");
        assert_eq!(text(b"a\tb\x00c", 16), "a b c");
        assert_eq!(text(b"caf\xc3\xa9", 16), "caf\u{e9}");
        assert_eq!(text(b"caf\xc3\xa9", 4), "caf");
        assert_eq!(text(b"\xff!", 16), "\u{fffd}!");
        assert_eq!(text(b"abcdef", 3), "abc");
        assert_eq!(upper_token(b"get"), "GET");
        assert_eq!(upper_token(b"hs\xc3et x"), "HS?ET?X");
        assert_eq!(upper_token(&[b'a'; 40]).len(), 32);
    }

    #[test]
    fn sql() {
        assert_eq!(
            normalize_sql(b"SELECT  id, name FROM items\n WHERE id = 1 AND n = 'it''s';"),
            "SELECT id, name FROM items WHERE id = ? AND n = ?"
        );
        assert_eq!(
            normalize_sql(b"SELECT $1::int + 1 AS next;"),
            "SELECT ?::int + ? AS next"
        );
        assert_eq!(
            normalize_sql(b"select * from t2 where a1=-3.5e2"),
            "select * from t2 where a1=-?"
        );
    }

    #[test]
    fn traceparent() {
        assert_eq!(
            traceparent_trace_id(b" 00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
                .as_deref(),
            Some("4bf92f3577b34da6a3ce929d0e0e4736")
        );
        assert_eq!(
            traceparent_trace_id(b"00-00000000000000000000000000000000-00f067aa0ba902b7-01"),
            None
        );
        assert_eq!(traceparent_trace_id(b"garbage"), None);
    }
}
