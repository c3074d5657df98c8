// Who a backup reads as and who owns what a restore puts in place, when run as root.
import { execFile } from 'node:child_process';
import { stat } from 'node:fs/promises';
import { promisify } from 'node:util';
import { BackupError } from './backup-format.js';

const run = promisify(execFile);

/**
 * Runs fn with the effective user and group of dir's owner when this process is root.
 * Opening a registry may create the journal file a writer moves on to; made by root, the
 * server (running as its own user) could no longer append to it.
 */
export async function asOwnerOf<T>(dir: string, fn: () => Promise<T>): Promise<T> {
  const st = process.geteuid?.() === 0 ? await stat(dir).catch(() => null) : null;
  if (!st || st.uid === 0 || !process.seteuid || !process.setegid) return fn();
  process.setegid(st.gid);
  process.seteuid(st.uid);
  try {
    return await fn();
  } finally {
    process.seteuid(0);
    process.setegid(0);
  }
}

export interface Ids {
  uid: number;
  gid: number;
  label: string;
}

/** USER[:GROUP] or numeric ids, looked up with id(1) and getent(1). */
export async function resolveOwner(spec: string): Promise<Ids> {
  const [user, group] = spec.split(':', 2);
  const lookup = async (args: string[], what: string): Promise<number> => {
    if (/^\d+$/.test(args[args.length - 1])) return Number(args[args.length - 1]);
    try {
      const { stdout } = await run(args[0], args.slice(1));
      const n = Number(args[0] === 'getent' ? stdout.split(':')[2] : stdout.trim());
      if (Number.isInteger(n)) return n;
    } catch {
      // below
    }
    throw new BackupError(`There is no ${what} "${args[args.length - 1]}" on this machine: check --owner / --onion-owner.`);
  };
  if (!user) throw new BackupError(`"${spec}" is not USER[:GROUP].`);
  const uid = await lookup(['id', '-u', user], 'user');
  const gid = group ? await lookup(['getent', 'group', group], 'group') : /^\d+$/.test(user) ? uid : await lookup(['id', '-g', user], 'user');
  return { uid, gid, label: `${user}:${group ?? gid}` };
}

/** The owner of dir, or null when it does not exist. */
export async function ownerOf(dir: string): Promise<Ids | null> {
  const st = await stat(dir).catch(() => null);
  return st ? { uid: st.uid, gid: st.gid, label: `${st.uid}:${st.gid}, as ${dir}` } : null;
}
