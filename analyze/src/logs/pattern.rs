//! Messages grouped into patterns: variable tokens masked, then a Drain-like clustering of
//! the masked messages (He et al., "Drain: An Online Log Parsing Approach with Fixed Depth
//! Tree", ICWS 2017: messages of the same level, word count and first word are compared word
//! by word with the templates seen so far; one similar enough is merged into the template,
//! the words that differ becoming `<*>`), so that "user 17 not found" and "user 42 not found"
//! are one template, `user <NUM> not found`.
//!
//! Masked: quoted strings (`"<*>"`), values of `key=value` (`status=<*>`), UUIDs (`<UUID>`),
//! IPv4 and IPv6 addresses with their ports (`<IP>:<PORT>`), numbers (`<NUM>`), durations
//! (`<DUR>`: `12ms`, `1.5s`), hex ids (`<HEX>`), and the segments of paths and URLs that hold
//! digits (`/users/<NUM>/cart`), dates and times (`<TS>`, a date and a time next to each
//! other are one); other digit runs inside words become `<NUM>` (`worker<NUM>`). JSON lines are templated on their message field (`msg`, `message`).
//!
//! Memory is bounded: at most [`MAX_CLUSTERS`] templates (then a line goes to the most similar
//! template of its group, whatever the similarity) and at most [`MAX_GROUP`] per group.

use std::collections::HashMap;

use super::level::Level;

/// Templates kept at most.
pub const MAX_CLUSTERS: usize = 20_000;
/// Templates compared at most per (level, word count, first word).
pub const MAX_GROUP: usize = 256;
/// Words of a message templated at most (the rest are one `<...>`).
const MAX_WORDS: usize = 64;
/// Similarity at which a message joins a template (Drain's `st`).
const SIMILARITY: f64 = 0.5;
/// The wildcard.
pub const ANY: &str = "<*>";

/// The text a line is templated on: a JSON line's message field, else the line.
pub fn message_text(line: &str) -> &str {
    let t = line.trim_start();
    if t.starts_with('{') {
        for key in ["\"msg\"", "\"message\"", "\"MESSAGE\""] {
            if let Some(i) = t.find(key) {
                let rest = t[i + key.len()..].trim_start();
                if let Some(v) = rest.strip_prefix(':') {
                    if let Some(s) = v.trim_start().strip_prefix('"') {
                        let mut end = s.len();
                        let b = s.as_bytes();
                        let mut j = 0;
                        while j < b.len() {
                            match b[j] {
                                b'\\' => j += 2,
                                b'"' => {
                                    end = j;
                                    break;
                                }
                                _ => j += 1,
                            }
                        }
                        return &s[..end.min(s.len())];
                    }
                }
            }
        }
    }
    line
}

/// Replaces quoted strings by `"<*>"` / `'<*>'`: double quotes matched on the line, single
/// quotes only around a word group (`'abc'` after a space, `=`, `(` or `:`), not apostrophes.
fn mask_quotes(line: &str) -> String {
    let b = line.as_bytes();
    let mut out = String::with_capacity(line.len());
    let mut i = 0;
    let mut copied = 0;
    while i < b.len() {
        let q = b[i];
        let opens = q == b'"'
            || (q == b'\''
                && (i == 0 || matches!(b[i - 1], b' ' | b'=' | b'(' | b':' | b'[' | b',')));
        if opens {
            if let Some(len) = line[i + 1..].find(q as char) {
                let close = i + 1 + len;
                let closes = q == b'"'
                    || b.get(close + 1).is_none_or(|c| {
                        matches!(c, b' ' | b',' | b')' | b']' | b':' | b';' | b'.' | b'}')
                    });
                if closes {
                    out.push_str(&line[copied..i]);
                    out.push(q as char);
                    out.push_str(ANY);
                    out.push(q as char);
                    i = close + 1;
                    copied = i;
                    continue;
                }
            }
        }
        i += 1;
    }
    out.push_str(&line[copied..]);
    out
}

fn is_hex(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_hexdigit())
}

