//! The level of a log line, from the common formats: syslog's `<N>` priority, JSON
//! (`"level"`, `"severity"`, `"levelname"`, `"lvl"`; pino's numbers), logfmt (`level=error`),
//! Redis (`pid:role date time SYMBOL`), glog (`E1206 ...`), a level word near the start
//! (Python logging, Java, Rust's env_logger and tracing, Go's zap, PostgreSQL's `ERROR:`,
//! nginx's `[error]`), and, when none of these says, words that only errors use (`Traceback`,
//! `panic:`, `...Exception`, `...Error:`, an upper-case `ERROR`).
//!
//! PostgreSQL's `DETAIL:`, `HINT:`, `STATEMENT:`, `CONTEXT:` and `QUERY:` lines belong to the
//! line before: [`Detected::continues`] says so.

use serde::{Deserialize, Serialize};

/// How severe a log line is.
#[derive(
    Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default,
)]
#[serde(rename_all = "snake_case")]
pub enum Level {
    /// No level could be told.
    #[default]
    Unknown,
    /// Debug, trace, verbose.
    Debug,
    /// Info, notice, PostgreSQL's LOG.
    Info,
    /// Warning.
    Warning,
    /// Error.
    Error,
    /// Critical, fatal, panic, emergency, alert.
    Critical,
}

impl Level {
    /// `unknown`, `debug`, `info`, `warning`, `error` or `critical`.
    pub fn name(self) -> &'static str {
        match self {
            Level::Unknown => "unknown",
            Level::Debug => "debug",
            Level::Info => "info",
            Level::Warning => "warning",
            Level::Error => "error",
            Level::Critical => "critical",
        }
    }

    /// Error or critical.
    pub fn is_error(self) -> bool {
        self >= Level::Error
    }
}

/// What the detector found in one line.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Detected {
    /// The line's level.
    pub level: Level,
    /// The line continues the previous one (PostgreSQL's DETAIL, HINT, STATEMENT...).
    pub continues: bool,
}

impl Detected {
    fn level(level: Level) -> Self {
        Self {
            level,
            continues: false,
        }
    }
}

/// How far into a line a level is looked for (bytes).
const HEAD: usize = 200;

/// The level named by a word, if it is one (case-insensitive).
fn word_level(w: &str) -> Option<Level> {
    let l = match w.to_ascii_lowercase().as_str() {
        "trace" | "debug" | "dbug" | "dbg" | "verbose" | "fine" | "finer" | "finest" => {
            Level::Debug
        }
        "info" | "information" | "informational" | "notice" | "inf" => Level::Info,
        "warn" | "warning" | "wrn" => Level::Warning,
        "error" | "err" | "eror" | "severe" => Level::Error,
        "fatal" | "critical" | "crit" | "crt" | "emerg" | "emergency" | "alert" | "panic" => {
            Level::Critical
        }
        _ => return None,
    };
    Some(l)
}

/// PostgreSQL's words for the parts of a message that follow its first line.
fn is_postgres_continuation(w: &str) -> bool {
    matches!(
        w,
        "DETAIL" | "HINT" | "STATEMENT" | "CONTEXT" | "QUERY" | "LOCATION"
    )
}

/// A cut at most `n` bytes long, on a character boundary.
fn head(line: &str, n: usize) -> &str {
    if line.len() <= n {
        return line;
    }
    let mut end = n;
    while !line.is_char_boundary(end) {
        end -= 1;
    }
    &line[..end]
}

/// syslog's `<PRI>` prefix: severity = PRI % 8.
fn syslog(line: &str) -> Option<Level> {
    let rest = line.strip_prefix('<')?;
    let close = rest.find('>')?;
    if close == 0 || close > 3 {
        return None;
    }
    let pri: u32 = rest[..close].parse().ok()?;
    if pri > 191 {
        return None;
    }
    Some(match pri % 8 {
        0..=2 => Level::Critical,
        3 => Level::Error,
        4 => Level::Warning,
        5 | 6 => Level::Info,
        _ => Level::Debug,
    })
}

/// The value of the first of `keys` in a JSON object line, found by scanning (the line may
/// be cut off, so it is not parsed as a whole): a string's text or a number's digits.
fn json_value<'a>(line: &'a str, keys: &[&str]) -> Option<&'a str> {
    for key in keys {
        let quoted = format!("\"{key}\"");
        let mut from = 0;
        while let Some(i) = line[from..].find(&quoted) {
            let after = from + i + quoted.len();
            let rest = line[after..].trim_start();
            if let Some(v) = rest.strip_prefix(':') {
                let v = v.trim_start();
                if let Some(s) = v.strip_prefix('"') {
                    let end = s.find('"').unwrap_or(s.len());
                    return Some(&s[..end]);
                }
                let end = v
                    .find(|c: char| !c.is_ascii_digit() && c != '.')
                    .unwrap_or(v.len());
                if end > 0 {
                    return Some(&v[..end]);
                }
            }
            from = after;
        }
    }
    None
}

