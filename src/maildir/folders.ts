// The folders of kzymy's Maildir store: making root/USER/{tmp,new,cur} (mode 0700 whatever
// the umask, their entries made durable), and reading folders where a missing path is no error
// (another process may remove a message or a user at any time).
import type { Dirent } from 'node:fs';
import { chmod, lstat, mkdir, readdir } from 'node:fs/promises';
import path from 'node:path';

const DIR_MODE = 0o700;
const SUBDIRS = ['tmp', 'new', 'cur'] as const;

export function errno(err: unknown): string | undefined {
  return (err as NodeJS.ErrnoException | null)?.code;
}

/** `p`'s value, or undefined when it fails with ENOENT. */
export async function ignoreMissing<T>(p: Promise<T>): Promise<T | undefined> {
  try {
    return await p;
  } catch (err) {
    if (errno(err) === 'ENOENT') return undefined;
    throw err;
  }
}

/** readdir with file types; a missing folder reads as empty. */
export async function readdirOrEmpty(dir: string): Promise<Dirent[]> {
  return (await ignoreMissing(readdir(dir, { withFileTypes: true }))) ?? [];
}

/** mkdir with an explicit chmod (mkdir's mode is cut by the umask); true if created. */
async function mkdirMode(dir: string): Promise<boolean> {
  try {
    await mkdir(dir, { mode: DIR_MODE });
  } catch (err) {
    if (errno(err) !== 'EEXIST') throw err;
    // Something is there already: fine if it is a folder, an error otherwise.
    if (!(await lstat(dir)).isDirectory()) {
      throw Object.assign(new Error(`not a directory: ${dir}`), { code: 'ENOTDIR' });
    }
    return false;
  }
  await chmod(dir, DIR_MODE);
  return true;
}

/**
 * Creates `root` (not its parents), root/USER (`dir`) and its tmp/new/cur where missing. Each
 * folder that got a new entry is fsynced with `sync`, or new/ (and the mail in it) could vanish
 * in a crash.
 */
export async function makeUserFolders(root: string, dir: string, sync: (folder: string) => Promise<void>): Promise<void> {
  const madeRoot = await mkdirMode(root);
  const madeUser = await mkdirMode(dir);
  let madeSub = false;
  for (const sub of SUBDIRS) madeSub = (await mkdirMode(path.join(dir, sub))) || madeSub;
  if (madeSub) await sync(dir);
  if (madeUser) await sync(root);
  if (madeRoot) await sync(path.dirname(root));
}
