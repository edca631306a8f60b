// A real OpenID Connect provider for the portal's tests (the npm package `oidc-provider`).
//
// tests/accounts/oidc_idp.py starts it with `node provider.js` and these environment variables:
//   OIDC_TEST_CLIENT_ID, OIDC_TEST_CLIENT_SECRET  the one confidential client (the portal)
//   OIDC_TEST_ACCOUNTS                             JSON file of accounts, re-read on every use:
//       {"alice": {"password": "...", "sub": "...", "email": "...", "name": "...", "groups": [...]}}
// It listens on a free loopback port and prints `listening <issuer>` once it answers.
//
// Test-only shortcuts, each on purpose: RS256 keys generated at start (nothing on disk), no
// consent screen (the portal is a first-party client), and the redirect URIs accept any loopback
// port (pytest-django's live server picks a free one; RFC 8252's rule for loopback redirects).
import { generateKeyPairSync, randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import http from 'node:http';

import Provider, { errors } from 'oidc-provider';

const clientId = process.env.OIDC_TEST_CLIENT_ID;
const clientSecret = process.env.OIDC_TEST_CLIENT_SECRET;
const accountsFile = process.env.OIDC_TEST_ACCOUNTS;
if (!clientId || !clientSecret || !accountsFile) {
  console.error('OIDC_TEST_CLIENT_ID, OIDC_TEST_CLIENT_SECRET and OIDC_TEST_ACCOUNTS are required');
  process.exit(2);
}

const CALLBACK_PATH = '/oidc/callback/';
const REDIRECT_URIS = ['http://testserver', 'http://localhost', 'http://127.0.0.1'].map((o) => o + CALLBACK_PATH);

function accounts() {
  return JSON.parse(readFileSync(accountsFile, 'utf8'));
}

// The subject (`sub`, the provider's account id) is not the login name, as at real providers.
function bySubject(sub) {
  return Object.entries(accounts()).map(([login, a]) => ({ login, ...a, sub: a.sub || login })).find((a) => a.sub === sub);
}

function escapeHtml(value) {
  return String(value).replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
}

const { privateKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
const signingKey = { ...privateKey.export({ format: 'jwk' }), kid: `test-${randomBytes(4).toString('hex')}`, alg: 'RS256', use: 'sig' };

const server = http.createServer();
await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
const issuer = `http://127.0.0.1:${server.address().port}`;

const provider = new Provider(issuer, {
  clients: [
    {
      client_id: clientId,
      client_secret: clientSecret,
      redirect_uris: REDIRECT_URIS,
      grant_types: ['authorization_code'],
      response_types: ['code'],
      token_endpoint_auth_method: 'client_secret_basic',
      id_token_signed_response_alg: 'RS256',
    },
  ],
  jwks: { keys: [signingKey] },
  cookies: { keys: [randomBytes(32).toString('hex')] },
  pkce: { required: () => true },
  scopes: ['openid', 'email', 'profile', 'groups'],
  claims: {
    openid: ['sub'],
    email: ['email', 'email_verified'],
    profile: ['name', 'given_name', 'family_name'],
    groups: ['groups'],
  },
  features: { devInteractions: { enabled: false } },
  interactions: { url: (ctx, interaction) => `/interaction/${interaction.uid}` },
  // First-party client: every scope and claim it asks for is granted without a consent screen.
  async loadExistingGrant(ctx) {
    const grantId = ctx.oidc.result?.consent?.grantId || ctx.oidc.session.grantIdFor(ctx.oidc.client.clientId);
    if (grantId) {
      const existing = await ctx.oidc.provider.Grant.find(grantId);
      if (existing) return existing;
    }
    const grant = new ctx.oidc.provider.Grant({ clientId: ctx.oidc.client.clientId, accountId: ctx.oidc.session.accountId });
    grant.addOIDCScope('openid email profile groups');
    grant.addOIDCClaims(['email', 'email_verified', 'name', 'given_name', 'family_name', 'groups']);
    await grant.save();
    return grant;
  },
  async findAccount(ctx, sub) {
    const account = bySubject(sub);
    if (!account) return undefined;
    return {
      accountId: sub,
      async claims() {
        const [given, ...family] = String(account.name || '').split(' ');
        return {
          sub,
          email: account.email,
          // 'omit' leaves the claim out (a provider that does not say)
          email_verified: account.email_verified === 'omit' ? undefined : (account.email_verified ?? true),
          name: account.name,
          given_name: given,
          family_name: family.join(' '),
          groups: account.groups || [],
        };
      },
    };
  },
  ttl: { Session: 3600, Interaction: 600, Grant: 3600, AccessToken: 600, AuthorizationCode: 60, IdToken: 600 },
});

// Test-only: accept the registered redirect URIs on any loopback port (see the header).
const exactMatch = provider.Client.prototype.redirectUriAllowed;
provider.Client.prototype.redirectUriAllowed = function redirectUriAllowed(value) {
  if (exactMatch.call(this, value)) return true;
  try {
    const url = new URL(value);
    if (!['localhost', '127.0.0.1'].includes(url.hostname)) return false;
    url.port = '';
    return this.redirectUris.includes(url.href);
  } catch {
    return false;
  }
};

const page = (title, body) => `<!doctype html><html lang="en"><head><meta charset="utf-8"><title>${title}</title></head>
<body><h1>${title}</h1>${body}</body></html>`;

function loginForm(uid, message = '', login = '') {
  const alert = message ? `<p role="alert">${escapeHtml(message)}</p>` : '';
  return page('Test identity provider: sign in', `${alert}
<form method="post" action="/interaction/${uid}/login">
  <label for="login">Username</label> <input id="login" name="login" value="${escapeHtml(login)}" autocomplete="off" required>
  <label for="password">Password</label> <input id="password" name="password" type="password" required>
  <button type="submit">Continue</button>
</form>`);
}

async function readForm(req) {
  let body = '';
  for await (const chunk of req) body += chunk;
  return new URLSearchParams(body);
}

function send(res, status, html) {
  res.writeHead(status, { 'content-type': 'text/html; charset=utf-8', 'cache-control': 'no-store' });
  res.end(html);
}

// The interaction pages: a login form checked against the accounts file. Everything else is the
// provider's own routes (discovery, authorize, token, userinfo, JWKS).
async function interaction(req, res) {
  const match = req.url.match(/^\/interaction\/([\w-]+)(\/login)?$/);
  const details = await provider.interactionDetails(req, res);
  if (details.uid !== match[1]) throw new errors.SessionNotFound('interaction mismatch');
  if (details.prompt.name !== 'login') {
    // Consent is granted by loadExistingGrant; any other prompt means the grant was just made.
    return provider.interactionFinished(req, res, { consent: {} }, { mergeWithLastSubmission: true });
  }
  if (req.method === 'GET') return send(res, 200, loginForm(details.uid));
  const form = await readForm(req);
  const login = form.get('login') || '';
  const account = accounts()[login];
  if (!account || account.password !== form.get('password')) {
    return send(res, 200, loginForm(details.uid, 'Unknown user or wrong password.', login));
  }
  const accountId = account.sub || login;
  return provider.interactionFinished(req, res, { login: { accountId } }, { mergeWithLastSubmission: false });
}

const callback = provider.callback();
server.on('request', async (req, res) => {
  if (!req.url.startsWith('/interaction/')) return callback(req, res);
  try {
    await interaction(req, res);
  } catch (error) {
    send(res, 400, page('Test identity provider: error', `<p role="alert">${escapeHtml(error.message)}</p>`));
  }
});

provider.on('server_error', (ctx, error) => console.error('server_error', error));
console.log(`listening ${issuer}`);
