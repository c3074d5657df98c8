// Feeds one plaintext stream to several consumers (one encryptor per recipient) with
// backpressure: the source is read no faster than the slowest consumer takes it, so
// memory stays bounded whatever the message size. Hand-written because Node has no tee
// for its own streams, and web streams' tee() buffers without bound for the slower branch.
import { PassThrough, type Readable } from 'node:stream';
import { once } from 'node:events';

export function fanOut(source: AsyncIterable<Uint8Array>, count: number, highWaterMark = 256 * 1024): Readable[] {
  const outs = Array.from({ length: count }, () => new PassThrough({ highWaterMark }));
  let aborted = false;
  let stop: () => void = () => undefined;
  const stopped = new Promise<void>((resolve) => (stop = resolve));
  const abort = (err: Error) => {
    if (aborted) return;
    aborted = true;
    stop();
    for (const o of outs) o.destroy(err);
  };
  for (const o of outs) {
    o.on('error', abort);
    // A branch destroyed without an error never drains: it ends the fan-out like an error would.
    o.on('close', () => {
      if (!o.writableFinished) abort(new Error('a consumer of the message stream went away'));
    });
  }
  void (async () => {
    try {
      for await (const chunk of source) {
        if (aborted) return;
        const waits: Promise<unknown>[] = [];
        for (const o of outs) if (!o.write(chunk)) waits.push(once(o, 'drain'));
        if (waits.length) await Promise.race([Promise.all(waits), stopped]);
        if (aborted) return;
      }
      for (const o of outs) o.end();
    } catch (err) {
      abort(err instanceof Error ? err : new Error(String(err)));
    }
  })();
  return outs;
}
