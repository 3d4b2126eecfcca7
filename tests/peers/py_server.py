"""MCP test upstream on the official Python SDK (PyPI `mcp` 2.x), Streamable HTTP at `/mcp`.

One process serves both protocol eras on the same endpoint, because the SDK's
`StreamableHTTPSessionManager` routes each request by its `MCP-Protocol-Version` header:

* header absent or a handshake version (2024-11-05 .. 2025-11-25) -> the legacy, sessionful
  transport (`initialize`, `Mcp-Session-Id`, GET stream, DELETE, optional resumability);
* any other value (2026-07-28) -> the modern single-exchange handler (no session id ever minted,
  GET/DELETE answered 405).

Usage:
    python tests/peers/py_server.py --port 0 [--event-store] [--json-response] [--retry-ms N] [--keep-alive-s S]
        [--delete-tool] [--change-tool] [--request-log FILE] [--cache-ttl-ms N] [--otlp URL]
        [--tls-cert PEM --tls-key PEM]

Once the socket is bound it prints exactly one line `LISTENING <port>` on stdout and flushes;
everything else (uvicorn logs) goes to stderr. Binds 127.0.0.1 only.

Tools:
    progress(steps: int, delay_ms: int) -> "done <steps>"  sends `steps` notifications/progress
        (progress = 1..steps, total = steps), `delay_ms` apart, related to the calling request.
    echo(text: str) -> text
    ask(timeout_ms: int) -> "ok <elicitation action> <sampling text>", or "lost ..." when the
        client did not answer within `timeout_ms`: sends an elicitation/create and then a
        sampling/createMessage WITHOUT a related request id, so both travel on the session's
        standalone GET stream (and are lost when no GET is registered when they are sent).
    delete_all() -> "deleted"  only with `--delete-tool`: a tool a policy denies.
    change_tools() -> "changed"  only with `--change-tool`: sends `notifications/tools/list_changed` on its own response
        stream (request-scoped) before answering.

`--otlp URL`: the SDK's own spans (its OpenTelemetryMiddleware: one server span per request,
parented from `params._meta`'s trace context) are exported to that OTLP/gRPC receiver, as
service `py-server`.

`--cache-ttl-ms N`: 2026-07-28 `tools/list` results carry `ttlMs: N`, `cacheScope: "public"`
(the SDK's `cache_hints`).

`--tls-cert PEM --tls-key PEM`: serve `https://` (uvicorn's TLS) with that certificate.

`--request-log FILE`: the server's own log of what reached it. Every JSON-RPC request or
notification POSTed to it (each message of a batch) appends one line `<method> <name>` to FILE
(`name`: `params.name`, else `params.uri`, else empty), before the SDK handles it.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import socket
import sys
from collections import deque
from dataclasses import dataclass

import uvicorn
from mcp.server.caching import CacheHint
from mcp.server.mcpserver import Context, MCPServer
from mcp.server.streamable_http import EventCallback, EventId, EventMessage, EventStore, StreamId
from mcp_types import JSONRPCMessage, SamplingMessage, TextContent, ToolListChangedNotification


@dataclass
class _Entry:
    event_id: EventId
    stream_id: StreamId
    message: JSONRPCMessage | None


class InMemoryEventStore(EventStore):
    """In-memory event store for resumability (the SDK ships only the `EventStore` ABC).

    Modelled on the SDK's `examples/servers/simple-streamablehttp` store, with one fix. The SDK
    hands one store to every session and names a POST stream after its JSON-RPC request id, so
    a plain store mixes the streams of two sessions that both used request id 2 (and the SDK
    replays whatever the store returns, without checking the session). Here every session gets
    its own namespace (`for_session`); the store used directly is one more namespace.

    Event ids are `<stream_id>/<seq>`, `seq` global: unique across all streams and sessions, and
    they encode the stream (2025-11-25). Replay sends only the events after `last_event_id` on
    that event's stream in the same session; an id unknown to the session replays nothing.
    Priming events (message None) are stored as cursors and skipped on replay.
    """

    def __init__(self, max_events_per_stream: int = 1000) -> None:
        self._max = max_events_per_stream
        self._seq = itertools.count(1)
        # namespace (session id or None) -> stream id -> events; and namespace -> event id -> event
        self._streams: dict[str | None, dict[StreamId, deque[_Entry]]] = {}
        self._index: dict[str | None, dict[EventId, _Entry]] = {}

    def for_session(self, session_id: str) -> EventStore:
        return _SessionView(self, session_id)

    async def store_event(self, stream_id: StreamId, message: JSONRPCMessage | None) -> EventId:
        return self._store(None, stream_id, message)

    async def replay_events_after(self, last_event_id: EventId, send_callback: EventCallback) -> StreamId | None:
        return await self._replay(None, last_event_id, send_callback)

    def _store(self, ns: str | None, stream_id: StreamId, message: JSONRPCMessage | None) -> EventId:
        entry = _Entry(f"{stream_id}/{next(self._seq)}", stream_id, message)
        stream = self._streams.setdefault(ns, {}).setdefault(stream_id, deque())
        index = self._index.setdefault(ns, {})
        if len(stream) == self._max:
            del index[stream.popleft().event_id]
        stream.append(entry)
        index[entry.event_id] = entry
        return entry.event_id

    async def _replay(self, ns: str | None, last_event_id: EventId, send: EventCallback) -> StreamId | None:
        last = self._index.get(ns, {}).get(last_event_id)
        if last is None:
            return None
        found = False
        for entry in list(self._streams[ns][last.stream_id]):
            if found and entry.message is not None:
                await send(EventMessage(entry.message, entry.event_id))
            elif entry.event_id == last_event_id:
                found = True
        return last.stream_id


class _SessionView(EventStore):
    """One session's namespace of an `InMemoryEventStore`."""

    def __init__(self, store: InMemoryEventStore, session_id: str) -> None:
        self._store, self._ns = store, session_id

    async def store_event(self, stream_id: StreamId, message: JSONRPCMessage | None) -> EventId:
        return self._store._store(self._ns, stream_id, message)

    async def replay_events_after(self, last_event_id: EventId, send_callback: EventCallback) -> StreamId | None:
        return await self._store._replay(self._ns, last_event_id, send_callback)


