// The Maildir part of a backup, taken while mail arrives and is fetched.
//
// A message file is complete from the moment it appears in new/ (the server writes it in
// tmp/, fsyncs it, then renames it) and is never written again, so only new/ and cur/ are
// read, never tmp/. Each file is opened once and archived from that open descriptor: a
// fetch that deletes it afterwards cannot shorten it (the data stays until it is closed),
// and one that deletes it first makes it absent. A message moved from new/ to cur/ while
// the backup runs is looked up again by its base name, so it is archived exactly once.
import { readdir } from 'node:fs/promises';
import path from 'node:path';
import cliProgress from 'cli-progress';
import { errnoCode } from '../config/errno.js';
import { isValidId, type MaildirStore } from '../maildir/index.js';
import type { ArchiveWriter } from './archive-writer.js';
import { openFile, readChunks } from './backup-files.js';

/** A message's name without its Maildir flags (":2,S"): the same message in new/ and cur/. */
const baseOf = (id: string) => (id.includes(':') ? id.slice(0, id.indexOf(':')) : id);

async function namesIn(dir: string): Promise<string[]> {
  try {
    return (await readdir(dir)).filter((n) => !n.startsWith('.') && isValidId(n));
  } catch (err) {
    if (errnoCode(err) === 'ENOENT') return [];
    throw err;
  }
}

/** A progress bar on stderr for `total` messages, or null (not wanted, or nothing to count). */
function progressBar(wanted: boolean, total: number): cliProgress.SingleBar | null {
  if (!wanted || total === 0) return null;
  const bar = new cliProgress.SingleBar({ stream: process.stderr, format: 'backup [{bar}] {value}/{total} messages', hideCursor: true, clearOnComplete: true }, cliProgress.Presets.shades_classic);
  bar.start(total, 0);
  return bar;
}

/**
 * Archives the Maildirs of `users` as maildirs/USER/new|cur/NAME: new/ then cur/ (a message
 * moves only that way), each message once. With `progress`, draws a bar on stderr meanwhile.
 */
export async function archiveMaildirs(w: ArchiveWriter, store: MaildirStore, users: string[], progress: boolean): Promise<{ messages: number; messageBytes: number }> {
  const plan = await Promise.all(
    users.map(async (user) => {
      const dir = store.userDir(user);
      const fresh = await namesIn(path.join(dir, 'new'));
      const seen = await namesIn(path.join(dir, 'cur'));
      return { user, dir, lists: { new: fresh, cur: seen } };
    }),
  );
  const bar = progressBar(progress, plan.reduce((n, p) => n + p.lists.new.length + p.lists.cur.length, 0));
  let messages = 0;
  let messageBytes = 0;
  try {
    for (const { user, dir, lists } of plan) {
      const done = new Set<string>();
      const archive = async (sub: 'new' | 'cur', name: string): Promise<boolean> => {
        const fhm = await openFile(path.join(dir, sub, name));
        if (!fhm) return false;
        try {
          const st = await fhm.stat();
          if (!st.isFile()) return false;
          await w.add(`maildirs/${user}/${sub}/${name}`, st.size, st.mtime, readChunks(fhm, st.size));
          messages++;
          messageBytes += st.size;
          done.add(baseOf(name));
          return true;
        } finally {
          await fhm.close();
        }
      };
      for (const sub of ['new', 'cur'] as const) {
        for (const name of lists[sub]) {
          bar?.increment();
          if (done.has(baseOf(name))) continue;
          if (await archive(sub, name)) continue;
          // Gone: moved on (new/ -> cur/, or a flag change in cur/) or deleted by a fetch.
          const moved = (await namesIn(path.join(dir, 'cur'))).find((n) => baseOf(n) === baseOf(name) && n !== name);
          if (moved) await archive('cur', moved);
        }
      }
    }
  } finally {
    bar?.stop();
  }
  return { messages, messageBytes };
}
