// Two kzymy nodes on one machine, as an operator runs them behind several MX records: two
// kzymy-server processes on loopback, one registry in a private PostgreSQL cluster (unix
// socket only), one Maildir root shared by both. Real SMTP sockets, real gpg, the real
// kzymy-client; the crash is a real SIGKILL.
import { expect } from 'chai';
import { mkdir, readdir, readFile } from 'node:fs/promises';
import net from 'node:net';
import path from 'node:path';
import { requireBinaries, tempDir } from '../helpers/env.js';
import { makeFreshGpgKey, type TestKey } from '../helpers/gpg.js';
import { marker, rawMessage } from '../helpers/mail.js';
import { requirePostgres, startCluster, type Cluster } from '../helpers/postgres.js';
import { startServer, type RunningServer } from '../helpers/server.js';
import { sendRaw } from '../helpers/smtp-client.js';
import { expectNoStack, runClient, type ClientRun } from '../client/helpers.js';

interface Account {
  key: TestKey;
  username: string;
  /** kzymy-client with this account's profile, against the node `srv`. */
  run(srv: RunningServer, args: string[]): Promise<ClientRun>;
}

async function filesIn(dir: string): Promise<string[]> {
  try {
    return (await readdir(dir)).sort();
  } catch {
    return [];
  }
}