fn is_uuid(s: &str) -> bool {
    let parts: Vec<&str> = s.split('-').collect();
    parts.len() == 5
        && parts
            .iter()
            .zip([8, 4, 4, 4, 12])
            .all(|(p, n)| p.len() == n && is_hex(p))
}

fn is_ipv4(s: &str) -> bool {
    let parts: Vec<&str> = s.split('.').collect();
    parts.len() == 4
        && parts
            .iter()
            .all(|p| !p.is_empty() && p.len() <= 3 && p.bytes().all(|b| b.is_ascii_digit()))
}

fn is_ipv6(s: &str) -> bool {
    let s = s.trim_start_matches('[').trim_end_matches(']');
    let colons = s.bytes().filter(|&b| b == b':').count();
    (s.contains("::") || colons >= 5)
        && colons >= 2
        && s.bytes()
            .all(|b| b.is_ascii_hexdigit() || b == b':' || b == b'.')
}

fn is_port(s: &str) -> bool {
    !s.is_empty() && s.len() <= 5 && s.bytes().all(|b| b.is_ascii_digit())
}

const DURATION_UNITS: &[&str] = &[
    "ns", "us", "µs", "ms", "s", "sec", "secs", "m", "min", "mins", "h", "hr",
];

/// `12`, `-3`, `0.25`, `1e6`, `12ms` (`<DUR>`), `64KB`, `12%`.
fn number(s: &str) -> Option<&'static str> {
    let t = s.strip_prefix(['-', '+']).unwrap_or(s);
    let digits = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '_'))
        .unwrap_or(t.len());
    if digits == 0 || !t.as_bytes()[0].is_ascii_digit() {
        return None;
    }
    let num = &t[..digits];
    if num.matches('.').count() > 1 {
        return None;
    }
    let unit = &t[digits..];
    if unit.is_empty() {
        return Some("<NUM>");
    }
    if DURATION_UNITS.contains(&unit) {
        return Some("<DUR>");
    }
    let u = unit.to_ascii_lowercase();
    if matches!(
        u.as_str(),
        "%" | "b"
            | "kb"
            | "mb"
            | "gb"
            | "kib"
            | "mib"
            | "gib"
            | "k"
            | "x"
            | "e"
            | "st"
            | "nd"
            | "rd"
            | "th"
    ) {
        return Some("<NUM>");
    }
    None
}

/// `0x1f`, or 8+ hex digits with a letter and a digit (ids, hashes, addresses).
fn hex_id(s: &str) -> bool {
    if let Some(h) = s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        return is_hex(h);
    }
    s.len() >= 8
        && is_hex(s)
        && s.bytes().any(|b| b.is_ascii_digit())
        && s.bytes().any(|b| b.is_ascii_alphabetic())
}

/// Digit runs inside a word become `<NUM>`.
fn digit_runs(s: &str, out: &mut String) {
    let mut in_digits = false;
    for c in s.chars() {
        if c.is_ascii_digit() {
            if !in_digits {
                out.push_str("<NUM>");
                in_digits = true;
            }
        } else {
            in_digits = false;
            out.push(c);
        }
    }
}

/// Dates, times and both: `2026-12-06`, `2026/12/06`, `12:00:00,123`,
/// `2026-12-06T12:00:00.123Z`, `06/Dec/2026:12:00:00`.
fn is_timestamp(s: &str) -> bool {
    static TS: std::sync::LazyLock<Option<regex::Regex>> = std::sync::LazyLock::new(|| {
        regex::Regex::new(
            r"^(?:\d{4}[-/]\d{1,2}[-/]\d{1,2}(?:[T ]\d{1,2}:\d{2}(?::\d{2}(?:[.,]\d+)?)?)?|\d{1,2}:\d{2}:\d{2}(?:[.,]\d+)?|\d{1,2}/[A-Z][a-z]{2}/\d{4}(?::\d{2}:\d{2}:\d{2})?)(?:Z|[+-]\d{2}:?\d{2})?$",
        )
        .ok()
    });
    TS.as_ref().is_some_and(|re| re.is_match(s))
}

