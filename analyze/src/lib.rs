//! Offline analyzers over replayed captures.
