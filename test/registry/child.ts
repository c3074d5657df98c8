// A second writer for the registry fault tests: a real OS process that opens the
// registry in a shared data folder and changes it, printing every change it got
// acknowledged as one JSON line on stdout. It takes commands on stdin, one a line:
//   go     start the work of its mode
//   dump   refresh and print the whole registry as {"dump": [...users]}
//   stop   (mode "loop") finish the changes in flight, print {"done":true}
//   exit   close the registry and exit
//   open, close  (mode "opener") open the registry now, close it
// Tests start it with `spawnChild` below (`node --import tsx child.ts '<json options>'`).
import { expect } from 'chai';
import { createInterface } from 'node:readline';
import { readdir, readlink } from 'node:fs/promises';
import { spawn, type ChildProcess } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import path from 'node:path';
import { openRegistry, RegistryError, type Registry } from '../../src/registry/index.js';
import { ROOT } from '../helpers/server.js';

export interface ChildOptions {
  dataDir: string;
  /** The engine and its database (see ./engines.ts); lowdb in dataDir when absent. */
  engine?: 'lowdb' | 'postgres';
  url?: string;
  /** writers: one burst of mixed changes; loop: changes until "stop" (or a kill); opener: opens on "open". */
  mode: 'writers' | 'loop' | 'opener';
  /** Distinguishes this process's fingerprints and local parts. */
  prefix: string;
  follow?: boolean;
  compact?: boolean;
  compactBytes?: number;
  /** writers: the user every side adds aliases to. */
  shared?: string;
  aliases?: number;
  signups?: number;
  /** writers: fingerprints every side tries to register at the same moment. */
  contested?: string[];
  /** writers: also turn catch-all off on the shared user. */
  catchAllOff?: boolean;
  /** loop: how many change loops run side by side. */
  parallel?: number;
}

/** One JSON line the child printed. */
export type Line = Record<string, unknown>;

export interface Child {
  proc: ChildProcess;
  /** Every line printed so far, parsed. */
  lines: Line[];
  send(cmd: string): void;
  /** Resolves with the first line (already printed or still to come) that `pred` accepts. */
  waitFor(pred: (l: Line) => boolean, ms?: number): Promise<Line>;
  /** Resolves once the process is gone (and its output read). */
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  /** Everything on stderr, for failure messages. */
  stderr(): string;
}

const SELF = fileURLToPath(import.meta.url);

/** Starts this file as a registry writer of its own (a real OS process) and waits until it has opened the registry. */
export async function spawnChild(o: ChildOptions): Promise<Child> {
  const proc = spawn(process.execPath, ['--import', 'tsx', SELF, JSON.stringify(o)], { cwd: ROOT, stdio: ['pipe', 'pipe', 'pipe'] });
  const lines: Line[] = [];
  let err = '';
  let waiters: Array<() => void> = [];
  const poke = () => {
    const w = waiters;
    waiters = [];
    for (const f of w) f();
  };
  proc.stderr!.on('data', (d: Buffer) => (err += d.toString()));
  createInterface({ input: proc.stdout! }).on('line', (l) => {
    try {
      lines.push(JSON.parse(l) as Line);
    } catch {
      err += `(not JSON on stdout) ${l}\n`;
    }
    poke();
  });
  let gone = false;
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) =>
    proc.on('close', (code, signal) => {
      gone = true;
      poke();
      resolve({ code, signal });
    }),
  );
  const child: Child = {
    proc,
    lines,
    exited,
    stderr: () => err,
    send: (cmd) => void proc.stdin!.write(`${cmd}\n`),
    waitFor: (pred, ms = 30_000) =>
      new Promise<Line>((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error(`child ${proc.pid}: no such line within ${ms} ms; stderr: ${err}; last lines: ${JSON.stringify(lines.slice(-3))}`)), ms);
        const check = () => {
          const hit = lines.find(pred);
          if (hit) {
            clearTimeout(timer);
            resolve(hit);
          } else if (gone) {
            clearTimeout(timer);
            reject(new Error(`child ${proc.pid} exited; stderr: ${err}; last lines: ${JSON.stringify(lines.slice(-3))}`));
          } else waiters.push(check);
        };
        check();
      }),
  };
  await child.waitFor((l) => l.ready === true || 'failed' in l);
  return child;
}

/** Ends a child that is still running (SIGKILL) and waits for it. */
export async function reap(c: Child | undefined): Promise<void> {
  if (!c) return;
  if (c.proc.exitCode === null && c.proc.signalCode === null) c.proc.kill('SIGKILL');
  await c.exited;
}

/** The journal writers append to now: the newest journal.N. */
export async function currentJournal(dataDir: string): Promise<string> {
  const folder = path.join(dataDir, 'registry');
  const gens = (await readdir(folder)).map((n) => /^journal\.(\d+)$/.exec(n)).filter((m) => m !== null).map((m) => Number(m[1]));
  return path.join(folder, `journal.${Math.max(...gens)}`);
}

/** Files under `dir` this process holds open (from /proc/self/fd). */
export async function openFilesUnder(dir: string): Promise<string[]> {
  const held: string[] = [];
  for (const fd of await readdir('/proc/self/fd')) {
    const target = await readlink(`/proc/self/fd/${fd}`).catch(() => '');
    if (target.startsWith(`${dir}/`)) held.push(target);
  }
  return held;
}

/** The stand-in armored key the registry tests use for fingerprint `fp`. */
export const armor = (fp: string) => `-----BEGIN PGP PUBLIC KEY BLOCK-----\n${fp}\n`;
/** A stand-in key for `fp`, the same as test/registry/registry.test.ts uses (importing that file would run its suite). */
export const key = (fp: string) => ({ fingerprint: fp, publicKey: armor(fp), keyExpiresAt: null });
const say = (x: unknown) => process.stdout.write(`${JSON.stringify(x)}\n`);
let opts: ChildOptions;

