// A user whose key expires can still log in and repair it: real GnuPG keys that expire
// a few seconds into the test.
import { expect } from 'chai';
import { setTimeout as sleep } from 'node:timers/promises';
import { gpg, makeFreshGpgKey, makeGpgKey, requireGpg } from '../helpers/gpg.js';
import {
  api,
  apiWithHost,
  decryptChallenge,
  gpgSign,
  login,
  makeCustomGpgKey,
  serverName,
  signupApi,
  startTestServer,
  subkeyFingerprints,
  type TestServer,
} from './harness.js';

/** Seconds a key lives: long enough to sign up with it first. */
const LIFETIME_S = 6;

type Key = Awaited<ReturnType<typeof makeCustomGpgKey>>;

async function keyExpiry(k: Key): Promise<number[]> {
  const colons = (await gpg(k.gnupghome, ['--with-colons', '--list-keys', k.fingerprint])).toString('utf8');
  return colons
    .split('\n')
    .filter((l) => l.startsWith('pub:') || l.startsWith('sub:'))
    .map((l) => Number(l.split(':')[6] || 0))
    .filter((t) => t > 0);
}

async function waitUntilExpired(keys: Key[]): Promise<void> {
  const times = (await Promise.all(keys.map(keyExpiry))).flat();
  const until = Math.max(...times) * 1000 + 1500;
  await sleep(Math.max(0, until - Date.now()));
}

function errCode(j: Record<string, unknown>): string {
  return (j.error as { code: string } | undefined)?.code ?? '';
}

