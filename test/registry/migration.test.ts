// The registry.json of kzymy 0.1 is converted into the registry folder on first open:
// every field kept, each key readable, the old file set aside, and never converted twice.
import { expect } from 'chai';
import { readFile, readdir, rm, stat, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { openRegistry, registryExists, type Registry } from '../../src/registry/index.js';
import { tempDir } from '../helpers/env.js';
import { spawnChild, reap, refusal, type Child } from './child.js';

const armored = (n: number) => `-----BEGIN PGP PUBLIC KEY BLOCK-----\n\nmQINBF${n}xyz+/=\n=ab${n}\n-----END PGP PUBLIC KEY BLOCK-----\n`;

/** Users as kzymy 0.1 stored them (the key inside the record). */
const legacyUsers = [
  {
    username: 'k3xq9v2mfa1b',
    fingerprint: 'A1B2C3D4E5F60718293A4B5C6D7E8F9012345678',
    publicKey: armored(1),
    keyExpiresAt: null,
    createdAt: '2026-01-02T03:04:05.000Z',
    disabled: false,
    catchAll: true,
    aliases: [],
    blocked: ['spam', 'junk'],
    notices: [],
  },
  {
    username: 'p0aa7c9d0e1f',
    fingerprint: 'FFEEDDCCBBAA00998877665544332211FFEEDDCC',
    publicKey: armored(2),
    keyExpiresAt: '2027-03-01T00:00:00.000Z',
    createdAt: '2026-02-03T04:05:06.000Z',
    disabled: true,
    catchAll: false,
    aliases: ['shop', 'news.letter', 'a+b'],
    blocked: [],
    notices: ['14d:2027-03-01T00:00:00.000Z', '3d:2027-03-01T00:00:00.000Z'],
  },
  {
    username: 'zz9y8x7w6v5u',
    fingerprint: '0000111122223333444455556666777788889999',
    publicKey: armored(3),
    keyExpiresAt: '2026-12-31T23:59:59.000Z',
    createdAt: '2026-03-04T05:06:07.000Z',
    disabled: false,
    catchAll: false,
    aliases: ['only'],
    blocked: ['x'],
    notices: ['14d:2026-12-31T23:59:59.000Z'],
  },
];

// As kzymy 0.1 wrote it: JSON.stringify(data, null, 2) and a newline.
const legacyText = (users: unknown[] = legacyUsers) => `${JSON.stringify({ version: 1, users }, null, 2)}\n`;

describe('registry: migration from the registry.json of 0.1', () => {
  let dir: string;
  let cleanup: () => Promise<void>;
  let children: Child[] = [];
  let regs: Registry[] = [];
  beforeEach(async () => ({ dir, cleanup } = await tempDir()));
  afterEach(async () => {
    await Promise.all(children.map(reap));
    children = [];
    await Promise.all(regs.map((r) => r.close()));
    regs = [];
    await cleanup();
  });
  const legacy = () => path.join(dir, 'registry.json');

  it('converts every user with every field on first open, once', async () => {
    await writeFile(legacy(), legacyText(), { mode: 0o600 });
    expect(await registryExists(dir)).to.equal(true);
    const r = await openRegistry({ dataDir: dir });
    regs.push(r);
    expect(r.count()).to.equal(legacyUsers.length);
    for (const old of legacyUsers) {
      const u = r.get(old.username)!;
      expect(u, old.username).to.not.equal(undefined);
      const { publicKey, ...fields } = old;
      expect({ ...u }).to.deep.equal({ ...fields, keyId: u.keyId });
      expect(await r.publicKey(u)).to.equal(publicKey);
      expect(r.findByFingerprint(old.fingerprint)?.username).to.equal(old.username);
    }
    // The old file goes once converted: kept, it would hold every account deleted later.
    expect(await readdir(dir)).to.deep.equal(['registry']);
    // The snapshot does not carry the keys any more: they sit in keys/.
    expect(await readFile(path.join(dir, 'registry', 'snapshot.json'), 'utf8')).to.not.include('BEGIN PGP');

    // Changes go on in the new layout, and a second open does not convert again.
    await r.addAlias('k3xq9v2mfa1b', 'new-one');
    await r.close();
    regs = [];
    const again = await openRegistry({ dataDir: dir });
    regs.push(again);
    expect(again.get('k3xq9v2mfa1b')!.aliases).to.deep.equal(['new-one']);
    expect(again.get('k3xq9v2mfa1b')!.blocked).to.deep.equal(['spam', 'junk']);
    expect(again.count()).to.equal(legacyUsers.length);

    // Even when an operator puts the old file back, the folder wins.
    await writeFile(legacy(), legacyText(legacyUsers.slice(0, 1)));
    const third = await openRegistry({ dataDir: dir });
    regs.push(third);
    expect(third.count()).to.equal(legacyUsers.length);
    expect(third.get('k3xq9v2mfa1b')!.aliases).to.deep.equal(['new-one']);
  });

  for (const [what, text] of [
    ['null', 'null\n'],
    ['not JSON', '{\n  "version": 1,\n  "users": [\n'],
    ['of another shape', '{"users": {}}\n'],
    ['holding a user without a key', legacyText([{ ...legacyUsers[0], publicKey: undefined }])],
    ['holding a user record that is not valid', legacyText([{ ...legacyUsers[0], aliases: 'shop' }])],
  ] as const) {
    it(`refuses a registry.json that is ${what}, with a sentence, and converts nothing`, async () => {
      await writeFile(legacy(), text);
      const e = await refusal(openRegistry({ dataDir: dir }));
      expect(e.code).to.equal('damaged');
      expect(e.message).to.include(legacy());
      expect(e.message).to.match(/restore .*backup/i);
      const names = await readdir(dir);
      expect(names).to.deep.equal(['registry.json'], 'no folder made, nothing renamed');
    });
  }

  it('two processes opening a 0.1 registry at the same moment end with one consistent folder', async () => {
    children = await Promise.all([0, 1].map((i) => spawnChild({ dataDir: dir, mode: 'opener', prefix: `m${i}` })));
    for (let round = 1; round <= 4; round++) {
      await writeFile(legacy(), legacyText(), { mode: 0o600 });
      // Both children and this process open at once.
      for (const c of children) c.send('open');
      const me = await openRegistry({ dataDir: dir });
      regs.push(me);
      const opened = await Promise.all(children.map((c) => c.waitFor((l) => l.opened === round || l.openFailed === round)));
      expect(opened.filter((l) => 'openFailed' in l), JSON.stringify(opened)).to.deep.equal([]);
      for (const c of children) c.send('dump');
      const dumps = await Promise.all(children.map((c) => c.waitFor((l) => 'dump' in l && l.n === round)));
      for (const d of dumps) expect(d.dump).to.deep.equal(me.list());
      expect(me.count()).to.equal(legacyUsers.length);
      for (const old of legacyUsers) expect(await me.publicKey(me.get(old.username)!)).to.equal(old.publicKey);
      expect((await readdir(dir)).sort()).to.deep.equal(['registry']);
      expect((await readdir(path.join(dir, 'registry'))).sort()).to.deep.equal(['journal.1', 'keys', 'snapshot.json']);
      expect((await readdir(path.join(dir, 'registry', 'keys'))).length).to.equal(legacyUsers.length);
      expect((await stat(path.join(dir, 'registry'))).mode & 0o777).to.equal(0o700);
      for (const c of children) c.send('close');
      await Promise.all(children.map((c) => c.waitFor((l) => l.closed === round)));
      await me.close();
      regs = [];
      await rm(path.join(dir, 'registry'), { recursive: true });
    }
  });
});
