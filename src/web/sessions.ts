// Bearer tokens after a login (./auth.ts issues them): the middleware that requires one and
// puts the live user record in the request's state, and the ends of a user's sessions.
import type { Context, Next } from 'koa';
import type { User } from '../registry/index.js';
import { DISABLED } from './auth.js';
import { secretKey } from './challenge.js';
import type { Web } from './context.js';
import { WebError } from './errors.js';

/** Forgets the login state of a user and of her keys (after a key change or account deletion). */
export function forgetLogins(web: Web, username: string, ...fingerprints: string[]): void {
  web.fallbacks.deleteWhere((_v, k) => k.startsWith(`${username}\n`));
  for (const fingerprint of fingerprints) web.signable.delete(fingerprint);
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
    // Made only when it is thrown: an error's stack costs more than the rest of this check.
    const unauthorized = (): WebError => new WebError(401, 'unauthorized', UNAUTHORIZED, { 'WWW-Authenticate': 'Bearer realm="kzymy"' });
    if (!m) throw unauthorized();
    const tokenKey = secretKey(m[1]!);
    const session = web.sessions.get(tokenKey, web.now());
    if (!session) throw unauthorized();
    const user = web.deps.registry.get(session.username);
    if (!user) {
      web.sessions.delete(tokenKey);
      throw unauthorized();
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
