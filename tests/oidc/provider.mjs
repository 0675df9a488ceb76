// A real, certified OpenID Connect provider (panva's `oidc-provider`) for Deployer's authenticator tests.
//
// Loopback only: it listens on 127.0.0.1 and its issuer is http://127.0.0.1:<port>. It never reaches the
// network (every outbound request of the provider is aborted before it connects).
//
// Environment:
//   OIDC_PORT            port to listen on; 0 (or unset) picks a free one, the READY line tells which
//   OIDC_CLIENT_ID       the one registered client (confidential)
//   OIDC_CLIENT_SECRET   its secret (client_secret_basic; client_secret_post is accepted too)
//   OIDC_REDIRECT_URIS   comma-separated redirect URIs, matched exactly
//   OIDC_ACCESS_TTL      access token lifetime in seconds (default 3600)
//   OIDC_REQUIRE_PKCE    "1" makes PKCE (S256) mandatory for the client too (default: optional, S256 only)
//
// Prints `READY <issuer>` on stdout once listening; exits 0 on SIGTERM or SIGINT.
//
// Interactions are our own minimal ones (the built-in devInteractions accept any password and their page
// imports a web font from the internet): GET /interaction/<uid> shows a login form (fields `login`,
// `password`; only the password "secret" is accepted, any login id is an account) or a consent form;
// POST /interaction/<uid> submits either (hidden field `prompt` says which).

import * as crypto from 'node:crypto';
import * as http from 'node:http';

import { Provider } from 'oidc-provider';

const HOST = '127.0.0.1';
const PASSWORD = 'secret';

function env(name, fallback) {
  const value = process.env[name];
  if (value === undefined || value === '') {
    if (fallback === undefined) {
      console.error(`provider.mjs: environment variable ${name} is required`);
      process.exit(2);
    }
    return fallback;
  }
  return value;
}

const port = Number.parseInt(env('OIDC_PORT', '0'), 10);
const clientId = env('OIDC_CLIENT_ID');
const clientSecret = env('OIDC_CLIENT_SECRET');
const redirectUris = env('OIDC_REDIRECT_URIS').split(',').map((s) => s.trim()).filter(Boolean);
const accessTtl = Number.parseInt(env('OIDC_ACCESS_TTL', '3600'), 10);
const requirePkce = env('OIDC_REQUIRE_PKCE', '0') === '1';

if (!Number.isInteger(port) || port < 0 || port > 65535) {
  console.error(`provider.mjs: bad OIDC_PORT ${process.env.OIDC_PORT}`);
  process.exit(2);
}
if (!Number.isInteger(accessTtl) || accessTtl <= 0) {
  console.error(`provider.mjs: bad OIDC_ACCESS_TTL ${process.env.OIDC_ACCESS_TTL}`);
  process.exit(2);
}

function signingKey() {
  const { privateKey } = crypto.generateKeyPairSync('rsa', { modulusLength: 2048 });
  return { ...privateKey.export({ format: 'jwk' }), kid: crypto.randomUUID(), use: 'sig', alg: 'RS256' };
}

