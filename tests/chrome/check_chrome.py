#!/usr/bin/env python3
"""Checks a `retrace export chrome` trace with Python's own JSON parser, against the
spans.csv `retrace analyze` wrote for the same capture and window.

    check_chrome.py TRACE.json SPANS.csv

- the document: `traceEvents` a list; every event's phase one of M, X, s, f (B/E pairs would
  have to balance: there are none), with integer pid and tid and a numeric ts;
- one complete event (X) per line of spans.csv, found by span id: the same name, protocol,
  pid, tid, status, peer, kind, target and trace id, `ts` the span's start relative to
  `otherData.origin`, `dur` its duration (0 without a response), to the CSVs' rounding;
- every X on a process and thread named by metadata events;
- flows: each id has exactly one `s` and one `f` (`bp: e`), as many as the spans of
  spans.csv whose parent is in the file, each `s` inside a slice of its thread and each `f` at
  the start of a slice of its thread.

Prints a JSON summary on success; exits 1 with the first mismatch otherwise.
"""

import calendar
import csv
import json
import sys
import time


class Mismatch(Exception):
    pass


def check(cond, msg):
    if not cond:
        raise Mismatch(msg)


def wall_ns(s):
    """`2026-12-06T10:22:35.766838935Z` -> ns since the epoch."""
    whole, frac = s.rstrip("Z").split(".")
    secs = calendar.timegm(time.strptime(whole, "%Y-%m-%dT%H:%M:%S"))
    return secs * 1_000_000_000 + int(frac.ljust(9, "0"))


def main():
    trace_path, spans_path = sys.argv[1:3]
    with open(trace_path, encoding="utf-8") as f:
        doc = json.load(f)
    check(isinstance(doc, dict) and isinstance(doc.get("traceEvents"), list), "no traceEvents list")
    origin = wall_ns(doc["otherData"]["origin"])
    events = doc["traceEvents"]
    with open(spans_path, newline="", encoding="utf-8") as f:
        spans = {r["span_id"]: r for r in csv.DictReader(f)}

    named_pids, named_threads = set(), set()
    slices = {}
    flows = {}
    for e in events:
        ph = e.get("ph")
        check(ph in ("M", "X", "s", "f"), f"unexpected phase {ph!r}: {e}")
        check(isinstance(e.get("pid"), int), f"pid not an integer: {e}")
        if ph == "M":
            check(e["name"] in ("process_name", "thread_name"), f"metadata {e}")
            check(isinstance(e["args"]["name"], str) and e["args"]["name"], f"unnamed {e}")
            if e["name"] == "process_name":
                named_pids.add(e["pid"])
            else:
                named_threads.add((e["pid"], e["tid"]))
            continue
        check(isinstance(e.get("tid"), int), f"tid not an integer: {e}")
        check(isinstance(e.get("ts"), (int, float)), f"ts not a number: {e}")
        if ph == "X":
            check(isinstance(e.get("dur"), (int, float)) and e["dur"] >= 0, f"X without dur: {e}")
            a = e["args"]
            sid = a["span_id"]
            check(sid not in slices, f"span {sid} twice")
            slices[sid] = e
            r = spans.get(sid)
            check(r is not None, f"span {sid} is not in spans.csv")
            want = {
                "name": r["name"], "cat": r["protocol"], "pid": int(r["pid"]), "tid": int(r["tid"]),
            }
            got = {k: e[k] for k in want}
            if len({x["node"] for x in spans.values()}) > 1:
                got["pid"] = e["pid"] % 10_000_000
            check(got == want, f"span {sid}: {got} against spans.csv {want}")
            for k, col in (("status", "status"), ("peer", "peer"), ("kind", "kind"),
                           ("target", "target"), ("trace_id", "trace_id")):
                check(a[k] == r[col], f"span {sid}: {k} {a[k]!r}, spans.csv {r[col]!r}")
            check(a.get("error", False) == (r["error"] == "1"), f"span {sid}: error")
            start_us = (wall_ns(r["start"]) - origin) / 1000
            check(abs(e["ts"] - start_us) < 0.0015, f"span {sid}: ts {e['ts']}, spans.csv {start_us}")
            if r["duration_ms"] == "":
                check(e["dur"] == 0 and a.get("no_response") is True, f"span {sid}: no response")
            else:
                check(abs(e["dur"] / 1000 - float(r["duration_ms"])) <= 0.0005 + 1e-9,
                      f"span {sid}: dur {e['dur']} us, spans.csv {r['duration_ms']} ms")
        else:
            check(e.get("cat") == "link" and isinstance(e.get("id"), int), f"flow {e}")
            flows.setdefault(e["id"], []).append(e)

    check(len(slices) == len(spans), f"{len(slices)} spans, spans.csv {len(spans)}")
    for e in slices.values():
        check(e["pid"] in named_pids, f"pid {e['pid']} unnamed")
        check((e["pid"], e["tid"]) in named_threads, f"thread {e['pid']}/{e['tid']} unnamed")

    by_thread = {}
    for e in slices.values():
        by_thread.setdefault((e["pid"], e["tid"]), []).append((e["ts"], e["ts"] + e["dur"]))
    eps = 0.0015

    def inside(ev, at_start=False):
        for s, t in by_thread.get((ev["pid"], ev["tid"]), []):
            if at_start and abs(ev["ts"] - s) < eps:
                return True
            if not at_start and s - eps <= ev["ts"] <= t + eps:
                return True
        return False

    for fid, pair in flows.items():
        phases = sorted(p["ph"] for p in pair)
        check(phases == ["f", "s"], f"flow {fid}: phases {phases}")
        s = next(p for p in pair if p["ph"] == "s")
        f = next(p for p in pair if p["ph"] == "f")
        check(f.get("bp") == "e", f"flow {fid}: the end is not bound to its slice")
        check(inside(s), f"flow {fid}: start {s} in no slice of its thread")
        check(inside(f, at_start=True), f"flow {fid}: end {f} at the start of no slice")
    linked = sum(1 for r in spans.values() if r["parent_span_id"] in spans)
    check(len(flows) == linked, f"{len(flows)} flows, spans.csv has {linked} spans whose parent is in it")
    print(json.dumps({"spans": len(slices), "flows": len(flows), "processes": len(named_pids),
                      "threads": len(named_threads)}, sort_keys=True))


if __name__ == "__main__":
    try:
        main()
    except Mismatch as e:
        print(f"MISMATCH: {e}", file=sys.stderr)
        sys.exit(1)
