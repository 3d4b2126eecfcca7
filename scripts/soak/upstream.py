"""The soak's upstream: the official Python SDK server (PyPI `mcp` 2.x) with good tools, and a
hostile HTTP layer in front of it in the same process, so hostile streams share mcp-relay's
threads, upstream pool and sessions with the good traffic (the point of "a hostile upstream
beside the good ones": a hostile stream must not starve or corrupt its neighbours).

    python scripts/soak/upstream.py --port P [--log-level warning]

Prints `LISTENING <port>` once bound (127.0.0.1 only); SO_REUSEADDR, so the soak can SIGKILL it
and start it again on the same port. Both eras on `/mcp` (the SDK routes by MCP-Protocol-Version);
legacy sessions get the per-session in-memory event store of tests/peers/py_server.py
(resumable streams with a priming event). A restart loses every session and event: that is the
"upstream killed" fault.

Good tools (SDK):
    count(n, delay_ms, tag, cut_at=0) -> "done <tag> <n>": n notifications/progress with
        progress = 1..n, total = n, message = "<tag>:<i>", delay_ms apart. With cut_at = k > 0
        (legacy only) the SDK closes the request's SSE stream after progress k (2025-11-25
        polling: the event store keeps the rest for a `GET` with `Last-Event-ID`), an upstream
        cut the proxy has to resume through.
    announce(n, delay_ms, tag) -> "done <tag> <n>": n notifications/resources/updated with uri
        "soak://<tag>/<i>" on the session's GET stream (legacy), once that stream is open.

Hostile tool (answered by the raw ASGI layer, never reaches the SDK):
    tools/call `hostile` {mode, n, tag, secs}, in either era:
    comments   endless 64 KiB comment blocks (until the client/proxy leaves or `secs` pass)
    keepalive  endless `:` keep-alive comments, 2 ms apart
    dupstorm   progress 1..n, every event sent 3-10 times with the same id, earlier ids
               re-sent at random, then the response
    cutmid     progress 1..n with ids `hx-<tag>-<i>`, the connection cut inside an event at
               random; `GET` + `Last-Event-ID: hx-<tag>-<i>` continues after i (sometimes
               re-sending i), until the response
    slowheaders  the response head only after `secs` seconds, then progress 1..n + response
    bigevent   progress 1..n/2, then one 2 MiB event (over the soak's max_event_bytes), then
               the rest: the proxy must end the stream, never pass the big event
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import socket
import sys
import time
from pathlib import Path

import uvicorn

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "tests" / "peers"))
from py_server import InMemoryEventStore, scope_event_store_per_session  # noqa: E402
from mcp.server.mcpserver import Context, MCPServer  # noqa: E402

# Hostile cutmid state by tag: request id, progress token, n. Lost on restart (then 404-like 400).
CUTMID: dict[str, dict] = {}


def build_server() -> MCPServer:
    mcp = MCPServer("mcp-relay-soak-upstream")

    @mcp.tool()
    async def count(n: int, delay_ms: int, tag: str, ctx: Context, cut_at: int = 0) -> str:
        """Send n numbered progress notifications, then answer "done <tag> <n>"."""
        for i in range(1, n + 1):
            if delay_ms > 0:
                await asyncio.sleep(delay_ms / 1000)
            await ctx.report_progress(i, n, f"{tag}:{i}")
            if i == cut_at:
                await ctx.close_sse_stream()
                await resumed(ctx)
        return f"done {tag} {n}"

    @mcp.tool()
    async def announce(n: int, delay_ms: int, tag: str, ctx: Context) -> str:
        """Send n notifications/resources/updated (uri "soak://<tag>/<i>") on the session's GET
        stream (legacy: unrelated to any request), then answer "done <tag> <n>"."""
        await get_stream_open(ctx)
        for i in range(1, n + 1):
            if delay_ms > 0:
                await asyncio.sleep(delay_ms / 1000)
            await ctx.session.send_resource_updated(f"soak://{tag}/{i}")
        return f"done {tag} {n}"

    return mcp


# Legacy transports by session id (for `resumed`).
TRANSPORTS: dict[str, object] = {}


async def resumed(ctx: Context) -> None:
    """Waits (at most 10 s) until the closed stream of this request was resumed by a `GET`.

    The SDK's resumption has a known gap (its own comment: "the replay→live-tail ordering window
    here is pre-existing"): an event stored after `replay_events_after` finished but before the
    resumed stream is registered is neither replayed nor sent live. Measured directly against
    this server, with no proxy, 14 of 64 cut calls lost one or two notifications that way. The
    soak checks the proxy, so the tool sends nothing until the stream is registered again.
    """
    request = getattr(ctx.request_context, "request", None)
    sid = request.headers.get("mcp-session-id") if request is not None else None
    transport = TRANSPORTS.get(sid or "")
    streams = getattr(transport, "_request_streams", None)
    if streams is None:
        return
    key = str(ctx.request_id)
    deadline = time.monotonic() + 10
    while key not in streams and time.monotonic() < deadline:
        await asyncio.sleep(0.005)


async def get_stream_open(ctx: Context) -> None:
    """Waits (at most 10 s) until the session's GET stream is open here: the SDK drops a message
    for a GET stream that is not open yet (nothing to replay it from), which is not the proxy's
    doing. The SDK client opens its GET stream right after `notifications/initialized`."""
    request = getattr(ctx.request_context, "request", None)
    sid = request.headers.get("mcp-session-id") if request is not None else None
    streams = getattr(TRANSPORTS.get(sid or ""), "_request_streams", None)
    deadline = time.monotonic() + 10
    while streams is not None and "_GET_stream" not in streams and time.monotonic() < deadline:
        await asyncio.sleep(0.01)


def track_transports(mcp: MCPServer) -> None:
    """Keep each legacy session's transport by its id (SDK private API, checked here)."""
    manager = getattr(mcp._lowlevel_server, "_session_manager", None)  # noqa: SLF001
    admit = getattr(manager, "_admit_session", None)
    if admit is None:
        raise RuntimeError("mcp SDK internals changed: cannot track transports")

    def admit_tracked(*args, **kwargs):
        transport = admit(*args, **kwargs)
        if transport is not None:
            TRANSPORTS[transport.mcp_session_id] = transport
        return transport

    manager._admit_session = admit_tracked  # noqa: SLF001


