// The Maildir store: root/USERNAME/{tmp,new,cur} per qmail's maildir(5), files 0600,
// folders 0700. This is kzymy's own code: there is no Maildir
// library on npm worth depending on.
//
// deliver() writes the message with writeMessage (tmp/NAME, fsync, new/NAME,S=SIZE, fsync of
// new/); it resolves only then, so the SMTP layer may answer 250 (promise 4).
import { lstat, rm } from 'node:fs/promises';
import path from 'node:path';
import type { Readable } from 'node:stream';
import { DirSyncer } from './dirsync.js';
import { badId, badUser, notFound, userGone, type MaildirStoreOptions, type MessageInfo, type StoreChange, type Usage } from './errors.js';
import { ignoreMissing, makeUserFolders, readdirOrEmpty } from './folders.js';
import { readMessage, scan, type Entry } from './messages.js';
import { isValidId, isValidUsername } from './names.js';
import { abandonedTmp, unlinkMessage, unlinkOlder, unlinkTmp } from './removal.js';
import { UsageTracker } from './usage.js';
import { writeMessage, type DeliverOptions, type MessageContent } from './writer.js';

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
    this.usages = new UsageTracker(options.usageTtlMs ?? 30_000, options.now ?? Date.now, (user) => scan(this.userDir(user)));
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

  /** Creates the user's folders once per process, unless the user was removed. */
  private async prepareUser(user: string): Promise<void> {
    if (this.removed.has(user)) throw userGone(user);
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

  private makeUser(dir: string): Promise<void> {
    return makeUserFolders(this.root, dir, (folder) => this.syncer(folder).sync());
  }

  private syncer(dir: string): DirSyncer {
    let s = this.syncers.get(dir);
    if (!s) {
      s = new DirSyncer(dir);
      this.syncers.set(dir, s);
    }
    return s;
  }

  /** The user's folders vanished under a delivery (another process): made again once, unless the account is gone. */
  private async remake(user: string): Promise<void> {
    this.ready.delete(user);
    if (this.mayRecreate && !(await this.mayRecreate(user))) {
      this.removed.add(user);
      throw userGone(user);
    }
    await this.prepareUser(user);
  }

  /** Writes tmp/, fsyncs, renames into new/, fsyncs new/. Resolves only when durable; on failure no file remains. */
  async deliver(user: string, content: MessageContent, opts: DeliverOptions = {}): Promise<MessageInfo> {
    const dir = this.userDir(user);
    opts.signal?.throwIfAborted();
    await this.prepareUser(user);
    // Deleted while this copy is written, or once it was: it must not stay.
    const present = (): void => {
      if (this.removed.has(user)) throw userGone(user);
    };
    const folder = { dir, syncNew: () => this.syncer(path.join(dir, 'new')).sync() };
    const { beforeWrite, afterWrite, beforeRename, signal } = opts;
    const done = await writeMessage(folder, content, {
      beforeWrite,
      afterWrite,
      beforeRename,
      signal,
      check: present,
      afterSync: present,
      remake: () => this.remake(user),
    });
    this.noteAdded(user, done.name, done.size, done.receivedAt);
    return { id: done.name, size: done.size, receivedAt: new Date(done.receivedAt) };
  }

  /** Messages in new/ and cur/, oldest first. Files whose names are no valid id are left out. */
  async list(user: string): Promise<MessageInfo[]> {
    const entries = await scan(this.userDir(user));
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
    return readMessage(dir, id, max);
  }

  async remove(user: string, id: string): Promise<void> {
    const dir = this.userDir(user);
    if (!isValidId(id)) throw badId();
    const gone = await unlinkMessage(dir, id);
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
      const e = await unlinkMessage(dir, id);
      if (e) gone.push(e);
      else missing.push(id);
    }
    const touched = new Set(gone.map((e) => e.dir));
    await Promise.all([...touched].map((sub) => this.syncer(path.join(dir, sub)).sync()));
    for (const e of gone) this.noteRemoved(user, e.id, e.size, e.receivedAt);
    return { removed: gone.map((e) => e.id), missing };
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
   * Removes the files left in tmp/ by writers that are gone (call at start, before accepting
   * mail: see abandonedTmp, which never takes a file another running node may still write),
   * or with `match`, only the files whose names it accepts (those of one process that died).
   */
  async cleanTmp(match?: (name: string) => boolean): Promise<number> {
    let count = 0;
    const take = match ?? ((name: string, file: string) => abandonedTmp(name, file));
    for (const user of await this.listUsers()) count += await unlinkTmp(path.join(this.root, user, 'tmp'), take);
    return count;
  }

  /** Deletes messages received before `olderThan`. */
  async purge(olderThan: Date): Promise<{ count: number; bytes: number }> {
    const limit = olderThan.getTime();
    let count = 0;
    let bytes = 0;
    for (const user of await this.listUsers()) {
      const dir = path.join(this.root, user);
      const touched = await unlinkOlder(dir, limit, (e) => {
        count++;
        bytes += e.size;
        this.noteRemoved(user, e.id, e.size, e.receivedAt);
      });
      for (const sub of touched) await this.syncer(path.join(dir, sub)).sync();
    }
    return { count, bytes };
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
