// The raw rate of what an OpenPGP SEIPD v1 packet costs in Node's crypto: AES-256-CFB over
// the data and SHA-1 over it (the modification detection code), in 64 KiB chunks, no I/O.
// bench/intake.ts runs it in a child process of its own and compares kzymy's 50 MiB figure to
// it. Prints one JSON line: {"mib":N,"seconds":S,"mibPerSec":R}.
//
//   node --import tsx bench/lib/cipher-rate.ts [MiB]      # default 256
import { createCipheriv, createHash, randomBytes } from 'node:crypto';

const MiB = 1024 * 1024;
const CHUNK = 64 * 1024;
const mib = Number(process.argv[2] ?? 256);
if (!Number.isInteger(mib) || mib < 1) throw new Error(`not a positive number of MiB: ${process.argv[2]}`);
// 16 MiB of random input, read chunk by chunk round and round (larger than the CPU caches).
const pool = randomBytes(16 * MiB);
const cipher = createCipheriv('aes-256-cfb', randomBytes(32), randomBytes(16));
const hash = createHash('sha1');
let sink = 0;
const t0 = process.hrtime.bigint();
for (let off = 0; off < mib * MiB; off += CHUNK) {
  const chunk = pool.subarray(off % pool.length, (off % pool.length) + CHUNK);
  hash.update(chunk);
  sink ^= cipher.update(chunk)[0]!;
}
sink ^= cipher.final().length;
const digest = hash.digest();
const seconds = Number(process.hrtime.bigint() - t0) / 1e9;
console.log(JSON.stringify({ mib, seconds, mibPerSec: mib / seconds, check: digest.length + (sink & 0) }));
