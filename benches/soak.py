#!/usr/bin/env python3
"""Soak: steady load through Parapet while its upstreams and Parapet itself are disturbed.

Runs the real `parapet` binary in front of backends this script starts, sends GETs at a fixed
rate (an open model: a request is due every 1/RATE s whether or not earlier ones finished) over
keep-alive connections, and meanwhile

  * takes one backend down for --flap-down seconds every --flap-every seconds (it stops
    listening and drops its connections, like a crashed process, then comes back),
  * reloads Parapet (SIGHUP) --reloads times, alternating the servers' weights,
  * upgrades Parapet (`parapet run --upgrade`, then SIGQUIT to the old one) --upgrades times,
  * optionally has every backend close connections idle for --backend-idle-timeout and drop
    (close unanswered) a --drop-rate fraction of requests.

At the end it prints one JSON object: requests sent, answered 200, and every failure by kind
(status, or the transport error), latency percentiles, the disturbances done, and Parapet's own
counters of stale-connection resends, connect failures and retries. It exits 1 when a request
failed, 2 when setup failed.

The client counts any answer but 200 and any transport error as a failure: it never retries.
Like HTTP client libraries, it does not reuse a pooled connection the server has already
closed, and reuses the most recently used connection first.

Bounded and loopback only: everything listens on 127.0.0.1 on OS-chosen ports; the run stops
after --duration plus at most 30 s of wind-down; every process started is stopped by its PID.

    python3 benches/soak.py                         # 10 min, 500 req/s, 3 backends, 1 flapping,
                                                    # 100 reloads, 5 upgrades (issue 16)
    python3 benches/soak.py --duration 60 --backends 1 --flap-every 0 --reloads 0 \\
        --upgrades 0 --backend-idle-timeout 1 --drop-rate 0.001
"""

import argparse
import asyncio
import json
import os
import random
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

HOST = "127.0.0.1"
ROOT = Path(__file__).resolve().parent.parent
REQUEST_TIMEOUT = 10.0
STEP = 0.002


def free_port():
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


class Backend:
    """An HTTP/1.1 keep-alive origin that can go down and come back on the same port."""

    def __init__(self, name, idle_timeout, drop_rate):
        self.name = name
        self.port = free_port()
        self.idle_timeout = idle_timeout
        self.drop_rate = drop_rate
        self.server = None
        self.connections = set()
        self.served = 0
        self.dropped = 0
        self.body = f"served by {name}\n".encode()

    async def start(self):
        self.server = await asyncio.start_server(self.serve, HOST, self.port, reuse_address=True)

    async def stop(self):
        self.server.close()
        for writer in list(self.connections):
            writer.transport.abort()
        await self.server.wait_closed()

    async def serve(self, reader, writer):
        self.connections.add(writer)
        try:
            while True:
                head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), self.idle_timeout)
                if self.drop_rate and random.random() < self.drop_rate:
                    self.dropped += 1
                    return
                self.served += 1
                writer.write(
                    b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: "
                    + str(len(self.body)).encode()
                    + b"\r\n\r\n"
                    + self.body
                )
                await writer.drain()
                if b"connection: close" in head.lower():
                    return
        except (asyncio.TimeoutError, asyncio.IncompleteReadError, ConnectionError, OSError):
            return
        except asyncio.CancelledError:
            # The run is over; end quietly rather than as a cancelled task.
            return
        finally:
            self.connections.discard(writer)
            writer.transport.abort()


def parapet_config(listen, admin, socket_path, backends, flip):
    weights = [1 + ((i + flip) % 2) for i in range(len(backends))]
    servers = "".join(
        f'\n[[upstream.app.server]]\naddress = "{HOST}:{b.port}"\nweight = {w}\n'
        for b, w in zip(backends, weights)
    )
    return f"""[server]
threads = 2
grace_period = "10s"
upgrade_socket = "{socket_path}"

[admin]
listen = "{HOST}:{admin}"

[[listener]]
address = "{HOST}:{listen}"
protocols = ["http1", "h2c"]

[upstream.app]
{servers}
[[route]]
upstream = "app"
"""


