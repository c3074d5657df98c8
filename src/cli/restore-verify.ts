// Restore's first reading of an archive: the whole of it once, writing nothing, checked
// against the manifest at its end, so that a damaged or foreign archive puts nothing in place.
import { createHash } from 'node:crypto';
import { open } from 'node:fs/promises';
import { list, type ReadEntry } from 'tar';
import { errnoCode, errnoPhrase } from '../config/errno.js';
import { isValidUsername } from '../maildir/index.js';
import { acceptedPath, BACKUP_FORMAT, BackupError, FIRST, MANIFEST, SNAPSHOT, type FileRecord, type Manifest } from './backup-format.js';

/** The sentence for an archive that cannot be used, and why. */
export const damaged = (file: string, why: string): BackupError => new BackupError(`${file} is damaged (${why}): nothing was restored; use another copy of the backup.`);
/** Largest manifest or registry snapshot read into memory (some 100 bytes a message, 500 a user). */
const MAX_JSON = 512 * 1024 * 1024;

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
export function whatBroke(err: unknown): string {
  const e = err as { message?: string; code?: string; errno?: number };
  const msg = String(e.message ?? err);
  if (/truncated|unexpected end/i.test(msg)) return 'it is cut short';
  if (e.code?.startsWith('Z_') || /incorrect header check|invalid .*(distance|code|block)|zlib/i.test(msg)) return 'its compressed data is corrupt';
  if (/checksum/i.test(msg)) return 'an entry header does not match its checksum';
  return msg.replace(/^TAR_[A-Z_]+:\s*/, '');
}

/**
 * Reads the whole archive once, writing nothing: the first entry, the format, every file's
 * size and SHA-256 against the manifest at its end, and the registry's usernames.
 */
export async function verifyArchive(file: string): Promise<{ manifest: Manifest; users: { username: string }[] }> {
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
        const keep: Buffer[] | null = p === FIRST || p === MANIFEST || p === SNAPSHOT ? [] : null;
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
  const snap = json<{ users?: unknown }>(SNAPSHOT);
  const users = snap?.users;
  if (!Array.isArray(users) || !users.every((u) => isValidUsername((u as { username?: string })?.username ?? ''))) throw damaged(file, 'its registry snapshot cannot be read');
  return { manifest, users: users as { username: string }[] };
}
