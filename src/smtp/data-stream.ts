// smtp-server's DATA parser (SMTPStream._feedDataStream), rewritten to behave identically
// but without a JavaScript loop over every byte: src/smtp/patches.ts installs it (patch 4).
// Hand-written because smtp-server has no option for another parser and no library parses
// the inside of its stream.
//
// What smtp-server 3.21.6 does, and so what this does, byte for byte:
// - It holds back the last 4 bytes of what it was given (all of it while fewer than 4),
//   since they may begin a terminator or a stuffed dot, and emits the rest at once;
//   `dataBytes`, the stream's `byteLength` and `sizeExceeded` count what was emitted.
// - The message ends at "\r\n.\r\n" (the CRLF before the dot belongs to the message), or
//   at ".\r\n" as its very first bytes. A bare "\n.\n" or "\n.\r\n" ends nothing.
// - A dot that starts a line (follows "\n", bare or not) and is followed by another dot is
//   removed; so is the first of two dots that open the message. A stuffed dot at offset 1
//   (the message opens "\n..") stays, as in smtp-server, whose scan starts at offset 2.
// - Whatever follows the terminator goes back to the command parser (pipelining).
// Instead of copying the held-back bytes in front of every chunk, they are kept apart and
// read through `at`, and what is emitted are views (subarrays) of the chunks received.

import type { PassThrough } from 'node:stream';

type Done = (err?: Error | null) => void;

/** The members of smtp-server's SMTPStream that its DATA parser reads and writes. */
export interface DataParser {
  _dataStream: (PassThrough & { byteLength: number; sizeExceeded: boolean }) | null;
  _atDataStart: boolean;
  _lastBytes: Buffer | false;
  _countDataBytes(len: number): void;
  _endDataMode(chunk: Buffer | false, remainder: Buffer, callback: Done): void;
}

const CR = 0x0d;
const LF = 0x0a;
const DOT = 0x2e;
/** How many bytes smtp-server holds back at the end of what it has seen. */
const HOLD = 4;
const EMPTY = Buffer.alloc(0);

/** Replacement for SMTPStream.prototype._feedDataStream (same contract: one chunk, then `done`). */
export function feedDataStream(this: DataParser, chunk: Buffer, done: Done): void {
  const out = this._dataStream!;
  // The bytes seen are `held` followed by `chunk`; offsets below count from the start of `held`.
  const held = this._lastBytes && this._lastBytes.length ? this._lastBytes : EMPTY;
  this._lastBytes = false;
  const h = held.length;
  const n = h + chunk.length;
  const at = (k: number): number => (k < h ? held[k]! : chunk[k - h]!);
  /** Bytes [a, b) as views: at most one of `held`, one of `chunk`. */
  const pieces = (a: number, b: number): Buffer[] => {
    const p: Buffer[] = [];
    if (a < h) p.push(held.subarray(a, Math.min(b, h)));
    if (b > h) p.push(chunk.subarray(Math.max(a, h) - h, b - h));
    return p;
  };
  /** Bytes [a, n) as one Buffer (copies only when they start in the few held bytes). */
  const from = (a: number): Buffer => (a >= h ? chunk.subarray(a - h) : Buffer.concat([held.subarray(a), chunk]));
  let ok = true;
  const emit = (a: number, b: number): void => {
    this._countDataBytes(b - a);
    if (!out.writable) return;
    for (const p of pieces(a, b)) ok = out.write(p) && ok;
  };

  // smtp-server goes on after each stuffed dot in a setImmediate, so the end of the message
  // and the chunk's `done` come in a later turn of the event loop than the chunk itself
  // whenever a dot was removed, and in the same turn otherwise. This keeps to that (with one
  // setImmediate, not one a dot): smtp-server's continue() forgets a message end that comes
  // within it, so what runs in which turn matters for pipelined mail.
  let stuffed = false;
  const later = (fn: () => void): void => {
    if (stuffed) setImmediate(fn);
    else fn();
  };
  let s = 0; // the first byte not yet emitted
  if (this._atDataStart) {
    if (n >= 3 && at(0) === DOT && at(1) === CR && at(2) === LF) return this._endDataMode(false, from(3), done);
    if (n >= 2 && at(0) === DOT && at(1) === DOT) {
      s = 1;
      this._atDataStart = false;
    }
  }
  // A dot at offset i (s + 2 <= i <= n - 3: smtp-server looks at the two bytes before and
  // after it) that follows "\n" is a terminator or a stuffing dot, or else plain content.
  let i = s + 2;
  const last = n - 3;
  while (i <= last) {
    if (i < h) {
      if (held[i] !== DOT) {
        i++;
        continue;
      }
    } else {
      const q = chunk.indexOf(DOT, i - h);
      if (q < 0 || q + h > last) break;
      i = q + h;
    }
    if (at(i - 1) !== LF) {
      i++;
      continue;
    }
    if (at(i - 2) === CR && at(i + 1) === CR && at(i + 2) === LF) {
      const a = s;
      const b = i;
      return later(() => {
        const body = pieces(a, b);
        this._countDataBytes(b - a);
        const end = body.pop()!;
        if (out.writable) for (const p of body) out.write(p);
        this._endDataMode(end, from(b + 3), done);
      });
    }
    if (at(i + 1) === DOT) {
      emit(s, i);
      s = i + 1; // the next dot is content
      i = s + 2;
      stuffed = true;
      continue;
    }
    i++;
  }
  const a = s;
  later(() => {
    const keep = Math.min(HOLD, n - a);
    const rest = n - keep;
    this._lastBytes = from(rest);
    if (rest > a) emit(a, rest);
    if (ok || out.destroyed) return done();
    // A stream the application destroys never drains, it only closes.
    const onDrain = (): void => {
      out.removeListener('drain', onDrain);
      out.removeListener('close', onDrain);
      done();
    };
    out.once('drain', onDrain);
    out.once('close', onDrain);
  });
}
