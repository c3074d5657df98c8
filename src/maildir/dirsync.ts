// Group commit for directory fsyncs (kzymy's own Maildir code).
//
// Every delivery must fsync new/ after its rename. At ~1,000 deliveries
// a second most of those fsyncs would be redundant: one fsync that *starts* after a
// rename has completed makes that rename durable. So callers share syncs: when none is
// running, a sync starts at once; while one runs, later callers all wait for a single
// follow-up sync that starts when the running one ends (the running one may have begun
// before their rename, so it cannot count for them).
import { fsyncPath } from '../config/durable.js';

export class DirSyncer {
  private running: Promise<void> | null = null;
  private next: Promise<void> | null = null;

  constructor(readonly dir: string) {}

  /** Resolves once an fsync of `dir` that began after this call has finished. */
  sync(): Promise<void> {
    if (this.running === null) return this.start();
    if (this.next === null) {
      const after = this.running.then(
        () => undefined,
        () => undefined,
      );
      this.next = after.then(() => {
        this.next = null;
        return this.start();
      });
    }
    return this.next;
  }

  private start(): Promise<void> {
    const p: Promise<void> = fsyncPath(this.dir).finally(() => {
      if (this.running === p) this.running = null;
    });
    this.running = p;
    return p;
  }
}
