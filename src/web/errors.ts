// Errors as answers: a human HTML page, or {"error":{"code","message"}} under /api.
// Never a stack trace, to the client or to the log.
import { RegistryError } from '../registry/index.js';
import type { Context, Next } from 'koa';
import type { Logger } from '../config/log.js';
import { errorPage } from './templates.js';

/** An expected refusal: status, stable code and a sentence safe to show. */
export class WebError extends Error {
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
    readonly headers: Record<string, string> = {},
  ) {
    super(message);
    this.name = 'WebError';
  }
}

interface Canned {
  code: string;
  title: string;
  message: string;
}

const CANNED: Record<number, Canned> = {
  400: { code: 'bad-request', title: 'Bad request', message: 'The request could not be understood.' },
  401: { code: 'unauthorized', title: 'Not signed in', message: 'This needs a valid bearer token: authenticate first.' },
  403: { code: 'forbidden', title: 'Forbidden', message: 'This is not allowed.' },
  404: { code: 'not-found', title: 'Not found', message: 'There is nothing at this address.' },
  405: { code: 'method-not-allowed', title: 'Method not allowed', message: 'This address does not accept that method.' },
  413: { code: 'too-large', title: 'Too large', message: 'The request is too large.' },
  415: { code: 'unsupported-media-type', title: 'Unsupported content type', message: 'The request body has a content type this address does not accept.' },
  429: { code: 'rate-limited', title: 'Too many requests', message: 'Too many requests right now. Wait a little and try again.' },
  500: { code: 'internal', title: 'Server error', message: 'Something went wrong on the server. Nothing was changed; please try again later.' },
  501: { code: 'not-implemented', title: 'Not implemented', message: 'The server does not support that method.' },
  503: { code: 'unavailable', title: 'Unavailable', message: 'The service is unavailable right now. Try again later.' },
};

function canned(status: number): Canned {
  return CANNED[status] ?? (status >= 500 ? CANNED[500]! : CANNED[400]!);
}

export function isApi(ctx: Context): boolean {
  return ctx.path === '/api' || ctx.path.startsWith('/api/');
}

const TITLES: Record<number, string> = Object.fromEntries(Object.entries(CANNED).map(([k, v]) => [Number(k), v.title]));

/** Writes an error answer in the right form for the address. */
export function renderError(ctx: Context, status: number, code: string, message: string): void {
  ctx.status = status;
  if (isApi(ctx)) {
    ctx.body = { error: { code, message } };
  } else {
    ctx.type = 'html';
    ctx.body = errorPage(status, TITLES[status] ?? canned(status).title, message);
  }
}

/** Catches every error below it, and gives a body to every bodiless 4xx/5xx (404, 405, 501). */
export function errorHandler(logger: Logger) {
  return async function errors(ctx: Context, next: Next): Promise<void> {
    try {
      await next();
      if (ctx.status >= 400 && ctx.body == null) {
        const c = canned(ctx.status);
        renderError(ctx, ctx.status, c.code, c.message);
      }
    } catch (err) {
      if (err instanceof WebError) {
        for (const [k, v] of Object.entries(err.headers)) ctx.set(k, v);
        renderError(ctx, err.status, err.code, err.message);
        return;
      }
      if (err instanceof RegistryError && err.code === 'write-failed') {
        // The sentence for the operator names server paths: the visitor gets her own.
        logger.error({ evt: 'registry-write-failed', err }, 'request failed');
        ctx.set('Retry-After', '300');
        renderError(ctx, 503, 'not-saved', 'Your change could not be saved right now (the server is short of disk space or has a disk problem). Nothing was changed: try again in a few minutes.');
        return;
      }
      const e = err as { status?: unknown; expose?: unknown; name?: unknown; code?: unknown };
      const status = typeof e.status === 'number' && e.status >= 400 && e.status < 600 ? e.status : 500;
      if (status >= 500) {
        // Name and code only: messages and stacks may carry paths, names or addresses.
        logger.error({ err: e }, 'request failed');
      }
      const c = canned(status);
      renderError(ctx, status, c.code, c.message);
    }
  };
}
