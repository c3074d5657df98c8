// A full disk, for real: the data folder is a small tmpfs filled to the last byte. A
// change is refused with a sentence saying the disk is full, leaves no temporary file
// and no damage behind, and goes through once there is room again.
import { expect } from 'chai';
import { open, readdir, rm } from 'node:fs/promises';
import path from 'node:path';
import { openRegistry, RegistryError, type Registry } from '../../src/registry/index.js';
import type { LowdbRegistry } from '../../src/registry/lowdb.js';
import { useTmpfs } from '../helpers/tmpfs.js';
import { key, openFilesUnder, refusal } from './child.js';

/** Writes `file` until the file system is full. */
async function fill(file: string): Promise<void> {
  const fh = await open(file, 'w');
  const chunk = Buffer.alloc(64 * 1024, 0x55);
  try {
    for (let size = chunk.length; ; ) {
      try {
        await fh.write(chunk, 0, size);
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== 'ENOSPC') throw err;
        if (size === 1) return;
        size = Math.max(1, size >> 1);
      }
    }
  } finally {
    await fh.close();
  }
}

async function leftovers(dataDir: string): Promise<string[]> {
  const folder = path.join(dataDir, 'registry');
  const names = [...(await readdir(folder)), ...(await readdir(path.join(folder, 'keys'))).map((n) => `keys/${n}`)];
  return names.filter((n) => /(^|\/)\..*\.tmp$/.test(n));
}

describe('registry: a full disk (tmpfs)', function () {
  // A sealed journal's handle may stay open a few seconds after close(): the unmount
  // after the suite then detaches lazily.
  const tmpfs = useTmpfs('2m');
  let regs: Registry[] = [];

  afterEach(async () => {
    await Promise.all(regs.map((r) => r.close()));
    regs = [];
  });

  it('refuses add and addAlias with "the disk is full", leaves no temporary file or damage, and succeeds once there is room', async () => {
    const mnt = tmpfs.dir();
    const dataDir = path.join(mnt, 'data');
    const r = await openRegistry({ dataDir });
    regs.push(r);
    const u = await r.add(key('E0'));
    await r.addAlias(u.username, 'before');
    const filler = path.join(mnt, 'filler');
    await fill(filler);

    const signup = await refusal(r.add(key('E1')));
    expect(signup.code).to.equal('write-failed');
    expect(signup.message).to.match(/disk holding .* is full/);
    expect(signup.message).to.include(dataDir);
    expect(r.findByFingerprint('E1')).to.equal(undefined);

    // The journal's last page may still hold a record or two: go on until the disk says no.
    const acked: string[] = [];
    let refused: RegistryError | null = null;
    for (let i = 0; i < 500 && !refused; i++) {
      await r.addAlias(u.username, `a${i}`).then(
        () => acked.push(`a${i}`),
        (e: unknown) => {
          expect(e).to.be.instanceOf(RegistryError);
          refused = e as RegistryError;
        },
      );
    }
    expect(refused, 'addAlias on a full disk').to.not.equal(null);
    const alias = refused as unknown as RegistryError;
    expect(alias.code).to.equal('write-failed');
    expect(alias.message).to.match(/disk holding .* is full/);
    const failedLocal = `a${acked.length}`;
    expect(r.get(u.username)!.aliases).to.not.include(failedLocal);

    // A compaction cannot write its snapshot either, and says so.
    const compaction = await refusal((r as unknown as LowdbRegistry).compact());
    expect(compaction.code).to.equal('write-failed');

    expect(await leftovers(dataDir)).to.deep.equal([]);
    // Nothing damaged: another process opens it and sees exactly what was acknowledged.
    const other = await openRegistry({ dataDir });
    regs.push(other);
    expect(other.get(u.username)!.aliases).to.deep.equal(['before', ...acked]);
    expect(other.count()).to.equal(1);

    await rm(filler);
    const later = await r.add(key('E1'));
    await r.addAlias(u.username, failedLocal);
    await (r as unknown as LowdbRegistry).compact();
    const check = await openRegistry({ dataDir });
    regs.push(check);
    expect(check.get(later.username)?.fingerprint).to.equal('E1');
    expect(await check.publicKey(check.get(later.username)!)).to.equal(key('E1').publicKey);
    expect(check.get(u.username)!.aliases).to.deep.equal(['before', ...acked, failedLocal]);
    await other.refresh();
    expect(other.get(u.username)!.aliases).to.deep.equal(['before', ...acked, failedLocal]);
    expect(await leftovers(dataDir)).to.deep.equal([]);
    await Promise.all(regs.map((x) => x.close()));
    regs = [];
    expect(await openFilesUnder(mnt), 'files still open after close()').to.deep.equal([]);
  });
});
