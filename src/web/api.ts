// /api/v1: JSON for kzymy-client. Documented in docs/protocol.md; keep the two in step.
import Router from '@koa/router';
import type { Context } from 'koa';
import { RegistryError, type User } from '../registry/index.js';
import { forgetAccount, removeAccount } from './accounts.js';
import { createChallenge, issueToken } from './auth.js';
import { confirmKeyChange, requestKeyChange } from './key-rotation.js';
import { requireToken, type AuthState } from './sessions.js';
import { onionHost, serverFor, type Web } from './context.js';
import { WebError } from './errors.js';
import { readJson } from './body.js';
import { tryAgainIn } from './ratelimit.js';
import { pickupRoutes } from './pickup.js';
import { confirmSignup, findSignup, startSignup } from './signup.js';

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
  const { registry, maildir, config, logger } = web.deps;
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
    const { username, fingerprint } = auth(ctx).user;
    await removeAccount(web.deps, username);
    forgetAccount(web, username, [fingerprint]);
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

  // --- key update and rotation (./key-rotation.ts) ------------------------------------

  router.post('/key', authed, async (ctx) => {
    const body = await json(ctx);
    const result = await requestKeyChange(web, auth(ctx).user, str(body, 'publicKey', 'an ASCII-armored public key'), ctx.host);
    if (result.status === 'confirm') ctx.status = 202;
    ctx.body = result;
  });

  router.post('/key/confirm', authed, async (ctx) => {
    const body = await json(ctx);
    const { user, tokenKey } = auth(ctx);
    ctx.body = await confirmKeyChange(web, user, tokenKey, body.rotationId, body.code);
  });

  // Anything else under /api is a JSON 404 (or 405 from allowedMethods).
  return router;
}
