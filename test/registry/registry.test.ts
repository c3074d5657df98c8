import { expect } from 'chai';
import { readFile, stat } from 'node:fs/promises';
import { Registry, RegistryError, randomUsername, normalizeLocalPart } from '../../src/registry/index.js';
import { tempDir } from '../helpers/env.js';

const key = (fp: string) => ({ fingerprint: fp, publicKey: `-----BEGIN PGP PUBLIC KEY BLOCK-----\n${fp}\n`, keyExpiresAt: null });

describe('registry', () => {
  let dir: string;
  let cleanup: () => Promise<void>;
  beforeEach(async () => ({ dir, cleanup } = await tempDir()));
  afterEach(async () => cleanup());

  it('makes random DNS-label usernames not derived from the key', () => {
    const seen = new Set<string>();
    for (let i = 0; i < 2000; i++) {
      const u = randomUsername();
      expect(u).to.match(/^[a-z][a-z0-9]{11}$/);
      seen.add(u);
    }
    expect(seen.size).to.equal(2000);
  });

  it('adds users durably (0600 file), one key one account, and survives a reopen', async () => {
    const r = await Registry.open(dir);
    const u = await r.add(key('AAAA'));
    expect(u.catchAll).to.equal(true);
    let err: unknown;
    try {
      await r.add(key('aaaa'));
    } catch (e) {
      err = e;
    }
    expect(err).to.be.instanceOf(RegistryError).with.property('code', 'duplicate-key');
    expect(r.list()).to.have.length(1, 'the failed add changed nothing');
    expect((await stat(r.file)).mode & 0o777).to.equal(0o600);
    const again = await Registry.open(dir);
    expect(again.get(u.username)?.fingerprint).to.equal('AAAA');
    expect(again.findByFingerprint('aaaa')?.username).to.equal(u.username);
    expect(await readFile(r.file, 'utf8')).not.to.match(/PRIVATE KEY/);
  });

  it('applies the address policy: catch-all with blocks, or aliases only', async () => {
    const r = await Registry.open(dir);
    const u = await r.add(key('BBBB'));
    expect(Registry.allows(r.get(u.username)!, 'Anything')).to.equal(true);
    await r.blockAlias(u.username, 'Spam');
    expect(Registry.allows(r.get(u.username)!, 'spam')).to.equal(false);
    await r.setCatchAll(u.username, false);
    await r.addAlias(u.username, 'shop');
    const now = r.get(u.username)!;
    expect(Registry.allows(now, 'SHOP')).to.equal(true);
    expect(Registry.allows(now, 'other')).to.equal(false);
    expect(now.blocked).to.deep.equal(['spam']);
    await r.removeAlias(u.username, 'shop');
    expect(Registry.allows(r.get(u.username)!, 'shop')).to.equal(false);
    let err: unknown;
    try {
      await r.addAlias(u.username, 'a b@c');
    } catch (e) {
      err = e;
    }
    expect(err).to.be.instanceOf(RegistryError).with.property('code', 'bad-local-part');
    expect(normalizeLocalPart(' X.Y+z ')).to.equal('x.y+z');
  });

  it('serialises concurrent writes and sees changes made by another process', async () => {
    const r = await Registry.open(dir);
    await Promise.all(Array.from({ length: 20 }, (_, i) => r.add(key(`F${i}`))));
    expect(r.list()).to.have.length(20);
    const other = await Registry.open(dir);
    const u = r.list()[0]!;
    await other.setDisabled(u.username, true);
    expect(await r.refreshIfChanged()).to.equal(true);
    expect(r.get(u.username)!.disabled).to.equal(true);
    expect(await r.refreshIfChanged()).to.equal(false);
  });

  it('rotates a key and removes a user', async () => {
    const r = await Registry.open(dir);
    const a = await r.add(key('C1'));
    const b = await r.add(key('C2'));
    let err: unknown;
    try {
      await r.setKey(a.username, key('C2'));
    } catch (e) {
      err = e;
    }
    expect(err).to.be.instanceOf(RegistryError).with.property('code', 'duplicate-key');
    await r.setKey(a.username, key('C3'));
    expect(r.findByFingerprint('C1')).to.equal(undefined);
    await r.remove(b.username);
    expect(r.get(b.username)).to.equal(undefined);
  });
});