/// The masked form of a word's core (no surrounding punctuation).
fn mask_core(s: &str, out: &mut String) {
    if s.is_empty() || !s.bytes().any(|b| b.is_ascii_digit()) {
        out.push_str(s);
        return;
    }
    if is_timestamp(s) {
        out.push_str("<TS>");
    } else if is_uuid(s) {
        out.push_str("<UUID>");
    } else if let Some(m) = number(s) {
        out.push_str(m);
    } else if hex_id(s) {
        out.push_str("<HEX>");
    } else if is_ipv4(s) || is_ipv6(s) {
        out.push_str("<IP>");
    } else if let Some((host, port)) = s.rsplit_once(':').filter(|(h, p)| {
        is_port(p) && (is_ipv4(h) || is_ipv6(h) || (h.starts_with('[') && h.ends_with(']')))
    }) {
        let _ = host;
        let _ = port;
        out.push_str("<IP>:<PORT>");
    } else if s.contains('/') {
        // a path or URL: its segments with digits masked
        let (path, query) = match s.split_once('?') {
            Some((p, q)) => (p, Some(q)),
            None => (s, None),
        };
        for (i, seg) in path.split('/').enumerate() {
            if i > 0 {
                out.push('/');
            }
            if seg.bytes().any(|b| b.is_ascii_digit()) {
                mask_core(seg, out);
            } else {
                out.push_str(seg);
            }
        }
        if let Some(q) = query {
            out.push('?');
            for (i, kv) in q.split('&').enumerate() {
                if i > 0 {
                    out.push('&');
                }
                match kv.split_once('=') {
                    Some((k, _)) => {
                        out.push_str(k);
                        out.push('=');
                        out.push_str(ANY);
                    }
                    None => out.push_str(kv),
                }
            }
        }
    } else {
        digit_runs(s, out);
    }
}

const LEADING: &[char] = &['(', '[', '{', '<', '"', '\'', '*', '#'];
const TRAILING: &[char] = &[')', ']', '}', '>', '"', '\'', ',', ';', ':', '.', '!', '?'];

/// The masked form of one whitespace-separated word.
fn mask_word(w: &str, out: &mut String) {
    let mut core_start = w.len() - w.trim_start_matches(LEADING).len();
    // `[fe80::1]:8080`: the bracket belongs to the address
    if core_start > 0 && w[..core_start].ends_with('[') && w[core_start..].contains("]:") {
        core_start -= 1;
    }
    let rest = &w[core_start..];
    let core = rest.trim_end_matches(TRAILING);
    let trailing = &rest[core.len()..];
    out.push_str(&w[..core_start]);
    // key=value (not `==`, not a URL's query, which mask_core handles)
    match core.split_once('=') {
        Some((k, v))
            if !k.is_empty()
                && !core.contains('/')
                && k.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
                && !v.starts_with('=') =>
        {
            out.push_str(k);
            out.push('=');
            let keep = matches!(
                k.to_ascii_lowercase().as_str(),
                "level" | "lvl" | "severity"
            );
            if v.is_empty() || keep || v == format!("\"{ANY}\"") {
                out.push_str(v);
            } else {
                out.push_str(ANY);
            }
        }
        _ => {
            // a trailing `:` may belong to an IPv6 address or a port-less host: keep it out
            mask_core(core, out);
        }
    }
    out.push_str(trailing);
}

/// The masked words of a message (at most [`MAX_WORDS`]; longer messages end in `<...>`).
pub fn mask(message: &str) -> Vec<String> {
    let quoted = mask_quotes(message);
    let mut words = Vec::new();
    for (i, w) in quoted.split_whitespace().enumerate() {
        if i == MAX_WORDS {
            words.push("<...>".to_string());
            break;
        }
        let mut out = String::with_capacity(w.len());
        mask_word(w, &mut out);
        // a date and a time are one timestamp
        if out == "<TS>" && words.last().is_some_and(|l| l == "<TS>") {
            continue;
        }
        words.push(out);
    }
    words
}

