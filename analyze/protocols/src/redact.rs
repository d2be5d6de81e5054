//! Redaction of secrets in captured payload prefixes.
//!
//! The capture daemon calls [`redact_in_place`] on every payload prefix before it is written
//! to disk, so this module is on the hot path of capture: it allocates nothing per call (two
//! per-thread buffers, once), never panics on any input, reads the bytes a few times at most
//! and never changes the length of the buffer.
//!
//! What is redacted (every secret byte is replaced with `*`):
//! - the values of the HTTP/1 headers `Authorization`, `Proxy-Authorization`, `Cookie` and
//!   `Set-Cookie`, matched case-insensitively at the start of any line of the payload (so in
//!   every header block of a pipelined prefix), including obsolete folded continuation lines,
//!   and up to the end of the buffer when the prefix was cut in the middle of a value;
//! - in HTTP/2 HEADERS and CONTINUATION frames, the HPACK literal values of the same four
//!   headers when their name is given by static-table index or as a plain literal: the value
//!   becomes a plain (non-Huffman) string of `*` of the same length, so the HPACK dynamic
//!   table of the connection keeps its sizes and a later decoder stays in step (names
//!   referenced through the dynamic table or Huffman-coded literal names are not recognized);
//! - the content of PostgreSQL `PasswordMessage`s (tag `p`: cleartext or MD5 password,
//!   `SASLInitialResponse`, `SASLResponse`) found in a chain of frontend messages, including
//!   when the prefix ends inside the message;
//! - API-key headers (`X-Api-Key`, `Api-Key`, `X-Auth-Token`, `X-Access-Token`,
//!   `X-Amz-Security-Token`) like the four above;
//! - secret parameters anywhere in the bytes (query strings, form bodies, log lines, command
//!   lines): the value of `KEY=VALUE` up to `&`, `;`, `,`, a quote, a bracket or white space, and
//!   of JSON `"KEY": "VALUE"`, for the keys of [`SECRET_KEYS`] (any case, `-` or `_` alike,
//!   leading dashes ignored: `--password=x` too);
//! - the token after `Bearer ` (any case) anywhere in the bytes (bodies, logs, arguments);
//! - the password of a Redis `AUTH` command at the start of a client's write (RESP
//!   `AUTH [user] password`, or inline `AUTH password`).
//!
//! - MySQL (and MariaDB) authentication data: the auth response of a client's `HandshakeResponse41` (the
//!   scrambled hash, or the clear password of `mysql_clear_password`), and a client's lone
//!   small packet of sequence 3 or 5 (an `AuthSwitchResponse`: the clear password when the
//!   server switched to `mysql_clear_password`).
//!
//! The user adds rules of their own with [`UserRules`] (`retrace capture --redact-rules FILE`):
//! more header names, more parameter names, and regular expressions whose matches (or first
//! capture group) are masked. [`redact_with`] and [`redact_args_with`] apply both.
//!
//! Redaction errs on the side of hiding: a line that merely looks like one of those headers in
//! a request body is redacted too. It never touches the bytes of a request that contains none
//! of the above.

/// The byte written over secret bytes.
pub const MASK: u8 = b'*';

/// Header names whose values are secret, lower case, without the colon.
const SECRET_HEADERS: [&[u8]; 9] = [
    b"authorization",
    b"proxy-authorization",
    b"cookie",
    b"set-cookie",
    b"x-api-key",
    b"api-key",
    b"x-auth-token",
    b"x-access-token",
    b"x-amz-security-token",
];

/// Parameter names whose values are secret (compared in lower case, `-` read as `_`, after
/// leading dashes).
pub const SECRET_KEYS: [&str; 24] = [
    "access_token",
    "api_key",
    "apikey",
    "auth",
    "auth_token",
    "client_secret",
    "id_token",
    "pass",
    "passwd",
    "password",
    "private_key",
    "pwd",
    "refresh_token",
    "secret",
    "secret_key",
    "session",
    "session_id",
    "sessionid",
    "sig",
    "signature",
    "token",
    "x_amz_credential",
    "x_amz_security_token",
    "x_amz_signature",
];

/// Longest parameter name compared with [`SECRET_KEYS`].
const MAX_KEY: usize = 32;

/// Largest PostgreSQL password message length accepted as plausible (1 MiB). Anything longer
/// is not taken for a password message: real ones are a few hundred bytes at most.
const PG_MAX_PASSWORD_LEN: u32 = 1 << 20;

/// Redaction rules added by the user to the built-in ones (`retrace capture --redact-rules`):
/// read from YAML by the capture daemon, applied by [`redact_with`] and [`redact_args_with`].
#[derive(Clone, Debug, Default)]
pub struct UserRules {
    /// Header names (as written; compared in any case) whose values are secret, in HTTP/1
    /// and in HTTP/2 literal header fields.
    pub headers: Vec<String>,
    /// Parameter names whose values are secret (`KEY=VALUE`, JSON `"KEY": "VALUE"`,
    /// `--KEY VALUE`), compared as [`SECRET_KEYS`] are: any case, `-` or `_` alike.
    pub keys: Vec<String>,
    /// Patterns whose matches are masked: the whole match, or its first capture group when
    /// the pattern has one.
    pub patterns: Vec<regex::bytes::Regex>,
}

impl UserRules {
    /// No rule: the built-in ones only.
    pub const NONE: UserRules = UserRules {
        headers: Vec::new(),
        keys: Vec::new(),
        patterns: Vec::new(),
    };

    /// Whether there is no rule.
    pub fn is_empty(&self) -> bool {
        self.headers.is_empty() && self.keys.is_empty() && self.patterns.is_empty()
    }

    fn is_secret_header(&self, name: &[u8]) -> bool {
        self.headers
            .iter()
            .any(|h| name.eq_ignore_ascii_case(h.as_bytes()))
    }

    fn is_secret_key(&self, norm: &[u8]) -> bool {
        self.keys.iter().any(|k| {
            k.len() == norm.len()
                && k.bytes().zip(norm).all(|(a, &b)| {
                    (if a == b'-' {
                        b'_'
                    } else {
                        a.to_ascii_lowercase()
                    }) == b
                })
        })
    }
}

/// Overwrites secret values in `payload` in place with `*`, keeping its length, and returns
/// how many secret values were (partly or wholly) overwritten.
///
/// Covers the HTTP/1 `Authorization`, `Proxy-Authorization`, `Cookie` and `Set-Cookie`
/// header values and PostgreSQL password messages (see the [module docs](self)). Safe to call
/// on any bytes, any number of times: it never panics, and allocates nothing per call (see
/// [`redact_with`]).
pub fn redact_in_place(payload: &mut [u8]) -> usize {
    redact_with(payload, &UserRules::NONE)
}

