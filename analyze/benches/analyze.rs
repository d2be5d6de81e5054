//! Benchmark: analyze 10 M synthetic events (filled in below).
fn main() {}
