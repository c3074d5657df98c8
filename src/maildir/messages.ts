// The messages in one user's Maildir as kzymy's store sees them on disk: every file of new/ and
// cur/ with its size and receipt time (from the name where it tells them), finding one by id
// (also after a mail reader moved it to cur/ adding flags), and reading one.
import { open, lstat, stat, type FileHandle } from 'node:fs/promises';
import path from 'node:path';
import type { Readable } from 'node:stream';
import { notFound, type MessageInfo } from './errors.js';
import { errno, ignoreMissing, readdirOrEmpty } from './folders.js';
import { baseOf, isValidId, sizeFromName, timeFromName } from './names.js';

export const MESSAGE_DIRS = ['new', 'cur'] as const;
export type MessageDir = (typeof MESSAGE_DIRS)[number];

/** What the store knows of one message on disk. */
export interface Entry {
  id: string;
  dir: MessageDir;
  size: number;
  receivedAt: number;
}

/** Every message file (non-dot, not a folder) in DIR/new and DIR/cur with its size and receipt time. */
export async function scan(dir: string): Promise<Entry[]> {
  const out: Entry[] = [];
  for (const sub of MESSAGE_DIRS) {
    const folder = path.join(dir, sub);
    const found = await Promise.all(
      (await readdirOrEmpty(folder))
        .filter((d) => !d.name.startsWith('.') && !d.isDirectory())
        .map(async (d): Promise<Entry | null> => {
          let size = sizeFromName(d.name);
          let receivedAt = timeFromName(d.name);
          // Only names without `,S=` or a leading time cost a stat.
          if (size === null || receivedAt === null) {
            const st = await ignoreMissing(stat(path.join(folder, d.name)));
            if (!st || !st.isFile()) return null;
            size ??= st.size;
            receivedAt ??= st.mtimeMs;
          }
          return { id: d.name, dir: sub, size, receivedAt };
        }),
    );
    for (const e of found) if (e) out.push(e);
  }
  return out;
}

/**
 * Finds a message by id in DIR/new or DIR/cur. When the exact name is gone, a file with the
 * same base name is accepted: a MUA may have moved it to cur/ adding `:2,FLAGS`.
 */
export async function locate(dir: string, id: string): Promise<{ dir: MessageDir; id: string } | null> {
  for (const sub of MESSAGE_DIRS) {
    if (await ignoreMissing(lstat(path.join(dir, sub, id)))) return { dir: sub, id };
  }
  const base = baseOf(id);
  for (const sub of MESSAGE_DIRS) {
    for (const d of await readdirOrEmpty(path.join(dir, sub))) {
      if (d.isFile() && baseOf(d.name) === base && isValidId(d.name)) return { dir: sub, id: d.name };
    }
  }
  return null;
}

/**
 * The message `id` (already checked valid) of the Maildir DIR: a message of at most `max`
 * bytes comes whole, as one Buffer read at once (for a small message, a stream's machinery
 * costs more than the read itself); a larger one as a stream. Throws 'not-found'.
 */
export async function readMessage(dir: string, id: string, max: number): Promise<{ info: MessageInfo; body: Buffer | Readable }> {
  for (let attempt = 0; attempt < 3; attempt++) {
    // Most reads are of a message still in new/ under its listed name: opened at once.
    const found = attempt === 0 ? { dir: 'new' as const, id } : await locate(dir, id);
    if (!found) break;
    let fh: FileHandle;
    try {
      fh = await open(path.join(dir, found.dir, found.id), 'r');
    } catch (err) {
      // Moved or removed between locate and open: look once more.
      if (errno(err) === 'ENOENT') continue;
      throw err;
    }
    let streaming = false;
    try {
      const st = await fh.stat();
      if (!st.isFile()) throw notFound();
      const receivedAt = timeFromName(found.id) ?? st.mtimeMs;
      const info = { id: found.id, size: st.size, receivedAt: new Date(Math.floor(receivedAt)) };
      if (st.size <= max) {
        const bytes = Buffer.allocUnsafe(st.size);
        let got = 0;
        while (got < st.size) {
          const { bytesRead } = await fh.read(bytes, got, st.size - got, got);
          if (bytesRead === 0) break; // shorter than its stat: only what is there
          got += bytesRead;
        }
        return { info: { ...info, size: got }, body: bytes.subarray(0, got) };
      }
      streaming = true;
      // With its end given, the stream stops at the size instead of reading once more for EOF.
      return { info, body: fh.createReadStream(st.size > 0 ? { start: 0, end: st.size - 1 } : {}) };
    } finally {
      if (!streaming) await fh.close().catch(() => undefined);
    }
  }
  throw notFound();
}
