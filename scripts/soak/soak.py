"""The soak: mixed real-SDK traffic of both MCP eras through a release mcp-relay, with faults.

Run it through `scripts/soak.sh` (it builds the binary and sets up the peers). Loopback only.

Processes (all children of this one, all on free 127.0.0.1 ports):
  * redis-server of its own (`--save '' --appendonly no`): the relay's store, killed and started
    again (empty) during the run;
  * scripts/soak/upstream.py: the official Python SDK server with good tools and a hostile layer
    in the same process (see its docstring), killed (SIGKILL) and started again on its port;
  * mcp-relay (release, `--threads 2`, Redis store, JSON logs at info to relay.log).

Traffic, in this process (asyncio):
  * legacy workers: `Client(mode="legacy")` sessions (2025-11-25, resumable streams through the
    upstream's event store), tool `count` with numbered progress; some calls ask the upstream to
    close the stream midway (`cut_at`, 2025-11-25 polling), some have the client's connection cut
    midway by the HTTP transport (the SDK then resumes with GET + Last-Event-ID);
  * modern workers: `Client(mode="2026-07-28")`, same tool; a cut client stream is the request's
    cancellation, so the worker retries it (up to 3 attempts, each checked on its own);
  * hostile workers: raw HTTP to the hostile tool, both eras, every mode; the modes that end with a
    response are checked for exactly-once too.

Checks (exit 1 if any fails): every progress number of a completed request received exactly once
(lost = 0, duplicates = 0, misrouted = 0); no request hung; no request failed without an injected
fault that explains it; every WARN/ERROR line of the relay explained by an injected fault or a
hostile stream; after the quiet period: no sessions, streams or client connections left, open
descriptors within FD_SLACK of the baseline, tokio tasks alive within TASK_SLACK of it, and RSS
at most baseline * (1 + RSS_SLACK_PCT/100) + RSS_SLACK_MIB. The baseline is taken after a
warm-up (same traffic, no faults) and a quiet period, so allocator pools and lazily built state
count in it; the fresh-start numbers are reported too.

Why these tolerances: the exact leak checks are the counts (sessions, streams, client
connections must be 0, tasks back to the baseline's, and no socket its peer closed may still
be held: CLOSE_WAIT); RSS only has to come back near it, since
glibc keeps freed memory in its per-thread arenas (the data plane's 2 threads and the main
runtime's) rather than returning it, which is a few MiB at this traffic (peak - baseline was
about 5 MiB in the smoke runs), not growth per request. Descriptors: the upstream pool keeps
idle connections up to 90 s, but this upstream (uvicorn) closes idle keep-alive connections
after 5 s, so after the quiet period only a few (pool, Redis reconnection) may differ.

Environment: SOAK_SECS (600), SOAK_LEGACY (8), SOAK_MODERN (8), SOAK_HOSTILE (2), SOAK_SEED,
SOAK_WARMUP_SECS, RSS_SLACK_MIB (8), RSS_SLACK_PCT (25), FD_SLACK (8), TASK_SLACK (2),
CLOSE_WAIT_OK=1 (report sockets held in CLOSE_WAIT without failing).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import random
import re
import signal
import socket
import sys
import time
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx2
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from mcp_types import TextContent

ROOT = Path(__file__).resolve().parents[2]
PY = sys.executable

SECS = int(os.environ.get("SOAK_SECS", "600"))
N_LEGACY = int(os.environ.get("SOAK_LEGACY", "8"))
N_MODERN = int(os.environ.get("SOAK_MODERN", "8"))
N_HOSTILE = int(os.environ.get("SOAK_HOSTILE", "2"))
SEED = int(os.environ.get("SOAK_SEED", str(int(time.time()))))
WARMUP = int(os.environ.get("SOAK_WARMUP_SECS", str(min(20, max(8, SECS // 10)))))
RSS_SLACK_MIB = float(os.environ.get("RSS_SLACK_MIB", "8"))
RSS_SLACK_PCT = float(os.environ.get("RSS_SLACK_PCT", "25"))
FD_SLACK = int(os.environ.get("FD_SLACK", "8"))
TASK_SLACK = int(os.environ.get("TASK_SLACK", "2"))

LINGER_SECS = 5
IDLE_TTL_SECS = 10
RECONNECT_WINDOW = 20.0  # seconds after an upstream restart its effects may still show (pump backoff, linger)
REDIS_WINDOW = 10.0  # seconds after Redis is back that a retried write may still report the outage
CALL_TIMEOUT = 60.0
P_CLIENT_CUT = 0.2
P_UPSTREAM_CUT = 0.2
P_ANNOUNCE = 0.2
MAX_EVENT_BYTES = 1 << 20
HOSTILE_MODES = ("comments", "keepalive", "dupstorm", "cutmid", "slowheaders", "bigevent")


TCP_STATES = {"01": "ESTABLISHED", "06": "TIME_WAIT", "08": "CLOSE_WAIT", "04": "FIN_WAIT1", "05": "FIN_WAIT2", "09": "LAST_ACK"}


def now() -> float:
    return time.time()


def describe(e: BaseException) -> str:
    """The innermost error of an ExceptionGroup (anyio task groups wrap the SDK's), as text."""
    while isinstance(e, BaseExceptionGroup) and e.exceptions:
        e = e.exceptions[0]
    return f"{type(e).__name__}: {e}"[:300]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ---------------------------------------------------------------------------------------------
# Processes


class Procs:
    def __init__(self, out: Path, relay_bin: Path) -> None:
        self.out = out
        self.relay_bin = relay_bin
        self.redis_port, self.up_port = free_port(), free_port()
        self.relay_port, self.admin_port, self.metrics_port = free_port(), free_port(), free_port()
        self.redis: asyncio.subprocess.Process | None = None
        self.upstream: asyncio.subprocess.Process | None = None
        self.relay: asyncio.subprocess.Process | None = None
        self.url = f"http://127.0.0.1:{self.relay_port}/mcp"
        self.metrics_url = f"http://127.0.0.1:{self.metrics_port}/metrics"

    async def start_redis(self) -> None:
        log = open(self.out / "redis.log", "ab")
        self.redis = await asyncio.create_subprocess_exec(
            "redis-server", "--port", str(self.redis_port), "--bind", "127.0.0.1", "--save", "",
            "--appendonly", "no", "--daemonize", "no", "--dir", str(self.out),
            stdout=log, stderr=log,
        )  # fmt: skip
        for _ in range(100):
            with contextlib.suppress(OSError):
                r, w = await asyncio.open_connection("127.0.0.1", self.redis_port)
                w.write(b"PING\r\n")
                await w.drain()
                line = await asyncio.wait_for(r.readline(), 1)
                w.close()
                if line.startswith(b"+PONG"):
                    return
            await asyncio.sleep(0.1)
        raise RuntimeError("redis-server did not answer PING")

    async def start_upstream(self) -> None:
        log = open(self.out / "upstream.log", "ab")
        self.upstream = await asyncio.create_subprocess_exec(
            PY, str(ROOT / "scripts/soak/upstream.py"), "--port", str(self.up_port),
            stdout=asyncio.subprocess.PIPE, stderr=log,
        )  # fmt: skip
        line = await asyncio.wait_for(self.upstream.stdout.readline(), 30)
        if not line.startswith(b"LISTENING"):
            raise RuntimeError(f"upstream did not start: {line!r}")

    async def start_relay(self) -> None:
        env = dict(os.environ)
        env.update(
            RUST_LOG="info",
            MCP_RELAY_STORE__BACKEND="redis",
            MCP_RELAY_STORE__URL=f"redis://127.0.0.1:{self.redis_port}/0",
            MCP_RELAY_SESSION__LINGER_SECS=str(LINGER_SECS),
            MCP_RELAY_PROXY__MAX_EVENT_BYTES=str(MAX_EVENT_BYTES),
        )
        self.relay_log = self.out / "relay.log"
        self.relay = await asyncio.create_subprocess_exec(
            str(self.relay_bin), "serve", "--upstream", f"http://127.0.0.1:{self.up_port}/mcp",
            "--listen", f"127.0.0.1:{self.relay_port}", "--admin-listen", f"127.0.0.1:{self.admin_port}",
            "--metrics-listen", f"127.0.0.1:{self.metrics_port}", "--threads", "2",
            "--session-idle-ttl-secs", str(IDLE_TTL_SECS), "--upstream-timeout-secs", "8",
            "--log-format", "json", "--log-target", "stderr",
            env=env, stdout=asyncio.subprocess.DEVNULL, stderr=open(self.relay_log, "wb"),
        )  # fmt: skip
        async with httpx2.AsyncClient(timeout=2) as http:
            for _ in range(200):
                with contextlib.suppress(httpx2.HTTPError):
                    r = await http.get(f"http://127.0.0.1:{self.metrics_port}/readyz")
                    if r.status_code == 200:
                        return
                if self.relay.returncode is not None:
                    break
                await asyncio.sleep(0.1)
        raise RuntimeError(f"mcp-relay did not become ready; see {self.relay_log}")

    @staticmethod
    async def kill(proc: asyncio.subprocess.Process | None) -> None:
        if proc is not None and proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGKILL)
            await proc.wait()

    async def stop_all(self) -> None:
        if self.relay is not None and self.relay.returncode is None:
            self.relay.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(self.relay.wait(), 20)
            except TimeoutError:
                await self.kill(self.relay)
        await self.kill(self.upstream)
        await self.kill(self.redis)

    def relay_proc(self) -> dict[str, int]:
        pid = self.relay.pid
        rss = 0
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                rss = int(line.split()[1]) * 1024
            if line.startswith("Threads:"):
                threads = int(line.split()[1])
        return {"rss": rss, "fds": len(os.listdir(f"/proc/{pid}/fd")), "threads": threads}

    def relay_fds(self) -> dict[str, int]:
        """The relay's descriptors by kind: sockets by the port of the far end (or `listen`)."""
        pid = self.relay.pid
        peers: dict[str, str] = {}
        for table in ("tcp", "tcp6"):
            with contextlib.suppress(OSError):
                for row in Path(f"/proc/{pid}/net/{table}").read_text().splitlines()[1:]:
                    f = row.split()
                    local, remote, inode = int(f[1].rsplit(":", 1)[1], 16), int(f[2].rsplit(":", 1)[1], 16), f[9]
                    state = TCP_STATES.get(f[3], f[3])
                    if remote == 0:
                        peers[inode] = "listen"
                    elif local in (self.relay_port, self.admin_port, self.metrics_port):
                        peers[inode] = f"client {state}"
                    else:
                        names = {self.up_port: "upstream", self.redis_port: "redis"}
                        peers[inode] = f"{names.get(remote, f'port {remote}')} {state}"
        out: dict[str, int] = {}
        for fd in os.listdir(f"/proc/{pid}/fd"):
            with contextlib.suppress(OSError):
                target = os.readlink(f"/proc/{pid}/fd/{fd}")
                if target.startswith("socket:["):
                    kind = "socket " + peers.get(target[8:-1], "other")
                else:
                    kind = re.sub(r"\[.*|:.*|/.*", "", target) or target
                out[kind] = out.get(kind, 0) + 1
        return out

    async def metrics(self) -> dict[str, float]:
        out: dict[str, float] = {}
        async with httpx2.AsyncClient(timeout=5) as http:
            text = (await http.get(self.metrics_url)).text
        for line in text.splitlines():
            if not line or line.startswith("#"):
                continue
            name_labels, _, value = line.rpartition(" ")
            name = name_labels.split("{", 1)[0]
            if name.endswith("_bucket") or name.endswith("_sum") or name.endswith("_count"):
                continue
            with contextlib.suppress(ValueError):
                out[name] = out.get(name, 0.0) + float(value)
        return out


