#!/usr/bin/env bash
# Parapet vs nginx vs HAProxy (and the origin directly), on loopback, one command:
#
#     bash benches/compare.sh
#
# Installs what it needs (nginx, its echo module, HAProxy, jq, curl from Debian; oha from
# crates.io into target/bench-tools), builds Parapet in release, starts origins and the three
# proxies with equivalent configs, and for each scenario and target runs:
#   1. a closed-loop phase (BENCH_MAX_SECS, BENCH_CONNS connections as fast as they go): max req/s;
#   2. an open-loop phase at a fixed offered rate, the same for every target of the scenario
#      (BENCH_RATE, or BENCH_RATE_FRACTION of the slowest proxy's max req/s), with oha's
#      coordinated-omission correction: p50/p99/p99.9, errors, proxy CPU per request.
# Proxies run on CPU $BENCH_PROXY_CPU (default 0), origins, helpers and oha on CPU
# $BENCH_LOAD_CPU (default 1). All traffic is to 127.0.0.1; every load run is bounded in time;
# every process started here is stopped by its PID on exit.
#
# Results: markdown on stdout and in target/bench/compare.md, JSON in target/bench/compare.json,
# raw oha output and logs in target/bench/run/. See benches/README.md.
#
# Environment (defaults in brackets):
#   BENCH_ROUNDS [3]: rounds of each phase, targets interleaved within a round; the report
#     gives medians (and every round's CPU/request)
#   BENCH_MAX_SECS [4]  BENCH_RATE_SECS [8]  BENCH_WARMUP_SECS [1]  BENCH_CONNS [64]
#   BENCH_RATE [auto]   BENCH_RATE_FRACTION [0.5]  BENCH_IDLE_CONNS [10000]  BENCH_SLOW_MS [50]
#   BENCH_SCENARIOS [all: h1_1k,h1_100k,h2c_1k,many_conns,slow_backend,cache_hit_1k,
#     cache_hit_100k,compress_100k_json_miss,compress_100k_json_hit,tls_h2_1k,http3_1k]
#   BENCH_SKIP_BUILD [0]  BENCH_PROXY_CPU [0]  BENCH_LOAD_CPU [1]
#   BENCH_QUIET_WAIT [8]: seconds to wait, before each run, for both CPUs to be idle (the
#     machine may be shared); each record says how busy the proxy's CPU was with other work.
#
# Adding a scenario: write one
# `scenario_NAME` function that sets the SC_* variables and calls run_scenario, add NAME to
# ALL_SCENARIOS, and remove it from NOT_YET.

set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"

ROUNDS=${BENCH_ROUNDS:-3}
ROUND=1
MAX_SECS=${BENCH_MAX_SECS:-4}
RATE_SECS=${BENCH_RATE_SECS:-8}
WARMUP_SECS=${BENCH_WARMUP_SECS:-1}
CONNS=${BENCH_CONNS:-64}
RATE_FIXED=${BENCH_RATE:-}
RATE_FRACTION=${BENCH_RATE_FRACTION:-0.5}
IDLE_CONNS=${BENCH_IDLE_CONNS:-10000}
SLOW_MS=${BENCH_SLOW_MS:-50}
SKIP_BUILD=${BENCH_SKIP_BUILD:-0}
QUIET_WAIT=${BENCH_QUIET_WAIT:-8}
PROXY_CPU=${BENCH_PROXY_CPU:-0}
LOAD_CPU=${BENCH_LOAD_CPU:-1}

ALL_SCENARIOS=(h1_1k h1_100k h2c_1k many_conns slow_backend cache_hit_1k cache_hit_100k
  compress_100k_json_miss compress_100k_json_hit tls_h2_1k http3_1k)
NOT_YET=()
IFS=, read -r -a SCENARIOS <<<"${BENCH_SCENARIOS:-$(
  IFS=,
  echo "${ALL_SCENARIOS[*]}"
)}"

OUT_DIR=$ROOT/target/bench
RUN_DIR=$OUT_DIR/run
TOOLS=$ROOT/target/bench-tools
PARAPET=$ROOT/target/release/parapet
CLK_TCK=$(getconf CLK_TCK)

log() { printf '[compare] %s\n' "$*" >&2; }
die() {
  printf '[compare] ERROR: %s\n' "$*" >&2
  exit 1
}

# ---------------------------------------------------------------- processes and cleanup

STARTED_PIDS=()

# Stops one process we started: SIGTERM, up to 5 s, then SIGKILL.
stop_pid() {
  local pid=$1 i
  kill -0 "$pid" 2>/dev/null || return 0
  kill -TERM "$pid" 2>/dev/null || true
  for i in $(seq 50); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  if kill -0 "$pid" 2>/dev/null; then
    kill -KILL "$pid" 2>/dev/null || true
  fi
  wait "$pid" 2>/dev/null || true
}

