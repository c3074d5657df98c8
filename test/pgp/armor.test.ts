// kzymy's own ASCII armor (src/pgp/mime.ts) and the streamed PGP/MIME around it: the bytes it
// writes are what openpgp, GnuPG and Sequoia read back, at every size around the line (48 bytes),
// four-line group (192 bytes) and openpgp partial-length (64 KiB slices) boundaries, at any chunking;
// a damaged ciphertext is refused by GnuPG.
import { expect } from 'chai';
import { createHash, randomBytes } from 'node:crypto';
import { armor as openpgpArmor, enums, readKey, unarmor, type PublicKey } from 'openpgp';
import { armorLines, armorMessage, armorStream, encryptBufferToPgpMime, encryptStreamToPgpMime, ENCRYPT_SLICE_BYTES } from '../../src/pgp/index.js';
import { gpgDecryptPayload, gpgKeyAndPublic, makeSqKey, parsePgpMime, requireGpg, requireSq, run, sqDecrypt, type TestKey } from '../helpers/gpg.js';
import { chunked, collect } from '../helpers/streams.js';

/** A byte view that does not start at offset 0 of its memory (as pooled Buffers do). */
function unaligned(n: number): Buffer {
  return randomBytes(n + 3).subarray(3);
}

/** The text between the armor lines, checked line by line: 64 characters, LF, the CRC line. */
function body(armored: string): { lines: string[]; crc: string } {
  const lines = armored.split('\n');
  expect(lines[0]).to.equal('-----BEGIN PGP MESSAGE-----');
  expect(lines[1]).to.equal('');
  expect(lines.at(-1)).to.equal('');
  expect(lines.at(-2)).to.equal('-----END PGP MESSAGE-----');
  const crc = lines.at(-3)!;
  expect(crc).to.match(/^=[A-Za-z0-9+/]{4}$/);
  return { lines: lines.slice(2, -3), crc };
}

const plain = (file: Buffer) => Buffer.from(parsePgpMime(file).armored, 'latin1');