describe('two kzymy nodes: one PostgreSQL registry, one shared Maildir root', function () {
  this.timeout(240_000);
  let cluster: Cluster | null = null;
  let work: { dir: string; cleanup: () => Promise<void> } | null = null;
  let shared = '';
  let a: RunningServer | null = null;
  let b: RunningServer | null = null;
  /** Node B before its restart: its cleanup removes the folders both runs used. */
  let firstB: RunningServer | null = null;
  /** What both nodes' configuration files hold besides their own folders and ports. */
  let config: Record<string, unknown> = {};

  before(async function () {
    requireBinaries(this, 'gpg', 'gpgconf');
    requirePostgres(this);
    cluster = await startCluster();
    const url = await cluster.createDatabase();
    work = await tempDir('kzymy-nodes-');
    shared = path.join(work.dir, 'shared-maildirs');
    await mkdir(shared, { mode: 0o700 });
    config = { maildirRoot: shared, registry: { engine: 'postgres', url }, smtp: { maxClientsPerAddress: 100 } };
    a = await startServer({ config });
    b = await startServer({ config });
  });
  after(async function () {
    await a?.cleanup();
    await b?.cleanup();
    await firstB?.cleanup();
    await cluster?.destroy();
    await work?.cleanup();
  });

  const web = (srv: RunningServer) => `http://127.0.0.1:${srv.webPort}`;
  let counter = 0;

  /** Signs up through node `srv`'s web API with kzymy-client. */
  async function signup(srv: RunningServer): Promise<Account> {
    const key = await makeFreshGpgKey('ed25519');
    const profile = path.join(work!.dir, `profile-${++counter}`, 'client.json');
    const base = ['--config', profile, '--gnupghome', key.gnupghome];
    const r = await runClient([...base, 'signup', '--server', web(srv), '--no-tor', '--key', key.fingerprint]);
    expect(r.code, r.stderr).to.equal(0);
    expectNoStack(r);
    const username = /your username is ([a-z0-9]+)\./.exec(r.stdout)?.[1];
    expect(username, r.stdout).to.be.a('string');
    return { key, username: username!, run: (node, args) => runClient([...base, '--server', web(node), '--no-tor', ...args]) };
  }

  /** Fetches with --decrypt into a fresh Maildir; the decrypted messages. */
  async function fetchAll(acct: Account, node: RunningServer): Promise<string[]> {
    const out = path.join(work!.dir, `fetched-${++counter}`);
    const r = await acct.run(node, ['fetch', '--maildir', out, '--decrypt', '--quiet']);
    expect(r.code, r.stderr).to.equal(0);
    expectNoStack(r);
    const names = await filesIn(path.join(out, 'new'));
    return Promise.all(names.map(async (n) => (await readFile(path.join(out, 'new', n))).toString('utf8')));
  }

  function markersIn(messages: string[]): string[] {
    return messages.map((m) => /Secret subject (KZYMYMARK[0-9A-F]+)/.exec(m)?.[1] ?? '?').sort();
  }

  it('a signup on node A is served by node B at once: B takes her mail, and she fetches it from B', async function () {
    const acct = await signup(a!);
    const mark = marker();
    const sent = await sendRaw(b!.smtpPort, [`hello@${acct.username}.${b!.domain}`], rawMessage(mark));
    expect(sent.reply, 'node B, right after the signup on A').to.match(/^250 /);
    const got = await fetchAll(acct, b!);
    // The welcome message was delivered by node A, into the same Maildir root.
    expect(got).to.have.length(2);
    expect(got.some((m) => m.includes(mark))).to.equal(true);
    expect(got.some((m) => m.includes('Welcome to kzymy'))).to.equal(true);
  });

  it('mail sent to both nodes for one user is fetched once, complete', async function () {
    const acct = await signup(a!);
    const sent: string[] = [];
    const rcpt = `shop@${acct.username}.${a!.domain}`;
    const replies = await Promise.all(
      Array.from({ length: 40 }, (_, i) => {
        const mark = marker();
        sent.push(mark);
        return sendRaw((i % 2 ? a! : b!).smtpPort, [rcpt], rawMessage(mark, { to: rcpt }));
      }),
    );
    for (const r of replies) expect(r.reply).to.match(/^250 /);
    const got = await fetchAll(acct, a!);
    expect(markersIn(got.filter((m) => !m.includes('Welcome to kzymy')))).to.deep.equal([...sent].sort());
    // Acknowledged on A means gone for B too: nothing is fetched twice.
    expect(await fetchAll(acct, b!)).to.deep.equal([]);
  });

  it("a node that starts leaves alone another node's message in flight in tmp/", async function () {
    const acct = await signup(a!);
    const rcpt = `slow@${acct.username}.${a!.domain}`;
    const tmp = path.join(shared, acct.username, 'tmp');
    const mark = marker();
    // Larger than limits.memoryBufferBytes (1 MiB): it is encrypted into tmp/ while it arrives.
    const msg = rawMessage(mark, { to: rcpt, bodyBytes: 3_000_000 });
    // A sender that streams its message to node A slowly, in pieces.
    const sock = net.connect({ port: a!.smtpPort, host: '127.0.0.1' });
    let text = '';
    sock.on('data', (d: Buffer) => (text += d.toString('latin1')));
    const replies = async (n: number) => {
      while ((text.match(/^\d{3} /gm) ?? []).length < n) await new Promise((r) => setTimeout(r, 10));
    };
    await replies(1);
    sock.write(`EHLO client.example.org\r\nMAIL FROM:<sender@example.org>\r\nRCPT TO:<${rcpt}>\r\nDATA\r\n`);
    await replies(5);
    expect(text).to.match(/^354 /m);
    const half = Math.floor(msg.length / 2);
    sock.write(msg.subarray(0, half));
    const end = Date.now() + 30_000;
    while ((await filesIn(tmp)).length === 0) {
      if (Date.now() > end) throw new Error(`node A wrote nothing to tmp/ in 30 s; it answered:\n${text}`);
      await new Promise((r) => setTimeout(r, 10));
    }
    // Node B restarts (as after a crash or an upgrade) while A's file is in tmp/.
    await b!.stop();
    firstB = b;
    b = await startServer({ base: b!.base, config });
    expect(await filesIn(tmp), "A's file in flight").to.have.length(1);
    sock.write(msg.subarray(half));
    sock.write('\r\n.\r\nQUIT\r\n');
    await replies(6);
    sock.destroy();
    expect(text.split('\r\n').filter((l) => /^\d{3} /.test(l))[5], 'the reply to the final dot').to.match(/^250 /);
    const got = await fetchAll(acct, b!);
    expect(got.some((m) => m.includes(mark))).to.equal(true);
  });

  it('kill -9 of node A under load loses no message that got 250; node B keeps accepting and serving pickup', async function () {
    const acct = await signup(b!);
    const rcpt = `load@${acct.username}.${b!.domain}`;
    const accepted: string[] = [];
    const refused: string[] = [];
    let killed = false;
    const sender = async (node: () => RunningServer, count: number) => {
      for (let i = 0; i < count; i++) {
        const mark = marker();
        const r = await sendRaw(node().smtpPort, [rcpt], rawMessage(mark, { to: rcpt, bodyBytes: 20_000 }));
        if (r.reply.startsWith('250 ')) accepted.push(mark);
        else refused.push(r.reply);
      }
    };
    // Eight senders at node A, four at node B; A dies while its senders are mid-stream.
    const toA = Array.from({ length: 8 }, () => sender(() => a!, 25));
    const toB = Array.from({ length: 4 }, () => sender(() => b!, 25));
    const killer = (async () => {
      while (accepted.length < 40) await new Promise((r) => setTimeout(r, 5));
      a!.child.kill('SIGKILL');
      killed = true;
    })();
    await Promise.all([...toA, ...toB, killer]);
    expect(killed).to.equal(true);
    expect(refused.length, 'connections to the dead node fail').to.be.above(0);
    // Node B still takes mail after the crash...
    const after: string[] = [];
    for (let i = 0; i < 5; i++) {
      const mark = marker();
      const r = await sendRaw(b!.smtpPort, [rcpt], rawMessage(mark, { to: rcpt }));
      expect(r.reply, 'node B after A died').to.match(/^250 /);
      after.push(mark);
    }
    // ...and serves every message that got 250 from either node, once. A message that A had
    // stored when it died, before its 250 went out, may be there too (the sender, with no
    // 250, sends it again: SMTP's at-least-once); at most one per connection cut.
    const got = markersIn((await fetchAll(acct, b!)).filter((m) => !m.includes('Welcome to kzymy')));
    expect(new Set(got).size, 'each message once').to.equal(got.length);
    const missing = [...accepted, ...after].filter((m) => !got.includes(m));
    expect(missing, 'messages that got 250 and are gone').to.deep.equal([]);
    expect(got.length - accepted.length - after.length, 'stored without a 250').to.be.at.most(8);
  });
});