cleanup() {
  local status=$? pid
  trap - EXIT INT TERM
  ((${#STARTED_PIDS[@]})) && log "stopping ${#STARTED_PIDS[@]} processes started here"
  for pid in "${STARTED_PIDS[@]}"; do
    stop_pid "$pid"
  done
  # nginx cache directories made here in /dev/shm (mktemp), and only those.
  for pid in "${NGINX_CACHE_DIRS[@]}"; do
    [[ $pid == /dev/shm/parapet-bench-nginx-cache.* ]] && rm -rf -- "$pid"
  done
  exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# Starts "$@" in the background pinned to CPU $1 (remaining args: log file, command...);
# sets LAST_PID.
start_pinned() {
  local cpu=$1 logfile=$2
  shift 2
  taskset -c "$cpu" "$@" >"$logfile" 2>&1 &
  LAST_PID=$!
  STARTED_PIDS+=("$LAST_PID")
}

# The process and all its descendants (nginx master + workers), except nginx's cache loader,
# which exits by itself a minute after start (it would vanish in the middle of a run).
tree_pids() {
  local pid=$1 child
  echo "$pid"
  for child in $(ps -o pid= --ppid "$pid" 2>/dev/null); do
    grep -q 'cache loader' "/proc/$child/cmdline" 2>/dev/null && continue
    tree_pids "$child"
  done
}

# utime + stime, in clock ticks, summed over the given PIDs (all threads included).
cpu_ticks() {
  local total=0 pid stat
  local -a fields
  for pid in "$@"; do
    stat=$(<"/proc/$pid/stat") || die "process $pid vanished during a run"
    stat=${stat##*) }
    read -r -a fields <<<"$stat"
    total=$((total + fields[11] + fields[12]))
  done
  echo "$total"
}

# Busy clock ticks of one CPU so far (everything but idle and iowait), from /proc/stat.
cpu_busy() {
  awk -v cpu="cpu$1" '$1 == cpu { print $2 + $3 + $4 + $7 + $8 + $9 }' /proc/stat
}

# Other developers' builds on this shared machine distort every figure. Before each run, wait
# (at most BENCH_QUIET_WAIT seconds) for a 1-second window in which neither CPU is more than
# 15 % busy; sets QUIET_WAITED (seconds waited) and QUIET (1 if such a window was found).
wait_quiet() {
  local start=$SECONDS a0 b0 a1 b1
  QUIET=0
  while :; do
    a0=$(cpu_busy "$PROXY_CPU")
    b0=$(cpu_busy "$LOAD_CPU")
    sleep 1
    a1=$(cpu_busy "$PROXY_CPU")
    b1=$(cpu_busy "$LOAD_CPU")
    if (((a1 - a0) * 100 <= 15 * CLK_TCK && (b1 - b0) * 100 <= 15 * CLK_TCK)); then
      QUIET=1
      break
    fi
    ((SECONDS - start >= QUIET_WAIT)) && break
  done
  QUIET_WAITED=$((SECONDS - start))
}

# VmRSS in KiB summed over the given PIDs.
rss_kib() {
  local total=0 pid kib
  for pid in "$@"; do
    kib=$(awk '/^VmRSS:/ {print $2}' "/proc/$pid/status" 2>/dev/null || echo 0)
    total=$((total + ${kib:-0}))
  done
  echo "$total"
}

# N distinct free TCP ports on 127.0.0.1, chosen by the OS.
free_ports() {
  python3 - "$1" <<'EOF'
import socket, sys
socks = []
for _ in range(int(sys.argv[1])):
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    socks.append(s)
print(" ".join(str(s.getsockname()[1]) for s in socks))
EOF
}

# Waits until http://127.0.0.1:PORT/PATH answers 200 (h2c prior knowledge when PROTO=h2c).
wait_ready() {
  local name=$1 pid=$2 port=$3 path=$4 proto=$5 logfile=$6 code i
  local -a curl_args=(-s -o /dev/null -w '%{http_code}' --max-time 2)
  local scheme=http
  [[ $proto == h2c ]] && curl_args+=(--http2-prior-knowledge)
  # h2/h3 targets are TLS listeners; curl checks them over TLS (HTTP/1.1 or h2 by ALPN).
  if [[ $proto == h2 || $proto == h3 ]]; then
    curl_args+=(--cacert "$RUN_DIR/certs/ca.crt")
    scheme=https
  fi
  for i in $(seq 100); do
    if ! kill -0 "$pid" 2>/dev/null; then
      tail -n 20 "$logfile" >&2 || true
      die "$name exited during start-up (log: $logfile)"
    fi
    code=$(curl "${curl_args[@]}" "$scheme://127.0.0.1:$port$path" 2>/dev/null || true)
    [[ $code == 200 ]] && return 0
    sleep 0.1
  done
  tail -n 20 "$logfile" >&2 || true
  die "$name on 127.0.0.1:$port did not answer 200 for $path within 10 s (last: '$code', log: $logfile)"
}

# ---------------------------------------------------------------- setup

install_tools() {
  local missing=() pkg policy_created=0
  command -v nginx >/dev/null || missing+=(nginx)
  [[ -e /usr/lib/nginx/modules/ngx_http_echo_module.so ]] || missing+=(libnginx-mod-http-echo)
  command -v haproxy >/dev/null || missing+=(haproxy)
  command -v jq >/dev/null || missing+=(jq)
  command -v curl >/dev/null || missing+=(curl)
  command -v taskset >/dev/null || missing+=(util-linux)
  command -v python3 >/dev/null || missing+=(python3)
  if ((${#missing[@]})); then
    log "installing from Debian: ${missing[*]}"
    # Keep the packages' init scripts from starting system-wide nginx/haproxy services.
    if [[ ! -e /usr/sbin/policy-rc.d ]]; then
      printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
      chmod +x /usr/sbin/policy-rc.d
      policy_created=1
    fi
    apt-get update -qq >&2 || die "apt-get update failed"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >&2 ||
      die "apt-get install ${missing[*]} failed"
    ((policy_created)) && rm -f /usr/sbin/policy-rc.d
    for pkg in nginx haproxy jq curl taskset python3; do
      command -v "$pkg" >/dev/null || die "$pkg still missing after apt-get install"
    done
  fi
  if command -v oha >/dev/null; then
    OHA=$(command -v oha)
  else
    OHA=$TOOLS/bin/oha
    # With its http3 feature, for the http3_1k row; an earlier install without it is replaced.
    if [[ ! -x $OHA ]] || ! oha_speaks_http3 "$OHA"; then
      log "installing oha (load generator, with HTTP/3) into $TOOLS"
      cargo install oha --locked --force --features http3 --root "$TOOLS" >&2 ||
        die "cargo install oha failed"
    fi
  fi
  "$OHA" --help | grep -q -- '--latency-correction' || die "$OHA has no --latency-correction"
}

build_parapet() {
  if [[ $SKIP_BUILD == 1 && -x $PARAPET ]]; then
    log "BENCH_SKIP_BUILD=1: using the existing $PARAPET"
    return
  fi
  log "building parapet (cargo build --release)"
  cargo build --release --bin parapet >&2 ||
    die "cargo build --release failed (if someone is mid-edit in src/, retry in a few minutes)"
}

# Fills the www root: 1 KiB and 100 KiB static files.
make_content() {
  mkdir -p "$RUN_DIR/www"
  head -c 1024 /dev/urandom >"$RUN_DIR/www/1k.bin"
  head -c 102400 /dev/urandom >"$RUN_DIR/www/100k.bin"
  # 100 KiB of compressible JSON (records of varying ids, names and numbers, like an API answer).
  python3 - "$RUN_DIR/www/100k.json" <<'EOF'
import json, random, sys
rnd = random.Random(1)
words = "alpha beta gamma delta epsilon zeta eta theta iota kappa lambda mu".split()
items, text = [], "[]"
while len(text) < 102400:
    i = len(items)
    items.append({"id": i, "name": f"{rnd.choice(words)}-{rnd.choice(words)}-{rnd.randrange(10**6)}",
                  "price": round(rnd.uniform(1, 1000), 2), "tags": rnd.sample(words, 3),
                  "active": rnd.random() < 0.5, "stock": rnd.randrange(10000)})
    text = json.dumps(items)
open(sys.argv[1], "w").write(text[:102399].rsplit("},", 1)[0] + "}]")
EOF
  mkdir -p "$RUN_DIR/certs"
  "$PARAPET" certs dev --dir "$RUN_DIR/certs" >/dev/null || die "parapet certs dev failed"
  cat "$RUN_DIR/certs/localhost.crt" "$RUN_DIR/certs/localhost.key" >"$RUN_DIR/certs/localhost.pem"
}

# Common nginx main-context lines; $1 = instance name.
nginx_main() {
  local name=$1
  mkdir -p "$RUN_DIR/nginx-$name/tmp"
  cat <<EOF
worker_processes 1;
daemon off;
master_process on;
user root;
pid $RUN_DIR/nginx-$name/nginx.pid;
error_log $RUN_DIR/nginx-$name/error.log warn;
worker_rlimit_nofile $(ulimit -n);
events { worker_connections $((IDLE_CONNS + 4096)); }
EOF
}

nginx_http_common() {
  local name=$1
  cat <<EOF
    access_log off;
    sendfile on;
    tcp_nopush on;
    tcp_nodelay on;
    keepalive_timeout 120s;
    keepalive_requests 100000000;
    default_type application/octet-stream;
    client_body_temp_path $RUN_DIR/nginx-$name/tmp/body;
    proxy_temp_path $RUN_DIR/nginx-$name/tmp/proxy;
    fastcgi_temp_path $RUN_DIR/nginx-$name/tmp/fastcgi;
    uwsgi_temp_path $RUN_DIR/nginx-$name/tmp/uwsgi;
    scgi_temp_path $RUN_DIR/nginx-$name/tmp/scgi;
EOF
}

# Starts the nginx whose config is in $RUN_DIR/nginx-NAME/nginx.conf on CPU $1; sets LAST_PID.
start_nginx() {
  local cpu=$1 name=$2 conf=$RUN_DIR/nginx-$2/nginx.conf
  nginx -t -q -p "$RUN_DIR/nginx-$name" -c "$conf" -e "$RUN_DIR/nginx-$name/error.log" 2>&1 >&2 ||
    die "nginx config $conf is invalid"
  start_pinned "$cpu" "$RUN_DIR/nginx-$name/stderr.log" \
    nginx -p "$RUN_DIR/nginx-$name" -c "$conf" -e "$RUN_DIR/nginx-$name/error.log"
}

# Origins, all on the load CPU, one nginx process each (so a slow one cannot slow the others):
#   A: static files over HTTP/1.1 (PORT_A) and h2c prior knowledge (PORT_A_H2C)
#   B: the same files over HTTP/1.1 (a second fast server for the slow-backend scenario)
#   C: every request answered after SLOW_MS ms (nginx echo module's echo_sleep)
# Each has /_status (stub_status) so the scenario can count who served what.
start_origins() {
  local sleep_s
  sleep_s=$(awk -v ms="$SLOW_MS" 'BEGIN { printf "%.3f", ms / 1000 }')
  mkdir -p "$RUN_DIR/nginx-origin-a" "$RUN_DIR/nginx-origin-b" "$RUN_DIR/nginx-origin-c"
  {
    nginx_main origin-a
    echo "http {"
    nginx_http_common origin-a
    cat <<EOF
    server {
        listen 127.0.0.1:$PORT_A backlog=4096;
        root $RUN_DIR/www;
        location = /_status { stub_status; }
    }
    server {
        listen 127.0.0.1:$PORT_A_H2C http2 backlog=4096;
        root $RUN_DIR/www;
    }
    # Cacheable: the same files with an hour of freshness, JSON as application/json.
    server {
        listen 127.0.0.1:$PORT_D backlog=4096;
        root $RUN_DIR/www;
        types { application/json json; }
        add_header Cache-Control "max-age=3600";
        location = /_status { stub_status; }
    }
}
EOF
  } >"$RUN_DIR/nginx-origin-a/nginx.conf"
  start_nginx "$LOAD_CPU" origin-a
  ORIGIN_A_PID=$LAST_PID
  {
    nginx_main origin-b
    echo "http {"
    nginx_http_common origin-b
    cat <<EOF
    server {
        listen 127.0.0.1:$PORT_B backlog=4096;
        root $RUN_DIR/www;
        location = /_status { stub_status; }
    }
}
EOF
  } >"$RUN_DIR/nginx-origin-b/nginx.conf"
  start_nginx "$LOAD_CPU" origin-b
  ORIGIN_B_PID=$LAST_PID
  {
    echo "load_module /usr/lib/nginx/modules/ngx_http_echo_module.so;"
    nginx_main origin-c
    echo "http {"
    nginx_http_common origin-c
    cat <<EOF
    server {
        listen 127.0.0.1:$PORT_C backlog=4096;
        location = /_status { stub_status; }
        location / {
            default_type text/plain;
            echo_sleep $sleep_s;
            echo "slow origin";
        }
    }
}
EOF
  } >"$RUN_DIR/nginx-origin-c/nginx.conf"
  start_nginx "$LOAD_CPU" origin-c
  ORIGIN_C_PID=$LAST_PID
  wait_ready origin-a "$ORIGIN_A_PID" "$PORT_A" /1k.bin h1 "$RUN_DIR/nginx-origin-a/error.log"
  wait_ready origin-a-cacheable "$ORIGIN_A_PID" "$PORT_D" /100k.json h1 "$RUN_DIR/nginx-origin-a/error.log"
  wait_ready origin-a-h2c "$ORIGIN_A_PID" "$PORT_A_H2C" /1k.bin h2c "$RUN_DIR/nginx-origin-a/error.log"
  wait_ready origin-b "$ORIGIN_B_PID" "$PORT_B" /100k.bin h1 "$RUN_DIR/nginx-origin-b/error.log"
  wait_ready origin-c "$ORIGIN_C_PID" "$PORT_C" /1k.bin h1 "$RUN_DIR/nginx-origin-c/error.log"
}

# Requests an origin has served so far (its stub_status), minus the status request itself.
origin_requests() {
  curl -s --max-time 2 "http://127.0.0.1:$1/_status" | awk 'NR == 3 { print $3 - 1 }'
}

# ---------------------------------------------------------------- proxies

# $1 = target (parapet | parapet_rr), $2 = port; uses SC_*.
start_parapet() {
  local target=$1 port=$2 dir=$RUN_DIR/$SC_NAME/$1 balance=least_conn protocols='"http1"' s
  [[ $target == parapet_rr ]] && balance=round_robin
  [[ $SC_PROTO == h2c ]] && protocols='"http1", "h2c"'
  [[ $SC_PROTO == h2 ]] && protocols='"http1", "h2"'
  [[ $SC_PROTO == h3 ]] && protocols='"http1", "h2", "h3"'
  mkdir -p "$dir"
  {
    cat <<EOF
[server]
threads = 1
grace_period = "1s"

[[listener]]
address = "127.0.0.1:$port"
protocols = [$protocols]
EOF
    if [[ $SC_PROTO == h2 || $SC_PROTO == h3 ]]; then
      printf '\n[[listener.certificate]]\ncert = "%s"\nkey = "%s"\n' \
        "$RUN_DIR/certs/localhost.crt" "$RUN_DIR/certs/localhost.key"
    fi
    cat <<EOF

[upstream.bench]
balance = "$balance"
keepalive = 64
EOF
    for s in "${SC_BACKENDS[@]}"; do
      printf '\n[[upstream.bench.server]]\naddress = "%s"\n' "$s"
    done
    printf '\n[[route]]\npath_prefix = "/"\nupstream = "bench"\n'
    # Cache: [cache] defaults (256 MiB, 8 MiB objects). Compression: [compression] defaults
    # (br 3, zstd 1, gzip 2), only used when the client sends Accept-Encoding.
    ((SC_CACHE)) && printf 'cache = true\n'
    ((SC_COMPRESS)) || printf 'compress = false\n'
  } >"$dir/parapet.toml"
  "$PARAPET" check -c "$dir/parapet.toml" >/dev/null || die "generated $dir/parapet.toml does not validate"
  start_pinned "$PROXY_CPU" "$dir/parapet.log" env RUST_LOG=warn "$PARAPET" run -c "$dir/parapet.toml"
  PROXY_LOG[$target]=$dir/parapet.log
}

start_nginx_proxy() {
  local port=$1 listen_opts="" s name=proxy-$SC_NAME cache_dir extra_http="" extra_loc=""
  [[ $SC_PROTO == h2c ]] && listen_opts=" http2"
  [[ $SC_PROTO == h2 ]] && listen_opts=" ssl http2"
  if ((SC_CACHE)); then
    # Cache files in tmpfs when there is one (Parapet's cache is in memory).
    cache_dir=$RUN_DIR/nginx-$name/cache
    [[ -d /dev/shm && -w /dev/shm ]] && cache_dir=$(mktemp -d /dev/shm/parapet-bench-nginx-cache.XXXXXX)
    NGINX_CACHE_DIRS+=("$cache_dir")
    extra_http+="    proxy_cache_path $cache_dir levels=1:2 keys_zone=bench:16m max_size=512m inactive=1h use_temp_path=off;"$'\n'
    extra_loc+="            proxy_cache bench;"$'\n'
    extra_loc+="            proxy_cache_valid 200 1h;"$'\n'
    extra_loc+="            proxy_cache_lock on;"$'\n'
    extra_loc+="            add_header X-Cache-Status \$upstream_cache_status;"$'\n'
  fi
  if ((SC_COMPRESS)); then
    extra_http+="    gzip on; gzip_comp_level 1; gzip_types application/json; gzip_min_length 1024; gzip_proxied any;"$'\n'
  fi
  if [[ $SC_PROTO == h2 ]]; then
    extra_http+="    ssl_certificate $RUN_DIR/certs/localhost.crt;"$'\n'
    extra_http+="    ssl_certificate_key $RUN_DIR/certs/localhost.key;"$'\n'
    extra_http+="    ssl_protocols TLSv1.2 TLSv1.3;"$'\n'
  fi
  mkdir -p "$RUN_DIR/nginx-$name"
  {
    nginx_main "$name"
    echo "http {"
    nginx_http_common "$name"
    printf '%s' "$extra_http"
    echo "    upstream bench {"
    echo "        least_conn;"
    for s in "${SC_BACKENDS[@]}"; do
      echo "        server $s;"
    done
    cat <<EOF
        keepalive 64;
        keepalive_requests 100000000;
        keepalive_timeout 60s;
    }
    server {
        listen 127.0.0.1:$port$listen_opts backlog=4096;
        location / {
            proxy_pass http://bench;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host \$http_host;
            proxy_set_header X-Forwarded-For \$proxy_add_x_forwarded_for;
            proxy_set_header X-Forwarded-Proto \$scheme;
            proxy_buffer_size 16k;
            proxy_buffers 16 16k;
            proxy_busy_buffers_size 32k;
            proxy_max_temp_file_size 0;
$extra_loc        }
    }
}
EOF
  } >"$RUN_DIR/nginx-$name/nginx.conf"
  start_nginx "$PROXY_CPU" "$name"
  PROXY_LOG[nginx]=$RUN_DIR/nginx-$name/error.log
}

# HAProxy refuses to start unless the open-file limit covers two descriptors per connection
# (20,000 here allows 9,984); past its maxconn it stops accepting (connections wait in the
# backlog) rather than failing, which many_conns with 10,000 idle connections then shows.
haproxy_maxconn() {
  local wanted=$((IDLE_CONNS + 2000)) allowed=$(($(ulimit -n) / 2 - 16))
  echo $((wanted < allowed ? wanted : allowed))
}

start_haproxy() {
  local port=$1 bind_opts="" dir=$RUN_DIR/$SC_NAME/haproxy n=0 s xfp=http
  [[ $SC_PROTO == h2c ]] && bind_opts=" proto h2"
  if [[ $SC_PROTO == h2 ]]; then
    bind_opts=" ssl crt $RUN_DIR/certs/localhost.pem alpn h2,http/1.1"
    xfp=https
  fi
  mkdir -p "$dir"
  {
    cat <<EOF
global
    nbthread 1
    maxconn $(haproxy_maxconn)
    tune.bufsize 16384

defaults
    mode http
    maxconn $(haproxy_maxconn)
    option http-keep-alive
    option forwardfor
    http-reuse always
    timeout connect 1s
    timeout client 120s
    timeout server 30s
    timeout http-request 10s
    timeout http-keep-alive 120s

frontend bench
    bind 127.0.0.1:$port$bind_opts
    http-request set-header X-Forwarded-Proto $xfp
    default_backend bench

backend bench
    balance leastconn
EOF
    if ((SC_CACHE)); then
      # The cache filter declared before compression: it stores identity bodies and the
      # compression filter works on every hit (as nginx's proxy_cache + gzip does).
      echo "    filter cache bench"
      ((SC_COMPRESS)) && echo "    filter compression"
      echo "    http-request cache-use bench"
      echo "    http-response cache-store bench"
    fi
    if ((SC_COMPRESS)); then
      echo "    compression algo gzip"
      echo "    compression type application/json"
    fi
    for s in "${SC_BACKENDS[@]}"; do
      n=$((n + 1))
      echo "    server s$n $s"
    done
    if ((SC_CACHE)); then
      printf '\ncache bench\n    total-max-size 256\n    max-object-size 1048576\n    max-age 3600\n'
    fi
  } >"$dir/haproxy.cfg"
  haproxy -c -q -f "$dir/haproxy.cfg" >&2 || die "haproxy config $dir/haproxy.cfg is invalid"
  start_pinned "$PROXY_CPU" "$dir/haproxy.log" haproxy -db -f "$dir/haproxy.cfg"
  PROXY_LOG[haproxy]=$dir/haproxy.log
}

declare -A TARGET_PORT PROXY_PID PROXY_LOG RSS_BEFORE MAX_RPS
NGINX_CACHE_DIRS=()

label_of() {
  local enc
  enc=$(encoding_of "$1")
  case $1 in
  parapet_br) ;;
  *) [[ -n $enc ]] && printf 'Accept-Encoding %s: ' "$enc" ;;
  esac
  case $1 in
  direct) echo "origin direct" ;;
  parapet) echo "Parapet (least_conn)" ;;
  parapet_rr) echo "Parapet (round_robin)" ;;
  parapet_br) echo "Parapet, Accept-Encoding: br" ;;
  nginx) echo "nginx $(nginx -v 2>&1 | sed 's|.*nginx/||') (least_conn)" ;;
  haproxy) echo "HAProxy $(haproxy -v | awk 'NR == 1 { print $3 }') (leastconn)" ;;
  esac
}

