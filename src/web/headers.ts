// Security headers on every answer: nothing loads from elsewhere, nothing is
// framed, no referrer leaves, nothing is cached.
import type { Context, Next } from 'koa';

export const CSP =
  "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

export const SECURITY_HEADERS: Readonly<Record<string, string>> = {
  'Content-Security-Policy': CSP,
  'Referrer-Policy': 'no-referrer',
  'X-Content-Type-Options': 'nosniff',
  'X-Frame-Options': 'DENY',
  'Cross-Origin-Opener-Policy': 'same-origin',
  'Cross-Origin-Resource-Policy': 'same-origin',
  'Cache-Control': 'no-store',
};

export async function securityHeaders(ctx: Context, next: Next): Promise<void> {
  ctx.set(SECURITY_HEADERS);
  try {
    await next();
  } finally {
    // Again after the handler, so that nothing below can have dropped or weakened them.
    ctx.set(SECURITY_HEADERS);
  }
}
