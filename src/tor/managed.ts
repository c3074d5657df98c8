// A tor child process that kzymy-server runs itself (config.tor.manage): it publishes
// the loopback web listener as a v3 onion service. Tor's own log lines never hold mail
// data; they go to our logger at debug, and only a few events are logged at info.
import { spawn, type ChildProcess } from 'node:child_process';
import { chmod, mkdir, readFile, rm, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { createInterface } from 'node:readline';
import { UserError, type Config } from '../config/index.js';
import type { Logger } from '../config/log.js';
import { readOnionAddress } from './onion.js';
import { OB_CONFIG_FILE, obConfigText, renderTorrc, torrcTemplatePath, torrcValue } from './torrc.js';

export interface ManagedTor {
  onionAddress: string;
  pid: number;
  /** tor's control socket (cookie authentication), or null when its path is too long for one. */
  controlSocket: string | null;
  /** SIGTERM, then SIGKILL after 10 s; resolves once tor has exited. Safe to call twice. */
  stop(): Promise<void>;
}

export interface StartManagedTorOptions {
  config: Config;
  logger: Logger;
  /** How long to wait for the onion hostname (default 60 s). */
  timeoutMs?: number;
}

const KILL_AFTER_MS = 10_000;
const POLL_MS = 100;

/** A unix socket path must fit sockaddr_un.sun_path (108 bytes with its NUL on Linux). */
const MAX_SOCKET_PATH = 107;

/** Where the managed tor listens for its controller (kzymy), or null if the path is too long. */
export function managedControlSocket(config: Config): string | null {
  const file = path.join(config.tor.dataDir, 'control.sock');
  return Buffer.byteLength(file) <= MAX_SOCKET_PATH ? file : null;
}

/** The full torrc of the managed tor: the project template, then managed-only lines. */
export function managedTorrc(template: string, config: Config): string {
  const body = renderTorrc(template, {
    hiddenServiceDir: path.dirname(config.tor.hostnameFile),
    webHost: config.web.host,
    webPort: config.web.port,
    onionbalanceFrontend: config.tor.frontendOnion,
  });
  const managed = [
    '',
    '## Managed by kzymy-server (not part of the template).',
    `DataDirectory ${torrcValue(config.tor.dataDir)}`,
    'Log notice stdout',
    // tor exits by itself if kzymy-server dies without stopping it.
    `__OwningControllerProcess ${process.pid}`,
    'GeoIPFile ""',
    'GeoIPv6File ""',
  ];
  // kzymy reads bootstrap progress and descriptor uploads there (src/tor/control.ts); the
  // socket lives in the 0700 DataDirectory, and the cookie is tor's control_auth_cookie.
  const control = managedControlSocket(config);
  if (control) managed.push(`ControlSocket ${torrcValue(control)}`, 'CookieAuthentication 1');
  if (config.tor.extraConfig.length) managed.push('## tor.extraConfig', ...config.tor.extraConfig);
  return `${body.replace(/\n*$/, '\n')}${managed.join('\n')}\n`;
}

/** Starts tor, waits until it has written the onion hostname, and returns the address. */
export async function startManagedTor(opts: StartManagedTorOptions): Promise<ManagedTor> {
  const { config, logger } = opts;
  const timeoutMs = opts.timeoutMs ?? 60_000;
  const { binary, dataDir, hostnameFile } = config.tor;
  const hsDir = path.dirname(hostnameFile);
  if (config.web.port === 0) {
    throw new UserError('tor needs the web listener\'s real port: start the web listener before tor (web.port is 0, "any free port").');
  }

  const templatePath = torrcTemplatePath();
  let template: string;
  try {
    template = await readFile(templatePath, 'utf8');
  } catch (err) {
    throw new UserError(`The torrc template ${templatePath} cannot be read (${(err as NodeJS.ErrnoException).code ?? String(err)}).`);
  }
  const torrc = managedTorrc(template, config);

  // tor insists on private folders (0700) for its data and the onion keys.
  for (const dir of [dataDir, hsDir]) {
    await mkdir(dir, { recursive: true, mode: 0o700 });
    await chmod(dir, 0o700);
  }
  const torrcFile = path.join(dataDir, 'torrc');
  await writeFile(torrcFile, torrc, { mode: 0o600 });
  await chmod(torrcFile, 0o600);
  // An Onionbalance instance reads its frontend's address there; a node taken out of
  // Onionbalance must not keep answering for the frontend.
  const obConfig = path.join(hsDir, OB_CONFIG_FILE);
  if (config.tor.frontendOnion) await writeFile(obConfig, obConfigText(config.tor.frontendOnion), { mode: 0o600 });
  else await rm(obConfig, { force: true });
  // tor rewrites `hostname` from the kept key at every start; removing a stale copy
  // makes its appearance mean "this tor has loaded the onion service".
  await rm(hostnameFile, { force: true });

  const child = spawn(binary, ['-f', torrcFile, '--defaults-torrc', '/dev/null'], {
    stdio: ['ignore', 'pipe', 'pipe'],
    shell: false,
  });

  let lastLine = '';
  let lastWarning = '';
  let exited: { code: number | null; signal: NodeJS.Signals | null } | null = null;
  let spawnError: NodeJS.ErrnoException | null = null;
  const exitPromise = new Promise<void>((resolve) => {
    // 'close' comes after 'exit' and after the last of tor's output has been read.
    child.once('close', (code: number | null, signal: NodeJS.Signals | null) => {
      exited = { code, signal };
      resolve();
    });
    child.once('error', (err: NodeJS.ErrnoException) => {
      spawnError = err;
      if (child.pid === undefined) resolve();
    });
  });

  const forward = (stream: NodeJS.ReadableStream | null): void => {
    if (!stream) return;
    createInterface({ input: stream, crlfDelay: Infinity }).on('line', (line) => {
      if (!line.trim()) return;
      // "Nov 25 17:56:33.000 [notice] ..." -> "[notice] ..."
      lastLine = line.trim().replace(/^[A-Z][a-z]{2} +\d+ [\d:.]+ /, '');
      logger.debug({ tor: lastLine }, 'tor log');
      if (lastLine.startsWith('[warn]')) lastWarning = lastLine;
      if (lastLine.startsWith('[err]')) logger.error({ evt: 'tor-error', tor: lastLine }, 'tor reported an error');
    });
  };
  forward(child.stdout);
  forward(child.stderr);

  const stop = makeStop(child, exitPromise, () => exited !== null, logger);

  // tor's last words, for an error sentence (tor's log never holds mail data).
  const tail = (): string => {
    if (!lastLine) return '.';
    if (lastWarning && lastWarning !== lastLine) return `; it said "${lastWarning}", then "${lastLine}"`;
    return `; its last log line: "${lastLine}"`;
  };
  const describeExit = (): string => {
    const e = exited as { code: number | null; signal: NodeJS.Signals | null } | null;
    const how = e?.signal ? `was killed by ${e.signal}` : `exited with code ${e?.code}`;
    return `tor ${how} before it published the onion service${tail()}`;
  };

  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const err = spawnError as NodeJS.ErrnoException | null;
    if (err) {
      await stop();
      if (err.code === 'ENOENT') {
        throw new UserError(`tor was not found: "${binary}" is not an installed program (install tor, or set tor.binary, or set tor.manage to false and run tor yourself).`);
      }
      if (err.code === 'EACCES') throw new UserError(`tor cannot be started: "${binary}" is not executable.`);
      throw new UserError(`tor cannot be started from "${binary}" (${err.code ?? err.message}).`);
    }
    if (exited) throw new UserError(describeExit());
    let address: string | null = null;
    try {
      address = await readOnionAddress(hostnameFile);
    } catch (e) {
      await stop();
      throw e;
    }
    if (address && child.pid !== undefined) {
      logger.info({ evt: 'tor-started', pid: child.pid }, 'tor started');
      logger.info({ evt: 'tor-onion', onion: address }, 'onion address known');
      return { onionAddress: address, pid: child.pid, controlSocket: managedControlSocket(config), stop };
    }
    if (Date.now() > deadline) {
      await stop();
      throw new UserError(
        `tor did not write the onion hostname ${hostnameFile} within ${Math.round(timeoutMs / 1000)} s${tail()}`,
      );
    }
    await new Promise((r) => setTimeout(r, POLL_MS));
  }
}

function makeStop(child: ChildProcess, exitPromise: Promise<void>, hasExited: () => boolean, logger: Logger): () => Promise<void> {
  let stopping: Promise<void> | null = null;
  return () => {
    stopping ??= (async () => {
      if (child.pid === undefined || hasExited()) return;
      child.kill('SIGTERM');
      const timer = setTimeout(() => {
        logger.warn({ evt: 'tor-kill', pid: child.pid }, 'tor did not stop within 10 s; killing it');
        child.kill('SIGKILL');
      }, KILL_AFTER_MS);
      try {
        await exitPromise;
      } finally {
        clearTimeout(timer);
      }
    })();
    return stopping;
  };
}
