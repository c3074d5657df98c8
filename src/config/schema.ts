// Every setting, declared once: its kind of value (a zod schema, which gives its TypeScript
// type and its sentences), its environment variable and its default. The Config types, the
// keys the file may hold and the environment mapping are all derived from them.
import path from 'node:path';
import type * as z from 'zod';
import { isLoopbackHost } from './hosts.js';
import { choice, dnsName, filePath, flag, isIp, listOf, onionAddress, postgresUrl, text, textThat, username, whole, workers, type Kind } from './kinds.js';
import { onPath } from './paths.js';

/** Where the configuration is read, for the defaults that depend on it. */
export interface Where {
  /** Base for relative default paths (the checkout). */
  cwd: string;
  /** PATH, where a tor executable is looked for. */
  PATH: string;
}

type Default<T> = T | ((c: Config, at: Where) => T);

export interface Setting<T> {
  kind: Kind<T>;
  env?: string;
  /** The value when neither the file nor the environment gives one; a function when it depends on other settings. */
  default: Default<T>;
}

function setting<T>(kind: Kind<T>, meta: { env?: string; default: Default<NoInfer<T>> }): Setting<T> {
  return { kind, ...meta };
}

const MiB = 1024 * 1024;
const LEVELS = ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'] as const;
const FORMATS = ['json', 'pretty', 'auto'] as const;
const notOneOf = (what: string, values: readonly string[]) => (v: string) => `The ${what} "${v}" is not one of ${values.join(', ')}.`;

