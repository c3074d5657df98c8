// Small helpers for the intake benchmark: processes, ports, files, numbers.
import { spawn } from 'node:child_process';
import { readdir, readFile } from 'node:fs/promises';
import net from 'node:net';

export const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

/** Monotonic time in seconds. */
export function now(): number {
  return Number(process.hrtime.bigint()) / 1e9;
}

export interface RunOutput {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
  seconds: number;
}

/** Runs a command to its end (killed after timeoutMs), timing it; never rejects on a non-zero exit. */
export function run(cmd: string, args: string[], opts: { timeoutMs?: number; env?: NodeJS.ProcessEnv; cwd?: string } = {}): Promise<RunOutput> {
  return new Promise((resolve, reject) => {
    const t0 = now();
    const child = spawn(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'], env: opts.env ?? process.env, cwd: opts.cwd });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    const timer = setTimeout(() => child.kill('SIGKILL'), opts.timeoutMs ?? 120_000);
    child.on('error', (err) => {
      clearTimeout(timer);
      reject(err);
    });
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      resolve({ code, signal, stdout, stderr, seconds: now() - t0 });
    });
  });
}

/** Like run, but rejects unless the command exits with 0. */
export async function runOk(cmd: string, args: string[], opts: { timeoutMs?: number; env?: NodeJS.ProcessEnv; cwd?: string } = {}): Promise<RunOutput> {
  const r = await run(cmd, args, opts);
  if (r.code !== 0) {
    throw new Error(`${cmd} ${args.join(' ')} failed (exit ${r.code ?? r.signal}):\n${r.stderr.trim() || r.stdout.trim()}`);
  }
  return r;
}

/** A TCP port that was free on 127.0.0.1 a moment ago. */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.once('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const port = (srv.address() as net.AddressInfo).port;
      srv.close(() => resolve(port));
    });
  });
}

/** Number of entries in a directory (0 if it does not exist yet). */
export async function countFiles(dir: string): Promise<number> {
  try {
    return (await readdir(dir)).length;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return 0;
    throw err;
  }
}

