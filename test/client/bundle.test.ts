// The single-file kzymy-client as a person gets it: downloaded from a real kzymy server's
// page with the commands the page shows, checked against the SHA-256 it shows, and run
// from a folder that holds nothing but that file and a GnuPG home (no node_modules
// anywhere above it, no NODE_PATH). It signs up, mail is sent, fetch delivers it. Also the
// npm package of it: only the file, package.json and README in the tarball.
import { expect } from 'chai';
import { spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, readFileSync } from 'node:fs';
import { mkdir, readdir, readFile, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { requireBinaries, tempDir, which } from '../helpers/env.js';
import { gpgDecrypt, killGpgAgent, run } from '../helpers/gpg.js';
import { marker, rawMessage } from '../helpers/mail.js';
import { startServer, type RunningServer } from '../helpers/server.js';
import { sendRaw } from '../helpers/smtp-client.js';
import { ROOT } from './helpers.js';

const VERSION = (JSON.parse(readFileSync(path.join(ROOT, 'package.json'), 'utf8')) as { version: string }).version;
const sha256 = (b: Buffer): string => createHash('sha256').update(b).digest('hex');
const unescape = (s: string): string =>
  s.replace(/&lt;/g, '<').replace(/&gt;/g, '>').replace(/&quot;/g, '"').replace(/&#39;/g, "'").replace(/&amp;/g, '&');

/** The text of the element with this id (its first text run, entities decoded). */
function byId(page: string, id: string): string {
  const m = new RegExp(`id="${id}"[^>]*>([^<]*)<`).exec(page);
  if (!m) throw new Error(`no element #${id} in the page`);
  return unescape(m[1]!);
}

interface Ran {
  code: number | null;
  stdout: string;
  stderr: string;
}

/** Runs a command line with /bin/sh in `cwd`, with only the environment given (no NODE_PATH, no NODE_OPTIONS). */
function sh(line: string, cwd: string, env: NodeJS.ProcessEnv): Promise<Ran> {
  return new Promise((resolve, reject) => {
    const child = spawn('/bin/sh', ['-c', line], { cwd, env, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    child.on('error', reject);
    child.on('close', (code) => resolve({ code, stdout, stderr }));
  });
}

/** Folders from `dir` up to the root that hold a node_modules (Node would resolve packages there). */
function nodeModulesAbove(dir: string): string[] {
  const found: string[] = [];
  for (let d = path.resolve(dir); ; d = path.dirname(d)) {
    if (existsSync(path.join(d, 'node_modules'))) found.push(d);
    if (path.dirname(d) === d) return found;
  }
}

/** Single-quoted for /bin/sh. */
const q = (s: string): string => `'${s.replace(/'/g, `'\\''`)}'`;

describe('the single-file kzymy-client, downloaded from the server and run on its own', function () {
  let srv: RunningServer;
  let base: string;
  let scratch: { dir: string; cleanup: () => Promise<void> };
  let gnupghome: string;
  let env: NodeJS.ProcessEnv;
  let home: string;
  let fingerprint: string;
  let username: string;

  before(async function () {
    requireBinaries(this, 'gpg', 'gpgconf', 'curl', 'sha256sum');
    // The bundle step of `npm run build`, so that the server offers these very sources.
    const built = await run(process.execPath, [path.join(ROOT, 'scripts', 'build-client.mjs')]);
    expect(built.code, built.stderr).to.equal(0);
    srv = await startServer();
    base = `http://127.0.0.1:${srv.webPort}`;
    scratch = await tempDir('kzymy-bundle-');
    gnupghome = path.join(scratch.dir, 'gnupg');
    await mkdir(gnupghome, { mode: 0o700 });
    home = path.join(scratch.dir, 'home');
    // What a person's shell has: PATH (with this node first) and HOME. Nothing of this repository.
    env = { PATH: `${path.dirname(process.execPath)}:/usr/bin:/bin`, HOME: home, GNUPGHOME: gnupghome, LANG: 'C.UTF-8' };
  });
  after(async function () {
    if (gnupghome) await killGpgAgent(gnupghome);
    await srv?.cleanup();
    await scratch?.cleanup();
  });

  it("the front page's commands download the file and sha256sum accepts it; it is the build's file", async function () {
    const page = await (await fetch(`${base}/`)).text();
    expect(page).to.match(/<a id="client-link" href="\/client\/kzymy-client\.mjs"/);
    const shown = byId(page, 'client-sha256');
    const [download, check] = byId(page, 'client-download').split('\n');
    expect(download).to.equal(`curl -o kzymy-client.mjs ${base}/client/kzymy-client.mjs`);
    const got = await sh(download!, scratch.dir, env);
    expect(got.code, got.stderr).to.equal(0);
    const ok = await sh(check!, scratch.dir, env);
    expect(ok.code, ok.stderr).to.equal(0);
    expect(ok.stdout.trim()).to.equal('kzymy-client.mjs: OK');
    const file = await readFile(path.join(scratch.dir, 'kzymy-client.mjs'));
    expect(sha256(file)).to.equal(shown);
    expect(Buffer.compare(file, await readFile(path.join(ROOT, 'dist', 'bundle', 'kzymy-client.mjs')))).to.equal(0);
    // The link itself, as a browser follows it, gives the same bytes.
    const viaLink = Buffer.from(await (await fetch(new URL('/client/kzymy-client.mjs', `${base}/`))).arrayBuffer());
    expect(sha256(viaLink)).to.equal(shown);
    expect(file.subarray(0, 20).toString()).to.equal('#!/usr/bin/env node\n');
  });

  it("the page's check refuses a copy changed on the way (one byte)", async function () {
    const page = await (await fetch(`${base}/`)).text();
    const check = byId(page, 'client-download').split('\n')[1]!;
    const other = await tempDir('kzymy-bundle-tampered-');
    try {
      const file = await readFile(path.join(scratch.dir, 'kzymy-client.mjs'));
      file[file.length - 2] ^= 0x01;
      await writeFile(path.join(other.dir, 'kzymy-client.mjs'), file);
      const r = await sh(check, other.dir, env);
      expect(r.code).to.not.equal(0);
      expect(r.stdout.trim()).to.equal('kzymy-client.mjs: FAILED');
    } finally {
      await other.cleanup();
    }
  });

  it('the scratch folder holds only the file and a GnuPG home, with no node_modules in it or above it', async function () {
    expect((await readdir(scratch.dir)).sort()).to.deep.equal(['gnupg', 'kzymy-client.mjs']);
    expect(nodeModulesAbove(scratch.dir)).to.deep.equal([]);
    expect(env).not.to.have.any.keys('NODE_PATH', 'NODE_OPTIONS');
  });

  it('--version prints the version of package.json; --help lists the commands', async function () {
    const v = await sh('node kzymy-client.mjs --version', scratch.dir, env);
    expect(v.code, v.stderr).to.equal(0);
    expect(v.stdout.trim()).to.equal(VERSION);
    const h = await sh('node kzymy-client.mjs --help', scratch.dir, env);
    expect(h.code, h.stderr).to.equal(0);
    expect(h.stdout).to.match(/^Usage: kzymy-client /);
    for (const cmd of ['signup', 'fetch', 'status', 'aliases', 'catch-all', 'key', 'logout', 'delete-account']) {
      expect(h.stdout).to.match(new RegExp(`^  ${cmd}\\b`, 'm'));
    }
    expect(h.stderr).to.equal('');
  });

  it("signs up with a key made by the guide's gpg command, using the page's signup command", async function () {
    // docs/client.md: gpg --quick-generate-key NAME future-default default never (batch, no passphrase here).
    const made = await sh(`gpg --batch --passphrase '' --quick-generate-key 'Shop identity' future-default default never`, scratch.dir, env);
    expect(made.code, made.stderr).to.equal(0);
    const fpr = await sh(`gpg --with-colons --list-keys 'Shop identity' | awk -F: '$1=="fpr"{print $10; exit}'`, scratch.dir, env);
    fingerprint = fpr.stdout.trim();
    expect(fingerprint).to.match(/^[0-9A-F]{40}$/);
    const page = await (await fetch(`${base}/`)).text();
    const signup = byId(page, 'client-signup');
    expect(signup).to.equal(`node kzymy-client.mjs signup --server ${base} --no-tor --key FINGERPRINT`);
    const r = await sh(signup.replace('FINGERPRINT', fingerprint), scratch.dir, env);
    expect(r.code, r.stderr + r.stdout).to.equal(0);
    username = /your username is ([a-z0-9]+)\./.exec(r.stdout)?.[1] ?? '';
    expect(username, r.stdout).to.match(/^[a-z][a-z0-9]{11}$/);
    expect(r.stderr).to.equal('');
    // The profile went where the client keeps it by default: under HOME, not in the repository.
    expect(existsSync(path.join(home, '.config', 'kzymy', 'client.json'))).to.equal(true);
  });

  it("the guide's two-step key (ed25519 sign, then a cv25519 encr subkey) is accepted too; ed25519 alone is refused", async function () {
    const other = await tempDir('kzymy-bundle-keys-');
    const keysEnv = { ...env, GNUPGHOME: other.dir, HOME: path.join(other.dir, 'home') };
    const fprOf = async (name: string): Promise<string> =>
      (await sh(`gpg --with-colons --list-keys '${name}' | awk -F: '$1=="fpr"{print $10; exit}'`, other.dir, keysEnv)).stdout.trim();
    const signup = (fpr: string, profile: string) =>
      sh(`node ${q(path.join(scratch.dir, 'kzymy-client.mjs'))} --config ${q(path.join(other.dir, profile))} signup --server ${base} --no-tor --key ${fpr}`, other.dir, keysEnv);
    try {
      expect((await sh(`gpg --batch --passphrase '' --quick-generate-key 'Two steps' ed25519 sign never`, other.dir, keysEnv)).code).to.equal(0);
      const fpr = await fprOf('Two steps');
      expect((await sh(`gpg --batch --passphrase '' --quick-add-key "${fpr}" cv25519 encr never`, other.dir, keysEnv)).code).to.equal(0);
      const ok = await signup(fpr, 'two.json');
      expect(ok.code, ok.stderr).to.equal(0);
      expect(ok.stdout).to.match(/your username is [a-z0-9]+\./);
      // What the guide warns about: on GnuPG 2.2, "ed25519 default" makes a key that only signs.
      expect((await sh(`gpg --batch --passphrase '' --quick-generate-key 'Sign only' ed25519 default never`, other.dir, keysEnv)).code).to.equal(0);
      const signOnly = await fprOf('Sign only');
      const refused = await signup(signOnly, 'sign-only.json');
      expect(refused.code).to.equal(1);
      expect(refused.stderr).to.match(/^kzymy-client: .*no valid subkey that can encrypt/);
    } finally {
      await killGpgAgent(other.dir);
      await other.cleanup();
    }
  });

  it('fetch --maildir delivers the mail sent to the new address', async function () {
    if (!username) this.skip();
    const mark = marker();
    const rcpt = `shop@${username}.${srv.domain}`;
    const sent = await sendRaw(srv.smtpPort, [rcpt], rawMessage(mark, { to: rcpt }));
    expect(sent.reply).to.match(/^250 /);
    const maildir = path.join(scratch.dir, 'Maildir');
    const r = await sh(`node kzymy-client.mjs fetch --maildir ${q(maildir)}`, scratch.dir, env);
    expect(r.code, r.stderr + r.stdout).to.equal(0);
    expect(r.stdout).to.match(/^2 messages \(.*\) delivered to /);
    const files = await Promise.all((await readdir(path.join(maildir, 'new'))).map((n) => readFile(path.join(maildir, 'new', n))));
    expect(files).to.have.length(2); // the welcome message and the one sent
    // Stored as PGP/MIME: the marker shows only once decrypted, in exactly one of them.
    expect(files.filter((f) => f.includes(Buffer.from(mark)))).to.have.length(0);
    const plain = await Promise.all(files.map((f) => gpgDecrypt(gnupghome, /-----BEGIN PGP MESSAGE-----[\s\S]+?-----END PGP MESSAGE-----/.exec(f.toString('latin1'))![0])));
    expect(plain.filter((p) => p.includes(Buffer.from(mark)))).to.have.length(1);
    expect(plain.filter((p) => p.includes(Buffer.from('Welcome to kzymy')))).to.have.length(1);
  });

  it("a person who signed up on the pages runs the final page's commands as shown, and gets the welcome message", async function () {
    const own = await tempDir('kzymy-bundle-web-');
    const ownHome = path.join(own.dir, 'home');
    const ownGnupg = path.join(own.dir, 'gnupg');
    await mkdir(ownGnupg, { mode: 0o700 });
    const ownEnv = { ...env, HOME: ownHome, GNUPGHOME: ownGnupg };
    try {
      expect((await sh(`gpg --batch --passphrase '' --quick-generate-key 'Forum identity' future-default default never`, own.dir, ownEnv)).code).to.equal(0);
      const publicKey = (await sh(`gpg --armor --export 'Forum identity'`, own.dir, ownEnv)).stdout;
      // The two forms of the pages, as a browser without JavaScript sends them.
      const front = await (await fetch(`${base}/`)).text();
      const fd = new FormData();
      fd.set('csrf', unescape(/name="csrf" value="([^"]*)"/.exec(front)![1]!));
      fd.set('key', publicKey);
      fd.set('keyfile', new Blob([]), '');
      const challengePage = await (await fetch(`${base}/signup`, { method: 'POST', body: fd })).text();
      const challenge = unescape(/<pre id="challenge">([^<]*)<\/pre>/.exec(challengePage)![1]!);
      const decrypted = (await gpgDecrypt(ownGnupg, challenge)).toString('utf8');
      const form = new URLSearchParams({
        signup: unescape(/name="signup" value="([^"]*)"/.exec(challengePage)![1]!),
        csrf: unescape(/name="csrf" value="([^"]*)"/.exec(challengePage)![1]!),
        code: /^code: (\S+)$/m.exec(decrypted)![1]!,
      });
      const done = await (await fetch(`${base}/signup/confirm`, { method: 'POST', body: form })).text();
      const webUser = byId(done, 'username');
      // The page's lines, run one after the other in an empty folder, exactly as shown.
      const lines = [...byId(done, 'client-download').split('\n'), unescape(/<pre id="command"><code>([^<]*)<\/code><\/pre>/.exec(done)![1]!)];
      expect(lines[2]).to.match(new RegExp(`^node kzymy-client\\.mjs fetch --server ${base} --no-tor --username ${webUser} --key [0-9A-F]{40} --maildir ~/Maildir --decrypt$`));
      for (const line of lines) {
        const r = await sh(line, own.dir, ownEnv);
        expect(r.code, `${line}\n${r.stderr}${r.stdout}`).to.equal(0);
      }
      const got = await readdir(path.join(ownHome, 'Maildir', 'new'));
      expect(got).to.have.length(1);
      expect(await readFile(path.join(ownHome, 'Maildir', 'new', got[0]!), 'utf8')).to.include(`Your username is ${webUser}.`);
    } finally {
      await killGpgAgent(ownGnupg);
      await own.cleanup();
    }
  });
});

