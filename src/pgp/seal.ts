// A plaintext (delivery headers + the message) made into the PGP/MIME file stored for a user:
// wrapped with protected headers (protected.ts), then encrypted to the user's key (mime.ts).
// Every file kzymy stores in a Maildir is made here, in memory or streamed.
import type { Readable } from 'node:stream';
import { encryptBufferToPgpMime, encryptStreamToPgpMime, type EncryptOptions } from './mime.js';
import { protectBuffer, protectPayload } from './protected.js';

/**
 * The PGP/MIME file for a plaintext held in memory: one buffer, or its parts in order. The
 * copies made here (the joined parts, the wrapped payload) are zeroed before it returns; the
 * caller's own buffers are left as they are.
 */
export async function sealMessage(plaintext: Buffer | readonly Uint8Array[], opts: EncryptOptions): Promise<Buffer> {
  const joined = Buffer.isBuffer(plaintext) ? plaintext : Buffer.concat(plaintext);
  const payload = protectBuffer(joined);
  try {
    return await encryptBufferToPgpMime(payload, opts);
  } finally {
    if (payload !== joined) payload.fill(0);
    if (joined !== plaintext) joined.fill(0);
  }
}

/** sealMessage() for a plaintext that arrives in chunks: the file comes out as it is made. */
export function sealStream(plaintext: AsyncIterable<Uint8Array> | Iterable<Uint8Array>, opts: EncryptOptions): Readable {
  return encryptStreamToPgpMime(protectPayload(plaintext), opts);
}
