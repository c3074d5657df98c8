// The memory budget: one per process, shared by every SMTP session. A transaction takes a lease
// on the bytes it may hold (its plaintext and its encryptors' working sets) before it reads its
// data; while the budget is spent it waits, first come first served, and does not read: the
// sender's bytes wait in the kernel's socket buffers, not in this process.
//
// Only a transaction that holds no lease waits, and a lease never asks for more than the whole
// budget, so the queue always moves once the leases before it end.

export class MemoryBudget {
  private used = 0;
  private readonly queue: Array<{ bytes: number; grant: () => void }> = [];

  constructor(readonly limit: number) {}

  get inUse(): number {
    return this.used;
  }

  /** Waits for `bytes` (at most the whole budget); rejects if `signal` aborts first. */
  async acquire(bytes: number, signal?: AbortSignal): Promise<Lease> {
    const want = Math.max(0, Math.min(bytes, this.limit));
    signal?.throwIfAborted();
    if (this.queue.length === 0 && this.used + want <= this.limit) {
      this.used += want;
      return new Lease(this, want);
    }
    await new Promise<void>((resolve, reject) => {
      const entry = {
        bytes: want,
        grant: () => {
          signal?.removeEventListener('abort', onAbort);
          resolve();
        },
      };
      const onAbort = () => {
        const i = this.queue.indexOf(entry);
        if (i >= 0) this.queue.splice(i, 1);
        reject(signal!.reason as Error);
        this.pump();
      };
      signal?.addEventListener('abort', onAbort, { once: true });
      this.queue.push(entry);
    });
    return new Lease(this, want);
  }

  /** Gives `bytes` back and lets waiting transactions in, in order. */
  giveBack(bytes: number): void {
    this.used = Math.max(0, this.used - bytes);
    this.pump();
  }

  private pump(): void {
    while (this.queue.length > 0 && this.used + this.queue[0]!.bytes <= this.limit) {
      const next = this.queue.shift()!;
      this.used += next.bytes;
      next.grant();
    }
  }
}

export class Lease {
  constructor(
    private readonly budget: MemoryBudget,
    private held: number,
  ) {}

  get bytes(): number {
    return this.held;
  }

  /** Keeps only `bytes` of the lease (once the transaction knows it needs less). */
  shrinkTo(bytes: number): void {
    if (bytes >= this.held) return;
    const back = this.held - Math.max(0, bytes);
    this.held -= back;
    this.budget.giveBack(back);
  }

  release(): void {
    this.shrinkTo(0);
  }
}
