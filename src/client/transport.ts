// HTTP to the kzymy API (docs/protocol.md): node:http, every request through Tor's SOCKS5
// port with socks-proxy-agent (socks5h: tor resolves the onion name), or directly to a
// loopback server with --no-tor. Every failure becomes one sentence with an exit code.
import http from 'node:http';
import { SocksProxyAgent } from 'socks-proxy-agent';
import { ApiError, ClientError, tempError } from './errors.js';
import type { Target } from './target.js';

/** Largest JSON answer read (the API's answers are small). */
const MAX_JSON_BYTES = 4 * 1024 * 1024;
/** Largest download read: a PGP/MIME file of a message at the server's 25 MiB limit is ~34 MiB. */
const MAX_DOWNLOAD_BYTES = 256 * 1024 * 1024;
/** A connection idle this long is given up (tor circuits can be slow to build). */
const IDLE_TIMEOUT_MS = 120_000;

export interface Response {
  status: number;
  headers: http.IncomingHttpHeaders;
  body: Buffer;
}

export interface RequestOptions {
  body?: unknown;
  token?: string | null;
  /** Called with the bytes received so far (downloads). */
  onData?: (received: number, total: number | null) => void;
  maxBytes?: number;
}

export class Transport {
  private readonly agent: http.Agent;

  constructor(readonly target: Target) {
    this.agent = target.proxy
      ? new SocksProxyAgent(target.proxy.href, { timeout: IDLE_TIMEOUT_MS })
      : new http.Agent({ keepAlive: true });
  }

  /** Where we connect, for sentences. */
  describe(): string {
    return this.target.server.origin;
  }

  close(): void {
    this.agent.destroy();
  }

  /** A raw request; rejects only with a ClientError. */
  request(method: string, path: string, opts: RequestOptions = {}): Promise<Response> {
    const url = new URL(this.target.server.href.replace(/\/$/, '') + path);
    const payload = opts.body === undefined ? null : Buffer.from(JSON.stringify(opts.body), 'utf8');
    const headers: Record<string, string> = { Accept: 'application/json', 'User-Agent': 'kzymy-client' };
    if (payload) {
      headers['Content-Type'] = 'application/json';
      headers['Content-Length'] = String(payload.length);
    }
    if (opts.token) headers.Authorization = `Bearer ${opts.token}`;
    const limit = opts.maxBytes ?? MAX_JSON_BYTES;
    return new Promise<Response>((resolve, reject) => {
      const req = http.request(url, { method, headers, agent: this.agent }, (res) => {
        const chunks: Buffer[] = [];
        let received = 0;
        const lengthHeader = Number(res.headers['content-length']);
        const total = Number.isFinite(lengthHeader) ? lengthHeader : null;
        res.on('data', (chunk: Buffer) => {
          received += chunk.length;
          if (received > limit) {
            req.destroy(new ClientError(`The server sent more than ${limit} bytes for ${method} ${path}; giving up.`));
            return;
          }
          chunks.push(chunk);
          opts.onData?.(received, total);
        });
        res.on('end', () => {
          if (total !== null && received !== total) {
            reject(tempError(`The connection to ${this.describe()} broke during a transfer; try again later.`));
            return;
          }
          resolve({ status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(chunks) });
        });
        res.on('aborted', () => reject(tempError(`The connection to ${this.describe()} broke during a transfer; try again later.`)));
        res.on('error', (err) => reject(this.networkError(err)));
      });
      req.setTimeout(IDLE_TIMEOUT_MS, () =>
        req.destroy(tempError(`${this.describe()} did not answer within ${IDLE_TIMEOUT_MS / 1000} s; try again later.`)),
      );
      req.on('error', (err) => reject(this.networkError(err)));
      req.end(payload ?? undefined);
    });
  }

  /** A JSON call: the parsed object on 2xx, an ApiError with the server's sentence otherwise. */
  async json<T>(method: string, path: string, opts: RequestOptions = {}): Promise<{ status: number; body: T }> {
    const res = await this.request(method, path, opts);
    const parsed = parseJson(res);
    if (res.status >= 200 && res.status < 300) {
      if (parsed === undefined || parsed === null || typeof parsed !== 'object') throw this.notKzymy(res.status);
      return { status: res.status, body: parsed as T };
    }
    throw this.apiError(res, parsed);
  }

  /** Turns a non-2xx answer into an ApiError carrying the server's sentence. */
  apiError(res: Response, parsed: unknown = parseJson(res)): ApiError | ClientError {
    const err = (parsed as { error?: { code?: unknown; message?: unknown } } | undefined)?.error;
    if (!err || typeof err.code !== 'string' || typeof err.message !== 'string') {
      if (res.status >= 500) {
        return tempError(`${this.describe()} answered HTTP ${res.status} (a problem on the server); try again later.`);
      }
      return this.notKzymy(res.status);
    }
    // A 429 sentence names its one wait time itself (the Retry-After value): nothing added.
    return new ApiError(res.status, err.code, err.message.trim());
  }

  private notKzymy(status: number): ClientError {
    return new ClientError(
      `${this.describe()} answered HTTP ${status} with something that is not kzymy's API; check --server.`,
    );
  }

  /** Socket-level failures: tor not running, onion unreachable, server down. */
  private networkError(err: unknown): ClientError {
    if (err instanceof ClientError) return err;
    const e = err as NodeJS.ErrnoException;
    const text = `${e.code ?? ''} ${e.message ?? String(err)}`;
    const proxy = this.target.proxy;
    if (proxy) {
      const where = `${proxy.hostname}:${proxy.port}`;
      if (/ECONNREFUSED|ENOENT|EHOSTUNREACH|ENETUNREACH|EADDRNOTAVAIL/.test(text) && !/Socks5 proxy rejected/i.test(text)) {
        return tempError(
          `cannot reach Tor's SOCKS port at ${where}: is tor running? (apt-get install tor; systemctl start tor)`,
        );
      }
      const rejected = /proxy rejected connection - (\w+)/i.exec(text);
      if (rejected) {
        return tempError(
          `Tor could not connect to ${this.describe()} (${rejected[1]}): the onion service may be down, or tor not yet connected to the network; try again later.`,
        );
      }
      if (/timed? ?out|ETIMEDOUT/i.test(text)) {
        return tempError(`Tor did not connect to ${this.describe()} in time; try again later.`);
      }
      if (/Socks|proxy/i.test(text)) {
        return tempError(`The SOCKS proxy at ${where} failed: ${e.message}. Is it tor's SocksPort? Try again later.`);
      }
    } else if (/ECONNREFUSED/.test(text)) {
      return tempError(`cannot reach the kzymy server at ${this.describe()}: is kzymy-server running?`);
    }
    if (/ECONNRESET|socket hang up|EPIPE|ETIMEDOUT/i.test(text)) {
      return tempError(`The connection to ${this.describe()} broke; try again later.`);
    }
    return tempError(`Cannot talk to ${this.describe()}: ${e.message ?? String(err)}; try again later.`);
  }
}

function parseJson(res: Response): unknown {
  const type = String(res.headers['content-type'] ?? '');
  if (!/^application\/json/i.test(type)) return undefined;
  try {
    return JSON.parse(res.body.toString('utf8'));
  } catch {
    return undefined;
  }
}

export const DOWNLOAD_LIMIT = MAX_DOWNLOAD_BYTES;
