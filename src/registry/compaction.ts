// Compaction of the lowdb engine: when the journal outgrows half the snapshot (and at least
// a minimum), it is sealed (writers continue in the next journal at once), the state as of
// the seal becomes a new snapshot, written in the background, and journals that no reader
// within one generation needs are removed, as are key files no account refers to.
import { readdir, unlink } from 'node:fs/promises';
import path from 'node:path';
import type { Logger } from '../config/log.js';
import type { Journals } from './journals.js';
import type { KeyFiles } from './keys.js';
import { Mutex } from './mutex.js';

/** A journal is folded into a new snapshot once it is this big, or half the snapshot's size if that is more. */
const COMPACT_MIN_BYTES = 4 * 1024 * 1024;

export class Compactor {
  /** One compaction at a time in this process (the background one, or an account deletion's). */
  private readonly lock = new Mutex();
  private running: Promise<void> | null = null;

  constructor(
    private readonly journals: Journals,
    private readonly keys: KeyFiles,
    private readonly logger: Logger | undefined,
    /** Compaction threshold in bytes, instead of COMPACT_MIN_BYTES (tests). */
    private readonly minBytes = COMPACT_MIN_BYTES,
  ) {}

  /** Starts a compaction in the background if the journal is due one and none is running. */
  maybe(): void {
    if (this.running) return;
    const threshold = Math.max(this.minBytes, this.journals.snapshot.bytes / 2);
    if (this.journals.offset < threshold) return;
    this.running = this.run()
      .then(() => undefined)
      .catch((err) => this.logger?.warn({ evt: 'registry-compact-failed', err }))
      .finally(() => {
        this.running = null;
      });
  }

  /** The background compaction, if one runs, finished. */
  async settled(): Promise<void> {
    await this.running;
  }

  /**
   * Folds the journal into a new snapshot; true if this process wrote it. Sealed once: if
   * another process sealed this journal first, that one compacts it. Nothing waits for it.
   */
  run(): Promise<boolean> {
    return this.lock.run(async () => {
      const cap = await this.journals.seal();
      if (!cap) return false;
      const { users } = cap;
      // The state as of the end of journal cap.gen: the snapshot is the start of the next.
      const generation = cap.gen + 1;
      const snapshot = this.journals.snapshot;
      if ((await snapshot.generation().catch(() => 0)) >= generation) return false;
      await snapshot.write(generation, users);
      // The journal just sealed stays one generation more, for a reader still in it.
      for (const name of await readdir(this.journals.dir)) {
        const m = /^journal\.(\d+)$/.exec(name);
        if (m && Number(m[1]) <= generation - 2) await unlink(path.join(this.journals.dir, name)).catch(() => undefined);
      }
      await this.keys.collect(this.journals.state.byName.values());
      return true;
    });
  }
}
