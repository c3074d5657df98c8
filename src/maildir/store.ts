// The Maildir store: root/USERNAME/{tmp,new,cur} per qmail's maildir(5), files 0600,
// folders 0700. This is kzymy's own code: there is no Maildir
// library on npm worth depending on.
//
// deliver() writes tmp/NAME (O_EXCL, 0600), fsyncs it, renames it to new/NAME,S=SIZE
// and fsyncs new/; it resolves only then, so the SMTP layer may answer 250 (promise 4).
import { constants as fsc, readFileSync, type Dirent } from 'node:fs';
import { chmod, lstat, mkdir, open, readdir, rename, rm, stat, unlink, type FileHandle } from 'node:fs/promises';
import path from 'node:path';
import type { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { UsageTracker } from './usage.js';
import { writeAhead } from './write-ahead.js';
import { DirSyncer } from './dirsync.js';
import { MaildirError, type MessageInfo, type Usage } from './errors.js';
import { baseOf, isValidId, isValidUsername, nameWithSize, sizeFromName, timeFromName, uniqueName } from './names.js';

const DIR_MODE = 0o700;
const FILE_MODE = 0o600;
const SUBDIRS = ['tmp', 'new', 'cur'] as const;
const MESSAGE_DIRS = ['new', 'cur'] as const;
type MessageDir = (typeof MESSAGE_DIRS)[number];

/** Hooks into one delivery (the SMTP layer counts space with them). */
export interface DeliverOptions {
  /** Called with the size of each chunk before it is written; a throw stops the delivery, no file remains. */
  beforeWrite?(bytes: number): void | Promise<void>;
  /** Called with the size of each chunk once its write has landed (several may be in flight). */
  afterWrite?(bytes: number): void;
  /** Called with the final size after the fsync, before the rename into new/; a throw keeps the copy out of new/. */
  beforeRename?(size: number): void | Promise<void>;
  /** Aborting stops the delivery before its next write or its rename; no file remains. */
  signal?: AbortSignal;
}

export interface MaildirStoreOptions {
  /** How long a usage() scan is trusted before the folder is read again (default 30 s). */
  usageTtlMs?: number;
  /** Clock for the usage cache, in ms (tests pass a fake one). */
  now?: () => number;
  /**
   * Told of every message this store adds or removes, after the change is durable: an SMTP
   * worker process passes its changes on to the server process, whose usage counts then
   * include them (see noteChange).
   */
  onChange?: (change: StoreChange) => void;
  /**
   * Asked before the folders of a user are made again after they vanished under a delivery:
   * false when the account was deleted meanwhile by another process, so that a delivery in
   * flight cannot bring its Maildir back.
   */
  mayRecreate?: (user: string) => Promise<boolean>;
}

/** One message added to or removed from a user's Maildir (no content, no address). */
export interface StoreChange {
  kind: 'added' | 'removed';
  user: string;
  id: string;
  size: number;
  receivedAt: number;
}

/** What the store knows of one message on disk. */
interface Entry {
  id: string;
  dir: MessageDir;
  size: number;
  receivedAt: number;
}

function badUser(): MaildirError {
  return new MaildirError(
    'bad-user',
    'The username must be 1 to 63 lowercase letters, digits or hyphens, starting with a letter or digit.',
  );
}

function badId(): MaildirError {
  return new MaildirError('bad-id', 'The message id is not valid.');
}

function notFound(): MaildirError {
  return new MaildirError('not-found', 'There is no such message in this mailbox.');
}

function errno(err: unknown): string | undefined {
  return (err as NodeJS.ErrnoException | null)?.code;
}

async function ignoreMissing<T>(p: Promise<T>): Promise<T | undefined> {
  try {
    return await p;
  } catch (err) {
    if (errno(err) === 'ENOENT') return undefined;
    throw err;
  }
}

/** readdir with file types; a missing folder reads as empty. */
async function readdirOrEmpty(dir: string): Promise<Dirent[]> {
  return (await ignoreMissing(readdir(dir, { withFileTypes: true }))) ?? [];
}

let ownerBitsKept: boolean | null = null;
/**
 * True when this process's umask leaves the owner's read and write bits alone, so that a file
 * opened with FILE_MODE (0600) gets exactly that mode and needs no chmod (one system call less
 * a message). Read once from /proc/self/status; where that is unreadable, chmod as before.
 */
function umaskKeepsOwnerBits(): boolean {
  if (ownerBitsKept === null) {
    try {
      const m = /^Umask:\s+([0-7]+)/m.exec(readFileSync('/proc/self/status', 'utf8'));
      ownerBitsKept = m !== null && (parseInt(m[1]!, 8) & 0o600) === 0;
    } catch {
      ownerBitsKept = false;
    }
  }
  return ownerBitsKept;
}

/** mkdir with an explicit chmod (mkdir's mode is cut by the umask); true if created. */
async function mkdirMode(dir: string): Promise<boolean> {
  try {
    await mkdir(dir, { mode: DIR_MODE });
  } catch (err) {
    if (errno(err) !== 'EEXIST') throw err;
    // Something is there already: fine if it is a folder, an error otherwise.
    if (!(await lstat(dir)).isDirectory()) {
      throw Object.assign(new Error(`not a directory: ${dir}`), { code: 'ENOTDIR' });
    }
    return false;
  }
  await chmod(dir, DIR_MODE);
  return true;
}


export class MaildirStore {
  /** Users whose folders this process has made or checked: deliver skips the mkdirs. */
  private readonly ready = new Map<string, Promise<void>>();
  /** Users removed by this process: a delivery still in flight must not bring their folder back. */
  private readonly removed = new Set<string>();
  private readonly syncers = new Map<string, DirSyncer>();
  /** Each user's count, bytes and oldest message, kept current by this store's changes. */
  private readonly usages: UsageTracker;

  constructor(
    readonly root: string,
    options: MaildirStoreOptions = {},
  ) {
    this.usages = new UsageTracker(options.usageTtlMs ?? 30_000, options.now ?? Date.now, (user) => this.scan(this.userDir(user)));
    this.onChange = options.onChange;
    this.mayRecreate = options.mayRecreate;
  }

  private readonly onChange?: (change: StoreChange) => void;
  private readonly mayRecreate?: (user: string) => Promise<boolean>;

  /**
   * A change another process of this server made (an SMTP worker): counted in this store's
   * usage as if it were its own, reconciled by name with a scan in progress.
   */
  noteChange(change: StoreChange): void {
    if (!isValidUsername(change.user)) return;
    if (change.kind === 'added') this.noteAdded(change.user, change.id, change.size, change.receivedAt, false);
    else this.noteRemoved(change.user, change.id, change.size, change.receivedAt, false);
  }

  /** Forgets the usage counted for `user`: the next usage() reads the folders again. */
  forgetUsage(user: string): void {
    this.usages.forget(user);
  }

  static isValidId(id: string): boolean {
    return isValidId(id);
  }

  static isValidUsername(user: string): boolean {
    return isValidUsername(user);
  }

  /** root/USERNAME; throws 'bad-user' before any path is built from a bad name. */
  userDir(user: string): string {
    if (!isValidUsername(user)) throw badUser();
    return path.join(this.root, user);
  }

  /** Creates root (not its parents), root/USER and its tmp/new/cur, mode 0700, durably. */
  async ensureUser(user: string): Promise<void> {
    this.removed.delete(user); // an explicit (re)creation
    return this.prepareUser(user);
  }

  private gone(user: string): MaildirError {
    return new MaildirError('not-found', `The mailbox of ${user} no longer exists.`);
  }

  /** Creates the user's folders once per process, unless the user was removed. */
  private async prepareUser(user: string): Promise<void> {
    if (this.removed.has(user)) throw this.gone(user);
    const dir = this.userDir(user);
    let pending = this.ready.get(user);
    if (!pending) {
      pending = this.makeUser(dir);
      this.ready.set(user, pending);
      // A failed attempt is forgotten so that the next call tries again.
      pending.catch(() => {
        if (this.ready.get(user) === pending) this.ready.delete(user);
      });
    }
    await pending;
  }

  private async makeUser(dir: string): Promise<void> {
    const madeRoot = await mkdirMode(this.root);
    const madeUser = await mkdirMode(dir);
    let madeSub = false;
    for (const sub of SUBDIRS) madeSub = (await mkdirMode(path.join(dir, sub))) || madeSub;
    // New folder entries must survive a crash too, or new/ (and the mail in it) could vanish.
    if (madeSub) await this.syncer(dir).sync();
    if (madeUser) await this.syncer(this.root).sync();
    if (madeRoot) await this.syncer(path.dirname(this.root)).sync();
  }

  private syncer(dir: string): DirSyncer {
    let s = this.syncers.get(dir);
    if (!s) {
      s = new DirSyncer(dir);
      this.syncers.set(dir, s);
    }
    return s;
  }

  /** Opens tmp/NAME exclusively; if the user's folders vanished (another process), remakes them once. */
  private async openTmp(user: string, tmpPath: string): Promise<FileHandle> {
    try {
      return await open(tmpPath, fsc.O_WRONLY | fsc.O_CREAT | fsc.O_EXCL, FILE_MODE);
    } catch (err) {
      if (errno(err) !== 'ENOENT') throw err;
      this.ready.delete(user);
      if (this.mayRecreate && !(await this.mayRecreate(user))) {
        this.removed.add(user);
        throw this.gone(user);
      }
      await this.prepareUser(user);
      return await open(tmpPath, fsc.O_WRONLY | fsc.O_CREAT | fsc.O_EXCL, FILE_MODE);
    }
  }

  /** Writes tmp/, fsyncs, renames into new/, fsyncs new/. Resolves only when durable; on failure no file remains. */
  async deliver(user: string, content: Uint8Array | Readable | AsyncIterable<Uint8Array>, opts: DeliverOptions = {}): Promise<MessageInfo> {
    const dir = this.userDir(user);
    const { signal, beforeWrite, afterWrite, beforeRename } = opts;
    signal?.throwIfAborted();
    await this.prepareUser(user);
    const receivedAtMs = performance.timeOrigin + performance.now();
    const unique = uniqueName(receivedAtMs);
    const tmpPath = path.join(dir, 'tmp', unique);
    const fh = await this.openTmp(user, tmpPath);
    let closed = false;
    let newPath: string | null = null;
    try {
      if (!umaskKeepsOwnerBits()) await fh.chmod(FILE_MODE); // open()'s mode was cut by the umask
      let size: number;
      if (content instanceof Uint8Array) {
        signal?.throwIfAborted();
        await beforeWrite?.(content.byteLength);
        await fh.writeFile(content);
        afterWrite?.(content.byteLength);
        size = content.byteLength;
      } else {
        // pipeline destroys the source on any error; writeAhead keeps up to 1 MiB of
        // writes in flight while the next chunks are made, and ends them all before it throws.
        size = 0;
        const check = (): void => {
          signal?.throwIfAborted();
          if (this.removed.has(user)) throw this.gone(user); // deleted while this copy is written
        };
        const sink = async (source: AsyncIterable<Uint8Array | string>) => {
          size = await writeAhead(fh, source, { check, beforeWrite, afterWrite });
        };
        await (signal ? pipeline(content, sink, { signal }) : pipeline(content, sink));
      }
      await fh.sync();
      closed = true;
      await fh.close();
      signal?.throwIfAborted();
      await beforeRename?.(size);
      signal?.throwIfAborted();
      const id = nameWithSize(unique, size);
      const target = path.join(dir, 'new', id);
      await rename(tmpPath, target);
      newPath = target;
      await this.syncer(path.join(dir, 'new')).sync();
      if (this.removed.has(user)) throw this.gone(user); // deleted while this copy was written
      const receivedAt = timeFromName(unique) ?? Math.floor(receivedAtMs);
      this.noteAdded(user, id, size, receivedAt);
      return { id, size, receivedAt: new Date(receivedAt) };
    } catch (err) {
      if (!closed) await fh.close().catch(() => undefined);
      await unlink(tmpPath).catch(() => undefined);
      // Renamed but not known to be durable: take it back, the sender will retry.
      if (newPath !== null) await unlink(newPath).catch(() => undefined);
      throw err;
    }
  }

  /** Messages in new/ and cur/, oldest first. Files whose names are no valid id are left out. */
  async list(user: string): Promise<MessageInfo[]> {
    const entries = await this.scan(this.userDir(user));
    return entries
      .filter((e) => isValidId(e.id))
      .sort((a, b) => a.receivedAt - b.receivedAt || (a.id < b.id ? -1 : a.id > b.id ? 1 : 0))
      .map((e) => ({ id: e.id, size: e.size, receivedAt: new Date(e.receivedAt) }));
  }

  async read(user: string, id: string): Promise<{ info: MessageInfo; stream: Readable }> {
    const { info, body } = await this.readUpTo(user, id, -1);
    return { info, stream: body as Readable };
  }

  /**
   * read(), but a message of at most `max` bytes comes whole, as one Buffer read at once:
   * for a small message, a stream's machinery costs more than the read itself.
   */
  async readUpTo(user: string, id: string, max: number): Promise<{ info: MessageInfo; body: Buffer | Readable }> {
    const dir = this.userDir(user);
    if (!isValidId(id)) throw badId();
    for (let attempt = 0; attempt < 3; attempt++) {
      // Most reads are of a message still in new/ under its listed name: opened at once.
      const found = attempt === 0 ? { dir: 'new' as const, id } : await this.locate(dir, id);
      if (!found) break;
      let fh: FileHandle;
      try {
        fh = await open(path.join(dir, found.dir, found.id), 'r');
      } catch (err) {
        // Moved or removed between locate and open: look once more.
        if (errno(err) === 'ENOENT') continue;
        throw err;
      }
      let streaming = false;
      try {
        const st = await fh.stat();
        if (!st.isFile()) throw notFound();
        const receivedAt = timeFromName(found.id) ?? st.mtimeMs;
        const info = { id: found.id, size: st.size, receivedAt: new Date(Math.floor(receivedAt)) };
        if (st.size <= max) {
          const bytes = Buffer.allocUnsafe(st.size);
          let got = 0;
          while (got < st.size) {
            const { bytesRead } = await fh.read(bytes, got, st.size - got, got);
            if (bytesRead === 0) break; // shorter than its stat: only what is there
            got += bytesRead;
          }
          return { info: { ...info, size: got }, body: bytes.subarray(0, got) };
        }
        streaming = true;
        // With its end given, the stream stops at the size instead of reading once more for EOF.
        return { info, body: fh.createReadStream(st.size > 0 ? { start: 0, end: st.size - 1 } : {}) };
      } finally {
        if (!streaming) await fh.close().catch(() => undefined);
      }
    }
    throw notFound();
  }

  async remove(user: string, id: string): Promise<void> {
    const dir = this.userDir(user);
    if (!isValidId(id)) throw badId();
    const gone = await this.unlinkMessage(dir, id);
    if (!gone) throw notFound();
    await this.syncer(path.join(dir, gone.dir)).sync();
    this.noteRemoved(user, gone.id, gone.size, gone.receivedAt);
  }

  /**
   * remove() of several ids with one fsync of each folder touched, after every unlink
   * (a client acknowledging a batch). Resolves with the ids removed and those not found
   * (already gone, or never this user's); throws on a bad id before removing anything.
   */
  async removeMany(user: string, ids: readonly string[]): Promise<{ removed: string[]; missing: string[] }> {
    const dir = this.userDir(user);
    if (!ids.every(isValidId)) throw badId();
    const gone: Entry[] = [];
    const missing: string[] = [];
    for (const id of ids) {
      const e = await this.unlinkMessage(dir, id);
      if (e) gone.push(e);
      else missing.push(id);
    }
    const touched = new Set(gone.map((e) => e.dir));
    await Promise.all([...touched].map((sub) => this.syncer(path.join(dir, sub)).sync()));
    for (const e of gone) this.noteRemoved(user, e.id, e.size, e.receivedAt);
    return { removed: gone.map((e) => e.id), missing };
  }

  /**
   * Unlinks the message `id` from new/ or cur/ (not yet fsynced), or answers null when it is
   * not there. Size and time come from the name, else from lstat (for the usage cache).
   */
  private async unlinkMessage(dir: string, id: string): Promise<Entry | null> {
    for (let attempt = 0; attempt < 2; attempt++) {
      // Most acknowledged messages are still in new/ under their listed names: unlinked at
      // once, without a look first (size and time are in such a name).
      if (attempt === 0 && sizeFromName(id) !== null && timeFromName(id) !== null) {
        try {
          await unlink(path.join(dir, 'new', id));
          return { id, dir: 'new', size: sizeFromName(id)!, receivedAt: timeFromName(id)! };
        } catch (err) {
          if (errno(err) !== 'ENOENT') throw err;
        }
      }
      const found = await this.locate(dir, id);
      if (!found) return null;
      const file = path.join(dir, found.dir, found.id);
      const size = sizeFromName(found.id);
      const time = timeFromName(found.id);
      const st = size === null || time === null ? await ignoreMissing(lstat(file)) : undefined;
      try {
        await unlink(file);
      } catch (err) {
        if (errno(err) === 'ENOENT') continue; // moved new/ -> cur/ meanwhile: look again
        throw err;
      }
      return { id: found.id, dir: found.dir, size: size ?? st?.size ?? 0, receivedAt: time ?? st?.mtimeMs ?? 0 };
    }
    return null;
  }

  /**
   * Bytes stored for `user` as this process knows them right now (kept current by deliver,
   * remove and purge), or null when no scan is cached: then call usage() first.
   */
  cachedBytes(user: string): number | null {
    return this.usages.cachedBytes(user);
  }

  async usage(user: string): Promise<Usage> {
    this.userDir(user); // a bad username throws here
    return this.usages.usage(user);
  }

  async removeUser(user: string): Promise<void> {
    const dir = this.userDir(user);
    this.removed.add(user);
    this.ready.delete(user);
    this.usages.forget(user);
    for (const key of [...this.syncers.keys()]) {
      if (key === dir || key.startsWith(dir + path.sep)) this.syncers.delete(key);
    }
    const existed = (await ignoreMissing(lstat(dir))) !== undefined;
    await rm(dir, { recursive: true, force: true });
    if (existed) await this.syncer(this.root).sync();
  }

  /** Folder names under root that are valid usernames. */
  async listUsers(): Promise<string[]> {
    const dirents = await readdirOrEmpty(this.root);
    return dirents
      .filter((d) => d.isDirectory() && isValidUsername(d.name))
      .map((d) => d.name)
      .sort();
  }

  /**
   * Removes every file left in a tmp/ (call at start, before accepting mail), or with
   * `match`, only the files whose names it accepts (those of one process that died).
   */
  async cleanTmp(match?: (name: string) => boolean): Promise<number> {
    let count = 0;
    for (const user of await this.listUsers()) {
      const tmp = path.join(this.root, user, 'tmp');
      for (const d of await readdirOrEmpty(tmp)) {
        if (d.isDirectory() || (match && !match(d.name))) continue;
        try {
          await unlink(path.join(tmp, d.name));
          count++;
        } catch (err) {
          if (errno(err) !== 'ENOENT') throw err;
        }
      }
    }
    return count;
  }

  /** Deletes messages received before `olderThan`. */
  async purge(olderThan: Date): Promise<{ count: number; bytes: number }> {
    const limit = olderThan.getTime();
    let count = 0;
    let bytes = 0;
    for (const user of await this.listUsers()) {
      const dir = path.join(this.root, user);
      const touched = new Set<MessageDir>();
      for (const e of await this.scan(dir)) {
        if (e.receivedAt >= limit) continue;
        try {
          await unlink(path.join(dir, e.dir, e.id));
        } catch (err) {
          if (errno(err) === 'ENOENT') continue; // someone else removed it first
          throw err;
        }
        touched.add(e.dir);
        count++;
        bytes += e.size;
        this.noteRemoved(user, e.id, e.size, e.receivedAt);
      }
      for (const sub of touched) await this.syncer(path.join(dir, sub)).sync();
    }
    return { count, bytes };
  }

  /**
   * Finds a message by id in new/ or cur/. When the exact name is gone, a file with the
   * same base name is accepted: a MUA may have moved it to cur/ adding `:2,FLAGS`.
   */
  private async locate(dir: string, id: string): Promise<{ dir: MessageDir; id: string } | null> {
    for (const sub of MESSAGE_DIRS) {
      if (await ignoreMissing(lstat(path.join(dir, sub, id)))) return { dir: sub, id };
    }
    const base = baseOf(id);
    for (const sub of MESSAGE_DIRS) {
      for (const d of await readdirOrEmpty(path.join(dir, sub))) {
        if (d.isFile() && baseOf(d.name) === base && isValidId(d.name)) return { dir: sub, id: d.name };
      }
    }
    return null;
  }

  /** Every message file (non-dot, not a folder) in new/ and cur/ with its size and receipt time. */
  private async scan(dir: string): Promise<Entry[]> {
    const out: Entry[] = [];
    for (const sub of MESSAGE_DIRS) {
      const folder = path.join(dir, sub);
      const found = await Promise.all(
        (await readdirOrEmpty(folder))
          .filter((d) => !d.name.startsWith('.') && !d.isDirectory())
          .map(async (d): Promise<Entry | null> => {
            let size = sizeFromName(d.name);
            let receivedAt = timeFromName(d.name);
            // Only names without `,S=` or a leading time cost a stat.
            if (size === null || receivedAt === null) {
              const st = await ignoreMissing(stat(path.join(folder, d.name)));
              if (!st || !st.isFile()) return null;
              size ??= st.size;
              receivedAt ??= st.mtimeMs;
            }
            return { id: d.name, dir: sub, size, receivedAt };
          }),
      );
      for (const e of found) if (e) out.push(e);
    }
    return out;
  }

  private noteAdded(user: string, id: string, size: number, receivedAt: number, own = true): void {
    if (own) this.onChange?.({ kind: 'added', user, id, size, receivedAt });
    this.usages.added(user, id, size, receivedAt);
  }

  private noteRemoved(user: string, id: string, size: number, receivedAt: number, own = true): void {
    if (own) this.onChange?.({ kind: 'removed', user, id, size, receivedAt });
    this.usages.removed(user, id, size, receivedAt);
  }
}
