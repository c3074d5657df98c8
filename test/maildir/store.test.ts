// MaildirStore against real files in temporary folders (kzymy's own Maildir code).
import { expect } from 'chai';
import { execFile, spawn } from 'node:child_process';
import { promisify } from 'node:util';
import { mkdir, readdir, readFile, rm, stat, utimes, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { PassThrough, Readable } from 'node:stream';
import { MaildirError, MaildirStore } from '../../src/maildir/index.js';
import { HOST } from '../../src/maildir/names.js';
import { TMP_ABANDONED_MS } from '../../src/maildir/removal.js';
import { tempDir } from '../helpers/env.js';
import { collect } from '../helpers/streams.js';

async function rejection(p: Promise<unknown>): Promise<unknown> {
  try {
    await p;
  } catch (err) {
    return err;
  }
  throw new Error('expected a rejection');
}

async function expectMaildirError(p: Promise<unknown>, code: string): Promise<MaildirError> {
  const err = await rejection(p);
  expect(err).to.be.instanceOf(MaildirError);
  expect((err as MaildirError).code).to.equal(code);
  // One human sentence, no stack text or paths.
  expect((err as MaildirError).message).to.match(/^[A-Z][^\n/]*\.$/);
  return err as MaildirError;
}

/** A Readable that yields `good` bytes, then fails. */
function failingReadable(good: number): Readable {
  let sent = false;
  return new Readable({
    read() {
      if (!sent) {
        sent = true;
        this.push(Buffer.alloc(good, 0x61));
      } else {
        setImmediate(() => this.destroy(new Error('source broke midway')));
      }
    },
  });
}

describe('MaildirStore', () => {
  let root: string;
  let cleanup: () => Promise<void>;
  let store: MaildirStore;

  beforeEach(async () => {
    const t = await tempDir('kzymy-maildir-');
    root = path.join(t.dir, 'maildirs');
    cleanup = t.cleanup;
    store = new MaildirStore(root);
  });

  afterEach(async () => {
    await cleanup();
  });

  const files = (user: string, sub: string) => readdir(path.join(root, user, sub));

  describe('deliver', () => {
    it('creates folders 0700 and files 0600 even under a restrictive umask', async function () {
      this.timeout(60_000);
      // 0277 would turn a plain mkdir 0700 into 0500 and open 0600 into 0400. The store reads
      // its process's umask once, as a server started under it would: so a process of its own.
      const script = `import { MaildirStore } from './src/maildir/index.ts';
        const s = new MaildirStore(process.argv[1]);
        process.stdout.write((await s.deliver('alice', Buffer.from('hello\\r\\n'))).id);`;
      const ROOT = path.resolve(import.meta.dirname, '..', '..');
      const r = await promisify(execFile)('sh', ['-c', 'umask 0277 && exec "$0" --import tsx --input-type=module -e "$1" "$2"', process.execPath, script, root], { cwd: ROOT });
      const id = r.stdout.trim();
      for (const dir of [root, path.join(root, 'alice'), ...['tmp', 'new', 'cur'].map((s) => path.join(root, 'alice', s))]) {
        const st = await stat(dir);
        expect(st.isDirectory(), dir).to.equal(true);
        expect(st.mode & 0o777, dir).to.equal(0o700);
      }
      const st = await stat(path.join(root, 'alice', 'new', id));
      expect(st.mode & 0o777).to.equal(0o600);
    });

    it('delivers 0600 files into a maildir that already exists', async () => {
      await store.ensureUser('bob');
      const { id } = await store.deliver('bob', new Uint8Array([1, 2, 3]));
      expect((await stat(path.join(root, 'bob', 'new', id))).mode & 0o777).to.equal(0o600);
    });

    it('names files SECONDS.M..P..Q..R...HOST,S=SIZE in new/ and leaves tmp/ empty', async () => {
      const before = Date.now();
      const info = await store.deliver('alice', Buffer.from('12345'));
      expect(info.id).to.match(/^\d+\.M\d+P\d+Q\d+R[0-9a-f]+\..+,S=5$/);
      expect(info.size).to.equal(5);
      expect(info.receivedAt.getTime()).to.be.within(before - 1000, Date.now() + 1000);
      expect(MaildirStore.isValidId(info.id)).to.equal(true);
      expect(await files('alice', 'new')).to.deep.equal([info.id]);
      expect(await files('alice', 'tmp')).to.deep.equal([]);
      expect(await readFile(path.join(root, 'alice', 'new', info.id), 'utf8')).to.equal('12345');
    });

    it('accepts a Readable, an async iterable and an empty message', async () => {
      const a = await store.deliver('alice', Readable.from([Buffer.from('one '), Buffer.from('two')]));
      async function* gen(): AsyncIterable<Uint8Array> {
        yield new TextEncoder().encode('three ');
        yield new TextEncoder().encode('four');
      }
      const b = await store.deliver('alice', gen());
      const c = await store.deliver('alice', Buffer.alloc(0));
      expect([a.size, b.size, c.size]).to.deep.equal([7, 10, 0]);
      expect(await collect((await store.read('alice', a.id)).stream)).to.deep.equal(Buffer.from('one two'));
      expect(await collect((await store.read('alice', b.id)).stream)).to.deep.equal(Buffer.from('three four'));
      expect(c.id.endsWith(',S=0')).to.equal(true);
    });

    it('streams a large message byte for byte', async () => {
      const chunk = Buffer.alloc(256 * 1024);
      for (let i = 0; i < chunk.length; i++) chunk[i] = (i * 7) & 0xff;
      async function* big(): AsyncIterable<Uint8Array> {
        for (let i = 0; i < 32; i++) yield chunk; // 8 MiB
      }
      const info = await store.deliver('alice', big());
      expect(info.size).to.equal(32 * chunk.length);
      const back = await readFile(path.join(root, 'alice', 'new', info.id));
      expect(back.length).to.equal(32 * chunk.length);
      expect(back.subarray(5 * chunk.length, 6 * chunk.length).equals(chunk)).to.equal(true);
    });

    it('gives 2,000 concurrent deliveries 2,000 distinct names', async () => {
      const infos = await Promise.all(
        Array.from({ length: 2000 }, (_, i) => store.deliver('crowd', Buffer.from(`message ${i}\r\n`))),
      );
      const ids = new Set(infos.map((i) => i.id));
      expect(ids.size).to.equal(2000);
      const onDisk = await files('crowd', 'new');
      expect(onDisk.length).to.equal(2000);
      expect(new Set(onDisk)).to.deep.equal(ids);
      expect(await files('crowd', 'tmp')).to.deep.equal([]);
      const listed = await store.list('crowd');
      expect(listed.length).to.equal(2000);
      expect((await store.usage('crowd')).count).to.equal(2000);
    });

    it('rejects with the source error and leaves no file when a Readable fails midway', async () => {
      await store.ensureUser('alice');
      const err = await rejection(store.deliver('alice', failingReadable(100_000)));
      expect((err as Error).message).to.equal('source broke midway');
      expect(await files('alice', 'tmp')).to.deep.equal([]);
      expect(await files('alice', 'new')).to.deep.equal([]);
      expect((await store.usage('alice')).count).to.equal(0);
    });

    it('rejects and leaves no file when an async iterable throws', async () => {
      async function* broken(): AsyncIterable<Uint8Array> {
        yield Buffer.alloc(70_000, 0x62);
        throw new Error('generator broke');
      }
      const err = await rejection(store.deliver('alice', broken()));
      expect((err as Error).message).to.equal('generator broke');
      expect(await files('alice', 'tmp')).to.deep.equal([]);
      expect(await files('alice', 'new')).to.deep.equal([]);
      // The store keeps working afterwards.
      await store.deliver('alice', Buffer.from('after'));
      expect((await files('alice', 'new')).length).to.equal(1);
    });

    it('rejects cleanly when the user folder is a file, writing nothing', async () => {
      await mkdir(root, { mode: 0o700 });
      await writeFile(path.join(root, 'carol'), 'not a maildir');
      const err = await rejection(store.deliver('carol', Buffer.from('x')));
      expect(err).to.be.instanceOf(Error);
      expect(err).to.not.be.instanceOf(MaildirError);
      expect(await readdir(root)).to.deep.equal(['carol']);
      expect(await readFile(path.join(root, 'carol'), 'utf8')).to.equal('not a maildir');
    });

    it('rejects cleanly when new/ is a file, leaving nothing in tmp/', async () => {
      await store.ensureUser('dave');
      await rm(path.join(root, 'dave', 'new'), { recursive: true });
      await writeFile(path.join(root, 'dave', 'new'), '');
      await rejection(store.deliver('dave', Buffer.from('x')));
      expect(await files('dave', 'tmp')).to.deep.equal([]);
    });

    it('remakes the folders when another process removed the maildir', async () => {
      await store.deliver('erin', Buffer.from('one'));
      await rm(path.join(root, 'erin'), { recursive: true });
      const info = await store.deliver('erin', Buffer.from('two'));
      expect(await files('erin', 'new')).to.deep.equal([info.id]);
    });

    it('refuses a bad username with bad-user and creates nothing', async () => {
      for (const user of ['', 'Alice', '../x', 'a/b', '-a', 'a'.repeat(64)]) {
        await expectMaildirError(store.deliver(user, Buffer.from('x')), 'bad-user');
        await expectMaildirError(store.list(user), 'bad-user');
        await expectMaildirError(store.usage(user), 'bad-user');
        await expectMaildirError(store.removeUser(user), 'bad-user');
      }
      expect(await rejection(stat(root))).to.have.property('code', 'ENOENT');
    });
  });

  describe('list, read, remove', () => {
    it('round-trips: deliver, list, read, remove', async () => {
      const a = await store.deliver('alice', Buffer.from('first'));
      const b = await store.deliver('alice', Buffer.from('second!'));
      const listed = await store.list('alice');
      expect(listed.map((m) => m.id).sort()).to.deep.equal([a.id, b.id].sort());
      expect(listed.find((m) => m.id === b.id)?.size).to.equal(7);

      const { info, stream } = await store.read('alice', a.id);
      expect(info.id).to.equal(a.id);
      expect(info.size).to.equal(5);
      expect(info.receivedAt.getTime()).to.equal(a.receivedAt.getTime());
      expect((await collect(stream)).toString()).to.equal('first');

      await store.remove('alice', a.id);
      expect((await store.list('alice')).map((m) => m.id)).to.deep.equal([b.id]);
      await expectMaildirError(store.read('alice', a.id), 'not-found');
      await expectMaildirError(store.remove('alice', a.id), 'not-found');
    });

    it('lists oldest first', async () => {
      await store.ensureUser('alice');
      await writeFile(path.join(root, 'alice', 'new', '1600000300.M1P1Q1R0.h,S=1'), 'c');
      await writeFile(path.join(root, 'alice', 'new', '1600000100.M1P1Q1R0.h,S=1'), 'a');
      await writeFile(path.join(root, 'alice', 'cur', '1600000200.M1P1Q1R0.h,S=1:2,S'), 'b');
      expect((await store.list('alice')).map((m) => m.receivedAt.getTime() / 1000)).to.deep.equal([
        1600000100, 1600000200, 1600000300,
      ]);
    });

    it('lists and reads cur/ messages with :2,FLAGS and names without ,S=', async () => {
      await store.ensureUser('alice');
      const flagged = '1700000000.M1P1Q1R00.otherhost,S=4:2,S';
      const plain = 'legacy-message';
      await writeFile(path.join(root, 'alice', 'cur', flagged), 'flag');
      await writeFile(path.join(root, 'alice', 'new', plain), 'no size field');
      await writeFile(path.join(root, 'alice', 'new', '.hidden'), 'ignored');
      const listed = await store.list('alice');
      const byId = new Map(listed.map((m) => [m.id, m]));
      expect([...byId.keys()].sort()).to.deep.equal([flagged, plain].sort());
      expect(byId.get(flagged)?.receivedAt.getTime()).to.equal(1_700_000_000_000);
      expect(byId.get(plain)?.size).to.equal(13);
      expect((await collect((await store.read('alice', flagged)).stream)).toString()).to.equal('flag');
      const again = await store.read('alice', plain);
      again.stream.destroy();
      expect(again.info.size).to.equal(13);
      await store.remove('alice', flagged);
      expect(await files('alice', 'cur')).to.deep.equal([]);
    });

    it('finds a message a MUA moved from new/ to cur/ by its base name', async () => {
      const { id } = await store.deliver('alice', Buffer.from('moved'));
      const { rename } = await import('node:fs/promises');
      await rename(path.join(root, 'alice', 'new', id), path.join(root, 'alice', 'cur', `${id}:2,S`));
      const { info, stream } = await store.read('alice', id);
      expect(info.id).to.equal(`${id}:2,S`);
      expect((await collect(stream)).toString()).to.equal('moved');
      await store.remove('alice', id);
      expect(await store.list('alice')).to.deep.equal([]);
    });

    it('readUpTo gives a message up to the limit whole, a larger one as a stream, the same bytes', async () => {
      const small = await store.deliver('alice', Buffer.alloc(1000, 'a'));
      const big = await store.deliver('alice', Buffer.alloc(5000, 'b'));
      const s = await store.readUpTo('alice', small.id, 1000);
      expect(Buffer.isBuffer(s.body)).to.equal(true);
      expect(s.body).to.deep.equal(Buffer.alloc(1000, 'a'));
      expect(s.info.size).to.equal(1000);
      const b = await store.readUpTo('alice', big.id, 1000);
      expect(Buffer.isBuffer(b.body)).to.equal(false);
      expect(await collect(b.body as AsyncIterable<Buffer>)).to.deep.equal(Buffer.alloc(5000, 'b'));
      // A second writer (a MUA) moved it to cur/ meanwhile: still found, still whole.
      const { rename } = await import('node:fs/promises');
      await rename(path.join(root, 'alice', 'new', small.id), path.join(root, 'alice', 'cur', `${small.id}:2,S`));
      const moved = await store.readUpTo('alice', small.id, 1000);
      expect(moved.body).to.deep.equal(Buffer.alloc(1000, 'a'));
      await expectMaildirError(store.readUpTo('alice', '1.M1P1Q1R0.h,S=1', 1000), 'not-found');
    });

    it('removeMany takes messages from new/ and cur/ alike and keeps the usage it caches exact', async () => {
      const a = await store.deliver('alice', Buffer.alloc(300, 'a'));
      const b = await store.deliver('alice', Buffer.alloc(400, 'b'));
      const c = await store.deliver('alice', Buffer.alloc(500, 'c'));
      expect((await store.usage('alice')).bytes).to.equal(1200);
      const { rename } = await import('node:fs/promises');
      await rename(path.join(root, 'alice', 'new', b.id), path.join(root, 'alice', 'cur', `${b.id}:2,S`));
      const r = await store.removeMany('alice', [a.id, b.id, '1.M1P1Q1R0.h,S=1']);
      expect(r.removed).to.deep.equal([a.id, `${b.id}:2,S`]);
      expect(r.missing).to.deep.equal(['1.M1P1Q1R0.h,S=1']);
      expect(await store.usage('alice')).to.include({ count: 1, bytes: 500 });
      expect((await store.list('alice')).map((m) => m.id)).to.deep.equal([c.id]);
    });

    it('refuses ids with /, .., NUL or empty with bad-id, touching nothing', async () => {
      const { id } = await store.deliver('alice', Buffer.from('keep me'));
      await writeFile(path.join(root, 'alice', 'secret'), 'outside new/ and cur/');
      for (const bad of ['', '/', '..', '.', '../secret', '../../alice/secret', 'a/b', `${id}\0`, '\0', 'x'.repeat(256)]) {
        await expectMaildirError(store.read('alice', bad), 'bad-id');
        await expectMaildirError(store.remove('alice', bad), 'bad-id');
      }
      expect(await files('alice', 'new')).to.deep.equal([id]);
      expect(await readFile(path.join(root, 'alice', 'secret'), 'utf8')).to.equal('outside new/ and cur/');
    });

    it('lists nothing for a user without a maildir and says not-found on read', async () => {
      expect(await store.list('nobody')).to.deep.equal([]);
      await expectMaildirError(store.read('nobody', '1.M1P1Q1R0.h'), 'not-found');
      await expectMaildirError(store.remove('nobody', '1.M1P1Q1R0.h'), 'not-found');
    });
  });

  describe('usage', () => {
    it('counts messages, bytes and the oldest, and follows deliver and remove', async () => {
      expect(await store.usage('alice')).to.deep.equal({ count: 0, bytes: 0, oldest: null });
      const a = await store.deliver('alice', Buffer.alloc(100));
      const b = await store.deliver('alice', Buffer.alloc(250));
      expect(await store.usage('alice')).to.deep.equal({ count: 2, bytes: 350, oldest: a.receivedAt });
      await store.remove('alice', a.id);
      expect(await store.usage('alice')).to.deep.equal({ count: 1, bytes: 250, oldest: b.receivedAt });
      await store.remove('alice', b.id);
      expect(await store.usage('alice')).to.deep.equal({ count: 0, bytes: 0, oldest: null });
    });

    it('counts messages without ,S= by their real size', async () => {
      await store.ensureUser('alice');
      await writeFile(path.join(root, 'alice', 'cur', 'legacy:2,S'), 'twelve bytes');
      const old = new Date('2020-01-01T00:00:00Z');
      await utimes(path.join(root, 'alice', 'cur', 'legacy:2,S'), old, old);
      expect(await store.usage('alice')).to.deep.equal({ count: 1, bytes: 12, oldest: old });
    });

    it('rescans once the cached figures are older than the time to live', async () => {
      let clock = 1_000_000;
      const mine = new MaildirStore(root, { now: () => clock });
      const other = new MaildirStore(root); // stands in for `kzymy-server purge` in another process
      const a = await mine.deliver('alice', Buffer.alloc(10));
      await mine.deliver('alice', Buffer.alloc(20));
      expect((await mine.usage('alice')).count).to.equal(2);
      await other.remove('alice', a.id);
      clock += 29_000;
      expect((await mine.usage('alice')).count).to.equal(2); // still the cached figure
      clock += 1_000;
      expect(await mine.usage('alice')).to.include({ count: 1, bytes: 20 });
    });

    it('stays exact when deliveries and removals race the first scan', async () => {
      const seed = await Promise.all(Array.from({ length: 30 }, () => store.deliver('alice', Buffer.alloc(3))));
      seed.sort((a, b) => a.receivedAt.getTime() - b.receivedAt.getTime());
      // Names without ,S= cost the scan a stat each, so it runs a while. Whichever way
      // the deliveries and removals below interleave with it (the test cannot force
      // one), the cached figure must end up equal to a fresh scan.
      await Promise.all(
        Array.from({ length: 500 }, (_, i) => writeFile(path.join(root, 'alice', 'cur', `legacy-${i}:2,S`), 'xy')),
      );
      const mine = new MaildirStore(root);
      await mine.ensureUser('alice');
      // Deliveries that have opened their tmp/ file and wait for their last bytes.
      const sources = Array.from({ length: 100 }, () => new PassThrough());
      const work: Promise<unknown>[] = sources.map((s) => mine.deliver('alice', s));
      for (const s of sources) s.write('x');
      await new Promise((resolve) => setTimeout(resolve, 50));
      work.push(mine.usage('alice')); // the cache is empty: this scans
      for (const s of sources) s.end();
      // Never the oldest: removing it would drop the cache and hide a miscount.
      for (const m of seed.slice(1, 21)) work.push(mine.remove('alice', m.id));
      await Promise.all(work);
      const truth = await new MaildirStore(root).usage('alice');
      expect(truth).to.include({ count: 610, bytes: 10 * 3 + 1000 + 100 });
      expect(await mine.usage('alice')).to.deep.equal(truth); // the cached figure
    });

    it("counts another process's report once when it arrives after a scan already saw the change", async () => {
      // An SMTP worker renames (or unlinks) first and reports after; the server process may
      // scan in between, after a worker died, and then hear the report.
      const mine = new MaildirStore(root);
      const worker = new MaildirStore(root);
      const kept = await mine.deliver('alice', Buffer.alloc(7));
      const a = await worker.deliver('alice', Buffer.alloc(10));
      const b = await worker.deliver('alice', Buffer.alloc(20));
      mine.forgetUsage('alice');
      expect(await mine.usage('alice')).to.include({ count: 3, bytes: 37 }); // the scan sees a and b
      mine.noteChange({ kind: 'added', user: 'alice', id: a.id, size: a.size, receivedAt: a.receivedAt.getTime() });
      mine.noteChange({ kind: 'added', user: 'alice', id: a.id, size: a.size, receivedAt: a.receivedAt.getTime() });
      expect(await mine.usage('alice')).to.include({ count: 3, bytes: 37 });
      await worker.remove('alice', b.id);
      mine.forgetUsage('alice');
      expect(await mine.usage('alice')).to.include({ count: 2, bytes: 17 }); // the scan misses b
      mine.noteChange({ kind: 'removed', user: 'alice', id: b.id, size: b.size, receivedAt: b.receivedAt.getTime() });
      expect(await mine.usage('alice')).to.include({ count: 2, bytes: 17 });
      // A message moved to cur/ with flags is the same message.
      mine.noteChange({ kind: 'added', user: 'alice', id: `${kept.id}:2,S`, size: kept.size, receivedAt: kept.receivedAt.getTime() });
      expect(await mine.usage('alice')).to.deep.equal(await new MaildirStore(root).usage('alice'));
    });
  });

  describe('users, cleanTmp, purge', () => {
    it('never brings back a removed user: a delivery in flight fails, later ones too, until ensureUser', async () => {
      await store.ensureUser('carol');
      const source = new PassThrough();
      const inFlight = store.deliver('carol', source);
      source.write(Buffer.alloc(64 * 1024, 'c'));
      await new Promise((r) => setTimeout(r, 20));
      await store.removeUser('carol');
      source.end(Buffer.alloc(1024, 'c'));
      const err = await inFlight.then(
        () => null,
        (e: unknown) => e,
      );
      expect(err).to.be.instanceOf(Error);
      const later = await store.deliver('carol', Buffer.from('x')).then(
        () => null,
        (e: unknown) => e,
      );
      expect(later).to.be.instanceOf(MaildirError).with.property('code', 'not-found');
      expect(await store.listUsers()).to.not.include('carol');
      await store.ensureUser('carol');
      await store.deliver('carol', Buffer.from('x'));
      expect(await files('carol', 'new')).to.have.length(1);
    });

    it('lists users whose folder names are valid, and removes a user entirely', async () => {
      await store.deliver('alice', Buffer.from('a'));
      await store.ensureUser('bob');
      await mkdir(path.join(root, 'Not-Valid'));
      await writeFile(path.join(root, 'plainfile'), '');
      expect(await store.listUsers()).to.deep.equal(['alice', 'bob']);
      await store.removeUser('alice');
      expect(await store.listUsers()).to.deep.equal(['bob']);
      expect(await store.usage('alice')).to.deep.equal({ count: 0, bytes: 0, oldest: null });
      await store.removeUser('alice'); // a second time is fine
      expect(await new MaildirStore(path.join(root, 'missing')).listUsers()).to.deep.equal([]);
    });

    it('cleanTmp at start deletes the tmp/ files of writers on this host that are gone, and counts them, leaving new/ alone', async () => {
      const kept = await store.deliver('alice', Buffer.from('kept'));
      await store.ensureUser('bob');
      // pid 4194305 is above Linux's highest pid: no process has it.
      await writeFile(path.join(root, 'alice', 'tmp', `1.M1P4194305Q1R0.${HOST}`), 'half a message');
      await writeFile(path.join(root, 'alice', 'tmp', `2.M1P4194305Q2R0.${HOST}`), 'another half');
      await writeFile(path.join(root, 'bob', 'tmp', `3.M1P${process.pid}Q1R0.${HOST}`), 'x'); // this process, just started
      expect(await store.cleanTmp()).to.equal(3);
      expect(await files('alice', 'tmp')).to.deep.equal([]);
      expect(await files('bob', 'tmp')).to.deep.equal([]);
      expect(await files('alice', 'new')).to.deep.equal([kept.id]);
      expect(await store.cleanTmp()).to.equal(0);
    });

    it("cleanTmp at start leaves another running process's file, and another host's, until maildir(5)'s 36 hours have passed", async () => {
      await store.ensureUser('alice');
      const tmp = path.join(root, 'alice', 'tmp');
      const sibling = spawn('sleep', ['30'], { stdio: 'ignore' }); // another node on this host, writing
      try {
        const live = `1.M1P${sibling.pid}Q1R0.${HOST}`;
        const elsewhere = '2.M1P9Q1R0.other-node.example';
        const foreign = 'not-a-kzymy-name';
        const old = '4.M1P9Q1R0.dead-node.example';
        for (const n of [live, elsewhere, foreign, old]) await writeFile(path.join(tmp, n), 'in flight');
        const longAgo = new Date(Date.now() - TMP_ABANDONED_MS - 60_000);
        await utimes(path.join(tmp, old), longAgo, longAgo);
        expect(await store.cleanTmp()).to.equal(1);
        expect((await files('alice', 'tmp')).sort()).to.deep.equal([live, elsewhere, foreign].sort());
      } finally {
        sibling.kill('SIGKILL');
      }
    });

    it('purges messages received before the limit, by name time or else mtime', async () => {
      const fresh = await store.deliver('alice', Buffer.from('fresh'));
      await store.deliver('bob', Buffer.from('fresh too'));
      const oldByName = '1000000000.M1P1Q1R00.h,S=7';
      await writeFile(path.join(root, 'alice', 'new', oldByName), 'old one');
      await writeFile(path.join(root, 'alice', 'cur', 'no-time-in-name:2,S'), 'old by mtime');
      const past = new Date(Date.now() - 40 * 86_400_000);
      await utimes(path.join(root, 'alice', 'cur', 'no-time-in-name:2,S'), past, past);
      // A name that says "recent" wins over an old mtime.
      const recentName = `${Math.floor(Date.now() / 1000)}.M1P1Q1R00.h,S=3`;
      await writeFile(path.join(root, 'bob', 'new', recentName), 'new');
      await utimes(path.join(root, 'bob', 'new', recentName), past, past);

      expect((await store.usage('alice')).count).to.equal(3);
      const result = await store.purge(new Date(Date.now() - 30 * 86_400_000));
      expect(result).to.deep.equal({ count: 2, bytes: 7 + 12 });
      expect((await store.list('alice')).map((m) => m.id)).to.deep.equal([fresh.id]);
      expect((await store.list('bob')).length).to.equal(2);
      expect(await store.usage('alice')).to.deep.equal({ count: 1, bytes: 5, oldest: fresh.receivedAt });
      expect(await store.purge(new Date(Date.now() - 30 * 86_400_000))).to.deep.equal({ count: 0, bytes: 0 });
    });
  });
});
