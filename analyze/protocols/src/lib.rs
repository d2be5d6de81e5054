//! L7 protocol detection and parsing from captured payload prefixes, and redaction of secrets.
//!
//! - [`redact`]: overwrites secrets in a payload prefix before it reaches disk (used by the
//!   capture daemon; allocation-free, never panics).

pub mod redact;