/// pino/bunyan's numeric levels.
fn numeric_level(v: &str) -> Option<Level> {
    let n: u32 = v.split('.').next()?.parse().ok()?;
    Some(match n {
        0..=29 => Level::Debug,
        30..=39 => Level::Info,
        40..=49 => Level::Warning,
        50..=59 => Level::Error,
        _ => Level::Critical,
    })
}

fn json(line: &str) -> Option<Level> {
    if !line.trim_start().starts_with('{') {
        return None;
    }
    let v = json_value(
        line,
        &["level", "severity", "levelname", "lvl", "log.level"],
    )?;
    word_level(v).or_else(|| numeric_level(v))
}

/// `level=error`, `lvl=warn`, `severity=INFO` (values quoted or not).
fn logfmt(head: &str) -> Option<Level> {
    for tok in head.split_whitespace() {
        let Some((k, v)) = tok.split_once('=') else {
            continue;
        };
        if matches!(
            k.to_ascii_lowercase().as_str(),
            "level" | "lvl" | "severity" | "loglevel"
        ) {
            return word_level(v.trim_matches(|c| c == '"' || c == '\''));
        }
    }
    None
}

/// Redis: `1234:M 06 Dec 2026 12:00:00.123 * message` (`.` debug, `-` verbose, `*` notice,
/// `#` warning).
fn redis(head: &str) -> Option<Level> {
    let mut toks = head.split_whitespace();
    let first = toks.next()?;
    let (pid, role) = first.split_once(':')?;
    if pid.is_empty() || !pid.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    if !matches!(role, "M" | "S" | "C" | "X") {
        return None;
    }
    let symbol = toks.nth(4)?;
    Some(match symbol {
        "." | "-" => Level::Debug,
        "*" => Level::Info,
        "#" => Level::Warning,
        _ => return None,
    })
}

/// glog/klog: `E1206 12:34:56.789012 ...`.
fn glog(head: &str) -> Option<Level> {
    let first = head.split_whitespace().next()?;
    let b = first.as_bytes();
    if b.len() != 5 || !b[1..].iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(match b[0] {
        b'I' => Level::Info,
        b'W' => Level::Warning,
        b'E' => Level::Error,
        b'F' => Level::Critical,
        _ => return None,
    })
}

/// A level word among the first words of the line: upper-case anywhere there (`ERROR`,
/// `WARNING:root:...`), any case when it is framed as a level (`[error]`, `error:`, `<warn>`)
/// or is the line's first word.
fn level_word(head: &str) -> Option<Detected> {
    let bytes = head.as_bytes();
    let mut words = 0;
    let mut i = 0;
    while i < bytes.len() && words < 12 {
        if !bytes[i].is_ascii_alphabetic() {
            i += 1;
            continue;
        }
        let start = i;
        while i < bytes.len() && (bytes[i].is_ascii_alphanumeric() || bytes[i] == b'_') {
            i += 1;
        }
        words += 1;
        let w = &head[start..i];
        let before = start.checked_sub(1).map(|j| bytes[j]);
        let after = bytes.get(i).copied();
        let upper = w.bytes().all(|b| b.is_ascii_uppercase());
        if upper && after == Some(b':') && is_postgres_continuation(w) {
            return Some(Detected {
                level: Level::Unknown,
                continues: true,
            });
        }
        if upper && w == "LOG" && after == Some(b':') {
            return Some(Detected::level(Level::Info));
        }
        let Some(level) = word_level(w) else {
            continue;
        };
        // A bare word of one letter-case run inside a longer word (`errors`) is not one.
        let framed = matches!(before, Some(b'[' | b'<' | b'(' | b'|'))
            || matches!(after, Some(b']' | b':' | b'>' | b')' | b'|'))
            || (before == Some(b'\t') && after == Some(b'\t'));
        let first = start == 0;
        if (upper && w.len() >= 3) || framed || first {
            return Some(Detected::level(level));
        }
    }
    None
}

/// Words only errors use, anywhere in the line.
fn error_words(line: &str) -> Option<Level> {
    let t = line.trim_start();
    if t.starts_with("panic:") || t.starts_with("fatal error:") {
        return Some(Level::Critical);
    }
    if t.starts_with("Traceback (most recent call last)") {
        return Some(Level::Error);
    }
    for w in line.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == '.')) {
        let last = w.rsplit('.').next().unwrap_or(w);
        if last.ends_with("Exception") || w == "ERROR" || w == "FATAL" || w == "CRITICAL" {
            return Some(if w == "FATAL" || w == "CRITICAL" {
                Level::Critical
            } else {
                Level::Error
            });
        }
    }
    // `ValueError: ...`, `TypeError: ...` (Python's and JavaScript's last line)
    let first = t.split(':').next().unwrap_or("");
    if t.len() > first.len()
        && first.len() > 5
        && first.ends_with("Error")
        && first
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_')
    {
        return Some(Level::Error);
    }
    None
}

