// Starts kzymy-server for the benchmark: the built CLI (dist/cli/server.js) when present,
// else the TypeScript source through tsx. The spawned process is node itself (no wrapper),
// so its PID is the one whose /proc status tells the server's memory. With SMTP worker
// processes (smtp.workers, KZYMY_SMTP_WORKERS) that PID is the primary and the workers are its
// children: pids() lists them all.
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, openSync, closeSync, statSync, readdirSync } from 'node:fs';
import { readFile, writeFile, mkdir } from 'node:fs/promises';
import path from 'node:path';
import { processTree, procComm, runOk, sleep } from './util.js';

export const ROOT = path.resolve(import.meta.dirname, '..', '..');
const DIST_CLI = path.join(ROOT, 'dist', 'cli', 'server.js');
const SRC_CLI = path.join(ROOT, 'src', 'cli', 'server.ts');

/** How the server is run: node args before the CLI's own. */
export function serverEntry(): { args: string[]; built: boolean } {
  if (existsSync(DIST_CLI)) return { args: [DIST_CLI], built: true };
  return { args: ['--import', 'tsx', SRC_CLI], built: false };
}

/** Newest mtime under a folder (ms), for "is dist older than src?". */
function newest(dir: string, ext: string): number {
  let t = 0;
  for (const e of readdirSync(dir, { withFileTypes: true, recursive: true })) {
    if (e.isFile() && e.name.endsWith(ext)) t = Math.max(t, statSync(path.join(e.parentPath, e.name)).mtimeMs);
  }
  return t;
}

/** A warning if the built server is missing or older than the source, else null. */
export function buildWarning(): string | null {
  if (!existsSync(DIST_CLI)) return 'dist/ is missing: running the TypeScript source through tsx (run "npm run build" first for real figures).';
  if (newest(path.join(ROOT, 'src'), '.ts') > newest(path.join(ROOT, 'dist'), '.js')) {
    return 'dist/ is older than src/: the figures are for the last build (run "npm run build").';
  }
  return null;
}

export interface KzymyOptions {
  base: string;
  domain: string;
  greetingDelayMs: number;
  /** Extra node flags, e.g. ["--cpu-prof", "--cpu-prof-dir", DIR]. */
  nodeFlags?: string[];
  /** Name of the log file under base (stdout and stderr of the server). */
  logName: string;
  /** Overrides of the benchmark's limits (e.g. { maxMessageBytes: N }). */
  limits?: Record<string, number>;
  /** Overrides of smtp settings (e.g. { maxClientsPerAddress: N }). */
  smtp?: Record<string, number>;
  /** KZYMY_SMTP_WORKERS for the server ("auto" or a number); unset: the server's own default. */
  workers?: string;
  /** Extra environment (e.g. NODE_OPTIONS, which reaches worker processes too). */
  env?: Record<string, string>;
  /** Top-level settings that replace the benchmark's (e.g. maildirRoot, registry: several nodes). */
  config?: Record<string, unknown>;
}

export interface KzymyInstance {
  pid: number;
  port: number;
  configFile: string;
  maildirRoot: string;
  logFile: string;
  /** SMTP worker processes, from the server's "smtp-workers" log line (1 without one). */
  workers: number;
  /** The server process and its node descendants (the SMTP workers), the server first. */
  pids(): Promise<number[]>;
  cli(...args: string[]): Promise<string>;
  stop(): Promise<void>;
}

const MiB = 1024 * 1024;

export async function writeKzymyConfig(opts: KzymyOptions): Promise<string> {
  const { base, domain } = opts;
  await mkdir(base, { recursive: true });
  const configFile = path.join(base, 'kzymy.json');
  const config = {
    domain,
    dataDir: path.join(base, 'kzymy-data'),
    maildirRoot: path.join(base, 'kzymy-maildirs'),
    smtp: { host: '127.0.0.1', port: 0, greetingDelayMs: opts.greetingDelayMs, ...opts.smtp },
    web: { host: '127.0.0.1', port: 0 },
    tor: { manage: false, hostnameFile: path.join(base, 'no-tor', 'hostname') },
    // Raised so that quota and the disk floor never refuse a benchmark message.
    limits: { maxMessageBytes: 64 * MiB, quotaBytes: 1024 * 1024 * MiB, minFreeBytes: 0, ...opts.limits },
    log: { level: 'info' },
    ...opts.config,
  };
  await writeFile(configFile, JSON.stringify(config, null, 2));
  return configFile;
}

function env(): NodeJS.ProcessEnv {
  return { ...process.env, KZYMY_TOR_MANAGE: '0' };
}

