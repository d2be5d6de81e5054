#!/usr/bin/env bash
# Kernel matrix for the capture: loads retrace's BPF programs and records a real HTTP exchange
# on loopback on the host kernel and on Debian's packaged kernels, each booted in QEMU with a
# small initramfs (busybox, the retrace binary and its libraries). Checks from each console log
# that the programs loaded, that the request (GET /hello.txt) and its response (HTTP/1.x 200)
# were recorded as L7 events and that the processes are named (httpd, wget).
#
#   sudo scripts/kernel-matrix.sh [RETRACE_BINARY]      (default: target/debug/retrace)
#
# Environment:
#   KM_KERNELS   kernels to check, in order (default: "host 6.1 6.1-noloop 6.12"; LABEL-noloop:
#                the kernel of LABEL with RETRACE_NO_BPF_LOOP=1, the fallback for kernels
#                without bpf_loop, such as Ubuntu 22.04's 5.15)
#   KM_ACCEL     QEMU accelerator (default: tcg; kvm hung in early boot on our CI machines)
#   KM_TIMEOUT   hard limit on one VM, in seconds (default: 300)
#   KM_CACHE     downloaded kernels (default: /var/cache/retrace-kernels)
#   KM_OUT       logs and initramfs (default: target/kernel-matrix)
#   KM_SHOW_LOGS non-empty: also print each console log from the workload's start
#
# Kernels come from apt only (apt-get download + dpkg-deb -x; nothing is installed): the newest
# linux-image-6.1.0-N-amd64 (Debian 12's own) and the newest linux-image-6.12.*-amd64 (Debian 12
# security/backports). Both have BTF built in. Exits non-zero if any kernel fails.
# Idempotent; needs root (apt, BPF, the host check).
set -euo pipefail
shopt -s inherit_errexit

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
HERE="$ROOT/scripts/kernel-matrix"
BINARY=${1:-$ROOT/target/debug/retrace}
KERNELS=${KM_KERNELS:-host 6.1 6.1-noloop 6.12}
ACCEL=${KM_ACCEL:-tcg}
VM_TIMEOUT=${KM_TIMEOUT:-300}
CACHE=${KM_CACHE:-/var/cache/retrace-kernels}
OUT=${KM_OUT:-$ROOT/target/kernel-matrix}
PACKAGES=(qemu-system-x86 busybox-static cpio gzip binutils)

log() { echo "kernel-matrix: $*"; }
die() {
	echo "kernel-matrix: error: $*" >&2
	exit 2
}

case "${1:-}" in
-h | --help)
	sed -n '2,20p' "$0" | sed 's/^# \{0,1\}//'
	exit 0
	;;
esac

[ "$(id -u)" -eq 0 ] || die "needs root (apt-get, BPF): run it with sudo"
[ -x "$BINARY" ] || die "no retrace binary at $BINARY: build it first (cargo build --bin retrace)"
BINARY=$(realpath "$BINARY")
[ -f "$HERE/guest.sh" ] || die "missing $HERE/guest.sh"

# ---------------------------------------------------------------------------------------------
# Packages

