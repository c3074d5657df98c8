// kzymy's own SEIPD v1 writer (src/pgp/seipd.ts), read by GnuPG, Sequoia and openpgp: the
// packets are those openpgp writes (PKESK v3, SEIPD v1 around an uncompressed binary literal
// packet with the message date), the integrity check holds at every partial-length boundary
// and any chunking, GnuPG reports the MDC good, and a key that asks for SEIPD v2 (AEAD) gets
// openpgp's own encryption instead.
import { expect } from 'chai';
import { randomBytes } from 'node:crypto';
import { decrypt, enums, generateKey, readKey, readMessage, readPrivateKey, unarmor, type PublicKey } from 'openpgp';
import { armorMessage, encryptStreamToPgpMime } from '../../src/pgp/index.js';
import { seipdV1Session } from '../../src/pgp/seipd.js';
import { gpgKeyAndPublic, makeGpgKey, makeSqKey, parsePgpMime, requireGpg, requireSq, run, sqDecrypt, type TestKey } from '../helpers/gpg.js';
import { chunked, collect } from '../helpers/streams.js';

/** The binary OpenPGP message of a streamed PGP/MIME file. */
async function binaryOf(file: Buffer): Promise<Uint8Array> {
  return (await unarmor(parsePgpMime(file).armored)).data as unknown as Uint8Array;
}

