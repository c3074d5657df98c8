// HTTP to the kzymy API (docs/protocol.md): node:http, every request through Tor's SOCKS5
// port with socks-proxy-agent (socks5h: tor resolves the onion name), or directly to a
// loopback server with --no-tor. Every failure becomes one sentence with an exit code.
import http from 'node:http';
import { SocksProxyAgent } from 'socks-proxy-agent';
import { ApiError, ClientError, protocolError, tempError } from './errors.js';
import { readFrames, type Framed, type Wanted } from './frames.js';
import type { Target } from './target.js';

/** Largest JSON answer read (the API's answers are small). */
const MAX_JSON_BYTES = 4 * 1024 * 1024;
/**
 * Largest download accepted. A download is streamed to its destination in chunks, never held
 * whole, so this bounds disk use, not memory: a PGP/MIME file of a message at the server's
 * default 25 MiB limit is ~34 MiB; a server listing more than 1 GiB is refused.
 */
const MAX_DOWNLOAD_BYTES = 1024 * 1024 * 1024;
/** A connection idle this long is given up (tor circuits can be slow to build). */
const IDLE_TIMEOUT_MS = 120_000;

export interface Response {
  status: number;
  headers: http.IncomingHttpHeaders;
  body: Buffer;
}

/** A streamed 200 answer: its chunks, checked against the size the server listed. */
export interface Download {
  /** Content-Length: the exact number of bytes `chunks` yields when the transfer completes. */
  size: number;
  /**
   * The body in chunks, read once. It throws a ClientError when the transfer breaks
   * (aborted, cut short of Content-Length: exit 75) or the server sends more than it
   * listed (exit 76); stopping early closes the connection.
   */
  chunks: AsyncIterable<Buffer>;
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
      ? new SocksProxyAgent(target.proxy.href, { timeout: IDLE_TIMEOUT_MS, keepAlive: true })
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
  async request(method: string, path: string, opts: RequestOptions = {}): Promise<Response> {
    const { req, res } = await this.open(method, path, opts);
    return this.collect(req, res, method, path, opts);
  }

  /**
   * GET of a message: on 200 its body as a stream of chunks (never held whole), after
   * checking that Content-Length is the size the server listed (`listed`) and within the
   * download limit; any other answer as a Response (read whole: it is a small error).
   */
  async download(path: string, listed: number, token: string): Promise<{ status: 200; download: Download } | { status: number; response: Response }> {
    const { req, res } = await this.open('GET', path, { token });
    if (res.statusCode !== 200) return { status: res.statusCode ?? 0, response: await this.collect(req, res, 'GET', path, {}) };
    const hostile = (why: string): ClientError => {
      req.destroy();
      return protocolError(`${this.describe()} ${why} (it may be compromised or misconfigured); nothing was delivered. Do not use this server, and tell its operator.`);
    };
    const length = Number(res.headers['content-length']);
    if (!Number.isSafeInteger(length) || length < 0) throw hostile('sent a message without its length');
    if (length !== listed) throw hostile(`sent a message of ${length} bytes that it listed as ${listed} bytes`);
    if (length > MAX_DOWNLOAD_BYTES) throw hostile(`sent a message of ${length} bytes, more than the ${MAX_DOWNLOAD_BYTES} bytes kzymy-client accepts`);
    const broke = this.broke;
    async function* chunks(): AsyncGenerator<Buffer> {
      let received = 0;
      for await (const chunk of res as AsyncIterable<Buffer>) {
        received += chunk.length;
        // node's HTTP parser never passes more than Content-Length; checked here all the same.
        if (received > length) throw hostile(`sent more than the ${length} bytes it announced`);
        yield chunk;
      }
      if (received !== length || !res.complete) throw broke();
    }
    return { status: 200, download: { size: length, chunks: this.transfer(req, chunks()) } };
  }

