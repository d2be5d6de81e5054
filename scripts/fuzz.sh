#!/usr/bin/env bash
# Runs every fuzz target of fuzz/ (cargo-fuzz, libFuzzer, AddressSanitizer) one after the
# other, from its committed seeds (fuzz/seeds/<target>, real bytes: scripts/fuzz-seeds.py) and
# the corpus it grew before (fuzz/corpus/<target>, not committed), and prints a table of
# executions per target. A crash stops the script (exit 1) with the input saved in
# fuzz/artifacts/<target>/: add it as a named regression test in the crate, then fix it.
#
# Usage: scripts/fuzz.sh [SECONDS_PER_TARGET] [TARGET...]     (default 5 s, every target)
#   RETRACE_FUZZ_RUNS=N    run each target for N executions instead (the long run:
#                          RETRACE_FUZZ_RUNS=10000000 nice -n 19 scripts/fuzz.sh; SECONDS then
#                          caps each target's time, default 4 h)
#   RETRACE_FUZZ_TOOLCHAIN toolchain with -Zsanitizer (default: nightly)
# Needs cargo-fuzz (scripts/install-deps.sh installs it) and a nightly toolchain.
set -euo pipefail
cd "$(dirname "$0")/.."

runs="${RETRACE_FUZZ_RUNS:-}"
if [ -n "$runs" ]; then secs="${1:-14400}"; else secs="${1:-5}"; fi
shift || true
tc="${RETRACE_FUZZ_TOOLCHAIN:-nightly}"

command -v cargo-fuzz >/dev/null || { echo "fuzz.sh: cargo-fuzz not found (scripts/install-deps.sh installs it)" >&2; exit 2; }
rustup run "$tc" rustc --version >/dev/null 2>&1 || { echo "fuzz.sh: no $tc toolchain (rustup toolchain install $tc)" >&2; exit 2; }

if [ $# -gt 0 ]; then targets=("$@"); else mapfile -t targets < <(cargo "+$tc" fuzz list --fuzz-dir fuzz); fi

start=$(date +%s)
if [ ${#targets[@]} -eq 1 ]; then
  cargo "+$tc" fuzz build --fuzz-dir fuzz "${targets[0]}"
else
  cargo "+$tc" fuzz build --fuzz-dir fuzz
fi
built=$(date +%s)
bin_dir="fuzz/target/$(rustc "+$tc" -vV | sed -n 's/^host: //p')/release"
echo "fuzz.sh: built ${#targets[@]} target(s) in $((built - start)) s"

logs=fuzz/target/fuzz-logs
mkdir -p "$logs"
printf '%-18s %12s %9s %8s %s\n' target executions exec/s seconds result
failed=0
for t in "${targets[@]}"; do
  corpus="fuzz/corpus/$t"
  mkdir -p "$corpus"
  dirs=("$corpus")
  [ -d "fuzz/seeds/$t" ] && dirs+=("fuzz/seeds/$t")
  args=(-max_total_time="$secs" -rss_limit_mb=2048 -malloc_limit_mb=1024 -timeout=10 -print_final_stats=1)
  [ -n "$runs" ] && args+=(-runs="$runs")
  mkdir -p "fuzz/artifacts/$t"
  t0=$(date +%s)
  # The binary built above, run directly (as `cargo fuzz run` does, without building again).
  if "$bin_dir/$t" -artifact_prefix="fuzz/artifacts/$t/" "${args[@]}" "${dirs[@]}" >"$logs/$t.log" 2>&1; then
    result=ok
  else
    result="CRASH (fuzz/artifacts/$t/, log $logs/$t.log)"
    failed=1
  fi
  t1=$(date +%s)
  execs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$logs/$t.log" | tail -1 | grep -o '[0-9]*$' || true)
  rate=$(grep -o 'stat::average_exec_per_sec: *[0-9]*' "$logs/$t.log" | tail -1 | grep -o '[0-9]*$' || true)
  printf '%-18s %12s %9s %8s %s\n' "$t" "${execs:-?}" "${rate:-?}" "$((t1 - t0))" "$result"
  if [ "$result" != ok ]; then grep -m3 -E 'panicked|ERROR: AddressSanitizer|ERROR: libFuzzer|SUMMARY' "$logs/$t.log" >&2 || true; fi
done
echo "fuzz.sh: ${#targets[@]} target(s) in $(( $(date +%s) - start )) s (build included)"
exit "$failed"
