// The journal's framing: JSON text sequences (RFC 7464). Each record is written as
// RS (0x1E), one line of JSON, LF, in a single append. JSON.stringify never emits a raw
// RS or LF, so a record is complete exactly when its JSON is followed by LF before the
// next RS. A crash mid-append leaves a prefix without that LF: the record is void, and
// the next writer's RS starts a clean record after it. Complete records that do not
// parse are damage, never the trace of a crash. Written by hand: RFC 7464 is a few
// lines, and the parsers on npm stream objects without the offsets the reader needs.
import type { FileHandle } from 'node:fs/promises';

const RS = 0x1e;
const LF = 0x0a;

export function frame(record: unknown): Buffer {
  return Buffer.from(`\x1e${JSON.stringify(record)}\n`, 'utf8');
}

export type Chunk =
  /** A complete record; `end` is the offset just after it. */
  | { kind: 'record'; value: unknown; start: number; end: number }
  /** A record cut short by a crash (another record follows it): void. */
  | { kind: 'torn'; start: number; end: number }
  /** A complete record that is not JSON: the file is damaged here. */
  | { kind: 'damaged'; start: number; end: number };

/**
 * Splits `buf` (the file's bytes from offset `base`, which is a record boundary) into
 * chunks. Bytes after the last complete record that may still be growing (an append in
 * flight, or a crash's leftover with nothing after it yet) are not returned; `next` is
 * where the caller reads again.
 */
export function parse(buf: Buffer, base: number): { chunks: Chunk[]; next: number } {
  const chunks: Chunk[] = [];
  let i = buf.indexOf(RS);
  if (i < 0) return { chunks, next: base };
  if (i > 0) chunks.push({ kind: 'torn', start: base, end: base + i });
  for (;;) {
    const after = buf.indexOf(RS, i + 1);
    if (after < 0) {
      // The last record: complete only if it ends in LF.
      if (buf[buf.length - 1] === LF) {
        chunks.push(decode(buf, i, buf.length, base));
        return { chunks, next: base + buf.length };
      }
      return { chunks, next: base + i };
    }
    if (buf[after - 1] === LF) chunks.push(decode(buf, i, after, base));
    else chunks.push({ kind: 'torn', start: base + i, end: base + after });
    i = after;
  }
}

function decode(buf: Buffer, start: number, end: number, base: number): Chunk {
  try {
    return { kind: 'record', value: JSON.parse(buf.toString('utf8', start + 1, end - 1)), start: base + start, end: base + end };
  } catch {
    return { kind: 'damaged', start: base + start, end: base + end };
  }
}

/** Reads `fh` from `offset` to its current end. */
export async function readFrom(fh: FileHandle, offset: number): Promise<Buffer> {
  const { size } = await fh.stat();
  if (size <= offset) return Buffer.alloc(0);
  const buf = Buffer.allocUnsafe(size - offset);
  let got = 0;
  while (got < buf.length) {
    const { bytesRead } = await fh.read(buf, got, buf.length - got, offset + got);
    if (bytesRead === 0) break;
    got += bytesRead;
  }
  return buf.subarray(0, got);
}
