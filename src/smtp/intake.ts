// The data path: DATA -> per-recipient PGP/MIME encryption -> Maildir.
// A message up to limits.memoryBufferBytes is read into memory once (one plaintext per
// transaction, however many recipients). A larger one to at most COPIES_AT_ONCE recipients is
// encrypted for each of them as it arrives, every copy reading the same chunks (fan-out.ts) straight
// into its file; to more recipients it is written to a spool that holds it encrypted under a key
// kept in memory only (spool.ts), as it arrives, and the copies are then made from the spool a few
// at a time (COPIES_AT_ONCE), each streaming through openpgp into its file, so memory does not
// grow with the number of recipients. Plaintext never reaches a file.
// What each copy encrypts is its delivery headers + the message, sealed with protected headers
// so that mail clients show the original's Subject and From (copies.ts, src/pgp/seal.ts; the
// header section is held per copy, at most HEADER_SECTION_MAX, inside ENCRYPTOR_BYTES).
// Memory: a transaction first takes a lease on the process-wide budget (limits.memoryBudgetBytes)
// for what it may hold, and waits, without reading, while the budget is spent.
// Space: every copy reserves its bytes in the process-wide ledger as it writes them (space.ts).
// The caller answers 250 only after deliverMessage() has resolved, i.e. after every copy and
// its directory entry were fsynced. All or nothing: on any failure the other copies are stopped,
// every branch is waited for, and every copy stored is removed before the promise rejects, so
// the sender's retry does not duplicate anything.
import { randomBytes } from 'node:crypto';
import { setMaxListeners } from 'node:events';
import { PassThrough, type Readable } from 'node:stream';
import type { Config } from '../config/index.js';
import type { Logger } from '../config/log.js';
import type { Registry } from '../registry/index.js';
import type { KeyCache } from '../pgp/index.js';
import type { MaildirStore } from '../maildir/index.js';
import { Copies, type Envelope, type Recipient } from './copies.js';
import { allOrFirstFailure, fanOut } from './fan-out.js';
import type { MemoryBudget } from './memory.js';
import { ciphertextEstimate, type Space, type SpaceHold } from './space-hold.js';
import { reply } from './replies.js';
import { Spool } from './spool.js';

/**
 * Working set of one openpgp encryption in flight, fed ENCRYPT_SLICE_BYTES (64 KiB) slices: openpgp's
 * own stream stages read ahead several slices (measured 2 to 3.5 MB live after a GC with 32 KiB
 * slices, 5 MB at its worst).
 */
export const ENCRYPTOR_BYTES = 4 * 1024 * 1024;
/** Copies of one message encrypted at the same time, whatever the number of recipients. */
export const COPIES_AT_ONCE = 4;
/** Plaintext buffered by the streamed path besides the encryptors: our PassThrough. */
const STREAM_BUFFER_BYTES = 256 * 1024;
/** A socket chunk may carry the head past its limit by this much. */
const CHUNK_BYTES = 64 * 1024;
/** Delivery headers, at most (Return-Path, Delivered-To, Received with bounded fields). */
const HEADER_BYTES = 2048;

/** Bytes an in-memory transaction of `size` bytes to `n` recipients holds at most. */
export function memoryPathBytes(size: number, n: number): number {
  return size + Math.min(COPIES_AT_ONCE, n) * ENCRYPTOR_BYTES;
}

/** Bytes a spooled transaction to `n` recipients holds at most, with the head it has read. */
export function streamPathBytes(head: number, n: number): number {
  return head + STREAM_BUFFER_BYTES + Math.min(COPIES_AT_ONCE, n) * ENCRYPTOR_BYTES;
}

export interface IntakeDeps {
  config: Config;
  maildir: MaildirStore;
  keys: KeyCache;
  /** Where the recipients' public keys are read on a KeyCache miss. */
  registry: Pick<Registry, 'publicKey'>;
  logger: Logger;
  /** Server-wide: bytes in flight against quota and disk floor. */
  space: Space;
  /** Process-wide: bytes held in memory by transactions. */
  memory: MemoryBudget;
}

export class MessageTooBig extends Error {
  constructor() {
    super('message over the size limit');
  }
}

