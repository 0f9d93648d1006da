#!/usr/bin/env python3
"""Proxy CPU per request for a 100 KiB JSON response, compressed and not: Parapet with its
default levels (br 3, zstd 1, gzip 2) and identity, and nginx (when installed) with gzip level 1
and identity, in front of the same origin.

    cargo build --release && python3 benches/compression_cpu.py [REQUESTS]

Every request is a miss (no cache): the origin answers each one, the proxy compresses each one.
CPU is the proxy's utime+stime from /proc/PID/stat (all threads; nginx: master and workers)
over REQUESTS sequential keep-alive requests after a warm-up, divided by REQUESTS. The origin
and the client are other processes and are not counted. Why not a timed assertion: speed is
proven here, by a person reading the figures, never by a test.

Environment: PARAPET (default target/release/parapet), NGINX (default `nginx` on PATH),
BODY_KIB (default 100), COMPRESSION (extra lines for Parapet's [compression] table, e.g.
"gzip_level = 1").
"""

import http.client
import http.server
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time

REQUESTS = int(sys.argv[1]) if len(sys.argv) > 1 else 2000
WARMUP = 200
BODY_KIB = int(os.environ.get("BODY_KIB", "100"))
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PARAPET = os.environ.get("PARAPET", os.path.join(ROOT, "target", "release", "parapet"))
NGINX = os.environ.get("NGINX", shutil.which("nginx") or "")
CHROME = "gzip, deflate, br, zstd"
TICKS = os.sysconf("SC_CLK_TCK")


def api_json(length):
    """API-like JSON: ids, names, emails, dates, numbers, tags (the lvl measurements' body)."""
    words = ["alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel",
             "india", "juliet", "kilo", "lima"]
    x = 0x9E3779B97F4A7C15
    out, i = ["["], 0
    size = 1
    while size < length:
        x ^= (x << 13) & 0xFFFFFFFFFFFFFFFF
        x ^= x >> 7
        x ^= (x << 17) & 0xFFFFFFFFFFFFFFFF
        a = x
        item = ('{"id":%d,"uuid":"%016x","name":"%s %s","email":"%s.%d@example.com",'
                '"score":%d.%02d,"active":%s,"created_at":"2024-%02d-%02dT%02d:%02d:%02dZ",'
                '"tags":["%s","%s"]},') % (
            i, a, words[a % 12], words[(a >> 8) % 12], words[(a >> 16) % 12], (a >> 24) % 10000,
            (a >> 32) % 1000, (a >> 40) % 100, "true" if (a >> 45) % 2 == 0 else "false",
            1 + (a >> 46) % 12, 1 + (a >> 50) % 28, (a >> 52) % 24, (a >> 56) % 60,
            (a >> 58) % 60, words[(a >> 3) % 12], words[(a >> 5) % 12])
        out.append(item)
        size += len(item)
        i += 1
    body = "".join(out)[: length - 1] + "]"
    return body.encode()


BODY = api_json(BODY_KIB * 1024)


class Origin(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self):
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(BODY)))
        self.end_headers()
        self.wfile.write(BODY)

    def log_message(self, *args):
        pass


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_listening(port):
    deadline = time.time() + 10
    while time.time() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise SystemExit(f"nothing listens on {port}")


def cpu_seconds(pids):
    total = 0
    for pid in pids:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15)
    return total / TICKS


def children(pid):
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    if int(f.read().rsplit(")", 1)[1].split()[1]) == pid:
                        found.append(int(entry))
            except OSError:
                pass
    return found


def measure(port, pids, accept):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    headers = {"Accept-Encoding": accept} if accept else {}

    def one():
        conn.request("GET", "/data.json", headers=headers)
        response = conn.getresponse()
        body = response.read()
        if response.status != 200:
            raise SystemExit(f"status {response.status}")
        return response.getheader("Content-Encoding") or "identity", len(body)

    for _ in range(WARMUP):
        one()
    before = cpu_seconds(pids)
    for _ in range(REQUESTS):
        coding, size = one()
    spent = cpu_seconds(pids) - before
    conn.close()
    return coding, size, spent / REQUESTS * 1e6


def parapet(origin_port, work):
    port = free_port()
    config = os.path.join(work, "parapet.toml")
    with open(config, "w") as f:
        f.write(f"""[server]
threads = 1
grace_period = "1s"
upgrade_socket = "{work}/upgrade.sock"

[[listener]]
address = "127.0.0.1:{port}"

[upstream.origin]
[[upstream.origin.server]]
address = "127.0.0.1:{origin_port}"

[[route]]
upstream = "origin"

[compression]
{os.environ.get("COMPRESSION", "")}
""")
    proc = subprocess.Popen([PARAPET, "run", "-c", config], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, env={**os.environ, "RUST_LOG": "warn"})
    wait_listening(port)
    return proc, port, lambda: [proc.pid]


def nginx(origin_port, work):
    port = free_port()
    config = os.path.join(work, "nginx.conf")
    with open(config, "w") as f:
        f.write(f"""worker_processes 1;
daemon off;
pid {work}/nginx.pid;
error_log {work}/nginx.err warn;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    client_body_temp_path {work}/body;
    proxy_temp_path {work}/proxy;
    fastcgi_temp_path {work}/fastcgi;
    uwsgi_temp_path {work}/uwsgi;
    scgi_temp_path {work}/scgi;
    upstream origin {{ server 127.0.0.1:{origin_port}; keepalive 32; }}
    server {{
        listen 127.0.0.1:{port};
        gzip on;
        gzip_comp_level 1;
        gzip_min_length 1024;
        gzip_proxied any;
        gzip_types application/json;
        location / {{
            proxy_pass http://origin;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }}
    }}
}}
""")
    proc = subprocess.Popen([NGINX, "-c", config, "-p", work], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    wait_listening(port)
    return proc, port, lambda: [proc.pid] + children(proc.pid)


def main():
    origin = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Origin)
    threading.Thread(target=origin.serve_forever, daemon=True).start()
    origin_port = origin.server_address[1]
    print(f"{REQUESTS} requests of a {len(BODY)} byte JSON body per row, after {WARMUP} warm-up")
    print(f"{'proxy':<8} {'Accept-Encoding':<24} {'coding':<9} {'bytes':>7} {'CPU us/req':>11}")
    targets = [("parapet", parapet)]
    if NGINX:
        targets.append(("nginx", nginx))
    for name, start in targets:
        with tempfile.TemporaryDirectory() as work:
            proc, port, pids = start(origin_port, work)
            try:
                cases = [None, CHROME, "zstd", "gzip"] if name == "parapet" else [None, "gzip"]
                for accept in cases:
                    coding, size, micros = measure(port, pids(), accept)
                    print(f"{name:<8} {accept or '(none)':<24} {coding:<9} {size:>7} {micros:>11.0f}")
            finally:
                proc.terminate()
                proc.wait(timeout=10)
    origin.shutdown()


if __name__ == "__main__":
    main()