def scope_event_store_per_session(mcp: MCPServer, store: InMemoryEventStore) -> None:
    """Give each new legacy session its own view of `store` (SDK private API, checked here).

    `StreamableHTTPSessionManager._admit_session` builds each session's transport with the
    manager's single store; wrap it to swap in a per-session view right after.
    """
    manager = getattr(mcp._lowlevel_server, "_session_manager", None)  # noqa: SLF001
    admit = getattr(manager, "_admit_session", None)
    if admit is None:
        raise RuntimeError("mcp SDK internals changed: cannot scope the event store per session")

    def admit_scoped(*args, **kwargs):
        transport = admit(*args, **kwargs)
        if transport is not None:
            if not hasattr(transport, "_event_store"):
                raise RuntimeError("mcp SDK internals changed: transport has no _event_store")
            transport._event_store = store.for_session(transport.mcp_session_id)  # noqa: SLF001
        return transport

    manager._admit_session = admit_scoped  # noqa: SLF001


class RequestLog:
    """ASGI middleware: appends `<method> <name>` to a file for each JSON-RPC message POSTed."""

    def __init__(self, app, path: str) -> None:
        self.app, self.path = app, path

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope.get("method") != "POST":
            return await self.app(scope, receive, send)
        chunks: list[bytes] = []

        async def logged_receive():
            message = await receive()
            if message["type"] == "http.request":
                chunks.append(message.get("body", b""))
                if not message.get("more_body"):
                    self._log(b"".join(chunks))
            return message

        return await self.app(scope, logged_receive, send)

    def _log(self, body: bytes) -> None:
        try:
            data = json.loads(body)
        except ValueError:
            return
        lines = []
        for m in data if isinstance(data, list) else [data]:
            if isinstance(m, dict) and isinstance(m.get("method"), str):
                params = m.get("params") if isinstance(m.get("params"), dict) else {}
                name = params.get("name") or params.get("uri") or ""
                lines.append(f"{m['method']} {name}\n")
        with open(self.path, "a", encoding="utf-8") as f:
            f.writelines(lines)


def build_server(delete_tool: bool = False, cache_ttl_ms: int | None = None, change_tool: bool = False) -> MCPServer:
    hints = None
    if cache_ttl_ms is not None:
        hints = {"tools/list": CacheHint(ttl_ms=cache_ttl_ms, scope="public")}
    mcp = MCPServer("mcp-relay-py-peer", cache_hints=hints)

    @mcp.tool()
    async def progress(steps: int, delay_ms: int, ctx: Context) -> str:
        """Send `steps` progress notifications, `delay_ms` apart, then answer "done <steps>"."""
        for i in range(1, steps + 1):
            if delay_ms > 0:
                await asyncio.sleep(delay_ms / 1000)
            await ctx.report_progress(i, steps, f"step {i}/{steps}")
        return f"done {steps}"

    @mcp.tool()
    async def echo(text: str) -> str:
        """Answer `text` unchanged."""
        return text

    @mcp.tool()
    async def ask(timeout_ms: int, ctx: Context) -> str:
        """Elicit, then sample, on the standalone stream (no related request id)."""
        timeout = timeout_ms / 1000
        session = ctx.session
        schema = {"type": "object", "properties": {"ok": {"type": "boolean"}}}
        try:
            elicited = await asyncio.wait_for(session.elicit_form("Proceed?", schema), timeout)
        except TimeoutError:
            return "lost elicitation"
        message = SamplingMessage(role="user", content=TextContent(type="text", text="hello"))
        try:
            sampled = await asyncio.wait_for(session.create_message(messages=[message], max_tokens=8), timeout)
        except TimeoutError:
            return "lost sampling"
        text = getattr(sampled.content, "text", "?")
        return f"ok {elicited.action} {text}"

    if change_tool:

        @mcp.tool()
        async def change_tools(ctx: Context) -> str:
            """Tell the client (on this request's stream) that the tool list changed."""
            await ctx.session.send_notification(ToolListChangedNotification(), related_request_id=ctx.request_id)
            return "changed"

    if delete_tool:

        @mcp.tool()
        async def delete_all() -> str:
            """A tool an operator's policy denies."""
            return "deleted"

    return mcp


