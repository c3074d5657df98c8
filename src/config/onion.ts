// v3 onion addresses (rend-spec-v3 6): the check shared by the configuration (an
// Onionbalance frontend's address) and src/tor (the address tor writes into `hostname`).
import { createHash } from 'node:crypto';

const BASE32 = 'abcdefghijklmnopqrstuvwxyz234567';

function base32Decode(s: string): Buffer {
  let bits = 0;
  let value = 0;
  const out: number[] = [];
  for (const ch of s) {
    value = (value << 5) | BASE32.indexOf(ch);
    bits += 5;
    if (bits >= 8) {
      out.push((value >>> (bits - 8)) & 0xff);
      bits -= 8;
    }
  }
  return Buffer.from(out);
}

/**
 * True for a well-formed v3 onion address: 56 base32 characters + `.onion`, whose
 * decoded bytes are pubkey(32) | checksum(2) | version(1) = 3 (rend-spec-v3 6).
 */
export function isV3Onion(address: string): boolean {
  const m = /^([a-z2-7]{56})\.onion$/.exec(address);
  if (!m) return false;
  const raw = base32Decode(m[1]);
  if (raw.length !== 35 || raw[34] !== 3) return false;
  const pubkey = raw.subarray(0, 32);
  const sum = createHash('sha3-256')
    .update(Buffer.concat([Buffer.from('.onion checksum'), pubkey, Buffer.from([3])]))
    .digest();
  return sum[0] === raw[32] && sum[1] === raw[33];
}
