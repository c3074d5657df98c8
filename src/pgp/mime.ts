// PGP/MIME (RFC 3156) Maildir files: the original message, byte for byte, encrypted to the
// user's key, under an outer header that reveals nothing about it (RFC 9788 style).
//
// The plaintext only ever lives in memory: it is handed to openpgp as bytes (never as text,
// which would change line endings) and never appears in a file, a log or an error message.
import { randomBytes } from 'node:crypto';
import { Readable } from 'node:stream';
import { createMessage, encrypt } from 'openpgp';
import { armorMessage, armorStream } from './armor.js';
import { seipdV1Session } from './seipd.js';
import type { PublicKey } from 'openpgp';
import { PGP_CONFIG } from './settings.js';

export interface DeliveryInfo {
  /** Envelope sender ('' for the null sender). */
  mailFrom: string;
  /** The address the message arrived at. */
  rcptTo: string;
  /** HELO/EHLO name the client gave. */
  heloName: string;
  /** Client IP: inside the encryption only, never logged. */
  remoteAddress: string;
  /** Our host name for the Received line (the mail domain). */
  receivedBy: string;
  /** Session/transaction id for the Received line. */
  id: string;
  date: Date;
  tls: boolean;
}

const DAYS = ['Sun', 'Mon', 'Tue', 'Wed', 'Thu', 'Fri', 'Sat'];
const MONTHS = ['Jan', 'Feb', 'Mar', 'Apr', 'May', 'Jun', 'Jul', 'Aug', 'Sep', 'Oct', 'Nov', 'Dec'];

/** RFC 5322 date-time in UTC, e.g. "Wed, 25 Nov 2026 17:53:48 +0000" (no local zone revealed). */
export function rfc5322Date(d: Date): string {
  const p = (n: number): string => String(n).padStart(2, '0');
  return (
    `${DAYS[d.getUTCDay()]}, ${d.getUTCDate()} ${MONTHS[d.getUTCMonth()]} ${d.getUTCFullYear()} ` +
    `${p(d.getUTCHours())}:${p(d.getUTCMinutes())}:${p(d.getUTCSeconds())} +0000`
  );
}

/** One header field's value: no CR, LF or other control characters (no header injection), bounded. */
function clean(value: string, max = 320): string {
  // eslint-disable-next-line no-control-regex
  const s = value.replace(/[\u0000-\u001f\u007f]+/g, ' ').trim();
  return s.length > max ? s.slice(0, max) : s;
}

/** An address inside <...>: additionally no angle brackets. */
function cleanAddress(value: string): string {
  return clean(value).replace(/[<>\s]/g, '');
}

/** The TCP peer as an RFC 5321 address literal. */
function addressLiteral(ip: string): string {
  let a = clean(ip, 64).replace(/[^0-9A-Fa-f:.]/g, '');
  if (a.toLowerCase().startsWith('::ffff:') && a.includes('.')) a = a.slice(7);
  return a.includes(':') ? `[IPv6:${a}]` : `[${a}]`;
}

/** Return-Path, Delivered-To and Received lines (CRLF), prepended inside the encryption. */
export function deliveryHeaders(info: DeliveryInfo): Buffer {
  const from = cleanAddress(info.mailFrom);
  const rcpt = cleanAddress(info.rcptTo);
  const helo = clean(info.heloName, 255).replace(/[()\s]/g, '') || 'unknown';
  const by = clean(info.receivedBy, 255).replace(/[()\s;]/g, '');
  const id = clean(info.id, 64).replace(/[^A-Za-z0-9._-]/g, '');
  const lines = [
    `Return-Path: <${from}>`,
    `Delivered-To: ${rcpt}`,
    `Received: from ${helo} (${addressLiteral(info.remoteAddress)}) by ${by} with ${info.tls ? 'ESMTPS' : 'ESMTP'} id ${id || 'unknown'} for <${rcpt}>; ${rfc5322Date(info.date)}`,
  ];
  return Buffer.from(lines.join('\r\n') + '\r\n', 'utf8');
}

export interface EncryptOptions {
  key: PublicKey;
  /** Domain for the fresh Message-ID. */
  domain: string;
  /** Receipt time for the outer Date header. */
  date?: Date;
}

/** The outer header fields, in order: nothing else ever appears there. */
export const OUTER_HEADER_FIELDS = ['Message-ID', 'Date', 'MIME-Version', 'Subject', 'Content-Type'] as const;

interface Envelope {
  head: Buffer;
  tail: Buffer;
}

