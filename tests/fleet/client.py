#!/usr/bin/python3
"""The client node's workload of tests/fleet.rs: CONNS keep-alive connections of REQS requests
each to http://ADDRESS:PORT/items/<n>, a pause of PAUSE seconds between requests.

Usage: client.py ADDRESS PORT CONNS REQS PAUSE. Prints how many requests got which status.
"""
import collections
import http.client
import sys
import time

addr, port, conns, reqs, pause = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), float(sys.argv[5])
statuses = collections.Counter()
n = 0
for c in range(conns):
    conn = http.client.HTTPConnection(addr, port, timeout=5)
    for r in range(reqs):
        conn.request("GET", f"/items/{n}")
        resp = conn.getresponse()
        resp.read()
        statuses[resp.status] += 1
        n += 1
        time.sleep(pause)
    conn.close()
print(" ".join(f"{s}={k}" for s, k in sorted(statuses.items())), flush=True)
