// kzymy-server's command line as the operator uses it: real processes, real files.
import { expect } from 'chai';
import { execFile } from 'node:child_process';
import net from 'node:net';
import { readFile, writeFile, readdir, utimes, rename } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { requireBinaries, tempDir } from '../helpers/env.js';
import { serverCommand, ROOT, startServer } from '../helpers/server.js';
import { BAD_GPG_KEY_KINDS, makeGpgKey, makeSqKey } from '../helpers/gpg.js';
import { filesContaining } from '../helpers/mail.js';
import { sendRaw } from '../helpers/smtp-client.js';
import { rawMessage, marker } from '../helpers/mail.js';

interface Result {
  code: number;
  stdout: string;
  stderr: string;
}

function cli(args: string[], env: Record<string, string> = {}): Promise<Result> {
  const c = serverCommand(...args);
  return new Promise((resolve) => {
    execFile(c.cmd, c.args, { cwd: ROOT, env: { ...process.env, KZYMY_TOR_MANAGE: '0', ...env } }, (err, stdout, stderr) => {
      resolve({ code: err ? Number((err as { code?: number }).code ?? 1) : 0, stdout, stderr });
    });
  });
}

describe('kzymy-server command line', function () {
  let dir: string;
  let cleanup: () => Promise<void>;
  let cfg: string;

  before(async function () {
    requireBinaries(this, 'gpg', 'openssl');
    ({ dir, cleanup } = await tempDir('kzymy-cli-'));
    cfg = path.join(dir, 'config.json');
    await writeFile(
      cfg,
      JSON.stringify({ domain: 'cli.test', dataDir: path.join(dir, 'data'), maildirRoot: path.join(dir, 'maildirs'), tor: { manage: false, hostnameFile: path.join(dir, 'hs', 'hostname') }, limits: { minFreeBytes: 0 } }),
    );
  });
  after(async () => cleanup?.());

  it('has --help on every command', async function () {
    for (const args of [[], ['start'], ['init'], ['check'], ['users'], ['users', 'list'], ['users', 'show'], ['users', 'add'], ['users', 'disable'], ['users', 'enable'], ['users', 'delete'], ['purge'], ['stats'], ['status'], ['dns'], ['backup'], ['restore']]) {
      const r = await cli([...args, '--help']);
      expect(r.code, args.join(' ')).to.equal(0);
      expect(r.stdout, args.join(' ')).to.match(/^Usage: kzymy-server/);
    }
  });

  it('init makes folders and a certificate, and says what it made; check passes after it', async function () {
    const r = await cli(['init', '--config', cfg]);
    expect(r.code, r.stderr).to.equal(0);
    expect(r.stdout).to.match(/certificate .*cert\.pem \(new, self-signed/);
    const again = await cli(['init', '--config', cfg]);
    expect(again.stdout).to.match(/\(kept\)/);
    const check = await cli(['check', '--config', cfg]);
    expect(check.stdout).to.match(/mail domain\s+cli\.test/);
    // No onion hostname yet with a system tor: check says so and fails.
    expect(check.code).to.equal(1);
    expect(check.stderr).to.match(/tor has not written the onion hostname/);
    expect(check.stdout).to.not.match(/^frontend/m);
    // One node of several: check also names the Onionbalance frontend.
    const frontend = 'cr4dwjmvsvug6zc36pgbvkbkrfqywzeypsdoog6mx3yujvstar5fauid.onion';
    const instance = await cli(['check', '--config', cfg], { KZYMY_TOR_FRONTEND_ONION: frontend });
    expect(instance.stdout).to.match(new RegExp(`^frontend +http://${frontend}/ \\(Onionbalance`, 'm'));
  });

  it('refuses bad configuration with one sentence per mistake and no stack trace', async function () {
    const bad = path.join(dir, 'bad.json');
    await writeFile(bad, JSON.stringify({ domian: 'x', smtp: { port: 'twenty-five' }, web: { host: '0.0.0.0' } }));
    const r = await cli(['check', '--config', bad]);
    expect(r.code).to.equal(1);
    expect(r.stderr).to.include('Unknown setting "domian"');
    expect(r.stderr).to.include('"smtp.port" must be a whole number');
    expect(r.stderr).to.include('must stay on loopback');
    expect(r.stderr).not.to.match(/\n\s+at /);
    const missing = await cli(['check', '--config', path.join(dir, 'nope.json')]);
    expect(missing.stderr).to.match(/does not exist/);
  });

  it('users add registers a key and prints the username alone; list/show/disable/enable/delete work', async function () {
    const key = await makeSqKey();
    const kf = path.join(dir, 'sq.asc');
    await writeFile(kf, key.publicArmored);
    const r = await cli(['users', 'add', '--key', kf, '--config', cfg]);
    expect(r.code, r.stderr).to.equal(0);
    expect(r.stdout).to.match(/^[a-z][a-z0-9]{11}\n$/);
    const user = r.stdout.trim();
    const dup = await cli(['users', 'add', '--key', kf, '--config', cfg]);
    expect(dup.code).to.equal(1);
    expect(dup.stderr).to.match(/already registered/);
    expect((await cli(['users', 'list', '--config', cfg])).stdout).to.include(user);
    expect((await cli(['users', 'show', user, '--config', cfg])).stdout).to.match(new RegExp(`anything@${user}\\.cli\\.test`));
    expect((await cli(['users', 'disable', user, '--config', cfg])).stdout).to.match(/disabled/);
    expect((await cli(['users', 'show', user, '--config', cfg])).stdout).to.match(/state\s+disabled/);
    expect((await cli(['users', 'enable', user, '--config', cfg])).code).to.equal(0);
    const noYes = await cli(['users', 'delete', user, '--config', cfg]);
    expect(noYes.code).to.equal(2);
    expect(noYes.stderr).to.match(/add --yes/);
    expect((await cli(['users', 'delete', user, '--yes', '--config', cfg])).code).to.equal(0);
    const gone = await cli(['users', 'show', user, '--config', cfg]);
    expect(gone.code).to.equal(1);
    expect(gone.stderr).to.match(/There is no user/);
    await readdir(path.join(dir, 'maildirs', user)).then(
      () => expect.fail('maildir still there'),
      () => undefined,
    );
  });

  for (const kind of BAD_GPG_KEY_KINDS) {
    it(`users add refuses a bad key (${kind}) with a sentence and registers nothing`, async function () {
      const key = await makeGpgKey(kind);
      const kf = path.join(dir, `${kind}.asc`);
      await writeFile(kf, key.publicArmored);
      const r = await cli(['users', 'add', '--key', kf, '--config', cfg]);
      expect(r.code).to.equal(1);
      expect(r.stderr).to.match(/^kzymy-server: [A-Z].+\.\n$/);
      expect((await cli(['users', 'list', '--json', '--config', cfg])).stdout).not.to.include(key.fingerprint);
    });
  }

  it('users add refuses a secret key and writes its secret material nowhere', async function () {
    const key = await makeGpgKey('ed25519');
    const kf = path.join(dir, 'secret.asc');
    await writeFile(kf, key.secretArmored);
    // A line from the middle of the armored secret key: unique to it.
    const lines = key.secretArmored.split('\n').filter((l) => /^[A-Za-z0-9+/]{60,}$/.test(l));
    const needle = lines[Math.floor(lines.length / 2)]!;
    const r = await cli(['users', 'add', '--key', kf, '--config', cfg]);
    expect(r.code).to.equal(1);
    expect(r.stderr).to.match(/secret key/i);
    expect(r.stdout + r.stderr).not.to.include(needle);
    await rename(kf, path.join(dir, 'secret.moved')); // the input file itself is the user's
    const hits = await filesContaining(dir, needle, (p) => p.endsWith('secret.moved'));
    expect(hits).to.deep.equal([]);
    expect(await filesContaining(tmpdir(), needle, (p) => p.startsWith(dir) || /kzymy-gpg|kzymy-keys-/.test(p))).to.deep.equal([]); // the test's own key fixtures aside
  });

  it('stats counts users and waiting mail; purge applies retention', async function () {
    const srv = await startServer({ config: { limits: { retentionDays: 1 } } });
    try {
      const key = await makeGpgKey('rsa2048');
      const kf = path.join(srv.base, 'k.asc');
      await writeFile(kf, key.publicArmored);
      const user = (await srv.cli('users', 'add', '--key', kf)).trim();
      for (let i = 0; i < 3; i++) expect((await sendRaw(srv.smtpPort, [`s@${user}.${srv.domain}`], rawMessage(marker()))).reply).to.match(/^250/);
      const s = JSON.parse(await srv.cli('stats', '--json')) as { users: number; waiting: number; bytes: number };
      expect(s).to.include({ users: 1, waiting: 3 });
      expect(s.bytes).to.be.above(0);
      // Age one message past retention: rename it to a name from 3 days ago.
      const nd = path.join(srv.maildirRoot, user, 'new');
      const [first] = await readdir(nd);
      const old = Math.floor(Date.now() / 1000) - 3 * 86400;
      const oldName = first!.replace(/^\d+/, String(old));
      await rename(path.join(nd, first!), path.join(nd, oldName));
      await utimes(path.join(nd, oldName), old, old);
      const p = await srv.cli('purge');
      expect(p).to.match(/^purged 1 message/);
      expect(await readdir(nd)).to.have.length(2);
      const human = await srv.cli('stats');
      expect(human).to.match(/waiting mail\s+2 messages/);
    } finally {
      await srv.cleanup();
    }
  });

  it('prints its version with --version and -V', async function () {
    const pkg = JSON.parse(await readFile(path.resolve(import.meta.dirname, '..', '..', 'package.json'), 'utf8')) as { version: string };
    for (const flag of ['--version', '-V']) {
      const r = await cli([flag]);
      expect(r.code).to.equal(0);
      expect(r.stdout).to.equal(`${pkg.version}\n`);
    }
  });

  it('start refuses a web host that is not loopback, with a sentence', async function () {
    const r = await cli(['start', '--config', cfg], { KZYMY_WEB_HOST: '0.0.0.0', KZYMY_SMTP_PORT: '0' });
    expect(r.code).to.equal(1);
    expect(r.stderr).to.match(/must stay on loopback/);
    expect(r.stderr).not.to.match(/\n\s+at /);
  });

  it('start on a port another program holds says so in a sentence, not EADDRINUSE', async function () {
    // The other program: a real listener on the SMTP port, then on the web port.
    const other = net.createServer();
    await new Promise<void>((resolve) => other.listen(0, '127.0.0.1', resolve));
    const port = String((other.address() as net.AddressInfo).port);
    try {
      const envs: Record<string, string>[] = [{ KZYMY_SMTP_HOST: '127.0.0.1', KZYMY_SMTP_PORT: port }, { KZYMY_SMTP_PORT: '0', KZYMY_WEB_PORT: port }];
      for (const env of envs) {
        const r = await cli(['start', '--config', cfg], env);
        expect(r.code, r.stderr).to.equal(1);
        const said = r.stderr.trim().split('\n').filter((l) => l.startsWith('kzymy-server:'));
        expect(said, r.stderr).to.deep.equal([
          `kzymy-server: Cannot listen on 127.0.0.1:${port}: the address is already in use by another program; stop that program or choose another port.`,
        ]);
        expect(r.stderr).not.to.match(/EADDRINUSE|\n\s+at /);
      }
    } finally {
      await new Promise((resolve) => other.close(resolve));
    }
  });

  it('keeps the registry as a folder: a lowdb snapshot, a journal and key files', async function () {
    const reg = JSON.parse(await readFile(path.join(dir, 'data', 'registry', 'snapshot.json'), 'utf8')) as { version: number; users: unknown[] };
    expect(reg.version).to.equal(2);
    expect(reg.users).to.be.an('array');
  });
});
