// kzymy's DATA parser (src/smtp/data-stream.ts, patch 4 in src/smtp/patches.ts) must behave
// exactly as smtp-server's own: both are fed the same hostile input (stuffed dots, lone CR
// and LF, terminators and near-terminators, commands pipelined after the end) cut into the
// same chunks, down to 1 byte, and must emit the same message bytes, the same count and
// size verdict after every chunk, and hand the same bytes back to the command parser.
// Then over real sockets: a real kzymy-server, swaks and a raw pipelining client, gpg.
import { expect } from 'chai';
import { randomBytes } from 'node:crypto';
import { readFile, rm, writeFile } from 'node:fs/promises';
import net from 'node:net';
import path from 'node:path';
import type { PassThrough } from 'node:stream';
import { SMTPStream } from 'smtp-server/lib/smtp-stream.js';
import { feedDataStream } from '../../src/smtp/data-stream.js';
import { applySmtpServerPatches, originalMethods } from '../../src/smtp/patches.js';
import { requireBinaries } from '../helpers/env.js';
import { gpgDecryptPgpMime, makeGpgKey, type TestKey } from '../helpers/gpg.js';
import { newFiles } from '../helpers/mail.js';
import { startServer, type RunningServer } from '../helpers/server.js';
import { swaks, swaksWire } from '../helpers/swaks.js';

type Feed = (this: unknown, chunk: Buffer, done: (err?: Error | null) => void) => void;
type DataStream = PassThrough & { byteLength: number; sizeExceeded: boolean };
type Parser = SMTPStream & {
  _feedDataStream: Feed;
  _dataStream: DataStream | null;
  dataBytes: number;
  startDataMode(max?: number): DataStream;
  continue(): void;
  oncommand(command: Buffer, callback?: () => void): void;
};

const SEEDS = Number(process.env.KZYMY_PARSER_SEEDS ?? 5000);
const ORIGINAL = originalMethods()['SMTPStream._feedDataStream'] as Feed;

/** Everything a parser did with `input` written in `cuts`: one line per event. */
async function trace(feed: Feed, input: Buffer, cuts: number[], maxBytes: number | undefined): Promise<string[]> {
  const parser = new SMTPStream({}) as Parser;
  parser._feedDataStream = feed; // an own property: this parser alone uses `feed`
  const events: string[] = [];
  let current: Buffer[] | null = null;
  parser.on('error', (err: Error) => events.push(`error ${err.message}`));
  parser.oncommand = (command, callback) => {
    const line = command.toString('latin1');
    events.push(`command ${JSON.stringify(line)}`);
    if (line === 'DATA') {
      const stream = parser.startDataMode(maxBytes);
      const parts: Buffer[] = (current = []);
      stream.on('data', (c: Buffer) => parts.push(Buffer.from(c)));
      stream.on('end', () => {
        current = null;
        events.push(`message ${Buffer.concat(parts).toString('hex')} byteLength ${stream.byteLength} sizeExceeded ${stream.sizeExceeded} dataBytes ${parser.dataBytes}`);
        parser.continue();
      });
    }
    // Answered in a later turn, as a server does that looks anything up: smtp-server
    // 3.21.6 stalls when a pipelined message ends within its own continue() (it clears the
    // next continuation after calling the last), whichever DATA parser it runs.
    if (callback) setImmediate(callback);
  };
  let at = 0;
  for (const n of cuts) {
    const chunk = input.subarray(at, at + n);
    at += n;
    await new Promise<void>((resolve) => parser.write(chunk, () => resolve()));
    const s = parser._dataStream;
    events.push(`after ${at}: dataBytes ${parser.dataBytes}` + (s ? ` byteLength ${s.byteLength} sizeExceeded ${s.sizeExceeded}` : ''));
  }
  await new Promise<void>((resolve) => parser.end(() => resolve()));
  await new Promise((resolve) => setImmediate(resolve));
  if (current) events.push(`unfinished message ${Buffer.concat(current).toString('hex')}`);
  return events;
}

