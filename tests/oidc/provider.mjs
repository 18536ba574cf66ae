// A real OpenID Provider for the console's sign-in tests: oidc-provider (a certified
// implementation, pinned in package-lock.json), on 127.0.0.1:$PORT, with one client for the
// console and test people whose `groups` claim maps (ERASURE_OIDC_ROLES of the tests) to roles.
//
//   PORT=…  REDIRECT_URI=…  POST_LOGOUT_URI=…  node provider.mjs
//
// The login page is the provider's own development page: any password is taken, the login names
// an account below. A new RSA key is made at each start (a restart rotates the provider's keys).
// Prints `listening <issuer>` once it accepts connections.
import crypto from 'node:crypto';
import Provider from 'oidc-provider';
import { exportJWK, generateKeyPair } from 'jose';

const port = Number(process.env.PORT);
const issuer = `http://127.0.0.1:${port}`;

// `groups` as the tests map them: privacy-officers=requester, dpo=approver,
// internal-audit=auditor, platform=admin; `visitor` is in no mapped group.
const people = {
  officer: { name: 'Olivia Officer', email: 'olivia.officer@example.test', groups: ['privacy-officers'] },
  approver: { name: 'Arthur Approver', email: 'arthur.approver@example.test', groups: ['dpo'] },
  auditor: { name: 'Audrey Auditor', email: 'audrey.auditor@example.test', groups: ['internal-audit'] },
  admin: { name: 'Adam Admin', email: 'adam.admin@example.test', groups: ['platform'] },
  lead: { name: 'Lena Lead', email: 'lena.lead@example.test', groups: ['privacy-officers', 'platform'] },
  visitor: { name: 'Victor Visitor', email: 'victor.visitor@example.test', groups: ['marketing'] },
  // Whose groups the tests change between two sign-ins (POST /test/groups).
  mover: { name: 'Mona Mover', email: 'mona.mover@example.test', groups: ['dpo', 'internal-audit'] },
};

const { privateKey } = await generateKeyPair('RS256', { extractable: true });
const jwk = await exportJWK(privateKey);
jwk.kid = crypto.randomBytes(8).toString('hex');
jwk.alg = 'RS256';
jwk.use = 'sig';

const provider = new Provider(issuer, {
  clients: [{
    client_id: 'erasure-console',
    client_secret: 'erasure-console-test-secret',
    redirect_uris: [process.env.REDIRECT_URI],
    post_logout_redirect_uris: [process.env.POST_LOGOUT_URI],
    response_types: ['code'],
    grant_types: ['authorization_code'],
    token_endpoint_auth_method: 'client_secret_basic',
  }],
  async findAccount(ctx, id) {
    const person = people[id];
    if (!person) return undefined;
    return {
      accountId: id,
      async claims() {
        return { sub: id, name: person.name, email: person.email, groups: person.groups };
      },
    };
  },
  claims: {
    openid: ['sub'],
    profile: ['name'],
    email: ['email'],
    groups: ['groups'],
  },
  scopes: ['openid', 'profile', 'email', 'groups'],
  // The claims of the granted scopes in the ID token itself (as Keycloak's and Entra ID's
  // group claims are), not only at the userinfo endpoint.
  conformIdTokenClaims: false,
  jwks: { keys: [jwk] },
  cookies: { keys: [crypto.randomBytes(32).toString('hex')] },
  features: {
    devInteractions: { enabled: true },
    rpInitiatedLogout: { enabled: true },
  },
  ttl: { IdToken: 3600, AccessToken: 600, AuthorizationCode: 60, Session: 3600, Interaction: 600, Grant: 3600 },
});
provider.proxy = false;

// Test hook: change a person's groups (what an administrator does at the provider).
provider.use(async (ctx, next) => {
  if (ctx.method === 'POST' && ctx.path === '/test/groups') {
    const body = await new Promise((resolve) => {
      let data = '';
      ctx.req.on('data', (c) => { data += c; });
      ctx.req.on('end', () => resolve(data));
    });
    const { login, groups } = JSON.parse(body);
    people[login].groups = groups;
    ctx.status = 204;
    return;
  }
  await next();
});

provider.listen(port, '127.0.0.1', () => {
  console.log(`listening ${issuer}`);
});
process.on('SIGTERM', () => process.exit(0));