/** A fresh random Message-ID and boundary; the two MIME parts around the armored message. */
function envelope(opts: EncryptOptions): Envelope {
  const domain = clean(opts.domain, 255).replace(/[^A-Za-z0-9.-]/g, '') || 'localhost';
  const messageId = `<${randomBytes(16).toString('hex')}@${domain}>`;
  // "=_" never occurs in base64 or armor, so the boundary cannot collide with the content.
  const boundary = `=_${randomBytes(18).toString('hex')}`;
  const date = opts.date ?? new Date();
  const head = [
    `Message-ID: ${messageId}`,
    `Date: ${rfc5322Date(date)}`,
    'MIME-Version: 1.0',
    'Subject: ...',
    `Content-Type: multipart/encrypted; protocol="application/pgp-encrypted";\n\tboundary="${boundary}"`,
    '',
    `--${boundary}`,
    'Content-Type: application/pgp-encrypted',
    'Content-Description: PGP/MIME version identification',
    '',
    'Version: 1',
    '',
    `--${boundary}`,
    'Content-Type: application/octet-stream; name="encrypted.asc"',
    'Content-Description: OpenPGP encrypted message',
    'Content-Disposition: inline; filename="encrypted.asc"',
    '',
    '',
  ].join('\n');
  return { head: Buffer.from(head, 'ascii'), tail: Buffer.from(`\n--${boundary}--\n`, 'ascii') };
}

function asUint8(chunk: unknown): Uint8Array {
  if (chunk instanceof Uint8Array) return new Uint8Array(chunk.buffer, chunk.byteOffset, chunk.byteLength);
  if (typeof chunk === 'string') return new Uint8Array(Buffer.from(chunk, 'utf8'));
  throw new TypeError('the message source must yield bytes');
}

async function* once(bytes: Uint8Array): AsyncGenerator<Uint8Array> {
  yield bytes;
}

/** Small messages: plaintext in memory (never on disk) -> the complete PGP/MIME file. */
export async function encryptBufferToPgpMime(plaintext: Uint8Array, opts: EncryptOptions): Promise<Buffer> {
  const { head, tail } = envelope(opts);
  // SEIPD v1 with AES in Node's crypto (seipd.ts), as for a streamed message; else openpgp.
  const session = await seipdV1Session(opts.key, opts.date ?? new Date());
  if (session) {
    const parts: Buffer[] = [Buffer.from(session.keyPackets)];
    for await (const c of session.encrypt(once(asUint8(plaintext)))) parts.push(c);
    return Buffer.concat([head, armorMessage(Buffer.concat(parts)), tail]);
  }
  const message = await createMessage({ binary: asUint8(plaintext), date: opts.date });
  const binary = await encrypt({ message, encryptionKeys: opts.key, format: 'binary', config: PGP_CONFIG });
  return Buffer.concat([head, armorMessage(binary), tail]);
}

/** Bytes of each slice handed to openpgp, at most: its per-chunk cost is paid once per slice. */
export const ENCRYPT_SLICE_BYTES = 64 * 1024;

/** A pull-driven web stream over the source: one chunk read per chunk wanted (backpressure). */
function toWebStream(source: AsyncIterable<unknown> | Iterable<unknown>): ReadableStream<Uint8Array> {
  const it: AsyncIterator<unknown> | Iterator<unknown> =
    Symbol.asyncIterator in source ? source[Symbol.asyncIterator]() : source[Symbol.iterator]();
  return new ReadableStream<Uint8Array>(
    {
      async pull(controller) {
        const { value, done } = await it.next();
        if (done) controller.close();
        else controller.enqueue(asUint8(value));
      },
      async cancel(reason) {
        await it.return?.(reason);
      },
    },
    { highWaterMark: 1 },
  );
}

async function* packets(first: Uint8Array, rest: AsyncIterable<Buffer>): AsyncGenerator<Uint8Array> {
  yield first;
  yield* rest;
}

/**
 * Large messages: plaintext chunks in -> PGP/MIME file out, chunk by chunk, memory bounded.
 * seipd.ts (or, for keys that want another format, openpgp) makes the binary message as a
 * stream; armorStream() armors it.
 * The output stream errors if the input errors; no plaintext is ever written anywhere.
 */
export function encryptStreamToPgpMime(plaintext: AsyncIterable<Uint8Array> | Readable, opts: EncryptOptions): Readable {
  const { head, tail } = envelope(opts);
  const source = plaintext as AsyncIterable<unknown> | Iterable<unknown>;

  async function* produce(): AsyncGenerator<Buffer> {
    const date = opts.date ?? new Date();
    // SEIPD v1 with AES (what openpgp picks for nearly every key) in Node's crypto: seipd.ts.
    const session = await seipdV1Session(opts.key, date);
    if (session) {
      yield head;
      yield* armorStream(packets(session.keyPackets, session.encrypt(source as AsyncIterable<Uint8Array>)));
      yield tail;
      return;
    }
    const message = await createMessage({ binary: toWebStream(source), date });
    // With a stream in, openpgp gives a stream out; a key problem throws here, before any output.
    const encrypted = await encrypt({ message, encryptionKeys: opts.key, format: 'binary', config: PGP_CONFIG });
    yield head;
    yield* armorStream(encrypted as unknown as AsyncIterable<Uint8Array>);
    yield tail;
  }

  const out = Readable.from(produce(), { objectMode: false });
  // If the consumer gives up (or we fail), stop reading the source too.
  out.once('close', () => {
    if (plaintext instanceof Readable && !plaintext.readableEnded && !plaintext.destroyed) plaintext.destroy();
  });
  return out;
}
