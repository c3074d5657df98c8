// `kzymy-server status` against no server and against a running one (real processes, real
// SMTP, the real control socket), the start-up banner under a pseudo-terminal (script(1)),
// and JSON lines when stdout is not a terminal.
import { expect } from 'chai';
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import { createHash } from 'node:crypto';
import { mkdir, readFile, stat, writeFile } from 'node:fs/promises';
import http from 'node:http';
import net from 'node:net';
import path from 'node:path';
import { promisify } from 'node:util';
import { onionAddress } from '../helpers/onion.js';
import { requireBinaries, tempDir } from '../helpers/env.js';
import { makeGpgKey } from '../helpers/gpg.js';
import { marker, rawMessage } from '../helpers/mail.js';
import { alive } from '../helpers/procs.js';
import { ROOT, runServerCli, serverCommand, startServer, type RunningServer } from '../helpers/server.js';
import { sendRaw } from '../helpers/smtp-client.js';
import { ReplyCounter } from '../../src/smtp/counters.js';
import type { StatusDocument } from '../../src/cli/status.js';
import { judge } from '../../src/cli/status-judge.js';
import { judgeDns } from '../../src/cli/status-dns.js';
import { askTor } from '../../src/tor/control.js';
import { loadConfig } from '../../src/config/index.js';
import { resolveLogFormat } from '../../src/config/log.js';
import dgram from 'node:dgram';
import { Resolver } from 'node:dns/promises';

const run = promisify(execFile);

interface Result {
  code: number;
  stdout: string;
  stderr: string;
}

/** `kzymy-server ARGS --config FILE`, with its exit code (status exits non-zero on a problem). */
async function cli(configFile: string, ...args: string[]): Promise<Result> {
  const c = serverCommand(...args, '--config', configFile);
  try {
    const r = await run(c.cmd, c.args, { cwd: ROOT, env: { ...process.env, KZYMY_TOR_MANAGE: '0' } });
    return { code: 0, ...r };
  } catch (err) {
    const e = err as { code: number; stdout: string; stderr: string };
    return { code: e.code, stdout: e.stdout, stderr: e.stderr };
  }
}

interface StatusJson {
  running: boolean;
  ok: boolean;
  lines: { mark: string; part: string; text: string }[];
  status: { replies: Record<string, number>; pid: number; tor: { control: string } };
}

/** A well-formed v3 onion address for a system tor's hostname file. */
const fakeOnion = (): string => onionAddress(createHash('sha256').update(marker()).digest());

function line(lines: StatusJson['lines'], part: string): { mark: string; text: string } {
  const l = lines.find((x) => x.part === part);
  expect(l, `a "${part}" line`).to.not.equal(undefined);
  return l!;
}

