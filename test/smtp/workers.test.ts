// SMTP on several worker processes (smtp.workers): the real server started as an operator
// would, real sockets, real gpg. Each test plays a party that would profit if a worker
// counted only for itself: parallel senders filling one mailbox or the disk over both
// workers, one source taking every slot, the operator's CLI changing the registry while
// sessions are open on each worker, a SIGTERM or a kill -9 in the middle of the load.
import { expect } from 'chai';
import { execFileSync } from 'node:child_process';
import { readdir, readFile, stat, statfs, writeFile } from 'node:fs/promises';
import net from 'node:net';
import path from 'node:path';
import { requireBinaries } from '../helpers/env.js';
import { startServer, type RunningServer } from '../helpers/server.js';
import { makeGpgKey, gpgDecryptPgpMime, type TestKey } from '../helpers/gpg.js';
import { marker, rawMessage } from '../helpers/mail.js';
import { sendRaw } from '../helpers/smtp-client.js';
import { alive } from '../helpers/procs.js';
import { mountTmpfs } from '../helpers/tmpfs.js';

/** The `smtp-workers` log line: how many, which processes. */
function workersOf(srv: RunningServer): { workers: number; pids: number[] } {
  for (const line of srv.output().split('\n')) {
    if (!line.includes('"smtp-workers"')) continue;
    const j = JSON.parse(line) as { workers: number; pids: number[] };
    return j;
  }
  throw new Error(`no smtp-workers line in:\n${srv.output()}`);
}

/** Parent pid of `pid` (field 4 of /proc/PID/stat). */
function parentOf(pid: number): number {
  const stat = execFileSync('cat', [`/proc/${pid}/stat`], { encoding: 'utf8' });
  return Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]);
}

/** The `worker` field of every `delivered` (or other `evt`) log line. */
function deliveringWorkers(srv: RunningServer, evts = ['delivered']): Set<number> {
  const seen = new Set<number>();
  for (const line of srv.output().split('\n')) {
    if (!evts.some((e) => line.includes(`"${e}"`))) continue;
    const j = JSON.parse(line) as { worker?: number };
    if (typeof j.worker === 'number') seen.add(j.worker);
  }
  return seen;
}

