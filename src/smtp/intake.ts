// The data path: DATA -> per-recipient PGP/MIME encryption -> Maildir.
// A message up to limits.memoryBufferBytes is read into memory once (one plaintext per
// transaction, however many recipients). A larger one to at most COPIES_AT_ONCE recipients is
// encrypted for each of them as it arrives, every copy reading the same chunks (fanOut) straight
// into its file; to more recipients it is written to a spool that holds it encrypted under a key
// kept in memory only (spool.ts), as it arrives, and the copies are then made from the spool a few
// at a time (COPIES_AT_ONCE), each streaming through openpgp into its file, so memory does not
// grow with the number of recipients. Plaintext never reaches a file.
// What each copy encrypts is its delivery headers + the message, wrapped so that mail clients
// show the original's Subject and From (src/pgp/protected.ts; the header section is held per
// copy, at most HEADER_SECTION_MAX, inside ENCRYPTOR_BYTES).
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
import type { Registry, User } from '../registry/index.js';
import {
  deliveryHeaders,
  encryptBufferToPgpMime,
  encryptStreamToPgpMime,
  ENCRYPT_SLICE_BYTES,
  protectBuffer,
  protectPayload,
  type DeliveryInfo,
  type KeyCache,
} from '../pgp/index.js';
import type { MaildirStore, MessageInfo } from '../maildir/index.js';
import type { MemoryBudget } from './memory.js';
import { ciphertextEstimate, type Space, type SpaceHold } from './space.js';
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
/** Slices fed to openpgp (views, not copies): each stage of its pipeline reads ahead a few of them. */
const SLICE_BYTES = ENCRYPT_SLICE_BYTES;
/** A socket chunk may carry the head past its limit by this much. */
const CHUNK_BYTES = 64 * 1024;
/** Delivery headers, at most (Return-Path, Delivered-To, Received with bounded fields). */
const HEADER_BYTES = 2048;
/**
 * Messages up to this size are encrypted from one buffer per copy (headers + body, joined for
 * that copy only): openpgp's web streams cost a fixed few ms a message, so for 10 KB the buffer
 * is ~3.5x faster; past ~400 KB streaming the slices wins (armoring one big string is slow).
 * A copy in flight then holds its plaintext and ciphertext, well inside ENCRYPTOR_BYTES.
 */
export const BUFFERED_ENCRYPT_MAX = 256 * 1024;

/** Bytes an in-memory transaction of `size` bytes to `n` recipients holds at most. */
export function memoryPathBytes(size: number, n: number): number {
  return size + Math.min(COPIES_AT_ONCE, n) * ENCRYPTOR_BYTES;
}

/** Bytes a spooled transaction to `n` recipients holds at most, with the head it has read. */
export function streamPathBytes(head: number, n: number): number {
  return head + STREAM_BUFFER_BYTES + Math.min(COPIES_AT_ONCE, n) * ENCRYPTOR_BYTES;
}

export interface Recipient {
  user: User;
  /** The first address of this user in the transaction (Delivered-To). */
  address: string;
}

