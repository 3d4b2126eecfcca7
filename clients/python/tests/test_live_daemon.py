"""The generated Python client against a live mcp-relay proxying the official Python SDK server:
every RPC answers, errors carry their gRPC codes, a metrics watch moves with real traffic, and
the Unix socket wants its bearer token."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import grpc
import pytest
from google.protobuf import duration_pb2

from mcp_relay_admin import connect, pb

PROTOCOL = "2025-11-25"
INITIALIZE = {
    "jsonrpc": "2.0", "id": 0, "method": "initialize",
    "params": {"protocolVersion": PROTOCOL, "capabilities": {},
               "clientInfo": {"name": "admin-client-test", "version": "1"}},
}


class McpSession:
    """A minimal legacy MCP client over urllib: enough to make real traffic through the proxy."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.session_id = None
        status, headers, _ = self.post(INITIALIZE)
        assert status == 200
        self.session_id = headers["mcp-session-id"]
        self.post({"jsonrpc": "2.0", "method": "notifications/initialized"})

    def post(self, message: dict) -> tuple[int, dict[str, str], str]:
        headers = {
            "content-type": "application/json",
            "accept": "application/json, text/event-stream",
            "mcp-protocol-version": PROTOCOL,
        }
        if self.session_id:
            headers["mcp-session-id"] = self.session_id
        request = urllib.request.Request(
            self.url, data=json.dumps(message).encode(), headers=headers, method="POST"
        )
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                return response.status, {k.lower(): v for k, v in response.headers.items()}, \
                    response.read().decode()
        except urllib.error.HTTPError as err:
            return err.code, {k.lower(): v for k, v in err.headers.items()}, err.read().decode()

    def progress_call(self, request_id: int, steps: int = 3) -> str:
        status, _, body = self.post({
            "jsonrpc": "2.0", "id": request_id, "method": "tools/call",
            "params": {"name": "progress", "arguments": {"steps": steps, "delay_ms": 20},
                       "_meta": {"progressToken": request_id}},
        })
        assert status == 200, body
        return body


def post_without_session(url: str, message: dict) -> tuple[int, dict[str, str], str]:
    """One request outside any session (e.g. an ``initialize``), not checked."""
    client = McpSession.__new__(McpSession)
    client.url, client.session_id = url, None
    return client.post(message)


@pytest.fixture
def admin(daemon):
    with connect(daemon.admin) as client:
        yield client


def name(session: McpSession) -> str:
    return f"sessions/{session.session_id}"


def test_sessions_streams_and_last_event_ids(daemon, admin) -> None:
    mcp = McpSession(daemon.url)
    mcp.progress_call(7)
    listed = admin.sessions.ListSessions(pb.ListSessionsRequest(filter='era = "LEGACY"'))
    assert name(mcp) in [s.name for s in listed.sessions]
    session = admin.sessions.GetSession(pb.GetSessionRequest(name=name(mcp)))
    assert session.protocol_version == PROTOCOL
    assert session.era == pb.PROTOCOL_ERA_LEGACY
    assert session.create_time.seconds > 0
    # The streams: initialize's answer, then the tool call's (priming event, 3 progress, result).
    call = max(session.streams, key=lambda s: s.events_forwarded)
    assert call.kind == pb.STREAM_KIND_POST and call.events_forwarded == 5
    assert call.upstream_state == pb.UPSTREAM_STATE_COMPLETE
    last = admin.sessions.GetLastEventId(pb.GetLastEventIdRequest(name=f"{call.name}/lastEventId"))
    stream_id = call.name.rsplit("/", 1)[1]
    assert last.client_event_id.startswith(f"{stream_id}:")
    assert last.upstream_event_id  # the event store's ids
    paged = admin.sessions.ListSessions(pb.ListSessionsRequest(page_size=1))
    assert len(paged.sessions) == 1


