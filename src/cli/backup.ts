// `kzymy-server backup FILE` and `kzymy-server restore FILE`.
//
// The archive is a tar file (node-tar), gzip-compressed when FILE ends in .gz or .tgz:
//
//   kzymy-backup.json                 first: format, kzymy version, date
//   data/registry/snapshot.json       the registry at one point in time, as a fresh snapshot
//   data/registry/journal.1           empty
//   data/registry/keys/SHA256.asc     every public key that snapshot names
//   tls/key.pem, tls/cert.pem         the STARTTLS key and certificate
//   onion/hs_ed25519_secret_key, onion/hs_ed25519_public_key, onion/hostname
//   maildirs/USER/new|cur/NAME        every complete message
//   manifest.json                     last: counts and the size and SHA-256 of every file above
//
// Taken while the server runs and mail arrives:
// - The registry is read as `kzymy-server users list` reads it and written out as a new
//   snapshot (see src/registry/export.ts for why that state is consistent).
// - A message file is complete from the moment it appears in new/ (the server writes it in
//   tmp/, fsyncs it, then renames it) and is never written again, so only new/ and cur/ are
//   read, never tmp/. Each file is opened once and archived from that open descriptor: a
//   fetch that deletes it afterwards cannot shorten it (the data stays until it is closed),
//   and one that deletes it first makes it absent. A message moved from new/ to cur/ while
//   the backup runs is looked up again by its base name, so it is archived exactly once.
// - Maildirs are read after the registry: a message acknowledged before the backup began
//   belongs to a user in that registry and is in new/ or cur/ when its folder is read.
//
// Restore verifies every file against the manifest in a folder beside the target before it
// moves anything into place, and places the registry last.
import { createHash, randomBytes } from 'node:crypto';
import { constants as fsc } from 'node:fs';
import { chmod, chown, cp, lstat, mkdir, open, readdir, readFile, rename, rm, rmdir, stat, unlink, type FileHandle } from 'node:fs/promises';
import { execFile } from 'node:child_process';
import net from 'node:net';
import path from 'node:path';
import { once } from 'node:events';
import { promisify } from 'node:util';
import { pipeline } from 'node:stream/promises';
import { setTimeout as delay } from 'node:timers/promises';
import cliProgress from 'cli-progress';
import { Header, Pack, ReadEntry, extract, list } from 'tar';
import { UserError, type Config } from '../config/index.js';
import { fsyncPath } from '../config/durable.js';
import { errnoCode, errnoPhrase } from '../config/errno.js';
import { exportRegistry, openRegistry, RegistryError } from '../registry/index.js';
import { isValidId, isValidUsername, MaildirStore } from '../maildir/index.js';
import { version } from './version.js';

type Out = (line: string) => void;
const run = promisify(execFile);

/** Version of the archive layout above; restore refuses a newer one. */
export const BACKUP_FORMAT = 1;
const FIRST = 'kzymy-backup.json';
const MANIFEST = 'manifest.json';
const ONION_FILES = ['hs_ed25519_secret_key', 'hs_ed25519_public_key', 'hostname'] as const;
const CHUNK = 256 * 1024;

interface FileRecord {
  size: number;
  sha256: string;
}

interface Manifest {
  format: number;
  kzymy: string;
  createdAt: string;
  finishedAt: string;
  counts: { users: number; keys: number; messages: number; messageBytes: number; files: number };
  included: { tls: boolean; onionKeys: boolean };
  files: Record<string, FileRecord>;
}

/** An error whose message is the whole sentence for the operator. */
class BackupError extends UserError {}

const gzipped = (file: string) => /\.(tgz|gz)$/i.test(file);
const baseOf = (id: string) => (id.includes(':') ? id.slice(0, id.indexOf(':')) : id);

function diskSentence(err: unknown, where: string, what: string): Error {
  const code = errnoCode(err);
  if (code === 'ENOSPC' || code === 'EDQUOT') return new BackupError(`The disk holding ${where} is full: free some space or choose another place; ${what}.`);
  if (code) return new BackupError(`Cannot write ${where}: ${errnoPhrase(err)}; ${what}.`);
  return err as Error;
}

/**
 * Runs fn with the effective user and group of dir's owner when this process is root.
 * Opening a registry may create the journal file a writer moves on to; made by root, the
 * server (running as its own user) could no longer append to it.
 */
