// Running the copies of one message: one source read once by several copies (fanOut), and
// the copies run a few at a time, all or nothing (allOrFirstFailure).
/**
 * One source read once by `n` readers, each of which sees every chunk: a chunk is read from the
 * source when the first reader asks for it, and no reader gets more than one chunk ahead of the
 * slowest, so at most two chunks are held whatever the readers' speeds. A reader that stops
 * early no longer holds the others back. Waits end with the signal's reason.
 */
export function fanOut(source: AsyncIterator<Uint8Array>, n: number, signal: AbortSignal): Array<AsyncGenerator<Uint8Array>> {
  const asked = new Array<number>(n).fill(0);
  const rounds = new Map<number, { result: Promise<IteratorResult<Uint8Array>>; left: number }>();
  const waiters: Array<() => void> = [];
  const changed = () => {
    for (const w of waiters.splice(0)) w();
  };
  signal.addEventListener('abort', changed, { once: true });
  const take = async (i: number, r: number): Promise<IteratorResult<Uint8Array>> => {
    asked[i] = r;
    changed();
    while (r > Math.min(...asked) + 1) {
      signal.throwIfAborted();
      await new Promise<void>((resolve) => waiters.push(resolve));
    }
    signal.throwIfAborted();
    let round = rounds.get(r);
    if (!round) {
      const result = source.next();
      result.catch(() => undefined); // thrown to every reader that awaits it
      round = { result, left: n };
      rounds.set(r, round);
    }
    if (--round.left === 0) rounds.delete(r);
    return round.result;
  };
  const reader = async function* (i: number): AsyncGenerator<Uint8Array> {
    try {
      for (let r = 0; ; r++) {
        const { value, done } = await take(i, r);
        if (done) return;
        yield value;
      }
    } finally {
      asked[i] = Infinity;
      changed();
    }
  };
  return Array.from({ length: n }, (_, i) => reader(i));
}

/**
 * Runs `run` for every index, at most `limit` at a time. The first failure aborts `abort` (the
 * running copies stop before their next write, the rest never start); every started run is
 * waited for before the first failure is thrown.
 */
export async function allOrFirstFailure(count: number, limit: number, abort: AbortController, run: (i: number, signal: AbortSignal) => Promise<void>): Promise<void> {
  let next = 0;
  let failure: { err: unknown } | null = null;
  const worker = async () => {
    while (!abort.signal.aborted && next < count) {
      const i = next++;
      try {
        await run(i, abort.signal);
      } catch (err) {
        if (!failure) failure = { err: abort.signal.aborted ? (abort.signal.reason ?? err) : err };
        if (!abort.signal.aborted) abort.abort(err);
      }
    }
  };
  await Promise.allSettled(Array.from({ length: Math.min(limit, count) }, worker));
  if (abort.signal.aborted && !failure) failure = { err: abort.signal.reason };
  if (failure) throw (failure as { err: unknown }).err;
}
