// Two kzymy nodes behind one onion, on the private Tor network: each node's managed tor is
// an Onionbalance backend instance (tor.frontendOnion), Debian's onionbalance publishes the
// frontend's descriptor from their introduction points, and the real kzymy-client signs up
// and fetches through the frontend's address only. The nodes share a PostgreSQL registry
// (a private cluster, unix socket only) and one Maildir root. Each node in turn is stopped:
// the client still fetches through the same onion, served by the other.
import { expect } from 'chai';
import { mkdir, readdir, readFile } from 'node:fs/promises';
import path from 'node:path';
import { requireBinaries, tempDir } from '../helpers/env.js';
import { makeFreshGpgKey, type TestKey } from '../helpers/gpg.js';
import { marker, rawMessage } from '../helpers/mail.js';
import { requirePostgres, startCluster, type Cluster } from '../helpers/postgres.js';
import { sendRaw } from '../helpers/smtp-client.js';
import { makeFrontendKey, startOnionbalance, type FrontendKey, type Onionbalance } from './onionbalance.js';
import { startOnionServer, type OnionServer } from './onion-server.js';
import { runClient } from './procs.js';
import { startTorNetwork, type ControlledTor, type TorNetwork } from './tornet/index.js';

const s = (ms: number): string => `${(ms / 1000).toFixed(1)} s`;

async function readText(file: string): Promise<string> {
  try {
    return await readFile(file, 'utf8');
  } catch {
    return '';
  }
}

/** Waits until `file` holds a match of `re` after its first `since` characters. */
async function waitForText(file: string, re: RegExp, what: string, opts: { since?: number; timeoutMs?: number } = {}): Promise<void> {
  const until = Date.now() + (opts.timeoutMs ?? 120_000);
  for (;;) {
    const text = (await readText(file)).slice(opts.since ?? 0);
    if (re.test(text)) return;
    if (Date.now() > until) throw new Error(`${what} did not happen in time; ${file} ends:\n${text.slice(-1500)}`);
    await new Promise((r) => setTimeout(r, 200));
  }
}

