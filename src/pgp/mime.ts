// STUB: interface fixed; implementation in progress.
import type { PublicKey } from 'openpgp';
import type { Readable } from 'node:stream';

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

/** Return-Path, Delivered-To and Received lines (CRLF), prepended inside the encryption. */
export function deliveryHeaders(_info: DeliveryInfo): Buffer {
  throw new Error('not implemented');
}

export interface EncryptOptions {
  key: PublicKey;
  /** Domain for the fresh Message-ID. */
  domain: string;
  /** Receipt time for the outer Date header. */
  date?: Date;
}

/** Small messages: plaintext in memory (never on disk) -> the complete PGP/MIME file. */
export async function encryptBufferToPgpMime(_plaintext: Uint8Array, _opts: EncryptOptions): Promise<Buffer> {
  throw new Error('not implemented');
}

/**
 * Large messages: plaintext chunks in -> PGP/MIME file out, chunk by chunk, memory bounded.
 * The output stream errors if the input errors; no plaintext is ever written anywhere.
 */
export function encryptStreamToPgpMime(_plaintext: AsyncIterable<Uint8Array> | Readable, _opts: EncryptOptions): Readable {
  throw new Error('not implemented');
}
