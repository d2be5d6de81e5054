#!/usr/bin/env bash
# The test command: every crate's tests and the root integration tests (the BPF and live
# scenario tests need root; with RETRACE_REQUIRE_BPF=1 they fail instead of skipping, as in
# CI), then a build of the fuzz targets (fuzz/, stable toolchain; see docs/format.md).
set -euo pipefail
cd "$(dirname "$0")/.."

cargo test --workspace --locked
cargo build --manifest-path fuzz/Cargo.toml --release --locked
