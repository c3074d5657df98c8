// kzymy intake benchmark: kzymy-server (every message encrypted to the user's OpenPGP key,
// fsynced into a Maildir) against a private Postfix delivering plain text to a Maildir on the
// same disk, side by side in one run, both driven by Postfix's smtp-source on 127.0.0.1.
//
//   npm run build && npx tsx bench/intake.ts            # full run, writes docs/benchmarks.md
//   npx tsx bench/intake.ts --quick                     # smoke run, writes nothing
//   npx tsx bench/intake.ts --profile                   # adds a CPU profile of kzymy
//
// See bench/README.md. This is a benchmark, not a test: nothing here asserts a timing; it
// fails only when a message is lost, refused or unreadable.
import { mkdtemp, readdir, readFile, rm, unlink, writeFile } from 'node:fs/promises';
import { randomBytes } from 'node:crypto';
import { tmpdir, cpus, totalmem } from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { makeGpgKey, gpgDecryptPgpMime } from '../test/helpers/gpg.js';
import { startPostfix, type PostfixInstance } from './lib/postfix.js';
import { buildWarning, kzymyCli, ROOT, serverEntry, startKzymy, writeKzymyConfig, type KzymyInstance } from './lib/kzymy.js';
import { sendMessage } from './lib/smtp.js';
import { summariseProfile, type ProfileSummary } from './lib/profile.js';
import { cleanupAll, cleanUpOnSignals, cleanups, countFiles, fmt, loadAverage, median, now, procComm, procStatusKb, run, runOk, sleep, waitUntil } from './lib/util.js';

const { values: opt } = parseArgs({
  options: {
    reps: { type: 'string' },
    messages: { type: 'string' },
    'big-mib': { type: 'string' },
    quick: { type: 'boolean', default: false },
    profile: { type: 'boolean', default: false },
    out: { type: 'string' },
    'no-write': { type: 'boolean', default: false },
    help: { type: 'boolean', short: 'h', default: false },
  },
});

if (opt.help) {
  console.log(`usage: npx tsx bench/intake.ts [--reps N] [--messages N] [--big-mib N] [--quick] [--profile] [--out FILE] [--no-write]

  --reps N       runs of each mode; the median is reported (default 3)
  --messages N   messages per run (default 2000)
  --big-mib N    size of the large message in MiB (default 50)
  --quick        defaults of 1 run, 300 messages, 8 MiB; writes no report unless --out
  --profile      also run kzymy once under --cpu-prof and summarise where its time goes
  --out FILE     where to write the Markdown report (default docs/benchmarks.md)
  --no-write     print the report only`);
  process.exit(0);
}

/** A positive integer option, else the default (the quick one under --quick). */
function intOpt(v: string | undefined, full: number, quick: number): number {
  if (v === undefined) return opt.quick ? quick : full;
  const n = Number(v);
  if (!Number.isInteger(n) || n < 1) throw new Error(`not a positive integer: ${v}`);
  return n;
}
const REPS = intOpt(opt.reps, 3, 1);
const N = intOpt(opt.messages, 2000, 300);
const BIG_MIB = intOpt(opt['big-mib'], 50, 8);
const OUT = opt['no-write'] || (opt.quick && !opt.out) ? null : path.resolve(opt.out ?? path.join(ROOT, 'docs', 'benchmarks.md'));
const MSG_BYTES = 10240;
const DOMAIN = 'kzymy.test';
const SENDER = 'sender@bench-sender.invalid';
const SMTP_SOURCE = '/usr/sbin/smtp-source';
const RUN_TIMEOUT_MS = 180_000;

interface Mode {
  id: string;
  label: string;
  sessions: number;
  perConnection: boolean;
}
const MODES: Mode[] = [
  { id: 's20', label: '20 sessions, one message a connection', sessions: 20, perConnection: false },
  { id: 's20d', label: '20 sessions, many a connection (`-d`)', sessions: 20, perConnection: true },
  { id: 's100', label: '100 sessions, one message a connection', sessions: 100, perConnection: false },
];
const PAUSE_MODES = MODES.filter((m) => !m.perConnection);

