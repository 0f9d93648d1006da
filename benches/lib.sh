# Shared by the single-proxy benches (instructions.sh, idle_rss.sh, cpu_ab.sh); sourced, not run.
# bench_init NAME: a scratch dir in $RUN, PIDS stopped and $RUN removed on exit, die() naming
# NAME. nginx_conf DIR WORKER_CONNECTIONS SERVER_BLOCK: a one-worker nginx config for an origin
# whose files live under DIR. Everything listens on 127.0.0.1 with OS-chosen ports.

bench_init() {
  BENCH_NAME=$1
  RUN=$(mktemp -d "/tmp/parapet-$1.XXXXXX")
  PIDS=()
  trap bench_cleanup EXIT
}

bench_cleanup() {
  local pid
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
  rm -rf -- "$RUN"
}

die() {
  echo "[$BENCH_NAME] ERROR: $*" >&2
  exit 1
}

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

wait_port() {
  local i
  for i in $(seq 300); do
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
    sleep 0.1
  done
  die "nothing listens on $1"
}

nginx_conf() {
  cat <<CONF
worker_processes 1;
daemon off;
master_process off;
user root;
error_log $1/error.log warn;
pid $1/nginx.pid;
worker_rlimit_nofile $(ulimit -n);
events { worker_connections $2; }
http {
    access_log off;
    keepalive_timeout 300s;
    keepalive_requests 100000000;
    client_body_temp_path $1/tmp/body;
    proxy_temp_path $1/tmp/proxy;
    fastcgi_temp_path $1/tmp/fastcgi;
    uwsgi_temp_path $1/tmp/uwsgi;
    scgi_temp_path $1/tmp/scgi;
$3
}
CONF
}
