// MCP test driver: the official TypeScript SDK client (@modelcontextprotocol/sdk) completing the
// MCP authorization flow headlessly, with an in-memory OAuthClientProvider.
//
//   node tests/peers/ts_oauth_client.mjs URL [--login NAME] [--scope "mcp:tools"]
//       [--tool NAME [--args JSON]] [--print-token]
//
// Sequence: connect a StreamableHTTPClientTransport with `authProvider` to URL (an MCP endpoint
// answering 401 + `WWW-Authenticate: Bearer resource_metadata=...`). The SDK discovers (protected
// resource metadata, authorization server metadata), registers a public client (RFC 7591,
// token_endpoint_auth_method none, redirect_uri http://127.0.0.1:9/callback where nothing
// listens) and calls redirectToAuthorization(url): this file then drives the authorization
// server's login and consent forms with fetch (manual redirects, a cookie jar) as user NAME
// (default alice) -- oidc-provider's devInteractions, see oidc_provider.mjs -- until the redirect
// to the redirect_uri, and keeps its `code`. connect() throws UnauthorizedError; then
// transport.finishAuth(code) (token request) and a new client + transport connect with the token.
// Then tools/list and, with --tool, tools/call NAME with --args (default {}).
// --scope is the client metadata `scope`, which the SDK uses only when neither the 401's
// WWW-Authenticate `scope` nor the resource metadata's `scopes_supported` names one.
//
// On success prints ONE JSON line on stdout and exits 0:
//   {"tools", "result_text", "access_token" (only with --print-token), "scope" (granted, from
//    the token response), "requested_scope" and "resource" (the `scope` and `resource` the SDK
//    put in the authorization URL, or null), "client_id" (registered), "requests"}
// `requests` lists {method, url, status} of every HTTP exchange the SDK made (not the login
// pages), in order. On any failure (or after 60 s): the error on stderr, exit 1.
import { parseArgs } from 'node:util';
import { randomBytes } from 'node:crypto';
import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { StreamableHTTPClientTransport } from '@modelcontextprotocol/sdk/client/streamableHttp.js';
import { UnauthorizedError } from '@modelcontextprotocol/sdk/client/auth.js';

const { values: opts, positionals } = parseArgs({
  allowPositionals: true,
  options: {
    login: { type: 'string', default: 'alice' },
    scope: { type: 'string' },
    tool: { type: 'string' },
    args: { type: 'string', default: '{}' },
    'print-token': { type: 'boolean', default: false },
  },
});
const deadline = setTimeout(() => {
  console.error('ts_oauth_client: no result within 60 s');
  process.exit(1);
}, 60_000);
const REDIRECT_URI = 'http://127.0.0.1:9/callback';

const requests = [];
async function recordingFetch(url, init) {
  const res = await fetch(url, init);
  requests.push({ method: init?.method ?? 'GET', url: String(url), status: res.status });
  return res;
}

// A cookie jar keyed by (name, path): oidc-provider scopes its interaction cookies by path.
class CookieJar {
  cookies = new Map();
  store(res) {
    for (const line of res.headers.getSetCookie()) {
      const [pair, ...attrs] = line.split(';').map((s) => s.trim());
      const eq = pair.indexOf('=');
      const [name, value] = [pair.slice(0, eq), pair.slice(eq + 1)];
      const attr = (key) => attrs.find((a) => a.toLowerCase().startsWith(`${key}=`))?.slice(key.length + 1);
      const path = attr('path') ?? '/';
      const expires = attr('expires');
      if (!value || attr('max-age') === '0' || (expires && Date.parse(expires) <= Date.now())) {
        this.cookies.delete(`${name};${path}`);
      } else {
        this.cookies.set(`${name};${path}`, { name, value, path });
      }
    }
  }
  header(url) {
    const { pathname } = new URL(url);
    return [...this.cookies.values()]
      .filter((c) => pathname === c.path || pathname.startsWith(c.path.endsWith('/') ? c.path : `${c.path}/`))
      .map((c) => `${c.name}=${c.value}`).join('; ');
  }
}

