// `kzymy-server status`: the running server answers one JSON status document on a unix
// socket in its data dir (DATA_DIR/control.sock, mode 0600, the owner alone can connect);
// the command prints one `ok` / `problem` / `unknown` line for each part. The socket is not
// the web listener on purpose: tor publishes that one, so anything on it is reachable by
// anyone. The document holds counts, ports, paths and times: never an address or a subject.
import http from 'node:http';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { Resolver } from 'node:dns/promises';
import { X509Certificate } from 'node:crypto';
import { chmod, readFile, statfs, unlink } from 'node:fs/promises';
import { UserError, type Config } from '../config/index.js';
import type { Logger } from '../config/log.js';
import type { Registry } from '../registry/index.js';
import type { MaildirStore } from '../maildir/index.js';
import type { TorState } from '../tor/index.js';
import { askTor, type TorAnswer } from '../tor/control.js';
import { version } from './version.js';

/** Exit code of `status` when no server answers on the data dir's control socket. */
export const NO_SERVER_EXIT = 3;
/** A certificate that ends sooner than this is reported as a problem. */
const CERT_WARN_DAYS = 14;
const DAY = 86_400_000;

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
function answers(file: string): Promise<boolean> {
  return new Promise((resolve) => {
    const s = net.connect(file);
    s.once('connect', () => {
      s.destroy();
      resolve(true);
    });
    s.once('error', () => resolve(false));
  });
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

export type Mark = 'ok' | 'problem' | 'unknown';
export interface StatusLine {
  mark: Mark;
  part: string;
  text: string;
}

function mib(n: number): string {
  return `${(n / 1048576).toFixed(n < 10 * 1048576 ? 1 : 0)} MiB`;
}

function age(ms: number): string {
  const min = Math.max(0, Math.floor(ms / 60_000));
  if (min < 60) return `${min} min`;
  const h = Math.floor(min / 60);
  if (h < 48) return `${h} h ${min % 60} min`;
  return `${Math.floor(h / 24)} days`;
}

/** A TCP connection to host:port succeeds within the time. */
function connects(host: string, port: number, timeoutMs = 3_000): Promise<string | null> {
  const target = host === '0.0.0.0' ? '127.0.0.1' : host === '::' ? '::1' : host;
  return new Promise((resolve) => {
    const s = net.connect({ host: target, port, timeout: timeoutMs });
    s.once('connect', () => {
      s.destroy();
      resolve(null);
    });
    s.once('timeout', () => {
      s.destroy();
      resolve('ETIMEDOUT');
    });
    s.once('error', (e: NodeJS.ErrnoException) => resolve(e.code ?? e.message));
  });
}

/**
 * What `status` itself learnt from the system tor's control socket (tor.controlSocket), asked
 * when the server could not: on the appliance the service's sandbox hides /run/tor, on
 * purpose (the control port can reconfigure tor), while the operator's command runs outside
 * it with the group debian-tor.
 */
export type DirectTor = { socket: string; answer: TorAnswer } | { socket: string; error: string };

/** Asks the system tor when the server does not follow it; null when the server does. */
export async function askSystemTor(config: Config, doc: StatusDocument): Promise<DirectTor | null> {
  if (doc.tor.mode !== 'system' || doc.tor.control === 'connected') return null;
  const socket = config.tor.controlSocket;
  try {
    return { socket, answer: await askTor(socket, doc.tor.onion) };
  } catch (e) {
    return { socket, error: (e as NodeJS.ErrnoException).code ?? (e as Error).message };
  }
}

/** The ok / problem lines of a status document (the listeners are tried for real). */
export async function judge(doc: StatusDocument, direct: DirectTor | null = null): Promise<StatusLine[]> {
  const now = Date.parse(doc.now);
  const lines: StatusLine[] = [];
  const add = (mark: Mark, part: string, text: string): void => void lines.push({ mark, part, text });

  add('ok', 'server', `kzymy-server ${doc.version} up since ${doc.startedAt} (${age(now - Date.parse(doc.startedAt))}, pid ${doc.pid}).`);
  const [smtpErr, webErr] = await Promise.all([connects(doc.smtp.host, doc.smtp.port), connects(doc.web.host, doc.web.port)]);
  add(smtpErr ? 'problem' : 'ok', 'smtp', smtpErr ? `SMTP on ${doc.smtp.host}:${doc.smtp.port} does not accept connections (${smtpErr}).` : `SMTP listens on ${doc.smtp.host}:${doc.smtp.port}.`);
  add(webErr ? 'problem' : 'ok', 'web', webErr ? `The web listener ${doc.web.host}:${doc.web.port} does not accept connections (${webErr}).` : `The web listener is on ${doc.web.host}:${doc.web.port} (loopback; tor publishes it).`);

  const t = doc.tor;
  const torName = t.mode === 'managed' ? 'The managed tor' : 'The system tor';
  const controlSaid = t.control === 'connected';
  const asked = direct && 'answer' in direct ? direct : null;
  if (asked) {
    // The server cannot see tor; this command asked tor's control socket itself.
    const b = asked.answer.bootstrap;
    const via = `asked by this command on ${asked.socket}`;
    if (b && b.percent >= 100) add('ok', 'tor', `${torName} has bootstrapped (100%: ${b.summary}; ${via}).`);
    else add('problem', 'tor', `${torName} has bootstrapped ${b?.percent ?? 0}% (${b?.summary ?? 'no report yet'}; ${via}): it is not connected to the Tor network yet; its log says why.`);
  } else if (!controlSaid) {
    const why = t.socket ? `its control socket ${t.socket} cannot be used${t.reason ? ` (${t.reason})` : ''}` : 'kzymy has no control socket for it';
    const also = direct && 'error' in direct ? `, nor could this command use ${direct.socket} (${direct.error}${direct.error === 'EACCES' ? ': run status as root or as a member of the group debian-tor' : ''})` : '';
    add('unknown', 'tor', `Whether ${torName.toLowerCase()} has bootstrapped is unknown: ${why}${also}.`);
  } else if (t.bootstrap && t.bootstrap.percent >= 100) add('ok', 'tor', `${torName} has bootstrapped (100%: ${t.bootstrap.summary}).`);
  else add('problem', 'tor', `${torName} has bootstrapped ${t.bootstrap?.percent ?? 0}% (${t.bootstrap?.summary ?? 'no report yet'}): it is not connected to the Tor network yet; its log says why.`);

  if (!t.onion) add('problem', 'onion', `No onion address yet: tor has not written ${t.hostnameFile}.`);
  else if (asked) {
    // After the fact tor tells only whether it holds a current descriptor for the service
    // (GETINFO hs/service/desc/id/ADDR); which directories accepted it is told live only
    // (HS_DESC UPLOADED events), and the server, which follows those, cannot see tor here.
    const d = asked.answer.descriptor;
    const up = (asked.answer.bootstrap?.percent ?? 0) >= 100;
    const rev = d?.revision != null ? ` (revision ${d.revision})` : '';
    if (d && up) add('ok', 'onion', `http://${t.onion}/ is published as far as tor tells: it holds the service's current descriptor${rev} and is on the Tor network, and it uploads each descriptor to the directories once its introduction points are up (which directories took it is not told after the fact).`);
    else if (d) add('problem', 'onion', `http://${t.onion}/ is not reachable now: tor holds a descriptor${rev} but is not connected to the Tor network.`);
    else add('problem', 'onion', `http://${t.onion}/ is not published yet: tor has not built its descriptor (it does once it has bootstrapped; this takes a minute or two).`);
  } else if (t.publishedAt) add('ok', 'onion', `http://${t.onion}/ is published (descriptor uploaded ${t.publishedAt}, ${t.uploads ?? 1} upload${t.uploads === 1 ? '' : 's'}).`);
  else if (controlSaid) add('problem', 'onion', `http://${t.onion}/ is not published yet: tor has not uploaded its descriptor (this takes a minute or two after bootstrap).`);
  else add('unknown', 'onion', `The address is http://${t.onion}/; whether tor has published it is unknown.`);

  if ('error' in doc.disk) add('problem', 'disk', `The free space of ${doc.maildirRoot} cannot be read (${doc.disk.error}).`);
  else if (doc.disk.free < doc.disk.floor) add('problem', 'disk', `${mib(doc.disk.free)} free under ${doc.maildirRoot}, under the floor of ${mib(doc.disk.floor)} (limits.minFreeBytes): SMTP answers 452 4.3.1 until space is freed.`);
  else add('ok', 'disk', `${mib(doc.disk.free)} free under ${doc.maildirRoot} (floor ${mib(doc.disk.floor)}).`);

  add('ok', 'users', `${doc.users.total} user${doc.users.total === 1 ? '' : 's'} (${doc.users.disabled} disabled).`);
  const m = doc.mail;
  if (m.waiting === 0) add('ok', 'mail', 'No mail is waiting to be fetched.');
  else {
    const oldAge = m.oldest ? now - Date.parse(m.oldest) : 0;
    const text = `${m.waiting} message${m.waiting === 1 ? '' : 's'} (${mib(m.bytes)}) waiting; the oldest arrived ${age(oldAge)} ago.`;
    if (oldAge > (m.retentionDays + 1) * DAY) add('problem', 'mail', `${text} That is past the retention of ${m.retentionDays} days: the purge is not running.`);
    else add('ok', 'mail', text);
  }

  const codes = Object.entries(doc.replies);
  const total = codes.reduce((n, [, c]) => n + c, 0);
  const localErrors = codes.filter(([k]) => k.startsWith('451 4.3.0') || k.startsWith('452 4.3.1')).reduce((n, [, c]) => n + c, 0);
  const list = codes.map(([k, c]) => `${k} x${c}`).join(', ');
  if (total === 0) add('ok', 'smtp hour', 'No SMTP replies in the last hour.');
  else if (localErrors) add('problem', 'smtp hour', `${total} replies in the last hour: ${list}; ${localErrors} deferred for a local reason (storage or disk): the log says which.`);
  else add('ok', 'smtp hour', `${total} replies in the last hour: ${list}.`);

  if ('error' in doc.tls) add('problem', 'tls', `No STARTTLS certificate at ${doc.tls.file} (${doc.tls.error}): run "kzymy-server init" and restart.`);
  else {
    const left = Date.parse(doc.tls.validTo) - now;
    const day = doc.tls.validTo.slice(0, 10);
    if (left < 0) add('problem', 'tls', `The STARTTLS certificate ${doc.tls.file} expired on ${day}: move it away, run "kzymy-server init" and restart.`);
    else if (left < CERT_WARN_DAYS * DAY) add('problem', 'tls', `The STARTTLS certificate ${doc.tls.file} expires on ${day}, in ${Math.floor(left / DAY)} days: replace it soon.`);
    else add('ok', 'tls', `The STARTTLS certificate is valid until ${day}.`);
  }
  return lines;
}

/** Addresses of this machine: its interfaces, and the SMTP host when it is a specific one. */
function ownAddresses(smtpHost: string): Set<string> {
  const own = new Set<string>();
  for (const list of Object.values(os.networkInterfaces())) for (const a of list ?? []) own.add(a.address);
  if (net.isIP(smtpHost) && smtpHost !== '0.0.0.0' && smtpHost !== '::') own.add(smtpHost);
  return own;
}

/**
 * The DNS records senders use: the MX of a user's domain (the wildcard) and of the
 * domain, the A/AAAA of the MX hosts (this machine?), and the SPF TXT records. Every
 * query times out; a resolver that cannot be reached is a problem, said once.
 */
export async function judgeDns(domain: string, smtpHost: string, resolver = new Resolver({ timeout: 2_000, tries: 2 })): Promise<StatusLine[]> {
  const lines: StatusLine[] = [];
  const add = (mark: Mark, part: string, text: string): void => void lines.push({ mark, part, text });
  const probe = `status-check.${domain}`;
  const unreachable = (e: NodeJS.ErrnoException): boolean => ['ETIMEOUT', 'ECONNREFUSED', 'ESERVFAIL', 'EREFUSED', 'ECONNRESET', 'ETIMEDOUT'].includes(e.code ?? '');
  const ask = async <T>(q: () => Promise<T>): Promise<{ v: T | null; err: NodeJS.ErrnoException | null }> => {
    try {
      return { v: await q(), err: null };
    } catch (e) {
      return { v: null, err: e as NodeJS.ErrnoException };
    }
  };

  const wild = await ask(() => resolver.resolveMx(probe));
  if (wild.err && unreachable(wild.err)) {
    add('problem', 'dns', `DNS cannot be asked (${wild.err.code} from ${resolver.getServers().join(', ') || 'no resolver'}): the MX, A and SPF records of ${domain} are not checked.`);
    return lines;
  }
  const apex = await ask(() => resolver.resolveMx(domain));
  const hosts = new Set<string>();
  if (!wild.v?.length) add('problem', 'dns mx', `No MX record for *.${domain} (asked ${probe}, ${wild.err?.code ?? 'empty'}): senders cannot find the server for users' addresses; see "DNS" in docs/operator.md.`);
  else {
    for (const r of wild.v) hosts.add(r.exchange);
    add('ok', 'dns mx', `*.${domain} has MX ${wild.v.map((r) => r.exchange).join(', ')}.`);
  }
  if (apex.v?.length) for (const r of apex.v) hosts.add(r.exchange);

  const own = ownAddresses(smtpHost);
  for (const host of hosts) {
    const [a, aaaa] = await Promise.all([ask(() => resolver.resolve4(host)), ask(() => resolver.resolve6(host))]);
    const addrs = [...(a.v ?? []), ...(aaaa.v ?? [])];
    if (!addrs.length) add('problem', 'dns a', `The MX host ${host} has no A or AAAA record: senders cannot reach it.`);
    else if (addrs.some((x) => own.has(x))) add('ok', 'dns a', `${host} resolves to ${addrs.join(', ')}, an address of this machine.`);
    else add('problem', 'dns a', `${host} resolves to ${addrs.join(', ')}, none of which is an address of this machine (behind NAT, check that it forwards port 25 here).`);
  }

  for (const name of [domain, probe]) {
    const txt = await ask(() => resolver.resolveTxt(name));
    const spf = (txt.v ?? []).map((r) => r.join('')).filter((r) => /^v=spf1\b/i.test(r));
    const shown = name === probe ? `*.${domain}` : domain;
    if (spf.length) add('ok', 'dns spf', `${shown} has SPF "${spf[0]}".`);
    else add('problem', 'dns spf', `${shown} has no SPF record: add TXT "v=spf1 -all" so that nobody passes mail off as coming from it.`);
  }
  return lines;
}

export interface StatusOptions {
  json?: boolean;
  dns?: boolean;
  /** How the server is started, for the sentence when none runs. */
  startHint: string;
}

/** Prints the status; returns the exit code: 0 all ok, 1 a problem, 3 no server runs. */
export async function status(config: Config, out: (line: string) => void, err: (line: string) => void, opts: StatusOptions): Promise<number> {
  const file = controlSocketPath(config);
  let doc: StatusDocument;
  try {
    doc = await requestStatus(file);
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code === 'ENOENT' || code === 'ECONNREFUSED') {
      const text = `no kzymy-server is running with this data dir (${config.dataDir}): start it with "${opts.startHint}", or "systemctl start kzymy" where it is installed as a service.`;
      if (opts.json) out(JSON.stringify({ running: false, dataDir: config.dataDir, problem: text }));
      else err(text);
      return NO_SERVER_EXIT;
    }
    if (code === 'EACCES') throw new UserError(`${file} cannot be opened (permission denied): run status as the user that runs kzymy-server.`);
    throw e;
  }
  const direct = await askSystemTor(config, doc);
  const lines = await judge(doc, direct);
  if (opts.dns) lines.push(...(await judgeDns(doc.domain, doc.smtp.host)));
  const problems = lines.filter((l) => l.mark === 'problem').length;
  if (opts.json) out(JSON.stringify({ running: true, ok: problems === 0, lines, status: doc, ...(direct ? { torAsked: direct } : {}) }));
  else {
    for (const l of lines) out(`${l.mark.padEnd(8)}${l.part.padEnd(11)}${l.text}`);
    if (problems) out(`${problems} problem${problems === 1 ? '' : 's'}.`);
  }
  return problems ? 1 : 0;
}
