#!/usr/bin/env bash
# Installs what a fresh Debian 12 machine lacks to build, test and run retrace.
# Idempotent; needs root (or sudo) for apt.
set -euo pipefail

SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi

PACKAGES=(
  # BPF build: clang compiles the programs, libbpf (vendored by libbpf-sys) links libelf and zlib.
  clang llvm libelf-dev zlib1g-dev pkg-config make bpftool
  # Tests and scenarios: real servers, real clients, packet loss, DNS, browser.
  iptables iproute2 curl dnsutils procps python3 python3-psycopg2 python3-redis
  # tests/export_otlp.rs: a venv (below) with OpenTelemetry's protobuf classes.
  python3-venv
  # tests/export_openmetrics.rs: promtool loads `retrace export openmetrics` into a Prometheus TSDB.
  prometheus
  nginx-light redis-server postgresql wrk tcpdump tshark chromium
  # tests/analyze_e2e.rs (churn): the kernel's own retransmit counts, beside the capture.
  bpftrace
  # tests/export_pprof.rs: `go tool pprof` reads what `retrace export pprof` writes (offline).
  golang-go
  # tests/fleet.rs: libfaketime sets one node's capture daemon's wall clock back; tests/deploy.rs:
  # systemd-analyze verify of the unit; the Spark job (fleet/spark) runs on Java 17.
  faketime systemd openjdk-17-jre-headless
  # Kernel matrix (scripts/kernel-matrix.sh): Debian kernels booted in QEMU from a busybox initramfs.
  qemu-system-x86 busybox-static cpio binutils
)

missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "install-deps: installing ${missing[*]}"
  $SUDO apt-get update -qq
  # tshark asks whether non-root users may capture: answer no, without a prompt.
  echo "wireshark-common wireshark-common/install-setuid boolean false" | $SUDO debconf-set-selections
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

# Debian starts the packaged servers; the tests and scenarios start their own on free ports.
for svc in nginx redis-server postgresql prometheus; do
  $SUDO systemctl stop "$svc" >/dev/null 2>&1 || $SUDO service "$svc" stop >/dev/null 2>&1 || true
done

# tests/export_otlp.rs validates the OTLP export with OpenTelemetry's own generated classes
# (PyPI: opentelemetry-proto, protobuf), tests/export_parquet.rs reads the Parquet export with
# pyarrow and DuckDB; all pinned in tests/otlp/requirements.txt, in a venv of
# Debian's python3 (RETRACE_PY_VENV, default /opt/retrace-py). Rebuilt only when the pins
# change.
venv="${RETRACE_PY_VENV:-/opt/retrace-py}"
reqs="$(cd "$(dirname "$0")/.." && pwd)/tests/otlp/requirements.txt"
if ! cmp -s "$reqs" "$venv/retrace-requirements.txt" || ! "$venv/bin/python" -c 'import opentelemetry.proto, google.protobuf, pyarrow, duckdb' 2>/dev/null; then
  echo "install-deps: creating the Python venv $venv (tests/otlp/requirements.txt)"
  if [ -e "$venv" ] && [ ! -f "$venv/pyvenv.cfg" ]; then
    echo "install-deps: $venv exists and is not a Python venv: not replacing it" >&2
    exit 1
  fi
  $SUDO rm -rf "$venv"
  $SUDO /usr/bin/python3 -m venv "$venv"
  $SUDO "$venv/bin/pip" install --quiet --disable-pip-version-check --no-cache-dir -r "$reqs"
  $SUDO cp "$reqs" "$venv/retrace-requirements.txt"
fi

# The fleet job (fleet/spark, tests/fleet_spark.rs): PySpark, pinned in
# fleet/spark/requirements.txt, in the same venv; it runs on Debian's Java 17 (above).
spark_reqs="$(cd "$(dirname "$0")/.." && pwd)/fleet/spark/requirements.txt"
if ! cmp -s "$spark_reqs" "$venv/retrace-spark-requirements.txt" || ! "$venv/bin/python" -c 'import pyspark' 2>/dev/null; then
  echo "install-deps: installing PySpark into $venv (fleet/spark/requirements.txt)"
  $SUDO "$venv/bin/pip" install --quiet --disable-pip-version-check --no-cache-dir -r "$spark_reqs"
  $SUDO cp "$spark_reqs" "$venv/retrace-spark-requirements.txt"
fi

command -v cargo >/dev/null || { echo "install-deps: cargo not found: install Rust with rustup (https://rustup.rs)" >&2; exit 1; }
rustup component add rustfmt clippy >/dev/null 2>&1 || true
# scripts/fuzz.sh: cargo-fuzz (pinned) and a nightly toolchain (libFuzzer needs -Zsanitizer).
CARGO_FUZZ_VERSION=0.13.2
if ! cargo fuzz --version 2>/dev/null | grep -q "$CARGO_FUZZ_VERSION"; then
  echo "install-deps: installing cargo-fuzz $CARGO_FUZZ_VERSION"
  cargo install --locked --quiet cargo-fuzz --version "$CARGO_FUZZ_VERSION"
fi
rustup run nightly rustc --version >/dev/null 2>&1 || rustup toolchain install nightly --profile minimal
echo "install-deps: ok"
