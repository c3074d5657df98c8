// The public keys of the lowdb engine: keys/SHA256.asc, one file a key, named by the
// SHA-256 of its armor and written once, outside the snapshot and outside memory, so a
// change never rewrites keys and the in-memory index stays small.
import { readdir, stat, unlink, utimes } from 'node:fs/promises';
import path from 'node:path';
import { setImmediate as yieldNow } from 'node:timers/promises';
import type { User } from './types.js';
import { keyIdOf } from './engine.js';
import { damaged, exists, readIfExists, writeRegistryFile } from './files.js';

/** Unreferenced key files older than this are removed at compaction (younger ones may belong to a signup in flight). */
const KEY_GRACE_MS = 3600_000;

export class KeyFiles {
  constructor(readonly dir: string) {}

  private file(keyId: string): string {
    return path.join(this.dir, `${keyId}.asc`);
  }

  /** Stores an armored key under its SHA-256 and returns that id. */
  async store(armored: string): Promise<string> {
    const keyId = keyIdOf(armored);
    const file = this.file(keyId);
    const placed = await writeRegistryFile(file, (fh) => fh.writeFile(armored, 'utf8').then(() => undefined), 'create');
    // Already there: mark it fresh so that compaction does not take it as unused meanwhile.
    if (!placed) await utimes(file, new Date(), new Date()).catch(() => undefined);
    return keyId;
  }

  /** The key of `user`, checked against its name. */
  async read(user: User): Promise<string> {
    const file = this.file(user.keyId);
    const armored = await readIfExists(file);
    if (armored === null) throw damaged(file, `is missing (the key of user ${user.username})`);
    if (keyIdOf(armored) !== user.keyId) throw damaged(file, 'does not hold the key its name says');
    return armored;
  }

  /**
   * After a change that refers to a key file: if it went meanwhile (its former account was
   * deleted at that very moment, and the deleter removed the file), it is written again.
   */
  async keep(user: User, armored: string): Promise<void> {
    if (!(await exists(this.file(user.keyId)))) await this.store(armored);
  }

  async drop(keyId: string): Promise<void> {
    await unlink(this.file(keyId)).catch(() => undefined);
  }

  /** Removes key files that none of `users` refers to (after an account was deleted or changed its key). */
  async collect(users: Iterable<User>): Promise<void> {
    const used = new Set<string>();
    for (const u of users) used.add(`${u.keyId}.asc`);
    const now = Date.now();
    let n = 0;
    for (const name of await readdir(this.dir)) {
      if (used.has(name) || !name.endsWith('.asc')) continue;
      const file = path.join(this.dir, name);
      const s = await stat(file).catch(() => null);
      if (s && now - s.mtimeMs > KEY_GRACE_MS) await unlink(file).catch(() => undefined);
      if (++n % 1000 === 0) await yieldNow();
    }
  }
}
