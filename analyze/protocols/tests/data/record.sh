#!/usr/bin/env bash
# Records the byte corpora under analyze/protocols/tests/data/<protocol>/ from REAL servers
# and clients on loopback: nginx, python3 http.server, redis-server, PostgreSQL 15, MariaDB,
# memcached, dnsmasq and a Python gRPC server, driven by curl, redis-cli, psql, pgbench, the
# mariadb client, dig and a few small Python socket clients (for pipelining, inline commands
# and the MySQL binary protocol, which no stock CLI speaks).
#
# Each scenario is captured with `tcpdump -i lo` on its port; tshark then extracts the TCP (or
# UDP) payloads into a `.rec` text file, one line per packet with payload:
#     <stream> <microseconds since the capture started> <c|s> <payload as hex>
# where `c` is client-to-server and `s` server-to-client. The tests read these files only,
# so running them needs none of the servers.
#
# Needs root and the Debian packages: nginx-light redis-server postgresql mariadb-server
# mariadb-client memcached dnsmasq-base dnsutils curl tcpdump tshark python3 (+ `pip install
# grpcio` in a venv, done by this script, for the gRPC scenario; skipped if that fails).
#
# Usage: analyze/protocols/tests/data/record.sh [scenario...]   (default: all)
set -euo pipefail

DATA="$(cd "$(dirname "$0")" && pwd)"
T="$(mktemp -d /tmp/retrace-record.XXXXXX)"
chmod 755 "$T"
PIDS=()
TCPDUMP_PID=
cleanup() {
    if [[ -n "$TCPDUMP_PID" ]]; then kill "$TCPDUMP_PID" 2>/dev/null || true; fi
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    if [[ -f "$T/pg/postmaster.pid" ]]; then
        runuser -u postgres -- /usr/lib/postgresql/15/bin/pg_ctl -D "$T/pg" -m fast stop >/dev/null 2>&1 || true
    fi
    if [[ -f "$T/nginx.pid" ]]; then kill "$(cat "$T/nginx.pid")" 2>/dev/null || true; fi
    sleep 0.3
    if [[ -n "${KEEP_TMP:-}" ]]; then echo "kept $T" >&2; else rm -rf "$T"; fi
}
trap cleanup EXIT

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

wait_port() { # wait_port PORT
    for _ in $(seq 1 100); do
        if python3 -c "import socket,sys; socket.create_connection(('127.0.0.1',$1),0.2)" 2>/dev/null; then return 0; fi
        sleep 0.1
    done
    echo "server on port $1 did not come up" >&2
    return 1
}

# capture PROTO NAME PORT (tcp|udp) COMMAND...: runs COMMAND under tcpdump and writes
# $DATA/PROTO/NAME.rec
capture() {
    local proto="$1" name="$2" port="$3" l4="$4"
    shift 4
    mkdir -p "$DATA/$proto"
    local pcap="$T/$proto-$name.pcap"
    tcpdump -i lo --immediate-mode -U -s 0 -w "$pcap" "$l4 port $port" 2>"$pcap.err" &
    local tpid=$!
    TCPDUMP_PID=$tpid
    for _ in $(seq 1 100); do
        if grep -q 'listening on' "$pcap.err"; then break; fi
        sleep 0.05
    done
    sleep 0.2
    "$@" || echo "note: $proto/$name client exited with $? (recorded anyway)" >&2
    # Let the last packets reach the capture file before stopping it.
    sleep 1
    kill -INT "$tpid"
    wait "$tpid" || true
    TCPDUMP_PID=
    local filter="tcp.len > 0"
    if [[ "$l4" == udp ]]; then filter="udp"; fi
    tshark -r "$pcap" -Y "$filter" -T fields -E separator=' ' \
        -e "$l4.stream" -e frame.time_relative -e "$l4.srcport" -e "$l4.payload" 2>/dev/null |
        python3 -c '
import sys
port = sys.argv[1]
for line in sys.stdin:
    f = line.split()
    if len(f) < 4:
        continue
    stream, t, src, payload = f[0], float(f[1]), f[2], f[3].replace(":", "")
    d = "s" if src == port else "c"
    size = len(payload) // 2
    print(f"{stream} {int(round(t * 1e6))} {d} {size} {payload[:2 * 4096]}")
' "$port" >"$DATA/$proto/$name.rec"
    echo "recorded $proto/$name.rec: $(wc -l <"$DATA/$proto/$name.rec") packets"
    if [[ "$l4" == tcp ]]; then
        # Every connection should be seen to its end (FIN or RST both ways): packets were lost
        # at the end of some runs on a busy machine; re-run the scenario when this warns.
        local streams ends
        streams=$(tshark -r "$pcap" -T fields -e tcp.stream 2>/dev/null | sort -u | wc -l)
        ends=$(tshark -r "$pcap" -Y 'tcp.flags.fin == 1 or tcp.flags.reset == 1' -T fields -e tcp.stream 2>/dev/null | wc -l)
        if ((ends < 2 * streams)); then
            echo "WARNING: $proto/$name: $streams connection(s) but only $ends FIN/RST packets: capture incomplete?" >&2
        fi
    fi
}

