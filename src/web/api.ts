// /api/v1: JSON for kzymy-client. Documented in docs/protocol.md; keep the two in step.
import Router from '@koa/router';
import type { Context } from 'koa';
import { RegistryError, type User } from '../registry/index.js';
import { keyRecord } from '../pgp/index.js';
import { createChallenge, issueToken } from './auth.js';
import { endSessions, forgetLogins, requireToken, type AuthState } from './sessions.js';
import { codeMatches, encryptChallenge, hashCode, newCode, randomId } from './challenge.js';
import { onionHost, serverFor, type Web } from './context.js';
import { WebError } from './errors.js';
import { readJson } from './body.js';
import { limit, tooMany, tryAgainIn } from './ratelimit.js';
import { pickupRoutes } from './pickup.js';
import { challengeServer, checkKey, confirmSignup, findSignup, REGISTERED, startSignup } from './signup.js';

function auth(ctx: Context): AuthState {
  return ctx.state.auth as AuthState;
}

function str(body: Record<string, unknown>, name: string, what: string): string {
  const v = body[name];
  if (typeof v !== 'string' || v === '') throw new WebError(400, 'bad-request', `The field "${name}" (${what}) is missing.`);
  return v;
}

function policy(u: User): { catchAll: boolean; aliases: string[]; blocked: string[] } {
  return { catchAll: u.catchAll, aliases: [...u.aliases], blocked: [...u.blocked] };
}

async function policyChange(ctx: Context, fn: () => Promise<User>): Promise<void> {
  try {
    ctx.body = policy(await fn());
  } catch (err) {
    if (err instanceof RegistryError && err.code === 'bad-local-part') throw new WebError(400, 'bad-local-part', err.message);
    throw err;
  }
}

