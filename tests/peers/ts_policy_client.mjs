// Tool policy driver on the official TypeScript SDK client (@modelcontextprotocol/sdk),
// Streamable HTTP, legacy era (the SDK's only one).
//
//   node tests/peers/ts_policy_client.mjs URL ALLOWED DENIED
//
// Sequence: connect (initialize) -> tools/list -> tools/call ALLOWED {"text": "allowed"} ->
// tools/call DENIED {} -> DELETE the session -> close.
//
// On success prints ONE JSON line on stdout and exits 0:
//   {"tools", "allowed_text", "denied_result", "denied_error"}
// `denied_error` is {code, message} of the JSON-RPC error (McpError) the SDK threw for DENIED,
// null when the call succeeded (then `denied_result` is its text). On any other failure (or
// after 60 s): the error on stderr, exit 1.
import { Client } from "@modelcontextprotocol/sdk/client/index.js";
import { StreamableHTTPClientTransport } from "@modelcontextprotocol/sdk/client/streamableHttp.js";
import { McpError } from "@modelcontextprotocol/sdk/types.js";

const [url, allowedTool, deniedTool] = process.argv.slice(2);
const deadline = setTimeout(() => {
  console.error("ts_policy_client: no result within 60 s");
  process.exit(1);
}, 60_000);

const textOf = (result) => result.content?.[0]?.text ?? null;

try {
  const transport = new StreamableHTTPClientTransport(new URL(url));
  const client = new Client({ name: "mcp-relay-ts-policy-client", version: "1.0.0" });
  await client.connect(transport);
  const tools = (await client.listTools()).tools.map((t) => t.name);
  const allowed = await client.callTool({ name: allowedTool, arguments: { text: "allowed" } });
  if (allowed.isError) throw new Error(`${allowedTool} returned isError: ${JSON.stringify(allowed.content)}`);
  let deniedResult = null;
  let deniedError = null;
  try {
    deniedResult = textOf(await client.callTool({ name: deniedTool, arguments: {} }));
  } catch (err) {
    if (!(err instanceof McpError)) throw err;
    // McpError's message is prefixed "MCP error <code>: "; the server's own text follows.
    deniedError = { code: err.code, message: err.message.replace(/^MCP error -?\d+: /, "") };
  }
  await transport.terminateSession();
  await client.close();
  process.stdout.write(
    `${JSON.stringify({ tools, allowed_text: textOf(allowed), denied_result: deniedResult, denied_error: deniedError })}\n`,
  );
  clearTimeout(deadline);
} catch (err) {
  console.error(err);
  process.exit(1);
}