# Starts the scenario's proxies and checks each answers through to its origins.
start_targets() {
  local t port
  read -r -a PROXY_PORTS <<<"$(free_ports 4)"
  local i=0
  for t in "${SC_TARGETS[@]}"; do
    if [[ $t == direct ]]; then
      TARGET_PORT[$t]=$SC_DIRECT_PORT
      PROXY_PID[$t]=""
      continue
    fi
    port=${PROXY_PORTS[$i]}
    i=$((i + 1))
    TARGET_PORT[$t]=$port
    case $t in
    parapet | parapet_rr | parapet_br) start_parapet "$t" "$port" ;;
    nginx) start_nginx_proxy "$port" ;;
    haproxy) start_haproxy "$port" ;;
    *) die "unknown target $t" ;;
    esac
    PROXY_PID[$t]=$LAST_PID
  done
  for t in "${SC_TARGETS[@]}"; do
    [[ $t == direct ]] && continue
    wait_ready "$t" "${PROXY_PID[$t]}" "${TARGET_PORT[$t]}" "$SC_PATH" "$SC_PROTO" "${PROXY_LOG[$t]}"
  done
  sleep 0.5
  for t in "${SC_TARGETS[@]}"; do
    if [[ -n ${PROXY_PID[$t]} ]]; then
      # shellcheck disable=SC2046
      RSS_BEFORE[$t]=$(rss_kib $(tree_pids "${PROXY_PID[$t]}"))
    else
      RSS_BEFORE[$t]=null
    fi
  done
}

