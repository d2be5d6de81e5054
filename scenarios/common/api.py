#!/usr/bin/python3
"""api: the checkout scenarios' backend (stdlib + Debian's python3-psycopg2 and python3-redis).

GET /checkout/<id>: the user from the users service (HTTP), the cart from Redis (cached for a
few seconds), a product price from PostgreSQL and an order inserted there.
GET /products/<id>: PostgreSQL only.  GET /health: 200.
POST /admin/delay?ms=N: adds N ms to every request from now on (latency fault).
Every request is logged on stdout: epoch seconds, method, path, status, milliseconds, and the
milliseconds from reading the request line to writing the response headers (the server-side
latency as the analyzer defines it: first request byte read to first response byte written).

API_FRESH_CONNECTIONS=1 (opt-in; the `churn` scenario): no pools, no reused connections. Each
request's work runs in a new, short-lived thread that opens its own connections to users,
Redis and PostgreSQL (a backend forked per connection, autocommit: one simple-query message per
statement, nothing else on the wire) and closes them before it ends, so fd numbers are reused
within milliseconds and loopback 4-tuples come back. Every call made downstream is logged too,
as the ground truth of the calls:
  `call <epoch> <service> <op> <outcome> <ms>`
service: users, redis or postgres; op: GET (users, Redis), SET, SELECT, INSERT, or CONNECT when
the connection could not be opened (nothing was sent), or for users SEND when the request could
not be written (the connection was reset before a byte went out, e.g. accepted by the kernel for
a server going down); outcome: `ok`, or for users the HTTP
status when not 200, or `error:<kind>` (refused, reset, closed, timeout, the SQLSTATE of a
PostgreSQL error, else the exception's class name). The first line says `api: pid N, fresh
connections`.

API_TRACE_LOG=1 (opt-in; the `traces` scenarios, tests/traces_e2e.rs): the ground truth of which
inbound request every downstream call was made for. Each inbound request is logged as
  `trace-in <seq> <peer port> <tid> <read epoch> <answered epoch> <path>`
(seq: the request's `X-Seq` header, `-` when none; read: the request line read; answered: the
response headers written), each call made for it as
  `trace-call <seq> <service> <local port> <tid> <start epoch> <end epoch> <op>`
with the local port of the connection the call used (held by this thread from start to end:
PostgreSQL's BEGIN, statement and COMMIT are one call). With API_FRESH_CONNECTIONS=1, each
connection the request's worker thread opened, once, as a call lasting the whole request (the
connection is the request's own), op `CONN`.
API_JITTER_MS=N (opt-in): a random 0..N ms more before each GET's work (after the admin delay).
"""
import http.client
import http.server
import json
import os
import queue
import random
import re
import socket
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
FRESH = os.environ.get("API_FRESH_CONNECTIONS") == "1"
TRACE = os.environ.get("API_TRACE_LOG") == "1"
# Opt-in (the `traces` scenarios): a random extra 0..N ms before every GET's work, so that
# requests overtake one another.
JITTER_MS = float(os.environ.get("API_JITTER_MS", "0"))
# The inbound request this thread serves (`seq`), in TRACE mode.
serving = threading.local()

CHECKOUT = re.compile(r"^/checkout/(\d+)$")
PRODUCT = re.compile(r"^/products/(\d+)$")

cache = redis.Redis(host="127.0.0.1", port=REDIS_PORT, socket_timeout=5)
db_slots = threading.BoundedSemaphore(8)
# The pools (the default mode); FRESH mode opens no connection before a request needs one.
db = None if FRESH else psycopg2.pool.ThreadedConnectionPool(
    1, 8, host="127.0.0.1", port=PG_PORT, user="postgres", dbname="shop", connect_timeout=5
)
users_conns = queue.LifoQueue()
delay_ms = [0]
log_lock = threading.Lock()


def log_line(line):
    with log_lock:
        sys.stdout.write(line)
        sys.stdout.flush()


def error_kind(e):
    """A short name of why a downstream call failed (the `call` lines' outcome)."""
    if isinstance(e, ConnectionRefusedError):
        return "error:refused"
    # RemoteDisconnected (the peer closed before answering) is a ConnectionResetError too.
    if isinstance(e, (http.client.RemoteDisconnected, http.client.IncompleteRead)):
        return "error:closed"
    if isinstance(e, (ConnectionResetError, BrokenPipeError)):
        return "error:reset"
    if isinstance(e, (socket.timeout, redis.TimeoutError)):
        return "error:timeout"
    if isinstance(e, psycopg2.Error) and e.pgcode:
        return f"error:{e.pgcode}"
    cause = e.__cause__ or e.__context__
    if isinstance(e, redis.ConnectionError) and isinstance(cause, OSError):
        return error_kind(cause)
    if isinstance(e, redis.ConnectionError) and "closed" in str(e).lower():
        return "error:closed"
    return f"error:{type(e).__name__}"


