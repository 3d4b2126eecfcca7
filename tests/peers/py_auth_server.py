"""MCP test upstream that requires OAuth bearer tokens, on the official Python SDK (PyPI `mcp` 2.x):
an `MCPServer` with `auth=AuthSettings(...)` and a `token_verifier`, Streamable HTTP at `/mcp`.

It is what the MCP authorization spec (2025-06-18 and later) calls a resource server:

* `GET /.well-known/oauth-protected-resource/mcp` (RFC 9728, path-aware form; served by the SDK)
  answers its protected-resource metadata: `resource` = `http://127.0.0.1:<port>/mcp` (its own
  address), `authorization_servers` = [`--issuer`], `scopes_supported` = [`--scope`],
  `bearer_methods_supported` = ["header"]. The root form `/.well-known/oauth-protected-resource`
  is not served (404), as the SDK registers only the path-aware one.
* a request on `/mcp` without a valid token gets `401` with
  `WWW-Authenticate: Bearer error="invalid_token", error_description="Authentication required",
  resource_metadata="http://127.0.0.1:<port>/.well-known/oauth-protected-resource/mcp"` (the SDK's
  `RequireAuthMiddleware`); a token without the scope gets `403` `insufficient_scope`.
* the token verifier accepts exactly `--token` (scopes [`--scope`]) and `--token-no-scope`
  (no scopes); any other token is invalid.
* `GET /.well-known/oauth-authorization-server` answers RFC 8414 metadata for the issuer, as the
  SDK's `build_metadata` writes it (a document only: this process has no authorization
  endpoints behind it), so tests can see authorization-server metadata proxied unchanged.
  `/.well-known/openid-configuration` is not served (404).

Usage:
    python tests/peers/py_auth_server.py --port 0 --token SECRET [--token-no-scope OTHER]
        [--scope mcp] [--issuer URL]

`--issuer` defaults to the server's own origin, `http://127.0.0.1:<port>`. Once the socket is
bound it prints exactly one line `LISTENING <port>` on stdout; logs go to stderr. Binds 127.0.0.1
only; the SDK's loopback Host/Origin checks are on.

Tools: `echo(text)` answers `text`; `whoami()` answers the client id of the token it was called with.
"""

from __future__ import annotations

import argparse
import asyncio
import socket
import sys
import warnings

import uvicorn
from mcp.server.auth.middleware.auth_context import get_access_token
from mcp.server.auth.provider import AccessToken, TokenVerifier
from mcp.server.auth.routes import build_metadata
from mcp.server.auth.settings import AuthSettings, ClientRegistrationOptions, RevocationOptions
from mcp.server.mcpserver import MCPServer
from pydantic import AnyHttpUrl
from starlette.requests import Request
from starlette.responses import Response


class StaticTokenVerifier(TokenVerifier):
    """Accepts the tokens it was given, each with its scopes; nothing else."""

    def __init__(self, tokens: dict[str, list[str]]) -> None:
        self._tokens = tokens

    async def verify_token(self, token: str) -> AccessToken | None:
        scopes = self._tokens.get(token)
        if scopes is None:
            return None
        return AccessToken(token=token, client_id="mcp-relay-test-client", scopes=scopes)


def build_server(args: argparse.Namespace, port: int) -> MCPServer:
    origin = f"http://127.0.0.1:{port}"
    issuer = args.issuer or origin
    tokens = {args.token: [args.scope]}
    if args.token_no_scope:
        tokens[args.token_no_scope] = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the SDK's notice about validate_token_resource's future default
        auth = AuthSettings(
            issuer_url=AnyHttpUrl(issuer),
            resource_server_url=AnyHttpUrl(f"{origin}/mcp"),
            required_scopes=[args.scope],
            # The verifier checks the token itself; tokens are not bound to a resource here.
            validate_token_resource=False,
        )
    mcp = MCPServer("mcp-relay-py-auth-peer", auth=auth, token_verifier=StaticTokenVerifier(tokens))

    @mcp.tool()
    async def echo(text: str) -> str:
        """Answer `text` unchanged."""
        return text

    @mcp.tool()
    async def whoami() -> str:
        """Answer the client id of the calling token."""
        token = get_access_token()
        return token.client_id if token else "anonymous"

    metadata = build_metadata(
        issuer_url=AnyHttpUrl(issuer),
        service_documentation_url=None,
        client_registration_options=ClientRegistrationOptions(enabled=True, valid_scopes=[args.scope]),
        revocation_options=RevocationOptions(),
    )

    @mcp.custom_route("/.well-known/oauth-authorization-server", methods=["GET"])
    async def authorization_server_metadata(request: Request) -> Response:
        return Response(
            metadata.model_dump_json(exclude_none=True),
            media_type="application/json",
            headers={"Cache-Control": "public, max-age=3600"},
        )

    return mcp


async def serve(args: argparse.Namespace) -> None:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", args.port))
    sock.listen(128)
    sock.setblocking(False)
    port = sock.getsockname()[1]

    mcp = build_server(args, port)
    app = mcp.streamable_http_app(
        streamable_http_path="/mcp",
        host="127.0.0.1",  # enables the SDK's loopback Host/Origin checks (421 / 403)
    )
    config = uvicorn.Config(app, log_level=args.log_level, lifespan="on", timeout_graceful_shutdown=2)
    server = uvicorn.Server(config)
    # The socket is listening already: connections queue in its backlog until serve() accepts.
    print(f"LISTENING {port}", flush=True)
    await server.serve(sockets=[sock])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--port", type=int, default=0, help="TCP port on 127.0.0.1 (0 = ephemeral)")
    parser.add_argument("--token", required=True, help="the bearer token accepted, with --scope")
    parser.add_argument("--token-no-scope", default=None, help="a bearer token accepted without any scope")
    parser.add_argument("--scope", default="mcp", help="the scope every request needs")
    parser.add_argument("--issuer", default=None, help="authorization server (default: this server's origin)")
    parser.add_argument("--log-level", default="warning")
    args = parser.parse_args()
    try:
        asyncio.run(serve(args))
    except KeyboardInterrupt:
        pass
    sys.exit(0)


if __name__ == "__main__":
    main()
