"""MCP test driver on the official Python SDK client (PyPI `mcp` 2.x): one legacy session that
outlives whatever happens to the proxy while the driver is paused (restart, switch of replica).

Usage:
    python tests/peers/py_session_client.py --url http://127.0.0.1:PORT/mcp [--steps N] [--delay-ms MS]

Sequence: `Client(mode="legacy")` connects (initialize offering 2025-11-25, `Mcp-Session-Id` kept
by the SDK) -> tools/call progress -> prints `HOLD {"session_id": ...}` and waits for a line on
stdin -> tools/list -> tools/call progress -> ping -> close (DELETE with the same session id).

On success prints ONE JSON object on stdout and exits 0:
    {"session_ids", "before": {"progress", "result_text"}, "after": {"tools", "progress",
     "result_text"}, "delete_status", "http"}
`session_ids` lists every `Mcp-Session-Id` the client received (one, if the session survived);
`http` lists every exchange as {"http_method", "rpc_method", "status", "session_id"}. A failed
request fails the driver: traceback on stderr, exit 1.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import traceback
from typing import Any

from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared._httpx_utils import create_mcp_http_client
from mcp_types import TextContent
from wire import WireLog


async def call_progress(client: Client, steps: int, delay_ms: int) -> dict[str, Any]:
    progress: list[float] = []

    async def on_progress(value: float, total: float | None, message: str | None) -> None:
        progress.append(value)

    result = await client.call_tool(
        "progress", {"steps": steps, "delay_ms": delay_ms}, progress_callback=on_progress
    )
    if result.is_error:
        raise RuntimeError(f"tool returned isError: {result.content!r}")
    text = next((c.text for c in result.content if isinstance(c, TextContent)), None)
    return {"progress": [int(p) for p in progress], "result_text": text}


async def run(args: argparse.Namespace) -> dict[str, Any]:
    wire = WireLog()
    http = create_mcp_http_client()
    http.event_hooks = {"request": [], "response": [wire.on_response]}
    out: dict[str, Any] = {}
    async with http:
        transport = streamable_http_client(args.url, http_client=http, terminate_on_close=True)
        async with Client(transport, mode="legacy", cache=None) as client:
            out["before"] = await call_progress(client, args.steps, args.delay_ms)
            held = {"session_id": wire.session_ids[0] if wire.session_ids else None}
            print("HOLD " + json.dumps(held), flush=True)
            await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
            tools = await client.list_tools()
            after = await call_progress(client, args.steps, args.delay_ms)
            after["tools"] = [t.name for t in tools.tools]
            out["after"] = after
            await client.send_ping()
    out["session_ids"] = wire.session_ids
    deletes = [x["status"] for x in wire.exchanges if x["http_method"] == "DELETE"]
    out["delete_status"] = deletes[-1] if deletes else None
    out["http"] = wire.exchanges
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", required=True)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--delay-ms", type=int, default=50)
    parser.add_argument("--timeout", type=float, default=90.0, help="overall deadline, seconds")
    args = parser.parse_args()
    try:
        out = asyncio.run(asyncio.wait_for(run(args), args.timeout))
    except BaseException:  # noqa: BLE001 - a driver reports every failure the same way
        traceback.print_exc(file=sys.stderr)
        sys.exit(1)
    print(json.dumps(out), flush=True)
    sys.exit(0)


if __name__ == "__main__":
    main()
