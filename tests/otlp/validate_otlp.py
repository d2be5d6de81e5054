#!/usr/bin/env python3
"""Validates `retrace export otlp` output independently of retrace's own code.

Usage: validate_otlp.py [--jsonl] TRACES.json SPANS.csv TRACES.csv

With --jsonl, the file is JSON Lines (`retrace export otlp --batch N`): each line a complete
request, validated as above, the lines together as one export.

1. The file is parsed into OpenTelemetry's `ExportTraceServiceRequest` by the generated
   classes of PyPI's `opentelemetry-proto` and protobuf's `json_format.Parse` with
   `ignore_unknown_fields=False` (an unknown or misspelled field, a wrong type, a bad enum
   fails). OTLP/JSON writes trace and span ids as hex where protobuf's canonical JSON has
   base64: they are converted first, after checking they are lower-case hex of the right
   length and not zero.
2. What protobuf accepts but OTLP/JSON or the semantic conventions do not is checked on the
   JSON itself: 64-bit integers as decimal strings, enums as integers, span kinds SERVER or
   CLIENT only, every attribute key known with its type (ports in 1..65535, status codes in
   100..599, confidence in 0..1), no duplicate attribute, one resource per (service.name,
   host.name), scope `retrace`, status ERROR with a message.
3. Against the analysis's own spans.csv and traces.csv (written by `retrace analyze` from the
   same capture): as many spans, the same ids, parents, kinds, services, nodes, names, start
   times (to the nanosecond), durations, links, processes and addresses; errors where the
   analysis saw a failure, or where OpenTelemetry's HTTP rule says so (SERVER 5xx, CLIENT 4xx
   and 5xx); as many traces, each with its span count and root.
4. The trees: every parent exists in the same trace, one root per trace, no cycle, a CLIENT
   span's parent is a SERVER span, a SERVER span linked by its connection has the CLIENT span
   of that same connection (same addresses and ports) as parent, and both ends of every
   request share a trace.

Prints a JSON summary on stdout; exits 1 with the first problems on stderr when any check
fails.
"""

import base64
import calendar
import collections
import csv
import json
import re
import sys
import time

from google.protobuf import json_format
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2
from opentelemetry.proto.trace.v1 import trace_pb2

HEX32 = re.compile(r"[0-9a-f]{32}\Z")
HEX16 = re.compile(r"[0-9a-f]{16}\Z")
DIGITS = re.compile(r"(0|[1-9][0-9]*)\Z")

STRING_ATTRS = {
    "http.request.method",
    "url.path",
    "url.query",
    "http.route",
    "db.system",
    "db.operation.name",
    "db.query.text",
    "dns.question.name",
    "rpc.system",
    "rpc.service",
    "rpc.method",
    "server.address",
    "client.address",
    "network.protocol.name",
    "network.protocol.version",
    "error.type",
    "retrace.link",
}
INT_ATTRS = {
    "http.response.status_code": (100, 599),
    "rpc.grpc.status_code": (0, 16),
    "server.port": (1, 65535),
    "client.port": (1, 65535),
    "process.pid": (1, 2**32 - 1),
    "thread.id": (1, 2**32 - 1),
}
DOUBLE_ATTRS = {"retrace.link.confidence": (0.0, 1.0)}
DB_SYSTEMS = {"postgres": "postgresql", "mysql": "mysql", "redis": "redis", "memcached": "memcached"}
LINKS = {"connection", "thread", "header", "proxy"}
SERVER, CLIENT = 2, 3

problems = []


def fail(msg):
    problems.append(msg)
    if len(problems) > 10000:
        finish({})


def finish(summary):
    if problems:
        sys.stderr.write("%d problem(s); the first ones:\n" % len(problems))
        for p in problems[:40]:
            sys.stderr.write("  " + p + "\n")
        sys.exit(1)
    print(json.dumps(summary, sort_keys=True))
    sys.exit(0)


def wall_ns(text):
    """`2026-11-24T07:51:22.329334108Z` -> ns since the epoch."""
    m = re.match(r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(\d{1,9}))?Z\Z", text)
    if not m:
        raise ValueError("bad time %r" % text)
    secs = calendar.timegm(time.strptime(m.group(1), "%Y-%m-%dT%H:%M:%S"))
    frac = (m.group(2) or "").ljust(9, "0")
    return secs * 10**9 + int(frac or "0")


def split_host_port(a):
    if not a:
        return None
    host, _, port = a.rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    return host, int(port)


