/**
 * A small example over the client: lists the sessions, then prints metric snapshots.
 *
 *   node clients/typescript/dist/src/example.js [host:port | unix:/path] [count]
 *
 * The bearer token, if the daemon wants one, comes from MCP_RELAY_ADMIN_TOKEN.
 */
import { SessionState, createAdminClient } from "./index.js";

const target = process.argv[2] ?? "127.0.0.1:50051";
const count = Number(process.argv[3] ?? "3");
const token = process.env.MCP_RELAY_ADMIN_TOKEN;
const admin = createAdminClient(
  target.startsWith("unix:") ? { socketPath: target.slice(5), token } : { address: target, token },
);

const { sessions } = await admin.sessions.listSessions({});
for (const s of sessions) {
  console.log(`${s.name}  ${SessionState[s.state]}  ${s.protocolVersion}  streams=${s.streams.length}`);
}
const abort = new AbortController();
let seen = 0;
for await (const m of admin.metrics.watchMetrics({ interval: { seconds: 1n } }, { signal: abort.signal })) {
  const p = m.snapshot?.proxy;
  console.log(
    `sessions=${p?.sessions} streams_open=${p?.streamsOpen} events=${p?.eventsForwarded} ` +
      `events/s=${m.eventsPerSecond.toFixed(1)} skipped=${m.skippedSnapshots}`,
  );
  if (++seen >= count) {
    abort.abort();
    break;
  }
}