// --- cleanup, whatever happens -------------------------------------------------------------

cleanUpOnSignals('stopping servers and removing temporary files');

function log(line: string): void {
  console.log(line);
}

// --- one measured run ----------------------------------------------------------------------

interface Target {
  name: 'postfix' | 'kzymy';
  port: number;
  maildirNew: string;
  /** kzymy answers 250 only once stored: acceptance is delivery. */
  storesBefore250: boolean;
}

/** Empties new/ between runs so every run starts from the same folder size. */
async function emptyDir(dir: string): Promise<void> {
  let names: string[];
  try {
    names = await readdir(dir);
  } catch {
    return;
  }
  for (let i = 0; i < names.length; i += 256) await Promise.all(names.slice(i, i + 256).map((n) => unlink(path.join(dir, n))));
}

interface RunResult {
  acceptRate: number;
  deliverRate: number;
}

function smtpSource(t: Target, mode: Mode, count: number, rcpt: string): ReturnType<typeof run> {
  const args = ['-l', String(MSG_BYTES), '-s', String(mode.sessions), '-m', String(count), '-f', SENDER, '-t', rcpt, '-M', 'bench-client.invalid'];
  if (mode.perConnection) args.push('-d');
  args.push(`127.0.0.1:${t.port}`);
  return run(SMTP_SOURCE, args, { timeoutMs: RUN_TIMEOUT_MS });
}

async function measure(t: Target, mode: Mode, rcpt: string): Promise<RunResult> {
  await emptyDir(t.maildirNew);
  await runOk('sync', []);
  await sleep(300);
  const t0 = now();
  const source = smtpSource(t, mode, N, rcpt);
  let delivered = 0;
  const deliveredAt = waitUntil(async () => (await countFiles(t.maildirNew)) >= N, `${N} files in ${t.name}'s Maildir`, RUN_TIMEOUT_MS, 20);
  deliveredAt.catch(() => undefined);
  const r = await source;
  const acceptSeconds = r.seconds;
  if (r.code !== 0) throw new Error(`smtp-source against ${t.name} failed (exit ${r.code ?? r.signal}): ${r.stderr.trim()}`);
  if (r.stderr.trim()) log(`    smtp-source said: ${r.stderr.trim().split('\n').slice(0, 3).join(' | ')}`);
  if (t.storesBefore250) {
    delivered = await countFiles(t.maildirNew);
    if (delivered !== N) throw new Error(`${t.name}: smtp-source got ${N} replies but the Maildir holds ${delivered} files (expected exactly ${N})`);
    const tmp = await countFiles(path.join(path.dirname(t.maildirNew), 'tmp'));
    if (tmp !== 0) throw new Error(`${t.name}: ${tmp} files left in Maildir/tmp`);
    return { acceptRate: N / acceptSeconds, deliverRate: N / acceptSeconds };
  }
  const deliverSeconds = (await deliveredAt) - t0;
  delivered = await countFiles(t.maildirNew);
  if (delivered !== N) throw new Error(`${t.name}: expected exactly ${N} files in the Maildir, found ${delivered}`);
  return { acceptRate: N / acceptSeconds, deliverRate: N / deliverSeconds };
}

// --- the large message ------------------------------------------------------------------------

/** A MIME message of about `mib` MiB: a base64 attachment of random bytes, CRLF lines. */
function bigMessage(mib: number, rcpt: string): Buffer {
  const head = Buffer.from(
    [
      `From: <${SENDER}>`,
      `To: <${rcpt}>`,
      'Subject: large attachment',
      `Message-ID: <${randomBytes(8).toString('hex')}@bench-sender.invalid>`,
      'MIME-Version: 1.0',
      'Content-Type: application/octet-stream',
      'Content-Transfer-Encoding: base64',
      '',
      '',
    ].join('\r\n'),
  );
  const lines = Math.ceil((mib * 1024 * 1024 - head.length) / 78);
  const body = Buffer.alloc(lines * 78);
  const raw = randomBytes(lines * 57).toString('base64'); // 57 bytes -> 76 characters
  for (let i = 0; i < lines; i++) {
    body.write(raw.slice(i * 76, i * 76 + 76), i * 78, 'latin1');
    body.write('\r\n', i * 78 + 76, 'latin1');
  }
  return Buffer.concat([head, body]);
}

