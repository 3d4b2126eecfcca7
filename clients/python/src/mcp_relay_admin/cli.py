"""``mcp-relay-admin``: a small command line over the control plane, printing JSON.

    python -m mcp_relay_admin [--target 127.0.0.1:50051 | --target unix:/run/mcp-relay/admin.sock]
                              [--token TOKEN] COMMAND ...

Commands: ``sessions [--filter F] [--page-size N]``, ``session NAME``, ``last-event-id NAME``,
``replay STREAM AFTER_EVENT_ID``, ``terminate NAME``, ``metrics``,
``watch-metrics [--interval S] [--count N]``, ``watch-sessions [--filter F] [--count N]``,
``routes``, ``endpoints [--route R]``, ``drain ROUTE URL``, ``undrain ROUTE URL``,
``watch-endpoints [--route R] [--count N]``.
The token may also come from ``MCP_RELAY_ADMIN_TOKEN``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Iterable, Iterator

import grpc
from google.protobuf import duration_pb2, json_format
from google.protobuf.message import Message

from mcp_relay_admin.client import connect
from mcprelay.admin.v1 import admin_pb2 as pb


def _json(message: Message) -> str:
    return json.dumps(json_format.MessageToDict(message), sort_keys=False)


def _take(stream: Iterable[Message], count: int | None) -> Iterator[Message]:
    """The first ``count`` messages (all when ``None``), without waiting for one more."""
    if count is not None and count <= 0:
        return
    for i, message in enumerate(stream, 1):
        yield message
        if count is not None and i >= count:
            return


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="mcp-relay-admin", description=__doc__.split("\n\n")[0])
    p.add_argument("--target", default="127.0.0.1:50051", help="host:port or unix:/path")
    p.add_argument("--token", default=os.environ.get("MCP_RELAY_ADMIN_TOKEN"))
    sub = p.add_subparsers(dest="command", required=True)
    s = sub.add_parser("sessions", help="ListSessions (every page)")
    s.add_argument("--filter", default="")
    s.add_argument("--page-size", type=int, default=0)
    sub.add_parser("session", help="GetSession").add_argument("name")
    sub.add_parser("last-event-id", help="GetLastEventId").add_argument("name")
    r = sub.add_parser("replay", help="ForceReplay")
    r.add_argument("stream", help="sessions/{session}/streams/{stream}")
    r.add_argument("after_event_id")
    sub.add_parser("terminate", help="TerminateSession").add_argument("name")
    sub.add_parser("metrics", help="GetMetrics")
    w = sub.add_parser("watch-metrics", help="WatchMetrics")
    w.add_argument("--interval", type=float, default=1.0, help="seconds")
    w.add_argument("--count", type=int, default=None)
    ws = sub.add_parser("watch-sessions", help="WatchSessions")
    ws.add_argument("--filter", default="")
    ws.add_argument("--count", type=int, default=None)
    sub.add_parser("routes", help="ListRoutes")
    sub.add_parser("endpoints", help="ListEndpoints").add_argument("--route", default="")
    for command in ("drain", "undrain"):
        d = sub.add_parser(command, help=f"{command.capitalize()}Endpoint")
        d.add_argument("route", help="the route's name")
        d.add_argument("url", help="the endpoint's URL as `endpoints` shows it")
    we = sub.add_parser("watch-endpoints", help="WatchEndpoints")
    we.add_argument("--route", default="")
    we.add_argument("--count", type=int, default=None)
    return p


def run(argv: list[str]) -> int:
    args = _parser().parse_args(argv)
    with connect(args.target, token=args.token) as admin:
        s, m, u = admin.sessions, admin.metrics, admin.upstreams
        if args.command == "sessions":
            token = ""
            while True:
                page = s.ListSessions(
                    pb.ListSessionsRequest(
                        filter=args.filter, page_size=args.page_size, page_token=token
                    )
                )
                for session in page.sessions:
                    print(_json(session))
                token = page.next_page_token
                if not token:
                    break
        elif args.command == "session":
            print(_json(s.GetSession(pb.GetSessionRequest(name=args.name))))
        elif args.command == "last-event-id":
            print(_json(s.GetLastEventId(pb.GetLastEventIdRequest(name=args.name))))
        elif args.command == "replay":
            request = pb.ForceReplayRequest(name=args.stream, after_event_id=args.after_event_id)
            print(_json(s.ForceReplay(request)))
        elif args.command == "terminate":
            print(_json(s.TerminateSession(pb.TerminateSessionRequest(name=args.name))))
        elif args.command == "metrics":
            print(_json(m.GetMetrics(pb.GetMetricsRequest())))
        elif args.command == "watch-metrics":
            interval = duration_pb2.Duration()
            interval.FromNanoseconds(int(args.interval * 1e9))
            stream = m.WatchMetrics(pb.WatchMetricsRequest(interval=interval))
            for message in _take(stream, args.count):
                print(_json(message), flush=True)
            stream.cancel()
        elif args.command == "watch-sessions":
            stream = s.WatchSessions(pb.WatchSessionsRequest(filter=args.filter))
            for message in _take(stream, args.count):
                print(_json(message), flush=True)
            stream.cancel()
        elif args.command == "routes":
            for route in u.ListRoutes(pb.ListRoutesRequest()).routes:
                print(_json(route))
        elif args.command == "endpoints":
            for endpoint in u.ListEndpoints(pb.ListEndpointsRequest(route=args.route)).endpoints:
                print(_json(endpoint))
        elif args.command == "drain":
            print(_json(u.DrainEndpoint(pb.DrainEndpointRequest(route=args.route, url=args.url))))
        elif args.command == "undrain":
            request = pb.UndrainEndpointRequest(route=args.route, url=args.url)
            print(_json(u.UndrainEndpoint(request)))
        elif args.command == "watch-endpoints":
            stream = u.WatchEndpoints(pb.WatchEndpointsRequest(route=args.route))
            for message in _take(stream, args.count):
                print(_json(message), flush=True)
            stream.cancel()
    return 0


def main() -> None:
    try:
        sys.exit(run(sys.argv[1:]))
    except grpc.RpcError as err:
        print(f"{err.code().name}: {err.details()}", file=sys.stderr)  # type: ignore[attr-defined]
        sys.exit(1)
    except KeyboardInterrupt:
        sys.exit(130)