def sse(data: str | None = None, eid: str | None = None, comment: str | None = None) -> bytes:
    out = []
    if comment is not None:
        out.append(f":{comment}")
    if eid is not None:
        out.append(f"id: {eid}")
    if data is not None:
        out.extend(f"data: {line}" for line in data.split("\n"))
    return ("\n".join(out) + "\n\n").encode()


def progress(token, i: int, n: int, tag: str) -> str:
    return json.dumps(
        {
            "jsonrpc": "2.0",
            "method": "notifications/progress",
            "params": {"progressToken": token, "progress": i, "total": n, "message": f"{tag}:{i}"},
        }
    )


def result(rid, text: str) -> str:
    return json.dumps(
        {"jsonrpc": "2.0", "id": rid, "result": {"content": [{"type": "text", "text": text}], "isError": False}}
    )


class Cut(Exception):
    """Raised inside a hostile answer to drop the connection mid-body (uvicorn closes it)."""


class Hostile:
    """ASGI layer: answers `tools/call hostile` and `GET` resumptions of `hx-` ids itself."""

    def __init__(self, inner) -> None:
        self.inner = inner

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            return await self.inner(scope, receive, send)
        headers = {k.lower(): v for k, v in scope["headers"]}
        if scope["method"] == "GET" and headers.get(b"last-event-id", b"").startswith(b"hx-"):
            return await self.resume(headers[b"last-event-id"].decode(), receive, send)
        if scope["method"] != "POST":
            return await self.inner(scope, receive, send)
        body, more = b"", True
        while more:
            msg = await receive()
            if msg["type"] == "http.disconnect":
                return
            body += msg.get("body", b"")
            more = msg.get("more_body", False)
        try:
            rpc = json.loads(body)
        except ValueError:
            rpc = None
        if (
            isinstance(rpc, dict)
            and rpc.get("method") == "tools/call"
            and isinstance(rpc.get("params"), dict)
            and rpc["params"].get("name") == "hostile"
        ):
            return await self.hostile(rpc, receive, send)
        replayed = False

        async def replay():
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        return await self.inner(scope, replay, send)

    async def stream(self, receive, send, produce) -> None:
        """Sends the SSE head, then what `produce(write)` writes, until the peer leaves."""
        gone = asyncio.Event()

        async def watch():
            while True:
                msg = await receive()
                if msg["type"] == "http.disconnect":
                    gone.set()
                    return

        watcher = asyncio.create_task(watch())

        async def write(chunk: bytes) -> bool:
            if gone.is_set():
                return False
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
            return not gone.is_set()

        try:
            await send(
                {
                    "type": "http.response.start",
                    "status": 200,
                    "headers": [(b"content-type", b"text/event-stream"), (b"cache-control", b"no-cache")],
                }
            )
            await produce(write, gone)
            if not gone.is_set():
                await send({"type": "http.response.body", "body": b"", "more_body": False})
        finally:
            watcher.cancel()

    async def hostile(self, rpc: dict, receive, send) -> None:
        args = rpc["params"].get("arguments") or {}
        meta = rpc["params"].get("_meta") or {}
        token = meta.get("progressToken", 0)
        rid = rpc.get("id")
        mode, n, tag = args.get("mode"), int(args.get("n", 10)), str(args.get("tag", "h"))
        secs = float(args.get("secs", 5))
        deadline = time.monotonic() + max(secs, 1) + 60  # bound every hostile answer

        if mode == "slowheaders":
            await asyncio.sleep(secs)

        async def produce(write, gone):
            if mode == "comments":
                block = sse(comment=" " + "x" * 65536)
                while time.monotonic() < deadline and await write(block):
                    await asyncio.sleep(0.02)
            elif mode == "keepalive":
                while time.monotonic() < deadline and await write(b":\n\n"):
                    await asyncio.sleep(0.002)
            elif mode == "dupstorm":
                for i in range(1, n + 1):
                    ev = sse(progress(token, i, n, tag), eid=f"hd-{tag}-{i}")
                    if not await write(ev * random.randint(3, 10)):
                        return
                    if i > 1 and random.random() < 0.5:
                        j = random.randint(1, i - 1)
                        await write(sse(progress(token, j, n, tag), eid=f"hd-{tag}-{j}"))
                    await asyncio.sleep(0.005)
                await write(sse(result(rid, f"done {tag} {n}"), eid=f"hd-{tag}-r"))
            elif mode == "cutmid":
                CUTMID[tag] = {"rid": rid, "token": token, "n": n}
                await self.cutmid_from(tag, 1, write)
            elif mode == "slowheaders":
                for i in range(1, n + 1):
                    await write(sse(progress(token, i, n, tag), eid=f"hs-{tag}-{i}"))
                await write(sse(result(rid, f"done {tag} {n}"), eid=f"hs-{tag}-r"))
            elif mode == "bigevent":
                half = n // 2
                for i in range(1, half + 1):
                    await write(sse(progress(token, i, n, tag), eid=f"hb-{tag}-{i}"))
                await write(sse("x" * (2 << 20), eid=f"hb-{tag}-big"))
                for i in range(half + 1, n + 1):
                    await write(sse(progress(token, i, n, tag), eid=f"hb-{tag}-{i}"))
                await write(sse(result(rid, f"done {tag} {n}"), eid=f"hb-{tag}-r"))
            else:
                await write(sse(json.dumps({"jsonrpc": "2.0", "id": rid, "error": {"code": -32602, "message": "mode"}})))

        try:
            await self.stream(receive, send, produce)
        except Cut:
            raise

    async def cutmid_from(self, tag: str, start: int, write) -> None:
        st = CUTMID[tag]
        n = st["n"]
        for i in range(start, n + 1):
            ev = sse(progress(st["token"], i, n, tag), eid=f"hx-{tag}-{i}")
            if random.random() < 0.15:
                # Half of this event, then the connection drops: the proxy resumes after i-1.
                await write(ev[: len(ev) // 2])
                raise Cut(f"cut inside event {i}")
            if not await write(ev):
                return
            await asyncio.sleep(0.005)
        await write(sse(result(st["rid"], f"done {tag} {n}"), eid=f"hx-{tag}-r"))
        CUTMID.pop(tag, None)

    async def resume(self, last: str, receive, send) -> None:
        # hx-<tag>-<i>
        _, rest = last.split("-", 1)
        tag, _, seq = rest.rpartition("-")
        if tag not in CUTMID or not seq.isdigit():
            await send({"type": "http.response.start", "status": 400, "headers": []})
            await send({"type": "http.response.body", "body": b"unknown event id"})
            return
        start = int(seq) + 1
        if random.random() < 0.3:
            start = int(seq)  # re-send the last one: the proxy must drop the duplicate

        async def produce(write, gone):
            await self.cutmid_from(tag, start, write)

        await self.stream(receive, send, produce)


async def serve(args: argparse.Namespace) -> None:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", args.port))
    sock.listen(512)
    sock.setblocking(False)
    port = sock.getsockname()[1]
    mcp = build_server()
    store = InMemoryEventStore()
    app = mcp.streamable_http_app(streamable_http_path="/mcp", event_store=store, retry_interval=200, host="127.0.0.1")
    scope_event_store_per_session(mcp, store)
    track_transports(mcp)
    config = uvicorn.Config(Hostile(app), log_level=args.log_level, lifespan="on", timeout_graceful_shutdown=1)
    print(f"LISTENING {port}", flush=True)
    await uvicorn.Server(config).serve(sockets=[sock])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--log-level", default="warning")
    args = parser.parse_args()
    try:
        asyncio.run(serve(args))
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