/// One template.
#[derive(Clone, Debug)]
pub struct Cluster {
    /// The level of its messages.
    pub level: Level,
    /// Its words, `<*>` where messages differ.
    pub words: Vec<String>,
}

impl Cluster {
    /// The template as text.
    pub fn template(&self) -> String {
        self.words.join(" ")
    }
}

/// The templates seen so far, grouped by (level, word count, first word).
#[derive(Default)]
pub struct Clusters {
    clusters: Vec<Cluster>,
    groups: HashMap<(Level, usize, String), Vec<u32>>,
}

/// Drain's similarity: the share of positions whose words are equal (a template's `<*>`
/// matches nothing but counts apart, to prefer the template with more wildcards on a tie).
fn similarity(template: &[String], words: &[String]) -> (f64, usize) {
    let mut same = 0;
    let mut any = 0;
    for (t, w) in template.iter().zip(words) {
        if t == ANY {
            any += 1;
        } else if t == w {
            same += 1;
        }
    }
    (same as f64 / template.len().max(1) as f64, any)
}

impl Clusters {
    /// Number of templates.
    pub fn len(&self) -> usize {
        self.clusters.len()
    }

    /// No template yet.
    pub fn is_empty(&self) -> bool {
        self.clusters.is_empty()
    }

    /// The template `id`.
    pub fn get(&self, id: u32) -> Option<&Cluster> {
        self.clusters.get(id as usize)
    }

    /// The template of a message (created or generalised): its id.
    pub fn add(&mut self, level: Level, words: Vec<String>) -> u32 {
        let first = words.first().cloned().unwrap_or_default();
        let key = (level, words.len(), first);
        let full = self.clusters.len() >= MAX_CLUSTERS;
        let group = self.groups.entry(key).or_default();
        let mut best: Option<(u32, (f64, usize))> = None;
        for &id in group.iter() {
            let Some(c) = self.clusters.get(id as usize) else {
                continue;
            };
            let s = similarity(&c.words, &words);
            if best.is_none_or(|(_, b)| s.0 > b.0 || (s.0 == b.0 && s.1 > b.1)) {
                best = Some((id, s));
            }
        }
        let take = match best {
            Some((id, (s, _))) if s >= SIMILARITY => Some(id),
            Some((id, _)) if full || group.len() >= MAX_GROUP => Some(id),
            _ => None,
        };
        match take {
            Some(id) => {
                if let Some(c) = self.clusters.get_mut(id as usize) {
                    for (t, w) in c.words.iter_mut().zip(&words) {
                        if t != w && t != ANY {
                            *t = ANY.to_string();
                        }
                    }
                }
                id
            }
            None if full => {
                // no group of this shape yet and no room: one catch-all per level
                self.overflow(level)
            }
            None => {
                let id = self.clusters.len() as u32;
                group.push(id);
                self.clusters.push(Cluster { level, words });
                id
            }
        }
    }