describe('kzymy-server status', function () {
  this.timeout(120_000);

  it('says that no server runs with this data dir, with its own exit code', async function () {
    const t = await tempDir('kzymy-status-');
    try {
      const cfg = path.join(t.dir, 'config.json');
      await writeFile(cfg, JSON.stringify({ domain: 'none.test', dataDir: path.join(t.dir, 'data'), maildirRoot: path.join(t.dir, 'maildirs'), tor: { manage: false } }));
      const r = await cli(cfg, 'status');
      expect(r.code).to.equal(3);
      expect(r.stderr).to.include(`no kzymy-server is running with this data dir (${path.join(t.dir, 'data')}): start it with "kzymy-server start --config ${cfg}"`);
      expect(r.stderr).not.to.match(/\n\s+at /);
      const j = await cli(cfg, 'status', '--json');
      expect(j.code).to.equal(3);
      expect((JSON.parse(j.stdout) as StatusJson).running).to.equal(false);
      // A socket file left by a killed server is not a running server either.
      await mkdir(path.join(t.dir, 'data'), { recursive: true });
      const stale = net.createServer().listen(path.join(t.dir, 'data', 'control.sock'));
      await new Promise((r) => stale.once('listening', r));
      await new Promise<void>((r) => stale.close(() => r()));
      await writeFile(path.join(t.dir, 'data', 'control.sock'), '');
      expect((await cli(cfg, 'status')).code).to.equal(3);
    } finally {
      await t.cleanup();
    }
  });

  describe('against a running server', function () {
    let srv: RunningServer;
    let hs: { dir: string; cleanup: () => Promise<void> };
    let user = '';

    before(async function () {
      requireBinaries(this, 'gpg', 'openssl');
      hs = await tempDir('kzymy-status-hs-');
      await writeFile(path.join(hs.dir, 'hostname'), `${fakeOnion()}\n`);
      srv = await startServer({ domain: 'status.test', config: { tor: { manage: false, hostnameFile: path.join(hs.dir, 'hostname') } } });
      const key = await makeGpgKey('ed25519');
      const f = path.join(srv.base, 'key.asc');
      await writeFile(f, key.publicArmored);
      user = (await srv.cli('users', 'add', '--key', f)).trim();
    });
    after(async () => {
      await srv?.cleanup();
      await hs?.cleanup();
    });

    it('shows ok lines and the SMTP replies of the last hour by code, and never an address', async function () {
      const msg = rawMessage(marker());
      expect((await sendRaw(srv.smtpPort, [`a@${user}.status.test`], msg)).reply).to.match(/^250 /);
      expect((await sendRaw(srv.smtpPort, [`b@${user}.status.test`], msg)).reply).to.match(/^250 /);
      expect((await sendRaw(srv.smtpPort, ['x@nobodyhere.status.test'], msg)).reply).to.match(/^550 5\.1\.1/);
      expect((await sendRaw(srv.smtpPort, ['x@elsewhere.example.net'], msg)).reply).to.match(/^550 5\.7\.1/);

      const r = await cli(srv.configFile, 'status', '--json');
      const j = JSON.parse(r.stdout) as StatusJson;
      expect(j.running).to.equal(true);
      expect(j.status.replies).to.deep.equal({ '250 2.0.0': 2, '550 5.1.1': 1, '550 5.7.1': 1 });
      for (const part of ['server', 'smtp', 'web', 'disk', 'users', 'mail', 'smtp hour', 'tls']) expect(line(j.lines, part).mark, part).to.equal('ok');
      expect(line(j.lines, 'users').text).to.equal('1 user (0 disabled).');
      expect(line(j.lines, 'mail').text).to.match(/^2 messages \(.* MiB\) waiting; the oldest arrived \d+ min ago\.$/);
      // Whatever a system tor on this machine says, the exit code follows the lines.
      expect(r.code).to.equal(j.lines.some((l) => l.mark === 'problem') ? 1 : 0);
      if (j.status.tor.control !== 'connected') {
        expect(line(j.lines, 'tor').mark).to.equal('unknown');
        expect(line(j.lines, 'onion').mark).to.equal('unknown');
        expect(r.code).to.equal(0);
      }
      expect(r.stdout).not.to.include('@');
      expect(r.stdout).not.to.include('example.org');

      const text = await cli(srv.configFile, 'status');
      expect(text.stdout).to.match(/^ok {6}smtp hour {2}4 replies in the last hour: 250 2\.0\.0 x2, 550 5\.1\.1 x1, 550 5\.7\.1 x1\.$/m);
      expect(text.stdout).to.match(/^ok {6}smtp {7}SMTP listens on 127\.0\.0\.1:\d+\.$/m);
      expect(text.stdout).to.match(/^ok {6}tls {8}The STARTTLS certificate is valid until \d{4}-\d\d-\d\d\.$/m);
    });

    it('serves only GET /status, on a socket only its owner can open', async function () {
      const sock = path.join(srv.dataDir, 'control.sock');
      expect((await stat(sock)).mode & 0o777).to.equal(0o600);
      const ask = (method: string, p: string, body?: string): Promise<number> =>
        new Promise((resolve, reject) => {
          const req = http.request({ socketPath: sock, method, path: p }, (res) => {
            res.resume();
            resolve(res.statusCode!);
          });
          req.on('error', reject);
          req.end(body);
        });
      expect(await ask('GET', '/status')).to.equal(200);
      expect(await ask('POST', '/status', '{"stop":true}')).to.equal(405);
      expect(await ask('DELETE', '/status')).to.equal(405);
      expect(await ask('GET', '/users')).to.equal(404);
      expect(await ask('GET', '/../status')).to.equal(404);
      // Not HTTP at all: node's parser answers 400 and closes.
      const raw = await new Promise<string>((resolve) => {
        const s = net.connect(sock);
        let got = '';
        s.on('data', (d) => (got += d.toString()));
        s.on('close', () => resolve(got));
        s.on('error', () => resolve(got));
        s.write('SHUTDOWN NOW\r\n\r\n');
      });
      expect(raw).to.match(/^HTTP\/1\.1 400/);
      expect(alive(srv.child.pid!)).to.equal(true);
    });

    it('refuses a second server on the same data dir', async function () {
      const again = await startServer({ base: srv.base, domain: 'status.test', config: { tor: { manage: false, hostnameFile: path.join(hs.dir, 'hostname') } } }).then(
        async (s) => {
          await s.stop();
          return null;
        },
        (err: Error) => err.message,
      );
      expect(again).to.include(`Another kzymy-server is running with the data dir ${srv.dataDir}`);
      expect((await cli(srv.configFile, 'status')).stdout).to.match(/^ok {6}server/m);
    });
  });

  it('reports free disk under limits.minFreeBytes as a problem and exits non-zero', async function () {
    requireBinaries(this, 'openssl');
    const srv = await startServer({ config: { limits: { minFreeBytes: 2 ** 52 } } });
    try {
      const r = await cli(srv.configFile, 'status');
      expect(r.code).to.equal(1);
      expect(r.stdout).to.match(/^problem disk {7}.* MiB free under .*, under the floor of \d+ MiB \(limits\.minFreeBytes\): SMTP answers 452 4\.3\.1/m);
      expect(r.stdout).to.match(/^\d+ problems?\.$/m);
    } finally {
      await srv.cleanup();
    }
  });

  describe('with a system tor the server cannot see (the appliance sandbox)', function () {
    // A real tor (DisableNetwork 1) with its ControlSocket and onion service in a temp folder:
    // the server asks the default system socket (absent here, hidden on the appliance), so the
    // status command asks tor.controlSocket itself.
    let t: { dir: string; cleanup: () => Promise<void> };
    let tor: ChildProcess | null = null;
    const ctl = (): string => path.join(t.dir, 'ctl');
    before(async function () {
      requireBinaries(this, 'tor', 'openssl');
      t = await tempDir('kzymy-status-tor-');
      await mkdir(path.join(t.dir, 'data'), { mode: 0o700 });
      await mkdir(path.join(t.dir, 'hs'), { mode: 0o700 });
      const torrc = [
        `DataDirectory ${t.dir}/data`,
        'DisableNetwork 1',
        'SocksPort 0',
        `ControlSocket ${ctl()}`,
        'CookieAuthentication 1',
        `HiddenServiceDir ${t.dir}/hs`,
        'HiddenServicePort 80 127.0.0.1:9',
        `__OwningControllerProcess ${process.pid}`,
        'Log notice stdout',
      ];
      await writeFile(path.join(t.dir, 'torrc'), `${torrc.join('\n')}\n`);
      tor = spawn('tor', ['-f', path.join(t.dir, 'torrc')], { stdio: 'ignore' });
      const end = Date.now() + 60_000;
      while (Date.now() < end && !(existsSync(ctl()) && existsSync(path.join(t.dir, 'hs', 'hostname')))) await new Promise((r) => setTimeout(r, 100));
      expect(existsSync(ctl()), 'tor made its control socket').to.equal(true);
    });
    after(async () => {
      tor?.kill();
      if (tor && tor.exitCode === null) await new Promise((r) => tor!.once('exit', r));
      await t?.cleanup();
    });

    it("asks tor's control socket itself: bootstrap and descriptor state, with no network not yet", async function () {
      const hostname = path.join(t.dir, 'hs', 'hostname');
      const onion = (await readFile(hostname, 'utf8')).trim();
      const srv = await startServer({ config: { tor: { manage: false, hostnameFile: hostname, controlSocket: ctl() } } });
      try {
        const r = await cli(srv.configFile, 'status', '--json');
        const j = JSON.parse(r.stdout) as StatusJson & { torAsked?: { socket: string; answer?: { descriptor: unknown } } };
        if (j.status.tor.control === 'connected') this.skip(); // a system tor on this machine answers the server itself
        expect(j.torAsked?.socket).to.equal(ctl());
        expect(j.torAsked?.answer?.descriptor).to.equal(null);
        // DisableNetwork 1: tor stays at 0% and builds no descriptor (it needs a consensus).
        expect(line(j.lines, 'tor').mark).to.equal('problem');
        expect(line(j.lines, 'tor').text).to.equal(`The system tor has bootstrapped 0% (Starting; asked by this command on ${ctl()}): it is not connected to the Tor network yet; its log says why.`);
        expect(line(j.lines, 'onion').mark).to.equal('problem');
        expect(line(j.lines, 'onion').text).to.equal(`http://${onion}/ is not published yet: tor has not built its descriptor (it does once it has bootstrapped; this takes a minute or two).`);
        expect(r.code).to.equal(1);
        const text = await cli(srv.configFile, 'status');
        expect(text.stdout).to.match(/^problem tor {8}The system tor has bootstrapped 0% \(Starting; asked by this command on /m);
      } finally {
        await srv.cleanup();
      }
    });

    it('reads a descriptor tor holds as published, whatever its data lines look like', async function () {
      // Stand-in for a tor on the Tor network: with no network a real tor builds no
      // descriptor. The data block holds lines that look like reply ends ("250 OK") and a
      // dot-escaped one; they must stay data, and the reply must end where tor ends it.
      const onion = fakeOnion();
      const fake = path.join(t.dir, 'desc.sock');
      const seen: string[] = [];
      const srvSock = net.createServer((sock) => {
        let buf = '';
        sock.on('data', (d) => {
          buf += d.toString();
          for (let nl = buf.indexOf('\r\n'); nl >= 0; nl = buf.indexOf('\r\n')) {
            const cmd = buf.slice(0, nl);
            buf = buf.slice(nl + 2);
            seen.push(cmd);
            if (cmd === 'PROTOCOLINFO 1') sock.write('250-PROTOCOLINFO 1\r\n250-AUTH METHODS=NULL\r\n250 OK\r\n');
            else if (cmd === 'AUTHENTICATE') sock.write('250 OK\r\n');
            else if (cmd === 'GETINFO status/bootstrap-phase') sock.write('250-status/bootstrap-phase=NOTICE BOOTSTRAP PROGRESS=100 TAG=done SUMMARY="Done"\r\n250 OK\r\n');
            else if (cmd === `GETINFO hs/service/desc/id/${onion.replace('.onion', '')}`)
              sock.write(`250+hs/service/desc/id/${onion.replace('.onion', '')}=\r\nhs-descriptor 3\r\ndescriptor-lifetime 180\r\nrevision-counter 4242\r\n250 OK\r\n..revision-counter 1\r\n.\r\n250 OK\r\n`);
            else sock.write('510 Unrecognized command\r\n');
          }
        });
        sock.on('error', () => undefined);
      });
      await new Promise<void>((r) => srvSock.listen(fake, () => r()));
      try {
        const answer = await askTor(fake, onion);
        expect(answer).to.deep.equal({ bootstrap: { percent: 100, tag: 'done', summary: 'Done' }, descriptor: { revision: 4242, lifetimeMinutes: 180 } });
        expect(seen.some((c) => /^(SETCONF|SIGNAL|SETEVENTS|RESETCONF|SAVECONF)/.test(c)), 'read-only').to.equal(false);
        const doc = { now: new Date().toISOString(), startedAt: new Date().toISOString(), version: 'x', pid: 1, smtp: { host: '127.0.0.1', port: 1 }, web: { host: '127.0.0.1', port: 1 }, tor: { mode: 'system', onion, hostnameFile: 'h', socket: '/run/tor/control', control: 'unreachable', reason: 'ENOENT' }, disk: { free: 1, floor: 0 }, users: { total: 0, disabled: 0 }, mail: { waiting: 0, bytes: 0, oldest: null, retentionDays: 30 }, replies: {}, tls: { file: 'f', error: 'ENOENT' }, maildirRoot: '/m' } as unknown as StatusDocument;
        const lines = await judge(doc, { socket: fake, answer });
        expect(line(lines, 'tor')).to.deep.include({ mark: 'ok', text: `The system tor has bootstrapped (100%: Done; asked by this command on ${fake}).` });
        expect(line(lines, 'onion').mark).to.equal('ok');
        expect(line(lines, 'onion').text).to.match(new RegExp(`^http://${onion}/ is published as far as tor tells: it holds the service's current descriptor \\(revision 4242\\) and is on the Tor network`));
      } finally {
        await new Promise<void>((r) => srvSock.close(() => r()));
      }
    });

    it('keeps "unknown" when the socket it is given is not a tor that answers', async function () {
      // Stand-in for a broken or hostile control socket (real tor does not hang up at once):
      // a listener that closes every connection before saying anything.
      const fake = path.join(t.dir, 'fake.sock');
      const hangup = net.createServer((s) => s.destroy());
      await new Promise<void>((r) => hangup.listen(fake, () => r()));
      const srv = await startServer({ config: { tor: { manage: false, hostnameFile: path.join(t.dir, 'hs', 'hostname'), controlSocket: fake } } });
      try {
        const j = JSON.parse((await cli(srv.configFile, 'status', '--json')).stdout) as StatusJson;
        if (j.status.tor.control === 'connected') this.skip();
        expect(line(j.lines, 'tor').mark).to.equal('unknown');
        // The hang-up reaches the command as a closed connection, or as EPIPE / ECONNRESET on its write.
        expect(line(j.lines, 'tor').text).to.match(/nor could this command use \S+fake\.sock \((EPIPE|ECONNRESET|tor closed the control connection)\)\.$/);
        expect(line(j.lines, 'onion').mark).to.equal('unknown');
        const none = await startServer({ config: { tor: { manage: false, hostnameFile: path.join(t.dir, 'hs', 'hostname'), controlSocket: path.join(t.dir, 'nothing') } } });
        try {
          const k = JSON.parse((await cli(none.configFile, 'status', '--json')).stdout) as StatusJson;
          expect(line(k.lines, 'tor').text).to.include(`nor could this command use ${path.join(t.dir, 'nothing')} (ENOENT)`);
        } finally {
          await none.cleanup();
        }
      } finally {
        await srv.cleanup();
        await new Promise<void>((r) => hangup.close(() => r()));
      }
    });
  });

  it('with --dns and no reachable DNS says so as a problem, and ends', async function () {
    const srv = await startServer();
    try {
      const r = await cli(srv.configFile, 'status', '--dns', '--json');
      const j = JSON.parse(r.stdout) as StatusJson;
      const dns = j.lines.filter((l) => l.part.startsWith('dns'));
      expect(dns.length).to.be.at.least(1);
      // These machines have no internet: the resolver either cannot be asked or knows no such domain.
      expect(dns.some((l) => l.mark === 'problem')).to.equal(true);
      expect(r.code).to.equal(1);
    } finally {
      await srv.cleanup();
    }
  });
});

describe('kzymy-server start output', function () {
  this.timeout(60_000);

  it('shows a banner with ports and data paths and readable lines on a terminal, no JSON', async function () {
    requireBinaries(this, 'script', 'openssl');
    const t = await tempDir('kzymy-banner-');
    let pid = 0;
    try {
      const cfg = path.join(t.dir, 'config.json');
      const dataDir = path.join(t.dir, 'data');
      const maildirRoot = path.join(t.dir, 'maildirs');
      await writeFile(
        cfg,
        JSON.stringify({ domain: 'tty.test', dataDir, maildirRoot, smtp: { host: '127.0.0.1', port: 0 }, web: { host: '127.0.0.1', port: 0 }, tor: { manage: false, hostnameFile: path.join(t.dir, 'hs', 'hostname') }, limits: { minFreeBytes: 0 } }),
      );
      const onion = fakeOnion();
      await mkdir(path.join(t.dir, 'hs'));
      await writeFile(path.join(t.dir, 'hs', 'hostname'), `${onion}\n`);
      await runServerCli(cfg, 'init');
      const c = serverCommand('start', '--config', cfg);
      // script(1) gives the server a pseudo-terminal as stdout.
      const child = spawn('script', ['-qfec', [c.cmd, ...c.args].join(' '), '/dev/null'], { cwd: ROOT, env: { ...process.env, KZYMY_TOR_MANAGE: '0' }, stdio: ['pipe', 'pipe', 'pipe'] });
      let out = '';
      child.stdout.on('data', (d: Buffer) => (out += d.toString()));
      const until = Date.now() + 30_000;
      while (!/listening[\s\S]*onion {5}http/.test(out) && Date.now() < until && child.exitCode === null) await new Promise((r) => setTimeout(r, 100));
      const st = await cli(cfg, 'status', '--json');
      pid = (JSON.parse(st.stdout) as StatusJson).status.pid;
      // eslint-disable-next-line no-control-regex
      const plain = out.replace(/\x1b\[[0-9;]*m/g, '').replace(/\r/g, '');
      expect(plain).to.match(/^ {2}smtp {6}127\.0\.0\.1:\d+$/m);
      expect(plain).to.match(/^ {2}web {7}127\.0\.0\.1:\d+ \(loopback/m);
      expect(plain).to.include(`  data      ${dataDir} (`);
      expect(plain).to.include(`  maildirs  ${maildirRoot}`);
      expect(plain).to.include(`  onion     http://${onion}/`);
      expect(plain).to.include(`  status    kzymy-server status --config ${cfg}`);
      expect(plain).to.match(/^\[\d\d:\d\d:\d\d\] INFO: listening {2}smtp=127\.0\.0\.1:\d+ web=127\.0\.0\.1:\d+$/m);
      expect(plain).not.to.match(/^\{/m);
      expect(plain).not.to.include('"level"');
      process.kill(pid, 'SIGTERM');
      child.kill('SIGTERM');
    } finally {
      const until = Date.now() + 15_000;
      while (pid && alive(pid) && Date.now() < until) await new Promise((r) => setTimeout(r, 100));
      if (pid && alive(pid)) process.kill(pid, 'SIGKILL');
      await t.cleanup();
    }
  });

  it('prints JSON lines when stdout is not a terminal', async function () {
    requireBinaries(this, 'openssl');
    const srv = await startServer();
    try {
      const lines = srv.output().split('\n').filter((l) => l.trim());
      expect(lines.length).to.be.at.least(1);
      for (const l of lines) expect(() => JSON.parse(l), l).not.to.throw();
      expect(srv.output()).not.to.include('kzymy-server 0.');
    } finally {
      await srv.cleanup();
    }
  });
});

describe('status --dns without a DNS server that answers', function () {
  this.timeout(30_000);

  it('says DNS cannot be asked when the resolver refuses, and when it never answers (timeouts)', async function () {
    const refused = new Resolver({ timeout: 500, tries: 1 });
    refused.setServers(['127.0.0.1:9']); // the discard port: nothing listens on UDP 9 here
    const a = await judgeDns('kzymy.example.org', '0.0.0.0', refused);
    expect(a).to.have.length(1);
    expect(a[0]!.mark).to.equal('problem');
    expect(a[0]!.text).to.match(/^DNS cannot be asked \((ECONNREFUSED|ETIMEOUT) from 127\.0\.0\.1:9\)/);
    // A hostile or broken resolver: takes the query and never answers.
    const mute = dgram.createSocket('udp4');
    await new Promise<void>((r) => mute.bind(0, '127.0.0.1', () => r()));
    try {
      const silent = new Resolver({ timeout: 300, tries: 1 });
      silent.setServers([`127.0.0.1:${mute.address().port}`]);
      const b = await judgeDns('kzymy.example.org', '0.0.0.0', silent);
      expect(b.map((l) => l.mark)).to.deep.equal(['problem']);
      expect(b[0]!.text).to.match(/^DNS cannot be asked \(ETIMEOUT/);
    } finally {
      mute.close();
    }
  });
});

describe('log.format', function () {
  it('is auto by default, takes json or pretty from the file or KZYMY_LOG_FORMAT, and refuses anything else', function () {
    expect(loadConfig({ env: {} }).log.format).to.equal('auto');
    expect(loadConfig({ env: { KZYMY_LOG_FORMAT: 'json' } }).log.format).to.equal('json');
    expect(() => loadConfig({ env: { KZYMY_LOG_FORMAT: 'xml' } })).to.throw('The log format "xml" is not one of json, pretty, auto.');
    expect(resolveLogFormat('auto', Object.assign(process.stdout, {}) as NodeJS.WritableStream)).to.equal(process.stdout.isTTY ? 'pretty' : 'json');
    expect(resolveLogFormat('auto', { isTTY: true } as unknown as NodeJS.WritableStream)).to.equal('pretty');
    expect(resolveLogFormat('json', { isTTY: true } as unknown as NodeJS.WritableStream)).to.equal('json');
  });
});

describe('SMTP reply counter', function () {
  it('keeps per-minute counts of the last 60 minutes only', function () {
    const c = new ReplyCounter();
    const t0 = Date.UTC(2026, 0, 1, 12, 0, 0);
    c.record(250, '2.0.0', t0);
    c.record(550, '5.1.1', t0 + 59 * 60_000);
    c.record(250, '2.0.0', t0 + 59 * 60_000);
    expect(c.lastHour(t0 + 59 * 60_000)).to.deep.equal({ '250 2.0.0': 2, '550 5.1.1': 1 });
    expect(c.lastHour(t0 + 60 * 60_000)).to.deep.equal({ '250 2.0.0': 1, '550 5.1.1': 1 });
    // The slot of minute 0 is reused by minute 60: the old count is gone, not added.
    c.record(421, '4.7.0', t0 + 60 * 60_000);
    expect(c.lastHour(t0 + 60 * 60_000)).to.deep.equal({ '250 2.0.0': 1, '421 4.7.0': 1, '550 5.1.1': 1 });
    expect(c.lastHour(t0 + 200 * 60_000)).to.deep.equal({});
  });
});
