#!/usr/bin/env bash
# Capture overhead benchmark: wrk against nginx on loopback, without and with
# `retrace capture --streams tcp,l7`, and tcpdump on the same traffic for the size ratio.
#
# Usage (as root, from the repository root):
#   benches/capture-wrk.sh                      # builds target/release/retrace first
#   RETRACE=/path/to/retrace benches/capture-wrk.sh
# Environment: DURATION (wrk seconds, default 20), THREADS (2), CONNS (32),
#              STREAMS (tcp,l7), KEEP_TMP=1 to keep the temp dir.
# Needs: nginx-light wrk tcpdump (Debian packages), root (BPF, tcpdump).
#
# Phases, in one run, same nginx, same file, same wrk options:
#   A  baseline: wrk alone
#   B  wrk while `retrace capture --streams tcp,l7` records (daemon CPU from /proc/PID/stat,
#      peak RSS from VmHWM, events and drops from the manifest, bytes on disk)
#   A' baseline again (the two baselines bracket B; their mean is the reference)
#   C  wrk while retrace capture AND `tcpdump -i lo -w` record the very same traffic:
#      pcap bytes / capture bytes
# Goals (issue 3): B >= 97% of the baseline's requests/s, zero drops, >= 20x smaller than pcap.
# The figures are printed; nothing is asserted (no timed assertions), exit 0 unless a step broke.
set -euo pipefail

DURATION=${DURATION:-20}
THREADS=${THREADS:-2}
CONNS=${CONNS:-32}
STREAMS=${STREAMS:-tcp,l7}
ROOT=$(cd "$(dirname "$0")/.." && pwd)

if [[ $(id -u) -ne 0 ]]; then
    echo "capture-wrk: needs root (BPF programs, tcpdump)" >&2
    exit 2
fi
for tool in nginx wrk tcpdump python3; do
    command -v "$tool" >/dev/null || { echo "capture-wrk: $tool not installed (apt-get install nginx-light wrk tcpdump)" >&2; exit 2; }
done

if [[ -z ${RETRACE:-} ]]; then
    (cd "$ROOT" && cargo build --release --bin retrace >&2)
    RETRACE=${CARGO_TARGET_DIR:-$ROOT/target}/release/retrace
fi
[[ -x $RETRACE ]] || { echo "capture-wrk: $RETRACE is not executable" >&2; exit 2; }

TMP=$(mktemp -d /tmp/retrace-wrk.XXXXXX)
PIDS=()
BPF_STATS_WAS=$(cat /proc/sys/kernel/bpf_stats_enabled 2>/dev/null || echo 0)
cleanup() {
    echo "$BPF_STATS_WAS" >/proc/sys/kernel/bpf_stats_enabled 2>/dev/null || true
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
    if [[ -f $TMP/nginx.pid ]]; then kill "$(cat "$TMP/nginx.pid")" 2>/dev/null || true; fi
    [[ ${KEEP_TMP:-0} == 1 ]] && echo "kept $TMP" >&2 || rm -rf "$TMP"
}
trap cleanup EXIT

# A free loopback port (bound by the kernel, then released for nginx).
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')

mkdir -p "$TMP/www" "$TMP/logs"
chmod 0755 "$TMP" "$TMP/www" # nginx workers run as nobody
# A small static page (612 bytes, the size of nginx's default index.html).
python3 -c 'import sys; sys.stdout.write("<html><body>" + "x"*587 + "</body></html>\n")' >"$TMP/www/index.html"
cat >"$TMP/nginx.conf" <<EOF
worker_processes 1;
pid $TMP/nginx.pid;
error_log $TMP/logs/error.log warn;
events { worker_connections 1024; }
http {
    access_log off;
    default_type text/html;
    client_body_temp_path $TMP/body;
    proxy_temp_path $TMP/proxy;
    fastcgi_temp_path $TMP/fastcgi;
    uwsgi_temp_path $TMP/uwsgi;
    scgi_temp_path $TMP/scgi;
    keepalive_requests 1000000;
    server {
        listen 127.0.0.1:$PORT;
        root $TMP/www;
        location / { }
    }
}
EOF
nginx -p "$TMP" -c "$TMP/nginx.conf"
for _ in $(seq 100); do
    curl -fs "http://127.0.0.1:$PORT/index.html" -o /dev/null && break
    sleep 0.1
