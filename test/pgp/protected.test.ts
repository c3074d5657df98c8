// The protected-headers wrapper (src/pgp/protected.ts): what it adds, that it comes off byte
// for byte whatever the chunking, and that a sender cannot make restore cut her mail.
import { expect } from 'chai';
import { SAMPLE_DELIVERY } from '../helpers/mail.js';
import { randomBytes } from 'node:crypto';
import {
  deliveryHeaders,
  HEADER_SECTION_MAX,
  protectBuffer,
  protectPayload,
  restoreBuffer,
  restoreOriginal,
  WRAPPER_CONTENT_TYPE,
} from '../../src/pgp/index.js';
import { collect } from '../helpers/streams.js';

const INFO = SAMPLE_DELIVERY;
const DH = deliveryHeaders(INFO);

function* chunksOf(buf: Buffer, size: number): Generator<Buffer> {
  for (let i = 0; i < buf.length; i += size) yield buf.subarray(i, i + size);
}

/** protect, streamed at several chunk sizes, equals protectBuffer; restore undoes both exactly. */
async function roundTrip(plaintext: Buffer): Promise<Buffer> {
  const payload = protectBuffer(plaintext);
  for (const size of [1, 2, 3, 7, 64, 4096, plaintext.length || 1]) {
    expect((await collect(protectPayload(chunksOf(plaintext, size)))).equals(payload), `protect, chunks of ${size}`).to.equal(true);
    expect((await collect(restoreOriginal(chunksOf(payload, size)))).equals(plaintext), `restore, chunks of ${size}`).to.equal(true);
  }
  expect(restoreBuffer(payload).equals(plaintext), 'restoreBuffer').to.equal(true);
  return payload;
}

/** The wrapper part of a payload (up to and including its empty line). */
function wrapperOf(payload: Buffer): string {
  const text = payload.toString('latin1');
  return text.slice(0, text.indexOf('\r\n\r\n') + 4);
}

function msg(s: string): Buffer {
  return Buffer.concat([DH, Buffer.from(s, 'latin1')]);
}