async function asOwnerOf<T>(dir: string, fn: () => Promise<T>): Promise<T> {
  const st = process.geteuid?.() === 0 ? await stat(dir).catch(() => null) : null;
  if (!st || st.uid === 0 || !process.seteuid || !process.setegid) return fn();
  process.setegid(st.gid);
  process.seteuid(st.uid);
  try {
    return await fn();
  } finally {
    process.seteuid(0);
    process.setegid(0);
  }
}

// --- backup ----------------------------------------------------------------------------

export interface BackupOptions {
  onionKeys: boolean;
  /** Draw a progress bar on stderr (a terminal). */
  progress: boolean;
}

/** The archive being written: entries go in one at a time, each streamed with backpressure. */
class ArchiveWriter {
  readonly files: Record<string, FileRecord> = {};
  private readonly pack: Pack;
  private readonly done: Promise<void>;

  constructor(fh: FileHandle, gzip: boolean) {
    this.pack = new Pack({ gzip: gzip ? { level: 6 } : undefined, portable: true });
    this.done = pipeline(this.pack, async (source: AsyncIterable<Buffer>) => {
      for await (const chunk of source) {
        let off = 0;
        while (off < chunk.length) off += (await fh.write(chunk, off, chunk.length - off)).bytesWritten;
      }
    });
    // Surfaced by finish(); a failed write also ends the entry loop through write() below.
    this.done.catch(() => undefined);
  }

  /** Adds a file of exactly `size` bytes from `chunks`; returns when all of it is in the archive stream. */
  async add(name: string, size: number, mtime: Date, chunks: AsyncIterable<Buffer> | Iterable<Buffer>): Promise<void> {
    const entry = new ReadEntry(new Header({ path: name, size, mode: 0o600, mtime, type: 'File' }));
    this.pack.add(entry);
    const hash = createHash('sha256');
    let n = 0;
    for await (const c of chunks) {
      n += c.length;
      if (n > size) break;
      hash.update(c);
      if (!entry.write(c)) await Promise.race([once(entry, 'drain'), this.done.then(() => undefined)]);
    }
    // Message files are never rewritten; a file that is not its size is not one kzymy wrote.
    if (n !== size) throw new BackupError(`The file behind ${name} changed size while it was read; run the backup again.`);
    entry.end();
    this.files[name] = { size, sha256: hash.digest('hex') };
  }

  addBuffer(name: string, data: Buffer, mtime = new Date()): Promise<void> {
    return this.add(name, data.length, mtime, [data]);
  }

  async finish(): Promise<void> {
    this.pack.end();
    await this.done;
  }
}

async function* readChunks(fh: FileHandle, size: number): AsyncGenerator<Buffer> {
  let pos = 0;
  while (pos < size) {
    const buf = Buffer.allocUnsafe(Math.min(CHUNK, size - pos));
    const { bytesRead } = await fh.read(buf, 0, buf.length, pos);
    if (bytesRead === 0) return;
    pos += bytesRead;
    yield buf.subarray(0, bytesRead);
  }
}

/** Opens a regular file (not through a symbolic link); null when it is gone. */
async function openFile(file: string): Promise<FileHandle | null> {
  try {
    return await open(file, fsc.O_RDONLY | fsc.O_NOFOLLOW);
  } catch (err) {
    const code = errnoCode(err);
    if (code === 'ENOENT' || code === 'ELOOP') return null;
    throw err;
  }
}

async function namesIn(dir: string): Promise<string[]> {
  try {
    return (await readdir(dir)).filter((n) => !n.startsWith('.') && isValidId(n));
  } catch (err) {
    if (errnoCode(err) === 'ENOENT') return [];
    throw err;
  }
}

interface OnionRead {
  files: Map<string, Buffer>;
  note: string;
}

/** The onion service's key files, when all of them can be read. */
async function readOnion(hsDir: string, wanted: boolean): Promise<OnionRead> {
  const files = new Map<string, Buffer>();
  if (!wanted) return { files, note: 'not included (--no-onion-keys)' };
  for (const name of ONION_FILES) {
    try {
      files.set(name, await readFile(path.join(hsDir, name)));
    } catch (err) {
      const code = errnoCode(err);
      if (code === 'ENOENT' && name === ONION_FILES[0] && !files.size) return { files: new Map(), note: `none (no onion service keys in ${hsDir})` };
      if (code === 'ENOENT' && name === 'hostname') continue; // tor writes it again from the keys
      if (code === 'EACCES' || code === 'EPERM') {
        return { files: new Map(), note: `not included: ${hsDir} is not readable by this user (run the backup as the owner of those keys, or as root)` };
      }
      return { files: new Map(), note: `not included: ${path.join(hsDir, name)} cannot be read (${errnoPhrase(err) ?? String(err)})` };
    }
  }
  return { files, note: `included (from ${hsDir})` };
}

