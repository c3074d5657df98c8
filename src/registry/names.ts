// Usernames, local parts and the address policy: the same for every registry engine.
import { randomInt } from 'node:crypto';
import type { User } from './types.js';

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

/** Whether mail to localPart@USER.DOMAIN is wanted by this user's policy. */
export function allows(user: User, localPart: string): boolean {
  const l = normalizeLocalPart(localPart);
  if (!l) return false;
  if (user.catchAll) return !user.blocked.includes(l);
  return user.aliases.includes(l);
}
