// The space ledger alone, on a real file system with statfs read afresh at every check: bytes
// of a write still in flight count against the disk floor until the write has landed, even
// when statfs is read again meanwhile (it cannot see them yet), and the writes of a copy in
// flight at once are all covered by its reservation.
import { expect } from 'chai';
import { mkdir, open, statfs, unlink } from 'node:fs/promises';
import path from 'node:path';
import { loadConfig, type Config } from '../../src/config/index.js';
import { MaildirStore } from '../../src/maildir/index.js';
import { SmtpReply } from '../../src/smtp/replies.js';
import { SpaceLedger } from '../../src/smtp/space.js';
import { tempDir } from '../helpers/env.js';
import { useTmpfs } from '../helpers/tmpfs.js';

const MiB = 1024 * 1024;

describe('SMTP space ledger: writes in flight', function () {
  let dir: { dir: string; cleanup: () => Promise<void> };
  let config: Config;

  beforeEach(async function () {
    dir = await tempDir('kzymy-ledger-');
    const base = loadConfig({ cwd: dir.dir, env: { PATH: process.env.PATH, KZYMY_DATA_DIR: `${dir.dir}/data`, KZYMY_MAILDIR_ROOT: `${dir.dir}/maildirs`, KZYMY_TOR_MANAGE: '0', KZYMY_DOMAIN: 'kzymy.test' } });
    config = { ...base, limits: { ...base.limits, minFreeBytes: 0, quotaBytes: 1024 * 1024 * MiB } };
    await mkdir(config.maildirRoot, { mode: 0o700 });
  });
  afterEach(async function () {
    await dir.cleanup();
  });

  async function diskFree(): Promise<number> {
    const s = await statfs(config.maildirRoot);
    return s.bavail * s.bsize;
  }

  it('counts a write that has not landed against the floor, across a fresh statfs reading', async function () {
    const store = new MaildirStore(config.maildirRoot);
    await store.ensureUser('alice');
    const ledger = new SpaceLedger(config, store, 0); // statfs read again at every check
    const before = await diskFree();
    const r = ledger.open('alice');
    // 64 MiB announced as being written, not on the disk yet (as while a write is in flight).
    await r.beforeWrite(64 * MiB);
    const during = await ledger.freeBytes();
    // Other programs may write meanwhile: a wide margin, far from the 64 MiB at stake.
    expect(before - during, 'bytes in flight taken off the free space').to.be.above(48 * MiB);
    r.afterWrite(64 * MiB);
    r.release();
  });

  it('covers every write in flight of one copy: the reservation grows by each, not by the last', async function () {
    const store = new MaildirStore(config.maildirRoot);
    await store.ensureUser('alice');
    const ledger = new SpaceLedger(config, store, 0);
    const r = ledger.open('alice');
    await r.reserve(MiB);
    for (let i = 0; i < 8; i++) await r.beforeWrite(MiB); // 8 writes in flight at once
    expect(r.reserved, 'reserved').to.be.at.least(8 * MiB);
    expect(ledger.inFlight('alice')).to.be.at.least(8 * MiB);
    for (let i = 0; i < 8; i++) r.afterWrite(MiB);
    await r.settle(8 * MiB);
    expect(r.reserved).to.be.at.least(8 * MiB);
    r.release();
    expect(ledger.inFlight('alice')).to.equal(0);
  });

  it('keeps counting the writes in flight of a copy that is refused until they land', async function () {
    const store = new MaildirStore(config.maildirRoot);
    await store.ensureUser('alice');
    const ledger = new SpaceLedger(config, store, 3_600_000); // statfs read once, here
    const free = await ledger.freeBytes();
    config.limits.minFreeBytes = free - 1.5 * MiB;
    const r = ledger.open('alice');
    await r.beforeWrite(MiB); // issued, not landed
    let refusal: unknown = null;
    await r.beforeWrite(MiB).catch((err: unknown) => (refusal = err));
    expect(refusal).to.be.instanceOf(SmtpReply);
    expect((refusal as SmtpReply).responseCode).to.equal(452);
    expect((refusal as SmtpReply).enhanced).to.equal('4.3.1');
    expect(await ledger.freeBytes(), 'the first write, still in flight').to.be.at.most(free - MiB);
    r.afterWrite(MiB);
    expect(await ledger.freeBytes(), 'the first write, landed').to.be.at.most(free - MiB);
    r.release(); // its file is removed
    expect(await ledger.freeBytes()).to.equal(free);
  });

  describe('on a private tmpfs (nothing else writes there)', function () {
    const mnt = useTmpfs('4m', 'kzymy-ledger-tmpfs-');

    it('counts what small files take of the disk (whole blocks), not their bytes: the floor holds between statfs readings', async function () {
      const root = path.join(mnt.dir(), 'maildirs');
      await mkdir(root, { mode: 0o700 });
      const cfg = { ...config, maildirRoot: root };
      const store = new MaildirStore(root);
      await store.ensureUser('alice');
      // statfs is read once, at the first check: from then on only the ledger's counting moves it.
      const ledger = new SpaceLedger(cfg, store, 3_600_000);
      await ledger.freeBytes();
      const kept: string[] = [];
      for (let i = 0; i < 40; i++) {
        const r = ledger.open('alice');
        await r.reserve(1);
        const file = path.join(root, `copy-${i}`);
        const fh = await open(file, 'wx', 0o600);
        await r.beforeWrite(1);
        await fh.write(Buffer.from('x'));
        r.afterWrite(1);
        await fh.sync();
        await fh.close();
        await r.settle(1);
        r.release();
        kept.push(file);
      }
      // A refused copy's file is removed: the blocks it took come back, no more.
      const refused = ledger.open('alice');
      const file = path.join(root, 'refused');
      const fh = await open(file, 'wx', 0o600);
      await refused.beforeWrite(3);
      await fh.write(Buffer.from('abc'));
      refused.afterWrite(3);
      await fh.close();
      await unlink(file);
      refused.release();
      const counted = await ledger.freeBytes();
      const s = await statfs(root);
      const actual = s.bavail * s.bsize;
      expect(counted, 'free bytes as the ledger counts them, against statfs').to.be.at.most(actual);
      expect(actual - counted, 'no more than a block of slack per file').to.be.below(4096 * 2);
      expect(kept).to.have.length(40);
    });
  });
});
