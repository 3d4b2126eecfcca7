"""A test OTLP/gRPC trace receiver on the official OpenTelemetry protocol packages (PyPI
`opentelemetry-proto`: the collector's `TraceService`), served with grpcio on 127.0.0.1.

Usage:
    python tests/peers/otlp_receiver.py --port 0 --out FILE

Prints exactly one line `LISTENING <port>` on stdout once bound. Every span of every `Export`
call is appended to FILE as one JSON line:
    {"service", "scope", "name", "kind", "trace_id", "span_id", "parent_span_id", "links",
     "attributes": {key: value}}
(ids as lowercase hex, `parent_span_id` "" for a root, `links` the linked span ids, `kind` the
proto enum's name, e.g. SPAN_KIND_SERVER). Stops on SIGTERM.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
from concurrent import futures

import grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc
from opentelemetry.proto.trace.v1 import trace_pb2


def _value(v):
    kind = v.WhichOneof("value")
    if kind is None:
        return None
    if kind == "array_value":
        return [_value(x) for x in v.array_value.values]
    if kind == "kvlist_value":
        return {kv.key: _value(kv.value) for kv in v.kvlist_value.values}
    return getattr(v, kind)


class Receiver(trace_service_pb2_grpc.TraceServiceServicer):
    def __init__(self, out: str) -> None:
        self.out = out
        self.lock = threading.Lock()

    def Export(self, request, context):  # noqa: N802 - the gRPC method's name
        lines = []
        for rs in request.resource_spans:
            resource = {kv.key: _value(kv.value) for kv in rs.resource.attributes}
            for ss in rs.scope_spans:
                for span in ss.spans:
                    lines.append(
                        json.dumps(
                            {
                                "service": resource.get("service.name"),
                                "scope": ss.scope.name,
                                "name": span.name,
                                "kind": trace_pb2.Span.SpanKind.Name(span.kind),
                                "trace_id": span.trace_id.hex(),
                                "span_id": span.span_id.hex(),
                                "parent_span_id": span.parent_span_id.hex(),
                                "links": [link.span_id.hex() for link in span.links],
                                "attributes": {kv.key: _value(kv.value) for kv in span.attributes},
                            }
                        )
                        + "\n"
                    )
        with self.lock, open(self.out, "a", encoding="utf-8") as f:
            f.writelines(lines)
        return trace_service_pb2.ExportTraceServiceResponse()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(Receiver(args.out), server)
    port = server.add_insecure_port(f"127.0.0.1:{args.port}")
    server.start()
    print(f"LISTENING {port}", flush=True)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    stop.wait()
    server.stop(grace=1)
    sys.exit(0)


if __name__ == "__main__":
    main()
