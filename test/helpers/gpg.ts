// Real OpenPGP keys for tests, made by GnuPG and Sequoia (no mocks), and decryption with both.
//
// Keys are generated once per process and per kind (rsa4096 takes seconds), each in its own
// fresh GNUPGHOME under a temporary folder that is removed when the process exits.
//
//   before(function () { requireGpg(this); });
//   const k = await makeGpgKey('ed25519');
//   const plain = await gpgDecrypt(k.gnupghome, armoredMessage);
import { spawn, spawnSync } from 'node:child_process';
import { chmod, mkdir, readFile, readdir, writeFile } from 'node:fs/promises';
import { rmSync } from 'node:fs';
import path from 'node:path';
import { requireBinaries, tempDir } from './env.js';
import { restoreBuffer } from '../../src/pgp/protected.js';
import { readKey, type PublicKey } from 'openpgp';

/** Keys kzymy must accept. */
export type GoodGpgKeyKind =
  | 'ed25519'
  | 'rsa2048'
  | 'rsa3072'
  | 'rsa4096'
  | 'nistp256'
  | 'nistp384'
  | 'nistp521'
  | 'brainpoolP256r1';

/** Keys kzymy must refuse. */
export type BadGpgKeyKind = 'rsa1024' | 'dsa' | 'expired' | 'revoked' | 'sign-only';

export type GpgKeyKind = GoodGpgKeyKind | BadGpgKeyKind;

export const GOOD_GPG_KEY_KINDS: readonly GoodGpgKeyKind[] = [
  'ed25519',
  'rsa2048',
  'rsa3072',
  'rsa4096',
  'nistp256',
  'nistp384',
  'nistp521',
  'brainpoolP256r1',
];
export const BAD_GPG_KEY_KINDS: readonly BadGpgKeyKind[] = ['rsa1024', 'dsa', 'expired', 'revoked', 'sign-only'];

export interface TestKey {
  /** A GNUPGHOME holding this key (secret and public), for gpg --decrypt and friends. */
  gnupghome: string;
  /** Primary key fingerprint, upper-case hex. */
  fingerprint: string;
  /** The certificate (public part only), ASCII-armored. */
  publicArmored: string;
  /** The whole key including secret material, ASCII-armored, unprotected. */
  secretArmored: string;
  /** A file holding secretArmored (for sqDecrypt and `sq decrypt --recipient-key`). */
  secretKeyFile: string;
  /** e.g. "Test <test@example.invalid>". */
  uid: string;
}

export const TEST_UID = 'Test <test@example.invalid>';

/** Skips (dev) or fails (CI) the suite unless gpg and gpgconf are installed. */
export function requireGpg(ctx: Mocha.Context): void {
  requireBinaries(ctx, 'gpg', 'gpgconf');
}

/** Skips (dev) or fails (CI) the suite unless Sequoia's sq is installed. */
export function requireSq(ctx: Mocha.Context): void {
  requireBinaries(ctx, 'sq');
}

export interface RunResult {
  code: number;
  stdout: Buffer;
  stderr: string;
}

/** Runs a command with optional stdin; never rejects on a non-zero exit (look at code). */
export function run(cmd: string, args: string[], input?: Buffer | string, env?: NodeJS.ProcessEnv): Promise<RunResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, { stdio: ['pipe', 'pipe', 'pipe'], env: env ?? process.env });
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    child.stdout.on('data', (c: Buffer) => out.push(c));
    child.stderr.on('data', (c: Buffer) => err.push(c));
    child.on('error', reject);
    // A child that exits before reading all its input gives EPIPE: its exit code tells.
    child.stdin.on('error', () => {});
    child.on('close', (code) =>
      resolve({ code: code ?? -1, stdout: Buffer.concat(out), stderr: Buffer.concat(err).toString('utf8') }),
    );
    child.stdin.end(input ?? '');
  });
}

