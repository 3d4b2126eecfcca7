/**
 * The generated TypeScript client against a live mcp-relay proxying the official Python SDK
 * server. The daemon comes from the Rust harness (`cargo test --test control_clients`), which
 * passes ADMIN_TEST_TARGET, ADMIN_TEST_MCP_URL, ADMIN_TEST_SOCKET and ADMIN_TEST_TOKEN.
 */
import assert from "node:assert/strict";
import { test } from "node:test";

import { Code, ConnectError } from "@connectrpc/connect";

import {
  EndpointHealth,
  HealthCheckKind,
  SessionChangeType,
  SessionState,
  StreamKind,
  createAdminClient,
} from "../src/index.js";

function env(name: string): string {
  const value = process.env[name];
  if (!value) {
    throw new Error(`${name} is not set: run through \`cargo test --test control_clients\``);
  }
  return value;
}

const admin = createAdminClient({ address: env("ADMIN_TEST_TARGET") });
const mcpUrl = env("ADMIN_TEST_MCP_URL");
const PROTOCOL = "2025-11-25";

/** A minimal legacy MCP client over fetch: real traffic through the proxy. */
async function mcp(body: object, sessionId?: string): Promise<Response> {
  const headers: Record<string, string> = {
    "content-type": "application/json",
    accept: "application/json, text/event-stream",
    "mcp-protocol-version": PROTOCOL,
  };
  if (sessionId) headers["mcp-session-id"] = sessionId;
  return fetch(mcpUrl, { method: "POST", headers, body: JSON.stringify(body) });
}

async function openSession(): Promise<string> {
  const init = await mcp({
    jsonrpc: "2.0",
    id: 0,
    method: "initialize",
    params: { protocolVersion: PROTOCOL, capabilities: {}, clientInfo: { name: "ts-admin-test", version: "1" } },
  });
  assert.equal(init.status, 200);
  await init.text();
  const sid = init.headers.get("mcp-session-id");
  assert.ok(sid);
  await (await mcp({ jsonrpc: "2.0", method: "notifications/initialized" }, sid)).text();
  return sid;
}

async function progressCall(sid: string, id: number, steps: number): Promise<void> {
  const r = await mcp(
    {
      jsonrpc: "2.0",
      id,
      method: "tools/call",
      params: { name: "progress", arguments: { steps, delay_ms: 20 }, _meta: { progressToken: id } },
    },
    sid,
  );
  assert.equal(r.status, 200);
  await r.text();
}

test("sessions, streams and last event ids", async () => {
  const sid = await openSession();
  await progressCall(sid, 21, 3);
  const { sessions } = await admin.sessions.listSessions({ filter: 'era = "LEGACY"' });
  assert.ok(sessions.some((s) => s.name === `sessions/${sid}`));
  const session = await admin.sessions.getSession({ name: `sessions/${sid}` });
  assert.equal(session.protocolVersion, PROTOCOL);
  assert.ok(session.createTime && session.createTime.seconds > 0n);
  const call = session.streams.reduce((a, b) => (b.eventsForwarded > a.eventsForwarded ? b : a));
  assert.equal(call.kind, StreamKind.POST);
  assert.equal(call.eventsForwarded, 5n);
  const last = await admin.sessions.getLastEventId({ name: `${call.name}/lastEventId` });
  assert.match(last.clientEventId, /^[0-9a-f]+:5:/);
  assert.notEqual(last.upstreamEventId, "");
});

test("routes, endpoints and pinned sessions", async () => {
  const sid = await openSession();
  const path = new URL(mcpUrl).pathname;
  const { routes, generation } = await admin.upstreams.listRoutes({});
  assert.ok(generation >= 1n);
  const route = routes.find((r) => r.path === path);
  assert.ok(route, `a route at ${path}`);
  assert.equal(route.endpointCount, 1);
  assert.equal(route.healthCheck, HealthCheckKind.NONE);
  const { endpoints } = await admin.upstreams.listEndpoints({ route: route.name });
  assert.equal(endpoints.length, 1);
  const [endpoint] = endpoints;
  assert.equal(endpoint.health, EndpointHealth.HEALTHY);
  assert.equal(endpoint.drained, false);
  assert.ok(endpoint.requests >= 2n);
  assert.ok(endpoint.sessionsPinned >= 1n);
  const session = await admin.sessions.getSession({ name: `sessions/${sid}` });
  assert.equal(session.route, route.name);
  assert.equal(session.upstream, endpoint.url);
  const { sessions } = await admin.sessions.listSessions({ filter: `route = "${route.name}"` });
  assert.ok(sessions.some((s) => s.name === `sessions/${sid}`));
  await assert.rejects(
    () => admin.upstreams.listEndpoints({ route: "/nope" }),
    (err: unknown) => ConnectError.from(err).code === Code.NotFound,
  );
});