async function writers(reg: Registry): Promise<void> {
  const jobs: Promise<unknown>[] = [];
  for (const fp of opts.contested ?? []) {
    jobs.push(
      reg.add(key(fp)).then(
        (u) => say({ contested: fp, ok: true, username: u.username }),
        (err: unknown) => say({ contested: fp, ok: false, code: err instanceof RegistryError ? err.code : String(err) }),
      ),
    );
  }
  for (let i = 0; i < (opts.aliases ?? 0); i++) {
    const local = `${opts.prefix}-a${i}`;
    jobs.push(reg.addAlias(opts.shared!, local).then(() => say({ ack: 'alias', user: opts.shared, local })));
  }
  if (opts.catchAllOff) jobs.push(reg.setCatchAll(opts.shared!, false).then(() => say({ ack: 'catch-all', user: opts.shared, value: false })));
  for (let i = 0; i < (opts.signups ?? 0); i++) {
    const fp = `${opts.prefix}S${i}`.toUpperCase();
    jobs.push(
      (async () => {
        const u = await reg.add(key(fp));
        say({ ack: 'add', username: u.username, fingerprint: fp });
        if (i % 2 === 0) {
          await reg.setDisabled(u.username, true);
          say({ ack: 'disable', user: u.username, value: true });
        }
      })(),
    );
  }
  await Promise.all(jobs);
}

let stopping = false;

async function loop(reg: Registry, lane: number): Promise<void> {
  for (let i = 0; !stopping; i++) {
    const fp = `${opts.prefix}L${lane}N${i}`.toUpperCase();
    const u = await reg.add(key(fp));
    say({ ack: 'add', username: u.username, fingerprint: fp });
    const local = `${opts.prefix}-l${lane}-${i}`;
    await reg.addAlias(u.username, local);
    say({ ack: 'alias', user: u.username, local });
    if (i % 3 === 0) {
      await reg.setDisabled(u.username, true);
      say({ ack: 'disable', user: u.username, value: true });
    }
  }
}

/** Mode "opener": opens the registry on "open" (to race other openers), closes it on "close". */
async function opener(): Promise<void> {
  let reg: Registry | null = null;
  let n = 0;
  say({ ready: true, pid: process.pid });
  for await (const line of createInterface({ input: process.stdin })) {
    const cmd = line.trim();
    if (cmd === 'open') {
      n++;
      try {
        reg = await openRegistry({ dataDir: opts.dataDir, engine: opts.engine, url: opts.url });
        say({ opened: n });
      } catch (err) {
        say({ openFailed: n, message: String(err), code: err instanceof RegistryError ? err.code : undefined });
      }
    } else if (cmd === 'dump') {
      await reg!.refresh();
      say({ dump: reg!.list(), n });
    } else if (cmd === 'close') {
      await reg?.close();
      reg = null;
      say({ closed: n });
    } else if (cmd === 'exit') break;
  }
  await reg?.close();
  process.exit(0);
}

async function main(): Promise<void> {
  if (opts.mode === 'opener') return opener();
  const reg = await openRegistry({ dataDir: opts.dataDir, engine: opts.engine, url: opts.url, follow: opts.follow, compact: opts.compact, compactBytes: opts.compactBytes });
  let work: Promise<void> | null = null;
  say({ ready: true, pid: process.pid });
  for await (const line of createInterface({ input: process.stdin })) {
    const cmd = line.trim();
    if (cmd === 'go') {
      work =
        opts.mode === 'writers'
          ? writers(reg)
          : Promise.all(Array.from({ length: opts.parallel ?? 4 }, (_, lane) => loop(reg, lane))).then(() => undefined);
      if (opts.mode === 'writers') void work.then(() => say({ done: true }), (err: unknown) => say({ failed: String(err) }));
      else void work.catch((err: unknown) => say({ failed: String(err) }));
    } else if (cmd === 'stop') {
      stopping = true;
      await work;
      say({ done: true });
    } else if (cmd === 'dump') {
      await reg.refresh();
      say({ dump: reg.list() });
    } else if (cmd === 'exit') {
      break;
    }
  }
  await reg.close();
  process.exit(0);
}

if (process.argv[1] && path.resolve(process.argv[1]) === SELF) {
  opts = JSON.parse(process.argv[2]!) as ChildOptions;
  main().catch((err: unknown) => {
    say({ failed: String(err), code: err instanceof RegistryError ? err.code : undefined });
    process.exit(1);
  });
}

/** The RegistryError `p` rejects with (fails the test if it resolves or rejects otherwise). */
export async function refusal(p: Promise<unknown>): Promise<RegistryError> {
  try {
    await p;
  } catch (e) {
    expect(e).to.be.instanceOf(RegistryError);
    return e as RegistryError;
  }
  throw new Error('expected a RegistryError');
}

/** Every change a child printed as acknowledged is in `reg`. */
export function expectAcknowledged(reg: Registry, acks: Line[], what = ''): void {
  const at = what ? `${what}: ` : '';
  for (const l of acks) {
    if (l.ack === 'add') expect(reg.get(l.username as string)?.fingerprint, `${at}signup ${String(l.fingerprint)}`).to.equal(l.fingerprint);
    if (l.ack === 'alias') expect(reg.get(l.user as string)?.aliases, `${at}alias ${String(l.local)}`).to.include(l.local);
    if (l.ack === 'disable') expect(reg.get(l.user as string)?.disabled, `${at}disable ${String(l.user)}`).to.equal(true);
  }
}