export async function backup(config: Config, target: string, opts: BackupOptions, out: Out): Promise<void> {
  const file = path.resolve(target);
  const tmp = `${file}.tmp`;
  const createdAt = new Date();

  // 1. The registry, at one point in time (before the Maildirs: see the top of this file).
  const reg = await asOwnerOf(path.join(config.dataDir, 'registry'), () => exportRegistry(config.dataDir));

  let fh: FileHandle;
  try {
    fh = await open(tmp, 'w', 0o600);
    await fh.chmod(0o600);
  } catch (err) {
    throw diskSentence(err, tmp, 'no backup was written');
  }
  let bar: cliProgress.SingleBar | null = null;
  let placed = false;
  try {
    const w = new ArchiveWriter(fh, gzipped(file));
    await w.addBuffer(FIRST, Buffer.from(JSON.stringify({ format: BACKUP_FORMAT, kzymy: version(), createdAt: createdAt.toISOString() }) + '\n'));
    await w.addBuffer('data/registry/snapshot.json', Buffer.from(reg.snapshot));
    await w.addBuffer('data/registry/journal.1', Buffer.alloc(0));
    for (const [keyId, armored] of reg.keys) await w.addBuffer(`data/registry/keys/${keyId}.asc`, Buffer.from(armored, 'utf8'));

    // 2. TLS key and certificate.
    let tls = true;
    const tlsNotes: string[] = [];
    for (const [name, src] of [['tls/key.pem', config.smtp.tlsKeyFile], ['tls/cert.pem', config.smtp.tlsCertFile]] as const) {
      try {
        await w.addBuffer(name, await readFile(src));
      } catch (err) {
        if (err instanceof BackupError) throw err;
        tls = false;
        tlsNotes.push(`${src}: ${errnoPhrase(err) ?? String(err)}`);
      }
    }

    // 3. The onion service's keys.
    const onion = await readOnion(path.dirname(config.tor.hostnameFile), opts.onionKeys);
    for (const [name, data] of onion.files) await w.addBuffer(`onion/${name}`, data);

    // 4. The Maildirs of the registry's users: new/ then cur/ (a message moves only that way).
    const store = new MaildirStore(config.maildirRoot);
    const plan = await Promise.all(
      reg.users.map(async (u) => {
        const dir = store.userDir(u.username);
        const fresh = await namesIn(path.join(dir, 'new'));
        const seen = await namesIn(path.join(dir, 'cur'));
        return { user: u.username, dir, lists: { new: fresh, cur: seen } };
      }),
    );
    const total = plan.reduce((n, p) => n + p.lists.new.length + p.lists.cur.length, 0);
    if (opts.progress && total > 0) {
      bar = new cliProgress.SingleBar({ stream: process.stderr, format: 'backup [{bar}] {value}/{total} messages', hideCursor: true, clearOnComplete: true }, cliProgress.Presets.shades_classic);
      bar.start(total, 0);
    }
    let messages = 0;
    let messageBytes = 0;
    for (const { user, dir, lists } of plan) {
      const done = new Set<string>();
      const archive = async (sub: 'new' | 'cur', name: string): Promise<boolean> => {
        const fhm = await openFile(path.join(dir, sub, name));
        if (!fhm) return false;
        try {
          const st = await fhm.stat();
          if (!st.isFile()) return false;
          await w.add(`maildirs/${user}/${sub}/${name}`, st.size, st.mtime, readChunks(fhm, st.size));
          messages++;
          messageBytes += st.size;
          done.add(baseOf(name));
          return true;
        } finally {
          await fhm.close();
        }
      };
      for (const sub of ['new', 'cur'] as const) {
        for (const name of lists[sub]) {
          bar?.increment();
          if (done.has(baseOf(name))) continue;
          if (await archive(sub, name)) continue;
          // Gone: moved on (new/ -> cur/, or a flag change in cur/) or deleted by a fetch.
          const moved = (await namesIn(path.join(dir, 'cur'))).find((n) => baseOf(n) === baseOf(name) && n !== name);
          if (moved) await archive('cur', moved);
        }
      }
    }
    bar?.stop();
    bar = null;

    const manifest: Manifest = {
      format: BACKUP_FORMAT,
      kzymy: version(),
      createdAt: createdAt.toISOString(),
      finishedAt: new Date().toISOString(),
      counts: { users: reg.users.length, keys: reg.keys.size, messages, messageBytes, files: Object.keys(w.files).length },
      included: { tls, onionKeys: onion.files.size > 0 },
      files: w.files,
    };
    await w.addBuffer(MANIFEST, Buffer.from(JSON.stringify(manifest) + '\n'));
    await w.finish();
    await fh.sync();
    await fh.close();
    await rename(tmp, file);
    placed = true;
    await fsyncPath(path.dirname(file));

    out(`backup       ${file} (${gzipped(file) ? 'tar, gzip' : 'tar'}, mode 0600)`);
    out(`registry     ${reg.users.length} user${reg.users.length === 1 ? '' : 's'}, ${reg.keys.size} key${reg.keys.size === 1 ? '' : 's'}`);
    out(`maildirs     ${messages} message${messages === 1 ? '' : 's'}, ${messageBytes} bytes (ciphertext)`);
    out(`tls          ${tls ? 'key and certificate included' : `not included (${tlsNotes.join('; ')})`}`);
    out(`onion keys   ${onion.note}`);
    const secrets = [tls ? 'the STARTTLS private key' : '', onion.files.size ? "the onion service's secret key (whoever holds it can impersonate the service)" : ''].filter(Boolean);
    if (secrets.length) out(`secret       this file holds ${secrets.join(' and ')}: keep it encrypted and offline`);
  } catch (err) {
    bar?.stop();
    await fh.close().catch(() => undefined);
    if (!placed) await unlink(tmp).catch(() => undefined);
    if (err instanceof BackupError || err instanceof RegistryError) throw err;
    throw diskSentence(err, file, 'no backup was written');
  }
}

