// The embedded registry engine: lowdb documents plus a journal, in DATA_DIR/registry/.
//
//   snapshot.json     lowdb document: { version, generation, users } (one user a line)
//   journal.N         the changes since that snapshot (JSON text sequence, ./journal.ts)
//   keys/SHA256.asc   each stored public key, by the SHA-256 of its armor, written once
//
// The layout and why: see the comment at the top of ./index.ts.
import { Low, type Adapter } from 'lowdb';
import { mkdir, open, readFile, readdir, rename, rm, stat, unlink, utimes, type FileHandle } from 'node:fs/promises';
import { watch, type FSWatcher } from 'node:fs';
import { createHash, randomBytes } from 'node:crypto';
import path from 'node:path';
import { setImmediate as yieldNow } from 'node:timers/promises';
import type { Logger } from '../config/log.js';
import { RegistryError, type NewUser, type Registry, type User } from './types.js';
import { State, adoptUser, apply, asRecord, asUser, type JournalRecord, type Op, type Outcome } from './ops.js';
import { frame, parse, readFrom } from './journal.js';
import { appendAll, fsyncPath } from '../config/durable.js';
import { asWriteError, writeRegistryFile } from './files.js';
import { normalizeLocalPart, randomUsername } from './names.js';

/** How often a process looks for changes made by others, at the latest (fs.watch usually tells sooner). */
export const REFRESH_MS = 1000;
/** A journal is folded into a new snapshot once it is this big, or half the snapshot's size if that is more. */
const COMPACT_MIN_BYTES = 4 * 1024 * 1024;
/** Unreferenced key files older than this are removed at compaction (younger ones may belong to a signup in flight). */
const KEY_GRACE_MS = 3600_000;

interface Snapshot {
  version: 2;
  generation: number;
  users: User[];
}

export interface OpenOptions {
  dataDir: string;
  logger?: Logger;
  /** Fold the journal into new snapshots when it grows (long-running processes: the server). */
  compact?: boolean;
  /** Follow other processes' changes in the background (the server); otherwise `refresh()` does. */
  follow?: boolean;
  /** Called before an empty registry is created; may throw to refuse (Maildirs that hold users). */
  beforeCreate?: () => Promise<void>;
  /** Compaction threshold in bytes (tests). */
  compactBytes?: number;
}

const sha256 = (s: string) => createHash('sha256').update(s, 'utf8').digest('hex');
const errno = (err: unknown) => (err as NodeJS.ErrnoException).code;
const exists = (p: string) =>
  stat(p).then(
    () => true,
    (err) => (errno(err) === 'ENOENT' ? false : Promise.reject(err)),
  );

function damaged(file: string, what: string, restore = 'the registry folder'): RegistryError {
  return new RegistryError(
    'damaged',
    `The registry file ${file} ${what}. kzymy will not start on a damaged registry (senders would get permanent bounces): ` +
      `restore ${restore} from your backup, then start again.`,
  );
}

/**
 * lowdb adapter for snapshot.json. It writes like a mail server must (temporary file,
 * fsync, rename, fsync of the folder) and in pieces, yielding between them, so that a
 * 100,000-user snapshot never stalls the event loop. Each user sits on a line of its own.
 */
class SnapshotFile implements Adapter<Snapshot> {
  bytes = 0;
  constructor(readonly file: string) {}

  async read(): Promise<Snapshot | null> {
    let text: string;
    try {
      text = await readFile(this.file, 'utf8');
    } catch (err) {
      if (errno(err) === 'ENOENT') return null;
      throw err;
    }
    this.bytes = Buffer.byteLength(text);
    let data: unknown;
    try {
      data = JSON.parse(text);
    } catch {
      throw damaged(this.file, 'is not valid JSON');
    }
    const d = data as Partial<Snapshot> | null;
    if (!d || d.version !== 2 || !Number.isSafeInteger(d.generation) || !Array.isArray(d.users)) {
      throw damaged(this.file, 'is not a kzymy registry snapshot');
    }
    return d as Snapshot;
  }