def log_call(service, op, outcome, started):
    ms = (time.monotonic() - started) * 1000
    log_line(f"call {time.time():.6f} {service} {op} {outcome} {ms:.3f}\n")


def local_port(sock):
    try:
        return sock.getsockname()[1]
    except (OSError, AttributeError):
        return 0


def log_trace_call(service, port, started, op):
    seq = getattr(serving, "seq", "-")
    tid = threading.get_native_id()
    log_line(f"trace-call {seq} {service} {port} {tid} {started:.6f} {time.time():.6f} {op}\n")


class Fresh:
    """One request's own connections (API_FRESH_CONNECTIONS=1), each opened on first use, every
    call logged; `close` closes them all."""

    def __init__(self):
        self.users = None
        self.cache = None
        self.db = None
        # (service, local port) of every connection opened (API_TRACE_LOG=1).
        self.opened = []

    def users_get(self, path):
        started = time.monotonic()
        op = "GET"
        try:
            if self.users is None:
                op = "CONNECT"
                conn = http.client.HTTPConnection(USERS_HOST, int(USERS_PORT), timeout=5)
                conn.connect()
                self.users = conn
                if TRACE:
                    self.opened.append(("users", local_port(conn.sock)))
                op = "GET"
            op = "SEND"
            self.users.request("GET", path)
            op = "GET"
            resp = self.users.getresponse()
            body = resp.read()
        except (OSError, http.client.HTTPException) as e:
            log_call("users", op, error_kind(e), started)
            self.close_users()
            raise OSError(str(e)) from e
        log_call("users", "GET", "ok" if resp.status == 200 else str(resp.status), started)
        return resp.status, body

    def close_users(self):
        if self.users is not None:
            self.users.close()
            self.users = None

    def redis_call(self, op, *args):
        started = time.monotonic()
        try:
            if self.cache is None:
                # single_connection_client: the connection is opened here, not per command.
                try:
                    self.cache = redis.Redis(
                        host="127.0.0.1", port=REDIS_PORT, socket_timeout=5,
                        socket_connect_timeout=5, single_connection_client=True,
                    )
                    if TRACE:
                        self.opened.append(("redis", local_port(self.cache.connection._sock)))
                except redis.RedisError as e:
                    log_call("redis", "CONNECT", error_kind(e), started)
                    raise
            result = self.cache.execute_command(op, *args)
        except redis.RedisError as e:
            if self.cache is not None:
                log_call("redis", op, error_kind(e), started)
                self.close_cache()
            raise
        log_call("redis", op, "ok", started)
        return result

    def close_cache(self):
        if self.cache is not None:
            try:
                self.cache.close()
            except redis.RedisError:
                pass
            self.cache = None

    def query(self, op, sql, args, fetch=True):
        started = time.monotonic()
        if self.db is None:
            try:
                self.db = psycopg2.connect(
                    host="127.0.0.1", port=PG_PORT, user="postgres", dbname="shop",
                    connect_timeout=5,
                )
                # One simple-query message per statement: no BEGIN/COMMIT around it.
                self.db.autocommit = True
                if TRACE:
                    with socket.socket(fileno=os.dup(self.db.fileno())) as sock:
                        self.opened.append(("postgres", local_port(sock)))
            except psycopg2.Error as e:
                log_call("postgres", "CONNECT", error_kind(e), started)
                raise
        try:
            with self.db.cursor() as cur:
                cur.execute(sql, args)
                row = cur.fetchone() if fetch else None
        except psycopg2.Error as e:
            log_call("postgres", op, error_kind(e), started)
            self.close_db()
            raise
        log_call("postgres", op, "ok", started)
        return row

    def close_db(self):
        if self.db is not None:
            try:
                self.db.close()
            except psycopg2.Error:
                pass
            self.db = None

    def close(self):
        self.close_users()
        self.close_cache()
        self.close_db()


def users_get(path):
    try:
        conn = users_conns.get_nowait()
    except queue.Empty:
        conn = http.client.HTTPConnection(USERS_HOST, int(USERS_PORT), timeout=5)
    started = time.time()
    port = 0
    try:
        conn.request("GET", path)
        if TRACE:
            port = local_port(conn.sock)
        resp = conn.getresponse()
        body = resp.read()
    except Exception:
        conn.close()
        raise
    finally:
        if TRACE:
            log_trace_call("users", port, started, "GET")
    users_conns.put(conn)
    return resp.status, body


def query(sql, args, fetch=True):
    with db_slots:
        conn = db.getconn()
        broken = False
        started = time.time()
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
            if TRACE:
                with socket.socket(fileno=os.dup(conn.fileno())) as sock:
                    port = local_port(sock)
                log_trace_call("postgres", port, started, sql.split()[0].upper())
            db.putconn(conn, close=broken)


def pooled_redis(op, *args):
    if TRACE:
        return traced_redis(op, *args)
    return cache.execute_command(op, *args)