// --- restore ---------------------------------------------------------------------------

export interface RestoreOptions {
  /** USER[:GROUP] for the registry, Maildirs and TLS files (root only). */
  owner?: string;
  /** USER[:GROUP] for the onion service's keys (root only). */
  onionOwner?: string;
}

interface Ids {
  uid: number;
  gid: number;
  label: string;
}

/** USER[:GROUP] or numeric ids, looked up with id(1) and getent(1). */
async function resolveOwner(spec: string): Promise<Ids> {
  const [user, group] = spec.split(':', 2);
  const lookup = async (args: string[], what: string): Promise<number> => {
    if (/^\d+$/.test(args[args.length - 1])) return Number(args[args.length - 1]);
    try {
      const { stdout } = await run(args[0], args.slice(1));
      const n = Number(args[0] === 'getent' ? stdout.split(':')[2] : stdout.trim());
      if (Number.isInteger(n)) return n;
    } catch {
      // below
    }
    throw new BackupError(`There is no ${what} "${args[args.length - 1]}" on this machine: check --owner / --onion-owner.`);
  };
  if (!user) throw new BackupError(`"${spec}" is not USER[:GROUP].`);
  const uid = await lookup(['id', '-u', user], 'user');
  const gid = group ? await lookup(['getent', 'group', group], 'group') : /^\d+$/.test(user) ? uid : await lookup(['id', '-g', user], 'user');
  return { uid, gid, label: `${user}:${group ?? gid}` };
}

async function ownerOf(dir: string): Promise<Ids | null> {
  const st = await stat(dir).catch(() => null);
  return st ? { uid: st.uid, gid: st.gid, label: `${st.uid}:${st.gid}, as ${dir}` } : null;
}

/** Whether something accepts connections on host:port (a running kzymy-server). */
function listening(host: string, port: number): Promise<boolean> {
  if (!port) return Promise.resolve(false);
  const h = host === '0.0.0.0' ? '127.0.0.1' : host === '::' ? '::1' : host;
  return new Promise((resolve) => {
    const s = net.connect({ host: h, port });
    s.setTimeout(2000);
    s.once('connect', () => {
      s.destroy();
      resolve(true);
    });
    s.once('timeout', () => {
      s.destroy();
      resolve(false);
    });
    s.once('error', () => resolve(false));
  });
}