/** The settings, made when first needed (kzymy-client shares this module's folder and needs none of them). */
function declare() {
  return {
    domain: setting(
      dnsName((v) => `The mail domain "${v}" is not a valid DNS name.`),
      { env: 'KZYMY_DOMAIN', default: 'kzymy.localhost' },
    ),
    dataDir: setting(filePath(), { env: 'KZYMY_DATA_DIR', default: (_, at) => path.resolve(at.cwd, 'data') }),
    maildirRoot: setting(filePath(), { env: 'KZYMY_MAILDIR_ROOT', default: (_, at) => path.resolve(at.cwd, 'maildirs') }),
    /** Where the registry (users, keys, aliases) lives. */
    registry: {
      /** lowdb: files in dataDir/registry (the default). postgres: the database at `url`. */
      engine: setting(
        choice(['lowdb', 'postgres'], (v, n) => `The registry engine "${v}" (${n.key}, ${n.env}) is not one of lowdb, postgres.`),
        { env: 'KZYMY_REGISTRY_ENGINE', default: 'lowdb' },
      ),
      /** postgresql://... for the postgres engine (a unix socket: postgresql:///kzymy?host=/run/postgresql); null for lowdb. */
      url: setting(postgresUrl(), { env: 'KZYMY_REGISTRY_URL', default: null }),
    },
    /** Username that receives postmaster@DOMAIN; null refuses it at RCPT. */
    postmaster: setting(username(), { env: 'KZYMY_POSTMASTER', default: null }),
    smtp: {
      host: setting(
        textThat((v) => isIp(v) || v === 'localhost', (v) => `The SMTP host "${v}" must be an IP address to listen on.`),
        { env: 'KZYMY_SMTP_HOST', default: '0.0.0.0' },
      ),
      port: setting(whole(0, 65535), { env: 'KZYMY_SMTP_PORT', default: 2525 }),
      /** Simultaneous SMTP connections; further ones get 421. */
      maxClients: setting(whole(1), { default: 200 }),
      /**
       * Simultaneous SMTP connections from one source (one IPv4 address, one IPv6 /64);
       * further ones get 421 4.7.0. Default 20, the number of parallel connections a Postfix
       * sender opens to one destination by default (smtp_destination_concurrency_limit), so an
       * honest relay never meets it, while one source holds at most a tenth of maxClients.
       */
      maxClientsPerAddress: setting(whole(1), { default: 20 }),
      /** Recipients per message; further ones get 452 4.5.3. */
      maxRecipients: setting(whole(1), { default: 100 }),
      /** Longest SMTP command line accepted, in bytes. */
      maxLineLength: setting(whole(512), { default: 4096 }),
      /** Idle time before a connection is closed, in ms. */
      idleTimeoutMs: setting(whole(1000), { default: 300_000 }),
      /**
       * Time a command line may take from its first byte to its end, in ms; also the base
       * of the DATA deadline. Unlike the idle timeout, bytes that trickle in do not extend it.
       */
      commandTimeoutMs: setting(whole(1000), { default: 300_000 }),
      /**
       * Slowest message transfer accepted, in bytes a second: DATA must end within
       * commandTimeoutMs + bytes received so far / minDataRate (as Postfix's smtpd_min_data_rate).
       */
      minDataRate: setting(whole(1), { default: 500 }),
      /** Pause before the 220 greeting to catch early talkers (smtp-server's is 100 ms). */
      greetingDelayMs: setting(whole(0, 60_000), { default: 0 }),
      /**
       * SMTP worker processes (default 1; "auto" in the file or environment: one per core). With more than
       * one, the server process accepts connections and hands each to a worker; quota, disk floor
       * and connection limits are still counted for the whole server. 1 = one process, as before.
       */
      workers: setting(workers(), { env: 'KZYMY_SMTP_WORKERS', default: 1 }),
      /** PEM files for STARTTLS; made by `kzymy-server init`. */
      tlsKeyFile: setting(filePath(), { default: (c): string => path.join(c.dataDir, 'tls', 'key.pem') }),
      tlsCertFile: setting(filePath(), { default: (c): string => path.join(c.dataDir, 'tls', 'cert.pem') }),
    },
    web: {
      host: setting(
        textThat(
          isLoopbackHost,
          (v) => `The web listener must stay on loopback (127.0.0.1 or ::1) so that it is reachable only through the onion service; "${v}" is not.`,
        ),
        { env: 'KZYMY_WEB_HOST', default: '127.0.0.1' },
      ),
      port: setting(whole(0, 65535), { env: 'KZYMY_WEB_PORT', default: 8080 }),
    },
    tor: {
      /** Run tor as a child process with its own DataDirectory. */
      manage: setting(flag(), { env: 'KZYMY_TOR_MANAGE', default: (c, at): boolean => onPath(c.tor.binary, at.PATH) || c.tor.binary.includes('/') }),
      /** tor executable used when manage is on. */
      binary: setting(text(), { default: 'tor' }),
      /** Where tor writes (managed) or has written (system tor) the onion hostname. */
      hostnameFile: setting(filePath(), { env: 'KZYMY_TOR_HOSTNAME_FILE', default: (c): string => path.join(c.tor.dataDir, 'onion', 'hostname') }),
      /** DataDirectory of the managed tor. */
      dataDir: setting(filePath(), { default: (c): string => path.join(c.dataDir, 'tor') }),
      /** Extra torrc lines for the managed tor (tests use this for a private network). */
      extraConfig: setting(
        listOf((l) => !/[\r\n]/.test(l), (n) => `The setting "${n.key}" must be a list of single torrc lines.`),
        { default: () => [] },
      ),
      /**
       * Several nodes behind one onion: the Onionbalance frontend's address. This node's tor
       * becomes one of its backend instances, and the pages, logins and kzymy-client use it.
       */
      frontendOnion: setting(onionAddress(), { env: 'KZYMY_TOR_FRONTEND_ONION', default: null }),
      /** The system tor's control socket, which `kzymy-server status` asks itself when the server cannot. */
      controlSocket: setting(filePath(), { default: '/run/tor/control' }),
    },
    limits: {
      maxMessageBytes: setting(whole(1024), { default: 25 * MiB }),
      quotaBytes: setting(whole(1024), { default: 100 * MiB }),
      minFreeBytes: setting(whole(0), { default: 512 * MiB }),
      retentionDays: setting(whole(1, 3650), { default: 30 }),
      /** Messages up to this size are held in memory; larger ones are spooled to disk, encrypted under a key held in memory only. */
      memoryBufferBytes: setting(whole(0, 64 * MiB), { default: 1 * MiB }),
      /** Bytes all SMTP transactions together may hold in memory; past it a transaction waits before it reads its data. */
      memoryBudgetBytes: setting(whole(8 * MiB), { default: 64 * MiB }),
      /**
       * How long a transaction waits for the memory budget before it is deferred (451 4.3.2).
       * Under the three minutes a sending MTA waits to write a data block (RFC 5321 4.5.3.2,
       * Postfix's smtp_data_xfer_timeout 180 s), and under smtp-server's idle timeout.
       */
      memoryWaitMs: setting(whole(100, 170_000), { default: 60_000 }),
    },
    /** What the public DNS should say about this machine; read by `kzymy-server dns` and `status --dns`. */
    dns: {
      /** The name the MX records point at (default mx.DOMAIN). */
      mxHost: setting(
        dnsName((v, n) => `The MX host "${v}" (${n.key}) is not a valid DNS name.`),
        { env: 'KZYMY_MX_HOST', default: (c): string => `mx.${c.domain}` },
      ),
      /** The public addresses that reach port 25 (IPv4 and IPv6); empty when not known. */
      addresses: setting(
        listOf(isIp, (n) => `The setting "${n.key}" (${n.env}) must list IP addresses, such as ["203.0.113.25", "2001:db8::25"].`),
        { env: 'KZYMY_PUBLIC_IP', default: () => [] },
      ),
    },
    log: {
      level: setting(choice(LEVELS, notOneOf('log level', LEVELS)), { env: 'KZYMY_LOG_LEVEL', default: 'info' }),
      /** `json`: JSON lines; `pretty`: lines a person reads; `auto`: pretty when stdout is a terminal. */
      format: setting(choice(FORMATS, notOneOf('log format', FORMATS)), { env: 'KZYMY_LOG_FORMAT', default: 'auto' }),
    },
  };
}