stop_targets() {
  local t
  for t in "${SC_TARGETS[@]}"; do
    [[ -n ${PROXY_PID[$t]:-} ]] && stop_pid "${PROXY_PID[$t]}"
  done
}

# ---------------------------------------------------------------- load runs

# Accept-Encoding the client sends to target $1 ("" = none).
encoding_of() {
  if [[ $1 == parapet_br ]]; then echo br; else echo "$SC_ENCODING"; fi
}

url_of() {
  local scheme=http
  [[ $SC_PROTO == h2 || $SC_PROTO == h3 ]] && scheme=https
  echo "$scheme://127.0.0.1:${TARGET_PORT[$1]}$SC_PATH"
}

# oha arguments for target $1.
oha_base() {
  # --disable-compression: oha neither asks for compression nor decodes; the compression
  # scenarios send Accept-Encoding themselves (-H), so the proxy compresses and oha counts the
  # compressed bytes without spending CPU 1 on decoding them.
  local -a args=(--no-tui --output-format json --worker-threads 1 -t 10s --disable-compression)
  local enc
  enc=$(encoding_of "$1")
  [[ -n $enc ]] && args+=(-H "Accept-Encoding: $enc")
  if [[ $SC_PROTO == h2 || $SC_PROTO == h3 ]]; then
    # The dev certificate is for 127.0.0.1 too, but oha would also need the dev CA; the
    # handshake cost is the same either way.
    args+=(--insecure)
  fi
  if [[ $SC_PROTO == h3 ]]; then
    args+=(--http-version 3 -c "$((CONNS / 8 > 0 ? CONNS / 8 : 1))" -p 8)
  elif [[ $SC_PROTO == h2c || $SC_PROTO == h2 ]]; then
    # 8 connections x 8 streams = the same 64 requests in flight as HTTP/1.1's 64 connections.
    args+=(--http2 -c "$((CONNS / 8 > 0 ? CONNS / 8 : 1))" -p 8)
  else
    args+=(-c "$CONNS")
  fi
  printf '%s\n' "${args[@]}"
}

