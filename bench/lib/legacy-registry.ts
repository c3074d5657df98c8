// kzymy 0.1's single-file registry (src/registry/index.ts at commit 3caa94d), copied verbatim and
// kept as the baseline of bench/registry.ts: one registry.json rewritten whole on every change.
// Not used by kzymy itself.
// The registry: users, their public keys and address policy, on lowdb.
// This module is the only writer of registry.json. It stores public data
// only: never a secret key, a password, or anything that locates the user.
import { Low } from 'lowdb';
import { open, mkdir, rename, readFile, unlink, stat } from 'node:fs/promises';
import { randomInt } from 'node:crypto';
import path from 'node:path';

export interface User {
  username: string;
  /** Primary key fingerprint, upper-case hex. One key, one account. */
  fingerprint: string;
  /** ASCII-armored public key (never a secret key). */
  publicKey: string;
  /** ISO date the key stops being usable for encryption, or null. */
  keyExpiresAt: string | null;
  createdAt: string;
  disabled: boolean;
  /** On: every local part arrives except blocked ones. Off: only aliases. */
  catchAll: boolean;
  aliases: string[];
  blocked: string[];
  /** Key-expiry notices already delivered, e.g. "14d:2027-01-01". */
  notices: string[];
}

export interface NewUser {
  fingerprint: string;
  publicKey: string;
  keyExpiresAt: string | null;
}

interface Data {
  version: 1;
  users: User[];
}

export type RegistryErrorCode = 'duplicate-key' | 'no-such-user' | 'bad-local-part' | 'duplicate-username';

export class RegistryError extends Error {
  constructor(
    readonly code: RegistryErrorCode,
    message: string,
  ) {
    super(message);
    this.name = 'RegistryError';
  }
}

/**
 * lowdb adapter that writes like a mail server must: to a temporary file, fsync,
 * rename over the old one, fsync the directory. lowdb's own JSONFile adapter (steno)
 * renames but never fsyncs, so a crash could lose an acknowledged signup.
 */
class DurableJSONFile<T> {
  constructor(private readonly file: string) {}

  async read(): Promise<T | null> {
    try {
      return JSON.parse(await readFile(this.file, 'utf8')) as T;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return null;
      throw err;
    }
  }

  async write(data: T): Promise<void> {
    const dir = path.dirname(this.file);
    const tmp = path.join(dir, `.${path.basename(this.file)}.${process.pid}.tmp`);
    const fh = await open(tmp, 'w', 0o600);
    try {
      await fh.writeFile(JSON.stringify(data, null, 2) + '\n');
      await fh.sync();
    } finally {
      await fh.close();
    }
    try {
      await rename(tmp, this.file);
    } catch (err) {
      await unlink(tmp).catch(() => undefined);
      throw err;
    }
    const dh = await open(dir, 'r');
    try {
      await dh.sync();
    } finally {
      await dh.close();
    }
  }
}

const ALPHABET = 'abcdefghijklmnopqrstuvwxyz0123456789';

/** A random username: 12 characters of [a-z0-9], starting with a letter (a valid DNS label, ~61 bits). */
export function randomUsername(): string {
  let s = ALPHABET[randomInt(26)];
  for (let i = 1; i < 12; i++) s += ALPHABET[randomInt(ALPHABET.length)];
  return s;
}

