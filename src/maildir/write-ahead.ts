// Writes a stream of chunks into an open file with several writes in flight: the next chunks
// are made (encrypted) while earlier ones are still being written. Chunks are gathered into
// one writev of about WRITE_BATCH_BYTES (a system call costs more than the bytes it copies);
// each write is positioned, so the order in which they land does not matter; at most
// WRITE_AHEAD_BYTES are held at once.
// Hand-written: fs.WriteStream writes one chunk at a time and closes the handle itself, and
// the caller must fsync before close.
import type { FileHandle } from 'node:fs/promises';

/** Bytes written but not yet landed, at most (the chunks are held in memory meanwhile). */
export const WRITE_AHEAD_BYTES = 1024 * 1024;
/** Bytes gathered into one write. */
export const WRITE_BATCH_BYTES = 256 * 1024;

export interface WriteHooks {
  /** Before a chunk is written: a throw stops the writing. */
  beforeWrite?(bytes: number): void | Promise<void>;
  /** Once a chunk's write has landed (never for one that failed). */
  afterWrite?(bytes: number): void;
  /** Checked before each chunk: a throw stops the writing. */
  check?(): void;
  /** Zero each chunk once its write has ended (or once it is left unwritten): it may be plaintext. */
  wipe?: boolean;
}

/** Writes all of `parts` from `position` (a write may take only part of them). */
async function writeAllAt(fh: FileHandle, parts: Uint8Array[], position: number): Promise<void> {
  let bytes = parts[0]!;
  let copy: Buffer | null = null;
  if (parts.length > 1) {
    const total = parts.reduce((n, p) => n + p.byteLength, 0);
    const { bytesWritten } = await fh.writev(parts, position);
    if (bytesWritten === total) return;
    copy = Buffer.concat(parts);
    bytes = copy.subarray(bytesWritten); // rare: the rest one write at a time
    position += bytesWritten;
  }
  try {
    for (let offset = 0; offset < bytes.byteLength; ) {
      const { bytesWritten } = await fh.write(bytes, offset, bytes.byteLength - offset, position + offset);
      offset += bytesWritten;
    }
  } finally {
    copy?.fill(0); // this function's own copy of the chunks
  }
}

function zero(parts: Uint8Array[]): void {
  for (const p of parts) p.fill(0);
}

/**
 * Writes every chunk of `source` from offset 0 of `fh`; resolves with the size once every
 * write has landed. On any failure it waits for the writes in flight to end before it
 * throws, so the caller may close and remove the file at once. A chunk's memory must not be
 * reused by the source once it is yielded: it may still be written after the next one.
 */
export async function writeAhead(fh: FileHandle, source: AsyncIterable<Uint8Array | string>, hooks: WriteHooks = {}): Promise<number> {
  const inFlight = new Set<Promise<void>>();
  let ahead = 0;
  let position = 0;
  let failure: { err: unknown } | null = null;
  let batch: Uint8Array[] = [];
  let batchBytes = 0;
  /** Starts the write of the chunks gathered so far. */
  const issue = (): void => {
    if (batch.length === 0) return;
    const parts = batch;
    const n = batchBytes;
    const at = position - n;
    batch = [];
    batchBytes = 0;
    const write: Promise<void> = writeAllAt(fh, parts, at)
      .then(
        () => hooks.afterWrite?.(n),
        (err: unknown) => {
          failure ??= { err };
        },
      )
      .finally(() => {
        if (hooks.wipe) zero(parts);
        inFlight.delete(write);
        ahead -= n;
      });
    inFlight.add(write);
  };
  const failed = (): { err: unknown } | null => failure; // set by a write's callback
  try {
    for await (const chunk of source) {
      const bytes = typeof chunk === 'string' ? Buffer.from(chunk) : chunk;
      hooks.check?.();
      const f = failed();
      if (f) throw f.err;
      const n = bytes.byteLength;
      await hooks.beforeWrite?.(n);
      batch.push(bytes);
      batchBytes += n;
      position += n;
      ahead += n;
      if (batchBytes >= WRITE_BATCH_BYTES) issue();
      while (ahead > WRITE_AHEAD_BYTES && inFlight.size > 0 && failed() === null) await Promise.race(inFlight);
    }
    issue();
  } finally {
    if (hooks.wipe) zero(batch); // gathered but never issued (a failure came first)
    await Promise.all(inFlight);
  }
  if (failure) throw (failure as { err: unknown }).err;
  return position;
}
