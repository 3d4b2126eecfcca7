"""What the official SDK's HTTP transport actually sent and received, for the client drivers.

An httpx2 response hook: every exchange as {http_method, rpc_method, status, session_id,
headers (the MCP request headers sent), content_type}, and every distinct `Mcp-Session-Id` the
client received, in order.
"""

from __future__ import annotations

import json
from typing import Any

import httpx2

MCP_HEADERS = ("mcp-protocol-version", "mcp-session-id", "mcp-method", "mcp-name", "last-event-id")


class WireLog:
    """httpx2 response hook recording each HTTP exchange the SDK transport made."""

    def __init__(self) -> None:
        self.exchanges: list[dict[str, Any]] = []
        self.session_ids: list[str] = []

    async def on_response(self, response: httpx2.Response) -> None:
        request = response.request
        rpc_method = None
        if request.method == "POST":
            try:
                rpc_method = json.loads(request.content).get("method")
            except (ValueError, AttributeError):
                rpc_method = None
        sid = response.headers.get("mcp-session-id")
        if sid and sid not in self.session_ids:
            self.session_ids.append(sid)
        self.exchanges.append(
            {
                "http_method": request.method,
                "rpc_method": rpc_method,
                "status": response.status_code,
                "session_id": request.headers.get("mcp-session-id"),
                "headers": {h: request.headers[h] for h in MCP_HEADERS if h in request.headers},
                "content_type": response.headers.get("content-type"),
            }
        )