def hex_to_b64(h):
    return base64.b64encode(bytes.fromhex(h)).decode("ascii")


def check_attribute_list(where, attrs):
    """Checks an attribute list's JSON shape; returns {key: python value}."""
    out = {}
    if not isinstance(attrs, list):
        fail("%s: attributes is not a list" % where)
        return out
    for a in attrs:
        if not isinstance(a, dict) or set(a) != {"key", "value"}:
            fail("%s: attribute %r is not {key, value}" % (where, a))
            continue
        k, v = a["key"], a["value"]
        if k in out:
            fail("%s: attribute %s twice" % (where, k))
        if not isinstance(v, dict) or len(v) != 1:
            fail("%s: attribute %s: value %r is not one typed value" % (where, k, v))
            continue
        (vt, val), = v.items()
        out[k] = (vt, val)
    return out


def typed_attributes(where, raw, allowed_strings):
    """Checks each attribute's type and range; returns {key: value}."""
    vals = {}
    for k, (vt, val) in raw.items():
        if k in allowed_strings or k in STRING_ATTRS:
            if vt != "stringValue" or not isinstance(val, str):
                fail("%s: %s must be a stringValue, found %s %r" % (where, k, vt, val))
                continue
            vals[k] = val
        elif k in INT_ATTRS:
            # int64 in OTLP/JSON: a decimal string.
            if vt != "intValue" or not isinstance(val, str) or not DIGITS.match(val):
                fail("%s: %s must be an intValue written as a decimal string, found %s %r"
                     % (where, k, vt, val))
                continue
            lo, hi = INT_ATTRS[k]
            if not lo <= int(val) <= hi:
                fail("%s: %s = %s outside %d..%d" % (where, k, val, lo, hi))
            vals[k] = int(val)
        elif k in DOUBLE_ATTRS:
            if vt != "doubleValue" or isinstance(val, bool) or not isinstance(val, (int, float)):
                fail("%s: %s must be a doubleValue number, found %s %r" % (where, k, vt, val))
                continue
            lo, hi = DOUBLE_ATTRS[k]
            if not lo <= val <= hi:
                fail("%s: %s = %r outside %r..%r" % (where, k, val, lo, hi))
            vals[k] = float(val)
        else:
            fail("%s: unknown attribute %s" % (where, k))
    return vals


