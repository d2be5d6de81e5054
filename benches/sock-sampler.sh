#!/usr/bin/env bash
# Socket sampler benchmark (issue 12): the cost of one pass of `rt_sock_sample` (the iter/tcp
# program the daemon runs every --sock-interval) over N idle loopback connections of a
# followed process, from the kernel's own BPF statistics (bpf_stats_enabled: run_time_ns and
# run_cnt, one run per socket visited), against the peer way of reading the same facts: one
# `ss -tin` dump of the same sockets (what a polling agent does). Figures printed, nothing
# asserted.
#
# Usage (as root, from the repository root):
#   benches/sock-sampler.sh                 # builds target/release/retrace first
#   RETRACE=/path/to/retrace CONNS=5000 benches/sock-sampler.sh
# Environment: CONNS (connections, each two sockets; default 2000), SECONDS_RUN (capture
# length, default 10).
set -euo pipefail

CONNS=${CONNS:-2000}
SECONDS_RUN=${SECONDS_RUN:-10}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
if [[ $(id -u) -ne 0 ]]; then
    echo "sock-sampler: needs root (BPF programs)" >&2
    exit 2
fi
for tool in bpftool ss python3; do
    command -v "$tool" >/dev/null || { echo "sock-sampler: $tool not installed" >&2; exit 2; }
done
if [[ -z ${RETRACE:-} ]]; then
    (cd "$ROOT" && cargo build --release --bin retrace >&2)
    RETRACE=${CARGO_TARGET_DIR:-$ROOT/target}/release/retrace
fi
TMP=$(mktemp -d /tmp/retrace-sock-bench.XXXXXX)
STATS_BEFORE=$(sysctl -n kernel.bpf_stats_enabled)
cleanup() {
    [[ -n ${HOLDER:-} ]] && kill "$HOLDER" 2>/dev/null || true
    [[ -n ${CAP:-} ]] && kill -INT "$CAP" 2>/dev/null || true
    sysctl -q kernel.bpf_stats_enabled="$STATS_BEFORE" >/dev/null 2>&1 || true
    rm -rf "$TMP"
}
trap cleanup EXIT
ulimit -n $((CONNS * 2 + 1024))
echo "sock-sampler: $RETRACE, $CONNS idle connections, $(nproc) CPUs, load average $(cut -d' ' -f1-3 /proc/loadavg)"

# The capture first, so that the connections are followed (opened under it).
"$RETRACE" capture --out "$TMP/cap" --streams tcp --sock-interval 1s >"$TMP/cap.log" 2>&1 &
CAP=$!
for _ in $(seq 1 300); do
    [[ -e $TMP/cap/daemon.pid ]] && break
    sleep 0.1
done
[[ -e $TMP/cap/daemon.pid ]] || { cat "$TMP/cap.log" >&2; exit 1; }
sysctl -q kernel.bpf_stats_enabled=1

# One process holds CONNS connected pairs, idle, until killed.
python3 - "$CONNS" "$TMP/port" <<'EOF' &
import socket, sys, time
n = int(sys.argv[1])
l = socket.socket()
l.bind(("127.0.0.1", 0))
l.listen(4096)
keep = []
for _ in range(n):
    c = socket.create_connection(l.getsockname())
    s, _ = l.accept()
    keep += [c, s]
open(sys.argv[2], "w").write(str(l.getsockname()[1]))
time.sleep(3600)
EOF
HOLDER=$!
for _ in $(seq 1 600); do
    [[ -s $TMP/port ]] && break
    sleep 0.1
done
PORT=$(cat "$TMP/port")

prog_stats() { # prints "run_time_ns run_cnt" of rt_sock_sample
    bpftool prog show --json | python3 -c '
import json, sys
for p in json.load(sys.stdin):
    if p.get("name", "").startswith("rt_sock_sample"):
        print(p.get("run_time_ns", 0), p.get("run_cnt", 0))
        break
else:
    print(0, 0)'
}
read -r t0 n0 < <(prog_stats)
sleep "$SECONDS_RUN"
read -r t1 n1 < <(prog_stats)
runs=$((n1 - n0))
ns=$((t1 - t0))
passes=$SECONDS_RUN
kill -INT "$CAP"
wait "$CAP" 2>/dev/null || true
CAP=

# The peer: one ss dump of the same sockets (both ends of each connection).
start=$(date +%s%N)
lines=$(ss -tinH "( sport = :$PORT or dport = :$PORT )" | grep -c '^ESTAB' || true)
ss_ns=$(( $(date +%s%N) - start ))
samples=$("$RETRACE" replay "$TMP/cap" --no-progress --filter "kind = tcp_sample and port = $PORT" 2>/dev/null | grep -c ' rtt ' || true)

python3 - "$runs" "$ns" "$passes" "$CONNS" "$ss_ns" "$lines" "$samples" <<'EOF'
import sys
runs, ns, passes, conns, ss_ns, lines, samples = map(int, sys.argv[1:])
sockets = 2 * conns
per_run = ns / runs if runs else float("nan")
per_pass = ns / passes / 1e6
print(f"rt_sock_sample: {runs} runs (sockets visited) in {passes} s, {per_run:.0f} ns per socket visited,"
      f" {per_pass:.2f} ms of CPU per pass over {sockets} followed sockets "
      f"({per_pass / 10:.3f}% of one CPU at 1 pass/s)")
print(f"RTT samples of the idle connections in the capture: {samples} (~{sockets} per pass)")
print(f"peer: one `ss -tin` dump of the same {lines} sockets: {ss_ns / 1e6:.1f} ms wall "
      f"(ratio ss / sampler pass: {ss_ns / 1e6 / per_pass:.1f}x)")
EOF