/** A random generator with a seed, so that a failure can be replayed. */
function rng(seed: number): () => number {
  let x = seed >>> 0 || 1;
  return () => {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    return (x >>> 0) / 2 ** 32;
  };
}

const PIECES = ['.', '..', '\r', '\n', '\r\n', '\r\n.', '\r\n..', '\n.', '\n..', '.\r\n', '..\r\n', '\r\n.\r\n', '\n.\n', '\n.\r\n', '\r.\r\n', 'a', 'Subject: x', 'x'.repeat(40), 'NOOP\r\n', 'DATA\r\n', 'RSET\r\n'];

/** A session as a client might send it, or worse: commands, DATA, a mangled message, more. */
function randomSession(r: () => number): Buffer {
  const parts: string[] = [r() < 0.2 ? 'NOOP\r\n' : '', 'DATA\r\n'];
  const n = Math.floor(r() * 60);
  for (let i = 0; i < n; i++) parts.push(PIECES[Math.floor(r() * PIECES.length)]!);
  if (r() < 0.8) parts.push('\r\n.\r\n');
  if (r() < 0.5) parts.push('MAIL FROM:<a@example.org>\r\nRCPT TO:<b@example.org>\r\nDATA\r\n..x\r\n.\r\n');
  if (r() < 0.5) parts.push('QUIT\r\n');
  if (r() < 0.2) parts.push('NOOP'); // a last line without its newline
  let s = parts.join('');
  if (r() < 0.1) s = s.slice(0, Math.floor(r() * s.length)); // the client is gone mid-way
  return Buffer.from(s, 'latin1');
}

function randomCuts(r: () => number, length: number, kind: number): number[] {
  const cuts: number[] = [];
  for (let left = length; left > 0; ) {
    const max = kind === 0 ? 1 : kind === 1 ? 4 : kind === 2 ? 12 : kind === 3 ? 200 : length;
    const n = Math.min(left, 1 + Math.floor(r() * max));
    cuts.push(n);
    left -= n;
  }
  return cuts;
}

async function expectSame(input: Buffer, cuts: number[], maxBytes: number | undefined, what: string): Promise<void> {
  const want = await trace(ORIGINAL, input, cuts, maxBytes);
  const got = await trace(feedDataStream as Feed, input, cuts, maxBytes);
  expect(got, `${what}: ${JSON.stringify(input.toString('latin1'))} cut ${JSON.stringify(cuts)} max ${maxBytes}`).to.deep.equal(want);
}

