// `kzymy-server start` and the registry on disk: it refuses to start (exit code, one
// sentence that names the place and what to do, no stack trace) rather than run on a
// registry that is missing or damaged, and it converts a kzymy 0.1 registry.json.
import { expect } from 'chai';
import { spawn } from 'node:child_process';
import { mkdir, readFile, readdir, stat, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { requireBinaries, tempDir } from '../helpers/env.js';
import { ROOT, runServerCli, serverCommand, startServer } from '../helpers/server.js';
import { makeGpgKey, requireGpg } from '../helpers/gpg.js';
import { swaks } from '../helpers/swaks.js';

interface Exit {
  code: number | null;
  stdout: string;
  stderr: string;
}

/** Runs `kzymy-server start`, which must end by itself: a server that starts anyway is killed after 30 s. */
function start(configFile: string): Promise<Exit> {
  const c = serverCommand('start', '--config', configFile);
  return new Promise((resolve, reject) => {
    const child = spawn(c.cmd, c.args, { cwd: ROOT, env: { ...process.env, KZYMY_TOR_MANAGE: '0' }, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    const timer = setTimeout(() => child.kill('SIGKILL'), 30_000);
    child.on('error', reject);
    child.on('close', (code) => {
      clearTimeout(timer);
      resolve({ code, stdout, stderr });
    });
  });
}

/** One sentence-led line on stderr, nothing on stdout, no stack trace. */
function expectRefusal(r: Exit): string {
  expect(r.code, `exit code; output:\n${r.stdout}${r.stderr}`).to.be.a('number').and.not.equal(0);
  expect(r.stdout + r.stderr).not.to.match(/^\s+at /m);
  expect(r.stdout, 'a refusal before listening logs nothing').to.equal('');
  expect(r.stderr).to.match(/^kzymy-server: [A-Z][^\n]*\.\n$/);
  return r.stderr;
}

const exists = (p: string) =>
  stat(p).then(
    () => true,
    () => false,
  );

describe('kzymy-server start and the registry on disk', function () {
  let dir: string;
  let cleanup: () => Promise<void>;
  let n = 0;

  before(async function () {
    requireGpg(this);
    requireBinaries(this, 'swaks', 'openssl');
    ({ dir, cleanup } = await tempDir('kzymy-regstart-'));
  });
  after(async () => cleanup?.());

  /** A fresh base folder with a configuration file; the data dir is made but left empty. */
  async function setup(): Promise<{ base: string; configFile: string; dataDir: string; maildirRoot: string }> {
    const base = path.join(dir, `s${++n}`);
    const dataDir = path.join(base, 'data');
    const maildirRoot = path.join(base, 'maildirs');
    await mkdir(dataDir, { recursive: true });
    const configFile = path.join(base, 'config.json');
    await writeFile(
      configFile,
      JSON.stringify({
        domain: 'start.test',
        dataDir,
        maildirRoot,
        smtp: { host: '127.0.0.1', port: 0 },
        web: { host: '127.0.0.1', port: 0 },
        tor: { manage: false, hostnameFile: path.join(base, 'no-tor', 'hostname') },
        limits: { minFreeBytes: 0 },
      }),
    );
    return { base, configFile, dataDir, maildirRoot };
  }

  it('refuses to start without a registry while the Maildirs hold a user, and creates nothing', async function () {
    const s = await setup();
    const user = 'abcdefgh1234';
    for (const sub of ['cur', 'new', 'tmp']) await mkdir(path.join(s.maildirRoot, user, sub), { recursive: true });
    await writeFile(path.join(s.maildirRoot, user, 'new', '1700000000.M1P1.host'), 'an encrypted message\n');
    const before = await readdir(s.dataDir);
    const text = expectRefusal(await start(s.configFile));
    expect(text).to.include(s.dataDir);
    expect(text).to.include(s.maildirRoot);
    expect(text).to.match(/restore/i);
    expect(await exists(path.join(s.dataDir, 'registry')), 'a registry folder was created').to.equal(false);
    expect(await readdir(s.dataDir)).to.deep.equal(before);
    // The user's mail is untouched.
    expect(await readdir(path.join(s.maildirRoot, user, 'new'))).to.deep.equal(['1700000000.M1P1.host']);
  });

  it('refuses to start on a snapshot.json replaced by garbage, naming the file', async function () {
    const s = await setup();
    await runServerCli(s.configFile, 'init');
    const snapshot = path.join(s.dataDir, 'registry', 'snapshot.json');
    expect(await exists(snapshot)).to.equal(true);
    await writeFile(snapshot, '\u0000\u0001garbage{{{ not json');
    const text = expectRefusal(await start(s.configFile));
    expect(text).to.include(snapshot);
    expect(text).to.match(/damaged/);
    expect(text).to.match(/restore .*backup/i);
    // Left as it was for the operator.
    expect(await readFile(snapshot, 'utf8')).to.equal('\u0000\u0001garbage{{{ not json');
  });

  it('refuses to start on a legacy registry.json holding null, naming the file', async function () {
    const s = await setup();
    const legacy = path.join(s.dataDir, 'registry.json');
    await writeFile(legacy, 'null\n');
    const text = expectRefusal(await start(s.configFile));
    expect(text).to.include(legacy);
    expect(text).to.match(/restore .*backup/i);
    expect(await exists(path.join(s.dataDir, 'registry')), 'a registry folder was created').to.equal(false);
    expect(await readFile(legacy, 'utf8')).to.equal('null\n');
  });

  it('converts a kzymy 0.1 registry.json with one user at start, and accepts mail for that user', async function () {
    const s = await setup();
    const key = await makeGpgKey('ed25519');
    const username = 'legacyuser01';
    const legacy = path.join(s.dataDir, 'registry.json');
    // kzymy 0.1's registry.json: { version: 1, users: [User with its armored publicKey] }.
    const v01 = {
      version: 1,
      users: [
        {
          username,
          fingerprint: key.fingerprint,
          publicKey: key.publicArmored,
          keyExpiresAt: null,
          createdAt: '2026-01-02T03:04:05.000Z',
          disabled: false,
          catchAll: false,
          aliases: ['shop'],
          blocked: [],
          notices: [],
        },
      ],
    };
    await writeFile(legacy, JSON.stringify(v01, null, 2) + '\n', { mode: 0o600 });
    for (const sub of ['cur', 'new', 'tmp']) await mkdir(path.join(s.maildirRoot, username, sub), { recursive: true });
    const srv = await startServer({ base: s.base, domain: 'start.test' });
    try {
      const ok = await swaks({ port: srv.smtpPort, to: `shop@${username}.start.test`, extra: ['--quit-after', 'RCPT'] });
      expect(ok.last).to.match(/^250 /);
      // Its policy came along: catch-all was off, so only the alias arrives.
      const other = await swaks({ port: srv.smtpPort, to: `other@${username}.start.test`, extra: ['--quit-after', 'RCPT'] });
      expect(other.last).to.match(/^550 5\.1\.1/);
      expect(await exists(path.join(s.dataDir, 'registry', 'snapshot.json'))).to.equal(true);
      expect(await exists(legacy), 'registry.json is not read again').to.equal(false);
      const shown = await srv.cli('users', 'show', username);
      expect(shown).to.include(key.fingerprint);
      expect(shown).to.match(/^aliases\s+shop$/m);
    } finally {
      await srv.stop();
    }
    // And it starts again on the converted registry.
    const again = await startServer({ base: s.base, domain: 'start.test' });
    try {
      expect((await swaks({ port: again.smtpPort, to: `shop@${username}.start.test`, extra: ['--quit-after', 'RCPT'] })).last).to.match(/^250 /);
    } finally {
      await again.stop();
    }
  });
});
