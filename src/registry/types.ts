// What every registry engine offers, and the records it hands out.
// Records are frozen: a reader can keep one as long as it likes and can never change
// the registry through it; every change goes through a method that returns only once
// the change is durable.
import { UserError } from '../config/index.js';

/** One account. Public data only: never a secret key, a password, or anything that locates the user. */
export interface User {
  readonly username: string;
  /** Primary key fingerprint, upper-case hex. One key, one account. */
  readonly fingerprint: string;
  /** SHA-256 (hex) of the stored ASCII-armored public key; `Registry.publicKey` returns the key. */
  readonly keyId: string;
  /** ISO date the key stops being usable for encryption, or null. */
  readonly keyExpiresAt: string | null;
  readonly createdAt: string;
  readonly disabled: boolean;
  /** On: every local part arrives except blocked ones. Off: only aliases. */
  readonly catchAll: boolean;
  readonly aliases: readonly string[];
  readonly blocked: readonly string[];
  /** Key-expiry notices already delivered, e.g. "14d:2027-01-01". */
  readonly notices: readonly string[];
}

export interface NewUser {
  fingerprint: string;
  publicKey: string;
  keyExpiresAt: string | null;
}

export type RegistryErrorCode =
  | 'duplicate-key'
  | 'no-such-user'
  | 'bad-local-part'
  | 'duplicate-username'
  | 'damaged'
  | 'missing'
  | 'write-failed';

export class RegistryError extends UserError {
  constructor(
    readonly code: RegistryErrorCode,
    message: string,
    options?: { cause?: unknown },
  ) {
    super(message, 1, options);
    this.name = 'RegistryError';
  }
}

/**
 * The registry as the rest of kzymy sees it. The lowdb engine (src/registry/lowdb.ts) is
 * the embedded default; the PostgreSQL engine (src/registry/postgres.ts) implements the
 * same contract for several nodes.
 *
 * Reads are synchronous and served from memory; they reflect every change this process
 * made and, within a bounded time (REFRESH_MS for both engines), every change another
 * process (or node) made. A database that cannot be reached is 'write-failed'. A change resolves only after it is durable, and only then becomes
 * visible to readers.
 */
export interface Registry {
  /** Where the registry lives, for the operator (a folder or a URL without its password). */
  readonly location: string;
  count(): number;
  list(): readonly User[];
  get(username: string): User | undefined;
  findByFingerprint(fingerprint: string): User | undefined;
  /** The stored ASCII-armored public key of `user` (as of that record). */
  publicKey(user: User): Promise<string>;

  /** Registers a key under a fresh random username. One key, one account. */
  add(input: NewUser): Promise<User>;
  setDisabled(username: string, disabled: boolean): Promise<User>;
  setCatchAll(username: string, on: boolean): Promise<User>;
  /** Adds an allowed local part (and un-blocks it). */
  addAlias(username: string, localPart: string): Promise<User>;
  removeAlias(username: string, localPart: string): Promise<User>;
  /** Refuses a local part even with catch-all on. */
  blockAlias(username: string, localPart: string): Promise<User>;
  /** Replaces the stored key (same fingerprint with a new expiry, or a new key); clears the notices. */
  setKey(username: string, key: NewUser): Promise<User>;
  /** Records delivered expiry notices, unless the key's expiry changed from `keyExpiresAt` meanwhile. */
  addNotices(username: string, tags: readonly string[], keyExpiresAt: string | null): Promise<User>;
  remove(username: string): Promise<void>;

  /** Picks up changes other processes made; true if anything changed. */
  refresh(): Promise<boolean>;
  close(): Promise<void>;
}