def main():
    args = sys.argv[1:]
    jsonl = args[:1] == ["--jsonl"]
    if jsonl:
        args = args[1:]
    if len(args) != 3:
        sys.stderr.write(__doc__)
        sys.exit(2)
    traces_json, spans_csv, traces_csv = args
    t0 = time.monotonic()

    # -- 1. JSON shape and ids, then protobuf with the ids converted ---------------------
    with open(traces_json, "rb") as f:
        raw_bytes = f.read()
    try:
        text = raw_bytes.decode("utf-8")
        if jsonl:
            docs = [json.loads(line, parse_constant=bad_constant)
                    for line in text.split("\n") if line]
        else:
            docs = [json.loads(text, parse_constant=bad_constant)]
    except (UnicodeDecodeError, ValueError) as e:
        fail("not JSON (UTF-8): %s" % e)
        finish({})
    for i, d in enumerate(docs):
        if not isinstance(d, dict) or set(d) != {"resourceSpans"}:
            fail("request %d: top level must be exactly {resourceSpans}" % i)
            finish({})
    # The requests' resources in order, each with the request it came in.
    doc = {"resourceSpans": [rs for d in docs for rs in d["resourceSpans"]]}
    request_of = [i for i, d in enumerate(docs) for _ in d["resourceSpans"]]

    spans = []  # (span dict with hex ids, service, host, ids as hex)
    resources_seen = set()
    for ri, rs in enumerate(doc["resourceSpans"]):
        where = "resourceSpans[%d]" % ri
        res = rs.get("resource", {})
        rattrs = typed_attributes(where + ".resource",
                                  check_attribute_list(where, res.get("attributes")),
                                  {"service.name", "host.name"})
        if set(rattrs) - {"service.name", "host.name"}:
            fail("%s: resource attributes beyond service.name, host.name" % where)
        service, host = rattrs.get("service.name"), rattrs.get("host.name", "")
        if not service:
            fail("%s: no service.name" % where)
        # One resource per (service, node) in a request.
        if (request_of[ri], service, host) in resources_seen:
            fail("%s: resource (%s, %s) twice in a request" % (where, service, host))
        resources_seen.add((request_of[ri], service, host))
        scopes = rs.get("scopeSpans", [])
        if len(scopes) != 1 or scopes[0].get("scope", {}).get("name") != "retrace":
            fail("%s: expected one scopeSpans with scope retrace" % where)
        for ss in scopes:
            for si, sp in enumerate(ss.get("spans", [])):
                w = "%s span %d" % (where, si)
                ids = {}
                for key, rx in (("traceId", HEX32), ("spanId", HEX16), ("parentSpanId", HEX16)):
                    if key not in sp:
                        if key != "parentSpanId":
                            fail("%s: no %s" % (w, key))
                        continue
                    v = sp[key]
                    if not isinstance(v, str) or not rx.match(v) or int(v, 16) == 0:
                        fail("%s: %s %r is not non-zero lower-case hex of %d digits"
                             % (w, key, v, 32 if key == "traceId" else 16))
                        continue
                    ids[key] = v
                    # protobuf's canonical JSON: bytes as base64.
                    sp[key] = hex_to_b64(v)
                spans.append((sp, service, host, ids))
    if problems:
        finish({})
    # Parsed a resource and a few thousand spans at a time (the same document, in pieces that
    # are each a valid request), so that memory stays bounded on big exports.
    parsed = 0
    for rs in doc["resourceSpans"]:
        for ss in rs.get("scopeSpans", []):
            all_spans = ss.get("spans", [])
            for lo in range(0, max(len(all_spans), 1), 4000):
                piece = dict(rs)
                piece["scopeSpans"] = [dict(ss, spans=all_spans[lo:lo + 4000])]
                request = trace_service_pb2.ExportTraceServiceRequest()
                try:
                    json_format.Parse(json.dumps({"resourceSpans": [piece]}), request,
                                      ignore_unknown_fields=False)
                except json_format.ParseError as e:
                    fail("protobuf json_format.Parse: %s" % e)
                    finish({})
                request.SerializeToString()
                for pb in request.resource_spans[0].scope_spans[0].spans:
                    _, _, _, ids = spans[parsed]
                    parsed += 1
                    # The ids went through protobuf as bytes of the right length.
                    if pb.trace_id.hex() != ids["traceId"] or pb.span_id.hex() != ids["spanId"] \
                            or pb.parent_span_id.hex() != ids.get("parentSpanId", ""):
                        fail("span %s: ids changed through protobuf" % ids["spanId"])
                    if pb.kind not in (trace_pb2.Span.SPAN_KIND_SERVER,
                                       trace_pb2.Span.SPAN_KIND_CLIENT):
                        fail("span %s: kind %s is neither SERVER nor CLIENT" % (ids["spanId"], pb.kind))
    if parsed != len(spans):
        fail("protobuf holds %d spans, the JSON %d" % (parsed, len(spans)))
    t_parse = time.monotonic() - t0

    # -- 2. per span: what protobuf accepts but OTLP/JSON and the conventions do not ------
    by_id = {}
    for sp, service, host, ids in spans:
        sid = ids["spanId"]
        w = "span %s" % sid
        if sid in by_id:
            fail("%s: span id twice" % w)
        allowed = {"traceId", "spanId", "parentSpanId", "name", "kind", "startTimeUnixNano",
                   "endTimeUnixNano", "attributes", "status"}
        if set(sp) - allowed:
            fail("%s: fields beyond those retrace writes: %s" % (w, sorted(set(sp) - allowed)))
        kind = sp.get("kind")
        if kind not in (SERVER, CLIENT) or isinstance(kind, bool):
            fail("%s: kind %r is not the integer 2 (SERVER) or 3 (CLIENT)" % (w, kind))
        times = []
        for key in ("startTimeUnixNano", "endTimeUnixNano"):
            v = sp.get(key)
            if not isinstance(v, str) or not DIGITS.match(v):
                fail("%s: %s %r is not a decimal string" % (w, key, v))
                times.append(0)
            else:
                times.append(int(v))
        if times[1] < times[0]:
            fail("%s: ends before it starts" % w)
        if times[0] < 1_000_000_000 * 10**9:
            fail("%s: start %d is not a wall-clock time" % (w, times[0]))
        if not isinstance(sp.get("name"), str) or not sp["name"]:
            fail("%s: no name" % w)
        attrs = typed_attributes(w, check_attribute_list(w, sp.get("attributes")), set())
        status = sp.get("status")
        if status is not None:
            if set(status) != {"code", "message"} or status["code"] != 2 \
                    or not isinstance(status["message"], str) or not status["message"]:
                fail("%s: status %r is not {code: 2 (ERROR), message}" % (w, status))
        if "http.route" in attrs and kind != SERVER:
            fail("%s: http.route on a CLIENT span" % w)
        if ("retrace.link" in attrs) != ("parentSpanId" in ids):
            fail("%s: retrace.link present exactly when the span has a parent" % w)
        if "retrace.link" in attrs and attrs["retrace.link"] not in LINKS:
            fail("%s: retrace.link %r" % (w, attrs["retrace.link"]))
        if ("retrace.link" in attrs) != ("retrace.link.confidence" in attrs):
            fail("%s: retrace.link and its confidence go together" % w)
        if "db.system" in attrs and attrs["db.system"] not in DB_SYSTEMS.values():
            fail("%s: db.system %r" % (w, attrs["db.system"]))
        by_id[sid] = {
            "trace": ids["traceId"], "parent": ids.get("parentSpanId", ""), "kind": kind,
            "service": service, "host": host, "name": sp.get("name"), "start": times[0],
            "end": times[1], "attrs": attrs, "error": status is not None,
        }

    # -- 3. against spans.csv and traces.csv ---------------------------------------------
    with open(spans_csv, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    if len(rows) != len(by_id):
        fail("%d spans in the export, %d lines in spans.csv" % (len(by_id), len(rows)))
    by_request = collections.defaultdict(dict)
    for r in rows:
        sid = r["span_id"]
        s = by_id.get(sid)
        w = "span %s (spans.csv request %s)" % (sid, r["request_index"])
        if s is None:
            fail("%s: in spans.csv, not in the export" % w)
            continue
        by_request[r["request_index"]][r["kind"]] = sid
        want_kind = {"server": SERVER, "client": CLIENT}.get(r["kind"])
        checks = [
            ("traceId", s["trace"], r["trace_id"]),
            ("parentSpanId", s["parent"], r["parent_span_id"]),
            ("kind", s["kind"], want_kind),
            ("service.name", s["service"], r["service"] or "unknown_service"),
            ("host.name", s["host"], r["node"]),
            ("name", s["name"], r["name"]),
            ("start", s["start"], wall_ns(r["start"])),
            ("retrace.link", s["attrs"].get("retrace.link", ""), r["link"]),
            ("process.pid", s["attrs"].get("process.pid", 0), int(r["pid"])),
            ("thread.id", s["attrs"].get("thread.id", 0), int(r["tid"])),
        ]
        for what, got, want in checks:
            if got != want:
                fail("%s: %s %r, spans.csv has %r" % (w, what, got, want))
        dur = s["end"] - s["start"]
        if r["duration_ms"] == "":
            if dur != 0:
                fail("%s: no duration in spans.csv, %d ns in the export" % (w, dur))
        elif abs(dur - float(r["duration_ms"]) * 1e6) > 1000:
            fail("%s: duration %d ns, spans.csv %s ms" % (w, dur, r["duration_ms"]))
        if r["confidence"] and abs(s["attrs"].get("retrace.link.confidence", -1)
                                   - float(r["confidence"])) > 0.006:
            fail("%s: confidence %r, spans.csv %s" % (w, s["attrs"].get("retrace.link.confidence"),
                                                      r["confidence"]))
        for side in ("server", "client"):
            hp = split_host_port(r[side + "_address"])
            got = (s["attrs"].get(side + ".address"), s["attrs"].get(side + ".port"))
            if hp is not None and got != hp:
                fail("%s: %s address %r, spans.csv %r" % (w, side, got, r[side + "_address"]))
        # Status: the analysis's failures, plus OpenTelemetry's HTTP rule.
        code = r["status"]
        http_err = False
        if r["protocol"] in ("http", "http2") and code.isdigit() and 100 <= int(code) <= 599:
            http_err = int(code) >= (500 if r["kind"] == "server" else 400)
            if s["attrs"].get("http.response.status_code") != int(code):
                fail("%s: http.response.status_code %r, status %s"
                     % (w, s["attrs"].get("http.response.status_code"), code))
        if s["error"] != (r["error"] == "1" or http_err):
            fail("%s: status ERROR %s, spans.csv error=%s status=%s"
                 % (w, s["error"], r["error"], code))
        if s["error"] and "error.type" not in s["attrs"]:
            fail("%s: an error without error.type" % w)
        if r["protocol"] in DB_SYSTEMS:
            if s["attrs"].get("db.system") != DB_SYSTEMS[r["protocol"]]:
                fail("%s: db.system %r for %s" % (w, s["attrs"].get("db.system"), r["protocol"]))
            if r["protocol"] in ("postgres", "mysql") and r["target"] and \
                    s["attrs"].get("db.query.text") != r["target"]:
                fail("%s: db.query.text is not the statement" % w)
        if r["protocol"] in ("http", "http2", "grpc") and r["target"]:
            path, q, query = r["target"].partition("?")
            if s["attrs"].get("url.path") != path or s["attrs"].get("url.query") != (query if q else None):
                fail("%s: url.path/url.query do not make the target %r" % (w, r["target"]))

    with open(traces_csv, newline="", encoding="utf-8") as f:
        trace_rows = list(csv.DictReader(f))

    # -- 4. the trees --------------------------------------------------------------------
    per_trace = collections.defaultdict(list)
    for sid, s in by_id.items():
        per_trace[s["trace"]].append(sid)
        if s["parent"]:
            p = by_id.get(s["parent"])
            if p is None:
                fail("span %s: parent %s is not in the export" % (sid, s["parent"]))
                continue
            if p["trace"] != s["trace"]:
                fail("span %s: parent %s is in another trace" % (sid, s["parent"]))
            if s["kind"] == CLIENT and p["kind"] != SERVER:
                fail("span %s: a CLIENT span whose parent is not a SERVER span" % sid)
            if s["attrs"].get("retrace.link") == "connection":
                ends = lambda x: tuple(x["attrs"].get(k) for k in
                                       ("server.address", "server.port", "client.address", "client.port"))
                if s["kind"] != SERVER or p["kind"] != CLIENT or ends(s) != ends(p):
                    fail("span %s: linked by its connection to %s, which is not the CLIENT "
                         "span of the same connection" % (sid, s["parent"]))
    if len(per_trace) != len(trace_rows):
        fail("%d traces in the export, %d lines in traces.csv" % (len(per_trace), len(trace_rows)))
    for t in trace_rows:
        members = per_trace.get(t["trace_id"], [])
        roots = [sid for sid in members if not by_id[sid]["parent"]]
        if len(members) != int(t["spans"]):
            fail("trace %s: %d spans, traces.csv %s" % (t["trace_id"], len(members), t["spans"]))
        if len(roots) != 1:
            fail("trace %s: %d roots" % (t["trace_id"], len(roots)))
            continue
        root = by_id[roots[0]]
        if (root["service"], root["name"]) != (t["root_service"] or "unknown_service", t["root_name"]):
            fail("trace %s: root %s %r, traces.csv %s %r" % (t["trace_id"], root["service"],
                                                            root["name"], t["root_service"], t["root_name"]))
    depth = {}
    for sid in by_id:
        path, on_path, cur = [], set(), sid
        while cur and cur not in depth:
            if cur in on_path:
                fail("span %s: its parents make a cycle" % sid)
                cur = ""
                break
            path.append(cur)
            on_path.add(cur)
            cur = by_id[cur]["parent"] if cur in by_id else ""
        d = depth.get(cur, 0)
        for x in reversed(path):
            d += 1
            depth[x] = d
    pairs = 0
    for req, ends in by_request.items():
        if "client" in ends and "server" in ends:
            pairs += 1
            c, s = by_id[ends["client"]], by_id[ends["server"]]
            if c["trace"] != s["trace"]:
                fail("request %s: its CLIENT and SERVER spans are in different traces" % req)
            if s["parent"] != ends["client"]:
                fail("request %s: its SERVER span's parent is not its CLIENT span" % req)

    kinds = collections.Counter(s["kind"] for s in by_id.values())
    finish({
        "spans": len(by_id),
        "traces": len(per_trace),
        "resources": len({(s, h) for _, s, h in resources_seen}),
        "requests": len(docs),
        "server_spans": kinds[SERVER],
        "client_spans": kinds[CLIENT],
        "errors": sum(1 for s in by_id.values() if s["error"]),
        "with_parent": sum(1 for s in by_id.values() if s["parent"]),
        "request_pairs": pairs,
        "max_depth": max(depth.values(), default=0),
        "seconds": round(time.monotonic() - t0, 2),
        "parse_seconds": round(t_parse, 2),
    })


def bad_constant(c):
    raise ValueError("%s is not JSON" % c)


if __name__ == "__main__":
    main()
