#!/usr/bin/env python3
"""Writes the fuzz targets' seed corpora (fuzz/seeds/<target>/) from real bytes.

L7 targets: the first messages of connections in the committed scenario captures (HTTP/1,
PostgreSQL, Redis as nginx, the Python services, psql/psycopg2 and redis-py wrote them), read
with `retrace replay -o jsonl`, in the framing of fuzz/src/lib.rs (a role byte, then per
message a flags byte, a 16-bit little-endian length and the payload). Protocols the scenarios
do not speak (MySQL, Memcached, DNS, HTTP/2) get a few messages written from their specs.
Configuration targets: the committed YAML files. Filter: the examples of the documentation.

Usage: scripts/fuzz-seeds.py [path/to/retrace]   (default target/debug/retrace)
Deterministic: the same captures give the same files (named by content hash).
"""
import glob
import hashlib
import json
import os
import struct
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SEEDS = os.path.join(ROOT, "fuzz", "seeds")
PER_TARGET = 24
MESSAGES = 12


def frame(server_side, msgs):
    out = bytearray([1 if server_side else 0])
    for egress, payload in msgs:
        payload = payload[:0xFFFF]
        out += bytes([1 if egress else 0]) + struct.pack("<H", len(payload)) + payload
    return bytes(out)


def write(target, data):
    d = os.path.join(SEEDS, target)
    os.makedirs(d, exist_ok=True)
    name = hashlib.sha1(data).hexdigest()[:16]
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


def classify(first):
    if first.startswith(b"PRI * HTTP/2.0"):
        return "l7_http2"
    if first.split(b" ", 1)[0] in (b"GET", b"POST", b"PUT", b"DELETE", b"HEAD", b"HTTP/1.1", b"HTTP/1.0"):
        return "l7_http1"
    if first[:1] == b"*" or first[:1] in (b"+", b"$", b":", b"-"):
        return "l7_redis"
    if len(first) >= 8 and first[4:8] in (b"\x00\x03\x00\x00", b"\x04\xd2\x16\x2f"):
        return "l7_postgres"
    if first[:1] in (b"Q", b"P", b"R", b"E", b"Z", b"S", b"N"):
        return "l7_postgres"
    return None


def from_captures(retrace):
    conns = {}
    order = []
    for cap in sorted(glob.glob(os.path.join(ROOT, "scenarios", "*", "capture"))):
        out = subprocess.run(
            [retrace, "replay", cap, "-o", "jsonl", "--no-progress", "-f", "kind = l7"],
            check=True, capture_output=True,
        ).stdout
        for line in out.splitlines():
            e = json.loads(line)
            b = e["body"]
            c = b["conn"]
            key = (cap, e.get("node"), c["pid"], c["fd"], c["start_ns"])
            if key not in conns:
                conns[key] = []
                order.append(key)
            if len(conns[key]) < MESSAGES:
                conns[key].append((b["direction"] == "egress", bytes(b["payload"])))
    picked = {}
    seen = set()
    for key in order:
        msgs = conns[key]
        if not msgs:
            continue
        target = classify(msgs[0][1])
        if target is None:
            continue
        # Which side: the first message of a client side is its own request (egress).
        server_side = not msgs[0][0]
        # One seed per distinct first line and side, to vary what the corpus starts from.
        sig = (target, server_side, msgs[0][1].split(b"\r\n", 1)[0][:40], len(msgs))
        if sig in seen or len(picked.get(target, [])) >= PER_TARGET:
            continue
        seen.add(sig)
        picked.setdefault(target, []).append(frame(server_side, msgs))
    for target, seeds in picked.items():
        for s in seeds:
            write(target, s)
            write("l7_detect", s)
    return {t: len(s) for t, s in picked.items()}


def dns_query(qid, name, qtype=1):
    q = struct.pack(">HHHHHH", qid, 0x0100, 1, 0, 0, 0)
    for label in name.split("."):
        q += bytes([len(label)]) + label.encode()
    return q + b"\x00" + struct.pack(">HH", qtype, 1)


def dns_answer(qid, name, rcode=0):
    q = dns_query(qid, name)
    hdr = struct.pack(">HHHHHH", qid, 0x8180 | rcode, 1, 0 if rcode else 1, 0, 0)
    body = q[12:]
    if not rcode:
        body += b"\xc0\x0c" + struct.pack(">HHIH", 1, 1, 300, 4) + bytes([10, 0, 0, 7])
    return hdr + body


def tcp(m):
    return struct.pack(">H", len(m)) + m


