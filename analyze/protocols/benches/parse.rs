//! Microbenchmark of the parsers (filled in below).
fn main() {}
