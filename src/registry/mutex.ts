// A promise-chain mutex for the lowdb engine's appends and compactions.

/** One holder at a time, in arrival order; a holder that fails does not stop the next one. */
export class Mutex {
  private tail: Promise<unknown> = Promise.resolve();
  run<T>(fn: () => Promise<T>): Promise<T> {
    const run = this.tail.then(fn);
    this.tail = run.catch(() => undefined);
    return run;
  }
}
