//! The user's redaction rules (`retrace capture --redact-rules FILE`): YAML read into
//! [`retrace_protocols::redact::UserRules`], added to the built-in rules. Documented in
//! `docs/redaction.md`.
//!
//! ```yaml
//! headers: [X-Tenant-Secret]          # header names whose values are masked
//! keys: [tenant_key, ssn]             # parameter names (KEY=VALUE, JSON, --KEY VALUE)
//! patterns:                           # regular expressions (Rust `regex` syntax): the match,
//!   - 'sk_live_[0-9a-zA-Z]{24}'       # or its first capture group, is masked
//!   - 'card=(\d{12,19})'
//! ```
//!
//! Every error names the file and the line (and column when YAML says it).

use std::path::Path;

use retrace_protocols::redact::UserRules;
use serde::Deserialize;

use crate::CaptureError;

/// Largest rules file read.
const MAX_FILE: u64 = 1 << 20;
/// Longest header or parameter name.
const MAX_NAME: usize = 32;
/// Compiled size limit of each pattern (bounds the memory a pattern may take).
const PATTERN_SIZE_LIMIT: usize = 1 << 20;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RulesFile {
    #[serde(default)]
    headers: Vec<String>,
    #[serde(default)]
    keys: Vec<String>,
    #[serde(default)]
    patterns: Vec<String>,
}

/// Reads and checks a rules file.
pub fn load(path: &Path) -> Result<UserRules, CaptureError> {
    let bad = |line: Option<usize>, msg: String| {
        CaptureError::Config(match line {
            Some(l) => format!("{}:{l}: {msg}", path.display()),
            None => format!("{}: {msg}", path.display()),
        })
    };
    let meta = std::fs::metadata(path).map_err(|e| CaptureError::io(path, e))?;
    if meta.len() > MAX_FILE {
        return Err(bad(
            None,
            format!("{} bytes, more than {MAX_FILE}", meta.len()),
        ));
    }
    let text = std::fs::read_to_string(path).map_err(|e| CaptureError::io(path, e))?;
    parse(&text).map_err(|(line, msg)| bad(line, msg))
}

/// Parses rules from YAML text: `Err((line, message))`.
pub fn parse(text: &str) -> Result<UserRules, (Option<usize>, String)> {
    let file: RulesFile = if text.trim().is_empty() {
        RulesFile::default()
    } else {
        serde_yaml_ng::from_str(text).map_err(|e| {
            let at = e.location();
            let msg = match &at {
                Some(l) => format!("column {}: {e}", l.column()),
                None => e.to_string(),
            };
            (at.map(|l| l.line()), msg)
        })?
    };
    let line_of = |s: &str| text.lines().position(|l| l.contains(s)).map(|i| i + 1);
    for (what, names) in [("header", &file.headers), ("key", &file.keys)] {
        for n in names {
            let ok = !n.is_empty()
                && n.len() <= MAX_NAME
                && n.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
            if !ok {
                return Err((
                    line_of(n),
                    format!(
                        "{what} name {n:?}: expected 1 to {MAX_NAME} letters, digits, '-', '_' \
                         or '.'"
                    ),
                ));
            }
        }
    }
    let mut patterns = Vec::with_capacity(file.patterns.len());
    for p in &file.patterns {
        if p.is_empty() {
            return Err((line_of("patterns"), "an empty pattern masks nothing".into()));
        }
        let re = regex::bytes::RegexBuilder::new(p)
            .size_limit(PATTERN_SIZE_LIMIT)
            .build()
            .map_err(|e| {
                let first = e.to_string().lines().last().unwrap_or_default().to_string();
                (line_of(p), format!("pattern {p:?}: {first}"))
            })?;
        if re.is_match(b"") {
            return Err((
                line_of(p),
                format!("pattern {p:?} matches the empty string: it would mask nothing"),
            ));
        }
        patterns.push(re);
    }
    Ok(UserRules {
        headers: file.headers,
        keys: file.keys,
        patterns,
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn rules_parse_and_apply() {
        let r = parse(
            "headers: [X-Tenant-Secret]\nkeys:\n  - tenant_key\npatterns:\n  - 'card=(\\d{4})'\n",
        )
        .unwrap();
        assert_eq!(r.headers, ["X-Tenant-Secret"]);
        assert_eq!(r.keys, ["tenant_key"]);
        let mut b = b"card=1234&tenant_key=x".to_vec();
        assert_eq!(retrace_protocols::redact::redact_with(&mut b, &r), 2);
        assert_eq!(b, b"card=****&tenant_key=*");
        assert!(parse("").unwrap().is_empty());
    }

    #[test]
    fn errors_name_the_line() {
        let cases = [
            (
                "headers: [ok]\nkeys: [fine]\npatterns:\n  - '(unclosed'\n",
                4,
                "pattern",
            ),
            ("headers:\n  - 'has space'\n", 2, "header name"),
            ("keys: [a]\nkeyz: [b]\n", 2, "unknown field"),
            ("headers: [a]\npatterns: ['x*']\n", 2, "empty string"),
            ("headers: {a: 1}\n", 1, "headers"),
        ];
        for (text, line, needle) in cases {
            let (l, msg) = parse(text).unwrap_err();
            assert_eq!(l, Some(line), "{text:?}: {msg}");
            assert!(msg.contains(needle), "{text:?}: {msg}");
        }
        let err = load(Path::new("/nonexistent/rules.yaml")).unwrap_err();
        assert!(err.to_string().contains("/nonexistent/rules.yaml"), "{err}");
    }
}
