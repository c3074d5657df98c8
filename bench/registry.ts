// kzymy registry benchmark: kzymy 0.1's single registry.json (bench/lib/legacy-registry.ts,
// rewritten whole on every change) against the journal + snapshot + key files layout of
// src/registry/, and the PostgreSQL engine (a private cluster, fsync on), side by side in one
// run, at 1,000, 10,000 and 100,000 users.
//
// Each size's registry.json (0.1 format, ~1 KB of armor per user, some aliases) is written
// once as a file and copied for each layout: the old layout opens it as is; the new one
// converts it on first open (timed as the migration) and is then opened again in a fresh
// process. Every layout x size runs in a process of its own (bench/lib/registry-child.ts)
// so that its RSS is its own. At the largest size the real server (dist/cli/server.js) is
// also started on the converted data, and its RSS read once it is listening.
//
//   npm run bench:registry
//   npx tsx bench/registry.ts --sizes 1000,10000 --out docs/benchmarks.md
//   npx tsx bench/registry.ts --help
//
// A benchmark, not a test: it prints PASS/FAIL against the targets and exits 0 either way
// (non-zero only when a measurement could not be made).
import { randomBytes } from 'node:crypto';
import { copyFile, mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { cpus, tmpdir, totalmem } from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { randomUsername } from '../src/registry/names.js';
import { postgresBin, startCluster, type Cluster } from '../test/helpers/postgres.js';
import { buildWarning, ROOT, serverEntry, startKzymy } from './lib/kzymy.js';
import { fakeArmor, fakeFingerprint, OP_KINDS, type ChildJob, type ChildResult, type OpKind } from './lib/registry-child.js';
import { cleanUpOnSignals, runBench, cleanups, fmt, loadAverage, now, procStatusKb, run, sleep, writeReportSection } from './lib/util.js';

const { values: opt } = parseArgs({
  options: {
    sizes: { type: 'string', default: '1000,10000,100000' },
    'no-postgres': { type: 'boolean', default: false },
    out: { type: 'string' },
    help: { type: 'boolean', short: 'h', default: false },
  },
});

if (opt.help) {
  console.log(`usage: npx tsx bench/registry.ts [--sizes N,N,...] [--out FILE]

  --sizes N,N,...  registry sizes in users (default 1000,10000,100000); the targets are checked at 100,000
  --no-postgres    leave out the PostgreSQL engine (it needs Debian's postgresql package)
  --out FILE       also write the report section into FILE (replacing an earlier one)`);
  process.exit(0);
}

const SIZES = opt.sizes!.split(',').map((s) => {
  const n = Number(s.trim());
  if (!Number.isInteger(n) || n < 10) throw new Error(`--sizes takes users counts of at least 10, not ${s}`);
  return n;
});
const SECTION = '## Registry: one registry.json, the journal layout and PostgreSQL';
const CHILD = path.join(ROOT, 'bench', 'lib', 'registry-child.ts');
const LOOKUPS = 100_000;
const NEW_OPS = 200;
/** The old layout rewrites the whole file per change (~3 s at 100,000 users): fewer changes there. */
const oldOps = (n: number) => (n <= 1000 ? 200 : n <= 10_000 ? 50 : 15);
const TARGET_USERS = 100_000;
const TARGETS = { changeP99Ms: 20, lookupP99Ms: 1, openMs: 3000, serverRssMB: 300, stallMs: 50 };

cleanUpOnSignals('removing temporary files');
const log = (line: string) => console.log(line);
const MB = (bytes: number) => bytes / 1e6;

/** A 0.1-format registry.json of n users, written as the old engine writes it (2-space JSON). */
async function writeLegacyRegistry(file: string, n: number): Promise<number> {
  const names = new Set<string>();
  while (names.size < n) names.add(randomUsername());
  const t0 = Date.parse('2026-01-01T00:00:00Z');
  const users = [...names].map((username, i) => ({
    username,
    fingerprint: fakeFingerprint(),
    publicKey: fakeArmor(),
    keyExpiresAt: i % 3 === 0 ? null : new Date(t0 + (400 + (i % 700)) * 86400_000).toISOString(),
    createdAt: new Date(t0 + i * 1000).toISOString(),
    disabled: i % 50 === 0,
    catchAll: i % 4 !== 0,
    aliases: i % 5 === 0 ? Array.from({ length: 1 + (i % 3) }, (_, k) => `a${k}-${randomBytes(3).toString('hex')}`) : [],
    blocked: i % 20 === 0 ? ['spam'] : [],
    notices: [],
  }));
  const text = JSON.stringify({ version: 1, users }, null, 2) + '\n';
  await writeFile(file, text, { mode: 0o600 });
  return Buffer.byteLength(text);
}

async function child(job: ChildJob): Promise<ChildResult> {
  const r = await run(process.execPath, ['--expose-gc', '--import', 'tsx', CHILD, JSON.stringify(job)], { cwd: ROOT, timeoutMs: 3_600_000 });
  const last = r.stdout.trim().split('\n').pop() ?? '';
  if (r.code !== 0 || !last.startsWith('{')) {
    throw new Error(`registry child (${job.layout}, ${job.mode}, ${job.dataDir}) failed (exit ${r.code ?? r.signal}):\n${r.stderr.trim() || r.stdout.trim()}`);
  }
  return JSON.parse(last) as ChildResult;
}

interface SizeResult {
  users: number;
  fileBytes: number;
  old: ChildResult;
  migrate: ChildResult;
  fresh: ChildResult;
  server?: { rssKb: number; rssSettledKb: number; hwmKb: number; startS: number };
  /** The PostgreSQL engine: the SQL import of the same users, then the measurements. */
  pg?: { migrate: ChildResult; fresh: ChildResult };
}

type Layout = 'old' | 'new' | 'postgres';

const ms = (x: number | undefined, d = 1) => (x === undefined ? '-' : `${fmt(x, x < 10 ? Math.max(d, 2) : d)} ms`);
const us = (x: number) => `${fmt(x * 1000, 2)} µs`;
const pp = (p: { p50: number; p99: number } | undefined) => (p ? `${ms(p.p50)} / ${ms(p.p99)}` : '-');
const secs = (msv: number) => (msv < 1000 ? `${fmt(msv)} ms` : `${fmt(msv / 1000, 2)} s`);
const LABEL: Record<OpKind, string> = { add: 'signup (add)', addAlias: 'alias (addAlias)', setKey: 'key update (setKey)', setDisabled: 'disable (setDisabled)' };

async function main(): Promise<void> {
  const started = new Date();
  const warning = buildWarning();
  if (warning) log(`WARNING: ${warning}`);
  const loadBefore = await loadAverage();
  log(`kzymy registry benchmark: ${SIZES.map((n) => fmt(n)).join(', ')} users; load average ${loadBefore}`);
  const base = await mkdtemp(path.join(tmpdir(), 'kzymy-bench-reg-'));
  cleanups.push(() => rm(base, { recursive: true, force: true }));

  let cluster: Cluster | null = null;
  if (!opt['no-postgres']) {
    if (!postgresBin()) throw new Error('PostgreSQL is not installed (apt-get install postgresql), or run with --no-postgres');
    cluster = await startCluster({ durable: true });
    const c = cluster;
    cleanups.push(() => c.destroy());
    log('PostgreSQL: a private cluster on a unix socket, fsync on');
  }

  const results: SizeResult[] = [];
  for (const n of SIZES) {
    const dir = path.join(base, `n${n}`);
    await mkdir(dir, { recursive: true });
    cleanups.push(() => rm(dir, { recursive: true, force: true }));
    const source = path.join(dir, 'registry.json');
    let t = now();
    const fileBytes = await writeLegacyRegistry(source, n);
    log(`\n${fmt(n)} users: registry.json of ${fmt(MB(fileBytes))} MB written in ${fmt(now() - t, 1)} s`);

    const oldDir = path.join(dir, 'old');
    await mkdir(oldDir);
    await copyFile(source, path.join(oldDir, 'registry.json'));
    const k = oldOps(n);
    const old = await child({ layout: 'old', mode: 'measure', dataDir: oldDir, opsPerKind: k, burst: k, lookups: LOOKUPS });
    log(`  old: open ${secs(old.openMs)}, RSS ${fmt(MB(old.rssAfterOpen))} MB, lookup p99 ${us(old.lookup!.p99)}, ` +
      OP_KINDS.map((kind) => `${kind} p99 ${ms(old.ops![kind].p99)}`).join(', ') + `, burst of ${k}: stall ${ms(old.burst!.maxDelayMs)}`);
    await rm(oldDir, { recursive: true, force: true });

    // The new layout lives where startKzymy's config puts dataDir (base/kzymy-data).
    const newBase = path.join(dir, 'new');
    const dataDir = path.join(newBase, 'kzymy-data');
    await mkdir(dataDir, { recursive: true });
    await copyFile(source, path.join(dataDir, 'registry.json'));
    let pgDir: string | null = null;
    if (cluster) {
      pgDir = path.join(dir, 'pg');
      await mkdir(pgDir);
      await copyFile(source, path.join(pgDir, 'registry.json'));
    }
    await rm(source);
    const migrate = await child({ layout: 'new', mode: 'migrate', dataDir, opsPerKind: 0, burst: 0, lookups: 0 });
    log(`  new: migration (first open) ${secs(migrate.openMs)}`);
    const fresh = await child({ layout: 'new', mode: 'measure', dataDir, opsPerKind: NEW_OPS, burst: NEW_OPS, lookups: LOOKUPS });
    log(`  new: open ${secs(fresh.openMs)}, RSS ${fmt(MB(fresh.rssAfterOpen))} MB, lookup p99 ${us(fresh.lookup!.p99)}, ` +
      OP_KINDS.map((kind) => `${kind} p99 ${ms(fresh.ops![kind].p99)}`).join(', ') + `, burst of ${NEW_OPS}: stall ${ms(fresh.burst!.maxDelayMs)}`);
    const r: SizeResult = { users: n, fileBytes, old, migrate, fresh };
    if (cluster && pgDir) {
      const url = await cluster.createDatabase();
      const pgMigrate = await child({ layout: 'postgres', mode: 'migrate', dataDir: pgDir, url, opsPerKind: 0, burst: 0, lookups: 0 });
      log(`  postgres: schema and SQL import ${secs(pgMigrate.openMs)}`);
      const pgFresh = await child({ layout: 'postgres', mode: 'measure', dataDir: pgDir, url, opsPerKind: NEW_OPS, burst: NEW_OPS, lookups: LOOKUPS });
      log(`  postgres: open ${secs(pgFresh.openMs)}, RSS ${fmt(MB(pgFresh.rssAfterOpen))} MB, lookup p99 ${us(pgFresh.lookup!.p99)}, ` +
        OP_KINDS.map((kind) => `${kind} p99 ${ms(pgFresh.ops![kind].p99)}`).join(', ') + `, burst of ${NEW_OPS}: stall ${ms(pgFresh.burst!.maxDelayMs)}, ` +
        `seen by a second registry p50 ${ms(pgFresh.propagation!.p50)} / p99 ${ms(pgFresh.propagation!.p99)}`);
      r.pg = { migrate: pgMigrate, fresh: pgFresh };
    }

    if (n === Math.max(...SIZES)) {
      t = now();
      const kz = await startKzymy({ base: newBase, domain: 'kzymy.test', greetingDelayMs: 0, logName: 'server.log' });
      cleanups.push(() => kz.stop());
      const startS = now() - t;
      const rssKb = (await procStatusKb(kz.pid, 'VmRSS')) ?? NaN;
      await sleep(2000);
      const rssSettledKb = (await procStatusKb(kz.pid, 'VmRSS')) ?? NaN;
      const hwmKb = (await procStatusKb(kz.pid, 'VmHWM')) ?? NaN;
      await kz.stop();
      r.server = { rssKb, rssSettledKb, hwmKb, startS };
      log(`  server: listening after ${fmt(startS, 2)} s, RSS ${fmt(MB(rssKb * 1024))} MB (${fmt(MB(rssSettledKb * 1024))} MB 2 s later), VmHWM ${fmt(MB(hwmKb * 1024))} MB`);
    }
    results.push(r);
    await rm(dir, { recursive: true, force: true });
  }
  const loadAfter = await loadAverage();

  // --- targets, at 100,000 users (or the largest size run) ----------------------------
  const top = results.find((r) => r.users === TARGET_USERS) ?? results[results.length - 1]!;
  const f = top.fresh;
  const changeP99 = Math.max(...OP_KINDS.map((kind) => f.ops![kind].p99));
  const stall = Math.max(f.burst!.maxDelayMs, f.burst!.maxLateMs);
  const checks: Array<[string, string, boolean]> = [
    [`every change p99 < ${TARGETS.changeP99Ms} ms`, `worst p99 ${ms(changeP99)} (${OP_KINDS.map((kind) => `${kind} ${ms(f.ops![kind].p99)}`).join(', ')})`, changeP99 < TARGETS.changeP99Ms],
    [`RCPT lookup p99 < ${TARGETS.lookupP99Ms} ms`, us(f.lookup!.p99), f.lookup!.p99 < TARGETS.lookupP99Ms],
    [`open < ${TARGETS.openMs / 1000} s`, secs(f.openMs), f.openMs < TARGETS.openMs],
    [`server RSS < ${TARGETS.serverRssMB} MB`, top.server ? `${fmt(MB(top.server.rssKb * 1024))} MB once listening` : 'not measured', top.server ? MB(top.server.rssKb * 1024) < TARGETS.serverRssMB : false],
    [`longest stall < ${TARGETS.stallMs} ms`, `${ms(stall)} during ${f.burst!.n} changes at once`, stall < TARGETS.stallMs],
  ];

  const commit = (await run('git', ['rev-parse', '--short', 'HEAD'], { cwd: ROOT })).stdout.trim();
  const rows = (fn: (r: SizeResult, layout: Layout, c: ChildResult) => string) =>
    results.flatMap((r) => [fn(r, 'old', r.old), fn(r, 'new', r.fresh), ...(r.pg ? [fn(r, 'postgres', r.pg.fresh)] : [])]);
  const name = (layout: Layout) => ({ old: 'old: one registry.json', new: 'new: journal + snapshot', postgres: 'PostgreSQL engine' })[layout];
  const migration = (r: SizeResult, layout: Layout) => (layout === 'new' ? secs(r.migrate.openMs) : layout === 'postgres' ? `${secs(r.pg!.migrate.openMs)} (SQL import)` : '-');
  const lines = [
    SECTION,
    '',
    `Written by \`bench/registry.ts\` (\`npm run bench:registry\`); run ${started.toISOString()}, kzymy commit ${commit}, the new layout from ${results[0]!.fresh.engine === 'dist' ? 'the built `dist/`' : 'the TypeScript source through tsx'}; ${cpus().length} cores, ${fmt(totalmem() / 1024 ** 3)} GiB RAM, load average ${loadBefore} before, ${loadAfter} after; Node ${process.version}.`,
    ...(warning ? ['', `> **Warning:** ${warning}`] : []),
    '',
    'The old layout is kzymy 0.1\'s registry (kept verbatim as `bench/lib/legacy-registry.ts`): one `registry.json` rewritten whole, fsynced and renamed on every change. ' +
      'The new one is `src/registry/` (a journal of operations appended and fsynced per change, a lowdb snapshot, one file per key), opened as the server opens it (following other processes, compacting). ' +
      'Each registry starts as the same 0.1-format `registry.json` (about 1 KB of armored key a user, 40-hex fingerprints, aliases on one user in five); the new layout converts it on first open (the migration) and is then measured in a fresh process. ' +
      'Each layout and size runs in a process of its own (`node --expose-gc`, gc before each RSS reading); RSS includes the bare process with the tsx loader, given as "before open". ' +
      'The PostgreSQL engine (`registry.engine` `postgres`) runs against a private cluster on this machine (Debian\'s server, unix socket, fsync and synchronous_commit on); its users are the same registry.json\'s, imported by SQL, and it is opened as a server opens it (following other nodes with LISTEN/NOTIFY and a 1 s poll).',
    '',
    '### Open and memory',
    '',
    '| users | layout | registry.json | migration (first open) | open | RSS before open | RSS after open |',
    '|---:|---|---:|---:|---:|---:|---:|',
    ...rows((r, layout, c) =>
      `| ${fmt(r.users)} | ${name(layout)} | ${fmt(MB(r.fileBytes), 1)} MB | ${migration(r, layout)} | ${secs(c.openMs)} | ${fmt(MB(c.rssBefore))} MB | ${fmt(MB(c.rssAfterOpen))} MB |`,
    ),
    '',
    '### RCPT lookups and changes',
    '',
    `RCPT lookup: \`registry.get\` of ${fmt(LOOKUPS)} names, half existing users and half unknown, each timed on its own. Changes: one after another, each awaited until durable; p50 / p99. ` +
      `Signup adds a new key; alias adds a new local part; key update stores a new armor and expiry under the same fingerprint; disable disables a user not yet changed.`,
    '',
    `| users | layout | changes per kind | RCPT lookup p50 / p99 | ${OP_KINDS.map((kind) => `${LABEL[kind]} p50 / p99`).join(' | ')} |`,
    `|---:|---|---:|---:|${OP_KINDS.map(() => '---:').join('|')}|`,
    ...rows((r, layout, c) =>
      `| ${fmt(r.users)} | ${name(layout)} | ${c.ops!.add.n} | ${us(c.lookup!.p50)} / ${us(c.lookup!.p99)} | ${OP_KINDS.map((kind) => pp(c.ops![kind])).join(' | ')} |`,
    ),
    '',
    '### A burst of changes',
    '',
    'All changes issued at once (the four kinds in turn), as when many users act at the same moment. The longest stall is how long the event loop (which also serves SMTP) could not run: ' +
      '`perf_hooks.monitorEventLoopDelay` (1 ms resolution) maximum, and the worst lateness of a 1 ms interval timer.',
    '',
    '| users | layout | changes at once | all durable after | longest stall (event-loop delay max) | worst 1 ms timer lateness |',
    '|---:|---|---:|---:|---:|---:|',
    ...rows((r, layout, c) =>
      `| ${fmt(r.users)} | ${name(layout)} | ${c.burst!.n} | ${secs(c.burst!.totalMs)} | ${ms(c.burst!.maxDelayMs)} | ${ms(c.burst!.maxLateMs)} |`,
    ),
    '',
  ];
  if (results.some((r) => r.pg?.fresh.propagation)) {
    lines.push(
      '### PostgreSQL: how soon another node sees a change',
      '',
      'A second registry opened on the same database, as a second node opens it; for each of the signups, the time from `add` resolving (after COMMIT) on the first until `get` finds the user on the second (near 0 when the notification reached the second before the first saw its COMMIT answer).',
      '',
      '| users | signups | seen by the other node p50 / p99 | max |',
      '|---:|---:|---:|---:|',
      ...results.filter((r) => r.pg?.fresh.propagation).map((r) => {
        const p = r.pg!.fresh.propagation!;
        return `| ${fmt(r.users)} | ${p.n} | ${ms(p.p50)} / ${ms(p.p99)} | ${ms(p.max)} |`;
      }),
      '',
    );
  }
  if (top.server) {
    lines.push(
      '### The server on the converted registry',
      '',
      `\`${serverEntry().built ? 'node dist/cli/server.js start' : 'node --import tsx src/cli/server.ts start'}\` (SMTP and web on 127.0.0.1, Tor not managed) on the ${fmt(top.users)}-user registry after the runs above.`,
      '',
      '| users | start to "listening" | RSS once listening | RSS 2 s later | VmHWM |',
      '|---:|---:|---:|---:|---:|',
      `| ${fmt(top.users)} | ${fmt(top.server.startS, 2)} s | ${fmt(MB(top.server.rssKb * 1024))} MB | ${fmt(MB(top.server.rssSettledKb * 1024))} MB | ${fmt(MB(top.server.hwmKb * 1024))} MB |`,
      '',
    );
  }
  lines.push(
    `### Targets for the new layout at ${fmt(top.users)} users`,
    '',
    ...(top.users !== TARGET_USERS ? [`> The targets are set for ${fmt(TARGET_USERS)} users; this run went up to ${fmt(top.users)}.`, ''] : []),
    '| target | measured | result |',
    '|---|---|---|',
    ...checks.map(([what, got, ok]) => `| ${what} | ${got} | ${ok ? 'PASS' : '**FAIL**'} |`),
  );
  const report = lines.join('\n');
  log('\n' + report + '\n');
  for (const [what, got, ok] of checks) log(`${ok ? 'PASS' : 'FAIL'}  ${what}: ${got}`);
  if (opt.out) {
    const file = path.resolve(opt.out);
    await writeReportSection(file, SECTION, report);
    log(`wrote ${path.relative(process.cwd(), file) || file}`);
  }
}

runBench(main);