/// [`redact_in_place`] with the user's rules too. Without patterns it allocates nothing;
/// each pattern costs one linear scan of the bytes (the `regex` crate's guarantee).
///
/// Every rule reads the bytes as they were, not as an earlier rule left them: a PostgreSQL
/// password message whose masked body ran over a JSON key (`{"token": …` in the bytes that
/// followed) hid the key from the JSON rule, and the value stayed (found by fuzzing). So once
/// a rule has masked something, each later one runs on a copy of the original bytes and its
/// masks are added to the payload's; then the whole is repeated on the result until nothing
/// more is masked (a mask can join a value to bytes after it), at most [`MAX_PASSES`] times.
/// The copies live in per-thread buffers, allocated once: nothing is allocated per call.
pub fn redact_with(payload: &mut [u8], user: &UserRules) -> usize {
    let rules: [Rule<'_>; 8] = [
        &|b| redact_http_headers(b, user),
        &redact_postgres_password,
        &redact_mysql_auth,
        &|b| redact_http2_headers(b, user),
        &|b| redact_secret_params(b, user),
        &redact_bearer_tokens,
        &redact_redis_auth,
        &|b| redact_patterns(b, &user.patterns),
    ];
    SCRATCH.with(|cell| {
        let Ok(mut bufs) = cell.try_borrow_mut() else {
            // (Not reentrant; never the case.) One rule after another, on the payload.
            return rules.iter().map(|r| r(payload)).sum();
        };
        let (original, copy) = &mut *bufs;
        let mut count = 0;
        for pass in 0..MAX_PASSES {
            original.clear();
            original.extend_from_slice(payload);
            let mut masked = false;
            for rule in &rules {
                if !masked {
                    // Nothing masked yet: the payload is still the original.
                    let n = rule(payload);
                    masked = payload[..] != original[..];
                    // (A later pass counts only what it masks anew.)
                    if pass == 0 || masked {
                        count += n;
                    }
                    continue;
                }
                copy.clear();
                copy.extend_from_slice(original);
                let n = rule(copy);
                if n > 0 && add_masks(payload, copy, original) {
                    count += n;
                }
            }
            if !masked {
                break;
            }
        }
        count
    })
}

/// One rule of [`redact_with`]: masks what it finds in the bytes, returns how many values.
type Rule<'a> = &'a dyn Fn(&mut [u8]) -> usize;

/// Passes of [`redact_with`] at most (each one masks more, or is the last).
const MAX_PASSES: usize = 4;

thread_local! {
    /// [`redact_with`]'s copies of the bytes: as they were, and as one rule leaves them.
    static SCRATCH: std::cell::RefCell<(Vec<u8>, Vec<u8>)> =
        const { std::cell::RefCell::new((Vec::new(), Vec::new())) };
}

/// Masks in `payload` the bytes `masked` masks and `original` did not have masked; whether
/// any byte of `payload` changed.
fn add_masks(payload: &mut [u8], masked: &[u8], original: &[u8]) -> bool {
    let mut changed = false;
    for ((p, &m), &o) in payload.iter_mut().zip(masked).zip(original) {
        if m == MASK && o != MASK && *p != MASK {
            *p = MASK;
            changed = true;
        }
    }
    changed
}

/// Masks the matches of the user's patterns (their first capture group when they have one).
fn redact_patterns(buf: &mut [u8], patterns: &[regex::bytes::Regex]) -> usize {
    let mut count = 0;
    for re in patterns {
        let ranges: Vec<std::ops::Range<usize>> = if re.captures_len() > 1 {
            re.captures_iter(buf)
                .filter_map(|c| c.get(1).map(|m| m.range()))
                .collect()
        } else {
            re.find_iter(buf).map(|m| m.range()).collect()
        };
        for r in ranges {
            if let Some(v) = buf.get_mut(r) {
                if v.iter().any(|&b| b != MASK) {
                    v.fill(MASK);
                    count += 1;
                }
            }
        }
    }
    count
}

/// Redacts a command line (exec arguments, or `/proc/PID/cmdline` at start): each argument as
/// [`redact_in_place`] does, and the argument after one that names a secret parameter alone
/// (`--password SECRET`, `--token SECRET`). Returns how many values were overwritten.
pub fn redact_args(args: &mut [String]) -> usize {
    redact_args_with(args, &UserRules::NONE)
}

/// [`redact_args`] with the user's rules too.
pub fn redact_args_with(args: &mut [String], user: &UserRules) -> usize {
    let mut count = 0;
    let mut secret_next = false;
    for a in args.iter_mut() {
        // A secret flag right after another (`--token --password X`) is a flag, not the first
        // one's value: the value that follows it is the secret.
        let flag = a.starts_with('-') && is_secret_key(a.as_bytes(), user);
        if secret_next && !a.is_empty() && !flag {
            *a = "*".repeat(a.chars().count());
            count += 1;
            secret_next = false;
            continue;
        }
        let bytes = a.as_bytes();
        secret_next = bytes.starts_with(b"-") && is_secret_key(bytes, user);
        let mut b = std::mem::take(a).into_bytes();
        let n = redact_with(&mut b, user);
        count += n;
        // Only ASCII bytes are written over whole runs of bytes: still UTF-8; lossy anyway.
        *a = match String::from_utf8(b) {
            Ok(s) => s,
            Err(e) => String::from_utf8_lossy(e.as_bytes()).into_owned(),
        };
    }
    count
}

/// Whether `key` (as written: any case, dashes or underscores, leading dashes) is one of
/// [`SECRET_KEYS`] or of the user's keys.
fn is_secret_key(key: &[u8], user: &UserRules) -> bool {
    let mut start = 0;
    while start < key.len() && key[start] == b'-' {
        start += 1;
    }
    let key = &key[start..];
    if key.is_empty() || key.len() > MAX_KEY {
        return false;
    }
    let mut norm = [0u8; MAX_KEY];
    for (d, &c) in norm.iter_mut().zip(key) {
        *d = if c == b'-' {
            b'_'
        } else {
            c.to_ascii_lowercase()
        };
    }
    let norm = &norm[..key.len()];
    SECRET_KEYS.iter().any(|k| k.as_bytes() == norm) || user.is_secret_key(norm)
}

fn is_key_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.')
}

/// Where a parameter value ends: `&`, `;`, `,`, quotes, brackets, white space, `#`.
fn is_value_end(b: u8) -> bool {
    matches!(
        b,
        b'&' | b';'
            | b','
            | b'"'
            | b'\''
            | b' '
            | b'\t'
            | b'\r'
            | b'\n'
            | b'#'
            | b')'
            | b'}'
            | b']'
    )
}