describe('pgp: kzymy armor and streamed PGP/MIME, read by openpgp, GnuPG and Sequoia', function () {
  const sizes = [0, 1, 2, 3, 4, 47, 48, 49, 95, 96, 97, 191, 192, 193, 255, 256, 257, 383, 384, 385, 4096, 65535, 65536, 65537, 100_001];

  it('armors every size like openpgp does (same bytes, same CRC-24), in 64-character lines', async function () {
    for (const n of sizes) {
      const b = unaligned(n);
      const mine = armorMessage(b).toString('latin1');
      const { lines, crc } = body(mine);
      lines.forEach((l, i) => expect(l.length, `line ${i} of ${n} bytes`).to.equal(i < lines.length - 1 ? 64 : l.length));
      if (n > 0) expect(lines.at(-1)!.length).to.be.within(1, 64);
      expect(lines.join('')).to.equal(b.toString('base64'));
      const ref = openpgpArmor(enums.armor.message, new Uint8Array(b), undefined, undefined, undefined, true);
      expect(crc, `CRC-24 of ${n} bytes`).to.equal(ref.split('\n').find((l) => l.startsWith('=')));
      const back = await unarmor(mine);
      expect(Buffer.from(back.data as unknown as Uint8Array).equals(b), `openpgp unarmors ${n} bytes`).to.equal(true);
    }
  });

  it('armors a stream to the same bytes at any chunking (1 byte, line and group boundaries, odd sizes)', async function () {
    const b = unaligned(50_000);
    const whole = armorMessage(b);
    for (const pattern of [[1], [47], [48], [49], [191, 1], [192], [193, 5, 48], [7919], [65536], [3, 100, 1000, 10_000]]) {
      const streamed = await collect(armorStream(chunked(b, pattern)));
      expect(streamed.equals(whole), `chunks of ${pattern.join(',')}`).to.equal(true);
    }
    expect((await collect(armorStream(chunked(Buffer.alloc(0), [1])))).equals(armorMessage(Buffer.alloc(0)))).to.equal(true);
  });

  it('armorLines keeps the input untouched and works on views at any offset', function () {
    const b = unaligned(1000);
    const copy = Buffer.from(b);
    const out = armorLines(b);
    expect(b.equals(copy)).to.equal(true);
    expect(out.toString('latin1').replace(/\n/g, '')).to.equal(b.toString('base64'));
  });

  describe('with real keys', function () {
    let key: TestKey;
    let pub: PublicKey;
    before(async function () {
      requireGpg(this);
      ({ key, pub } = await gpgKeyAndPublic());
    });

    const S = ENCRYPT_SLICE_BYTES;
    const streamSizes = [0, 1, 47, 48, 193, S - 1, S, S + 1, 2 * S - 1, 2 * S, 2 * S + 1, 4 * S + 17, 3 * 1024 * 1024 + 5];
    for (const n of streamSizes) {
      it(`gpg decrypts the streamed and the buffered file of ${n} bytes to the exact bytes`, async function () {
        const msg = randomBytes(n);
        const streamed = await collect(encryptStreamToPgpMime(chunked(msg, [S]), { key: pub, domain: 'kzymy.test' }));
        expect((await gpgDecryptPayload(key.gnupghome, streamed)).equals(msg), 'streamed').to.equal(true);
        if (n <= 256 * 1024) {
          const buffered = await encryptBufferToPgpMime(msg, { key: pub, domain: 'kzymy.test' });
          expect((await gpgDecryptPayload(key.gnupghome, buffered)).equals(msg), 'buffered').to.equal(true);
        }
      });
    }

    it('a 40 MiB message fed in uneven chunks decrypts with gpg (hash compared)', async function () {
      this.timeout(300_000);
      const msg = randomBytes(40 * 1024 * 1024 + 333);
      const file = await collect(encryptStreamToPgpMime(chunked(msg, [S, 1000, 3 * S + 7]), { key: pub, domain: 'kzymy.test' }));
      const out = await gpgDecryptPayload(key.gnupghome, file);
      expect(createHash('sha256').update(out).digest('hex')).to.equal(createHash('sha256').update(msg).digest('hex'));
    });

    it('sq decrypts streamed files too, empty and across slice boundaries', async function () {
      requireSq(this);
      const sqKey = await makeSqKey();
      const sqPub = await readKey({ armoredKey: sqKey.publicArmored });
      for (const n of [0, 193, S + 1, 3 * S + 5]) {
        const msg = randomBytes(n);
        const file = await collect(encryptStreamToPgpMime(chunked(msg, [S]), { key: sqPub, domain: 'kzymy.test' }));
        expect((await sqDecrypt(sqKey.secretKeyFile, plain(file))).equals(msg), `${n} bytes`).to.equal(true);
      }
    });

    it('gpg refuses a damaged ciphertext (one bit flipped, armor CRC made valid again)', async function () {
      const msg = randomBytes(3 * S + 11);
      const file = await collect(encryptStreamToPgpMime(chunked(msg, [S]), { key: pub, domain: 'kzymy.test' }));
      const binary = Buffer.from((await unarmor(parsePgpMime(file).armored)).data as unknown as Uint8Array);
      // In the literal data (the plaintext comes out wrong), and in the encrypted MDC at the end.
      for (const at of [Math.floor(binary.length / 2), binary.length - 5]) {
        const bad = Buffer.from(binary);
        bad[at]! ^= 0x10;
        const r = await run('gpg', ['--homedir', key.gnupghome, '--batch', '--no-tty', '--decrypt'], armorMessage(bad));
        expect(r.code, `gpg exit status, byte ${at} of ${binary.length} flipped`).to.not.equal(0);
        expect(r.stderr.toString(), `gpg said: ${r.stderr.toString()}`).to.match(/manipulated|modification detected|decryption failed|invalid packet/i);
        if (at < binary.length - 22) expect(r.stdout.equals(msg), 'the damaged message is not given out whole').to.equal(false);
      }
    });
  });
});