install_packages() {
	local missing=() p
	for p in "${PACKAGES[@]}"; do
		dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
	done
	if [ ${#missing[@]} -gt 0 ]; then
		log "installing ${missing[*]}"
		apt-get update -qq
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
	fi
}

# ---------------------------------------------------------------------------------------------
# Kernels

# The Debian mirror the machine already uses for bookworm (deb822 .sources or one-line .list).
debian_mirror() {
	local f uri=""
	for f in /etc/apt/sources.list.d/*.sources; do
		[ -f "$f" ] || continue
		uri=$(awk '
			/^[ \t]*$/ { if (u != "" && s ~ /(^| )bookworm( |$)/) { print u; exit } u = ""; s = "" }
			/^URIs:/ { u = $2 }
			/^Suites:/ { $1 = ""; s = $0 " " }
			END { if (u != "" && s ~ /(^| )bookworm( |$)/) print u }' "$f" | head -1)
		[ -n "$uri" ] && break
	done
	if [ -z "$uri" ]; then
		uri=$(cat /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null |
			awk '$1 == "deb" { for (i = 2; i < NF; i++) if ($i !~ /^\[/ && $(i + 1) == "bookworm") { print $i; exit } }')
	fi
	echo "${uri:-http://deb.debian.org/debian}"
}

# Adds bookworm-backports the way Debian documents it (one source, main), on the mirror
# already configured. Only used when no 6.12 kernel is found in the configured suites.
add_backports() {
	local f=/etc/apt/sources.list.d/bookworm-backports.sources mirror
	if grep -rqs "bookworm-backports" /etc/apt/sources.list /etc/apt/sources.list.d/; then
		return 1 # already configured: nothing to add
	fi
	mirror=$(debian_mirror)
	log "adding bookworm-backports from $mirror ($f)"
	cat >"$f" <<EOF
Types: deb
URIs: $mirror
Suites: bookworm-backports
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
EOF
	apt-get update -qq
}

# Newest package whose name matches the extended regex $1 (flavours cloud/rt excluded), or
# nothing.
newest_package() {
	apt-cache search --names-only "$1" | awk '{ print $1 }' | { grep -Ev -- '-(cloud|rt)-amd64$' || true; } |
		sort -V | tail -1
}

# Downloads and unpacks kernel package $1 into $CACHE/$1 (vmlinuz, config). Returns non-zero
# when apt cannot download it.
fetch_kernel() {
	local pkg=$1 dir="$CACHE/$1" tmp deb debs
	[ -s "$dir/vmlinuz" ] && return 0
	mkdir -p "$CACHE/debs"
	# apt's sandbox user must be able to write the download directory
	chown _apt "$CACHE/debs" 2>/dev/null || true
	log "downloading $pkg" >&2
	(cd "$CACHE/debs" && apt-get download -qq "$pkg" >&2) || return 1
	debs=("$CACHE/debs/${pkg}_"*.deb)
	deb=${debs[-1]}
	tmp=$(mktemp -d "$CACHE/unpack.XXXXXX")
	dpkg-deb -x "$deb" "$tmp"
	rm -rf "$dir.new"
	mkdir -p "$dir.new"
	cp "$tmp"/boot/vmlinuz-* "$dir.new/vmlinuz"
	cp "$tmp"/boot/config-* "$dir.new/config" 2>/dev/null || true
	rm -rf "$tmp" "$deb" "$dir"
	mv "$dir.new" "$dir"
}

# The package regex for matrix label $1.
kernel_regex() {
	case "$1" in
	6.1) echo '^linux-image-6\.1\.0-[0-9]+-amd64$' ;;
	6.12) echo '^linux-image-6\.12\.[0-9]+[^ ]*-amd64$' ;;
	*) die "unknown kernel $1 (known: host 6.1 6.12)" ;;
	esac
}

# Prints the kernel directory for matrix label $1 (6.1 or 6.12), downloading it when needed.
kernel_for() {
	local re pkg
	re=$(kernel_regex "$1")
	pkg=$(newest_package "$re")
	if [ -z "$pkg" ] || { [ ! -s "$CACHE/$pkg/vmlinuz" ] && ! fetch_kernel "$pkg"; }; then
		# stale or empty package lists (a fresh machine): refresh them once
		log "$1: refreshing the apt package lists" >&2
		apt-get update -qq >&2
		pkg=$(newest_package "$re")
		if [ -z "$pkg" ] && [ "$1" = 6.12 ] && add_backports >&2; then
			pkg=$(newest_package "$re")
		fi
		[ -n "$pkg" ] || die "no package matching $re in the apt sources"
		fetch_kernel "$pkg" || die "apt-get download $pkg failed"
	fi
	# older downloads of the same series are not needed any more
	find "$CACHE" -mindepth 1 -maxdepth 1 -type d -name "linux-image-*" ! -name "$pkg" \
		-regextype posix-extended -regex ".*/${re#^}" -exec rm -rf {} + 2>/dev/null || true
	echo "$CACHE/$pkg"
}

# ---------------------------------------------------------------------------------------------
# Initramfs

build_initramfs() {
	local img=$1 root lib
	root=$(mktemp -d "$OUT/initramfs.XXXXXX")
	mkdir -p "$root"/{bin,sbin,proc,sys,dev,tmp,run,etc}
	cp /bin/busybox "$root/bin/busybox"
	# the debug binary's DWARF is most of its size: not needed to load programs
	objcopy --strip-debug "$BINARY" "$root/bin/retrace"
	# the libraries ldd lists, and the dynamic loader, at the paths the binary asks for
	for lib in $(ldd "$BINARY" | awk '/=> \// { print $3 } /^[ \t]*\// { print $1 }'); do
		mkdir -p "$root$(dirname "$lib")"
		cp -L "$lib" "$root$lib"
	done
	cp "$HERE/guest.sh" "$root/init"
	chmod 755 "$root/init"
	cat >"$root/km.conf" <<EOF
KM_MODE=vm
KM_PORT=8080
EOF
	(cd "$root" && find . -print0 | cpio --null -o -H newc --quiet) | gzip -1 >"$img.new"
	mv "$img.new" "$img"
	rm -rf "$root"
}

# ---------------------------------------------------------------------------------------------
# Checks

# The verifier's verdicts in log $1: for each program refused, "prog: last message" (the line
# before "processed N insns", e.g. "combined stack size of 2 calls is 704. Too large").
verifier_errors() {
	awk '
		/prog .*BEGIN PROG LOAD LOG/ { inlog = 1; prev = ""; match($0, /prog \047[^\047]*\047/); prog = substr($0, RSTART + 6, RLENGTH - 7); next }
		inlog && /^processed [0-9]+ insns/ { if (prev != "") print prog ": " prev; printed = 1; next }
		inlog && /END PROG LOAD LOG/ { if (!printed && prev != "") print prog ": " prev; inlog = 0; printed = 0; next }
		inlog { prev = $0 }
	' "$1" | sort -u
}

# The last lines of each verifier log in $1 (long register-state lines cut), for the report.
verifier_tails() {
	awk '
		/BEGIN PROG LOAD LOG/ { inlog = 1; n = 0; print; next }
		inlog && /END PROG LOAD LOG/ {
			s = n > 14 ? n - 14 : 0
			if (s > 0) print "  ... (" s " verifier lines left out)"
			for (i = s; i < n; i++) print buf[i]
			inlog = 0; print; next
		}
		inlog { buf[n++] = length($0) > 220 ? substr($0, 1, 220) " ..." : $0; next }
		/^(libbpf|retrace):/ { print }
	' "$1"
}

# Checks console log $2 of kernel $1 (run took $3 s); prints the verdict line and, on failure,
# the evidence. Returns non-zero on failure.
check_log() {
	local label=$1 logf=$2 secs=$3 release l7 oom why=() errs
	release=$(sed -n 's/.*@@KM: begin .*kernel=\([^ ]*\).*/\1/p' "$logf" | head -1)
	l7=$(sed -n '/@@KM: l7-begin/,/@@KM: l7-end/p' "$logf")
	if ! grep -q '@@KM: begin' "$logf"; then
		why+=("the workload never started (no '@@KM: begin' on the console)")
	elif grep -q 'BPF program load failed\|failed to load BPF skeleton\|@@KM: capture-failed' "$logf"; then
		errs=$(verifier_errors "$logf" | tr '\n' ';' | sed 's/;$//; s/;/; /g')
		why+=("BPF programs not loaded${errs:+: $errs}")
	elif ! grep -q '@@KM: capture-running' "$logf"; then
		why+=("the capture never started running")
	else
		grep -q '@@KM: http-done ok=[1-9]' "$logf" || why+=("no HTTP exchange succeeded")
		grep -q '@@KM: capture-end rc=0' "$logf" || why+=("the capture did not end cleanly")
		echo "$l7" | grep -Eq 'wget\([0-9/]+\) l7 egress .*"GET /hello\.txt' || why+=("no L7 request GET /hello.txt written by wget")
		echo "$l7" | grep -Eq 'httpd\([0-9/]+\) l7 ingress .*"GET /hello\.txt' || why+=("no L7 request GET /hello.txt read by httpd")
		echo "$l7" | grep -Eq 'httpd\([0-9/]+\) l7 egress .*"HTTP/1\.[01] 200' || why+=("no L7 response HTTP/1.x 200 written by httpd")
		echo "$l7" | grep -Eq 'wget\([0-9/]+\) l7 ingress .*"HTTP/1\.[01] 200' || why+=("no L7 response HTTP/1.x 200 read by wget")
		# VMs only: an OOM kill in a 16 MiB memory cgroup (the mark_victim tracepoint)
		if grep -q '@@KM: oom-done' "$logf"; then
			oom=$(sed -n '/@@KM: oom-begin/,/@@KM: oom-end/p' "$logf")
			echo "$oom" | grep -Eq 'dd\([0-9]+\) oom victim=[1-9]' || why+=("no OOM kill of dd recorded")
		fi
		grep -q '@@KM: done' "$logf" || why+=("the workload did not finish")
	fi

	if [ ${#why[@]} -eq 0 ]; then
		printf 'kernel-matrix: %-5s %-24s PASS %4ss  %s L7 events (httpd, wget)%s; log %s\n' "$label" "$release" \
			"$secs" "$(echo "$l7" | grep -c ' l7 ')" "${oom:+, OOM kill}" "$logf"
		return 0
	fi
	local joined
	joined=$(IFS=';' && echo "${why[*]}")
	printf 'kernel-matrix: %-5s %-24s FAIL %4ss  %s\n' "$label" "${release:-?}" "$secs" "${joined//;/; }"
	local tail_lines=30
	{
		if grep -q 'BEGIN PROG LOAD LOG\|^libbpf:' "$logf"; then
			tail_lines=6
			echo "----- $label: libbpf and the verifier (end of each log) -----"
			verifier_tails "$logf"
		fi
		if grep -q '^\(WARN\|FAIL\) ' "$logf"; then
			echo "----- $label: retrace doctor, warnings and failures -----"
			grep '^\(WARN\|FAIL\) ' "$logf" || true
		fi
		echo "----- $label: last console lines ($logf) -----"
		grep -v '^[[:space:]]*$' "$logf" | cut -c1-220 | tail -"$tail_lines"
		echo "----- end of $label -----"
	} | sed 's/^/  | /'
	return 1
}

run_host() {
	local logf="$OUT/host.log" work
	work=$(mktemp -d /tmp/retrace-km-host.XXXXXX)
	mkdir -p "$work/bin"
	ln -s /bin/busybox "$work/bin/httpd"
	ln -s /bin/busybox "$work/bin/wget"
	KM_MODE=host KM_CONF=/nonexistent KM_WORK="$work" KM_RETRACE="$BINARY" KM_BIN="$work/bin" \
		KM_PORT=$((20000 + RANDOM % 20000)) KM_LOAD_TIMEOUT=60 \
		timeout -k 10 "$VM_TIMEOUT" /bin/busybox sh "$HERE/guest.sh" >"$logf" 2>&1 || true
	rm -rf "$work"
}

# $4: more kernel parameters (NAME=VALUE ones reach /init, hence retrace, as environment)
run_vm() {
	local kdir=$1 logf=$2 img=$3 extra=${4:-} rc=0
	timeout -k 10 "$VM_TIMEOUT" qemu-system-x86_64 -accel "$ACCEL" -m 1024 -smp 2 -nographic -no-reboot \
		-kernel "$kdir/vmlinuz" -initrd "$img" -append "console=ttyS0 panic=-1 quiet $extra" \
		</dev/null >"$logf" 2>&1 || rc=$?
	# grep-friendly log: no CRs, no terminal escapes (SeaBIOS clears the screen)
	sed -i 's/\r$//; s/\x1b\[[0-9;?]*[a-zA-Z]//g; s/\x1bc//g' "$logf"
	if [ "$rc" -eq 124 ] || [ "$rc" -eq 137 ]; then
		echo "@@KM-HOST: VM killed after ${VM_TIMEOUT}s (timeout)" >>"$logf"
	elif [ "$rc" -ne 0 ]; then
		echo "@@KM-HOST: qemu exited with $rc" >>"$logf"
	fi
}

# ---------------------------------------------------------------------------------------------

install_packages
mkdir -p "$OUT" "$CACHE"
log "binary $BINARY ($(stat -c %s "$BINARY") bytes), accel $ACCEL, kernels: $KERNELS"

img=""
needs_vm=0
for k in $KERNELS; do [ "$k" = host ] || needs_vm=1; done
if [ "$needs_vm" -eq 1 ]; then
	img="$OUT/initramfs.cpio.gz"
	t0=$(date +%s)
	build_initramfs "$img"
	log "initramfs $img ($(stat -c %s "$img") bytes, $(($(date +%s) - t0))s)"
fi

failed=0
results=()
for k in $KERNELS; do
	logf="$OUT/$k.log"
	t0=$(date +%s)
	if [ "$k" = host ]; then
		log "host: $(uname -r), running the workload directly"
		run_host
	else
		# LABEL-noloop: the same kernel, with the programs' fallback for kernels without bpf_loop
		# (before 5.17: Ubuntu 22.04's 5.15) forced, so that the fallback is verified and run
		extra=""
		case "$k" in *-noloop) extra="RETRACE_NO_BPF_LOOP=1" ;; esac
		kdir=$(kernel_for "${k%-noloop}")
		log "$k: booting $(basename "$kdir") with -accel $ACCEL (timeout ${VM_TIMEOUT}s) $extra"
		t0=$(date +%s)
		run_vm "$kdir" "$logf" "$img" "$extra"
	fi
	secs=$(($(date +%s) - t0))
	if [ -n "${KM_SHOW_LOGS:-}" ]; then
		sed -n '/@@KM: begin/,$p' "$logf" | sed "s/^/  $k> /"
	fi
	if line=$(check_log "$k" "$logf" "$secs"); then
		echo "$line"
		results+=("$line")
	else
		echo "$line"
		results+=("$(echo "$line" | head -1)")
		failed=$((failed + 1))
	fi
done

echo
log "summary (logs in $OUT):"
for r in "${results[@]}"; do echo "  ${r#kernel-matrix: }"; done
if [ "$failed" -gt 0 ]; then
	log "$failed kernel(s) failed"
	exit 1
fi
log "all kernels passed"
