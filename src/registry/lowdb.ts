// The embedded registry engine: lowdb documents plus a journal, in DATA_DIR/registry/.
//
//   snapshot.json     lowdb document: { version, generation, users } (./snapshot.ts)
//   journal.N         the changes since that snapshot (JSON text sequence, ./journal.ts),
//                     read and appended by ./journals.ts, folded by ./compaction.ts
//   keys/SHA256.asc   each stored public key, by the SHA-256 of its armor (./keys.ts)
//
// The layout and why: see the comment at the top of ./index.ts. The folder is made (or
// converted from registry.json) by ./folder.ts; this class follows it and writes to it.
import { watch, type FSWatcher } from 'node:fs';
import path from 'node:path';
import type { Logger } from '../config/log.js';
import type { User } from './types.js';
import type { Op } from './ops.js';
import { EngineBase, REFRESH_MS, type KeyChange, type UserChange } from './engine.js';
import { Journals, type Written } from './journals.js';
import { SnapshotStore } from './snapshot.js';
import { KeyFiles } from './keys.js';
import { Compactor } from './compaction.js';
import { ensureFolder } from './folder.js';
import { noSuchUser, refusal } from './refusals.js';

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

export class LowdbRegistry extends EngineBase {
  readonly location: string;
  private readonly journals: Journals;
  private readonly keys: KeyFiles;
  private readonly compactor: Compactor;
  private timer: NodeJS.Timeout | null = null;
  private watcher: FSWatcher | null = null;

  private constructor(
    readonly dir: string,
    private readonly opts: OpenOptions,
  ) {
    super(opts.logger);
    this.location = dir;
    this.keys = new KeyFiles(path.join(dir, 'keys'));
    this.journals = new Journals(dir, new SnapshotStore(dir), opts.logger, () => this.catchUp());
    this.compactor = new Compactor(this.journals, this.keys, opts.logger, opts.compactBytes);
  }

  protected get state() {
    return this.journals.state;
  }

  static async open(opts: OpenOptions): Promise<LowdbRegistry> {
    const dir = await ensureFolder(opts.dataDir, opts.logger, opts.beforeCreate);
    const reg = new LowdbRegistry(dir, opts);
    try {
      await reg.journals.load(true);
    } catch (err) {
      await reg.close();
      throw err;
    }
    if (opts.follow) reg.follow();
    return reg;
  }

  // --- reading -----------------------------------------------------------------------

  protected pass(): Promise<boolean> {
    return this.journals.drain(false);
  }

  protected override caughtUp(): void {
    if (this.opts.compact && !this.closed) this.compactor.maybe();
  }

  /**
   * Catches up with the journal; one run at a time, and a request during a run gets
   * another. Waits for this process's fsyncs in flight first: records of others queued
   * behind one of ours are then read too (an RCPT for a user the CLI just added).
   */
  async refresh(): Promise<boolean> {
    if (this.journals.syncing.size) await Promise.allSettled([...this.journals.syncing]);
    return this.catchUp();
  }

  private follow(): void {
    const tick = () => this.tick('the registry is readable again');
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
    this.journals.stop();
    if (this.timer) clearInterval(this.timer);
    this.watcher?.close();
    await this.settled();
    await this.compactor.settled();
    await this.journals.close();
  }

  publicKey(user: User): Promise<string> {
    return this.keys.read(user);
  }

  // --- writing -----------------------------------------------------------------------

  protected storeKey(armored: string): Promise<string> {
    return this.keys.store(armored);
  }

  /** Appends a change to one user; the user as it left them. */
  private async write(op: Op & { user: string }): Promise<Written & { ok: true }> {
    const out = await this.journals.append(op);
    if (!out.ok) throw refusal(out.code, op.user);
    return out;
  }

  /** Removes the key file of a record no account refers to any more. */
  private async dropKey(old: User): Promise<void> {
    // A key file is named by the armor, which names its fingerprint: only the account
    // holding that fingerprint now (if any) can refer to it.
    const holder = this.findByFingerprint(old.fingerprint);
    if (holder && holder.keyId === old.keyId) return;
    await this.keys.drop(old.keyId);
  }

  protected async insert(user: User, armored: string): Promise<User | null> {
    const out = await this.journals.append({ op: 'add', user });
    if (!out.ok) {
      if (out.code === 'duplicate-username') return null;
      throw refusal(out.code, '');
    }
    await this.keys.keep(out.user!, armored);
    return out.user!;
  }

  protected async changeUser(op: UserChange): Promise<User> {
    const out = await this.write(op);
    if (!out.user) throw noSuchUser('');
    return out.user;
  }

  protected async changeKey(op: KeyChange, armored: string): Promise<User> {
    const out = await this.write(op);
    if (out.previous && out.previous.keyId !== op.keyId) await this.dropKey(out.previous);
    await this.keys.keep(out.user!, armored);
    return out.user!;
  }

  /**
   * Deletes an account and every trace of it in the registry: its key file, and the
   * journal records that named it (two compactions: the journal holding the removal is
   * sealed into a snapshot, then removed by the next one). Costs a snapshot write.
   */
  protected async removeUser(username: string): Promise<void> {
    const out = await this.write({ op: 'remove', user: username });
    if (out.previous) await this.dropKey(out.previous);
    for (let done = 0, tries = 0; done < 2 && tries < 20; tries++) if (await this.compact()) done++;
  }

  /** Folds the journal into a new snapshot now (see ./compaction.ts); true if this process wrote it. */
  compact(): Promise<boolean> {
    return this.compactor.run();
  }
}
