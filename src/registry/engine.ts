// What both registry engines share: the in-memory index that every read is served from,
// one catch-up at a time, the follower's tick, and the checks every change passes before
// an engine writes it (names in lower case, fingerprints in upper case, valid local parts,
// a key no other account holds, a user this process knows). An engine supplies how it
// reads others' changes (`pass`), where keys live, and how each kind of change becomes
// durable; the lowdb engine (./lowdb.ts) and the PostgreSQL engine (./postgres.ts) extend it.
import { createHash } from 'node:crypto';
import type { Logger } from '../config/log.js';
import type { NewUser, Registry, User } from './types.js';
import type { Op, State } from './ops.js';
import { randomUsername } from './names.js';
import { duplicateKey, localPartOrThrow, noSuchUser } from './refusals.js';

/** How often a process looks for changes made by others, at the latest (fs.watch or NOTIFY usually tell sooner). */
export const REFRESH_MS = 1000;

/** The id of a stored public key: the SHA-256 (hex) of its ASCII armor. */
export const keyIdOf = (armored: string) => createHash('sha256').update(armored, 'utf8').digest('hex');

/** A change to an existing user's flags, local parts or notices. */
export type UserChange = Extract<Op, { op: 'disable' | 'catch-all' | 'alias' | 'unalias' | 'block' | 'notices' }>;
/** A new key for an existing user. */
export type KeyChange = Extract<Op, { op: 'key' }>;

export abstract class EngineBase implements Registry {
  abstract readonly location: string;
  /** Users by name and fingerprint, as of the last change this process read. */
  protected abstract readonly state: State;
  protected closed = false;
  private running: Promise<boolean> | null = null;
  private again = false;
  private failing = false;

  constructor(protected readonly logger: Logger | undefined) {}

  abstract publicKey(user: User): Promise<string>;
  abstract refresh(): Promise<boolean>;
  abstract close(): Promise<void>;

  /** Reads the changes since the last pass into `state`; returns whether it changed. */
  protected abstract pass(): Promise<boolean>;
  /** Stores an armored key where the engine keeps keys and returns its id. */
  protected abstract storeKey(armored: string): Promise<string>;
  /** Writes a new account; null when its username was taken meanwhile (another is drawn). */
  protected abstract insert(user: User, armored: string): Promise<User | null>;
  protected abstract changeUser(op: UserChange): Promise<User>;
  /** Writes `op`, whose key (stored by `storeKey`) is `armored`. */
  protected abstract changeKey(op: KeyChange, armored: string): Promise<User>;
  protected abstract removeUser(username: string): Promise<void>;
  /** Runs after every catch-up that succeeded. */
  protected caughtUp(): void {}

  count(): number {
    return this.state.byName.size;
  }

  list(): readonly User[] {
    return [...this.state.byName.values()];
  }

  get(username: string): User | undefined {
    return this.state.byName.get(username.toLowerCase());
  }

  findByFingerprint(fingerprint: string): User | undefined {
    const name = this.state.byFingerprint.get(fingerprint.toUpperCase());
    return name === undefined ? undefined : this.state.byName.get(name);
  }

  /** One pass at a time; a request during a pass gets another pass, which starts after it was made. */
  protected catchUp(): Promise<boolean> {
    if (this.closed) return Promise.resolve(false);
    if (this.running) {
      this.again = true;
      return this.running;
    }
    this.running = (async () => {
      let changed = false;
      try {
        do {
          this.again = false;
          changed = (await this.pass()) || changed;
        } while (this.again);
      } finally {
        this.running = null;
      }
      this.caughtUp();
      return changed;
    })();
    return this.running;
  }

  /** The catch-up in flight, if any, settled. */
  protected async settled(): Promise<void> {
    await this.running?.catch(() => undefined);
  }

  /**
   * A follower's catch-up: a failure is logged once, and so is the first success after it.
   * It never rejects: one bad read must not stop the following of every later change.
   */
  protected tick(readableAgain: string): Promise<void> {
    return this.catchUp().then(
      () => {
        if (this.failing) this.logger?.info({ evt: 'registry-readable' }, readableAgain);
        this.failing = false;
      },
      (err) => {
        if (!this.failing) this.logger?.warn({ evt: 'registry-read-failed', err });
        this.failing = true;
      },
    );
  }

  /** Refuses a change to a user this process does not know, even after looking again, without writing. */
  protected async known(username: string): Promise<void> {
    if (this.state.byName.has(username)) return;
    await this.refresh();
    if (!this.state.byName.has(username)) throw noSuchUser(username);
  }

  async add(input: NewUser): Promise<User> {
    const fingerprint = input.fingerprint.toUpperCase();
    if (this.state.byFingerprint.has(fingerprint)) throw duplicateKey();
    const keyId = await this.storeKey(input.publicKey);
    for (;;) {
      let username = randomUsername();
      while (this.state.byName.has(username)) username = randomUsername();
      const user = await this.insert(
        { username, fingerprint, keyId, keyExpiresAt: input.keyExpiresAt, createdAt: new Date().toISOString(), disabled: false, catchAll: true, aliases: [], blocked: [], notices: [] },
        input.publicKey,
      );
      if (user) return user;
    }
  }

  async setDisabled(username: string, disabled: boolean): Promise<User> {
    return this.change({ op: 'disable', user: username.toLowerCase(), value: disabled });
  }

  async setCatchAll(username: string, on: boolean): Promise<User> {
    return this.change({ op: 'catch-all', user: username.toLowerCase(), value: on });
  }

  async addAlias(username: string, localPart: string): Promise<User> {
    return this.change({ op: 'alias', user: username.toLowerCase(), local: localPartOrThrow(localPart) });
  }

  async removeAlias(username: string, localPart: string): Promise<User> {
    return this.change({ op: 'unalias', user: username.toLowerCase(), local: localPartOrThrow(localPart) });
  }

  async blockAlias(username: string, localPart: string): Promise<User> {
    return this.change({ op: 'block', user: username.toLowerCase(), local: localPartOrThrow(localPart) });
  }

  async addNotices(username: string, tags: readonly string[], keyExpiresAt: string | null): Promise<User> {
    return this.change({ op: 'notices', user: username.toLowerCase(), tags: [...tags], ifKeyExpiresAt: keyExpiresAt });
  }

  private async change(op: UserChange): Promise<User> {
    await this.known(op.user);
    return this.changeUser(op);
  }

  async setKey(username: string, key: NewUser): Promise<User> {
    const name = username.toLowerCase();
    const fingerprint = key.fingerprint.toUpperCase();
    const holder = this.state.byFingerprint.get(fingerprint);
    if (holder !== undefined && holder !== name) throw duplicateKey();
    await this.known(name);
    const keyId = await this.storeKey(key.publicKey);
    return this.changeKey({ op: 'key', user: name, fingerprint, keyId, keyExpiresAt: key.keyExpiresAt }, key.publicKey);
  }

  async remove(username: string): Promise<void> {
    const name = username.toLowerCase();
    await this.known(name);
    await this.removeUser(name);
  }
}