test("errors carry their gRPC codes", async () => {
  const cases: Array<[() => Promise<unknown>, Code]> = [
    [() => admin.sessions.getSession({ name: "sessions/nope" }), Code.NotFound],
    [() => admin.sessions.getSession({ name: "nope" }), Code.InvalidArgument],
    [() => admin.sessions.forceReplay({ name: "sessions/a/streams/b", afterEventId: "bad" }), Code.InvalidArgument],
    [() => admin.sessions.listSessions({ pageSize: -1 }), Code.InvalidArgument],
    [() => admin.upstreams.drainEndpoint({ route: "", url: "" }), Code.InvalidArgument],
    [() => admin.upstreams.undrainEndpoint({ route: "/nope", url: "http://nope/" }), Code.NotFound],
  ];
  for (const [call, code] of cases) {
    await assert.rejects(call, (err: unknown) => ConnectError.from(err).code === code);
  }
});

test("a metrics watch moves with real traffic", async () => {
  const abort = new AbortController();
  const watch = admin.metrics.watchMetrics({ interval: { nanos: 100_000_000 } }, { signal: abort.signal });
  let first: bigint | undefined;
  let traffic: Promise<void> | undefined;
  let moved = false;
  try {
    for await (const m of watch) {
      const events = m.snapshot?.proxy?.eventsForwarded ?? 0n;
      if (first === undefined) {
        first = events;
        traffic = openSession().then((sid) => progressCall(sid, 22, 5));
      } else if (events >= first + 7n) {
        moved = true;
        break;
      }
    }
  } finally {
    abort.abort();
  }
  await traffic;
  assert.ok(moved, "events_forwarded grew with the tool call's events");
});

test("session watch: current state, then changes; terminate ends it", async () => {
  const abort = new AbortController();
  const watch = admin.sessions.watchSessions({}, { signal: abort.signal })[Symbol.asyncIterator]();
  for (;;) {
    const m = (await watch.next()).value;
    if (m.changeType === SessionChangeType.SYNCED) break;
    assert.equal(m.changeType, SessionChangeType.EXISTING);
  }
  const sid = await openSession();
  const created = (await watch.next()).value;
  assert.equal(created.changeType, SessionChangeType.CREATED);
  assert.equal(created.session?.name, `sessions/${sid}`);
  const ended = await admin.sessions.terminateSession({ name: `sessions/${sid}` });
  assert.equal(ended.session?.state, SessionState.ENDED);
  assert.equal(ended.upstreamStatus, 200);
  for (;;) {
    const m = (await watch.next()).value;
    if (m.changeType === SessionChangeType.UPDATED) continue;
    assert.equal(m.changeType, SessionChangeType.ENDED);
    break;
  }
  abort.abort();
  const r = await mcp({ jsonrpc: "2.0", id: 1, method: "ping" }, sid);
  assert.equal(r.status, 404);
  await r.text();
});

test("the Unix socket wants the bearer token", async () => {
  const socketPath = env("ADMIN_TEST_SOCKET");
  const token = env("ADMIN_TEST_TOKEN");
  const ok = createAdminClient({ socketPath, token });
  const metrics = await ok.metrics.getMetrics({});
  assert.ok(metrics.proxy);
  for (const bad of [undefined, "wrong"]) {
    const client = createAdminClient({ socketPath, token: bad });
    await assert.rejects(
      () => client.sessions.listSessions({}),
      (err: unknown) => ConnectError.from(err).code === Code.Unauthenticated,
    );
  }
});
