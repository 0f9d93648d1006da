#!/usr/bin/env python3
"""Holds many idle HTTP/1.1 keep-alive connections open to one loopback port.

Used by benches/compare.sh for the "many connections" scenario: each connection sends one
keep-alive GET (so the server has really accepted and served it, and then holds it as an idle
keep-alive connection), then stays silent. --seconds after the last one opened, the helper checks
how many are still open, prints one JSON line and exits. Opening is bounded too (5 s timeouts per
step, batches of 100), so the helper always stops by itself.

Loopback only: the host is fixed to 127.0.0.1.
"""

import argparse
import asyncio
import json
import sys
import time

HOST = "127.0.0.1"


async def open_one(port, path, results):
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_connection(HOST, port), 5)
        writer.write(
            f"GET {path} HTTP/1.1\r\nHost: bench.local\r\nConnection: keep-alive\r\n\r\n".encode()
        )
        await writer.drain()
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
        length = 0
        for line in head.split(b"\r\n"):
            if line.lower().startswith(b"content-length:"):
                length = int(line.split(b":", 1)[1])
        if length:
            await asyncio.wait_for(reader.readexactly(length), 5)
        results["served"] += 1
        return reader, writer
    except (OSError, asyncio.TimeoutError, asyncio.IncompleteReadError, ValueError):
        results["failed"] += 1
        return None


async def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--count", type=int, default=1000)
    parser.add_argument("--seconds", type=float, required=True)
    parser.add_argument("--path", default="/1k.bin")
    parser.add_argument("--ready-file", help="written once every connection is open")
    args = parser.parse_args()

    results = {"requested": args.count, "served": 0, "failed": 0}
    conns = []
    # Open in batches so the accept queue of the server under test is not overrun.
    batch = 100
    for start in range(0, args.count, batch):
        n = min(batch, args.count - start)
        opened = await asyncio.gather(*(open_one(args.port, args.path, results) for _ in range(n)))
        conns.extend(c for c in opened if c)
    # --seconds counts from the moment every connection is open and idle.
    deadline = time.monotonic() + args.seconds
    if args.ready_file:
        with open(args.ready_file, "w") as f:
            f.write(json.dumps(results))
    await asyncio.sleep(max(0.0, deadline - time.monotonic()))

    # The loop has been running all along, so a connection the server closed has seen its EOF
    # (or reset) by now.
    alive = sum(1 for reader, _ in conns if not reader.at_eof() and reader.exception() is None)
    for _, writer in conns:
        writer.close()
    results["alive_at_end"] = alive
    print(json.dumps(results))
    sys.stdout.flush()


if __name__ == "__main__":
    asyncio.run(main())
