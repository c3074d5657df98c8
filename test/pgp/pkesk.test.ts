// The session key packet kzymy writes in Node's crypto for Curve25519 ECDH keys: GnuPG, sq
// and openpgp all unwrap it to the session key it was made of; each packet has its own
// ephemeral key; other kinds of key (RSA, a v6 X25519 key) are left to openpgp; an expired
// key is refused. A wrong session key, a wrong recipient and a damaged packet are refused.
import { expect } from 'chai';
import { randomBytes } from 'node:crypto';
import { decryptSessionKeys, generateKey, readKey, readMessage, readPrivateKey } from 'openpgp';
import { curve25519Pkesk } from '../../src/pgp/pkesk.js';
import { gpg, gpgKeyAndPublic, makeFreshGpgKey, makeGpgKey, requireGpg, type TestKey } from '../helpers/gpg.js';

describe('pgp: the Curve25519 ECDH session key packet in Node crypto', function () {
  this.timeout(120_000);
  let key: TestKey;
  before(async function () {
    requireGpg(this);
    key = await makeGpgKey('ed25519');
  });

  it('openpgp unwraps it (with the secret key) to the exact session key and cipher; gpg names the right subkey', async () => {
    const pub = await readKey({ armoredKey: key.publicArmored });
    const secret = await readPrivateKey({ armoredKey: (await gpg(key.gnupghome, ['--batch', '--pinentry-mode', 'loopback', '--passphrase', '', '--armor', '--export-secret-keys', key.fingerprint])).toString() });
    for (const cipher of ['aes128', 'aes192', 'aes256']) {
      const sk = randomBytes(cipher === 'aes128' ? 16 : cipher === 'aes192' ? 24 : 32);
      const packet = (await curve25519Pkesk(pub, cipher, sk))!;
      expect(packet, cipher).to.be.instanceOf(Buffer);
      const message = await readMessage({ binaryMessage: packet });
      const [got] = await decryptSessionKeys({ message, decryptionKeys: secret });
      expect(got!.algorithm).to.equal(cipher);
      expect(Buffer.from(got!.data).equals(sk), cipher).to.equal(true);
    }
    const encId = (await pub.getEncryptionKey()).getKeyID().toHex().toUpperCase();
    const listed = (await gpg(key.gnupghome, ['--batch', '--list-packets'], (await curve25519Pkesk(pub, 'aes256', randomBytes(32)))!).catch((e: { stdout?: Buffer }) => e.stdout ?? Buffer.alloc(0))).toString();
    expect(listed).to.match(new RegExp(`pubkey enc packet: version 3, algo 18, keyid ${encId}`));
  });

  it('uses a fresh ephemeral key for every packet', async () => {
    const pub = await readKey({ armoredKey: key.publicArmored });
    const sk = randomBytes(32);
    const a = (await curve25519Pkesk(pub, 'aes256', sk))!;
    const b = (await curve25519Pkesk(pub, 'aes256', sk))!;
    expect(a.length).to.equal(b.length);
    expect(a.equals(b)).to.equal(false);
    // The ephemeral public key follows the header, version, key ID, algorithm and MPI length.
    expect(a.subarray(2 + 1 + 8 + 1 + 2, 2 + 1 + 8 + 1 + 2 + 33).equals(b.subarray(2 + 1 + 8 + 1 + 2, 2 + 1 + 8 + 1 + 2 + 33))).to.equal(false);
  });

  it('a damaged wrapped key, or another recipient, never unwraps to the session key', async () => {
    const pub = await readKey({ armoredKey: key.publicArmored });
    const secret = await readPrivateKey({ armoredKey: (await gpg(key.gnupghome, ['--batch', '--pinentry-mode', 'loopback', '--passphrase', '', '--armor', '--export-secret-keys', key.fingerprint])).toString() });
    const sk = randomBytes(32);
    const packet = (await curve25519Pkesk(pub, 'aes256', sk))!;
    /** What openpgp unwraps: it throws, or (against oracles) gives keys that are not the real one. */
    const unwrapped = async (bytes: Buffer, with_: typeof secret): Promise<Buffer[]> =>
      decryptSessionKeys({ message: await readMessage({ binaryMessage: bytes }), decryptionKeys: with_ }).then(
        (keys) => keys.map((k) => Buffer.from(k.data)),
        () => [],
      );
    expect((await unwrapped(packet, secret)).some((k) => k.equals(sk)), 'intact').to.equal(true);
    for (const at of [packet.length - 3, packet.length - 20, 16]) {
      const damaged = Buffer.from(packet);
      damaged[at]! ^= 0x01;
      expect((await unwrapped(damaged, secret)).some((k) => k.equals(sk)), `byte ${at} flipped`).to.equal(false);
    }
    const other = await makeFreshGpgKey('ed25519');
    const otherSecret = await readPrivateKey({ armoredKey: (await gpg(other.gnupghome, ['--batch', '--pinentry-mode', 'loopback', '--passphrase', '', '--armor', '--export-secret-keys', other.fingerprint])).toString() });
    expect((await unwrapped(packet, otherSecret)).some((k) => k.equals(sk)), 'another key').to.equal(false);
  });

  it('leaves an RSA key and a v6 X25519 key to openpgp (null)', async () => {
    const { pub: rsa } = await gpgKeyAndPublic('rsa3072');
    expect(await curve25519Pkesk(rsa, 'aes256', randomBytes(32))).to.equal(null);
    const { publicKey } = await generateKey({ type: 'curve25519', userIDs: [{ email: 'v6@example.org' }], config: { v6Keys: true } });
    expect(await curve25519Pkesk(await readKey({ armoredKey: publicKey }), 'aes256', randomBytes(32))).to.equal(null);
    const pub = await readKey({ armoredKey: key.publicArmored });
    expect(await curve25519Pkesk(pub, 'twofish', randomBytes(32)), 'a cipher it does not wrap for').to.equal(null);
  });

  it('refuses an expired key (its encryption subkey is not valid now)', async () => {
    const expired = await readKey({ armoredKey: (await makeGpgKey('expired')).publicArmored });
    const err = await curve25519Pkesk(expired, 'aes256', randomBytes(32)).then(
      () => null,
      (e: unknown) => e,
    );
    expect(err).to.be.instanceOf(Error);
  });
});
