// One measurement of bench/registry.ts, in a process of its own so that its RSS is its own:
// opens a registry (kzymy 0.1's single registry.json, or the journal + snapshot folder),
// then times RCPT lookups, single changes of each kind and a burst of concurrent changes.
// Started by bench/registry.ts with --expose-gc; prints one JSON line (ChildResult) last.
//
//   node --expose-gc --import tsx bench/lib/registry-child.ts '{"layout":"new","mode":"measure",...}'
import { randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import path from 'node:path';
import { monitorEventLoopDelay } from 'node:perf_hooks';
import { pathToFileURL } from 'node:url';
import { Registry as LegacyRegistry } from './legacy-registry.js';
import { ROOT } from './kzymy.js';

export interface ChildJob {
  layout: 'old' | 'new';
  /** migrate: the new layout's first open of a registry.json (conversion); measure: everything else. */
  mode: 'migrate' | 'measure';
  dataDir: string;
  opsPerKind: number;
  burst: number;
  lookups: number;
}

export interface Percentiles {
  n: number;
  p50: number;
  p99: number;
  max: number;
}

export interface ChildResult {
  openMs: number;
  users: number;
  /** RSS (bytes) after the imports, before opening, and after opening (both after gc). */
  rssBefore: number;
  rssAfterOpen: number;
  heapAfterOpen: number;
  engine?: string;
  lookup?: Percentiles;
  ops?: Record<OpKind, Percentiles>;
  burst?: { n: number; totalMs: number; maxDelayMs: number; maxLateMs: number };
}

export type OpKind = 'add' | 'addAlias' | 'setKey' | 'setDisabled';
export const OP_KINDS: OpKind[] = ['add', 'addAlias', 'setKey', 'setDisabled'];

/** About 1 KB of ASCII armor around random base64 (the registry never parses keys). */
export function fakeArmor(): string {
  const b64 = randomBytes(720).toString('base64');
  const lines = b64.match(/.{1,64}/g)!.join('\n');
  return `-----BEGIN PGP PUBLIC KEY BLOCK-----\n\n${lines}\n=${randomBytes(3).toString('base64')}\n-----END PGP PUBLIC KEY BLOCK-----\n`;
}
export const fakeFingerprint = () => randomBytes(20).toString('hex').toUpperCase();

/** What both layouts offer that the benchmark uses. */
interface Common {
  list(): readonly { username: string; fingerprint: string }[];
  get(username: string): unknown;
  add(input: { fingerprint: string; publicKey: string; keyExpiresAt: string | null }): Promise<{ username: string }>;
  addAlias(username: string, localPart: string): Promise<unknown>;
  setKey(username: string, key: { fingerprint: string; publicKey: string; keyExpiresAt: string | null }): Promise<unknown>;
  setDisabled(username: string, disabled: boolean): Promise<unknown>;
  close?(): Promise<void>;
}

type NewModule = typeof import('../../src/registry/index.js');

/** The new engine as the server runs it: the built dist/ when present, else the source. */
async function newEngine(): Promise<{ mod: NewModule; engine: string }> {
  const dist = path.join(ROOT, 'dist', 'registry', 'index.js');
  if (existsSync(dist)) return { mod: (await import(pathToFileURL(dist).href)) as NewModule, engine: 'dist' };
  return { mod: await import('../../src/registry/index.js'), engine: 'src (tsx)' };
}

const gc = () => {
  const g = (globalThis as { gc?: () => void }).gc;
  if (g) {
    g();
    g();
  }
};
const ms = (t0: bigint) => Number(process.hrtime.bigint() - t0) / 1e6;

export function percentiles(xs: number[]): Percentiles {
  const s = [...xs].sort((a, b) => a - b);
  const at = (q: number) => s[Math.min(s.length - 1, Math.ceil(q * s.length) - 1)] ?? NaN;
  return { n: s.length, p50: at(0.5), p99: at(0.99), max: s[s.length - 1] ?? NaN };
}

async function main(job: ChildJob): Promise<ChildResult> {
  const { mod, engine } = job.layout === 'new' ? await newEngine() : { mod: null, engine: 'bench/lib/legacy-registry.ts' };
  gc();
  const rssBefore = process.memoryUsage().rss;
  const t0 = process.hrtime.bigint();
  const reg: Common =
    job.layout === 'old'
      ? await LegacyRegistry.open(job.dataDir)
      : await mod!.openRegistry({ dataDir: job.dataDir, follow: job.mode === 'measure', compact: job.mode === 'measure' });
  const openMs = ms(t0);
  gc();
  const mem = process.memoryUsage();
  const all = reg.list();
  const res: ChildResult = { openMs, users: all.length, rssBefore, rssAfterOpen: mem.rss, heapAfterOpen: mem.heapUsed, engine };
  if (job.mode === 'migrate') {
    await reg.close?.();
    return res;
  }

  // Users the changes work on: distinct ones, none changed twice by the same kind.
  const names = all.map((u) => u.username);
  const shuffled = [...all].sort(() => Math.random() - 0.5);
  let next = 0;
  const fresh = () => shuffled[next++ % shuffled.length]!;

  // RCPT lookups: half existing users, half unknown names, each timed on its own.
  const unknown = Array.from({ length: 1000 }, () => 'q' + randomBytes(8).toString('hex').slice(0, 11));
  const lookupTimes = new Array<number>(job.lookups);
  let found = 0;
  for (let i = 0; i < job.lookups; i++) {
    const name = i % 2 ? unknown[i % unknown.length]! : names[Math.floor(Math.random() * names.length)]!;
    const t = process.hrtime.bigint();
    if (reg.get(name)) found++;
    lookupTimes[i] = ms(t);
  }
  if (found !== Math.ceil(job.lookups / 2)) throw new Error(`${found} lookups found a user, expected ${Math.ceil(job.lookups / 2)}`);
  res.lookup = percentiles(lookupTimes);

  const future = (days: number) => new Date(Date.now() + days * 86400_000).toISOString();
  const change = (kind: OpKind, i: number): Promise<unknown> => {
    switch (kind) {
      case 'add':
        return reg.add({ fingerprint: fakeFingerprint(), publicKey: fakeArmor(), keyExpiresAt: future(365) });
      case 'addAlias':
        return reg.addAlias(fresh().username, `alias-${i}-${randomBytes(3).toString('hex')}`);
      case 'setKey': {
        const u = fresh();
        return reg.setKey(u.username, { fingerprint: u.fingerprint, publicKey: fakeArmor(), keyExpiresAt: future(400 + i) });
      }
      case 'setDisabled':
        return reg.setDisabled(fresh().username, true);
    }
  };

  const ops = {} as Record<OpKind, Percentiles>;
  for (const kind of OP_KINDS) {
    const times: number[] = [];
    for (let i = 0; i < job.opsPerKind; i++) {
      const t = process.hrtime.bigint();
      await change(kind, i);
      times.push(ms(t));
    }
    ops[kind] = percentiles(times);
  }
  res.ops = ops;

  // A burst: `burst` changes (the four kinds in turn) issued at once. The event loop's delay
  // is watched two ways: perf_hooks' histogram and a 1 ms timer's worst lateness.
  const h = monitorEventLoopDelay({ resolution: 1 });
  let last = performance.now();
  let maxLate = 0;
  const timer = setInterval(() => {
    const t = performance.now();
    maxLate = Math.max(maxLate, t - last - 1);
    last = t;
  }, 1);
  await new Promise((r) => setTimeout(r, 50));
  h.enable();
  last = performance.now();
  maxLate = 0;
  const tb = process.hrtime.bigint();
  await Promise.all(Array.from({ length: job.burst }, (_, i) => change(OP_KINDS[i % OP_KINDS.length]!, 10_000 + i)));
  const totalMs = ms(tb);
  await new Promise((r) => setTimeout(r, 20));
  h.disable();
  clearInterval(timer);
  res.burst = { n: job.burst, totalMs, maxDelayMs: h.max / 1e6, maxLateMs: maxLate };
  await reg.close?.();
  return res;
}

// Run as a script (bench/registry.ts imports this module only for its helpers and types).
if (process.argv[1] && import.meta.url === pathToFileURL(path.resolve(process.argv[1])).href) {
  const job = JSON.parse(process.argv[2] ?? '') as ChildJob;
  main(job).then(
  (r) => {
    console.log(JSON.stringify(r));
    process.exit(0);
  },
  (err: unknown) => {
    console.error(err instanceof Error ? (err.stack ?? err.message) : String(err));
    process.exit(1);
  },
  );
}
