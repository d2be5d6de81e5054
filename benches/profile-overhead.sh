#!/usr/bin/env bash
# Profiler overhead benchmark (issue 13), side by side in one run, figures printed, nothing
# asserted (no timed assertions); exit 0 unless a step broke.
#
# Usage (as root, from the repository root):
#   benches/profile-overhead.sh                 # builds target/release/retrace first
#   RETRACE=/path/to/retrace benches/profile-overhead.sh
# Environment: DURATION (seconds per phase, default 10), PAIRS (malloc+free pairs, 300000),
#              KEEP_TMP=1 to keep the temp dir.
# Needs: redis-server, redis-benchmark, bpftool, cc (Debian packages), root.
#
# Phases:
#   1  CPU sampling at 99 Hz on every CPU while every CPU is busy: the kernel's cost per sample
#      (bpf_stats run_time_ns / run_cnt of rt_cpu), the daemon's CPU (utime+stime), both as a
#      share of the machine's CPU time; and a CPU-bound workload's rate with and without.
#   2  exact heap mode (--mem-sample-bytes 1): ns per malloc+free pair of a loop, without and
#      with the probes (every call recorded), and with default sampling (512 KiB mean).
#   3  redis-benchmark against redis-server (jemalloc), without, with always-on memory
#      polling + heap sampling of redis-server (default 512 KiB), and with exact mode.
#   4  the peers: bpftrace with one uprobe on malloc counting calls (the floor: one trap), and
#      bcc's memleak on the same loop (when bpfcc-tools is installed and works on this kernel;
#      else the reason is printed).
set -euo pipefail

DURATION=${DURATION:-10}
PAIRS=${PAIRS:-300000}
ROOT=$(cd "$(dirname "$0")/.." && pwd)

if [[ $(id -u) -ne 0 ]]; then
    echo "profile-overhead: needs root (BPF programs)" >&2
    exit 2
fi
for tool in redis-server redis-benchmark bpftool cc; do
    command -v "$tool" >/dev/null || { echo "profile-overhead: $tool not installed" >&2; exit 2; }
done
if [[ -z ${RETRACE:-} ]]; then
    (cd "$ROOT" && cargo build --release --bin retrace >&2)
    RETRACE=${CARGO_TARGET_DIR:-$ROOT/target}/release/retrace
fi
TMP=$(mktemp -d /tmp/retrace-profile-bench.XXXXXX)
cleanup() {
    [[ -n ${REDIS_PID:-} ]] && kill "$REDIS_PID" 2>/dev/null || true
    [[ -n ${CAP_PID:-} ]] && kill -INT "$CAP_PID" 2>/dev/null || true
    sysctl -q kernel.bpf_stats_enabled="${STATS_BEFORE:-0}" >/dev/null 2>&1 || true
    [[ ${KEEP_TMP:-0} == 1 ]] || rm -rf "$TMP"
}
trap cleanup EXIT
NCPU=$(nproc)
echo "profile-overhead: $RETRACE, $NCPU CPUs, load average $(cut -d' ' -f1-3 /proc/loadavg)"

start_capture() { # out args...
    local out=$1
    shift
    "$RETRACE" capture --out "$out" --streams proc "$@" >"$out.log" 2>&1 &
    CAP_PID=$!
    for _ in $(seq 1 600); do
        [[ -e $out/daemon.pid ]] && return 0
        kill -0 "$CAP_PID" 2>/dev/null || { cat "$out.log" >&2; return 1; }
        sleep 0.1
    done
    echo "capture did not start" >&2
    return 1
}
stop_capture() {
    kill -INT "$CAP_PID" 2>/dev/null || echo "(the capture had stopped: $(tail -3 "$1.log"))" >&2
    wait "$CAP_PID" || true
    CAP_PID=
}
cpu_ticks() { # pid -> utime+stime in clock ticks
    awk '{print $14 + $15}' "/proc/$1/stat"
}