/** The archive paths restore accepts; anything else makes the archive foreign or damaged. */
function acceptedPath(p: string): boolean {
  if (p === FIRST || p === MANIFEST) return true;
  if (p === 'data/registry/snapshot.json' || p === 'data/registry/journal.1') return true;
  if (/^data\/registry\/keys\/[0-9a-f]{64}\.asc$/.test(p)) return true;
  if (p === 'tls/key.pem' || p === 'tls/cert.pem') return true;
  if (/^onion\/(hs_ed25519_secret_key|hs_ed25519_public_key|hostname)$/.test(p)) return true;
  const m = /^maildirs\/([^/]+)\/(new|cur)\/([^/]+)$/.exec(p);
  return Boolean(m && isValidUsername(m[1]) && isValidId(m[3]) && !m[3].startsWith('.'));
}

/** A gzip stream or a tar header (ustar magic at offset 257) at the start of the file. */
async function looksLikeArchive(file: string): Promise<boolean> {
  const fh = await open(file, 'r');
  try {
    const head = Buffer.alloc(512);
    const { bytesRead } = await fh.read(head, 0, 512, 0);
    if (bytesRead >= 2 && head[0] === 0x1f && head[1] === 0x8b) return true;
    return bytesRead >= 262 && head.toString('latin1', 257, 262) === 'ustar';
  } finally {
    await fh.close();
  }
}

/** node-tar's and zlib's reasons, in words. */
function whatBroke(err: unknown): string {
  const e = err as { message?: string; code?: string; errno?: number };
  const msg = String(e.message ?? err);
  if (/truncated|unexpected end/i.test(msg)) return 'it is cut short';
  if (e.code?.startsWith('Z_') || /incorrect header check|invalid .*(distance|code|block)|zlib/i.test(msg)) return 'its compressed data is corrupt';
  if (/checksum/i.test(msg)) return 'an entry header does not match its checksum';
  return msg.replace(/^TAR_[A-Z_]+:\s*/, '');
}

async function sha256File(file: string): Promise<FileRecord> {
  const fh = await open(file, fsc.O_RDONLY | fsc.O_NOFOLLOW);
  try {
    const st = await fh.stat();
    const hash = createHash('sha256');
    for await (const c of readChunks(fh, st.size)) hash.update(c);
    return { size: st.size, sha256: hash.digest('hex') };
  } finally {
    await fh.close();
  }
}

/** Sets modes (folders 0700, files 0600 unless `fileMode` says otherwise) and owners on a tree. */
async function fixTree(root: string, ids: Ids | null, dirMode = 0o700, fileMode: (rel: string) => number = () => 0o600, rel = ''): Promise<void> {
  const here = path.join(root, rel);
  const st = await lstat(here);
  if (st.isDirectory()) {
    for (const name of await readdir(here)) await fixTree(root, ids, dirMode, fileMode, rel ? `${rel}/${name}` : name);
    await chmod(here, dirMode);
  } else await chmod(here, fileMode(rel));
  if (ids) await chown(here, ids.uid, ids.gid);
}

/** mkdir -p with mode 0700 and an owner; records the folders it made in `made` (outermost first). */
async function mkdirOwned(dir: string, ids: Ids | null, made: string[] = []): Promise<void> {
  const parent = path.dirname(dir);
  if (parent !== dir && !(await stat(parent).catch(() => null))) await mkdirOwned(parent, ids, made);
  try {
    await mkdir(dir, { mode: 0o700 });
  } catch (err) {
    if (errnoCode(err) === 'EEXIST') return;
    throw err;
  }
  made.push(dir);
  await chmod(dir, 0o700);
  if (ids) await chown(dir, ids.uid, ids.gid);
}

/** rename(2), or a copy beside the target then a rename when it lies on another file system. */
async function move(src: string, dest: string): Promise<void> {
  try {
    await rename(src, dest);
  } catch (err) {
    if (errnoCode(err) !== 'EXDEV') throw err;
    const near = `${dest}.restoring-${randomBytes(4).toString('hex')}`;
    try {
      await cp(src, near, { recursive: true, preserveTimestamps: true, verbatimSymlinks: true, errorOnExist: true, force: false });
      // cp keeps modes; owners are those of the process (root, which may chown): set them again.
      const st = await lstat(src);
      await chown(near, st.uid, st.gid).catch(() => undefined);
      await rename(near, dest);
    } finally {
      await rm(near, { recursive: true, force: true });
    }
    await rm(src, { recursive: true, force: true });
  }
  await fsyncPath(path.dirname(dest));
}