export function apiRouter(web: Web): Router {
  const { registry, maildir, config, keys, logger } = web.deps;
  const router = new Router({ prefix: '/api/v1' });
  const json = (ctx: Context): Promise<Record<string, unknown>> => readJson(ctx, web.limits.maxJsonBytes);
  const authed = requireToken(web);

  router.get('/info', (ctx) => {
    ctx.body = {
      version: 1,
      domain: config.domain,
      onion: onionHost(web),
      limits: {
        maxMessageBytes: config.limits.maxMessageBytes,
        quotaBytes: config.limits.quotaBytes,
        retentionDays: config.limits.retentionDays,
      },
    };
  });

  // --- signup -------------------------------------------------------------------------

  router.post('/signup', async (ctx) => {
    const body = await json(ctx);
    const pending = await startSignup(web, str(body, 'publicKey', 'an ASCII-armored public key'), ctx.host);
    ctx.status = 201;
    ctx.body = {
      signupId: pending.id,
      fingerprint: pending.key.fingerprint,
      challenge: pending.challenge,
      expiresAt: new Date(pending.expiresAt).toISOString(),
      attemptsLeft: pending.attemptsLeft,
    };
  });

  router.post('/signup/confirm', async (ctx) => {
    const body = await json(ctx);
    const pending = findSignup(web, body.signupId);
    const server = serverFor(web, ctx.host);
    const user = await confirmSignup(web, pending, body.code, server);
    const mailDomain = `${user.username}.${config.domain}`;
    ctx.status = 201;
    ctx.body = {
      username: user.username,
      domain: config.domain,
      mailDomain,
      fingerprint: user.fingerprint,
      onion: server.onion,
      exampleAddress: `anything@${mailDomain}`,
    };
  });

  // --- authentication -----------------------------------------------------------------

  // An unexpected failure in a login is a sentence and a 503, never a 500.
  const authStep = async <T>(what: string, fn: () => Promise<T>): Promise<T> => {
    try {
      return await fn();
    } catch (err) {
      if (err instanceof WebError) throw err;
      const e = err as { name?: unknown; code?: unknown };
      logger.error({ evt: 'auth-failed', step: what, err: e }, 'auth');
      throw new WebError(503, 'auth-unavailable', `The server could not complete this ${what} right now; nothing was changed. ${tryAgainIn(60).replace(/\.$/, '')}, and tell the operator if it keeps failing.`, { 'Retry-After': '60' });
    }
  };

  router.post('/auth/challenge', async (ctx) => {
    const body = await json(ctx);
    const c = await authStep('login challenge', () => createChallenge(web, body.username, ctx.host));
    ctx.body = {
      challengeId: c.challengeId,
      nonce: c.nonce,
      expiresAt: c.expiresAt.toISOString(),
      fingerprint: c.fingerprint,
      ...(c.challenge ? { challenge: c.challenge } : {}),
    };
  });

  router.post('/auth/token', async (ctx) => {
    const body = await json(ctx);
    const t = await authStep('login', () =>
      issueToken(web, { challengeId: body.challengeId, statement: body.statement, signature: body.signature, code: body.code }, ctx.host),
    );
    ctx.body = { token: t.token, tokenType: 'Bearer', username: t.username, expiresAt: t.expiresAt.toISOString() };
  });

  router.post('/auth/logout', authed, (ctx) => {
    web.sessions.delete(auth(ctx).tokenKey);
    ctx.body = { ok: true };
  });

  pickupRoutes(router, web, authed, json);

  // --- account ------------------------------------------------------------------------

  router.get('/account', authed, async (ctx) => {
    const u = auth(ctx).user;
    const usage = await maildir.usage(u.username);
    ctx.body = {
      username: u.username,
      domain: config.domain,
      mailDomain: `${u.username}.${config.domain}`,
      onion: onionHost(web),
      fingerprint: u.fingerprint,
      keyExpiresAt: u.keyExpiresAt,
      createdAt: u.createdAt,
      ...policy(u),
      messages: { count: usage.count, bytes: usage.bytes, oldest: usage.oldest ? usage.oldest.toISOString() : null },
      quotaBytes: config.limits.quotaBytes,
    };
  });

  router.delete('/account', authed, async (ctx) => {
    const username = auth(ctx).user.username;
    await registry.remove(username);
    endSessions(web, username);
    forgetLogins(web, username, auth(ctx).user.fingerprint);
    web.rotations.deleteWhere((r) => r.username === username);
    keys.delete(auth(ctx).user.fingerprint);
    await maildir.removeUser(username);
    logger.info({ evt: 'account-deleted' }, 'account');
    ctx.body = { deleted: username };
  });

  router.get('/aliases', authed, (ctx) => {
    ctx.body = policy(auth(ctx).user);
  });
  router.put('/aliases/:local', authed, (ctx) =>
    policyChange(ctx, () => registry.addAlias(auth(ctx).user.username, String(ctx.params.local))),
  );
  router.delete('/aliases/:local', authed, (ctx) =>
    policyChange(ctx, () => registry.removeAlias(auth(ctx).user.username, String(ctx.params.local))),
  );
  router.put('/blocked/:local', authed, (ctx) =>
    policyChange(ctx, () => registry.blockAlias(auth(ctx).user.username, String(ctx.params.local))),
  );
  router.put('/catch-all', authed, async (ctx) => {
    const body = await json(ctx);
    if (typeof body.enabled !== 'boolean') throw new WebError(400, 'bad-request', 'Send {"enabled": true} or {"enabled": false}.');
    await policyChange(ctx, () => registry.setCatchAll(auth(ctx).user.username, body.enabled as boolean));
  });

  // --- key update and rotation ---------------------------------------------------------

  router.post('/key', authed, async (ctx) => {
    const body = await json(ctx);
    const { user } = auth(ctx);
    const key = await checkKey(web, str(body, 'publicKey', 'an ASCII-armored public key'), () => {
      const now = web.now();
      limit(web.buckets.keyUser.take(user.username, now), 'Too many keys sent for this account.');
      limit(web.buckets.keyCheck.take(now), 'Too many keys are being checked right now.');
    });
    const record = keyRecord(key);
    if (key.fingerprint === user.fingerprint) {
      // The registered key may have expired meanwhile: the same key with a new expiry repairs it.
      const updated = await registry.setKey(user.username, record);
      keys.delete(user.fingerprint);
      forgetLogins(web, user.username, user.fingerprint);
      logger.info({ evt: 'key-updated' }, 'account');
      ctx.body = { status: 'updated', fingerprint: updated.fingerprint, keyExpiresAt: updated.keyExpiresAt };
      return;
    }
    // Whether the new key is taken is told only after its challenge is answered (confirm).
    const server = challengeServer(ctx.host);
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
    ctx.status = 202;
    ctx.body = { status: 'confirm', rotationId, fingerprint: key.fingerprint, challenge, expiresAt: new Date(expiresAt).toISOString() };
  });

  router.post('/key/confirm', authed, async (ctx) => {
    const body = await json(ctx);
    const { user, tokenKey } = auth(ctx);
    const now = web.now();
    const id = body.rotationId;
    const pending = typeof id === 'string' ? web.rotations.get(id, now) : undefined;
    if (!pending || pending.username !== user.username) {
      throw new WebError(404, 'no-rotation', 'This key change is unknown, expired or already used. Send the new key again.');
    }
    web.rotations.delete(id as string);
    if (!codeMatches(pending.codeHash, body.code)) {
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
    keys.delete(user.fingerprint);
    endSessions(web, user.username, tokenKey);
    forgetLogins(web, user.username, user.fingerprint);
    logger.info({ evt: 'key-rotated' }, 'account');
    ctx.body = { status: 'rotated', fingerprint: updated.fingerprint, keyExpiresAt: updated.keyExpiresAt };
  });

  // Anything else under /api is a JSON 404 (or 405 from allowedMethods).
  return router;
}
