//! Benchmark of the segment format (filled in below).
fn main() {}