def export_spans(endpoint: str) -> None:
    """Send the SDK's spans to the OTLP/gRPC receiver at `endpoint` (service `py-server`)."""
    from opentelemetry import trace
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor

    provider = TracerProvider(resource=Resource.create({"service.name": "py-server"}))
    provider.add_span_processor(SimpleSpanProcessor(OTLPSpanExporter(endpoint=endpoint, insecure=True)))
    trace.set_tracer_provider(provider)


async def serve(args: argparse.Namespace) -> None:
    if args.otlp:
        export_spans(args.otlp)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", args.port))
    sock.listen(128)
    sock.setblocking(False)
    port = sock.getsockname()[1]

    mcp = build_server(delete_tool=args.delete_tool, cache_ttl_ms=args.cache_ttl_ms, change_tool=args.change_tool)
    store = InMemoryEventStore() if args.event_store else None
    app = mcp.streamable_http_app(
        streamable_http_path="/mcp",
        json_response=args.json_response,
        event_store=store,
        retry_interval=args.retry_ms,
        host="127.0.0.1",  # enables the SDK's loopback Host/Origin checks (421 / 403)
    )
    if store is not None and not args.shared_event_store:
        scope_event_store_per_session(mcp, store)
    served = RequestLog(app, args.request_log) if args.request_log else app
    config = uvicorn.Config(
        served,
        log_level=args.log_level,
        lifespan="on",
        timeout_graceful_shutdown=2,
        timeout_keep_alive=args.keep_alive_s,
        ssl_certfile=args.tls_cert,
        ssl_keyfile=args.tls_key,
    )
    server = uvicorn.Server(config)

    # uvicorn has bound nothing itself; the pre-bound socket is listening already, so connections
    # queue in the backlog until serve() starts accepting: announcing now is race-free.
    print(f"LISTENING {port}", flush=True)
    await server.serve(sockets=[sock])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--port", type=int, default=0, help="TCP port on 127.0.0.1 (0 = ephemeral)")
    parser.add_argument("--event-store", action="store_true", help="enable resumability (legacy era)")
    parser.add_argument(
        "--shared-event-store",
        action="store_true",
        help="with --event-store: one namespace for all sessions, as the SDK wires it (streams of "
        "different sessions with the same request id mix on replay)",
    )
    parser.add_argument("--json-response", action="store_true", help="answer application/json instead of SSE")
    parser.add_argument("--retry-ms", type=int, default=None, help="SSE retry: on priming events (needs --event-store)")
    parser.add_argument("--log-level", default="warning")
    parser.add_argument("--delete-tool", action="store_true", help="also serve the tool delete_all")
    parser.add_argument("--otlp", default=None, help="export the SDK's spans to this OTLP/gRPC receiver")
    parser.add_argument("--change-tool", action="store_true", help="also serve the tool change_tools")
    parser.add_argument("--cache-ttl-ms", type=int, default=None, help="2026-07-28 tools/list: ttlMs N, cacheScope public")
    parser.add_argument("--tls-cert", default=None, help="serve https with this PEM certificate chain")
    parser.add_argument("--tls-key", default=None, help="the PEM key of --tls-cert")
    parser.add_argument("--request-log", help="append `<method> <name>` per JSON-RPC message received to this file")
    parser.add_argument(
        "--keep-alive-s",
        type=int,
        default=5,
        help="seconds an idle connection is kept (uvicorn's default 5; a proxy that reuses a connection "
        "just as it closes gets a reset)",
    )
    args = parser.parse_args()
    try:
        asyncio.run(serve(args))
    except KeyboardInterrupt:
        pass
    sys.exit(0)


if __name__ == "__main__":
    main()
