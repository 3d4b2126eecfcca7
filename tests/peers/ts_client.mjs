// MCP test driver on the official TypeScript SDK client (@modelcontextprotocol/sdk), Streamable
// HTTP, legacy era (initialize, Mcp-Session-Id, DELETE at the end).
//
//   node tests/peers/ts_client.mjs URL [TOOL [ARGUMENTS_JSON]]
//
// Sequence: connect (initialize) -> tools/list -> tools/call TOOL with ARGUMENTS_JSON and a
// progress callback (when TOOL is given) -> DELETE the session -> close.
//
// On success prints ONE JSON line on stdout and exits 0:
//   {"session_id", "server_name", "tools", "progress", "result_text"}
// `server_name` is the serverInfo name of the initialize answer; `progress` the progress values
// in order. On any failure (or after 60 s): the error on stderr, exit 1.
import { Client } from "@modelcontextprotocol/sdk/client/index.js";
import { StreamableHTTPClientTransport } from "@modelcontextprotocol/sdk/client/streamableHttp.js";

const [url, tool, args] = process.argv.slice(2);
const deadline = setTimeout(() => {
  console.error("ts_client: no result within 60 s");
  process.exit(1);
}, 60_000);

try {
  const transport = new StreamableHTTPClientTransport(new URL(url));
  const client = new Client({ name: "mcp-relay-ts-client", version: "1.0.0" });
  await client.connect(transport);
  const sessionId = transport.sessionId ?? null;
  const tools = (await client.listTools()).tools.map((t) => t.name);
  const progress = [];
  let resultText = null;
  if (tool) {
    const result = await client.callTool(
      { name: tool, arguments: JSON.parse(args ?? "{}") },
      undefined,
      { onprogress: (p) => progress.push(p.progress), timeout: 55_000 },
    );
    if (result.isError) throw new Error(`tool returned isError: ${JSON.stringify(result.content)}`);
    resultText = result.content?.[0]?.text ?? null;
  }
  const serverName = client.getServerVersion()?.name ?? null;
  await transport.terminateSession();
  await client.close();
  process.stdout.write(
    `${JSON.stringify({ session_id: sessionId, server_name: serverName, tools, progress, result_text: resultText })}\n`,
  );
  clearTimeout(deadline);
} catch (err) {
  console.error(err);
  process.exit(1);
}