describe('web: a user whose key expired can log in and repair it', function () {
  let s: TestServer;
  let primaryExpires: Key;
  let subkeyExpires: Key;
  let userP: string;
  let userS: string;
  // A server that knows its onion name, with a small budget for loopback-name challenges.
  const onion = 'kzymyexpirytestonionxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx.onion';
  let sOnion: TestServer;
  let onionKey: Key;
  let userO: string;

  before(async function () {
    requireGpg(this);
    s = await startTestServer();
    // The whole key (primary) expires.
    primaryExpires = await makeCustomGpgKey(['ed25519', 'sign', `seconds=${LIFETIME_S}`], ['cv25519', 'encr', `seconds=${LIFETIME_S}`]);
    // Only the encryption subkey expires; the primary key can still sign.
    subkeyExpires = await makeCustomGpgKey(['ed25519', 'sign', 'never'], ['cv25519', 'encr', `seconds=${LIFETIME_S}`]);
    userP = await signupApi(s, primaryExpires);
    userS = await signupApi(s, subkeyExpires);
    sOnion = await startTestServer({ onion, limits: { challengeEncryptBurst: 3, challengeEncryptPerMinute: 1 } });
    onionKey = await makeCustomGpgKey(['ed25519', 'sign', `seconds=${LIFETIME_S}`], ['cv25519', 'encr', `seconds=${LIFETIME_S}`]);
    userO = await signupApi(sOnion, onionKey);
    await waitUntilExpired([primaryExpires, subkeyExpires, onionKey]);
  });
  after(async () => {
    await s?.close();
    await sOnion?.close();
    await onionKey?.dispose();
    await primaryExpires?.dispose();
    await subkeyExpires?.dispose();
  });

  it('an expired encryption subkey: logs in by signature, uploads the extended key, the account shows it', async () => {
    const ch = await api(s, 'POST', '/api/v1/auth/challenge', { username: userS });
    expect(ch.status, JSON.stringify(ch.json)).to.equal(200);
    expect(ch.json.challenge).to.equal(undefined);
    const token = await login(s, userS, subkeyExpires);

    const [sub] = await subkeyFingerprints(subkeyExpires);
    await gpg(subkeyExpires.gnupghome, ['--quick-set-expire', subkeyExpires.fingerprint, '1y', sub!]);
    const extended = (await gpg(subkeyExpires.gnupghome, ['--armor', '--export', subkeyExpires.fingerprint])).toString();
    const r = await api(s, 'POST', '/api/v1/key', { publicKey: extended }, token);
    expect(r.status, JSON.stringify(r.json)).to.equal(200);
    expect(r.json).to.include({ status: 'updated', fingerprint: subkeyExpires.fingerprint });
    const account = await api(s, 'GET', '/api/v1/account', undefined, token);
    expect(new Date(account.json.keyExpiresAt as string).getTime()).to.be.greaterThan(Date.now() + 300 * 86_400_000);
  });

  it('an expired primary key: gpg cannot sign, so the server sends a login decryption challenge, dated while the key was valid', async () => {
    // gpg refuses to sign with the expired key: a signature login is impossible.
    await gpgSign(primaryExpires, 'anything\n').then(
      () => expect.fail('gpg signed with an expired key'),
      () => undefined,
    );
    // A stranger asks 100 times, all at once: one challenge, shared, is encrypted.
    const asked = await Promise.all(Array.from({ length: 100 }, () => api(s, 'POST', '/api/v1/auth/challenge', { username: userP })));
    for (const r of asked) expect(r.status, JSON.stringify(r.json)).to.equal(200);
    const texts = new Set(asked.map((r) => r.json.challenge as string));
    expect(texts.size).to.equal(1);
    const [armored] = [...texts];
    expect(armored).to.match(/^-----BEGIN PGP MESSAGE-----/);
    // Junk codes by the stranger neither end it nor lock the owner out.
    for (let i = 0; i < 30; i++) {
      const r = await api(s, 'POST', '/api/v1/auth/token', { challengeId: asked[i]!.json.challengeId, code: 'aaaa-bbbb-cccc-dddd' });
      expect([401, 429]).to.include(r.status);
    }
    const ch = await api(s, 'POST', '/api/v1/auth/challenge', { username: userP });
    expect(ch.json.challenge).to.equal(armored);
    const c = await decryptChallenge(primaryExpires, ch.json.challenge as string);
    expect(c).to.include({ purpose: 'login', server: serverName(s), username: userP, fingerprint: primaryExpires.fingerprint });
    const tok = await api(s, 'POST', '/api/v1/auth/token', { challengeId: ch.json.challengeId, code: c.code });
    expect(tok.status, JSON.stringify(tok.json)).to.equal(200);
    const token = tok.json.token as string;
    // A code works once: the shared challenge ended with the right answer.
    const again = await api(s, 'POST', '/api/v1/auth/token', { challengeId: asked[99]!.json.challengeId, code: c.code });
    expect([401, 429]).to.include(again.status);

    // The owner extends primary and subkey, and uploads the key: same fingerprint, new expiry.
    await gpg(primaryExpires.gnupghome, ['--quick-set-expire', primaryExpires.fingerprint, '1y']);
    const subs = await subkeyFingerprints(primaryExpires);
    await gpg(primaryExpires.gnupghome, ['--quick-set-expire', primaryExpires.fingerprint, '1y', ...subs]);
    const extended = (await gpg(primaryExpires.gnupghome, ['--armor', '--export', primaryExpires.fingerprint])).toString();
    const r = await api(s, 'POST', '/api/v1/key', { publicKey: extended }, token);
    expect(r.status, JSON.stringify(r.json)).to.equal(200);
    expect(r.json).to.include({ status: 'updated', fingerprint: primaryExpires.fingerprint });
    const account = await api(s, 'GET', '/api/v1/account', undefined, token);
    expect(account.status).to.equal(200);
    expect(new Date(account.json.keyExpiresAt as string).getTime()).to.be.greaterThan(Date.now() + 300 * 86_400_000);

    // From now on, a signature login: nothing to decrypt.
    const next = await api(s, 'POST', '/api/v1/auth/challenge', { username: userP });
    expect(next.json.challenge).to.equal(undefined);
    expect(await login(s, userP, primaryExpires)).to.match(/^kzt_/);
  });

  it('a stranger churning loopback server names cannot use up the decryption challenges of the onion name', async () => {
    const statuses: number[] = [];
    for (let i = 2; i < 12; i++) {
      statuses.push((await apiWithHost(sOnion, `127.0.0.${i}:${sOnion.port}`, 'POST', '/api/v1/auth/challenge', { username: userO })).status);
    }
    expect(statuses.slice(0, 3)).to.deep.equal([200, 200, 200]);
    expect(statuses.slice(3)).to.include(429);
    // The owner, through the onion: a challenge naming the onion, and a token.
    const ch = await apiWithHost(sOnion, onion, 'POST', '/api/v1/auth/challenge', { username: userO });
    expect(ch.status, JSON.stringify(ch.json)).to.equal(200);
    const c = await decryptChallenge(onionKey, ch.json.challenge as string);
    expect(c).to.include({ purpose: 'login', server: onion, username: userO });
    const tok = await apiWithHost(sOnion, onion, 'POST', '/api/v1/auth/token', { challengeId: ch.json.challengeId, code: c.code });
    expect(tok.status, JSON.stringify(tok.json)).to.equal(200);
  });

  it('never answers 500 to a login: a damaged or revoked stored key is a sentence', async () => {
    const k = await makeFreshGpgKey('ed25519');
    const u = await signupApi(s, k);
    // Faults of the stored data, made for real in the registry: a revoked key, then no key at all.
    const revoked = await makeGpgKey('revoked');
    await s.registry.setKey(u, { fingerprint: revoked.fingerprint, publicKey: revoked.publicArmored, keyExpiresAt: null });
    const r1 = await api(s, 'POST', '/api/v1/auth/challenge', { username: u });
    expect(r1.status, JSON.stringify(r1.json)).to.equal(409);
    expect(errCode(r1.json)).to.equal('key-unusable');
    await s.registry.setKey(u, { fingerprint: k.fingerprint, publicKey: 'not a key', keyExpiresAt: null });
    const r2 = await api(s, 'POST', '/api/v1/auth/challenge', { username: u });
    expect(r2.status, JSON.stringify(r2.json)).to.equal(503);
    for (const r of [r1, r2]) expect((r.json.error as { message: string }).message).to.match(/^[A-Z].*\.$/);
  });

  it('uploading the still expired key is refused with a sentence naming the cause', async () => {
    const k = await makeCustomGpgKey(['ed25519', 'sign', 'never'], ['cv25519', 'encr', 'seconds=4']);
    try {
      const u = await signupApi(s, k);
      const token = await login(s, u, k);
      await waitUntilExpired([k]);
      const r = await api(s, 'POST', '/api/v1/key', { publicKey: k.publicArmored }, token);
      expect(r.status).to.equal(400);
      expect(errCode(r.json)).to.equal('bad-key');
      expect((r.json.error as { message: string }).message).to.match(/expired/);
    } finally {
      await k.dispose();
    }
  });
});
