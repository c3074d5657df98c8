// Processes of an e2e suite: is a PID alive, which processes name a folder, and running
// kzymy-client as a subprocess whose PID we know.
import { spawn } from 'node:child_process';
import { readdirSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { traced } from './connect-trace.js';

export const ROOT = path.resolve(import.meta.dirname, '..', '..');
export const CLIENT_CLI = path.join(ROOT, 'src', 'cli', 'client.ts');

export function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
  } catch {
    return false;
  }
  // A zombie (exited, not yet reaped) counts as gone.
  try {
    return !/^\d+ \(.*\) Z /.test(readFileSync(`/proc/${pid}/stat`, 'utf8'));
  } catch {
    return false;
  }
}

/** Processes (other than this one) whose command line mentions any of `texts`: PID and command line. */
export function processesMentioning(...texts: string[]): Array<{ pid: number; cmd: string }> {
  const found: Array<{ pid: number; cmd: string }> = [];
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry) || Number(entry) === process.pid) continue;
    try {
      const cmd = readFileSync(`/proc/${entry}/cmdline`, 'utf8').replace(/\0/g, ' ').trim();
      if (cmd && texts.some((t) => cmd.includes(t)) && alive(Number(entry))) found.push({ pid: Number(entry), cmd });
    } catch {
      // gone meanwhile
    }
  }
  return found;
}

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