/** Reads up to `limit` bytes; returns them and whether the source ended within them. */
async function readHead(it: AsyncIterator<Uint8Array>, limit: number): Promise<{ head: Buffer[]; size: number; ended: boolean }> {
  const head: Buffer[] = [];
  let size = 0;
  for (;;) {
    const r = await it.next();
    if (r.done) return { head, size, ended: true };
    const chunk = Buffer.from(r.value.buffer, r.value.byteOffset, r.value.byteLength);
    head.push(chunk);
    size += chunk.length;
    if (size > limit) return { head, size, ended: false };
  }
}

async function* rest(head: Buffer[], it: AsyncIterator<Uint8Array>, stream: { sizeExceeded?: boolean }): AsyncGenerator<Uint8Array> {
  // Taken out of `head` as they are read, so that they can be freed.
  for (let c = head.shift(); c; c = head.shift()) yield c;
  for (;;) {
    const r = await it.next();
    if (r.done) return;
    if (stream.sizeExceeded) throw new MessageTooBig();
    yield r.value;
  }
}

export async function deliverMessage(
  deps: IntakeDeps,
  stream: Readable & { sizeExceeded?: boolean },
  envelope: Envelope,
  recipients: Recipient[],
): Promise<{ bytes: number; mode: 'memory' | 'stream'; stored: number }> {
  const { config, maildir, keys, registry, space, memory } = deps;
  const date = new Date();
  const n = recipients.length;
  let copies: Copies | null = null;
  const reservations: SpaceHold[] = [];
  // Aborted by the first failure of any kind: a client gone, a copy failed, a limit passed.
  const abort = new AbortController();
  setMaxListeners(2 * n + 10, abort.signal); // each copy's pipeline listens too
  const fail = (err: Error) => {
    if (!abort.signal.aborted) abort.abort(err);
  };
  // A client that goes away mid-DATA: smtp-server destroys its stream without 'end'.
  const onError = (err?: Error) => fail(err ?? new Error('connection closed during DATA'));
  const onClose = () => {
    if (!stream.readableEnded) fail(new Error('connection closed during DATA'));
  };
  stream.once('error', onError);
  stream.once('close', onClose);

  // smtp-server's data stream is piped into a stream of our own: on an abort we unpipe,
  // and smtp-server (which resumes a still readable stream after our callback) reads the
  // rest of DATA to its end before it replies.
  const src = new PassThrough({ highWaterMark: 256 * 1024 });
  // Destroyed with the abort's reason, perhaps before anything reads it: the reason is thrown
  // by whoever reads (or by the code that aborted), never as an unhandled 'error' event.
  src.on('error', () => undefined);
  const destroySrc = () => src.destroy(abort.signal.reason as Error);
  abort.signal.addEventListener('abort', destroySrc, { once: true });
  let lease: Awaited<ReturnType<MemoryBudget['acquire']>> | null = null;
  let spool: Spool | null = null;
  try {
    const headLimit = config.limits.memoryBufferBytes;
    // Before the size is known, the lease covers either path; nothing is read until it is granted.
    // The wait is bounded: a sender whose data is not read blocks, and gives up after a few
    // minutes; a temporary refusal in time makes it retry later instead.
    // A timer of our own, held here: Node 20 may collect an AbortSignal.timeout() that only
    // AbortSignal.any() refers to, and then it never fires.
    const wait = new AbortController();
    const onAbort = () => wait.abort(abort.signal.reason);
    abort.signal.addEventListener('abort', onAbort, { once: true });
    const timer = setTimeout(() => wait.abort(reply.busy()), config.limits.memoryWaitMs);
    try {
      lease = await memory.acquire(Math.max(memoryPathBytes(headLimit + CHUNK_BYTES, n), streamPathBytes(headLimit + CHUNK_BYTES, n)), wait.signal);
    } catch (err) {
      if (!abort.signal.aborted && wait.signal.aborted) throw reply.busy();
      throw err;
    } finally {
      clearTimeout(timer);
      abort.signal.removeEventListener('abort', onAbort);
    }
    const parsed = await Promise.all(recipients.map((r) => keys.get(r.user.fingerprint, r.user.keyId, () => registry.publicKey(r.user))));
    stream.pipe(src);
    const it = src[Symbol.asyncIterator]() as AsyncIterator<Uint8Array>;
    const { head, size, ended } = await readHead(it, headLimit);
    if (stream.sizeExceeded) throw new MessageTooBig();

    // At DATA's end (memory) or once the head is in (streamed): reserve an estimate per copy.
    const estimate = ciphertextEstimate(size + HEADER_BYTES);
    const copySpace = recipients.map((r) => space.open(r.user.username, abort.signal));
    reservations.push(...copySpace);
    // All copies at once (from an SMTP worker: one round trip to the server process for all).
    // A message in memory is encrypted meanwhile; nothing is written before the reservations hold.
    const reserved = Promise.all(copySpace.map((res) => res.reserve(estimate)));
    reserved.catch(() => undefined); // awaited below, on every path
    if (!ended) await reserved;
    copies = new Copies({ maildir, domain: config.domain, envelope, date }, recipients, parsed, copySpace);
    const all = copies;

    if (ended) {
      lease.shrinkTo(memoryPathBytes(size, n));
      await allOrFirstFailure(n, COPIES_AT_ONCE, abort, (i, signal) => all.deliver(i, head, reserved, signal));
      return { bytes: size, mode: 'memory', stored: all.count };
    }

    lease.shrinkTo(streamPathBytes(size, n));
    if (n <= COPIES_AT_ONCE) {
      // Larger, to a few recipients: every copy is encrypted while the message arrives, from the
      // same chunks (fanOut), straight into its file; nothing else touches the disk. Each copy
      // reserves what it writes as it writes it (beforeWrite), as on the other paths.
      let total = 0;
      const counted = (async function* () {
        for await (const c of rest(head, it, stream)) {
          total += c.byteLength;
          yield c;
        }
      })();
      const readers = fanOut(counted, n, abort.signal);
      try {
        await allOrFirstFailure(n, COPIES_AT_ONCE, abort, (i, signal) => all.deliver(i, readers[i]!, reserved, signal));
      } catch (err) {
        // The size limit passed mid-DATA: that is the reason, whatever each copy saw.
        if (stream.sizeExceeded) throw new MessageTooBig();
        throw err;
      }
      if (stream.sizeExceeded) throw new MessageTooBig();
      return { bytes: total, mode: 'stream', stored: all.count };
    }

    // Larger, to many recipients: the message goes to the spool (encrypted under a key held in
    // memory only) while it arrives, then each copy reads it back, a few at a time as above.
    spool = await Spool.create(config.maildirRoot);
    const spoolSpace = space.openSpool(abort.signal);
    reservations.push(spoolSpace);
    let total = 0;
    for await (const c of rest(head, it, stream)) {
      await spoolSpace.beforeWrite(c.byteLength);
      await spool.write(c);
      spoolSpace.afterWrite(c.byteLength);
      total += c.byteLength;
    }
    if (stream.sizeExceeded) throw new MessageTooBig();
    const whole = spool;
    for (const res of copySpace) await res.reserve(ciphertextEstimate(total + HEADER_BYTES));
    await allOrFirstFailure(n, COPIES_AT_ONCE, abort, (i, signal) => all.deliver(i, whole.read(), reserved, signal));
    return { bytes: total, mode: 'stream', stored: all.count };
  } catch (err) {
    fail(err instanceof Error ? err : new Error(String(err)));
    stream.unpipe(src);
    stream.on('data', () => undefined); // keep reading so smtp-server reaches the end of DATA
    stream.resume();
    src.destroy();
    // All or nothing: every branch has ended (allOrFirstFailure waited for them), so this
    // removes every copy that was stored, and the sender's retry duplicates nothing.
    await copies?.removeAll();
    throw err;
  } finally {
    await spool?.close().catch(() => undefined);
    for (const res of reservations) res.release();
    lease?.release();
    stream.off('error', onError);
    stream.off('close', onClose);
    abort.signal.removeEventListener('abort', destroySrc);
  }
}

export function transactionId(): string {
  return randomBytes(9).toString('base64url');
}
