"""MCP test driver on the official Python SDK client (PyPI `mcp` 2.x): OAuth discovery of an MCP
server, as the SDK's `OAuthClientProvider` does it, and a tool call with a bearer token.

Usage:
    python tests/peers/py_oauth_client.py --url http://127.0.0.1:PORT/mcp/secure [--token T]
        [--mode auto|legacy|2026-07-28] [--timeout S]

1. Discovery. The driver runs the SDK's own auth flow (`OAuthClientProvider.async_auth_flow`,
   the `httpx2.Auth` the SDK's transports use) for a `POST initialize` to `--url` without a
   token, sending each request the flow makes with a plain `httpx2.AsyncClient` and handing the
   answer back. So the SDK decides everything: it reads the `401`'s `WWW-Authenticate`
   `resource_metadata`, fetches the protected-resource metadata from there (else its path-aware
   and root well-known URLs on `--url`'s origin), and checks that the document's `resource`
   matches `--url` (RFC 8707 / RFC 9728; `OAuthFlowError` when not). The driver stops at the
   first request the flow makes off `--url`'s origin (the authorization server's metadata, at
   the issuer) without sending it: this driver has no authorization server to talk to.
2. With `--token`: `Client(streamable_http_client(--url))` over an `httpx2` client that sends
   `Authorization: Bearer <token>`: `tools/list`, then `tools/call echo("through the relay")`.

Prints ONE JSON object on stdout and exits 0:
    {"exchanges": [{"method", "url", "status", "www_authenticate"}...],   # what discovery sent
     "discovery_error": null | "<OAuthFlowError text>",                   # the SDK refused
     "prm": {...} | null,            # the protected-resource metadata the SDK accepted
     "auth_server_url": str | null,  # the authorization server the SDK chose from it
     "stopped_at": str | null,       # the off-origin URL the flow asked for next
     "tools": [...] | null, "result_text": str | null}                   # with --token
Any other failure (the tool call with the token included): traceback on stderr, exit 1.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import traceback
from typing import Any
from urllib.parse import urlsplit

import httpx2
from mcp import Client
from mcp.client.auth import OAuthClientProvider, OAuthFlowError
from mcp.client.streamable_http import streamable_http_client
from mcp.shared._httpx_utils import create_mcp_http_client
from mcp.shared.auth import OAuthClientInformationFull, OAuthClientMetadata, OAuthToken
from mcp_types import TextContent
from pydantic import AnyUrl


class MemoryStorage:
    """The SDK's `TokenStorage` protocol, in memory (nothing stored: a first connection)."""

    def __init__(self) -> None:
        self.tokens: OAuthToken | None = None
        self.client_info: OAuthClientInformationFull | None = None

    async def get_tokens(self) -> OAuthToken | None:
        return self.tokens

    async def set_tokens(self, tokens: OAuthToken) -> None:
        self.tokens = tokens

    async def get_client_info(self) -> OAuthClientInformationFull | None:
        return self.client_info

    async def set_client_info(self, client_info: OAuthClientInformationFull) -> None:
        self.client_info = client_info


def origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}".lower()


INITIALIZE = {
    "jsonrpc": "2.0",
    "id": 1,
    "method": "initialize",
    "params": {
        "protocolVersion": "2025-11-25",
        "capabilities": {},
        "clientInfo": {"name": "mcp-relay-oauth-driver", "version": "0"},
    },
}


async def discover(url: str) -> dict[str, Any]:
    provider = OAuthClientProvider(
        server_url=url,
        client_metadata=OAuthClientMetadata(
            redirect_uris=[AnyUrl("http://127.0.0.1:9/callback")], client_name="mcp-relay-test"
        ),
        storage=MemoryStorage(),
    )
    out: dict[str, Any] = {"exchanges": [], "discovery_error": None, "stopped_at": None}
    async with httpx2.AsyncClient(timeout=30) as http:
        request = http.build_request(
            "POST",
            url,
            headers={
                "accept": "application/json, text/event-stream",
                "content-type": "application/json",
                "mcp-protocol-version": "2025-11-25",
            },
            content=json.dumps(INITIALIZE),
        )
        flow = provider.async_auth_flow(request)
        try:
            outgoing = await flow.__anext__()
            while True:
                if origin(str(outgoing.url)) != origin(url):
                    out["stopped_at"] = str(outgoing.url)
                    break
                response = await http.send(outgoing)
                await response.aread()
                out["exchanges"].append(
                    {
                        "method": outgoing.method,
                        "url": str(outgoing.url),
                        "status": response.status_code,
                        "www_authenticate": response.headers.get("www-authenticate"),
                    }
                )
                outgoing = await flow.asend(response)
        except StopAsyncIteration:
            pass
        except OAuthFlowError as e:
            out["discovery_error"] = str(e)
        finally:
            await flow.aclose()
    prm = provider.context.protected_resource_metadata
    out["prm"] = prm.model_dump(mode="json", exclude_none=True) if prm else None
    out["auth_server_url"] = provider.context.auth_server_url
    return out


async def call_with_token(url: str, token: str, mode: str) -> dict[str, Any]:
    async with create_mcp_http_client(headers={"Authorization": f"Bearer {token}"}) as http:
        transport = streamable_http_client(url, http_client=http, terminate_on_close=True)
        async with Client(transport, mode=mode, cache=None) as client:
            tools = await client.list_tools()
            result = await client.call_tool("echo", {"text": "through the relay"})
            if result.is_error:
                raise RuntimeError(f"tool returned isError: {result.content!r}")
            text = next((c.text for c in result.content if isinstance(c, TextContent)), None)
            return {"tools": sorted(t.name for t in tools.tools), "result_text": text}


async def run(args: argparse.Namespace) -> dict[str, Any]:
    out = await discover(args.url)
    out.update({"tools": None, "result_text": None})
    if args.token:
        out.update(await call_with_token(args.url, args.token, args.mode))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", required=True, help="the MCP endpoint URL the client uses")
    parser.add_argument("--token", default=None, help="a bearer token for the tool call")
    parser.add_argument("--mode", default="auto", help="Client mode: auto, legacy or 2026-07-28")
    parser.add_argument("--timeout", type=float, default=60)
    args = parser.parse_args()
    try:
        out = asyncio.run(asyncio.wait_for(run(args), args.timeout))
    except Exception:
        traceback.print_exc()
        sys.exit(1)
    print(json.dumps(out), flush=True)


if __name__ == "__main__":
    main()