class Parapet:
    """The running parapet processes: the current one, and old ones still draining."""

    def __init__(self, binary, workdir):
        self.binary = binary
        self.workdir = workdir
        self.config = workdir / "parapet.toml"
        self.socket = workdir / "upgrade.sock"
        self.current = None
        self.old = []
        self.generation = 0

    def spawn(self, upgrade):
        self.generation += 1
        log = open(self.workdir / f"parapet.{self.generation}.log", "w")
        args = [str(self.binary), "run", "-c", str(self.config)]
        if upgrade:
            args.insert(2, "--upgrade")
        return subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=log, stderr=log)

    async def wait_until(self, condition, timeout, what):
        deadline = time.monotonic() + timeout
        while not condition():
            if time.monotonic() > deadline:
                raise RuntimeError(f"timed out waiting for {what}")
            await asyncio.sleep(0.02)

    async def upgrade(self):
        new = self.spawn(upgrade=True)
        await self.wait_until(self.socket.exists, 20, "the new process to wait for the sockets")
        self.current.send_signal(signal.SIGQUIT)
        await self.wait_until(lambda: not self.socket.exists(), 20, "the socket hand-over")
        self.old.append(self.current)
        self.current = new

    def reload(self):
        self.current.send_signal(signal.SIGHUP)

    def processes(self):
        return [p for p in [self.current, *self.old] if p is not None]

    def stop_all(self):
        for process in self.processes():
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 15
        for process in self.processes():
            try:
                process.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()

    def old_exit_codes(self):
        return [p.poll() for p in self.old]


class Client:
    """Keep-alive HTTP/1.1 connections to the proxy, most recently used first, never retried."""

    def __init__(self, port):
        self.port = port
        self.idle = []
        self.outcomes = Counter()
        self.latencies = []
        self.in_flight = 0

    async def connection(self):
        while self.idle:
            reader, writer = self.idle.pop()
            if not reader.at_eof() and not writer.is_closing():
                return reader, writer
            writer.close()
        return await asyncio.open_connection(HOST, self.port)

    async def get(self, path):
        started = time.monotonic()
        self.in_flight += 1
        try:
            outcome = await asyncio.wait_for(self.exchange(path), REQUEST_TIMEOUT)
        except asyncio.TimeoutError:
            outcome = "timeout"
        except (ConnectionError, OSError, asyncio.IncompleteReadError, ValueError) as e:
            outcome = f"transport: {type(e).__name__}"
        finally:
            self.in_flight -= 1
        self.outcomes[outcome] += 1
        if outcome == "200":
            self.latencies.append(time.monotonic() - started)

    async def exchange(self, path):
        reader, writer = await self.connection()
        try:
            writer.write(f"GET {path} HTTP/1.1\r\nHost: soak.local\r\n\r\n".encode())
            await writer.drain()
            head = await reader.readuntil(b"\r\n\r\n")
            status, headers = parse_head(head)
            if headers.get("transfer-encoding", "").lower() == "chunked":
                await read_chunked(reader)
            else:
                await reader.readexactly(int(headers.get("content-length", "0")))
        except BaseException:
            writer.close()
            raise
        if headers.get("connection", "").lower() == "close":
            writer.close()
        else:
            self.idle.append((reader, writer))
        return str(status)


def parse_head(head):
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ")[1])
    headers = {}
    for line in lines[1:]:
        if ":" in line:
            name, value = line.split(":", 1)
            headers[name.strip().lower()] = value.strip()
    return status, headers


async def read_chunked(reader):
    while True:
        size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
        await reader.readexactly(size + 2)
        if size == 0:
            return


async def load(client, rate, duration, stats):
    tasks = set()
    started = time.monotonic()
    sent = 0
    while (now := time.monotonic()) - started < duration:
        due = int((now - started) * rate)
        while sent < due:
            task = asyncio.create_task(client.get(f"/soak/{sent}"))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
            sent += 1
        stats["max_in_flight"] = max(stats["max_in_flight"], client.in_flight)
        await asyncio.sleep(STEP)
    stats["sent"] = sent
    if tasks:
        await asyncio.wait(tasks, timeout=REQUEST_TIMEOUT + 5)


async def flap(backend, every, down, duration, stats):
    if every <= 0:
        return
    started = time.monotonic()
    while time.monotonic() - started + every < duration:
        await asyncio.sleep(every - down)
        await backend.stop()
        stats["flaps"] += 1
        await asyncio.sleep(down)
        await backend.start()


async def disturb(parapet, backends, args, stats):
    """Reloads and upgrades spread evenly over the run; upgrades between reloads."""
    events = [(args.duration * (i + 1) / (args.reloads + 1), "reload") for i in range(args.reloads)]
    events += [
        (args.duration * (i + 0.5) / args.upgrades, "upgrade") for i in range(args.upgrades)
    ]
    started = time.monotonic()
    for at, kind in sorted(events):
        await asyncio.sleep(max(0.0, at - (time.monotonic() - started)))
        if kind == "reload":
            stats["reloads"] += 1
            parapet.config.write_text(
                parapet_config(args.listen, args.admin, parapet.socket, backends, stats["reloads"])
            )
            parapet.reload()
        else:
            await parapet.upgrade()
            stats["upgrades"] += 1


