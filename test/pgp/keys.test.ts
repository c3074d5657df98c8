// Key checks against real keys made by GnuPG 2.2 and Sequoia sq.
import { expect } from 'chai';
import { generateKey, readKey } from 'openpgp';
import type { PublicKey } from 'openpgp';
import { checkPublicKey, KeyCache, KeyError, keyStatus, MAX_KEY_BYTES, MAX_SUBKEYS } from '../../src/pgp/index.js';
import type { KeyProblem } from '../../src/pgp/index.js';
import {
  BAD_GPG_KEY_KINDS,
  GOOD_GPG_KEY_KINDS,
  gpg,
  killGpgAgent,
  makeFreshGpgKey,
  makeGpgKey,
  makeSqKey,
  requireGpg,
  requireSq,
  TEST_UID,
} from '../helpers/gpg.js';
import type { BadGpgKeyKind, GoodGpgKeyKind, TestKey } from '../helpers/gpg.js';
import { tempDir } from '../helpers/env.js';

const LABELS: Record<GoodGpgKeyKind, string> = {
  ed25519: 'ed25519 / cv25519',
  rsa2048: 'rsa2048',
  rsa3072: 'rsa3072',
  rsa4096: 'rsa4096',
  nistp256: 'nistp256',
  nistp384: 'nistp384',
  nistp521: 'nistp521',
  brainpoolP256r1: 'brainpoolP256r1',
};

const BAD_CODES: Record<BadGpgKeyKind, KeyProblem> = {
  rsa1024: 'weak-rsa',
  dsa: 'dsa-elgamal',
  expired: 'expired',
  revoked: 'revoked',
  'sign-only': 'no-encryption-subkey',
};

/** Runs fn, which must throw a KeyError; returns it. */
async function refusal(fn: () => Promise<unknown>): Promise<KeyError> {
  try {
    await fn();
  } catch (e) {
    expect(e, String(e)).to.be.instanceOf(KeyError);
    return e as KeyError;
  }
  expect.fail('the key was accepted');
}

/** One sentence a user can act on: capital first, a full stop last, one line, not a stack. */
function expectSentence(err: KeyError): void {
  expect(err.message).to.match(/^[A-Z]/);
  expect(err.message).to.match(/\.$/);
  expect(err.message).not.to.match(/[\r\n]/);
  expect(err.message.length).to.be.within(30, 300);
  expect(err.message.split(/\.\s+[A-Z]/).length, 'one sentence').to.equal(1);
  expect(err.message).not.to.match(/Error:|at .*\.(js|ts):\d+/);
}

/** Every base64 run of 16+ characters in the armored secret key: none may reach an error. */
function keyMaterialFragments(armored: string): string[] {
  return armored
    .split('\n')
    .filter((l) => !l.startsWith('-----') && !/^[A-Za-z]+: /.test(l))
    .flatMap((l) => l.trim().match(/.{16}/g) ?? []);
}

