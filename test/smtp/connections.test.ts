// Abusive senders against the connection limits and deadlines: a real kzymy-server
// process, raw sockets (from two loopback addresses), real gpg keys and Maildirs.
import { expect } from 'chai';
import net from 'node:net';
import tls from 'node:tls';
import path from 'node:path';
import { readdir, writeFile } from 'node:fs/promises';
import { requireBinaries } from '../helpers/env.js';
import { startServer, type RunningServer } from '../helpers/server.js';
import { makeGpgKey, type TestKey } from '../helpers/gpg.js';
import { marker, rawMessage, newFiles, filesContaining } from '../helpers/mail.js';
import { swaks } from '../helpers/swaks.js';
import { SourceCounter, sourceKey } from '../../src/smtp/sources.js';

async function addUser(srv: RunningServer, key: TestKey): Promise<string> {
  const f = path.join(srv.base, `key-${key.fingerprint}.asc`);
  await writeFile(f, key.publicArmored);
  return (await srv.cli('users', 'add', '--key', f)).trim();
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** A raw SMTP client socket that keeps everything it is sent. */
class Wire {
  readonly sock: net.Socket;
  text = '';
  closed = false;
  readonly gone: Promise<void>;
  private waiters: Array<() => void> = [];

  constructor(port: number, localAddress?: string) {
    this.sock = net.connect({ port, host: '127.0.0.1', ...(localAddress ? { localAddress } : {}) });
    this.sock.on('data', (d) => {
      this.text += d.toString('latin1');
      this.wake();
    });
    this.sock.on('error', () => undefined);
    this.gone = new Promise((resolve) =>
      this.sock.on('close', () => {
        this.closed = true;
        this.wake();
        resolve();
      }),
    );
  }

  private wake(): void {
    for (const w of this.waiters.splice(0)) w();
  }

  /** Waits until the text received matches `re` (rejects if the socket closes first). */
  async until(re: RegExp): Promise<string> {
    while (!re.test(this.text)) {
      if (this.closed) throw new Error(`connection closed; received: ${JSON.stringify(this.text)}`);
      await new Promise<void>((r) => this.waiters.push(r));
    }
    return this.text;
  }

  /** The first line the server sent. */
  async greeting(): Promise<string> {
    await this.until(/\r\n/);
    return this.text.split('\r\n')[0]!;
  }

  /** Sends `line` and waits for the next final reply line starting with `code`. */
  async command(line: string, code: number): Promise<void> {
    const from = this.text.length;
    this.sock.write(line + '\r\n');
    const re = new RegExp(`(^|\\r\\n)${code} [^\\r\\n]*\\r\\n`);
    while (!re.test(this.text.slice(from))) {
      if (this.closed) throw new Error(`connection closed after ${JSON.stringify(line)}; received: ${JSON.stringify(this.text.slice(from))}`);
      await new Promise<void>((r) => this.waiters.push(r));
    }
  }

  /** Writes `bytes` one at a time every `ms`, forever, until the socket closes. */
  async trickle(bytes: Buffer, ms: number): Promise<number> {
    let sent = 0;
    while (!this.closed && !this.sock.destroyed) {
      this.sock.write(bytes.subarray(sent % bytes.length, (sent % bytes.length) + 1));
      sent++;
      await sleep(ms);
    }
    return sent;
  }

  destroy(): void {
    this.sock.destroy();
  }
}

describe('SMTP connections from one source (real server, raw sockets)', function () {
  let srv: RunningServer;
  const open: Wire[] = [];

  before(async function () {
    requireBinaries(this, 'gpg', 'openssl');
    srv = await startServer({ config: { smtp: { maxClients: 4, maxClientsPerAddress: 2 } } });
  });
  afterEach(function () {
    for (const w of open.splice(0)) w.destroy();
  });
  after(async function () {
    await srv?.cleanup();
  });

  const connect = (from?: string) => {
    const w = new Wire(srv.smtpPort, from);
    open.push(w);
    return w;
  };

  it('refuses the connection over smtp.maxClientsPerAddress with its own 421 4.7.0 and serves another address', async function () {
    const a = connect('127.0.0.1');
    const b = connect('127.0.0.1');
    expect(await a.greeting()).to.match(/^220 /);
    expect(await b.greeting()).to.match(/^220 /);
    // The attacker keeps on knocking from the same address; each gets the per-address 421.
    const refused: Wire[] = [];
    for (let i = 0; i < 3; i++) {
      const c = connect('127.0.0.1');
      expect(await c.greeting()).to.equal('421 4.7.0 Too many connections from your address; try again later');
      await c.gone;
      refused.push(c);
    }
    // Refused connections took no slot of maxClients (4): two more from another address
    // fill it, and a full SMTP session there works.
    const d = connect('127.0.0.2');
    const e = connect('127.0.0.2');
    expect(await d.greeting()).to.match(/^220 /);
    expect(await e.greeting()).to.match(/^220 /);
    await d.command('EHLO other.example.org', 250);
    await d.command('NOOP', 250);
    // Now the total is reached: smtp-server's own limit answers.
    const f = connect('127.0.0.3');
    expect(await f.greeting()).to.match(/^421 4\.7\.0 .*Too many connected clients/);
    // The refusals are logged without the client's address.
    expect(srv.output()).to.include('too many connections from one source');
    expect(srv.output()).not.to.match(/127\.0\.0\.[23]/);
  });

  /**
   * Two connections from 127.0.0.1, both greeted with 220: tried again while the server has not
   * yet seen the closes of connections that ended a moment ago (a leaked count would refuse them
   * every time).
   */
  async function servedPair(): Promise<Wire[]> {
    let served: string[] = [];
    for (let attempt = 0; attempt < 50; attempt++) {
      const pair = [connect('127.0.0.1'), connect('127.0.0.1')];
      served = await Promise.all(pair.map((w) => w.greeting()));
      if (served.every((l) => l.startsWith('220 '))) return pair;
      for (const w of pair) w.destroy();
      await Promise.all(pair.map((w) => w.gone));
      await sleep(100);
    }
    return expect.fail(`no pair was served: ${served.join(' | ')}`);
  }

  it('gives the slots back when connections close, refused ones included', async function () {
    // The previous test's connections were closed just now.
    const first = await servedPair();
    const over = connect('127.0.0.1');
    expect(await over.greeting()).to.match(/^421 4\.7\.0 Too many connections from your address/);
    for (const w of first) {
      w.sock.end('QUIT\r\n');
      await w.gone;
    }
    await over.gone;
    // The server has seen the closes once a new pair is served; a leaked count would refuse it.
    await servedPair();
    await open[open.length - 1]!.command('EHLO again.example.org', 250);
  });
});

describe('SMTP deadlines a trickle cannot stretch (real server, raw sockets)', function () {
  let srv: RunningServer;
  let user: string;
  const open: Wire[] = [];
  const marks: string[] = [];

  before(async function () {
    requireBinaries(this, 'gpg', 'openssl', 'swaks');
    srv = await startServer({ config: { smtp: { commandTimeoutMs: 1500, minDataRate: 1_000_000, idleTimeoutMs: 4000 } } });
    user = await addUser(srv, await makeGpgKey('ed25519'));
  });
  afterEach(function () {
    for (const w of open.splice(0)) w.destroy();
  });
  after(async function () {
    if (!srv) return;
    for (const m of marks) expect(await filesContaining(srv.base, m), 'no plaintext marker on disk').to.deep.equal([]);
    await srv.cleanup();
  });

  const connect = () => {
    const w = new Wire(srv.smtpPort);
    open.push(w);
    return w;
  };
  const tmpFiles = async () => readdir(path.join(srv.maildirRoot, user, 'tmp')).catch(() => [] as string[]);

  it('cuts a command line trickled one byte every 200 ms with 421 4.4.2 and closes the connection', async function () {
    this.timeout(30_000);
    const w = connect();
    expect(await w.greeting()).to.match(/^220 /);
    // Without a command deadline every byte restarts the idle timer and this never ends.
    const sent = await w.trickle(Buffer.from('EHLO ' + 'a'.repeat(4000)), 200);
    expect(w.text).to.match(/\r\n421 4\.4\.2 Command line not completed in time; closing connection\r\n$/);
    expect(w.closed).to.equal(true);
    expect(sent).to.be.lessThan(4000, 'the line was cut before it ended');
    expect(srv.output()).to.include('command line too slow');
  });

  it('cuts a trickled DATA with 421 4.4.2 and stores nothing', async function () {
    this.timeout(30_000);
    const before = (await newFiles(srv.maildirRoot, user)).length;
    const mark = marker();
    marks.push(mark);
    const w = connect();
    await w.greeting();
    await w.command('EHLO slow.example.org', 250);
    await w.command('MAIL FROM:<sender@example.org>', 250);
    await w.command(`RCPT TO:<slow@${user}.${srv.domain}>`, 250);
    await w.command('DATA', 354);
    // Half the message at full speed, then one byte every 200 ms that never ends it.
    const msg = rawMessage(mark, { bodyBytes: 20_000 });
    w.sock.write(msg.subarray(0, msg.length / 2));
    await w.trickle(Buffer.from('slow '), 200);
    expect(w.text).to.match(/\r\n421 4\.4\.2 Message data arrived too slowly; closing connection, the message was not stored\r\n$/);
    expect(w.closed).to.equal(true);
    expect(srv.output()).to.include('message data too slow');
    // The data path removes its partial copy once it sees the stream end.
    for (let i = 0; i < 100 && (await tmpFiles()).length > 0; i++) await sleep(100);
    expect(await tmpFiles()).to.deep.equal([]);
    expect((await newFiles(srv.maildirRoot, user)).length).to.equal(before);
    // The server goes on serving.
    const ok = await swaks({ port: srv.smtpPort, to: `after@${user}.${srv.domain}`, body: 'x' });
    expect(ok.last).to.match(/^250 /);
  });

  it('lets a fast client that idles between commands (each pause longer than the command deadline) deliver', async function () {
    this.timeout(30_000);
    const before = (await newFiles(srv.maildirRoot, user)).length;
    const mark = marker();
    marks.push(mark);
    const w = connect();
    await w.greeting();
    await sleep(2000);
    await w.command('EHLO patient.example.org', 250);
    await sleep(2000);
    await w.command('MAIL FROM:<sender@example.org>', 250);
    await w.command(`RCPT TO:<fast@${user}.${srv.domain}>`, 250);
    await w.command('DATA', 354);
    await sleep(1000);
    // 600 KB in one go: well within 1.5 s + 0.6 s at loopback speed.
    const body = rawMessage(mark, { bodyBytes: 600_000 }).toString('latin1').replace(/(^|\r\n)\./g, '$1..');
    w.sock.write(Buffer.from(body, 'latin1'));
    await w.command('.', 250);
    await w.command('QUIT', 221);
    expect((await newFiles(srv.maildirRoot, user)).length).to.equal(before + 1);
  });

  it('closes a connection whose TLS handshake after STARTTLS trickles in (handshake bytes do not restart the idle timer)', async function () {
    this.timeout(30_000);
    const w = connect();
    await w.greeting();
    await w.command('EHLO tls.example.org', 250);
    await w.command('STARTTLS', 220);
    // A TLS record header that announces 512 bytes, then the bytes, one every 200 ms.
    const hello = Buffer.concat([Buffer.from([0x16, 0x03, 0x01, 0x02, 0x00]), Buffer.alloc(512)]);
    const sent = await w.trickle(hello, 200);
    expect(w.closed).to.equal(true);
    expect(sent).to.be.lessThan(hello.length, 'cut before the record was complete');
  });

  it('keeps the command deadline inside the TLS session after STARTTLS', async function () {
    this.timeout(30_000);
    const w = connect();
    await w.greeting();
    await w.command('EHLO tls.example.org', 250);
    await w.command('STARTTLS', 220);
    w.sock.removeAllListeners('data');
    // The test server's certificate is self-signed: this test checks deadlines, not PKI.
    const t = tls.connect({ socket: w.sock, rejectUnauthorized: false });
    let text = '';
    t.on('data', (d: Buffer) => (text += d.toString('latin1')));
    t.on('error', () => undefined);
    const closed = new Promise<void>((r) => t.once('close', () => r()));
    let isClosed = false;
    void closed.then(() => (isClosed = true));
    await new Promise<void>((r) => t.once('secureConnect', () => r()));
    t.write('EHLO tls.example.org\r\n');
    while (!/\r\n250 /.test(text) && !isClosed) await sleep(20);
    expect(text).to.match(/^250-/);
    for (let i = 0; !isClosed && i < 4000; i++) {
      t.write(i === 0 ? 'NOOP ' : 'x');
      await sleep(200);
    }
    await closed;
    expect(text).to.match(/\r\n421 4\.4\.2 Command line not completed in time; closing connection\r\n$/);
  });

  it('still closes a silent connection after smtp.idleTimeoutMs with 421 4.4.2', async function () {
    this.timeout(30_000);
    const w = connect();
    expect(await w.greeting()).to.match(/^220 /);
    await w.gone;
    expect(w.text).to.match(/\r\n421 4\.4\.2 .*Timeout/);
  });
});

describe('SMTP connection sources', function () {
  it('counts IPv4, IPv4-mapped IPv6 alike, and IPv6 by /64', function () {
    expect(sourceKey('::ffff:192.0.2.7')).to.equal('192.0.2.7');
    expect(sourceKey('::FFFF:c000:207')).to.equal('192.0.2.7');
    expect(sourceKey('2001:db8:1:2::1')).to.equal(sourceKey('2001:0db8:0001:0002:ffff:1:2:3'));
    expect(sourceKey('2001:db8:1:2::1')).not.to.equal(sourceKey('2001:db8:1:3::1'));
    const c = new SourceCounter(2);
    expect(c.admit('a', '2001:db8::1')).to.equal(true);
    expect(c.admit('b', '2001:db8::2')).to.equal(true);
    expect(c.admit('c', '2001:db8::3'), 'a third host of the same /64').to.equal(false);
    expect(c.admit('d', '2001:db8:0:1::1')).to.equal(true);
    c.release('c');
    expect(c.count('2001:db8::9'), 'releasing a refused connection changes nothing').to.equal(2);
    c.release('a');
    expect(c.admit('e', '2001:db8::5')).to.equal(true);
  });
});