/// Masks the values of secret parameters: `KEY=VALUE` and JSON `"KEY": "VALUE"`.
fn redact_secret_params(buf: &mut [u8], user: &UserRules) -> usize {
    let mut count = 0;
    let mut i = 0;
    while let Some(off) = memchr::memchr2(b'=', b':', &buf[i..]) {
        let sep = i + off;
        i = sep + 1;
        let json = buf[sep] == b':';
        // The key: key bytes right before `=`, or a quoted key before `:`.
        let key_end = if json {
            match sep.checked_sub(1) {
                Some(q) if buf[q] == b'"' => q,
                _ => continue,
            }
        } else {
            sep
        };
        let mut key_start = key_end;
        while key_start > 0 && key_end - key_start <= MAX_KEY && is_key_byte(buf[key_start - 1]) {
            key_start -= 1;
        }
        if key_start == key_end || !is_secret_key(&buf[key_start..key_end], user) {
            continue;
        }
        if json && (key_start == 0 || buf[key_start - 1] != b'"') {
            continue;
        }
        // The value: after `=`; after `:`, spaces and an opening quote (JSON strings only).
        let mut v = sep + 1;
        if json {
            while v < buf.len() && buf[v] == b' ' {
                v += 1;
            }
            if v >= buf.len() || buf[v] != b'"' {
                continue;
            }
            v += 1;
        }
        let mut end = v;
        let quoted = !json && v < buf.len() && (buf[v] == b'"' || buf[v] == b'\'');
        if json || quoted {
            // A JSON string, or `password='x'`: up to the closing quote.
            let quote = if json { b'"' } else { buf[v] };
            if quoted {
                v += 1;
            }
            end = v;
            while end < buf.len() && buf[end] != quote {
                end += 1;
            }
        } else {
            while end < buf.len() && !is_value_end(buf[end]) {
                end += 1;
            }
        }
        if end > v && buf[v..end].iter().any(|&b| b != MASK) {
            buf[v..end].fill(MASK);
            count += 1;
        }
        i = end.max(i);
    }
    count
}

/// Masks the token after `Bearer ` (any case), wherever it stands.
fn redact_bearer_tokens(buf: &mut [u8]) -> usize {
    const WORD: &[u8] = b"bearer";
    let mut count = 0;
    let mut i = 0;
    while let Some(off) = memchr::memchr2(b'b', b'B', &buf[i..]) {
        let at = i + off;
        i = at + 1;
        let Some(word) = buf.get(at..at + WORD.len()) else {
            break;
        };
        if !word.eq_ignore_ascii_case(WORD) || (at > 0 && buf[at - 1].is_ascii_alphanumeric()) {
            continue;
        }
        let mut v = at + WORD.len();
        let spaces = v;
        while v < buf.len() && buf[v] == b' ' {
            v += 1;
        }
        if v == spaces {
            continue;
        }
        let mut end = v;
        while end < buf.len()
            && (buf[end].is_ascii_alphanumeric()
                || matches!(buf[end], b'-' | b'.' | b'_' | b'~' | b'+' | b'/' | b'='))
        {
            end += 1;
        }
        // `Bearer Bearer TOKEN` (a client that doubled the scheme): the token follows the
        // last `Bearer`, which the next turn of the loop finds at `v`.
        if buf[v..end].eq_ignore_ascii_case(WORD) {
            i = v;
            continue;
        }
        if end > v {
            buf[v..end].fill(MASK);
            count += 1;
        }
        i = end.max(i);
    }
    count
}

/// Masks the password of a Redis `AUTH` command at the start of the buffer (where a client's
/// write begins): RESP `*2 AUTH password` or `*3 AUTH user password`, or inline
/// `AUTH password`.
fn redact_redis_auth(buf: &mut [u8]) -> usize {
    const RESP: usize = 8; // `*N\r\n$4\r\n`
    let is_auth = |at: usize| {
        buf.get(at..at + 4)
            .is_some_and(|w| w.eq_ignore_ascii_case(b"auth"))
    };
    if buf.first() == Some(&b'*')
        && buf.get(2..RESP) == Some(b"\r\n$4\r\n")
        && is_auth(RESP)
        && buf.get(RESP + 4..RESP + 6) == Some(b"\r\n")
    {
        let args = match buf[1] {
            b'2' => 1,
            b'3' => 2,
            _ => return 0,
        };
        // Over the arguments to the last (the password), masking it.
        let mut pos = RESP + 6;
        for k in 0..args {
            let Some((start, len)) = bulk(buf, pos) else {
                return 0;
            };
            let end = start.saturating_add(len);
            if k + 1 == args {
                let stop = end.min(buf.len());
                if start < stop {
                    buf[start..stop].fill(MASK);
                    return 1;
                }
                return 0;
            }
            pos = end.saturating_add(2);
        }
        return 0;
    }
    if is_auth(0) && buf.get(4) == Some(&b' ') {
        let mut end = 5;
        while end < buf.len() && buf[end] != b'\r' && buf[end] != b'\n' {
            end += 1;
        }
        if end > 5 && buf[5..end].iter().any(|&b| b != MASK) {
            buf[5..end].fill(MASK);
            return 1;
        }
    }
    0
}

/// A RESP bulk string header `$LEN\r\n` at `pos`: where its bytes start and how many.
fn bulk(buf: &[u8], pos: usize) -> Option<(usize, usize)> {
    if *buf.get(pos)? != b'$' {
        return None;
    }
    let mut len = 0usize;
    let mut p = pos + 1;
    while let Some(&d) = buf.get(p) {
        if !d.is_ascii_digit() {
            break;
        }
        len = len.checked_mul(10)?.checked_add(usize::from(d - b'0'))?;
        if len > 1 << 20 {
            return None;
        }
        p += 1;
    }
    if buf.get(p..p + 2)? != b"\r\n" {
        return None;
    }
    Some((p + 2, len))
}

/// Redacts the values of secret HTTP/1 headers found at the start of any line.
fn redact_http_headers(buf: &mut [u8], user: &UserRules) -> usize {
    let mut count = 0;
    let mut line_start = 0usize;
    while line_start < buf.len() {
        let mut next = match memchr::memchr(b'\n', &buf[line_start..]) {
            Some(off) => line_start + off + 1,
            None => buf.len(),
        };
        if let Some(value_start) = secret_header_value_start(&buf[line_start..next], user) {
            let mut redacted = mask_value(&mut buf[line_start + value_start..next]);
            // Obsolete line folding: continuation lines start with a space or a tab and
            // belong to the same value.
            while next < buf.len() && (buf[next] == b' ' || buf[next] == b'\t') {
                let end = match memchr::memchr(b'\n', &buf[next..]) {
                    Some(off) => next + off + 1,
                    None => buf.len(),
                };
                redacted |= mask_value(&mut buf[next..end]);
                next = end;
            }
            if redacted {
                count += 1;
            }
        }
        line_start = next;
    }
    count
}

