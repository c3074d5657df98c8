// The copies of one message, one per recipient: each copy's plaintext (its delivery headers,
// inside the encryption, then the message), sealed to the recipient's key as PGP/MIME with
// protected headers (src/pgp seal.ts), stored in her Maildir while the space ledger holds its
// bytes; and, when the transaction fails, the removal of every copy stored.
import type { PublicKey } from 'openpgp';
import type { User } from '../registry/index.js';
import { deliveryHeaders, ENCRYPT_SLICE_BYTES, sealMessage, sealStream } from '../pgp/index.js';
import type { MaildirStore, MessageInfo } from '../maildir/index.js';
import type { SpaceHold } from './space-hold.js';

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

/**
 * Messages up to this size are encrypted from one buffer per copy (headers + body, joined for
 * that copy only): openpgp's web streams cost a fixed few ms a message, so for 10 KB the buffer
 * is ~3.5x faster; past ~400 KB streaming the slices wins (armoring one big string is slow).
 * A copy in flight then holds its plaintext and ciphertext, well inside ENCRYPTOR_BYTES.
 */
export const BUFFERED_ENCRYPT_MAX = 256 * 1024;

/** Slices fed to openpgp (views, not copies): each stage of its pipeline reads ahead a few of them. */
const SLICE_BYTES = ENCRYPT_SLICE_BYTES;

function asBuffer(c: Uint8Array): Buffer {
  return Buffer.isBuffer(c) ? c : Buffer.from(c.buffer, c.byteOffset, c.byteLength);
}

/** Slices of `chunks`, none longer than SLICE_BYTES (views into the same memory). */
function* slices(chunks: Buffer[], size = SLICE_BYTES): Generator<Buffer> {
  for (const c of chunks) {
    for (let o = 0; o < c.length; o += size) yield c.subarray(o, Math.min(c.length, o + size));
  }
}

/** Where the copies go and what their Received lines say. */
export interface CopyContext {
  maildir: MaildirStore;
  /** Our domain: the Received line's `by` and the Message-ID's domain. */
  domain: string;
  envelope: Envelope;
  /** Receipt time, the same for every copy. */
  date: Date;
}

export class Copies {
  private readonly stored: Array<{ user: string; msg: MessageInfo }> = [];

  /** Recipient i's copy is encrypted to keys[i] and counted in space[i]. */
  constructor(
    private readonly ctx: CopyContext,
    private readonly recipients: readonly Recipient[],
    private readonly keys: readonly PublicKey[],
    private readonly space: readonly SpaceHold[],
  ) {}

  /** Copies stored so far. */
  get count(): number {
    return this.stored.length;
  }

  /** Return-Path, Delivered-To and Received of recipient i's copy. */
  private headers(i: number): Buffer {
    const { envelope, domain, date } = this.ctx;
    return deliveryHeaders({
      mailFrom: envelope.mailFrom,
      rcptTo: this.recipients[i]!.address,
      heloName: envelope.heloName,
      remoteAddress: envelope.remoteAddress,
      receivedBy: domain,
      id: envelope.id,
      date,
      tls: envelope.tls,
    });
  }

  private async *plaintext(i: number, message: AsyncIterable<Uint8Array> | Iterable<Uint8Array>): AsyncGenerator<Buffer> {
    yield this.headers(i);
    for await (const c of message) yield* slices([asBuffer(c)]);
  }

  /**
   * Seals recipient i's copy and stores it once `reserved` holds. `message` is the whole
   * message in memory (an array of its chunks, which stays as it is for the other copies) or
   * its chunks as they come. A small message in memory is encrypted from one buffer, before
   * `reserved` is waited for; anything else streams into the file.
   */
  async deliver(i: number, message: readonly Buffer[] | AsyncIterable<Uint8Array>, reserved: Promise<unknown>, signal: AbortSignal): Promise<void> {
    const r = this.recipients[i]!;
    const res = this.space[i]!;
    const opts = { key: this.keys[i]!, domain: this.ctx.domain, date: this.ctx.date };
    const inMemory = Array.isArray(message) ? (message as readonly Buffer[]) : null;
    const file =
      inMemory && inMemory.reduce((n, c) => n + c.length, 0) <= BUFFERED_ENCRYPT_MAX
        ? await sealMessage([this.headers(i), ...inMemory], opts)
        : sealStream(this.plaintext(i, message), opts);
    await reserved;
    try {
      const msg = await this.ctx.maildir.deliver(r.user.username, file, {
        signal,
        beforeWrite: (bytes) => res.beforeWrite(bytes),
        afterWrite: (bytes) => res.afterWrite(bytes),
        beforeRename: (final) => res.settle(final),
      });
      this.stored.push({ user: r.user.username, msg });
    } finally {
      // Stored (and counted by the store) or removed: either way no longer in flight.
      res.release();
    }
  }

  /** Removes every copy stored (all or nothing: the sender's retry duplicates nothing). */
  async removeAll(): Promise<void> {
    await Promise.all(this.stored.map((s) => this.ctx.maildir.remove(s.user, s.msg.id).catch(() => undefined)));
  }
}