const exists = (p: string) => lstat(p).then(
  () => true,
  () => false,
);

const damaged = (file: string, why: string) => new BackupError(`${file} is damaged (${why}): nothing was restored; use another copy of the backup.`);
/** Largest manifest or registry snapshot read into memory (some 100 bytes a message, 500 a user). */
const MAX_JSON = 512 * 1024 * 1024;

/**
 * Reads the whole archive once, writing nothing: the first entry, the format, every file's
 * size and SHA-256 against the manifest at its end, and the registry's usernames.
 */
async function verifyArchive(file: string): Promise<{ manifest: Manifest; users: { username: string }[] }> {
  const got = new Map<string, FileRecord>();
  const kept = new Map<string, Buffer[]>();
  let first: string | null = null;
  let foreign = 0;
  let duplicate: string | null = null;
  try {
    await list({
      file,
      strict: true,
      onReadEntry: (entry: ReadEntry) => {
        const p = entry.path;
        first ??= p;
        if (entry.type !== 'File' || !acceptedPath(p)) {
          foreign++;
          entry.resume();
          return;
        }
        if (got.has(p)) duplicate = p;
        const hash = createHash('sha256');
        const keep: Buffer[] | null = p === FIRST || p === MANIFEST || p === 'data/registry/snapshot.json' ? [] : null;
        if (keep) kept.set(p, keep);
        let size = 0;
        entry.on('data', (c: Buffer) => {
          hash.update(c);
          size += c.length;
          if (keep && size <= MAX_JSON) keep.push(c);
        });
        entry.on('end', () => got.set(p, { size, sha256: hash.digest('hex') }));
      },
    });
  } catch (err) {
    if (errnoCode(err)) throw new BackupError(`Cannot read the backup ${file}: ${errnoPhrase(err)}.`);
    if (!first && !(await looksLikeArchive(file))) throw new BackupError(`${file} is not a tar archive: give the file that kzymy-server backup wrote; nothing was restored.`);
    throw damaged(file, whatBroke(err));
  }
  if (!first) throw new BackupError(`${file} is not a tar archive: give the file that kzymy-server backup wrote; nothing was restored.`);
  if (first !== FIRST) throw new BackupError(`${file} is not a kzymy backup (it does not begin with ${FIRST}); nothing was restored.`);
  const json = <T>(name: string): T | null => {
    try {
      return JSON.parse(Buffer.concat(kept.get(name) ?? []).toString('utf8')) as T;
    } catch {
      return null;
    }
  };
  const head = json<{ format?: unknown }>(FIRST);
  if (!head) throw damaged(file, `its ${FIRST} cannot be read`);
  if (typeof head.format !== 'number' || head.format > BACKUP_FORMAT) {
    throw new BackupError(`${file} is a kzymy backup of format ${String(head.format)}, newer than this kzymy-server reads (${BACKUP_FORMAT}): restore it with the kzymy version that made it, or a newer one.`);
  }
  const manifest = json<Manifest>(MANIFEST);
  if (!manifest?.files || typeof manifest.files !== 'object') throw damaged(file, `its ${MANIFEST} is missing or unreadable: it may be cut short`);
  if (foreign) throw damaged(file, `${foreign} entr${foreign === 1 ? 'y is' : 'ies are'} not part of a kzymy backup`);
  if (duplicate) throw damaged(file, `${duplicate} is in it twice`);
  for (const [name, want] of Object.entries(manifest.files)) {
    const have = got.get(name);
    if (!have) throw damaged(file, `${name} is missing`);
    if (have.size !== want.size || have.sha256 !== want.sha256) throw damaged(file, `${name} does not match its checksum`);
  }
  for (const name of got.keys()) if (name !== MANIFEST && !(name in manifest.files)) throw damaged(file, `${name} is not in the manifest`);
  const snap = json<{ users?: unknown }>('data/registry/snapshot.json');
  const users = snap?.users;
  if (!Array.isArray(users) || !users.every((u) => isValidUsername((u as { username?: string })?.username ?? ''))) throw damaged(file, 'its registry snapshot cannot be read');
  return { manifest, users: users as { username: string }[] };
}