describe('smtp: the DATA parser (patch 4) behaves as smtp-server\'s own', function () {
  this.timeout(600_000);
  it('is what the patches install', function () {
    applySmtpServerPatches();
    expect((SMTPStream.prototype as unknown as Parser)._feedDataStream).to.equal(feedDataStream);
    expect(ORIGINAL).not.to.equal(feedDataStream);
  });

  it('on the cases that matter, cut at every point into 2 and 3 chunks and into single bytes', async function () {
    const cases = [
      'DATA\r\nhello\r\n.\r\n',
      'DATA\r\n.\r\nNOOP\r\n', // an empty message, then a pipelined command
      'DATA\r\n..\r\n.\r\n', // a message of one line "."
      'DATA\r\n...\r\n\r\n.\r\n',
      'DATA\r\n\n..x\r\n.\r\n', // a stuffed dot at offset 1 stays, as in smtp-server
      'DATA\r\na\r\n..b\r\n.c\r\n\n..d\r\n.\r\nQUIT\r\n',
      'DATA\r\nx\n.\nno end\r\n.\r\n', // bare "\n.\n" ends nothing
      'DATA\r\nx\n.\r\nno end\r\n\r.\r\nstill none\r\n.\r\nMAIL FROM:<a@b>\r\nDATA\r\n..\r\n.\r\n',
      'DATA\r\n\r\n.\r\n',
      'DATA\r\n\r\n..\r\n.\r\n',
      'DATA\r\n..\r\n..\r\n..\r\n.\r\n',
      'DATA\r\nab\r\n.',
    ];
    for (const c of cases) {
      const input = Buffer.from(c, 'latin1');
      for (const max of [undefined, 3, 8]) {
        await expectSame(input, [input.length], max, 'whole');
        await expectSame(input, Array<number>(input.length).fill(1), max, 'bytes');
      }
      for (let a = 1; a < input.length; a++) {
        await expectSame(input, [a, input.length - a], 8, 'two');
        for (let b = 1; b <= 4 && a + b < input.length; b++) await expectSame(input, [a, b, input.length - a - b], undefined, 'three');
      }
    }
  });

  it(`on ${SEEDS} random sessions at random chunkings, 1-byte chunks included`, async function () {
    for (let seed = 1; seed <= SEEDS; seed++) {
      const r = rng(seed);
      const input = randomSession(r);
      const cuts = randomCuts(r, input.length, seed % 5);
      const max = [undefined, 1, 10, 40, 200][Math.floor(r() * 5)];
      await expectSame(input, cuts, max, `seed ${seed}`);
    }
  });

  it('on a large message with many stuffed lines in 64 KiB chunks', async function () {
    const r = rng(7);
    const lines: string[] = [];
    for (let i = 0; i < 20000; i++) lines.push((r() < 0.3 ? '..' : '') + randomBytes(1 + Math.floor(r() * 60)).toString('base64'));
    const input = Buffer.from('DATA\r\n' + lines.join('\r\n') + '\r\n.\r\nQUIT\r\n', 'latin1');
    await expectSame(input, [input.length], 100000, 'whole');
    const cuts: number[] = [];
    for (let left = input.length; left > 0; left -= 65536) cuts.push(Math.min(65536, left));
    await expectSame(input, cuts, 100000, '64 KiB');
  });
});

async function addUser(srv: RunningServer, key: TestKey): Promise<string> {
  const f = path.join(srv.base, `key-${key.fingerprint}.asc`);
  await writeFile(f, key.publicArmored);
  return (await srv.cli('users', 'add', '--key', f)).trim();
}

/** The delivered message without the three header lines kzymy puts in front. */
function delivered(plain: Buffer): Buffer {
  const text = plain.toString('latin1');
  return plain.subarray(text.indexOf('\r\n', text.indexOf('Received: ')) + 2);
}

/** A pipelining client: writes each part as it is due, with a pause between, collects reply lines. */
class Wire {
  private buf = '';
  readonly lines: string[] = [];
  private wake: (() => void) | null = null;
  private constructor(private readonly socket: net.Socket) {
    socket.setNoDelay(true);
    socket.on('data', (d: Buffer) => {
      this.buf += d.toString('latin1');
      let i;
      while ((i = this.buf.indexOf('\r\n')) >= 0) {
        this.lines.push(this.buf.slice(0, i));
        this.buf = this.buf.slice(i + 2);
      }
      this.wake?.();
    });
    socket.on('close', () => this.wake?.());
  }
  static async open(port: number): Promise<Wire> {
    const socket = net.connect(port, '127.0.0.1');
    await new Promise<void>((resolve, reject) => socket.once('connect', resolve).once('error', reject));
    return new Wire(socket);
  }
  /** Waits until `n` final reply lines (not "250-") have come. */
  async replies(n: number): Promise<string[]> {
    for (;;) {
      const final = this.lines.filter((l) => /^\d{3} /.test(l));
      if (final.length >= n || this.socket.destroyed) return final;
      await new Promise<void>((r) => (this.wake = r));
    }
  }
  async send(...parts: (string | Buffer)[]): Promise<void> {
    for (const p of parts) {
      this.socket.write(p);
      await new Promise((r) => setTimeout(r, 30));
    }
  }
  close(): void {
    this.socket.destroy();
  }
}