# run_phase TARGET PHASE(max|rate) [RATE]: one bounded oha run; appends one JSON record.
run_phase() {
  local t=$1 phase=$2 rate=${3:-} url secs out t0 t1 c0 c1 idle_json=null
  local -a counts0=() counts1=() args pids=()
  url=$(url_of "$t")
  out=$RUN_DIR/$SC_NAME/$t.$phase.$ROUND.json
  mkdir -p "$RUN_DIR/$SC_NAME"
  mapfile -t args < <(oha_base "$t")
  if [[ $phase == max ]]; then
    secs=$MAX_SECS
    args+=(-z "${secs}s" -w)
  else
    secs=$RATE_SECS
    # A fixed count at a fixed rate ends by itself without deadline aborts; -t bounds stragglers.
    args+=(-q "$rate" -n "$((rate * secs))" --latency-correction)
  fi

  local idle_pid="" ready=$RUN_DIR/$SC_NAME/$t.$phase.idle-ready
  if ((SC_IDLE > 0)); then
    rm -f "$ready"
    taskset -c "$LOAD_CPU" python3 "$ROOT/benches/idle_conns.py" --port "${TARGET_PORT[$t]}" \
      --count "$SC_IDLE" --seconds "$((secs + 1))" --path "$SC_PATH" --ready-file "$ready" \
      >"$RUN_DIR/$SC_NAME/$t.$phase.idle.json" 2>"$RUN_DIR/$SC_NAME/$t.$phase.idle.log" &
    idle_pid=$!
    STARTED_PIDS+=("$idle_pid")
    local i
    for i in $(seq 600); do
      [[ -e $ready ]] && break
      kill -0 "$idle_pid" 2>/dev/null || die "idle-connection helper failed (see $RUN_DIR/$SC_NAME/$t.$phase.idle.log)"
      sleep 0.1
    done
    [[ -e $ready ]] || die "idle-connection helper did not get its connections open in 60 s"
  fi

  [[ -n ${PROXY_PID[$t]} ]] && mapfile -t pids < <(tree_pids "${PROXY_PID[$t]}")
  wait_quiet
  local s core0 core1
  for s in "${SC_COUNT_PORTS[@]}"; do counts0+=("$(origin_requests "$s")"); done
  ((${#pids[@]})) && c0=$(cpu_ticks "${pids[@]}")
  core0=$(cpu_busy "$PROXY_CPU")
  t0=$(date +%s.%N)
  timeout --signal=KILL "$((secs + 30))" taskset -c "$LOAD_CPU" "$OHA" "${args[@]}" "$url" >"$out" ||
    die "oha failed against $t ($url); output in $out"
  t1=$(date +%s.%N)
  core1=$(cpu_busy "$PROXY_CPU")
  local rss_end=null cpu_ticks_used=null
  if ((${#pids[@]})); then
    c1=$(cpu_ticks "${pids[@]}")
    cpu_ticks_used=$((c1 - c0))
    rss_end=$(rss_kib "${pids[@]}")
  fi
  for s in "${SC_COUNT_PORTS[@]}"; do counts1+=("$(origin_requests "$s")"); done
  if [[ -n $idle_pid ]]; then
    wait "$idle_pid" || die "idle-connection helper failed"
    idle_json=$(<"$RUN_DIR/$SC_NAME/$t.$phase.idle.json")
  fi
  local served_json=null
  if ((${#SC_COUNT_PORTS[@]})); then
    served_json=$(for i in "${!SC_COUNT_PORTS[@]}"; do echo $((counts1[i] - counts0[i])); done | jq -s -c .)
  fi

  jq -c -n --slurpfile o "$out" --argjson round "$ROUND" \
    --arg scenario "$SC_NAME" --arg target "$t" --arg lbl "$(label_of "$t")" --arg phase "$phase" \
    --argjson rate "${rate:-null}" --argjson cpu_ticks "$cpu_ticks_used" --argjson clk_tck "$CLK_TCK" \
    --argjson wall "$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.3f", b - a }')" \
    --argjson rss_before "${RSS_BEFORE[$t]}" --argjson rss_end "$rss_end" \
    --argjson idle "$idle_json" --argjson served "$served_json" \
    --argjson core_busy "$((core1 - core0))" --argjson quiet "$QUIET" --argjson quiet_waited "$QUIET_WAITED" '
    ($o[0]) as $r
    | ($r.statusCodeDistribution // {}) as $codes
    | ($r.errorDistribution // {}) as $errs
    | ([$codes | to_entries[] | select(.key | test("^2") | not) | .value] | add // 0) as $non2xx
    | ([$codes | to_entries[] | select(.key | test("^2")) | .value] | add // 0) as $ok
    | ([$errs | to_entries[] | .value] | add // 0) as $conn_errors
    | {
        scenario: $scenario, target: $target, label: $lbl, phase: $phase, round: $round,
        offered_rate: $rate,
        wall_s: $wall, requests_ok: $ok, non_2xx: $non2xx, connection_errors: $conn_errors,
        error_kinds: $errs, rps: $r.summary.requestsPerSec,
        p50_ms: ($r.latencyPercentiles.p50 * 1000), p99_ms: ($r.latencyPercentiles.p99 * 1000),
        p999_ms: ($r.latencyPercentiles["p99.9"] * 1000),
        latency_corrected: ($phase == "rate"),
        proxy_cpu_ticks: $cpu_ticks, clk_tck: $clk_tck,
        proxy_cpu_us_per_req: (if $cpu_ticks == null or ($ok + $non2xx) == 0 then null
                               else ($cpu_ticks * 1e6 / $clk_tck / ($ok + $non2xx)) end),
        proxy_cpu_util: (if $cpu_ticks == null then null else ($cpu_ticks / $clk_tck / $wall) end),
        rss_before_kib: $rss_before, rss_end_kib: $rss_end,
        proxy_core_busy_util: ($core_busy / $clk_tck / $wall),
        proxy_core_other_util: (($core_busy - ($cpu_ticks // 0)) / $clk_tck / $wall),
        quiet_before: ($quiet == 1), quiet_waited_s: $quiet_waited,
        idle_connections: $idle, origin_requests: $served
      }' >>"$RUN_DIR/records.jsonl"
  jq -r --arg p "$phase" 'select(.scenario == "'"$SC_NAME"'" and .target == "'"$t"'" and .phase == $p)
    | "  \(.target) \(.phase): \(.rps | floor) req/s, p99 \(.p99_ms * 1000 | floor / 1000) ms, errors \(.non_2xx + .connection_errors), CPU \(.proxy_cpu_us_per_req // "-") us/req"' \
    "$RUN_DIR/records.jsonl" | tail -n 1 >&2
  [[ $phase == max ]] && MAX_RPS[$t]+=" $(jq -r '.rps' <<<"$(tail -n 1 "$RUN_DIR/records.jsonl")")"
  return 0
}

# After the warm-up: one request as oha sends it; checks (and logs) that a cache scenario's
# response is a hit and a compression scenario's is encoded as asked. Dies otherwise.
check_response() {
  local t=$1 enc hdrs line="" proto_arg=(--http1.1) ok=1
  [[ $t == direct ]] && return 0
  enc=$(encoding_of "$t")
  [[ $SC_PROTO == h2 ]] && proto_arg=(--http2)
  [[ $SC_PROTO == h2c ]] && proto_arg=(--http2-prior-knowledge)
  [[ $SC_PROTO == h3 ]] && return 0
  local -a h=()
  [[ -n $enc ]] && h=(-H "Accept-Encoding: $enc")
  hdrs=$(curl -s -k "${proto_arg[@]}" --max-time 5 -o /dev/null -D - "${h[@]}" "$(url_of "$t")" | tr -d '\r') ||
    die "check request to $t failed"
  line=$(grep -i -E '^(HTTP/|cache-status|x-cache-status|age|content-encoding|content-length)' <<<"$hdrs" | tr '\n' ' ')
  log "  $t check: $line"
  if ((SC_CACHE)); then
    case $t in
    parapet*) grep -qi '^cache-status:.*hit' <<<"$hdrs" || ok=0 ;;
    nginx) grep -qi '^x-cache-status: *HIT' <<<"$hdrs" || ok=0 ;;
    haproxy) grep -qi '^age:' <<<"$hdrs" || ok=0 ;; # HAProxy's cache adds Age to what it serves
    esac
  fi
  if [[ -n $enc ]]; then
    grep -qi "^content-encoding: *$enc" <<<"$hdrs" || ok=0
  fi
  ((ok)) || die "$t: the response after warm-up is not what $SC_NAME measures (cache=$SC_CACHE, Content-Encoding wanted: ${enc:-none}): $line"
  echo "$SC_NAME $t $line" >>"$RUN_DIR/checks.txt"
}

# Runs the scenario described by the SC_* variables against SC_TARGETS.
run_scenario() {
  local t rate proxies_min
  log "scenario $SC_NAME: $SC_TITLE"
  start_targets
  for t in "${SC_TARGETS[@]}"; do
    mapfile -t warm < <(oha_base "$t")
    timeout --signal=KILL "$((WARMUP_SECS + 30))" taskset -c "$LOAD_CPU" "$OHA" "${warm[@]}" \
      -z "${WARMUP_SECS}s" -w "$(url_of "$t")" >/dev/null ||
      die "warm-up against $t failed"
    check_response "$t"
    MAX_RPS[$t]=""
  done
  for ROUND in $(seq "$ROUNDS"); do
    for t in "${SC_TARGETS[@]}"; do run_phase "$t" max; done
  done
  if [[ -n $RATE_FIXED ]]; then
    rate=$RATE_FIXED
  else
    # The slowest proxy's median max req/s over the rounds.
    proxies_min=$(for t in "${SC_TARGETS[@]}"; do
      [[ $t == direct ]] || tr ' ' '\n' <<<"${MAX_RPS[$t]}" | grep . | sort -g |
        awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'
    done | sort -g | head -n 1)
    rate=$(awk -v m="$proxies_min" -v f="$RATE_FRACTION" 'BEGIN { r = int(m * f / 100) * 100; print (r < 100 ? 100 : r) }')
  fi
  log "  offered rate for the latency phase: $rate req/s"
  for ROUND in $(seq "$ROUNDS"); do
    for t in "${SC_TARGETS[@]}"; do run_phase "$t" rate "$rate"; done
  done
  stop_targets
  jq -c -n --arg name "$SC_NAME" --arg title "$SC_TITLE" --arg what "$SC_WHAT" --argjson rate "$rate" \
    --arg path "$SC_PATH" --arg proto "$SC_PROTO" --argjson idle "$SC_IDLE" \
    --argjson backends "$(printf '%s\n' "${SC_BACKENDS[@]}" | jq -R . | jq -s -c .)" \
    --argjson origin_names "$(printf '%s\n' "${SC_COUNT_NAMES[@]}" | jq -R 'select(. != "")' | jq -s -c .)" \
    '{name: $name, title: $title, what: $what, offered_rate: $rate, path: $path, protocol: $proto,
      idle_connections: $idle, backends: $backends, origin_names: $origin_names}' \
    >>"$RUN_DIR/scenarios.jsonl"
}

# ---------------------------------------------------------------- scenarios

# Defaults every scenario starts from.
scenario_defaults() {
  SC_PROTO=h1
  SC_PATH=/1k.bin
  SC_BACKENDS=("127.0.0.1:$PORT_A")
  SC_DIRECT_PORT=$PORT_A
  SC_TARGETS=(direct parapet nginx haproxy)
  SC_IDLE=0
  SC_COUNT_PORTS=()
  SC_COUNT_NAMES=()
  SC_CACHE=0
  SC_COMPRESS=0
  SC_ENCODING=""
}

scenario_h1_1k() {
  scenario_defaults
  SC_NAME=h1_1k
  SC_TITLE="HTTP/1.1, 1 KiB, proxied"
  SC_WHAT="Per-request overhead: small static responses over keep-alive connections, one origin."
  run_scenario
}

scenario_h1_100k() {
  scenario_defaults
  SC_NAME=h1_100k
  SC_TITLE="HTTP/1.1, 100 KiB, proxied"
  SC_WHAT="Body streaming: 100 KiB responses, one origin."
  SC_PATH=/100k.bin
  run_scenario
}

scenario_h2c_1k() {
  scenario_defaults
  SC_NAME=h2c_1k
  SC_TITLE="h2c (prior knowledge), 1 KiB"
  SC_WHAT="HTTP/2 framing downstream (8 connections x 8 streams), HTTP/1.1 keep-alive upstream."
  SC_PROTO=h2c
  SC_DIRECT_PORT=$PORT_A_H2C
  run_scenario
}

scenario_many_conns() {
  scenario_defaults
  SC_NAME=many_conns
  SC_TITLE="HTTP/1.1, 1 KiB, with $IDLE_CONNS idle keep-alive connections held open"
  SC_WHAT="Cost of many idle client connections: memory, and whether they slow the active ones."
  SC_IDLE=$IDLE_CONNS
  run_scenario
}

scenario_slow_backend() {
  scenario_defaults
  SC_NAME=slow_backend
  SC_TITLE="Slow backend among fast ones (1 of 3 origins answers after ${SLOW_MS} ms)"
  SC_WHAT="Balancing: least connections should steer around the slow server; round robin cannot."
  SC_BACKENDS=("127.0.0.1:$PORT_A" "127.0.0.1:$PORT_B" "127.0.0.1:$PORT_C")
  SC_TARGETS=(parapet parapet_rr nginx haproxy)
  SC_DIRECT_PORT=""
  SC_COUNT_PORTS=("$PORT_A" "$PORT_B" "$PORT_C")
  SC_COUNT_NAMES=(fast-a fast-b slow-c)
  run_scenario
}

# The cacheable origin (Cache-Control: max-age=3600); origin requests counted so the JSON shows
# that nearly everything was served from the proxies' caches.
cacheable_defaults() {
  scenario_defaults
  SC_BACKENDS=("127.0.0.1:$PORT_D")
  SC_DIRECT_PORT=$PORT_D
  SC_COUNT_PORTS=("$PORT_D")
  SC_COUNT_NAMES=(origin)
}

scenario_cache_hit_1k() {
  cacheable_defaults
  SC_NAME=cache_hit_1k
  SC_TITLE="HTTP/1.1, 1 KiB, cache hit"
  SC_WHAT="Serving from the proxy's cache: origin says max-age=3600; Parapet route cache = true, nginx proxy_cache (tmpfs, proxy_cache_lock), HAProxy cache section. Warmed, and a hit checked, before measuring; the origin row is uncached."
  SC_CACHE=1
  run_scenario
}

scenario_cache_hit_100k() {
  cacheable_defaults
  SC_NAME=cache_hit_100k
  SC_TITLE="HTTP/1.1, 100 KiB, cache hit"
  SC_WHAT="As cache_hit_1k with a 100 KiB body (HAProxy max-object-size 1 MiB)."
  SC_PATH=/100k.bin
  SC_CACHE=1
  run_scenario
}

scenario_compress_100k_json_miss() {
  cacheable_defaults
  SC_NAME=compress_100k_json_miss
  SC_TITLE="HTTP/1.1, 100 KiB JSON, Accept-Encoding: gzip, no cache"
  SC_WHAT="Compressing every response: Parapet default levels (gzip 2; the br row: brotli 3), nginx gzip_comp_level 1, HAProxy compression algo gzip (libslz). No cache anywhere. The origin row is identity."
  SC_PATH=/100k.json
  SC_COMPRESS=1
  SC_ENCODING=gzip
  SC_TARGETS=(direct parapet parapet_br nginx haproxy)
  run_scenario
}

scenario_compress_100k_json_hit() {
  cacheable_defaults
  SC_NAME=compress_100k_json_hit
  SC_TITLE="HTTP/1.1, 100 KiB JSON, Accept-Encoding: gzip, cache hit"
  SC_WHAT="Compression with the cache on: Parapet stores the compressed variant; nginx proxy_cache stores identity and gzips (level 1) on every hit; HAProxy's cache filter stores identity, its compression filter gzips every hit."
  SC_PATH=/100k.json
  SC_CACHE=1
  SC_COMPRESS=1
  SC_ENCODING=gzip
  SC_TARGETS=(direct parapet parapet_br nginx haproxy)
  run_scenario
}

scenario_tls_h2_1k() {
  scenario_defaults
  SC_NAME=tls_h2_1k
  SC_TITLE="TLS + HTTP/2 by ALPN, 1 KiB"
  SC_WHAT="TLS termination with h2 downstream (dev certificate from parapet certs dev; 8 connections x 8 streams), HTTP/1.1 upstream. No origin row (the origin has no TLS listener)."
  SC_PROTO=h2
  SC_TARGETS=(parapet nginx haproxy)
  SC_DIRECT_PORT=""
  run_scenario
}

# True when this oha was built with HTTP/3 (its http3 cargo feature).
oha_speaks_http3() {
  local probe
  probe=$(timeout 5 "$1" --no-tui --http-version 3 --insecure -n 1 -t 1s https://127.0.0.1:9/ 2>&1 || true)
  ! grep -q 'not been built with HTTP/3' <<<"$probe"
}

scenario_http3_1k() {
  scenario_defaults
  SC_NAME=http3_1k
  SC_TITLE="HTTP/3 (QUIC), 1 KiB, Parapet only"
  SC_WHAT="QUIC + HTTP/3 downstream (oha --http-version 3, 8 connections x 8 streams), HTTP/1.1 upstream. nginx 1.22 and HAProxy 2.6 as packaged have no QUIC, so Parapet alone."
  SC_PROTO=h3
  SC_TARGETS=(parapet)
  SC_DIRECT_PORT=""
  # oha's HTTP/3 is a cargo feature (cargo install oha --features http3); without it oha says so.
  if ! oha_speaks_http3 "$OHA"; then
    log "scenario http3_1k skipped: $OHA has no HTTP/3 (reinstall with: cargo install oha --locked --features http3 --root $TOOLS)"
    NOT_YET+=("http3_1k: skipped, $OHA was built without HTTP/3 (cargo install oha --locked --features http3 --root target/bench-tools, then rerun)")
    return 0
  fi
  run_scenario
}

# ---------------------------------------------------------------- main

main() {
  local sc
  for sc in "${SCENARIOS[@]}"; do
    declare -F "scenario_$sc" >/dev/null || die "unknown scenario '$sc' (known: ${ALL_SCENARIOS[*]})"
  done
  [[ $(nproc) -ge 2 ]] || log "warning: fewer than 2 CPUs; proxy and load will share a core"
  ulimit -n "$(ulimit -Hn)" || true
  (($(ulimit -n) >= IDLE_CONNS + 1000)) ||
    die "the open-file limit is $(ulimit -n); need $((IDLE_CONNS + 1000)) for BENCH_IDLE_CONNS=$IDLE_CONNS"
  install_tools
  build_parapet
  [[ -x $PARAPET ]] || die "$PARAPET is missing"

  rm -rf "$RUN_DIR"
  mkdir -p "$RUN_DIR"
  : >"$RUN_DIR/records.jsonl"
  : >"$RUN_DIR/scenarios.jsonl"
  make_content
  read -r PORT_A PORT_A_H2C PORT_B PORT_C PORT_D <<<"$(free_ports 5)"
  start_origins
  log "origins: a=127.0.0.1:$PORT_A (h2c :$PORT_A_H2C, cacheable :$PORT_D) b=:$PORT_B c(slow)=:$PORT_C"

  local started_at
  started_at=$(date -u +%Y-%m-%dT%H:%M:%SZ)
  for sc in "${SCENARIOS[@]}"; do
    "scenario_$sc"
  done

  jq -n -c \
    --arg date "$started_at" --arg finished "$(date -u +%Y-%m-%dT%H:%M:%SZ)" \
    --arg cpu "$(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo)" \
    --argjson cores "$(nproc)" --arg kernel "$(uname -r)" --arg loadavg "$(cut -d' ' -f1-3 /proc/loadavg)" \
    --arg parapet_rev "$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)$(git -C "$ROOT" diff --quiet -- src 2>/dev/null || echo '+dirty')" \
    --arg nginx "$(nginx -v 2>&1 | sed 's|.*nginx/||')" --arg haproxy "$(haproxy -v | awk 'NR == 1 { print $3 }')" \
    --arg oha "$("$OHA" --version | awk '{ print $2 }')" \
    --arg command "$(env | grep '^BENCH_' | sort | tr '\n' ' ')bash benches/compare.sh" \
    --argjson max_secs "$MAX_SECS" --argjson rate_secs "$RATE_SECS" --argjson conns "$CONNS" --argjson rounds "$ROUNDS" \
    --arg rate_rule "$(if [[ -n $RATE_FIXED ]]; then echo "fixed $RATE_FIXED req/s"; else echo "$RATE_FRACTION x the slowest proxy's max req/s, rounded down to 100"; fi)" \
    --argjson proxy_cpu "$PROXY_CPU" --argjson load_cpu "$LOAD_CPU" \
    --argjson not_yet "$(if ((${#NOT_YET[@]})); then printf '%s\n' "${NOT_YET[@]}" | jq -R . | jq -s -c .; else echo '[]'; fi)" \
    '{date: $date, finished: $finished, cpu: $cpu, cores: $cores, kernel: $kernel,
      loadavg_at_end: $loadavg, parapet_rev: $parapet_rev, nginx: $nginx, haproxy: $haproxy,
      oha: $oha, command: $command, rounds: $rounds, max_phase_s: $max_secs, rate_phase_s: $rate_secs,
      connections: $conns, rate_rule: $rate_rule, proxy_cpu: $proxy_cpu, load_cpu: $load_cpu,
      not_yet: $not_yet}' >"$RUN_DIR/meta.json"

  python3 "$ROOT/benches/compare_report.py" "$RUN_DIR" "$OUT_DIR/compare.md" "$OUT_DIR/compare.json"
  cat "$OUT_DIR/compare.md"
  log "wrote $OUT_DIR/compare.md and $OUT_DIR/compare.json"
}

main "$@"