# ---- 1: CPU sampling -------------------------------------------------------------------
cat >"$TMP/spin.c" <<'EOF'
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
int main(int argc, char **argv) {
    double secs = atof(argv[1]); struct timespec a, b; unsigned long n = 0; volatile unsigned long s = 0;
    clock_gettime(CLOCK_MONOTONIC, &a);
    do { for (int i = 0; i < 100000; i++) s += i; n++; clock_gettime(CLOCK_MONOTONIC, &b); }
    while ((b.tv_sec - a.tv_sec) + (b.tv_nsec - a.tv_nsec) / 1e9 < secs);
    printf("%lu\n", n); return 0;
}
EOF
cc -O2 -o "$TMP/spin" "$TMP/spin.c"
cc -O2 -o "$TMP/pairs" "$ROOT/benches/malloc-pairs.c"
spin_all() { # seconds -> total rounds of NCPU spinners
    local pids=() total=0
    for _ in $(seq 1 "$NCPU"); do "$TMP/spin" "$1" >"$TMP/spin.$_.out" & pids+=($!); done
    wait "${pids[@]}"
    for f in "$TMP"/spin.*.out; do total=$((total + $(cat "$f"))); done
    rm -f "$TMP"/spin.*.out
    echo "$total"
}
base1=$(spin_all "$DURATION")
STATS_BEFORE=$(sysctl -n kernel.bpf_stats_enabled)
sysctl -q kernel.bpf_stats_enabled=1
start_capture "$TMP/cpu" --cpu-hz 99 --mem-interval off
t0=$(cpu_ticks "$CAP_PID")
with=$(spin_all "$DURATION")
t1=$(cpu_ticks "$CAP_PID")
read -r runs ns < <(bpftool prog show -j | python3 -c '
import json, sys
p = [x for x in json.load(sys.stdin) if x.get("name") == "rt_cpu"]
print(sum(x.get("run_cnt", 0) for x in p), sum(x.get("run_time_ns", 0) for x in p))')
stop_capture "$TMP/cpu"
base2=$(spin_all "$DURATION")
HZ=$(getconf CLK_TCK)
python3 - "$base1" "$base2" "$with" "$runs" "$ns" "$((t1 - t0))" "$HZ" "$DURATION" "$NCPU" <<'EOF'
import sys
b1, b2, w, runs, ns, ticks, hz, d, ncpu = map(float, sys.argv[1:])
base = (b1 + b2) / 2
per = ns / runs if runs else 0
machine = d * ncpu * 1e9
print(f"1 CPU sampling at 99 Hz: {runs:.0f} samples, {per/1000:.1f} us each in the kernel "
      f"= {100*ns/machine:.3f}% of the machine's CPU; daemon (unwinding, writing) "
      f"{100*ticks/hz*1e9/machine:.3f}%; spinners {w:.0f} rounds vs {base:.0f} without "
      f"({100*(w/base-1):+.2f}%; baselines {b1:.0f} and {b2:.0f})")
EOF

# ---- 2: exact mode, per malloc+free pair -----------------------------------------------
pairs_run() { "$TMP/pairs" "$PAIRS" 64 "${1:-0}"; }
p0=$(pairs_run)
start_capture "$TMP/exact" --mem-comm pairs --mem-sample-bytes 1 --mem-interval off
p1=$(pairs_run 1500)
stop_capture "$TMP/exact"
start_capture "$TMP/sampled" --mem-comm pairs --mem-interval off
p2=$(pairs_run 1500)
stop_capture "$TMP/sampled"
p3=$(pairs_run)
python3 - "$p0" "$p3" "$p1" "$p2" <<'EOF'
import sys
a, b, exact, sampled = map(float, sys.argv[1:])
base = (a + b) / 2
print(f"2 malloc+free pair: {base:.1f} ns without; exact mode {exact:.1f} ns "
      f"(+{exact-base:.0f} ns = {(exact-base)/1000:.2f} us per pair, every call recorded); "
      f"sampled at 512 KiB {sampled:.1f} ns (+{sampled-base:.0f} ns per pair)")
EOF

# ---- 3: redis ----------------------------------------------------------------------------
PORT=$((20000 + RANDOM % 20000))
redis-server --port "$PORT" --save '' --appendonly no --daemonize no >"$TMP/redis.log" 2>&1 &
REDIS_PID=$!
sleep 1
rb() {
    redis-benchmark -p "$PORT" -q -n 200000 -c 32 -d 256 -t set,get,lpush,lpop --csv 2>/dev/null |
        python3 -c '
import csv, sys
rows = [r for r in csv.reader(sys.stdin) if r and r[0] != "test"]
print(sum(float(r[1]) for r in rows) / len(rows))'
}
r0=$(rb)
start_capture "$TMP/redis-s" --mem-comm redis-server
sleep 1.5
r1=$(rb)
stop_capture "$TMP/redis-s"
start_capture "$TMP/redis-e" --mem-comm redis-server --mem-sample-bytes 1
sleep 1.5
r2=$(rb)
stop_capture "$TMP/redis-e"
heap_e=$(grep -o 'malloc [0-9]*' "$TMP/redis-e.log" | head -1 || true)
r3=$(rb)
python3 - "$r0" "$r3" "$r1" "$r2" "$heap_e" <<'EOF'
import sys
a, b, s, e = map(float, sys.argv[1:5])
base = (a + b) / 2
print(f"3 redis-benchmark (set/get/lpush/lpop, 32 clients, 256 B): {base:.0f} req/s without; "
      f"memory polling + heap sampling (512 KiB) {s:.0f} ({100*(s/base-1):+.1f}%); "
      f"exact mode {e:.0f} ({100*(e/base-1):+.1f}%) {sys.argv[5]}")
EOF

# ---- 4: the peers: bpftrace counting malloc calls (one uprobe), bcc memleak -----------------
if command -v bpftrace >/dev/null; then
    LIBC=$(ldd "$TMP/pairs" | awk '/libc.so/{print $3}')
    bpftrace -e "uprobe:$LIBC:malloc /comm == \"pairs\"/ { @n = count(); }" >"$TMP/bt.log" 2>&1 &
    btpid=$!
    sleep 5
    bt=$(pairs_run 500)
    kill -INT "$btpid" 2>/dev/null || true
    wait "$btpid" 2>/dev/null || true
    echo "4 bpftrace, one uprobe on malloc counting calls: $bt ns per pair (vs $p0 without): the cost of one uprobe trap on this machine"
fi
ML=$(command -v memleak-bpfcc || true)
if [[ -z $ML ]]; then
    echo "4 bcc memleak: bpfcc-tools not installed (apt-get install bpfcc-tools) — not measured"
else
    "$TMP/pairs" "$PAIRS" 64 3000 >"$TMP/ml.out" &
    ppid=$!
    timeout 120 "$ML" -p "$ppid" 5 >"$TMP/ml.log" 2>&1 &
    mlpid=$!
    wait "$ppid" || true
    kill -INT "$mlpid" 2>/dev/null || true
    wait "$mlpid" 2>/dev/null || true
    if grep -qi "error\|failed\|Traceback" "$TMP/ml.log"; then
        echo "4 bcc memleak: does not run here: $(grep -i -m1 'error\|failed\|exception' "$TMP/ml.log" | cut -c1-160)"
    else
        python3 - "$(cat "$TMP/ml.out")" "$p0" <<'EOF'
import sys
ml, base = map(float, sys.argv[1:])
print(f"4 bcc memleak (every call, as its default): {ml:.1f} ns per pair vs {base:.1f} without "
      f"({ml/base:.1f}x)")
EOF
    fi
fi
