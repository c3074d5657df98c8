// The public-key encrypted session key packet (PKESK v3, RFC 9580 section 5.1) for the kind
// of key GnuPG makes by default: ECDH on Curve25519 ("cv25519") in a v4 key. X25519, the key
// derivation and the AES key wrap of RFC 6637 run in Node's own crypto, synchronously.
// Hand-written because openpgp's encryptSessionKey does the same through WebCrypto at about
// ten times the cost, paid for every message; for any other kind of key `curve25519Pkesk`
// answers null and openpgp makes the packet.
//
// The packet: 0x03, the 8-byte key ID, 18 (ECDH), the ephemeral public key as an MPI
// (0x40 and its 32 bytes: 263 bits), then one length byte and the wrapped session key:
// AES-KW(KEK, m) where m = cipher id, session key, 2-byte checksum, PKCS#5 padding to 8
// bytes, and KEK = the first key-size bytes of HASH(00 00 00 01 || X25519 shared secret ||
// curve OID || 18 || KDF params || "Anonymous Sender    " || the subkey's fingerprint).
import { createCipheriv, createHash, createPublicKey, diffieHellman, generateKeyPairSync, type KeyObject } from 'node:crypto';
import { enums, type PublicKey } from 'openpgp';
import { PGP_CONFIG } from './settings.js';

/** A new-format packet header for a final (definite) body length. */
export function header(tag: number, length: number): Buffer {
  const first = 0xc0 | tag;
  if (length < 192) return Buffer.from([first, length]);
  if (length < 8384) {
    const l = length - 192;
    return Buffer.from([first, (l >> 8) + 192, l & 0xff]);
  }
  const h = Buffer.alloc(6);
  h[0] = first;
  h[1] = 0xff;
  h.writeUInt32BE(length, 2);
  return h;
}

/** The OID of Curve25519 for ECDH in a v4 key (1.3.6.1.4.1.3029.1.5.1). */
const CURVE25519_OID = '2b060104019755010501';
const KDF_HASHES: Record<number, string> = { [enums.hash.sha256]: 'sha256', [enums.hash.sha384]: 'sha384', [enums.hash.sha512]: 'sha512' };
const KEY_WRAPS: Record<number, { name: string; size: number }> = {
  [enums.symmetric.aes128]: { name: 'id-aes128-wrap', size: 16 },
  [enums.symmetric.aes192]: { name: 'id-aes192-wrap', size: 24 },
  [enums.symmetric.aes256]: { name: 'id-aes256-wrap', size: 32 },
};
const SESSION_CIPHERS: Record<string, number> = { aes128: enums.symmetric.aes128, aes192: enums.symmetric.aes192, aes256: enums.symmetric.aes256 };
const WRAP_IV = Buffer.from('a6a6a6a6a6a6a6a6', 'hex');
const ECDH = 18;

/** What the packet needs of one encryption subkey, worked out once. */
interface Recipient {
  keyId: Buffer;
  param: Buffer;
  publicKey: KeyObject;
  hash: string;
  wrap: { name: string; size: number };
}

/** By key packet: null for a key of another kind (openpgp makes its packet). */
const recipients = new WeakMap<object, Recipient | null>();

interface EcdhParams {
  oid: { toHex(): string; write(): Uint8Array };
  Q: Uint8Array;
  kdfParams: { hash: number; cipher: number; write(): Uint8Array };
}

function recipientOf(enc: Awaited<ReturnType<PublicKey['getEncryptionKey']>>): Recipient | null {
  const packet = enc.keyPacket;
  if (recipients.has(packet)) return recipients.get(packet)!;
  let r: Recipient | null = null;
  const p = packet.publicParams as Partial<EcdhParams>;
  if (packet.version === 4 && packet.algorithm === enums.publicKey.ecdh && p.oid && p.Q && p.kdfParams) {
    const hash = KDF_HASHES[p.kdfParams.hash];
    const wrap = KEY_WRAPS[p.kdfParams.cipher];
    if (p.oid.toHex() === CURVE25519_OID && p.Q.length === 33 && p.Q[0] === 0x40 && hash && wrap) {
      const fingerprint = Buffer.from(packet.getFingerprintBytes() ?? []);
      const keyId = Buffer.from(enc.getKeyID().toHex(), 'hex');
      if (fingerprint.length === 20 && keyId.length === 8) {
        r = {
          keyId,
          param: Buffer.concat([p.oid.write(), Buffer.from([ECDH]), p.kdfParams.write(), Buffer.from('Anonymous Sender    ', 'latin1'), fingerprint]),
          publicKey: createPublicKey({ key: { kty: 'OKP', crv: 'X25519', x: Buffer.from(p.Q.subarray(1)).toString('base64url') }, format: 'jwk' }),
          hash,
          wrap,
        };
      }
    }
  }
  recipients.set(packet, r);
  return r;
}

/**
 * The PKESK packet of `sessionKey` (for `cipher`, e.g. "aes256") to `key`'s encryption subkey,
 * or null when that subkey is not Curve25519 ECDH of a v4 key (then use openpgp). The key is
 * checked as of now, as openpgp's encryptSessionKey does: an expired or revoked one throws.
 */
export async function curve25519Pkesk(key: PublicKey, cipher: string, sessionKey: Buffer): Promise<Buffer | null> {
  const sym = SESSION_CIPHERS[cipher];
  if (sym === undefined) return null;
  const r = recipientOf(await key.getEncryptionKey(undefined, new Date(), undefined, PGP_CONFIG));
  if (!r) return null;
  let sum = 0;
  for (const b of sessionKey) sum = (sum + b) & 0xffff;
  const unpadded = 1 + sessionKey.length + 2;
  const pad = 8 - (unpadded % 8);
  const m = Buffer.alloc(unpadded + pad, pad);
  m[0] = sym;
  sessionKey.copy(m, 1);
  m.writeUInt16BE(sum, 1 + sessionKey.length);
  const ephemeral = generateKeyPairSync('x25519');
  const shared = diffieHellman({ privateKey: ephemeral.privateKey, publicKey: r.publicKey });
  const kek = createHash(r.hash).update(Buffer.from([0, 0, 0, 1])).update(shared).update(r.param).digest().subarray(0, r.wrap.size);
  shared.fill(0);
  const wrapper = createCipheriv(r.wrap.name, kek, WRAP_IV);
  const wrapped = Buffer.concat([wrapper.update(m), wrapper.final()]);
  m.fill(0);
  kek.fill(0);
  const ephemeralPublic = Buffer.from(ephemeral.publicKey.export({ format: 'jwk' }).x!, 'base64url');
  const body = Buffer.concat([Buffer.from([3]), r.keyId, Buffer.from([ECDH, 0x01, 0x07, 0x40]), ephemeralPublic, Buffer.from([wrapped.length]), wrapped]);
  return Buffer.concat([header(1, body.length), body]);
}