# ---------------------------------------------------------------------------------------------
# Records


@dataclass
class Call:
    era: str
    worker: int
    tag: str
    n: int
    start: float
    session_start: float
    logical: str = ""
    attempt: int = 1
    client_cut: bool = False
    upstream_cut: bool = False
    cut_at: int = 0
    tool: str = "count"  # or "announce": numbered notifications on the session's GET stream
    delay_ms: int = field(default_factory=lambda: random.randint(5, 40))
    end: float = 0.0
    outcome: str = ""  # ok | failed | hung
    error: str = ""
    received: list[int] = field(default_factory=list)
    misrouted: int = 0
    phase: str = "soak"


@dataclass
class Fault:
    kind: str  # upstream_restart | redis_restart
    start: float
    end: float = 0.0


@dataclass
class HostileCall:
    era: str
    mode: str
    tag: str
    n: int
    start: float
    end: float = 0.0
    session: str | None = None
    streams: set[str] = field(default_factory=set)
    status: int | None = None
    events: list[str] = field(default_factory=list)  # upstream-side progress numbers, as data
    progress: list[int] = field(default_factory=list)
    response: bool = False
    comments: int = 0
    biggest_event: int = 0
    error: str = ""
    violation: str = ""
    phase: str = "soak"


class State:
    def __init__(self) -> None:
        self.stop = asyncio.Event()
        self.phase = "warmup"
        self.calls: list[Call] = []
        self.hostile: list[HostileCall] = []
        self.faults: list[Fault] = []
        self.session_errors: list[tuple[float, str]] = []
        self.hostile_sessions: set[str] = set()
        self.good_sessions: dict[str, tuple[int, float]] = {}
        self.stray_get_notifications = 0

    def restarts_between(self, a: float, b: float, kind: str = "upstream_restart") -> bool:
        return any(f.kind == kind and f.start <= b and (f.end or now()) >= a for f in self.faults)


