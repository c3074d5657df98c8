// Key-expiry notices: 14 and 3 days before expiry, encrypted into the Maildir, once each.
import { expect } from 'chai';
import { readdir, readFile } from 'node:fs/promises';
import path from 'node:path';
import { checkPublicKey } from '../../src/pgp/index.js';
import { sendExpiryNotices, startExpiryNotices } from '../../src/web/index.js';
import { gpg, gpgDecrypt, makeFreshGpgKey, makeGpgKey, requireGpg, type TestKey } from '../helpers/gpg.js';
import { armoredPart, startTestServer, type TestServer } from './harness.js';

const DAY = 86_400_000;

async function newFiles(s: TestServer, user: string): Promise<string[]> {
  const dir = path.join(s.config.maildirRoot, user, 'new');
  return (await readdir(dir).catch(() => [] as string[])).map((f) => path.join(dir, f));
}

describe('web: key-expiry notices', function () {
  let s: TestServer;
  let key: TestKey;
  let username: string;
  let expires: Date;

  before(async function () {
    requireGpg(this);
    s = await startTestServer();
    key = await makeFreshGpgKey('ed25519');
    await gpg(key.gnupghome, ['--quick-set-expire', key.fingerprint, '1y']);
    await gpg(key.gnupghome, ['--quick-set-expire', key.fingerprint, '1y', '*']);
    const armored = (await gpg(key.gnupghome, ['--armor', '--export', key.fingerprint])).toString();
    const checked = await checkPublicKey(armored);
    expect(checked.expiresAt).to.be.instanceOf(Date);
    expires = checked.expiresAt!;
    const user = await s.registry.add({ fingerprint: checked.fingerprint, publicKey: checked.publicKey, keyExpiresAt: expires.toISOString() });
    username = user.username;
    // Users without expiry, or disabled, get nothing.
    const forever = await makeGpgKey('ed25519');
    const c2 = await checkPublicKey(forever.publicArmored);
    await s.registry.add({ fingerprint: c2.fingerprint, publicKey: c2.publicKey, keyExpiresAt: null });
  });
  after(async () => {
    await s?.close();
  });

  it('sends nothing while expiry is more than 14 days away', async () => {
    expect(await sendExpiryNotices(s.deps, new Date(expires.getTime() - 20 * DAY))).to.equal(0);
    expect(await newFiles(s, username)).to.have.length(0);
  });

  it('sends the 14-day notice once, encrypted', async () => {
    const now = new Date(expires.getTime() - 13 * DAY);
    expect(await sendExpiryNotices(s.deps, now)).to.equal(1);
    expect(await sendExpiryNotices(s.deps, now)).to.equal(0);
    expect(await sendExpiryNotices(s.deps, new Date(now.getTime() + DAY))).to.equal(0);
    const files = await newFiles(s, username);
    expect(files).to.have.length(1);
    const stored = await readFile(files[0]!);
    expect(stored.toString()).not.to.include('expires on');
    const plain = (await gpgDecrypt(key.gnupghome, armoredPart(stored))).toString();
    // Wrapped with protected headers like intake's mail: mail clients show its Subject.
    expect(plain).to.match(/^Kzymy-Payload: v1; wrapper=\d+\r\nContent-Type: message\/rfc822;[^\r]*\r\n[^]*?\r\n\r\nReturn-Path: <>\r\n/);
    expect(plain).to.match(/^Subject: Your kzymy key expires on \d{4}-\d\d-\d\d/m);
    expect(plain).to.include(key.fingerprint);
    expect(plain).to.include('kzymy-client key update');
    expect(s.registry.get(username)!.notices).to.deep.equal([`14d:${expires.toISOString()}`]);
  });

  it('sends the 3-day notice once', async () => {
    const now = new Date(expires.getTime() - 2 * DAY);
    expect(await sendExpiryNotices(s.deps, now)).to.equal(1);
    expect(await sendExpiryNotices(s.deps, now)).to.equal(0);
    expect(await newFiles(s, username)).to.have.length(2);
    expect(s.registry.get(username)!.notices).to.include(`3d:${expires.toISOString()}`);
  });

  it('sends nothing for a disabled user or after expiry', async () => {
    await s.registry.setDisabled(username, true);
    // A key update clears the notices: the same key again.
    const same = s.registry.get(username)!;
    await s.registry.setKey(username, { fingerprint: same.fingerprint, publicKey: await s.registry.publicKey(same), keyExpiresAt: same.keyExpiresAt });
    expect(await sendExpiryNotices(s.deps, new Date(expires.getTime() - 2 * DAY))).to.equal(0);
    await s.registry.setDisabled(username, false);
    expect(await sendExpiryNotices(s.deps, new Date(expires.getTime() + DAY))).to.equal(0);
    expect(await newFiles(s, username)).to.have.length(2);
  });

  it('runs as a job: what is due at once when started, then on its timer until stopped', async () => {
    // The key update above cleared the notices: the 3-day one is due again.
    const at = new Date(expires.getTime() - 2 * DAY);
    const job = startExpiryNotices({ ...s.deps, now: () => at }, 60_000);
    try {
      const end = Date.now() + 10_000;
      while ((await newFiles(s, username)).length < 3 && Date.now() < end) await new Promise((r) => setTimeout(r, 50));
      expect(await newFiles(s, username)).to.have.length(3);
      expect(await job.run()).to.equal(0);
    } finally {
      job.stop();
    }
  });
});
