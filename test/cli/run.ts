// kzymy-server run as the operator runs it (from source, through tsx), to its end.
import { execFile } from 'node:child_process';
import { ROOT, serverCommand } from '../helpers/server.js';

export interface CliResult {
  code: number;
  stdout: string;
  stderr: string;
}

/** Runs kzymy-server with `args` (no managed tor unless `env` says so); never throws for a non-zero exit. */
export function cli(args: string[], env: Record<string, string> = {}): Promise<CliResult> {
  const c = serverCommand(...args);
  return new Promise((resolve) => {
    execFile(c.cmd, c.args, { cwd: ROOT, env: { ...process.env, KZYMY_TOR_MANAGE: '0', ...env } }, (err, stdout, stderr) => {
      resolve({ code: err ? Number((err as { code?: number }).code ?? 1) : 0, stdout, stderr });
    });
  });
}