# ---------------------------------------------------------------------------------------------
# The client side cut: an httpx2 transport that breaks one SSE answer after some bytes.


class CutStream(httpx2.AsyncByteStream):
    def __init__(self, inner: httpx2.AsyncByteStream, after: int) -> None:
        self.inner, self.after = inner, after

    async def __aiter__(self):
        seen = 0
        async for chunk in self.inner:
            if seen + len(chunk) >= self.after:
                part = chunk[: self.after - seen]
                if part:
                    yield part
                raise httpx2.ReadError("soak: client connection cut")
            seen += len(chunk)
            yield chunk

    async def aclose(self) -> None:
        await self.inner.aclose()


class CuttingTransport(httpx2.AsyncBaseTransport):
    """Cuts the first SSE answer to a POST after `arm` bytes (then disarms)."""

    def __init__(self) -> None:
        self.inner = httpx2.AsyncHTTPTransport()
        self.arm: int | None = None
        self.fired = False

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        resp = await self.inner.handle_async_request(request)
        ctype = resp.headers.get("content-type", "")
        if self.arm is not None and request.method == "POST" and ctype.startswith("text/event-stream"):
            after, self.arm, self.fired = self.arm, None, True
            return httpx2.Response(
                resp.status_code, headers=resp.headers, stream=CutStream(resp.stream, after), extensions=resp.extensions
            )
        return resp

    async def aclose(self) -> None:
        await self.inner.aclose()


def sdk_http(transport: CuttingTransport, sessions: list[str]) -> httpx2.AsyncClient:
    async def hook(resp: httpx2.Response) -> None:
        sid = resp.headers.get("mcp-session-id")
        if sid and sid not in sessions:
            sessions.append(sid)

    return httpx2.AsyncClient(
        transport=transport,
        timeout=httpx2.Timeout(30, read=300),
        event_hooks={"request": [], "response": [hook]},
    )


# ---------------------------------------------------------------------------------------------
# Good traffic


async def one_call(
    st: State, client: Client, transport: CuttingTransport, call: Call, sink: dict[str, list[int]] | None = None
) -> bool:
    received: list[int] = call.received
    if sink is not None:
        sink[call.tag] = received  # the GET stream's notifications land here
    prefix = call.tag + ":"

    async def on_progress(value: float, total: float | None, message: str | None) -> None:
        if message and message.startswith(prefix):
            received.append(int(value))
        else:
            call.misrouted += 1

    cut_at = call.cut_at = random.randint(1, call.n - 1) if call.upstream_cut else 0
    if call.client_cut:
        transport.arm = random.randint(150, 2500)
        transport.fired = False
    st.calls.append(call)
    try:
        async with asyncio.timeout(CALL_TIMEOUT):
            if call.tool == "announce":
                res = await client.call_tool("announce", {"n": call.n, "delay_ms": call.delay_ms, "tag": call.tag})
            else:
                res = await client.call_tool(
                    "count",
                    {"n": call.n, "delay_ms": call.delay_ms, "tag": call.tag, "cut_at": cut_at},
                    progress_callback=on_progress,
                )
        text = next((c.text for c in res.content if isinstance(c, TextContent)), None)
        if res.is_error or text != f"done {call.tag} {call.n}":
            call.outcome, call.error = "failed", f"result {text!r}"
        else:
            call.outcome = "ok"
            # Progress callbacks may still be queued behind the response, and the GET stream's
            # notifications travel apart from it: a bounded wait.
            for _ in range(40 if call.tool == "count" else 200):
                if len(set(received)) >= call.n:
                    break
                await asyncio.sleep(0.05)
    except TimeoutError:
        call.outcome, call.error = "hung", f"no answer in {CALL_TIMEOUT}s"
    except Exception as e:  # noqa: BLE001 - every failure is recorded and classified
        call.outcome, call.error = "failed", describe(e)
    finally:
        if call.client_cut and not transport.fired:
            call.client_cut = False  # the answer was not SSE (or never came): nothing was cut
        transport.arm = None
        call.end = now()
    return call.outcome == "ok"


