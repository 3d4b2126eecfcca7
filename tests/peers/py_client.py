"""MCP test driver on the official Python SDK client (PyPI `mcp` 2.x), Streamable HTTP.

Usage:
    python tests/peers/py_client.py --url http://127.0.0.1:PORT/mcp --mode legacy|modern
        [--tool progress|trigger-long-running-operation] [--steps N] [--delay-ms MS]

Sequence: connect -> tools/list -> tools/call <tool> with a progress callback -> ping -> close.

* `--mode legacy`: `Client(mode="legacy")`, the `initialize` handshake offering 2025-11-25
  (the SDK's LATEST_HANDSHAKE_VERSION), then `notifications/initialized`; `Mcp-Session-Id` from the
  initialize answer is sent on every later request; closing sends `DELETE` with it.
* `--mode auto`: `Client(mode="auto")`, the SDK default: modern first, `initialize` on a legacy
  server.
* `--hold`: after `ping`, print `HOLD {"session_id": ...}` and wait for a line on stdin before
  closing, so a test can inspect the live session.
* `--mode modern`: `Client(mode="2026-07-28")` adopts 2026-07-28 with no probe and no handshake;
  the driver then sends one real `server/discover` on the wire. `ping` does not exist at
  2026-07-28 (the SDK deprecates it), so it is sent anyway and its error is reported in
  `ping_error`; `ping_ok` is then null (not applicable), never false.

`--tool progress` calls the py_server tool `progress(steps, delay_ms)`;
`--tool trigger-long-running-operation` calls server-everything's tool of that name with
`duration = steps * delay_ms / 1000` seconds and `steps`.

On success prints ONE JSON object on stdout and exits 0:
    {"mode", "protocol_version", "session_id", "tools", "progress", "result_text", "ping_ok",
     "ping_error", "discover_versions", "delete_status", "http"}
`session_id` is the `Mcp-Session-Id` the client received (response header) or null; `http` lists
every HTTP exchange as {"http_method", "rpc_method", "status", "headers": {...MCP request
headers sent...}, "content_type"}. On any failure: traceback on stderr, exit 1.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import traceback
import warnings
from typing import Any

from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared._httpx_utils import create_mcp_http_client
from mcp.shared.exceptions import MCPError
from mcp_types import TextContent
from wire import WireLog



def _number(x: float) -> float | int:
    return int(x) if float(x).is_integer() else x


async def run(args: argparse.Namespace) -> dict[str, Any]:
    wire = WireLog()
    http = create_mcp_http_client()
    http.event_hooks = {"request": [], "response": [wire.on_response]}
    progress: list[float | int] = []

    async def on_progress(value: float, total: float | None, message: str | None) -> None:
        progress.append(_number(value))

    if args.tool == "progress":
        arguments: dict[str, Any] = {"steps": args.steps, "delay_ms": args.delay_ms}
    else:
        arguments = {"duration": args.steps * args.delay_ms / 1000, "steps": args.steps}

    out: dict[str, Any] = {"mode": args.mode}
    async with http:
        transport = streamable_http_client(args.url, http_client=http, terminate_on_close=True)
        sdk_mode = {"legacy": "legacy", "modern": "2026-07-28", "auto": "auto"}[args.mode]
        client = Client(transport, mode=sdk_mode, cache=None)
        async with client:
            out["protocol_version"] = client.protocol_version
            if client.protocol_version == "2026-07-28":
                discovered = await client.session.send_discover("2026-07-28")
                out["discover_versions"] = discovered.get("supportedVersions")
            tools = await client.list_tools()
            out["tools"] = [t.name for t in tools.tools]
            result = await client.call_tool(args.tool, arguments, progress_callback=on_progress)
            if result.is_error:
                raise RuntimeError(f"tool returned isError: {result.content!r}")
            out["result_text"] = next((c.text for c in result.content if isinstance(c, TextContent)), None)
            out["progress"] = progress
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                try:
                    await client.send_ping()
                    out["ping_ok"], out["ping_error"] = True, None
                except MCPError as e:
                    if client.protocol_version != "2026-07-28":
                        raise
                    out["ping_ok"], out["ping_error"] = None, {"code": e.error.code, "message": e.error.message}
            if args.hold:
                # Let a test inspect the live session: announce it, wait for a line on stdin.
                held = {"session_id": wire.session_ids[0] if wire.session_ids else None}
                print("HOLD " + json.dumps(held), flush=True)
                await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
        # After the context exits the legacy DELETE has been sent (terminate_on_close).
    out["session_id"] = wire.session_ids[0] if wire.session_ids else None
    if len(wire.session_ids) > 1:
        raise RuntimeError(f"client saw several session ids: {wire.session_ids}")
    deletes = [x["status"] for x in wire.exchanges if x["http_method"] == "DELETE"]
    out["delete_status"] = deletes[-1] if deletes else None
    out.setdefault("discover_versions", None)
    out["http"] = wire.exchanges
    if len(progress) < min(args.steps, 3):
        raise RuntimeError(f"expected {args.steps} progress notifications, got {progress}")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", required=True)
    parser.add_argument("--mode", choices=("legacy", "modern", "auto"), required=True)
    parser.add_argument(
        "--hold",
        action="store_true",
        help="before closing, print `HOLD {json}` and wait for a line on stdin",
    )
    parser.add_argument("--tool", default="progress")
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--delay-ms", type=int, default=100)
    parser.add_argument("--timeout", type=float, default=60.0, help="overall deadline, seconds")
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