describe('pgp: checkPublicKey accepts the keys GnuPG and Sequoia make', function () {
  before(function () {
    requireGpg(this);
  });

  for (const kind of GOOD_GPG_KEY_KINDS) {
    it(`accepts a GnuPG ${kind} key and returns only its public part`, async function () {
      const k = await makeGpgKey(kind);
      const c = await checkPublicKey(k.publicArmored);
      expect(c.fingerprint).to.equal(k.fingerprint);
      expect(c.fingerprint).to.match(/^[0-9A-F]{40}$/);
      expect(c.algorithm).to.equal(LABELS[kind]);
      expect(c.expiresAt).to.equal(null);
      expect(c.userIds).to.deep.equal([TEST_UID]);
      expect(c.key.isPrivate()).to.equal(false);
      expect(c.publicKey).to.match(/^-----BEGIN PGP PUBLIC KEY BLOCK-----\n\n/);
      expect(c.publicKey).not.to.include('PRIVATE');
      expect(c.publicKey).not.to.match(/^(Version|Comment): /m);
      // The stored text reads back as the same key, and GnuPG takes it.
      const again = await checkPublicKey(c.publicKey);
      expect(again.fingerprint).to.equal(k.fingerprint);
      const { dir, cleanup } = await tempDir('kzymy-import-');
      try {
        await gpg(dir, ['--import'], c.publicKey);
        const listed = (await gpg(dir, ['--with-colons', '--fingerprint', '-k'])).toString();
        expect(listed).to.include(`fpr:::::::::${k.fingerprint}:`);
        expect(listed).not.to.match(/^sec/m);
      } finally {
        await killGpgAgent(dir);
        await cleanup();
      }
    });
  }

  it('accepts the binary (unarmored) form, as a file upload', async function () {
    const k = await makeGpgKey('ed25519');
    const binary = await gpg(k.gnupghome, ['--export', k.fingerprint]);
    const c = await checkPublicKey(new Uint8Array(binary));
    expect(c.fingerprint).to.equal(k.fingerprint);
    // ...and armored text given as bytes.
    const c2 = await checkPublicKey(new TextEncoder().encode(k.publicArmored));
    expect(c2.fingerprint).to.equal(k.fingerprint);
  });

  it('accepts a key made by sq with its defaults, and reports its expiry', async function () {
    requireSq(this);
    const k = await makeSqKey();
    const c = await checkPublicKey(k.publicArmored);
    expect(c.fingerprint).to.equal(k.fingerprint);
    expect(c.algorithm).to.equal('ed25519 / cv25519');
    expect(c.userIds).to.deep.equal([TEST_UID]);
    expect(c.expiresAt).to.be.instanceOf(Date);
    expect(c.expiresAt!.getTime()).to.be.greaterThan(Date.now() + 365 * 86400_000);
  });

  it('accepts a v6 key (RFC 9580) as newer tools make it', async function () {
    const { publicKey } = await generateKey({
      type: 'curve25519',
      userIDs: [{ name: 'Test', email: 'test@example.invalid' }],
      config: { v6Keys: true },
      format: 'armored',
    });
    const c = await checkPublicKey(publicKey);
    expect(c.algorithm).to.equal('ed25519 / x25519');
    expect(c.fingerprint).to.match(/^[0-9A-F]{64}$/);
  });

  it('takes the earlier of the primary and the encryption subkey expiry', async function () {
    const { publicKey } = await generateKey({
      type: 'curve25519',
      userIDs: [{ name: 'Test', email: 'test@example.invalid' }],
      keyExpirationTime: 10 * 86400,
      subkeys: [{ sign: false, keyExpirationTime: 5 * 86400 }],
      format: 'armored',
    });
    const now = new Date();
    const c = await checkPublicKey(publicKey, now);
    expect(c.expiresAt).to.be.instanceOf(Date);
    const days = (c.expiresAt!.getTime() - now.getTime()) / 86400_000;
    expect(days).to.be.within(4.9, 5.1);
  });
});