describe('pgp: protected headers (wrap and restore)', function () {
  it('wraps as message/rfc822 with protected headers and copies Subject, From, To, Cc, Date, Message-ID', async function () {
    const plaintext = msg(
      'From: Alice <alice@sender.example>\r\nTo: Shop <shop@abc123.kzymy.localhost>\r\nCc: c@x.example\r\n' +
        'Subject: =?utf-8?q?Gr=C3=BC=C3=9Fe?=\r\n and more\r\nDate: Tue, 03 Mar 2026 10:00:00 +0000\r\n' +
        'Message-ID: <m1@sender.example>\r\nX-Other: not copied\r\nMIME-Version: 1.0\r\n' +
        'Content-Type: text/plain; charset=utf-8\r\n\r\nbody\r\n',
    );
    const payload = await roundTrip(plaintext);
    const w = wrapperOf(payload);
    expect(w).to.equal(
      `Kzymy-Payload: v1; wrapper=${w.length}\r\n` +
        `${WRAPPER_CONTENT_TYPE}\r\n` +
        'From: Alice <alice@sender.example>\r\nTo: Shop <shop@abc123.kzymy.localhost>\r\nCc: c@x.example\r\n' +
        'Subject: =?utf-8?q?Gr=C3=BC=C3=9Fe?=\r\n and more\r\nDate: Tue, 03 Mar 2026 10:00:00 +0000\r\n' +
        'Message-ID: <m1@sender.example>\r\n\r\n',
    );
    expect(WRAPPER_CONTENT_TYPE).to.equal('Content-Type: message/rfc822; forwarded=no; hp="cipher"; protected-headers="v1"');
    // Right after the wrapper: the delivery headers, then the original, untouched.
    expect(payload.subarray(w.length).equals(plaintext)).to.equal(true);
  });

  it('counts the marker line in its length across a change in the number of digits', async function () {
    for (let n = 0; n < 40; n++) {
      const plaintext = msg(`Subject: ${'x'.repeat(n)}\r\n\r\nb`);
      const w = wrapperOf(await roundTrip(plaintext));
      expect(w).to.match(new RegExp(`^Kzymy-Payload: v1; wrapper=${w.length}\r\n`));
    }
  });

  it('handles a message without Content-Type, with folded fields, and LF-only lines', async function () {
    const lf = await roundTrip(msg('From: a@b.example\nSubject: lf\n only\n  \nTo: x@y.example\n\nbody\nline\n'));
    // Copies get CRLF and lose whitespace-only continuation lines; the original keeps its LFs.
    expect(wrapperOf(lf)).to.include('From: a@b.example\r\nSubject: lf\r\n only\r\nTo: x@y.example\r\n\r\n');
    expect(lf.toString('latin1')).to.include('Subject: lf\n only\n  \nTo: x@y.example\n\nbody\nline\n');
    const folded = await roundTrip(msg('Content-Type: multipart/mixed;\r\n\tboundary="b"\r\nSubject: s\r\n\r\n--b\r\n\r\nx\r\n--b--\r\n'));
    expect(wrapperOf(folded)).not.to.include('multipart/mixed');
    await roundTrip(msg('Subject: bare\rCR inside\r\n\r\nbody'));
    expect(wrapperOf(protectBuffer(msg('Subject: bare\rCR inside\r\n\r\nbody')))).to.include('Subject: bare CR inside\r\n');
  });

  it('wraps a body-only message (empty header section) with no copies', async function () {
    const payload = await roundTrip(msg('\r\njust a body\r\n'));
    expect(wrapperOf(payload)).to.match(/^Kzymy-Payload: v1; wrapper=\d+\r\nContent-Type: [^\r\n]+\r\n\r\n$/);
  });

  it('leaves a message unmarked when its header section does not end within the bound', async function () {
    const big = msg(`Subject: s\r\nX-Long: ${'y'.repeat(HEADER_SECTION_MAX)}\r\n\r\nbody`);
    expect(protectBuffer(big).equals(big)).to.equal(true);
    expect((await collect(protectPayload(chunksOf(big, 4096)))).equals(big)).to.equal(true);
    const noEnd = msg('Subject: s\r\nno empty line and no body');
    for (const p of [protectBuffer(noEnd), await collect(protectPayload(chunksOf(noEnd, 1)))]) expect(p.equals(noEnd)).to.equal(true);
    expect(restoreBuffer(big).equals(big)).to.equal(true);
    expect(protectBuffer(Buffer.alloc(0)).length).to.equal(0);
    expect((await collect(restoreOriginal([]))).length).to.equal(0);
  });

  it('wraps at the bound exactly, and random binary bodies come back at random chunk sizes', async function () {
    const pad = HEADER_SECTION_MAX - DH.length - 'X: \r\n\r\n'.length;
    const edge = msg(`X: ${'z'.repeat(pad)}\r\n\r\nb`);
    expect(protectBuffer(edge).length).to.be.greaterThan(edge.length);
    const over = msg(`X: ${'z'.repeat(pad + 1)}\r\n\r\nb`);
    expect(protectBuffer(over).equals(over)).to.equal(true);
    for (const size of [1, 4096, 100_000]) {
      expect((await collect(protectPayload(chunksOf(edge, size)))).equals(protectBuffer(edge)), `edge, chunks of ${size}`).to.equal(true);
      expect((await collect(protectPayload(chunksOf(over, size)))).equals(over), `over, chunks of ${size}`).to.equal(true);
    }
    for (let i = 0; i < 20; i++) {
      const plaintext = Buffer.concat([msg('Subject: r\r\n\r\n'), randomBytes(1000 + i * 97)]);
      const payload = protectBuffer(plaintext);
      const size = 1 + (i * 37) % 300;
      expect((await collect(restoreOriginal(chunksOf(payload, size)))).equals(plaintext)).to.equal(true);
      expect((await collect(protectPayload(chunksOf(plaintext, size)))).equals(payload)).to.equal(true);
    }
  });

  it('passes files stored before the wrapper unchanged', async function () {
    const old = msg('From: a@b.example\r\nSubject: old\r\n\r\nbody\r\n');
    expect(restoreBuffer(old).equals(old)).to.equal(true);
    expect((await collect(restoreOriginal(chunksOf(old, 1)))).equals(old)).to.equal(true);
  });

  it('ignores a marker a sender forges in her own message, wrapped or stored before the wrapper', async function () {
    // The sender's message starts with a perfect copy of a marker and a wrapper...
    const rest = `${WRAPPER_CONTENT_TYPE}\r\nSubject: forged\r\n\r\n`;
    const forged = `Kzymy-Payload: v1; wrapper=${'Kzymy-Payload: v1; wrapper=000\r\n'.length + rest.length}\r\n${rest}`;
    expect(restoreBuffer(Buffer.from(forged + 'x')).toString(), 'the forgery is well formed').to.equal('x');
    const evil = `${forged}From: evil@x.example\r\nSubject: cut me\r\n\r\nbody\r\n`;
    // ...but what kzymy encrypts always starts with its own bytes: only the real wrapper comes off.
    const plaintext = msg(evil);
    const payload = await roundTrip(plaintext);
    expect(restoreBuffer(payload).toString('latin1')).to.include(evil);
    // A file stored before the wrapper (delivery headers first): nothing is taken off.
    expect(restoreBuffer(plaintext).equals(plaintext)).to.equal(true);
    expect((await collect(restoreOriginal(chunksOf(plaintext, 1)))).equals(plaintext)).to.equal(true);
    // A forged marker somewhere in a wrapped payload's header does not change what comes off.
    const inHeader = msg(`Subject: a\r\nKzymy-Payload: v1; wrapper=12\r\n\r\nb`);
    expect(restoreBuffer(protectBuffer(inHeader)).equals(inHeader)).to.equal(true);
  });

  it('passes on unchanged, marker included, a payload whose marker does not match what follows', async function () {
    const good = protectBuffer(msg('Subject: s\r\n\r\nbody\r\n'));
    const w = wrapperOf(good).length;
    const odd = [
      // a length one short, one long, past the end, zero, absurd
      Buffer.from(good.toString('latin1').replace(`wrapper=${w}`, `wrapper=${w - 1}`), 'latin1'),
      Buffer.from(good.toString('latin1').replace(`wrapper=${w}`, `wrapper=${w + 1}`), 'latin1'),
      Buffer.from(good.toString('latin1').replace(`wrapper=${w}`, `wrapper=${good.length + 5}`), 'latin1'),
      Buffer.from(good.toString('latin1').replace(`wrapper=${w}`, 'wrapper=0'), 'latin1'),
      Buffer.from(good.toString('latin1').replace(`wrapper=${w}`, 'wrapper=99999999'), 'latin1'),
      // another version, other spacing, LF only, another Content-Type line
      Buffer.from(good.toString('latin1').replace('v1;', 'v2;'), 'latin1'),
      Buffer.from(good.toString('latin1').replace('v1; ', 'v1;  '), 'latin1'),
      Buffer.from(good.toString('latin1').replace(`wrapper=${w}\r\n`, `wrapper=${w - 1}\n`), 'latin1'),
      Buffer.from(good.toString('latin1').replace('message/rfc822', 'message/rfc823'), 'latin1'),
      // cut short inside the marker and inside the wrapper
      good.subarray(0, 10),
      good.subarray(0, 40),
      good.subarray(0, w - 1),
    ];
    for (const p of odd) {
      expect(restoreBuffer(p).equals(p), JSON.stringify(p.subarray(0, 50).toString('latin1'))).to.equal(true);
      for (const size of [1, 5, 1000]) expect((await collect(restoreOriginal(chunksOf(p, size)))).equals(p)).to.equal(true);
    }
    // Exactly the wrapper and nothing after it: an empty plaintext.
    expect(restoreBuffer(good.subarray(0, w)).length).to.equal(0);
    expect((await collect(restoreOriginal(chunksOf(good.subarray(0, w), 3)))).length).to.equal(0);
  });

  it('stops its source when the consumer stops early', async function () {
    let closed = 0;
    async function* source(): AsyncGenerator<Buffer> {
      try {
        yield msg('Subject: s\r\n\r\n');
        for (;;) yield Buffer.alloc(1024);
      } finally {
        closed++;
      }
    }
    for (const gen of [protectPayload(source()), restoreOriginal(protectPayload(source()))]) {
      let n = 0;
      for await (const c of gen) {
        expect(c.length).to.be.greaterThan(0);
        if (++n === 3) break;
      }
    }
    expect(closed).to.equal(2);
  });
});
