// The signup pages: plain HTML forms, no JavaScript. Anti-CSRF: the front page form
// carries an HMAC-signed, dated token; the confirm form carries a random token tied to
// its pending signup. No cookies.
import Router from '@koa/router';
import type { Context } from 'koa';
import { createHmac, timingSafeEqual } from 'node:crypto';
import { MAX_KEY_BYTES } from '../pgp/index.js';
import { readForm } from './body.js';
import { CLIENT_FILE_NAME, CLIENT_PATH } from './client-download.js';
import { onionHost, serverFor, type PendingSignup, type Web } from './context.js';
import { WebError } from './errors.js';
import { fetchCommand } from './mail.js';
import { STYLE_CSS } from './style.js';
import { confirmSignup, findSignup, startSignup } from './signup.js';
import { challengePage, donePage, homePage, type ClientView } from './templates.js';

function mac(web: Web, text: string): string {
  return createHmac('sha256', web.formSecret).update(text).digest('base64url');
}

export function formToken(web: Web): string {
  const issued = String(web.now());
  return `${issued}.${mac(web, 'signup:' + issued)}`;
}

function sameText(a: string, b: string): boolean {
  const x = Buffer.from(a);
  const y = Buffer.from(b);
  return x.length === y.length && timingSafeEqual(x, y);
}

function formTokenValid(web: Web, token: string | undefined): boolean {
  if (!token) return false;
  const m = /^(\d{1,16})\.([A-Za-z0-9_-]{43})$/.exec(token);
  if (!m) return false;
  const age = web.now() - Number(m[1]);
  if (age < -60_000 || age > web.limits.formTtlMs) return false;
  return sameText(m[2]!, mac(web, 'signup:' + m[1]));
}

const STALE_FORM = 'This form is too old or did not come from this site. Paste your key again below.';

/** Re-shows the key only when it plainly is a public key (never echo a secret key). */
function echoKey(text: string | undefined, max: number): string | undefined {
  if (!text || text.length > max) return undefined;
  return /BEGIN PGP PUBLIC KEY BLOCK/.test(text) && !/PRIVATE KEY/.test(text) ? text : undefined;
}

function showChallenge(web: Web, ctx: Context, p: PendingSignup, error?: string): void {
  ctx.type = 'html';
  ctx.body = challengePage({
    fingerprint: p.key.fingerprint,
    challenge: p.challenge,
    signupId: p.id,
    csrf: p.csrf,
    expiresAt: new Date(p.expiresAt),
    attemptsLeft: p.attemptsLeft,
    error,
  });
}

/** What the pages say about the kzymy-client download, for a request that came to `host`. */
function clientView(web: Web, host: string): ClientView {
  const server = serverFor(web, host);
  return { sha256: web.client?.sha256 ?? null, bytes: web.client?.bytes.length ?? 0, server: server.url, noTor: server.noTor };
}

export function pagesRouter(web: Web): Router {
  const { config } = web.deps;
  const router = new Router();
  const formLimits = { fileBytes: MAX_KEY_BYTES, fieldBytes: MAX_KEY_BYTES * 2 };

  const home = (ctx: Context, status = 200, error?: string, keyText?: string): void => {
    ctx.status = status;
    ctx.type = 'html';
    ctx.body = homePage({ domain: config.domain, onion: onionHost(web), client: clientView(web, ctx.host), csrf: formToken(web), error, keyText });
  };

  router.get('/', (ctx) => home(ctx));

  // The single-file kzymy-client, from memory (read and hashed at start). Cache-Control
  // stays no-store, as on every answer here: the pages show the hash of this very copy.
  const clientDigest = web.client ? `sha-256=:${Buffer.from(web.client.sha256, 'hex').toString('base64')}:` : '';
  router.get(CLIENT_PATH, (ctx) => {
    if (!web.client) {
      throw new WebError(
        404,
        'not-found',
        'This server has no copy of kzymy-client to offer: it was started without building it. Ask its operator, or build it from kzymy\'s source with npm run build.',
      );
    }
    ctx.type = 'text/javascript; charset=utf-8';
    ctx.set('Content-Disposition', `attachment; filename="${CLIENT_FILE_NAME}"`);
    ctx.set('Repr-Digest', clientDigest);
    ctx.body = web.client.bytes;
  });

  router.get('/style.css', (ctx) => {
    ctx.type = 'text/css; charset=utf-8';
    ctx.body = STYLE_CSS;
  });

  // A reload or a bookmark of a form address goes back to the start.
  router.get('/signup', (ctx) => {
    ctx.status = 303;
    ctx.redirect('/');
  });
  router.get('/signup/confirm', (ctx) => {
    ctx.status = 303;
    ctx.redirect('/');
  });

  router.post('/signup', async (ctx) => {
    const form = await readForm(ctx, formLimits);
    const file = form.files.keyfile;
    const pasted = form.fields.key;
    const keyText = echoKey(pasted, MAX_KEY_BYTES);
    if (!formTokenValid(web, form.fields.csrf)) return home(ctx, 400, STALE_FORM, keyText);
    const input: string | Uint8Array = file && file.length > 0 ? file : (pasted ?? '');
    try {
      const pending = await startSignup(web, input, ctx.host);
      showChallenge(web, ctx, pending);
    } catch (err) {
      if (!(err instanceof WebError)) throw err;
      for (const [k, v] of Object.entries(err.headers)) ctx.set(k, v);
      home(ctx, err.status, err.message, keyText);
    }
  });

  router.post('/signup/confirm', async (ctx) => {
    const form = await readForm(ctx, { fileBytes: 1024, fieldBytes: 4096 });
    const pending = findSignup(web, form.fields.signup);
    if (!sameText(form.fields.csrf ?? '', pending.csrf)) {
      throw new WebError(400, 'bad-request', 'This form did not come from this site. Go back to the challenge page and send the code from there.');
    }
    const server = serverFor(web, ctx.host);
    try {
      const user = await confirmSignup(web, pending, form.fields.code ?? '', server);
      ctx.type = 'html';
      ctx.body = donePage({
        username: user.username,
        domain: config.domain,
        fingerprint: user.fingerprint,
        onion: server.onion,
        command: fetchCommand(server.url, user.username, user.fingerprint, server.noTor),
        client: clientView(web, ctx.host),
      });
    } catch (err) {
      if (err instanceof WebError && err.code === 'wrong-code') {
        ctx.status = 400;
        showChallenge(web, ctx, pending, err.message);
        return;
      }
      throw err;
    }
  });

  return router;
}
