#!/usr/bin/env bash
# What `retrace capture` costs per syscall, in the traced process: a one-thread C loop
# (benches/syscall-cost.c) measures its own CPU time per operation without and with a
# capture running, in alternating rounds, for three shapes: a syscall the capture does not
# follow (getppid), read/write on a pipe (not followed), and an HTTP-like exchange on a
# loopback TCP connection (4 followed calls, 4 L7 records per round). Also the daemon's CPU
# per record. CPU time of one thread is far less sensitive to other load on the machine than
# requests/s of a saturating benchmark (capture-wrk.sh).
#
# Usage (as root, from the repository root):
#   RETRACE=/path/to/retrace benches/capture-syscalls.sh
# Environment: ROUNDS (3), STREAMS (tcp,l7), N_OTHER (3000000), N_PIPE (1000000),
#              N_TCP (200000), CC (cc, else clang).
# Prints the figures; asserts nothing (exit 0 unless a step broke).
set -euo pipefail

ROUNDS=${ROUNDS:-3}
STREAMS=${STREAMS:-tcp,l7}
N_OTHER=${N_OTHER:-3000000}
N_PIPE=${N_PIPE:-1000000}
N_TCP=${N_TCP:-200000}
ROOT=$(cd "$(dirname "$0")/.." && pwd)

if [[ $(id -u) -ne 0 ]]; then
    echo "capture-syscalls: needs root (BPF programs)" >&2
    exit 2
fi
if [[ -z ${RETRACE:-} ]]; then
    (cd "$ROOT" && cargo build --release --bin retrace >&2)
    RETRACE=${CARGO_TARGET_DIR:-$ROOT/target}/release/retrace
fi
[[ -x $RETRACE ]] || { echo "capture-syscalls: $RETRACE is not executable" >&2; exit 2; }

TMP=$(mktemp -d /tmp/retrace-sys.XXXXXX)
DAEMON_PID=
cleanup() {
    [[ -n $DAEMON_PID ]] && kill "$DAEMON_PID" 2>/dev/null && wait "$DAEMON_PID" 2>/dev/null
    rm -rf "$TMP"
}
trap cleanup EXIT

CC=${CC:-$(command -v cc || command -v clang || true)}
[[ -n $CC ]] || { echo "capture-syscalls: no C compiler (cc or clang)" >&2; exit 2; }
"$CC" -O2 -Wall -o "$TMP/syscall-cost" "$ROOT/benches/syscall-cost.c"

# Runs the three shapes once; appends "PHASE MODE ns_per_op" lines to $TMP/results.
run_all() {
    "$TMP/syscall-cost" other "$N_OTHER" | sed "s/^/$1 /" >>"$TMP/results"
    "$TMP/syscall-cost" pipe "$N_PIPE" | sed "s/^/$1 /" >>"$TMP/results"
    "$TMP/syscall-cost" tcp "$N_TCP" | sed "s/^/$1 /" >>"$TMP/results"
}

echo "capture-syscalls: $ROUNDS rounds, streams $STREAMS, load $(cut -d' ' -f1-3 /proc/loadavg)" >&2
: >"$TMP/results"
: >"$TMP/daemon"
for r in $(seq "$ROUNDS"); do
    run_all base
    out="$TMP/cap$r"
    "$RETRACE" capture --out "$out" --streams "$STREAMS" --duration 1h >"$out.log" 2>&1 &
    DAEMON_PID=$!
    for _ in $(seq 600); do
        compgen -G "$out/*.rseg" >/dev/null && break
        kill -0 "$DAEMON_PID" 2>/dev/null || { cat "$out.log" >&2; exit 1; }
        sleep 0.1
    done
    sleep 1
    t0=$(awk '{print $14 + $15}' "/proc/$DAEMON_PID/stat")
    run_all capture
    t1=$(awk '{print $14 + $15}' "/proc/$DAEMON_PID/stat")
    kill -TERM "$DAEMON_PID"
    wait "$DAEMON_PID" || { echo "capture-syscalls: retrace capture failed:" >&2; cat "$out.log" >&2; exit 1; }
    DAEMON_PID=
    events=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["totals"]["events"])' "$out/manifest.json")
    echo "$((t1 - t0)) $events" >>"$TMP/daemon"
    rm -rf "$out"
done

python3 - "$TMP/results" "$TMP/daemon" "$(getconf CLK_TCK)" "$N_TCP" <<'EOF'
import statistics, sys
res = {}
for line in open(sys.argv[1]):
    phase, mode, ns = line.split()
    res.setdefault((phase, mode), []).append(float(ns))
clk, n_tcp = int(sys.argv[3]), int(sys.argv[4])
print("retrace capture cost per syscall, CPU time of the calling thread (median of rounds)")
for mode, what in [("other", "getppid (not followed)"), ("pipe", "pipe write/read (not followed)"),
                   ("tcp", "TCP write/read (followed)")]:
    b = statistics.median(res[("base", mode)])
    c = statistics.median(res[("capture", mode)])
    print(f"  {what:38s} {b:8.1f} ns -> {c:8.1f} ns   +{c - b:6.1f} ns/syscall")
ticks = events = 0
for line in open(sys.argv[2]):
    t, e = line.split()
    ticks += int(t); events += int(e)
if events:
    print(f"  daemon CPU per event                   {ticks / clk / events * 1e9:8.0f} ns ({events} events)")
EOF