interface BigResult {
  mibPerSec: number;
  reply: string;
  deliverMibPerSec?: number;
  peakRssMB?: number;
  baseRssMB?: number;
  intact?: boolean;
}

async function bigToKzymy(kz: KzymyInstance, user: string, rcpt: string, msg: Buffer, gnupghome: string): Promise<BigResult> {
  const mdNew = path.join(kz.maildirRoot, user, 'new');
  await emptyDir(mdNew);
  await runOk('sync', []);
  // Reset the server's peak RSS to its current value, so VmHWM covers this message only.
  await writeFile(`/proc/${kz.pid}/clear_refs`, '5');
  const baseKb = (await procStatusKb(kz.pid, 'VmRSS')) ?? NaN;
  const r = await sendMessage(kz.port, SENDER, rcpt, msg);
  const peakKb = (await procStatusKb(kz.pid, 'VmHWM')) ?? NaN;
  const files = await readdir(mdNew);
  let intact = false;
  if (r.reply.startsWith('250') && files.length === 1) {
    const plain = await gpgDecryptPgpMime(gnupghome, await readFile(path.join(mdNew, files[0]!)));
    intact = plain.length > msg.length && plain.subarray(plain.length - msg.length).equals(msg);
  }
  return {
    mibPerSec: msg.length / 1024 / 1024 / r.dataSeconds,
    reply: r.reply,
    peakRssMB: (peakKb * 1024) / 1e6,
    baseRssMB: (baseKb * 1024) / 1e6,
    intact: intact && files.length === 1,
  };
}

async function bigToPostfix(pf: PostfixInstance, rcpt: string, msg: Buffer): Promise<BigResult> {
  await emptyDir(pf.maildirNew);
  await runOk('sync', []);
  const t0 = now();
  const r = await sendMessage(pf.port, SENDER, rcpt, msg);
  const acceptedAt = now();
  const deliveredAt = await waitUntil(async () => (await countFiles(pf.maildirNew)) >= 1, 'the large message in Postfix Maildir', RUN_TIMEOUT_MS, 20);
  const sending = acceptedAt - t0 - r.dataSeconds; // greeting .. DATA, excluded from both figures
  return {
    mibPerSec: msg.length / 1024 / 1024 / r.dataSeconds,
    deliverMibPerSec: msg.length / 1024 / 1024 / (deliveredAt - t0 - sending),
    reply: r.reply,
  };
}

// --- main ------------------------------------------------------------------------------------

type Rates = Record<string, { accept: number[]; deliver: number[] }>;

