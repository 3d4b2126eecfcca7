"""The live daemon the client tests talk to.

Run through ``cargo test --test control_clients`` (what CI does), the Rust harness starts
mcp-relay in front of the official Python SDK server and passes it in the environment:

- ``ADMIN_TEST_TARGET``: the control plane on TCP, ``host:port`` (no token);
- ``ADMIN_TEST_MCP_URL``: the MCP endpoint clients use;
- ``ADMIN_TEST_SOCKET`` and ``ADMIN_TEST_TOKEN``: a second control plane over the same
  sessions, on a Unix socket, requiring that bearer token.

Run alone (``.venv/bin/python -m pytest clients/python``), this file starts the same peers
itself from ``target/debug/mcp-relay`` (``cargo build`` first) and ``tests/peers/py_server.py``;
that daemon has no Unix socket, so the Unix-socket test is skipped then.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import pytest

ROOT = Path(__file__).resolve().parents[3]


@dataclass(frozen=True)
class Daemon:
    admin: str
    url: str
    socket: str | None
    token: str | None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_listening(port: int, proc: subprocess.Popen, what: str) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"{what} did not listen on {port}")


@pytest.fixture(scope="session")
def daemon() -> Iterator[Daemon]:
    if os.environ.get("ADMIN_TEST_TARGET"):
        yield Daemon(
            admin=os.environ["ADMIN_TEST_TARGET"],
            url=os.environ["ADMIN_TEST_MCP_URL"],
            socket=os.environ.get("ADMIN_TEST_SOCKET"),
            token=os.environ.get("ADMIN_TEST_TOKEN"),
        )
        return
    binary = Path(os.environ.get("ADMIN_TEST_RELAY_BIN", ROOT / "target/debug/mcp-relay"))
    if not binary.exists():
        raise RuntimeError(f"{binary} is missing: run `cargo build` first")
    server = subprocess.Popen(
        [sys.executable, str(ROOT / "tests/peers/py_server.py"), "--port", "0", "--event-store"],
        stdout=subprocess.PIPE,
        text=True,
    )
    procs = [server]
    try:
        line = server.stdout.readline() if server.stdout else ""
        if not line.startswith("LISTENING "):
            raise RuntimeError(f"py_server did not start: {line!r}")
        upstream = f"http://127.0.0.1:{int(line.split()[1])}/mcp"
        listen, admin = _free_port(), _free_port()
        relay = subprocess.Popen(
            [
                str(binary), "serve", "--upstream", upstream, "--no-metrics",
                "--listen", f"127.0.0.1:{listen}", "--admin-listen", f"127.0.0.1:{admin}",
            ]
        )
        procs.append(relay)
        _wait_listening(admin, relay, "mcp-relay")
        yield Daemon(f"127.0.0.1:{admin}", f"http://127.0.0.1:{listen}/mcp", None, None)
    finally:
        for proc in reversed(procs):
            proc.terminate()
            proc.wait(timeout=15)