/** Polls until pred() is true; returns the time (now()) it first was; throws after timeoutMs. */
export async function waitUntil(pred: () => Promise<boolean>, what: string, timeoutMs: number, everyMs = 20): Promise<number> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (await pred()) return now();
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs / 1000} s waiting for ${what}`);
    await sleep(everyMs);
  }
}

export function median(xs: number[]): number {
  if (xs.length === 0) return NaN;
  const s = [...xs].sort((a, b) => a - b);
  const m = Math.floor(s.length / 2);
  return s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
}

/** A field of /proc/PID/status in kB (VmHWM, VmRSS), or null if the process is gone. */
export async function procStatusKb(pid: number, field: 'VmHWM' | 'VmRSS'): Promise<number | null> {
  try {
    const text = await readFile(`/proc/${pid}/status`, 'utf8');
    const m = new RegExp(`^${field}:\\s+(\\d+) kB`, 'm').exec(text);
    return m ? Number(m[1]) : null;
  } catch {
    return null;
  }
}

/** Child PIDs of a process, from /proc/PID/task/TID/children of each thread (empty if it is gone). */
export async function childPids(pid: number): Promise<number[]> {
  let tasks: string[];
  try {
    tasks = await readdir(`/proc/${pid}/task`);
  } catch {
    return [];
  }
  const out: number[] = [];
  for (const tid of tasks) {
    try {
      const text = await readFile(`/proc/${pid}/task/${tid}/children`, 'utf8');
      for (const p of text.split(/\s+/)) if (p) out.push(Number(p));
    } catch {
      // the thread is gone
    }
  }
  return out;
}

/** A process and all its descendants, the process first. */
export async function processTree(pid: number): Promise<number[]> {
  const out = [pid];
  for (let i = 0; i < out.length; i++) for (const c of await childPids(out[i]!)) if (!out.includes(c)) out.push(c);
  return out;
}

/** Resets the peak RSS (VmHWM) of each process to its current RSS; ignores processes that are gone. */
export async function resetPeakRss(pids: number[]): Promise<void> {
  const { writeFile } = await import('node:fs/promises');
  await Promise.all(pids.map((p) => writeFile(`/proc/${p}/clear_refs`, '5').catch(() => undefined)));
}

export interface TreeMemory {
  /** Per process: [pid, VmHWM kB]. */
  perProcess: Array<[number, number]>;
  /** The largest VmHWM of one process, MB (10^6 bytes). */
  maxMB: number;
  /** VmHWM summed over the processes, MB. */
  sumMB: number;
}

/** VmHWM (or VmRSS) of each process, its maximum and its sum. */
export async function treeMemory(pids: number[], field: 'VmHWM' | 'VmRSS' = 'VmHWM'): Promise<TreeMemory> {
  const perProcess: Array<[number, number]> = [];
  for (const p of pids) {
    const kb = await procStatusKb(p, field);
    if (kb !== null) perProcess.push([p, kb]);
  }
  const mb = (kb: number) => (kb * 1024) / 1e6;
  return {
    perProcess,
    maxMB: perProcess.length ? mb(Math.max(...perProcess.map(([, kb]) => kb))) : NaN,
    sumMB: perProcess.length ? mb(perProcess.reduce((a, [, kb]) => a + kb, 0)) : NaN,
  };
}

/** The executable name of a process (/proc/PID/comm). */
export async function procComm(pid: number): Promise<string | null> {
  try {
    return (await readFile(`/proc/${pid}/comm`, 'utf8')).trim();
  } catch {
    return null;
  }
}

export async function loadAverage(): Promise<string> {
  try {
    return (await readFile('/proc/loadavg', 'utf8')).split(' ').slice(0, 3).join(' ');
  } catch {
    return 'unknown';
  }
}

export function fmt(n: number, digits = 0): string {
  if (!Number.isFinite(n)) return '-';
  return n.toLocaleString('en-US', { minimumFractionDigits: digits, maximumFractionDigits: digits });
}

/** What a benchmark must undo (servers, folders), run last-in first-out, once. */
export const cleanups: Array<() => Promise<void> | void> = [];
let cleaning: Promise<void> | null = null;
export function cleanupAll(): Promise<void> {
  cleaning ??= (async () => {
    for (const c of cleanups.splice(0).reverse()) {
      try {
        await c();
      } catch (err) {
        console.error(`cleanup: ${(err as Error).message}`);
      }
    }
  })();
  return cleaning;
}

/** On Ctrl-C or SIGTERM: say `what` is being stopped, clean up, exit 130. */
export function cleanUpOnSignals(what: string): void {
  for (const sig of ['SIGINT', 'SIGTERM'] as const) {
    process.once(sig, () => {
      console.error(`\n${sig}: ${what}...`);
      void cleanupAll().finally(() => process.exit(130));
    });
  }
}

/**
 * Writes `report` (a Markdown section starting with the heading `section`) into FILE:
 * in place of that section if FILE has it (up to the next "## " heading), else at its end.
 * An empty `report` removes the section.
 */
export async function writeReportSection(file: string, section: string, report: string): Promise<void> {
  const { readFile, writeFile } = await import('node:fs/promises');
  let doc = '';
  try {
    doc = await readFile(file, 'utf8');
  } catch {
    // a new file
  }
  const at = doc.indexOf(section);
  if (at >= 0) {
    const next = doc.indexOf('\n## ', at + section.length);
    doc = doc.slice(0, at) + (report ? report + '\n' : '') + (next >= 0 ? doc.slice(next + 1) : '');
  } else if (report) doc = (doc ? doc.replace(/\n*$/, '\n\n') : '') + report + '\n';
  await writeFile(file, doc);
}

/** Runs a benchmark's main, then the cleanups; on failure, one line, the cleanups, exit code 1. */
export function runBench(main: () => Promise<void>): void {
  main()
    .then(() => cleanupAll())
    .catch(async (err: unknown) => {
      console.error(`\nbench failed: ${err instanceof Error ? err.message : String(err)}`);
      await cleanupAll();
      process.exitCode = 1;
    });
}

/** A positive integer option, else `full` (or `quick` under --quick). */
export function intOption(v: string | undefined, full: number, quick: number, isQuick: boolean): number {
  if (v === undefined) return isQuick ? quick : full;
  const n = Number(v);
  if (!Number.isInteger(n) || n < 1) throw new Error(`not a positive integer: ${v}`);
  return n;
}
