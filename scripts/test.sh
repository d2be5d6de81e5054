#!/usr/bin/env bash
# The test command: every crate's tests, the root integration tests (BPF tests need root;
# with RETRACE_REQUIRE_BPF=1 they fail instead of skipping), and the fuzz target's build.
set -euo pipefail
cd "$(dirname "$0")/.."

cargo test --workspace --locked