describe('pgp: checkPublicKey refuses bad keys with a sentence', function () {
  before(function () {
    requireGpg(this);
  });

  for (const kind of BAD_GPG_KEY_KINDS) {
    it(`refuses a GnuPG ${kind} key as ${BAD_CODES[kind]}`, async function () {
      const k = await makeGpgKey(kind);
      const err = await refusal(() => checkPublicKey(k.publicArmored));
      expect(err.code).to.equal(BAD_CODES[kind]);
      expectSentence(err);
    });
  }

  it('names the expiry date of an expired key', async function () {
    const k = await makeGpgKey('expired');
    const err = await refusal(() => checkPublicKey(k.publicArmored));
    expect(err.message).to.include('2020-01-02');
  });

  it('refuses an sq key checked after its expiry', async function () {
    requireSq(this);
    const k = await makeSqKey();
    const later = new Date(Date.now() + 5 * 365 * 86400_000);
    const err = await refusal(() => checkPublicKey(k.publicArmored, later));
    expect(err.code).to.equal('expired');
  });

  for (const kind of ['ed25519', 'rsa3072', 'nistp256'] as const) {
    it(`refuses a ${kind} SECRET key without echoing any of it`, async function () {
      const k = await makeGpgKey(kind);
      const binary = await gpg(k.gnupghome, ['--export-secret-keys', k.fingerprint]);
      for (const input of [k.secretArmored, new Uint8Array(binary), `Here is my key:\n\n${k.secretArmored}`]) {
        const err = await refusal(() => checkPublicKey(input));
        expect(err.code).to.equal('secret');
        expectSentence(err);
        const shown = `${err.message}\n${err.stack ?? ''}\n${JSON.stringify(err)}\n${String(err)}`;
        for (const fragment of keyMaterialFragments(k.secretArmored)) expect(shown).not.to.include(fragment);
        expect(shown).not.to.include(binary.subarray(40, 56).toString('base64'));
      }
    });
  }

  it('refuses two armored keys pasted one after the other', async function () {
    const a = await makeGpgKey('ed25519');
    const b = await makeGpgKey('rsa2048');
    const err = await refusal(() => checkPublicKey(a.publicArmored + '\n' + b.publicArmored));
    expect(err.code).to.equal('multiple');
    expectSentence(err);
  });

  it('refuses two keys in one armored block (readKey would silently take the first)', async function () {
    const a = await makeGpgKey('ed25519');
    const b = await makeGpgKey('nistp256');
    const { dir, cleanup } = await tempDir('kzymy-two-');
    try {
      await gpg(dir, ['--import'], a.publicArmored + b.publicArmored);
      const both = (await gpg(dir, ['--armor', '--export'])).toString();
      expect(both.match(/BEGIN PGP PUBLIC KEY BLOCK/g)).to.have.length(1);
      const err = await refusal(() => checkPublicKey(both));
      expect(err.code).to.equal('multiple');
      expect(err.message).to.include('2 keys');
      const binary = await gpg(dir, ['--export']);
      expect((await refusal(() => checkPublicKey(new Uint8Array(binary)))).code).to.equal('multiple');
    } finally {
      await killGpgAgent(dir);
      await cleanup();
    }
  });

  it('refuses an input over 64 KiB before parsing it', async function () {
    const k = await makeGpgKey('ed25519');
    const padded = k.publicArmored + ' '.repeat(MAX_KEY_BYTES);
    const err = await refusal(() => checkPublicKey(padded));
    expect(err.code).to.equal('too-large');
    expectSentence(err);
    const big = new Uint8Array(MAX_KEY_BYTES + 1);
    expect((await refusal(() => checkPublicKey(big))).code).to.equal('too-large');
    // Exactly at the limit is still read.
    const atLimit = k.publicArmored + ' '.repeat(MAX_KEY_BYTES - Buffer.byteLength(k.publicArmored));
    expect((await checkPublicKey(atLimit)).fingerprint).to.equal(k.fingerprint);
  });

  it('refuses input that is not a public key', async function () {
    const k = await makeGpgKey('ed25519');
    const truncated = k.publicArmored.slice(0, k.publicArmored.length / 2);
    const message = (await gpg(k.gnupghome, ['--armor', '--encrypt', '--recipient', k.fingerprint], 'hi')).toString();
    // A changed character inside the public point: parses, but the self-signatures fail.
    const damaged = k.publicArmored.replace(/^([A-Za-z0-9+/]{40})(.)/m, (_m, a: string, c: string) => a + (c === 'A' ? 'B' : 'A'));
    const inputs: Array<string | Uint8Array> = [
      '',
      'hello',
      '-----BEGIN PGP PUBLIC KEY BLOCK-----\n\nAAAA\n-----END PGP PUBLIC KEY BLOCK-----\n',
      truncated,
      message,
      damaged,
      new Uint8Array([1, 2, 3, 4, 5, 6, 7, 8]),
      new Uint8Array(0),
    ];
    for (const input of inputs) {
      const err = await refusal(() => checkPublicKey(input));
      expect(err.code, String(input).slice(0, 40)).to.equal('unparseable');
      expectSentence(err);
    }
  });
});

