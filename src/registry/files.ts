// Files of the lowdb engine: durable writes (by src/config/durable.ts), reads of files that
// may be absent, and errors that a person can act on (a full disk, no permission, a damaged
// file) as sentences.
import { readFile, stat, type FileHandle } from 'node:fs/promises';
import path from 'node:path';
import { writeDurable } from '../config/durable.js';
import { RegistryError } from './types.js';

/** A durable registry file (see src/config/durable.ts); a failure becomes a sentence that says what to do. */
export async function writeRegistryFile(file: string, body: (fh: FileHandle) => Promise<void>, how: 'replace' | 'create' = 'replace'): Promise<boolean> {
  try {
    return await writeDurable(file, body, { how });
  } catch (err) {
    throw asWriteError(err, file);
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

export const errno = (err: unknown) => (err as NodeJS.ErrnoException).code;

export const exists = (p: string) =>
  stat(p).then(
    () => true,
    (err) => (errno(err) === 'ENOENT' ? false : Promise.reject(err)),
  );

/** The text of `file`, or null if there is no such file. */
export const readIfExists = (file: string) => readFile(file, 'utf8').catch((err) => (errno(err) === 'ENOENT' ? null : Promise.reject(err)));

/** A registry file that cannot be used as it is: the sentence says to restore `restore` from the backup. */
export function damaged(file: string, what: string, restore = 'the registry folder'): RegistryError {
  return new RegistryError(
    'damaged',
    `The registry file ${file} ${what}. kzymy will not start on a damaged registry (senders would get permanent bounces): ` +
      `restore ${restore} from your backup, then start again.`,
  );
}

/** The JSON value `text` (read from `file`); a file that is not JSON is damaged. */
export function parseJson(file: string, text: string, restore?: string): unknown {
  try {
    return JSON.parse(text) as unknown;
  } catch {
    throw damaged(file, 'is not valid JSON', restore);
  }
}
