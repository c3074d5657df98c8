// Durable files of the lowdb engine, written by src/config/durable.ts; errors that a person can
// act on (a full disk, no permission) become sentences.
import type { FileHandle } from 'node:fs/promises';
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
