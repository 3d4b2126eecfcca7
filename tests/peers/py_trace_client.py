"""Traced tool call on the official Python SDK client (PyPI `mcp` 2.x) with the OpenTelemetry
SDK exporting to an OTLP/gRPC receiver.

Usage:
    python tests/peers/py_trace_client.py --url http://127.0.0.1:PORT/mcp --mode legacy|modern \
        --otlp http://127.0.0.1:OTLP_PORT

Inside a root span `client tools/call` (service.name `py-client`), calls `echo("traced")`; the SDK
adds its own client span (`MCP send tools/call echo`) and writes its W3C context into the
request's `params._meta` (SEP-414). Flushes the spans before exiting.

On success prints ONE JSON object and exits 0: {"mode", "result_text", "trace_id"} (the root
span's trace id, lowercase hex). On any failure: traceback on stderr, exit 1.
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
from mcp_types import TextContent
from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor


async def run(args: argparse.Namespace) -> dict[str, Any]:
    tracer = trace.get_tracer("py-trace-client")
    out: dict[str, Any] = {"mode": args.mode}
    http = create_mcp_http_client()
    async with http:
        transport = streamable_http_client(args.url, http_client=http, terminate_on_close=True)
        sdk_mode = {"legacy": "legacy", "modern": "2026-07-28"}[args.mode]
        async with Client(transport, mode=sdk_mode, cache=None) as client:
            with tracer.start_as_current_span("client tools/call") as span:
                out["trace_id"] = format(span.get_span_context().trace_id, "032x")
                result = await client.call_tool("echo", {"text": "traced"})
            out["result_text"] = next((c.text for c in result.content if isinstance(c, TextContent)), None)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", required=True)
    parser.add_argument("--mode", choices=("legacy", "modern"), required=True)
    parser.add_argument("--otlp", required=True)
    parser.add_argument("--timeout", type=float, default=60.0)
    args = parser.parse_args()
    provider = TracerProvider(resource=Resource.create({"service.name": "py-client"}))
    provider.add_span_processor(SimpleSpanProcessor(OTLPSpanExporter(endpoint=args.otlp, insecure=True)))
    trace.set_tracer_provider(provider)
    try:
        out = asyncio.run(asyncio.wait_for(run(args), args.timeout))
    except BaseException:  # noqa: BLE001 - a driver reports every failure the same way
        traceback.print_exc(file=sys.stderr)
        sys.exit(1)
    finally:
        provider.shutdown()
    print(json.dumps(out), flush=True)
    sys.exit(0)


if __name__ == "__main__":
    main()
