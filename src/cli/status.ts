// The status document of a running server and its control socket: the server answers one
// JSON status document on a unix socket in its data dir (DATA_DIR/control.sock, mode 0600,
// the owner alone can connect), which `kzymy-server status` asks. The socket is not
// the web listener on purpose: tor publishes that one, so anything on it is reachable by
// anyone. The document holds counts, ports, paths and times: never an address or a subject.
import http from 'node:http';
import path from 'node:path';
import { X509Certificate } from 'node:crypto';
import { chmod, readFile, statfs, unlink } from 'node:fs/promises';
import { UserError, type Config } from '../config/index.js';
import type { Logger } from '../config/log.js';
import type { Registry } from '../registry/index.js';
import type { MaildirStore } from '../maildir/index.js';
import type { TorState } from '../tor/index.js';
import { connectError } from './probe.js';
import { version } from './version.js';

export function controlSocketPath(config: Config): string {
  return path.join(config.dataDir, 'control.sock');
}

export interface StatusDocument {
  version: string;
  pid: number;
  startedAt: string;
  now: string;
  domain: string;
  dataDir: string;
  maildirRoot: string;
  smtp: { host: string; port: number };
  web: { host: string; port: number };
  tor: { mode: 'managed' | 'system'; onion: string | null; hostnameFile: string } & Partial<TorState>;
  disk: { free: number; floor: number } | { error: string };
  users: { total: number; disabled: number };
  mail: { waiting: number; bytes: number; oldest: string | null; retentionDays: number };
  /** Replies given in the last 60 minutes, by code ("250 2.0.0": 3). */
  replies: Record<string, number>;
  tls: { file: string; validTo: string } | { file: string; error: string };
}

export interface StatusSources {
  config: Config;
  registry: Registry;
  maildir: MaildirStore;
  startedAt: Date;
  smtpPort: number;
  webPort: number;
  replies: () => Promise<Record<string, number>> | Record<string, number>;
  onion: () => string | null;
  tor: () => TorState | null;
}

export async function collectStatus(s: StatusSources): Promise<StatusDocument> {
  const { config } = s;
  let disk: StatusDocument['disk'];
  try {
    const f = await statfs(config.maildirRoot);
    disk = { free: f.bavail * f.bsize, floor: config.limits.minFreeBytes };
  } catch (err) {
    disk = { error: (err as NodeJS.ErrnoException).code ?? 'error' };
  }
  let tls: StatusDocument['tls'];
  try {
    const cert = new X509Certificate(await readFile(config.smtp.tlsCertFile));
    tls = { file: config.smtp.tlsCertFile, validTo: new Date(cert.validTo).toISOString() };
  } catch (err) {
    tls = { file: config.smtp.tlsCertFile, error: (err as NodeJS.ErrnoException).code ?? 'not a PEM certificate' };
  }
  let waiting = 0;
  let bytes = 0;
  let oldest: Date | null = null;
  for (const name of await s.maildir.listUsers()) {
    const u = await s.maildir.usage(name);
    waiting += u.count;
    bytes += u.bytes;
    if (u.oldest && (!oldest || u.oldest < oldest)) oldest = u.oldest;
  }
  const users = s.registry.list();
  return {
    version: version(),
    pid: process.pid,
    startedAt: s.startedAt.toISOString(),
    now: new Date().toISOString(),
    domain: config.domain,
    dataDir: config.dataDir,
    maildirRoot: config.maildirRoot,
    smtp: { host: config.smtp.host, port: s.smtpPort },
    web: { host: config.web.host, port: s.webPort },
    tor: { mode: config.tor.manage ? 'managed' : 'system', onion: s.onion(), hostnameFile: config.tor.hostnameFile, ...(s.tor() ?? {}) },
    disk,
    users: { total: users.length, disabled: users.filter((u) => u.disabled).length },
    mail: { waiting, bytes, oldest: oldest?.toISOString() ?? null, retentionDays: config.limits.retentionDays },
    replies: await s.replies(),
    tls,
  };
}

/**
 * Serves GET /status on DATA_DIR/control.sock (HTTP over a unix socket, node:http).
 * Refuses to start when another server already answers there; removes a stale socket.
 */
export async function startControlSocket(config: Config, build: () => Promise<StatusDocument>, logger: Logger): Promise<{ close(): Promise<void> }> {
  const file = controlSocketPath(config);
  if (Buffer.byteLength(file) > 107) {
    logger.warn({ evt: 'control-socket-off' }, `The data dir path is too long for a unix socket, so "kzymy-server status" cannot reach this server: use a shorter dataDir.`);
    return { close: async () => undefined };
  }
  if (await answers(file)) {
    throw new UserError(`Another kzymy-server is running with the data dir ${config.dataDir} (it answers on ${file}): stop it first, or give this one another dataDir.`);
  }
  await unlink(file).catch(() => undefined);

  const server = http.createServer((req, res) => {
    const send = (code: number, body: unknown): void => {
      res.writeHead(code, { 'content-type': 'application/json', connection: 'close' });
      res.end(JSON.stringify(body));
    };
    if (req.url !== '/status') return send(404, { error: 'The control socket serves GET /status only.' });
    if (req.method !== 'GET') return send(405, { error: 'The control socket serves GET /status only.' });
    build().then(
      (doc) => send(200, doc),
      (err: unknown) => send(500, { error: `The status could not be collected (${(err as NodeJS.ErrnoException).code ?? (err as Error).name}).` }),
    );
  });
  server.requestTimeout = 10_000;
  server.headersTimeout = 5_000;
  server.maxHeadersCount = 20;
  // The data dir is 0700 already; the socket itself is made owner-only before anyone is told of it.
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(file, () => {
      server.off('error', reject);
      resolve();
    });
  });
  await chmod(file, 0o600);
  server.unref();
  return {
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}

/** True if something accepts connections on the unix socket `file`. */
async function answers(file: string): Promise<boolean> {
  return (await connectError({ path: file })) === null;
}

/** GET /status on the control socket; throws with `code` ENOENT/ECONNREFUSED when no server runs. */
export function requestStatus(file: string, timeoutMs = 15_000): Promise<StatusDocument> {
  return new Promise((resolve, reject) => {
    const req = http.get({ socketPath: file, path: '/status', timeout: timeoutMs }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (d: string) => (body += d));
      res.on('end', () => {
        try {
          const j = JSON.parse(body) as StatusDocument & { error?: string };
          if (res.statusCode !== 200) return reject(new UserError(j.error ?? `The server answered ${res.statusCode}.`));
          resolve(j);
        } catch {
          reject(new UserError(`The server's answer on ${file} is not a status document.`));
        }
      });
    });
    req.on('timeout', () => req.destroy(Object.assign(new UserError(`The server did not answer on ${file} within ${timeoutMs / 1000} s.`), { code: 'ETIMEDOUT' })));
    req.on('error', reject);
  });
}