want() { [[ ${#SCENARIOS[@]} -eq 0 ]] || [[ " ${SCENARIOS[*]} " == *" $1 "* ]]; }
SCENARIOS=("$@")

# ---------------------------------------------------------------- HTTP/1 and HTTP/2: nginx
if want http || want http2; then
    NP=$(free_port)
    N2=$(free_port)
    mkdir -p "$T/nginx/logs"
    cat >"$T/nginx.conf" <<EOF
worker_processes 1;
pid $T/nginx.pid;
error_log $T/nginx/logs/error.log;
events {}
http {
    access_log $T/nginx/logs/access.log;
    client_body_temp_path $T/nginx/body;
    proxy_temp_path $T/nginx/proxy;
    fastcgi_temp_path $T/nginx/fastcgi;
    uwsgi_temp_path $T/nginx/uwsgi;
    scgi_temp_path $T/nginx/scgi;
    server {
        listen 127.0.0.1:$NP;
        location /users/ { return 200 "user\n"; }
        location = /fail { return 503 "down\n"; }
        location = /big { return 200 "$(head -c 3000 /dev/zero | tr '\0' 'x')\n"; }
        location / { return 404; }
    }
    server {
        listen 127.0.0.1:$N2 http2;
        location /api/ { return 200 "h2 ok\n"; }
        location = /api/fail { return 503 "down\n"; }
        location / { return 404; }
    }
}
EOF
    nginx -p "$T/nginx" -c "$T/nginx.conf"
    wait_port "$NP"
    wait_port "$N2"
fi

if want http; then
    # Two requests on one keep-alive connection, with the headers the parser extracts and
    # the secrets redaction must hide.
    capture http nginx_keepalive "$NP" tcp \
        curl -s -o /dev/null -o /dev/null \
        -H 'traceparent: 00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01' \
        -H 'X-Request-ID: req-7f3a' \
        -H 'Authorization: Bearer s3cr3t-t0ken' \
        -b 'session=c00kie-secret' \
        "http://127.0.0.1:$NP/users/42/orders/3fa85f64-5717-4562-b3fc-2c963f66afa6" \
        "http://127.0.0.1:$NP/fail"
    capture http nginx_post "$NP" tcp \
        curl -s -o /dev/null -d 'name=alice&age=42' "http://127.0.0.1:$NP/users/"
    capture http nginx_big "$NP" tcp curl -s -o /dev/null "http://127.0.0.1:$NP/big"
    # Pipelining: three requests in one write (curl no longer pipelines).
    capture http nginx_pipelined "$NP" tcp python3 - "$NP" <<'EOF'
import socket, sys, time
s = socket.create_connection(("127.0.0.1", int(sys.argv[1])))
s.sendall(b"GET /users/1 HTTP/1.1\r\nHost: a\r\n\r\n"
          b"GET /nope/deadbeefdeadbeefdeadbeef HTTP/1.1\r\nHost: a\r\n\r\n"
          b"GET /users/2 HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
while s.recv(65536):
    pass
EOF
    # python3 http.server answers with HTTP/1.0 and closes.
    HP=$(free_port)
    mkdir -p "$T/www"
    echo hello >"$T/www/index.html"
    (cd "$T/www" && exec python3 -m http.server "$HP" --bind 127.0.0.1 >/dev/null 2>&1) &
    PIDS+=($!)
    wait_port "$HP"
    capture http python_get "$HP" tcp sh -c "curl -s -o /dev/null http://127.0.0.1:$HP/index.html; curl -s -o /dev/null http://127.0.0.1:$HP/missing/123"
fi

if want http2; then
    # curl 7.88 fails a second transfer on one h2c connection: one connection per request.
    capture http2 nginx_h2c "$N2" tcp sh -c "\
        curl -s --http2-prior-knowledge -o /dev/null \
            -H 'traceparent: 00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01' \
            http://127.0.0.1:$N2/api/items/123; \
        curl -s --http2-prior-knowledge -o /dev/null http://127.0.0.1:$N2/api/fail"
fi

# ---------------------------------------------------------------- gRPC (python grpcio)
if want grpc; then
    if [[ ! -x ${GRPC_VENV:-/tmp/retrace-grpc-venv}/bin/python ]]; then
        python3 -m venv ${GRPC_VENV:-/tmp/retrace-grpc-venv} && ${GRPC_VENV:-/tmp/retrace-grpc-venv}/bin/pip install -q grpcio || true
    fi
    if ${GRPC_VENV:-/tmp/retrace-grpc-venv}/bin/python -c 'import grpc' 2>/dev/null; then
        GP=$(free_port)
        cat >"$T/grpc_server.py" <<'EOF'
import sys, grpc
from concurrent import futures
def hello(req, ctx):
    return b"hi " + req
def fail(req, ctx):
    ctx.abort(grpc.StatusCode.NOT_FOUND, "no such thing")
handler = grpc.method_handlers_generic_handler("demo.Greeter", {
    "SayHello": grpc.unary_unary_rpc_method_handler(hello),
    "Fail": grpc.unary_unary_rpc_method_handler(fail),
})
server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
server.add_generic_rpc_handlers((handler,))
server.add_insecure_port("127.0.0.1:" + sys.argv[1])
server.start()
server.wait_for_termination()
EOF
        cat >"$T/grpc_client.py" <<'EOF'
import sys, grpc
ch = grpc.insecure_channel("127.0.0.1:" + sys.argv[1])
hello = ch.unary_unary("/demo.Greeter/SayHello")
fail = ch.unary_unary("/demo.Greeter/Fail")
print(hello(b"bob", timeout=5, metadata=[("authorization", "Bearer grpc-s3cret-t0ken"), ("x-request-id", "grpc-req-1")]))
try:
    fail(b"x", timeout=5)
except grpc.RpcError as e:
    print(e.code())
EOF
        ${GRPC_VENV:-/tmp/retrace-grpc-venv}/bin/python "$T/grpc_server.py" "$GP" &
        PIDS+=($!)
        wait_port "$GP"
        capture grpc python_unary "$GP" tcp ${GRPC_VENV:-/tmp/retrace-grpc-venv}/bin/python "$T/grpc_client.py" "$GP"
    else
        echo "grpcio not installable: gRPC scenario skipped" >&2
    fi
fi

# ---------------------------------------------------------------- Redis
if want redis; then
    RP=$(free_port)
    redis-server --port "$RP" --bind 127.0.0.1 --save '' --appendonly no --dir "$T" >/dev/null &
    PIDS+=($!)
    wait_port "$RP"
    capture redis cli_session "$RP" tcp sh -c "printf '%s\n' 'SET user:1 alice' 'GET user:1' 'LPUSH user:1 x' 'NOSUCHCMD a' 'INCR hits' 'GET missing' 'MGET user:1 hits missing' 'SET big $(head -c 700 /dev/zero | tr '\0' 'v')' 'GET big' | redis-cli -p $RP >/dev/null"
    capture redis pipe "$RP" tcp sh -c "printf '*1\r\n\$4\r\nPING\r\n*3\r\n\$3\r\nSET\r\n\$1\r\nk\r\n\$1\r\nv\r\n*2\r\n\$4\r\nINCR\r\n\$1\r\nk\r\n' | redis-cli -p $RP --pipe >/dev/null"
    capture redis inline "$RP" tcp python3 - "$RP" <<'EOF'
import socket, sys
s = socket.create_connection(("127.0.0.1", int(sys.argv[1])))
for cmd in (b"PING\r\n", b"EXISTS user:1\r\n", b"QUIT\r\n"):
    s.sendall(cmd)
    s.recv(65536)
EOF
fi

# ---------------------------------------------------------------- PostgreSQL 15
if want postgres; then
    PB=/usr/lib/postgresql/15/bin
    PP=$(free_port)
    echo 'pg-super-pw' >"$T/pwfile"
    chmod 644 "$T/pwfile"
    mkdir "$T/pg" "$T/sock" && chown postgres "$T/pg" "$T/sock"
    runuser -u postgres -- "$PB/initdb" -D "$T/pg" -U postgres --pwfile="$T/pwfile" -A trust >/dev/null
    cat >"$T/pg/pg_hba.conf" <<'EOF'
local all all trust
host all clear 127.0.0.1/32 password
host all all 127.0.0.1/32 scram-sha-256
EOF
    runuser -u postgres -- "$PB/pg_ctl" -D "$T/pg" -l "$T/pg/server.log" -w \
        -o "-p $PP -k $T/sock -c listen_addresses=127.0.0.1" start >/dev/null
    runuser -u postgres -- psql -h "$T/sock" -p "$PP" -q -c "CREATE USER clear PASSWORD 'clear-text-pw'; ALTER USER postgres PASSWORD 'pg-super-pw'; CREATE TABLE items(id int primary key, name text); GRANT ALL ON items TO clear;"
    cat >"$T/session.sql" <<'EOF'
SELECT 1 AS one;
INSERT INTO items VALUES (1, 'a');
INSERT INTO items VALUES (1, 'dup');
SELECT * FROM missing_table;
SELEC 1;
SELECT id, name FROM items WHERE id = 1;
EOF
    chmod 644 "$T/session.sql"
    # SCRAM-SHA-256 (SASLInitialResponse + SASLResponse), SSLRequest refused, simple queries
    # with errors 23505, 42P01, 42601.
    capture postgres psql_scram "$PP" tcp env PGPASSWORD=pg-super-pw \
        psql -h 127.0.0.1 -p "$PP" -U postgres -d postgres -q -f "$T/session.sql" -o /dev/null
    # Cleartext PasswordMessage.
    capture postgres psql_cleartext "$PP" tcp env PGPASSWORD=clear-text-pw PGSSLMODE=disable \
        psql -h 127.0.0.1 -p "$PP" -U clear -d postgres -q -c 'SELECT count(*) FROM items' -o /dev/null
    # Extended query protocol (unnamed statements, then named prepared statements).
    printf '\\set id random(1, 1000)\nSELECT :id::int + 1 AS next;\n' >"$T/bench.sql"
    printf 'SELECT 1/0;\n' >"$T/bench_err.sql"
    chmod 644 "$T/bench.sql" "$T/bench_err.sql"
    capture postgres pgbench_extended "$PP" tcp env PGPASSWORD=pg-super-pw PGSSLMODE=disable \
        sh -c "'$PB/pgbench' -n -M extended -t 3 -f '$T/bench.sql' -h 127.0.0.1 -p $PP -U postgres postgres >/dev/null 2>&1"
    capture postgres pgbench_prepared "$PP" tcp env PGPASSWORD=pg-super-pw PGSSLMODE=disable \
        sh -c "'$PB/pgbench' -n -M prepared -t 3 -f '$T/bench.sql' -h 127.0.0.1 -p $PP -U postgres postgres >/dev/null 2>&1"
    capture postgres pgbench_error "$PP" tcp env PGPASSWORD=pg-super-pw PGSSLMODE=disable \
        sh -c "'$PB/pgbench' -n -M extended -t 1 -f '$T/bench_err.sql' -h 127.0.0.1 -p $PP -U postgres postgres >/dev/null 2>&1 || true"
fi

# ---------------------------------------------------------------- MariaDB
if want mysql; then
    MP=$(free_port)
    mkdir -p "$T/my"
    mariadb-install-db --no-defaults --user=root --datadir="$T/my" --auth-root-authentication-method=normal >/dev/null 2>&1
    mariadbd --no-defaults --user=root --datadir="$T/my" --port="$MP" --bind-address=127.0.0.1 \
        --socket="$T/my.sock" --skip-grant-tables --skip-log-bin >"$T/my.log" 2>&1 &
    PIDS+=($!)
    wait_port "$MP"
    mariadb --no-defaults -S "$T/my.sock" -u root -e "CREATE DATABASE shop; CREATE TABLE shop.items(id INT PRIMARY KEY, name TEXT)"
    capture mysql cli_session "$MP" tcp sh -c "mariadb --no-defaults --skip-ssl -h 127.0.0.1 -P $MP -u root shop -e \"SELECT 1; INSERT INTO items VALUES (1,'a'); INSERT INTO items VALUES (1,'dup'); SELECT * FROM nope; SELECT id, name FROM items WHERE id = 1\" >/dev/null 2>&1 || true"
    # Binary protocol: COM_STMT_PREPARE / COM_STMT_EXECUTE / COM_STMT_CLOSE from a minimal
    # client (the server accepts any credentials with --skip-grant-tables).
    capture mysql prepared "$MP" tcp python3 - "$MP" <<'EOF'
import socket, struct, sys, time
s = socket.create_connection(("127.0.0.1", int(sys.argv[1])))
def read_packet():
    hdr = b""
    while len(hdr) < 4:
        hdr += s.recv(4 - len(hdr))
    n = hdr[0] | hdr[1] << 8 | hdr[2] << 16
    body = b""
    while len(body) < n:
        body += s.recv(n - len(body))
    return hdr[3], body
def send(seq, body):
    s.sendall(struct.pack("<I", len(body))[:3] + bytes([seq]) + body)
read_packet()  # greeting
CLIENT_PROTOCOL_41, CLIENT_CONNECT_WITH_DB, CLIENT_SECURE_CONNECTION = 0x200, 0x8, 0x8000
caps = CLIENT_PROTOCOL_41 | CLIENT_CONNECT_WITH_DB | CLIENT_SECURE_CONNECTION
send(1, struct.pack("<IIB23x", caps, 1 << 24, 33) + b"root\0" + b"\0" + b"shop\0")
read_packet()  # OK
send(0, b"\x16" + b"SELECT id, name FROM items WHERE id = ?")
seq, ok = read_packet()
stmt_id, ncols, nparams = struct.unpack("<IHH", ok[1:9])
for _ in range(nparams + (1 if nparams else 0) + ncols + (1 if ncols else 0)):
    read_packet()
# COM_STMT_EXECUTE: stmt id, flags, iteration count, null bitmap, new-params flag, type, value
send(0, b"\x17" + struct.pack("<IBI", stmt_id, 0, 1) + b"\x00" + b"\x01" + b"\x08\x00" + struct.pack("<q", 1))
eofs = 0
while eofs < 2:  # column definitions, then rows, each end with an EOF packet
    seq, p = read_packet()
    if p[:1] == b"\xfe" and len(p) < 9:
        eofs += 1
    if p[:1] == b"\xff":
        break
send(0, b"\x16" + b"SELECT * FROM no_such_table WHERE id = ?")
read_packet()  # ERR 1146
send(0, b"\x19" + struct.pack("<I", stmt_id))  # COM_STMT_CLOSE: no reply
send(0, b"\x01")  # COM_QUIT
time.sleep(0.2)
s.close()
EOF
fi

# ---------------------------------------------------------------- memcached
if want memcached; then
    CP=$(free_port)
    memcached -u root -l 127.0.0.1 -p "$CP" -U 0 &
    PIDS+=($!)
    wait_port "$CP"
    capture memcached text_session "$CP" tcp python3 - "$CP" <<'EOF'
import socket, sys, time
s = socket.create_connection(("127.0.0.1", int(sys.argv[1])))
def ask(cmd, end):
    s.sendall(cmd)
    buf = b""
    while not buf.endswith(end):
        buf += s.recv(65536)
for cmd, end in [
    (b"set user:1 0 0 5\r\nalice\r\n", b"\r\n"),
    (b"get user:1\r\n", b"END\r\n"),
    (b"get missing\r\n", b"END\r\n"),
    (b"incr user:1 1\r\n", b"\r\n"),
    (b"bogus\r\n", b"\r\n"),
    (b"delete user:1\r\n", b"\r\n"),
    (b"get a\r\nget b\r\n", b"END\r\nEND\r\n"),
]:
    ask(cmd, end)
s.close()
EOF
fi

# ---------------------------------------------------------------- DNS: dnsmasq + dig
if want dns; then
    DP=$(free_port)
    dnsmasq -k --user=root --port="$DP" --listen-address=127.0.0.1 --bind-interfaces \
        --no-resolv --no-hosts --conf-file=/dev/null --pid-file="$T/dnsmasq.pid" \
        --address=/api.example.test/10.1.2.3 --local=/example.test/ 2>/dev/null &
    PIDS+=($!)
    sleep 0.5
    capture dns dig_udp "$DP" udp sh -c "dig @127.0.0.1 -p $DP +noedns api.example.test A >/dev/null; dig @127.0.0.1 -p $DP nope.example.test A >/dev/null; dig @127.0.0.1 -p $DP api.example.test AAAA >/dev/null"
    capture dns dig_tcp "$DP" tcp dig @127.0.0.1 -p "$DP" +tcp api.example.test A
fi

echo "done: corpora in $DATA"