async def legacy_worker(st: State, url: str, wid: int) -> None:
    seq = 0
    while not st.stop.is_set():
        transport = CuttingTransport()
        sessions: list[str] = []
        sink: dict[str, list[int]] = {}

        async def on_message(msg: Any) -> None:
            uri = str(getattr(getattr(msg, "params", None), "uri", "") or "")
            if uri.startswith("soak://"):
                tag, _, i = uri[len("soak://") :].rpartition("/")
                if tag in sink:
                    sink[tag].append(int(i))
                else:
                    st.stray_get_notifications += 1

        t0 = now()
        try:
            async with asyncio.timeout(CALL_TIMEOUT * 10):
                async with sdk_http(transport, sessions) as http:
                    async with Client(
                        streamable_http_client(url, http_client=http, terminate_on_close=True),
                        mode="legacy",
                        cache=None,
                        message_handler=on_message,
                    ) as client:
                        for sid in sessions:
                            st.good_sessions[sid] = (wid, t0)
                        for _ in range(random.randint(3, 8)):
                            if st.stop.is_set():
                                break
                            seq += 1
                            if random.random() < P_ANNOUNCE:
                                call = Call("legacy-get", wid, f"G{wid}-{seq}", random.randint(5, 40), now(), t0,
                                            tool="announce", phase=st.phase)  # fmt: skip
                            else:
                                call = Call(
                                    "legacy", wid, f"L{wid}-{seq}", random.randint(5, 40), now(), t0,
                                    client_cut=random.random() < P_CLIENT_CUT,
                                    upstream_cut=random.random() < P_UPSTREAM_CUT, phase=st.phase,
                                )  # fmt: skip
                            if not await one_call(st, client, transport, call, sink):
                                break  # leave this session; start another
        except Exception as e:  # noqa: BLE001
            st.session_errors.append((now(), f"legacy {describe(e)}"))
            await asyncio.sleep(0.5)


async def modern_worker(st: State, url: str, wid: int) -> None:
    seq = 0
    while not st.stop.is_set():
        transport = CuttingTransport()
        t0 = now()
        try:
            async with sdk_http(transport, []) as http:
                async with Client(
                    streamable_http_client(url, http_client=http, terminate_on_close=True), mode="2026-07-28", cache=None
                ) as client:
                    while not st.stop.is_set():
                        seq += 1
                        logical, n = f"M{wid}-{seq}", random.randint(5, 40)
                        ok = False
                        for attempt in range(1, 4):
                            call = Call(
                                "modern", wid, f"{logical}.{attempt}", n, now(), t0, logical=logical,
                                attempt=attempt, client_cut=random.random() < P_CLIENT_CUT, phase=st.phase,
                            )  # fmt: skip
                            if ok := await one_call(st, client, transport, call):
                                break
                            await asyncio.sleep(0.2)
                        if not ok:
                            break  # a fresh client
        except Exception as e:  # noqa: BLE001
            st.session_errors.append((now(), f"modern {describe(e)}"))
            await asyncio.sleep(0.5)


# ---------------------------------------------------------------------------------------------
# Hostile traffic (raw HTTP: the SDK client would not show what the proxy let through)

ACCEPT = {"accept": "application/json, text/event-stream", "content-type": "application/json"}
MODERN_META = {
    "io.modelcontextprotocol/protocolVersion": "2026-07-28",
    "io.modelcontextprotocol/clientInfo": {"name": "soak-hostile", "version": "0"},
    "io.modelcontextprotocol/clientCapabilities": {},
}


async def legacy_session(http: httpx2.AsyncClient, url: str) -> str:
    body = {
        "jsonrpc": "2.0", "id": 0, "method": "initialize",
        "params": {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "soak-hostile", "version": "0"}},
    }  # fmt: skip
    r = await http.post(url, json=body, headers=ACCEPT)
    sid = r.headers.get("mcp-session-id")
    if r.status_code != 200 or not sid:
        raise RuntimeError(f"initialize: {r.status_code}")
    h = {**ACCEPT, "mcp-session-id": sid, "mcp-protocol-version": "2025-11-25"}
    await http.post(url, json={"jsonrpc": "2.0", "method": "notifications/initialized"}, headers=h)
    return sid


def parse_sse_block(block: str, hc: HostileCall) -> None:
    data, eid = [], None
    for line in block.split("\n"):
        if line.startswith(":"):
            hc.comments += 1
        elif line.startswith("id:"):
            eid = line[3:].strip()
        elif line.startswith("data:"):
            data.append(line[5:].removeprefix(" "))
    if eid:
        hc.streams.add(eid.split(":", 1)[0])
    if not data:
        return
    text = "\n".join(data)
    hc.biggest_event = max(hc.biggest_event, len(text))
    with contextlib.suppress(ValueError):
        msg = json.loads(text)
        if isinstance(msg, dict) and msg.get("method") == "notifications/progress":
            p = msg.get("params", {})
            if str(p.get("message", "")).startswith(hc.tag + ":"):
                hc.progress.append(int(p["progress"]))
        elif isinstance(msg, dict) and "id" in msg and ("result" in msg or "error" in msg):
            hc.response = True


