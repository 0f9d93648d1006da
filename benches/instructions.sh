#!/usr/bin/env bash
# Instructions per request, counted by callgrind: the A/B measure for changes on the request
# path. Unlike CPU time it does not move when the machine is busy (the same binary and inputs
# give the same count within a fraction of a percent), so one run per side is enough to keep or
# drop a change; compare.sh then confirms the gain in CPU time side by side with nginx/HAProxy.
# It counts user-space instructions only: syscalls are counted separately (strace -c, below).
#
#     bash benches/instructions.sh [SCENARIO]      # h1_1k (default), h1_100k, h2c_1k, cache_hit_1k
#
# Environment: BENCH_BIN [target/release/parapet; target/profiling/parapet after
#   `cargo build --profile profiling` gives file:line in the listing]  BENCH_REQUESTS [2000]  BENCH_CONNS [16]
#   BENCH_TOP [25] functions listed (inclusive), BENCH_SYSCALLS [1]: also count syscalls/req,
#   BENCH_PRELOAD: a library to LD_PRELOAD into Parapet (an allocator A/B without rebuilding).
# Writes target/bench/instructions/SCENARIO.{callgrind,txt}. Everything listens on 127.0.0.1
# with OS-chosen ports; every process started here is stopped by its PID on exit.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
SCENARIO=${1:-h1_1k}
BIN=${BENCH_BIN:-$ROOT/target/release/parapet}
REQUESTS=${BENCH_REQUESTS:-2000}
CONNS=${BENCH_CONNS:-16}
TOP=${BENCH_TOP:-25}
SYSCALLS=${BENCH_SYSCALLS:-1}
OHA=${OHA:-$(command -v oha || echo "$ROOT/target/bench-tools/bin/oha")}
OUT=$ROOT/target/bench/instructions
mkdir -p "$OUT"

source "$ROOT/benches/lib.sh"
bench_init instructions
[[ -x $BIN ]] || die "no binary at $BIN (cargo build --release)"
[[ -x $OHA ]] || die "no oha (bash benches/compare.sh installs it into target/bench-tools)"
command -v valgrind >/dev/null || die "valgrind is missing (apt-get install valgrind)"


ORIGIN_PORT=$(free_port)
PROXY_PORT=$(free_port)
mkdir -p "$RUN/www" "$RUN/nginx/tmp"
head -c 1024 /dev/zero | tr '\0' a >"$RUN/www/1k.bin"
head -c 102400 /dev/zero | tr '\0' b >"$RUN/www/100k.bin"
nginx_conf "$RUN/nginx" 4096 "    server {
        listen 127.0.0.1:$ORIGIN_PORT;
        root $RUN/www;
        add_header Cache-Control \"max-age=3600\";
    }" >"$RUN/nginx/nginx.conf"
nginx -p "$RUN/nginx" -c "$RUN/nginx/nginx.conf" >/dev/null 2>&1 &
PIDS+=($!)
wait_port "$ORIGIN_PORT"

protocols='"http1"'
path=/1k.bin
cache=false
oha_proto=()
case $SCENARIO in
h1_1k) ;;
h1_100k) path=/100k.bin ;;
h2c_1k)
  protocols='"http1", "h2c"'
  oha_proto=(--http2 -p 8)
  ;;
cache_hit_1k) cache=true ;;
*) die "unknown scenario $SCENARIO" ;;
esac

cat >"$RUN/parapet.toml" <<EOF
[server]
threads = 1
grace_period = "1s"

[[listener]]
address = "127.0.0.1:$PROXY_PORT"
protocols = [$protocols]

[upstream.bench]
keepalive = 64

[[upstream.bench.server]]
address = "127.0.0.1:$ORIGIN_PORT"

[[route]]
path_prefix = "/"
upstream = "bench"
cache = $cache
compress = false
EOF
"$BIN" check -c "$RUN/parapet.toml" >/dev/null

load() {
  local n=$1 conns=$CONNS
  [[ ${#oha_proto[@]} -gt 0 ]] && conns=$((CONNS / 8 > 0 ? CONNS / 8 : 1))
  "$OHA" --no-tui -n "$n" -c "$conns" "${oha_proto[@]}" --disable-compression \
    "http://127.0.0.1:$PROXY_PORT$path" >"$RUN/oha.txt" 2>&1 || die "oha failed: $(tail -3 "$RUN/oha.txt")"
  grep -q '\[200\]' "$RUN/oha.txt" || die "no 200s: $(cat "$RUN/oha.txt")"
}

# Instructions.
CG=$OUT/$SCENARIO.callgrind
rm -f "$CG"
RUST_LOG=warn LD_PRELOAD=${BENCH_PRELOAD:-} valgrind --tool=callgrind --callgrind-out-file="$CG" --dump-instr=no \
  --collect-atstart=yes "$BIN" run -c "$RUN/parapet.toml" >"$RUN/valgrind.log" 2>&1 &
VG_PID=$!
PIDS+=("$VG_PID")
wait_port "$PROXY_PORT"
load 300
callgrind_control -z "$VG_PID" >/dev/null
load "$REQUESTS"
callgrind_control -d "$VG_PID" >/dev/null
sleep 1
kill "$VG_PID" 2>/dev/null || true
wait "$VG_PID" 2>/dev/null || true
# The dump after zeroing is the file with the highest part number.
DUMP=$(ls -1 "$CG"* | sort -t. -k3 -n | tail -1)
TOTAL=$(callgrind_annotate "$DUMP" 2>/dev/null | awk '/PROGRAM TOTALS/ { gsub(",", "", $1); print $1; exit }')
[[ -n $TOTAL ]] || die "no totals in $DUMP"
{
  echo "scenario $SCENARIO, $REQUESTS requests after 300 warm-up, $(git rev-parse --short HEAD)$(git diff --quiet || echo ' +uncommitted changes')"
  echo "instructions/request: $((TOTAL / REQUESTS))"
  callgrind_annotate --inclusive=yes "$DUMP" 2>/dev/null | sed -n '/^-* *$/,$p' |
    grep -E '^ *[0-9,]+ \(' | sed -n "1,${TOP}p" |
    awk -v n="$REQUESTS" '{ v=$1; gsub(",", "", v); $1=""; printf "%8d/req %s\n", v/n, $0 }'
} | tee "$OUT/$SCENARIO.txt"

# Syscalls, from a run without valgrind.
if ((SYSCALLS)) && command -v strace >/dev/null; then
  RUST_LOG=warn LD_PRELOAD=${BENCH_PRELOAD:-} strace -f -c -o "$RUN/strace.txt" "$BIN" run -c "$RUN/parapet.toml" >/dev/null 2>&1 &
  ST_PID=$!
  PIDS+=("$ST_PID")
  wait_port "$PROXY_PORT"
  load 300
  load "$REQUESTS"
  # Parapet stops at once on SIGINT; strace then writes its summary and exits.
  kill -INT "$(pgrep -P "$ST_PID" | head -1)" 2>/dev/null || true
  wait "$ST_PID" 2>/dev/null || true
  awk -v n=$((REQUESTS + 300)) '$NF ~ /^[a-z_0-9]+$/ && $4 ~ /^[0-9]+$/ && $NF != "total" { printf "%-16s %.2f/req\n", $NF, $4 / n }' \
    "$RUN/strace.txt" | sort -k2 -t' ' -rn | sed -n 1,12p | tee -a "$OUT/$SCENARIO.txt"
  awk -v n=$((REQUESTS + 300)) '$NF == "total" { printf "syscalls/request: %.1f\n", $4 / n }' "$RUN/strace.txt" | tee -a "$OUT/$SCENARIO.txt"
fi
