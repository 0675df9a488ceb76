// A second, independent OpenID Connect provider for Deployer's authenticator tests: the npm package
// `oauth2-mock-server` (AXA), driven by the test through a control listener.
//
// Loopback only: the provider listens on 127.0.0.1 (HTTP, or HTTPS with the given PEM certificate and key) and
// its issuer is http(s)://127.0.0.1:<port> (the library would say "localhost"; we set the issuer URL to the
// address we bound, so a certificate for the IP matches). It never reaches the network.
//
// Environment:
//   MOCK_OIDC_HTTPS_CERT   PEM certificate (chain) file; with MOCK_OIDC_HTTPS_KEY: serve HTTPS
//   MOCK_OIDC_HTTPS_KEY    its PEM private key
//   MOCK_OIDC_ACCESS_TTL   access token lifetime in seconds (default 3600)
//   MOCK_OIDC_CONTROL_TOKEN  required in the X-Control-Token header of every control request
//
// Prints `READY <issuer> <control base URL>` on stdout once both listeners are up. Exits 0 on SIGTERM/SIGINT
// and when its stdin closes (the Python harness holds the other end, so the provider never outlives it).
//
// What is the library's own behaviour and what this file adds (see also harness.py's docstring):
//   library: discovery, /jwks, /authorize redirecting straight back with a code (no login page), /token
//            (authorization_code, refresh_token, password, client_credentials), nonce from /authorize into the
//            ID token, PKCE plain/S256 checked when a code_verifier is sent, aud = client id (Basic auth name or
//            client_id in the body), a new random refresh_token with every non-client_credentials grant,
//            /userinfo, /revoke, /introspect, /endsession. It authenticates no client and accepts ANY code and
//            ANY refresh token; sub is always "johndoe"; every token lives 3600 s.
//   added here (through the library's events and its exported classes, no patching of its code):
//            identities bound to codes (login_as) and carried into refresh tokens; codes single-use, known and
//            bound to client_id, redirect_uri and PKCE (a code issued with a code_challenge needs a
//            code_verifier); refresh tokens must be ones we issued; access tokens expire after the access
//            TTL and /userinfo refuses unknown or expired ones; claim overrides; signing with an unpublished
//            key; key rotation (a replaceable key store); a request log.

import { Buffer } from 'node:buffer';
import * as crypto from 'node:crypto';
import { readFileSync } from 'node:fs';
import * as http from 'node:http';

import { HttpServer, JWKStore, OAuth2Issuer, OAuth2Service } from 'oauth2-mock-server';

const HOST = '127.0.0.1';
const CODE_TTL_MS = 600 * 1000;
const DEFAULT_IDENTITY = Object.freeze({ username: 'johndoe', sub: 'johndoe', extra: {} }); // the library's user

function fail(message) {
  console.error(`server.mjs: ${message}`);
  process.exit(2);
}

const certFile = process.env.MOCK_OIDC_HTTPS_CERT || '';
const keyFile = process.env.MOCK_OIDC_HTTPS_KEY || '';
if (Boolean(certFile) !== Boolean(keyFile)) fail('MOCK_OIDC_HTTPS_CERT and MOCK_OIDC_HTTPS_KEY go together');
const controlToken = process.env.MOCK_OIDC_CONTROL_TOKEN || '';
if (!controlToken) fail('MOCK_OIDC_CONTROL_TOKEN is required');

function parseTtl(value) {
  const n = Number(value);
  if (!Number.isInteger(n) || n <= 0) throw new Error(`bad access TTL ${JSON.stringify(value)}: a positive integer of seconds`);
  return n;
}

// ----- state the test controls ------------------------------------------------------------------------------

const state = {
  identity: { ...DEFAULT_IDENTITY },
  idTokenOverrides: { set: {}, remove: [] },
  userinfoOverrides: { set: {}, remove: [] },
  unpublishedKey: null, // a crypto.KeyObject while sign_with_unpublished_key is on
  accessTtl: 3600,
  requests: [],
};
try {
  state.accessTtl = parseTtl(process.env.MOCK_OIDC_ACCESS_TTL || '3600');
} catch (err) {
  fail(err.message);
}

