// Running kzymy-client as a subprocess whose PID we know (an e2e suite's processes).
import { spawn } from 'node:child_process';
import path from 'node:path';
import { traced } from './connect-trace.js';

export { alive, processesMentioning } from '../helpers/procs.js';

export const ROOT = path.resolve(import.meta.dirname, '..', '..');
export const CLIENT_CLI = path.join(ROOT, 'src', 'cli', 'client.ts');

export interface ClientRun {
  pid: number;
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
  ms: number;
}

/**
 * `node --import tsx src/cli/client.ts ARGS`; never rejects on a non-zero exit. `onPid` sees
 * the PID at once; with `traceLog`, it runs under strace, which logs every connect() there.
 */
export function runClient(args: string[], opts: { onPid?: (pid: number) => void; traceLog?: string } = {}): Promise<ClientRun> {
  const t0 = Date.now();
  let c = { cmd: process.execPath, args: ['--import', 'tsx', CLIENT_CLI, ...args] };
  // Not following execve: gpg may start a gpg-agent daemon, which would keep strace waiting.
  if (opts.traceLog) c = traced(opts.traceLog, c.cmd, c.args, { followExec: false });
  return new Promise((resolve, reject) => {
    const child = spawn(c.cmd, c.args, {
      cwd: ROOT,
      env: { ...process.env, KZYMY_DEBUG: '' },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    if (child.pid !== undefined) opts.onPid?.(child.pid);
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    child.on('error', reject);
    child.on('close', (code, signal) => resolve({ pid: child.pid ?? -1, code, signal, stdout, stderr, ms: Date.now() - t0 }));
  });
}
