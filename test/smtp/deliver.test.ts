// deliverMessage in process: all or nothing across recipients, the space ledger and the memory
// budget. Real keys (gpg), real Maildir folders, real openpgp; a source stream stands in for
// smtp-server's DATA stream.
import { expect } from 'chai';
import { mkdir, readdir, readFile } from 'node:fs/promises';
import path from 'node:path';
import { PassThrough } from 'node:stream';
import { loadConfig, type Config } from '../../src/config/index.js';
import { silentLogger } from '../../src/config/log.js';
import { MaildirStore, type DeliverOptions, type MessageInfo } from '../../src/maildir/index.js';
import { KeyCache } from '../../src/pgp/index.js';
import type { User } from '../../src/registry/index.js';
import type { Recipient } from '../../src/smtp/copies.js';
import { COPIES_AT_ONCE, deliverMessage, type IntakeDeps } from '../../src/smtp/intake.js';
import { MemoryBudget } from '../../src/smtp/memory.js';
import { SmtpReply } from '../../src/smtp/replies.js';
import { SpaceLedger } from '../../src/smtp/space.js';
import { tempDir } from '../helpers/env.js';
import { gpgDecryptPgpMime, makeGpgKey, requireGpg, type TestKey } from '../helpers/gpg.js';
import { marker, rawMessage } from '../helpers/mail.js';

/**
 * MOCK of a fault: a store whose deliver fails for one chosen user, either at once ("early",
 * while the other copies are still being written) or only after every other copy is stored
 * ("late"). A write error for one user alone cannot be caused for real on a shared file system.
 */
class FailingStore extends MaildirStore {
  failUser: string | null = null;
  when: 'early' | 'late' = 'early';
  others = 0;
  private storedOthers = 0;
  private waiters: Array<() => void> = [];

  override async deliver(user: string, content: Parameters<MaildirStore['deliver']>[1], opts?: DeliverOptions): Promise<MessageInfo> {
    if (user !== this.failUser) {
      const msg = await super.deliver(user, content, opts);
      this.storedOthers++;
      for (const w of this.waiters.splice(0)) w();
      return msg;
    }
    if (this.when === 'late') {
      // Consume the copy like a real write would, then wait for the others to be stored.
      for await (const _ of content as AsyncIterable<unknown>) void _;
      while (this.storedOthers < this.others && !opts?.signal?.aborted) await new Promise<void>((r) => this.waiters.push(r));
    } else {
      await new Promise((r) => setTimeout(r, 5));
    }
    throw Object.assign(new Error('injected write failure'), { code: 'EIO' });
  }
}

/** A real store that records how many copies are being written at the same time. */
class CountingStore extends MaildirStore {
  writing = 0;
  most = 0;
  override async deliver(user: string, content: Parameters<MaildirStore['deliver']>[1], opts?: DeliverOptions): Promise<MessageInfo> {
    this.most = Math.max(this.most, ++this.writing);
    try {
      return await super.deliver(user, content, opts);
    } finally {
      this.writing--;
    }
  }
}

function user(username: string, key: TestKey): User {
  return {
    username,
    fingerprint: key.fingerprint,
    keyId: `test-${key.fingerprint}`,
    keyExpiresAt: null,
    createdAt: new Date().toISOString(),
    disabled: false,
    catchAll: true,
    aliases: [],
    blocked: [],
    notices: [],
  } as unknown as User;
}

/** A stand-in for smtp-server's DATA stream: the message in chunks, a pause between them. */
function dataStream(msg: Buffer, chunk = 16 * 1024, onChunk?: (sent: number) => Promise<void> | void): PassThrough {
  const s = new PassThrough({ highWaterMark: 16 * 1024 });
  void (async () => {
    for (let o = 0; o < msg.length; o += chunk) {
      if (s.destroyed) return;
      if (!s.write(msg.subarray(o, o + chunk))) await new Promise((r) => s.once('drain', r));
      await onChunk?.(o + chunk);
      await new Promise((r) => setImmediate(r));
    }
    s.end();
  })();
  return s;
}

