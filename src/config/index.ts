// Typed configuration: built-in defaults, then a JSON file, then environment overrides.
// Every mistake found becomes one sentence; all are reported together.
import { readFileSync, accessSync, constants } from 'node:fs';
import path from 'node:path';
import net from 'node:net';
import os from 'node:os';
import { isLoopbackHost } from './hosts.js';
import { UserError } from './user-error.js';

export { isLoopbackHost };
export { EXIT_FIX, EXIT_TEMPFAIL, EXIT_USAGE, UserError } from './user-error.js';

export interface SmtpConfig {
  host: string;
  port: number;
  /** Simultaneous SMTP connections; further ones get 421. */
  maxClients: number;
  /**
   * Simultaneous SMTP connections from one source (one IPv4 address, one IPv6 /64);
   * further ones get 421 4.7.0. Default 20, the number of parallel connections a Postfix
   * sender opens to one destination by default (smtp_destination_concurrency_limit), so an
   * honest relay never meets it, while one source holds at most a tenth of maxClients.
   */
  maxClientsPerAddress: number;
  /** Recipients per message; further ones get 452 4.5.3. */
  maxRecipients: number;
  /** Longest SMTP command line accepted, in bytes. */
  maxLineLength: number;
  /** Idle time before a connection is closed, in ms. */
  idleTimeoutMs: number;
  /**
   * Time a command line may take from its first byte to its end, in ms; also the base
   * of the DATA deadline. Unlike the idle timeout, bytes that trickle in do not extend it.
   */
  commandTimeoutMs: number;
  /**
   * Slowest message transfer accepted, in bytes a second: DATA must end within
   * commandTimeoutMs + bytes received so far / minDataRate (as Postfix's smtpd_min_data_rate).
   */
  minDataRate: number;
  /** Pause before the 220 greeting to catch early talkers (smtp-server's is 100 ms). */
  greetingDelayMs: number;
  /**
   * SMTP worker processes (default 1; "auto" in the file or environment: one per core). With more than
   * one, the server process accepts connections and hands each to a worker; quota, disk floor
   * and connection limits are still counted for the whole server. 1 = one process, as before.
   */
  workers: number;
  /** PEM files for STARTTLS; made by `kzymy-server init`. */
  tlsKeyFile: string;
  tlsCertFile: string;
}

export interface WebConfig {
  host: string;
  port: number;
}

export interface TorConfig {
  /** Run tor as a child process with its own DataDirectory. */
  manage: boolean;
  /** tor executable used when manage is on. */
  binary: string;
  /** Where tor writes (managed) or has written (system tor) the onion hostname. */
  hostnameFile: string;
  /** DataDirectory of the managed tor. */
  dataDir: string;
  /** Extra torrc lines for the managed tor (tests use this for a private network). */
  extraConfig: string[];
  /** The system tor's control socket, which `kzymy-server status` asks itself when the server cannot. */
  controlSocket: string;
}

export interface LimitsConfig {
  maxMessageBytes: number;
  quotaBytes: number;
  minFreeBytes: number;
  retentionDays: number;
  /** Messages up to this size are held in memory; larger ones are spooled to disk, encrypted under a key held in memory only. */
  memoryBufferBytes: number;
  /** Bytes all SMTP transactions together may hold in memory; past it a transaction waits before it reads its data. */
  memoryBudgetBytes: number;
  /** How long a transaction waits for the memory budget before it is deferred (451 4.3.2). */
  memoryWaitMs: number;
}

/** What the public DNS should say about this machine; read by `kzymy-server dns` and `status --dns`. */
export interface DnsConfig {
  /** The name the MX records point at (default mx.DOMAIN). */
  mxHost: string;
  /** The public addresses that reach port 25 (IPv4 and IPv6); empty when not known. */
  addresses: string[];
}

/** Where the registry (users, keys, aliases) lives. */
export interface RegistryConfig {
  /** lowdb: files in dataDir/registry (the default). postgres: the database at `url`. */
  engine: 'lowdb' | 'postgres';
  /** postgresql://... for the postgres engine (a unix socket: postgresql:///kzymy?host=/run/postgresql); null for lowdb. */
  url: string | null;
}

