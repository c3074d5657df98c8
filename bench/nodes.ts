// kzymy on several nodes: SMTP intake of one kzymy node against two nodes that share one
// PostgreSQL registry and one Maildir root, with one lowdb node and Postfix beside them in the
// same run, all on this one machine (so the figures are ratios, not capacity). Driven by
// Postfix's smtp-source: 10 KB messages to one user; with two nodes, two smtp-source processes
// at once, each with half the sessions and half the messages, one to each node (as senders
// spread over MX records of equal preference).
//
//   npm run bench:nodes
//   npx tsx bench/nodes.ts --reps 1 --messages 1000 --out docs/benchmarks.md
//   npx tsx bench/nodes.ts --help
//
// PostgreSQL runs as a private cluster (Debian's server, a temporary folder, unix socket only)
// with fsync on. A benchmark, not a test: it exits 0 whatever the figures (non-zero only when
// a measurement could not be made).
import { chmod, mkdir, mkdtemp, readdir, readFile, rm, unlink, writeFile } from 'node:fs/promises';
import { cpus, tmpdir, totalmem } from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { gpgDecryptPgpMime, makeGpgKey } from '../test/helpers/gpg.js';
import { startCluster } from '../test/helpers/postgres.js';
import { buildWarning, kzymyCli, ROOT, startKzymy, writeKzymyConfig, type KzymyInstance, type KzymyOptions } from './lib/kzymy.js';
import { MODES as ALL_MODES, type Mode } from './lib/modes.js';
import { startPostfix } from './lib/postfix.js';
import { cleanUpOnSignals, cleanups, runBench, countFiles, fmt, intOption, loadAverage, median, now, run, runOk, sleep, waitUntil, writeReportSection } from './lib/util.js';

const { values: opt } = parseArgs({
  options: {
    reps: { type: 'string' },
    messages: { type: 'string' },
    out: { type: 'string' },
    help: { type: 'boolean', short: 'h', default: false },
  },
});
if (opt.help) {
  console.log(`usage: npx tsx bench/nodes.ts [--reps N] [--messages N] [--out FILE]

  --reps N       runs per mode and contestant, median reported (default 3)
  --messages N   messages a run (default 2000)
  --out FILE     also write the report section into FILE (replacing an earlier one)`);
  process.exit(0);
}

const REPS = intOption(opt.reps, 3, 3, false);
const N = intOption(opt.messages, 2000, 2000, false);
const MSG_BYTES = 10240;
const DOMAIN = 'kzymy.test';
const SENDER = 'sender@bench-sender.invalid';
const SMTP_SOURCE = '/usr/sbin/smtp-source';
const RUN_TIMEOUT_MS = 300_000;
const SECTION = '## Several nodes: one registry on PostgreSQL, one shared Maildir root';

/** The 20-session shapes of bench/intake.ts (100 sessions split over two nodes adds nothing here). */
const MODES: Mode[] = ALL_MODES.filter((m) => m.sessions === 20);

type Who = 'postfix' | 'lowdb1' | 'pg1' | 'pg2';
const NAMES: Record<Who, string> = {
  postfix: 'Postfix (virtual(8) to one Maildir)',
  lowdb1: 'kzymy, 1 node, lowdb registry',
  pg1: 'kzymy, 1 node, PostgreSQL registry',
  pg2: 'kzymy, 2 nodes, PostgreSQL registry, shared Maildir root',
};

interface Target {
  who: Who;
  /** SMTP ports: the sessions and messages are split evenly over them. */
  ports: number[];
  rcpt: string;
  maildirNew: string;
  /** kzymy answers 250 only once stored; Postfix is timed until the files are in new/. */
  storesBefore250: boolean;
  check(file: Buffer): Promise<void>;
}

cleanUpOnSignals('stopping servers and removing temporary files');
const log = (line: string) => console.log(line);

async function emptyDir(dir: string): Promise<void> {
  const names = await readdir(dir).catch(() => [] as string[]);
  for (let i = 0; i < names.length; i += 256) await Promise.all(names.slice(i, i + 256).map((n) => unlink(path.join(dir, n))));
}

function smtpSource(port: number, rcpt: string, mode: Mode, sessions: number, count: number): ReturnType<typeof run> {
  const args = ['-l', String(MSG_BYTES), '-s', String(sessions), '-m', String(count), '-f', SENDER, '-t', rcpt, '-M', 'bench-client.invalid'];
  if (mode.perConnection) args.push('-d');
  args.push(`127.0.0.1:${port}`);
  return run(SMTP_SOURCE, args, { timeoutMs: RUN_TIMEOUT_MS });
}

