"""Sequential `ping` latency, direct vs through mcp-relay, as a ratio.

Starts the official Python SDK server (tests/peers/py_server.py) and a release mcp-relay in front
of it, opens one legacy session to each with the official Python SDK client, and sends `ping`s one
after another, alternating direct and proxied rounds so machine noise hits both alike. Reports the
median per-ping latency of each and their difference and ratio.

    cargo build --release && .venv/bin/python benches/ping_ratio.py [--pings 1000] [--rounds 5]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

from mcp import Client
from mcp.client.streamable_http import streamable_http_client

ROOT = Path(__file__).resolve().parent.parent


def start(cmd: list[str], ready: str) -> tuple[subprocess.Popen, str]:
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    assert proc.stdout is not None
    for line in proc.stdout:
        if line.startswith(ready):
            return proc, line[len(ready) :].strip()
    raise RuntimeError(f"{cmd[0]} exited before {ready!r}")


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def ping_round(client: Client, n: int) -> float:
    """Mean seconds per ping over n sequential pings."""
    started = time.perf_counter()
    for _ in range(n):
        await client.send_ping()
    return (time.perf_counter() - started) / n


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--pings", type=int, default=1000, help="pings per target in total")
    parser.add_argument("--rounds", type=int, default=5, help="alternating rounds")
    args = parser.parse_args()

    relay_bin = ROOT / "target/release/mcp-relay"
    if not relay_bin.exists():
        sys.exit("build first: cargo build --release")
    server, port = start([sys.executable, "tests/peers/py_server.py", "--port", "0"], "LISTENING ")
    relay_port, admin_port = free_port(), free_port()
    relay = subprocess.Popen(
        [str(relay_bin), "serve", "--upstream", f"http://127.0.0.1:{port}/mcp",
         "--listen", f"127.0.0.1:{relay_port}", "--admin-listen", f"127.0.0.1:{admin_port}",
         "--no-metrics"],
        stderr=subprocess.DEVNULL, env={**os.environ, "RUST_LOG": "warn"},
    )
    try:
        for _ in range(100):
            try:
                _, w = await asyncio.open_connection("127.0.0.1", relay_port)
                w.close()
                break
            except OSError:
                await asyncio.sleep(0.05)
        direct_url = f"http://127.0.0.1:{port}/mcp"
        proxy_url = f"http://127.0.0.1:{relay_port}/mcp"
        per_round = args.pings // args.rounds
        async with Client(streamable_http_client(direct_url), mode="legacy") as direct, Client(
            streamable_http_client(proxy_url), mode="legacy"
        ) as proxied:
            await ping_round(direct, 50)  # warm-up: connections, code paths
            await ping_round(proxied, 50)
            d, p = [], []
            for _ in range(args.rounds):
                d.append(await ping_round(direct, per_round))
                p.append(await ping_round(proxied, per_round))
        dm, pm = statistics.median(d), statistics.median(p)
        print(f"pings: {per_round * args.rounds} sequential per target, {args.rounds} alternating rounds")
        print(f"direct  median {dm * 1e6:8.1f} us/ping  rounds {[round(x * 1e6) for x in d]}")
        print(f"proxied median {pm * 1e6:8.1f} us/ping  rounds {[round(x * 1e6) for x in p]}")
        print(f"added   {(pm - dm) * 1e6:8.1f} us/ping   ratio proxied/direct = {pm / dm:.3f}")
    finally:
        relay.terminate()
        server.terminate()
        relay.wait(10)
        server.wait(10)


if __name__ == "__main__":
    asyncio.run(main())