def test_errors_carry_their_grpc_codes(daemon, admin) -> None:
    mcp = McpSession(daemon.url)
    mcp.progress_call(8)
    streams = admin.sessions.GetSession(pb.GetSessionRequest(name=name(mcp))).streams
    stream = max(streams, key=lambda s: s.events_forwarded).name
    cases = [
        (lambda: admin.sessions.GetSession(pb.GetSessionRequest(name="sessions/nope")),
         grpc.StatusCode.NOT_FOUND),
        (lambda: admin.sessions.GetSession(pb.GetSessionRequest(name="nope")),
         grpc.StatusCode.INVALID_ARGUMENT),
        (lambda: admin.sessions.ForceReplay(
            pb.ForceReplayRequest(name=stream, after_event_id="not-an-id")),
         grpc.StatusCode.INVALID_ARGUMENT),
        (lambda: admin.sessions.ForceReplay(
            pb.ForceReplayRequest(name=stream, after_event_id=f"{stream.rsplit('/', 1)[1]}:1")),
         grpc.StatusCode.FAILED_PRECONDITION),
        (lambda: admin.sessions.ForceReplay(
            pb.ForceReplayRequest(name=stream, after_event_id=f"{stream.rsplit('/', 1)[1]}:99")),
         grpc.StatusCode.OUT_OF_RANGE),
        (lambda: admin.sessions.ListSessions(pb.ListSessionsRequest(page_size=-1)),
         grpc.StatusCode.INVALID_ARGUMENT),
    ]
    for call, code in cases:
        with pytest.raises(grpc.RpcError) as err:
            call()
        assert err.value.code() == code


def test_metrics_watch_moves_with_real_traffic(daemon, admin) -> None:
    interval = duration_pb2.Duration()
    interval.FromMilliseconds(100)
    watch = admin.metrics.WatchMetrics(pb.WatchMetricsRequest(interval=interval), timeout=30)
    first = next(watch).snapshot
    traffic = threading.Thread(target=lambda: McpSession(daemon.url).progress_call(9, steps=5))
    traffic.start()
    moved = None
    for message in watch:
        if message.snapshot.proxy.events_forwarded >= first.proxy.events_forwarded + 7:
            moved = message
            break
    watch.cancel()
    traffic.join()
    assert moved is not None
    assert moved.snapshot.proxy.streams_opened > first.proxy.streams_opened
    assert moved.snapshot.worker.updates > first.worker.updates
    snapshot = admin.metrics.GetMetrics(pb.GetMetricsRequest())
    assert snapshot.proxy.sessions >= 1


def test_session_watch_then_terminate(daemon, admin) -> None:
    watch = admin.sessions.WatchSessions(pb.WatchSessionsRequest(), timeout=30)
    for message in watch:
        if message.change_type == pb.SESSION_CHANGE_TYPE_SYNCED:
            break
        assert message.change_type == pb.SESSION_CHANGE_TYPE_EXISTING
    mcp = McpSession(daemon.url)
    created = next(watch)
    assert created.change_type == pb.SESSION_CHANGE_TYPE_CREATED
    assert created.session.name == name(mcp)
    answer = admin.sessions.TerminateSession(pb.TerminateSessionRequest(name=name(mcp)))
    assert answer.session.state == pb.SESSION_STATE_ENDED
    assert answer.upstream_status == 200
    ended = next(m for m in watch if m.change_type != pb.SESSION_CHANGE_TYPE_UPDATED)
    assert ended.change_type == pb.SESSION_CHANGE_TYPE_ENDED
    watch.cancel()
    status, _, _ = mcp.post({"jsonrpc": "2.0", "id": 1, "method": "ping"})
    assert status == 404, "the client's next request after termination"