// What we issued: code -> {identity, clientId, redirectUri, pkce, issuedAt}; refresh token -> {identity, clientId};
// access token -> {identity, expiresAt (ms)}.
const codes = new Map();
const refreshTokens = new Map();
const accessTokens = new Map();

// ----- the library, with a key store that can be replaced (rotation) -----------------------------------------

// OAuth2Issuer keeps its JWKStore in a private field, and a JWKStore can add keys but never remove one, and
// signs round-robin over all its keys. Rotation needs "the new key is the only one": this subclass answers
// `keys` with a store we can swap. The library's buildToken and /jwks handler both read `this.issuer.keys`.
class RotatingIssuer extends OAuth2Issuer {
  #store = new JWKStore();

  get keys() {
    return this.#store;
  }

  async rotate() {
    const store = new JWKStore();
    const jwk = await store.generate('RS256');
    this.#store = store;
    return jwk.kid;
  }
}

const issuer = new RotatingIssuer();
const service = new OAuth2Service(issuer);
let currentKid = await issuer.rotate();

// ----- helpers ------------------------------------------------------------------------------------------------

function applyOverrides(claims, overrides) {
  Object.assign(claims, structuredClone(overrides.set));
  for (const name of overrides.remove) delete claims[name];
}

function identityClaims(identity) {
  const claims = { ...structuredClone(identity.extra), sub: identity.sub };
  if (identity.username !== null) claims.preferred_username = identity.username;
  return claims;
}

// The client id of a token request as the library sees it (Basic auth name, else client_id in the body), but
// with the Basic auth name form-decoded as RFC 6749 2.3.1 says (the library takes it verbatim).
function tokenClientId(req) {
  const header = req.headers.authorization || '';
  const m = /^Basic\s+([A-Za-z0-9+/=]+)\s*$/i.exec(header);
  if (m) {
    const decoded = Buffer.from(m[1], 'base64').toString('utf8');
    const colon = decoded.indexOf(':');
    if (colon >= 0) {
      const raw = decoded.slice(0, colon);
      try {
        return decodeURIComponent(raw.replace(/\+/g, ' '));
      } catch {
        return raw;
      }
    }
  }
  const fromBody = req.body?.client_id;
  return typeof fromBody === 'string' && fromBody ? fromBody : undefined;
}

function bearer(req) {
  const m = /^Bearer\s+(\S+)\s*$/i.exec(req.headers.authorization || '');
  return m ? m[1] : undefined;
}

// Decide, once per token request (at its first token), whose tokens these are or why the request is refused.
function resolveTokenRequest(req) {
  const body = req.body || {};
  const clientId = tokenClientId(req);
  const refuse = (description) => ({ reject: description, identity: null, clientId });
  if (body.grant_type === 'authorization_code') {
    const record = codes.get(body.code);
    if (!record) return refuse('unknown or already used authorization code');
    codes.delete(body.code); // single use, whatever happens next
    if (Date.now() - record.issuedAt > CODE_TTL_MS) return refuse('authorization code expired');
    if (clientId !== undefined && record.clientId !== undefined && clientId !== record.clientId) {
      return refuse('authorization code was issued to another client');
    }
    if (body.redirect_uri !== undefined && body.redirect_uri !== record.redirectUri) {
      return refuse('redirect_uri does not match the one of the authorization request');
    }
    // The library checks a code_verifier when one is sent, but not its absence.
    if (record.pkce && body.code_verifier === undefined) return refuse('code_verifier required (PKCE)');
    return { reject: null, identity: record.identity, clientId: clientId ?? record.clientId };
  }
  if (body.grant_type === 'refresh_token') {
    const record = refreshTokens.get(body.refresh_token);
    if (!record) return refuse('unknown refresh token');
    if (clientId !== undefined && record.clientId !== undefined && clientId !== record.clientId) {
      return refuse('refresh token was issued to another client');
    }
    return { reject: null, identity: record.identity, clientId: clientId ?? record.clientId };
  }
  return { reject: null, identity: null, clientId }; // password, client_credentials: the library's own behaviour
}

const tokenRequests = new WeakMap(); // req -> {reject, identity, clientId, built}

