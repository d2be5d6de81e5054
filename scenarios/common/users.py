#!/usr/bin/python3
"""users: a small HTTP service of the checkout scenarios (stdlib only).

GET /users/<id> answers the user as JSON (404 above 10000), GET /health answers 200.
Every request is logged on stdout: epoch seconds, method, path, status, milliseconds.
"""
import http.server
import json
import os
import re
import sys
import time

PORT = int(os.environ.get("PORT", "28082"))
USER_PATH = re.compile(r"^/users/(\d+)$")


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # Headers and body go out in two writes: without TCP_NODELAY, Nagle plus the peer's
    # delayed ACK adds 40 ms to every keep-alive response.
    disable_nagle_algorithm = True

    def log_message(self, *args):
        pass

    def reply(self, status, body, started):
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)
        ms = (time.monotonic() - started) * 1000
        sys.stdout.write(f"{time.time():.6f} {self.command} {self.path} {status} {ms:.3f}\n")
        sys.stdout.flush()

    def do_GET(self):
        started = time.monotonic()
        if self.path == "/health":
            return self.reply(200, {"ok": True}, started)
        m = USER_PATH.match(self.path)
        if not m:
            return self.reply(404, {"error": "not found"}, started)
        uid = int(m.group(1))
        if uid > 10000:
            return self.reply(404, {"error": "no such user"}, started)
        return self.reply(200, {"id": uid, "name": f"user {uid}", "tier": ("gold", "silver", "bronze")[uid % 3]}, started)


if __name__ == "__main__":
    server = http.server.ThreadingHTTPServer(("127.0.0.1", PORT), Handler)
    server.daemon_threads = True
    server.serve_forever()
