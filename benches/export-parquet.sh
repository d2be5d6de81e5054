#!/usr/bin/env bash
# Parquet export benchmark: `retrace export parquet` of the analyze benchmark's synthetic
# capture (10 M events by default), against `retrace analyze` of the same capture (the
# analysis the export runs anyway), with wall time, CPU time, peak RSS (/usr/bin/time -v) and
# the dataset's size against the capture's.
#
# Usage (from the repository root):
#   cargo bench -p retrace-analyze           # once: writes the capture (RETRACE_BENCH_DIR)
#   benches/export-parquet.sh                # builds target/release/retrace first
#   RETRACE=/path/to/retrace benches/export-parquet.sh
# Environment: RETRACE_BENCH_EVENTS (10000000), RETRACE_BENCH_DIR (where the analyze bench
#   keeps its capture; default /tmp/retrace-analyze-bench), KEEP_TMP=1 to keep the dataset.
# Goals (issue 15): under 10 s and 500 MiB of peak RSS for 10 M events; the dataset at most
# 2x the capture. The figures are printed; nothing is asserted (no timed assertions). The
# machine may be shared: the load average is printed before and after each run.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
EVENTS=${RETRACE_BENCH_EVENTS:-10000000}
BENCH_DIR=${RETRACE_BENCH_DIR:-${TMPDIR:-/tmp}/retrace-analyze-bench}
CAPTURE="$BENCH_DIR/capture-$EVENTS"
if [[ ! -d "$CAPTURE" ]]; then
    echo "export-parquet: no capture at $CAPTURE: run \`cargo bench -p retrace-analyze\` first" \
         "(RETRACE_BENCH_EVENTS=$EVENTS)" >&2
    exit 1
fi
if [[ -z "${RETRACE:-}" ]]; then
    (cd "$ROOT" && cargo build --release --quiet)
    RETRACE="$ROOT/target/release/retrace"
fi

TMP=$(mktemp -d)
cleanup() { [[ -n "${KEEP_TMP:-}" ]] || rm -rf "$TMP"; }
trap cleanup EXIT

# Runs a command under /usr/bin/time -v; prints wall, CPU and peak RSS.
measure() {
    local what=$1
    shift
    echo "load average before $what: $(cut -d' ' -f1-3 /proc/loadavg)"
    /usr/bin/time -v -o "$TMP/time.txt" "$@" > "$TMP/out.txt" 2>&1 || {
        cat "$TMP/out.txt" >&2
        exit 1
    }
    local wall user sys rss
    wall=$(awk -F': ' '/Elapsed \(wall clock\)/ {print $2}' "$TMP/time.txt")
    user=$(awk -F': ' '/User time/ {print $2}' "$TMP/time.txt")
    sys=$(awk -F': ' '/System time/ {print $2}' "$TMP/time.txt")
    rss=$(awk -F': ' '/Maximum resident set size/ {print $2}' "$TMP/time.txt")
    printf '%-8s wall %s  cpu %.2f s (user %s, sys %s)  peak RSS %.1f MiB\n' \
        "$what" "$wall" "$(echo "$user + $sys" | bc)" "$user" "$sys" "$(echo "$rss / 1024" | bc -l)"
    echo "load average after  $what: $(cut -d' ' -f1-3 /proc/loadavg)"
}

echo "capture: $CAPTURE ($EVENTS events), $(nproc) CPUs"
measure analyze "$RETRACE" analyze --quiet "$CAPTURE" --out "$TMP/report"
measure parquet "$RETRACE" export parquet --quiet "$CAPTURE" --out "$TMP/dataset"

cap_bytes=$(du -sb "$CAPTURE" | cut -f1)
set_bytes=$(du -sb "$TMP/dataset" | cut -f1)
printf 'capture %.1f MiB, dataset %.1f MiB: %.2fx the capture (goal <= 2x)\n' \
    "$(echo "$cap_bytes / 1048576" | bc -l)" "$(echo "$set_bytes / 1048576" | bc -l)" \
    "$(echo "$set_bytes / $cap_bytes" | bc -l)"
for t in "$TMP"/dataset/table=*; do
    printf '  %-28s %8.1f MiB\n' "$(basename "$t")" "$(echo "$(du -sb "$t" | cut -f1) / 1048576" | bc -l)"
done
