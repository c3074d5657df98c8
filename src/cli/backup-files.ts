// Reading the files a backup archives and a restore checks: regular files only (never
// through a symbolic link), in chunks from one open descriptor.
import { createHash } from 'node:crypto';
import { constants as fsc } from 'node:fs';
import { open, type FileHandle } from 'node:fs/promises';
import { errnoCode } from '../config/errno.js';
import type { FileRecord } from './backup-format.js';

const CHUNK = 256 * 1024;

/** The first `size` bytes of the open file, read from its start in chunks; stops early at its end. */
export async function* readChunks(fh: FileHandle, size: number): AsyncGenerator<Buffer> {
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
export async function openFile(file: string): Promise<FileHandle | null> {
  try {
    return await open(file, fsc.O_RDONLY | fsc.O_NOFOLLOW);
  } catch (err) {
    const code = errnoCode(err);
    if (code === 'ENOENT' || code === 'ELOOP') return null;
    throw err;
  }
}

/** Size and SHA-256 of a file (not through a symbolic link). */
export async function sha256File(file: string): Promise<FileRecord> {
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
