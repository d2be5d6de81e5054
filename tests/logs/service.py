#!/usr/bin/python3
"""A small HTTP service with known log lines (tests/logs_e2e.rs).

GET /item/<n> logs, through Python's logging module on stderr
(`%(asctime)s %(levelname)s %(name)s: %(message)s`):
  - INFO `served item <n> for user u<n % 7>` for every request that succeeds;
  - WARNING `slow lookup for item <n> took <100 + n> ms` when n % 10 == 5 (before answering);
  - ERROR `failed to load item <n>` with the traceback of a ValueError when n is in ERRORS
    (a burst near the end, a rise over a quiet start), and answers 500; for n in DEEP the traceback is 12 frames deeper (longer than the
    capture's 512-byte prefix).
http.server's own access line follows each request (written by the handler, no level).
Every record is one write(2) (stderr is line-buffered), so the stderr file is the truth the
test compares the analysis with.
"""
import http.server
import logging
import sys

PORT = int(sys.argv[1])
ERRORS = {30, 31, 32, 33, 34}
DEEP = {31, 33}

logging.basicConfig(
    stream=sys.stderr,
    level=logging.INFO,
    format="%(asctime)s %(levelname)s %(name)s: %(message)s",
)
log = logging.getLogger("shop")


def load(n, depth):
    if depth:
        return load(n, depth - 1)
    raise ValueError(f"item {n} is broken")


class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        n = int(self.path.rsplit("/", 1)[1])
        status = 200
        if n % 10 == 5:
            log.warning("slow lookup for item %d took %d ms", n, 100 + n)
        if n in ERRORS:
            try:
                load(n, 12 if n in DEEP else 0)
            except ValueError:
                log.exception("failed to load item %d", n)
                status = 500
        else:
            log.info("served item %d for user u%d", n, n % 7)
        body = b"ok\n" if status == 200 else b"error\n"
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


http.server.HTTPServer(("127.0.0.1", PORT), Handler).serve_forever()