function configuration() {
  return {
    clients: [{
      client_id: clientId,
      client_secret: clientSecret,
      redirect_uris: redirectUris,
      grant_types: ['authorization_code', 'refresh_token'],
      response_types: ['code'],
      token_endpoint_auth_method: 'client_secret_basic',
      scope: 'openid profile email offline_access',
    }],
    // Either of these is accepted at the token endpoint whatever the client registered (one per request).
    clientAuthMethods: ['client_secret_basic', 'client_secret_post'],
    scopes: ['openid', 'profile', 'email', 'offline_access'],
    claims: {
      openid: ['sub'],
      profile: ['name', 'preferred_username'],
      email: ['email', 'email_verified'],
    },
    async findAccount(ctx, id) {
      return {
        accountId: id,
        async claims() {
          return {
            sub: id,
            preferred_username: id,
            email: `${id}@example.org`,
            email_verified: true,
            name: `Test User ${id}`,
          };
        },
      };
    },
    // Refresh tokens for every code exchange by a client allowed the refresh_token grant, whether or not
    // offline_access was asked for (the default would need scope offline_access *and* prompt=consent).
    async issueRefreshToken(ctx, client) {
      return client.grantTypeAllowed('refresh_token');
    },
    pkce: {
      required: () => requirePkce,
    },
    features: {
      devInteractions: { enabled: false },
      revocation: { enabled: true },
      introspection: { enabled: true },
    },
    interactions: {
      url: (ctx, interaction) => `/interaction/${interaction.uid}`,
    },
    ttl: {
      AccessToken: accessTtl,
      AuthorizationCode: 600,
      IdToken: 3600,
      RefreshToken: 14 * 24 * 3600,
      Interaction: 3600,
      Session: 14 * 24 * 3600,
      Grant: 14 * 24 * 3600,
    },
    // Tokens expire exactly at exp (the default lets them live 15 s longer), so short OIDC_ACCESS_TTLs bite.
    clockTolerance: 0,
    jwks: { keys: [signingKey()] },
    cookies: { keys: [crypto.randomBytes(32).toString('hex')] },
    // Every outbound request the provider might make (client jwks_uri, sector_identifier_uri, ...) is
    // aborted before it connects: this provider never reaches the network.
    httpOptions() {
      return { signal: AbortSignal.abort(new Error('the test provider makes no outbound requests')) };
    },
  };
}

// ----- interactions -----------------------------------------------------------------------------------

function esc(value) {
  return String(value).replace(/[&<>"']/g, (c) => ({
    '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;',
  })[c]);
}

function page(res, status, title, body) {
  const html = `<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>${esc(title)}</title></head>
<body><h1>${esc(title)}</h1>
${body}
</body></html>
`;
  res.writeHead(status, {
    'Content-Type': 'text/html; charset=utf-8',
    'Cache-Control': 'no-store',
    'Content-Length': Buffer.byteLength(html),
  });
  res.end(html);
}

function loginForm(uid, params, error) {
  const hint = params.login_hint ? ` value="${esc(params.login_hint)}"` : '';
  return `${error ? `<p class="error">${esc(error)}</p>\n` : ''}<form id="login" action="/interaction/${esc(uid)}" method="post" autocomplete="off">
  <input type="hidden" name="prompt" value="login">
  <input type="text" name="login" required placeholder="login"${hint}>
  <input type="password" name="password" required placeholder="password">
  <button type="submit">Sign-in</button>
</form>
<p><a href="/interaction/${esc(uid)}/abort">Cancel</a></p>`;
}

function consentForm(uid, params, details) {
  const scopes = (details.missingOIDCScope || []).map((s) => `<li>${esc(s)}</li>`).join('');
  return `<p>${esc(params.client_id)} asks for:</p>
<ul>${scopes}</ul>
<form id="consent" action="/interaction/${esc(uid)}" method="post" autocomplete="off">
  <input type="hidden" name="prompt" value="consent">
  <button type="submit">Continue</button>
</form>
<p><a href="/interaction/${esc(uid)}/abort">Cancel</a></p>`;
}

async function readForm(req) {
  const chunks = [];
  let size = 0;
  for await (const chunk of req) {
    size += chunk.length;
    if (size > 64 * 1024) throw new Error('form too large');
    chunks.push(chunk);
  }
  return new URLSearchParams(Buffer.concat(chunks).toString('utf8'));
}