  async write(data: Snapshot): Promise<void> {
    let bytes = 0;
    await writeRegistryFile(this.file, async (fh) => {
      const head = `{\n"version": ${data.version},\n"generation": ${data.generation},\n"users": [`;
      let piece = head;
      for (let i = 0; i < data.users.length; i++) {
        piece += `${i ? ',' : ''}\n${JSON.stringify(data.users[i])}`;
        if (piece.length >= 256 * 1024) {
          bytes += Buffer.byteLength(piece);
          await fh.write(piece);
          piece = '';
          await yieldNow();
        }
      }
      piece += '\n]\n}\n';
      bytes += Buffer.byteLength(piece);
      await fh.write(piece);
    });
    this.bytes = bytes;
  }
}

/** A promise-chain mutex: one holder at a time, in arrival order. */
class Mutex {
  private tail: Promise<unknown> = Promise.resolve();
  run<T>(fn: () => Promise<T>): Promise<T> {
    const run = this.tail.then(fn);
    this.tail = run.catch(() => undefined);
    return run;
  }
}

type Waiter = { resolve: (o: Outcome | 'sealed') => void };

const journalName = (gen: number) => `journal.${gen}`;

export class LowdbRegistry implements Registry {
  readonly location: string;
  private readonly keysDir: string;
  private readonly snapshot: Low<Snapshot>;
  private readonly snapshotFile: SnapshotFile;
  private state = new State();
  private gen = 0;
  private fh: FileHandle | null = null;
  private offset = 0;
  private readonly appendLock = new Mutex();
  /** One compaction at a time in this process (the background one, or an account deletion's). */
  private readonly compactLock = new Mutex();
  private readonly waiters = new Map<string, Waiter>();
  /** This process's records that are written but not yet fsynced: readers stop before them. */
  private readonly unsynced = new Set<string>();
  /** Their fsyncs in flight: refresh() waits for them, so that it never stops short behind one. */
  private readonly syncing = new Set<Promise<void>>();
  private readonly captures = new Map<string, { gen: number; users: User[] }>();
  private running: Promise<boolean> | null = null;
  private again = false;
  private compacting: Promise<void> | null = null;
  private timer: NodeJS.Timeout | null = null;
  private watcher: FSWatcher | null = null;
  private failing = false;
  /** Handles of sealed journals: closed a little later (a writer may still fsync on one), or at close(). */
  private readonly retired = new Set<FileHandle>();
  private closed = false;

  private constructor(
    readonly dir: string,
    private readonly opts: OpenOptions,
  ) {
    this.location = dir;
    this.keysDir = path.join(dir, 'keys');
    this.snapshotFile = new SnapshotFile(path.join(dir, 'snapshot.json'));
    this.snapshot = new Low<Snapshot>(this.snapshotFile, { version: 2, generation: 0, users: [] });
  }

  static async open(opts: OpenOptions): Promise<LowdbRegistry> {
    const dir = path.join(opts.dataDir, 'registry');
    await mkdir(opts.dataDir, { recursive: true, mode: 0o700 });
    if (!(await exists(dir))) {
      const legacy = path.join(opts.dataDir, 'registry.json');
      if (await exists(legacy)) await migrate(legacy, dir, opts.logger);
      else {
        await opts.beforeCreate?.();
        await createFolder(dir, []);
      }
    }
    const reg = new LowdbRegistry(dir, opts);
    try {
      await reg.load(true);
    } catch (err) {
      await reg.close();
      throw err;
    }
    if (opts.follow) reg.follow();
    return reg;
  }

  // --- reading -----------------------------------------------------------------------

  private journalPath(gen: number): string {
    return path.join(this.dir, journalName(gen));
  }

  /** Builds the state from snapshot.json and the journals after it. */
  private async load(strict: boolean): Promise<void> {
    await this.reset();
    await this.drain(strict);
  }

  /**
   * Takes the state of snapshot.json, to be followed by its journal. Called at open, and
   * (under the append lock) by a reader that fell behind past a compaction.
   */
  private async reset(): Promise<void> {
    let snap = await this.readSnapshot();
    // Its journal went meanwhile (compactions while this process opened): read the newer one.
    while (!(await exists(this.journalPath(snap.generation))) && (await this.snapshotGeneration()) !== snap.generation) snap = await this.readSnapshot();
    const state = new State();
    for (const raw of snap.users) {
      const u = adoptUser(raw);
      if (!u) throw damaged(this.snapshotFile.file, 'holds a user record that is not valid');
      state.put(u);
    }
    const old = this.fh;
    this.state = state;
    this.gen = snap.generation;
    this.fh = await this.openJournal(this.gen);
    this.offset = 0;
    if (old) this.retire(old);
    // Writers waiting on records in journals this process no longer reads write again.
    for (const [id, w] of this.waiters) if (!this.unsynced.has(id)) w.resolve('sealed');
  }

