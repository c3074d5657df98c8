// kzymy-client's local parts, without a server: Maildir and MDA delivery, the gpg wrapper,
// the profile and the delivery record.
import { expect } from 'chai';
import { mkdir, readdir, readFile, stat, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { requireBinaries, tempDir } from '../helpers/env.js';
import { gpg, makeFreshGpgKey, makeGpgKey, run } from '../helpers/gpg.js';
import { armoredPart } from '../../src/client/decrypt.js';
import { envelopeOf } from '../../src/client/envelope.js';
import { MaildirDestination } from '../../src/client/maildir-destination.js';
import { MdaDestination } from '../../src/client/mda.js';
import { ClientError, DeliveryError } from '../../src/client/errors.js';
import { Gnupg } from '../../src/client/gnupg.js';
import { defaultProfilePath, ProfileStore } from '../../src/client/state.js';

describe('kzymy-client: local delivery, gpg and state', function () {
  let dir: string;
  let cleanup: () => Promise<void>;
  beforeEach(async () => ({ dir, cleanup } = await tempDir('kzymy-client-')));
  afterEach(async () => cleanup());

  describe('Maildir delivery', function () {
    it('creates DIR/{tmp,new,cur} 0700 and writes each message to new/ (0600), tmp/ left empty', async function () {
      const md = path.join(dir, 'deep', 'Maildir');
      const d = new MaildirDestination(md);
      const a = Buffer.from('Subject: a\r\n\r\nfirst\r\n');
      const b = Buffer.from('Subject: b\r\n\r\nsecond \xff\r\n', 'latin1');
      await d.deliver(a);
      await d.deliver(b);
      for (const sub of ['tmp', 'new', 'cur']) expect((await stat(path.join(md, sub))).mode & 0o777, sub).to.equal(0o700);
      expect(await readdir(path.join(md, 'tmp'))).to.deep.equal([]);
      const names = await readdir(path.join(md, 'new'));
      expect(names).to.have.length(2);
      const contents = await Promise.all(names.map((n) => readFile(path.join(md, 'new', n))));
      expect(contents.map((c) => c.toString('latin1')).sort()).to.deep.equal([a, b].map((c) => c.toString('latin1')).sort());
      for (const n of names) {
        expect(n).to.match(/^\d+\.M\d+P\d+Q\d+R[0-9a-f]{16}\.[^/]+,S=\d+$/);
        expect((await stat(path.join(md, 'new', n))).mode & 0o777).to.equal(0o600);
        expect(Number(/,S=(\d+)$/.exec(n)![1])).to.equal((await stat(path.join(md, 'new', n))).size);
      }
    });

    it('fails with a sentence when the Maildir cannot be written', async function () {
      await writeFile(path.join(dir, 'file'), 'x');
      const d = new MaildirDestination(path.join(dir, 'file', 'Maildir'));
      try {
        await d.deliver(Buffer.from('x'));
        expect.fail('delivered');
      } catch (err) {
        expect(err).to.be.instanceOf(ClientError);
        expect((err as Error).message).to.match(/^Cannot create the Maildir .*: a part of the path is not a folder\.$/);
      }
    });
  });

  describe('MDA delivery (like getmail MDA_external)', function () {
    const msg = Buffer.from('Return-Path: <s@example.org>\r\nDelivered-To: x@u.kzymy.test\r\n\r\nbody\r\n');

    it('hands the message to /bin/sh -c COMMAND on stdin; exit 0 and silence = delivered', async function () {
      const out = path.join(dir, 'out');
      await new MdaDestination(`cat > '${out}'; printf '%s %s %s' "$SENDER" "$RECIPIENT" "$KZYMY_MESSAGE_ID" > '${out}.env'`).deliver(msg, {
        id: 'ID1',
        ...envelopeOf(msg),
      });
      expect(Buffer.compare(await readFile(out), msg)).to.equal(0);
      expect(await readFile(`${out}.env`, 'utf8')).to.equal('s@example.org x@u.kzymy.test ID1');
    });

    for (const [cmd, re, code] of [
      ['cat >/dev/null; exit 75', /asked to try again later \(exit 75\)/, 75],
      ['cat >/dev/null; echo disk on fire >&2; exit 75', /exit 75\): disk on fire/, 75],
      ['cat >/dev/null; exit 1', /The MDA exited 1; the message was not delivered\./, 1],
      ['cat >/dev/null; echo oops >&2', /exited 0 but wrote to stderr.*: oops/, 1],
      ['exit 0', null, 0],
      ['kill -9 $$', /killed by SIGKILL/, 1],
    ] as const) {
      it(`treats "${cmd}" as ${code === 0 ? 'delivered' : code === 75 ? 'temporary failure' : 'not delivered'}`, async function () {
        const p = new MdaDestination(cmd).deliver(Buffer.alloc(1 << 20, 0x61), { id: 'x' });
        if (re === null) return p;
        try {
          await p;
          expect.fail('delivered');
        } catch (err) {
          expect(err).to.be.instanceOf(DeliveryError);
          expect((err as DeliveryError).exitCode).to.equal(code);
          expect((err as Error).message).to.match(re);
        }
      });
    }
  });

  describe('gpg wrapper', function () {
    before(function () {
      requireBinaries(this, 'gpg', 'gpgconf');
    });

    it('finds a secret key by fingerprint, exports only its public part, and decrypts', async function () {
      const k = await makeGpgKey('ed25519');
      const g = new Gnupg({ homedir: k.gnupghome });
      const found = await g.secretKey(k.fingerprint.toLowerCase());
      expect(found.fingerprint).to.equal(k.fingerprint);
      const pub = await g.exportPublic(found.fingerprint);
      expect(pub).to.include('-----BEGIN PGP PUBLIC KEY BLOCK-----');
      expect(pub).not.to.include('PRIVATE');
      const enc = await gpg(k.gnupghome, ['--armor', '--encrypt', '--trust-model', 'always', '-r', k.fingerprint], 'k7qm-2xwd-9fne-h4tr\n');
      expect((await g.decrypt(enc, 'the challenge')).toString()).to.equal('k7qm-2xwd-9fne-h4tr\n');
    });

    it('says so when the key is missing, public only, or ambiguous', async function () {
      const k = await makeGpgKey('ed25519');
      const empty = path.join(dir, 'gnupg');
      await mkdir(empty, { mode: 0o700 });
      const g = new Gnupg({ homedir: empty });
      await expectSentence(g.secretKey(k.fingerprint), /^There is no secret key [0-9A-F]{40} in the GnuPG keyring in .*gnupg; list yours with "gpg --list-secret-keys"\.$/);
      await gpg(empty, ['--import'], k.publicArmored);
      await expectSentence(g.secretKey(k.fingerprint), /has the public key .* but not its secret half/);
      const other = await makeFreshGpgKey('ed25519');
      await gpg(empty, ['--import'], k.secretArmored);
      await gpg(empty, ['--import'], other.secretArmored);
      await expectSentence(g.secretKey('test@example.invalid'), /names 2 secret keys .*give the full fingerprint/);
      const enc = await gpg(other.gnupghome, ['--armor', '--encrypt', '-r', other.fingerprint], 'x');
      await expectSentence(new Gnupg({ homedir: k.gnupghome }).decrypt(enc, 'message X'), /^None of the secret keys in the GnuPG keyring in .* can decrypt message X/);
      await expectSentence(g.decrypt('not pgp', 'message Y'), /^Message Y is not an OpenPGP message gpg can read\.$/);
    });

    it('asks to unlock a passphrase-protected key instead of hanging on a pinentry', async function () {
      const home = path.join(dir, 'locked');
      await mkdir(home, { mode: 0o700 });
      const batch = ['Key-Type: eddsa', 'Key-Curve: ed25519', 'Subkey-Type: ecdh', 'Subkey-Curve: cv25519', 'Name-Real: Locked', 'Passphrase: correct horse', '%commit', ''];
      await gpg(home, ['--gen-key'], batch.join('\n'));
      await run('gpgconf', ['--homedir', home, '--reload', 'gpg-agent']); // forget the cached passphrase
      const colons = (await gpg(home, ['--with-colons', '--list-keys'])).toString();
      const fpr = colons.split('\n').find((l) => l.startsWith('fpr:'))!.split(':')[9]!;
      const enc = await run('gpg', ['--homedir', home, '--batch', '--armor', '--encrypt', '--trust-model', 'always', '-r', fpr], 'code\n');
      try {
        const err = await new Gnupg({ homedir: home, interactive: false }).decrypt(enc.stdout, "the server's login challenge").then(
          () => null,
          (e: unknown) => e,
        );
        expect(err).to.be.instanceOf(ClientError);
        const text = (err as Error).message;
        expect(text).to.match(/needs the passphrase of your key .* unlock the key with gpg-agent first .* or use a key without a passphrase for automation\.$/);
        expect(text).not.to.include('correct horse');
      } finally {
        await run('gpgconf', ['--homedir', home, '--kill', 'gpg-agent']);
      }
    });
  });

  describe('profile and delivery record', function () {
    it('lives under $XDG_CONFIG_HOME/kzymy, else ~/.config/kzymy', function () {
      expect(defaultProfilePath({ XDG_CONFIG_HOME: '/x/y', HOME: '/h' })).to.equal('/x/y/kzymy/client.json');
      expect(defaultProfilePath({ HOME: '/h' })).to.equal('/h/.config/kzymy/client.json');
      expect(defaultProfilePath({ XDG_CONFIG_HOME: 'relative', HOME: '/h' })).to.equal('/h/.config/kzymy/client.json');
    });

    it('refuses a broken profile with a sentence', async function () {
      const f = path.join(dir, 'client.json');
      await writeFile(f, '{ nope');
      await expectSentence(new ProfileStore(f).load(), /^The profile .*client\.json is not valid JSON; fix it or remove it\.$/);
      await writeFile(f, '{"tor": "yes"}');
      await expectSentence(new ProfileStore(f).load(), /bad "tor" \(expected true or false\)/);
    });

    it('records delivered ids durably, survives a torn last line, and forgets ids the server no longer lists', async function () {
      const store = new ProfileStore(path.join(dir, 'k', 'client.json'));
      const rec = store.record('abcdefghijkl');
      await rec.add('1.a');
      await rec.add('2.b');
      expect(rec.file).to.equal(path.join(dir, 'k', 'client.abcdefghijkl.delivered'));
      expect((await stat(rec.file)).mode & 0o777).to.equal(0o600);
      await writeFile(rec.file, '1.a\n2.b\n3.c', { flag: 'w' }); // a crash in the middle of appending 3.c
      const fresh = store.record('abcdefghijkl');
      expect(await fresh.has('2.b')).to.equal(true);
      expect(await fresh.has('3.c')).to.equal(false);
      await fresh.retainOnly(new Set(['2.b', '9.z']));
      expect(await readFile(rec.file, 'utf8')).to.equal('2.b\n');
      await fresh.retainOnly(new Set());
      await stat(rec.file).then(() => expect.fail('record kept'), () => undefined);
    });

    it('finds the armored part of a PGP/MIME file', function () {
      const file = Buffer.from('Content-Type: multipart/encrypted; boundary="b"\r\n\r\n--b\r\nContent-Type: application/pgp-encrypted\r\n\r\nVersion: 1\r\n--b\r\nContent-Type: application/octet-stream\r\n\r\n-----BEGIN PGP MESSAGE-----\r\n\r\nabc\r\n-----END PGP MESSAGE-----\r\n--b--\r\n');
      expect(armoredPart(file)!.toString()).to.equal('-----BEGIN PGP MESSAGE-----\r\n\r\nabc\r\n-----END PGP MESSAGE-----\n');
      expect(armoredPart(Buffer.from('plain'))).to.equal(null);
    });
  });
});

async function expectSentence(p: Promise<unknown>, re: RegExp): Promise<void> {
  const err = await p.then(
    () => null,
    (e: unknown) => e,
  );
  expect(err, 'an error').to.be.instanceOf(ClientError);
  expect((err as Error).message).to.match(re);
}
