"""Stress driver on the official Python SDK client (PyPI `mcp` 2.x): many short legacy sessions,
each calling the `ask` tool of `py_server.py`, whose elicitation and sampling requests travel on
the session's standalone GET stream (no related request id). The client answers both. A server
request sent while no GET stream is registered upstream is lost: the tool then answers "lost".

Usage:
    python tests/peers/py_stress_elicitation.py --url http://127.0.0.1:PORT/mcp \\
        [--sessions N] [--concurrency C] [--seed S] [--ask-timeout-ms MS]

Each session has its own HTTP client (fresh connections, as the SDK's default transport), and
random timing: a random pause before it starts, and half of the sessions pause up to 2 ms between
initialization and the tool call (the others call at once, as SDK code usually does).

Prints ONE JSON line and exits 0: {"run", "ok", "lost", "errors", "seed", "first_error"}.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import sys
import traceback
from typing import Any

from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from mcp_types import CreateMessageResult, ElicitResult, TextContent


async def on_elicit(context: Any, params: Any) -> ElicitResult:
    return ElicitResult(action="accept", content={"ok": True})


async def on_sample(context: Any, params: Any) -> CreateMessageResult:
    return CreateMessageResult(role="assistant", content=TextContent(type="text", text="sampled"), model="stress")


async def one_session(url: str, rng: random.Random, ask_timeout_ms: int) -> str:
    await asyncio.sleep(rng.random() * 0.003)
    pause = rng.random() * 0.002 if rng.random() < 0.5 else 0.0
    transport = streamable_http_client(url, terminate_on_close=True)
    async with Client(
        transport,
        mode="legacy",
        cache=None,
        elicitation_callback=on_elicit,
        sampling_callback=on_sample,
    ) as client:
        if pause:
            await asyncio.sleep(pause)
        result = await client.call_tool("ask", {"timeout_ms": ask_timeout_ms})
        text = next((c.text for c in result.content if isinstance(c, TextContent)), "")
        return text


async def run(args: argparse.Namespace) -> dict[str, Any]:
    rng = random.Random(args.seed)
    counts = {"run": 0, "ok": 0, "lost": 0, "errors": 0, "seed": args.seed, "first_error": None}
    queue: asyncio.Queue[int] = asyncio.Queue()
    for i in range(args.sessions):
        queue.put_nowait(i)

    async def worker() -> None:
        while True:
            try:
                queue.get_nowait()
            except asyncio.QueueEmpty:
                return
            counts["run"] += 1
            try:
                text = await asyncio.wait_for(one_session(args.url, rng, args.ask_timeout_ms), args.session_timeout)
            except BaseException as err:  # noqa: BLE001 - counted and reported
                counts["errors"] += 1
                if counts["first_error"] is None:
                    counts["first_error"] = "".join(traceback.format_exception(err))[-2000:]
                continue
            if text.startswith("ok accept sampled"):
                counts["ok"] += 1
            elif text.startswith("lost"):
                counts["lost"] += 1
            else:
                counts["errors"] += 1
                if counts["first_error"] is None:
                    counts["first_error"] = f"unexpected tool answer {text!r}"

    await asyncio.gather(*(worker() for _ in range(args.concurrency)))
    return counts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", required=True)
    parser.add_argument("--sessions", type=int, default=200)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--ask-timeout-ms", type=int, default=5000, help="server's wait for each answer")
    parser.add_argument("--session-timeout", type=float, default=30.0, help="seconds, per session")
    args = parser.parse_args()
    if args.seed is None:
        args.seed = random.SystemRandom().randrange(1 << 32)
    try:
        out = asyncio.run(run(args))
    except BaseException:  # noqa: BLE001 - a driver reports every failure the same way
        traceback.print_exc(file=sys.stderr)
        sys.exit(1)
    print(json.dumps(out), flush=True)
    sys.exit(0)


if __name__ == "__main__":
    main()