describe('pgp: SEIPD v1 in Node crypto (what large messages are encrypted with)', function () {
  this.timeout(120_000);
  let key: TestKey;
  let pub: PublicKey;
  before(async function () {
    requireGpg(this);
    ({ key, pub } = await gpgKeyAndPublic());
  });

  const P = 65536;
  // Around the 64 KiB partial chunks of the literal packet (6 header bytes) and of the outer packet.
  const sizes = [0, 1, 185, 186, 8000, P - 7, P - 6, P - 5, P, 2 * P - 6, 2 * P + 1, 5 * P + 12345];

  it('gpg decrypts every size to the exact bytes and says the integrity check is good', async function () {
    for (const n of sizes) {
      const msg = randomBytes(n);
      const file = await collect(encryptStreamToPgpMime(chunked(msg, [P]), { key: pub, domain: 'kzymy.test' }));
      const r = await run('gpg', ['--homedir', key.gnupghome, '--batch', '--no-tty', '--status-fd', '2', '--decrypt'], parsePgpMime(file).armored);
      const status = r.stderr.toString();
      expect(r.code, `${n} bytes: ${status}`).to.equal(0);
      expect(r.stdout.equals(msg), `${n} bytes come back`).to.equal(true);
      expect(status, `${n} bytes`).to.match(/\[GNUPG:\] DECRYPTION_OKAY/);
      expect(status, `${n} bytes`).to.match(/\[GNUPG:\] GOODMDC/);
      expect(status, `${n} bytes: AES-256 (9), no AEAD`).to.match(/\[GNUPG:\] DECRYPTION_INFO 2 9 0/);
    }
  });

  it('writes the same bytes whatever the chunking of the input (1 byte, odd sizes, large chunks)', async function () {
    const msg = randomBytes(3 * P + 777);
    for (const pattern of [[1, 2, 3, 5000], [P - 6], [P + 1], [7919], [3 * P + 777]]) {
      const file = await collect(encryptStreamToPgpMime(chunked(msg, pattern), { key: pub, domain: 'kzymy.test' }));
      const out = await run('gpg', ['--homedir', key.gnupghome, '--batch', '--no-tty', '--decrypt'], parsePgpMime(file).armored);
      expect(out.stdout.equals(msg), `chunks of ${pattern.join(',')}`).to.equal(true);
    }
  });

  it('writes the packets openpgp writes: PKESK v3 then SEIPD v1, a binary literal with the date, no compression', async function () {
    const secret = await generateKey({ type: 'ecc', curve: 'curve25519Legacy', userIDs: [{ email: 'a@example.invalid' }], format: 'object' });
    const date = new Date('2026-03-04T05:06:07Z');
    const msg = randomBytes(2 * P + 99);
    const file = await collect(encryptStreamToPgpMime(chunked(msg, [1000]), { key: secret.publicKey, domain: 'kzymy.test', date }));
    const message = await readMessage({ binaryMessage: await binaryOf(file) });
    const tags = message.packets.map((p) => (p.constructor as unknown as { tag: number }).tag);
    expect(tags).to.deep.equal([enums.packet.publicKeyEncryptedSessionKey, enums.packet.symEncryptedIntegrityProtectedData]);
    expect((message.packets[0] as unknown as { version: number }).version).to.equal(3);
    expect((message.packets[1] as unknown as { version: number }).version).to.equal(1);
    const out = await decrypt({ message, decryptionKeys: secret.privateKey, format: 'binary' });
    expect(Buffer.from(out.data as Uint8Array).equals(msg)).to.equal(true);
    // The literal packet's date and format, read from openpgp's decrypted packet list.
    const decrypted = await (await readMessage({ binaryMessage: await binaryOf(file) })).decrypt([secret.privateKey]);
    const lit = decrypted.packets.findPacket(enums.packet.literalData) as unknown as { date: Date; format: number; filename: string };
    expect(lit.date.getTime()).to.equal(date.getTime());
    expect(lit.format).to.equal(enums.literal.binary);
    expect(lit.filename).to.equal('');
    expect(decrypted.packets.findPacket(enums.packet.compressedData)).to.equal(undefined);
  });

  it('sq decrypts it too, across the partial-length boundaries', async function () {
    requireSq(this);
    const sqKey = await makeSqKey();
    const sqPub = await readKey({ armoredKey: sqKey.publicArmored });
    for (const n of [0, P - 6, P, 3 * P + 5]) {
      const msg = randomBytes(n);
      const file = await collect(encryptStreamToPgpMime(chunked(msg, [4093]), { key: sqPub, domain: 'kzymy.test' }));
      expect((await sqDecrypt(sqKey.secretKeyFile, parsePgpMime(file).armored)).equals(msg), `${n} bytes`).to.equal(true);
    }
  });

  it('gpg refuses the message when any part is damaged: prefix, literal data, the MDC, a chunk cut off', async function () {
    const msg = randomBytes(2 * P + 11);
    const file = await collect(encryptStreamToPgpMime(chunked(msg, [P]), { key: pub, domain: 'kzymy.test' }));
    const binary = Buffer.from(await binaryOf(file));
    // One PKESK packet (tag 1, a one-octet length), then tag 18 with a partial length octet,
    // its version byte, and the encrypted random prefix: flip a byte of that prefix.
    expect(binary[0], 'a PKESK packet first').to.equal(0xc1);
    expect(binary[1]).to.be.below(192);
    const seipdAt = 2 + binary[1]!;
    expect(binary[seipdAt], 'then SEIPD').to.equal(0xd2);
    expect(binary[seipdAt + 2], 'version 1').to.equal(1);
    const prefixByte = seipdAt + 3 + 8;
    const cases: Array<[string, Buffer]> = [];
    for (const at of [prefixByte, Math.floor(binary.length / 2), binary.length - 3]) {
      const bad = Buffer.from(binary);
      bad[at]! ^= 0x01;
      cases.push([`byte ${at} flipped`, bad]);
    }
    cases.push(['the last 100 bytes cut off', binary.subarray(0, binary.length - 100)]);
    for (const [what, bad] of cases) {
      const r = await run('gpg', ['--homedir', key.gnupghome, '--batch', '--no-tty', '--status-fd', '2', '--decrypt'], armorMessage(bad));
      expect(r.code, `${what}: gpg's exit status`).to.not.equal(0);
      expect(r.stderr.toString(), `${what}`).to.not.match(/\[GNUPG:\] DECRYPTION_OKAY/);
    }
  });

  it('leaves keys that ask for SEIPD v2 (AEAD) to openpgp, whose output they decrypt', async function () {
    const v6 = await generateKey({ type: 'curve25519', userIDs: [{ email: 'b@example.invalid' }], format: 'object', config: { v6Keys: true, aeadProtect: true } });
    expect(await seipdV1Session(v6.publicKey, new Date())).to.equal(null);
    const msg = randomBytes(P + 3);
    const file = await collect(encryptStreamToPgpMime(chunked(msg, [P]), { key: v6.publicKey, domain: 'kzymy.test' }));
    const message = await readMessage({ binaryMessage: await binaryOf(file) });
    expect((message.packets[1] as unknown as { version: number }).version, 'SEIPD v2').to.equal(2);
    const priv = await readPrivateKey({ armoredKey: v6.privateKey.armor() });
    const out = await decrypt({ message, decryptionKeys: priv, format: 'binary' });
    expect(Buffer.from(out.data as Uint8Array).equals(msg)).to.equal(true);
  });

  it('refuses an expired key before writing anything', async function () {
    const expired = await makeGpgKey('expired');
    const k = await readKey({ armoredKey: expired.publicArmored });
    let err: unknown = null;
    try {
      await seipdV1Session(k, new Date());
    } catch (e) {
      err = e;
    }
    expect(err, 'an error').to.be.instanceOf(Error);
  });
});