/// The level of one line (without its line terminator).
pub fn detect(line: &str) -> Detected {
    let h = head(line, HEAD);
    if let Some(l) = syslog(h) {
        return Detected::level(l);
    }
    if let Some(l) = json(line) {
        return Detected::level(l);
    }
    if let Some(l) = logfmt(h) {
        return Detected::level(l);
    }
    if let Some(l) = redis(h).or_else(|| glog(h)) {
        return Detected::level(l);
    }
    if let Some(d) = level_word(h) {
        return d;
    }
    Detected::level(error_words(line).unwrap_or(Level::Unknown))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn level(line: &str) -> Level {
        detect(line).level
    }

    #[test]
    fn real_world_lines() {
        // nginx error log
        assert_eq!(
            level(
                "2026/12/06 12:00:01 [error] 4242#4242: *17 connect() failed (111: Connection \
                 refused) while connecting to upstream, client: 127.0.0.1, server: _, request: \
                 \"GET /checkout/3 HTTP/1.1\", upstream: \"http://127.0.0.1:28081/checkout/3\""
            ),
            Level::Error
        );
        assert_eq!(
            level("2026/12/06 12:00:01 [notice] 1#1: start worker process 35"),
            Level::Info
        );
        assert_eq!(
            level("2026/12/06 12:00:01 [warn] 7#7: *1 an upstream response is buffered"),
            Level::Warning
        );
        // Python logging, default and custom formats
        assert_eq!(level("ERROR:root:item 31 is broken"), Level::Error);
        assert_eq!(level("WARNING:app.db:slow query"), Level::Warning);
        assert_eq!(
            level("2026-12-06 12:00:00,123 app INFO handled GET /items/4 in 0.3 ms"),
            Level::Info
        );
        assert_eq!(
            level("2026-12-06 12:00:00,123 - app - CRITICAL - disk full"),
            Level::Critical
        );
        // A Python traceback's first and last lines
        assert_eq!(level("Traceback (most recent call last):"), Level::Error);
        assert_eq!(level("ValueError: item 31 is broken"), Level::Error);
        // PostgreSQL
        assert_eq!(
            level(
                "2026-12-06 12:00:00.123 UTC [4711] postgres@shop ERROR:  relation \"cart\" \
                 does not exist at character 15"
            ),
            Level::Error
        );
        assert_eq!(
            level("2026-12-06 12:00:00.123 UTC [4711] LOG:  checkpoint starting: time"),
            Level::Info
        );
        assert_eq!(
            level("2026-12-06 12:00:00.124 UTC [4711] FATAL:  password authentication failed"),
            Level::Critical
        );
        let d = detect(
            "2026-12-06 12:00:00.123 UTC [4711] postgres@shop STATEMENT:  SELECT * FROM cart",
        );
        assert!(d.continues, "{d:?}");
        // Redis
        assert_eq!(
            level("4242:M 06 Dec 2026 12:00:00.123 * Ready to accept connections tcp"),
            Level::Info
        );
        assert_eq!(
            level("4242:M 06 Dec 2026 12:00:00.123 # WARNING Memory overcommit must be enabled!"),
            Level::Warning
        );
        // syslog priority, JSON, logfmt
        assert_eq!(level("<3>db: connection lost"), Level::Error);
        assert_eq!(level("<14>started"), Level::Info);
        assert_eq!(
            level(r#"{"time":"2026-12-06T12:00:00Z","level":"error","msg":"user 17 not found"}"#),
            Level::Error
        );
        assert_eq!(level(r#"{"level":40,"msg":"slow"}"#), Level::Warning);
        assert_eq!(
            level(r#"time="2026-12-06T12:00:00Z" level=warning msg="retrying" attempt=2"#),
            Level::Warning
        );
        // Go (glog, panic), Java, Rust
        assert_eq!(
            level("E1206 12:00:00.123456       1 reflector.go:138] failed to list"),
            Level::Error
        );
        assert_eq!(
            level("panic: runtime error: index out of range [3]"),
            Level::Critical
        );
        // zap's console encoder: tab-separated, lower case
        assert_eq!(
            level("2026-12-06T12:00:00.000Z\twarn\tserver/main.go:42\tretrying"),
            Level::Warning
        );
        assert_eq!(
            level("2026-12-06 12:00:00.123 ERROR 1 --- [main] o.s.b.SpringApplication : failed"),
            Level::Error
        );
        assert_eq!(
            level("Exception in thread \"main\" java.lang.IllegalStateException: closed"),
            Level::Error
        );
        assert_eq!(
            level("[2026-12-06T12:00:00Z WARN  my_crate::db] pool exhausted"),
            Level::Warning
        );
        assert_eq!(
            level("2026-12-06T12:00:00.000000Z  INFO my_crate: listening on 0.0.0.0:8080"),
            Level::Info
        );
    }

    #[test]
    fn ordinary_words_are_not_levels() {
        assert_eq!(
            level("127.0.0.1 - - \"GET /errors HTTP/1.1\" 200 -"),
            Level::Unknown
        );
        assert_eq!(level("processed 12 items, 0 errors"), Level::Unknown);
        assert_eq!(level("the alert was acknowledged"), Level::Unknown);
        assert_eq!(level(""), Level::Unknown);
        assert_eq!(level("<999>x"), Level::Unknown);
    }
}
