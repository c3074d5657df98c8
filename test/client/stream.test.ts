// kzymy-client fetch streams each message from the HTTP answer into the Maildir's tmp/ file
// or (spooled, complete) into an MDA, and with --decrypt through gpg, never holding it whole.
// The server here is an in-process HTTP server on 127.0.0.1 (--no-tor) that speaks just
// enough of kzymy's API (login, list, download, delete) and misbehaves on demand: it
// generates a 300 MiB download, cuts a transfer midway, sends more than it listed, serves
// damaged ciphertext. The real client CLI runs as a subprocess with a real GnuPG home.
import { expect } from 'chai';
import { spawn } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { mkdir, readdir, readFile, stat } from 'node:fs/promises';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import path from 'node:path';
import { readKey } from 'openpgp';
import { sealMessage } from '../../src/pgp/index.js';
import { armoredPart, armoredStream, crlfToLf } from '../../src/client/decrypt.js';
import type { Chunks } from '../../src/client/deliver.js';
import { peekHead } from '../../src/client/envelope.js';
import { tempDir } from '../helpers/env.js';
import { makeGpgKey, requireGpg, type TestKey } from '../helpers/gpg.js';
import { mountTmpfs } from '../helpers/tmpfs.js';
import { CLIENT_CLI, expectNoStack, ROOT, type ClientRun } from './helpers.js';

const USERNAME = 'streamuserab';
const MiB = 1024 * 1024;

interface Served {
  /** The size the list gives. */
  listed: number;
  /** Content-Length; default `listed`. */
  length?: number;
  /** The body, generated on each request. */
  body: () => AsyncIterable<Buffer>;
  /** Destroys the connection after this many body bytes. */
  cutAfter?: number;
}

interface TestServer {
  url: string;
  messages: Map<string, Served>;
  requests: Array<{ method: string; path: string }>;
  /** The ids the client acknowledged (DELETE, or POST /messages/acknowledge), in order. */
  deletes(): string[];
  /** True: the server also takes POST /messages/acknowledge (else a 404 as from an older server). */
  batch: boolean;
  /** The id lists of each POST /messages/acknowledge. */
  batches: string[][];
  /** True: the server also takes POST /messages/download (else a 404 as from an older server). */
  downloads: boolean;
  /** Misbehaviour of POST /messages/download: frames in another order, or bytes after the last. */
  frames: { swap?: boolean; trailing?: Buffer };
  /** The id lists of each POST /messages/download. */
  downloadBatches: string[][];
  /** sha256 and size of the bytes sent for each completed GET, by id. */
  sent: Map<string, { sha256: string; size: number }>;
  close(): Promise<void>;
}

function send(res: http.ServerResponse, status: number, body: unknown): void {
  const text = JSON.stringify(body);
  res.writeHead(status, { 'Content-Type': 'application/json', 'Content-Length': Buffer.byteLength(text) });
  res.end(text);
}