  /**
   * POST of a batch download (docs/protocol.md 5.5): on 200 the messages one by one, each
   * whole and checked against `wanted` (readFrames); any other answer as a Response.
   */
  async downloadMany(path: string, wanted: readonly Wanted[], token: string): Promise<{ status: 200; frames: AsyncIterable<Framed> } | { status: number; response: Response }> {
    const { req, res } = await this.open('POST', path, { token, body: { ids: wanted.map((w) => w.id) } });
    if (res.statusCode !== 200) return { status: res.statusCode ?? 0, response: await this.collect(req, res, 'POST', path, {}) };
    const hostile = (why: string): ClientError => {
      req.destroy();
      return protocolError(`${this.describe()} ${why} (it may be compromised or misconfigured); nothing more was delivered. Do not use this server, and tell its operator.`);
    };
    if (!/^application\/vnd\.kzymy\.messages\b/i.test(String(res.headers['content-type'] ?? ''))) {
      req.destroy();
      throw this.notKzymy(200);
    }
    const broke = this.broke;
    async function* frames(): AsyncGenerator<Framed> {
      yield* readFrames(res as AsyncIterable<Buffer>, wanted, { hostile, broke });
      if (!res.complete) throw broke();
    }
    return { status: 200, frames: this.transfer(req, frames()) };
  }

  private readonly broke = (): ClientError => tempError(`The connection to ${this.describe()} broke during a transfer; try again later.`);

  /**
   * The body of a streamed answer as `body` reads it: a connection reset becomes the
   * "broke" sentence and any other socket failure a ClientError; a body not read to its end
   * (the delivery failed, the run was stopped) or broken closes the connection, which is
   * then not reused.
   */
  private async *transfer<T>(req: http.ClientRequest, body: AsyncGenerator<T>): AsyncGenerator<T> {
    let complete = false;
    try {
      yield* body;
      complete = true;
    } catch (err) {
      if (err instanceof ClientError) throw err;
      const code = (err as NodeJS.ErrnoException).code;
      throw code === 'ECONNRESET' || code === 'ERR_STREAM_PREMATURE_CLOSE' ? this.broke() : this.networkError(err);
    } finally {
      if (!complete) req.destroy();
    }
  }

  /** Sends the request; resolves with the answer's head, its body not yet read. */
  private open(method: string, path: string, opts: RequestOptions): Promise<{ req: http.ClientRequest; res: http.IncomingMessage }> {
    const url = new URL(this.target.server.href.replace(/\/$/, '') + path);
    const payload = opts.body === undefined ? null : Buffer.from(JSON.stringify(opts.body), 'utf8');
    const headers: Record<string, string> = { Accept: 'application/json', 'User-Agent': 'kzymy-client' };
    if (payload) {
      headers['Content-Type'] = 'application/json';
      headers['Content-Length'] = String(payload.length);
    }
    if (opts.token) headers.Authorization = `Bearer ${opts.token}`;
    return new Promise((resolve, reject) => {
      const req = http.request(url, { method, headers, agent: this.agent }, (res) => resolve({ req, res }));
      req.setTimeout(IDLE_TIMEOUT_MS, () =>
        req.destroy(tempError(`${this.describe()} did not answer within ${IDLE_TIMEOUT_MS / 1000} s; try again later.`)),
      );
      req.on('error', (err) => reject(this.networkError(err)));
      req.end(payload ?? undefined);
    });
  }

  /** Reads a whole (small) answer, at most `opts.maxBytes`. */
  private collect(req: http.ClientRequest, res: http.IncomingMessage, method: string, path: string, opts: RequestOptions): Promise<Response> {
    const limit = opts.maxBytes ?? MAX_JSON_BYTES;
    return new Promise<Response>((resolve, reject) => {
      const chunks: Buffer[] = [];
      let received = 0;
      const lengthHeader = Number(res.headers['content-length']);
      const total = Number.isFinite(lengthHeader) ? lengthHeader : null;
      req.on('error', (err) => reject(this.networkError(err)));
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
          reject(this.broke());
          return;
        }
        resolve({ status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(chunks) });
      });
      res.on('aborted', () => reject(this.broke()));
      res.on('error', (err) => reject(this.networkError(err)));
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
