// How a restore puts files in place: modes and owners on a tree, folders made with an
// owner, moves that also work across file systems.
import { randomBytes } from 'node:crypto';
import { chmod, chown, cp, lstat, mkdir, readdir, rename, rm, stat } from 'node:fs/promises';
import path from 'node:path';
import { fsyncPath } from '../config/durable.js';
import { errnoCode } from '../config/errno.js';
import type { Ids } from './backup-owners.js';

/** Whether anything (a symbolic link too) is at p. */
export const exists = (p: string): Promise<boolean> => lstat(p).then(
  () => true,
  () => false,
);

/** Sets modes (folders 0700, files 0600 unless `fileMode` says otherwise) and owners on a tree. */
export async function fixTree(root: string, ids: Ids | null, dirMode = 0o700, fileMode: (rel: string) => number = () => 0o600, rel = ''): Promise<void> {
  const here = path.join(root, rel);
  const st = await lstat(here);
  if (st.isDirectory()) {
    for (const name of await readdir(here)) await fixTree(root, ids, dirMode, fileMode, rel ? `${rel}/${name}` : name);
    await chmod(here, dirMode);
  } else await chmod(here, fileMode(rel));
  if (ids) await chown(here, ids.uid, ids.gid);
}

/** mkdir -p with mode 0700 and an owner; records the folders it made in `made` (outermost first). */
export async function mkdirOwned(dir: string, ids: Ids | null, made: string[] = []): Promise<void> {
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
export async function move(src: string, dest: string): Promise<void> {
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