  /** The generation of snapshot.json, from its first line alone (as written by SnapshotFile). */
  private async snapshotGeneration(): Promise<number> {
    const fh = await open(this.snapshotFile.file, 'r').catch(() => null);
    if (!fh) return 0;
    try {
      const head = Buffer.alloc(128);
      const { bytesRead } = await fh.read(head, 0, head.length, 0);
      const m = /^\{\n"version": 2,\n"generation": (\d+),/.exec(head.toString('utf8', 0, bytesRead));
      if (m) return Number(m[1]);
    } finally {
      await fh.close();
    }
    return (await new SnapshotFile(this.snapshotFile.file).read())?.generation ?? 0;
  }

  private async readSnapshot(): Promise<Snapshot> {
    this.snapshot.data = { version: 2, generation: 0, users: [] };
    await this.snapshot.read();
    if (this.snapshot.data.generation === 0) {
      const names = await readdir(this.dir);
      if (names.some((n) => n.startsWith('journal.'))) throw damaged(this.snapshotFile.file, 'is missing while journals exist');
      throw damaged(this.snapshotFile.file, 'is missing');
    }
    return this.snapshot.data;
  }

  private async openJournal(gen: number): Promise<FileHandle> {
    // O_APPEND: every write lands at the end, whoever else appends meanwhile.
    const file = this.journalPath(gen);
    const existed = await exists(file);
    const fh = await open(file, 'a+', 0o600);
    if (!existed) await fsyncPath(this.dir);
    return fh;
  }

  /**
   * Applies every complete record after `offset`, following seals into the next journal.
   * Stops before a record of this process that is not yet fsynced. Returns whether the
   * state changed.
   */
  private async drain(strict: boolean): Promise<boolean> {
    let changed = false;
    for (;;) {
      const base = this.offset;
      const buf = await readFrom(this.fh!, base);
      const { chunks } = parse(buf, base);
      let sealed = false;
      for (const c of chunks) {
        if (c.kind === 'torn') {
          this.offset = c.end;
          continue;
        }
        const rec = c.kind === 'record' ? asRecord(c.value) : null;
        if (!rec) {
          const e = damaged(this.journalPath(this.gen), `holds an unreadable record at byte ${c.start}`);
          if (strict) throw e;
          this.opts.logger?.error({ evt: 'registry-damaged', file: this.journalPath(this.gen), at: c.start }, 'skipped an unreadable registry record');
          this.offset = c.end;
          continue;
        }
        if (this.unsynced.has(rec.id)) return changed;
        this.offset = c.end;
        const out = apply(this.state, rec);
        if (out.ok && out.user !== out.previous) changed = true;
        if (rec.op === 'seal' && this.waiters.has(rec.id)) this.captures.set(rec.id, { gen: this.gen, users: [...this.state.byName.values()] });
        this.waiters.get(rec.id)?.resolve(out);
        if (rec.op === 'seal') {
          sealed = true;
          break;
        }
      }
      if (!sealed) return changed;
      if (await this.nextGeneration()) changed = true;
    }
  }

  /** A writer may still be fsyncing a (void) record on an old handle: close it later. */
  private retire(fh: FileHandle): void {
    this.retired.add(fh);
    setTimeout(() => {
      if (this.retired.delete(fh)) void fh.close().catch(() => undefined);
    }, 10_000).unref();
  }

  /**
   * After a seal: what follows it in this journal is void; continue in the next one.
   * Returns true if the state was replaced (read again from a newer snapshot).
   */
  private async nextGeneration(): Promise<boolean> {
    return this.appendLock.run(async () => {
      // Under the lock no append of this process is in flight: all of them are in the file.
      const rest = parse(await readFrom(this.fh!, this.offset), this.offset);
      for (const c of rest.chunks) {
        const rec = c.kind === 'record' ? asRecord(c.value) : null;
        if (rec) this.waiters.get(rec.id)?.resolve('sealed');
      }
      const next = this.gen + 1;
      if (!(await exists(this.journalPath(next))) && (await this.snapshotGeneration()) > next) {
        // Fallen behind past a compaction that removed that journal: start over from the snapshot.
        this.opts.logger?.warn({ evt: 'registry-reload' }, 'fell behind the registry journal; reading the snapshot again');
        await this.reset();
        return true;
      }
      this.retire(this.fh!);
      this.gen = next;
      this.fh = await this.openJournal(next);
      this.offset = 0;
      return false;
    });
  }

  /**
   * Catches up with the journal; one run at a time, and a request during a run gets
   * another. Waits for this process's fsyncs in flight first: records of others queued
   * behind one of ours are then read too (an RCPT for a user the CLI just added).
   */
  async refresh(): Promise<boolean> {
    if (this.syncing.size) await Promise.allSettled([...this.syncing]);
    return this.catchUp();
  }

  private catchUp(): Promise<boolean> {
    if (this.closed) return Promise.resolve(false);
    if (this.running) {
      this.again = true;
      return this.running;
    }
    this.running = (async () => {
      let changed = false;
      try {
        do {
          this.again = false;
          changed = (await this.drain(false)) || changed;
        } while (this.again);
      } finally {
        this.running = null;
      }
      this.maybeCompact();
      return changed;
    })();
    return this.running;
  }

  private follow(): void {
    const tick = () =>
      this.catchUp().then(
        () => {
          if (this.failing) this.opts.logger?.info({ evt: 'registry-readable' }, 'the registry is readable again');
          this.failing = false;
        },
        (err) => {
          // Keep following: one bad read must not hide every later change.
          if (!this.failing) this.opts.logger?.warn({ evt: 'registry-read-failed', err });
          this.failing = true;
        },
      );
    this.timer = setInterval(tick, REFRESH_MS);
    this.timer.unref();
    try {
      this.watcher = watch(this.dir, { persistent: false }, () => void tick());
      this.watcher.on('error', () => undefined); // the timer still runs
    } catch {
      // No inotify here: the timer alone keeps the bound.
    }
  }

  async close(): Promise<void> {
    this.closed = true;
    if (this.timer) clearInterval(this.timer);
    this.watcher?.close();
    await this.running?.catch(() => undefined);
    await this.compacting;
    await this.appendLock.run(async () => {
      await this.fh?.close().catch(() => undefined);
      this.fh = null;
      for (const fh of this.retired) await fh.close().catch(() => undefined);
      this.retired.clear();
    });
  }

  count(): number {
    return this.state.byName.size;
  }

  list(): readonly User[] {
    return [...this.state.byName.values()];
  }

  get(username: string): User | undefined {
    return this.state.byName.get(username.toLowerCase());
  }

  findByFingerprint(fingerprint: string): User | undefined {
    const name = this.state.byFingerprint.get(fingerprint.toUpperCase());
    return name === undefined ? undefined : this.state.byName.get(name);
  }

  async publicKey(user: User): Promise<string> {
    const file = path.join(this.keysDir, `${user.keyId}.asc`);
    let armored: string;
    try {
      armored = await readFile(file, 'utf8');
    } catch (err) {
      if (errno(err) === 'ENOENT') throw damaged(file, `is missing (the key of user ${user.username})`);
      throw err;
    }
    if (sha256(armored) !== user.keyId) throw damaged(file, 'does not hold the key its name says');
    return armored;
  }

  // --- writing -----------------------------------------------------------------------

  /** Appends `op`, waits until it is durable and applied, and returns its outcome. */
  private async write(op: Op): Promise<Outcome & { id: string }>;
  private async write(op: Op, once: true): Promise<(Outcome & { id: string }) | null>;
  private async write(op: Op, once = false): Promise<(Outcome & { id: string }) | null> {
    if (this.closed) throw new Error('the registry is closed');
    for (;;) {
      const id = randomBytes(12).toString('base64url');
      const record = { id, ...op } as JournalRecord;
      const outcome = new Promise<Outcome | 'sealed'>((resolve) => this.waiters.set(id, { resolve }));
      this.unsynced.add(id);
      try {
        const fh = await this.appendLock.run(async () => {
          const fh = this.fh;
          if (!fh) throw new Error('the registry is closed');
          await appendAll(fh, frame(record));
          return fh;
        });
        const sync = fh.datasync();
        this.syncing.add(sync);
        try {
          await sync;
        } finally {
          this.syncing.delete(sync);
        }
      } catch (err) {
        // A record cut short is void for every reader (see ./journal.ts).
        this.unsynced.delete(id);
        this.waiters.delete(id);
        void this.catchUp().catch(() => undefined);
        throw asWriteError(err, this.journalPath(this.gen));
      }
      this.unsynced.delete(id);
      void this.catchUp().catch(() => undefined);
      const out = await outcome;
      this.waiters.delete(id);
      if (out !== 'sealed') return { ...out, id };
      if (once) return null;
    }
  }

  /** Refuses a change to a user this process does not know, even after looking again, without writing. */
  private async known(username: string): Promise<void> {
    if (this.state.byName.has(username)) return;
    await this.refresh();
    if (!this.state.byName.has(username)) throw errorFor('no-such-user', username);
  }

  private async change(op: Op & { user: string }, notFound = true): Promise<User> {
    await this.known(op.user);
    const out = await this.write(op);
    if (!out.ok) throw errorFor(out.code, 'user' in op && typeof op.user === 'string' ? op.user : '');
    if (!out.user && notFound) throw errorFor('no-such-user', '');
    return out.user!;
  }

  /** Stores an armored key under its SHA-256 and returns that id. */
  private async storeKey(armored: string): Promise<string> {
    const keyId = sha256(armored);
    const file = path.join(this.keysDir, `${keyId}.asc`);
    const placed = await writeRegistryFile(file, (fh) => fh.writeFile(armored, 'utf8').then(() => undefined), 'create');
    // Already there: mark it fresh so that compaction does not take it as unused meanwhile.
    if (!placed) await utimes(file, new Date(), new Date()).catch(() => undefined);
    return keyId;
  }

  /** Removes the key file of a record no account refers to any more. */
  private async dropKey(old: User): Promise<void> {
    // A key file is named by the armor, which names its fingerprint: only the account
    // holding that fingerprint now (if any) can refer to it.
    const holder = this.findByFingerprint(old.fingerprint);
    if (holder && holder.keyId === old.keyId) return;
    await unlink(path.join(this.keysDir, `${old.keyId}.asc`)).catch(() => undefined);
  }

  /**
   * After a change that refers to a key file: if it went meanwhile (its former account was
   * deleted at that very moment, and the deleter removed the file), it is written again.
   */
  private async keepKey(user: User, armored: string): Promise<void> {
    if (!(await exists(path.join(this.keysDir, `${user.keyId}.asc`)))) await this.storeKey(armored);
  }

  async add(input: NewUser): Promise<User> {
    const fingerprint = input.fingerprint.toUpperCase();
    if (this.state.byFingerprint.has(fingerprint)) throw errorFor('duplicate-key', '');
    const keyId = await this.storeKey(input.publicKey);
    for (;;) {
      let username = randomUsername();
      while (this.state.byName.has(username)) username = randomUsername();
      const user: User = {
        username,
        fingerprint,
        keyId,
        keyExpiresAt: input.keyExpiresAt,
        createdAt: new Date().toISOString(),
        disabled: false,
        catchAll: true,
        aliases: [],
        blocked: [],
        notices: [],
      };
      const out = await this.write({ op: 'add', user });
      if (out.ok) {
        await this.keepKey(out.user!, input.publicKey);
        return out.user!;
      }
      if (out.code !== 'duplicate-username') throw errorFor(out.code, '');
    }
  }

  async setDisabled(username: string, disabled: boolean): Promise<User> {
    return this.change({ op: 'disable', user: username.toLowerCase(), value: disabled });
  }

  async setCatchAll(username: string, on: boolean): Promise<User> {
    return this.change({ op: 'catch-all', user: username.toLowerCase(), value: on });
  }

  async addAlias(username: string, localPart: string): Promise<User> {
    return this.change({ op: 'alias', user: username.toLowerCase(), local: localPartOrThrow(localPart) });
  }

  async removeAlias(username: string, localPart: string): Promise<User> {
    return this.change({ op: 'unalias', user: username.toLowerCase(), local: localPartOrThrow(localPart) });
  }

  async blockAlias(username: string, localPart: string): Promise<User> {
    return this.change({ op: 'block', user: username.toLowerCase(), local: localPartOrThrow(localPart) });
  }

  async setKey(username: string, key: NewUser): Promise<User> {
    const name = username.toLowerCase();
    const fingerprint = key.fingerprint.toUpperCase();
    const holder = this.state.byFingerprint.get(fingerprint);
    if (holder !== undefined && holder !== name) throw errorFor('duplicate-key', name);
    await this.known(name);
    const keyId = await this.storeKey(key.publicKey);
    const out = await this.write({ op: 'key', user: name, fingerprint, keyId, keyExpiresAt: key.keyExpiresAt });
    if (!out.ok) throw errorFor(out.code, name);
    if (out.previous && out.previous.keyId !== keyId) await this.dropKey(out.previous);
    await this.keepKey(out.user!, key.publicKey);
    return out.user!;
  }

  async addNotices(username: string, tags: readonly string[], keyExpiresAt: string | null): Promise<User> {
    return this.change({ op: 'notices', user: username.toLowerCase(), tags: [...tags], ifKeyExpiresAt: keyExpiresAt });
  }

  /**
   * Deletes an account and every trace of it in the registry: its key file, and the
   * journal records that named it (two compactions: the journal holding the removal is
   * sealed into a snapshot, then removed by the next one). Costs a snapshot write.
   */
  async remove(username: string): Promise<void> {
    const name = username.toLowerCase();
    await this.known(name);
    const out = await this.write({ op: 'remove', user: name });
    if (!out.ok) throw errorFor(out.code, name);
    if (out.previous) await this.dropKey(out.previous);
    for (let done = 0, tries = 0; done < 2 && tries < 20; tries++) if (await this.compact()) done++;
  }

  // --- compaction --------------------------------------------------------------------

  private maybeCompact(): void {
    if (!this.opts.compact || this.compacting || this.closed) return;
    const threshold = Math.max(this.opts.compactBytes ?? COMPACT_MIN_BYTES, this.snapshotFile.bytes / 2);
    if (this.offset < threshold) return;
    this.compacting = this.compact()
      .then(() => undefined)
      .catch((err) => this.opts.logger?.warn({ evt: 'registry-compact-failed', err }))
      .finally(() => {
        this.compacting = null;
      });
  }

  /**
   * Folds the journal into a new snapshot: seals the current journal (writers move on to
   * the next one at once), writes the state as of the seal, then removes journals that
   * no reader within one generation needs. Nothing waits for it.
   */
  compact(): Promise<boolean> {
    return this.compactLock.run(async () => {
      // Sealed once: if another process sealed this journal first, it compacts it.
      const out = await this.write({ op: 'seal' }, true);
      const cap = out && this.captures.get(out.id);
      if (out) this.captures.delete(out.id);
      if (!cap) return false;
      const { users } = cap;
      // The state as of the end of journal cap.gen: the snapshot is the start of the next.
      const generation = cap.gen + 1;
      if ((await this.snapshotGeneration().catch(() => 0)) >= generation) return false;
      this.snapshot.data = { version: 2, generation, users };
      await this.snapshot.write();
      // The journal just sealed stays one generation more, for a reader still in it.
      for (const name of await readdir(this.dir)) {
        const m = /^journal\.(\d+)$/.exec(name);
        if (m && Number(m[1]) <= generation - 2) await unlink(path.join(this.dir, name)).catch(() => undefined);
      }
      await this.collectKeys();
      return true;
    });
  }

  /** Removes key files that no account refers to (after an account was deleted or changed its key). */
  private async collectKeys(): Promise<void> {
    const used = new Set([...this.state.byName.values()].map((u) => `${u.keyId}.asc`));
    const now = Date.now();
    let n = 0;
    for (const name of await readdir(this.keysDir)) {
      if (used.has(name) || !name.endsWith('.asc')) continue;
      const file = path.join(this.keysDir, name);
      const s = await stat(file).catch(() => null);
      if (s && now - s.mtimeMs > KEY_GRACE_MS) await unlink(file).catch(() => undefined);
      if (++n % 1000 === 0) await yieldNow();
    }
  }
}

function localPartOrThrow(raw: string): string {
  const l = normalizeLocalPart(raw);
  if (!l) throw new RegistryError('bad-local-part', `"${raw}" is not a valid address local part (1-64 characters, no spaces or @).`);
  return l;
}

function errorFor(code: Exclude<Outcome, { ok: true }>['code'], username: string): RegistryError {
  switch (code) {
    case 'duplicate-key':
      return new RegistryError('duplicate-key', 'This key is already registered. Use a fresh key for each identity: one key, one account.');
    case 'no-such-user':
      return new RegistryError('no-such-user', `There is no user "${username}".`);
    default:
      return new RegistryError(code, `The registry refused the change (${code}).`);
  }
}

/** Makes a registry folder in a temporary place and renames it into place (never half made). */
async function createFolder(dir: string, users: User[], keys: Map<string, string> = new Map()): Promise<boolean> {
  const tmp = `${dir}.new-${process.pid}-${randomBytes(4).toString('hex')}`;
  try {
    await mkdir(path.join(tmp, 'keys'), { recursive: true, mode: 0o700 });
    const entries = [...keys];
    for (let i = 0; i < entries.length; i += 64) {
      await Promise.all(
        entries.slice(i, i + 64).map(async ([keyId, armored]) => {
          const fh = await open(path.join(tmp, 'keys', `${keyId}.asc`), 'wx', 0o600);
          try {
            await fh.writeFile(armored, 'utf8');
            await fh.sync();
          } finally {
            await fh.close();
          }
        }),
      );
    }
    await fsyncPath(path.join(tmp, 'keys'));
    await new Low<Snapshot>(new SnapshotFile(path.join(tmp, 'snapshot.json')), { version: 2, generation: 1, users }).write();
    const j = await open(path.join(tmp, journalName(1)), 'a', 0o600);
    await j.close();
    await fsyncPath(tmp);
    try {
      await rename(tmp, dir);
    } catch (err) {
      // Another process made it first: use theirs.
      if (errno(err) === 'EEXIST' || errno(err) === 'ENOTEMPTY') return false;
      throw err;
    }
    await fsyncPath(path.dirname(dir));
    return true;
  } catch (err) {
    throw asWriteError(err, path.join(dir, 'snapshot.json'));
  } finally {
    await rm(tmp, { recursive: true, force: true }).catch(() => undefined);
  }
}

const LEGACY = 'registry.json (or the registry folder)';

/** Converts the single-file registry.json of kzymy 0.1 into the folder layout, once. */
async function migrate(legacy: string, dir: string, logger?: Logger): Promise<void> {
  let data: unknown;
  try {
    data = JSON.parse(await readFile(legacy, 'utf8'));
  } catch (err) {
    if (err instanceof SyntaxError) throw damaged(legacy, 'is not valid JSON', LEGACY);
    // Another process converted it a moment ago: its folder is there now.
    if (errno(err) === 'ENOENT') return;
    throw err;
  }
  const d = data as { version?: unknown; users?: unknown } | null;
  if (!d || d.version !== 1 || !Array.isArray(d.users)) throw damaged(legacy, 'is not a kzymy registry', LEGACY);
  logger?.info({ evt: 'registry-migrating', users: (d.users as unknown[]).length }, 'converting registry.json into the registry folder (once; about a second per thousand users)');
  const users: User[] = [];
  const keys = new Map<string, string>();
  for (const raw of d.users as Record<string, unknown>[]) {
    const publicKey = raw?.publicKey;
    if (typeof publicKey !== 'string') throw damaged(legacy, 'holds a user without a key', LEGACY);
    const keyId = sha256(publicKey);
    const u = asUser({ ...raw, keyId, publicKey: undefined });
    if (!u) throw damaged(legacy, `holds a user record that is not valid (${users.length + 1}th)`, LEGACY);
    users.push(u);
    keys.set(keyId, publicKey);
  }
  await createFolder(dir, users, keys);
  // Removed, not kept: it would hold every account deleted later (back up before upgrading).
  await unlink(legacy).catch(() => undefined);
  await fsyncPath(path.dirname(dir));
  logger?.info({ evt: 'registry-migrated', users: users.length }, 'converted registry.json into the registry folder');
}

/** Whether dataDir holds a registry, in the folder layout or as a registry.json to convert. */
export async function registryExists(dataDir: string): Promise<boolean> {
  return (await exists(path.join(dataDir, 'registry'))) || (await exists(path.join(dataDir, 'registry.json')));
}