/** One run: messages per second, delivered (in new/, fsynced for kzymy) and checked. */
async function measure(t: Target, mode: Mode): Promise<number> {
  await emptyDir(t.maildirNew);
  await runOk('sync', []);
  await sleep(300);
  const parts = t.ports.length;
  const t0 = now();
  const delivered = waitUntil(async () => (await countFiles(t.maildirNew)) >= N, `${N} files for ${NAMES[t.who]}`, RUN_TIMEOUT_MS, 20);
  delivered.catch(() => undefined);
  const results = await Promise.all(t.ports.map((port) => smtpSource(port, t.rcpt, mode, mode.sessions / parts, N / parts)));
  for (const r of results) if (r.code !== 0) throw new Error(`smtp-source against ${NAMES[t.who]} failed (exit ${r.code ?? r.signal}): ${r.stderr.trim()}`);
  const seconds = t.storesBefore250 ? Math.max(...results.map((r) => r.seconds)) : (await delivered) - t0;
  await waitUntil(async () => (await countFiles(path.join(path.dirname(t.maildirNew), 'tmp'))) === 0, 'tmp/ to empty', 10_000, 20).catch(() => undefined);
  const files = await readdir(t.maildirNew);
  if (files.length !== N) throw new Error(`${NAMES[t.who]}: expected exactly ${N} files in new/, found ${files.length}`);
  const tmpLeft = await countFiles(path.join(path.dirname(t.maildirNew), 'tmp'));
  if (tmpLeft) throw new Error(`${NAMES[t.who]}: ${tmpLeft} files left in tmp/`);
  await t.check(await readFile(path.join(t.maildirNew, files[Math.floor(Math.random() * files.length)]!)));
  return N / seconds;
}