async function until(what: string, check: () => Promise<boolean> | boolean, ms = 20_000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting until ${what}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

/** A line-by-line SMTP session kept open (to hold a connection on a worker). */
class Session {
  private buf = '';
  private waiters: Array<(line: string) => void> = [];
  private lines: string[] = [];
  readonly sock: net.Socket;
  constructor(port: number, localAddress = '127.0.0.1') {
    this.sock = net.connect({ port, host: '127.0.0.1', localAddress });
    this.sock.on('error', () => undefined);
    this.sock.on('data', (d) => {
      this.buf += d.toString('latin1');
      let nl: number;
      while ((nl = this.buf.indexOf('\r\n')) >= 0) {
        const line = this.buf.slice(0, nl);
        this.buf = this.buf.slice(nl + 2);
        if (/^\d{3}-/.test(line)) continue;
        const w = this.waiters.shift();
        if (w) w(line);
        else this.lines.push(line);
      }
    });
    this.sock.on('close', () => {
      for (const w of this.waiters.splice(0)) w('');
    });
  }
  next(): Promise<string> {
    const l = this.lines.shift();
    if (l !== undefined) return Promise.resolve(l);
    return new Promise((resolve) => this.waiters.push(resolve));
  }
  async say(cmd: string): Promise<string> {
    this.sock.write(cmd + '\r\n');
    return this.next();
  }
  close(): void {
    this.sock.destroy();
  }
}

/** Two workers; the tests send up to 40 at once from 127.0.0.1, past the default 20 a source. */
const TWO = { workers: 2, maxClientsPerAddress: 100 };

/** True when three sessions from 127.0.0.1 opened at once are all greeted with 220 (then closed). */
async function threeGetIn(port: number): Promise<boolean> {
  const three = [0, 1, 2].map(() => new Session(port));
  const greetings = await Promise.all(three.map((s) => s.next()));
  for (const s of three) s.close();
  const ok = greetings.every((g) => g.startsWith('220'));
  if (!ok) await new Promise((r) => setTimeout(r, 200));
  return ok;
}

describe('SMTP on several worker processes (real server, real sockets)', function () {
  this.timeout(240_000);
  let key: TestKey;

  before(async function () {
    requireBinaries(this, 'gpg', 'openssl');
    key = await makeGpgKey('ed25519');
  });

  async function addUser(srv: RunningServer): Promise<string> {
    const keyFile = path.join(srv.base, 'k.asc');
    await writeFile(keyFile, key.publicArmored);
    return (await srv.cli('users', 'add', '--key', keyFile)).trim();
  }

  it('runs one worker process per setting, children of the server, and spreads sessions over them', async function () {
    const srv = await startServer({ config: { smtp: TWO } });
    try {
      const w = workersOf(srv);
      expect(w.workers).to.equal(2);
      expect(new Set(w.pids).size).to.equal(2);
      for (const pid of w.pids) {
        expect(alive(pid), `worker ${pid} runs`).to.equal(true);
        expect(parentOf(pid), `worker ${pid} is a child of the server`).to.equal(srv.child.pid);
      }
      const user = await addUser(srv);
      const replies = await Promise.all(Array.from({ length: 40 }, (_, i) => sendRaw(srv.smtpPort, [`m${i}@${user}.${srv.domain}`], rawMessage(marker()))));
      expect(replies.map((r) => r.reply.slice(0, 3))).to.deep.equal(Array(40).fill('250'));
      const dir = path.join(srv.maildirRoot, user, 'new');
      const files = await readdir(dir);
      expect(files).to.have.length(40);
      expect([...deliveringWorkers(srv)].sort(), 'both workers stored mail').to.deep.equal([0, 1]);
      const plain = await gpgDecryptPgpMime(key.gnupghome, await readFile(path.join(dir, files[0]!)));
      expect(plain.toString('latin1')).to.include('Secret subject KZYMYMARK');
    } finally {
      await srv.cleanup();
    }
  });

  it('counts one quota for all workers: parallel senders on both never pass it', async function () {
    const quota = 600_000;
    const srv = await startServer({ config: { smtp: TWO, limits: { quotaBytes: quota } } });
    try {
      const user = await addUser(srv);
      // 24 messages of ~60 KB (ciphertext ~83 KB each, ~2 MB together) at once, spread over both workers.
      const replies = await Promise.all(
        Array.from({ length: 24 }, (_, i) => sendRaw(srv.smtpPort, [`q${i}@${user}.${srv.domain}`], rawMessage(marker(), { bodyBytes: 60_000 }))),
      );
      const ok = replies.filter((r) => r.reply.startsWith('250')).length;
      const full = replies.filter((r) => r.reply.startsWith('452 4.2.2')).length;
      expect(ok + full, `every reply is 250 or 452 4.2.2: ${replies.map((r) => r.reply).join(' | ')}`).to.equal(24);
      expect(full, 'some were refused over quota').to.be.greaterThan(0);
      const dir = path.join(srv.maildirRoot, user, 'new');
      const files = await readdir(dir);
      expect(files).to.have.length(ok);
      let bytes = 0;
      for (const f of files) bytes += (await stat(path.join(dir, f))).size;
      expect(bytes, 'bytes stored').to.be.at.most(quota);
      expect(await readdir(path.join(srv.maildirRoot, user, 'tmp'))).to.deep.equal([]);
      expect(deliveringWorkers(srv, ['delivered', 'refused', 'rcpt-refused']).size, 'both workers took transactions').to.equal(2);
    } finally {
      await srv.cleanup();
    }
  });

  it('keeps one disk floor for all workers (a real 8 MiB tmpfs)', async function () {
    const small = await mountTmpfs(this, '8m', 'kzymy-floor-');
    const mnt = small.dir;
    const floor = 4 * 1024 * 1024;
    let srv: RunningServer | null = null;
    try {
      srv = await startServer({ config: { maildirRoot: mnt, smtp: TWO, limits: { minFreeBytes: floor } } });
      const user = await addUser(srv);
      // 30 messages of ~200 KB (~8 MB of ciphertext) against ~4 MiB above the floor.
      const replies = await Promise.all(
        Array.from({ length: 30 }, (_, i) => sendRaw(srv!.smtpPort, [`d${i}@${user}.${srv!.domain}`], rawMessage(marker(), { bodyBytes: 200_000 }))),
      );
      const ok = replies.filter((r) => r.reply.startsWith('250')).length;
      const full = replies.filter((r) => r.reply.startsWith('452 4.3.1')).length;
      expect(ok + full, `every reply is 250 or 452 4.3.1: ${replies.map((r) => r.reply).join(' | ')}`).to.equal(30);
      expect(ok, 'some were stored').to.be.greaterThan(0);
      expect(full, 'some were refused at the floor').to.be.greaterThan(0);
      const s = await statfs(mnt);
      expect(s.bavail * s.bsize, 'free bytes left').to.be.at.least(floor);
      expect(await readdir(path.join(mnt, user, 'new'))).to.have.length(ok);
      expect(await readdir(path.join(mnt, user, 'tmp'))).to.deep.equal([]);
    } finally {
      await srv?.stop();
      await srv?.cleanup();
      await small.unmount();
    }
  });

  it('admits connections against limits counted for the whole server, not per worker', async function () {
    const srv = await startServer({ config: { smtp: { workers: 2, maxClients: 5, maxClientsPerAddress: 3 } } });
    const open: Session[] = [];
    try {
      // Four from one address: three get in (spread over both workers), the fourth is refused.
      for (let i = 0; i < 3; i++) {
        const s = new Session(srv.smtpPort);
        open.push(s);
        expect(await s.next()).to.match(/^220 /);
      }
      const fourth = new Session(srv.smtpPort);
      expect(await fourth.next()).to.equal('421 4.7.0 Too many connections from your address; try again later');
      fourth.close();
      // Two more from another address fill maxClients; the next one is refused with smtp-server's words.
      for (let i = 0; i < 2; i++) {
        const s = new Session(srv.smtpPort, '127.0.0.2');
        open.push(s);
        expect(await s.next()).to.match(/^220 /);
      }
      const sixth = new Session(srv.smtpPort, '127.0.0.3');
      expect(await sixth.next()).to.match(/^421 4\.7\.0 .*Too many connected clients/);
      sixth.close();
      // Closed connections give their slots back (the workers report closes a moment later).
      for (const s of open.splice(0)) s.close();
      await until('three from one address get in again', () => threeGetIn(srv.smtpPort));
      expect(srv.output()).not.to.match(/127\.0\.0\.[23]/);
    } finally {
      for (const s of open) s.close();
      await srv.cleanup();
    }
  });

  it('gives back the slots of clients that vanish before their socket reaches a worker', async function () {
    const srv = await startServer({ config: { smtp: { workers: 2, maxClientsPerAddress: 3 } } });
    try {
      // 300 connections opened and destroyed at once: many are gone before they can be passed on.
      for (let round = 0; round < 3; round++) {
        await Promise.all(
          Array.from({ length: 100 }, () => new Promise<void>((resolve) => {
            const s = net.connect({ port: srv.smtpPort, host: '127.0.0.1' });
            s.on('error', () => resolve());
            s.on('connect', () => {
              s.destroy();
              resolve();
            });
          })),
        );
      }
      await until('three from the address get in', () => threeGetIn(srv.smtpPort));
    } finally {
      await srv.cleanup();
    }
  });

  it('sees registry changes in every worker: a user added by the CLI gets mail on both, a disable holds on both', async function () {
    const srv = await startServer({ config: { smtp: TWO } });
    const sessions: Session[] = [];
    try {
      // Two sessions held open: the least busy worker takes each, so one lands on each worker.
      for (let i = 0; i < 2; i++) {
        const s = new Session(srv.smtpPort);
        sessions.push(s);
        expect(await s.next()).to.match(/^220 /);
        expect(await s.say('EHLO client.example.org')).to.match(/^250 /);
      }
      const user = await addUser(srv);
      for (const s of sessions) {
        expect(await s.say('MAIL FROM:<sender@example.org>')).to.match(/^250 /);
        expect(await s.say(`RCPT TO:<new@${user}.${srv.domain}>`), 'the new user, at once').to.match(/^250 /);
        expect(await s.say('RSET')).to.match(/^250 /);
      }
      await srv.cli('users', 'disable', user);
      for (const s of sessions) {
        await until('the disable is seen', async () => {
          await s.say('MAIL FROM:<sender@example.org>');
          const r = await s.say(`RCPT TO:<new@${user}.${srv.domain}>`);
          await s.say('RSET');
          return r.startsWith('550 5.1.1');
        });
      }
    } finally {
      for (const s of sessions) s.close();
      await srv.cleanup();
    }
  });

  it('logs no address, subject or client IP from any worker', async function () {
    const srv = await startServer({ config: { smtp: TWO } });
    try {
      const user = await addUser(srv);
      const marks = Array.from({ length: 6 }, () => marker());
      const replies = await Promise.all(
        marks.map((m, i) => sendRaw(srv.smtpPort, [`secret-local-${i}@${user}.${srv.domain}`], rawMessage(m), 'leaky-sender@example.org', '127.0.0.7')),
      );
      expect(replies.every((r) => r.reply.startsWith('250'))).to.equal(true);
      // Refusals are logged too, by code only.
      const refused = await Promise.all([0, 1, 2, 3].map((i) => sendRaw(srv.smtpPort, [`secret-local-${i}@nobody${i}.${srv.domain}`], rawMessage(marker()), 'leaky-sender@example.org', '127.0.0.7')));
      expect(refused.every((r) => r.reply.startsWith('550 5.1.1'))).to.equal(true);
      await until('the refusals are logged', () => (srv.output().match(/"rcpt-refused"/g) ?? []).length >= 4);
      const out = srv.output();
      expect(deliveringWorkers(srv).size).to.equal(2);
      for (const m of marks) expect(out).not.to.include(m);
      expect(out).not.to.include('leaky-sender');
      expect(out).not.to.include('secret-local');
      expect(out).not.to.include('127.0.0.7');
    } finally {
      await srv.cleanup();
    }
  });

  /** `count` sends, `parallel` at a time, ids ACK-NNN in the subject; `onAck` after each 250. */
  async function load(srv: RunningServer, user: string, count: number, parallel: number, bodyBytes: number, onAck: (n: number) => void): Promise<{ acked: Set<string>; tried: number }> {
    const acked = new Set<string>();
    let next = 0;
    const lane = async () => {
      while (next < count) {
        const id = `ACK-${String(next++).padStart(4, '0')}-ID`;
        // A session that hears nothing for a minute was lost between processes (a socket passed
        // to a worker that died, never closed): fail with that, not with the suite's timeout.
        let timer: NodeJS.Timeout | undefined;
        const silent = new Promise<never>((_, reject) => {
          timer = setTimeout(() => reject(new Error(`${id}: no reply and no close within 60 s`)), 60_000);
        });
        const r = await Promise.race([sendRaw(srv.smtpPort, [`load@${user}.${srv.domain}`], rawMessage(id, { bodyBytes })), silent]).finally(() => clearTimeout(timer));
        if (r.reply.startsWith('250')) {
          acked.add(id);
          onAck(acked.size);
        }
      }
    };
    await Promise.all(Array.from({ length: parallel }, lane));
    return { acked, tried: next };
  }

  /** The ids in every file of new/ (each must decrypt: no partial file). */
  async function storedIds(maildirRoot: string, user: string): Promise<string[]> {
    const dir = path.join(maildirRoot, user, 'new');
    const ids: string[] = [];
    for (const f of await readdir(dir)) {
      const plain = (await gpgDecryptPgpMime(key.gnupghome, await readFile(path.join(dir, f)))).toString('latin1');
      const m = /ACK-\d{4}-ID/.exec(plain);
      expect(m, `file ${f} holds a test message`).to.not.equal(null);
      ids.push(m![0]);
    }
    return ids;
  }

  it('SIGTERM under load: transactions in flight finish, nothing acknowledged is lost, every process ends', async function () {
    const srv = await startServer({ config: { smtp: TWO } });
    try {
      const user = await addUser(srv);
      const { pids } = workersOf(srv);
      let stopping: Promise<number | null> | null = null;
      const { acked } = await load(srv, user, 80, 16, 150_000, (n) => {
        if (n === 15 && !stopping) stopping = srv.stop('SIGTERM');
      });
      expect(await stopping, 'exit code').to.equal(0);
      for (const pid of pids) expect(alive(pid), `worker ${pid} ended`).to.equal(false);
      const ids = await storedIds(srv.maildirRoot, user);
      for (const id of acked) expect(ids, `${id} got 250`).to.include(id);
      expect(ids.length, 'no message stored twice or without its 250').to.equal(acked.size);
      expect(await readdir(path.join(srv.maildirRoot, user, 'tmp'))).to.deep.equal([]);
      expect(acked.size).to.be.below(80);
    } finally {
      await srv.cleanup();
    }
  });

  it('kill -9 of one worker under load: nothing acknowledged is lost, a new worker takes over, its half-written files go', async function () {
    const srv = await startServer({ config: { smtp: TWO } });
    try {
      const user = await addUser(srv);
      const { pids } = workersOf(srv);
      const victim = pids[0]!;
      let killedAt = -1;
      const { acked, tried } = await load(srv, user, 160, 16, 80_000, (n) => {
        if (n === 30 && killedAt < 0) {
          killedAt = n;
          process.kill(victim, 'SIGKILL');
        }
      });
      expect(killedAt, 'a worker was killed mid-run').to.equal(30);
      expect(tried).to.equal(160);
      expect(acked.size, 'the other worker and the new one went on').to.be.greaterThan(60);
      await until('a new worker started', () => /"smtp-worker-exited"/.test(srv.output()));
      // Mail still flows after the replacement.
      const after = await Promise.all(Array.from({ length: 6 }, () => sendRaw(srv.smtpPort, [`after@${user}.${srv.domain}`], rawMessage('ACK-9999-ID'))));
      expect(after.filter((r) => r.reply.startsWith('250')).length).to.equal(6);
      // What the dead worker left half-written in tmp/ is removed.
      await until('the dead worker\'s tmp files are gone', async () => !(await readdir(path.join(srv.maildirRoot, user, 'tmp'))).some((f) => f.includes(`P${victim}Q`)));
      const ids = await storedIds(srv.maildirRoot, user);
      for (const id of acked) expect(ids, `${id} got 250`).to.include(id);
      // The server's count of waiting mail matches the files (the dead worker's last reports may be missing).
      const st = JSON.parse(await srv.cli('status', '--json').catch((e: { stdout?: string }) => e.stdout ?? '{}')) as { status: { mail: { waiting: number } } };
      expect(st.status.mail.waiting).to.equal(ids.length);
    } finally {
      await srv.cleanup();
    }
  });
});
