// A small fake issuer the tests control, for the ID token checks: discovery, JWKS, an
// authorization endpoint that answers at once, and a token endpoint that returns the ID token
// the test asked for (`mode` on the authorization request):
//   good          signed with the published key (the harness itself works)
//   none          `alg: none`, no signature
//   wrong_key     the published key's kid, signed with another key
//   unknown_kid   another key under a kid never published
//   rotated       a new key, published from now on (the client must fetch the keys again)
//   hs256         HMAC with the client secret (symmetric: refused)
//   wrong_aud, wrong_iss, expired, wrong_nonce
// GET /test/jwks-fetches answers how many times the keys were read.
//
//   PORT=…  node forge.mjs     (prints `listening <issuer>`)
import crypto from 'node:crypto';
import http from 'node:http';
import { SignJWT, UnsecuredJWT, exportJWK, generateKeyPair } from 'jose';

const port = Number(process.env.PORT);
const issuer = `http://127.0.0.1:${port}`;
const secret = 'forge-client-secret';

async function key(kid) {
  const { publicKey, privateKey } = await generateKeyPair('RS256', { extractable: true });
  const jwk = await exportJWK(publicKey);
  Object.assign(jwk, { kid, alg: 'RS256', use: 'sig' });
  return { kid, privateKey, jwk };
}
const published = await key('a');
const other = await key('b');
const rotated = await key('c');
const jwks = [published.jwk];
let jwksFetches = 0;
const codes = new Map();

function json(res, status, body) {
  res.writeHead(status, { 'content-type': 'application/json', 'cache-control': 'no-store' });
  res.end(JSON.stringify(body));
}

async function idToken(mode, { nonce, clientId }) {
  const now = Math.floor(Date.now() / 1000);
  const claims = {
    sub: 'forged-subject',
    name: 'Forged Person',
    email: 'forged.person@example.test',
    groups: ['dpo'],
    nonce: mode === 'wrong_nonce' ? 'another-nonce' : nonce,
  };
  const jwt = (c) => new SignJWT(c)
    .setIssuer(mode === 'wrong_iss' ? 'http://127.0.0.1:1' : issuer)
    .setAudience(mode === 'wrong_aud' ? 'another-client' : clientId)
    .setSubject(claims.sub)
    .setIssuedAt(mode === 'expired' ? now - 7200 : now)
    .setExpirationTime(mode === 'expired' ? now - 3600 : now + 300);
  switch (mode) {
    case 'none':
      return new UnsecuredJWT(claims)
        .setIssuer(issuer).setAudience(clientId).setIssuedAt(now).setExpirationTime(now + 300)
        .encode();
    case 'wrong_key':
      return jwt(claims).setProtectedHeader({ alg: 'RS256', kid: 'a' }).sign(other.privateKey);
    case 'unknown_kid':
      return jwt(claims).setProtectedHeader({ alg: 'RS256', kid: 'b' }).sign(other.privateKey);
    case 'rotated':
      if (!jwks.some((k) => k.kid === 'c')) jwks.push(rotated.jwk);
      return jwt(claims).setProtectedHeader({ alg: 'RS256', kid: 'c' }).sign(rotated.privateKey);
    case 'hs256':
      return jwt(claims).setProtectedHeader({ alg: 'HS256' }).sign(new TextEncoder().encode(secret));
    default:
      return jwt(claims).setProtectedHeader({ alg: 'RS256', kid: 'a' }).sign(published.privateKey);
  }
}

const server = http.createServer(async (req, res) => {
  const url = new URL(req.url, issuer);
  try {
    if (url.pathname === '/.well-known/openid-configuration') {
      return json(res, 200, {
        issuer,
        authorization_endpoint: `${issuer}/auth`,
        token_endpoint: `${issuer}/token`,
        jwks_uri: `${issuer}/jwks`,
        response_types_supported: ['code'],
        subject_types_supported: ['public'],
        // `none` and HS256 advertised on purpose: the client must refuse them anyway.
        id_token_signing_alg_values_supported: ['RS256', 'HS256', 'none'],
      });
    }
    if (url.pathname === '/jwks') {
      jwksFetches += 1;
      return json(res, 200, { keys: jwks });
    }
    if (url.pathname === '/test/jwks-fetches') {
      return json(res, 200, { fetches: jwksFetches });
    }
    if (url.pathname === '/auth') {
      const code = crypto.randomBytes(16).toString('hex');
      codes.set(code, {
        mode: url.searchParams.get('mode') || 'good',
        nonce: url.searchParams.get('nonce'),
        clientId: url.searchParams.get('client_id'),
      });
      const back = new URL(url.searchParams.get('redirect_uri'));
      back.searchParams.set('code', code);
      back.searchParams.set('state', url.searchParams.get('state'));
      res.writeHead(302, { location: back.toString() });
      return res.end();
    }
    if (url.pathname === '/token' && req.method === 'POST') {
      let body = '';
      for await (const chunk of req) body += chunk;
      const code = new URLSearchParams(body).get('code');
      const grant = codes.get(code);
      codes.delete(code);
      if (!grant) return json(res, 400, { error: 'invalid_grant' });
      return json(res, 200, {
        access_token: crypto.randomBytes(16).toString('hex'),
        token_type: 'Bearer',
        expires_in: 60,
        id_token: await idToken(grant.mode, grant),
      });
    }
    json(res, 404, { error: 'not_found' });
  } catch (e) {
    json(res, 500, { error: 'server_error', error_description: String(e) });
  }
});
server.listen(port, '127.0.0.1', () => console.log(`listening ${issuer}`));
process.on('SIGTERM', () => process.exit(0));
