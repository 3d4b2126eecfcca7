"""Connecting to the mcp-relay control plane over TCP or a Unix socket, with a bearer token."""

from __future__ import annotations

import collections
from typing import Any, Callable

import grpc

from mcprelay.admin.v1 import admin_pb2_grpc


class _CallDetails(
    collections.namedtuple(
        "_CallDetails",
        ("method", "timeout", "metadata", "credentials", "wait_for_ready", "compression"),
    ),
    grpc.ClientCallDetails,
):
    pass


class _BearerToken(
    grpc.UnaryUnaryClientInterceptor,
    grpc.UnaryStreamClientInterceptor,
):
    """Adds ``authorization: Bearer <token>`` to every call (unary and streaming)."""

    def __init__(self, token: str) -> None:
        self._header = ("authorization", f"Bearer {token}")

    def _with_token(self, details: grpc.ClientCallDetails) -> grpc.ClientCallDetails:
        return _CallDetails(
            details.method,
            details.timeout,
            list(details.metadata or []) + [self._header],
            details.credentials,
            getattr(details, "wait_for_ready", None),
            getattr(details, "compression", None),
        )

    def intercept_unary_unary(self, continuation: Callable, details: Any, request: Any) -> Any:
        return continuation(self._with_token(details), request)

    def intercept_unary_stream(self, continuation: Callable, details: Any, request: Any) -> Any:
        return continuation(self._with_token(details), request)


class AdminClient:
    """The control plane's services on one channel: ``sessions`` (SessionService), ``metrics``
    (MetricsService) and ``upstreams`` (UpstreamService: routes, endpoints, drains). Close it,
    or use it as a context manager."""

    def __init__(self, channel: grpc.Channel) -> None:
        self.channel = channel
        self.sessions = admin_pb2_grpc.SessionServiceStub(channel)
        self.metrics = admin_pb2_grpc.MetricsServiceStub(channel)
        self.upstreams = admin_pb2_grpc.UpstreamServiceStub(channel)

    def close(self) -> None:
        self.channel.close()

    def __enter__(self) -> "AdminClient":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def connect(target: str, *, token: str | None = None) -> AdminClient:
    """Connects to the control plane at ``target``: ``host:port`` (plaintext; loopback by
    default) or ``unix:/path/to/admin.sock``. With ``token``, every call carries it as a bearer
    token (the daemon answers UNAUTHENTICATED otherwise, when it has one configured)."""
    options = []
    if target.startswith("unix:"):
        # grpcio's default :authority for a Unix socket is the path, which tonic's HTTP/2 layer
        # refuses; any plain host name does.
        options.append(("grpc.default_authority", "localhost"))
    channel = grpc.insecure_channel(target, options=options)
    if token:
        channel = grpc.intercept_channel(channel, _BearerToken(token))
    return AdminClient(channel)