def test_routes_endpoints_and_drains(daemon, admin) -> None:
    mcp = McpSession(daemon.url)
    path = urllib.parse.urlparse(daemon.url).path
    routes = admin.upstreams.ListRoutes(pb.ListRoutesRequest())
    assert routes.generation >= 1
    route = next(r for r in routes.routes if r.path == path)
    assert route.name == path  # the `--upstream` shorthand: named after its path
    assert route.endpoint_count == 1 and route.available_endpoint_count == 1
    assert route.response_timeout.seconds > 0
    assert route.health_check == pb.HEALTH_CHECK_KIND_NONE
    endpoints = admin.upstreams.ListEndpoints(pb.ListEndpointsRequest(route=route.name)).endpoints
    assert len(endpoints) == 1
    endpoint = endpoints[0]
    session = admin.sessions.GetSession(pb.GetSessionRequest(name=name(mcp)))
    assert (session.route, session.upstream) == (route.name, endpoint.url)
    assert endpoint.health == pb.ENDPOINT_HEALTH_HEALTHY and not endpoint.drained
    assert endpoint.requests >= 2  # at least this session's initialize and notification
    assert endpoint.sessions_pinned >= 1
    listed = admin.sessions.ListSessions(pb.ListSessionsRequest(filter=f'route = "{route.name}"'))
    assert name(mcp) in [s.name for s in listed.sessions]
    assert not admin.sessions.ListSessions(pb.ListSessionsRequest(filter='route = "/nope"')).sessions
    with pytest.raises(grpc.RpcError) as err:
        admin.upstreams.ListEndpoints(pb.ListEndpointsRequest(route="/nope"))
    assert err.value.code() == grpc.StatusCode.NOT_FOUND

    # Drained: the pinned session goes on, a new one finds no endpoint (503) until undrained.
    target = {"route": route.name, "url": endpoint.url}
    assert admin.upstreams.DrainEndpoint(pb.DrainEndpointRequest(**target)).drained
    try:
        assert mcp.post({"jsonrpc": "2.0", "id": 2, "method": "ping"})[0] == 200
        status, _, body = post_without_session(daemon.url, INITIALIZE)
        assert status == 503, body
    finally:
        undrained = admin.upstreams.UndrainEndpoint(pb.UndrainEndpointRequest(**target))
    assert not undrained.drained
    McpSession(daemon.url)
    with pytest.raises(grpc.RpcError) as err:
        admin.upstreams.DrainEndpoint(pb.DrainEndpointRequest(route=route.name, url="http://nope/"))
    assert err.value.code() == grpc.StatusCode.NOT_FOUND


def test_unix_socket_requires_the_bearer_token(daemon) -> None:
    if not daemon.socket:
        pytest.skip("the standalone daemon has no Unix socket; run via cargo test")
    target = f"unix:{daemon.socket}"
    with connect(target, token=daemon.token) as admin:
        assert admin.metrics.GetMetrics(pb.GetMetricsRequest()).HasField("proxy")
        watch = admin.sessions.WatchSessions(pb.WatchSessionsRequest(), timeout=10)
        assert any(m.change_type == pb.SESSION_CHANGE_TYPE_SYNCED for m in watch)
    for token in (None, "wrong"):
        with connect(target, token=token) as admin:
            with pytest.raises(grpc.RpcError) as err:
                admin.sessions.ListSessions(pb.ListSessionsRequest())
            assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
            assert daemon.token not in (err.value.details() or "")


def test_example_cli_prints_json(daemon) -> None:
    mcp = McpSession(daemon.url)
    src = Path(__file__).resolve().parents[1] / "src"
    run = lambda *args: subprocess.run(  # noqa: E731
        [sys.executable, "-m", "mcp_relay_admin", "--target", daemon.admin, *args],
        capture_output=True, text=True, timeout=30, env={"PYTHONPATH": str(src)},
    )
    out = run("session", name(mcp))
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["name"] == name(mcp)
    out = run("watch-metrics", "--interval", "0.1", "--count", "2")
    assert out.returncode == 0, out.stderr
    assert len(out.stdout.splitlines()) == 2
    out = run("endpoints")
    assert out.returncode == 0, out.stderr
    endpoint = json.loads(out.stdout.splitlines()[0])
    assert endpoint["health"] == "ENDPOINT_HEALTH_HEALTHY"
    out = run("watch-endpoints", "--count", "1")
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["endpoints"][0]["url"] == endpoint["url"]
    out = run("session", "sessions/nope")
    assert out.returncode == 1 and out.stderr.startswith("NOT_FOUND"), out.stderr