export interface Envelope {
  mailFrom: string;
  heloName: string;
  remoteAddress: string;
  tls: boolean;
  /** Transaction id, used only inside the encrypted Received line and in debug logs. */
  id: string;
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

/** Slices of `chunks`, none longer than SLICE_BYTES (views into the same memory). */
function* slices(chunks: Buffer[], size = SLICE_BYTES): Generator<Buffer> {
  for (const c of chunks) {
    for (let o = 0; o < c.length; o += size) yield c.subarray(o, Math.min(c.length, o + size));
  }
}

/**
 * One source read once by `n` readers, each of which sees every chunk: a chunk is read from the
 * source when the first reader asks for it, and no reader gets more than one chunk ahead of the
 * slowest, so at most two chunks are held whatever the readers' speeds. A reader that stops
 * early no longer holds the others back. Waits end with the signal's reason.
 */
function fanOut(source: AsyncIterator<Uint8Array>, n: number, signal: AbortSignal): Array<AsyncGenerator<Uint8Array>> {
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
async function allOrFirstFailure(count: number, limit: number, abort: AbortController, run: (i: number, signal: AbortSignal) => Promise<void>): Promise<void> {
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

export async function deliverMessage(
  deps: IntakeDeps,
  stream: Readable & { sizeExceeded?: boolean },
  envelope: Envelope,
  recipients: Recipient[],
): Promise<{ bytes: number; mode: 'memory' | 'stream'; stored: number }> {
  const { config, maildir, keys, registry, space, memory } = deps;
  const date = new Date();
  const info = (r: Recipient): DeliveryInfo => ({
    mailFrom: envelope.mailFrom,
    rcptTo: r.address,
    heloName: envelope.heloName,
    remoteAddress: envelope.remoteAddress,
    receivedBy: config.domain,
    id: envelope.id,
    date,
    tls: envelope.tls,
  });
  const n = recipients.length;
  const stored: Array<{ user: string; msg: MessageInfo }> = [];
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
    const deliverCopy = async (i: number, plaintext: AsyncIterable<Uint8Array> | Buffer, signal: AbortSignal) => {
      const r = recipients[i]!;
      const res = copySpace[i]!;
      const opts = { key: parsed[i]!, domain: config.domain, date };
      const file = Buffer.isBuffer(plaintext) ? await encryptBufferToPgpMime(plaintext, opts) : encryptStreamToPgpMime(plaintext, opts);
      await reserved;
      try {
        const msg = await maildir.deliver(r.user.username, file, {
          signal,
          beforeWrite: (bytes) => res.beforeWrite(bytes),
          afterWrite: (bytes) => res.afterWrite(bytes),
          beforeRename: (final) => res.settle(final),
        });
        stored.push({ user: r.user.username, msg });
      } finally {
        // Stored (and counted by the store) or removed: either way no longer in flight.
        res.release();
      }
    };

    if (ended) {
      lease.shrinkTo(memoryPathBytes(size, n));
      await allOrFirstFailure(n, COPIES_AT_ONCE, abort, (i, signal) =>
        deliverCopy(
          i,
          size <= BUFFERED_ENCRYPT_MAX
            ? protectBuffer(Buffer.concat([deliveryHeaders(info(recipients[i]!)), ...head]))
            : protectPayload(
                (async function* () {
                  yield deliveryHeaders(info(recipients[i]!));
                  yield* slices(head);
                })(),
              ),
          signal,
        ),
      );
      return { bytes: size, mode: 'memory', stored: stored.length };
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
        await allOrFirstFailure(n, COPIES_AT_ONCE, abort, (i, signal) =>
          deliverCopy(
            i,
            protectPayload(
              (async function* () {
                yield deliveryHeaders(info(recipients[i]!));
                for await (const c of readers[i]!) yield* slices([Buffer.from(c.buffer, c.byteOffset, c.byteLength)]);
              })(),
            ),
            signal,
          ),
        );
      } catch (err) {
        // The size limit passed mid-DATA: that is the reason, whatever each copy saw.
        if (stream.sizeExceeded) throw new MessageTooBig();
        throw err;
      }
      if (stream.sizeExceeded) throw new MessageTooBig();
      return { bytes: total, mode: 'stream', stored: stored.length };
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
    await allOrFirstFailure(n, COPIES_AT_ONCE, abort, (i, signal) =>
      deliverCopy(
        i,
        protectPayload(
          (async function* () {
            yield deliveryHeaders(info(recipients[i]!));
            for await (const c of whole.read()) yield* slices([c]);
          })(),
        ),
        signal,
      ),
    );
    return { bytes: total, mode: 'stream', stored: stored.length };
  } catch (err) {
    fail(err instanceof Error ? err : new Error(String(err)));
    stream.unpipe(src);
    stream.on('data', () => undefined); // keep reading so smtp-server reaches the end of DATA
    stream.resume();
    src.destroy();
    // All or nothing: every branch has ended (allOrFirstFailure waited for them), so this
    // removes every copy that was stored, and the sender's retry duplicates nothing.
    await Promise.all(stored.map((s) => maildir.remove(s.user, s.msg.id).catch(() => undefined)));
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
