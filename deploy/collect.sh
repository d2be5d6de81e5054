#!/usr/bin/env bash
# Collects the segments of one time window from every node's capture into OUT/<node>/, ready
# for `retrace analyze OUT/* --from FROM --to TO` (which cuts the window exactly and merges
# the nodes, correcting their clock offsets). See docs/deploy.md.
#
#   deploy/collect.sh --from 2026-12-06T12:00:00Z --to 2026-12-06T12:15:00Z --out incident \
#       --kubectl [-n retrace] [-l app.kubernetes.io/name=retrace]
#   deploy/collect.sh --from ... --to ... --out incident --ssh web-1,web-2,db-1
#   deploy/collect.sh --from ... --to ... --out incident --local node-a=/var/lib/retrace/capture
#
# Which segments: a capture directory's segments are written one after the other, so segment k
# holds the events from about when segment k-1 was last written (its mtime) to its own mtime.
# Segment k is copied when its mtime >= FROM - MARGIN and the previous one's mtime <= TO +
# MARGIN (the margin, default 300 s, covers clocks that disagree: the mtimes are the nodes'
# own). The segment being written is copied as it is: replay reads it up to its last whole
# block. manifest.json is not copied (it lists every segment of the ring): replay reads the
# segments it finds. In ring mode, `retrace mark` on every node first keeps the window's
# segments from being deleted while they are copied.
set -euo pipefail

usage() {
  sed -n '2,9p' "$0" | sed 's/^# \{0,1\}//'
  exit 2
}

from="" to="" out="" mode="" dir="/var/lib/retrace/capture" margin=300
namespace="retrace" selector="app.kubernetes.io/name=retrace" hosts="" locals=""
while [ $# -gt 0 ]; do
  case "$1" in
    --from) from="$2"; shift 2 ;;
    --to) to="$2"; shift 2 ;;
    --out) out="$2"; shift 2 ;;
    --dir) dir="$2"; shift 2 ;;
    --margin) margin="$2"; shift 2 ;;
    --kubectl) mode="kubectl"; shift ;;
    -n|--namespace) namespace="$2"; shift 2 ;;
    -l|--selector) selector="$2"; shift 2 ;;
    --ssh) mode="ssh"; hosts="$2"; shift 2 ;;
    --local) mode="local"; locals="$2"; shift 2 ;;
    -h|--help) usage ;;
    *) echo "collect.sh: unknown argument '$1'" >&2; usage ;;
  esac
done
[ -n "$from" ] && [ -n "$to" ] && [ -n "$out" ] && [ -n "$mode" ] || usage
case "$margin" in ''|*[!0-9]*) echo "collect.sh: --margin '$margin': expected whole seconds" >&2; exit 2 ;; esac
from_s=$(date -u -d "$from" +%s 2>/dev/null) || { echo "collect.sh: --from '$from': expected a time (RFC 3339)" >&2; exit 2; }
to_s=$(date -u -d "$to" +%s 2>/dev/null) || { echo "collect.sh: --to '$to': expected a time (RFC 3339)" >&2; exit 2; }
[ "$from_s" -le "$to_s" ] || { echo "collect.sh: --from is after --to" >&2; exit 2; }
lo=$((from_s - margin)) hi=$((to_s + margin))

# `mtime path` lines of a node's segments -> the paths to copy (stdin -> stdout).
select_segments() {
  sort -k2 | awk -v lo="$lo" -v hi="$hi" '
    { if ($1 >= lo && (NR == 1 || prev <= hi)) print $2; prev = $1 }'
}

# The listing command run on a node (names of segments have no spaces: STAMP-SEQ.rseg).
list_cmd="for f in '$dir'/*.rseg; do [ -e \"\$f\" ] && stat -c '%Y %n' \"\$f\"; done; true"

# collect NODE LISTER COPIER: LISTER runs the listing, COPIER SRC DST copies one file.
collect() {
  local node="$1" lister="$2" copier="$3" n=0
  local dest="$out/$node"
  mkdir -p "$dest"
  while read -r seg; do
    [ -n "$seg" ] || continue
    "$copier" "$seg" "$dest/$(basename "$seg")"
    n=$((n + 1))
  done < <("$lister" | select_segments)
  echo "collect.sh: $node: $n segment(s) -> $dest" >&2
  [ "$n" -gt 0 ] || rmdir "$dest" 2>/dev/null || true
}

mkdir -p "$out"
case "$mode" in
  kubectl)
    while read -r pod node; do
      [ -n "$pod" ] || continue
      k_list() { kubectl -n "$namespace" exec "$pod" -- sh -c "$list_cmd"; }
      k_copy() { kubectl -n "$namespace" cp --retries=3 "$pod:$1" "$2" >/dev/null; }
      collect "$node" k_list k_copy
    done < <(kubectl -n "$namespace" get pods -l "$selector" \
               -o jsonpath='{range .items[*]}{.metadata.name} {.spec.nodeName}{"\n"}{end}')
    ;;
  ssh)
    IFS=',' read -r -a host_list <<< "$hosts"
    for host in "${host_list[@]}"; do
      s_list() { ssh -o BatchMode=yes "$host" "$list_cmd"; }
      s_copy() { scp -q -o BatchMode=yes "$host:$1" "$2"; }
      collect "$host" s_list s_copy
    done
    ;;
  local)
    IFS=',' read -r -a local_list <<< "$locals"
    for spec in "${local_list[@]}"; do
      node="${spec%%=*}" dir="${spec#*=}"
      [ "$node" != "$spec" ] || { echo "collect.sh: --local '$spec': expected NODE=DIR" >&2; exit 2; }
      list_cmd="for f in '$dir'/*.rseg; do [ -e \"\$f\" ] && stat -c '%Y %n' \"\$f\"; done; true"
      l_list() { sh -c "$list_cmd"; }
      l_copy() { cp -p "$1" "$2"; }
      collect "$node" l_list l_copy
    done
    ;;
esac

echo "collect.sh: analyze them together with:" >&2
echo "  retrace analyze $out/* --from $from --to $to --out $out-report" >&2