/** The commands a sentence gives in backquotes, as argument lists for gpg (without "gpg"). */
function adviceCommands(message: string): string[][] {
  return [...message.matchAll(/`gpg ([^`]+)`/g)].map((m) =>
    [...m[1]!.matchAll(/"([^"]*)"|'([^']*)'|(\S+)/g)].map((a) => a[1] ?? a[2] ?? a[3]!),
  );
}

/** Fingerprints of the subkeys in a GNUPGHOME, in order. */
async function subkeyFingerprints(home: string): Promise<string[]> {
  const lines = (await gpg(home, ['--with-colons', '--fixed-list-mode', '-k'])).toString().split('\n');
  const out: string[] = [];
  lines.forEach((l, i) => {
    if (l.startsWith('sub:')) out.push(lines[i + 1]!.split(':')[9]!.toUpperCase());
  });
  return out;
}

describe('pgp: checkPublicKey bounds the work of a check', function () {
  before(function () {
    requireGpg(this);
  });

  let home: string;
  let cleanup: () => Promise<void>;
  let fpr: string;
  before(async function () {
    ({ dir: home, cleanup } = await tempDir('kzymy-subkeys-'));
    await gpg(home, ['--quick-gen-key', TEST_UID, 'future-default', 'default', 'never']);
    fpr = (await gpg(home, ['--with-colons', '-k'])).toString().split('\n').find((l) => l.startsWith('fpr:'))!.split(':')[9]!;
    // MAX_SUBKEYS subkeys in all: the most a key may have.
    for (let i = 1; i < MAX_SUBKEYS; i++) await gpg(home, ['--quick-add-key', fpr, 'cv25519', 'encr', 'never']);
  });
  after(async function () {
    await killGpgAgent(home);
    await cleanup();
  });

  it(`accepts a GnuPG key with ${MAX_SUBKEYS} subkeys and refuses one with ${MAX_SUBKEYS + 1}`, async function () {
    const at = (await gpg(home, ['--armor', '--export', fpr])).toString();
    expect((await checkPublicKey(at)).fingerprint).to.equal(fpr);
    await gpg(home, ['--quick-add-key', fpr, 'cv25519', 'encr', 'never']);
    const over = (await gpg(home, ['--armor', '--export', fpr])).toString();
    const err = await refusal(() => checkPublicKey(over));
    expect(err.code).to.equal('too-many-packets');
    expect(err.message).to.include(`${MAX_SUBKEYS + 1} subkeys`);
    expectSentence(err);
  });

  it('refuses a crafted 160-subkey key (real GnuPG subkeys, repeated) within 64 KiB, armored and binary', async function () {
    const key = await readKey({ armoredKey: (await gpg(home, ['--armor', '--export', fpr])).toString() });
    const made = key.subkeys.length;
    while (key.subkeys.length < 160) key.subkeys.push(key.subkeys[key.subkeys.length % made]!);
    const armored = key.armor();
    expect(Buffer.byteLength(armored)).to.be.below(MAX_KEY_BYTES);
    for (const input of [armored, key.write()]) {
      const err = await refusal(() => checkPublicKey(input));
      expect(err.code).to.equal('too-many-packets');
      expect(err.message).to.include('160 subkeys');
      expectSentence(err);
    }
  });

  it('refuses a key with too many user IDs or signatures', async function () {
    const { publicKey } = await generateKey({
      type: 'curve25519',
      userIDs: Array.from({ length: 40 }, (_, i) => ({ name: `Test ${i}`, email: `t${i}@example.invalid` })),
      format: 'armored',
    });
    const err = await refusal(() => checkPublicKey(publicKey));
    expect(err.code).to.equal('too-many-packets');
    expect(err.message).to.include('40 user IDs');
    expectSentence(err);
  });
});

describe('pgp: an expired key is refused for its real cause, with advice that works', function () {
  before(function () {
    requireGpg(this);
  });

  it('names an expired encryption subkey under a valid primary, and its fingerprint; the advice repairs the key', async function () {
    const { dir: home, cleanup } = await tempDir('kzymy-subexp-');
    try {
      const past = ['--faked-system-time', '20200101T000000!'];
      await gpg(home, [...past, '--quick-gen-key', TEST_UID, 'ed25519', 'cert,sign', 'never']);
      const fpr = (await gpg(home, ['--with-colons', '-k'])).toString().split('\n').find((l) => l.startsWith('fpr:'))!.split(':')[9]!;
      await gpg(home, [...past, '--quick-add-key', fpr, 'cv25519', 'encr', '1d']);
      const [sub] = await subkeyFingerprints(home);
      const expired = (await gpg(home, ['--armor', '--export', fpr])).toString();
      const err = await refusal(() => checkPublicKey(expired));
      expect(err.code).to.equal('expired-encryption-subkey');
      expect(err.message).to.include('2020-01-02');
      expect(err.message).to.include(sub!);
      expect(err.message).not.to.match(/^The key expired/);
      expectSentence(err);
      const commands = adviceCommands(err.message);
      expect(commands).to.deep.equal([['--quick-set-expire', fpr, '2y', sub]]);
      for (const args of commands) await gpg(home, args);
      const fixed = await checkPublicKey((await gpg(home, ['--armor', '--export', fpr])).toString());
      expect(fixed.fingerprint).to.equal(fpr);
      expect(fixed.expiresAt!.getTime()).to.be.greaterThan(Date.now() + 365 * 86400_000);
      // At RCPT the subkey case is 'expired' like the other.
      expect(await keyStatus(await readKey({ armoredKey: expired }))).to.equal('expired');
    } finally {
      await killGpgAgent(home);
      await cleanup();
    }
  });

  it('names the expired primary and its expired encryption subkey; the advice repairs the key', async function () {
    const k = await makeFreshGpgKey('expired');
    const [sub] = await subkeyFingerprints(k.gnupghome);
    const err = await refusal(() => checkPublicKey(k.publicArmored));
    expect(err.code).to.equal('expired');
    expect(err.message).to.match(/^The key expired on 2020-01-02: /);
    expectSentence(err);
    const commands = adviceCommands(err.message);
    expect(commands).to.deep.equal([
      ['--quick-set-expire', k.fingerprint, '2y'],
      ['--quick-set-expire', k.fingerprint, '2y', sub],
    ]);
    for (const args of commands) await gpg(k.gnupghome, args);
    const fixed = await checkPublicKey((await gpg(k.gnupghome, ['--armor', '--export', k.fingerprint])).toString());
    expect(fixed.fingerprint).to.equal(k.fingerprint);
  });

  it('gives a key-generation command that makes a key kzymy accepts', async function () {
    const err = await refusal(async () => checkPublicKey((await makeGpgKey('revoked')).publicArmored));
    const [args] = adviceCommands(err.message);
    expect(args).to.deep.equal(['--quick-gen-key', 'NAME <ADDRESS>', 'future-default', 'default', 'never']);
    const { dir: home, cleanup } = await tempDir('kzymy-genhint-');
    try {
      await gpg(home, ['--quick-gen-key', TEST_UID, ...args!.slice(2)]);
      const c = await checkPublicKey((await gpg(home, ['--armor', '--export'])).toString());
      expect(c.algorithm).to.equal('ed25519 / cv25519');
    } finally {
      await killGpgAgent(home);
      await cleanup();
    }
  });
});

describe('pgp: keyStatus at RCPT time', function () {
  before(function () {
    requireGpg(this);
  });

  async function parsed(k: TestKey): Promise<PublicKey> {
    return readKey({ armoredKey: k.publicArmored });
  }

  it('is ok for a good key, and each problem by name otherwise', async function () {
    expect(await keyStatus(await parsed(await makeGpgKey('ed25519')))).to.equal('ok');
    expect(await keyStatus(await parsed(await makeGpgKey('rsa3072')))).to.equal('ok');
    expect(await keyStatus(await parsed(await makeGpgKey('expired')))).to.equal('expired');
    expect(await keyStatus(await parsed(await makeGpgKey('revoked')))).to.equal('revoked');
    expect(await keyStatus(await parsed(await makeGpgKey('sign-only')))).to.equal('no-encryption-subkey');
  });

  it('catches a key that expires after signup', async function () {
    requireSq(this);
    const k = await makeSqKey();
    const key = (await checkPublicKey(k.publicArmored)).key;
    expect(await keyStatus(key)).to.equal('ok');
    expect(await keyStatus(key, new Date(Date.now() + 5 * 365 * 86400_000))).to.equal('expired');
  });

  it('catches an encryption subkey that expires before the primary', async function () {
    const { publicKey } = await generateKey({
      type: 'curve25519',
      userIDs: [{ name: 'Test', email: 'test@example.invalid' }],
      subkeys: [{ sign: false, keyExpirationTime: 86400 }],
      format: 'object',
    });
    expect(await keyStatus(publicKey)).to.equal('ok');
    expect(await keyStatus(publicKey, new Date(Date.now() + 2 * 86400_000))).to.equal('expired');
  });
});

describe('pgp: KeyCache', function () {
  before(function () {
    requireGpg(this);
  });

  it('parses once per fingerprint and key version', async function () {
    const k = await makeGpgKey('ed25519');
    const stored = (await checkPublicKey(k.publicArmored)).publicKey;
    const cache = new KeyCache();
    const a = await cache.get(k.fingerprint, 'v1', () => stored);
    const b = await cache.get(k.fingerprint.toLowerCase(), 'v1', () => stored);
    expect(a).to.equal(b);
    expect(a.getFingerprint().toUpperCase()).to.equal(k.fingerprint);
    // A refreshed key (a new version) is parsed again.
    const c = await cache.get(k.fingerprint, 'v2', () => k.publicArmored);
    expect(c).not.to.equal(a);
    cache.delete(k.fingerprint);
    expect(cache.size).to.equal(0);
    expect(await cache.get(k.fingerprint, 'v1', () => stored)).not.to.equal(a);
  });

  it('refuses a key that does not match its fingerprint, and does not keep the failure', async function () {
    const k = await makeGpgKey('ed25519');
    const other = await makeGpgKey('nistp256');
    const cache = new KeyCache();
    let failed = false;
    await cache.get(k.fingerprint, 'v1', () => other.publicArmored).catch(() => (failed = true));
    expect(failed).to.equal(true);
    expect(cache.size).to.equal(0);
  });

  it('keeps at most maxEntries keys', async function () {
    const cache = new KeyCache(1);
    const a = await makeGpgKey('ed25519');
    const b = await makeGpgKey('nistp256');
    await cache.get(a.fingerprint, 'a', () => a.publicArmored);
    await cache.get(b.fingerprint, 'b', () => b.publicArmored);
    expect(cache.size).to.equal(1);
  });
});
