#!/usr/bin/env bash
# CPU time per request of two Parapet binaries, interleaved A B A B ... so that a busy machine
# slows both alike: the A/B for changes that instructions.sh cannot see (atomics, cache misses,
# wake-ups, syscalls). Each round starts the binary pinned to CPU 0 with one thread, sends
# BENCH_REQUESTS HTTP/1.1 1 KiB requests through it from oha on CPU 1 (64 connections) and reads
# the proxy's user+system time from /proc. Prints µs/request per round and the medians.
#
#     bash benches/cpu_ab.sh BIN_A BIN_B
#
# Environment: BENCH_ROUNDS [5]  BENCH_REQUESTS [40000]  BENCH_CONNS [64]
#   BENCH_EXTRA_A / BENCH_EXTRA_B: TOML lines added to [server] for that side (to A/B a setting
#   with one binary, e.g. BENCH_EXTRA_B='work_stealing = false').
# Everything listens on 127.0.0.1 with OS-chosen ports; every process started here is stopped by
# its PID on exit.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BIN_A=${1:?usage: cpu_ab.sh BIN_A BIN_B}
BIN_B=${2:?usage: cpu_ab.sh BIN_A BIN_B}
ROUNDS=${BENCH_ROUNDS:-5}
REQUESTS=${BENCH_REQUESTS:-40000}
CONNS=${BENCH_CONNS:-64}
OHA=${OHA:-$(command -v oha || echo "$ROOT/target/bench-tools/bin/oha")}
TICKS=$(getconf CLK_TCK)

source "$ROOT/benches/lib.sh"
bench_init cpu_ab
[[ -x $OHA ]] || die "no oha (bash benches/compare.sh installs it into target/bench-tools)"

# utime + stime of a process, in clock ticks (fields 14 and 15 of /proc/PID/stat).
cpu_ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat"; }

ORIGIN_PORT=$(free_port)
mkdir -p "$RUN/www" "$RUN/nginx/tmp"
head -c 1024 /dev/zero | tr '\0' a >"$RUN/www/1k.bin"
nginx_conf "$RUN/nginx" 4096 "    server { listen 127.0.0.1:$ORIGIN_PORT; root $RUN/www; }" >"$RUN/nginx/nginx.conf"
taskset -c 1 nginx -p "$RUN/nginx" -c "$RUN/nginx/nginx.conf" >/dev/null 2>&1 &
PIDS+=($!)
wait_port "$ORIGIN_PORT"

# One round: µs of proxy CPU per request for binary $1 with extra [server] lines $2.
round() {
  local bin=$1 extra=$2 port pid before after
  port=$(free_port)
  cat >"$RUN/parapet.toml" <<EOF
[server]
threads = 1
grace_period = "1s"
$extra

[[listener]]
address = "127.0.0.1:$port"
protocols = ["http1"]

[upstream.bench]
keepalive = 64

[[upstream.bench.server]]
address = "127.0.0.1:$ORIGIN_PORT"

[[route]]
path_prefix = "/"
upstream = "bench"
cache = false
compress = false
EOF
  RUST_LOG=warn taskset -c 0 "$bin" run -c "$RUN/parapet.toml" >"$RUN/proxy.log" 2>&1 &
  pid=$!
  PIDS+=("$pid")
  wait_port "$port"
  taskset -c 1 "$OHA" --no-tui -n 2000 -c "$CONNS" "http://127.0.0.1:$port/1k.bin" >/dev/null 2>&1
  before=$(cpu_ticks "$pid")
  taskset -c 1 "$OHA" --no-tui -n "$REQUESTS" -c "$CONNS" "http://127.0.0.1:$port/1k.bin" >"$RUN/oha.txt" 2>&1 ||
    die "oha failed: $(tail -3 "$RUN/oha.txt")"
  after=$(cpu_ticks "$pid")
  kill "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
  grep -q '\[200\] '"$REQUESTS"' responses' "$RUN/oha.txt" || die "not all 200: $(grep -A5 'Status code' "$RUN/oha.txt")"
  awk -v t=$((after - before)) -v hz="$TICKS" -v n="$REQUESTS" 'BEGIN { printf "%.2f", t / hz * 1e6 / n }'
}

median() { tr ' ' '\n' | sort -n | awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }

A=() B=()
for r in $(seq "$ROUNDS"); do
  A+=("$(round "$BIN_A" "${BENCH_EXTRA_A:-}")")
  B+=("$(round "$BIN_B" "${BENCH_EXTRA_B:-}")")
  echo "round $r: A ${A[-1]} µs/req, B ${B[-1]} µs/req"
done
ma=$(echo "${A[*]}" | median)
mb=$(echo "${B[*]}" | median)
echo "median over $ROUNDS rounds: A $ma µs/req, B $mb µs/req, B/A $(awk -v a="$ma" -v b="$mb" 'BEGIN { printf "%.3f", b / a }')"
