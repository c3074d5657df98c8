// `kzymy-server start`: the composition root. One process, two front doors (SMTP, web),
// one registry, one Maildir store, and where configured a tor child it manages.
import { mkdir } from 'node:fs/promises';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import type { Config } from '../config/index.js';
import type { Logger } from '../config/log.js';
import { openRegistry, RegistryError, type Registry } from '../registry/index.js';
import { KeyCache } from '../pgp/index.js';
import { MaildirStore } from '../maildir/index.js';
import { startSmtp, type SmtpListener } from '../smtp/server.js';
import { startSmtpPrimary, type WorkerInit } from '../smtp/primary.js';
import { readOnionAddress, startManagedTor, watchTor, type ManagedTor, type TorWatch } from '../tor/index.js';
import { startExpiryNotices, startWeb } from '../web/index.js';
import { collectStatus, controlSocketPath, startControlSocket } from './status.js';
import { version } from './version.js';

const HOUR = 3600_000;
/** How often the hostname file of a system tor is read again. */
const ONION_POLL_MS = 5_000;

export interface RunOptions {
  /** Where the start-up banner goes (a terminal); none when logging JSON lines. */
  banner?: (line: string) => void;
  /** How the logger writes, for the SMTP worker processes' own loggers. */
  logFormat?: 'json' | 'pretty';
}

/** The SMTP worker program beside this file (.js when built, .ts under tsx). */
function workerScript(): string {
  const here = fileURLToPath(import.meta.url);
  return path.join(path.dirname(here), `smtp-worker${path.extname(here)}`);
}

/** SMTP in this process (smtp.workers 1), or a listener here and sessions in worker processes. */
function startSmtpIntake(config: Config, logger: Logger, registry: Registry, maildir: MaildirStore, keys: KeyCache, logFormat: 'json' | 'pretty'): Promise<SmtpListener> {
  const n = config.smtp.workers;
  if (n <= 1) return startSmtp({ config, registry, maildir, keys, logger });
  return startSmtpPrimary({ config, logger, maildir }, n, {
    script: workerScript(),
    execArgv: process.execArgv,
    init: (index): WorkerInit => ({
      t: 'init',
      index,
      config,
      logFormat,
      // The budget is the server's: each worker holds its share.
      memoryBudgetBytes: Math.floor(config.limits.memoryBudgetBytes / n),
    }),
  });
}

/** What a person starting kzymy on a terminal wants to know first. */
export function bannerLines(config: Config, ports: { smtp: number; web: number }, controlSocket: string): string[] {
  return [
    `kzymy-server ${version()}: receive-only mail for *.${config.domain}`,
    `  smtp      ${config.smtp.host}:${ports.smtp}`,
    `  web       ${config.web.host}:${ports.web} (loopback; published by tor as the onion)`,
    `  tor       ${config.tor.manage ? `managed (${config.tor.binary}, data ${config.tor.dataDir})` : `system tor (onion hostname file ${config.tor.hostnameFile})`}`,
    `  data      ${config.dataDir} (registry, TLS certificate, ${path.basename(controlSocket)})`,
    `  maildirs  ${config.maildirRoot}`,
    `  status    kzymy-server status${config.source.file ? ` --config ${config.source.file}` : ''}`,
    '',
  ];
}

/**
 * Opens the registry and the Maildir store. The server follows other processes' registry
 * changes and compacts the journal; a CLI command reads once and writes its change.
 */
export async function openStores(
  config: Config,
  opts: { server?: boolean; logger?: Logger } = {},
): Promise<{ registry: Registry; maildir: MaildirStore }> {
  await mkdir(config.dataDir, { recursive: true, mode: 0o700 });
  await mkdir(config.maildirRoot, { recursive: true, mode: 0o700 });
  let reg: Registry | null = null;
  const maildir = new MaildirStore(config.maildirRoot, {
    // The server: a delivery in flight must not bring back the Maildir of an account another
    // process (the operator's CLI) deleted meanwhile.
    mayRecreate: opts.server
      ? async (user) => {
          if (!reg) return true;
          await reg.refresh().catch(() => false);
          return reg.get(user) !== undefined;
        }
      : undefined,
  });
  const registry = await openRegistry({
    dataDir: config.dataDir,
    engine: config.registry.engine,
    url: config.registry.url ?? undefined,
    logger: opts.logger,
    follow: opts.server,
    compact: opts.server,
    // No registry, but Maildirs of users: starting empty would bounce their mail for good.
    beforeCreate: async () => {
      const users = (await maildir.listUsers()).length;
      if (users > 0) {
        throw new RegistryError(
          'missing',
          `There is no registry in ${config.dataDir}, but ${config.maildirRoot} holds the Maildirs of ${users} user${users === 1 ? '' : 's'}. ` +
            'Starting with an empty registry would bounce their mail for good. Restore the registry folder (or registry.json) from your backup into ' +
            `${config.dataDir}, or point dataDir at the folder that holds it, then start again.`,
        );
      }
    },
  });
  reg = registry;
  return { registry, maildir };
}

