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
import { Registry as LegacyRegistry, type User as LegacyUser } from './legacy-registry.js';
import { ROOT } from './kzymy.js';

export interface ChildJob {
  layout: 'old' | 'new' | 'postgres';
  /**
   * migrate: the new layout's first open of a registry.json (conversion), or for postgres the
   * schema made at first open and the registry.json's users imported by SQL; measure: everything else.
   */
  mode: 'migrate' | 'measure';
  /** The folder of registry.json (old, new; postgres: where the users to import are read). */
  dataDir: string;
  /** postgres: the database URL. */
  url?: string;
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
  /** postgres: from a change's commit on one registry to its sight on a second one (LISTEN/NOTIFY or the 1 s poll). */
  propagation?: Percentiles;
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
  const { mod, engine } = job.layout !== 'old' ? await newEngine() : { mod: null, engine: 'bench/lib/legacy-registry.ts' };
  gc();
  const rssBefore = process.memoryUsage().rss;
  const t0 = process.hrtime.bigint();
  const pgOpts = job.layout === 'postgres' ? { engine: 'postgres' as const, url: job.url } : {};
  const reg: Common =
    job.layout === 'old'
      ? await LegacyRegistry.open(job.dataDir)
      : await mod!.openRegistry({ dataDir: job.dataDir, follow: job.mode === 'measure', compact: job.mode === 'measure', ...pgOpts });
  if (job.layout === 'postgres' && job.mode === 'migrate') {
    await reg.close?.();
    await importUsers(job.url!, path.join(job.dataDir, 'registry.json'));
  }
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

  if (job.layout === 'postgres') {
    // A second node's registry: how soon it sees a signup committed by this one.
    const other = await mod!.openRegistry({ dataDir: job.dataDir, follow: true, ...pgOpts });
    const seen: number[] = [];
    for (let i = 0; i < job.opsPerKind; i++) {
      const { username } = await reg.add({ fingerprint: fakeFingerprint(), publicKey: fakeArmor(), keyExpiresAt: future(365) });
      const t = process.hrtime.bigint();
      while (!other.get(username)) await new Promise((r) => setImmediate(r));
      seen.push(ms(t));
    }
    res.propagation = percentiles(seen);
    await other.close?.();
  }
  await reg.close?.();
  return res;
}

/** Imports a 0.1-format registry.json into the postgres engine's tables, 5,000 users a statement. */
async function importUsers(url: string, file: string): Promise<void> {
  const { default: pg } = await import('pg');
  const { createHash } = await import('node:crypto');
  const { readFile } = await import('node:fs/promises');
  const users = (JSON.parse(await readFile(file, 'utf8')) as { users: LegacyUser[] }).users;
  const c = new pg.Client({ connectionString: url });
  await c.connect();
  try {
    await c.query('BEGIN');
    for (let i = 0; i < users.length; i += 5000) {
      const part = users.slice(i, i + 5000);
      const col = <K extends keyof LegacyUser>(k: K) => part.map((u) => u[k]);
      const arr = (k: 'aliases' | 'blocked' | 'notices') => part.map((u) => `{${u[k].map((x) => JSON.stringify(x)).join(',')}}`);
      const keyIds = part.map((u) => createHash('sha256').update(u.publicKey, 'utf8').digest('hex'));
      const versions = part.map((_, k) => i + k + 1);
      await c.query(
        `INSERT INTO users (username, fingerprint, key_id, key_expires_at, created_at, disabled, catch_all, aliases, blocked, notices, version)
         SELECT username, fingerprint, key_id, key_expires_at, created_at, disabled, catch_all, aliases::text[], blocked::text[], notices::text[], version
           FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::boolean[], $7::boolean[], $8::text[], $9::text[], $10::text[], $11::bigint[])
           AS t(username, fingerprint, key_id, key_expires_at, created_at, disabled, catch_all, aliases, blocked, notices, version)`,
        [col('username'), col('fingerprint'), keyIds, col('keyExpiresAt'), col('createdAt'), col('disabled'), col('catchAll'), arr('aliases'), arr('blocked'), arr('notices'), versions],
      );
      await c.query('INSERT INTO public_keys (username, key_id, armored) SELECT * FROM unnest($1::text[], $2::text[], $3::text[])', [col('username'), keyIds, col('publicKey')]);
    }
    await c.query('UPDATE registry_state SET version = $1', [users.length]);
    await c.query('COMMIT');
  } finally {
    await c.end();
  }
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