/** gpg with --homedir and batch options; resolves with stdout, rejects with gpg's stderr. */
export async function gpg(gnupghome: string, args: string[], input?: Buffer | string): Promise<Buffer> {
  const r = await run('gpg', [
    '--homedir',
    gnupghome,
    '--batch',
    '--no-tty',
    '--pinentry-mode',
    'loopback',
    '--passphrase',
    '',
    ...args,
  ], input);
  if (r.code !== 0) throw new Error(`gpg ${args.join(' ')} failed (exit ${r.code}): ${r.stderr.trim()}`);
  return r.stdout;
}

/** `gpg --decrypt`: the plaintext bytes; rejects with gpg's stderr on failure. */
export async function gpgDecrypt(gnupghome: string, data: Buffer | string): Promise<Buffer> {
  return gpg(gnupghome, ['--decrypt'], data);
}

/** `sq decrypt --recipient-key FILE`: the plaintext bytes; rejects with sq's stderr on failure. */
export async function sqDecrypt(secretKeyFile: string, data: Buffer | string): Promise<Buffer> {
  const r = await run('sq', ['decrypt', '--recipient-key', secretKeyFile], data);
  if (r.code !== 0) throw new Error(`sq decrypt failed (exit ${r.code}): ${r.stderr.trim()}`);
  return r.stdout;
}

// --- key generation -------------------------------------------------------------------------

let root: Promise<string> | null = null;
const homes: string[] = [];

/** One temporary folder per process for all generated keys; removed (agents killed) at exit. */
function keyRoot(): Promise<string> {
  if (!root) {
    root = tempDir('kzymy-keys-').then(({ dir }) => {
      process.once('exit', () => {
        for (const home of homes) {
          spawnSync('gpgconf', ['--homedir', home, '--kill', 'gpg-agent'], { stdio: 'ignore' });
        }
        rmSync(dir, { recursive: true, force: true });
      });
      return dir;
    });
  }
  return root;
}

let homeCounter = 0;
async function freshHome(label: string): Promise<string> {
  const home = path.join(await keyRoot(), `${label}-${++homeCounter}`);
  await mkdir(home, { recursive: true });
  await chmod(home, 0o700);
  homes.push(home);
  return home;
}

function batchFor(kind: GpgKeyKind): string[] {
  const ecc = (curve: string, sign: 'ecdsa' | 'eddsa', encCurve = curve): string[] => [
    `Key-Type: ${sign}`,
    `Key-Curve: ${curve}`,
    'Key-Usage: sign',
    'Subkey-Type: ecdh',
    `Subkey-Curve: ${encCurve}`,
    'Subkey-Usage: encrypt',
  ];
  const rsa = (bits: number): string[] => [
    'Key-Type: RSA',
    `Key-Length: ${bits}`,
    'Key-Usage: sign',
    'Subkey-Type: RSA',
    `Subkey-Length: ${bits}`,
    'Subkey-Usage: encrypt',
  ];
  switch (kind) {
    case 'ed25519':
    case 'revoked':
      return [...ecc('ed25519', 'eddsa', 'cv25519'), 'Expire-Date: 0'];
    case 'expired':
      // Generated at a faked time in 2020, expired one day later.
      return [...ecc('ed25519', 'eddsa', 'cv25519'), 'Expire-Date: 1d'];
    case 'rsa1024':
    case 'rsa2048':
    case 'rsa3072':
    case 'rsa4096':
      return [...rsa(Number(kind.slice(3))), 'Expire-Date: 0'];
    case 'nistp256':
    case 'nistp384':
    case 'nistp521':
    case 'brainpoolP256r1':
      return [...ecc(kind, 'ecdsa'), 'Expire-Date: 0'];
    case 'dsa':
      return [
        'Key-Type: DSA',
        'Key-Length: 2048',
        'Key-Usage: sign',
        'Subkey-Type: ELG-E',
        'Subkey-Length: 2048',
        'Subkey-Usage: encrypt',
        'Expire-Date: 0',
      ];
    case 'sign-only':
      return ['Key-Type: eddsa', 'Key-Curve: ed25519', 'Key-Usage: sign', 'Expire-Date: 0'];
  }
}

async function fingerprintOf(gnupghome: string): Promise<string> {
  const colons = (await gpg(gnupghome, ['--with-colons', '--fingerprint', '--list-secret-keys'])).toString('utf8');
  const fpr = colons.split('\n').find((l) => l.startsWith('fpr:'));
  if (!fpr) throw new Error(`no fingerprint in ${gnupghome}`);
  return fpr.split(':')[9]!.toUpperCase();
}