async function main(): Promise<void> {
  const started = new Date();
  const warning = buildWarning();
  if (warning) log(`WARNING: ${warning}`);
  const loadBefore = await loadAverage();
  log(`kzymy nodes benchmark: ${N} messages of ${MSG_BYTES} bytes, ${REPS} run(s) per mode, load average ${loadBefore}`);
  const base = await mkdtemp(path.join(tmpdir(), 'kzymy-bench-nodes-'));
  cleanups.push(() => rm(base, { recursive: true, force: true }));
  await chmod(base, 0o755); // Postfix's virtual(8) runs as nobody

  const cluster = await startCluster({ durable: true });
  cleanups.push(() => cluster.destroy());
  const url = await cluster.createDatabase();
  const pgVersion = (await cluster.sql<{ v: string }>('postgres', "SELECT current_setting('server_version') AS v"))[0]?.v ?? '?';
  log(`PostgreSQL ${pgVersion}, a private cluster on a unix socket, fsync on`);

  const key = await makeGpgKey('ed25519');
  const keyFile = path.join(base, 'user.asc');
  await writeFile(keyFile, key.publicArmored);

  // Both PostgreSQL nodes share the registry and the Maildir root; each has its own data folder.
  const shared = path.join(base, 'shared-maildirs');
  await mkdir(shared, { mode: 0o700 });
  const pgConfig = { maildirRoot: shared, registry: { engine: 'postgres', url } };
  const options = (name: string, config?: Record<string, unknown>): KzymyOptions => ({
    base: path.join(base, name),
    domain: DOMAIN,
    greetingDelayMs: 0,
    logName: 'kzymy.log',
    smtp: { maxClientsPerAddress: 1000 },
    workers: '1',
    ...(config ? { config } : {}),
  });
  const addUser = async (o: KzymyOptions): Promise<string> => {
    const file = await writeKzymyConfig(o);
    await kzymyCli(file, 'init');
    return (await kzymyCli(file, 'users', 'add', '--key', keyFile)).trim().split('\n').pop()!.trim();
  };
  const lowdbOpts = options('lowdb');
  const lowdbUser = await addUser(lowdbOpts);
  const nodeOpts = [options('node-a', pgConfig), options('node-b', pgConfig)];
  const pgUser = await addUser(nodeOpts[0]!);
  await kzymyCli(await writeKzymyConfig(nodeOpts[1]!), 'init');

  const pf = await startPostfix(base, `${pgUser}.${DOMAIN}`);
  cleanups.push(() => pf.stop());
  const lowdb = await startKzymy(lowdbOpts);
  cleanups.push(() => lowdb.stop());
  const nodes: KzymyInstance[] = [];
  for (const o of nodeOpts) {
    const k = await startKzymy(o);
    cleanups.push(() => k.stop());
    nodes.push(k);
  }
  log(`postfix ${pf.version} on ${pf.port}; kzymy lowdb on ${lowdb.port}; kzymy nodes on ${nodes.map((k) => k.port).join(', ')}`);

  const checkKzymy = (rcpt: string) => async (stored: Buffer) => {
    if (stored.includes(Buffer.from(SENDER))) throw new Error('a kzymy Maildir file holds the sender address in clear');
    const plain = (await gpgDecryptPgpMime(key.gnupghome, stored)).toString('latin1');
    if (!plain.includes(`Delivered-To: ${rcpt}`) || plain.length < MSG_BYTES) throw new Error('a kzymy Maildir file did not decrypt to the message sent');
  };
  const pgRcpt = `bench@${pgUser}.${DOMAIN}`;
  const lowdbRcpt = `bench@${lowdbUser}.${DOMAIN}`;
  const targets: Target[] = [
    {
      who: 'postfix',
      ports: [pf.port],
      rcpt: pgRcpt,
      maildirNew: pf.maildirNew,
      storesBefore250: false,
      check: async (stored) => {
        if (!stored.includes(Buffer.from(`Delivered-To: ${pgRcpt}`))) throw new Error('a Postfix Maildir file is not the message sent');
      },
    },
    { who: 'lowdb1', ports: [lowdb.port], rcpt: lowdbRcpt, maildirNew: path.join(lowdb.maildirRoot, lowdbUser, 'new'), storesBefore250: true, check: checkKzymy(lowdbRcpt) },
    { who: 'pg1', ports: [nodes[0]!.port], rcpt: pgRcpt, maildirNew: path.join(shared, pgUser, 'new'), storesBefore250: true, check: checkKzymy(pgRcpt) },
    { who: 'pg2', ports: nodes.map((k) => k.port), rcpt: pgRcpt, maildirNew: path.join(shared, pgUser, 'new'), storesBefore250: true, check: checkKzymy(pgRcpt) },
  ];

  // Warm-up: each contestant takes one short run first (JIT, the registry's first reads).
  for (const t of targets) await Promise.all(t.ports.map((p) => smtpSource(p, t.rcpt, MODES[0]!, 2, 20)));
  const rates = new Map<string, number[]>();
  for (let rep = 0; rep < REPS; rep++) {
    for (const mode of MODES) {
      // The order rotates from one rep to the next, so that no contestant always goes first.
      const order = targets.map((_, i) => targets[(i + rep) % targets.length]!);
      for (const t of order) {
        const rate = await measure(t, mode);
        const k = `${t.who}/${mode.id}`;
        rates.set(k, [...(rates.get(k) ?? []), rate]);
        log(`  ${mode.id} ${NAMES[t.who]}: ${fmt(rate)} msg/s`);
      }
    }
  }
  const loadAfter = await loadAverage();
  const rate = (who: Who, mode: Mode) => median(rates.get(`${who}/${mode.id}`) ?? []);

  const commit = (await run('git', ['rev-parse', '--short', 'HEAD'], { cwd: ROOT })).stdout.trim();
  const lines = [
    SECTION,
    '',
    `Written by \`bench/nodes.ts\` (\`npm run bench:nodes\`); run ${started.toISOString()}, kzymy commit ${commit}; ${cpus().length} cores, ${fmt(totalmem() / 1024 ** 3)} GiB RAM, load average ${loadBefore} before, ${loadAfter} after; Node ${process.version}; Postfix ${pf.version}; PostgreSQL ${pgVersion}.`,
    ...(warning ? ['', `> **Warning:** ${warning}`] : []),
    '',
    `${fmt(N)} messages of 10 KB a run to one user, by Postfix's \`smtp-source\` on 127.0.0.1; median of ${REPS} run(s), the contestants' order rotated. ` +
      'Every kzymy node has one SMTP worker; the two nodes are two kzymy-server processes on this one machine, sharing a PostgreSQL registry (a private cluster, unix socket, fsync on) and one Maildir root on the local disk; ' +
      'two `smtp-source` processes drive them at once, half the sessions and half the messages each. kzymy is timed to `smtp-source`\'s end (it answers `250` only once the message is fsynced); Postfix until the last file is in its Maildir. ' +
      'After every run: the exact file count, an empty `tmp/`, and one file picked at random checked (kzymy\'s decrypted with gpg).',
    '',
    `| contestant | ${MODES.map((m) => m.label).join(' | ')} |`,
    `|---|${MODES.map(() => '---:').join('|')}|`,
    ...targets.map((t) => `| ${NAMES[t.who]} | ${MODES.map((m) => `${fmt(rate(t.who, m))} msg/s`).join(' | ')} |`),
    '',
    `| ratio | ${MODES.map((m) => m.label).join(' | ')} |`,
    `|---|${MODES.map(() => '---:').join('|')}|`,
    `| 2 nodes / 1 node (PostgreSQL) | ${MODES.map((m) => `${fmt(rate('pg2', m) / rate('pg1', m), 2)}x`).join(' | ')} |`,
    `| 1 node: PostgreSQL / lowdb | ${MODES.map((m) => `${fmt(rate('pg1', m) / rate('lowdb1', m), 2)}x`).join(' | ')} |`,
    `| 2 nodes / Postfix | ${MODES.map((m) => `${fmt(rate('pg2', m) / rate('postfix', m), 2)}x`).join(' | ')} |`,
    '',
    'On one 2-core machine, two nodes compete for the same cores and the same disk as one node with two SMTP workers would: ' +
      'the ratio shows what running as separate nodes costs or gives on shared hardware (the registry is read from memory at RCPT, so PostgreSQL adds no work per message), not what two machines would take.',
  ];
  const report = lines.join('\n');
  log('\n' + report + '\n');
  if (opt.out) {
    await writeReportSection(path.resolve(opt.out), SECTION, report);
    log(`wrote ${opt.out}`);
  }
}

runBench(main);
