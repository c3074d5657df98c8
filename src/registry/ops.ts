// The registry's changes as operations, and the one function that applies them.
//
// Every process that reads the journal applies the same operations in the same order
// with `apply`, so all of them reach the same state without talking to each other. An
// operation that does not fit the state at its place in the journal (a key that another
// account took a moment earlier, a user deleted meanwhile) is void for everyone, and its
// writer reports why. Operations are deltas ("add this alias"), never whole records, so
// two writers changing one user both keep their change.
import type { User, RegistryErrorCode } from './types.js';

export type Op =
  | { op: 'add'; user: User }
  | { op: 'disable'; user: string; value: boolean }
  | { op: 'catch-all'; user: string; value: boolean }
  | { op: 'alias'; user: string; local: string }
  | { op: 'unalias'; user: string; local: string }
  | { op: 'block'; user: string; local: string }
  | { op: 'key'; user: string; fingerprint: string; keyId: string; keyExpiresAt: string | null }
  | { op: 'notices'; user: string; tags: string[]; ifKeyExpiresAt: string | null }
  | { op: 'remove'; user: string }
  /** Closes this journal file: records after it in the same file are void; the next file continues. */
  | { op: 'seal' };

/** One journal record: an operation and the random id its writer waits for. */
export type JournalRecord = Op & { id: string };

export type Outcome =
  | { ok: true; user: User | null; previous: User | null }
  | { ok: false; code: RegistryErrorCode };

/** The state every engine reader holds: users by name, and who holds each fingerprint. */
export class State {
  readonly byName = new Map<string, User>();
  readonly byFingerprint = new Map<string, string>();

  put(u: User): void {
    this.byName.set(u.username, u);
    this.byFingerprint.set(u.fingerprint, u.username);
  }

  drop(u: User): void {
    this.byName.delete(u.username);
    if (this.byFingerprint.get(u.fingerprint) === u.username) this.byFingerprint.delete(u.fingerprint);
  }
}

const freezeUser = (u: User): User =>
  Object.freeze({
    ...u,
    aliases: Object.freeze([...u.aliases]),
    blocked: Object.freeze([...u.blocked]),
    notices: Object.freeze([...u.notices]),
  });

const USER_KEYS = new Set(['username', 'fingerprint', 'keyId', 'keyExpiresAt', 'createdAt', 'disabled', 'catchAll', 'aliases', 'blocked', 'notices']);

/**
 * Checks a user record that was just parsed and belongs to no one else; returns it
 * frozen in place (no copy: opening 100,000 users copies nothing), or null. A record
 * with fields this version does not know is copied without them.
 */
export function adoptUser(x: unknown): User | null {
  if (!valid(x)) return null;
  const u = x as unknown as Record<string, unknown>;
  for (const k in u) if (!USER_KEYS.has(k)) return asUser(x);
  Object.freeze(u.aliases);
  Object.freeze(u.blocked);
  Object.freeze(u.notices);
  return Object.freeze(u) as unknown as User;
}

function valid(x: unknown): x is User {
  if (typeof x !== 'object' || x === null) return false;
  const u = x as Record<string, unknown>;
  const str = (k: string) => typeof u[k] === 'string' && (u[k] as string).length > 0;
  const strings = (k: string) => Array.isArray(u[k]) && (u[k] as unknown[]).every((s) => typeof s === 'string');
  if (!str('username') || !str('fingerprint') || !str('keyId') || !str('createdAt')) return false;
  if (u.keyExpiresAt !== null && typeof u.keyExpiresAt !== 'string') return false;
  if (typeof u.disabled !== 'boolean' || typeof u.catchAll !== 'boolean') return false;
  return strings('aliases') && strings('blocked') && strings('notices');
}