async function exportKey(gnupghome: string, fingerprint: string, uid: string): Promise<TestKey> {
  const publicArmored = (await gpg(gnupghome, ['--armor', '--export', fingerprint])).toString('utf8');
  const secretArmored = (await gpg(gnupghome, ['--armor', '--export-secret-keys', fingerprint])).toString('utf8');
  if (!publicArmored.includes('BEGIN PGP PUBLIC KEY BLOCK')) throw new Error('gpg exported no public key');
  if (!secretArmored.includes('BEGIN PGP PRIVATE KEY BLOCK')) throw new Error('gpg exported no secret key');
  const secretKeyFile = path.join(gnupghome, 'secret-key.asc');
  await writeFile(secretKeyFile, secretArmored, { mode: 0o600 });
  return { gnupghome, fingerprint, publicArmored, secretArmored, secretKeyFile, uid };
}

async function generateGpgKey(kind: GpgKeyKind): Promise<TestKey> {
  const home = await freshHome(kind);
  const batch = ['%no-protection', ...batchFor(kind), 'Name-Real: Test', 'Name-Email: test@example.invalid', '%commit', ''];
  const extra = kind === 'expired' ? ['--faked-system-time', '20200101T000000!'] : [];
  await gpg(home, [...extra, '--gen-key'], batch.join('\n'));
  const fingerprint = await fingerprintOf(home);
  if (kind === 'revoked') {
    // gpg wrote a revocation certificate, defused by a leading ':'; import it.
    const revDir = path.join(home, 'openpgp-revocs.d');
    const file = (await readdir(revDir)).find((f) => f.endsWith('.rev'));
    if (!file) throw new Error('gpg wrote no revocation certificate');
    const rev = (await readFile(path.join(revDir, file), 'utf8')).replace(/^:-----BEGIN/m, '-----BEGIN');
    await gpg(home, ['--import'], rev);
  }
  return exportKey(home, fingerprint, TEST_UID);
}

const gpgKeys = new Map<GpgKeyKind, Promise<TestKey>>();

/** A GnuPG-made key of the given kind, generated once per process. */
export function makeGpgKey(kind: GpgKeyKind): Promise<TestKey> {
  let p = gpgKeys.get(kind);
  if (!p) {
    p = generateGpgKey(kind);
    gpgKeys.set(kind, p);
    p.catch(() => gpgKeys.delete(kind));
  }
  return p;
}

/** A freshly generated GnuPG key every call (when a test needs two distinct keys of one kind). */
/** A cached GnuPG key of `kind` and its public part parsed by openpgp (what kzymy encrypts to). */
export async function gpgKeyAndPublic(kind: GpgKeyKind = 'ed25519'): Promise<{ key: TestKey; pub: PublicKey }> {
  const key = await makeGpgKey(kind);
  return { key, pub: await readKey({ armoredKey: key.publicArmored }) };
}

export function makeFreshGpgKey(kind: GpgKeyKind = 'ed25519'): Promise<TestKey> {
  return generateGpgKey(kind);
}

async function generateSqKey(): Promise<TestKey> {
  const home = await freshHome('sq');
  const secretKeyFile = path.join(home, 'secret-key.asc');
  const r = await run('sq', ['key', 'generate', '--userid', TEST_UID, '--export', secretKeyFile]);
  if (r.code !== 0) throw new Error(`sq key generate failed (exit ${r.code}): ${r.stderr.trim()}`);
  await chmod(secretKeyFile, 0o600);
  const secretArmored = await readFile(secretKeyFile, 'utf8');
  const cert = await run('sq', ['key', 'extract-cert', secretKeyFile]);
  if (cert.code !== 0) throw new Error(`sq key extract-cert failed (exit ${cert.code}): ${cert.stderr.trim()}`);
  const publicArmored = cert.stdout.toString('utf8');
  // The same key in a GNUPGHOME, so that gpgDecrypt works with it too.
  await gpg(home, ['--import'], secretArmored);
  const fingerprint = await fingerprintOf(home);
  return { gnupghome: home, fingerprint, publicArmored, secretArmored, secretKeyFile, uid: TEST_UID };
}