def traced_redis(op, *args):
    """`cache.execute_command` (redis-py 4's steps, no retry), logging the connection's port."""
    pool = cache.connection_pool
    conn = pool.get_connection(op)
    started = time.time()
    port = local_port(conn._sock)
    try:
        conn.send_command(op, *args)
        return cache.parse_response(conn, op)
    except redis.RedisError:
        conn.disconnect()
        raise
    finally:
        log_trace_call("redis", port, started, op)
        pool.release(conn)


def pooled_query(op, sql, args, fetch=True):
    return query(sql, args, fetch)


def checkout_work(uid, users_call, redis_call, query_call):
    """GET /checkout/<id>: (status, body); the same calls in both modes."""
    try:
        status, body = users_call(f"/users/{uid}")
    except OSError as e:
        return 502, {"error": f"users: {e}"}
    if status != 200:
        return (502 if status >= 500 else 404), {"error": f"users answered {status}"}
    user = json.loads(body)
    try:
        cart = redis_call("GET", f"cart:{uid}")
        if cart is None:
            cart = json.dumps({"items": [1 + (uid * 7) % 50, 1 + (uid * 13) % 50]})
            redis_call("SET", f"cart:{uid}", cart, "EX", 3)
        items = json.loads(cart)["items"]
    except redis.RedisError as e:
        return 503, {"error": f"redis: {e}"}
    try:
        price = query_call("SELECT", "SELECT price FROM products WHERE id = %s", (items[0],))[0]
        query_call("INSERT", "INSERT INTO orders (user_id, product_id) VALUES (%s, %s)", (uid, items[0]), fetch=False)
    except psycopg2.Error as e:
        return 500, {"error": f"database: {e}"}
    return 200, {"user": user["name"], "items": items, "total": price}


def product_work(pid, query_call):
    """GET /products/<id>: (status, body)."""
    try:
        row = query_call("SELECT", "SELECT id, name, price FROM products WHERE id = %s", (1 + pid % 50,))
    except psycopg2.Error as e:
        return 500, {"error": f"database: {e}"}
    return 200, {"id": row[0], "name": row[1], "price": row[2]}


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
        self.t_read_wall = time.time()
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
        answered = time.time()
        self.wfile.write(data)
        ms = (time.monotonic() - started) * 1000
        first_ms = (self.t_headers - self.t_read) * 1000
        log_line(f"{time.time():.6f} {self.command} {self.path} {status} {ms:.3f} {first_ms:.3f}\n")
        if TRACE:
            log_line(
                f"trace-in {self.headers.get('X-Seq', '-')} {self.client_address[1]} "
                f"{threading.get_native_id()} {self.t_read_wall:.6f} {answered:.6f} {self.path}\n"
            )

    def do_GET(self):
        started = time.monotonic()
        if TRACE:
            serving.seq = self.headers.get("X-Seq", "-")
        if self.path == "/health":
            return self.reply(200, {"ok": True}, started)
        if delay_ms[0]:
            time.sleep(delay_ms[0] / 1000)
        if JITTER_MS:
            time.sleep(random.uniform(0, JITTER_MS) / 1000)
        if FRESH:
            # The work in a thread of its own, with connections of its own; the answer from
            # this (the connection's) thread.
            answer = []
            worker = threading.Thread(target=lambda: answer.append(self.route_fresh()))
            worker.start()
            worker.join()
            status, body = answer[0] if answer else (500, {"error": "worker died"})
            return self.reply(status, body, started)
        m = CHECKOUT.match(self.path)
        if m:
            return self.checkout(int(m.group(1)), started)
        m = PRODUCT.match(self.path)
        if m:
            return self.product(int(m.group(1)), started)
        return self.reply(404, {"error": "not found"}, started)

    def route_fresh(self):
        """(status, body) of this request, computed with fresh connections (FRESH mode)."""
        conns = Fresh()
        begun = time.time()
        try:
            m = CHECKOUT.match(self.path)
            if m:
                return checkout_work(int(m.group(1)), conns.users_get, conns.redis_call, conns.query)
            m = PRODUCT.match(self.path)
            if m:
                return product_work(int(m.group(1)), conns.query)
            return 404, {"error": "not found"}
        finally:
            if TRACE:
                seq = self.headers.get("X-Seq", "-")
                tid = threading.get_native_id()
                for service, port in conns.opened:
                    log_line(f"trace-call {seq} {service} {port} {tid} {begun:.6f} {time.time():.6f} CONN\n")
            conns.close()

    def checkout(self, uid, started):
        status, body = checkout_work(uid, users_get, pooled_redis, pooled_query)
        return self.reply(status, body, started)

    def product(self, pid, started):
        status, body = product_work(pid, pooled_query)
        return self.reply(status, body, started)

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
    if FRESH:
        log_line(f"api: pid {os.getpid()}, fresh connections\n")
    server = http.server.ThreadingHTTPServer(("127.0.0.1", PORT), Handler)
    server.daemon_threads = True
    server.serve_forever()
