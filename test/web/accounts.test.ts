// Account deletion: the web forgets a deleted account's sessions, login state, pending key
// rotations and parsed key, whether the API deleted her or the operator's CLI did in
// another process.
import { expect } from 'chai';
import { access, readdir } from 'node:fs/promises';
import path from 'node:path';
import { checkPublicKey, type CheckedKey } from '../../src/pgp/index.js';
import { forgetRemovedAccounts } from '../../src/web/accounts.js';
import { secretKey } from '../../src/web/challenge.js';
import { createWeb } from '../../src/web/context.js';
import { makeFreshGpgKey, requireGpg, type TestKey } from '../helpers/gpg.js';
import { filesContaining } from '../helpers/mail.js';
import { startServer, type RunningServer } from '../helpers/server.js';
import { api, decryptCode, login, signupApi, startTestServer, type TestServer } from './harness.js';

const exists = (p: string): Promise<boolean> => access(p).then(
  () => true,
  () => false,
);

async function until(what: string, ok: () => boolean, ms = 5000): Promise<void> {
  const end = Date.now() + ms;
  while (!ok()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

describe('web: forgetting deleted accounts', function () {
  let s: TestServer;
  let keyA: TestKey;
  let keyB: TestKey;

  before(async function () {
    requireGpg(this);
    s = await startTestServer();
    [keyA, keyB] = await Promise.all([makeFreshGpgKey('ed25519'), makeFreshGpgKey('ed25519')]);
  });
  after(async () => {
    await s?.close();
  });

  it('drops sessions, login state, rotations and the parsed key of users the registry no longer has, and only theirs', async () => {
    const web = createWeb(s.deps);
    const a = await s.registry.add(await checkPublicKey(keyA.publicArmored).then((k) => ({ fingerprint: k.fingerprint, publicKey: k.publicKey, keyExpiresAt: null })));
    const b = await s.registry.add(await checkPublicKey(keyB.publicArmored).then((k) => ({ fingerprint: k.fingerprint, publicKey: k.publicKey, keyExpiresAt: null })));
    const now = web.now();
    const later = now + 60_000;
    for (const u of [a, b]) {
      web.sessions.set(secretKey(`kzt_${u.username}`), { username: u.username, fingerprint: u.fingerprint, expiresAt: later }, later, now);
      web.rotations.set(`rot-${u.username}`, { username: u.username, key: {} as CheckedKey, codeHash: Buffer.alloc(32) }, later, now);
      web.fallbacks.set(`${u.username}\n127.0.0.1`, [{ fingerprint: u.fingerprint, challenge: 'x', codeHash: Buffer.alloc(32), expiresAt: later }], later, now);
      web.signable.set(u.fingerprint, { keyId: u.keyId, canSign: true, checkedAt: now });
      await s.deps.keys.get(u.fingerprint, u.keyId, () => s.registry.publicKey(u));
    }
    expect(forgetRemovedAccounts(web)).to.equal(0);
    await s.registry.remove(a.username);

    expect(forgetRemovedAccounts(web)).to.equal(1);
    expect(web.sessions.get(secretKey(`kzt_${a.username}`), now)).to.equal(undefined);
    expect(web.rotations.get(`rot-${a.username}`, now)).to.equal(undefined);
    expect(web.fallbacks.get(`${a.username}\n127.0.0.1`, now)).to.equal(undefined);
    expect(web.signable.has(a.fingerprint)).to.equal(false);
    let loads = 0;
    const load = (): string => {
      loads++;
      return keyA.publicArmored;
    };
    await s.deps.keys.get(a.fingerprint, a.keyId, load);
    expect(loads, 'the deleted key was still cached').to.equal(1);

    expect(web.sessions.get(secretKey(`kzt_${b.username}`), now)).to.include({ username: b.username });
    expect(web.rotations.get(`rot-${b.username}`, now)).to.include({ username: b.username });
    expect(web.fallbacks.get(`${b.username}\n127.0.0.1`, now)).to.have.length(1);
    expect(web.signable.has(b.fingerprint)).to.equal(true);
    await s.deps.keys.get(b.fingerprint, b.keyId, () => expect.fail('the live key was dropped'));
    expect(forgetRemovedAccounts(web)).to.equal(0);
  });
});

describe('web: an account the operator deletes from another process', function () {
  this.timeout(120_000);
  let srv: RunningServer;
  let s: TestServer;
  let key: TestKey;

  before(async function () {
    requireGpg(this);
    srv = await startServer();
    // The harness's helpers need only where the web listens.
    s = { base: `http://127.0.0.1:${srv.webPort}`, port: srv.webPort! } as TestServer;
    key = await makeFreshGpgKey('ed25519');
  });
  after(async () => {
    await srv?.cleanup();
  });

  it('loses every session at once and leaves no file of the user', async () => {
    const username = await signupApi(s, key);
    const first = await login(s, username, key);
    const second = await login(s, username, key);
    // A key change waiting for its code: memory the deletion must reach too.
    const other = await makeFreshGpgKey('ed25519');
    const change = await api(s, 'POST', '/api/v1/key', { publicKey: other.publicArmored }, second);
    expect(change.status, JSON.stringify(change.json)).to.equal(202);
    expect(await exists(path.join(srv.maildirRoot, username))).to.equal(true);
    expect((await api(s, 'GET', '/api/v1/account', undefined, first)).status).to.equal(200);

    await srv.cli('users', 'delete', username, '--yes');

    // The first token, as soon as the server has seen the registry change (the registry
    // follows another process's changes within REFRESH_MS; a loaded machine may take longer).
    let status = 0;
    const end = Date.now() + 10_000;
    while ((status = (await api(s, 'GET', '/api/v1/account', undefined, first)).status) === 200 && Date.now() < end) await new Promise((r) => setTimeout(r, 50));
    expect(status).to.equal(401);
    // The second token and the pending key change are forgotten by the server on its own.
    await until('the server to forget the account', () => srv.output().includes('"evt":"accounts-forgotten"'));
    expect((await api(s, 'GET', '/api/v1/messages', undefined, second)).status).to.equal(401);
    const code = await decryptCode(other, change.json.challenge as string);
    expect((await api(s, 'POST', '/api/v1/key/confirm', { rotationId: change.json.rotationId, code }, second)).status).to.equal(401);
    expect((await api(s, 'POST', '/api/v1/auth/challenge', { username })).status).to.equal(404);

    expect(await exists(path.join(srv.maildirRoot, username))).to.equal(false);
    expect(await readdir(srv.maildirRoot)).not.to.include(username);
    for (const needle of [username, key.fingerprint]) {
      expect(await filesContaining(srv.dataDir, needle), needle).to.deep.equal([]);
      expect(await filesContaining(srv.maildirRoot, needle), needle).to.deep.equal([]);
    }
    expect(srv.output()).not.to.include(username);
  });
});
