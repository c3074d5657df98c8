// Well-formed v3 onion addresses for tests, written here on their own (not with
// src/config/onion.ts) so that the tests check kzymy's own code.
import { createHash, randomBytes } from 'node:crypto';

/**
 * The v3 onion name of `pubkey` (32 bytes; random by default), per rend-spec-v3 6:
 * base32(pubkey || SHA3-256(".onion checksum" || pubkey || 0x03)[:2] || 0x03) + ".onion".
 */
export function onionAddress(pubkey: Buffer = randomBytes(32)): string {
  const version = Buffer.from([3]);
  const checksum = createHash('sha3-256').update('.onion checksum').update(pubkey).update(version).digest().subarray(0, 2);
  const bytes = Buffer.concat([pubkey, checksum, version]);
  const alphabet = 'abcdefghijklmnopqrstuvwxyz234567';
  let bits = '';
  for (const b of bytes) bits += b.toString(2).padStart(8, '0');
  let out = '';
  for (let i = 0; i < bits.length; i += 5) out += alphabet[parseInt(bits.slice(i, i + 5).padEnd(5, '0'), 2)];
  return `${out}.onion`;
}
