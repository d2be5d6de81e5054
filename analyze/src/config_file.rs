//! What the configuration files (`--services`, `--slo`, `--alerts`, `--findings-config`) share:
//! reading, YAML errors with their file, line and column, a ConfigMap's embedded file, and
//! where a key stands (for errors found after parsing).

use std::path::Path;

use crate::AnalyzeError;

/// Reads a configuration file.
pub(crate) fn read(path: &Path) -> Result<String, AnalyzeError> {
    std::fs::read_to_string(path).map_err(|error| AnalyzeError::Io {
        path: path.to_path_buf(),
        error,
    })
}

/// A configuration error at a place in a file.
pub(crate) fn error(
    path: &Path,
    line: Option<usize>,
    column: Option<usize>,
    message: String,
) -> AnalyzeError {
    AnalyzeError::Config {
        path: path.to_path_buf(),
        line,
        column,
        message,
    }
}

/// The YAML document to read from a file that may be a Kubernetes ConfigMap: the text of the
/// entry `key` of its `data` (else of its only entry), with the line offset and indentation
/// of that text in the file. A plain file is returned as it is.
pub(crate) fn unwrap_configmap<'a>(
    text: &'a str,
    path: &Path,
    key: &str,
) -> Result<(std::borrow::Cow<'a, str>, usize, usize), AnalyzeError> {
    let value: serde_yaml_ng::Value =
        serde_yaml_ng::from_str(text).map_err(|e| yaml_error(path, &e, 0, 0))?;
    let Some(data) = value
        .as_mapping()
        .filter(|m| m.get("kind").and_then(|k| k.as_str()) == Some("ConfigMap"))
        .and_then(|m| m.get("data"))
    else {
        return Ok((std::borrow::Cow::Borrowed(text), 0, 0));
    };
    let Some(data) = data.as_mapping() else {
        return Err(error(
            path,
            find_line(text, "data", 0),
            None,
            "ConfigMap: expected `data:` to map file names to their text".into(),
        ));
    };
    let (name, inner) = match data.get(key) {
        Some(v) => (key.to_string(), v),
        None if data.len() == 1 => match data.iter().next() {
            Some((k, v)) => (k.as_str().unwrap_or_default().to_string(), v),
            None => unreachable_empty(path)?,
        },
        None => {
            return Err(error(
                path,
                find_line(text, "data", 0),
                None,
                format!("ConfigMap: expected an entry `{key}: |` under `data:`"),
            ))
        }
    };
    let Some(inner) = inner.as_str() else {
        return Err(error(
            path,
            find_line(text, &name, 0),
            None,
            format!("ConfigMap: expected `{name}` to hold the file's text (`{name}: |`)"),
        ));
    };
    // The block scalar's text starts on the line after its key.
    let key_line = find_line(text, &name, 0).unwrap_or(0);
    let indent = text
        .lines()
        .skip(key_line)
        .find(|l| !l.trim().is_empty())
        .map(|l| l.len() - l.trim_start().len())
        .unwrap_or(0);
    Ok((std::borrow::Cow::Owned(inner.to_string()), key_line, indent))
}

fn unreachable_empty<T>(path: &Path) -> Result<T, AnalyzeError> {
    Err(error(path, None, None, "ConfigMap: empty `data:`".into()))
}

/// A YAML error as a config error, its location moved by `line_offset` lines and
/// `column_offset` columns (text taken out of a ConfigMap).
/// A YAML error's message for people: without serde's ` at line L column C` (the caller
/// puts the place first, `file:line:column:`) and without the names of Rust types (`expected
/// struct RawFile` says "expected a mapping").
pub fn yaml_message(e: &serde_yaml_ng::Error) -> String {
    let mut msg = e.to_string();
    if let Some(i) = msg.rfind(" at line ") {
        msg.truncate(i);
    }
    match msg.find("expected struct ") {
        Some(i) => {
            msg.truncate(i);
            msg.push_str("expected a mapping (`key: value` lines)");
            msg
        }
        None => msg,
    }
}

pub(crate) fn yaml_error(
    path: &Path,
    e: &serde_yaml_ng::Error,
    line_offset: usize,
    column_offset: usize,
) -> AnalyzeError {
    let loc = e.location();
    let msg = yaml_message(e);
    error(
        path,
        loc.as_ref().map(|l| l.line() + line_offset),
        loc.as_ref().map(|l| l.column() + column_offset),
        msg,
    )
}

/// 1-based line of the first line at or after line `from` (0-based) whose content starts with
/// `key:` (or `- key:`).
pub(crate) fn find_line(text: &str, key: &str, from: usize) -> Option<usize> {
    let k1 = format!("{key}:");
    let k2 = format!("\"{key}\":");
    text.lines()
        .enumerate()
        .skip(from)
        .find(|(_, l)| {
            let t = l.trim_start().trim_start_matches("- ").trim_start();
            t.starts_with(&k1) || t.starts_with(&k2)
        })
        .map(|(i, _)| i + 1)
}