// The library builds the access token first, then (except for client_credentials) the ID token, for one request.
service.on('beforeTokenSigning', (token, req) => {
  let info = tokenRequests.get(req);
  if (!info) {
    info = { ...resolveTokenRequest(req), built: 0 };
    tokenRequests.set(req, info);
  }
  info.built += 1;
  const payload = token.payload;
  const isIdToken = req.body?.grant_type !== 'client_credentials' && info.built === 2;
  if (!isIdToken) {
    payload.exp = payload.iat + state.accessTtl;
    if (info.identity) payload.sub = info.identity.sub;
    return;
  }
  if (info.identity) Object.assign(payload, identityClaims(info.identity));
  if (info.clientId !== undefined) payload.aud = info.clientId;
  applyOverrides(payload, state.idTokenOverrides);
});

function resign(jwt, privateKey) {
  const [header, payload] = jwt.split('.');
  const signature = crypto.sign('sha256', Buffer.from(`${header}.${payload}`), privateKey); // RS256
  return `${header}.${payload}.${signature.toString('base64url')}`;
}

service.on('beforeResponse', (response, req) => {
  const info = tokenRequests.get(req);
  if (info?.reject) {
    response.statusCode = 400;
    response.body = { error: 'invalid_grant', error_description: info.reject };
    return;
  }
  const body = response.body;
  if (response.statusCode !== 200 || !body || typeof body !== 'object') return;
  if (typeof body.access_token === 'string') {
    body.expires_in = state.accessTtl;
    accessTokens.set(body.access_token, {
      identity: info?.identity ?? null,
      expiresAt: Date.now() + state.accessTtl * 1000,
    });
  }
  if (typeof body.refresh_token === 'string' && info?.identity) {
    refreshTokens.set(body.refresh_token, { identity: info.identity, clientId: info.clientId });
  }
  if (typeof body.id_token === 'string' && state.unpublishedKey) {
    body.id_token = resign(body.id_token, state.unpublishedKey);
  }
});

service.on('beforeAuthorizeRedirect', (redirect, req) => {
  const code = redirect.url.searchParams.get('code');
  if (!code) return;
  const q = req.query;
  codes.set(code, {
    identity: structuredClone(state.identity),
    clientId: typeof q.client_id === 'string' ? q.client_id : undefined,
    redirectUri: q.redirect_uri,
    pkce: typeof q.code_challenge === 'string' && q.code_challenge !== '',
    issuedAt: Date.now(),
  });
});

service.on('beforeUserinfo', (response, req) => {
  const token = bearer(req);
  const record = token === undefined ? undefined : accessTokens.get(token);
  if (!record || record.expiresAt <= Date.now()) {
    response.statusCode = 401;
    response.body = {
      error: 'invalid_token',
      error_description: record ? 'access token expired' : 'no or unknown access token',
    };
    return;
  }
  const claims = record.identity ? identityClaims(record.identity) : { ...response.body };
  applyOverrides(claims, state.userinfoOverrides);
  response.body = claims;
});

// ----- the provider's listener: the library's handler, with a request log in front ------------------------

const handler = service.requestHandler;
let tls;
try {
  tls = certFile ? { cert: readFileSync(certFile), key: readFileSync(keyFile) } : undefined;
} catch (err) {
  fail(`cannot read the HTTPS certificate or key: ${err.message}`);
}

const provider = new HttpServer((req, res) => {
  const entry = { method: req.method, path: new URL(req.url, 'http://x').pathname, grant_type: null };
  state.requests.push(entry);
  // The body is parsed by the library's express app; by the time the response ends it is on req.body.
  const end = res.end;
  res.end = function patchedEnd(...args) {
    const grant = req.body?.grant_type;
    if (entry.path === '/token' && typeof grant === 'string') entry.grant_type = grant;
    return end.apply(this, args);
  };
  handler(req, res);
}, tls);

// ----- the control listener ---------------------------------------------------------------------------------

class BadRequest extends Error {}

function plainObject(value, what) {
  if (value === undefined || value === null) return {};
  if (typeof value !== 'object' || Array.isArray(value)) throw new BadRequest(`${what}: an object`);
  return value;
}

function stringList(value, what) {
  if (value === undefined || value === null) return [];
  if (!Array.isArray(value) || value.some((v) => typeof v !== 'string')) throw new BadRequest(`${what}: a list of strings`);
  return value;
}

