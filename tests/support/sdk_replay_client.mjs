// An official TypeScript SDK client (@modelcontextprotocol/sdk) that reports every SSE event id
// and progress notification of one tool call as it arrives, for the forced-replay test.
//
//   node tests/support/sdk_replay_client.mjs URL STEPS DURATION_S
//
// stdout, one JSON object a line, flushed as they happen:
//   {"session_id": "..."}              after connecting (legacy era, initialize)
//   {"event_id": "..."}                each SSE event id of the tool call's stream
//   {"progress": n}                    each notifications/progress the SDK dispatched
//   {"result": "..."}                  the tool result, then the session is closed (DELETE)
import { Client } from "@modelcontextprotocol/sdk/client/index.js";
import { StreamableHTTPClientTransport } from "@modelcontextprotocol/sdk/client/streamableHttp.js";

const [url, steps, duration] = process.argv.slice(2);
const out = (o) => process.stdout.write(`${JSON.stringify(o)}\n`);

const transport = new StreamableHTTPClientTransport(new URL(url));
const client = new Client({ name: "mcp-relay-replay-test", version: "1.0.0" });
await client.connect(transport);
out({ session_id: transport.sessionId });
const result = await client.callTool(
  {
    name: "trigger-long-running-operation",
    arguments: { duration: Number(duration), steps: Number(steps) },
  },
  undefined,
  {
    onprogress: (p) => out({ progress: p.progress }),
    onresumptiontoken: (id) => out({ event_id: id }),
    timeout: 60_000,
  },
);
out({ result: result.content?.[0]?.text ?? null });
await transport.terminateSession();
await client.close();
