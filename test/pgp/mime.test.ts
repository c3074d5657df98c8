// PGP/MIME Maildir files: decrypted by real GnuPG 2.2 and Sequoia sq.
import { expect } from 'chai';
import { SAMPLE_DELIVERY } from '../helpers/mail.js';
import { createHash, randomBytes } from 'node:crypto';
import { createReadStream, createWriteStream } from 'node:fs';
import { readFile, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { decrypt, generateKey, readMessage } from 'openpgp';
import {
  checkPublicKey,
  deliveryHeaders,
  encryptBufferToPgpMime,
  encryptStreamToPgpMime,
  OUTER_HEADER_FIELDS,
  rfc5322Date,
} from '../../src/pgp/index.js';
import type { EncryptOptions } from '../../src/pgp/index.js';
import {
  gpg,
  gpgDecrypt,
  makeGpgKey,
  makeSqKey,
  parsePgpMime,
  requireGpg,
  requireSq,
  sqDecrypt,
} from '../helpers/gpg.js';
import type { GoodGpgKeyKind, TestKey } from '../helpers/gpg.js';
import { tempDir } from '../helpers/env.js';
import { collect } from '../helpers/streams.js';

const INFO = SAMPLE_DELIVERY;

/** A message with CRLF, a bare LF, a bare CR, 8-bit bytes and a NUL: every byte must survive. */
function original(): Buffer {
  return Buffer.concat([
    Buffer.from(
      'From: Shop <noreply@sender.example>\r\nTo: shop@abc123.kzymy.localhost\r\n' +
        'Subject: =?utf-8?q?Gr=C3=BC=C3=9Fe?= SECRET-SUBJECT-MARKER\r\nMIME-Version: 1.0\r\n' +
        'Content-Type: text/plain; charset=iso-8859-1\r\nContent-Transfer-Encoding: 8bit\r\n\r\n',
      'latin1',
    ),
    Buffer.from('Gr\xfc\xdfe aus K\xf6ln\r\nbare LF\nbare CR\rend\r\n', 'latin1'),
    Buffer.from([0x00, 0x80, 0xff, 0xc3, 0x28, 0x0d, 0x0a]),
    Buffer.from('trailing line without newline', 'latin1'),
  ]);
}

async function options(k: TestKey, date?: Date): Promise<EncryptOptions> {
  return { key: (await checkPublicKey(k.publicArmored)).key, domain: 'kzymy.localhost', date };
}

/** The outer structure: exactly the five fields, and the RFC 3156 parts. */
function expectPgpMimeShape(file: Buffer, date?: Date): void {
  const text = file.toString('latin1');
  expect(text, 'outer structure is 7-bit').to.match(/^[\x20-\x7e\t\n]*$/);
  const m = parsePgpMime(file);
  expect(m.fields.map(([n]) => n)).to.deep.equal([...OUTER_HEADER_FIELDS]);
  const f = Object.fromEntries(m.fields);
  expect(f['Message-ID']).to.match(/^<[0-9a-f]{32}@kzymy\.localhost>$/);
  if (date) expect(f['Date']).to.equal(rfc5322Date(date));
  expect(f['MIME-Version']).to.equal('1.0');
  expect(f['Subject']).to.equal('...');
  expect(f['Content-Type']).to.match(/^multipart\/encrypted; protocol="application\/pgp-encrypted";\s+boundary="[^"]+"$/);
  expect(m.parts).to.have.length(2);
  expect(m.parts[0]).to.match(/^Content-Type: application\/pgp-encrypted\n/);
  expect(m.parts[0]).to.match(/\n\nVersion: 1\n?$/);
  expect(m.parts[1]).to.match(/^Content-Type: application\/octet-stream/);
  expect(m.armored).to.match(/^-----BEGIN PGP MESSAGE-----\n\n/);
  expect(m.armored, 'no Version or Comment armor header').not.to.match(/^(Version|Comment): /m);
  expect(text).to.match(new RegExp(`\n--${m.boundary.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}--\n$`));
  expect(text).not.to.include('SECRET-SUBJECT-MARKER');
  expect(text).not.to.include('sender.example');
  expect(text).not.to.include('192.0.2.7');
}

const GPG_KINDS: GoodGpgKeyKind[] = ['ed25519', 'rsa3072', 'rsa4096', 'nistp256', 'brainpoolP256r1'];

describe('pgp: deliveryHeaders', function () {
  it('writes Return-Path, Delivered-To and Received with CRLF', function () {
    expect(deliveryHeaders(INFO).toString('latin1')).to.equal(
      'Return-Path: <bounce@sender.example>\r\n' +
        'Delivered-To: shop@abc123.kzymy.localhost\r\n' +
        'Received: from mx.sender.example ([192.0.2.7]) by kzymy.localhost with ESMTPS id A1b2C3 ' +
        'for <shop@abc123.kzymy.localhost>; Wed, 4 Mar 2026 05:06:07 +0000\r\n',
    );
  });

  it('handles the null sender, plain ESMTP and IPv6 peers', function () {
    const h = deliveryHeaders({ ...INFO, mailFrom: '', tls: false, remoteAddress: '2001:db8::1' }).toString();
    expect(h).to.match(/^Return-Path: <>\r\n/);
    expect(h).to.include('([IPv6:2001:db8::1]) by kzymy.localhost with ESMTP id');
    const v4mapped = deliveryHeaders({ ...INFO, remoteAddress: '::ffff:198.51.100.9' }).toString();
    expect(v4mapped).to.include('([198.51.100.9])');
  });

  it('cannot be made to inject header lines', function () {
    const h = deliveryHeaders({
      ...INFO,
      mailFrom: 'a@b\r\nX-Evil: 1',
      rcptTo: 'c@d>\nBcc: x@y',
      heloName: 'helo\r\nX-Evil: 2 (',
      id: 'id\r\nX-Evil: 3',
      receivedBy: 'by\nX-Evil: 4',
      remoteAddress: '1.2.3.4\r\nX-Evil: 5',
    }).toString('latin1');
    const lines = h.split('\r\n');
    expect(lines).to.have.length(4);
    expect(lines[3]).to.equal('');
    expect(lines.map((l) => l.split(':')[0])).to.deep.equal(['Return-Path', 'Delivered-To', 'Received', '']);
    expect(h).not.to.match(/\r(?!\n)|(?<!\r)\n/);
  });
});

describe('pgp: PGP/MIME encryption, decrypted by GnuPG and Sequoia', function () {
  before(function () {
    requireGpg(this);
  });

  const plaintext = Buffer.concat([deliveryHeaders(INFO), original()]);

  for (const kind of GPG_KINDS) {
    it(`GnuPG ${kind}: both paths give a file whose armored part gpg decrypts byte for byte`, async function () {
      const k = await makeGpgKey(kind);
      const date = new Date('2026-03-04T05:06:07Z');
      const opts = await options(k, date);
      const buffered = await encryptBufferToPgpMime(plaintext, opts);
      const streamed = await collect(encryptStreamToPgpMime(Readable.from(chunksOf(plaintext, 7)), opts));
      for (const file of [buffered, streamed]) {
        expectPgpMimeShape(file, date);
        const out = await gpgDecrypt(k.gnupghome, parsePgpMime(file).armored);
        expect(out.equals(plaintext), 'decrypted bytes equal deliveryHeaders + original').to.equal(true);
      }
      // Fresh Message-ID and boundary every time.
      const a = parsePgpMime(buffered);
      const b = parsePgpMime(streamed);
      expect(a.fields[0]![1]).not.to.equal(b.fields[0]![1]);
      expect(a.boundary).not.to.equal(b.boundary);
    });
  }

  it('sq decrypts what was encrypted to a key made by sq, and to GnuPG keys', async function () {
    requireSq(this);
    const sqKey = await makeSqKey();
    const kinds: Array<TestKey> = [sqKey, ...(await Promise.all((['ed25519', 'rsa3072', 'nistp256'] as const).map(makeGpgKey)))];
    for (const k of kinds) {
      const opts = await options(k);
      const buffered = await encryptBufferToPgpMime(plaintext, opts);
      const streamed = await collect(encryptStreamToPgpMime(Readable.from([plaintext]), opts));
      for (const file of [buffered, streamed]) {
        expectPgpMimeShape(file);
        const out = await sqDecrypt(k.secretKeyFile, parsePgpMime(file).armored);
        expect(out.equals(plaintext), `sq, ${k.fingerprint}`).to.equal(true);
      }
    }
    // gpg reads the sq key's messages too.
    const file = await encryptBufferToPgpMime(plaintext, await options(sqKey));
    expect((await gpgDecrypt(sqKey.gnupghome, parsePgpMime(file).armored)).equals(plaintext)).to.equal(true);
  });

  it('encrypts to a v6 key (openpgp decrypts it; GnuPG 2.2 predates v6)', async function () {
    const { publicKey, privateKey } = await generateKey({
      type: 'curve25519',
      userIDs: [{ name: 'Test', email: 'test@example.invalid' }],
      config: { v6Keys: true },
      format: 'object',
    });
    const file = await encryptBufferToPgpMime(plaintext, { key: publicKey, domain: 'kzymy.localhost' });
    expectPgpMimeShape(file);
    const message = await readMessage({ armoredMessage: parsePgpMime(file).armored });
    const { data } = await decrypt({ message, decryptionKeys: privateKey, format: 'binary' });
    expect(Buffer.from(data as Uint8Array).equals(plaintext)).to.equal(true);
  });

  it('does not compress and uses an integrity-protected packet', async function () {
    const k = await makeGpgKey('ed25519');
    const file = await encryptBufferToPgpMime(plaintext, await options(k));
    const packets = (await gpg(k.gnupghome, ['--list-packets'], parsePgpMime(file).armored)).toString();
    expect(packets).not.to.include('compressed packet');
    expect(packets).to.match(/encrypted data packet|:aead encrypted packet:/);
    expect(packets).to.include('mdc_method: 2');
  });

  it('wraps an empty message and a message that is already PGP/MIME', async function () {
    const k = await makeGpgKey('ed25519');
    const opts = await options(k);
    for (const body of [Buffer.alloc(0), await encryptBufferToPgpMime(plaintext, opts)]) {
      const file = await encryptBufferToPgpMime(body, opts);
      expectPgpMimeShape(file);
      expect((await gpgDecrypt(k.gnupghome, parsePgpMime(file).armored)).equals(body)).to.equal(true);
      const streamed = await collect(encryptStreamToPgpMime(Readable.from(chunksOf(body, 1000)), opts));
      expect((await gpgDecrypt(k.gnupghome, parsePgpMime(streamed).armored)).equals(body)).to.equal(true);
    }
  });

  it('refuses to encrypt to an expired or revoked key, and emits nothing', async function () {
    for (const kind of ['expired', 'revoked'] as const) {
      const k = await makeGpgKey(kind);
      const { readKey } = await import('openpgp');
      const opts = { key: await readKey({ armoredKey: k.publicArmored }), domain: 'kzymy.localhost' };
      let failed = false;
      await encryptBufferToPgpMime(plaintext, opts).catch(() => (failed = true));
      expect(failed, kind).to.equal(true);
      const out = encryptStreamToPgpMime(Readable.from([plaintext]), opts);
      const got: Buffer[] = [];
      out.on('data', (c: Buffer) => got.push(c));
      const err = await new Promise<unknown>((resolve) => out.on('error', resolve).on('end', () => resolve(null)));
      expect(err, kind).to.be.instanceOf(Error);
      expect(Buffer.concat(got).length, 'nothing written').to.equal(0);
      expect(String((err as Error).message)).not.to.include('SECRET-SUBJECT-MARKER');
    }
  });
});

function* chunksOf(buf: Buffer, size: number): Generator<Buffer> {
  for (let i = 0; i < buf.length; i += size) yield buf.subarray(i, i + size);
}

describe('pgp: streamed encryption of large messages', function () {
  before(function () {
    requireGpg(this);
  });

  it('encrypts 20 MB of random bytes chunk by chunk, and gpg gets them back exactly', async function () {
    const k = await makeGpgKey('ed25519');
    const { dir, cleanup } = await tempDir('kzymy-pgp-big-');
    try {
      const size = 20 * 1024 * 1024;
      const hash = createHash('sha256');
      let produced = 0;
      async function* source(): AsyncGenerator<Buffer> {
        while (produced < size) {
          const chunk = randomBytes(Math.min(64 * 1024 + 17, size - produced));
          produced += chunk.length;
          hash.update(chunk);
          yield chunk;
        }
      }
      // Only ciphertext is written to the test's disk.
      const file = path.join(dir, 'message');
      await pipeline(encryptStreamToPgpMime(source(), await options(k)), createWriteStream(file));
      const expected = hash.digest('hex');
      const stored = await readFile(file);
      expectPgpMimeShape(stored);
      const armoredFile = path.join(dir, 'message.asc');
      await writeFile(armoredFile, parsePgpMime(stored).armored);
      const out = await gpgDecrypt(k.gnupghome, await readFile(armoredFile));
      expect(out.length).to.equal(size);
      expect(createHash('sha256').update(out).digest('hex')).to.equal(expected);
    } finally {
      await cleanup();
    }
  });

  it('accepts a Node Readable (a file) as the source', async function () {
    const k = await makeGpgKey('nistp256');
    const { dir, cleanup } = await tempDir('kzymy-pgp-src-');
    try {
      const input = randomBytes(3 * 1024 * 1024 + 5);
      const inFile = path.join(dir, 'test-input'); // a test input, not server plaintext
      await writeFile(inFile, input);
      const file = await collect(encryptStreamToPgpMime(createReadStream(inFile, { highWaterMark: 16 * 1024 }), await options(k)));
      expect((await gpgDecrypt(k.gnupghome, parsePgpMime(file).armored)).equals(input)).to.equal(true);
    } finally {
      await cleanup();
    }
  });

  it('errors the output when the source errors (so the caller deletes its tmp file)', async function () {
    const k = await makeGpgKey('ed25519');
    const opts = await options(k);
    async function* failing(): AsyncGenerator<Buffer> {
      yield randomBytes(200 * 1024);
      yield randomBytes(200 * 1024);
      throw new Error('connection lost');
    }
    let err: unknown = null;
    await pipeline(encryptStreamToPgpMime(failing(), opts), async function (s: AsyncIterable<Buffer>) {
      for await (const _ of s) {
        // drain
      }
    }).catch((e: unknown) => (err = e));
    expect(err).to.be.instanceOf(Error);

    // A Node Readable destroyed with an error, as smtp-server does on a dropped connection.
    const src = new Readable({ read() {} });
    src.push(randomBytes(100 * 1024));
    setTimeout(() => src.destroy(new Error('socket closed')), 20);
    let err2: unknown = null;
    await collect(encryptStreamToPgpMime(src, opts)).catch((e: unknown) => (err2 = e));
    expect(err2).to.be.instanceOf(Error);

    // An early error, before any byte.
    const failsAtOnce = (): AsyncIterable<Buffer> => ({
      [Symbol.asyncIterator]: () => ({ next: () => Promise.reject(new Error('nothing at all')) }),
    });
    let err3: unknown = null;
    await collect(encryptStreamToPgpMime(failsAtOnce(), opts)).catch((e: unknown) => (err3 = e));
    expect(err3).to.be.instanceOf(Error);
  });

  it('stops reading the source when the consumer gives up', async function () {
    const k = await makeGpgKey('ed25519');
    const src = new Readable({
      read() {
        this.push(randomBytes(64 * 1024));
      },
    });
    const out = encryptStreamToPgpMime(src, await options(k));
    let seen = 0;
    for await (const c of out) {
      seen += (c as Buffer).length;
      if (seen > 1024 * 1024) break; // destroys out
    }
    await new Promise((r) => setTimeout(r, 50));
    expect(src.destroyed).to.equal(true);
  });
});
