#!/usr/bin/env bash
# The test command: every crate's tests and the root integration tests (the BPF and live
# scenario tests need root; with RETRACE_REQUIRE_BPF=1 they fail instead of skipping, as in
# CI), then a type check of the fuzz targets (fuzz/, stable toolchain; scripts/fuzz.sh builds
# and runs them with nightly's libFuzzer).
set -euo pipefail
cd "$(dirname "$0")/.."

cargo test --workspace --locked
cargo check --manifest-path fuzz/Cargo.toml --locked --bins
