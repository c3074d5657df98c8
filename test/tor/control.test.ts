// kzymy's tor control client against controllers that misbehave. Real tor is used in
// test/cli/managed-tor.test.ts and the private network e2e; here a fake control socket
// (a stand-in, because a real tor cannot be made to announce another onion's descriptor,
// to go silent mid-handshake, or to send garbage) plays the hostile or broken tor.
import { expect } from 'chai';
import net from 'node:net';
import path from 'node:path';
import { writeFile } from 'node:fs/promises';
import { tempDir } from '../helpers/env.js';
import { silentLogger } from '../../src/config/log.js';
import { parseBootstrap, watchTor, type TorWatch } from '../../src/tor/index.js';

const OURS = 'a'.repeat(56);
const THEIRS = 'b'.repeat(56);

async function until(cond: () => boolean, ms = 5_000): Promise<void> {
  const end = Date.now() + ms;
  while (!cond() && Date.now() < end) await new Promise((r) => setTimeout(r, 20));
}

describe('tor control client', function () {
  this.timeout(20_000);
  let tmp: { dir: string; cleanup: () => Promise<void> };
  let server: net.Server | null = null;
  let watch: TorWatch | null = null;
  beforeEach(async () => (tmp = await tempDir('kzymy-torctl-')));
  afterEach(async () => {
    watch?.close();
    await new Promise<void>((r) => (server ? server.close(() => r()) : r()));
    server = null;
    await tmp.cleanup();
  });

  /** A fake tor: answers each command line with `respond`, and can push events. */
  async function fakeTor(respond: (line: string, sock: net.Socket) => void): Promise<string> {
    const file = path.join(tmp.dir, 'control.sock');
    server = net.createServer((sock) => {
      let buf = '';
      sock.on('data', (d) => {
        buf += d.toString();
        let nl: number;
        while ((nl = buf.indexOf('\r\n')) >= 0) {
          const line = buf.slice(0, nl);
          buf = buf.slice(nl + 2);
          respond(line, sock);
        }
      });
      sock.on('error', () => undefined);
    });
    await new Promise<void>((r) => server!.listen(file, () => r()));
    return file;
  }

  it('authenticates with the cookie, counts only its own onion as published, and survives garbage', async function () {
    const cookie = path.join(tmp.dir, 'cookie');
    await writeFile(cookie, Buffer.alloc(32, 7));
    let authed = '';
    const file = await fakeTor((line, sock) => {
      if (line === 'PROTOCOLINFO 1') sock.write(`250-PROTOCOLINFO 1\r\n250-AUTH METHODS=COOKIE,SAFECOOKIE COOKIEFILE="${cookie}"\r\n250-VERSION Tor="0.4.8.0"\r\n250 OK\r\n`);
      else if (line.startsWith('AUTHENTICATE ')) {
        authed = line.slice(13);
        sock.write('250 OK\r\n');
      } else if (line === 'GETINFO status/bootstrap-phase') sock.write('250-status/bootstrap-phase=NOTICE BOOTSTRAP PROGRESS=85 TAG=ap_conn SUMMARY="Connecting to a relay to build circuits"\r\n250 OK\r\n');
      else if (line.startsWith('SETEVENTS')) {
        sock.write('250 OK\r\n');
        sock.write(`650 HS_DESC UPLOADED ${THEIRS} UNKNOWN $AAAA~relay\r\n`);
        sock.write('650 what is this\r\n\x00\xff garbage without a code\r\n');
        sock.write('650 STATUS_CLIENT NOTICE BOOTSTRAP PROGRESS=100 TAG=done SUMMARY="Done"\r\n');
        sock.write(`650 HS_DESC FAILED ${OURS} UNKNOWN $BBBB~relay REASON=UPLOAD_REJECTED\r\n`);
        sock.write(`650 HS_DESC UPLOADED ${OURS} UNKNOWN $CCCC~relay\r\n`);
      } else sock.write('510 Unrecognized command\r\n');
    });
    watch = watchTor({ socket: file, logger: silentLogger, onion: () => `${OURS}.onion`, quietUnreachable: true });
    await until(() => watch!.state().uploads > 0);
    const s = watch.state();
    expect(authed).to.equal('07'.repeat(32));
    expect(s.control).to.equal('connected');
    expect(s.bootstrap).to.deep.equal({ percent: 100, tag: 'done', summary: 'Done' });
    expect(s.uploads, 'only our onion counts').to.equal(1);
    expect(s.publishedAt).to.be.a('string');
  });

  it('gives up with a reason when tor asks for a password, closes at once, or never answers', async function () {
    let file = await fakeTor((line, sock) => {
      if (line === 'PROTOCOLINFO 1') sock.write('250-PROTOCOLINFO 1\r\n250-AUTH METHODS=HASHEDPASSWORD\r\n250 OK\r\n');
    });
    watch = watchTor({ socket: file, logger: silentLogger, onion: () => null, quietUnreachable: true, retryMs: 60_000 });
    await until(() => watch!.state().control === 'unreachable');
    expect(watch.state().reason).to.match(/control password/);
    watch.close();
    await new Promise<void>((r) => server!.close(() => r()));

    file = await fakeTor((_line, sock) => sock.destroy());
    watch = watchTor({ socket: file, logger: silentLogger, onion: () => null, quietUnreachable: true, retryMs: 60_000 });
    await until(() => watch!.state().control === 'unreachable');
    expect(watch.state().reason).to.match(/closed/);
    watch.close();
    await new Promise<void>((r) => server!.close(() => r()));

    file = await fakeTor(() => undefined); // takes every command, answers none
    watch = watchTor({ socket: file, logger: silentLogger, onion: () => null, quietUnreachable: true, retryMs: 60_000, handshakeMs: 300 });
    await until(() => watch!.state().control === 'unreachable');
    expect(watch.state().reason).to.equal('no answer within 0 s');

    const none = watchTor({ socket: path.join(tmp.dir, 'nothing.sock'), logger: silentLogger, onion: () => null, quietUnreachable: true, retryMs: 60_000 });
    await until(() => none.state().control === 'unreachable');
    expect(none.state().reason).to.equal('ENOENT');
    none.close();
  });

  it('reads tor bootstrap lines', function () {
    expect(parseBootstrap('NOTICE BOOTSTRAP PROGRESS=0 TAG=starting SUMMARY="Starting"')).to.deep.equal({ percent: 0, tag: 'starting', summary: 'Starting' });
    expect(parseBootstrap('NOTICE BOOTSTRAP PROGRESS=x')).to.equal(null);
    expect(parseBootstrap('HS_DESC UPLOADED')).to.equal(null);
  });
});
