// A user's key, changed over the API: the same key with a new expiry replaces the stored
// one at once; a new key must first answer a challenge encrypted to it (one pending change
// per user, in memory), and then replaces the old one, ending her other sessions.
import { keyRecord, type CheckedKey } from '../pgp/index.js';
import { RegistryError, type User } from '../registry/index.js';
import { codeMatches, encryptChallenge, hashCode, newCode, randomId } from './challenge.js';
import type { Web } from './context.js';
import { WebError } from './errors.js';
import { limit, tooMany } from './ratelimit.js';
import { endSessions, forgetLogins } from './sessions.js';
import { challengeServer, checkKey, REGISTERED } from './signup.js';

/** Replaces the stored key by the same key (a new expiry repairs an expired one). */
async function refreshKey(web: Web, user: User, key: CheckedKey) {
  const updated = await web.deps.registry.setKey(user.username, keyRecord(key));
  web.deps.keys.delete(user.fingerprint);
  forgetLogins(web, user.username, user.fingerprint);
  web.deps.logger.info({ evt: 'key-updated' }, 'account');
  return { status: 'updated' as const, fingerprint: updated.fingerprint, keyExpiresAt: updated.keyExpiresAt };
}

/** POST /key: the same key is stored at once; a new one gets a challenge to answer. */
export async function requestKeyChange(web: Web, user: User, armored: string, host: string) {
  const key = await checkKey(web, armored, () => {
    const now = web.now();
    limit(web.buckets.keyUser.take(user.username, now), 'Too many keys sent for this account.');
    limit(web.buckets.keyCheck.take(now), 'Too many keys are being checked right now.');
  });
  if (key.fingerprint === user.fingerprint) return refreshKey(web, user, key);
  // Whether the new key is taken is told only after its challenge is answered (confirm).
  const server = challengeServer(host);
  const code = newCode();
  const challenge = await encryptChallenge(key.key, { purpose: 'rotate', server, username: user.username, fingerprint: key.fingerprint, code });
  const rotationId = randomId();
  const now = web.now();
  const expiresAt = now + web.limits.rotationTtlMs;
  // One pending rotation per user: a new request replaces the previous one.
  web.rotations.deleteWhere((r) => r.username === user.username);
  if (!web.rotations.set(rotationId, { username: user.username, key, codeHash: hashCode(code) }, expiresAt, now)) {
    throw tooMany('Too many key changes are waiting right now.', 60);
  }
  return { status: 'confirm' as const, rotationId, fingerprint: key.fingerprint, challenge, expiresAt: new Date(expiresAt).toISOString() };
}

/** POST /key/confirm: the right code moves the account to the new key; the session `tokenKey` stays. */
export async function confirmKeyChange(web: Web, user: User, tokenKey: string, rotationId: unknown, code: unknown) {
  const { registry } = web.deps;
  const pending = typeof rotationId === 'string' ? web.rotations.get(rotationId, web.now()) : undefined;
  if (!pending || pending.username !== user.username) {
    throw new WebError(404, 'no-rotation', 'This key change is unknown, expired or already used. Send the new key again.');
  }
  web.rotations.delete(rotationId as string);
  if (!codeMatches(pending.codeHash, code)) {
    throw new WebError(400, 'wrong-code', 'That code is not right. The key change has ended; send the new key again. Your old key stays in use.');
  }
  if (registry.findByFingerprint(pending.key.fingerprint)) throw new WebError(409, 'key-registered', REGISTERED);
  let updated: User;
  try {
    updated = await registry.setKey(user.username, keyRecord(pending.key));
  } catch (err) {
    if (err instanceof RegistryError && err.code === 'duplicate-key') throw new WebError(409, 'key-registered', REGISTERED);
    throw err;
  }
  web.deps.keys.delete(user.fingerprint);
  endSessions(web, user.username, tokenKey);
  const kept = web.sessions.get(tokenKey, web.now());
  if (kept) kept.fingerprint = updated.fingerprint;
  forgetLogins(web, user.username, user.fingerprint);
  web.deps.logger.info({ evt: 'key-rotated' }, 'account');
  return { status: 'rotated', fingerprint: updated.fingerprint, keyExpiresAt: updated.keyExpiresAt };
}