/** Checks a user record read from disk; returns a frozen copy, or null if it is not one. */
export function asUser(x: unknown): User | null {
  if (!valid(x)) return null;
  const u = x as unknown as Record<string, unknown>;
  return freezeUser({
    username: u.username as string,
    fingerprint: u.fingerprint as string,
    keyId: u.keyId as string,
    keyExpiresAt: u.keyExpiresAt as string | null,
    createdAt: u.createdAt as string,
    disabled: u.disabled as boolean,
    catchAll: u.catchAll as boolean,
    aliases: u.aliases as string[],
    blocked: u.blocked as string[],
    notices: u.notices as string[],
  });
}

/** Checks a journal record read from disk; null if it is not one this version knows. */
export function asRecord(x: unknown): JournalRecord | null {
  if (typeof x !== 'object' || x === null) return null;
  const r = x as Record<string, unknown>;
  if (typeof r.id !== 'string') return null;
  const s = (k: string) => typeof r[k] === 'string';
  switch (r.op) {
    case 'add': {
      const user = adoptUser(r.user);
      return user ? { op: 'add', id: r.id, user } : null;
    }
    case 'disable':
    case 'catch-all':
      return s('user') && typeof r.value === 'boolean' ? (r as unknown as JournalRecord) : null;
    case 'alias':
    case 'unalias':
    case 'block':
      return s('user') && s('local') ? (r as unknown as JournalRecord) : null;
    case 'key':
      return s('user') && s('fingerprint') && s('keyId') && (r.keyExpiresAt === null || s('keyExpiresAt'))
        ? (r as unknown as JournalRecord)
        : null;
    case 'notices':
      return s('user') && Array.isArray(r.tags) && r.tags.every((t) => typeof t === 'string') && (r.ifKeyExpiresAt === null || s('ifKeyExpiresAt'))
        ? (r as unknown as JournalRecord)
        : null;
    case 'remove':
      return s('user') ? (r as unknown as JournalRecord) : null;
    case 'seal':
      return r as unknown as JournalRecord;
    default:
      return null;
  }
}

const without = (list: readonly string[], x: string) => list.filter((y) => y !== x);
const withOne = (list: readonly string[], x: string) => (list.includes(x) ? [...list] : [...list, x]);

/** Applies one operation to `state`. Deterministic: the same journal gives the same state everywhere. */
export function apply(state: State, op: Op): Outcome {
  if (op.op === 'seal') return { ok: true, user: null, previous: null };
  if (op.op === 'add') {
    if (state.byName.has(op.user.username)) return { ok: false, code: 'duplicate-username' };
    if (state.byFingerprint.has(op.user.fingerprint)) return { ok: false, code: 'duplicate-key' };
    const user = freezeUser(op.user);
    state.put(user);
    return { ok: true, user, previous: null };
  }
  const u = state.byName.get(op.user);
  if (!u) return { ok: false, code: 'no-such-user' };
  let next: User;
  switch (op.op) {
    case 'remove':
      state.drop(u);
      return { ok: true, user: null, previous: u };
    case 'disable':
    case 'catch-all':
      next = op.op === 'disable' ? { ...u, disabled: op.value } : { ...u, catchAll: op.value };
      break;
    case 'alias':
    case 'unalias':
    case 'block':
      // A local part is an alias or blocked, never both; 'unalias' takes it off both lists.
      next = { ...u, aliases: (op.op === 'alias' ? withOne : without)(u.aliases, op.local), blocked: (op.op === 'block' ? withOne : without)(u.blocked, op.local) };
      break;
    case 'key': {
      const holder = state.byFingerprint.get(op.fingerprint);
      if (holder !== undefined && holder !== u.username) return { ok: false, code: 'duplicate-key' };
      next = { ...u, fingerprint: op.fingerprint, keyId: op.keyId, keyExpiresAt: op.keyExpiresAt, notices: [] };
      break;
    }
    case 'notices':
      if (u.keyExpiresAt !== op.ifKeyExpiresAt) return { ok: true, user: u, previous: u };
      next = { ...u, notices: op.tags.reduce(withOne, u.notices) };
      break;
  }
  const user = freezeUser(next);
  state.drop(u);
  state.put(user);
  return { ok: true, user, previous: u };
}