/// If `line` starts with a secret header name followed by a colon, returns the offset just
/// after the colon.
fn secret_header_value_start(line: &[u8], user: &UserRules) -> Option<usize> {
    let first = line.first()?.to_ascii_lowercase();
    if !matches!(first, b'a' | b'p' | b'c' | b's' | b'x') && user.headers.is_empty() {
        return None;
    }
    let names = SECRET_HEADERS
        .iter()
        .copied()
        .chain(user.headers.iter().map(|h| h.as_bytes()));
    for name in names {
        if !name.is_empty()
            && line.len() > name.len()
            && line[..name.len()].eq_ignore_ascii_case(name)
        {
            // Tolerate (invalid, but seen) whitespace between the name and the colon.
            let mut i = name.len();
            while i < line.len() && (line[i] == b' ' || line[i] == b'\t') {
                i += 1;
            }
            if i < line.len() && line[i] == b':' {
                return Some(i + 1);
            }
        }
    }
    None
}

/// Masks the value part of one header line (`value` runs up to and including the line's
/// `\n`, or to the end of the buffer): leading whitespace and the line ending are kept.
/// Returns whether any byte was masked.
fn mask_value(value: &mut [u8]) -> bool {
    let mut end = value.len();
    if end > 0 && value[end - 1] == b'\n' {
        end -= 1;
        if end > 0 && value[end - 1] == b'\r' {
            end -= 1;
        }
    }
    let mut masked = false;
    let mut leading = true;
    for b in &mut value[..end] {
        if leading && (*b == b' ' || *b == b'\t') {
            continue;
        }
        leading = false;
        *b = MASK;
        masked = true;
    }
    masked
}

/// The HTTP/2 client connection preface.
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
/// HPACK static-table indices of `authorization`, `cookie`, `proxy-authorization`,
/// `set-cookie`.
const HPACK_SECRET_INDICES: [u64; 4] = [23, 32, 49, 55];

/// Whether `buf` is a chain of plausible HTTP/2 frames (after an optional preface) reaching
/// its end (or running past it, for a prefix cut inside a frame).
fn h2_frames_start(buf: &[u8]) -> Option<usize> {
    let start = if buf.starts_with(H2_PREFACE) {
        H2_PREFACE.len()
    } else {
        0
    };
    let mut pos = start;
    let mut frames = 0;
    while pos < buf.len() {
        let h = buf.get(pos..pos + 9)?;
        let len = usize::from(h[0]) << 16 | usize::from(h[1]) << 8 | usize::from(h[2]);
        if h[3] > 9 || h[5] & 0x80 != 0 {
            return None;
        }
        pos = pos + 9 + len;
        frames += 1;
    }
    (frames > 0 || start > 0).then_some(start)
}

/// Masks secret header values in the HEADERS / CONTINUATION frames of an HTTP/2 payload.
fn redact_http2_headers(buf: &mut [u8], user: &UserRules) -> usize {
    let Some(mut pos) = h2_frames_start(buf) else {
        return 0;
    };
    let mut count = 0;
    while pos + 9 <= buf.len() {
        let len = usize::from(buf[pos]) << 16
            | usize::from(buf[pos + 1]) << 8
            | usize::from(buf[pos + 2]);
        let (t, flags) = (buf[pos + 3], buf[pos + 4]);
        let start = pos + 9;
        let end = start.saturating_add(len).min(buf.len());
        if t == 1 || t == 9 {
            let mut s = start;
            let mut e = end;
            if t == 1 && flags & 0x8 != 0 {
                // PADDED: pad length byte; the padding is at the end of the whole frame.
                let pad = buf.get(s).map_or(0, |&p| usize::from(p));
                s += 1;
                let frame_end = start.saturating_add(len);
                e = e.min(frame_end.saturating_sub(pad));
            }
            if t == 1 && flags & 0x20 != 0 {
                s += 5; // PRIORITY
            }
            if s < e {
                count += redact_hpack_block(&mut buf[s..e], user);
            }
        }
        pos = start.saturating_add(len);
    }
    count
}

/// HPACK integer with an `n`-bit prefix at `b[*i]`; advances `*i`.
fn hpack_int(b: &[u8], i: &mut usize, n: u32) -> Option<u64> {
    let mask = (1u16 << n) as u8 - 1;
    let mut v = u64::from(*b.get(*i)? & mask);
    *i += 1;
    if v < u64::from(mask) {
        return Some(v);
    }
    let mut shift = 0u32;
    loop {
        let byte = *b.get(*i)?;
        *i += 1;
        v = v.checked_add(u64::from(byte & 0x7f).checked_shl(shift)?)?;
        if byte & 0x80 == 0 {
            return Some(v);
        }
        shift += 7;
        if shift > 35 {
            return None;
        }
    }
}

/// Walks one header block fragment; masks the values of secret literal fields. Stops at the
/// first representation it cannot follow (the rest of the fragment is left as is, except that
/// a value cut by the end of the buffer is masked up to it).
fn redact_hpack_block(b: &mut [u8], user: &UserRules) -> usize {
    let mut count = 0;
    let mut i = 0usize;
    while i < b.len() {
        let first = b[i];
        let name_index = if first & 0x80 != 0 {
            // Indexed field: nothing literal.
            if hpack_int(b, &mut i, 7).is_none() {
                break;
            }
            continue;
        } else if first & 0xc0 == 0x40 {
            hpack_int(b, &mut i, 6)
        } else if first & 0xe0 == 0x20 {
            // Dynamic table size update.
            if hpack_int(b, &mut i, 5).is_none() {
                break;
            }
            continue;
        } else {
            hpack_int(b, &mut i, 4)
        };
        let Some(name_index) = name_index else { break };
        let secret = if name_index == 0 {
            // Literal name.
            let Some(&h) = b.get(i) else { break };
            let Some(nlen) = hpack_int(b, &mut i, 7) else {
                break;
            };
            let Some(nend) = i.checked_add(nlen as usize).filter(|&e| e <= b.len()) else {
                break;
            };
            let name = &b[i..nend];
            let plain_secret = h & 0x80 == 0
                && (SECRET_HEADERS.iter().any(|s| name.eq_ignore_ascii_case(s))
                    || user.is_secret_header(name));
            i = nend;
            plain_secret
        } else {
            HPACK_SECRET_INDICES.contains(&name_index)
        };
        // Value string.
        let len_at = i;
        let Some(vlen) = hpack_int(b, &mut i, 7) else {
            break;
        };
        let vend = i.saturating_add(vlen as usize);
        if secret {
            let end = vend.min(b.len());
            if i < end {
                b[len_at] &= 0x7f; // now a plain string: the mask bytes decode as themselves
                b[i..end].fill(MASK);
                count += 1;
            }
        }
        if vend > b.len() {
            break;
        }
        i = vend;
    }
    count
}