describe('the kzymy-client npm package', function () {
  const dir = path.join(ROOT, 'packages', 'kzymy-client');

  before(async function () {
    if (!which('npm')) this.skip();
    const built = await run(process.execPath, [path.join(ROOT, 'scripts', 'build-client.mjs')]);
    expect(built.code, built.stderr).to.equal(0);
  });

  it('has the version of kzymy, no dependencies, Node >= 20, and bin kzymy-client -> the bundled file', async function () {
    const pkg = JSON.parse(await readFile(path.join(dir, 'package.json'), 'utf8')) as Record<string, unknown>;
    expect(pkg).to.include({ name: 'kzymy-client', version: VERSION });
    expect(pkg.bin).to.deep.equal({ 'kzymy-client': 'kzymy-client.mjs' });
    expect(pkg.engines).to.deep.equal({ node: '>=20' });
    expect(pkg).not.to.have.any.keys('dependencies', 'optionalDependencies', 'peerDependencies', 'scripts');
  });

  it('npm pack puts the bundle, package.json and the README in the tarball, and nothing else', async function () {
    const r = await run('npm', ['pack', '--dry-run', '--json', '--ignore-scripts', dir], undefined, { ...process.env, npm_config_update_notifier: 'false' });
    expect(r.code, r.stderr).to.equal(0);
    const [report] = JSON.parse(r.stdout.toString('utf8').slice(r.stdout.indexOf('['))) as Array<{ files: Array<{ path: string; mode: number }> }>;
    expect(report!.files.map((f) => f.path).sort()).to.deep.equal(['README.md', 'kzymy-client.mjs', 'package.json']);
    expect(report!.files.find((f) => f.path === 'kzymy-client.mjs')!.mode & 0o111, 'executable').to.not.equal(0);
  });

  it('installs from the packed tarball without the registry, and its kzymy-client command runs', async function () {
    const t = await tempDir('kzymy-pack-');
    try {
      const packed = await run('npm', ['pack', '--pack-destination', t.dir, '--ignore-scripts', dir], undefined, { ...process.env, npm_config_update_notifier: 'false' });
      expect(packed.code, packed.stderr).to.equal(0);
      const tgz = (await readdir(t.dir)).find((n) => n.endsWith('.tgz'))!;
      const prefix = path.join(t.dir, 'prefix');
      const inst = await run('npm', ['install', '--global', '--prefix', prefix, '--offline', '--no-audit', '--no-fund', path.join(t.dir, tgz)]);
      expect(inst.code, inst.stderr).to.equal(0);
      const v = await run(path.join(prefix, 'bin', 'kzymy-client'), ['--version'], undefined, { PATH: `${path.dirname(process.execPath)}:/usr/bin:/bin`, HOME: t.dir });
      expect(v.code, v.stderr).to.equal(0);
      expect(v.stdout.toString().trim()).to.equal(VERSION);
    } finally {
      await t.cleanup();
    }
  });
});
