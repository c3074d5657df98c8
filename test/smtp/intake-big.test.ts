// Large messages on the streamed path: a sender that goes away in the middle of a big DATA leaves
// nothing behind (real server, raw socket), and one 50 MiB message keeps a child process's peak
// RSS bounded, for one and for two recipients (each copy encrypted while the data arrives).
import { expect } from 'chai';
import { execFile } from 'node:child_process';
import { mkdir, readdir, readFile, readlink, unlink, writeFile } from 'node:fs/promises';
import net from 'node:net';
import path from 'node:path';
import { promisify } from 'node:util';
import { requireBinaries, tempDir } from '../helpers/env.js';
import { gpgDecryptPgpMime, makeGpgKey, type TestKey } from '../helpers/gpg.js';
import { marker, newFiles, rawMessage } from '../helpers/mail.js';
import { startServer, type RunningServer } from '../helpers/server.js';
import { sendRaw } from '../helpers/smtp-client.js';

const exec = promisify(execFile);
const MiB = 1024 * 1024;

async function filesIn(dir: string): Promise<string[]> {
  return readdir(dir).catch(() => []);
}

/** Everything in the users' new/, cur/ and tmp/, and the server's open files under the Maildir root. */
async function leftovers(srv: RunningServer, users: string[]): Promise<string[]> {
  const out: string[] = [];
  for (const u of users) for (const sub of ['new', 'cur', 'tmp']) for (const f of await filesIn(path.join(srv.maildirRoot, u, sub))) out.push(`${u}/${sub}/${f}`);
  for (const fd of await filesIn(`/proc/${srv.child.pid}/fd`)) {
    const target = await readlink(`/proc/${srv.child.pid}/fd/${fd}`).catch(() => '');
    if (target.startsWith(srv.maildirRoot)) out.push(`open: ${target}`);
  }
  return out;
}

/** EHLO, MAIL, RCPT for each, DATA, then `bytes` of the message, then the connection is cut. */
async function sendAndVanish(port: number, rcpts: string[], msg: Buffer, bytes: number, beforeCut: () => Promise<void>): Promise<void> {
  const sock = net.connect(port, '127.0.0.1');
  sock.on('error', () => undefined);
  let buf = '';
  const waitFor = (code: string) =>
    new Promise<void>((resolve, reject) => {
      const check = () => {
        const lines = buf.split('\r\n');
        const i = lines.findIndex((l) => l.startsWith(`${code} `));
        if (i >= 0) {
          buf = lines.slice(i + 1).join('\r\n');
          sock.off('data', onData);
          resolve();
        } else if (/^[45]\d\d /m.test(buf)) reject(new Error(`refused: ${buf}`));
      };
      const onData = (d: Buffer) => {
        buf += d.toString('latin1');
        check();
      };
      sock.on('data', onData);
      check();
    });
  await waitFor('220');
  sock.write('EHLO client.example.org\r\n');
  await waitFor('250');
  sock.write('MAIL FROM:<sender@example.org>\r\n');
  await waitFor('250');
  for (const r of rcpts) {
    sock.write(`RCPT TO:<${r}>\r\n`);
    await waitFor('250');
  }
  sock.write('DATA\r\n');
  await waitFor('354');
  for (let o = 0; o < bytes; o += 64 * 1024) {
    if (!sock.write(msg.subarray(o, Math.min(bytes, o + 64 * 1024)))) await new Promise((r) => sock.once('drain', r));
  }
  // Give the server time to start the copies, then go away without the final dot.
  await new Promise((r) => setTimeout(r, 300));
  await beforeCut();
  sock.destroy();
}

async function addUser(srv: RunningServer, key: TestKey): Promise<string> {
  const f = path.join(srv.base, `${key.fingerprint}.asc`);
  await writeFile(f, key.publicArmored);
  return (await srv.cli('users', 'add', '--key', f)).trim();
}