export interface Config {
  domain: string;
  dataDir: string;
  registry: RegistryConfig;
  maildirRoot: string;
  /** Username that receives postmaster@DOMAIN; null refuses it at RCPT. */
  postmaster: string | null;
  smtp: SmtpConfig;
  web: WebConfig;
  tor: TorConfig;
  limits: LimitsConfig;
  dns: DnsConfig;
  log: {
    level: 'fatal' | 'error' | 'warn' | 'info' | 'debug' | 'trace' | 'silent';
    /** `json`: JSON lines; `pretty`: lines a person reads; `auto`: pretty when stdout is a terminal. */
    format: 'json' | 'pretty' | 'auto';
  };
  /** Where the configuration came from, for `check`. */
  source: { file: string | null };
}

export class ConfigError extends UserError {
  constructor(readonly problems: string[]) {
    super(`The configuration has ${problems.length} problem${problems.length === 1 ? '' : 's'}:\n- ${problems.join('\n- ')}`);
  }
}

const MiB = 1024 * 1024;

/** True if an executable named `name` is on PATH. */
export function onPath(name: string, envPath = process.env.PATH ?? ''): boolean {
  for (const dir of envPath.split(path.delimiter)) {
    if (!dir) continue;
    try {
      accessSync(path.join(dir, name), constants.X_OK);
      return true;
    } catch {
      // keep looking
    }
  }
  return false;
}

type Json = Record<string, unknown>;

