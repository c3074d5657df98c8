// One log line per request: method, route pattern, status, duration. No IP, no
// username, no key, no message id.
import type { Context, Next } from 'koa';
import type { Logger } from '../config/log.js';

export function requestLog(logger: Logger) {
  return async function log(ctx: Context, next: Next): Promise<void> {
    const start = process.hrtime.bigint();
    try {
      await next();
    } finally {
      const ms = Number(process.hrtime.bigint() - start) / 1e6;
      // The router's pattern (e.g. /api/v1/messages/:id), never the concrete path.
      const route = (ctx as Context & { _matchedRoute?: unknown })._matchedRoute;
      logger.info(
        { evt: 'http', method: ctx.method, route: typeof route === 'string' ? route : '(unmatched)', status: ctx.status, ms: Math.round(ms * 10) / 10 },
        'http',
      );
    }
  };
}
