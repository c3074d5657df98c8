// Starts a real kzymy-server process (the CLI, as an operator would) on free ports,
// in temporary folders, and stops it. Its stdout (JSON log lines) is kept for leak checks.
import { spawn, execFile, type ChildProcess } from 'node:child_process';
import { writeFile, mkdir } from 'node:fs/promises';
import { promisify } from 'node:util';
import path from 'node:path';
import { tempDir } from './env.js';

const run = promisify(execFile);
export const ROOT = path.resolve(import.meta.dirname, '..', '..');
export const SERVER_CLI = path.join(ROOT, 'src', 'cli', 'server.ts');

export interface ServerOptions {
  domain?: string;
  /** Extra configuration merged into the file (e.g. { limits: { quotaBytes: 4096 } }). */
  config?: Record<string, unknown>;
  env?: Record<string, string>;
  /** Reuse folders (restart after a crash). */
  base?: string;
}

export interface RunningServer {
  base: string;
  configFile: string;
  dataDir: string;
  maildirRoot: string;
  domain: string;
  smtpPort: number;
  webPort: number | null;
  child: ChildProcess;
  /** Everything the process wrote to stdout and stderr so far. */
  output(): string;
  /** Runs `kzymy-server ARGS --config FILE` and returns stdout. */
  cli(...args: string[]): Promise<string>;
  stop(signal?: NodeJS.Signals): Promise<number | null>;
  cleanup(): Promise<void>;
}

/** `node --import tsx src/cli/server.ts ...`: the same code path as the installed bin. */
export function serverCommand(...args: string[]): { cmd: string; args: string[] } {
  return { cmd: process.execPath, args: ['--import', 'tsx', SERVER_CLI, ...args] };
}

export async function runServerCli(configFile: string, ...args: string[]): Promise<{ stdout: string; stderr: string }> {
  const c = serverCommand(...args, '--config', configFile);
  return run(c.cmd, c.args, { cwd: ROOT, env: { ...process.env, KZYMY_TOR_MANAGE: '0' } });
}

function merge(a: Record<string, unknown>, b: Record<string, unknown>): Record<string, unknown> {
  const outp: Record<string, unknown> = { ...a };
  for (const [k, v] of Object.entries(b)) {
    outp[k] = v && typeof v === 'object' && !Array.isArray(v) && typeof a[k] === 'object' ? merge(a[k] as Record<string, unknown>, v as Record<string, unknown>) : v;
  }
  return outp;
}

export async function startServer(opts: ServerOptions = {}): Promise<RunningServer> {
  const made = opts.base ? null : await tempDir('kzymy-srv-');
  const base = opts.base ?? made!.dir;
  const domain = opts.domain ?? 'kzymy.test';
  const dataDir = path.join(base, 'data');
  const maildirRoot = path.join(base, 'maildirs');
  await mkdir(base, { recursive: true });
  const configFile = path.join(base, 'config.json');
  const cfg = merge(
    {
      domain,
      dataDir,
      maildirRoot,
      smtp: { host: '127.0.0.1', port: 0 },
      web: { host: '127.0.0.1', port: 0 },
      tor: { manage: false, hostnameFile: path.join(base, 'no-tor', 'hostname') },
      limits: { minFreeBytes: 0 },
    },
    opts.config ?? {},
  );
  await writeFile(configFile, JSON.stringify(cfg, null, 2));
  const env = { ...process.env, KZYMY_TOR_MANAGE: '0', ...opts.env };
  if (!opts.base) await runServerCli(configFile, 'init');

  const c = serverCommand('start', '--config', configFile);
  const child = spawn(c.cmd, c.args, { cwd: ROOT, env, stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  child.stdout!.on('data', (d: Buffer) => (out += d.toString()));
  child.stderr!.on('data', (d: Buffer) => (out += d.toString()));
  const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
  // A test run that aborts must not leave a server behind.
  const reap = () => child.kill('SIGKILL');
  process.once('exit', reap);
  void exited.then(() => process.off('exit', reap));

  const listening = await new Promise<{ smtp: { port: number }; web: { port: number } | null }>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`kzymy-server did not start in 30 s:\n${out}`)), 30_000);
    const onData = () => {
      for (const line of out.split('\n')) {
        if (!line.startsWith('{')) continue;
        try {
          const j = JSON.parse(line) as { evt?: string; smtp: { port: number }; web: { port: number } | null };
          if (j.evt === 'listening') {
            clearTimeout(timer);
            child.stdout!.off('data', onData);
            return resolve(j);
          }
        } catch {
          // not JSON
        }
      }
    };
    child.stdout!.on('data', onData);
    void exited.then((code) => {
      clearTimeout(timer);
      reject(new Error(`kzymy-server exited with ${code} before listening:\n${out}`));
    });
  });

  let stopped: Promise<number | null> | null = null;
  const srv: RunningServer = {
    base,
    configFile,
    dataDir,
    maildirRoot,
    domain,
    smtpPort: listening.smtp.port,
    webPort: listening.web?.port ?? null,
    child,
    output: () => out,
    cli: async (...args) => (await runServerCli(configFile, ...args)).stdout,
    stop(signal = 'SIGTERM') {
      if (!stopped) {
        if (child.exitCode === null && child.signalCode === null) child.kill(signal);
        stopped = exited;
      }
      return stopped;
    },
    async cleanup() {
      await srv.stop();
      await made?.cleanup();
    },
  };
  return srv;
}
