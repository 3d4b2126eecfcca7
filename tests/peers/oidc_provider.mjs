// A real OAuth 2.1 / OpenID authorization server for the OAuth tests: npm `oidc-provider`
// (certified OpenID provider), on plain http, bound to 127.0.0.1 only.
//
//   node tests/peers/oidc_provider.mjs [--port N] [--key-file PATH [--rotate]] [--opaque]
//       [--scopes "openid offline_access mcp:tools mcp:admin"] [--ttl-secs 300]
//
// stdout: exactly one line `LISTENING <port>` once listening; everything else goes to stderr.
// Exits when stdin closes if stdin is a pipe (with stdin = /dev/null it runs until killed).
//
// Issuer `http://127.0.0.1:<port>`. Metadata at `/.well-known/openid-configuration` and, the same
// document, `/.well-known/oauth-authorization-server` (RFC 8414). Endpoints: /auth, /token, /reg,
// /jwks, /me, /token/introspection, /token/revocation.
// - Dynamic client registration (RFC 7591) at /reg: open, no initial access token; public clients
//   (`token_endpoint_auth_method: none`) allowed. PKCE (S256 only) required for every client.
// - Resource indicators (RFC 8707): a `resource` starting with http://127.0.0.1:, http://localhost:
//   or https://localhost: gets an RS256 JWT access token (header `typ: at+jwt`, `kid`), claims
//   iss, sub (the login name; the client id for client_credentials), aud (= the resource, exactly),
//   exp, iat, jti, scope (the requested scopes among --scopes minus openid/offline_access),
//   client_id. Any other resource: `invalid_target`. No resource: an opaque token for /me.
// - Login without a browser: oidc-provider's devInteractions. GET /auth?... redirects to
//   /interaction/<uid>, an HTML form; POST it (prompt=login, login=NAME, password=anything; NAME
//   becomes `sub`), follow the redirects with the cookies, POST the consent form (prompt=consent),
//   follow, until the redirect to the client's redirect_uri carries `code` (see ts_oauth_client.mjs).
// - --opaque: access tokens are opaque (same audience and scopes), to be introspected at
//   /token/introspection (RFC 7662) by a confidential client such as the static one below.
// - client_credentials: the static confidential client `mcp-relay-cc` / `mcp-relay-cc-secret`
//   (client_secret_basic or _post), e.g. POST /token grant_type=client_credentials
//   &resource=http://127.0.0.1:P/mcp&scope=mcp:tools -> a JWT with sub = client_id = mcp-relay-cc.
// - Keys: --key-file PATH is a private JWKS (`{"keys": [{kty:"RSA", n, e, d, p, q, dp, dq, qi,
//   kid, alg:"RS256", use:"sig"}, ...]}`), created with one new key if missing. Tokens are signed
//   with the FIRST key; /jwks publishes the public halves of all of them. --rotate prepends a new
//   key (older ones stay published) and rewrites the file before starting. PATH.pem gets the
//   signing key as PKCS#8 PEM, for tests that forge tokens. Without --key-file: one key in memory.
import { generateKeyPairSync, createPrivateKey, randomBytes } from 'node:crypto';
import { existsSync, fstatSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import { parseArgs } from 'node:util';
import Provider, { errors } from 'oidc-provider';

const { values: opts } = parseArgs({
  options: {
    port: { type: 'string', default: '0' },
    'key-file': { type: 'string' },
    rotate: { type: 'boolean', default: false },
    scopes: { type: 'string', default: 'openid offline_access mcp:tools mcp:admin' },
    'ttl-secs': { type: 'string', default: '300' },
    // Opaque access tokens (resource servers must introspect them, RFC 7662) instead of JWTs.
    opaque: { type: 'boolean', default: false },
  },
});
const log = (...args) => console.error('oidc_provider:', ...args);
const ttl = Number(opts['ttl-secs']);
const scopes = opts.scopes.split(' ').filter(Boolean);
const resourceScopes = scopes.filter((s) => s !== 'openid' && s !== 'offline_access').join(' ');

function newKey() {
  const { privateKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
  const kid = `k-${Date.now()}-${randomBytes(4).toString('hex')}`;
  return { ...privateKey.export({ format: 'jwk' }), kid, alg: 'RS256', use: 'sig' };
}

let jwks;
const keyFile = opts['key-file'];
if (keyFile && existsSync(keyFile)) {
  jwks = JSON.parse(readFileSync(keyFile, 'utf8'));
  if (opts.rotate) jwks.keys.unshift(newKey());
} else {
  jwks = { keys: [newKey()] };
}
if (keyFile) {
  writeFileSync(`${keyFile}.tmp`, `${JSON.stringify(jwks, null, 2)}\n`, { mode: 0o600 });
  renameSync(`${keyFile}.tmp`, keyFile);
  const pem = createPrivateKey({ key: jwks.keys[0], format: 'jwk' }).export({ type: 'pkcs8', format: 'pem' });
  writeFileSync(`${keyFile}.pem`, pem, { mode: 0o600 });
}
log(`signing kid ${jwks.keys[0].kid}; published kids ${jwks.keys.map((k) => k.kid).join(' ')}`);

const resourceAllowed = (r) => ['http://127.0.0.1:', 'http://localhost:', 'https://localhost:'].some((p) => r.startsWith(p));

function configuration() {
  return {
    jwks,
    scopes,
    responseTypes: ['code'],
    clients: [{
      client_id: 'mcp-relay-cc',
      client_secret: 'mcp-relay-cc-secret',
      grant_types: ['client_credentials'],
      response_types: [],
      redirect_uris: [],
    }],
    clientAuthMethods: ['none', 'client_secret_basic', 'client_secret_post'],
    cookies: { keys: ['mcp-relay-test-cookie-key'] },
    pkce: { required: () => true },
    ttl: { AccessToken: ttl, ClientCredentials: ttl },
    async findAccount(_ctx, sub) {
      return { accountId: sub, claims: async () => ({ sub }) };
    },
    features: {
      devInteractions: { enabled: true },
      registration: { enabled: true, initialAccessToken: false },
      clientCredentials: { enabled: true },
      introspection: { enabled: true },
      revocation: { enabled: true },
      resourceIndicators: {
        enabled: true,
        // The token request may omit `resource`: use the one granted at /auth, even with openid.
        useGrantedResource: async () => true,
        async getResourceServerInfo(_ctx, resource) {
          if (!resourceAllowed(resource)) throw new errors.InvalidTarget();
          return {
            audience: resource,
            scope: resourceScopes,
            accessTokenTTL: ttl,
            ...(opts.opaque
              ? { accessTokenFormat: 'opaque' }
              : { accessTokenFormat: 'jwt', jwt: { sign: { alg: 'RS256' } } }),
          };
        },
      },
    },
  };
}

// Bind first (ephemeral port), then build the provider with the issuer that names that port.
const http = await import('node:http');
const server = http.createServer();
await new Promise((resolve) => server.listen(Number(opts.port), '127.0.0.1', resolve));
const { port } = server.address();
const provider = new Provider(`http://127.0.0.1:${port}`, configuration());
provider.on('server_error', (_ctx, err) => log('server_error', err));
provider.on('grant.error', (_ctx, err) => log('grant.error', err.message, err.error_description ?? ''));
provider.on('authorization.error', (_ctx, err) => log('authorization.error', err.message, err.error_description ?? ''));
provider.on('registration_create.error', (_ctx, err) => log('registration.error', err.message, err.error_description ?? ''));
// RFC 8414 metadata: the same document as the OpenID discovery one.
provider.use(async (ctx, next) => {
  if (ctx.path === '/.well-known/oauth-authorization-server') ctx.path = '/.well-known/openid-configuration';
  await next();
});
server.on('request', provider.callback());
console.log(`LISTENING ${port}`);

if (fstatSync(0).isFIFO()) {
  process.stdin.on('end', () => process.exit(0));
  process.stdin.resume();
}
process.on('SIGTERM', () => process.exit(0));
