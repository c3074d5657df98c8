// writeMessage (src/maildir/writer.ts), the one writer of Maildir files, on real folders: the
// bytes land exactly under NAME,S=SIZE in new/, mode 0600; the file reaches new/ only after its
// own fsync, and the call resolves only after the fsync of new/; a source or a hook that fails
// leaves nothing in tmp/ or new/, and streamed chunks are zeroed once written when asked.
import { expect } from 'chai';
import { randomBytes } from 'node:crypto';
import { mkdir, open, readdir, readFile, stat } from 'node:fs/promises';
import { readdirSync } from 'node:fs';
import path from 'node:path';
import { Readable } from 'node:stream';
import { DirSyncer } from '../../src/maildir/dirsync.js';
import { writeMessage, type MaildirFolder } from '../../src/maildir/writer.js';
import { sizeFromName, timeFromName } from '../../src/maildir/names.js';
import { tempDir, withClockStepped } from '../helpers/env.js';

describe('maildir: writeMessage', () => {
  let tmp: { dir: string; cleanup: () => Promise<void> };
  let folder: MaildirFolder;
  beforeEach(async () => {
    tmp = await tempDir('kzymy-writer-');
    for (const sub of ['tmp', 'new', 'cur']) await mkdir(path.join(tmp.dir, sub));
    const syncer = new DirSyncer(path.join(tmp.dir, 'new'));
    folder = { dir: tmp.dir, syncNew: () => syncer.sync() };
  });
  afterEach(async () => {
    await tmp.cleanup();
  });

  const ls = (sub: string) => readdir(path.join(tmp.dir, sub));

  it('dates the message by the wall clock, also after the system clock was stepped', async () => {
    await withClockStepped(3_600_000, async (now) => {
      const before = now();
      const w = await writeMessage(folder, Buffer.from('x'));
      expect(w.receivedAt).to.be.within(before, now());
      expect(timeFromName(w.name)).to.equal(w.receivedAt);
    });
  });

  it('puts the exact bytes, whole or streamed, under NAME,S=SIZE in new/ (0600), nothing in tmp/', async () => {
    const whole = randomBytes(70_000);
    const parts = Array.from({ length: 40 }, (_, i) => randomBytes(1 + i * 9_000));
    const streamed = Buffer.concat(parts);
    const before = Date.now();
    const a = await writeMessage(folder, whole);
    const b = await writeMessage(folder, (async function* () { yield* parts.map((p) => Buffer.from(p)); })());
    const c = await writeMessage(folder, Readable.from([Buffer.from('over '), Buffer.from('a Readable')]));
    const d = await writeMessage(folder, new Uint8Array(0));
    for (const [w, bytes] of [[a, whole], [b, streamed], [c, Buffer.from('over a Readable')], [d, Buffer.alloc(0)]] as const) {
      expect(w.size).to.equal(bytes.length);
      expect(sizeFromName(w.name)).to.equal(bytes.length);
      expect(w.receivedAt).to.equal(timeFromName(w.name));
      expect(w.receivedAt).to.be.within(before - 1000, Date.now() + 1000);
      const file = path.join(tmp.dir, 'new', w.name);
      expect((await readFile(file)).equals(bytes)).to.equal(true);
      expect((await stat(file)).mode & 0o777).to.equal(0o600);
    }
    expect(new Set([a.name, b.name, c.name, d.name]).size).to.equal(4);
    expect(await ls('tmp')).to.deep.equal([]);
    expect(await ls('cur')).to.deep.equal([]);
  });

  it('renames into new/ only after the file is fsynced, and resolves only after new/ is fsynced', async () => {
    const events: string[] = [];
    const probe = await open(path.join(tmp.dir, 'probe'), 'w');
    const proto = Object.getPrototypeOf(probe) as { sync: () => Promise<void> };
    await probe.close();
    const sync = proto.sync;
    proto.sync = async function (this: unknown) {
      events.push(`fsync, new/ holds ${readdirSync(path.join(tmp.dir, 'new')).length}`);
      await sync.call(this);
      events.push('fsync done');
    };
    try {
      const w = await writeMessage(
        { dir: tmp.dir, syncNew: async () => {
          events.push(`syncNew, new/ holds ${readdirSync(path.join(tmp.dir, 'new')).length}`);
          await new Promise((resolve) => setTimeout(resolve, 20));
          await folder.syncNew();
          events.push('syncNew done');
        } },
        (async function* () { yield Buffer.from('durable'); })(),
        { beforeRename: (size, name) => {
          events.push(`beforeRename ${size}, tmp/ holds ${readdirSync(path.join(tmp.dir, 'tmp')).join()}`);
          expect(name).to.match(/,S=7$/);
        } },
      );
      events.push('resolved');
      const unique = w.name.replace(/,S=7$/, '');
      expect(events).to.deep.equal([
        'fsync, new/ holds 0', // the file's own
        'fsync done',
        `beforeRename 7, tmp/ holds ${unique}`,
        'syncNew, new/ holds 1',
        'fsync, new/ holds 1', // the folder's, by the DirSyncer
        'fsync done',
        'syncNew done',
        'resolved',
      ]);
    } finally {
      proto.sync = sync;
    }
  });

  it('a source that fails midway, or a failing hook or fsync of new/, leaves nothing in tmp/ or new/', async () => {
    const boom = new Error('source broke');
    async function* broken(): AsyncGenerator<Buffer> {
      yield Buffer.alloc(300_000, 1);
      yield Buffer.alloc(300_000, 2);
      throw boom;
    }
    const failures = [
      writeMessage(folder, broken()),
      writeMessage(folder, Readable.from(broken())),
      writeMessage(folder, Buffer.from('x'), { beforeRename: () => Promise.reject(new Error('hook')) }),
      writeMessage(folder, broken(), { beforeRename: () => Promise.reject(new Error('hook')), beforeRenameDuringSync: true }),
      writeMessage(folder, Buffer.from('x'), { beforeWrite: () => { throw new Error('no room'); } }),
      writeMessage({ dir: tmp.dir, syncNew: () => Promise.reject(new Error('fsync of new/')) }, Buffer.from('taken back')),
      writeMessage(folder, Buffer.from('x'), { afterSync: () => { throw new Error('gone meanwhile'); } }),
    ];
    const got = await Promise.all(failures.map((p) => p.then(() => null, (err: unknown) => (err as Error).message)));
    expect(got).to.deep.equal(['source broke', 'source broke', 'hook', 'source broke', 'no room', 'fsync of new/', 'gone meanwhile']);
    expect(await ls('tmp')).to.deep.equal([]);
    expect(await ls('new')).to.deep.equal([]);
  });

  it('closes a streamed source the write gave up on, and stores nothing of a stream cut short', async () => {
    // The copy fails on its second chunk (no room): the generator is closed, the stream destroyed.
    let closed = false;
    async function* endless(): AsyncGenerator<Buffer> {
      try {
        for (;;) yield Buffer.alloc(300_000, 3);
      } finally {
        closed = true;
      }
    }
    let n = 0;
    const noRoom = { beforeWrite: () => { if (++n === 2) throw new Error('no room'); } };
    expect(await writeMessage(folder, endless(), noRoom).then(() => null, (e: unknown) => (e as Error).message)).to.equal('no room');
    expect(closed).to.equal(true);
    n = 0;
    const stream = Readable.from(endless());
    expect(await writeMessage(folder, stream, noRoom).then(() => null, (e: unknown) => (e as Error).message)).to.equal('no room');
    expect(stream.destroyed).to.equal(true);
    // A stream destroyed before its end, without an error: a premature close, not a short message.
    const cut = new Readable({ read() {} });
    cut.push(Buffer.alloc(1000, 4));
    setTimeout(() => cut.destroy(), 20);
    expect(await writeMessage(folder, cut).then(() => null, (e: unknown) => (e as NodeJS.ErrnoException).code)).to.equal('ERR_STREAM_PREMATURE_CLOSE');
    expect(await ls('tmp')).to.deep.equal([]);
    expect(await ls('new')).to.deep.equal([]);
  });

  it('an aborted signal stops the delivery before the rename, nothing left', async () => {
    const ac = new AbortController();
    const p = writeMessage(folder, Buffer.from('late'), { signal: ac.signal, beforeRename: () => ac.abort(new Error('stopped')) });
    const err = await p.then(() => null, (e: unknown) => e as Error);
    expect(err?.message).to.equal('stopped');
    expect(await ls('tmp')).to.deep.equal([]);
    expect(await ls('new')).to.deep.equal([]);
  });

  it('remakes a missing tmp/ once when asked, else fails with ENOENT', async () => {
    const { rm } = await import('node:fs/promises');
    await rm(path.join(tmp.dir, 'tmp'), { recursive: true });
    const err = await writeMessage(folder, Buffer.from('x')).then(() => null, (e: unknown) => e as NodeJS.ErrnoException);
    expect(err?.code).to.equal('ENOENT');
    let remade = 0;
    const w = await writeMessage(folder, Buffer.from('back'), {
      remake: async () => {
        remade++;
        await mkdir(path.join(tmp.dir, 'tmp'));
      },
    });
    expect(remade).to.equal(1);
    expect((await readFile(path.join(tmp.dir, 'new', w.name))).toString()).to.equal('back');
  });

  it('with wipe, zeroes each streamed chunk once written; a whole Buffer is left as it is', async () => {
    const chunks = [Buffer.alloc(1000, 7), Buffer.alloc(2000, 8)];
    const w = await writeMessage(folder, (async function* () { yield* chunks; })(), { wipe: true });
    expect(chunks.every((c) => c.every((b) => b === 0))).to.equal(true);
    const file = await readFile(path.join(tmp.dir, 'new', w.name));
    expect(file.equals(Buffer.concat([Buffer.alloc(1000, 7), Buffer.alloc(2000, 8)]))).to.equal(true);
    const whole = Buffer.alloc(500, 9);
    await writeMessage(folder, whole, { wipe: true });
    expect(whole.every((b) => b === 9)).to.equal(true);
  });
});
