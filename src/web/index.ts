// The onion web: signup pages and /api/v1 on one loopback-only Koa listener.
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import Koa from 'koa';
import { isLoopbackHost, UserError } from '../config/index.js';
import { followRemovedAccounts } from './accounts.js';
import { apiRouter } from './api.js';
import { createWeb, type Web } from './context.js';
import { errorHandler } from './errors.js';
import { securityHeaders } from './headers.js';
import { pagesRouter } from './pages.js';
import { requestLog } from './requestlog.js';
import type { WebDeps } from './types.js';

export type { WebDeps, WebLimits } from './types.js';
export { DEFAULT_LIMITS } from './types.js';
export { removeAccount } from './accounts.js';
export { sendExpiryNotices, startExpiryNotices, type ExpiryNotices } from './notices.js';
export { CSP, SECURITY_HEADERS } from './headers.js';

export function createWebApp(deps: WebDeps): Koa {
  return webApp(createWeb(deps));
}

function webApp(web: Web): Koa {
  const { deps } = web;
  const app = new Koa({ proxy: false });
  // Koa's own error printer would write stacks to stderr; errors are answered below, and
  // what still escapes (a client gone mid-download) is logged by name and code only.
  app.silent = true;
  app.on('error', (err: { name?: string; code?: string }) => {
    if (err?.code === 'ECONNRESET' || err?.code === 'EPIPE' || err?.code === 'ERR_STREAM_PREMATURE_CLOSE') return;
    deps.logger.warn({ err }, 'web stream error');
  });
  const pages = pagesRouter(web);
  const api = apiRouter(web);
  app.use(requestLog(deps.logger));
  app.use(securityHeaders);
  app.use(errorHandler(deps.logger));
  app.use(api.routes());
  app.use(api.allowedMethods());
  app.use(pages.routes());
  app.use(pages.allowedMethods());
  return app;
}

export interface WebServer {
  port: number;
  close(): Promise<void>;
}

/** Listens on config.web.host:config.web.port (0 = any free port); loopback only. */
export async function startWeb(deps: WebDeps): Promise<WebServer> {
  const { host, port } = deps.config.web;
  if (!isLoopbackHost(host)) {
    throw new UserError(
      `The web listener must stay on loopback (127.0.0.1 or ::1) so that it is reachable only through the onion service; "${host}" is not.`,
    );
  }
  const web = createWeb(deps);
  const app = webApp(web);
  const server = http.createServer({ maxHeaderSize: 16 * 1024 }, app.callback());
  server.headersTimeout = 30_000;
  server.requestTimeout = 120_000;
  server.keepAliveTimeout = 5_000;
  server.on('clientError', (_err, socket) => {
    if (socket.writable) socket.end('HTTP/1.1 400 Bad Request\r\nConnection: close\r\nContent-Length: 0\r\n\r\n');
    else socket.destroy();
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, () => {
      server.off('error', reject);
      resolve();
    });
  });
  const actual = (server.address() as AddressInfo).port;
  // Accounts deleted by another process (the operator's CLI): their sessions end here too.
  const removals = followRemovedAccounts(web);
  return {
    port: actual,
    close: () =>
      new Promise<void>((resolve, reject) => {
        removals.stop();
        server.close((err) => (err ? reject(err) : resolve()));
        server.closeIdleConnections();
        setTimeout(() => server.closeAllConnections(), 2000).unref();
      }),
  };
}
