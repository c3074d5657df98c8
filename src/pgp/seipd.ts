// A streaming OpenPGP encryptor for the one message shape kzymy writes: public-key encrypted
// session key packets (made by openpgp) followed by a Symmetrically Encrypted Integrity
// Protected Data packet, version 1 (RFC 9580 section 5.13.1), around one literal data packet.
// The symmetric part runs in Node's own crypto (AES in CFB mode and SHA-1), chunk by chunk.
//
// Hand-written because openpgp.js's streaming encryption costs about four times the cipher
// itself (web streams, a copy per stage); its output is the same packets. openpgp still
// chooses the cipher (the recipient key's preferences) and encrypts the session key; when it
// would choose anything this does not write (SEIPD v2 with AEAD, a cipher other than AES),
// `seipdV1Session` returns null and the caller uses openpgp's own encryption.
//
// The packets, as openpgp writes them for an uncompressed binary message:
//   PKESK v3 ...  | (./pkesk.ts for a Curve25519 ECDH key, else openpgp's)
//                 |  tag 18: 0x01, CFB(IV = 0) of
//                 |    16 random bytes, their last two again,
//                 |    tag 11 literal data: 'b', no file name, the date (4 bytes), the bytes,
//                 |    tag 19 MDC: 0xD3 0x14, SHA-1 of everything before it in the plaintext.
// Both tag 18 and tag 11 use partial body lengths of 64 KiB, then a final definite length.
import { createCipheriv, createHash, randomBytes, type Cipher, type Hash } from 'node:crypto';
import { encryptSessionKey, generateSessionKey, type PublicKey } from 'openpgp';
import { PGP_CONFIG } from './settings.js';
import { curve25519Pkesk, header } from './pkesk.js';

/** Bytes of every partial body chunk: 2^16 (a power of two, and at least the 512 the first needs). */
const PARTIAL_LOG2 = 16;
const PARTIAL = 1 << PARTIAL_LOG2;
const CIPHERS: Record<string, { name: string; block: number }> = {
  aes128: { name: 'aes-128-cfb', block: 16 },
  aes192: { name: 'aes-192-cfb', block: 16 },
  aes256: { name: 'aes-256-cfb', block: 16 },
};

/**
 * The body of one packet of unknown length, cut into 64 KiB partial chunks as it comes.
 * push() appends to `out` each chunk it completes, with its length header; end() the last,
 * shorter chunk. The bytes are copied once, into the chunk being filled.
 */
class PartialBody {
  private chunk = Buffer.allocUnsafe(PARTIAL);
  private filled = 0;
  private started = false;
  constructor(private readonly tag: number) {}

  push(data: Buffer, out: Buffer[]): void {
    let o = 0;
    while (o < data.length) {
      const n = data.copy(this.chunk, this.filled, o);
      this.filled += n;
      o += n;
      if (this.filled === PARTIAL) {
        out.push(this.started ? Buffer.from([0xe0 | PARTIAL_LOG2]) : Buffer.from([0xc0 | this.tag, 0xe0 | PARTIAL_LOG2]), this.chunk);
        this.started = true;
        this.chunk = Buffer.allocUnsafe(PARTIAL);
        this.filled = 0;
      }
    }
  }

  end(out: Buffer[]): void {
    const rest = this.chunk.subarray(0, this.filled);
    // After partial chunks the last length has no tag; a length of 0 is allowed there.
    out.push(this.started ? header(this.tag, this.filled).subarray(1) : header(this.tag, this.filled), rest);
  }
}

export interface SeipdSession {
  /** The PKESK packets (one a recipient key), binary. */
  keyPackets: Uint8Array;
  encrypt(plaintext: AsyncIterable<Uint8Array>): AsyncGenerator<Buffer>;
}

/**
 * A session for one message to `key`, or null when openpgp would not write SEIPD v1 with AES
 * for it (then openpgp's encrypt() must be used). `date` goes into the literal data packet;
 * the key is checked (expiry, revocation, preferences) as of now, as openpgp's encrypt() does.
 */
export async function seipdV1Session(key: PublicKey, date: Date): Promise<SeipdSession | null> {
  const sessionKey = await generateSessionKey({ encryptionKeys: key, config: PGP_CONFIG });
  const cipher = CIPHERS[sessionKey.algorithm];
  if (sessionKey.aeadAlgorithm || !cipher) return null;
  const k = Buffer.from(sessionKey.data);
  const keyPackets =
    (await curve25519Pkesk(key, sessionKey.algorithm, k)) ??
    (await encryptSessionKey({ ...sessionKey, encryptionKeys: key, format: 'binary', config: PGP_CONFIG }));
  sessionKey.data.fill(0);
  return {
    keyPackets,
    encrypt: (plaintext) => encryptParts(plaintext, cipher, k, date),
  };
}

async function* encryptParts(plaintext: AsyncIterable<Uint8Array>, c: { name: string; block: number }, key: Buffer, date: Date): AsyncGenerator<Buffer> {
  const cfb: Cipher = createCipheriv(c.name, key, Buffer.alloc(c.block));
  key.fill(0);
  const mdc: Hash = createHash('sha1');
  const outer = new PartialBody(18);
  const literal = new PartialBody(11);
  const inner: Buffer[] = [];
  const out: Buffer[] = [];
  /** Plaintext of the encrypted body: hashed, encrypted, framed into the outer packet. */
  const seal = (parts: Buffer[]) => {
    for (const p of parts) {
      if (p.length === 0) continue;
      mdc.update(p);
      outer.push(cfb.update(p), out);
    }
  };
  const flush = () => {
    const ready = out.splice(0);
    return ready.length === 1 ? ready[0]! : Buffer.concat(ready);
  };

  outer.push(Buffer.from([1]), out);
  const prefix = randomBytes(c.block);
  seal([prefix, prefix.subarray(c.block - 2)]);
  const head = Buffer.alloc(6);
  head[0] = 0x62; // 'b': binary
  head[1] = 0; // no file name
  head.writeUInt32BE(Math.floor(date.getTime() / 1000), 2);
  literal.push(head, inner);
  for await (const chunk of plaintext) {
    const b = Buffer.isBuffer(chunk) ? chunk : Buffer.from(chunk.buffer, chunk.byteOffset, chunk.byteLength);
    literal.push(b, inner);
    if (inner.length) {
      seal(inner.splice(0));
      if (out.length) yield flush();
    }
  }
  literal.end(inner);
  inner.push(Buffer.from([0xd3, 0x14]));
  seal(inner.splice(0));
  const tag = mdc.digest();
  outer.push(cfb.update(tag), out);
  const last = cfb.final();
  if (last.length) outer.push(last, out);
  outer.end(out);
  yield flush();
}