describe('SMTP intake of large messages (streamed path)', function () {
  describe('a sender that goes away mid-DATA (real server)', function () {
    let srv: RunningServer;
    let users: string[];
    let keys: TestKey[];
    before(async function () {
      requireBinaries(this, 'gpg');
      srv = await startServer({ config: { limits: { maxMessageBytes: 64 * MiB, quotaBytes: 512 * MiB } } });
      keys = [await makeGpgKey('ed25519'), await makeGpgKey('rsa2048')];
      users = [];
      for (const k of keys) users.push(await addUser(srv, k));
    });
    after(async () => srv?.cleanup());

    for (const count of [1, 2]) {
      it(`leaves no file, no spool and no open descriptor (${count} recipient${count > 1 ? 's' : ''}), and the next message is stored`, async function () {
        this.timeout(120_000);
        const msg = rawMessage(marker(), { bodyBytes: 16 * MiB });
        const rcpts = users.slice(0, count).map((u) => `big@${u}.${srv.domain}`);
        let during: string[] = [];
        await sendAndVanish(srv.smtpPort, rcpts, msg, 12 * MiB, async () => void (during = await leftovers(srv, users)));
        // The copies were being written when the sender went away (files in tmp/, open).
        expect(during.filter((f) => /^[^/]+\/tmp\//.test(f)), 'copies in tmp/ before the cut').to.have.length.of.at.least(count);
        // The server notices the close, stops the copies and removes them: wait until it has.
        const deadline = Date.now() + 30_000;
        let left = await leftovers(srv, users);
        while (left.length > 0 && Date.now() < deadline) {
          await new Promise((r) => setTimeout(r, 100));
          left = await leftovers(srv, users);
        }
        expect(left, 'files or descriptors left after the sender went away').to.deep.equal([]);
        // Still serving: the same message in full is stored once per recipient and decrypts.
        const r = await sendRaw(srv.smtpPort, rcpts, msg);
        expect(r.reply).to.match(/^250 /);
        for (let i = 0; i < count; i++) {
          const files = await newFiles(srv.maildirRoot, users[i]!);
          expect(files).to.have.length(1);
          const plain = await gpgDecryptPgpMime(keys[i]!.gnupghome, await readFile(files[0]!));
          expect(plain.subarray(plain.length - msg.length).equals(msg)).to.equal(true);
          for (const f of files) await unlink(f);
        }
      });
    }
  });

  describe('peak memory of one 50 MiB message (child process, VmHWM)', function () {
    let key: TestKey;
    let dir: { dir: string; cleanup: () => Promise<void> };
    before(async function () {
      requireBinaries(this, 'gpg');
      key = await makeGpgKey('ed25519');
      dir = await tempDir('kzymy-bigmem-');
      await mkdir(path.join(dir.dir, 'maildirs'), { mode: 0o700 });
      await writeFile(path.join(dir.dir, 'key.asc'), key.publicArmored);
    });
    after(async () => dir?.cleanup());

    for (const users of [['m1'], ['m2', 'm3']]) {
      it(`grows the peak RSS by less than 64 MiB, ${users.length} recipient${users.length > 1 ? 's' : ''}`, async function () {
        this.timeout(300_000);
        const child = path.join(import.meta.dirname, 'fixtures', 'big-memory-child.ts');
        const { stdout } = await exec(process.execPath, ['--import', 'tsx', child, dir.dir, path.join(dir.dir, 'key.asc'), key.fingerprint, '50', users.join(',')], {
          cwd: path.resolve(import.meta.dirname, '..', '..'),
          maxBuffer: 1024 * 1024,
        });
        const r = JSON.parse(stdout.trim().split('\n').pop()!) as { baseKb: number; peakKb: number; stored: number; mode: string };
        console.log(`      RSS before ${Math.round(r.baseKb / 1024)} MiB, peak ${Math.round(r.peakKb / 1024)} MiB`);
        expect(r.stored).to.equal(users.length);
        expect(r.mode).to.equal('stream');
        // Holding the message would add 50 MiB of plaintext and 68 MiB of armor per copy.
        expect((r.peakKb - r.baseKb) / 1024, 'peak RSS growth, MiB').to.be.below(64);
        for (const u of users) {
          const files = await newFiles(path.join(dir.dir, 'maildirs'), u);
          expect(files, `${u}'s copy`).to.have.length(2); // the warm-up and the 50 MiB message
        }
      });
    }
  });
});