let sqKey: Promise<TestKey> | null = null;

/** A key made by `sq key generate` (Sequoia's defaults: cv25519), generated once per process. */
export function makeSqKey(): Promise<TestKey> {
  if (!sqKey) {
    sqKey = generateSqKey();
    sqKey.catch(() => {
      sqKey = null;
    });
  }
  return sqKey;
}

// --- PGP/MIME Maildir files -----------------------------------------------------------------

export interface PgpMimeFile {
  /** The outer header as written (up to the blank line). */
  header: string;
  /** Outer header fields in order, unfolded: [name, value]. */
  fields: Array<[string, string]>;
  boundary: string;
  /** The bodies of the MIME parts, in order. */
  parts: string[];
  /** The ASCII-armored OpenPGP message of the second part. */
  armored: string;
}

/** Splits a PGP/MIME file (RFC 3156) as kzymy writes it; throws if its shape is wrong. */
export function parsePgpMime(file: Buffer | string): PgpMimeFile {
  const text = Buffer.isBuffer(file) ? file.toString('latin1') : file;
  const end = text.search(/\r?\n\r?\n/);
  if (end < 0) throw new Error('no blank line after the outer header');
  const header = text.slice(0, end);
  const body = text.slice(end).replace(/^\r?\n\r?\n/, '');
  const fields: Array<[string, string]> = [];
  for (const line of header.split(/\r?\n/)) {
    if (/^[ \t]/.test(line) && fields.length > 0) fields[fields.length - 1]![1] += ' ' + line.trim();
    else {
      const m = /^([!-9;-~]+):[ \t]*(.*)$/.exec(line);
      if (!m) throw new Error(`not a header line: ${JSON.stringify(line)}`);
      fields.push([m[1]!, m[2]!]);
    }
  }
  const ct = fields.find(([n]) => n.toLowerCase() === 'content-type')?.[1] ?? '';
  const b = /boundary="([^"]+)"/i.exec(ct) ?? /boundary=([^;\s]+)/i.exec(ct);
  if (!b) throw new Error('no boundary in Content-Type');
  const boundary = b[1]!;
  const chunks = body.split(new RegExp(`(?:^|\\r?\\n)--${boundary.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}(--)?[ \\t]*(?:\\r?\\n|$)`));
  // split with a capture group: [preamble, close?, part1, close?, part2, '--', epilogue]
  const parts: string[] = [];
  for (let i = 2; i < chunks.length; i += 2) {
    if (chunks[i - 1] === '--') break;
    parts.push(chunks[i] ?? '');
  }
  const second = parts[1] ?? '';
  const a = /-----BEGIN PGP MESSAGE-----[\s\S]*?-----END PGP MESSAGE-----\r?\n?/.exec(second);
  if (!a) throw new Error('no armored OpenPGP message in the second part');
  return { header, fields, boundary, parts, armored: a[0] };
}

/** gpg --decrypt of the armored part of a PGP/MIME file: what a mail client sees. */
export async function gpgDecryptPayload(gnupghome: string, file: Buffer | string): Promise<Buffer> {
  return gpgDecrypt(gnupghome, parsePgpMime(file).armored);
}

/**
 * A stored file opened the way `kzymy-client fetch --decrypt` opens it: gpg --decrypt, then the
 * protected-headers wrapper taken off. Throws if the payload has no wrapper (every file kzymy
 * stores now has one, unless the header section is over 256 KiB).
 */
export async function gpgDecryptPgpMime(gnupghome: string, file: Buffer | string): Promise<Buffer> {
  const payload = await gpgDecryptPayload(gnupghome, file);
  const restored = restoreBuffer(payload);
  if (restored.length === payload.length) throw new Error('the decrypted payload has no protected-headers wrapper');
  return restored;
}

/** Stops the gpg-agent a test started in its own GNUPGHOME (call before removing the folder). */
export async function killGpgAgent(gnupghome: string): Promise<void> {
  await run('gpgconf', ['--homedir', gnupghome, '--kill', 'gpg-agent']);
}
