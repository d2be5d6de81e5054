#!/usr/bin/python3
"""api: the checkout scenarios' backend (stdlib + Debian's python3-psycopg2 and python3-redis).

GET /checkout/<id>: the user from the users service (HTTP), the cart from Redis (cached for a
few seconds), a product price from PostgreSQL and an order inserted there.
GET /products/<id>: PostgreSQL only.  GET /health: 200.
POST /admin/delay?ms=N: adds N ms to every request from now on (latency fault).
Every request is logged on stdout: epoch seconds, method, path, status, milliseconds, and the
milliseconds from reading the request line to writing the response headers (the server-side
latency as the analyzer defines it: first request byte read to first response byte written).
"""
import http.client
import http.server
import json
import os
import queue
import re
import sys
import threading
import time
import urllib.parse

import psycopg2
import psycopg2.pool
import redis

PORT = int(os.environ.get("PORT", "28081"))
USERS_HOST, USERS_PORT = os.environ.get("USERS_ADDR", "127.0.0.1:28082").split(":")
REDIS_PORT = int(os.environ.get("REDIS_PORT", "26379"))
PG_PORT = int(os.environ.get("PG_PORT", "25432"))

CHECKOUT = re.compile(r"^/checkout/(\d+)$")
PRODUCT = re.compile(r"^/products/(\d+)$")

cache = redis.Redis(host="127.0.0.1", port=REDIS_PORT, socket_timeout=5)
db_slots = threading.BoundedSemaphore(8)
db = psycopg2.pool.ThreadedConnectionPool(
    1, 8, host="127.0.0.1", port=PG_PORT, user="postgres", dbname="shop", connect_timeout=5
)
users_conns = queue.LifoQueue()
delay_ms = [0]


def users_get(path):
    try:
        conn = users_conns.get_nowait()
    except queue.Empty:
        conn = http.client.HTTPConnection(USERS_HOST, int(USERS_PORT), timeout=5)
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        body = resp.read()
    except Exception:
        conn.close()
        raise
    users_conns.put(conn)
    return resp.status, body


def query(sql, args, fetch=True):
    with db_slots:
        conn = db.getconn()
        broken = False
        try:
            with conn.cursor() as cur:
                cur.execute(sql, args)
                row = cur.fetchone() if fetch else None
            conn.commit()
            return row
        except psycopg2.Error:
            broken = conn.closed != 0
            try:
                conn.rollback()
            except psycopg2.Error:
                broken = True
            raise
        finally:
            db.putconn(conn, close=broken)


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # Headers and body go out in two writes: without TCP_NODELAY, Nagle plus the peer's
    # delayed ACK adds 40 ms to every keep-alive response.
    disable_nagle_algorithm = True

    def log_message(self, *args):
        pass

    def parse_request(self):
        # The request line has just been read (one read returns the whole small request).
        self.t_read = time.monotonic()
        return super().parse_request()

    def flush_headers(self):
        super().flush_headers()
        self.t_headers = time.monotonic()

    def reply(self, status, body, started):
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)
        ms = (time.monotonic() - started) * 1000
        first_ms = (self.t_headers - self.t_read) * 1000
        sys.stdout.write(
            f"{time.time():.6f} {self.command} {self.path} {status} {ms:.3f} {first_ms:.3f}\n"
        )
        sys.stdout.flush()

    def do_GET(self):
        started = time.monotonic()
        if self.path == "/health":
            return self.reply(200, {"ok": True}, started)
        if delay_ms[0]:
            time.sleep(delay_ms[0] / 1000)
        m = CHECKOUT.match(self.path)
        if m:
            return self.checkout(int(m.group(1)), started)
        m = PRODUCT.match(self.path)
        if m:
            return self.product(int(m.group(1)), started)
        return self.reply(404, {"error": "not found"}, started)

    def checkout(self, uid, started):
        try:
            status, body = users_get(f"/users/{uid}")
        except OSError as e:
            return self.reply(502, {"error": f"users: {e}"}, started)
        if status != 200:
            return self.reply(502 if status >= 500 else 404, {"error": f"users answered {status}"}, started)
        user = json.loads(body)
        try:
            cart = cache.get(f"cart:{uid}")
            if cart is None:
                cart = json.dumps({"items": [1 + (uid * 7) % 50, 1 + (uid * 13) % 50]})
                cache.set(f"cart:{uid}", cart, ex=3)
            items = json.loads(cart)["items"]
        except redis.RedisError as e:
            return self.reply(503, {"error": f"redis: {e}"}, started)
        try:
            price = query("SELECT price FROM products WHERE id = %s", (items[0],))[0]
            query("INSERT INTO orders (user_id, product_id) VALUES (%s, %s)", (uid, items[0]), fetch=False)
        except psycopg2.Error as e:
            return self.reply(500, {"error": f"database: {e}"}, started)
        return self.reply(200, {"user": user["name"], "items": items, "total": price}, started)

    def product(self, pid, started):
        try:
            row = query("SELECT id, name, price FROM products WHERE id = %s", (1 + pid % 50,))
        except psycopg2.Error as e:
            return self.reply(500, {"error": f"database: {e}"}, started)
        return self.reply(200, {"id": row[0], "name": row[1], "price": row[2]}, started)

    def do_POST(self):
        started = time.monotonic()
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            self.rfile.read(length)
        url = urllib.parse.urlsplit(self.path)
        if url.path == "/admin/delay":
            ms = int(urllib.parse.parse_qs(url.query).get("ms", ["0"])[0])
            delay_ms[0] = max(0, min(ms, 10000))
            return self.reply(200, {"delay_ms": delay_ms[0]}, started)
        return self.reply(404, {"error": "not found"}, started)


if __name__ == "__main__":
    server = http.server.ThreadingHTTPServer(("127.0.0.1", PORT), Handler)
    server.daemon_threads = True
    server.serve_forever()
