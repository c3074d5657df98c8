// Strangers against the web: a username is public, a public key may be too. Whatever a
// stranger sends, the owner logs in at once, valid signups go through, and nobody learns
// whether a key has an account without holding it.
import { expect } from 'chai';
import { gpg, makeFreshGpgKey, requireGpg, type TestKey } from '../helpers/gpg.js';
import {
  api,
  apiWithHost,
  decryptCode,
  gpgSign,
  login,
  loginStatement,
  serverName,
  signupApi,
  startTestServer,
  type TestServer,
} from './harness.js';

function errCode(j: Record<string, unknown>): string {
  return (j.error as { code: string } | undefined)?.code ?? '';
}

describe('web: strangers cannot lock a user out', function () {
  let s: TestServer;
  let key: TestKey;
  let other: TestKey;
  let user: string;

  before(async function () {
    requireGpg(this);
    s = await startTestServer();
    key = await makeFreshGpgKey('ed25519');
    other = await makeFreshGpgKey('ed25519');
    user = await signupApi(s, key);
  });
  after(async () => {
    await s?.close();
  });

  it('100 challenges and 30 junk proofs for X by a stranger, then X logs in at once', async () => {
    const challenges: Array<Record<string, unknown>> = [];
    for (let i = 0; i < 100; i++) {
      const r = await api(s, 'POST', '/api/v1/auth/challenge', { username: user });
      expect(r.status, JSON.stringify(r.json)).to.equal(200);
      expect(r.json.challenge, 'a key that signs gets nothing to decrypt').to.equal(undefined);
      challenges.push(r.json);
    }
    // Junk answers of every kind: codes, statements signed by the stranger's key, garbage.
    for (let i = 0; i < 30; i++) {
      const ch = challenges[i]!;
      const statement = loginStatement(serverName(s), user, key.fingerprint, ch.nonce as string);
      const bodies: Array<Record<string, unknown>> = [
        { challengeId: ch.challengeId, code: `zzzz-zzzz-zzzz-${String(i).padStart(4, '0')}` },
        { challengeId: ch.challengeId, statement, signature: await gpgSign(other, statement) },
        { challengeId: ch.challengeId, statement, signature: '-----BEGIN PGP SIGNATURE-----\n\nwsBcBAABCAAQ\n-----END PGP SIGNATURE-----\n' },
      ];
      const r = await api(s, 'POST', '/api/v1/auth/token', bodies[i % bodies.length]);
      expect([401, 429]).to.include(r.status);
    }
    // The owner, at once: a fresh challenge, and an old one the stranger also holds.
    expect(await login(s, user, key)).to.match(/^kzt_/);
    const old = challenges[99]!;
    const statement = loginStatement(serverName(s), user, key.fingerprint, old.nonce as string);
    const r = await api(s, 'POST', '/api/v1/auth/token', { challengeId: old.challengeId, statement, signature: await gpgSign(key, statement) });
    expect(r.status, JSON.stringify(r.json)).to.equal(200);
    expect(r.json.username).to.equal(user);
  });

  it('junk in bulk (malformed bodies, unknown users, forged ids) stops neither a login nor a signup', async () => {
    const junk: Array<Promise<{ status: number }>> = [];
    for (let i = 0; i < 150; i++) {
      junk.push(api(s, 'POST', '/api/v1/auth/challenge', { username: `nosuchuser${String(i).padStart(3, '0')}` }));
      junk.push(api(s, 'POST', '/api/v1/auth/challenge', { username: ['x'] }));
      junk.push(api(s, 'POST', '/api/v1/auth/token', { challengeId: `${user}.9999999999999.${'A'.repeat(43)}.${'B'.repeat(43)}`, code: 'x' }));
      junk.push(api(s, 'POST', '/api/v1/auth/token', { challengeId: 12, statement: {}, signature: [] }));
      junk.push(api(s, 'POST', '/api/v1/signup', { publicKey: `not a key ${i}` }));
      junk.push(api(s, 'POST', '/api/v1/signup/confirm', { signupId: `nope${i}`, code: 'x' }));
    }
    for (const r of await Promise.all(junk)) expect(r.status).to.be.within(400, 404);
    expect(await login(s, user, key)).to.match(/^kzt_/);
    const fresh = await makeFreshGpgKey('ed25519');
    expect(await signupApi(s, fresh)).to.match(/^[a-z][a-z0-9]{11}$/);
  });

  it('refuses a login at a server name that is not this server, before any work', async () => {
    const r = await apiWithHost(s, 'evil.example', 'POST', '/api/v1/auth/challenge', { username: user });
    expect(r.status).to.equal(400);
    expect(errCode(r.json)).to.equal('wrong-server');
    expect((r.json.error as { message: string }).message).to.match(/\.$/);
    // A statement signed for another server is refused even with a valid challenge here.
    const ch = await api(s, 'POST', '/api/v1/auth/challenge', { username: user });
    const statement = loginStatement('evil.example', user, key.fingerprint, ch.json.nonce as string);
    const signed = { challengeId: ch.json.challengeId, statement, signature: await gpgSign(key, statement) };
    // (401, or 429 once the stranger's failures above have emptied this user's failure bucket.)
    expect([401, 429]).to.include((await api(s, 'POST', '/api/v1/auth/token', signed)).status);
    // ...even when sent with that Host header.
    expect([401, 429]).to.include((await apiWithHost(s, 'evil.example', 'POST', '/api/v1/auth/token', signed)).status);
    expect(await login(s, user, key)).to.match(/^kzt_/);
  });
});

