#!/bin/busybox sh
# kernel-matrix workload: loads retrace's BPF programs, records one HTTP exchange on loopback
# and prints what was recorded between `@@KM:` markers that scripts/kernel-matrix.sh checks.
#
# Runs as /init of the matrix's initramfs (pid 1: mounts the pseudo filesystems, brings up
# lo, powers off at the end) or on the host (KM_MODE=host, settings in the environment).
# busybox sh on purpose: the initramfs has nothing else. No `set -e`: pid 1 must reach the
# power-off whatever fails, and every failure is reported through the markers instead.

KM_CONF=${KM_CONF:-/km.conf}
# shellcheck disable=SC1090
[ -r "$KM_CONF" ] && . "$KM_CONF"
KM_MODE=${KM_MODE:-vm}
KM_WORK=${KM_WORK:-/tmp/km}
KM_RETRACE=${KM_RETRACE:-/bin/retrace}
KM_BIN=${KM_BIN:-/bin}                  # holds httpd and wget (busybox links: comm httpd, wget)
KM_PORT=${KM_PORT:-8080}
KM_DURATION=${KM_DURATION:-120}         # --duration: a backstop; the capture is stopped by SIGINT
KM_LOAD_TIMEOUT=${KM_LOAD_TIMEOUT:-150} # seconds to wait for the programs to be attached
KM_REQUESTS=${KM_REQUESTS:-3}
KM_STREAMS=${KM_STREAMS:-proc,tcp,l7}

km() { echo "@@KM: $* (t=$(cut -d' ' -f1 /proc/uptime))"; }

vm_setup() {
	/bin/busybox mkdir -p /proc /sys /dev /tmp /run /bin /sbin
	/bin/busybox --install -s /bin
	export PATH=/bin:/sbin
	mount -t proc proc /proc
	mount -t sysfs sysfs /sys
	mount -t devtmpfs devtmpfs /dev 2>/dev/null
	# tmpfs only takes what is written: the size is what `retrace doctor` wants free (2 GiB)
	mount -t tmpfs -o size=4g tmpfs /tmp
	mount -t tmpfs tmpfs /run
	mount -t bpf bpf /sys/fs/bpf 2>/dev/null
	mount -t cgroup2 cgroup2 /sys/fs/cgroup 2>/dev/null
	# the kernel's own messages stay off the console unless they are warnings
	echo 4 >/proc/sys/kernel/printk 2>/dev/null
	hostname km-vm
	ip link set lo up 2>/dev/null || ifconfig lo 127.0.0.1 up
}

vm_poweroff() {
	km "poweroff"
	sync
	poweroff -f
	sleep 5
	echo o >/proc/sysrq-trigger # never returns when it works
	sleep 30
}

# Waits up to $2 seconds for pid $1 to exit; kills it after that. Sets `rc`.
wait_pid() {
	n=0
	while kill -0 "$1" 2>/dev/null && [ "$n" -lt "$(($2 * 10))" ]; do
		usleep 100000
		n=$((n + 1))
	done
	if kill -0 "$1" 2>/dev/null; then
		km "pid $1 still running after $2s: killed"
		kill -KILL "$1" 2>/dev/null
	fi
	wait "$1"
	rc=$?
}

# An OOM kill in a memory cgroup of its own (VM only): dd's 64 MiB buffer in a 16 MiB cgroup.
oom_kill() {
	cg=/sys/fs/cgroup/km-oom
	echo +memory >/sys/fs/cgroup/cgroup.subtree_control 2>/dev/null
	if ! mkdir -p "$cg" || ! echo 16M >"$cg/memory.max"; then
		km "oom-skipped (no memory cgroup)"
		return
	fi
	echo 0 >"$cg/memory.swap.max" 2>/dev/null
	sh -c "echo \$\$ >$cg/cgroup.procs && exec dd if=/dev/zero of=/dev/null bs=64M count=1" 2>/dev/null
	km "oom-done rc=$?"
}

