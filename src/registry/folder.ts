// The registry folder of the lowdb engine (DATA_DIR/registry/): made whole in a temporary
// place and renamed into place, so that it is never half made; empty for a new registry,
// or converted once from the single-file registry.json of kzymy 0.1.
import { mkdir, open, rename, rm, unlink } from 'node:fs/promises';
import { randomBytes } from 'node:crypto';
import path from 'node:path';
import type { Logger } from '../config/log.js';
import { fsyncPath } from '../config/durable.js';
import type { User } from './types.js';
import { asUser } from './ops.js';
import { keyIdOf } from './engine.js';
import { asWriteError, damaged, errno, exists, parseJson, readIfExists } from './files.js';
import { journalName, writeSnapshot } from './snapshot.js';

/** The registry folder in dataDir, made first where there is none (converting a registry.json). */
export async function ensureFolder(dataDir: string, logger?: Logger, beforeCreate?: () => Promise<void>): Promise<string> {
  const dir = path.join(dataDir, 'registry');
  await mkdir(dataDir, { recursive: true, mode: 0o700 });
  if (!(await exists(dir))) {
    const legacy = path.join(dataDir, 'registry.json');
    if (await exists(legacy)) await migrate(legacy, dir, logger);
    else {
      await beforeCreate?.();
      await createFolder(dir, []);
    }
  }
  return dir;
}

/** Whether dataDir holds a registry, in the folder layout or as a registry.json to convert. */
export async function registryExists(dataDir: string): Promise<boolean> {
  return (await exists(path.join(dataDir, 'registry'))) || (await exists(path.join(dataDir, 'registry.json')));
}

/** Makes a registry folder in a temporary place and renames it into place; false if another process made it first. */
async function createFolder(dir: string, users: User[], keys: Map<string, string> = new Map()): Promise<boolean> {
  const tmp = `${dir}.new-${process.pid}-${randomBytes(4).toString('hex')}`;
  try {
    await mkdir(path.join(tmp, 'keys'), { recursive: true, mode: 0o700 });
    const entries = [...keys];
    for (let i = 0; i < entries.length; i += 64) {
      await Promise.all(
        entries.slice(i, i + 64).map(async ([keyId, armored]) => {
          const fh = await open(path.join(tmp, 'keys', `${keyId}.asc`), 'wx', 0o600);
          try {
            await fh.writeFile(armored, 'utf8');
            await fh.sync();
          } finally {
            await fh.close();
          }
        }),
      );
    }
    await fsyncPath(path.join(tmp, 'keys'));
    await writeSnapshot(path.join(tmp, 'snapshot.json'), 1, users);
    const j = await open(path.join(tmp, journalName(1)), 'a', 0o600);
    await j.close();
    await fsyncPath(tmp);
    try {
      await rename(tmp, dir);
    } catch (err) {
      // Another process made it first: use theirs.
      if (errno(err) === 'EEXIST' || errno(err) === 'ENOTEMPTY') return false;
      throw err;
    }
    await fsyncPath(path.dirname(dir));
    return true;
  } catch (err) {
    throw asWriteError(err, path.join(dir, 'snapshot.json'));
  } finally {
    await rm(tmp, { recursive: true, force: true }).catch(() => undefined);
  }
}

const LEGACY = 'registry.json (or the registry folder)';

/** Converts the single-file registry.json of kzymy 0.1 into the folder layout, once. */
async function migrate(legacy: string, dir: string, logger?: Logger): Promise<void> {
  const text = await readIfExists(legacy);
  // Another process converted it a moment ago: its folder is there now.
  if (text === null) return;
  const d = parseJson(legacy, text, LEGACY) as { version?: unknown; users?: unknown } | null;
  if (!d || d.version !== 1 || !Array.isArray(d.users)) throw damaged(legacy, 'is not a kzymy registry', LEGACY);
  logger?.info({ evt: 'registry-migrating', users: (d.users as unknown[]).length }, 'converting registry.json into the registry folder (once; about a second per thousand users)');
  const users: User[] = [];
  const keys = new Map<string, string>();
  for (const raw of d.users as Record<string, unknown>[]) {
    const publicKey = raw?.publicKey;
    if (typeof publicKey !== 'string') throw damaged(legacy, 'holds a user without a key', LEGACY);
    const keyId = keyIdOf(publicKey);
    const u = asUser({ ...raw, keyId, publicKey: undefined });
    if (!u) throw damaged(legacy, `holds a user record that is not valid (${users.length + 1}th)`, LEGACY);
    users.push(u);
    keys.set(keyId, publicKey);
  }
  await createFolder(dir, users, keys);
  // Removed, not kept: it would hold every account deleted later (back up before upgrading).
  await unlink(legacy).catch(() => undefined);
  await fsyncPath(path.dirname(dir));
  logger?.info({ evt: 'registry-migrated', users: users.length }, 'converted registry.json into the registry folder');
}
