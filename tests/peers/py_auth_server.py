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
* with `--jwks-issuer URL` (a real authorization server, e.g. `oidc_provider.mjs`) it accepts
  instead JWT access tokens (RS256 or ES256) signed by a key of `URL/jwks` (fetched with PyJWT's
  `PyJWKClient`; a token whose `kid` is not in the cached set refetches it at once, so rotated
  keys work), with `iss` = URL, `aud` = `http://127.0.0.1:<port>/mcp`, and `exp`, `iat`, `sub`;
  its scopes are the `scope` claim, its client id the `client_id` claim. `--issuer` defaults to
  URL, `validate_token_resource` is on, `--token` is not needed. Rejections are logged on stderr.
* `GET /.well-known/oauth-authorization-server` answers RFC 8414 metadata for the issuer, as the
  SDK's `build_metadata` writes it (a document only: this process has no authorization
  endpoints behind it), so tests can see authorization-server metadata proxied unchanged.
  `/.well-known/openid-configuration` is not served (404).

Usage:
    python tests/peers/py_auth_server.py --port 0 --token SECRET [--token-no-scope OTHER]
        [--scope mcp] [--issuer URL]
    python tests/peers/py_auth_server.py --port 0 --jwks-issuer URL [--scope mcp:tools]

`--issuer` defaults to the server's own origin, `http://127.0.0.1:<port>`. Once the socket is
bound it prints exactly one line `LISTENING <port>` on stdout; logs go to stderr. Binds 127.0.0.1
only; the SDK's loopback Host/Origin checks are on.

Tools: `echo(text)` answers `text`; `whoami()` answers the client id of the token it was called
with; `subject()` its subject (`sub`; "" for the static tokens).
"""

from __future__ import annotations

import argparse
import asyncio
import socket
import sys
import warnings

import anyio.to_thread
import jwt
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


class JwtVerifier(TokenVerifier):
    """Accepts JWTs signed by a key of `issuer`/jwks, issued by `issuer` for `audience`."""

    def __init__(self, issuer: str, audience: str) -> None:
        issuer = issuer.rstrip("/")  # oidc-provider's `iss` has no trailing slash
        self._issuer = issuer
        self._audience = audience
        # cooldown_duration=0: an unknown `kid` refetches the key set at once (key rotation).
        self._jwks = jwt.PyJWKClient(f"{issuer}/jwks", cooldown_duration=0, timeout=5)

    async def verify_token(self, token: str) -> AccessToken | None:
        try:
            key = await anyio.to_thread.run_sync(self._jwks.get_signing_key_from_jwt, token)
            claims = jwt.decode(
                token,
                key.key,
                algorithms=["RS256", "ES256"],
                audience=self._audience,
                issuer=self._issuer,
                options={"require": ["exp", "iat", "sub", "iss", "aud"]},
            )
        except jwt.PyJWTError as e:
            print(f"py_auth_server: token rejected: {type(e).__name__}: {e}", file=sys.stderr, flush=True)
            return None
        return AccessToken(
            token=token,
            client_id=str(claims.get("client_id", "")),
            scopes=str(claims.get("scope", "")).split(),
            expires_at=int(claims["exp"]),
            resource=self._audience,  # jwt.decode checked that `aud` is (or contains) it
            subject=str(claims["sub"]),
            claims=claims,
        )


def build_server(args: argparse.Namespace, port: int) -> MCPServer:
    origin = f"http://127.0.0.1:{port}"
    issuer = args.issuer or args.jwks_issuer or origin
    verifier: TokenVerifier
    if args.jwks_issuer:
        verifier = JwtVerifier(args.jwks_issuer, args.audience or f"{origin}/mcp")
    else:
        tokens = {args.token: [args.scope]}
        if args.token_no_scope:
            tokens[args.token_no_scope] = []
        verifier = StaticTokenVerifier(tokens)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the SDK's notice about validate_token_resource's future default
        auth = AuthSettings(
            issuer_url=AnyHttpUrl(issuer),
            resource_server_url=AnyHttpUrl(args.audience or f"{origin}/mcp"),
            required_scopes=[args.scope],
            # Static tokens are not bound to a resource; JWTs are (their `aud`).
            validate_token_resource=bool(args.jwks_issuer),
        )
    mcp = MCPServer("mcp-relay-py-auth-peer", auth=auth, token_verifier=verifier)

    @mcp.tool()
    async def echo(text: str) -> str:
        """Answer `text` unchanged."""
        return text

    @mcp.tool()
    async def whoami() -> str:
        """Answer the client id of the calling token."""
        token = get_access_token()
        return token.client_id if token else "anonymous"

    @mcp.tool()
    async def subject() -> str:
        """Answer the subject (`sub`) of the calling token."""
        token = get_access_token()
        return (token.subject or "") if token else "anonymous"

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
    parser.add_argument("--token", default=None, help="the bearer token accepted, with --scope")
    parser.add_argument("--token-no-scope", default=None, help="a bearer token accepted without any scope")
    parser.add_argument("--scope", default="mcp", help="the scope every request needs")
    parser.add_argument("--issuer", default=None, help="authorization server (default: this server's origin)")
    parser.add_argument(
        "--audience",
        default=None,
        help="the resource URL tokens are for (default: this server's own /mcp URL); behind the relay, the relay's",
    )
    parser.add_argument("--jwks-issuer", default=None, help="accept JWTs of this issuer (keys at URL/jwks)")
    parser.add_argument("--log-level", default="warning")
    args = parser.parse_args()
    if not args.token and not args.jwks_issuer:
        parser.error("--token or --jwks-issuer is required")
    try:
        asyncio.run(serve(args))
    except KeyboardInterrupt:
        pass
    sys.exit(0)


if __name__ == "__main__":
    main()
