// End to end over a real (private) Tor network on 127.0.0.1: a kzymy-server process whose
// managed tor publishes the web listener as an onion service; a headless Chromium with
// JavaScript off signs up through the onion; kzymy-client signs up and fetches through the
// onion; curl downloads the single-file kzymy-client from the onion with the front page's own
// command; swaks delivers mail on the SMTP port. Proves that the browser and the client
// connect only to tor's SOCKS port (strace records every connect() they make), that every
// connection to the web listener caught open belongs to the managed tor (/proc sampled),
// and that no process of the suite outlives it.
import { expect } from 'chai';
import { execFile, spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { mkdir, readdir, readFile, writeFile } from 'node:fs/promises';
import net from 'node:net';
import path from 'node:path';
import { promisify } from 'node:util';
import { chromium, type BrowserContext, type Page } from 'playwright-core';
import { requireBinaries, tempDir } from '../helpers/env.js';
import { gpgDecrypt, makeFreshGpgKey } from '../helpers/gpg.js';
import { marker, rawMessage } from '../helpers/mail.js';
import { swaks } from '../helpers/swaks.js';
import { ROOT, serverCommand } from '../helpers/server.js';
import { otherIpTargets, readConnects, tcpTargets, traced, tracedExecutable } from './connect-trace.js';
import { startOnionServer, type OnionServer } from './onion-server.js';
import { watchPort, type PortWatch } from './portwatch.js';
import { alive, processesMentioning, runClient } from './procs.js';
import { startTorNetwork, type TorNetwork } from './tornet/index.js';

const OUT = path.resolve('test-output/e2e');
const CHROMIUM = '/usr/bin/chromium';
const s = (ms: number): string => `${(ms / 1000).toFixed(1)} s`;
const run = promisify(execFile);
/** An element's text as the page escaped it, unescaped. */
const htmlText = (t: string): string =>
  t.replace(/&lt;/g, '<').replace(/&gt;/g, '>').replace(/&quot;/g, '"').replace(/&#39;/g, "'").replace(/&amp;/g, '&');

describe('e2e: signup and pickup through a kzymy onion service on a private Tor network', function () {
  this.timeout(300_000);
  const suiteStart = Date.now();
  let tmp: { dir: string; cleanup: () => Promise<void> } | null = null;
  let network: TorNetwork | null = null;
  let server: OnionServer | null = null;
  let serverBase = '';
  let watch: PortWatch | null = null;
  let context: BrowserContext | null = null;
  let userDataDir = '';
  /** Every PID the suite started (tor nodes, kzymy-server, its tor, chromium, kzymy-client). */
  const pids = new Map<number, string>();
  let browserUsername = '';
  /** strace logs of every connect() of the browser and of each kzymy-client run. */
  const traces: Record<string, string> = {};

  before(async function () {
    requireBinaries(this, 'tor', 'tor-gencert', 'chromium', 'gpg', 'swaks', 'strace');
    tmp = await tempDir('kzymy-e2e-onion-');
    await mkdir(OUT, { recursive: true });

    const t0 = Date.now();
    network = await startTorNetwork({ dir: path.join(tmp.dir, 'net') });
    for (const n of network.nodes) pids.set(n.pid, `tor ${n.name}`);
    const netMs = Date.now() - t0;

    server = await startOnionServer(network, tmp.dir);
    serverBase = server.srv.base;
    pids.set(server.serverPid, 'kzymy-server');
    pids.set(server.torPid, "kzymy-server's managed tor");
    if (server.srv.webPort === null) throw new Error('kzymy-server logged no web listener');
    const { torPid } = server;
    // From here on, every connection to the web listener is watched.
    watch = watchPort(server.srv.webPort, { preferred: () => [torPid] });

    const answer = await network.waitForOnion(server.onion, { serviceLogFile: server.torLogFile, timeoutMs: 120_000 });
    expect(answer.status).to.equal(200);
    expect(answer.body).to.include('<form');
    const t = network.timings;
    console.log(
      `      bootstrap: tor network up ${s(netMs)} (keys ${s(t.keysMs)}, consensus ${s(t.consensusMs)}, client ${s(t.clientReadyMs)} after launch); ` +
        `kzymy-server + managed tor to the onion line ${s(server.ms)}; onion page through SOCKS ${s(answer.ms)} later ` +
        `(${answer.attempts} attempt(s)); wall time from nothing to the onion page ${s(Date.now() - t0)}`,
    );
  });

  after(async function () {
    const problems: string[] = [];
    try {
      await context?.close();
    } catch (err) {
      problems.push(`chromium did not close: ${(err as Error).message}`);
    }
    watch?.stop();
    if (server) {
      const code = await server.srv.stop();
      // Kept for reading after a run (test-output/ is not committed).
      await writeFile(path.join(OUT, 'kzymy-server.log'), server.srv.output());
      if (code !== 0) problems.push(`kzymy-server exited with ${code} on SIGTERM:\n${server.srv.output().split('\n').slice(-10).join('\n')}`);
    }
    await network?.stop();

    // No process of the suite is left: every PID it started, and anything naming its folders.
    const left = [...pids].filter(([pid]) => alive(pid)).map(([pid, what]) => `${what} (PID ${pid})`);
    const folders = [tmp?.dir, serverBase, userDataDir].filter((d): d is string => Boolean(d));
    const named = processesMentioning(...folders);
    for (const p of named) left.push(`PID ${p.pid}: ${p.cmd.slice(0, 200)}`);
    // Whatever the verdict, leave nothing running behind us.
    for (const pid of [...pids.keys(), ...named.map((p) => p.pid)]) {
      try {
        if (alive(pid)) process.kill(pid, 'SIGKILL');
      } catch {
        // gone
      }
    }
    await server?.srv.cleanup();
    await tmp?.cleanup();
    console.log(`      suite wall time ${s(Date.now() - suiteStart)}; ${pids.size} processes started, ${left.length ? `${left.length} LEFT RUNNING (killed)` : 'none left running'}`);
    if (left.length) problems.push(`processes of the suite still running after it:\n  ${left.join('\n  ')}`);
    if (problems.length) throw new Error(problems.join('\n'));
  });

  /** Chromium PIDs: processes naming our user-data-dir. */
  function noteChromiumPids(): void {
    for (const p of processesMentioning(userDataDir)) pids.set(p.pid, `chromium (${p.cmd.split(' ')[0]})`);
  }

  it('signs up in headless Chromium (JavaScript off) through the onion, with real gpg', async function () {
    const onionUrl = `http://${server!.onion}`;
    const socks = network!.socksPort;
    userDataDir = path.join(tmp!.dir, 'chromium-profile');
    traces.chromium = path.join(tmp!.dir, 'chromium.strace');
    const executablePath = await tracedExecutable(path.join(tmp!.dir, 'chromium-traced.sh'), traces.chromium, CHROMIUM);
    context = await chromium.launchPersistentContext(userDataDir, {
      executablePath,
      headless: true,
      javaScriptEnabled: false,
      viewport: { width: 360, height: 640 },
      args: [
        `--proxy-server=socks5://127.0.0.1:${socks}`,
        '--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1',
        '--no-sandbox',
        '--disable-gpu',
        '--disable-background-networking',
        '--disable-component-update',
        '--disable-sync',
        '--no-first-run',
        '--disable-quic',
      ],
    });
    noteChromiumPids();
    expect([...pids.values()].filter((w) => w.startsWith('chromium')).length, 'chromium processes found by their profile folder').to.be.greaterThan(0);
    const page: Page = context.pages()[0] ?? (await context.newPage());
    const requested: string[] = [];
    page.on('request', (r) => requested.push(r.url()));
    const shot = (name: string) => page.screenshot({ path: path.join(OUT, `${name}.png`), fullPage: true });

    const key = await makeFreshGpgKey('ed25519');
    const t0 = Date.now();
    const home = await page.goto(`${onionUrl}/`);
    const firstPageMs = Date.now() - t0;
    expect(home!.status()).to.equal(200);
    await shot('01-home');

    await page.fill('#key', key.publicArmored);
    await Promise.all([page.waitForURL(`${onionUrl}/signup`), page.click('button[type=submit]')]);
    await shot('02-challenge');
    expect((await page.textContent('#fingerprint'))!.replace(/\s/g, '')).to.equal(key.fingerprint);
    const code = (await gpgDecrypt(key.gnupghome, (await page.textContent('#challenge'))!)).toString('utf8').trim();

    await page.fill('#code', code);
    await Promise.all([page.waitForURL(`${onionUrl}/signup/confirm`), page.click('button[type=submit]')]);
    await shot('03-done');
    browserUsername = (await page.textContent('#username'))!.trim();
    expect(browserUsername).to.match(/^[a-z][a-z0-9]{11}$/);
    expect((await page.textContent('#onion'))!.trim()).to.equal(server!.onion);
    noteChromiumPids();
    const users = JSON.parse(await server!.srv.cli('users', 'list', '--json')) as Array<{ username: string; fingerprint: string }>;
    expect(users.find((u) => u.username === browserUsername)?.fingerprint).to.equal(key.fingerprint);
    // Everything the page asked for was on the onion (no other host, no direct address).
    expect(requested.filter((u) => !u.startsWith(`${onionUrl}/`))).to.deep.equal([]);
    const signupMs = Date.now() - t0;

    // The page's own fetch command works as shown (plus what a test machine needs: a
    // profile file, the GnuPG home and the SOCKS port), through the onion.
    const shown = (await page.textContent('#command'))!.trim().split(/\s+/);
    expect(shown.slice(0, 3)).to.deep.equal(['node', 'kzymy-client.mjs', 'fetch']);
    const maildir = path.join(tmp!.dir, 'browser-user', 'Maildir');
    const args = shown.slice(2).map((a) => (a === '~/Maildir' ? maildir : a));
    traces.browserUserFetch = path.join(tmp!.dir, 'browser-user-fetch.strace');
    const r = await runClient(
      [...args, '--config', path.join(tmp!.dir, 'browser-user', 'client.json'), '--gnupghome', key.gnupghome, '--proxy', `socks5h://127.0.0.1:${socks}`],
      { onPid: (pid) => pids.set(pid, 'kzymy-client (under strace)'), traceLog: traces.browserUserFetch },
    );
    expect(r.code, r.stderr + r.stdout).to.equal(0);
    const got = await readdir(path.join(maildir, 'new'));
    expect(got).to.have.length(1);
    expect(await readFile(path.join(maildir, 'new', got[0]!), 'utf8')).to.include(`Your username is ${browserUsername}.`);
    console.log(`      browser: first page ${s(firstPageMs)}, whole signup ${s(signupMs)}; username ${browserUsername}; the page's fetch command ${s(r.ms)}`);
  });

  it('kzymy-client signs up and fetches through the onion; swaks mail arrives decrypted', async function () {
    const key = await makeFreshGpgKey('ed25519');
    const profile = path.join(tmp!.dir, 'client', 'client.json');
    const maildir = path.join(tmp!.dir, 'client', 'Maildir');
    const proxy = `socks5h://127.0.0.1:${network!.socksPort}`;
    const onPid = (pid: number) => pids.set(pid, 'kzymy-client (under strace)');
    traces.signup = path.join(tmp!.dir, 'client-signup.strace');
    traces.fetch = path.join(tmp!.dir, 'client-fetch.strace');
    const base = ['--config', profile, '--gnupghome', key.gnupghome];

    const up = await runClient([...base, 'signup', '--server', `http://${server!.onion}`, '--key', key.fingerprint, '--proxy', proxy], { onPid, traceLog: traces.signup });
    expect(up.code, up.stderr + up.stdout).to.equal(0);
    const username = /your username is ([a-z0-9]+)\./.exec(up.stdout)?.[1];
    expect(username, up.stdout).to.match(/^[a-z][a-z0-9]{11}$/);
    expect(username).to.not.equal(browserUsername);
    const saved = JSON.parse(await readFile(profile, 'utf8')) as Record<string, unknown>;
    expect(saved).to.include({ server: `http://${server!.onion}`, username, proxy });

    const mark = marker();
    const rcpt = `anything@${username}.${server!.srv.domain}`;
    const msg = rawMessage(mark, { to: rcpt });
    const sent = await swaks({ port: server!.srv.smtpPort, to: rcpt, data: msg });
    expect(sent.last, sent.transcript).to.match(/^250 /);

    // --crlf: the line ends as sent, so that the original can be compared byte for byte.
    const fetched = await runClient([...base, 'fetch', '--decrypt', '--crlf', '--maildir', maildir], { onPid, traceLog: traces.fetch });
    expect(fetched.code, fetched.stderr + fetched.stdout).to.equal(0);
    expect(fetched.stdout).to.match(/^2 messages \(\d+(\.\d)? (bytes|KiB)\) delivered to /);
    const names = await readdir(path.join(maildir, 'new'));
    const files = await Promise.all(names.map((n) => readFile(path.join(maildir, 'new', n))));
    expect(files).to.have.length(2);
    const mine = files.filter((f) => f.includes(Buffer.from(mark)));
    expect(mine, 'the swaks message').to.have.length(1);
    // The original message, byte for byte, after the delivery headers.
    expect(mine[0]!.includes(msg), 'the original message, byte for byte').to.equal(true);
    expect(mine[0]!.toString('latin1')).to.match(/^Return-Path: <sender@example\.org>\r\nDelivered-To: /);
    expect(mine[0]!.toString('utf8')).to.include(`Hello, this is the body ${mark}.`);
    const welcome = files.filter((f) => f.toString('utf8').includes('Welcome to kzymy'));
    expect(welcome, 'the welcome message').to.have.length(1);
    expect(welcome[0]!.toString('utf8')).to.include(`Your username is ${username}.`);
    const waiting = await readdir(path.join(server!.srv.maildirRoot, username!, 'new'));
    expect(waiting, "the server's Maildir after the fetch").to.deep.equal([]);
    console.log(`      client: signup ${s(up.ms)}, fetch of 2 messages ${s(fetched.ms)} through Tor`);
  });

  it("downloads kzymy-client from the onion with the front page's own curl line through the SOCKS port; sha256sum accepts it", async function () {
    const socks = `127.0.0.1:${network!.socksPort}`;
    const dir = path.join(tmp!.dir, 'download');
    await mkdir(dir);
    // The page's lines, with the private network's SOCKS port for tor's usual 9050.
    const sh = async (line: string): Promise<string> => (await run('/bin/sh', ['-c', line], { cwd: dir, timeout: 180_000 })).stdout;
    const page = await sh(`curl -sS --socks5-hostname ${socks} http://${server!.onion}/`);
    const text = (id: string): string => htmlText(new RegExp(`id="${id}"[^>]*>([^<]*)<`).exec(page)?.[1] ?? '');
    const [download, check] = text('client-download').split('\n');
    expect(download).to.equal(`curl --socks5-hostname 127.0.0.1:9050 -o kzymy-client.mjs http://${server!.onion}/client/kzymy-client.mjs`);
    await sh(download!.replace('127.0.0.1:9050', socks));
    expect((await sh(check!)).trim()).to.equal('kzymy-client.mjs: OK');
    const file = await readFile(path.join(dir, 'kzymy-client.mjs'));
    const sha = createHash('sha256').update(file).digest('hex');
    expect(sha).to.equal(text('client-sha256'));
    expect(sha, 'the file npm run build made').to.equal(createHash('sha256').update(await readFile(path.resolve('dist/bundle/kzymy-client.mjs'))).digest('hex'));
    console.log(`      kzymy-client.mjs: ${Math.round(file.length / 1024)} KiB through the onion, SHA-256 ${sha}`);
  });

  it('nothing but the managed tor contacted the web listener: browser and client went only to the SOCKS port', async function () {
    const socksTarget = `127.0.0.1:${network!.socksPort}`;
    const webPort = server!.srv.webPort!;
    const torPid = server!.torPid;

    // 1. Deterministic: strace logged every connect() of Chromium (all its processes) and of
    //    both kzymy-client runs. Each TCP connection went to tor's SOCKS port, none elsewhere.
    //    A UDP connect() sends nothing (Chromium's resolver probes IPv6 reachability with one
    //    to 2001:4860:4860::8888:443); none of those may name 127.0.0.1 or the web port.
    await context?.close(); // the browser's trace is complete once it has exited
    context = null;
    expect(Object.keys(traces).sort()).to.deep.equal(['browserUserFetch', 'chromium', 'fetch', 'signup']);
    const counts: string[] = [];
    for (const [who, log] of Object.entries(traces)) {
      const connects = await readConnects(log);
      const targets = tcpTargets(connects);
      expect(targets.length, `${who}: TCP connections traced`).to.be.at.least(1);
      expect(targets.filter((t) => t !== socksTarget), `${who}: TCP connections not to tor's SOCKS port ${socksTarget}`).to.deep.equal([]);
      const udp = otherIpTargets(connects);
      expect(udp.filter((t) => t.includes('127.0.0.1') || t.endsWith(`:${webPort}`)), `${who}: UDP connects to this machine`).to.deep.equal([]);
      counts.push(`${who} ${targets.length} TCP${udp.length ? ` (+ UDP probes: ${[...new Set(udp)].join(', ')})` : ''}`);
    }

    // 2. System-wide: every connection to the web port whose connecting process was caught
    //    belongs to the managed tor. (A connection that opens and closes between two samples
    //    is only seen in TIME_WAIT, with no owner left: counted, not attributed.)
    const seen = watch!.connections();
    const caught = seen.filter((c) => c.owners.length > 0);
    expect(caught.length, 'connections to the web port whose process was caught').to.be.at.least(5);
    expect(
      caught.filter((c) => c.owners.some((pid) => pid !== torPid)),
      `connections to the web port from a process other than the managed tor (PID ${torPid})`,
    ).to.deep.equal([]);
    console.log(
      `      connect() traced: ${counts.join('; ')}; every TCP one to ${socksTarget}.\n` +
        `      web port: ${seen.length} connections, ` +
        `${caught.length} caught open, all by the managed tor (PID ${torPid}), ${seen.length - caught.length} seen only closed; ` +
        `${watch!.samples()} samples`,
    );

    // 3. Both checks do fail on a direct connection to the web port.
    const direct = net.connect(webPort, '127.0.0.1');
    await new Promise<void>((resolve, reject) => direct.once('connect', resolve).once('error', reject));
    try {
      const local = `127.0.0.1:${direct.localPort}`;
      const c = await watch!.waitFor((x) => x.peer === local && x.owners.length > 0);
      expect(c.owners, 'the watch names the process of a direct connection').to.deep.equal([process.pid]);
    } finally {
      direct.destroy();
    }
    const controlLog = path.join(tmp!.dir, 'control.strace');
    const control = traced(controlLog, process.execPath, ['-e', `require('node:net').connect(${webPort}, '127.0.0.1').on('connect', function () { this.end(); })`]);
    await new Promise<void>((resolve, reject) => {
      const child = spawn(control.cmd, control.args, { stdio: 'ignore' });
      if (child.pid) pids.set(child.pid, 'strace control');
      child.once('error', reject).once('exit', () => resolve());
    });
    expect(tcpTargets(await readConnects(controlLog)), 'strace records a direct connection').to.include(`127.0.0.1:${webPort}`);
  });

  // Last: `status` itself connects to the listeners, which the test above must not see.
  it("logs the managed tor's descriptor upload as published, and status reports tor and the onion ok", async function () {
    const srv = server!.srv;
    const until = Date.now() + 120_000;
    while (!/"evt":"onion-published"/.test(srv.output()) && Date.now() < until) await new Promise((r) => setTimeout(r, 200));
    expect(srv.output(), 'the onion-published line').to.match(/"evt":"onion-published","msg":"onion service descriptor published/);
    expect(srv.output()).to.match(/"evt":"tor-bootstrap","percent":100,/);
    const c = serverCommand('status', '--json', '--config', srv.configFile);
    const st = await promisify(execFile)(c.cmd, c.args, { cwd: ROOT }).then(
      (r) => r.stdout,
      (e: { stdout: string }) => e.stdout,
    );
    const j = JSON.parse(st) as { lines: { mark: string; part: string; text: string }[]; status: { replies: Record<string, number> } };
    expect(j.lines.find((l) => l.part === 'tor'), st).to.include({ mark: 'ok' });
    const onionLine = j.lines.find((l) => l.part === 'onion');
    expect(onionLine, st).to.include({ mark: 'ok' });
    expect(onionLine!.text).to.match(new RegExp(`^http://${server!.onion.replace(/\./g, '\\.')}/ is published \\(descriptor uploaded `));
    expect(j.status.replies['250 2.0.0'], 'the swaks mail was counted').to.be.at.least(1);
    console.log(`      status: ${j.lines.map((l) => `${l.part} ${l.mark}`).join(', ')}`);
  });
});
