// Removing files from one user's Maildir for kzymy's store: a message by id, the messages
// older than a date, and what a process left in tmp/. The unlinks here are not fsynced: the
// store fsyncs each folder touched once, after all of them.
import { lstat, unlink } from 'node:fs/promises';
import path from 'node:path';
import { errno, ignoreMissing, readdirOrEmpty } from './folders.js';
import { locate, scan, type Entry, type MessageDir } from './messages.js';
import { HOST, sizeFromName, timeFromName, writerOf } from './names.js';

/** maildir(5): a file left in tmp/ this long is abandoned, whoever wrote it. */
export const TMP_ABANDONED_MS = 36 * 3600 * 1000;

/** Whether process `pid` of this host is running (EPERM: it is, as another user). */
function running(pid: number): boolean {
  if (pid === process.pid) return false; // this process is starting: nothing of it is in flight yet
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return errno(err) === 'EPERM';
  }
}

/**
 * Whether a file found in tmp/ at start is abandoned. The Maildir root may be shared by
 * several nodes (and by several processes of one host): a file is removed only when its
 * writer is known gone, that is written on this host by a process that is no longer running;
 * a file of another host, or of a form kzymy does not write, only after TMP_ABANDONED_MS.
 */
export async function abandonedTmp(name: string, file: string, now = Date.now()): Promise<boolean> {
  const w = writerOf(name);
  if (w && w.host === HOST) return !running(w.pid);
  const st = await ignoreMissing(lstat(file));
  return st !== undefined && now - st.mtimeMs >= TMP_ABANDONED_MS;
}

/**
 * Unlinks the message `id` (already checked valid) from DIR/new or DIR/cur, or answers null
 * when it is not there. Size and time come from the name, else from lstat (for the usage cache).
 */
export async function unlinkMessage(dir: string, id: string): Promise<Entry | null> {
  for (let attempt = 0; attempt < 2; attempt++) {
    // Most acknowledged messages are still in new/ under their listed names: unlinked at
    // once, without a look first (size and time are in such a name).
    if (attempt === 0 && sizeFromName(id) !== null && timeFromName(id) !== null) {
      try {
        await unlink(path.join(dir, 'new', id));
        return { id, dir: 'new', size: sizeFromName(id)!, receivedAt: timeFromName(id)! };
      } catch (err) {
        if (errno(err) !== 'ENOENT') throw err;
      }
    }
    const found = await locate(dir, id);
    if (!found) return null;
    const file = path.join(dir, found.dir, found.id);
    const size = sizeFromName(found.id);
    const time = timeFromName(found.id);
    const st = size === null || time === null ? await ignoreMissing(lstat(file)) : undefined;
    try {
      await unlink(file);
    } catch (err) {
      if (errno(err) === 'ENOENT') continue; // moved new/ -> cur/ meanwhile: look again
      throw err;
    }
    return { id: found.id, dir: found.dir, size: size ?? st?.size ?? 0, receivedAt: time ?? st?.mtimeMs ?? 0 };
  }
  return null;
}

/**
 * Unlinks the messages of the Maildir DIR received before `limit` (ms), telling `onGone` of
 * each at once; answers the folders touched.
 */
export async function unlinkOlder(dir: string, limit: number, onGone: (e: Entry) => void): Promise<Set<MessageDir>> {
  const touched = new Set<MessageDir>();
  for (const e of await scan(dir)) {
    if (e.receivedAt >= limit) continue;
    try {
      await unlink(path.join(dir, e.dir, e.id));
    } catch (err) {
      if (errno(err) === 'ENOENT') continue; // someone else removed it first
      throw err;
    }
    touched.add(e.dir);
    onGone(e);
  }
  return touched;
}

/** Unlinks the files of the folder `tmp` that `match` accepts; how many. */
export async function unlinkTmp(tmp: string, match: (name: string, file: string) => boolean | Promise<boolean>): Promise<number> {
  let count = 0;
  for (const d of await readdirOrEmpty(tmp)) {
    if (d.isDirectory() || !(await match(d.name, path.join(tmp, d.name)))) continue;
    try {
      await unlink(path.join(tmp, d.name));
      count++;
    } catch (err) {
      if (errno(err) !== 'ENOENT') throw err;
    }
  }
  return count;
}
