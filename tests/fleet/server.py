#!/usr/bin/python3
"""The server node's service of tests/fleet.rs: an HTTP/1.1 keep-alive server (stdlib only).

Usage: server.py ADDRESS PORT LOG. GET /items/<n> answers a small JSON body. Every request is
logged (the test's ground truth): epoch seconds, client address:port, method, path, status.
"""
import http.server
import json
import sys
import time

ADDR, PORT, LOG = sys.argv[1], int(sys.argv[2]), sys.argv[3]
log = open(LOG, "a", buffering=1)


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True

    def log_message(self, *args):
        pass

    def do_GET(self):
        status = 200 if self.path.startswith("/items/") else 404
        data = json.dumps({"path": self.path, "ok": status == 200}).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)
        host, port = self.client_address[:2]
        log.write(f"{time.time():.6f} {host}:{port} {self.command} {self.path} {status}\n")


if __name__ == "__main__":
    server = http.server.ThreadingHTTPServer((ADDR, PORT), Handler)
    server.daemon_threads = True
    print("listening", flush=True)
    server.serve_forever()