/// Frontend message tags of the PostgreSQL protocol (v3), after startup.
fn is_pg_frontend_tag(tag: u8) -> bool {
    matches!(
        tag,
        b'p' | b'Q'
            | b'P'
            | b'B'
            | b'E'
            | b'D'
            | b'C'
            | b'H'
            | b'S'
            | b'X'
            | b'F'
            | b'c'
            | b'd'
            | b'f'
    )
}

/// Walks a chain of PostgreSQL frontend messages at the start of `buf` and masks the content
/// of every password message (`p`) in it. Stops at the first byte that does not continue a
/// plausible chain, so text protocols are never touched (their second byte is never NUL).
fn redact_postgres_password(buf: &mut [u8]) -> usize {
    let mut count = 0;
    let mut pos = 0usize;
    // A StartupMessage / SSLRequest / GSSENCRequest (no tag) may open the chain.
    if let Some(len) = be_u32(buf, 0) {
        if let Some(code) = be_u32(buf, 4) {
            let is_startup = code == 196_608 || code == 80_877_103 || code == 80_877_104;
            if is_startup && (8..=10_000).contains(&len) {
                pos = len as usize;
            }
        }
    }
    while pos < buf.len() {
        let tag = buf[pos];
        if !is_pg_frontend_tag(tag) {
            break;
        }
        let Some(len) = be_u32(buf, pos + 1) else {
            // Cut inside the length: the tag alone tells nothing secret.
            break;
        };
        if !(4..=PG_MAX_PASSWORD_LEN).contains(&len) {
            break;
        }
        let content_start = pos + 5;
        let msg_end = pos.saturating_add(1).saturating_add(len as usize);
        if tag == b'p' {
            let end = msg_end.min(buf.len());
            if content_start < end {
                buf[content_start..end].fill(MASK);
                count += 1;
            }
        }
        pos = msg_end;
    }
    count
}

/// MySQL capability flags used to find the auth data of a `HandshakeResponse41`.
const MYSQL_PROTOCOL_41: u32 = 0x200;
const MYSQL_SECURE_CONNECTION: u32 = 0x8000;
const MYSQL_PLUGIN_AUTH_LENENC_DATA: u32 = 0x20_0000;
/// Largest MySQL auth switch response taken for a password (bytes of payload).
const MYSQL_MAX_SWITCH_RESPONSE: usize = 1024;

/// Masks MySQL authentication data at the start of a client's write: the auth response of a
/// `HandshakeResponse41` (sequence 1: capabilities with `CLIENT_PROTOCOL_41`, max packet size,
/// charset, 23 zero bytes, user name, then the auth data, length-encoded, one-byte-length or
/// NUL-terminated by the capabilities), up to the end of the buffer when it is cut; and the
/// payload of a lone small packet of sequence 3 or 5 (an `AuthSwitchResponse`, which carries
/// the clear password when the server switched to `mysql_clear_password`).
fn redact_mysql_auth(buf: &mut [u8]) -> usize {
    let Some(head) = buf.get(..4) else {
        return 0;
    };
    let len = usize::from(head[0]) | usize::from(head[1]) << 8 | usize::from(head[2]) << 16;
    let seq = head[3];
    if (seq == 3 || seq == 5) && len > 0 && len <= MYSQL_MAX_SWITCH_RESPONSE && buf.len() == 4 + len
    {
        buf[4..].fill(MASK);
        return 1;
    }
    if seq != 1 || len < 33 {
        return 0;
    }
    let Some(caps) = buf
        .get(4..8)
        .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
    else {
        return 0;
    };
    // 23 filler bytes, zero; MariaDB puts its extended capabilities in the last 4.
    if caps & MYSQL_PROTOCOL_41 == 0 || buf.get(13..32).is_none_or(|z| z.iter().any(|&b| b != 0)) {
        return 0;
    }
    // User name, NUL-terminated (a write cut before it is left alone).
    let Some(nul) = buf
        .get(36..)
        .and_then(|name| name.iter().position(|&b| b == 0))
    else {
        return 0;
    };
    let mut at = 36 + nul + 1;
    let (start, data_len) = if caps & MYSQL_PLUGIN_AUTH_LENENC_DATA != 0 {
        let Some(&first) = buf.get(at) else { return 0 };
        let (n, width) = match first {
            0..=0xfa => (usize::from(first), 1),
            0xfc => match buf.get(at + 1..at + 3) {
                Some(b) => (usize::from(b[0]) | usize::from(b[1]) << 8, 3),
                None => return 0,
            },
            _ => return 0,
        };
        at += width;
        (at, n)
    } else if caps & MYSQL_SECURE_CONNECTION != 0 {
        let Some(&n) = buf.get(at) else { return 0 };
        (at + 1, usize::from(n))
    } else {
        let n = buf[at..]
            .iter()
            .position(|&b| b == 0)
            .unwrap_or(buf.len() - at);
        (at, n)
    };
    let end = start.saturating_add(data_len).min(buf.len());
    if start < end {
        buf[start..end].fill(MASK);
        return 1;
    }
    0
}

