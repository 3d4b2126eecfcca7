"""Tool policy driver on the official Python SDK client (PyPI `mcp` 2.x), Streamable HTTP.

Usage:
    python tests/peers/py_policy_client.py --url http://127.0.0.1:PORT/mcp --mode legacy|modern \
        --allowed echo --denied delete_all

Sequence: connect (`Client(mode="legacy")`: the `initialize` handshake; `--mode modern`:
`Client(mode="2026-07-28")`, no handshake) -> tools/list -> tools/call ALLOWED {"text": "allowed"}
(`echo` answers it) -> tools/call DENIED {} -> close.

On success prints ONE JSON object on stdout and exits 0:
    {"mode", "protocol_version", "tools", "allowed_text", "denied_result", "denied_error"}
`denied_error` is {"code", "message"} of the JSON-RPC error the SDK raised for DENIED (null when
the call succeeded); `denied_result` the text of its result when it did succeed (null
otherwise). On any other failure: traceback on stderr, exit 1.
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


def _text(result: Any) -> str | None:
    return next((c.text for c in result.content if isinstance(c, TextContent)), None)


async def run(args: argparse.Namespace) -> dict[str, Any]:
    out: dict[str, Any] = {"mode": args.mode}
    http = create_mcp_http_client()
    async with http:
        transport = streamable_http_client(args.url, http_client=http, terminate_on_close=True)
        sdk_mode = {"legacy": "legacy", "modern": "2026-07-28"}[args.mode]
        async with Client(transport, mode=sdk_mode, cache=None) as client:
            out["protocol_version"] = client.protocol_version
            tools = await client.list_tools()
            out["tools"] = [t.name for t in tools.tools]
            allowed = await client.call_tool(args.allowed, {"text": "allowed"})
            if allowed.is_error:
                raise RuntimeError(f"{args.allowed} returned isError: {allowed.content!r}")
            out["allowed_text"] = _text(allowed)
            out["denied_result"], out["denied_error"] = None, None
            try:
                denied = await client.call_tool(args.denied, {})
                out["denied_result"] = _text(denied)
            except MCPError as e:
                out["denied_error"] = {"code": e.error.code, "message": e.error.message}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", required=True)
    parser.add_argument("--mode", choices=("legacy", "modern"), required=True)
    parser.add_argument("--allowed", default="echo")
    parser.add_argument("--denied", default="delete_all")
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
