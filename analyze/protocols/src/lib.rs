//! L7 protocol detection and parsing from captured payload prefixes, and redaction of secrets.
//!
//! STUB: to be filled in.

/// Redaction of secrets in captured payloads, shared by capture (before disk) and analysis.
pub mod redact {
    /// Overwrites secret values in `payload` in place (HTTP `Authorization`,
    /// `Proxy-Authorization`, `Cookie`, `Set-Cookie` header values; PostgreSQL password
    /// messages) and returns how many values were redacted.
    pub fn redact_in_place(_payload: &mut [u8]) -> usize {
        0
    }
}
