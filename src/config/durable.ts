// Durable files, written once for every part of kzymy that keeps state on disk (the registry,
// the client's profile and records, backups, the Maildir folders): write to a temporary name
// beside the file, fsync it, put it in place, fsync the folder. A crash leaves either the old
// file or the new one, never a part of either.
import { randomBytes } from 'node:crypto';
import { link, mkdir, open, rename, unlink, type FileHandle } from 'node:fs/promises';
import path from 'node:path';

/** fsync of a file or directory by path (a directory's entries become durable). */
export async function fsyncPath(p: string): Promise<void> {
  const fh = await open(p, 'r');
  try {
    await fh.sync();
  } finally {
    await fh.close();
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

/** A temporary name in `dir` for `base`, hidden and unique to this process and call. */
export const tmpName = (dir: string, base: string) => path.join(dir, `.${base}.${process.pid}.${randomBytes(4).toString('hex')}.tmp`);

export interface DurableOptions {
  /** 'replace' renames over an existing file; 'create' links, so it never replaces one. */
  how?: 'replace' | 'create';
  /** Create the folder (mode 0700) when it does not exist. */
  mkdir?: boolean;
}

/**
 * Writes `file` durably, mode 0600 whatever the umask. `body` is the content, or receives the
 * open handle and writes it (in pieces, yielding between them, if it likes). Returns false
 * when `how` is 'create' and the name exists already. On any failure the temporary file is
 * removed and the error (a file-system error with its code) is thrown as it came.
 */
export async function writeDurable(file: string, body: string | Buffer | ((fh: FileHandle) => Promise<void>), options: DurableOptions = {}): Promise<boolean> {
  const how = options.how ?? 'replace';
  const dir = path.dirname(file);
  if (options.mkdir) await mkdir(dir, { recursive: true, mode: 0o700 });
  const tmp = tmpName(dir, path.basename(file));
  let placed = false;
  try {
    const fh = await open(tmp, 'wx', 0o600);
    try {
      await fh.chmod(0o600);
      if (typeof body === 'function') await body(fh);
      else await fh.writeFile(body);
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
    await fsyncPath(dir);
    return placed;
  } finally {
    if (how === 'create' || !placed) await unlink(tmp).catch(() => undefined);
  }
}