/** The values of a tree of settings. */
type Values<T> = { -readonly [K in keyof T]: T[K] extends Setting<infer V> ? V : Values<T[K]> };

export interface Config extends Values<ReturnType<typeof declare>> {
  /** Where the configuration came from, for `check`. */
  source: { file: string | null };
}
export type SmtpConfig = Config['smtp'];
export type WebConfig = Config['web'];
export type TorConfig = Config['tor'];
export type LimitsConfig = Config['limits'];
export type DnsConfig = Config['dns'];
export type RegistryConfig = Config['registry'];

/** One setting with where it sits. */
export interface Leaf {
  /** ["smtp", "port"] */
  path: string[];
  /** "smtp.port" */
  key: string;
  setting: Setting<unknown>;
  /** Its kind's schema, made for this setting. */
  schema: z.ZodType<unknown>;
}

const isSetting = (v: object): v is Setting<unknown> => 'kind' in v;

function leaf(at: string[], setting: Setting<unknown>): Leaf {
  const key = at.join('.');
  return { path: at, key, setting, schema: setting.kind.schema({ key, env: setting.env }) };
}

function walk(tree: object, at: string[]): Leaf[] {
  return Object.entries(tree).flatMap(([k, v]: [string, object]) => (isSetting(v) ? [leaf([...at, k], v)] : walk(v, [...at, k])));
}

let leaves: readonly Leaf[] | undefined;

/** Every setting, in the order they are declared. */
export function settings(): readonly Leaf[] {
  return (leaves ??= walk(declare(), []));
}

/** Every environment variable a setting reads, with its key. */
export function envVars(): ReadonlyMap<string, string> {
  return new Map(settings().flatMap((l) => (l.setting.env ? [[l.setting.env, l.key] as const] : [])));
}
