#!/usr/bin/env python3
"""Instructions mcp-relay executes per proxied request (or per streamed SSE event), counted by
valgrind's callgrind: exact and repeatable, so two builds (or one build with and without a
configuration) can be compared to a fraction of a percent on a shared, noisy machine where
the load harness's timings move by ±15 % from run to run.

    scripts/bench-instructions.py BIN [BIN ...] --harness PATH [--era legacy|modern]
        [--phase json|sse] [--requests N] [--events N] [--runs N] [--authorization VALUE]

Each BIN (a release `mcp-relay`, e.g. an older tree's built in a git worktree) runs under
`valgrind --tool=callgrind` with one data-plane thread (`--threads 1`), the memory store, in
front of the load harness's own upstream (`LOAD_ROLE=upstream`, the same process for every
BIN). `BIN=FILE` runs BIN with `--config FILE` (e.g. an interceptor chain), so one binary can
appear twice. After a warm-up (300 requests, or one stream), the counters are zeroed, then:

- `json`: N (default 1000) POST `tools/list` on one keep-alive HTTP/1.1 connection, one at a
  time (legacy: with the session an `initialize` through the same BIN returned; modern: the
  2026-07-28 headers and `_meta`, as the load harness sends them); reported: Ir per request.
- `sse`: one POST `bench/stream` of N (default 20000) events through to its response;
  reported: Ir per event.

Ir counts user-space instructions of every thread of the daemon over that window (the
control plane and the persistence worker too, idle here), not the kernel's: a change that
adds system calls shows up only in the load harness. Each BIN's figure is the median over
`--runs` (default 1; callgrind is deterministic to ~0.1 %). Needs valgrind; the harness binary
is `target/release/deps/load-<hash>` after `cargo bench --bench load --no-run`.
"""

import argparse
import glob
import http.client
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time

LEGACY = "2025-11-25"
MODERN = "2026-07-28"
META = "io.modelcontextprotocol/protocolVersion"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_listening(port: int, proc: subprocess.Popen, what: str) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            sys.exit(f"bench-instructions: {what} exited with {proc.returncode}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.2)
    sys.exit(f"bench-instructions: {what} did not listen within 60 s")


class Client:
    """One keep-alive connection to the relay, speaking `era`."""

    def __init__(self, port: int, era: str, authorization: str | None = None):
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
        self.headers = {
            "content-type": "application/json",
            "accept": "application/json, text/event-stream",
        }
        if authorization:
            self.headers["authorization"] = authorization
        self.era = era
        if era == "legacy":
            init = {
                "jsonrpc": "2.0",
                "id": 1,
                "method": "initialize",
                "params": {
                    "protocolVersion": LEGACY,
                    "capabilities": {},
                    "clientInfo": {"name": "bench-instructions", "version": "1"},
                },
            }
            status, headers, _ = self.post(json.dumps(init))
            sid = headers.get("mcp-session-id")
            if status != 200 or not sid:
                sys.exit(f"bench-instructions: initialize answered {status} without a session")
            self.headers.update({"mcp-protocol-version": LEGACY, "mcp-session-id": sid})
        else:
            self.headers["mcp-protocol-version"] = MODERN

    def body(self, method: str, params: dict) -> str:
        if self.era == "modern":
            params = {"_meta": {META: MODERN, "io.modelcontextprotocol/clientCapabilities": {}}, **params}
            self.headers["mcp-method"] = method
        return json.dumps({"jsonrpc": "2.0", "id": 1, "method": method, "params": params})

    def post(self, body: str):
        self.conn.request("POST", "/mcp", body, self.headers)
        response = self.conn.getresponse()
        data = response.read()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, data

    def call(self, method: str, params: dict) -> bytes:
        status, _, data = self.post(self.body(method, params))
        if status != 200:
            sys.exit(f"bench-instructions: {method} answered {status}: {data[:200]!r}")
        return data


def measure(binary: str, config: str | None, upstream: int, args) -> float:
    out = tempfile.mkdtemp(prefix="bench-instructions-")
    port = free_port()
    cmd = [
        "valgrind", "--tool=callgrind", f"--callgrind-out-file={out}/callgrind.%p",
        binary, "serve",
        "--listen", f"127.0.0.1:{port}",
        "--admin-listen", f"127.0.0.1:{free_port()}",
        "--metrics-listen", f"127.0.0.1:{free_port()}",
        "--session-idle-ttl-secs", "86400",
        "--log-target", "stderr",
        "--threads", "1",
    ]
    if config:
        cmd += ["--config", config]
    cmd += ["--upstream", f"http://127.0.0.1:{upstream}/mcp"]
    env = dict(os.environ, RUST_LOG="warn", MCP_RELAY_STORE__BACKEND="memory")
    relay = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_listening(port, relay, binary)
        client = Client(port, args.era, args.authorization)
        if args.phase == "json":
            for _ in range(300):
                client.call("tools/list", {})
        else:
            client.call("bench/stream", {"events": 1000, "hold": False})
        subprocess.run(["callgrind_control", "--zero", str(relay.pid)], check=True, capture_output=True)
        if args.phase == "json":
            for _ in range(args.requests):
                client.call("tools/list", {})
            units = args.requests
        else:
            data = client.call("bench/stream", {"events": args.events, "hold": False})
            got = data.count(b"\nid:") + data.startswith(b"id:")
            if got < args.events:
                sys.exit(f"bench-instructions: {got} of {args.events} events came through")
            units = args.events
        before = set(glob.glob(f"{out}/callgrind.*"))
        subprocess.run(["callgrind_control", "--dump", str(relay.pid)], check=True, capture_output=True)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            dumps = set(glob.glob(f"{out}/callgrind.*")) - before
            totals = [read_total(d) for d in dumps]
            if totals and all(t is not None for t in totals):
                return max(totals) / units
            time.sleep(0.2)
        sys.exit("bench-instructions: callgrind wrote no dump within 30 s")
    finally:
        relay.terminate()
        try:
            relay.wait(timeout=30)
        except subprocess.TimeoutExpired:
            relay.kill()


def read_total(path: str) -> int | None:
    try:
        with open(path) as f:
            for line in f:
                if line.startswith(("summary:", "totals:")):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("bins", nargs="+", metavar="BIN[=CONFIG]")
    p.add_argument("--harness", required=True, help="the load harness binary (for its upstream)")
    p.add_argument("--era", choices=["legacy", "modern"], default="legacy")
    p.add_argument("--phase", choices=["json", "sse"], default="json")
    p.add_argument("--requests", type=int, default=1000)
    p.add_argument("--events", type=int, default=20000)
    p.add_argument("--runs", type=int, default=1)
    p.add_argument(
        "--authorization",
        help="an Authorization value every request carries (a relay configured as resource server)",
    )
    args = p.parse_args()
    upstream = subprocess.Popen(
        [args.harness],
        env=dict(os.environ, LOAD_ROLE="upstream"),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        port = int(upstream.stdout.readline())
        unit = "request" if args.phase == "json" else "event"
        first = None
        for spec in args.bins:
            binary, _, config = spec.partition("=")
            runs = [measure(binary, config or None, port, args) for _ in range(args.runs)]
            ir = statistics.median(runs)
            first = first or ir
            print(
                f"{spec}: {args.era} {args.phase}: {ir:,.0f} Ir per {unit}"
                f" ({ir / first:.4f}× the first)  runs: {', '.join(f'{r:,.0f}' for r in runs)}",
                flush=True,
            )
    finally:
        upstream.terminate()


if __name__ == "__main__":
    main()