done
curl -fs "http://127.0.0.1:$PORT/index.html" -o /dev/null

URL="http://127.0.0.1:$PORT/index.html"

# CPU nanoseconds (all threads, user+system) the nginx workers have used so far.
nginx_cpu_ns() {
    local master total=0 w t
    master=$(cat "$TMP/nginx.pid")
    for w in $(pgrep -P "$master"); do
        for t in /proc/"$w"/task/*/schedstat; do
            read -r t _ <"$t" && total=$((total + t))
        done
    done
    echo "$total"
}

# Runs wrk; prints "requests_per_sec total_requests workload_cpu_ns": the CPU time of wrk
# (its rusage) and of the nginx workers during the run. Everything the capture costs the
# traced processes (BPF programs, the syscall tracing slow path) is in the last figure, and
# so is the loopback TCP work done in their context; other processes on the machine are not.
run_wrk() {
    local out n0 n1
    n0=$(nginx_cpu_ns)
    out=$(python3 -c '
import resource, subprocess, sys
r = subprocess.run(sys.argv[1:], capture_output=True, text=True, check=True)
u = resource.getrusage(resource.RUSAGE_CHILDREN)
sys.stdout.write(r.stdout)
print("wrk-cpu-ns", int((u.ru_utime + u.ru_stime) * 1e9))' wrk -t"$THREADS" -c"$CONNS" -d"${DURATION}s" "$URL")
    n1=$(nginx_cpu_ns)
    echo "$out" >>"$TMP/wrk.log"
    local rps total wcpu
    rps=$(awk '/^Requests\/sec:/ {print $2}' <<<"$out")
    total=$(awk '/requests in/ {print $1}' <<<"$out")
    wcpu=$(awk '/^wrk-cpu-ns/ {print $2}' <<<"$out")
    echo "$rps $total $((wcpu + n1 - n0))"
}

# Starts the daemon into $1; sets DAEMON_PID; returns once it writes.
start_capture() {
    local out=$1
    "$RETRACE" capture --out "$out" --streams "$STREAMS" --duration 1h >"$out.log" 2>&1 &
    DAEMON_PID=$!
    PIDS+=("$DAEMON_PID")
    for _ in $(seq 600); do
        if ! kill -0 "$DAEMON_PID" 2>/dev/null; then
            echo "capture-wrk: retrace capture exited early:" >&2
            cat "$out.log" >&2
            exit 1
        fi
        if compgen -G "$out/*.rseg" >/dev/null || [[ -f $out/manifest.json ]]; then
            sleep 1 # let the programs attach and the first block start
            return
        fi
        sleep 0.1
    done
    echo "capture-wrk: retrace capture not ready after 60 s" >&2
    cat "$out.log" >&2
    exit 1
}

# CPU ticks (utime+stime) of a pid.
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }

stop_capture() {
    kill -TERM "$DAEMON_PID"
    local st=0
    wait "$DAEMON_PID" || st=$?
    if [[ $st -ne 0 ]]; then
        echo "capture-wrk: retrace capture exited with $st:" >&2
        cat "$1.log" >&2
        exit 1
    fi
}

# manifest field via python (totals.events, totals.dropped, totals.bytes_on_disk ...)
manifest() {
    python3 - "$1/manifest.json" "$2" <<'EOF'
import json, sys
m = json.load(open(sys.argv[1]))
v = m
for k in sys.argv[2].split("."):
    v = v.get(k, 0) if isinstance(v, dict) else 0
print(v)
EOF
}

dir_bytes() { du -sb "$1" | awk '{print $1}'; }

# Ids of loaded BPF programs, one line.
prog_ids() { bpftool prog show --json 2>/dev/null | python3 -c 'import json,sys; print(" ".join(str(p["id"]) for p in json.load(sys.stdin)))' || true; }

# "name run_time_ns run_cnt" per retrace program (rt_*) not in the id list $1 (a program
# attached twice, one line each).
bpf_progs() {
    bpftool prog show --json 2>/dev/null | python3 -c '
import json, sys
before = set(sys.argv[1].split())
for p in json.load(sys.stdin):
    if str(p["id"]) in before or not p.get("name", "").startswith("rt_"):
        continue
    print(p["name"], p.get("run_time_ns", 0), p.get("run_cnt", 0))' "$1" || true
}

# "run_time_ns run_cnt" summed over the retrace programs (rt_*) not in the id list $1:
# the kernel time spent in our BPF programs (kernel.bpf_stats_enabled=1), charged to the
# traced processes, not to the daemon.
bpf_runtime() {
    bpftool prog show --json 2>/dev/null | python3 -c '
import json, sys
before = set(sys.argv[1].split())
ns = cnt = 0
for p in json.load(sys.stdin):
    if str(p["id"]) in before or not p.get("name", "").startswith("rt_"):
        continue
    ns += p.get("run_time_ns", 0)
    cnt += p.get("run_cnt", 0)
print(ns, cnt)' "$1" || echo "0 0"
}

echo "capture-wrk: nginx on 127.0.0.1:$PORT, wrk -t$THREADS -c$CONNS -d${DURATION}s, streams $STREAMS" >&2

echo "phase A: baseline" >&2
read -r A_RPS A_REQ A_CPU < <(run_wrk)

echo "phase B: with retrace capture" >&2
start_capture "$TMP/capB"
T0=$(cpu_ticks "$DAEMON_PID")
S0=$(date +%s.%N)
read -r B_RPS B_REQ B_CPU < <(run_wrk)
S1=$(date +%s.%N)
T1=$(cpu_ticks "$DAEMON_PID")
HWM_KB=$(awk '/^VmHWM:/ {print $2}' "/proc/$DAEMON_PID/status")
stop_capture "$TMP/capB"
B_EVENTS=$(manifest "$TMP/capB" totals.events)
B_DROPPED=$(manifest "$TMP/capB" totals.dropped)
B_BYTES=$(dir_bytes "$TMP/capB")
B_UNCOMP=$(manifest "$TMP/capB" totals.bytes_uncompressed)
B_L7=$(manifest "$TMP/capB" totals.events_by_kind.l7)
B_TCP=$(manifest "$TMP/capB" totals.events_by_kind.tcp)

echo "phase A': baseline again" >&2
read -r A2_RPS A2_REQ A2_CPU < <(run_wrk)

echo "phase C: retrace capture and tcpdump on the same traffic" >&2
tcpdump -i lo -w "$TMP/lo.pcap" -s 0 -U "tcp port $PORT" >"$TMP/tcpdump.log" 2>&1 &
TCPDUMP_PID=$!
PIDS+=("$TCPDUMP_PID")
sleep 1
# BPF run-time statistics cost a little per run: on in this phase only, not in B.
echo 1 >/proc/sys/kernel/bpf_stats_enabled 2>/dev/null || true
IDS_BEFORE=$(prog_ids)
start_capture "$TMP/capC"
read -r BPF_NS0 BPF_CNT0 < <(bpf_runtime "$IDS_BEFORE")
PROGS0=$(bpf_progs "$IDS_BEFORE")
C0=$(date +%s.%N)
read -r C_RPS C_REQ C_CPU < <(run_wrk)
C1=$(date +%s.%N)
read -r BPF_NS1 BPF_CNT1 < <(bpf_runtime "$IDS_BEFORE")
PROGS1=$(bpf_progs "$IDS_BEFORE")
# per program: the difference over the wrk run
BPF_PROGS=$(python3 -c '
import sys
a = {}
for l in sys.argv[1].splitlines():
    n, ns, c = l.split(); a[n] = (int(ns), int(c))
for l in sys.argv[2].splitlines():
    n, ns, c = l.split(); ns0, c0 = a.get(n, (0, 0))
    print(n, int(ns) - ns0, int(c) - c0)' "$PROGS0" "$PROGS1")
echo "$BPF_STATS_WAS" >/proc/sys/kernel/bpf_stats_enabled 2>/dev/null || true
stop_capture "$TMP/capC"
sleep 0.5
kill -INT "$TCPDUMP_PID"
wait "$TCPDUMP_PID" || true
C_BYTES=$(dir_bytes "$TMP/capC")
C_DROPPED=$(manifest "$TMP/capC" totals.dropped)
PCAP_BYTES=$(stat -c %s "$TMP/lo.pcap")
PCAP_DROPPED=$(awk '/dropped by kernel/ {print $1}' "$TMP/tcpdump.log")

CLK=$(getconf CLK_TCK)
python3 - <<EOF
a, a2, b = $A_RPS, $A2_RPS, $B_RPS
base = (a + a2) / 2
wall = $S1 - $S0
cpu = ($T1 - $T0) / $CLK / wall * 100
events, dropped = $B_EVENTS, $B_DROPPED
print("retrace capture overhead (nginx + wrk -t$THREADS -c$CONNS -d${DURATION}s on loopback, streams $STREAMS)")
print(f"  baseline requests/s       {a:12.0f} (A)  {a2:12.0f} (A')  mean {base:.0f}")
print(f"  with capture requests/s   {b:12.0f}  ratio {b / base * 100:.1f}% of baseline   (goal >= 97%)")
a_us = ($A_CPU + $A2_CPU) / 1e3 / ($A_REQ + $A2_REQ)
b_us = $B_CPU / 1e3 / $B_REQ
d_us = ($T1 - $T0) / $CLK / max($B_REQ, 1) * 1e6
print(f"  nginx+wrk CPU per request {a_us:11.2f} us baseline, {b_us:.2f} us with capture: +{b_us - a_us:.2f} us"
      f" (BPF and syscall tracing in the traced processes); + daemon {d_us:.2f} us = {b_us - a_us + d_us:.2f} us/request in all")
print(f"  requests during capture   {$B_REQ:12d}")
print(f"  events captured           {events:12d}  ({events / wall:.0f}/s; tcp {$B_TCP}, l7 {$B_L7})")
print(f"  events dropped            {dropped:12d}   (goal 0)")
print(f"  daemon CPU                {cpu:11.1f}%  of one core, during the wrk run"
      f" = {($T1 - $T0) / $CLK / max($B_REQ, 1) * 1e6:.2f} us/request, {($T1 - $T0) / $CLK / max(events, 1) * 1e6:.2f} us/event")

print(f"  daemon peak RSS (VmHWM)   {$HWM_KB / 1024:11.1f} MiB  (goal <= 64 MiB)")
print(f"  bytes on disk             {$B_BYTES:12d}  ({$B_BYTES / $B_REQ:.2f} B/request, {$B_BYTES / max(events, 1):.2f} B/event;"
      f" uncompressed {$B_UNCOMP / max($B_BYTES, 1):.1f}x larger)")
print("same traffic, capture and tcpdump -i lo -w together (phase C):")
print(f"  requests                  {$C_REQ:12d}  ({$C_RPS:.0f}/s)")
print(f"  pcap bytes                {$PCAP_BYTES:12d}  ({$PCAP_BYTES / $C_REQ:.1f} B/request; tcpdump dropped ${PCAP_DROPPED:-?})")
print(f"  capture bytes             {$C_BYTES:12d}  ({$C_BYTES / $C_REQ:.2f} B/request; dropped $C_DROPPED)")
print(f"  pcap / capture            {$PCAP_BYTES / max($C_BYTES, 1):11.1f}x  (goal >= 20x)")
bpf_ns, bpf_cnt, cwall = $BPF_NS1 - $BPF_NS0, $BPF_CNT1 - $BPF_CNT0, $C1 - $C0
if bpf_cnt:
    print(f"  BPF programs (in kernel)  {bpf_ns / 1e9 / cwall * 100:11.1f}%  of one core: {bpf_cnt} runs, {bpf_ns / bpf_cnt:.0f} ns/run,"
          f" {bpf_cnt / max($C_REQ, 1):.1f} runs/request (charged to nginx and wrk, not to the daemon)")
    print(f"  BPF cost per request      {bpf_ns / max($C_REQ, 1):11.0f} ns")
per_prog = """$BPF_PROGS"""
for line in per_prog.strip().splitlines():
    name, ns, cnt = line.split()
    ns, cnt = int(ns), int(cnt)
    if cnt:
        print(f"    {name:22s} {cnt / max($C_REQ, 1):6.2f} runs/request {ns / cnt:6.0f} ns/run {ns / max($C_REQ, 1):6.0f} ns/request")
EOF
