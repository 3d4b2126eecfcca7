"""MCP test driver on the official Python SDK client (PyPI `mcp` 2.x): a legacy session whose
server goes away while the driver is paused, and the client's recovery as the spec asks (a `404`
to a request carrying `Mcp-Session-Id` means the session is gone: start a new one with a fresh
`initialize`).

Usage:
    python tests/peers/py_reinit_client.py --url http://127.0.0.1:PORT/mcp [--timeout S]

Sequence: `Client(mode="legacy")` connects (initialize offering 2025-11-25) -> tools/call
`echo("before")` -> prints `HOLD {"session_id": ...}` and waits for a line on stdin ->
tools/call `echo("after")`. When that call fails with an `MCPError` (the SDK surfaces a `404`
whose body is a JSON-RPC error as that error, e.g. the proxy's -32001; a `404` without one as
its own -32600 "Session terminated"), the driver leaves that client (its close sends DELETE with
the dead id, whatever the answer) and connects a NEW `Client` on the same URL (a new
`initialize`, so a new session), then calls `echo("after")` again.

On success prints ONE JSON object on stdout and exits 0:
    {"first_session_id", "error": {"code", "message", "status"} | null, "second_session_id",
     "result_text", "session_ids", "http"}
`error` is the failed call's JSON-RPC error and the HTTP status of its exchange (null when the
first session still worked); `second_session_id` is the new session's id (null when none was
needed); `session_ids` lists every `Mcp-Session-Id` received; `http` every exchange as in
`wire.py`. Any other failure (the second session's call too): traceback on stderr, exit 1.
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
from mcp.shared.exceptions import MCPError
from mcp_types import TextContent
from wire import WireLog


async def echo(client: Client, text: str) -> str | None:
    result = await client.call_tool("echo", {"text": text})
    if result.is_error:
        raise RuntimeError(f"tool returned isError: {result.content!r}")
    return next((c.text for c in result.content if isinstance(c, TextContent)), None)


def last_call_status(wire: WireLog, session_id: str | None) -> int | None:
    calls = [
        x["status"]
        for x in wire.exchanges
        if x["http_method"] == "POST" and x["rpc_method"] == "tools/call" and x["session_id"] == session_id
    ]
    return calls[-1] if calls else None


async def run(args: argparse.Namespace) -> dict[str, Any]:
    wire = WireLog()
    http = create_mcp_http_client()
    http.event_hooks = {"request": [], "response": [wire.on_response]}
    out: dict[str, Any] = {"error": None, "second_session_id": None}
    async with http:
        transport = streamable_http_client(args.url, http_client=http, terminate_on_close=True)
        async with Client(transport, mode="legacy", cache=None) as client:
            if await echo(client, "before") != "before":
                raise RuntimeError("echo before the pause answered wrong")
            first = wire.session_ids[0] if wire.session_ids else None
            out["first_session_id"] = first
            print("HOLD " + json.dumps({"session_id": first}), flush=True)
            await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
            try:
                out["result_text"] = await echo(client, "after")
            except MCPError as e:
                out["error"] = {
                    "code": e.error.code,
                    "message": e.error.message,
                    "status": last_call_status(wire, first),
                }
        if out["error"] is not None:
            # The session is gone: a new session, as the spec asks.
            known = len(wire.session_ids)
            transport = streamable_http_client(args.url, http_client=http, terminate_on_close=True)
            async with Client(transport, mode="legacy", cache=None) as client:
                new_ids = wire.session_ids[known:]
                out["second_session_id"] = new_ids[0] if new_ids else None
                out["result_text"] = await echo(client, "after")
    out["session_ids"] = wire.session_ids
    out["http"] = wire.exchanges
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", required=True)
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
