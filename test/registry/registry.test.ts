import { expect } from 'chai';
import { stat } from 'node:fs/promises';
import path from 'node:path';
import { allows, randomUsername, normalizeLocalPart } from '../../src/registry/index.js';
import { refusal } from './child.js';
import { describeEngines } from './engines.js';

export const key = (fp: string) => ({ fingerprint: fp, publicKey: `-----BEGIN PGP PUBLIC KEY BLOCK-----\n${fp}\n`, keyExpiresAt: null });

describe('registry: usernames', () => {
  it('makes random DNS-label usernames not derived from the key', () => {
    const seen = new Set<string>();
    for (let i = 0; i < 2000; i++) {
      const u = randomUsername();
      expect(u).to.match(/^[a-z][a-z0-9]{11}$/);
      seen.add(u);
    }
    expect(seen.size).to.equal(2000);
  });
});

describeEngines('registry', (e) => {

  it('adds users durably, one key one account, and survives a reopen', async () => {
    const r = await e.open();
    const u = await r.add(key('AAAA'));
    expect(u.catchAll).to.equal(true);
    expect((await refusal(r.add(key('aaaa')))).code).to.equal('duplicate-key');
    expect(r.list()).to.have.length(1, 'the failed add changed nothing');
    if (e.name === 'lowdb') {
      const folder = path.join(e.dir, 'registry');
      for (const f of ['snapshot.json', 'journal.1', `keys/${u.keyId}.asc`]) expect((await stat(path.join(folder, f))).mode & 0o777, f).to.equal(0o600);
      expect((await stat(folder)).mode & 0o777).to.equal(0o700);
    }
    const again = await e.open();
    expect(again.get(u.username)?.fingerprint).to.equal('AAAA');
    expect(again.findByFingerprint('aaaa')?.username).to.equal(u.username);
    expect(await again.publicKey(u)).to.equal(key('AAAA').publicKey);
    // A second connection that does not know the key yet is refused by the store itself.
    expect((await refusal(again.add(key('aaaa')))).code).to.equal('duplicate-key');
    for (const [name, text] of await e.contents()) expect(text, name).not.to.match(/PRIVATE KEY/);
  });

  it('refuses a key that another connection registered a moment ago, though this one has not seen it', async () => {
    const a = await e.open();
    const b = await e.open();
    await a.add(key('RACE'));
    expect(b.findByFingerprint('RACE')).to.equal(undefined);
    expect((await refusal(b.add(key('RACE')))).code).to.equal('duplicate-key');
    const both = await Promise.allSettled([a.add(key('RACE2')), b.add(key('RACE2'))]);
    expect(both.filter((x) => x.status === 'fulfilled')).to.have.length(1);
    const lost = both.find((x) => x.status === 'rejected')!;
    expect((lost as PromiseRejectedResult).reason.code).to.equal('duplicate-key');
    await a.refresh();
    await b.refresh();
    expect(a.list().map((u) => u.fingerprint).sort()).to.deep.equal(['RACE', 'RACE2']);
    expect(b.list().map((u) => u.fingerprint).sort()).to.deep.equal(['RACE', 'RACE2']);
  });

  it('hands out frozen records: a reader cannot change the registry through them', async () => {
    const r = await e.open();
    const u = await r.add(key('FROZEN'));
    const got = r.get(u.username)!;
    expect(Object.isFrozen(got)).to.equal(true);
    expect(Object.isFrozen(got.aliases)).to.equal(true);
    expect(Reflect.set(got, 'disabled', true)).to.equal(false);
    expect(() => (got.aliases as string[]).push('x')).to.throw(TypeError);
    expect(r.get(u.username)!.disabled).to.equal(false);
    // A change makes a new record; the old one a reader holds stays as it was.
    await r.addAlias(u.username, 'shop');
    expect(got.aliases).to.deep.equal([]);
    expect(r.get(u.username)!.aliases).to.deep.equal(['shop']);
  });

  it('applies the address policy: catch-all with blocks, or aliases only', async () => {
    const r = await e.open();
    const u = await r.add(key('BBBB'));
    expect(allows(r.get(u.username)!, 'Anything')).to.equal(true);
    await r.blockAlias(u.username, 'Spam');
    expect(allows(r.get(u.username)!, 'spam')).to.equal(false);
    await r.setCatchAll(u.username, false);
    await r.addAlias(u.username, 'shop');
    const now = r.get(u.username)!;
    expect(allows(now, 'SHOP')).to.equal(true);
    expect(allows(now, 'other')).to.equal(false);
    expect(now.blocked).to.deep.equal(['spam']);
    await r.removeAlias(u.username, 'shop');
    expect(allows(r.get(u.username)!, 'shop')).to.equal(false);
    expect((await refusal(r.addAlias(u.username, 'a b@c'))).code).to.equal('bad-local-part');
    expect((await refusal(r.addAlias('nobody', 'x'))).code).to.equal('no-such-user');
    expect(normalizeLocalPart(' X.Y+z ')).to.equal('x.y+z');
  });

  it('keeps concurrent changes of one process and sees changes made by another process', async () => {
    const r = await e.open();
    await Promise.all(Array.from({ length: 20 }, (_, i) => r.add(key(`F${i}`))));
    expect(r.count()).to.equal(20);
    const u = r.list()[0]!;
    await Promise.all(Array.from({ length: 20 }, (_, i) => r.addAlias(u.username, `a${i}`)));
    expect(r.get(u.username)!.aliases).to.have.length(20);
    const other = await e.open();
    await other.setDisabled(u.username, true);
    expect(await r.refresh()).to.equal(true);
    expect(r.get(u.username)!.disabled).to.equal(true);
    expect(await r.refresh()).to.equal(false);
  });

  it('records expiry notices only while the key expiry is the one they were sent for', async () => {
    const r = await e.open();
    const u = await r.add({ ...key('N1'), keyExpiresAt: '2027-01-01T00:00:00.000Z' });
    await r.addNotices(u.username, ['14d:2027-01-01T00:00:00.000Z'], '2027-01-01T00:00:00.000Z');
    expect(r.get(u.username)!.notices).to.deep.equal(['14d:2027-01-01T00:00:00.000Z']);
    await r.setKey(u.username, { ...key('N1'), keyExpiresAt: '2028-01-01T00:00:00.000Z' });
    expect(r.get(u.username)!.notices).to.deep.equal([], 'a key update clears the notices');
    await r.addNotices(u.username, ['3d:2027-01-01T00:00:00.000Z'], '2027-01-01T00:00:00.000Z');
    expect(r.get(u.username)!.notices).to.deep.equal([], 'a notice for the old expiry is not recorded');
  });

  it('rotates a key and removes a user', async () => {
    const r = await e.open();
    const a = await r.add(key('C1'));
    const b = await r.add(key('C2'));
    expect((await refusal(r.setKey(a.username, key('C2')))).code).to.equal('duplicate-key');
    const rotated = await r.setKey(a.username, key('C3'));
    expect(r.findByFingerprint('C1')).to.equal(undefined);
    expect(await r.publicKey(rotated)).to.equal(key('C3').publicKey);
    await r.remove(b.username);
    expect(r.get(b.username)).to.equal(undefined);
    expect(r.findByFingerprint('C2')).to.equal(undefined);
    expect((await refusal(r.remove(b.username))).code).to.equal('no-such-user');
    // No trace of the deleted account in what the registry keeps (files, or tables).
    for (const [name, text] of await e.contents()) {
      expect(text, name).not.to.include(b.username);
      expect(text, name).not.to.include('C2');
    }
    expect(r.get(a.username)!.fingerprint).to.equal('C3');
    // Another connection sees the deletion and the rotation.
    const other = await e.open();
    expect(other.get(b.username)).to.equal(undefined);
    expect(other.findByFingerprint('C3')?.username).to.equal(a.username);
    expect(await other.publicKey(other.get(a.username)!)).to.equal(key('C3').publicKey);
    // The deleted account's key can sign up again, as a new account.
    const back = await r.add(key('C2'));
    expect(back.username).not.to.equal(b.username);
  });
});
