// Durable file operations for the lowdb engine: write to a temporary name, fsync, put
// in place, fsync the folder. A failure removes the temporary file, and errors that a
// person can act on (a full disk, no permission) become sentences.
import { open, rename, unlink, link, type FileHandle } from 'node:fs/promises';
import { randomBytes } from 'node:crypto';
import path from 'node:path';
import { RegistryError } from './types.js';

export async function syncDir(dir: string): Promise<void> {
  const dh = await open(dir, 'r');
  try {
    await dh.sync();
  } finally {
    await dh.close();
  }
}

/** Writes all of `buf` at the file's end (the handle is opened for appending). */
export async function appendAll(fh: FileHandle, buf: Buffer): Promise<void> {
  let done = 0;
  while (done < buf.length) {
    const { bytesWritten } = await fh.write(buf, done, buf.length - done, null);
    done += bytesWritten;
  }
}

export const tmpName = (dir: string, base: string) => path.join(dir, `.${base}.${process.pid}.${randomBytes(4).toString('hex')}.tmp`);

/**
 * Writes a file durably. `body` receives the open handle and writes the content (it may
 * write in pieces and yield between them). `mode` 'replace' renames over an existing
 * file; 'create' links, so it never replaces one (returns false if the name exists).
 */
export async function writeDurable(
  file: string,
  body: (fh: FileHandle) => Promise<void>,
  how: 'replace' | 'create' = 'replace',
): Promise<boolean> {
  const dir = path.dirname(file);
  const tmp = tmpName(dir, path.basename(file));
  let placed = false;
  try {
    const fh = await open(tmp, 'wx', 0o600);
    try {
      await body(fh);
      await fh.sync();
    } finally {
      await fh.close();
    }
    if (how === 'replace') {
      await rename(tmp, file);
      placed = true;
    } else {
      try {
        await link(tmp, file);
        placed = true;
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
      }
    }
    await syncDir(dir);
    return placed;
  } catch (err) {
    throw asWriteError(err, file);
  } finally {
    if (how === 'create' || !placed) await unlink(tmp).catch(() => undefined);
  }
}

/** A file-system error during a registry write, as a sentence that says what to do. */
export function asWriteError(err: unknown, file: string): Error {
  if (err instanceof RegistryError) return err;
  const code = (err as NodeJS.ErrnoException).code;
  const where = path.dirname(file);
  if (code === 'ENOSPC' || code === 'EDQUOT') {
    return new RegistryError('write-failed', `The registry could not be saved: the disk holding ${where} is full. Free some space and try again; nothing was changed.`, { cause: err });
  }
  if (code === 'EACCES' || code === 'EPERM' || code === 'EROFS') {
    return new RegistryError('write-failed', `The registry could not be saved: ${where} is not writable by this user (${code}). Run kzymy as the user that owns it; nothing was changed.`, { cause: err });
  }
  if (code === 'EIO') {
    return new RegistryError('write-failed', `The registry could not be saved: the disk holding ${where} reported an I/O error. Check the disk; the change may not have been kept.`, { cause: err });
  }
  return err instanceof Error ? err : new Error(String(err));
}
