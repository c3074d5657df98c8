// The journals of one registry folder as one process reads and appends to them: the state
// of snapshot.json plus every complete record of journal.N after it, following seals into
// journal.N+1 and, when it fell behind past a compaction, a newer snapshot. An append
// resolves once its record is durable and applied here, with the record's outcome.
import { open, type FileHandle } from 'node:fs/promises';
import { randomBytes } from 'node:crypto';
import path from 'node:path';
import type { Logger } from '../config/log.js';
import { appendAll, fsyncPath } from '../config/durable.js';
import type { User } from './types.js';
import { State, adoptUser, apply, asRecord, type JournalRecord, type Op, type Outcome } from './ops.js';
import { frame, parse, readFrom } from './journal.js';
import { asWriteError, damaged, exists } from './files.js';
import { journalName, type SnapshotStore } from './snapshot.js';
import { Mutex } from './mutex.js';

export type Written = Outcome & { id: string };
/** The users as of a seal this process wrote, and the generation of the journal it ended. */
export interface Capture {
  gen: number;
  users: User[];
}
type Waiter = { resolve: (o: Outcome | 'sealed') => void };

export class Journals {
  state = new State();
  /** The generation of the journal being read, and how far it has been read. */
  gen = 0;
  offset = 0;
  private fh: FileHandle | null = null;
  private readonly appendLock = new Mutex();
  private readonly waiters = new Map<string, Waiter>();
  /** This process's records that are written but not yet fsynced: readers stop before them. */
  private readonly unsynced = new Set<string>();
  /** Their fsyncs in flight: a refresh waits for them, so that it never stops short behind one. */
  readonly syncing = new Set<Promise<void>>();
  private readonly captures = new Map<string, Capture>();
  /** Handles of sealed journals: closed a little later (a writer may still fsync on one), or at close(). */
  private readonly retired = new Set<FileHandle>();
  private stopped = false;

  /** `catchUp` reads what others appended; it is called after each append, not awaited. */
  constructor(
    readonly dir: string,
    readonly snapshot: SnapshotStore,
    private readonly logger: Logger | undefined,
    private readonly catchUp: () => Promise<unknown>,
  ) {}

  journalPath(gen: number): string {
    return path.join(this.dir, journalName(gen));
  }

  /** Builds the state from snapshot.json and the journals after it. */
  async load(strict: boolean): Promise<void> {
    await this.reset();
    await this.drain(strict);
  }

  /**
   * Takes the state of snapshot.json, to be followed by its journal. Called at open, and
   * (under the append lock) by a reader that fell behind past a compaction.
   */
  private async reset(): Promise<void> {
    let snap = await this.snapshot.read();
    // Its journal went meanwhile (compactions while this process opened): read the newer one.
    while (!(await exists(this.journalPath(snap.generation))) && (await this.snapshot.generation()) !== snap.generation) snap = await this.snapshot.read();
    const state = new State();
    for (const raw of snap.users) {
      const u = adoptUser(raw);
      if (!u) throw damaged(this.snapshot.file, 'holds a user record that is not valid');
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
   * state changed. Not strict: an unreadable record is logged and skipped.
   */
  async drain(strict: boolean): Promise<boolean> {
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
          this.logger?.error({ evt: 'registry-damaged', file: this.journalPath(this.gen), at: c.start }, 'skipped an unreadable registry record');
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
      if (!(await exists(this.journalPath(next))) && (await this.snapshot.generation()) > next) {
        // Fallen behind past a compaction that removed that journal: start over from the snapshot.
        this.logger?.warn({ evt: 'registry-reload' }, 'fell behind the registry journal; reading the snapshot again');
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
   * Appends `op`, waits until it is durable and applied, and returns its outcome. A record
   * that a seal made void is written again in the next journal, unless `once`: then null.
   */
  async append(op: Op): Promise<Written>;
  async append(op: Op, once: true): Promise<Written | null>;
  async append(op: Op, once = false): Promise<Written | null> {
    if (this.stopped) throw new Error('the registry is closed');
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

  /** Seals the current journal; the state as of the seal, or null if another process sealed it first. */
  async seal(): Promise<Capture | null> {
    const out = await this.append({ op: 'seal' }, true);
    const cap = out && this.captures.get(out.id);
    if (out) this.captures.delete(out.id);
    return cap ?? null;
  }

  /** Refuses appends from now on. */
  stop(): void {
    this.stopped = true;
  }

  /** Closes the journal handles, once the appends in flight are written. */
  async close(): Promise<void> {
    this.stopped = true;
    await this.appendLock.run(async () => {
      await this.fh?.close().catch(() => undefined);
      this.fh = null;
      for (const fh of this.retired) await fh.close().catch(() => undefined);
      this.retired.clear();
    });
  }
}