async function filesIn(dir: string): Promise<string[]> {
  try {
    return await readdir(dir);
  } catch {
    return [];
  }
}

/** Every file left in any user's new/ or tmp/. */
async function leftovers(root: string, users: string[]): Promise<string[]> {
  const out: string[] = [];
  for (const u of users) for (const sub of ['new', 'tmp', 'cur']) for (const f of await filesIn(path.join(root, u, sub))) out.push(`${u}/${sub}/${f}`);
  return out;
}

describe('deliverMessage in process: all or nothing, space ledger, memory budget', function () {
  let key: TestKey;
  let dir: { dir: string; cleanup: () => Promise<void> };
  let config: Config;

  before(async function () {
    requireGpg(this);
    key = await makeGpgKey('ed25519');
  });
  beforeEach(async function () {
    dir = await tempDir('kzymy-deliver-');
    const base = loadConfig({ cwd: dir.dir, env: { PATH: process.env.PATH, KZYMY_DATA_DIR: `${dir.dir}/data`, KZYMY_MAILDIR_ROOT: `${dir.dir}/maildirs`, KZYMY_TOR_MANAGE: '0', KZYMY_DOMAIN: 'kzymy.test' } });
    config = { ...base, limits: { ...base.limits, minFreeBytes: 0, memoryBufferBytes: 256 * 1024 } };
    await mkdir(config.maildirRoot, { mode: 0o700 }); // as the server's start does
  });
  afterEach(async function () {
    await dir.cleanup();
  });

  function setup(store: MaildirStore, limits: Partial<Config['limits']> = {}) {
    const cfg = { ...config, limits: { ...config.limits, ...limits } };
    const deps: IntakeDeps = {
      config: cfg,
      maildir: store,
      keys: new KeyCache(),
      registry: { publicKey: async () => key.publicArmored },
      logger: silentLogger,
      space: new SpaceLedger(cfg, store),
      memory: new MemoryBudget(cfg.limits.memoryBudgetBytes),
    };
    return deps;
  }
  const envelope = { mailFrom: 'sender@example.org', heloName: 'client.example.org', remoteAddress: '192.0.2.7', tls: false, id: 'T1' };
  const recipientsFor = (names: string[]): Recipient[] => names.map((n) => ({ user: user(n, key), address: `a@${n}.kzymy.test` }));

  /** Nothing in flight after the transaction: every reservation and lease was given back. */
  function expectSettled(deps: IntakeDeps, names: string[]): void {
    for (const n of names) expect((deps.space as SpaceLedger).inFlight(n), `bytes in flight for ${n}`).to.equal(0);
    expect(deps.memory.inUse, 'memory leased').to.equal(0);
  }

  for (const mode of ['memory', 'stream'] as const) {
    for (const count of [2, 5, 10]) {
      for (const when of ['early', 'late'] as const) {
        it(`${mode} path, ${count} recipients, one copy fails ${when === 'early' ? 'while the others are written' : 'after the others are stored'}: nothing is left`, async function () {
          const store = new FailingStore(config.maildirRoot);
          const names = Array.from({ length: count }, (_, i) => `u${i}`);
          for (const n of names) await store.ensureUser(n);
          // Early: the first copy fails (the others of the memory path have not all started yet);
          // late: the last one, once all the others are in new/.
          store.failUser = when === 'early' ? names[0]! : names[count - 1]!;
          store.when = when;
          store.others = count - 1;
          const deps = setup(store);
          const msg = rawMessage(marker(), { bodyBytes: mode === 'memory' ? 100_000 : 600_000 });
          let err: unknown = null;
          const r = await deliverMessage(deps, dataStream(msg), envelope, recipientsFor(names)).catch((e: unknown) => (err = e));
          expect(err, JSON.stringify(r)).to.be.instanceOf(Error);
          expect((err as NodeJS.ErrnoException).code).to.equal('EIO');
          expect(await leftovers(config.maildirRoot, names)).to.deep.equal([]);
          expectSettled(deps, names);
        });
      }
    }

    it(`${mode} path: every recipient gets a copy that decrypts, nothing stays in flight`, async function () {
      const store = new MaildirStore(config.maildirRoot);
      const names = ['ok1', 'ok2', 'ok3'];
      const deps = setup(store);
      const msg = rawMessage(marker(), { bodyBytes: mode === 'memory' ? 50_000 : 700_000 });
      const r = await deliverMessage(deps, dataStream(msg), envelope, recipientsFor(names));
      expect(r.mode).to.equal(mode);
      expect(r.stored).to.equal(3);
      for (const n of names) {
        const files = await filesIn(path.join(config.maildirRoot, n, 'new'));
        expect(files).to.have.length(1);
        const plain = await gpgDecryptPgpMime(key.gnupghome, await readFile(path.join(config.maildirRoot, n, 'new', files[0]!)));
        expect(plain.toString('latin1')).to.include(`Delivered-To: a@${n}.kzymy.test\r\n`);
        expect(plain.subarray(plain.length - msg.length).equals(msg)).to.equal(true);
      }
      expectSettled(deps, names);
    });
  }

  for (const when of ['while DATA arrives', 'while the copies are written'] as const) {
    it(`one recipient's account is deleted ${when} (real store): the transaction fails and no copy remains`, async function () {
      const store = new MaildirStore(config.maildirRoot);
      // Copies are made four at a time: the deleted account's copy is among the last ones.
      const names = ['keep1', 'keep2', 'keep3', 'keep4', 'keep5', 'gone'];
      for (const n of names) await store.ensureUser(n);
      const deps = setup(store);
      const msg = rawMessage(marker(), { bodyBytes: 2_000_000 });
      let removed = false;
      const remove = async () => {
        removed = true;
        await store.removeUser('gone');
      };
      const stream = dataStream(msg, 16 * 1024, async (sent) => {
        if (when === 'while DATA arrives' && !removed && sent > 1_000_000) await remove();
      });
      const watcher =
        when === 'while the copies are written'
          ? (async () => {
              while (!removed) {
                if ((await filesIn(path.join(config.maildirRoot, 'keep1', 'tmp'))).length > 0) await remove();
                else await new Promise((r) => setImmediate(r));
              }
            })()
          : Promise.resolve();
      let err: unknown = null;
      await deliverMessage(deps, stream, envelope, recipientsFor(names)).catch((e: unknown) => (err = e));
      removed = true;
      await watcher;
      expect(err).to.be.instanceOf(Error);
      expect(await leftovers(config.maildirRoot, names)).to.deep.equal([]);
      expect(await filesIn(path.join(config.maildirRoot, 'gone')), 'the deleted account stays deleted').to.deep.equal([]);
      expect((await readdir(config.maildirRoot)).filter((f) => f.startsWith('.')), 'no spool left').to.deep.equal([]);
      expectSettled(deps, names);
    });
  }

  for (const mode of ['memory', 'stream'] as const) {
    it(`${mode} path: a copy passing the quota while it is written is refused with 452 4.2.2 and nothing is left`, async function () {
      const store = new MaildirStore(config.maildirRoot);
      const names = ['q1', 'q2', 'q3'];
      // The ciphertext of this message is about 1.37x its size: over the quota of 250,000 bytes.
      const deps = setup(store, { quotaBytes: 250_000 });
      const msg = rawMessage(marker(), { bodyBytes: mode === 'memory' ? 200_000 : 400_000 });
      let err: unknown = null;
      await deliverMessage(deps, dataStream(msg), envelope, recipientsFor(names)).catch((e: unknown) => (err = e));
      expect(err).to.be.instanceOf(SmtpReply);
      expect((err as SmtpReply).message).to.match(/^4\.2\.2 /);
      expect((err as SmtpReply).responseCode).to.equal(452);
      expect(await leftovers(config.maildirRoot, names)).to.deep.equal([]);
      expectSettled(deps, names);
    });
  }

  for (const mode of ['memory', 'stream'] as const) {
    it(`${mode} path, 10 recipients: at most ${COPIES_AT_ONCE} copies are encrypted and written at a time`, async function () {
      const store = new CountingStore(config.maildirRoot);
      const names = Array.from({ length: 10 }, (_, i) => `c${i}`);
      const deps = setup(store);
      const r = await deliverMessage(deps, dataStream(rawMessage(marker(), { bodyBytes: mode === 'memory' ? 100_000 : 500_000 })), envelope, recipientsFor(names));
      expect(r.mode).to.equal(mode);
      expect(r.stored).to.equal(10);
      expect(store.most).to.be.at.least(2).and.at.most(COPIES_AT_ONCE);
      expectSettled(deps, names);
    });
  }

  it('two transactions to one user in parallel: the second is refused once both together pass the quota', async function () {
    const store = new MaildirStore(config.maildirRoot);
    const deps = setup(store, { quotaBytes: 1_200_000 });
    const msg = rawMessage(marker(), { bodyBytes: 600_000 }); // ~820 KB of ciphertext each
    const results = await Promise.allSettled([
      deliverMessage(deps, dataStream(msg), envelope, recipientsFor(['par'])),
      deliverMessage(deps, dataStream(msg), envelope, recipientsFor(['par'])),
    ]);
    const ok = results.filter((r) => r.status === 'fulfilled');
    const refused = results.filter((r): r is PromiseRejectedResult => r.status === 'rejected');
    expect(ok).to.have.length(1);
    expect(refused).to.have.length(1);
    expect((refused[0]!.reason as SmtpReply).message).to.match(/^4\.2\.2 /);
    expect(await filesIn(path.join(config.maildirRoot, 'par', 'tmp'))).to.deep.equal([]);
    expect((await store.usage('par')).bytes).to.be.at.most(1_200_000);
    expectSettled(deps, ['par']);
  });

  it('a transaction waits, without reading its data, while the memory budget is spent', async function () {
    const store = new MaildirStore(config.maildirRoot);
    const deps = setup(store, { memoryBudgetBytes: 8 * 1024 * 1024 });
    const hog = await deps.memory.acquire(8 * 1024 * 1024);
    const msg = rawMessage(marker(), { bodyBytes: 100_000 });
    let read = 0;
    const stream = dataStream(msg, 16 * 1024, (sent) => void (read = sent));
    let done = false;
    const p = deliverMessage(deps, stream, envelope, recipientsFor(['wait'])).finally(() => (done = true));
    await new Promise((r) => setTimeout(r, 300));
    expect(done).to.equal(false);
    // Only what fits the source's own buffer was written into it; nothing was consumed.
    expect(read).to.be.at.most(64 * 1024);
    expect(await filesIn(path.join(config.maildirRoot, 'wait', 'tmp'))).to.deep.equal([]);
    hog.release();
    const r = await p;
    expect(r.stored).to.equal(1);
    expectSettled(deps, ['wait']);
  });

  it('a transaction that cannot get memory within limits.memoryWaitMs is deferred (451 4.3.2) and leaves nothing', async function () {
    // A sending MTA blocked on writing its data gives up after a few minutes: the wait is
    // bounded so that it gets a temporary refusal in time and retries later.
    const store = new MaildirStore(config.maildirRoot);
    const deps = setup(store, { memoryBudgetBytes: 8 * 1024 * 1024, memoryWaitMs: 300 });
    const hog = await deps.memory.acquire(8 * 1024 * 1024);
    try {
      const err = await deliverMessage(deps, dataStream(rawMessage(marker(), { bodyBytes: 100_000 })), envelope, recipientsFor(['busy'])).then(
        () => null,
        (e: unknown) => e,
      );
      expect(err).to.be.instanceOf(SmtpReply);
      expect((err as SmtpReply).responseCode).to.equal(451);
      expect((err as SmtpReply).enhanced).to.equal('4.3.2');
      expect(await leftovers(config.maildirRoot, ['busy'])).to.deep.equal([]);
      expect(deps.memory.inUse, 'only the hog holds memory').to.equal(8 * 1024 * 1024);
      for (const n of ['busy']) expect((deps.space as SpaceLedger).inFlight(n)).to.equal(0);
    } finally {
      hog.release();
    }
  });
});