/// Big-endian u32 at `at`, if the buffer holds all four bytes.
fn be_u32(buf: &[u8], at: usize) -> Option<u32> {
    let bytes = buf.get(at..at.checked_add(4)?)?;
    Some(u32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Fuzz target `redact`, crash b9753a47: a token after a doubled scheme (`Bearer Bearer
    /// TOKEN`, in a body or a log line) was left as it was, the second `Bearer` masked instead.
    #[test]
    fn fuzz_redact_doubled_bearer_scheme_still_hides_the_token() {
        let mut b = b"\xcf\xcf Bearer Bearer n1VVVVVVV \t".to_vec();
        assert_eq!(redact_in_place(&mut b), 1);
        assert_eq!(&b[..], b"\xcf\xcf Bearer Bearer ********* \t");
        let mut b = b"token: bearer BEARER  bearer abc.def".to_vec();
        redact_in_place(&mut b);
        assert_eq!(&b[..], b"token: bearer BEARER  bearer *******");
    }

    /// Fuzz target `redact`, crash 853db8a3: a command line whose argument before
    /// `--password` was itself a secret flag took `--password` for that flag's value and
    /// kept the password.
    #[test]
    fn fuzz_redact_a_secret_flag_after_a_secret_flag_is_not_its_value() {
        let mut args: Vec<String> = ["prog", "--token", "--password", "SSm", "--user", "bob"]
            .map(String::from)
            .to_vec();
        redact_args(&mut args);
        assert_eq!(
            args,
            ["prog", "--token", "--password", "***", "--user", "bob"]
        );
        let mut args: Vec<String> = ["--password", "--password", "x"].map(String::from).to_vec();
        redact_args(&mut args);
        assert_eq!(args, ["--password", "--password", "*"]);
    }

    /// Fuzz target `redact`, crash 82b23220 (found by CI's 5-second run): a MySQL
    /// `HandshakeResponse41` cut between its filler and its user name (34 bytes) indexed past
    /// the end: a panic in the capture daemon on a hostile or cut write.
    #[test]
    fn fuzz_redact_mysql_handshake_cut_before_the_user_name_is_left_alone() {
        let mut b = vec![0x21, 0, 0, 1, 0x00, 0x02, 0, 0, 0xff, 0xff, 0xff, 0, 0x21];
        b.resize(34, 0);
        let before = b.clone();
        assert_eq!(redact_in_place(&mut b), 0);
        assert_eq!(b, before);
    }

    pub(super) fn redacted(input: &[u8]) -> (Vec<u8>, usize) {
        let mut v = input.to_vec();
        let n = redact_in_place(&mut v);
        assert_eq!(v.len(), input.len());
        (v, n)
    }

    /// `s` with every byte of each `secret` occurrence replaced by the mask.
    pub(super) fn masked(s: &str, secrets: &[&str]) -> Vec<u8> {
        let mut out = s.to_string();
        for secret in secrets {
            out = out.replace(secret, &"*".repeat(secret.len()));
        }
        out.into_bytes()
    }

    #[test]
    fn http_headers_any_case() {
        let req = "GET /a HTTP/1.1\r\nHost: x\r\nauthorization: Bearer abc.def\r\nCOOKIE: a=1; b=2\r\nAccept: */*\r\n\r\n";
        let (out, n) = redacted(req.as_bytes());
        assert_eq!(n, 2);
        assert_eq!(out, masked(req, &["Bearer abc.def", "a=1; b=2"]));
    }

    /// The issue's own example: curl with a bearer token, a cookie and `api_key` in the query,
    /// as it reaches the server (headers masked, the query's secret too, the rest kept).
    #[test]
    fn query_string_keys_and_api_key_headers() {
        let req = "GET /x?api_key=KEY999&user=bob HTTP/1.1\r\nHost: 127.0.0.1:8080\r\nUser-Agent: curl/7.88.1\r\nAuthorization: Bearer sekrit-token-123\r\nCookie: sid=abc\r\nX-Api-Key: k-42\r\n\r\n";
        let (out, _) = redacted(req.as_bytes());
        assert_eq!(
            out,
            masked(
                req,
                &["KEY999", "Bearer sekrit-token-123", "sid=abc", "k-42"]
            )
        );
        let out = String::from_utf8(out).expect("ascii");
        assert!(
            out.contains("user=bob") && out.contains("curl/7.88.1"),
            "{out}"
        );
    }

    #[test]
    fn secret_parameters_in_bodies_logs_and_arguments() {
        for (text, secrets) in [
            // form body, any case, dashes or underscores
            ("grant_type=pw&Client-Secret=s3cr3t&scope=a", vec!["s3cr3t"]),
            // a log line of the server that got the request
            (
                "127.0.0.1 - - \"GET /x?user=bob&api_key=KEY999 HTTP/1.1\" 200 -",
                vec!["KEY999"],
            ),
            // JSON
            (
                r#"{"user":"bob","password": "hunter2","n":1}"#,
                vec!["hunter2"],
            ),
            // command lines
            ("--password=hunter2", vec!["hunter2"]),
            (
                "postgres://u@h/db?sslmode=require&password=pw1",
                vec!["pw1"],
            ),
            // quoted values
            ("SET password='quoted secret' WHERE", vec!["quoted secret"]),
            // a bearer token in a body or an argument
            (
                "curl -H Authorization:\\ Bearer abc.DEF-123_x",
                vec!["abc.DEF-123_x"],
            ),
            (
                r#"{"auth":"bearer eyJhbGciOi.eyJzdWIi.sig"}"#,
                vec!["bearer eyJhbGciOi.eyJzdWIi.sig"],
            ),
        ] {
            let (out, n) = redacted(text.as_bytes());
            assert!(n >= 1, "{text}");
            assert_eq!(out, masked(text, &secrets), "{text}");
        }
        // Names that only contain a secret word, and words that only start like one.
        for text in [
            "csrf_token_name=x&page=2",
            "mytoken=abc",
            "Bearerish words",
            "password = ",
            "tokens: 5",
        ] {
            let (out, n) = redacted(text.as_bytes());
            assert_eq!((out.as_slice(), n), (text.as_bytes(), 0), "{text}");
        }
    }

    #[test]
    fn redis_auth() {
        for (text, secret) in [
            ("*2\r\n$4\r\nAUTH\r\n$6\r\nfoobar\r\n", "foobar"),
            (
                "*3\r\n$4\r\nauth\r\n$5\r\nalice\r\n$7\r\npa55wd!\r\n",
                "pa55wd!",
            ),
            ("AUTH inline-pw\r\n", "inline-pw"),
            // cut in the middle of the password
            ("*2\r\n$4\r\nAUTH\r\n$10\r\nabcd", "abcd"),
        ] {
            let (out, n) = redacted(text.as_bytes());
            assert_eq!(n, 1, "{text:?}");
            assert_eq!(out, masked(text, &[secret]), "{text:?}");
        }
        let get = "*2\r\n$3\r\nGET\r\n$4\r\nAUTH\r\n";
        assert_eq!(redacted(get.as_bytes()), (get.as_bytes().to_vec(), 0));
    }

    #[test]
    fn command_line_arguments() {
        let mut args: Vec<String> = [
            "curl",
            "-H",
            "Authorization: Bearer sekrit-token-123",
            "http://127.0.0.1:8080/x?api_key=KEY999&user=bob",
            "--password",
            "hunter2",
            "--user",
            "bob",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let n = redact_args(&mut args);
        assert_eq!(n, 3, "{args:?}");
        assert_eq!(args[2], "Authorization: ***********************");
        assert_eq!(args[3], "http://127.0.0.1:8080/x?api_key=******&user=bob");
        assert_eq!(args[5], "*******");
        assert_eq!(args[7], "bob");
    }

    #[test]
    fn truncated_mid_value() {
        let req = "GET / HTTP/1.1\r\nProxy-Authorization: Basic dXNlcjpw";
        let (out, n) = redacted(req.as_bytes());
        assert_eq!(n, 1);
        assert_eq!(out, masked(req, &["Basic dXNlcjpw"]));
    }

    #[test]
    fn set_cookie_in_response_and_folding() {
        let resp = "HTTP/1.1 200 OK\r\nSet-Cookie: sid=42;\r\n Path=/\r\nX: y\r\n\r\n";
        let (out, n) = redacted(resp.as_bytes());
        assert_eq!(n, 1);
        assert_eq!(out, masked(resp, &["sid=42;", "Path=/"]));
    }

    #[test]
    fn similar_names_untouched() {
        let req =
            b"GET / HTTP/1.1\r\nX-Authorization: a\r\nCookies: b\r\nAuthorization-Hint: c\r\n\r\n";
        assert_eq!(redacted(req), (req.to_vec(), 0));
    }

    #[test]
    fn postgres_password_messages() {
        // Cleartext password.
        let mut msg = b"p\0\0\0\x0dsecret12\0".to_vec();
        assert_eq!(redact_in_place(&mut msg), 1);
        assert_eq!(msg, b"p\0\0\0\x0d*********".to_vec());
        // Truncated SASLInitialResponse.
        let mut msg = b"p\0\0\0\x50SCRAM-SHA-256\0\0\0\0\x20n,,n=,r=abc".to_vec();
        assert_eq!(redact_in_place(&mut msg), 1);
        assert!(msg[5..].iter().all(|&b| b == MASK));
        // A password after a Sync in the same prefix.
        let mut msg = b"S\0\0\0\x04p\0\0\0\x08pw\0\0".to_vec();
        assert_eq!(redact_in_place(&mut msg), 1);
        assert_eq!(msg, b"S\0\0\0\x04p\0\0\0\x08****".to_vec());
    }

    #[test]
    fn postgres_query_untouched() {
        let q = b"Q\0\0\0\x0dselect 1;\0".to_vec();
        assert_eq!(redacted(&q), (q.clone(), 0));
        let text = b"ping\r\n".to_vec();
        assert_eq!(redacted(&text), (text.clone(), 0));
    }
}

#[cfg(test)]
mod h2_tests {
    use super::*;

    /// A HEADERS frame (stream 1, END_HEADERS) around an HPACK block.
    pub(super) fn headers_frame(block: &[u8]) -> Vec<u8> {
        let mut f = (block.len() as u32).to_be_bytes()[1..].to_vec();
        f.extend_from_slice(&[1, 4, 0, 0, 0, 1]);
        f.extend_from_slice(block);
        f
    }

    #[test]
    fn hpack_static_index_huffman_value_becomes_plain_mask() {
        // :method GET (indexed 2), then authorization (static 23) with incremental indexing
        // and a 3-octet "Huffman" value, then cookie (32) without indexing, plain value.
        let block = [
            0x82,
            0x40 | 23,
            0x83,
            0xaa,
            0xbb,
            0xcc,
            0x0f,
            32 - 15,
            0x03,
            b'a',
            b'=',
            b'1',
        ];
        let mut p = H2_PREFACE.to_vec();
        p.extend_from_slice(&headers_frame(&block));
        let n = redact_in_place(&mut p);
        assert_eq!(n, 2);
        let b = &p[H2_PREFACE.len() + 9..];
        assert_eq!(
            b,
            &[
                0x82,
                0x40 | 23,
                0x03,
                b'*',
                b'*',
                b'*',
                0x0f,
                32 - 15,
                0x03,
                b'*',
                b'*',
                b'*'
            ]
        );
    }

    #[test]
    fn hpack_other_headers_untouched_and_cut_values_masked() {
        // content-type (static 31) literal value: not a secret.
        let block = [0x40 | 31, 0x03, b'a', b'/', b'b'];
        let mut p = headers_frame(&block);
        let before = p.clone();
        assert_eq!(redact_in_place(&mut p), 0);
        assert_eq!(p, before);
        // authorization value cut by the end of the prefix.
        let block = [0x40 | 23, 0x0a, b's', b'e', b'c'];
        let mut p = headers_frame(&block);
        p.truncate(9 + 5);
        assert_eq!(redact_in_place(&mut p), 1);
        assert_eq!(&p[9..], &[0x40 | 23, 0x0a, b'*', b'*', b'*']);
    }
}

#[cfg(test)]
mod user_and_mysql_tests {
    use super::h2_tests::headers_frame;
    use super::tests::{masked, redacted};
    use super::*;

    fn user_rules() -> UserRules {
        UserRules {
            headers: vec!["X-Tenant-Secret".into()],
            keys: vec!["Tenant-Key".into()],
            patterns: vec![
                regex::bytes::Regex::new(r"sk_live_[0-9a-zA-Z]{8}").expect("regex"),
                regex::bytes::Regex::new(r"card=(\d{12,19})").expect("regex"),
            ],
        }
    }

    /// The user's header, key and patterns are masked, in HTTP/1, query strings, JSON and
    /// arguments; without the rules they are not (so these checks can fail).
    #[test]
    fn user_rules_add_headers_keys_and_patterns() {
        let req = "POST /pay?tenant_key=TK1&card=4111111111111111&x=1 HTTP/1.1\r\nX-Tenant-Secret: ts-99\r\nHost: h\r\n\r\n{\"tenant-key\": \"TK2\", \"note\": \"sk_live_abcd1234\"}";
        let mut out = req.as_bytes().to_vec();
        let n = redact_with(&mut out, &user_rules());
        assert_eq!(
            out,
            masked(
                req,
                &[
                    "TK1",
                    "4111111111111111",
                    "ts-99",
                    "TK2",
                    "sk_live_abcd1234"
                ]
            )
        );
        assert_eq!(n, 5);
        let (plain, n) = redacted(req.as_bytes());
        assert_eq!((plain, n), (req.as_bytes().to_vec(), 0));

        let mut args = vec![
            "client".to_string(),
            "--tenant-key".into(),
            "TK3".into(),
            "--card=4111111111111111".into(),
        ];
        assert_eq!(redact_args_with(&mut args, &user_rules()), 2);
        assert_eq!(args[2], "***");
        assert!(!args[3].contains("4111"), "{args:?}");
    }

    #[test]
    fn user_headers_in_http2_literals() {
        let name = b"x-tenant-secret";
        let mut block = vec![0x40, name.len() as u8];
        block.extend_from_slice(name);
        block.extend_from_slice(&[0x03, b'a', b'b', b'c']);
        let mut p = headers_frame(&block);
        assert_eq!(redact_with(&mut p, &user_rules()), 1);
        assert_eq!(&p[p.len() - 3..], b"***");
    }

    /// A `HandshakeResponse41` as a MySQL 8 client sends it (user `app`, a 20-byte scramble,
    /// database `shop`, plugin `mysql_native_password`): the scramble is masked, the rest kept;
    /// with a length-encoded auth (`CLIENT_PLUGIN_AUTH_LENENC_CLIENT_DATA`) and with the clear
    /// password of `mysql_clear_password` too.
    #[test]
    fn mysql_handshake_response_auth_data() {
        fn packet(caps: u32, auth: &[u8], lenenc: bool) -> Vec<u8> {
            let mut p = Vec::new();
            p.extend_from_slice(&caps.to_le_bytes());
            p.extend_from_slice(&(16u32 << 20).to_le_bytes());
            p.push(45);
            p.extend_from_slice(&[0; 23]);
            p.extend_from_slice(b"app\0");
            if lenenc || caps & MYSQL_SECURE_CONNECTION != 0 {
                p.push(auth.len() as u8);
                p.extend_from_slice(auth);
            } else {
                p.extend_from_slice(auth);
                p.push(0);
            }
            p.extend_from_slice(b"shop\0mysql_native_password\0");
            let mut out = (p.len() as u32).to_le_bytes()[..3].to_vec();
            out.push(1);
            out.extend_from_slice(&p);
            out
        }
        let scramble = [
            0x8fu8, 0x11, 0x2a, 0x00, 0x7e, 0x42, 0x99, 0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07,
            0x08, 0x09, 0x0a, 0x0b, 0x0c, 0x0d,
        ];
        for (caps, lenenc) in [
            (0x000f_a685u32, false),                             // secure connection
            (0x000f_a685 | MYSQL_PLUGIN_AUTH_LENENC_DATA, true), // length-encoded
            (0x0000_0200, false),                                // NUL-terminated (clear text)
        ] {
            let auth: &[u8] = if caps & MYSQL_SECURE_CONNECTION != 0 {
                &scramble
            } else {
                b"s3cret-pw"
            };
            let p = packet(caps, auth, lenenc);
            let mut out = p.clone();
            assert_eq!(redact_in_place(&mut out), 1, "caps {caps:x}");
            let at = p.windows(auth.len()).position(|w| w == auth).expect("auth");
            assert!(out[at..at + auth.len()].iter().all(|&b| b == MASK));
            assert_eq!(out[..at], p[..at], "before the auth data");
            assert_eq!(out[at + auth.len()..], p[at + auth.len()..], "after it");
            // cut inside the auth data: masked up to the cut
            let mut cut = p[..at + 3].to_vec();
            assert_eq!(redact_in_place(&mut cut), 1);
            assert!(cut[at..].iter().all(|&b| b == MASK));
        }
        // AuthSwitchResponse with a clear password (sequence 3), alone in the write.
        let mut sw = vec![10, 0, 0, 3];
        sw.extend_from_slice(b"s3cret-pw\0");
        assert_eq!(redact_in_place(&mut sw), 1);
        assert_eq!(&sw[4..], b"**********");
        // A query (sequence 0) is left alone.
        let mut q = vec![9, 0, 0, 0, 3];
        q.extend_from_slice(b"SELECT 1");
        let before = q.clone();
        assert_eq!(redact_in_place(&mut q), 0);
        assert_eq!(q, before);
    }

    /// A real client's handshake response (the `mariadb` command line client, libmariadb
    /// 3.3.20, recorded in `tests/data/mysql/cli_session.rec`: user root, empty password,
    /// MariaDB's extended capabilities in the filler): nothing to mask, nothing touched; the same
    /// bytes with a 20-byte scramble put in its auth data: exactly the scramble masked.
    #[test]
    fn mysql_real_client_handshake() {
        let hex = "c10000018ca2bf000000100021000000000000000000000000000000000000001d000000726f6f74000073686f70006d7973716c5f6e61746976655f70617373776f7264007f035f6f73054c696e75780c5f636c69656e745f6e616d650a6c69626d617269616462045f7069640531373038380f5f636c69656e745f76657273696f6e06332e332e3230095f706c6174666f726d067838365f36340c70726f6772616d5f6e616d65056d7973716c0c5f7365727665725f686f7374093132372e302e302e31";
        let real: Vec<u8> = (0..hex.len() / 2)
            .map(|i| u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).expect("hex"))
            .collect();
        let mut out = real.clone();
        assert_eq!(redact_in_place(&mut out), 0);
        assert_eq!(out, real);
        // `root\0` then the length-encoded auth data (0 bytes): put a scramble there.
        let at = real.windows(5).position(|w| w == b"root\0").expect("user") + 5;
        assert_eq!(real[at], 0);
        let scramble = [0xa5u8; 20];
        let mut with = real[..at].to_vec();
        with.push(20);
        with.extend_from_slice(&scramble);
        with.extend_from_slice(&real[at + 1..]);
        let len = (with.len() - 4) as u32;
        with[..3].copy_from_slice(&len.to_le_bytes()[..3]);
        let mut out = with.clone();
        assert_eq!(redact_in_place(&mut out), 1);
        assert_eq!(&out[at + 1..at + 21], &[MASK; 20]);
        assert_eq!(out[..at + 1], with[..at + 1]);
        assert_eq!(out[at + 21..], with[at + 21..]);
    }

    /// Found by fuzzing (fuzz target redact, crash 8ed10e5f): a PostgreSQL password message
    /// whose declared length runs over the start of a JSON object after it. Masking the
    /// message first hid the key `"x_amz_security_token"` from the JSON rule, and its value
    /// was kept. Every rule now reads the bytes as they were.
    #[test]
    fn a_mask_does_not_hide_the_key_of_another_secret() {
        let mut buf = b"p\0\0\0'".to_vec();
        buf.extend_from_slice(&[b'*'; 28]);
        let json_at = buf.len();
        buf.extend_from_slice(br#"{"x_amz_security_token": "SuS"}"#);
        let secret_at = json_at + br#"{"x_amz_security_token": ""#.len();
        let before = buf.clone();
        let n = redact_in_place(&mut buf);
        assert!(n >= 2, "{n}: {:?}", String::from_utf8_lossy(&buf));
        // The password message's body (to byte 1 + 39), and the token's value.
        assert!(buf[5..40].iter().all(|&b| b == MASK));
        assert_eq!(
            &buf[secret_at..secret_at + 3],
            b"***",
            "{:?}",
            String::from_utf8_lossy(&buf)
        );
        assert_eq!(buf[secret_at + 3..], before[secret_at + 3..]);
        // Idempotent: a second pass hides nothing more.
        let once = buf.clone();
        redact_in_place(&mut buf);
        assert_eq!(buf, once);
    }
}