async function main(): Promise<void> {
  const started = new Date();
  const warning = buildWarning();
  if (warning) log(`WARNING: ${warning}`);
  const loadBefore = await loadAverage();
  log(`kzymy intake benchmark: ${N} messages of ${MSG_BYTES} bytes, ${REPS} run(s) per mode, load average ${loadBefore}`);

  const base = await mkdtemp(path.join(tmpdir(), 'kzymy-bench-'));
  cleanups.push(() => rm(base, { recursive: true, force: true }));

  // One user with a real GnuPG key (ed25519 primary, cv25519 encryption subkey).
  const key = await makeGpgKey('ed25519');
  const keyFile = path.join(base, 'user.asc');
  await writeFile(keyFile, key.publicArmored);
  // smtp-source connects from one address, up to 100 sessions at once. Postfix exempts
  // $mynetworks (127.0.0.1 among them) from its per-client connection limit; kzymy's
  // smtp.maxClientsPerAddress (20 by default) is raised to match.
  const kzOpts = { base, domain: DOMAIN, greetingDelayMs: 0, logName: 'kzymy.log', smtp: { maxClientsPerAddress: 1000 } };
  const configFile = await writeKzymyConfig(kzOpts);
  await kzymyCli(configFile, 'init');
  const user = (await kzymyCli(configFile, 'users', 'add', '--key', keyFile)).trim().split('\n').pop()!.trim();
  if (!/^[a-z0-9-]+$/.test(user)) throw new Error(`users add printed no username: ${JSON.stringify(user)}`);
  const rcptDomain = `${user}.${DOMAIN}`;
  const rcpt = `bench@${rcptDomain}`;

  const pf = await startPostfix(base, rcptDomain);
  cleanups.push(() => pf.stop());
  log(`postfix ${pf.version} on 127.0.0.1:${pf.port}`);

  let kz = await startKzymy(kzOpts);
  cleanups.push(() => kz.stop());
  const comm = await procComm(kz.pid);
  if (comm !== 'node') throw new Error(`the kzymy PID ${kz.pid} is "${comm}", not node: RSS would be wrong`);
  log(`kzymy (${serverEntry().built ? 'dist' : 'tsx'}) pid ${kz.pid} on 127.0.0.1:${kz.port}, user ${user}`);

  const kzTarget = (k: KzymyInstance): Target => ({ name: 'kzymy', port: k.port, maildirNew: path.join(k.maildirRoot, user, 'new'), storesBefore250: true });
  const pfTarget: Target = { name: 'postfix', port: pf.port, maildirNew: pf.maildirNew, storesBefore250: false };

  // Sanity: one message each way, and the kzymy copy decrypts with gpg to what was sent.
  for (const t of [pfTarget, kzTarget(kz)]) {
    await emptyDir(t.maildirNew);
    const r = await smtpSource(t, MODES[0]!, 1, rcpt);
    if (r.code !== 0) throw new Error(`sanity message to ${t.name} failed: ${r.stderr}`);
    await waitUntil(async () => (await countFiles(t.maildirNew)) === 1, `the sanity message in ${t.name}'s Maildir`, 30_000);
  }
  {
    const t = kzTarget(kz);
    const [file] = await readdir(t.maildirNew);
    const stored = await readFile(path.join(t.maildirNew, file!));
    if (stored.includes(Buffer.from(SENDER))) throw new Error('the kzymy Maildir file holds the sender address in clear');
    const plain = (await gpgDecryptPgpMime(key.gnupghome, stored)).toString('latin1');
    if (!plain.includes(`Delivered-To: ${rcpt}`) || !plain.includes(`Return-Path: <${SENDER}>`) || plain.length < MSG_BYTES) {
      throw new Error('the kzymy Maildir file did not decrypt to the message sent');
    }
    log(`sanity: kzymy stored ${stored.length} bytes, gpg decrypted ${plain.length} bytes with Delivered-To and Return-Path`);
  }

  // Warm-up, not measured: JIT compilation in kzymy, process pools and caches in Postfix.
  for (const t of [pfTarget, kzTarget(kz)]) {
    for (const mode of [MODES[1]!, MODES[0]!]) {
      await emptyDir(t.maildirNew);
      const r = await smtpSource(t, mode, Math.min(N, 500), rcpt);
      if (r.code !== 0) throw new Error(`warm-up against ${t.name} failed: ${r.stderr}`);
      await waitUntil(async () => (await countFiles(t.maildirNew)) >= Math.min(N, 500), `the warm-up messages in ${t.name}'s Maildir`, RUN_TIMEOUT_MS);
    }
  }

  // Throughput, modes interleaved and the server order alternated from run to run.
  const rates: Record<'postfix' | 'kzymy' | 'kzymy100', Rates> = { postfix: {}, kzymy: {}, kzymy100: {} };
  const add = (who: keyof typeof rates, mode: Mode, r: RunResult) => {
    const slot = (rates[who][mode.id] ??= { accept: [], deliver: [] });
    slot.accept.push(r.acceptRate);
    slot.deliver.push(r.deliverRate);
  };
  for (let rep = 0; rep < REPS; rep++) {
    for (const mode of MODES) {
      const order = rep % 2 === 0 ? [pfTarget, kzTarget(kz)] : [kzTarget(kz), pfTarget];
      for (const t of order) {
        const r = await measure(t, mode, rcpt);
        add(t.name, mode, r);
        log(
          `  run ${rep + 1}/${REPS} ${mode.id.padEnd(5)} ${t.name.padEnd(7)} accepted ${fmt(r.acceptRate).padStart(6)} msg/s` +
            (t.storesBefore250 ? ' (stored, encrypted)' : `, delivered ${fmt(r.deliverRate).padStart(6)} msg/s`),
        );
      }
    }
  }
  const throughputHwmMB = (((await procStatusKb(kz.pid, 'VmHWM')) ?? NaN) * 1024) / 1e6;

  // The large message.
  const big = bigMessage(BIG_MIB, rcpt);
  const kzBig = await bigToKzymy(kz, user, rcpt, big, key.gnupghome);
  log(`  ${BIG_MIB} MiB to kzymy: ${fmt(kzBig.mibPerSec, 1)} MiB/s, peak RSS ${fmt(kzBig.peakRssMB!)} MB (before ${fmt(kzBig.baseRssMB!)} MB), reply ${kzBig.reply.split('\n').pop()}, decrypts intact: ${kzBig.intact}`);
  const pfBig = await bigToPostfix(pf, rcpt, big);
  log(`  ${BIG_MIB} MiB to postfix: accepted ${fmt(pfBig.mibPerSec, 1)} MiB/s, delivered ${fmt(pfBig.deliverMibPerSec!, 1)} MiB/s, reply ${pfBig.reply.split('\n').pop()}`);

  // The same server with smtp-server's 100 ms greeting pause, one message a connection.
  await kz.stop();
  kz = await startKzymy({ ...kzOpts, greetingDelayMs: 100, logName: 'kzymy-pause.log' });
  cleanups.push(() => kz.stop());
  // A freshly started server takes the large message too (the pause is before 220, outside the timing).
  const kzBigFresh = await bigToKzymy(kz, user, rcpt, big, key.gnupghome);
  log(`  ${BIG_MIB} MiB to a fresh kzymy: ${fmt(kzBigFresh.mibPerSec, 1)} MiB/s, peak RSS ${fmt(kzBigFresh.peakRssMB!)} MB (before ${fmt(kzBigFresh.baseRssMB!)} MB), decrypts intact: ${kzBigFresh.intact}`);
  for (let rep = 0; rep < REPS; rep++) {
    for (const mode of PAUSE_MODES) {
      const r = await measure(kzTarget(kz), mode, rcpt);
      add('kzymy100', mode, r);
      log(`  run ${rep + 1}/${REPS} ${mode.id.padEnd(5)} kzymy, 100 ms greeting pause: ${fmt(r.acceptRate).padStart(6)} msg/s`);
    }
  }
  await kz.stop();

  // Optional: where kzymy's time goes (a separate run; profiling slows it down).
  let profiles: Array<{ mode: Mode; summary: ProfileSummary }> = [];
  if (opt.profile) {
    profiles = [];
    for (const mode of [MODES[1]!, MODES[0]!]) {
      const profDir = path.join(base, `cpu-prof-${mode.id}`);
      kz = await startKzymy({ ...kzOpts, logName: `kzymy-prof-${mode.id}.log`, nodeFlags: ['--cpu-prof', '--cpu-prof-dir', profDir] });
      cleanups.push(() => kz.stop());
      const r = await measure(kzTarget(kz), mode, rcpt);
      await kz.stop();
      const [prof] = (await readdir(profDir)).filter((f) => f.endsWith('.cpuprofile'));
      if (!prof) throw new Error('node wrote no .cpuprofile');
      const summary = await summariseProfile(path.join(profDir, prof), ROOT);
      profiles.push({ mode, summary });
      log(`  profile ${mode.id}: ${fmt(r.acceptRate)} msg/s under the profiler; busy ${fmt((summary.totalMs - summary.idleMs) / 1000, 1)} s of ${fmt(summary.totalMs / 1000, 1)} s`);
      for (const [c, ms, share] of summary.components.slice(0, 8)) log(`    ${fmt(share * 100, 1).padStart(5)} %  ${fmt(ms).padStart(6)} ms  ${c}`);
      log('    by owner:');
      for (const [c, ms, share] of summary.owners.slice(0, 6)) log(`    ${fmt(share * 100, 1).padStart(5)} %  ${fmt(ms).padStart(6)} ms  ${c}`);
    }
  }

  await pf.stop();
  const loadAfter = await loadAverage();

  const report = renderReport({
    started,
    loadBefore,
    loadAfter,
    postfixVersion: pf.version,
    built: serverEntry().built,
    warning,
    rates,
    kzBig,
    kzBigFresh,
    pfBig,
    throughputHwmMB,
    profiles,
    commit: (await run('git', ['rev-parse', '--short', 'HEAD'], { cwd: ROOT })).stdout.trim(),
  });
  console.log('\n' + report.table);
  if (OUT) {
    await writeFile(OUT, report.doc);
    log(`\nwrote ${path.relative(process.cwd(), OUT) || OUT}`);
  }
}