/** Applies retention: deletes unfetched mail older than limits.retentionDays. */
export async function purge(config: Config, maildir: MaildirStore, now = new Date()): Promise<{ count: number; bytes: number }> {
  return maildir.purge(new Date(now.getTime() - config.limits.retentionDays * 24 * HOUR));
}

export async function runServer(config: Config, logger: Logger, opts: RunOptions = {}): Promise<void> {
  const startedAt = new Date();
  const { registry, maildir } = await openStores(config, { server: true, logger });
  const keys = new KeyCache();
  const stale = await maildir.cleanTmp();
  if (stale) logger.info({ evt: 'tmp-cleaned', files: stale }, 'removed unfinished files left in tmp/ by an earlier run');

  const smtp = await startSmtpIntake(config, logger, registry, maildir, keys, opts.logFormat ?? 'json');
  let onion: string | null = null;
  // Behind an Onionbalance frontend, users know the node by the frontend's address only.
  const frontend = config.tor.frontendOnion;
  const webDeps = { config, registry, maildir, keys, logger, onionAddress: () => frontend ?? onion };
  const web = await startWeb(webDeps);
  const webPort = web.port;

  let watch: TorWatch | null = null;
  const control = await startControlSocket(
    config,
    () =>
      collectStatus({ config, registry, maildir, startedAt, smtpPort: smtp.port, webPort, replies: () => smtp.replies(), onion: () => onion, tor: () => watch?.state() ?? null }),
    logger,
  );
  if (opts.banner) for (const line of bannerLines(config, { smtp: smtp.port, web: webPort }, controlSocketPath(config))) opts.banner(line);
  // One machine-readable line with the real ports (port 0 = any free port).
  logger.info({ evt: 'listening', smtp: { host: config.smtp.host, port: smtp.port }, web: { host: config.web.host, port: webPort } }, 'listening');

  let tor: ManagedTor | null = null;
  if (config.tor.manage) {
    tor = await startManagedTor({ config: { ...config, web: { ...config.web, port: webPort } }, logger });
    onion = tor.onionAddress;
    if (tor.controlSocket) watch = watchTor({ socket: tor.controlSocket, logger, onion: () => onion });
  } else {
    onion = await readOnionAddress(config.tor.hostnameFile).catch(() => null);
    // Readable when the kzymy user is in the group debian-tor (the appliance); else unknown.
    watch = watchTor({ socket: config.tor.controlSocket, logger, onion: () => onion, retryMs: 30_000 });
  }
  // On a terminal the onion also gets a banner line once known (publication follows in the log).
  const showOnion = (address: string): void => opts.banner?.(`  onion     http://${address}/`);
  if (onion) {
    logger.info({ evt: 'onion', onion }, `onion address: http://${onion}/`);
    showOnion(onion);
  }
  if (frontend) {
    logger.info({ evt: 'onion-frontend', onion: frontend }, `an Onionbalance backend instance of http://${frontend}/`);
    opts.banner?.(`  frontend  http://${frontend}/ (Onionbalance; this node's own onion is one of its instances)`);
  }
  // A system tor may write (or change) the hostname file after kzymy started: logins are
  // accepted only at the onion name once it is known, so follow the file.
  const onionWatch = config.tor.manage
    ? null
    : setInterval(() => {
        readOnionAddress(config.tor.hostnameFile).then(
          (now) => {
            if (now === onion) return;
            onion = now;
            if (now) {
              logger.info({ evt: 'onion', onion: now }, `onion address: http://${now}/`);
              showOnion(now);
            }
          },
          () => undefined, // unreadable for a moment: keep what is known
        );
      }, ONION_POLL_MS);
  onionWatch?.unref();

  const retention = setInterval(() => {
    purge(config, maildir).then(
      (r) => r.count && logger.info({ evt: 'purged', count: r.count, bytes: r.bytes }),
      (err) => logger.error({ evt: 'purge-failed', err }),
    );
  }, HOUR);
  retention.unref();
  void purge(config, maildir).catch(() => undefined);

  // Key-expiry notices (14 and 3 days ahead) land in the user's Maildir like any mail.
  const notices = startExpiryNotices(webDeps);

  let stopping = false;
  const stop = async (signal: string) => {
    if (stopping) return;
    stopping = true;
    logger.info({ evt: 'stopping', signal });
    clearInterval(retention);
    if (onionWatch) clearInterval(onionWatch);
    notices.stop();
    watch?.close();
    await control.close();
    await smtp.close();
    await web.close();
    await registry.close();
    await tor?.stop();
    logger.info({ evt: 'stopped' });
    process.exit(0);
  };
  process.on('SIGTERM', () => void stop('SIGTERM'));
  process.on('SIGINT', () => void stop('SIGINT'));
}
