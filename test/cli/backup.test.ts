// `kzymy-server backup` while a real server runs and mail arrives over concurrent SMTP
// sessions, then `kzymy-server restore` into fresh folders and a server started on them:
// every user, key and alias is back, every message acknowledged before the backup began
// is there, each restored file decrypts with gpg, modes are 0700/0600. Restore refuses
// damaged, foreign, hostile and newer archives and non-empty targets, changing nothing.
import { expect } from 'chai';
import { createHash, randomBytes } from 'node:crypto';
import { chmod, lstat, mkdir, readdir, readFile, rename, rm, stat, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { Header, Pack, ReadEntry } from 'tar';
import { requireBinaries, tempDir } from '../helpers/env.js';
import { runServerCli, startServer, type RunningServer } from '../helpers/server.js';
import { gpgDecryptPgpMime, makeFreshGpgKey, requireGpg, type TestKey } from '../helpers/gpg.js';
import { marker, rawMessage } from '../helpers/mail.js';
import { sendRaw } from '../helpers/smtp-client.js';
import { mountTmpfs } from '../helpers/tmpfs.js';
import { openRegistry } from '../../src/registry/index.js';

interface Failed {
  code: number;
  stderr: string;
}

/** Runs the CLI; resolves with the exit code and stderr when it fails. */
async function cliFails(configFile: string, ...args: string[]): Promise<Failed> {
  try {
    await runServerCli(configFile, ...args);
  } catch (err) {
    const e = err as { code?: number; stderr?: string };
    return { code: e.code ?? -1, stderr: e.stderr ?? '' };
  }
  throw new Error(`kzymy-server ${args.join(' ')} succeeded`);
}

/** Every path under dir with its mode, for "nothing changed" and mode checks. */
async function tree(dir: string): Promise<Map<string, { mode: number; file: boolean }>> {
  const out = new Map<string, { mode: number; file: boolean }>();
  const walk = async (rel: string): Promise<void> => {
    let names: string[];
    try {
      names = await readdir(path.join(dir, rel));
    } catch {
      return;
    }
    for (const n of names) {
      const r = rel ? `${rel}/${n}` : n;
      const st = await lstat(path.join(dir, r));
      out.set(r, { mode: st.mode & 0o777, file: st.isFile() });
      if (st.isDirectory()) await walk(r);
    }
  };
  await walk('');
  return out;
}

/** A config file for a server on `base` (the layout startServer uses), onion keys in base/hs. */
async function configFor(base: string, extra: Record<string, unknown> = {}): Promise<string> {
  const file = path.join(base, 'config.json');
  await writeFile(
    file,
    JSON.stringify({
      domain: 'kzymy.test',
      dataDir: path.join(base, 'data'),
      maildirRoot: path.join(base, 'maildirs'),
      smtp: { host: '127.0.0.1', port: 0 },
      web: { host: '127.0.0.1', port: 0 },
      tor: { manage: false, hostnameFile: path.join(base, 'hs', 'hostname') },
      limits: { minFreeBytes: 0 },
      ...extra,
    }),
  );
  return file;
}

/** A tar archive made with node-tar from [name, contents] pairs. */
async function tarOf(entries: Array<[string, Buffer]>): Promise<Buffer> {
  const pack = new Pack({ portable: true });
  const chunks: Buffer[] = [];
  pack.on('data', (c: Buffer) => chunks.push(c));
  const ended = new Promise<void>((resolve) => pack.on('end', () => resolve()));
  for (const [name, data] of entries) {
    const e = new ReadEntry(new Header({ path: name, size: data.length, mode: 0o600, type: 'File', mtime: new Date() }));
    pack.add(e);
    e.end(data);
  }
  pack.end();
  await ended;
  return Buffer.concat(chunks);
}

const sha = (b: Buffer) => createHash('sha256').update(b).digest('hex');
const baseOf = (n: string) => n.split(':')[0]!;

describe('kzymy-server backup and restore', function () {
  this.timeout(600_000);
  let srv: RunningServer;
  let work: { dir: string; cleanup: () => Promise<void> };
  const keys = new Map<string, TestKey>();
  let users: string[] = [];
  let archive: string;
  let restoredBase: string;
  let restoredConfig: string;
  /** Base names of the files in new/ and cur/ before the backup began, per user. */
  const namesBefore = new Map<string, Set<string>>();
  const markersBefore = new Map<string, Set<string>>();
  const hsName = 'abcdefghijklmnopqrstuvwxyz234567abcdefghijklmnopqrstuvw.onion\n';

  before(async function () {
    requireGpg(this);
    requireBinaries(this, 'openssl');
    work = await tempDir('kzymy-backup-');
    srv = await startServer({ config: { tor: { manage: false, hostnameFile: path.join(work.dir, 'src-hs', 'hostname') } } });
    // The onion service's key files as tor lays them out. Their bytes are random, not made
    // by tor: backup and restore copy them and never read them.
    await mkdir(path.join(work.dir, 'src-hs'), { mode: 0o700 });
    await writeFile(path.join(work.dir, 'src-hs', 'hs_ed25519_secret_key'), randomBytes(96), { mode: 0o600 });
    await writeFile(path.join(work.dir, 'src-hs', 'hs_ed25519_public_key'), randomBytes(64), { mode: 0o600 });
    await writeFile(path.join(work.dir, 'src-hs', 'hostname'), hsName, { mode: 0o600 });

    for (let i = 0; i < 4; i++) {
      const key = await makeFreshGpgKey('ed25519');
      const f = path.join(work.dir, `k${i}.asc`);
      await writeFile(f, key.publicArmored);
      const u = (await srv.cli('users', 'add', '--key', f)).trim();
      keys.set(u, key);
      users.push(u);
    }
    users = users.sort();
    // Aliases, a block and catch-all off, written as a second writer beside the server.
    const reg = await openRegistry({ dataDir: srv.dataDir });
    await reg.addAlias(users[0]!, 'shop');
    await reg.blockAlias(users[1]!, 'spam');
    await reg.setCatchAll(users[2]!, false);
    await reg.addAlias(users[2]!, 'only');
    await reg.close();
  });

  after(async () => {
    await srv?.cleanup();
    await work?.cleanup();
  });

  const rcptOf = (u: string) => (u === users[2] ? `only@${u}.kzymy.test` : `x@${u}.kzymy.test`);

  async function sendOne(u: string): Promise<string | null> {
    const mark = marker();
    const r = await sendRaw(srv.smtpPort, [rcptOf(u)], rawMessage(mark, { bodyBytes: 4000 + Math.floor(Math.random() * 60_000) }));
    return r.reply.startsWith('250') ? mark : null;
  }

  it('takes a consistent backup while mail arrives over concurrent sessions', async function () {
    for (const u of users) {
      markersBefore.set(u, new Set());
      for (let i = 0; i < 6; i++) {
        const m = await sendOne(u);
        expect(m, 'acknowledged before the backup').to.be.a('string');
        markersBefore.get(u)!.add(m!);
      }
    }
    for (const u of users) {
      const names = new Set<string>();
      for (const sub of ['new', 'cur']) for (const n of await readdir(path.join(srv.maildirRoot, u, sub))) names.add(baseOf(n));
      expect(names.size).to.equal(6);
      namesBefore.set(u, names);
    }
    // A client reading mail: moves user 3's messages new/ -> cur/ while the backup runs.
    let running = true;
    let sentDuring = 0;
    const senders = Array.from({ length: 6 }, async (_v, i) => {
      while (running) if (await sendOne(users[i % users.length]!)) sentDuring++;
    });
    const mover = (async () => {
      const dir = path.join(srv.maildirRoot, users[3]!);
      while (running) {
        for (const n of await readdir(path.join(dir, 'new'))) {
          await rename(path.join(dir, 'new', n), path.join(dir, 'cur', `${n}:2,S`)).catch(() => undefined);
        }
        await new Promise((r) => setTimeout(r, 5));
      }
    })();
    archive = path.join(work.dir, 'kzymy.tar.gz');
    let out: string;
    try {
      out = await srv.cli('backup', archive);
    } finally {
      running = false;
      await Promise.all([...senders, mover]);
    }
    expect(sentDuring, 'mail kept arriving').to.be.greaterThan(0);
    expect(out).to.match(/^registry\s+4 users, 4 keys$/m);
    expect(out).to.match(/^tls\s+key and certificate included$/m);
    expect(out).to.match(/^onion keys\s+included/m);
    expect(out).to.match(/secret key/);
    expect((await stat(archive)).mode & 0o777).to.equal(0o600);
    expect(await readdir(work.dir)).to.not.include('kzymy.tar.gz.tmp');
  });

  it('restores onto fresh folders: every user, key, alias and message is back, complete', async function () {
    restoredBase = path.join(work.dir, 'restored');
    await mkdir(restoredBase);
    restoredConfig = await configFor(restoredBase);
    const { stdout } = await runServerCli(restoredConfig, 'restore', archive);
    expect(stdout).to.match(/^registry\s+.*: 4 users$/m);

    // A second restore onto the now full target is refused, and changes nothing.
    const snap = await tree(restoredBase);
    const again = await cliFails(restoredConfig, 'restore', archive);
    expect(again.code).to.equal(1);
    expect(again.stderr.trim().split('\n')).to.have.length(1);
    expect(again.stderr).to.match(/already holds/);
    expect(await tree(restoredBase)).to.deep.equal(snap);

    // Modes: folders 0700, files 0600, nothing in tmp/.
    for (const sub of ['data/registry', 'data/tls', 'maildirs', 'hs']) {
      const t = await tree(path.join(restoredBase, sub));
      expect(t.size, sub).to.be.greaterThan(0);
      for (const [p, { mode, file }] of t) expect(mode, `${sub}/${p}`).to.equal(file ? 0o600 : 0o700);
      expect((await stat(path.join(restoredBase, sub))).mode & 0o777).to.equal(0o700);
    }
    for (const u of users) expect(await readdir(path.join(restoredBase, 'maildirs', u, 'tmp'))).to.deep.equal([]);
    // The onion keys and the TLS key, byte for byte.
    for (const f of ['hs_ed25519_secret_key', 'hs_ed25519_public_key', 'hostname']) {
      expect(sha(await readFile(path.join(restoredBase, 'hs', f)))).to.equal(sha(await readFile(path.join(work.dir, 'src-hs', f))));
    }
    expect(sha(await readFile(path.join(restoredBase, 'data/tls/key.pem')))).to.equal(sha(await readFile(path.join(srv.dataDir, 'tls/key.pem'))));

    // The registry: same users, keys, aliases, blocks, catch-all.
    const a = await openRegistry({ dataDir: srv.dataDir });
    const b = await openRegistry({ dataDir: path.join(restoredBase, 'data') });
    try {
      expect(b.list().map((u) => u.username).sort()).to.deep.equal(users);
      for (const u of users) {
        expect(b.get(u)).to.deep.equal(a.get(u));
        expect(await b.publicKey(b.get(u)!)).to.equal(await a.publicKey(a.get(u)!));
      }
    } finally {
      await a.close();
      await b.close();
    }

    // Every message acknowledged before the backup began, each file complete (gpg decrypts it).
    for (const u of users) {
      const files: string[] = [];
      for (const sub of ['new', 'cur']) for (const n of await readdir(path.join(restoredBase, 'maildirs', u, sub))) files.push(path.join(restoredBase, 'maildirs', u, sub, n));
      const bases = new Set(files.map((f) => baseOf(path.basename(f))));
      expect(bases.size, `${u}: no message twice`).to.equal(files.length);
      for (const n of namesBefore.get(u)!) expect(bases.has(n), `${u}: ${n}`).to.equal(true);
      const marks = new Set<string>();
      for (const f of files) {
        const text = (await gpgDecryptPgpMime(keys.get(u)!.gnupghome, await readFile(f))).toString('utf8');
        const m = /KZYMYMARK[0-9A-F]{16}/.exec(text);
        expect(m, `${f} decrypts to a message`).to.not.equal(null);
        marks.add(m![0]);
      }
      for (const m of markersBefore.get(u)!) expect(marks.has(m), `${u}: marker ${m}`).to.equal(true);
    }
  });

  it('starts a server on the restored folders that serves every user', async function () {
    const restored = await startServer({ base: restoredBase, config: { tor: { manage: false, hostnameFile: path.join(restoredBase, 'hs', 'hostname') } } });
    try {
      const listed = JSON.parse(await restored.cli('users', 'list', '--json')) as Array<{ username: string; waiting: number }>;
      expect(listed.map((u) => u.username).sort()).to.deep.equal(users);
      for (const u of listed) expect(u.waiting, u.username).to.be.at.least(6);
      const show = await restored.cli('users', 'show', users[0]!);
      expect(show).to.match(/^aliases\s+shop$/m);
      for (const u of users) {
        const r = await sendRaw(restored.smtpPort, [rcptOf(u)], rawMessage(marker()));
        expect(r.reply, u).to.match(/^250 /);
      }
      const blocked = await sendRaw(restored.smtpPort, [`spam@${users[1]}.kzymy.test`], rawMessage(marker()));
      expect(blocked.reply).to.match(/^550 /);
      const notAlias = await sendRaw(restored.smtpPort, [`x@${users[2]}.kzymy.test`], rawMessage(marker()));
      expect(notAlias.reply).to.match(/^550 /);
    } finally {
      await restored.stop();
    }
  });

  it('has --help with an example on both commands', async function () {
    for (const cmd of ['backup', 'restore']) {
      const { stdout } = await runServerCli(srv.configFile, cmd, '--help');
      expect(stdout, cmd).to.match(/^Usage: kzymy-server /);
      expect(stdout, cmd).to.match(/Example/);
    }
  });

  it('as root: restore --owner gives the files to that user; a backup by root leaves no root-owned file in the registry', async function () {
    if (process.geteuid?.() !== 0) this.skip();
    const nobody = { uid: 65534, gid: 65534 };
    // The kzymy user must reach its folders: the temporary folder is root's 0700.
    await chmod(work.dir, 0o711);
    const target = path.join(work.dir, 'owned');
    await mkdir(target, { mode: 0o711 });
    const cfg = await configFor(target);
    const { stdout } = await runServerCli(cfg, 'restore', '--owner', '65534:65534', '--onion-owner', '65534', archive);
    expect(stdout).to.match(/^owner\s+65534:65534/m);
    for (const sub of ['data', 'maildirs', 'hs']) {
      for (const [p] of await tree(path.join(target, sub))) {
        const st = await lstat(path.join(target, sub, p));
        expect({ uid: st.uid, gid: st.gid }, `${sub}/${p}`).to.deep.equal(nobody);
      }
    }
    // The journal a reader opens is made when missing: made by root, the server could not append.
    await rm(path.join(target, 'data', 'registry', 'journal.1'));
    await runServerCli(cfg, 'backup', path.join(work.dir, 'by-root.tar'));
    const j = await lstat(path.join(target, 'data', 'registry', 'journal.1'));
    expect({ uid: j.uid, gid: j.gid }).to.deep.equal(nobody);
    expect((await stat(path.join(work.dir, 'by-root.tar'))).uid).to.equal(0);
  });

  describe('refusals: one sentence, exit 1, nothing changed', () => {
    let target: string;
    let cfg: string;
    beforeEach(async () => {
      target = path.join(work.dir, `t-${randomBytes(4).toString('hex')}`);
      await mkdir(target);
      cfg = await configFor(target);
    });

    async function refused(file: string, pattern: RegExp): Promise<void> {
      const before = await tree(target);
      const r = await cliFails(cfg, 'restore', file);
      expect(r.code).to.equal(1);
      const lines = r.stderr.trim().split('\n');
      expect(lines, r.stderr).to.have.length(1);
      expect(lines[0]).to.match(pattern);
      expect(await tree(target)).to.deep.equal(before);
    }

    it('refuses a damaged archive (bytes flipped inside a message, in the gzip stream, cut short)', async function () {
      const plain = path.join(work.dir, 'plain.tar');
      await srv.cli('backup', plain);
      const bytes = await readFile(plain);
      // Flip bytes in the middle of the last message entry (well inside the archive).
      const flipped = Buffer.from(bytes);
      const at = flipped.lastIndexOf(Buffer.from('-----END PGP MESSAGE-----')) - 40;
      for (let i = 0; i < 8; i++) flipped[at + i] ^= 0xff;
      await writeFile(path.join(work.dir, 'flipped.tar'), flipped);
      await refused(path.join(work.dir, 'flipped.tar'), /is damaged \(maildirs\/.* does not match its checksum\)/);

      const gz = Buffer.from(await readFile(archive));
      for (let i = 0; i < 16; i++) gz[Math.floor(gz.length / 2) + i] ^= 0xff;
      await writeFile(path.join(work.dir, 'flipped.tar.gz'), gz);
      await refused(path.join(work.dir, 'flipped.tar.gz'), /is damaged/);

      await writeFile(path.join(work.dir, 'short.tar'), bytes.subarray(0, Math.floor(bytes.length * 0.6)));
      await refused(path.join(work.dir, 'short.tar'), /is damaged/);
    });

    it('refuses a file that is not an archive, and a tar that is not a kzymy backup', async function () {
      await writeFile(path.join(work.dir, 'notes.txt'), 'these are not the files you are looking for\n'.repeat(40));
      await refused(path.join(work.dir, 'notes.txt'), /is not a tar archive/);
      await writeFile(path.join(work.dir, 'other.tar'), await tarOf([['etc/passwd', Buffer.from('root:x:0:0::/root:/bin/sh\n')]]));
      await refused(path.join(work.dir, 'other.tar'), /is not a kzymy backup/);
      await refused(path.join(work.dir, 'missing.tar'), /Cannot read the backup .*: it does not exist\./);
    });

    it('refuses a hostile archive whose entries leave the target, writing nothing anywhere', async function () {
      const head = Buffer.from(JSON.stringify({ format: 1 }));
      const evil = Buffer.from('evil\n');
      const hostile = await tarOf([
        ['kzymy-backup.json', head],
        ['../escaped', evil],
        ['maildirs/../../escaped2', evil],
        ['data/registry/snapshot.json', Buffer.from('{"version":2,"generation":1,"users":[]}')],
        ['manifest.json', Buffer.from(JSON.stringify({ format: 1, files: { 'kzymy-backup.json': { size: head.length, sha256: sha(head) } } }))],
      ]);
      await writeFile(path.join(work.dir, 'hostile.tar'), hostile);
      const outside = await tree(work.dir);
      await refused(path.join(work.dir, 'hostile.tar'), /is damaged \(2 entries are not part of a kzymy backup\)/);
      const after = await tree(work.dir);
      expect([...after.keys()].filter((k) => !outside.has(k) && !k.startsWith(path.basename(target)))).to.deep.equal([]);
    });

    it('refuses a backup of a newer format', async function () {
      const head = Buffer.from(JSON.stringify({ format: 99 }));
      await writeFile(path.join(work.dir, 'newer.tar'), await tarOf([['kzymy-backup.json', head], ['manifest.json', Buffer.from('{}')]]));
      await refused(path.join(work.dir, 'newer.tar'), /format 99, newer than this kzymy-server reads/);
    });

    it('refuses while a server listens on the configured ports', async function () {
      cfg = await configFor(target, { smtp: { host: '127.0.0.1', port: srv.smtpPort } });
      await refused(archive, /listens on the SMTP port 127\.0\.0\.1:\d+ .*stop it/);
    });

    it('backup into a folder that does not exist fails with a sentence and leaves nothing', async function () {
      const r = await cliFails(srv.configFile, 'backup', path.join(work.dir, 'no-such-folder', 'b.tar'));
      expect(r.code).to.equal(1);
      expect(r.stderr.trim().split('\n')).to.have.length(1);
      expect(r.stderr).to.match(/Cannot write .*b\.tar\.tmp: it does not exist; no backup was written\./);
    });

    it('a full disk (a small tmpfs): backup and restore each fail with a sentence and leave nothing', async function () {
      const mnt = path.join(work.dir, 'full');
      await mkdir(mnt);
      const full = await mountTmpfs(this, '256k', { at: mnt });
      try {
        const r = await cliFails(srv.configFile, 'backup', path.join(mnt, 'b.tar'));
        expect(r.code).to.equal(1);
        expect(r.stderr.trim().split('\n')).to.have.length(1);
        expect(r.stderr).to.match(/The disk holding .*b\.tar is full: free some space or choose another place; no backup was written\./);
        expect(await readdir(mnt)).to.deep.equal([]);

        target = mnt;
        cfg = await configFor(path.join(work.dir, 'full-config'), { dataDir: path.join(mnt, 'data'), maildirRoot: path.join(mnt, 'maildirs') }).catch(async () => {
          await mkdir(path.join(work.dir, 'full-config'));
          return configFor(path.join(work.dir, 'full-config'), { dataDir: path.join(mnt, 'data'), maildirRoot: path.join(mnt, 'maildirs') });
        });
        await refused(archive, /The disk holding .* is full: free some space or choose another place; nothing was restored\./);
      } finally {
        await full.unmount();
      }
    });

    it('--no-onion-keys leaves the onion keys out and says so', async function () {
      const file = path.join(work.dir, 'no-onion.tar');
      const out = await srv.cli('backup', '--no-onion-keys', file);
      expect(out).to.match(/^onion keys\s+not included \(--no-onion-keys\)$/m);
      expect((await readFile(file)).includes(Buffer.from('onion/hs_ed25519_secret_key'))).to.equal(false);
      const { stdout } = await runServerCli(cfg, 'restore', file);
      expect(stdout).to.match(/^onion keys\s+not in the backup/m);
    });
  });
});