async def hostile_call(st: State, http: httpx2.AsyncClient, url: str, era: str, sid: str | None, wid: int, seq: int) -> None:
    mode = random.choice(HOSTILE_MODES)
    n = random.randint(10, 60)
    secs = {"comments": random.uniform(1, 4), "keepalive": random.uniform(1, 4), "slowheaders": random.uniform(1, 4)}.get(mode, 5)
    if mode == "slowheaders" and random.random() < 0.25:
        secs = 10  # past the relay's 8 s upstream response timeout: a 504
    hc = HostileCall(era, mode, f"H{wid}-{seq}", n, now(), session=sid, phase=st.phase)
    st.hostile.append(hc)
    params: dict[str, Any] = {"name": "hostile", "arguments": {"mode": mode, "n": n, "tag": hc.tag, "secs": secs}}
    if era == "modern":
        params["_meta"] = {**MODERN_META, "progressToken": hc.tag}
        headers = {**ACCEPT, "mcp-protocol-version": "2026-07-28", "mcp-method": "tools/call", "mcp-name": "hostile"}
    else:
        params["_meta"] = {"progressToken": hc.tag}
        headers = {**ACCEPT, "mcp-session-id": sid, "mcp-protocol-version": "2025-11-25"}
    body = {"jsonrpc": "2.0", "id": seq, "method": "tools/call", "params": params}
    read_for = secs + 15 if mode in ("comments", "keepalive") else 30.0
    if mode in ("comments", "keepalive"):
        read_for = secs  # endless: the client leaves after `secs`
    buf = ""
    try:
        async with asyncio.timeout(read_for + 15):
            async with http.stream("POST", url, json=body, headers=headers) as r:
                hc.status = r.status_code
                deadline = time.monotonic() + read_for
                async for chunk in r.aiter_text():
                    buf += chunk.replace("\r\n", "\n")
                    while "\n\n" in buf:
                        block, buf = buf.split("\n\n", 1)
                        parse_sse_block(block, hc)
                    if hc.response or time.monotonic() > deadline:
                        break
    except TimeoutError:
        hc.error = "timeout"
    except Exception as e:  # noqa: BLE001
        hc.error = f"{type(e).__name__}: {e}"[:200]
    hc.end = now()
    check_hostile(hc, buf)


def check_hostile(hc: HostileCall, rest: str) -> None:
    seen = hc.progress
    if len(seen) != len(set(seen)):
        hc.violation = f"duplicates {sorted(seen)}"
    elif hc.biggest_event > MAX_EVENT_BYTES:
        hc.violation = f"an event of {hc.biggest_event} bytes passed"
    elif hc.mode in ("dupstorm", "slowheaders") and hc.status == 200 and hc.response and sorted(seen) != list(range(1, hc.n + 1)):
        hc.violation = f"got {sorted(seen)} of 1..{hc.n}"
    elif hc.mode == "cutmid" and hc.era == "legacy" and hc.response and sorted(seen) != list(range(1, hc.n + 1)):
        hc.violation = f"got {sorted(seen)} of 1..{hc.n}"
    elif hc.mode == "bigevent" and hc.response:
        hc.violation = "the stream went on past the oversized event"
    elif hc.mode in ("dupstorm", "cutmid", "bigevent") and sorted(seen) != list(range(1, len(seen) + 1)):
        hc.violation = f"not a prefix: {sorted(seen)}"


async def hostile_worker(st: State, url: str, wid: int) -> None:
    seq = 0
    while not st.stop.is_set():
        era = "legacy" if wid % 2 == 0 else "modern"
        try:
            async with httpx2.AsyncClient(timeout=httpx2.Timeout(30, read=60)) as http:
                sid = None
                if era == "legacy":
                    sid = await legacy_session(http, url)
                    st.hostile_sessions.add(sid)
                for _ in range(random.randint(2, 5)):
                    if st.stop.is_set():
                        break
                    seq += 1
                    await hostile_call(st, http, url, era, sid, wid, seq)
                    await asyncio.sleep(random.uniform(0.2, 1.0))
                if sid:
                    with contextlib.suppress(httpx2.HTTPError):
                        await http.delete(url, headers={"mcp-session-id": sid, "mcp-protocol-version": "2025-11-25"})
        except Exception as e:  # noqa: BLE001
            st.session_errors.append((now(), f"hostile {era} {describe(e)}"))
            await asyncio.sleep(0.5)


# ---------------------------------------------------------------------------------------------
# Faults and sampling