/** A DNS name: labels of letters, digits and hyphens, at most 200 characters here. */
const DNS_NAME = /^(?=.{1,200}$)([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)(\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)*$/;

/**
 * A postgres:// or postgresql:// URL as node-postgres reads it. An empty host (a unix
 * socket named by ?host=/run/postgresql) is valid there but not for WHATWG URL, which
 * checks the rest (port, escapes) once a host stands in for it.
 */
function postgresUrl(url: string): boolean {
  if (!/^postgres(ql)?:\/\/\S*$/i.test(url)) return false;
  try {
    new URL(url.replace(/^(postgres(?:ql)?:\/\/(?:[^/@?#]*@)?)(?=[/?#]|$)/i, '$1localhost'));
    return true;
  } catch {
    return false;
  }
}

/** More SMTP workers than this buys nothing on any machine kzymy is meant for. */
const MAX_WORKERS = 64;

/**
 * Unset: 1 (SMTP in the server process), what measured fastest so far: on the benchmark
 * machine two workers stored 0.7-0.8x of what one process stored (docs/benchmarks.md).
 * "auto": one worker per core the process may use.
 */
function workerCount(v: unknown, bad: (v: unknown) => void): number {
  if (v === undefined || v === '') return 1;
  if (v === 'auto') return Math.min(MAX_WORKERS, Math.max(1, os.availableParallelism()));
  const n = typeof v === 'string' ? Number(v) : v;
  if (typeof n !== 'number' || !Number.isInteger(n) || n < 1 || n > MAX_WORKERS) {
    bad(v);
    return 1;
  }
  return n;
}

const KNOWN: Record<string, string[] | null> = {
  domain: null,
  dataDir: null,
  maildirRoot: null,
  postmaster: null,
  smtp: [
    'host',
    'port',
    'maxClients',
    'maxClientsPerAddress',
    'maxRecipients',
    'maxLineLength',
    'idleTimeoutMs',
    'commandTimeoutMs',
    'minDataRate',
    'greetingDelayMs',
    'workers',
    'tlsKeyFile',
    'tlsCertFile',
  ],
  web: ['host', 'port'],
  tor: ['manage', 'binary', 'hostnameFile', 'dataDir', 'extraConfig', 'controlSocket'],
  limits: ['maxMessageBytes', 'quotaBytes', 'minFreeBytes', 'retentionDays', 'memoryBufferBytes', 'memoryBudgetBytes', 'memoryWaitMs'],
  dns: ['mxHost', 'addresses'],
  log: ['level', 'format'],
  registry: ['engine', 'url'],
};

export interface LoadOptions {
  /** JSON file; else $KZYMY_CONFIG; else built-in defaults only. */
  file?: string;
  env?: NodeJS.ProcessEnv;
  /** Base for relative default paths (the checkout); defaults to the working directory. */
  cwd?: string;
}

/** Builds the configuration or throws ConfigError listing every problem found. */
export function loadConfig(opts: LoadOptions = {}): Config {
  const env = opts.env ?? process.env;
  const cwd = opts.cwd ?? process.cwd();
  const problems: string[] = [];
  const file = opts.file ?? (env.KZYMY_CONFIG || undefined);

  let fromFile: Json = {};
  let fileBase = cwd;
  if (file) {
    const abs = path.resolve(cwd, file);
    fileBase = path.dirname(abs);
    try {
      const parsed: unknown = JSON.parse(readFileSync(abs, 'utf8'));
      if (!parsed || typeof parsed !== 'object' || Array.isArray(parsed)) {
        problems.push(`The configuration file ${abs} must hold one JSON object.`);
      } else {
        fromFile = parsed as Json;
      }
    } catch (err) {
      const e = err as NodeJS.ErrnoException;
      if (e.code === 'ENOENT') problems.push(`The configuration file ${abs} does not exist.`);
      else if (e instanceof SyntaxError) problems.push(`The configuration file ${abs} is not valid JSON: ${e.message}.`);
      else problems.push(`The configuration file ${abs} cannot be read (${e.code ?? e.message}).`);
    }
  }

  for (const [key, value] of Object.entries(fromFile)) {
    if (!(key in KNOWN)) {
      problems.push(`Unknown setting "${key}" in the configuration file.`);
      continue;
    }
    const sub = KNOWN[key];
    if (sub) {
      if (!value || typeof value !== 'object' || Array.isArray(value)) {
        problems.push(`The setting "${key}" must be an object.`);
        continue;
      }
      for (const k of Object.keys(value as Json)) {
        if (!sub.includes(k)) problems.push(`Unknown setting "${key}.${k}" in the configuration file.`);
      }
    }
  }

  const section = (name: string): Json => {
    const v = fromFile[name];
    return v && typeof v === 'object' && !Array.isArray(v) ? (v as Json) : {};
  };

  const str = (where: string, v: unknown, dflt: string): string => {
    if (v === undefined) return dflt;
    if (typeof v !== 'string' || v.trim() === '') {
      problems.push(`The setting "${where}" must be a non-empty string.`);
      return dflt;
    }
    return v;
  };
  const int = (where: string, v: unknown, dflt: number, min: number, max = Number.MAX_SAFE_INTEGER): number => {
    if (v === undefined) return dflt;
    const n = typeof v === 'string' && v.trim() !== '' ? Number(v) : v;
    if (typeof n !== 'number' || !Number.isInteger(n) || n < min || n > max) {
      problems.push(`The setting "${where}" must be a whole number from ${min} to ${max}; it is ${JSON.stringify(v)}.`);
      return dflt;
    }
    return n;
  };
  const bool = (where: string, v: unknown, dflt: boolean): boolean => {
    if (v === undefined) return dflt;
    if (v === true || v === 1 || v === '1' || v === 'true') return true;
    if (v === false || v === 0 || v === '0' || v === 'false') return false;
    problems.push(`The setting "${where}" must be true or false (1 or 0 in the environment); it is ${JSON.stringify(v)}.`);
    return dflt;
  };
  // Relative paths in the file are relative to the file; in the environment, to the working directory.
  const filePath = (where: string, v: unknown, dflt: string): string => {
    if (v === undefined) return dflt;
    return path.resolve(fileBase, str(where, v, dflt));
  };
  const envPath = (v: string | undefined, current: string): string => (v ? path.resolve(cwd, v) : current);

  const smtpF = section('smtp');
  const webF = section('web');
  const torF = section('tor');
  const limF = section('limits');
  const logF = section('log');
  const dnsF = section('dns');
  const registryF = section('registry');

  let domain = str('domain', fromFile.domain, 'kzymy.localhost');
  if (env.KZYMY_DOMAIN) domain = env.KZYMY_DOMAIN;
  domain = domain.toLowerCase().replace(/\.$/, '');
  if (!DNS_NAME.test(domain)) {
    problems.push(`The mail domain "${domain}" is not a valid DNS name.`);
  }

  const dataDir = envPath(env.KZYMY_DATA_DIR, filePath('dataDir', fromFile.dataDir, path.resolve(cwd, 'data')));
  const maildirRoot = envPath(env.KZYMY_MAILDIR_ROOT, filePath('maildirRoot', fromFile.maildirRoot, path.resolve(cwd, 'maildirs')));

  // The URL may hold a password: no sentence below repeats it.
  const engineRaw = env.KZYMY_REGISTRY_ENGINE || str('registry.engine', registryF.engine, 'lowdb');
  let engine: RegistryConfig['engine'] = 'lowdb';
  if (engineRaw === 'lowdb' || engineRaw === 'postgres') engine = engineRaw;
  else problems.push(`The registry engine "${engineRaw}" (registry.engine, KZYMY_REGISTRY_ENGINE) is not one of lowdb, postgres.`);
  const registryUrl: string | null = env.KZYMY_REGISTRY_URL || (registryF.url === undefined ? null : str('registry.url', registryF.url, '')) || null;
  if (registryUrl !== null && !postgresUrl(registryUrl)) {
    problems.push(
      'The setting "registry.url" (KZYMY_REGISTRY_URL) must be a PostgreSQL URL such as postgresql://kzymy@db.example/kzymy or, over a unix socket, postgresql:///kzymy?host=/run/postgresql.',
    );
  } else if (engine === 'postgres' && registryUrl === null) {
    problems.push('The registry engine "postgres" needs "registry.url" (KZYMY_REGISTRY_URL), such as postgresql:///kzymy?host=/run/postgresql.');
  }

  let postmaster: string | null = null;
  if (fromFile.postmaster !== undefined && fromFile.postmaster !== null) {
    postmaster = str('postmaster', fromFile.postmaster, '');
    if (postmaster && !/^[a-z][a-z0-9]{1,62}$/.test(postmaster)) problems.push(`The setting "postmaster" must name a kzymy username.`);
  }
  if (env.KZYMY_POSTMASTER !== undefined) postmaster = env.KZYMY_POSTMASTER || null;

  const smtp: SmtpConfig = {
    host: env.KZYMY_SMTP_HOST || str('smtp.host', smtpF.host, '0.0.0.0'),
    port: int('smtp.port', env.KZYMY_SMTP_PORT ?? smtpF.port, 2525, 0, 65535),
    maxClients: int('smtp.maxClients', smtpF.maxClients, 200, 1),
    maxClientsPerAddress: int('smtp.maxClientsPerAddress', smtpF.maxClientsPerAddress, 20, 1),
    maxRecipients: int('smtp.maxRecipients', smtpF.maxRecipients, 100, 1),
    maxLineLength: int('smtp.maxLineLength', smtpF.maxLineLength, 4096, 512),
    idleTimeoutMs: int('smtp.idleTimeoutMs', smtpF.idleTimeoutMs, 300_000, 1000),
    commandTimeoutMs: int('smtp.commandTimeoutMs', smtpF.commandTimeoutMs, 300_000, 1000),
    minDataRate: int('smtp.minDataRate', smtpF.minDataRate, 500, 1),
    greetingDelayMs: int('smtp.greetingDelayMs', smtpF.greetingDelayMs, 0, 0, 60_000),
    workers: workerCount(env.KZYMY_SMTP_WORKERS ?? smtpF.workers, (v) =>
      problems.push(`The setting "smtp.workers" (KZYMY_SMTP_WORKERS) must be "auto" or a whole number from 1 to ${MAX_WORKERS}; it is ${JSON.stringify(v)}.`),
    ),
    tlsKeyFile: filePath('smtp.tlsKeyFile', smtpF.tlsKeyFile, path.join(dataDir, 'tls', 'key.pem')),
    tlsCertFile: filePath('smtp.tlsCertFile', smtpF.tlsCertFile, path.join(dataDir, 'tls', 'cert.pem')),
  };
  if (smtp.host && net.isIP(smtp.host) === 0 && smtp.host !== 'localhost') {
    problems.push(`The SMTP host "${smtp.host}" must be an IP address to listen on.`);
  }

  const web: WebConfig = {
    host: env.KZYMY_WEB_HOST || str('web.host', webF.host, '127.0.0.1'),
    port: int('web.port', env.KZYMY_WEB_PORT ?? webF.port, 8080, 0, 65535),
  };
  if (!isLoopbackHost(web.host)) {
    problems.push(
      `The web listener must stay on loopback (127.0.0.1 or ::1) so that it is reachable only through the onion service; "${web.host}" is not.`,
    );
  }

  const envPATH = env.PATH ?? process.env.PATH ?? '';
  const torBinary = str('tor.binary', torF.binary, 'tor');
  const torDataDir = filePath('tor.dataDir', torF.dataDir, path.join(dataDir, 'tor'));
  let extraConfig: string[] = [];
  if (torF.extraConfig !== undefined) {
    if (!Array.isArray(torF.extraConfig) || !torF.extraConfig.every((l) => typeof l === 'string' && !/[\r\n]/.test(l))) {
      problems.push(`The setting "tor.extraConfig" must be a list of single torrc lines.`);
    } else extraConfig = torF.extraConfig as string[];
  }
  const tor: TorConfig = {
    manage: bool('tor.manage', env.KZYMY_TOR_MANAGE ?? torF.manage, onPath(torBinary, envPATH) || torBinary.includes('/')),
    binary: torBinary,
    dataDir: torDataDir,
    hostnameFile: envPath(env.KZYMY_TOR_HOSTNAME_FILE, filePath('tor.hostnameFile', torF.hostnameFile, path.join(torDataDir, 'onion', 'hostname'))),
    extraConfig,
    controlSocket: filePath('tor.controlSocket', torF.controlSocket, '/run/tor/control'),
  };

  const limits: LimitsConfig = {
    maxMessageBytes: int('limits.maxMessageBytes', limF.maxMessageBytes, 25 * MiB, 1024),
    quotaBytes: int('limits.quotaBytes', limF.quotaBytes, 100 * MiB, 1024),
    minFreeBytes: int('limits.minFreeBytes', limF.minFreeBytes, 512 * MiB, 0),
    retentionDays: int('limits.retentionDays', limF.retentionDays, 30, 1, 3650),
    memoryBufferBytes: int('limits.memoryBufferBytes', limF.memoryBufferBytes, 1 * MiB, 0, 64 * MiB),
    memoryBudgetBytes: int('limits.memoryBudgetBytes', limF.memoryBudgetBytes, 64 * MiB, 8 * MiB),
    // Under the three minutes a sending MTA waits to write a data block (RFC 5321 4.5.3.2,
    // Postfix's smtp_data_xfer_timeout 180 s), and under smtp-server's idle timeout.
    memoryWaitMs: int('limits.memoryWaitMs', limF.memoryWaitMs, 60_000, 100, 170_000),
  };
  if (limits.memoryBudgetBytes < 2 * limits.memoryBufferBytes) {
    problems.push(`The setting "limits.memoryBudgetBytes" must be at least twice "limits.memoryBufferBytes" (${2 * limits.memoryBufferBytes} bytes), or one transaction could hold more than the budget.`);
  }

  let mxHost = (env.KZYMY_MX_HOST || str('dns.mxHost', dnsF.mxHost, `mx.${domain}`)).toLowerCase().replace(/\.$/, '');
  if (!DNS_NAME.test(mxHost)) {
    problems.push(`The MX host "${mxHost}" (dns.mxHost) is not a valid DNS name.`);
    mxHost = `mx.${domain}`;
  }
  let addresses: string[] = [];
  const addressesRaw: unknown = env.KZYMY_PUBLIC_IP !== undefined ? env.KZYMY_PUBLIC_IP.split(/[\s,]+/).filter(Boolean) : dnsF.addresses;
  if (addressesRaw !== undefined) {
    if (!Array.isArray(addressesRaw) || !addressesRaw.every((a) => typeof a === 'string' && net.isIP(a) !== 0)) {
      problems.push(`The setting "dns.addresses" (KZYMY_PUBLIC_IP) must list IP addresses, such as ["203.0.113.25", "2001:db8::25"].`);
    } else addresses = addressesRaw as string[];
  }

  const levels = ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'] as const;
  const levelRaw = env.KZYMY_LOG_LEVEL || str('log.level', logF.level, 'info');
  let level: Config['log']['level'] = 'info';
  if ((levels as readonly string[]).includes(levelRaw)) level = levelRaw as Config['log']['level'];
  else problems.push(`The log level "${levelRaw}" is not one of ${levels.join(', ')}.`);

  const formats = ['json', 'pretty', 'auto'] as const;
  const formatRaw = env.KZYMY_LOG_FORMAT || str('log.format', logF.format, 'auto');
  let format: Config['log']['format'] = 'auto';
  if ((formats as readonly string[]).includes(formatRaw)) format = formatRaw as Config['log']['format'];
  else problems.push(`The log format "${formatRaw}" is not one of ${formats.join(', ')}.`);

  if (problems.length) throw new ConfigError(problems);
  return {
    domain,
    dataDir,
    registry: { engine, url: engine === 'postgres' ? registryUrl : null },
    maildirRoot,
    postmaster,
    smtp,
    web,
    tor,
    limits,
    dns: { mxHost, addresses },
    log: { level, format },
    source: { file: file ? path.resolve(cwd, file) : null },
  };
}