def scrape(admin):
    try:
        with socket.create_connection((HOST, admin), timeout=5) as s:
            s.sendall(b"GET /metrics HTTP/1.1\r\nHost: admin\r\nConnection: close\r\n\r\n")
            data = b""
            while chunk := s.recv(65536):
                data += chunk
    except OSError:
        return {}
    totals = Counter()
    for name in (
        "parapet_upstream_stale_connection_retries_total",
        "parapet_upstream_connect_failures_total",
        "parapet_upstream_retries_total",
        "parapet_config_reloads_total",
    ):
        for match in re.finditer(rf"^{name}(?:{{[^}}]*}})? (\S+)$", data.decode(), re.M):
            totals[name] += float(match.group(1))
    return dict(totals)


def percentile(values, p):
    if not values:
        return None
    values = sorted(values)
    return round(values[min(len(values) - 1, int(len(values) * p))] * 1000, 2)


async def main(args):
    binary = Path(args.binary)
    if not binary.exists():
        print(f"no parapet binary at {binary} (cargo build --release)", file=sys.stderr)
        return 2
    args.listen, args.admin = free_port(), free_port()
    backends = [
        Backend(chr(ord("a") + i), args.backend_idle_timeout, args.drop_rate)
        for i in range(args.backends)
    ]
    for backend in backends:
        await backend.start()
    workdir = Path(tempfile.mkdtemp(prefix="parapet-soak."))
    parapet = Parapet(binary, workdir)
    parapet.config.write_text(parapet_config(args.listen, args.admin, parapet.socket, backends, 0))
    parapet.current = parapet.spawn(upgrade=False)
    stats = Counter(max_in_flight=0)
    try:
        await parapet.wait_until(lambda: listening(args.listen), 30, "parapet to listen")
        client = Client(args.listen)
        jobs = [
            load(client, args.rate, args.duration, stats),
            disturb(parapet, backends, args, stats),
        ]
        if args.flap_every > 0:
            jobs.append(flap(backends[-1], args.flap_every, args.flap_down, args.duration, stats))
        await asyncio.gather(*jobs)
        metrics = scrape(args.admin)
    finally:
        parapet.stop_all()
        for backend in backends:
            if backend.server.is_serving():
                await backend.stop()
    outcomes = dict(client.outcomes)
    answered = outcomes.get("200", 0)
    failed = {k: v for k, v in outcomes.items() if k != "200"}
    report = {
        "duration_s": args.duration,
        "rate": args.rate,
        "sent": stats["sent"],
        "ok_200": answered,
        "failed": sum(failed.values()),
        "failures": failed,
        "latency_ms": {
            "p50": percentile(client.latencies, 0.5),
            "p99": percentile(client.latencies, 0.99),
            "max": percentile(client.latencies, 1.0),
        },
        "max_in_flight": stats["max_in_flight"],
        "reloads": stats["reloads"],
        "upgrades": stats["upgrades"],
        "old_process_exit_codes": parapet.old_exit_codes(),
        "flaps": stats["flaps"],
        "backend_requests_served": {b.name: b.served for b in backends},
        "backend_requests_dropped": sum(b.dropped for b in backends),
        "parapet_counters_of_the_last_process": metrics,
        "logs": str(workdir),
    }
    print(json.dumps(report, indent=2))
    return 1 if failed or stats["sent"] != sum(outcomes.values()) else 0


def listening(port):
    try:
        socket.create_connection((HOST, port), timeout=1).close()
        return True
    except OSError:
        return False


def arguments():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--binary", default=str(ROOT / "target/release/parapet"))
    p.add_argument("--duration", type=float, default=600, help="seconds of load (600)")
    p.add_argument("--rate", type=float, default=500, help="requests per second (500)")
    p.add_argument("--backends", type=int, default=3)
    p.add_argument("--flap-every", type=float, default=20, help="0: no flapping backend")
    p.add_argument("--flap-down", type=float, default=5)
    p.add_argument("--reloads", type=int, default=100)
    p.add_argument("--upgrades", type=int, default=5)
    p.add_argument("--backend-idle-timeout", type=float, default=75)
    p.add_argument("--drop-rate", type=float, default=0.0)
    return p.parse_args()


if __name__ == "__main__":
    try:
        sys.exit(asyncio.run(main(arguments())))
    except RuntimeError as e:
        print(f"soak setup failed: {e}", file=sys.stderr)
        sys.exit(2)