async function interaction(provider, req, res, uid, action) {
  const details = await provider.interactionDetails(req, res);
  if (details.uid !== uid) {
    page(res, 400, 'Error', '<p>interaction mismatch</p>');
    return;
  }
  const { prompt, params, session, grantId } = details;

  if (action === 'abort') {
    await provider.interactionFinished(req, res, {
      error: 'access_denied', error_description: 'End-User aborted interaction',
    }, { mergeWithLastSubmission: false });
    return;
  }

  if (req.method === 'GET') {
    if (prompt.name === 'login') {
      page(res, 200, 'Sign-in', loginForm(uid, params));
    } else if (prompt.name === 'consent') {
      page(res, 200, 'Authorize', consentForm(uid, params, prompt.details));
    } else {
      page(res, 501, 'Error', `<p>prompt ${esc(prompt.name)} not implemented</p>`);
    }
    return;
  }

  if (req.method !== 'POST') {
    page(res, 405, 'Error', '<p>method not allowed</p>');
    return;
  }

  const form = await readForm(req);
  const submitted = form.get('prompt');
  if (submitted !== prompt.name) {
    page(res, 400, 'Error', `<p>expected a ${esc(prompt.name)} submission, got ${esc(submitted)}</p>`);
    return;
  }

  if (prompt.name === 'login') {
    const login = (form.get('login') || '').trim();
    if (!login || form.get('password') !== PASSWORD) {
      page(res, 401, 'Sign-in', loginForm(uid, params, 'Invalid login or password.'));
      return;
    }
    await provider.interactionFinished(req, res, { login: { accountId: login } }, { mergeWithLastSubmission: false });
    return;
  }

  if (prompt.name === 'consent') {
    const grant = grantId
      ? await provider.Grant.find(grantId)
      : new provider.Grant({ accountId: session.accountId, clientId: params.client_id });
    const d = prompt.details;
    if (d.missingOIDCScope) grant.addOIDCScope(d.missingOIDCScope.join(' '));
    if (d.missingOIDCClaims) grant.addOIDCClaims(d.missingOIDCClaims);
    if (d.missingResourceScopes) {
      for (const [indicator, scopes] of Object.entries(d.missingResourceScopes)) {
        grant.addResourceScope(indicator, scopes.join(' '));
      }
    }
    const result = { consent: { grantId: await grant.save() } };
    await provider.interactionFinished(req, res, result, { mergeWithLastSubmission: true });
    return;
  }

  page(res, 501, 'Error', `<p>prompt ${esc(prompt.name)} not implemented</p>`);
}

// ----- server ------------------------------------------------------------------------------------------

let provider;
let callback;

const server = http.createServer((req, res) => {
  if (!provider) {
    res.writeHead(503).end();
    return;
  }
  const { pathname } = new URL(req.url, provider.issuer);
  const m = /^\/interaction\/([A-Za-z0-9_-]+)(?:\/(abort))?$/.exec(pathname);
  if (!m) {
    callback(req, res);
    return;
  }
  interaction(provider, req, res, m[1], m[2]).catch((err) => {
    console.error(`interaction error: ${err.stack || err}`);
    if (!res.headersSent) page(res, 400, 'Error', `<p>${esc(err.error_description || err.message)}</p>`);
    else res.end();
  });
});

server.on('error', (err) => {
  console.error(`provider.mjs: ${err.message}`);
  process.exit(1);
});

server.listen(port, HOST, async () => {
  const issuer = `http://${HOST}:${server.address().port}`;
  try {
    const op = new Provider(issuer, configuration());
    // Static clients are only validated when first used: validate ours now, so bad settings fail the start.
    if (!await op.Client.find(clientId)) throw new Error(`client ${clientId} not found`);
    for (const event of ['server_error', 'grant.error', 'introspection.error', 'revocation.error', 'userinfo.error']) {
      op.on(event, (ctx, err) => console.error(`${event}: ${err?.stack || err}`));
    }
    callback = op.callback();
    provider = op;
  } catch (err) {
    console.error(`provider.mjs: bad configuration: ${err.error_description || err.message}`);
    process.exit(1);
  }
  process.stdout.write(`READY ${issuer}\n`);
});

function shutdown() {
  server.close(() => process.exit(0));
  server.closeAllConnections();
  setTimeout(() => process.exit(0), 2000).unref();
}
process.on('SIGTERM', shutdown);
process.on('SIGINT', shutdown);