/** `kzymy-server ARGS --config FILE`, returning stdout. */
export async function kzymyCli(configFile: string, ...args: string[]): Promise<string> {
  const r = await runOk(process.execPath, [...serverEntry().args, ...args, '--config', configFile], { env: env(), cwd: ROOT, timeoutMs: 60_000 });
  return r.stdout;
}

/** node's flags for `kzymy-server start`, as package.json's start script and scripts/kzymy.service give them. */
export const SERVER_NODE_FLAGS = ['--max-semi-space-size=4'];

export async function startKzymy(opts: KzymyOptions): Promise<KzymyInstance> {
  const configFile = await writeKzymyConfig(opts);
  const logFile = path.join(opts.base, opts.logName);
  const fd = openSync(logFile, 'w');
  let child: ChildProcess;
  try {
    child = spawn(process.execPath, [...SERVER_NODE_FLAGS, ...(opts.nodeFlags ?? []), ...serverEntry().args, 'start', '--config', configFile], {
      cwd: ROOT,
      env: { ...env(), ...(opts.workers !== undefined ? { KZYMY_SMTP_WORKERS: opts.workers } : {}), ...opts.env },
      // The log goes straight to a file: the benchmark process does no work per log line.
      stdio: ['ignore', fd, fd],
    });
  } finally {
    closeSync(fd);
  }
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  let port = 0;
  const deadline = Date.now() + 30_000;
  while (!port) {
    if (child.exitCode !== null || child.signalCode !== null) {
      throw new Error(`kzymy-server exited before listening:\n${await readFile(logFile, 'utf8')}`);
    }
    if (Date.now() > deadline) {
      child.kill('SIGKILL');
      throw new Error(`kzymy-server did not start in 30 s:\n${await readFile(logFile, 'utf8')}`);
    }
    for (const line of (await readFile(logFile, 'utf8')).split('\n')) {
      if (!line.startsWith('{')) continue;
      try {
        const j = JSON.parse(line) as { evt?: string; smtp?: { port: number } };
        if (j.evt === 'listening' && j.smtp) port = j.smtp.port;
      } catch {
        // a partial line
      }
    }
    if (!port) await sleep(50);
  }
  // A server with workers says how many in one line; one without never does (give it 1 s).
  let workers: number | null = null;
  for (let i = 0; workers === null && i < 20; i++) {
    workers = workersFromLog(await readFile(logFile, 'utf8'));
    if (workers === null) await sleep(50);
  }
  const pids = async () => {
    const tree = await processTree(child.pid!);
    const out: number[] = [];
    for (const p of tree) if (p === child.pid || (await procComm(p)) === 'node') out.push(p);
    return out;
  };
  let stopping: Promise<void> | null = null;
  return {
    pid: child.pid!,
    port,
    configFile,
    maildirRoot: typeof opts.config?.maildirRoot === 'string' ? opts.config.maildirRoot : path.join(opts.base, 'kzymy-maildirs'),
    logFile,
    workers: workers ?? 1,
    pids,
    cli: (...args) => kzymyCli(configFile, ...args),
    stop() {
      if (!stopping) {
        stopping = (async () => {
          if (child.exitCode !== null || child.signalCode !== null) return;
          const before = (await pids()).slice(1);
          child.kill('SIGTERM');
          const timer = setTimeout(() => child.kill('SIGKILL'), 30_000);
          await exited;
          clearTimeout(timer);
          // Workers the server started and did not stop (it was killed): give them 10 s to
          // finish (a worker under --cpu-prof writes its profile as it exits), then stop them.
          const alive = async () => (await Promise.all(before.map(async (p) => ((await procComm(p)) === 'node' ? p : 0)))).filter((p) => p);
          for (let i = 0; i < 100 && (await alive()).length; i++) await sleep(100);
          for (const p of await alive()) {
            try {
              process.kill(p, 'SIGKILL');
            } catch {
              // gone
            }
          }
        })();
      }
      return stopping;
    },
  };
}

/** N of the last {"evt":"smtp-workers","workers":N} line of a server log, or null. */
export function workersFromLog(text: string): number | null {
  let n: number | null = null;
  for (const line of text.split('\n')) {
    if (!line.startsWith('{') || !line.includes('smtp-workers')) continue;
    try {
      const j = JSON.parse(line) as { evt?: string; workers?: unknown };
      if (j.evt === 'smtp-workers' && typeof j.workers === 'number' && j.workers >= 1) n = j.workers;
    } catch {
      // a partial line
    }
  }
  return n;
}