describe('web: a stranger learns nothing from a public key at signup', function () {
  let s: TestServer;
  let key: TestKey;

  before(async function () {
    requireGpg(this);
    s = await startTestServer();
    key = await makeFreshGpgKey('ed25519');
    await signupApi(s, key);
  });
  after(async () => {
    await s?.close();
  });

  it('answers a registered key exactly as a fresh one; only its holder hears 409 after the right code', async () => {
    const fresh = await makeFreshGpgKey('ed25519');
    const a = await api(s, 'POST', '/api/v1/signup', { publicKey: key.publicArmored });
    const b = await api(s, 'POST', '/api/v1/signup', { publicKey: fresh.publicArmored });
    expect(a.status).to.equal(201);
    expect(a.status).to.equal(b.status);
    expect(Object.keys(a.json).sort()).to.deep.equal(Object.keys(b.json).sort());
    expect(a.json.attemptsLeft).to.equal(b.json.attemptsLeft);
    expect(a.json.fingerprint).to.equal(key.fingerprint);
    // Wrong codes are answered alike too.
    const wa = await api(s, 'POST', '/api/v1/signup/confirm', { signupId: a.json.signupId, code: 'aaaa-bbbb-cccc-dddd' });
    const wb = await api(s, 'POST', '/api/v1/signup/confirm', { signupId: b.json.signupId, code: 'aaaa-bbbb-cccc-dddd' });
    expect([wa.status, errCode(wa.json)]).to.deep.equal([wb.status, errCode(wb.json)]);
    const right = await api(s, 'POST', '/api/v1/signup/confirm', { signupId: a.json.signupId, code: await decryptCode(key, a.json.challenge as string) });
    expect(right.status).to.equal(409);
    expect(errCode(right.json)).to.equal('key-registered');
  });
});

describe('web: POST /api/v1/key is rate-limited, after cheap checks', function () {
  let s: TestServer;
  let key: TestKey;
  let user: string;
  let token: string;

  before(async function () {
    requireGpg(this);
    s = await startTestServer({ limits: { keyPerUserBurst: 3, keyPerUserPerMinute: 1, keyCheckBurst: 5, keyCheckPerMinute: 1 } });
    key = await makeFreshGpgKey('ed25519');
    user = await signupApi(s, key);
    token = await login(s, user, key);
  });
  after(async () => {
    await s?.close();
  });

  it('junk costs nothing; key checks are limited per user, then for everyone', async () => {
    // Not a key at all: refused by the cheap checks, no bucket spent.
    for (let i = 0; i < 20; i++) {
      const r = await api(s, 'POST', '/api/v1/key', { publicKey: `junk ${i}` }, token);
      expect(r.status).to.equal(400);
      expect(errCode(r.json)).to.equal('bad-key');
    }
    await gpg(key.gnupghome, ['--quick-set-expire', key.fingerprint, '2y']);
    const updated = (await gpg(key.gnupghome, ['--armor', '--export', key.fingerprint])).toString();
    for (let i = 0; i < 3; i++) {
      const r = await api(s, 'POST', '/api/v1/key', { publicKey: updated }, token);
      expect(r.status, JSON.stringify(r.json)).to.equal(200);
    }
    const fourth = await api(s, 'POST', '/api/v1/key', { publicKey: updated }, token);
    expect(fourth.status).to.equal(429);
    expect(fourth.res.headers.get('retry-after')).to.match(/^\d+$/);
    expect((fourth.json.error as { message: string }).message).to.match(/this account/);

    // Another user has her own allowance, but all users share the global one (5 here).
    const k2 = await makeFreshGpgKey('ed25519');
    const u2 = await signupApi(s, k2);
    const t2 = await login(s, u2, k2);
    const statuses: number[] = [];
    for (let i = 0; i < 3; i++) statuses.push((await api(s, 'POST', '/api/v1/key', { publicKey: k2.publicArmored }, t2)).status);
    expect(statuses.slice(0, 2)).to.deep.equal([200, 200]);
    expect(statuses[2]).to.equal(429);
  });
});