export async function restore(config: Config, source: string, opts: RestoreOptions, out: Out): Promise<void> {
  const file = path.resolve(source);
  const root = process.getuid?.() === 0;
  if ((opts.owner || opts.onionOwner) && !root) throw new BackupError('--owner and --onion-owner need root; without them the restored files belong to the user running restore.');
  const hsDir = path.dirname(config.tor.hostnameFile);

  // 1. The archive must be a file we can read.
  const st = await stat(file).catch((err: unknown) => {
    throw new BackupError(`Cannot read the backup ${file}: ${errnoPhrase(err) ?? String(err)}.`);
  });
  if (!st.isFile()) throw new BackupError(`${file} is not a file: give the archive that kzymy-server backup wrote.`);

  // 2. The server must not be running.
  for (const [what, host, port] of [['SMTP', config.smtp.host, config.smtp.port], ['web', config.web.host, config.web.port]] as const) {
    if (await listening(host, port)) {
      throw new BackupError(`Something listens on the ${what} port ${host}:${port} (a running kzymy-server?): stop it (systemctl stop kzymy) before restoring.`);
    }
  }

  // 3. The target must hold no users.
  const store = new MaildirStore(config.maildirRoot);
  const held = await store.listUsers();
  if (held.length) {
    throw new BackupError(`${config.maildirRoot} already holds the Maildirs of ${held.length} user${held.length === 1 ? '' : 's'}: restore onto an empty Maildir root (move this one aside first).`);
  }
  const regDir = path.join(config.dataDir, 'registry');
  if (await exists(path.join(config.dataDir, 'registry.json'))) throw new BackupError(`${config.dataDir} already holds a registry (registry.json): restore onto an empty data folder (move it aside first).`);
  if (await exists(regDir)) {
    let count: number;
    try {
      count = await asOwnerOf(regDir, async () => {
        const reg = await openRegistry({ dataDir: config.dataDir });
        const n = reg.count();
        await reg.close();
        return n;
      });
    } catch {
      throw new BackupError(`${regDir} holds a registry that cannot be read: move it aside (mv ${regDir} ${regDir}.damaged), then restore again.`);
    }
    if (count > 0) throw new BackupError(`${regDir} already holds a registry with ${count} user${count === 1 ? '' : 's'}: restore onto an empty data folder (move it aside first).`);
  }

  // 4. Who will own the files.
  let owner: Ids | null = null;
  let onionOwner: Ids | null = null;
  if (root) {
    // Default: whoever owns the data folder already (the appliance's provisioning makes it
    // for the kzymy user), else root itself.
    owner = opts.owner ? await resolveOwner(opts.owner) : await ownerOf(config.dataDir);
    onionOwner = opts.onionOwner ? await resolveOwner(opts.onionOwner) : ((await ownerOf(hsDir)) ?? (await ownerOf(path.dirname(hsDir))));
  }

  // 5. Read the whole archive and check it against its manifest, writing nothing.
  const { manifest, users } = await verifyArchive(file);

  // 6. Extract into a folder beside the data folder.
  let extracting = false;
  const made: string[] = [];
  await mkdirOwned(config.dataDir, owner, made);
  const stage = path.join(config.dataDir, `.restore-${randomBytes(6).toString('hex')}`);
  await mkdir(stage, { mode: 0o700 });
  await chmod(stage, 0o700);
  const undo: Array<() => Promise<void>> = [];
  const cleanups: string[] = [stage];
  try {
    try {
      await extract({ file, cwd: stage, strict: true, preserveOwner: false, noChmod: true, filter: (p, e) => (e as ReadEntry).type === 'File' && p in manifest.files });
    } catch (err) {
      // The archive was read whole a moment ago: this is the disk, or the file changed since.
      extracting = true;
      // node-tar wraps a failed write (ENOSPC) in an entry error that keeps the errno code.
      throw errnoCode(err) ? err : damaged(file, whatBroke(err));
    }
    // The same files again, as written to disk (the archive could have changed since).
    for (const [name, want] of Object.entries(manifest.files)) {
      const got = await sha256File(path.join(stage, name)).catch(() => null);
      if (!got || got.size !== want.size || got.sha256 !== want.sha256) throw damaged(file, `${name} changed while it was restored`);
    }

    // 7. Modes and owners, in the stage (nothing is in place yet).
    const maildirs = path.join(stage, 'maildirs');
    await mkdir(maildirs, { recursive: true });
    for (const u of users) for (const sub of ['tmp', 'new', 'cur']) await mkdir(path.join(maildirs, u.username, sub), { recursive: true });
    await fixTree(path.join(stage, 'data'), owner);
    await fixTree(maildirs, owner);
    const hasTls = await exists(path.join(stage, 'tls/key.pem'));
    if (hasTls) await fixTree(path.join(stage, 'tls'), owner);
    const hasOnion = await exists(path.join(stage, 'onion/hs_ed25519_secret_key'));
    // The appliance's tor makes the hostname group-readable for kzymy: keep the folder's
    // group bits as tor left them on this machine; keys stay 0600.
    const oldHs = await stat(hsDir).catch(() => null);
    const hsDirMode = oldHs ? (oldHs.mode & 0o750) | 0o700 : 0o700;
    if (hasOnion) await fixTree(path.join(stage, 'onion'), onionOwner, hsDirMode, (rel) => (rel === 'hostname' && hsDirMode & 0o050 ? 0o640 : 0o600));

    // 8. Into place: Maildirs, TLS, onion keys, and the registry last (the server starts only
    // with a registry, so an interrupted restore never serves half the data).
    await mkdirOwned(config.maildirRoot, owner, made);
    for (const u of users) {
      const dest = path.join(config.maildirRoot, u.username);
      if (await exists(dest)) throw new BackupError(`${dest} appeared during the restore: nothing was restored.`);
      await move(path.join(maildirs, u.username), dest);
      undo.push(() => rm(dest, { recursive: true, force: true }));
    }
    const replaced: string[] = [];
    const putAside = async (target: string) => {
      if (!(await exists(target))) return;
      const aside = path.join(stage, `old-${replaced.length}`);
      await move(target, aside);
      undo.push(() => move(aside, target));
      replaced.push(target);
    };
    if (hasTls) {
      for (const [name, dest] of [['key.pem', config.smtp.tlsKeyFile], ['cert.pem', config.smtp.tlsCertFile]] as const) {
        await mkdirOwned(path.dirname(dest), owner, made);
        await putAside(dest);
        await move(path.join(stage, 'tls', name), dest);
        undo.push(() => unlink(dest));
      }
    }
    if (hasOnion) {
      await mkdirOwned(path.dirname(hsDir), onionOwner, made);
      await putAside(hsDir);
      await move(path.join(stage, 'onion'), hsDir);
      undo.push(() => rm(hsDir, { recursive: true, force: true }));
    }
    await putAside(regDir);
    await move(path.join(stage, 'data/registry'), regDir);
    undo.length = 0;
    made.length = 0;

    out(`restored     ${file} (made ${manifest.createdAt} by kzymy ${manifest.kzymy})`);
    out(`registry     ${regDir}: ${users.length} user${users.length === 1 ? '' : 's'}`);
    out(`maildirs     ${config.maildirRoot}: ${manifest.counts?.messages ?? 0} messages`);
    out(`tls          ${hasTls ? `${config.smtp.tlsKeyFile}, ${config.smtp.tlsCertFile}` : 'not in the backup (kzymy-server init makes a new certificate)'}`);
    out(`onion keys   ${hasOnion ? `${hsDir}${onionOwner ? ` (owner ${onionOwner.label})` : ''}: start tor again to publish the same address` : 'not in the backup: tor keeps its own keys (a different onion address)'}`);
    if (replaced.length) out(`replaced     ${replaced.join(', ')} (as made on this machine before the restore)`);
    out(`owner        ${owner ? owner.label : 'the user running restore'}; folders 0700, files 0600`);
  } catch (err) {
    for (const step of undo.reverse()) await step().catch(() => undefined);
    if (err instanceof BackupError) throw err;
    throw diskSentence(err, config.dataDir, 'nothing was restored');
  } finally {
    for (const dir of cleanups) await rm(dir, { recursive: true, force: true }).catch(() => undefined);
    // node-tar rejects at the first error while writes of entries already under way still
    // finish: wait for them, and remove what they left, until the stage stays gone.
    if (extracting) {
      for (let i = 0; i < 20; i++) {
        await delay(100);
        if (!(await exists(stage))) break;
        await rm(stage, { recursive: true, force: true }).catch(() => undefined);
      }
    }
    // A failed restore leaves no folder it made (rmdir: only empty ones go).
    for (const dir of made.reverse()) await rmdir(dir).catch(() => undefined);
  }
}