    /// The catch-all template of `level` once [`MAX_CLUSTERS`] are made.
    fn overflow(&mut self, level: Level) -> u32 {
        let key = (level, 0, "<too many patterns>".to_string());
        if let Some(&id) = self.groups.get(&key).and_then(|g| g.first()) {
            return id;
        }
        let id = self.clusters.len() as u32;
        self.groups.entry(key).or_default().push(id);
        self.clusters.push(Cluster {
            level,
            words: vec!["<too many patterns>".to_string()],
        });
        id
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(s: &str) -> String {
        mask(s).join(" ")
    }

    #[test]
    fn variable_tokens_are_masked() {
        assert_eq!(m("user 17 not found"), "user <NUM> not found");
        assert_eq!(
            m("request 3fa85f64-5717-4562-b3fc-2c963f66afa6 took 12ms from 10.0.0.7:53412"),
            "request <UUID> took <DUR> from <IP>:<PORT>"
        );
        assert_eq!(
            m("GET /users/42/cart?session=abc&x=1 status=500 retry=0x1f"),
            "GET /users/<NUM>/cart?session=<*>&x=<*> status=<*> retry=<*>"
        );
        assert_eq!(
            m("lookup of 'alice' failed: \"no such user\" (id deadbeef42)"),
            "lookup of '<*>' failed: \"<*>\" (id <HEX>)"
        );
        assert_eq!(
            m("connect to [fe80::1]:8080 ok"),
            "connect to <IP>:<PORT> ok"
        );
        assert_eq!(m("it's worker7's turn"), "it's worker<NUM>'s turn");
        assert_eq!(m("level=error took=1.5s"), "level=error took=<*>");
    }

    #[test]
    fn real_world_lines_give_stable_templates() {
        // nginx error log
        assert_eq!(
            m(
                "2026/12/06 12:00:01 [error] 4242#4242: *17 connect() failed (111: Connection \
               refused) while connecting to upstream, client: 127.0.0.1, server: _, request: \
               \"GET /checkout/3 HTTP/1.1\", upstream: \"http://127.0.0.1:28081/checkout/3\""
            ),
            "<TS> [error] <NUM>#<NUM>: *<NUM> connect() failed \
             (<NUM>: Connection refused) while connecting to upstream, client: <IP>, server: _, \
             request: \"<*>\", upstream: \"<*>\""
        );
        // PostgreSQL
        assert_eq!(
            m(
                "2026-12-06 12:00:00.123 UTC [4711] ERROR:  duplicate key value violates unique \
               constraint \"orders_pkey\""
            ),
            "<TS> UTC [<NUM>] ERROR: duplicate key value \
             violates unique constraint \"<*>\""
        );
        // Redis
        assert_eq!(
            m("4242:M 06 Dec 2026 12:00:00.123 * Background saving terminated with success"),
            "<NUM>:M <NUM> Dec <NUM> <TS> * Background saving terminated \
             with success"
        );
        // Python logging
        assert_eq!(
            m("2026-12-06 12:00:00,123 ERROR app: failed to load item 31: ValueError('bad')"),
            "<TS> ERROR app: failed to load item <NUM>: \
             ValueError('<*>')"
        );
        // JSON: templated on its message
        assert_eq!(
            message_text(r#"{"level":"error","msg":"user \"17\" not found","ts":1}"#),
            r#"user \"17\" not found"#
        );
    }

    #[test]
    fn drain_merges_messages_that_differ_in_a_word() {
        let mut c = Clusters::default();
        let a = c.add(Level::Error, mask("user 17 not found"));
        let b = c.add(Level::Error, mask("user 42 not found"));
        assert_eq!(a, b);
        let x = c.add(Level::Info, mask("cache miss for alice in shard two"));
        let y = c.add(Level::Info, mask("cache miss for bob in shard two"));
        assert_eq!(x, y);
        assert_eq!(
            c.get(x).map(Cluster::template).as_deref(),
            Some("cache miss for <*> in shard two")
        );
        // another level, another word count, or too different: another template
        assert_ne!(c.add(Level::Warning, mask("user 17 not found")), a);
        assert_ne!(c.add(Level::Error, mask("user 17 not found today")), a);
        assert_ne!(
            c.add(
                Level::Info,
                mask("cache flushed by admin after deploy at noon")
            ),
            x
        );
        assert_eq!(c.len(), 5);
    }

    /// `i` in letters (base 26), so that masking leaves it alone.
    fn letters(mut i: usize) -> String {
        let mut s = String::new();
        loop {
            s.push((b'a' + (i % 26) as u8) as char);
            i /= 26;
            if i == 0 {
                return s;
            }
        }
    }

    #[test]
    fn clusters_are_bounded() {
        let mut c = Clusters::default();
        for i in 0..(MAX_CLUSTERS + 500) {
            // every message its own group: a distinct first word
            let words = vec![letters(i), "x".to_string()];
            let _ = c.add(Level::Info, words);
        }
        // the templates made, plus one catch-all
        assert_eq!(c.len(), MAX_CLUSTERS + 1);
        let last = c.add(Level::Info, vec!["zzzzzz".into(), "y".into()]);
        assert_eq!(
            c.get(last).map(Cluster::template).as_deref(),
            Some("<too many patterns>")
        );
    }
}