const unescapeHtml = (s) => s.replace(/&amp;/g, '&').replace(/&quot;/g, '"').replace(/&#39;/g, "'").replace(/&lt;/g, '<').replace(/&gt;/g, '>');

// Follows the authorization server from the authorization URL to the redirect_uri, submitting
// each HTML form it is shown (the login form gets login=NAME, password=x). Returns the code.
async function loginAndConsent(authorizationUrl, name, expectedState) {
  const jar = new CookieJar();
  let url = String(authorizationUrl);
  let init = { method: 'GET' };
  for (let hop = 0; hop < 20; hop += 1) {
    const headers = { cookie: jar.header(url) };
    if (init.body) headers['content-type'] = 'application/x-www-form-urlencoded';
    const res = await fetch(url, { ...init, headers, redirect: 'manual' });
    jar.store(res);
    const location = res.headers.get('location');
    if (res.status >= 300 && res.status < 400 && location) {
      const next = new URL(location, url);
      if (next.href.startsWith(REDIRECT_URI)) {
        const p = next.searchParams;
        if (p.get('error')) throw new Error(`authorization failed: ${p.get('error')}: ${p.get('error_description')}`);
        if (p.get('state') !== expectedState) throw new Error(`state mismatch in ${next.href}`);
        return p.get('code');
      }
      url = next.href;
      init = { method: 'GET' };
      continue;
    }
    const html = await res.text();
    const action = html.match(/<form[^>]*action="([^"]*)"/);
    if (res.status !== 200 || !action) throw new Error(`login: HTTP ${res.status} at ${url}: ${html.slice(0, 500)}`);
    const form = new URLSearchParams();
    for (const [input] of html.matchAll(/<input[^>]*>/g)) {
      const field = input.match(/name="([^"]*)"/)?.[1];
      if (field && /type="hidden"/.test(input)) form.set(field, unescapeHtml(input.match(/value="([^"]*)"/)?.[1] ?? ''));
    }
    if (/name="login"/.test(html)) {
      form.set('login', name);
      form.set('password', 'x');
    }
    url = new URL(unescapeHtml(action[1]), url).href;
    init = { method: 'POST', body: form.toString() };
  }
  throw new Error('login: too many hops');
}

class MemoryOAuthProvider {
  authorizationUrl = null;
  code = null;
  #client;
  #tokens;
  #verifier;
  #state = randomBytes(16).toString('hex');
  get redirectUrl() { return REDIRECT_URI; }
  get clientMetadata() {
    return {
      client_name: 'mcp-relay-ts-oauth-client',
      redirect_uris: [REDIRECT_URI],
      grant_types: ['authorization_code', 'refresh_token'],
      response_types: ['code'],
      token_endpoint_auth_method: 'none',
      ...(opts.scope ? { scope: opts.scope } : {}),
    };
  }
  state() { return this.#state; }
  clientInformation() { return this.#client; }
  saveClientInformation(info) { this.#client = info; }
  tokens() { return this.#tokens; }
  saveTokens(tokens) { this.#tokens = tokens; }
  saveCodeVerifier(verifier) { this.#verifier = verifier; }
  codeVerifier() { return this.#verifier; }
  async redirectToAuthorization(url) {
    this.authorizationUrl = url;
    this.code = await loginAndConsent(url, opts.login, this.#state);
  }
}

try {
  const url = new URL(positionals[0]);
  const provider = new MemoryOAuthProvider();
  const newTransport = () => new StreamableHTTPClientTransport(url, { authProvider: provider, fetch: recordingFetch });
  let client = new Client({ name: 'mcp-relay-ts-oauth-client', version: '1.0.0' });
  let transport = newTransport();
  try {
    await client.connect(transport);
  } catch (err) {
    if (!(err instanceof UnauthorizedError) || !provider.code) throw err;
    await transport.finishAuth(provider.code);
    await transport.close();
    client = new Client({ name: 'mcp-relay-ts-oauth-client', version: '1.0.0' });
    transport = newTransport();
    await client.connect(transport);
  }
  const tools = (await client.listTools()).tools.map((t) => t.name);
  let resultText = null;
  if (opts.tool) {
    const result = await client.callTool({ name: opts.tool, arguments: JSON.parse(opts.args) });
    if (result.isError) throw new Error(`tool returned isError: ${JSON.stringify(result.content)}`);
    resultText = result.content?.[0]?.text ?? null;
  }
  await transport.terminateSession().catch(() => {});
  await client.close();
  const tokens = provider.tokens();
  const asked = provider.authorizationUrl?.searchParams;
  console.log(JSON.stringify({
    tools,
    result_text: resultText,
    ...(opts['print-token'] ? { access_token: tokens?.access_token ?? null } : {}),
    scope: tokens?.scope ?? null,
    requested_scope: asked?.get('scope') ?? null,
    resource: asked?.get('resource') ?? null,
    client_id: provider.clientInformation()?.client_id ?? null,
    requests,
  }));
  clearTimeout(deadline);
  process.exit(0);
} catch (err) {
  console.error('ts_oauth_client:', err?.stack ?? err);
  console.error('ts_oauth_client: requests so far:', JSON.stringify(requests));
  process.exit(1);
}
