#!/usr/bin/env bash
# Scenario checks for CI, run as root by .ci/run on a fresh Debian 12 machine:
#   1. the golden scenario tests (committed captures vs blessed analyses) and the
#      check/diff end-to-end tests, plus the interrupted live run (RETRACE_LIVE=1);
#   2. one live scenario for real (services, capture, traffic), then `retrace check` on
#      its capture with the scenario's own expectations;
#   3. nothing left behind: no scenario process, no iptables rule.
# Needs (apt): nginx-light redis-server postgresql python3 python3-psycopg2 python3-redis iptables
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
echo "== live scenario $scenario into $out/$scenario"
start=$(date +%s)
"$retrace" scenario run "scenarios/$scenario" --out "$out/$scenario" --junit "$out/$scenario-run.xml"
echo "live scenario $scenario took $(( $(date +%s) - start )) s"

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
if [ "$left" != 0 ]; then
    echo "ci-scenarios.sh: the scenario run left processes or iptables rules behind" >&2
    exit 1
fi
echo "ci-scenarios.sh: ok (reports in $out)"
