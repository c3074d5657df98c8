// Authentication without passwords: a single-use code encrypted to the user's key,
// bound to her username and key; the answer buys a short-lived bearer token, kept in
// memory only (as a hash).
import type { Context, Next } from 'koa';
import type { User } from '../registry/index.js';
import { codeMatches, encryptCode, hashCode, newCode, randomId, secretKey } from './challenge.js';
import type { Web } from './context.js';
import { WebError } from './errors.js';
import { limit } from './ratelimit.js';

export const DISABLED = 'This account is disabled by the operator. Mail is not accepted for it and it cannot be used.';

function activeUser(web: Web, username: unknown): User {
  if (typeof username !== 'string' || !/^[a-z0-9]{1,63}$/i.test(username.trim())) {
    throw new WebError(400, 'bad-request', 'Give the username (12 letters and digits) to authenticate.');
  }
  const user = web.deps.registry.get(username.trim().toLowerCase());
  if (!user) throw new WebError(404, 'no-such-user', 'There is no account with that username.');
  if (user.disabled) throw new WebError(403, 'account-disabled', DISABLED);
  return user;
}

export async function createChallenge(web: Web, username: unknown): Promise<{ challengeId: string; challenge: string; expiresAt: Date }> {
  const now = web.now();
  limit(web.buckets.auth.take(now));
  const user = activeUser(web, username);
  limit(web.buckets.authUser.take(user.username, now), 'Too many login attempts for this account. Wait a minute and try again.');
  const key = await web.deps.keys.get(user.fingerprint, user.publicKey);
  const code = newCode();
  const challenge = await encryptCode(key, code);
  const challengeId = randomId();
  const expiresAt = now + web.limits.challengeTtlMs;
  if (!web.challenges.set(challengeId, { username: user.username, fingerprint: user.fingerprint, codeHash: hashCode(code) }, expiresAt, now)) {
    throw new WebError(429, 'rate-limited', 'Too many logins are waiting right now. Try again in a few minutes.', { 'Retry-After': '60' });
  }
  return { challengeId, challenge, expiresAt: new Date(expiresAt) };
}

const BAD_CHALLENGE = 'This challenge is unknown, expired, already used or the code is wrong. Ask for a new challenge.';

export function issueToken(web: Web, challengeId: unknown, code: unknown): { token: string; username: string; expiresAt: Date } {
  const now = web.now();
  limit(web.buckets.answer.take(now));
  // Single use: whatever the answer, the challenge is gone.
  const ch = typeof challengeId === 'string' ? web.challenges.take(challengeId, now) : undefined;
  if (!ch || !codeMatches(ch.codeHash, code)) throw new WebError(401, 'bad-challenge', BAD_CHALLENGE);
  const user = web.deps.registry.get(ch.username);
  // The key must still be the one the challenge was made for.
  if (!user || user.fingerprint !== ch.fingerprint) throw new WebError(401, 'bad-challenge', BAD_CHALLENGE);
  if (user.disabled) throw new WebError(403, 'account-disabled', DISABLED);
  const token = randomId('kzt_');
  const expiresAt = now + web.limits.tokenTtlMs;
  if (!web.sessions.set(secretKey(token), { username: user.username, expiresAt }, expiresAt, now)) {
    throw new WebError(503, 'unavailable', 'Too many sessions are open right now. Try again in a few minutes.');
  }
  web.deps.logger.info({ evt: 'token-issued' }, 'auth');
  return { token, username: user.username, expiresAt: new Date(expiresAt) };
}

export interface AuthState {
  user: User;
  tokenKey: string;
}

const UNAUTHORIZED = 'This needs a valid bearer token (Authorization: Bearer ...). Authenticate again: it may have expired.';

/** Requires `Authorization: Bearer TOKEN`; puts the live user record in ctx.state.auth. */
export function requireToken(web: Web) {
  return async function auth(ctx: Context, next: Next): Promise<void> {
    const m = /^Bearer\s+(\S{1,200})\s*$/i.exec(ctx.get('Authorization'));
    const unauthorized = new WebError(401, 'unauthorized', UNAUTHORIZED, { 'WWW-Authenticate': 'Bearer realm="kzymy"' });
    if (!m) throw unauthorized;
    const tokenKey = secretKey(m[1]!);
    const session = web.sessions.get(tokenKey, web.now());
    if (!session) throw unauthorized;
    const user = web.deps.registry.get(session.username);
    if (!user) {
      web.sessions.delete(tokenKey);
      throw unauthorized;
    }
    if (user.disabled) throw new WebError(403, 'account-disabled', DISABLED);
    ctx.state.auth = { user, tokenKey } satisfies AuthState;
    await next();
  };
}

/** Ends every session of a user, except `keep` (a token hash). */
export function endSessions(web: Web, username: string, keep?: string): void {
  web.sessions.deleteWhere((s, key) => s.username === username && key !== keep);
}