function overrides(body) {
  return { set: structuredClone(plainObject(body.set, 'set')), remove: [...stringList(body.remove, 'remove')] };
}

const commands = {
  async login_as(body) {
    const { username, sub } = body;
    if (username !== null && (typeof username !== 'string' || username === '')) throw new BadRequest('username: a string or null');
    if (typeof sub !== 'string' || sub === '') throw new BadRequest('sub: a non-empty string');
    state.identity = { username, sub, extra: structuredClone(plainObject(body.extra, 'extra')) };
    return {};
  },
  async id_token_claims(body) {
    state.idTokenOverrides = overrides(body);
    return {};
  },
  async userinfo_claims(body) {
    state.userinfoOverrides = overrides(body);
    return {};
  },
  async sign_with_unpublished_key(body) {
    if (typeof body.on !== 'boolean') throw new BadRequest('on: true or false');
    state.unpublishedKey = body.on ? crypto.generateKeyPairSync('rsa', { modulusLength: 2048 }).privateKey : null;
    return {};
  },
  async rotate_keys() {
    currentKid = await issuer.rotate();
    return { kid: currentKid };
  },
  async reset() {
    state.idTokenOverrides = { set: {}, remove: [] };
    state.userinfoOverrides = { set: {}, remove: [] };
    state.unpublishedKey = null;
    return {};
  },
  async access_ttl(body) {
    try {
      state.accessTtl = parseTtl(body.seconds);
    } catch (err) {
      throw new BadRequest(err.message);
    }
    return {};
  },
  async requests() {
    return { requests: state.requests.map((r) => [r.method, r.path, r.grant_type]) };
  },
  async clear_requests() {
    state.requests = [];
    return {};
  },
  async kid() {
    return { kid: currentKid };
  },
};

async function readJson(req) {
  const chunks = [];
  let size = 0;
  for await (const chunk of req) {
    size += chunk.length;
    if (size > 1024 * 1024) throw new BadRequest('body too large');
    chunks.push(chunk);
  }
  if (size === 0) return {};
  try {
    return plainObject(JSON.parse(Buffer.concat(chunks).toString('utf8')), 'body');
  } catch (err) {
    if (err instanceof BadRequest) throw err;
    throw new BadRequest(`not JSON: ${err.message}`);
  }
}

function reply(res, status, body) {
  const text = JSON.stringify(body);
  res.writeHead(status, { 'Content-Type': 'application/json', 'Content-Length': Buffer.byteLength(text) });
  res.end(text);
}

const control = http.createServer((req, res) => {
  const name = new URL(req.url, 'http://x').pathname.replace(/^\//, '');
  if (req.headers['x-control-token'] !== controlToken) {
    reply(res, 403, { error: 'bad control token' });
    return;
  }
  if (req.method !== 'POST' || !Object.hasOwn(commands, name)) {
    reply(res, 404, { error: `no command ${req.method} /${name}` });
    return;
  }
  readJson(req)
    .then((body) => commands[name](body))
    .then((result) => reply(res, 200, result))
    .catch((err) => {
      if (!(err instanceof BadRequest)) console.error(`control ${name}: ${err.stack || err}`);
      reply(res, err instanceof BadRequest ? 400 : 500, { error: err.message });
    });
});

// ----- start and stop ---------------------------------------------------------------------------------------

function listen(server, port) {
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, HOST, () => resolve(server.address().port));
  });
}

try {
  await provider.start(0, HOST);
  issuer.url = `${tls ? 'https' : 'http'}://${HOST}:${provider.address().port}`;
  const controlPort = await listen(control, 0);
  process.stdout.write(`READY ${issuer.url} http://${HOST}:${controlPort}\n`);
} catch (err) {
  fail(`cannot listen: ${err.message}`);
}

let stopping = false;
function shutdown() {
  if (stopping) return;
  stopping = true;
  setTimeout(() => process.exit(0), 1000).unref();
  control.closeAllConnections();
  Promise.allSettled([provider.stop(), new Promise((resolve) => control.close(resolve))]).then(() => process.exit(0));
}
process.on('SIGTERM', shutdown);
process.on('SIGINT', shutdown);
process.stdin.on('end', shutdown);
process.stdin.on('error', shutdown);
process.stdin.resume();
