#!/usr/bin/env bash
# Scenario checks for CI, run as root by .ci/run on a fresh Debian 12 machine:
#   1. the golden scenario tests (committed captures vs blessed analyses) and the
#      check/diff end-to-end tests, plus the interrupted live run (RETRACE_LIVE=1);
#   2. one live scenario for real (services, capture, traffic), with unrelated TCP traffic
#      on the machine beside it, then `retrace check` on its capture with the scenario's own
#      expectations (its `only_services` fails if the capture took in the unrelated traffic);
#   3. nothing left behind: no scenario process, no iptables rule, no scenario cgroup.
# Needs (apt): nginx-light redis-server postgresql python3 python3-psycopg2 python3-redis iptables
#               curl
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" != 0 ]; then
    echo "ci-scenarios.sh: needs root (capture uses eBPF, faults use iptables)" >&2
    exit 2
fi

target="${CARGO_TARGET_DIR:-target}"
cargo build --bin retrace
retrace="$target/debug/retrace"

echo "== golden scenario tests and check/diff tests"
RETRACE_LIVE=1 cargo test --test scenarios --test check_diff

out="$(mktemp -d /tmp/ci-scenarios.XXXXXX)"
scenario="${SCENARIO:-checkout}"

# Unrelated traffic beside the scenario: a web server and a client polling it, started
# outside the scenario. The scenario's capture must keep to its own processes.
noise_port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
python3 -m http.server "$noise_port" --bind 127.0.0.1 --directory "$out" >/dev/null 2>&1 &
noise_server=$!
(
    while kill -0 "$noise_server" 2>/dev/null; do
        curl -s -o /dev/null "http://127.0.0.1:$noise_port/" && echo hit
        sleep 0.2
    done
) >"$out/noise-hits.txt" &
noise_client=$!
trap 'kill "$noise_client" "$noise_server" 2>/dev/null || true' EXIT

echo "== live scenario $scenario into $out/$scenario (unrelated traffic on port $noise_port beside it)"
start=$(date +%s)
"$retrace" scenario run "scenarios/$scenario" --out "$out/$scenario" --junit "$out/$scenario-run.xml"
echo "live scenario $scenario took $(( $(date +%s) - start )) s"
kill "$noise_client" "$noise_server" 2>/dev/null || true
wait "$noise_client" "$noise_server" 2>/dev/null || true
hits=$(wc -l <"$out/noise-hits.txt")
echo "unrelated requests beside the scenario: $hits"
if [ "$hits" -lt 10 ]; then
    echo "ci-scenarios.sh: the unrelated traffic hardly ran ($hits requests): isolation untested" >&2
    exit 1
fi

echo "== retrace check on the live capture"
"$retrace" check "$out/$scenario/capture" --expect "scenarios/$scenario/scenario.yaml" \
    --junit "$out/$scenario-check.xml"

echo "== nothing left behind"
left=0
if pgrep -af 'common/(api|users)\.py|retrace-scenario-' >/dev/null; then
    pgrep -af 'common/(api|users)\.py|retrace-scenario-' >&2
    left=1
fi
if iptables -w -S OUTPUT | grep -q retrace-scenario; then
    iptables -w -S OUTPUT | grep retrace-scenario >&2
    left=1
fi
if find /sys/fs/cgroup -maxdepth 2 -type d -name 'retrace-scenario-*' | grep .; then
    left=1
fi
if [ "$left" != 0 ]; then
    echo "ci-scenarios.sh: the scenario run left processes, iptables rules or cgroups behind" >&2
    exit 1
fi
echo "ci-scenarios.sh: ok (reports in $out)"