workload() {
	km "begin mode=$KM_MODE kernel=$(uname -r) cpus=$(nproc)"
	mkdir -p "$KM_WORK/www"
	cd "$KM_WORK" || return
	rm -rf cap
	echo "hello from the retrace kernel matrix" >www/hello.txt

	km "doctor-begin"
	"$KM_RETRACE" doctor --streams "$KM_STREAMS" 2>&1
	km "doctor-end rc=$?"

	km "capture-start streams=$KM_STREAMS"
	# the profiler loads too: CPU samples, off-CPU time, page faults and the heap sampler's
	# uprobe programs (loaded for --mem-comm even where busybox's static httpd gives no libc)
	"$KM_RETRACE" capture --out "$KM_WORK/cap" --duration "${KM_DURATION}s" --max-size 64MiB \
		--cpu-hz 99 --offcpu 1ms --faults 64 --mem-comm httpd \
		--streams "$KM_STREAMS" >capture.log 2>&1 &
	cap=$!
	# daemon.pid is written once the programs are loaded and attached
	n=0
	while [ ! -e cap/daemon.pid ] && kill -0 "$cap" 2>/dev/null &&
		[ "$n" -lt "$((KM_LOAD_TIMEOUT * 10))" ]; do
		usleep 100000
		n=$((n + 1))
	done
	if [ ! -e cap/daemon.pid ]; then
		if kill -0 "$cap" 2>/dev/null; then
			km "capture-not-running after ${KM_LOAD_TIMEOUT}s: stopping it"
			kill -INT "$cap"
		fi
		wait_pid "$cap" 20
		km "capture-failed rc=$rc"
		echo "----- retrace capture output -----"
		cat capture.log
		km "capture-log-end"
		return
	fi
	km "capture-running after $((n / 10)).$((n % 10))s"

	"$KM_BIN/httpd" -f -p "127.0.0.1:$KM_PORT" -h "$KM_WORK/www" &
	httpd=$!
	usleep 500000
	ok=0
	i=1
	while [ "$i" -le "$KM_REQUESTS" ]; do
		rm -f got
		# no -T: busybox 1.35's wget crashes with it (the VM and host runs have a hard timeout)
		if "$KM_BIN/wget" -q -O got "http://127.0.0.1:$KM_PORT/hello.txt" &&
			cmp -s got www/hello.txt; then
			ok=$((ok + 1))
		fi
		i=$((i + 1))
	done
	km "http-done ok=$ok/$KM_REQUESTS"
	sleep 1
	kill "$httpd" 2>/dev/null
	wait "$httpd" 2>/dev/null

	[ "$KM_MODE" = vm ] && oom_kill

	# the capture ends here (SIGINT: a clean stop, segments sealed) rather than after the whole
	# --duration, which only bounds it should the signal be lost
	kill -INT "$cap" 2>/dev/null
	wait_pid "$cap" 60
	km "capture-end rc=$rc"
	cat capture.log
	km "capture-log-end"

	km "stats-begin"
	"$KM_RETRACE" replay "$KM_WORK/cap" --stats --no-progress 2>&1
	km "stats-end rc=$?"
	km "l7-begin"
	"$KM_RETRACE" replay "$KM_WORK/cap" --no-progress --filter "kind = l7 and port = $KM_PORT" 2>&1
	km "l7-end rc=$?"
	km "oom-begin"
	"$KM_RETRACE" replay "$KM_WORK/cap" --no-progress --filter "kind = oom or (comm = dd and kind = exit)" 2>&1
	km "oom-end rc=$?"
	km "procs-begin"
	"$KM_RETRACE" replay "$KM_WORK/cap" --no-progress -n 200 \
		--filter "(comm = httpd or comm = wget) and kind != l7" 2>&1
	km "procs-end rc=$?"
}

if [ "$KM_MODE" = vm ]; then
	vm_setup
	workload
	km "done"
	vm_poweroff
else
	workload
	km "done"
fi
