// The commit step of a fetch: delivered messages go into the delivery record (one fsync a
// batch), then to the server in one acknowledgement.
import type { FetchDeps, FetchResult } from './fetch.js';

/**
 * What is delivered but not yet acknowledged, committed in batches: the ids go into the
 * delivery record (one fsync), then to the server in one acknowledgement. A batch starts as
 * soon as one delivery ends; deliveries ending meanwhile wait for the next one.
 */
export class Committer {
  private pending: Array<{ id: string; size: number; earlier: boolean }> = [];
  private running: Promise<void> | null = null;
  failure: { err: unknown } | null = null;

  constructor(
    private readonly d: FetchDeps,
    private readonly result: FetchResult,
    private readonly progressed: (n: number) => void,
  ) {}

  /** `id` is delivered and durable (earlier: by an earlier run, already in the record). */
  add(id: string, size: number, earlier: boolean): void {
    this.pending.push({ id, size, earlier });
    this.running ??= this.loop().finally(() => {
      this.running = null;
    });
  }

  private async loop(): Promise<void> {
    while (this.pending.length > 0 && this.failure === null) {
      const batch = this.pending.splice(0);
      try {
        await this.d.record.addMany(batch.filter((b) => !b.earlier).map((b) => b.id));
        if (process.env.KZYMY_CLIENT_CRASH_AFTER_DELIVERY === '1') {
          // FAULT INJECTION for tests only: die hard after delivery and before acknowledgement,
          // the window the delivery record exists for.
          process.kill(process.pid, 'SIGKILL');
        }
        await this.d.session.acknowledgeMany(batch.map((b) => b.id));
      } catch (err) {
        this.failure = { err };
        return;
      }
      for (const b of batch) {
        if (b.earlier) this.result.acknowledgedOnly++;
        else {
          this.result.delivered++;
          this.result.bytes += b.size;
        }
      }
      this.progressed(batch.length);
    }
  }

  /** Resolves once everything added is committed; throws what stopped the commits. */
  async flush(): Promise<void> {
    while (this.running) await this.running;
    if (this.failure) throw this.failure.err;
  }
}