describe('smtp: dot-stuffed and pipelined mail through kzymy-server (real sockets, swaks, gpg)', function () {
  let srv: RunningServer;
  let key: TestKey;
  let user: string;

  before(async function () {
    requireBinaries(this, 'gpg', 'swaks');
    srv = await startServer();
    key = await makeGpgKey('ed25519');
    user = await addUser(srv, key);
  });
  after(async function () {
    if (!srv) return;
    await srv.stop();
    await srv.cleanup();
  });

  async function takeDelivered(): Promise<Buffer[]> {
    const out: Buffer[] = [];
    for (const f of (await newFiles(srv.maildirRoot, user)).sort()) {
      out.push(delivered(await gpgDecryptPgpMime(key.gnupghome, await readFile(f))));
      await rm(f);
    }
    return out;
  }

  it('delivers a message full of lines that start with dots, byte for byte (swaks)', async function () {
    const rcpt = `dots@${user}.${srv.domain}`;
    const body = ['.', '..', '...', '.\t', '. ', '.x', '..y', '', '.', 'end.', '.'].join('\r\n') + '\r\n';
    const msg = Buffer.from(`From: <sender@example.org>\r\nTo: <${rcpt}>\r\nSubject: dots\r\n\r\n.first\r\n${body}.last`, 'latin1');
    const r = await swaks({ port: srv.smtpPort, to: rcpt, data: msg });
    expect(r.last).to.match(/^250 2\.0\.0 /);
    const got = await takeDelivered();
    expect(got).to.have.length(1);
    expect(got[0]!.toString('latin1')).to.equal(swaksWire(msg).toString('latin1'));
  });

  it('answers commands pipelined after the end of DATA, with the end split over writes', async function () {
    const rcpt = `pipe@${user}.${srv.domain}`;
    const one = Buffer.from(`Subject: one\r\n\r\n..a stuffed line\r\n${randomBytes(3000).toString('base64').replace(/.{76}/g, '$&\r\n')}\r\n`, 'latin1');
    const two = Buffer.from('Subject: two\r\n\r\n..\r\n', 'latin1');
    const w = await Wire.open(srv.smtpPort);
    try {
      await w.replies(1);
      await w.send('EHLO client.example.org\r\n');
      expect((await w.replies(2)).at(-1)).to.match(/^250 /);
      await w.send(`MAIL FROM:<sender@example.org>\r\nRCPT TO:<${rcpt}>\r\nDATA\r\n`);
      expect((await w.replies(5)).slice(2)).to.deep.equal(['250 2.1.0 Accepted', '250 2.1.5 Accepted', '354 End data with <CR><LF>.<CR><LF>']);
      // The end of the first message in three writes, the next transaction right behind it.
      await w.send(one.subarray(0, one.length - 1), '\n.', `\r\nMAIL FROM:<sender@example.org>\r\nRCPT TO:<${rcpt}>\r\nDATA\r\n`);
      const after = (await w.replies(9)).slice(5);
      expect(after[0]).to.match(/^250 2\.0\.0 /);
      expect(after.slice(1)).to.deep.equal(['250 2.1.0 Accepted', '250 2.1.5 Accepted', '354 End data with <CR><LF>.<CR><LF>']);
      await w.send(Buffer.concat([two, Buffer.from('.\r\nNOOP\r\nQUIT\r\n')]));
      const end = (await w.replies(12)).slice(9);
      expect(end[0]).to.match(/^250 2\.0\.0 /);
      expect(end.slice(1)).to.deep.equal(['250 2.0.0 OK', '221 2.0.0 Bye']);
    } finally {
      w.close();
    }
    const got = await takeDelivered();
    expect(got).to.have.length(2);
    const texts = got.map((b) => b.toString('latin1'));
    const first = texts.findIndex((t) => t.startsWith('Subject: one'));
    expect(first).to.be.at.least(0);
    expect(got[first]!.equals(Buffer.from(one.toString('latin1').replace('\r\n..', '\r\n.'), 'latin1'))).to.equal(true);
    expect(got[1 - first]!.equals(Buffer.from('Subject: two\r\n\r\n.\r\n'))).to.equal(true);
  });
});