describe('e2e: two kzymy nodes behind one Onionbalance onion on the private Tor network', function () {
  this.timeout(480_000);
  let work: { dir: string; cleanup: () => Promise<void> } | null = null;
  let cluster: Cluster | null = null;
  let network: TorNetwork | null = null;
  let controller: ControlledTor | null = null;
  let ob: Onionbalance | null = null;
  let frontend: FrontendKey | null = null;
  const nodes: { a: OnionServer | null; b: OnionServer | null } = { a: null, b: null };
  /** Node A before its restart: its cleanup removes its folders. */
  let firstA: OnionServer | null = null;
  let shared: Record<string, unknown> = {};
  let key: TestKey | null = null;
  let username = '';
  let base: string[] = [];
  let counter = 0;

  const nodeDir = (name: string) => path.join(work!.dir, name);
  const startNode = (name: 'a' | 'b', from?: OnionServer) =>
    startOnionServer(network!, nodeDir(name), { config: shared, tor: { frontendOnion: frontend!.address }, base: from?.srv.base });

  before(async function () {
    requireBinaries(this, 'tor', 'tor-gencert', 'onionbalance', 'gpg', 'gpgconf');
    requirePostgres(this);
    work = await tempDir('kzymy-e2e-ob-');
    cluster = await startCluster();
    const url = await cluster.createDatabase();
    const maildirs = path.join(work.dir, 'shared-maildirs');
    await mkdir(maildirs, { mode: 0o700 });
    for (const n of ['a', 'b']) await mkdir(nodeDir(n), { mode: 0o700 });
    shared = { maildirRoot: maildirs, registry: { engine: 'postgres', url } };

    const t0 = Date.now();
    // Onionbalance's --is-testnet reckons time periods for 20-second votes.
    network = await startTorNetwork({ dir: path.join(work.dir, 'net'), votingInterval: 20 });
    frontend = await makeFrontendKey(work.dir);
    [nodes.a, nodes.b, controller] = await Promise.all([startNode('a'), startNode('b'), network.startControlledTor({ name: 'obfrontend' })]);
    expect(nodes.a.onion).to.not.equal(nodes.b.onion);
    ob = await startOnionbalance({ dir: work.dir, key: frontend, instances: [nodes.a.onion, nodes.b.onion], tor: controller });
    await ob.waitForUpload();
    console.log(`      network, two nodes and Onionbalance's first frontend descriptor: ${s(Date.now() - t0)}`);
  });

  after(async function () {
    await ob?.stop();
    for (const n of [nodes.a, nodes.b, firstA]) await n?.srv.cleanup();
    await controller?.stop();
    await network?.stop();
    await cluster?.destroy();
    await work?.cleanup();
  });

  const client = (args: string[]) => runClient([...base, ...args]);

  /** Sends one message to `node`'s SMTP port for the user; its marker. */
  async function send(node: OnionServer): Promise<string> {
    const mark = marker();
    const rcpt = `shop@${username}.${node.srv.domain}`;
    const r = await sendRaw(node.srv.smtpPort, [rcpt], rawMessage(mark, { to: rcpt }));
    expect(r.reply).to.match(/^250 /);
    return mark;
  }

  /** Attempts of the last fetch({ fresh: true }), for the log line. */
  let attempts = 0;

  /**
   * kzymy-client fetch --decrypt through the frontend onion; the decrypted messages. With
   * `fresh`, through tor clients started for it, whose caches start empty: the frontend's
   * descriptor still lists the stopped node's introduction points (Onionbalance keeps them
   * while that node's last descriptor is on the directories), and for a few seconds after a
   * node's tor exits its introduction point may still accept an introduction that no service
   * answers. A tor client then waits for the rendezvous until its SocksTimeout, and the
   * client says "try again later": as a user would, this tries again, at most 3 times, each
   * with a new tor client (SocksTimeout 30 s).
   */
  async function fetch(opts: { fresh?: boolean } = {}): Promise<string[]> {
    const out = path.join(work!.dir, `fetched-${++counter}`);
    let r = null;
    for (attempts = 1; ; attempts++) {
      const tor = opts.fresh ? await network!.startControlledTor({ name: `fetcher${counter}x${attempts}`, socks: true, socksTimeoutS: 30 }) : null;
      const proxy = tor ? ['--proxy', `socks5h://127.0.0.1:${tor.socksPort}`] : [];
      r = await client(['fetch', '--maildir', out, '--decrypt', '--quiet', ...proxy]).finally(() => tor?.stop());
      const transient = r.code === 75 && /Tor (could|did) not connect/.test(r.stderr);
      if (!opts.fresh || !transient || attempts === 3) break;
      console.log(`      (attempt ${attempts}: ${r.stderr.trim()})`);
    }
    expect(r.code, r.stderr + r.stdout).to.equal(0);
    expect(r.stderr).to.not.match(/\n\s+at /);
    const names = await readdir(path.join(out, 'new')).catch(() => []);
    return Promise.all(names.map((n) => readFile(path.join(out, 'new', n), 'utf8')));
  }

  it('kzymy-client signs up through the frontend onion, and fetches mail taken by both nodes', async function () {
    key = await makeFreshGpgKey('ed25519');
    const profile = path.join(work!.dir, 'client', 'client.json');
    const proxy = `socks5h://127.0.0.1:${network!.socksPort}`;
    base = ['--config', profile, '--gnupghome', key.gnupghome];
    const up = await client(['signup', '--server', `http://${frontend!.address}`, '--key', key.fingerprint, '--proxy', proxy]);
    expect(up.code, up.stderr + up.stdout).to.equal(0);
    username = /your username is ([a-z0-9]+)\./.exec(up.stdout)?.[1] ?? '';
    expect(username, up.stdout).to.match(/^[a-z][a-z0-9]{11}$/);
    const saved = JSON.parse(await readFile(profile, 'utf8')) as Record<string, unknown>;
    expect(saved).to.include({ server: `http://${frontend!.address}`, username });

    const marks = [await send(nodes.a!), await send(nodes.b!)];
    const t0 = Date.now();
    const got = await fetch();
    expect(got.filter((m) => m.includes('Welcome to kzymy')), 'the welcome message').to.have.length(1);
    for (const mark of marks) expect(got.filter((m) => m.includes(mark)), mark).to.have.length(1);
    expect(got).to.have.length(3);
    console.log(`      signup ${s(up.ms)}; fetch of 3 messages through the frontend ${s(Date.now() - t0)}`);
  });

  it('with node A stopped, the client still fetches through the same onion (node B serves it)', async function () {
    expect(username, 'the signup test ran').to.not.equal('');
    await nodes.a!.srv.stop();
    const mark = await send(nodes.b!);
    const t0 = Date.now();
    const got = await fetch({ fresh: true });
    expect(got).to.have.length(1);
    expect(got[0]).to.include(mark);
    console.log(`      fetch through the frontend with node A down: ${s(Date.now() - t0)} (${attempts} attempt(s), each a fresh tor client, bootstrap included)`);
  });

  it('with node A back and node B stopped, the client fetches through the same onion (node A serves it)', async function () {
    expect(username, 'the signup test ran').to.not.equal('');
    const t0 = Date.now();
    const logAt = (await ob!.log()).length;
    const torLogAt = (await readText(nodes.a!.torLogFile)).length;
    firstA = nodes.a;
    nodes.a = await startNode('a', firstA!);
    expect(nodes.a.onion, "node A's onion keys are kept").to.equal(firstA!.onion);
    // A's tor publishes fresh introduction points; Onionbalance fetches them and publishes
    // the frontend's descriptor with them.
    await waitForText(nodes.a.torLogFile, /Uploaded hidden service descriptor/, "node A's descriptor upload", { since: torLogAt });
    await waitForText(ob!.logFile, /Intro set modified[\s\S]*Uploading (first|second) descriptor/, 'an Onionbalance upload with node A\'s new introduction points', { since: logAt, timeoutMs: 180_000 });
    await nodes.b!.srv.stop();
    const mark = await send(nodes.a);
    const t1 = Date.now();
    const got = await fetch({ fresh: true });
    expect(got).to.have.length(1);
    expect(got[0]).to.include(mark);
    console.log(`      node A back in the frontend's descriptor ${s(t1 - t0)} after its restart; fetch with node B down ${s(Date.now() - t1)} (${attempts} attempt(s), each a fresh tor client, bootstrap included)`);
  });
});