/** A local part as the policy compares it: lower case, 1-64 printable characters, no @ or spaces. */
export function normalizeLocalPart(local: string): string | null {
  const l = local.trim().toLowerCase();
  // eslint-disable-next-line no-control-regex -- refusing control characters is the point
  if (l.length < 1 || l.length > 64 || /[\s@<>()[\]\\,;:"\x00-\x1f\x7f]/.test(l)) return null;
  return l;
}

export class Registry {
  private readonly db: Low<Data>;
  private byName = new Map<string, User>();
  private byFingerprint = new Map<string, User>();
  /** Writes run one after another so that two changes never race. */
  private queue: Promise<unknown> = Promise.resolve();

  private constructor(readonly file: string) {
    this.db = new Low<Data>(new DurableJSONFile<Data>(file), { version: 1, users: [] });
  }

  /** Opens (or creates) registry.json in dataDir. */
  static async open(dataDir: string): Promise<Registry> {
    await mkdir(dataDir, { recursive: true, mode: 0o700 });
    const reg = new Registry(path.join(dataDir, 'registry.json'));
    await reg.reload();
    return reg;
  }

  private reindex(): void {
    this.byName = new Map(this.db.data.users.map((u) => [u.username, u]));
    this.byFingerprint = new Map(this.db.data.users.map((u) => [u.fingerprint, u]));
  }

  private seen = '';

  private async fileStamp(): Promise<string> {
    try {
      const s = await stat(this.file);
      return `${s.mtimeMs}:${s.size}:${s.ino}`;
    } catch {
      return '';
    }
  }

  /** Re-reads the file (for a second process such as the CLI having changed it). */
  reload(): Promise<void> {
    const run = this.queue.then(async () => {
      this.seen = await this.fileStamp();
      await this.db.read();
      this.reindex();
    });
    this.queue = run.catch(() => undefined);
    return run;
  }

  /** Reloads only if registry.json changed on disk since this process last read or wrote it. */
  async refreshIfChanged(): Promise<boolean> {
    if ((await this.fileStamp()) === this.seen) return false;
    await this.reload();
    return true;
  }

  private mutate<R>(fn: (data: Data) => R): Promise<R> {
    const run = this.queue.then(async () => {
      const snapshot = structuredClone(this.db.data);
      let result: R;
      try {
        result = fn(this.db.data);
        await this.db.write();
        this.seen = await this.fileStamp();
      } catch (err) {
        this.db.data = snapshot; // never leave state half-changed
        this.reindex();
        throw err;
      }
      this.reindex();
      return result;
    });
    this.queue = run.catch(() => undefined);
    return run;
  }

  list(): User[] {
    return [...this.db.data.users];
  }

  get(username: string): User | undefined {
    return this.byName.get(username.toLowerCase());
  }

  findByFingerprint(fingerprint: string): User | undefined {
    return this.byFingerprint.get(fingerprint.toUpperCase());
  }

  private must(data: Data, username: string): User {
    const u = data.users.find((x) => x.username === username.toLowerCase());
    if (!u) throw new RegistryError('no-such-user', `There is no user "${username}".`);
    return u;
  }

  /** Registers a key under a fresh random username. One key, one account. */
  add(input: NewUser): Promise<User> {
    return this.mutate((data) => {
      const fingerprint = input.fingerprint.toUpperCase();
      if (data.users.some((u) => u.fingerprint === fingerprint)) {
        throw new RegistryError(
          'duplicate-key',
          'This key is already registered. Use a fresh key for each identity: one key, one account.',
        );
      }
      let username = randomUsername();
      while (data.users.some((u) => u.username === username)) username = randomUsername();
      const user: User = {
        username,
        fingerprint,
        publicKey: input.publicKey,
        keyExpiresAt: input.keyExpiresAt,
        createdAt: new Date().toISOString(),
        disabled: false,
        catchAll: true,
        aliases: [],
        blocked: [],
        notices: [],
      };
      data.users.push(user);
      return structuredClone(user);
    });
  }

  /** Changes one user atomically; `fn` may throw to abort with nothing changed. */
  update(username: string, fn: (u: User) => void): Promise<User> {
    return this.mutate((data) => {
      const u = this.must(data, username);
      fn(u);
      return structuredClone(u);
    });
  }

  setDisabled(username: string, disabled: boolean): Promise<User> {
    return this.update(username, (u) => {
      u.disabled = disabled;
    });
  }

  setCatchAll(username: string, on: boolean): Promise<User> {
    return this.update(username, (u) => {
      u.catchAll = on;
    });
  }

  /** Adds an allowed local part (and un-blocks it). */
  addAlias(username: string, localPart: string): Promise<User> {
    const l = this.localPart(localPart);
    return this.update(username, (u) => {
      if (!u.aliases.includes(l)) u.aliases.push(l);
      u.blocked = u.blocked.filter((b) => b !== l);
    });
  }

  removeAlias(username: string, localPart: string): Promise<User> {
    const l = this.localPart(localPart);
    return this.update(username, (u) => {
      u.aliases = u.aliases.filter((a) => a !== l);
      u.blocked = u.blocked.filter((b) => b !== l);
    });
  }

  /** Refuses a local part even with catch-all on. */
  blockAlias(username: string, localPart: string): Promise<User> {
    const l = this.localPart(localPart);
    return this.update(username, (u) => {
      u.aliases = u.aliases.filter((a) => a !== l);
      if (!u.blocked.includes(l)) u.blocked.push(l);
    });
  }

  /** Replaces the stored key (same fingerprint with a new expiry, or a new key). */
  setKey(username: string, key: NewUser): Promise<User> {
    return this.mutate((data) => {
      const u = this.must(data, username);
      const fingerprint = key.fingerprint.toUpperCase();
      if (data.users.some((x) => x !== u && x.fingerprint === fingerprint)) {
        throw new RegistryError('duplicate-key', 'That key belongs to another account. Use a fresh key for each identity.');
      }
      u.fingerprint = fingerprint;
      u.publicKey = key.publicKey;
      u.keyExpiresAt = key.keyExpiresAt;
      u.notices = [];
      return structuredClone(u);
    });
  }

  remove(username: string): Promise<void> {
    return this.mutate((data) => {
      this.must(data, username);
      data.users = data.users.filter((u) => u.username !== username.toLowerCase());
    });
  }

  private localPart(raw: string): string {
    const l = normalizeLocalPart(raw);
    if (!l) throw new RegistryError('bad-local-part', `"${raw}" is not a valid address local part (1-64 characters, no spaces or @).`);
    return l;
  }

  /** Whether mail to localPart@USER.DOMAIN is wanted by this user's policy. */
  static allows(user: User, localPart: string): boolean {
    const l = normalizeLocalPart(localPart);
    if (!l) return false;
    if (user.catchAll) return !user.blocked.includes(l);
    return user.aliases.includes(l);
  }
}
