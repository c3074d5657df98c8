// kzymy-client end to end: the client as a subprocess against a real kzymy-server
// process on loopback (--no-tor), real GnuPG keys, real swaks for mail.
import { expect } from 'chai';
import { mkdir, readdir, readFile, rm, stat, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { requireBinaries, tempDir } from '../helpers/env.js';
import { gpg, gpgDecryptPgpMime, makeFreshGpgKey, parsePgpMime, type TestKey } from '../helpers/gpg.js';
import { marker, newFiles, rawMessage } from '../helpers/mail.js';
import { startServer, type RunningServer } from '../helpers/server.js';
import { swaks, swaksWire } from '../helpers/swaks.js';
import { spawn } from 'node:child_process';
import { CLIENT_CLI, expectNoStack, FAKE_ONION, fakeTor, ROOT, runClient, type ClientRun } from './helpers.js';

interface Account {
  key: TestKey;
  username: string;
  config: string;
  /** Runs kzymy-client with this account's profile against the test server. */
  run(args: string[], env?: NodeJS.ProcessEnv): Promise<ClientRun>;
}

/** Files in DIR/new, contents. */
async function delivered(maildir: string): Promise<Buffer[]> {
  let names: string[] = [];
  try {
    names = (await readdir(path.join(maildir, 'new'))).sort();
  } catch {
    return [];
  }
  return Promise.all(names.map((n) => readFile(path.join(maildir, 'new', n))));
}

/**
 * The decrypted message is the original, byte for byte, after exactly the three delivery
 * headers: with CRLF line ends as on the wire (gpg itself, fetch --decrypt --crlf), or
 * with CRLF -> LF (fetch --decrypt, the default).
 */
function expectOriginalWithDeliveryHeaders(decrypted: Buffer, original: Buffer, rcpt: string, eol: '\n' | '\r\n' = '\n'): void {
  const text = decrypted.toString('latin1');
  const e = eol === '\n' ? '\\n' : '\\r\\n';
  expect(text).to.match(new RegExp(`^Return-Path: <sender@example\\.org>${e}Delivered-To: [^\\r\\n]+${e}Received: from [^\\r\\n]+${e}`));
  expect(text.split(eol)[1]!.toLowerCase()).to.equal(`delivered-to: ${rcpt.toLowerCase()}`);
  const headerEnd = text.indexOf(eol, text.indexOf('Received: ')) + eol.length;
  const want = eol === '\n' ? Buffer.from(original.toString('latin1').replace(/\r\n/g, '\n'), 'latin1') : original;
  expect(Buffer.compare(decrypted.subarray(headerEnd), want)).to.equal(0, 'the original bytes, unchanged');
}

describe('kzymy-client against a real kzymy server (loopback, --no-tor)', function () {
  let srv: RunningServer;
  let work: string;
  let cleanupWork: () => Promise<void>;
  let server: string;

  before(async function () {
    requireBinaries(this, 'gpg', 'gpgconf', 'swaks');
    ({ dir: work, cleanup: cleanupWork } = await tempDir('kzymy-client-e2e-'));
    srv = await startServer();
    if (srv.webPort === null) throw new Error('kzymy-server logged no web listener');
    server = `http://127.0.0.1:${srv.webPort}`;
  });
  after(async function () {
    await srv?.cleanup();
    await cleanupWork?.();
  });

  let counter = 0;
  async function signup(): Promise<Account> {
    const key = await makeFreshGpgKey('ed25519');
    const config = path.join(work, `profile-${++counter}`, 'client.json');
    const base = ['--config', config, '--gnupghome', key.gnupghome];
    const r = await runClient([...base, 'signup', '--server', server, '--no-tor', '--key', key.fingerprint]);
    expect(r.code, r.stderr).to.equal(0);
    expectNoStack(r);
    const username = /your username is ([a-z0-9]+)\./.exec(r.stdout)?.[1];
    expect(username, r.stdout).to.be.a('string');
    return { key, username: username!, config, run: (args, env) => runClient([...base, ...args], { env }) };
  }

  async function send(acct: Account, local: string): Promise<{ mark: string; msg: Buffer; rcpt: string }> {
    const mark = marker();
    const rcpt = `${local}@${acct.username}.${srv.domain}`;
    const data = rawMessage(mark, { to: rcpt });
    const r = await swaks({ port: srv.smtpPort, to: rcpt, data });
    expect(r.last, r.transcript).to.match(/^250 /);
    // What was sent: the bytes swaks put between DATA and the final dot.
    return { mark, msg: swaksWire(data), rcpt };
  }

  async function rcptReply(acct: Account | string, local: string): Promise<string> {
    const user = typeof acct === 'string' ? acct : acct.username;
    const r = await swaks({ port: srv.smtpPort, to: `${local}@${user}.${srv.domain}`, extra: ['--quit-after', 'RCPT'] });
    // The reply to RCPT TO follows the reply to MAIL FROM.
    const mailFrom = r.replies.findIndex((l) => /^250 2\.1\.0 /.test(l));
    return r.replies[mailFrom + 1] ?? r.last;
  }

  /**
   * Runs again while a killed run's profile lock is not yet stale (exit 8: ten seconds
   * without a refresh): waiting for an outcome, bounded by mocha's timeout.
   */
  async function afterLock(run: () => Promise<ClientRun>): Promise<ClientRun> {
    for (;;) {
      const r = await run();
      if (r.code !== 8) return r;
      await new Promise((res) => setTimeout(res, 1000));
    }
  }

  async function waiting(acct: Account): Promise<number> {
    return (await newFiles(srv.maildirRoot, acct.username)).length;
  }

  describe('signup, then fetch', function () {
    let acct: Account;
    const sent: Array<{ mark: string; msg: Buffer; rcpt: string }> = [];

    it('signup with a fresh GnuPG key creates an account and saves a 0600 profile', async function () {
      acct = await signup();
      const profile = JSON.parse(await readFile(acct.config, 'utf8')) as Record<string, unknown>;
      expect(profile).to.include({ server, username: acct.username, key: acct.key.fingerprint, tor: false });
      expect((await stat(acct.config)).mode & 0o777).to.equal(0o600);
      const users = JSON.parse(await srv.cli('users', 'list', '--json')) as Array<{ username: string; fingerprint: string }>;
      expect(users.find((u) => u.username === acct.username)?.fingerprint).to.equal(acct.key.fingerprint);
      // One profile, one identity; one key, one account.
      const again = await acct.run(['signup', '--key', acct.key.fingerprint]);
      expect(again.code).to.equal(1);
      expect(again.stderr).to.match(/already belongs to the account .*; give another --config FILE/);
      const other = await runClient(['--config', path.join(work, 'dup.json'), '--gnupghome', acct.key.gnupghome, '--server', server, '--no-tor', '--key', acct.key.fingerprint, 'signup']);
      expect(other.code).to.equal(1);
      expect(other.stderr).to.match(/^kzymy-client: [A-Z].*\n$/);
      expectNoStack(other);
    });

    it('fetch --maildir OUT --decrypt delivers the welcome message and three swaks messages, byte for byte', async function () {
      for (const local of ['shop', 'News.Letter', 'x+tag']) sent.push(await send(acct, local));
      expect(await waiting(acct)).to.equal(4);
      const out = path.join(work, 'out-decrypted');
      const r = await acct.run(['fetch', '--maildir', out, '--decrypt']);
      expect(r.code, r.stderr).to.equal(0);
      expect(r.stdout).to.match(/^4 messages \(\d+(\.\d)? KiB\) delivered to /);
      expect(r.stderr).to.equal('');
      const files = await delivered(out);
      expect(files).to.have.length(4);
      const welcome = files.filter((f) => f.toString('utf8').includes('Welcome to kzymy'));
      expect(welcome).to.have.length(1);
      expect(welcome[0]!.toString('utf8')).to.include(`Your username is ${acct.username}.`);
      for (const s of sent) {
        const mine = files.filter((f) => f.includes(Buffer.from(s.mark)));
        expect(mine, s.mark).to.have.length(1);
        expectOriginalWithDeliveryHeaders(mine[0]!, s.msg, s.rcpt);
      }
      expect(await readdir(path.join(out, 'tmp'))).to.deep.equal([]);
      expect(await waiting(acct), "the server's Maildir").to.equal(0);
      expect(await readdir(path.join(srv.maildirRoot, acct.username, 'cur'))).to.deep.equal([]);
      const again = await acct.run(['fetch']);
      expect(again.code).to.equal(0);
      expect(again.stdout.trim()).to.equal('no mail waiting');
      expect(await delivered(out)).to.have.length(4);
    });

    it('fetch --maildir OUT without --decrypt delivers the PGP/MIME file as stored, which gpg opens', async function () {
      const s = await send(acct, 'plain');
      const [onServer] = await newFiles(srv.maildirRoot, acct.username);
      const stored = await readFile(onServer!);
      const out = path.join(work, 'out-pgpmime');
      const r = await acct.run(['fetch', '--maildir', out, '--no-decrypt', '--quiet']);
      expect(r.code, r.stderr).to.equal(0);
      expect(r.stdout).to.equal('');
      const files = await delivered(out);
      expect(files).to.have.length(1);
      expect(Buffer.compare(files[0]!, stored)).to.equal(0);
      expect(files[0]!.includes(Buffer.from(s.mark))).to.equal(false);
      expect(parsePgpMime(files[0]!).fields.map(([n]) => n.toLowerCase())).to.include('content-type');
      expectOriginalWithDeliveryHeaders(await gpgDecryptPgpMime(acct.key.gnupghome, files[0]!), s.msg, s.rcpt, '\r\n');
      expect(await waiting(acct)).to.equal(0);
    });

    it('fetch --decrypt --crlf keeps the CRLF line ends byte for byte; saved in the profile, --no-crlf undoes it', async function () {
      const s = await send(acct, 'crlf');
      const out = path.join(work, 'out-crlf');
      const r = await acct.run(['fetch', '--maildir', out, '--decrypt', '--crlf', '--quiet']);
      expect(r.code, r.stderr).to.equal(0);
      const files = await delivered(out);
      expect(files).to.have.length(1);
      expectOriginalWithDeliveryHeaders(files[0]!, s.msg, s.rcpt, '\r\n');
      expect(JSON.parse(await readFile(acct.config, 'utf8'))).to.include({ crlf: true, decrypt: true });
      const lf = await send(acct, 'lf');
      const again = await acct.run(['fetch', '--no-crlf', '--quiet']);
      expect(again.code, again.stderr).to.equal(0);
      const both = await delivered(out);
      const mine = both.filter((f) => f.includes(Buffer.from(lf.mark)));
      expect(mine).to.have.length(1);
      expect(mine[0]!.includes(Buffer.from('\r\n'))).to.equal(false);
      expectOriginalWithDeliveryHeaders(mine[0]!, lf.msg, lf.rcpt, '\n');
      expect(JSON.parse(await readFile(acct.config, 'utf8'))).to.include({ crlf: false });
    });

    it('status tells how many messages wait and their size', async function () {
      await send(acct, 'status');
      const r = await acct.run(['status']);
      expect(r.code, r.stderr).to.equal(0);
      expect(r.stdout).to.match(/^account +[a-z0-9]+ /m);
      // Sizes for people, not byte counts.
      expect(r.stdout).to.match(/^waiting +1 message, \d+(\.\d)? KiB/m);
      expect(r.stdout).to.match(/^quota +\d+(\.\d)? [MG]iB$/m);
      expect(r.stdout).to.include(acct.key.fingerprint);
    });
  });

  describe('delivery to an MDA', function () {
    let acct: Account;
    before(async function () {
      acct = await signup();
    });

    it('fetch --mda hands each message to the command', async function () {
      const s = await send(acct, 'mda');
      const dir = path.join(work, 'mda-out');
      await mkdir(dir);
      const r = await acct.run(['fetch', '--decrypt', '--mda', `cat > "$(mktemp -p '${dir}' msg.XXXXXX)"`]);
      expect(r.code, r.stderr).to.equal(0);
      const files = await Promise.all((await readdir(dir)).map((n) => readFile(path.join(dir, n))));
      expect(files).to.have.length(2); // welcome + one
      const mine = files.find((f) => f.includes(Buffer.from(s.mark)));
      expectOriginalWithDeliveryHeaders(mine!, s.msg, s.rcpt);
      expect(await waiting(acct)).to.equal(0);
    });

    it('an MDA that exits 75 leaves every message on the server; the next run delivers each once', async function () {
      const a = await send(acct, 'one');
      const b = await send(acct, 'two');
      const fail = await acct.run(['fetch', '--mda', 'cat >/dev/null; exit 75']);
      expect(fail.code).to.equal(75);
      expect(fail.stderr).to.match(/^kzymy-client: The MDA asked to try again later \(exit 75\); this message and 1 more stay on the server for the next run\.\n$/);
      expect(await waiting(acct)).to.equal(2);
      const dir = path.join(work, 'mda-retry');
      await mkdir(dir);
      const ok = await acct.run(['fetch', '--decrypt', '--mda', `cat > "$(mktemp -p '${dir}' msg.XXXXXX)"`]);
      expect(ok.code, ok.stderr).to.equal(0);
      const files = await Promise.all((await readdir(dir)).map((n) => readFile(path.join(dir, n))));
      expect(files).to.have.length(2);
      for (const s of [a, b]) expect(files.filter((f) => f.includes(Buffer.from(s.mark))), s.mark).to.have.length(1);
      expect(await waiting(acct)).to.equal(0);
    });

    it('a client killed after delivery and before acknowledgement delivers nothing twice', async function () {
      const a = await send(acct, 'crash1');
      const b = await send(acct, 'crash2');
      const out = path.join(work, 'crash-out');
      const crashed = await acct.run(['fetch', '--maildir', out, '--decrypt'], { KZYMY_CLIENT_CRASH_AFTER_DELIVERY: '1' });
      expect(crashed.signal).to.equal('SIGKILL');
      // Deliveries end in batches: the first batch committed to the record held one or both.
      const before = (await delivered(out)).length;
      expect(before).to.be.within(1, 2);
      expect(await waiting(acct), 'nothing acknowledged').to.equal(2);
      // The killed run could not give its profile lock back: the next one waits it out.
      const next = await afterLock(() => acct.run(['fetch', '--maildir', out, '--decrypt']));
      expect(next.code, next.stderr).to.equal(0);
      expect(next.stdout).to.match(
        before === 1
          ? /1 message \(\d+(\.\d)? (bytes|KiB)\) delivered to .*; 1 message delivered by an earlier run acknowledged/
          : /^2 messages delivered by an earlier run acknowledged/,
      );
      const files = await delivered(out);
      expect(files).to.have.length(2);
      for (const s of [a, b]) expect(files.filter((f) => f.includes(Buffer.from(s.mark))), s.mark).to.have.length(1);
      expect(await waiting(acct)).to.equal(0);
    });

    it('an MDA that fails for good leaves the message on the server and says why (exit 1)', async function () {
      await send(acct, 'bad');
      const r = await acct.run(['fetch', '--mda', 'cat >/dev/null; echo "mailbox locked" >&2; exit 1']);
      expect(r.code).to.equal(1);
      expect(r.stderr).to.match(/^kzymy-client: 1 message could not be delivered and stays on the server: The MDA exited 1; the message was not delivered: mailbox locked\.\n$/);
      expect(await waiting(acct)).to.equal(1);
    });
  });

  describe('address policy and account', function () {
    it('aliases and catch-all change what the server accepts (250 vs 550)', async function () {
      const acct = await signup();
      expect(await rcptReply(acct, 'anything')).to.match(/^250 /);
      let r = await acct.run(['aliases', 'block', 'spam']);
      expect(r.code, r.stderr).to.equal(0);
      expect(r.stdout).to.match(/^blocked +spam$/m);
      expect(await rcptReply(acct, 'spam')).to.match(/^550 5\.1\.1 /);
      expect(await rcptReply(acct, 'anything')).to.match(/^250 /);
      r = await acct.run(['catch-all', 'off']);
      expect(r.code, r.stderr).to.equal(0);
      expect(r.stdout).to.match(/^catch-all +off/m);
      expect(await rcptReply(acct, 'anything')).to.match(/^550 5\.1\.1 /);
      r = await acct.run(['aliases', 'add', 'Shop']);
      expect(r.code, r.stderr).to.equal(0);
      expect(await rcptReply(acct, 'shop')).to.match(/^250 /);
      r = await acct.run(['aliases', 'list']);
      expect(r.stdout).to.match(/^aliases +shop$/m);
      r = await acct.run(['aliases', 'remove', 'shop']);
      expect(r.code, r.stderr).to.equal(0);
      expect(await rcptReply(acct, 'shop')).to.match(/^550 5\.1\.1 /);
      r = await acct.run(['catch-all', 'on']);
      expect(await rcptReply(acct, 'anything')).to.match(/^250 /);
      expect(await rcptReply(acct, 'spam')).to.match(/^550 5\.1\.1 /);
      // The server's refusal comes back as its sentence, exit 1.
      r = await acct.run(['aliases', 'add', 'a"b']);
      expect(r.code).to.equal(1);
      expect(r.stderr).to.match(/^kzymy-client: "a"b" is not a valid [^\n]+\n$/);
      expectNoStack(r);
    });

    it('key update re-uploads a new expiry, and --new-key rotates to a key authorised by the old one', async function () {
      const acct = await signup();
      // Same fingerprint, new expiry date.
      await gpg(acct.key.gnupghome, ['--quick-set-expire', acct.key.fingerprint, '2y']);
      await gpg(acct.key.gnupghome, ['--quick-set-expire', acct.key.fingerprint, '2y', '*']);
      let r = await acct.run(['key', 'update']);
      expect(r.code, r.stderr).to.equal(0);
      expect(r.stdout).to.match(new RegExp(`current version of the key ${acct.key.fingerprint} \\(expires \\d{4}-`));
      // Rotation: the new key's secret is in the same keyring.
      const next = await makeFreshGpgKey('ed25519');
      await gpg(acct.key.gnupghome, ['--import'], next.secretArmored);
      const bad = await acct.run(['key', 'update', '--new-key', 'F'.repeat(40)]);
      expect(bad.code).to.equal(1);
      expect(bad.stderr).to.match(/There is no secret key F{40} in the GnuPG keyring/);
      r = await acct.run(['key', 'update', '--new-key', next.fingerprint]);
      expect(r.code, r.stderr).to.equal(0);
      expect(r.stdout).to.include(`The account now uses the key ${next.fingerprint}`);
      const profile = JSON.parse(await readFile(acct.config, 'utf8')) as Record<string, unknown>;
      expect(profile.key).to.equal(next.fingerprint);
      // New mail is encrypted to the new key only.
      const s = await send(acct, 'rotated');
      const files = await Promise.all((await newFiles(srv.maildirRoot, acct.username)).map((p) => readFile(p)));
      const opened = await Promise.all(files.map((f) => gpgDecryptPgpMime(next.gnupghome, f).catch(() => null)));
      expect(opened.filter((o) => o?.includes(Buffer.from(s.mark)))).to.have.length(1);
      const out = path.join(work, 'rotated-out');
      r = await acct.run(['fetch', '--maildir', out, '--decrypt']);
      expect(r.code, r.stderr).to.equal(0);
      expect((await delivered(out)).filter((f) => f.includes(Buffer.from(s.mark)))).to.have.length(1);
    });

    it('delete-account needs --yes off a terminal, then the server refuses mail (550) and knows no such user', async function () {
      const acct = await signup();
      expect(await rcptReply(acct, 'hello')).to.match(/^250 /);
      let r = await acct.run(['delete-account']);
      expect(r.code).to.equal(2);
      expect(r.stderr).to.match(/not on a terminal, add --yes to confirm/);
      expect(await rcptReply(acct, 'hello')).to.match(/^250 /);
      r = await acct.run(['delete-account', '--yes']);
      expect(r.code, r.stderr).to.equal(0);
      expect(r.stdout).to.include(`The account ${acct.username} is deleted`);
      expect(await rcptReply(acct, 'hello')).to.match(/^550 5\.1\.1 /);
      await stat(path.join(srv.maildirRoot, acct.username)).then(() => expect.fail('Maildir kept'), () => undefined);
      r = await acct.run(['status', '--username', acct.username]);
      expect(r.code).to.equal(1);
      expect(r.stderr).to.match(/has no account "[a-z0-9]+" \(check --username and --server\)/);
      expectNoStack(r);
    });

    it('says so, before any connection, when the keyring does not hold the account key', async function () {
      const acct = await signup();
      const stranger = await makeFreshGpgKey('ed25519');
      const r = await acct.run(['status', '--gnupghome', stranger.gnupghome]);
      expect(r.code).to.equal(1);
      expect(r.stderr).to.match(/^kzymy-client: There is no secret key [0-9A-F]{40} in the GnuPG keyring in /);
      expectNoStack(r);
    });
  });

  describe('a backlog', function () {
    it('kill -9 amid batches, at any moment: the next run delivers each message exactly once, no half file in new/, no decryption folder left', async function () {
      this.timeout(600_000);
      for (const decrypt of [false, true]) {
        const acct = await signup();
        const sent: Array<{ mark: string; msg: Buffer; rcpt: string }> = [];
        for (let i = 0; i < 40; i++) sent.push(await send(acct, `backlog${i}`));
        const out = path.join(work, `backlog-${decrypt ? 'decrypted' : 'pgp'}`);
        const args = ['--config', acct.config, '--gnupghome', acct.key.gnupghome, 'fetch', '--maildir', out, ...(decrypt ? ['--decrypt'] : [])];
        // Killed once some messages are in new/ (batches in flight), and again on the next run.
        for (let kill = 0; kill < 2; kill++) {
          const before = (await delivered(out)).length;
          const child = spawn(process.execPath, ['--import', 'tsx', CLIENT_CLI, ...args], { cwd: ROOT, stdio: 'ignore' });
          const exited = new Promise<void>((resolve) => child.on('close', () => resolve()));
          // Waiting for an outcome (a file more in new/, or the end), bounded by mocha's timeout.
          while (child.exitCode === null && (await delivered(out)).length <= before) await new Promise((r) => setTimeout(r, 5));
          child.kill('SIGKILL');
          await exited;
        }
        const next = await afterLock(() => runClient(args));
        expect(next.code, next.stderr).to.equal(0);
        const files = await delivered(out);
        // The welcome message and the 40, each once and whole.
        expect(files).to.have.length(41);
        for (const s of sent) {
          const mine = files.filter((f) => (decrypt ? f : Buffer.from(f)).includes(Buffer.from(s.mark)));
          if (decrypt) {
            expect(mine, s.mark).to.have.length(1);
            expectOriginalWithDeliveryHeaders(mine[0]!, s.msg, s.rcpt);
          }
        }
        if (!decrypt) {
          // PGP/MIME files: each opens with gpg, and the 41 are 41 different messages.
          const plains = await Promise.all(files.map((f) => gpgDecryptPgpMime(acct.key.gnupghome, f)));
          for (const s of sent) expect(plains.filter((p) => p.includes(Buffer.from(s.mark))), s.mark).to.have.length(1);
        }
        // A killed run may leave the file it was writing in tmp/ (maildir(5) readers clear
        // tmp/ of old files); the private folder of --decrypt batches is gone.
        expect((await readdir(path.join(out, 'tmp'))).filter((n) => n.startsWith('.')), 'tmp/').to.deep.equal([]);
        expect(await waiting(acct), 'the server holds nothing more').to.equal(0);
      }
    });
  });

  describe('--watch', function () {
    it('keeps polling, delivers what arrives, and stops cleanly on SIGTERM', async function () {
      const acct = await signup();
      const out = path.join(work, 'watch-out');
      const child = spawn(process.execPath, ['--import', 'tsx', CLIENT_CLI, '--config', acct.config, '--gnupghome', acct.key.gnupghome, 'fetch', '--watch', '1', '--maildir', out, '--decrypt'], {
        cwd: ROOT,
        stdio: ['ignore', 'pipe', 'pipe'],
      });
      let stdout = '';
      let stderr = '';
      child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
      child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
      const exited = new Promise<number | null>((resolve) => child.on('close', (code) => resolve(code)));
      const until = async (what: string, ok: () => Promise<boolean>): Promise<void> => {
        // Waiting for an outcome, not measuring time: mocha's timeout bounds it.
        while (!(await ok())) {
          if (child.exitCode !== null) throw new Error(`the watcher exited (${what}): ${stderr}`);
          await new Promise((r) => setTimeout(r, 200));
        }
      };
      try {
        await until('welcome', async () => (await delivered(out)).length === 1);
        const s = await send(acct, 'watched');
        await until('second message', async () => (await delivered(out)).length === 2);
        expect((await delivered(out)).filter((f) => f.includes(Buffer.from(s.mark)))).to.have.length(1);
        child.kill('SIGTERM');
        expect(await exited).to.equal(0);
        expect(stdout).to.match(/stopped\n$/);
        expect(stderr).to.equal('');
        expect(await waiting(acct)).to.equal(0);
      } finally {
        if (child.exitCode === null) child.kill('SIGKILL');
      }
    });
  });

  describe('the profile', function () {
    it('keeps what a run that succeeded was given (0600, under $XDG_CONFIG_HOME), and never a --key the keyring lacks', async function () {
      const acct = await signup();
      const xdg = path.join(work, 'xdg');
      const file = path.join(xdg, 'kzymy', 'client.json');
      const env = { XDG_CONFIG_HOME: xdg };
      const base = ['--server', server, '--no-tor', '--username', acct.username.toUpperCase(), '--gnupghome', acct.key.gnupghome];
      const r = await runClient([...base, '--key', acct.key.fingerprint, '--maildir', 'Mail', '--decrypt', 'status'], { env });
      expect(r.code, r.stderr).to.equal(0);
      expect((await stat(file)).mode & 0o777).to.equal(0o600);
      expect((await stat(path.dirname(file))).mode & 0o777).to.equal(0o700);
      const saved = JSON.parse(await readFile(file, 'utf8')) as Record<string, unknown>;
      expect(saved).to.include({ server, username: acct.username, key: acct.key.fingerprint, decrypt: true, tor: false });
      expect(saved.maildir).to.equal(path.join(ROOT, 'Mail'));
      // --mda replaces a saved --maildir: one way to deliver.
      expect((await runClient(['--mda', 'cat >/dev/null', 'status'], { env })).code).to.equal(0);
      const again = JSON.parse(await readFile(file, 'utf8')) as Record<string, unknown>;
      expect(again.mda).to.equal('cat >/dev/null');
      expect(again).not.to.have.property('maildir');
      // A key the keyring does not hold fails the run and is not saved.
      const bad = await runClient(['--key', 'DEADBEEFDEADBEEFDEADBEEFDEADBEEFDEADBEEF', 'status'], { env });
      expect(bad.code).to.equal(1);
      expect(bad.stderr).to.match(/There is no secret key DEADBEEF/);
      expectNoStack(bad);
      expect((JSON.parse(await readFile(file, 'utf8')) as Record<string, unknown>).key).to.equal(acct.key.fingerprint);
    });
  });

  describe('the login token between runs', function () {
    const logins = () => srv.output().split('\n').filter((l) => l.includes('"evt":"token-issued"')).length;

    it('scripted commands log in once and reuse the token (0600, beside the profile); a dead token means a new login; logout ends it', async function () {
      const acct = await signup();
      const file = acct.config.replace(/\.json$/, `.${acct.username}.token`);
      const before = logins();
      for (let i = 0; i < 8; i++) {
        const r = await acct.run(['status']);
        expect(r.code, r.stderr).to.equal(0);
      }
      expect(logins() - before).to.equal(1, 'eight commands, one login');
      expect((await stat(file)).mode & 0o777).to.equal(0o600);
      const saved = JSON.parse(await readFile(file, 'utf8')) as { token: string; username: string; fingerprint: string; expiresAt: string };
      expect(saved).to.include({ username: acct.username, fingerprint: acct.key.fingerprint });
      expect(Date.parse(saved.expiresAt)).to.be.greaterThan(Date.now());

      // A token the server does not know (ended, or the server restarted): one new login, no error.
      await writeFile(file, JSON.stringify({ ...saved, token: 'kzt_not-a-live-token' }), { mode: 0o600 });
      const after = await acct.run(['status']);
      expect(after.code, after.stderr).to.equal(0);
      expect(logins() - before).to.equal(2);
      expect((JSON.parse(await readFile(file, 'utf8')) as { token: string }).token).not.to.equal('kzt_not-a-live-token');

      // logout ends it on the server and here.
      const kept = (JSON.parse(await readFile(file, 'utf8')) as { token: string }).token;
      const out = await acct.run(['logout']);
      expect(out.code, out.stderr).to.equal(0);
      expect(await stat(file).then(() => true, () => false)).to.equal(false);
      const res = await fetch(`${server}/api/v1/account`, { headers: { authorization: `Bearer ${kept}` } });
      expect(res.status).to.equal(401);
      expect((await acct.run(['status'])).code).to.equal(0);
      expect(logins() - before).to.equal(3);
    });
  });

  describe('one fetch per profile at a time', function () {
    /** A `fetch --watch` of this account, its output collected. */
    function watcher(acct: Account, out: string) {
      const child = spawn(process.execPath, ['--import', 'tsx', CLIENT_CLI, '--config', acct.config, '--gnupghome', acct.key.gnupghome, 'fetch', '--watch', '1', '--maildir', out], {
        cwd: ROOT,
        stdio: ['ignore', 'pipe', 'pipe'],
      });
      let stderr = '';
      child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
      const exited = new Promise<number | null>((resolve) => child.on('close', (code) => resolve(code)));
      return { child, exited, stderr: () => stderr };
    }
    const lockHeld = (acct: Account) => stat(`${acct.config}.lock`).then(() => true, () => false);
    async function until(what: string, ok: () => Promise<boolean>): Promise<void> {
      // Waiting for an outcome, not measuring time: mocha's timeout bounds it.
      while (!(await ok())) await new Promise((r) => setTimeout(r, 200));
    }

    it('a second run while a --watch runs says so, exits 8 and delivers nothing; every message arrives once', async function () {
      const acct = await signup();
      for (let i = 0; i < 5; i++) await send(acct, `twice${i}`);
      const out = path.join(work, 'once-only');
      const w = watcher(acct, out);
      try {
        await until('the watcher holds the lock', () => lockHeld(acct));
        // Second writers, as cron and a person at the terminal would be.
        const others = await Promise.all([1, 2, 3].map(() => acct.run(['fetch', '--maildir', out])));
        for (const r of others) {
          expect(r.code, r.stderr).to.equal(8);
          expect(r.stderr).to.match(/^kzymy-client: Another kzymy-client fetch is running with the profile .*: this one stops, so that no message is delivered twice\./);
          expectNoStack(r);
        }
        await until('all six delivered', async () => (await delivered(out)).length >= 6);
        w.child.kill('SIGTERM');
        expect(await w.exited, w.stderr()).to.equal(0);
      } finally {
        if (w.child.exitCode === null) w.child.kill('SIGKILL');
      }
      expect(await delivered(out)).to.have.length(6, 'the welcome and five messages, each once');
      expect(await waiting(acct)).to.equal(0);
      expect(await lockHeld(acct)).to.equal(false, 'a run that ends gives the lock back');
      const after = await acct.run(['fetch', '--maildir', out]);
      expect(after.code, after.stderr).to.equal(0);
    });

    it('a run killed with SIGKILL leaves a lock that the next run takes over', async function () {
      const acct = await signup();
      const out = path.join(work, 'after-crash');
      const w = watcher(acct, out);
      await until('the watcher holds the lock', () => lockHeld(acct));
      w.child.kill('SIGKILL');
      await w.exited;
      expect(await lockHeld(acct)).to.equal(true, 'the crashed run could not give it back');
      await send(acct, 'after-crash');
      // Until the lock is stale (ten seconds without a refresh) a run is turned away with 8.
      const r = await afterLock(() => acct.run(['fetch', '--maildir', out]));
      expect(r.code, r.stderr).to.equal(0);
      expect((await delivered(out)).length).to.be.at.least(1);
      expect(await waiting(acct)).to.equal(0);
    });
  });

  describe('through a SOCKS5 proxy standing in for tor', function () {
    it('asks the proxy for the onion name itself (socks5h: no local DNS) and works through it', async function () {
      const acct = await signup();
      const tor = await fakeTor(srv.webPort!);
      // The server takes logins at its onion name: give it one, as tor would.
      const hostname = path.join(srv.base, 'no-tor', 'hostname');
      await mkdir(path.dirname(hostname), { recursive: true });
      await writeFile(hostname, `${FAKE_ONION}\n`);
      // Waiting for an outcome (the server reads the file every few seconds): mocha's timeout bounds it.
      while ((await (await fetch(`${server}/api/v1/info`)).json() as { onion: string | null }).onion !== FAKE_ONION) {
        await new Promise((r) => setTimeout(r, 250));
      }
      try {
        const out = path.join(work, 'via-socks');
        const r = await acct.run([
          'fetch', '--server', `http://${FAKE_ONION}`, '--tor', '--proxy', `socks5h://127.0.0.1:${tor.port}`, '--maildir', out, '--decrypt',
        ]);
        expect(r.code, r.stderr).to.equal(0);
        expect((await delivered(out)).filter((f) => f.includes(Buffer.from('Welcome to kzymy')))).to.have.length(1);
        expect(tor.log.requests.length).to.be.greaterThan(0);
        for (const q of tor.log.requests) expect(q).to.deep.equal({ atyp: 3, host: FAKE_ONION, port: 80 });
      } finally {
        await tor.close();
        await rm(hostname, { force: true });
      }
    });
  });
});