async function startServer(key: TestKey): Promise<TestServer> {
  const messages = new Map<string, Served>();
  const requests: TestServer['requests'] = [];
  const sent: TestServer['sent'] = new Map();
  const body = new WeakMap<http.IncomingMessage, string>();
  const server = http.createServer((req, res) => {
    let text = '';
    req.setEncoding('utf8');
    req.on('data', (t: string) => (text += t));
    req.on('end', () => {
      body.set(req, text);
      void route(req, res);
    });
  });
  const acked: string[] = [];
  async function route(req: http.IncomingMessage, res: http.ServerResponse): Promise<void> {
    const p = req.url ?? '';
    if (req.method === 'POST' && p === '/api/v1/messages/acknowledge' && self.batch) {
      requests.push({ method: 'POST', path: p });
      const ids = (JSON.parse(body.get(req) ?? '{}') as { ids: string[] }).ids;
      self.batches.push(ids);
      for (const id of ids) {
        messages.delete(id);
        acked.push(id);
      }
      return send(res, 200, { deleted: ids, missing: [] });
    }
    if (req.method === 'POST' && p === '/api/v1/messages/download' && self.downloads) {
      requests.push({ method: 'POST', path: p });
      const ids = (JSON.parse(body.get(req) ?? '{}') as { ids: string[] }).ids;
      self.downloadBatches.push(ids);
      const order = self.frames.swap && ids.length > 1 ? [ids[1]!, ids[0]!, ...ids.slice(2)] : ids;
      res.writeHead(200, { 'Content-Type': 'application/vnd.kzymy.messages' });
      for (const id of order) {
        const s = messages.get(id);
        if (!s) {
          res.write(`${id} -\n`);
          continue;
        }
        res.write(`${id} ${s.length ?? s.listed}\n`);
        if (!(await sendBody(id, s, res))) return;
      }
      if (self.frames.trailing) res.write(self.frames.trailing);
      res.end();
      return;
    }
    requests.push({ method: req.method ?? '', path: p });
    const soon = new Date(Date.now() + 300_000).toISOString();
    const m = /^\/api\/v1\/messages\/([^/]+)$/.exec(p);
    if (req.method === 'POST' && p === '/api/v1/auth/challenge') {
      return send(res, 200, { challengeId: 'ch1', nonce: randomBytes(32).toString('base64url'), expiresAt: soon, fingerprint: key.fingerprint });
    }
    if (req.method === 'POST' && p === '/api/v1/auth/token') return send(res, 200, { token: 'tok1', tokenType: 'Bearer', username: USERNAME, expiresAt: soon });
    if (req.method === 'POST' && p === '/api/v1/auth/logout') return send(res, 200, {});
    if (req.method === 'GET' && p === '/api/v1/messages') {
      const list = [...messages].map(([id, s]) => ({ id, size: s.listed, receivedAt: soon }));
      return send(res, 200, { messages: list, count: list.length, bytes: list.reduce((n, e) => n + e.size, 0) });
    }
    if (m && req.method === 'DELETE') {
      messages.delete(decodeURIComponent(m[1]!));
      acked.push(decodeURIComponent(m[1]!));
      return send(res, 200, { deleted: m[1] });
    }
    if (m && req.method === 'GET') {
      const id = decodeURIComponent(m[1]!);
      const s = messages.get(id);
      if (!s) return send(res, 404, { error: { code: 'no-such-message', message: 'No such message.' } });
      res.writeHead(200, { 'Content-Type': 'message/rfc822', 'Content-Length': s.length ?? s.listed });
      if (await sendBody(id, s, res)) res.end();
      return;
    }
    return send(res, 404, { error: { code: 'not-found', message: 'No such endpoint.' } });
  }
  /** Writes the body of `s` (false: cut midway, as it asks); records what was sent. */
  async function sendBody(id: string, s: Served, res: http.ServerResponse): Promise<boolean> {
    {
      const hash = createHash('sha256');
      let size = 0;
      for await (const chunk of s.body()) {
        let piece = chunk;
        if (s.cutAfter !== undefined && size + piece.length >= s.cutAfter) {
          piece = piece.subarray(0, s.cutAfter - size);
          res.write(piece);
          // Cut: the socket goes away once what was written is flushed.
          await new Promise((r) => setTimeout(r, 100));
          res.socket?.destroy();
          return false;
        }
        hash.update(piece);
        size += piece.length;
        // Backpressure: the next chunk is made only once the client has taken this one.
        if (!res.write(piece)) {
          await new Promise<void>((resolve) => {
            const done = (): void => {
              res.off('drain', done);
              res.off('close', done);
              resolve();
            };
            res.on('drain', done);
            res.on('close', done);
          });
          if (res.destroyed) return false;
        }
      }
      sent.set(id, { sha256: hash.digest('hex'), size });
      return true;
    }
  }
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const port = (server.address() as AddressInfo).port;
  const self: TestServer = {
    url: `http://127.0.0.1:${port}`,
    messages,
    requests,
    sent,
    batch: false,
    batches: [],
    downloads: false,
    frames: {},
    downloadBatches: [],
    deletes: () => [...acked],
    close: () =>
      new Promise((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
  return self;
}

/** `total` bytes made of a random 1 MiB block with a counter in front of each copy (no two MiB alike). */
function generated(total: number): () => AsyncIterable<Buffer> {
  const block = randomBytes(MiB);
  return async function* () {
    for (let at = 0, n = 0; at < total; at += MiB, n++) {
      const b = Buffer.from(block.subarray(0, Math.min(MiB, total - at)));
      b.writeUInt32BE(n, 0);
      yield b;
    }
  };
}

function fixed(data: Buffer): () => AsyncIterable<Buffer> {
  return async function* () {
    // In pieces, so that the client sees a stream, not one chunk.
    for (let at = 0; at < data.length; at += 7919) yield data.subarray(at, at + 7919);
  };
}

async function sha256File(file: string): Promise<string> {
  const hash = createHash('sha256');
  for await (const c of createReadStream(file)) hash.update(c as Buffer);
  return hash.digest('hex');
}

async function list(dir: string): Promise<string[]> {
  return readdir(dir).catch(() => []);
}

describe('kzymy-client fetch streams each message (memory bounded, all or nothing)', function () {
  this.timeout(300_000);
  let key: TestKey;
  let srv: TestServer;
  let dir: string;
  let cleanup: () => Promise<void>;
  let profile: string;
  let maildir: string;

  before(async function () {
    requireGpg(this);
    key = await makeGpgKey('ed25519');
  });
  beforeEach(async function () {
    ({ dir, cleanup } = await tempDir('kzymy-client-stream-'));
    srv = await startServer(key);
    profile = path.join(dir, 'profile', 'client.json');
    maildir = path.join(dir, 'Maildir');
  });
  afterEach(async function () {
    await srv?.close();
    await cleanup?.();
  });

  /** kzymy-client ... fetch ARGS, with the peak RSS of the process (KiB). */
  function fetch(args: string[]): Promise<ClientRun & { maxRssKiB: number }> {
    const rssFile = path.join(dir, `maxrss-${randomBytes(4).toString('hex')}`);
    const argv = [
      '--import', 'tsx', '--import', path.join(ROOT, 'test', 'client', 'maxrss.ts'), CLIENT_CLI,
      '--config', profile, '--gnupghome', key.gnupghome, '--server', srv.url, '--no-tor',
      '--username', USERNAME, '--key', key.fingerprint, 'fetch', ...args,
    ];
    return new Promise((resolve, reject) => {
      const child = spawn(process.execPath, argv, {
        cwd: ROOT,
        env: { ...process.env, KZYMY_DEBUG: '', KZYMY_TEST_MAXRSS_FILE: rssFile },
        stdio: ['ignore', 'pipe', 'pipe'],
      });
      let stdout = '';
      let stderr = '';
      child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
      child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
      child.on('error', reject);
      child.on('close', (code, signal) => {
        void readFile(rssFile, 'utf8').then(
          (t) => resolve({ code, signal, stdout, stderr, maxRssKiB: Number(t) }),
          () => resolve({ code, signal, stdout, stderr, maxRssKiB: NaN }),
        );
      });
    });
  }

  async function expectNothingDelivered(): Promise<void> {
    expect(await list(path.join(maildir, 'new')), 'new/').to.deep.equal([]);
    expect(await list(path.join(maildir, 'tmp')), 'tmp/').to.deep.equal([]);
    expect(srv.deletes(), 'no DELETE: the message stays on the server').to.deep.equal([]);
  }

  /** Nothing but the profile's own files beside it: no spool left behind. */
  async function expectNoSpool(): Promise<void> {
    const names = await list(path.dirname(profile));
    expect(names.filter((n) => /spool/.test(n)), names.join(' ')).to.deep.equal([]);
  }

  it('a 300 MiB download goes to the Maildir byte for byte, the client staying far below its size in memory', async function () {
    const size = 300 * MiB;
    srv.messages.set('big.1', { listed: size, body: generated(size) });
    const r = await fetch(['--maildir', maildir, '--quiet']);
    expect(r.code, r.stderr).to.equal(0);
    const names = await list(path.join(maildir, 'new'));
    expect(names).to.have.length(1);
    const file = path.join(maildir, 'new', names[0]!);
    expect(names[0]).to.match(new RegExp(`,S=${size}$`));
    expect((await stat(file)).size).to.equal(size);
    expect(await sha256File(file)).to.equal(srv.sent.get('big.1')!.sha256);
    expect(await list(path.join(maildir, 'tmp'))).to.deep.equal([]);
    expect(srv.deletes()).to.deep.equal(['big.1']);
    // A memory bound, not a timing: the whole message would be 300 MiB on its own.
    expect(r.maxRssKiB, 'peak RSS (KiB)').to.be.a('number').and.to.be.below(200 * 1024);
  });

  it('a transfer cut midway leaves nothing in new/ or tmp/, is not acknowledged, and exits 75', async function () {
    const size = 8 * MiB;
    srv.messages.set('cut.1', { listed: size, body: generated(size), cutAfter: size / 2 });
    const r = await fetch(['--maildir', maildir]);
    expect(r.code, r.stderr).to.equal(75);
    expect(r.stderr).to.match(/^kzymy-client: The connection to http:\/\/127\.0\.0\.1:\d+ broke( during a transfer)?; try again later\.\n$/);
    expectNoStack(r);
    await expectNothingDelivered();
  });

  it('a connection cut with several downloads in flight: only messages fsynced in new/ are acknowledged, in batches; the rest stay (exit 75)', async function () {
    srv.batch = true;
    const size = MiB;
    for (let i = 0; i < 12; i++) srv.messages.set(`many.${i}`, { listed: size, body: generated(size), ...(i === 5 ? { cutAfter: size / 2 } : {}) });
    const r = await fetch(['--maildir', maildir]);
    expect(r.code, r.stderr).to.equal(75);
    expect(r.stderr).to.match(/broke( during a transfer)?; try again later\.\n$/);
    expectNoStack(r);
    const acked = srv.deletes();
    expect(acked).not.to.include('many.5');
    expect(srv.requests.filter((q) => q.method === 'DELETE'), 'no DELETE: batches only').to.deep.equal([]);
    expect(srv.batches.flat()).to.deep.equal(acked);
    // Every acknowledged message is in new/, complete (the bytes sent); nothing else is.
    const names = await list(path.join(maildir, 'new'));
    expect(names).to.have.length(acked.length);
    const sums = await Promise.all(names.map((n) => sha256File(path.join(maildir, 'new', n))));
    expect(sums.sort()).to.deep.equal(acked.map((id) => srv.sent.get(id)!.sha256).sort());
    expect(await list(path.join(maildir, 'tmp')), 'tmp/').to.deep.equal([]);
    // What was not acknowledged is still waiting, and the next run takes it once.
    expect([...srv.messages.keys()].sort()).to.deep.equal(Array.from({ length: 12 }, (_, i) => `many.${i}`).filter((id) => !acked.includes(id)).sort());
    srv.messages.get('many.5')!.cutAfter = undefined;
    const again = await fetch(['--maildir', maildir, '--quiet']);
    expect(again.code, again.stderr).to.equal(0);
    expect(srv.messages.size).to.equal(0);
    expect(await list(path.join(maildir, 'new'))).to.have.length(12);
    expect(new Set(srv.deletes()).size, 'each acknowledged once').to.equal(12);
  });

  it('an MDA never sees a transfer cut midway: it is not run, nothing is acknowledged, no spool stays', async function () {
    const size = 8 * MiB;
    srv.messages.set('cut.2', { listed: size, body: generated(size), cutAfter: size / 2 });
    const out = path.join(dir, 'mda');
    await mkdir(out);
    const r = await fetch(['--mda', `touch '${out}/ran'; cat > '${out}/msg'`]);
    expect(r.code, r.stderr).to.equal(75);
    expect(r.stderr).to.match(/broke( during a transfer)?; try again later\.\n$/);
    expect(await list(out)).to.deep.equal([]);
    expect(srv.deletes()).to.deep.equal([]);
    await expectNoSpool();
  });

  it('an MDA gets a complete download with backpressure, and it is then acknowledged', async function () {
    const size = 40 * MiB;
    srv.messages.set('mda.1', { listed: size, body: generated(size) });
    const out = path.join(dir, 'mda');
    await mkdir(out);
    // A slow reader: the client must wait for it, not buffer the message.
    const r = await fetch(['--mda', `perl -e 'while (read(STDIN, $b, 1 << 20)) { print $b; select(undef, undef, undef, 0.01) }' > '${out}/msg'`]);
    expect(r.code, r.stderr).to.equal(0);
    expect((await stat(path.join(out, 'msg'))).size).to.equal(size);
    expect(await sha256File(path.join(out, 'msg'))).to.equal(srv.sent.get('mda.1')!.sha256);
    expect(srv.deletes()).to.deep.equal(['mda.1']);
    expect(r.maxRssKiB, 'peak RSS (KiB)').to.be.below(200 * 1024);
    await expectNoSpool();
  });

  it('a Maildir whose disk fills up midway keeps nothing in tmp/, leaves the message on the server, and says so (exit 75)', async function () {
    await mkdir(maildir);
    const full = await mountTmpfs(this, '4m', { at: maildir });
    try {
      srv.messages.set('full.1', { listed: 8 * MiB, body: generated(8 * MiB) });
      const r = await fetch(['--maildir', maildir]);
      expect(r.code, r.stderr).to.equal(75);
      expect(r.stderr).to.match(/^kzymy-client: Cannot write to the Maildir .*: the disk is full \(free some space\); the message stays on the server for the next run\.\n$/);
      expectNoStack(r);
      await expectNothingDelivered();
    } finally {
      await full.unmount();
    }
  });

  it('a server that sends another size than it listed is refused (exit 76), nothing delivered', async function () {
    srv.messages.set('lie.1', { listed: 1000, length: 2 * MiB, body: generated(2 * MiB) });
    const r = await fetch(['--maildir', maildir]);
    expect(r.code, r.stderr).to.equal(76);
    expect(r.stderr).to.match(/sent a message of 2097152 bytes that it listed as 1000 bytes .*Do not use this server/);
    await expectNothingDelivered();
  });

  describe('batch downloads (POST /messages/download)', () => {
    beforeEach(() => {
      srv.batch = true;
      srv.downloads = true;
    });

    /** N small messages of different sizes, each of random bytes. */
    function smallOnes(n: number): string[] {
      const ids: string[] = [];
      for (let i = 0; i < n; i++) {
        const id = `small.${String(i).padStart(3, '0')}`;
        const data = randomBytes(1000 + i * 997);
        srv.messages.set(id, { listed: data.length, body: fixed(data) });
        ids.push(id);
      }
      return ids;
    }

    async function newSums(): Promise<string[]> {
      const names = await list(path.join(maildir, 'new'));
      return (await Promise.all(names.map((n) => sha256File(path.join(maildir, 'new', n))))).sort();
    }

    it('fetches small messages in batches, each whole and byte for byte, a large one alone; each acknowledged once', async function () {
      const ids = smallOnes(40);
      srv.messages.set('large.1', { listed: 2 * MiB, body: generated(2 * MiB) });
      const r = await fetch(['--maildir', maildir, '--quiet']);
      expect(r.code, r.stderr).to.equal(0);
      expect(srv.downloadBatches.flat().sort(), 'every small message in exactly one batch').to.deep.equal(ids);
      expect(srv.downloadBatches.some((b) => b.length > 1), 'several messages a request').to.equal(true);
      expect(srv.requests.filter((q) => q.method === 'GET' && q.path.startsWith('/api/v1/messages/')).map((q) => q.path)).to.deep.equal(['/api/v1/messages/large.1']);
      expect(await newSums()).to.deep.equal([...srv.sent.values()].map((v) => v.sha256).sort());
      expect(srv.deletes().sort()).to.deep.equal([...ids, 'large.1'].sort());
      expect(await list(path.join(maildir, 'tmp'))).to.deep.equal([]);
    });

    it('a server without batch downloads gets one GET a message', async function () {
      srv.downloads = false;
      const ids = smallOnes(20);
      const r = await fetch(['--maildir', maildir, '--quiet']);
      expect(r.code, r.stderr).to.equal(0);
      expect(srv.requests.filter((q) => q.method === 'GET' && q.path.startsWith('/api/v1/messages/'))).to.have.length(20);
      expect(srv.deletes().sort()).to.deep.equal(ids);
    });

    it('a batch cut midway: what came whole before the cut is delivered and acknowledged, the rest stays (exit 75)', async function () {
      const ids = smallOnes(40);
      srv.messages.get(ids[20]!)!.cutAfter = 500;
      const r = await fetch(['--maildir', maildir]);
      expect(r.code, r.stderr).to.equal(75);
      expect(r.stderr).to.match(/broke( during a transfer)?; try again later\.\n$/);
      expectNoStack(r);
      const acked = srv.deletes();
      expect(acked).not.to.include(ids[20]);
      expect(await newSums(), 'new/ holds exactly the acknowledged messages, complete').to.deep.equal(acked.map((id) => srv.sent.get(id)!.sha256).sort());
      expect(await list(path.join(maildir, 'tmp')), 'tmp/').to.deep.equal([]);
      srv.messages.get(ids[20]!)!.cutAfter = undefined;
      const again = await fetch(['--maildir', maildir, '--quiet']);
      expect(again.code, again.stderr).to.equal(0);
      expect(await list(path.join(maildir, 'new'))).to.have.length(40);
      expect(new Set(srv.deletes()).size, 'each acknowledged once').to.equal(40);
    });

    it('frames in another order than asked for are refused (exit 76): no message is delivered under another id', async function () {
      smallOnes(40);
      srv.frames.swap = true;
      const r = await fetch(['--maildir', maildir]);
      expect(r.code, r.stderr).to.equal(76);
      expect(r.stderr).to.match(/sent other messages than those asked for, or out of order .*Do not use this server/);
      expectNoStack(r);
      // Only a batch of one (nothing to swap) may have come through, under its own id.
      const singles = new Set(srv.downloadBatches.filter((b) => b.length === 1).flat());
      const acked = srv.deletes();
      for (const id of acked) expect(singles.has(id), `${id} came in a batch of one`).to.equal(true);
      expect(await newSums()).to.deep.equal(acked.map((id) => srv.sent.get(id)!.sha256).sort());
      expect(await list(path.join(maildir, 'tmp')), 'tmp/').to.deep.equal([]);
      expect(srv.downloadBatches.filter((b) => b.length > 1).length, 'swapped batches were sent').to.be.above(0);
    });

    it('a frame of another size than listed is refused (exit 76), nothing of it delivered', async function () {
      srv.messages.set('lie.2', { listed: 1000, length: 2000, body: fixed(randomBytes(2000)) });
      const r = await fetch(['--maildir', maildir]);
      expect(r.code, r.stderr).to.equal(76);
      expect(r.stderr).to.match(/sent a message of 2000 bytes that it listed as 1000 bytes .*Do not use this server/);
      await expectNothingDelivered();
    });

    it('bytes after the last frame are refused (exit 76)', async function () {
      smallOnes(1);
      srv.frames.trailing = Buffer.from('small.999 5\nextra');
      const r = await fetch(['--maildir', maildir]);
      expect(r.code, r.stderr).to.equal(76);
      expect(r.stderr).to.match(/sent more than the messages asked for .*Do not use this server/);
      expectNoStack(r);
    });
  });

  it('a server that lists a message over the download limit is refused before it is read', async function () {
    const huge = 4 * 1024 * MiB;
    srv.messages.set('huge.1', { listed: huge, body: generated(huge) });
    const r = await fetch(['--maildir', maildir]);
    expect(r.code, r.stderr).to.equal(76);
    expect(r.stderr).to.match(/more than the 1073741824 bytes kzymy-client accepts/);
    await expectNothingDelivered();
  });

  describe('--decrypt', function () {
    /** A message with CRLF line ends, a lone CR and a long body; and its PGP/MIME file to the test key. */
    async function pgpMime(bodyBytes: number): Promise<{ original: Buffer; file: Buffer }> {
      const lines = ['Return-Path: <sender@example.org>', `Delivered-To: shop@${USERNAME}.kzymy.test`, 'Subject: stream', '', 'a lone CR\rstays', ''];
      const filler = Buffer.alloc(bodyBytes, 'x');
      for (let i = 75; i < filler.length; i += 77) filler.write('\r\n', i - 1, 'latin1');
      const original = Buffer.concat([Buffer.from(lines.join('\r\n'), 'latin1'), filler, Buffer.from('\r\nend\r\n')]);
      const file = await sealMessage(original, { key: await readKey({ armoredKey: key.publicArmored }), domain: 'kzymy.test' });
      return { original, file };
    }

    const lf = (b: Buffer): Buffer => Buffer.from(b.toString('latin1').replace(/\r\n/g, '\n'), 'latin1');

    it('delivers LF line ends by default and the exact CRLF bytes with --crlf; the MDA gets SENDER/RECIPIENT', async function () {
      const { original, file } = await pgpMime(3 * MiB);
      srv.messages.set('dec.1', { listed: file.length, body: fixed(file) });
      let r = await fetch(['--maildir', maildir, '--decrypt', '--quiet']);
      expect(r.code, r.stderr).to.equal(0);
      let names = await list(path.join(maildir, 'new'));
      expect(names).to.have.length(1);
      const got = await readFile(path.join(maildir, 'new', names[0]!));
      expect(Buffer.compare(got, lf(original))).to.equal(0);
      expect(got.includes(Buffer.from('a lone CR\rstays\n'))).to.equal(true);
      expect(names[0]).to.match(new RegExp(`,S=${got.length}$`));

      srv.messages.set('dec.2', { listed: file.length, body: fixed(file) });
      r = await fetch(['--crlf', '--quiet']);
      expect(r.code, r.stderr).to.equal(0);
      names = (await list(path.join(maildir, 'new'))).filter((n) => !n.startsWith(names[0]!));
      expect(names).to.have.length(1);
      expect(Buffer.compare(await readFile(path.join(maildir, 'new', names[0]!)), original)).to.equal(0);

      srv.messages.set('dec.3', { listed: file.length, body: fixed(file) });
      const out = path.join(dir, 'mda');
      await mkdir(out);
      r = await fetch(['--no-crlf', '--mda', `printf '%s %s' "$SENDER" "$RECIPIENT" > '${out}/env'; cat > '${out}/msg'`]);
      expect(r.code, r.stderr).to.equal(0);
      expect(await readFile(path.join(out, 'env'), 'utf8')).to.equal(`sender@example.org shop@${USERNAME}.kzymy.test`);
      expect(Buffer.compare(await readFile(path.join(out, 'msg')), lf(original))).to.equal(0);
      expect(srv.deletes()).to.deep.equal(['dec.1', 'dec.2', 'dec.3']);
      await expectNoSpool();
    });

    /** The file with one base64 character of its armored ciphertext changed, near the end. */
    function damaged(file: Buffer): Buffer {
      const text = file.toString('latin1');
      const end = text.indexOf('\n=') > 0 ? text.lastIndexOf('\n=') : text.indexOf('-----END PGP MESSAGE-----');
      const at = end - 200;
      const out = Buffer.from(file);
      out[at] = out[at] === 0x41 ? 0x42 : 0x41;
      return out;
    }

    it('a damaged ciphertext leaves nothing in tmp/ or new/ and stays on the server', async function () {
      const { file } = await pgpMime(2 * MiB);
      const bad = damaged(file);
      srv.messages.set('bad.1', { listed: bad.length, body: fixed(bad) });
      const r = await fetch(['--maildir', maildir, '--decrypt']);
      expect(r.code, r.stderr).to.equal(1);
      expect(r.stderr).to.match(/^kzymy-client: 1 message could not be delivered and stays on the server: gpg could not decrypt message bad\.1( \([^\n]*\))?\.\n$/);
      expectNoStack(r);
      await expectNothingDelivered();
    });

    it('a message that fails to decrypt amid a batch stays on the server and is reported; the others are delivered', async function () {
      srv.batch = true;
      const good = await Promise.all([0, 1, 2, 3, 4, 5].map(() => pgpMime(20_000)));
      const { file } = await pgpMime(20_000);
      const bad = damaged(file);
      const garbage = Buffer.from('Content-Type: text/plain\r\n\r\nnot encrypted at all\r\n');
      good.slice(0, 3).forEach((g, i) => srv.messages.set(`ok.${i}`, { listed: g.file.length, body: fixed(g.file) }));
      srv.messages.set('bad.3', { listed: bad.length, body: fixed(bad) });
      srv.messages.set('plain.4', { listed: garbage.length, body: fixed(garbage) });
      good.slice(3).forEach((g, i) => srv.messages.set(`ok.${i + 3}`, { listed: g.file.length, body: fixed(g.file) }));
      const r = await fetch(['--maildir', maildir, '--decrypt']);
      expect(r.code, r.stderr).to.equal(1);
      expect(r.stderr).to.match(/^kzymy-client: 2 messages could not be delivered and stay on the server: (gpg could not decrypt message bad\.3|Message plain\.4 is not a PGP\/MIME message)/);
      expectNoStack(r);
      expect([...srv.messages.keys()].sort()).to.deep.equal(['bad.3', 'plain.4']);
      expect(srv.deletes().sort()).to.deep.equal(['ok.0', 'ok.1', 'ok.2', 'ok.3', 'ok.4', 'ok.5']);
      const got = await Promise.all((await list(path.join(maildir, 'new'))).map((n) => readFile(path.join(maildir, 'new', n))));
      expect(got).to.have.length(6);
      // The six good ones carry the same message: each delivered once, byte for byte.
      for (const b of got) expect(b.equals(lf(good[0]!.original)), 'exact').to.equal(true);
      // The private folder of the batch (ciphertexts, gpg's plaintexts) is gone.
      expect(await list(path.join(maildir, 'tmp')), 'tmp/').to.deep.equal([]);
    });

    it('an MDA fed a damaged ciphertext is killed before the end of its input and does not count', async function () {
      const { file } = await pgpMime(2 * MiB);
      const bad = damaged(file);
      srv.messages.set('bad.2', { listed: bad.length, body: fixed(bad) });
      const out = path.join(dir, 'mda');
      await mkdir(out);
      // Files the message only once its input ended: a killed MDA never gets there. A pipeline
      // into a subshell: killing /bin/sh alone would leave the subshell to see end of input.
      const r = await fetch(['--decrypt', '--mda', `cat | (cat > '${out}/part' && mv '${out}/part' '${out}/msg')`]);
      expect(r.code, r.stderr).to.equal(1);
      expect(r.stderr).to.match(/gpg could not decrypt message bad\.2/);
      // gpg wrote plaintext before it found the damage (the MDA was started on its first
      // bytes, and had read some): killed, the MDA never filed it.
      expect(await list(out)).to.deep.equal(['part']);
      expect(srv.deletes()).to.deep.equal([]);
      await expectNoSpool();
    });

    it('a transfer cut midway under --decrypt leaves nothing and exits 75', async function () {
      const { file } = await pgpMime(4 * MiB);
      srv.messages.set('cut.3', { listed: file.length, body: fixed(file), cutAfter: Math.floor(file.length / 2) });
      const r = await fetch(['--maildir', maildir, '--decrypt']);
      expect(r.code, r.stderr).to.equal(75);
      expect(r.stderr).to.match(/broke( during a transfer)?; try again later\.\n$/);
      await expectNothingDelivered();
    });
  });
});

describe('kzymy-client stream stages', function () {
  async function collect(chunks: Chunks): Promise<Buffer> {
    const out: Buffer[] = [];
    for await (const c of chunks) out.push(Buffer.from(c));
    return Buffer.concat(out);
  }
  /** `data` cut at every position into two chunks, and into 1-byte chunks. */
  function* splits(data: Buffer): Generator<Buffer[]> {
    for (let i = 0; i <= data.length; i++) yield [Buffer.from(data.subarray(0, i)), Buffer.from(data.subarray(i))];
    yield [...data].map((b) => Buffer.from([b]));
  }
  async function* from(parts: Buffer[]): AsyncGenerator<Buffer> {
    yield* parts;
  }

  it('CRLF -> LF, whatever the chunk boundaries (a CR at a chunk end, a lone CR, CRCRLF)', async function () {
    const data = Buffer.from('a\r\nb\rc\r\r\nd\r\n\r\ne\r', 'latin1');
    for (const parts of splits(data)) {
      expect((await collect(crlfToLf(from(parts)))).toString('latin1')).to.equal('a\nb\rc\r\nd\n\ne\r');
    }
  });

  it('the streamed armor is the armoredPart of the file, whatever the chunk boundaries; a file without one is refused', async function () {
    const file = Buffer.from('Content-Type: multipart/encrypted; boundary="b"\r\n\r\n--b\r\nVersion: 1\r\n--b\r\n\r\n-----BEGIN PGP MESSAGE-----\r\n\r\nabc\r\n=x\r\n-----END PGP MESSAGE-----\r\n--b--\r\n');
    const want = armoredPart(file)!.toString('latin1').replace(/\n$/, '');
    for (const parts of splits(file)) {
      expect((await collect(armoredStream(from(parts), 'x'))).toString('latin1').replace(/\r?\n$/, '')).to.equal(want);
    }
    const err = await collect(armoredStream(from([Buffer.from('no armor here\n'), Buffer.alloc(200_000, 0x2d)]), 'id9')).catch((e: Error) => e);
    expect((err as Error).message).to.equal('Message id9 is not a PGP/MIME message; it was not decrypted.');
  });

  it('peekHead reads at most the header (or 8 KiB) ahead and gives the whole message back', async function () {
    const msg = Buffer.concat([Buffer.from('Return-Path: <a@b>\r\n\r\n'), Buffer.alloc(100_000, 0x61)]);
    const cuts = [0, 1, 5, 20, 21, 22, 23, 100, 8191, 8192, 8193, 50_000, msg.length];
    const parts = [...cuts.map((i) => [msg.subarray(0, i), msg.subarray(i)]), Array.from({ length: 100 }, (_, i) => msg.subarray(i * 1000, (i + 1) * 1000 + (i === 99 ? 22 : 0)))];
    for (const p of parts) {
      const { head, message } = await peekHead(from(p));
      expect(head.length).to.be.at.most(8192);
      expect(Buffer.compare(await collect(message), msg)).to.equal(0);
    }
  });
});