// --- the report ------------------------------------------------------------------------------

interface ReportInput {
  started: Date;
  loadBefore: string;
  loadAfter: string;
  postfixVersion: string;
  built: boolean;
  warning: string | null;
  rates: Record<'postfix' | 'kzymy' | 'kzymy100', Rates>;
  kzBig: BigResult;
  kzBigFresh: BigResult;
  pfBig: BigResult;
  throughputHwmMB: number;
  profiles: Array<{ mode: Mode; summary: ProfileSummary }>;
  commit: string;
}

function renderReport(r: ReportInput): { table: string; doc: string } {
  const med = (who: keyof ReportInput['rates'], id: string, k: 'accept' | 'deliver') => median(r.rates[who][id]?.[k] ?? []);
  const runs = (who: keyof ReportInput['rates'], id: string) => (r.rates[who][id]?.accept ?? []).map((x) => fmt(x)).join(', ');
  const delivered = (who: keyof ReportInput['rates'], id: string) => (r.rates[who][id]?.deliver ?? []).map((x) => fmt(x)).join(', ');
  const paired = (id: string) => {
    const k = r.rates.kzymy[id]?.accept ?? [];
    const p = r.rates.postfix[id]?.deliver ?? [];
    return k.map((x, i) => `${fmt(x / p[i]!, 2)}x`).join(', ');
  };
  const ratio = (a: number, b: number) => (Number.isFinite(a / b) ? `${fmt(a / b, 2)}x` : '-');

  const rows: string[] = [];
  rows.push('| mode | Postfix accepted (msg/s) | Postfix delivered to Maildir (msg/s) | kzymy stored encrypted (msg/s) | kzymy / Postfix delivered | kzymy / Postfix accepted |');
  rows.push('|---|---:|---:|---:|---:|---:|');
  for (const m of MODES) {
    const pa = med('postfix', m.id, 'accept');
    const pd = med('postfix', m.id, 'deliver');
    const k = med('kzymy', m.id, 'accept');
    rows.push(`| ${m.label} | ${fmt(pa)} | ${fmt(pd)} | **${fmt(k)}** | ${ratio(k, pd)} | ${ratio(k, pa)} |`);
  }
  for (const m of PAUSE_MODES) {
    const pd = med('postfix', m.id, 'deliver');
    const pa = med('postfix', m.id, 'accept');
    const k = med('kzymy100', m.id, 'accept');
    rows.push(`| ${m.label}, kzymy with the 100 ms greeting pause | ${fmt(pa)} | ${fmt(pd)} | ${fmt(k)} | ${ratio(k, pd)} | ${ratio(k, pa)} |`);
  }
  const bigRows = [
    `| ${BIG_MIB} MiB message | to the 250 reply | into the Maildir | server peak RSS |`,
    '|---|---:|---:|---:|',
    `| Postfix | ${fmt(r.pfBig.mibPerSec, 1)} MiB/s | ${fmt(r.pfBig.deliverMibPerSec!, 1)} MiB/s | - |`,
    `| kzymy (encrypted, spooled), after the 10 KB runs | ${fmt(r.kzBig.mibPerSec, 1)} MiB/s | same (250 = stored) | **${fmt(r.kzBig.peakRssMB!)} MB** |`,
    `| kzymy, freshly started | ${fmt(r.kzBigFresh.mibPerSec, 1)} MiB/s | same | **${fmt(r.kzBigFresh.peakRssMB!)} MB** |`,
  ];
  const table = [...rows, '', ...bigRows].join('\n');

  const verdicts = MODES.map((m) => {
    const k = med('kzymy', m.id, 'accept');
    const pd = med('postfix', m.id, 'deliver');
    const pa = med('postfix', m.id, 'accept');
    const met = k >= pd;
    return {
      m,
      met,
      line: `- ${m.label}: kzymy ${fmt(k)} msg/s against Postfix ${fmt(pd)} msg/s delivered (${ratio(k, pd)}) — **${met ? 'met' : 'not met'}**; against Postfix's SMTP acceptance alone (${fmt(pa)} msg/s) ${ratio(k, pa)}.`,
    };
  });
  const allMet = verdicts.every((v) => v.met);
  const peak = Math.max(r.kzBig.peakRssMB!, r.kzBigFresh.peakRssMB!);
  const bigOk = [r.kzBig, r.kzBigFresh].every((b) => b.reply.startsWith('250') && b.intact);
  const rssMet = peak < 200 && bigOk;
  const profileText = r.profiles.length
    ? [
        '## Where kzymy\'s time goes',
        '',
        'A separate run of kzymy under `node --cpu-prof` (the profiler slows it down, so these runs are not in',
        'the table). Self time, as a share of the time the process was busy (not idle):',
        '',
        ...r.profiles.flatMap(({ mode, summary }) => [
          `### ${mode.label}`,
          '',
          `Busy ${fmt((summary.totalMs - summary.idleMs) / 1000, 1)} s of ${fmt(summary.totalMs / 1000, 1)} s profiled.`,
          '',
          '| component | self time | share |',
          '|---|---:|---:|',
          ...summary.components.slice(0, 10).map(([c, ms, s]) => `| ${c} | ${fmt(ms)} ms | ${fmt(s * 100, 1)} % |`),
          '',
          '| owner (nearest kzymy or npm frame) | time | share |',
          '|---|---:|---:|',
          ...summary.owners.slice(0, 10).map(([c, ms, s]) => `| ${c} | ${fmt(ms)} ms | ${fmt(s * 100, 1)} % |`),
          '',
          '| function | self time | share |',
          '|---|---:|---:|',
          ...summary.functions.slice(0, 12).map(([f, ms, s]) => `| \`${f.replace(/\|/g, '\\|')}\` | ${fmt(ms)} ms | ${fmt(s * 100, 1)} % |`),
          '',
        ]),
      ].join('\n')
    : '';

  const doc = `# Benchmarks

Written by \`bench/intake.ts\` (see \`bench/README.md\`); do not edit by hand, run it again.

## Intake: kzymy against Postfix, side by side

- Run: ${r.started.toISOString()} (kzymy commit ${r.commit}${r.built ? ', built `dist/`' : ', TypeScript through tsx'}).
- Machine: ${cpus().length} cores (${cpus()[0]?.model.trim() ?? 'unknown CPU'}), ${fmt(totalmem() / 1024 ** 3)} GiB RAM; load average ${r.loadBefore} before, ${r.loadAfter} after (other work shares this machine: absolute figures are noisy, the ratios measured side by side in one run are what count).
- Node ${process.version}; Postfix ${r.postfixVersion}; client: Postfix's \`smtp-source\` on 127.0.0.1.
- ${N} messages of ${fmt(MSG_BYTES)} bytes (\`-l ${MSG_BYTES} -m ${N}\`) per run, after an unmeasured warm-up of each server; ${REPS} run${REPS === 1 ? '' : 's'} of each mode, modes interleaved and the server order alternated; the table shows the **median**. All runs (msg/s):
${MODES.map((m) => `  - ${m.label}: Postfix accepted ${runs('postfix', m.id)}, delivered ${delivered('postfix', m.id)}; kzymy ${runs('kzymy', m.id)}; kzymy / Postfix delivered, run by run: ${paired(m.id)}.`).join('\n')}
${PAUSE_MODES.map((m) => `  - ${m.label}, kzymy with the 100 ms pause: ${runs('kzymy100', m.id)}.`).join('\n')}
${r.warning ? `\n> **Warning:** ${r.warning}\n` : ''}
${rows.join('\n')}

${bigRows.join('\n')}

### What the numbers mean

- **kzymy** answers \`250\` only after the message was encrypted to the user's OpenPGP key
  (Ed25519/Cv25519 from GnuPG), written to \`Maildir/tmp\`, fsynced, renamed into \`new/\` and the
  directory fsynced. Its acceptance rate *is* its delivery rate. After every run
  the benchmark checks that the Maildir holds exactly ${N} files and \`tmp/\` is empty; before the
  runs one stored message is decrypted with \`gpg\` and checked.
- **Postfix** (a private instance: own \`config_directory\` and queue under a temporary folder, no
  chroot, no DNS, \`virtual(8)\` to one plain Maildir on the same disk, otherwise its defaults,
  logging to a file) answers \`250\` once the message is in its queue (fsynced by \`cleanup(8)\`),
  then delivers it. "Accepted" is \`smtp-source\`'s run time; "delivered to Maildir" runs until
  all ${N} files are in \`new/\`. Postfix's comparable figure, mail readable in a Maildir, is the
  delivered one; it writes plain text and encrypts nothing. (Postfix's logging, through
  \`postlogd\` to a file, made no difference beyond run-to-run noise in a separate check when this
  benchmark was written; kzymy logs one JSON line per message at its default level, to a file.)
- **One message a connection** pays a TCP connection, greeting, EHLO and QUIT per message; **\`-d\`**
  sends them all over ${MODES[1]!.sessions} connections. kzymy is one Node process (one core of
  ${cpus().length}); Postfix spreads over many processes.
- **The greeting pause.** smtp-server waits a hard-coded 100 ms before its \`220\` (early-talker
  detection). kzymy makes it \`smtp.greetingDelayMs\` (default 0): with the pause, one message a
  connection is capped at sessions / 0.1 s (${fmt(PAUSE_MODES[0]!.sessions / 0.1)} msg/s at ${PAUSE_MODES[0]!.sessions} sessions),
  whatever the server does next — the rows "with the 100 ms greeting pause" show it.
- **The ${BIG_MIB} MiB message** (a base64 attachment) goes over one connection from a small Node client;
  MiB/s is measured from the first byte of DATA to the final reply. kzymy writes a message over
  \`limits.memoryBufferBytes\` (1 MiB) as it arrives to a spool encrypted under a key held in
  memory only, then encrypts the copy from it through openpgp chunk by chunk. "Peak RSS" is \`VmHWM\` of the
  kzymy node process, reset (\`/proc/PID/clear_refs\`) just before the message. It is measured twice:
  on the server that has just taken all the 10 KB runs (${fmt(r.kzBig.baseRssMB!)} MB resident before the
  message, ${fmt(r.throughputHwmMB)} MB peak during the 10 KB runs) and on a freshly started one
  (${fmt(r.kzBigFresh.baseRssMB!)} MB before). Replies: \`${r.kzBig.reply.split('\n').pop()}\` and
  \`${r.kzBigFresh.reply.split('\n').pop()}\`; each stored copy ${bigOk ? 'decrypts with gpg to the exact bytes sent' : '**did not decrypt to the bytes sent**'}.

### Targets

${verdicts.map((v) => v.line).join('\n')}
- Throughput target (kzymy at or above Postfix's delivery rate, every message encrypted), all modes: **${allMet ? 'met' : 'not met'}**.
- Peak RSS under 200 MB with a ${BIG_MIB} MiB message, and its 250 arrives: **${rssMet ? 'met' : 'not met'}** (${fmt(r.kzBig.peakRssMB!)} MB after the 10 KB runs, ${fmt(r.kzBigFresh.peakRssMB!)} MB fresh${bigOk ? '; 250, intact' : '; a reply was not 250 or a copy did not decrypt'}).
${profileText ? '\n' + profileText : ''}`;
  return { table, doc };
}

main()
  .then(() => cleanupAll())
  .catch(async (err: unknown) => {
    console.error(`\nbench failed: ${err instanceof Error ? err.message : String(err)}`);
    await cleanupAll();
    process.exitCode = 1;
  });
