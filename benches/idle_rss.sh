#!/usr/bin/env bash
# Memory per idle keep-alive client connection: RSS of one Parapet (and of nginx and HAProxy
# when BENCH_PEERS=1) before and after BENCH_IDLE_CONNS connections that each made one request
# and then went quiet (benches/idle_conns.py).
#
#     bash benches/idle_rss.sh                  # 10,000 connections, Parapet only
#     BENCH_PEERS=1 bash benches/idle_rss.sh    # nginx and HAProxy too, same origin and load
#
# Environment: BENCH_BIN [target/release/parapet], BENCH_IDLE_CONNS [10000], BENCH_PRELOAD (a
# library to LD_PRELOAD into Parapet, e.g. an allocator). Loopback only; every process started
# here is stopped by its PID on exit.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
BIN=${BENCH_BIN:-$ROOT/target/release/parapet}
CONNS=${BENCH_IDLE_CONNS:-10000}
PEERS=${BENCH_PEERS:-0}
source "$ROOT/benches/lib.sh"
bench_init idle_rss
[[ -x $BIN ]] || die "no binary at $BIN (cargo build --release)"
ulimit -n "$(ulimit -Hn)"
(($(ulimit -n) >= CONNS + 500)) || die "the open-file limit ($(ulimit -n)) is too low for $CONNS connections"

rss_kib() { awk '/VmRSS/ { print $2 }' "/proc/$1/status"; }

ORIGIN=$(free_port)
mkdir -p "$RUN/www" "$RUN/origin/tmp"
head -c 1024 /dev/zero | tr '\0' a >"$RUN/www/1k.bin"
nginx_conf "$RUN/origin" "$((CONNS * 2 + 100))" "server { listen 127.0.0.1:$ORIGIN; root $RUN/www; }" >"$RUN/origin/nginx.conf"
nginx -p "$RUN/origin" -c "$RUN/origin/nginx.conf" >/dev/null 2>&1 &
PIDS+=($!)
wait_port "$ORIGIN"

# measure NAME PID PORT: RSS before, with CONNS idle connections, per connection.
measure() {
  local name=$1 pid=$2 port=$3 before after
  wait_port "$port"
  python3 benches/idle_conns.py --port "$port" --count 50 --seconds 0 >/dev/null # warm-up
  sleep 0.5
  before=$(rss_kib "$pid")
  python3 benches/idle_conns.py --port "$port" --count "$CONNS" --seconds 3 --ready-file "$RUN/ready" >"$RUN/idle.json" &
  local helper=$!
  for _ in $(seq 600); do [[ -s $RUN/ready ]] && break; sleep 0.1; done
  [[ -s $RUN/ready ]] || die "$name: the idle connections did not open"
  sleep 1
  after=$(rss_kib "$pid")
  wait "$helper" || true
  rm -f "$RUN/ready"
  printf '%-8s RSS %6d KiB -> %7d KiB with %d idle connections (%s): %.2f KiB per connection\n' \
    "$name" "$before" "$after" "$CONNS" "$(tr -d '\n' <"$RUN/idle.json")" \
    "$(awk -v a="$after" -v b="$before" -v n="$CONNS" 'BEGIN { print (a - b) / n }')"
}

PORT=$(free_port)
cat >"$RUN/parapet.toml" <<EOF
[server]
threads = 1
grace_period = "1s"
[[listener]]
address = "127.0.0.1:$PORT"
protocols = ["http1"]
[upstream.bench]
keepalive = 64
[[upstream.bench.server]]
address = "127.0.0.1:$ORIGIN"
[[route]]
path_prefix = "/"
upstream = "bench"
compress = false
EOF
RUST_LOG=warn LD_PRELOAD=${BENCH_PRELOAD:-} "$BIN" run -c "$RUN/parapet.toml" >"$RUN/parapet.log" 2>&1 &
PIDS+=($!)
measure parapet $! "$PORT"

if ((PEERS)); then
  PORT=$(free_port)
  mkdir -p "$RUN/nginx/tmp"
  nginx_conf "$RUN/nginx" "$((CONNS * 2 + 100))" "upstream o { server 127.0.0.1:$ORIGIN; keepalive 64; }
    server { listen 127.0.0.1:$PORT; location / { proxy_pass http://o; proxy_http_version 1.1; proxy_set_header Connection \"\"; } }" >"$RUN/nginx/nginx.conf"
  nginx -p "$RUN/nginx" -c "$RUN/nginx/nginx.conf" >/dev/null 2>&1 &
  PIDS+=($!)
  measure nginx $! "$PORT"
  PORT=$(free_port)
  cat >"$RUN/haproxy.cfg" <<EOF
global
    maxconn $((CONNS * 2 + 100))
    nbthread 1
defaults
    mode http
    timeout connect 5s
    timeout client 300s
    timeout server 300s
    timeout http-keep-alive 300s
frontend f
    bind 127.0.0.1:$PORT
    default_backend b
backend b
    http-reuse always
    server o 127.0.0.1:$ORIGIN
EOF
  haproxy -f "$RUN/haproxy.cfg" >/dev/null 2>&1 &
  PIDS+=($!)
  measure haproxy $! "$PORT"
fi