def from_specs():
    def mysql(seq, payload):
        return struct.pack("<I", len(payload))[:3] + bytes([seq]) + payload

    greeting = mysql(0, b"\x0a8.0.36\x00" + b"\x08\x00\x00\x00" + b"abcdefgh\x00" + b"\xff\xf7\x21\x02\x00\xff\x81\x15" + b"\x00" * 10 + b"ijklmnopqrst\x00mysql_native_password\x00")
    write("l7_mysql", frame(False, [
        (False, greeting),
        (True, mysql(1, b"\x85\xa6\xff\x01\x00\x00\x00\x01\x21" + b"\x00" * 23 + b"app\x00\x14" + b"x" * 20 + b"shop\x00")),
        (False, mysql(2, b"\x00\x00\x00\x02\x00\x00\x00")),
        (True, mysql(0, b"\x03SELECT id, name FROM users WHERE id = 42")),
        (False, mysql(1, b"\x02") + mysql(2, b"\x03def\x04shop\x05users\x05users\x02id\x02id\x0c\x3f\x00\x0b\x00\x00\x00\x03\x03\x42\x00\x00\x00")),
        (True, mysql(0, b"\x16SELECT * FROM t WHERE a = ?")),
        (False, mysql(1, b"\x00\x01\x00\x00\x00\x01\x00\x01\x00\x00\x00\x00")),
        (True, mysql(0, b"\x17\x01\x00\x00\x00\x00\x01\x00\x00\x00\x00\x01\x03\x00\x07\x00\x00\x00")),
        (False, mysql(1, b"\xff\x26\x04#23000Duplicate entry '7' for key 'PRIMARY'")),
        (True, mysql(0, b"\x01")),
    ]))
    write("l7_memcached", frame(False, [
        (True, b"set user:42 0 300 5\r\nhello\r\n"), (False, b"STORED\r\n"),
        (True, b"get user:42 user:43\r\n"), (False, b"VALUE user:42 0 5\r\nhello\r\nEND\r\n"),
        (True, b"mg user:44 v\r\n"), (False, b"EN\r\n"),
        (True, b"incr hits 1\r\n"), (False, b"NOT_FOUND\r\n"),
        (True, b"delete user:42\r\n"), (False, b"SERVER_ERROR out of memory\r\n"),
    ]))
    write("l7_dns", frame(False, [
        (True, tcp(dns_query(0x1234, "users.svc.cluster.local"))),
        (False, tcp(dns_answer(0x1234, "users.svc.cluster.local"))),
        (True, tcp(dns_query(0x1235, "nope.example", 28)) + tcp(dns_query(0x1236, "api.example"))),
        (False, tcp(dns_answer(0x1235, "nope.example", 3))),
        (False, tcp(dns_answer(0x1236, "api.example", 2))),
    ]))
    write("l7_dns", dns_query(0x4242, "www.example.com"))
    write("l7_dns", dns_answer(0x4242, "www.example.com"))
    # HTTP/2: preface, SETTINGS, a HEADERS frame (HPACK: :method GET, :path /, :scheme http,
    # a literal :authority), then the server's SETTINGS and a HEADERS :status 200.
    settings = b"\x00\x00\x00\x04\x00\x00\x00\x00\x00"
    hdr_block = b"\x82\x84\x86\x41\x09localhost"
    headers = struct.pack(">I", len(hdr_block))[1:] + b"\x01\x05\x00\x00\x00\x01" + hdr_block
    grpc_block = b"\x83\x86\x44\x16/helloworld.Greeter/Hi\x5f\x10application/grpc"
    grpc = struct.pack(">I", len(grpc_block))[1:] + b"\x01\x04\x00\x00\x00\x03" + grpc_block
    data = b"\x00\x00\x05\x00\x01\x00\x00\x00\x03\x00\x00\x00\x00\x00"
    resp = b"\x00\x00\x01\x01\x05\x00\x00\x00\x01\x88"
    trailers = b"\x00\x00\x0e\x01\x05\x00\x00\x00\x03\x40\x0bgrpc-status\x010"
    write("l7_http2", frame(False, [
        (True, b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + settings + headers),
        (False, settings + resp),
        (True, grpc + data),
        (False, resp.replace(b"\x00\x00\x00\x01\x88", b"\x00\x00\x00\x03\x88") + trailers),
    ]))


def configs():
    which = {"services": 0, "slo": 1, "alerts": 2, "findings": 3}
    for path in sorted(glob.glob(os.path.join(ROOT, "**", "*.yaml"), recursive=True)):
        rel = os.path.relpath(path, ROOT)
        if rel.startswith(("target", "fuzz")):
            continue
        text = open(path, "rb").read()
        kinds = [k for k in which if k in os.path.basename(path)] or list(which)
        for k in kinds:
            write("config_yaml", bytes([which[k]]) + text)


def filters():
    for expr in [
        "kind = l7 and port = 5432 and not comm = psql",
        'comm = nginx and payload contains "POST /login"',
        "addr 10.0.0.0/8 and not kind = tcp_sample",
        "port 80 or (rport in (443, 8443) && direction = egress)",
        "exe endswith '/python3' and size >= 512 and errno != 0",
        'payload startswith "\\x16\\x03" || laddr = ::ffff:127.0.0.1',
        "not (pid = 1 or ppid = 1) and cgroup contains 'kubepods'",
    ]:
        write("filter", expr.encode())


def elf_seeds():
    """A tiny static x86-64 executable (symbols, build id, .eh_frame) compiled here."""
    import tempfile
    src = "int leaf(int x) { return x * 3; }\nint mid(int x) { return leaf(x) + 1; }\n" \
          "void _start(void) { for (;;) mid(1); }\n"
    with tempfile.TemporaryDirectory() as d:
        c, out = os.path.join(d, "t.c"), os.path.join(d, "t")
        open(c, "w").write(src)
        for flags in (["-fcf-protection=full"], ["-fcf-protection=none"]):
            subprocess.run(["cc", "-Os", "-static", "-nostdlib", "-fasynchronous-unwind-tables",
                            "-Wl,--build-id", *flags, "-o", out, c], check=True)
            write("elf_binary", open(out, "rb").read())


def main():
    retrace = sys.argv[1] if len(sys.argv) > 1 else os.path.join(ROOT, "target", "debug", "retrace")
    counts = from_captures(retrace)
    from_specs()
    configs()
    filters()
    elf_seeds()
    for t in sorted(os.listdir(SEEDS)):
        print(f"{t}: {len(os.listdir(os.path.join(SEEDS, t)))} seeds", file=sys.stderr)
    print(f"from the captures: {counts}", file=sys.stderr)


if __name__ == "__main__":
    main()
