#!/bin/sh
# Regenerates the committed vmlinux.h for this machine's architecture from the running
# kernel's BTF. Run by hand when a newer kernel type is needed; the build never runs it.
# CO-RE relocates field offsets at load time, so one header serves many kernels.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
arch=$(uname -m)
btf=${BTF:-/sys/kernel/btf/vmlinux}
[ -r "$btf" ] || { echo "no BTF at $btf (set BTF=path)" >&2; exit 1; }
command -v bpftool >/dev/null || { echo "bpftool not found (apt-get install bpftool)" >&2; exit 1; }
mkdir -p "$here/include/$arch"
bpftool btf dump file "$btf" format c > "$here/include/$arch/vmlinux.h.tmp"
mv "$here/include/$arch/vmlinux.h.tmp" "$here/include/$arch/vmlinux.h"
echo "wrote include/$arch/vmlinux.h ($(wc -c < "$here/include/$arch/vmlinux.h") bytes) from $btf ($(uname -r))"