async def inject_faults(st: State, procs: Procs, secs: int) -> None:
    n_up, n_redis = max(1, secs // 100), max(1, secs // 120)
    t0 = time.monotonic()
    plan = [(random.uniform(0.1, 0.85) * secs, "upstream_restart") for _ in range(n_up)]
    plan += [(random.uniform(0.1, 0.85) * secs, "redis_restart") for _ in range(n_redis)]
    for at, kind in sorted(plan):
        delay = at - (time.monotonic() - t0)
        if delay > 0:
            try:
                await asyncio.wait_for(st.stop.wait(), delay)
                return
            except TimeoutError:
                pass
        f = Fault(kind, now())
        st.faults.append(f)
        if kind == "upstream_restart":
            await procs.kill(procs.upstream)
            await asyncio.sleep(random.uniform(0.3, 2.0))
            await procs.start_upstream()
        else:
            await procs.kill(procs.redis)
            await asyncio.sleep(random.uniform(1.0, 4.0))
            await procs.start_redis()
        f.end = now()
        print(f"  fault: {kind} {f.end - f.start:.1f}s", flush=True)


async def sample(st: State, procs: Procs, peak: dict[str, int], timeline: list[dict[str, Any]]) -> None:
    t0, tick = time.monotonic(), 0
    while True:
        with contextlib.suppress(OSError, UnboundLocalError):
            p = procs.relay_proc()
            for k, v in p.items():
                peak[k] = max(peak.get(k, 0), v)
            if tick % 30 == 0:
                timeline.append({"t": round(time.monotonic() - t0), "rss_mib": round(p["rss"] / 1048576, 1), "fds": p["fds"]})
        tick += 1
        await asyncio.sleep(1)


async def run_traffic(st: State, procs: Procs, secs: float, faults: bool) -> None:
    st.stop = asyncio.Event()
    tasks = [asyncio.create_task(legacy_worker(st, procs.url, i)) for i in range(N_LEGACY)]
    tasks += [asyncio.create_task(modern_worker(st, procs.url, i)) for i in range(N_MODERN)]
    tasks += [asyncio.create_task(hostile_worker(st, procs.url, i)) for i in range(N_HOSTILE)]
    injector = asyncio.create_task(inject_faults(st, procs, int(secs))) if faults else None
    await asyncio.sleep(secs)
    st.stop.set()
    if injector:
        await injector
    # Workers finish the call in hand (bounded by CALL_TIMEOUT) and close their sessions.
    done, pending = await asyncio.wait(tasks, timeout=CALL_TIMEOUT * 2)
    for t in pending:
        t.cancel()
    if pending:
        st.session_errors.append((now(), f"{len(pending)} workers did not stop in time"))


async def quiet(procs: Procs, label: str) -> dict[str, float]:
    """Waits for the relay to hold no session, stream or client connection (bounded)."""
    await asyncio.sleep(LINGER_SECS + 1)
    m: dict[str, float] = {}
    for _ in range(90):
        m = await procs.metrics()
        if (
            m.get("mcp_relay_sessions", 0) == 0
            and m.get("mcp_relay_sse_streams_open", 0) == 0
            and m.get("mcp_relay_data_plane_connections", 0) == 0
        ):
            break
        await asyncio.sleep(1)
    await asyncio.sleep(2)
    return await procs.metrics()


# ---------------------------------------------------------------------------------------------
# Analysis


def analyse_calls(st: State) -> dict[str, Any]:
    r: dict[str, Any] = {
        "requests": 0, "ok": 0, "failed": 0, "hung": 0, "expected": 0, "received": 0, "duplicates": 0,
        "lost": 0, "misrouted": 0, "client_cuts": 0, "upstream_cuts": 0, "legacy_cut_resumed": 0,
        "legacy_cut_failed": 0, "modern_logical": 0, "modern_logical_failed": 0,
        "failed_by_cause": {}, "unexplained_failures": [], "bad": [],
    }  # fmt: skip
    logical: dict[str, bool] = {}
    for c in st.calls:
        r["requests"] += 1
        r[c.outcome] = r.get(c.outcome, 0) + 1
        r["client_cuts"] += c.client_cut
        r["upstream_cuts"] += c.upstream_cut
        uniq = set(c.received)
        dups = len(c.received) - len(uniq)
        r["duplicates"] += dups
        r["misrouted"] += c.misrouted
        r["received"] += len(c.received)
        if c.era == "modern":
            logical[c.logical] = logical.get(c.logical, False) or c.outcome == "ok"
        if c.outcome == "ok":
            r["expected"] += c.n
            lost = len(set(range(1, c.n + 1)) - uniq)
            r["lost"] += lost
            if c.era == "legacy" and (c.client_cut or c.upstream_cut):
                r["legacy_cut_resumed"] += 1
            if lost or dups or c.misrouted or uniq - set(range(1, c.n + 1)):
                r["bad"].append(asdict(c))
            continue
        if dups or c.misrouted:
            r["bad"].append(asdict(c))
        if c.outcome == "hung":
            r["bad"].append(asdict(c))
            continue
        window_start = c.start if c.era == "modern" else c.session_start
        if st.restarts_between(window_start - 1, c.end + 1):
            cause = "upstream restart"
        elif c.client_cut and c.era == "modern":
            cause = "client cut (modern: the cut is the cancellation)"
        elif c.client_cut or c.upstream_cut:
            cause = "legacy cut not resumed"
            r["legacy_cut_failed"] += 1
        else:
            cause = None
            r["unexplained_failures"].append(asdict(c))
        if cause:
            r["failed_by_cause"][cause] = r["failed_by_cause"].get(cause, 0) + 1
    get_calls = [c for c in st.calls if c.tool == "announce"]
    r["get_stream"] = {
        "requests": len(get_calls),
        "ok": sum(c.outcome == "ok" for c in get_calls),
        "expected": sum(c.n for c in get_calls if c.outcome == "ok"),
        "received": sum(len(c.received) for c in get_calls),
        "lost": sum(len(set(range(1, c.n + 1)) - set(c.received)) for c in get_calls if c.outcome == "ok"),
        "stray": st.stray_get_notifications,
    }
    r["modern_logical"] = len(logical)
    r["modern_logical_failed"] = sum(1 for v in logical.values() if not v)
    return r


LOG_RULES: list[tuple[str, tuple[str, ...]]] = [
    # The environment's descriptor limit, read once at start-up.
    ("proxy.max_connections exceeds what the descriptor limit", ("startup",)),
    ("session store write failed", ("redis",)),
    ("claiming idle sessions from the store failed", ("redis",)),
    ("could not look up a session in the store", ("redis",)),
    ("upstream request failed", ("upstream", "hostile-slow")),
    ("could not end expired session upstream", ("upstream",)),
    ("upstream refused to resume the stream", ("upstream", "hostile")),
    ("upstream SSE stream is malformed", ("hostile",)),
    ("upstream SSE stream broke", ("upstream", "hostile")),
    ("refused a stream resumption", ("upstream",)),
]


def parse_ts(s: str) -> float:
    # 2026-11-27T13:01:02.123456Z
    from datetime import datetime

    return datetime.fromisoformat(s.replace("Z", "+00:00")).timestamp()


def classify_logs(st: State, log: Path) -> dict[str, Any]:
    counts: dict[str, int] = {}
    levels: dict[str, int] = {}
    unexplained: list[str] = []
    for raw in log.read_text(errors="replace").splitlines():
        try:
            line = json.loads(raw)
        except ValueError:
            if raw.strip():
                unexplained.append(raw[:400])
            continue
        level = line.get("level", "")
        levels[level] = levels.get(level, 0) + 1
        if level not in ("WARN", "ERROR"):
            continue
        msg = line.get("message", "") or line.get("fields", {}).get("message", "")
        t = parse_ts(line["timestamp"])
        session, stream = line.get("session"), line.get("stream")
        causes = next((c for pat, c in LOG_RULES if msg.startswith(pat)), ())
        if msg == "request failed":
            # The proxy's own answer to a request (logged once, with its kind and request id).
            kind = line.get("kind", "")
            if kind.startswith("upstream_"):
                causes = ("upstream", "hostile-slow")
            elif kind == "store_unavailable":
                causes = ("redis",)
        why = None
        for cause in causes:
            if cause == "startup":
                why = "start-up: the environment's descriptor limit"
            elif cause == "redis" and st.restarts_between(t - REDIS_WINDOW, t + 0.5, "redis_restart"):
                why = "redis restart"
            elif cause == "upstream" and st.restarts_between(t - RECONNECT_WINDOW, t + 0.5):
                why = "upstream restart"
            elif cause == "hostile":
                if session and session in st.hostile_sessions:
                    why = "hostile stream (its session)"
                elif stream and any(stream in h.streams for h in st.hostile):
                    why = "hostile stream (its stream)"
                elif not session and any(
                    h.era == "modern" and h.start - 0.5 <= t <= (h.end or now()) + LINGER_SECS + 2 for h in st.hostile
                ):
                    why = "hostile stream (modern, in flight)"
            elif cause == "hostile-slow" and "did not answer within" in raw:
                if any(h.mode == "slowheaders" and h.start <= t <= (h.end or now()) + 1 for h in st.hostile):
                    why = "hostile slow headers (504)"
            if why:
                break
        if why:
            counts[f"{msg[:60]} <- {why}"] = counts.get(f"{msg[:60]} <- {why}", 0) + 1
        else:
            unexplained.append(raw[:600])
    return {"levels": levels, "explained": counts, "unexplained": unexplained}


def mib(b: float) -> str:
    return f"{b / 1048576:.1f} MiB"


async def main_async(args: argparse.Namespace) -> int:
    random.seed(SEED)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    procs = Procs(out, Path(args.relay_bin))
    st = State()
    peak: dict[str, int] = {}
    report: dict[str, Any] = {"seed": SEED, "secs": SECS, "workers": [N_LEGACY, N_MODERN, N_HOSTILE]}
    sampler = None
    try:
        await procs.start_redis()
        await procs.start_upstream()
        await procs.start_relay()
        report["fresh"] = procs.relay_proc()
        print(f"soak: relay pid {procs.relay.pid} on {procs.url}; logs in {out}; seed {SEED}", flush=True)
        print(f"  fresh: RSS {mib(report['fresh']['rss'])}, {report['fresh']['fds']} fds", flush=True)
        st.phase = "warmup"
        await run_traffic(st, procs, WARMUP, faults=False)
        report["baseline_metrics"] = await quiet(procs, "baseline")
        report["baseline"] = procs.relay_proc()
        report["baseline_fds"] = procs.relay_fds()
        print(f"  baseline (after {WARMUP}s warm-up + quiet): RSS {mib(report['baseline']['rss'])}, {report['baseline']['fds']} fds", flush=True)
        timeline: list[dict[str, Any]] = []
        report["timeline"] = timeline
        sampler = asyncio.create_task(sample(st, procs, peak, timeline))
        st.phase = "soak"
        print(f"  soak: {SECS}s of traffic with faults ...", flush=True)
        await run_traffic(st, procs, SECS, faults=True)
        report["peak"] = dict(peak)
        report["end_metrics"] = await quiet(procs, "end")
        report["end"] = procs.relay_proc()
        report["end_fds"] = procs.relay_fds()
        if procs.relay.returncode is not None:
            raise RuntimeError(f"mcp-relay exited with {procs.relay.returncode}")
    finally:
        if sampler:
            sampler.cancel()
        await procs.stop_all()

    calls = analyse_calls(st)
    logs = classify_logs(st, procs.relay_log)
    hostile_bad = [asdict(h) | {"streams": sorted(h.streams)} for h in st.hostile if h.violation]
    hostile_modes: dict[str, int] = {}
    for h in st.hostile:
        k = f"{h.era}/{h.mode}:{h.status}"
        hostile_modes[k] = hostile_modes.get(k, 0) + 1
    base, end = report["baseline"], report["end"]
    rss_limit = base["rss"] * (1 + RSS_SLACK_PCT / 100) + RSS_SLACK_MIB * 1048576
    em = report["end_metrics"]
    leftovers = {k: em.get(k, 0) for k in ("mcp_relay_sessions", "mcp_relay_sse_streams_open", "mcp_relay_data_plane_connections")}
    failures = []
    if calls["lost"]:
        failures.append(f"{calls['lost']} notifications lost")
    if calls["duplicates"]:
        failures.append(f"{calls['duplicates']} duplicate notifications")
    if calls["misrouted"]:
        failures.append(f"{calls['misrouted']} misrouted notifications")
    if calls["hung"]:
        failures.append(f"{calls['hung']} requests hung")
    if calls["unexplained_failures"]:
        failures.append(f"{len(calls['unexplained_failures'])} requests failed with no injected fault")
    if hostile_bad:
        failures.append(f"{len(hostile_bad)} hostile streams let something wrong through")
    # A session that could not start or broke outside a call: only an upstream restart explains it.
    bad_sessions = [(t, e) for t, e in st.session_errors if not st.restarts_between(t - RECONNECT_WINDOW, t + 0.5)]
    if bad_sessions:
        failures.append(f"{len(bad_sessions)} session-level errors with no upstream restart")
    if logs["unexplained"]:
        failures.append(f"{len(logs['unexplained'])} WARN/ERROR log lines without a cause")
    if end["rss"] > rss_limit:
        failures.append(f"RSS {mib(end['rss'])} above baseline {mib(base['rss'])} + slack ({mib(rss_limit)})")
    close_wait = sum(v for k, v in report["end_fds"].items() if k.endswith("CLOSE_WAIT"))
    if close_wait and os.environ.get("CLOSE_WAIT_OK") != "1":
        failures.append(f"{close_wait} sockets the peer closed still held open (CLOSE_WAIT) after the quiet period")
    if end["fds"] > base["fds"] + FD_SLACK:
        failures.append(f"{end['fds']} fds, baseline {base['fds']} + {FD_SLACK}")
    tasks_base = report["baseline_metrics"].get("mcp_relay_runtime_alive_tasks", 0)
    tasks_end = em.get("mcp_relay_runtime_alive_tasks", 0)
    if tasks_end > tasks_base + TASK_SLACK:
        failures.append(f"{tasks_end:g} tokio tasks alive, baseline {tasks_base:g} + {TASK_SLACK}")
    if any(leftovers.values()):
        failures.append(f"left over after the quiet period: {leftovers}")
    soak_calls = [c for c in st.calls if c.phase == "soak"]
    report.update(
        calls={k: v for k, v in calls.items() if k not in ("bad", "unexplained_failures")},
        bad_calls=calls["bad"][:20],
        unexplained_failures=calls["unexplained_failures"][:20],
        soak_phase_requests=len(soak_calls),
        hostile={"runs": len(st.hostile), "modes": hostile_modes, "violations": hostile_bad[:20]},
        faults=[asdict(f) for f in st.faults],
        session_errors=st.session_errors[:50],
        unexplained_session_errors=bad_sessions[:20],
        session_errors_count=len(st.session_errors),
        logs=logs,
        leftovers=leftovers,
        failures=failures,
    )
    (out / "report.json").write_text(json.dumps(report, indent=2, default=str))

    c = calls
    print("\n== soak report ==")
    print(f"requests: {c['requests']} ({len(soak_calls)} in the soak phase): ok {c['ok']}, failed cleanly {c['failed']}, hung {c['hung']}")
    print(f"  modern logical requests {c['modern_logical']} (failed after 3 attempts: {c['modern_logical_failed']})")
    print(f"  failures by cause: {c['failed_by_cause']}")
    print(f"notifications: expected {c['expected']} (completed requests), received {c['received']}, duplicates {c['duplicates']}, lost {c['lost']}, misrouted {c['misrouted']}")
    print(f"  of which on the legacy GET stream (announce): {c['get_stream']}")
    print(f"cuts: client {c['client_cuts']}, upstream {c['upstream_cuts']}; legacy cut calls resumed {c['legacy_cut_resumed']}, failed {c['legacy_cut_failed']}")
    print(f"faults: {[(f.kind, round(f.end - f.start, 1)) for f in st.faults]}; session-level errors {len(st.session_errors)}")
    print(f"hostile: {len(st.hostile)} streams {hostile_modes}; violations {len(hostile_bad)}")
    print(f"relay log: {logs['levels']}; WARN/ERROR explained {sum(logs['explained'].values())}, unexplained {len(logs['unexplained'])}")
    for k, v in sorted(logs["explained"].items()):
        print(f"    {v:5d}  {k}")
    for line in logs["unexplained"][:15]:
        print(f"  UNEXPLAINED: {line}")
    for b in (calls["bad"] + calls["unexplained_failures"])[:10]:
        print(f"  BAD CALL: {json.dumps(b)[:400]}")
    for t, e in bad_sessions[:10]:
        print(f"  SESSION ERROR: {e}")
    for h in hostile_bad[:10]:
        print(f"  HOSTILE VIOLATION: {json.dumps(h, default=str)[:400]}")
    fr, pk = report["fresh"], report["peak"]
    print(
        f"RSS: fresh {mib(fr['rss'])}, baseline {mib(base['rss'])}, peak {mib(pk.get('rss', 0))}, end {mib(end['rss'])} (limit {mib(rss_limit)})"
    )
    print(f"fds: fresh {fr['fds']}, baseline {base['fds']}, peak {pk.get('fds', 0)}, end {end['fds']} (limit {base['fds'] + FD_SLACK})")
    steps = " ".join(f"{x['rss_mib']}/{x['fds']}" for x in report.get("timeline", []))
    print(f"  RSS MiB/fds every 30 s of the soak: {steps}")
    print(f"  fds by kind: baseline {report['baseline_fds']}, end {report['end_fds']}")
    print(f"threads: baseline {base['threads']}, peak {pk.get('threads', 0)}, end {end['threads']}")
    keys = ("mcp_relay_runtime_alive_tasks", "mcp_relay_sse_events_forwarded_total", "mcp_relay_sse_duplicates_dropped_total",
            "mcp_relay_sse_events_replayed_total", "mcp_relay_sse_resumptions_total", "mcp_relay_sse_resumptions_refused_total",
            "mcp_relay_upstream_reconnects_total", "mcp_relay_persistence_errors_total")  # fmt: skip
    print("metrics (baseline -> end): " + ", ".join(
        f"{k.removeprefix('mcp_relay_')} {report['baseline_metrics'].get(k, 0):g}->{em.get(k, 0):g}" for k in keys))  # fmt: skip
    print(f"report: {out / 'report.json'}")
    if failures:
        print("SOAK FAILED: " + "; ".join(failures))
        return 1
    print("SOAK PASSED")
    return 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--relay-bin", required=True)
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    warnings.simplefilter("ignore")
    Path(args.out).mkdir(parents=True, exist_ok=True)
    # The SDK's own log (reconnections, abandoned requests) goes to a file, not the report.
    logging.basicConfig(filename=str(Path(args.out) / "clients.log"), level=logging.INFO)
    sys.exit(asyncio.run(main_async(args)))


if __name__ == "__main__":
    main()
