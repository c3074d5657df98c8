// kzymy intake benchmark: kzymy-server (every message encrypted to the user's OpenPGP key,
// fsynced into a Maildir) against a private Postfix delivering plain text to a Maildir on the
// same disk, and against the same Postfix handing each message to `gpg --encrypt` (the
// gpg-lacre / zeyple design), side by side in one run, all driven by Postfix's smtp-source on
// 127.0.0.1.
//
//   npm run build && npx tsx bench/intake.ts            # full run, writes docs/benchmarks.md
//   npx tsx bench/intake.ts --quick                     # smoke run, writes nothing
//   npx tsx bench/intake.ts --profile                   # adds CPU profiles of kzymy
//
// See bench/README.md. This is a benchmark, not a test: nothing here asserts a timing; it
// fails only when a message is lost, refused or unreadable.
import { chmod, mkdtemp, readdir, readFile, rm, unlink, writeFile } from 'node:fs/promises';
import { randomBytes } from 'node:crypto';
import { tmpdir, cpus, totalmem } from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { makeGpgKey, gpgDecrypt, gpgDecryptPgpMime } from '../test/helpers/gpg.js';
import { MODES, type Mode } from './lib/modes.js';
import { startPostfix } from './lib/postfix.js';
import { setupGpgFilter } from './lib/gpgfilter.js';
import { buildWarning, kzymyCli, ROOT, serverEntry, startKzymy, writeKzymyConfig, type KzymyInstance, type KzymyOptions } from './lib/kzymy.js';
import { sendMessage } from './lib/smtp.js';
import { summariseProfile, type ProfileSummary } from './lib/profile.js';
import {
  runBench,
  cleanUpOnSignals,
  cleanups,
  countFiles,
  fmt,
  intOption,
  loadAverage,
  median,
  now,
  procComm,
  resetPeakRss,
  run,
  runOk,
  sleep,
  treeMemory,
  waitUntil,
  writeReportSection,
  type TreeMemory,
} from './lib/util.js';

const { values: opt } = parseArgs({
  options: {
    reps: { type: 'string' },
    messages: { type: 'string' },
    'big-mib': { type: 'string' },
    workers: { type: 'string' },
    'gpg-concurrency': { type: 'string' },
    'gpg-messages': { type: 'string' },
    'no-one-worker': { type: 'boolean', default: false },
    'no-pause': { type: 'boolean', default: false },
    quick: { type: 'boolean', default: false },
    profile: { type: 'boolean', default: false },
    out: { type: 'string' },
    'no-write': { type: 'boolean', default: false },
    help: { type: 'boolean', short: 'h', default: false },
  },
});

if (opt.help) {
  console.log(`usage: npx tsx bench/intake.ts [--reps N] [--messages N] [--big-mib N] [--workers N|auto] [--gpg-concurrency N] [--gpg-messages N]
                           [--no-one-worker] [--no-pause] [--quick] [--profile] [--out FILE] [--no-write]

  --reps N             runs of each mode; the median is reported (default 3)
  --messages N         messages per run (default 2000)
  --big-mib N          size of the large message in MiB (default 50)
  --workers N|auto     KZYMY_SMTP_WORKERS for kzymy (default: unset, the server's own default)
  --gpg-concurrency N  deliveries at once of the gpg-per-message filter (default 4: 2 per core)
  --gpg-messages N     messages per run to the gpg filter (default 500; quick 100)
  --no-one-worker      skip the comparison run of kzymy with 1 worker
  --no-pause           skip the runs (one a mode) with smtp-server's 100 ms greeting pause
  --quick              defaults of 1 run, 300 messages, 8 MiB; writes no report unless --out
  --profile            also run kzymy under --cpu-prof and summarise where its time goes
  --out FILE           where to write the Markdown report (default docs/benchmarks.md)
  --no-write           print the report only`);
  process.exit(0);
}

const intOpt = (v: string | undefined, full: number, quick: number): number => intOption(v, full, quick, Boolean(opt.quick));
const REPS = intOpt(opt.reps, 3, 1);
const N = intOpt(opt.messages, 2000, 300);
const BIG_MIB = intOpt(opt['big-mib'], 50, 8);
const GPG_CONCURRENCY = intOpt(opt['gpg-concurrency'], 4, 4);
/** The gpg filter delivers an order of magnitude slower: fewer messages a run keep the run short. */
const N_GPG = Math.min(N, intOpt(opt['gpg-messages'], 500, 100));
if (opt.workers !== undefined && opt.workers !== 'auto' && !(Number.isInteger(Number(opt.workers)) && Number(opt.workers) >= 1)) {
  throw new Error(`--workers takes a positive integer or "auto", not ${opt.workers}`);
}
const WORKERS = opt.workers;
const OUT = opt['no-write'] || (opt.quick && !opt.out) ? null : path.resolve(opt.out ?? path.join(ROOT, 'docs', 'benchmarks.md'));
const MSG_BYTES = 10240;
const DOMAIN = 'kzymy.test';
const GPG_DOMAIN = 'gpg-filter.test';
const SENDER = 'sender@bench-sender.invalid';
const SMTP_SOURCE = '/usr/sbin/smtp-source';
const RUN_TIMEOUT_MS = 300_000;
const CIPHER_MIB = 256;
/** The targets the release must meet. */
const TARGET_VS_POSTFIX = 2.0;
const TARGET_CIPHER_SHARE = 0.4;
const TARGET_RSS_MB = 150;

const PAUSE_MODES = MODES.filter((m) => !m.perConnection);

// --- cleanup, whatever happens -------------------------------------------------------------

cleanUpOnSignals('stopping servers and removing temporary files');

function log(line: string): void {
  console.log(line);
}

// --- one measured run ----------------------------------------------------------------------

type Who = 'postfix' | 'gpgfilter' | 'kzymy' | 'kzymy1' | 'kzymy100';
const NAMES: Record<Who, string> = {
  postfix: 'postfix',
  gpgfilter: 'gpg filter',
  kzymy: 'kzymy',
  kzymy1: 'kzymy, 1 worker',
  kzymy100: 'kzymy, 100 ms pause',
};

interface Target {
  who: Who;
  port: number;
  rcpt: string;
  maildirNew: string;
  /** kzymy answers 250 only once stored: acceptance is delivery. */
  storesBefore250: boolean;
  /** Messages a measured run. */
  messages: number;
  /** Throws unless one stored file is the message sent (decrypted where it is encrypted). */
  check(file: Buffer): Promise<void>;
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

function smtpSource(t: Target, mode: Mode, count: number): ReturnType<typeof run> {
  const args = ['-l', String(MSG_BYTES), '-s', String(mode.sessions), '-m', String(count), '-f', SENDER, '-t', t.rcpt, '-M', 'bench-client.invalid'];
  if (mode.perConnection) args.push('-d');
  args.push(`127.0.0.1:${t.port}`);
  return run(SMTP_SOURCE, args, { timeoutMs: RUN_TIMEOUT_MS });
}

/** Exactly `n` files in new/, none left in tmp/, and one of them (picked at random) checked. */
async function verify(t: Target, n: number): Promise<void> {
  const files = await readdir(t.maildirNew);
  if (files.length !== n) throw new Error(`${NAMES[t.who]}: expected exactly ${n} files in the Maildir, found ${files.length}`);
  const tmp = await countFiles(path.join(path.dirname(t.maildirNew), 'tmp'));
  if (tmp !== 0) throw new Error(`${NAMES[t.who]}: ${tmp} files left in Maildir/tmp`);
  const file = files[Math.floor(Math.random() * files.length)]!;
  await t.check(await readFile(path.join(t.maildirNew, file)));
}

async function measure(t: Target, mode: Mode): Promise<RunResult> {
  await emptyDir(t.maildirNew);
  await runOk('sync', []);
  await sleep(300);
  const n = t.messages;
  const t0 = now();
  const source = smtpSource(t, mode, n);
  const deliveredAt = waitUntil(async () => (await countFiles(t.maildirNew)) >= n, `${n} files in ${NAMES[t.who]}'s Maildir`, RUN_TIMEOUT_MS, 20);
  deliveredAt.catch(() => undefined);
  const r = await source;
  const acceptSeconds = r.seconds;
  if (r.code !== 0) throw new Error(`smtp-source against ${NAMES[t.who]} failed (exit ${r.code ?? r.signal}): ${r.stderr.trim()}`);
  if (r.stderr.trim()) log(`    smtp-source said: ${r.stderr.trim().split('\n').slice(0, 3).join(' | ')}`);
  if (t.storesBefore250) {
    await verify(t, n);
    return { acceptRate: n / acceptSeconds, deliverRate: n / acceptSeconds };
  }
  const deliverSeconds = (await deliveredAt) - t0;
  // The last file may still be on its way from tmp/ (a rename is atomic; a count is not).
  await waitUntil(async () => (await countFiles(path.join(path.dirname(t.maildirNew), 'tmp'))) === 0, `${NAMES[t.who]}'s Maildir/tmp to empty`, 10_000, 20).catch(() => undefined);
  await verify(t, n);
  return { acceptRate: n / acceptSeconds, deliverRate: n / deliverSeconds };
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
  /** kzymy: VmHWM over its processes during the message (reset just before it). */
  peak?: TreeMemory;
  /** kzymy: VmRSS over its processes just before the message. */
  base?: TreeMemory;
  intact: boolean;
}

/** The stored copy decrypts to the message sent (the stored file ends with it). */
function endsWith(plain: Buffer, msg: Buffer): boolean {
  return plain.length >= msg.length && plain.subarray(plain.length - msg.length).equals(msg);
}

async function bigToKzymy(kz: KzymyInstance, mdNew: string, rcpt: string, msg: Buffer, gnupghome: string): Promise<BigResult> {
  await emptyDir(mdNew);
  await runOk('sync', []);
  // Reset the peak RSS of every kzymy process to its current value: VmHWM covers this message only.
  const pids = await kz.pids();
  await resetPeakRss(pids);
  const base = await treeMemory(pids, 'VmRSS');
  const r = await sendMessage(kz.port, SENDER, rcpt, msg);
  const peak = await treeMemory(pids, 'VmHWM');
  const files = await readdir(mdNew);
  let intact = false;
  if (r.reply.startsWith('250') && files.length === 1) {
    intact = endsWith(await gpgDecryptPgpMime(gnupghome, await readFile(path.join(mdNew, files[0]!))), msg);
  }
  return { mibPerSec: msg.length / 1024 / 1024 / r.dataSeconds, reply: r.reply, peak, base, intact };
}

/** To Postfix (plain, or through the gpg filter when `gnupghome` is given): accepted and delivered. */
async function bigToPostfix(t: Target, msg: Buffer, gnupghome?: string): Promise<BigResult> {
  await emptyDir(t.maildirNew);
  await runOk('sync', []);
  const t0 = now();
  const r = await sendMessage(t.port, SENDER, t.rcpt, msg);
  const acceptedAt = now();
  const deliveredAt = await waitUntil(async () => (await countFiles(t.maildirNew)) >= 1, `the large message in ${NAMES[t.who]}'s Maildir`, RUN_TIMEOUT_MS, 20);
  const sending = acceptedAt - t0 - r.dataSeconds; // greeting .. DATA, excluded from both figures
  const [file] = await readdir(t.maildirNew);
  const stored = await readFile(path.join(t.maildirNew, file!));
  // Postfix stores lines with LF (and pipe(8) hands them on so), and its cleanup(8) adds the
  // headers the message lacks (Date:) after the others: the body is compared.
  const text = msg.toString('latin1');
  const body = Buffer.from(text.slice(text.indexOf('\r\n\r\n') + 4).replace(/\r\n/g, '\n'), 'latin1');
  const intact = endsWith(gnupghome ? await gpgDecrypt(gnupghome, stored) : stored, body);
  return {
    mibPerSec: msg.length / 1024 / 1024 / r.dataSeconds,
    deliverMibPerSec: msg.length / 1024 / 1024 / (deliveredAt - t0 - sending),
    reply: r.reply,
    intact,
  };
}

/** Node's AES-256-CFB + SHA-1 over CIPHER_MIB MiB in a child process, 3 times: [median, runs]. */
async function cipherRate(): Promise<{ median: number; runs: number[] }> {
  const runs: number[] = [];
  for (let i = 0; i < 3; i++) {
    const r = await runOk(process.execPath, ['--import', 'tsx', path.join(ROOT, 'bench', 'lib', 'cipher-rate.ts'), String(CIPHER_MIB)], { cwd: ROOT, timeoutMs: 120_000 });
    runs.push((JSON.parse(r.stdout.trim().split('\n').pop()!) as { mibPerSec: number }).mibPerSec);
  }
  return { median: median(runs), runs };
}

// --- profiles --------------------------------------------------------------------------------

interface Profile {
  label: string;
  /** What was measured under the profiler, e.g. "412 msg/s". */
  rate: string;
  summary: ProfileSummary;
  /** How many node processes wrote a profile (the server and its workers). */
  processes: number;
}

/** The busiest of the .cpuprofile files in `dir` (with workers: the worker that did the most). */
async function busiestProfile(dir: string, window: [number, number]): Promise<{ summary: ProfileSummary; processes: number }> {
  const files = (await readdir(dir)).filter((f) => f.endsWith('.cpuprofile'));
  if (!files.length) throw new Error('node wrote no .cpuprofile');
  let best: ProfileSummary | null = null;
  for (const f of files) {
    const s = await summariseProfile(path.join(dir, f), ROOT, 15, window);
    if (!best || s.totalMs - s.idleMs > best.totalMs - best.idleMs) best = s;
  }
  return { summary: best!, processes: files.length };
}

function logProfile(p: Profile): void {
  const s = p.summary;
  log(`  profile ${p.label}: ${p.rate} under the profiler; busy ${fmt((s.totalMs - s.idleMs) / 1000, 1)} s of ${fmt(s.totalMs / 1000, 1)} s (busiest of ${p.processes} process(es))`);
  for (const [c, ms, share] of s.components.slice(0, 8)) log(`    ${fmt(share * 100, 1).padStart(5)} %  ${fmt(ms).padStart(6)} ms  ${c}`);
  log('    by owner:');
  for (const [c, ms, share] of s.owners.slice(0, 6)) log(`    ${fmt(share * 100, 1).padStart(5)} %  ${fmt(ms).padStart(6)} ms  ${c}`);
}

// --- main ------------------------------------------------------------------------------------

type Rates = Record<string, { accept: number[]; deliver: number[] }>;

async function main(): Promise<void> {
  const started = new Date();
  const t0 = now();
  const warning = buildWarning();
  if (warning) log(`WARNING: ${warning}`);
  const loadBefore = await loadAverage();
  log(`kzymy intake benchmark: ${N} messages of ${MSG_BYTES} bytes, ${REPS} run(s) per mode, load average ${loadBefore}`);

  const base = await mkdtemp(path.join(tmpdir(), 'kzymy-bench-'));
  cleanups.push(() => rm(base, { recursive: true, force: true }));
  // Postfix's virtual(8) and the gpg filter run as nobody: the folder must be traversable.
  await chmod(base, 0o755);

  // One user with a real GnuPG key (ed25519 primary, cv25519 encryption subkey).
  const key = await makeGpgKey('ed25519');
  const keyFile = path.join(base, 'user.asc');
  await writeFile(keyFile, key.publicArmored);
  // smtp-source connects from one address, up to 100 sessions at once. Postfix exempts
  // $mynetworks (127.0.0.1 among them) from its per-client connection limit; kzymy's
  // smtp.maxClientsPerAddress (20 by default) is raised to match.
  const kzOpts: KzymyOptions = { base, domain: DOMAIN, greetingDelayMs: 0, logName: 'kzymy.log', smtp: { maxClientsPerAddress: 1000 }, ...(WORKERS !== undefined ? { workers: WORKERS } : {}) };
  /** A kzymy data folder of its own under `dir` with the user registered: [options, username]. */
  const prepareKzymy = async (o: KzymyOptions): Promise<string> => {
    const configFile = await writeKzymyConfig(o);
    await kzymyCli(configFile, 'init');
    const user = (await kzymyCli(configFile, 'users', 'add', '--key', keyFile)).trim().split('\n').pop()!.trim();
    if (!/^[a-z0-9-]+$/.test(user)) throw new Error(`users add printed no username: ${JSON.stringify(user)}`);
    return user;
  };
  const user = await prepareKzymy(kzOpts);
  const rcptDomain = `${user}.${DOMAIN}`;
  const rcpt = `bench@${rcptDomain}`;

  // The gpg-per-message filter: Postfix's pipe(8), as nobody, to a Maildir of its own.
  const filter = await setupGpgFilter(path.join(base, 'gpg-filter'), key.publicArmored, key.fingerprint);
  cleanups.push(() => filter.stop());
  const pf = await startPostfix(base, rcptDomain, { domain: GPG_DOMAIN, argv: filter.argv, concurrency: GPG_CONCURRENCY });
  cleanups.push(() => pf.stop());
  log(`postfix ${pf.version} on 127.0.0.1:${pf.port} (virtual(8) for ${rcptDomain}, the gpg filter for ${GPG_DOMAIN}, ${GPG_CONCURRENCY} at once)`);

  let kz = await startKzymy(kzOpts);
  cleanups.push(() => kz.stop());
  const comm = await procComm(kz.pid);
  if (comm !== 'node') throw new Error(`the kzymy PID ${kz.pid} is "${comm}", not node: RSS would be wrong`);
  const workers = kz.workers;
  log(`kzymy (${serverEntry().built ? 'dist' : 'tsx'}) pid ${kz.pid} on 127.0.0.1:${kz.port}, user ${user}, ${workers} SMTP worker(s) (${(await kz.pids()).length} node process(es))`);

  const checkKzymy = (rc: string) => async (stored: Buffer) => {
    if (stored.includes(Buffer.from(SENDER))) throw new Error('a kzymy Maildir file holds the sender address in clear');
    const plain = (await gpgDecryptPgpMime(key.gnupghome, stored)).toString('latin1');
    if (!plain.includes(`Delivered-To: ${rc}`) || !plain.includes(`Return-Path: <${SENDER}>`) || plain.length < MSG_BYTES) {
      throw new Error('a kzymy Maildir file did not decrypt to the message sent');
    }
  };
  const kzTarget = (k: KzymyInstance, who: Who, u: string): Target => ({
    who,
    port: k.port,
    rcpt: `bench@${u}.${DOMAIN}`,
    maildirNew: path.join(k.maildirRoot, u, 'new'),
    storesBefore250: true,
    messages: N,
    check: checkKzymy(`bench@${u}.${DOMAIN}`),
  });
  const pfTarget: Target = {
    who: 'postfix',
    port: pf.port,
    rcpt,
    maildirNew: pf.maildirNew,
    storesBefore250: false,
    messages: N,
    check: async (stored) => {
      if (!stored.includes(Buffer.from(`Delivered-To: ${rcpt}`)) || stored.length < MSG_BYTES) throw new Error('a Postfix Maildir file is not the message sent');
    },
  };
  const gpgRcpt = `bench@${GPG_DOMAIN}`;
  const gpgTarget: Target = {
    who: 'gpgfilter',
    port: pf.port,
    rcpt: gpgRcpt,
    maildirNew: filter.maildirNew,
    storesBefore250: false,
    messages: N_GPG,
    check: async (stored) => {
      if (stored.includes(Buffer.from(SENDER)) || !stored.includes(Buffer.from('-----BEGIN PGP MESSAGE-----'))) throw new Error('a gpg filter Maildir file is not an armored OpenPGP message');
      const plain = (await gpgDecrypt(key.gnupghome, stored)).toString('latin1');
      if (!plain.includes(`Delivered-To: ${gpgRcpt}`) || !plain.includes(`Return-Path: <${SENDER}>`) || plain.length < MSG_BYTES) {
        throw new Error('a gpg filter Maildir file did not decrypt to the message sent');
      }
    },
  };

  // kzymy with one worker, for what the other cores buy: only when the server uses more.
  let kz1: KzymyInstance | null = null;
  let kz1Target: Target | null = null;
  const oneWorker = workers > 1 && !opt['no-one-worker'];
  if (oneWorker) {
    const o1: KzymyOptions = { ...kzOpts, base: path.join(base, 'one-worker'), logName: 'kzymy-1.log', workers: '1' };
    const u1 = await prepareKzymy(o1);
    kz1 = await startKzymy(o1);
    const k1 = kz1;
    cleanups.push(() => k1.stop());
    kz1Target = kzTarget(kz1, 'kzymy1', u1);
    log(`kzymy with 1 worker: pid ${kz1.pid} on 127.0.0.1:${kz1.port}, the log says ${kz1.workers} worker(s)`);
  } else log(workers > 1 ? 'kzymy with 1 worker: skipped (--no-one-worker)' : 'kzymy with 1 worker: not run (the server itself runs 1)');

  const targets: Target[] = [pfTarget, gpgTarget, kzTarget(kz, 'kzymy', user), ...(kz1Target ? [kz1Target] : [])];

  // Sanity: one message each way, checked (the encrypted copies decrypted with gpg).
  for (const t of targets) {
    await emptyDir(t.maildirNew);
    const r = await smtpSource(t, MODES[0]!, 1);
    if (r.code !== 0) throw new Error(`sanity message to ${NAMES[t.who]} failed: ${r.stderr}`);
    await waitUntil(async () => (await countFiles(t.maildirNew)) === 1, `the sanity message in ${NAMES[t.who]}'s Maildir`, 30_000);
    await sleep(100);
    await verify(t, 1);
  }
  log('sanity: one message to each, every encrypted copy decrypts with gpg to the message sent');

  // Warm-up, not measured: JIT compilation in kzymy, process pools and caches in Postfix.
  for (const t of targets) {
    for (const mode of [MODES[1]!, MODES[0]!]) {
      const n = Math.min(t.messages, t.who === 'gpgfilter' ? 100 : 500);
      await emptyDir(t.maildirNew);
      const r = await smtpSource(t, mode, n);
      if (r.code !== 0) throw new Error(`warm-up against ${NAMES[t.who]} failed: ${r.stderr}`);
      await waitUntil(async () => (await countFiles(t.maildirNew)) >= n, `the warm-up messages in ${NAMES[t.who]}'s Maildir`, RUN_TIMEOUT_MS);
    }
  }
  const tWarm = now();

  // Throughput, modes interleaved and the order of the contestants rotated from run to run.
  const rates: Record<Who, Rates> = { postfix: {}, gpgfilter: {}, kzymy: {}, kzymy1: {}, kzymy100: {} };
  const add = (who: Who, mode: Mode, r: RunResult) => {
    const slot = (rates[who][mode.id] ??= { accept: [], deliver: [] });
    slot.accept.push(r.acceptRate);
    slot.deliver.push(r.deliverRate);
  };
  for (let rep = 0; rep < REPS; rep++) {
    for (const mode of MODES) {
      const order = [...targets.slice(rep % targets.length), ...targets.slice(0, rep % targets.length)];
      for (const t of order) {
        const r = await measure(t, mode);
        add(t.who, mode, r);
        log(
          `  run ${rep + 1}/${REPS} ${mode.id.padEnd(5)} ${NAMES[t.who].padEnd(16)} accepted ${fmt(r.acceptRate).padStart(6)} msg/s` +
            (t.storesBefore250 ? ' (stored, encrypted)' : `, delivered ${fmt(r.deliverRate).padStart(6)} msg/s`),
        );
      }
    }
  }
  const tRuns = now();
  const kzPids = await kz.pids();
  const throughputHwm = await treeMemory(kzPids, 'VmHWM');
  log(`  kzymy peak RSS since its start: ${fmt(throughputHwm.maxMB)} MB the largest process, ${fmt(throughputHwm.sumMB)} MB all ${kzPids.length}`);
  if (kz1) await kz1.stop();

  // The large message: kzymy after the 10 KB runs, Postfix, the gpg filter; then the cipher alone.
  const big = bigMessage(BIG_MIB, rcpt);
  const kzBig = await bigToKzymy(kz, path.join(kz.maildirRoot, user, 'new'), rcpt, big, key.gnupghome);
  log(`  ${BIG_MIB} MiB to kzymy: ${fmt(kzBig.mibPerSec, 1)} MiB/s, peak RSS ${fmt(kzBig.peak!.maxMB)} MB largest process / ${fmt(kzBig.peak!.sumMB)} MB all (before ${fmt(kzBig.base!.maxMB)} / ${fmt(kzBig.base!.sumMB)} MB), reply ${kzBig.reply.split('\n').pop()}, decrypts intact: ${kzBig.intact}`);
  const pfBig = await bigToPostfix(pfTarget, big);
  log(`  ${BIG_MIB} MiB to postfix: accepted ${fmt(pfBig.mibPerSec, 1)} MiB/s, delivered ${fmt(pfBig.deliverMibPerSec!, 1)} MiB/s, reply ${pfBig.reply.split('\n').pop()}, intact: ${pfBig.intact}`);
  const gpgBig = await bigToPostfix(gpgTarget, big, key.gnupghome);
  log(`  ${BIG_MIB} MiB to the gpg filter: accepted ${fmt(gpgBig.mibPerSec, 1)} MiB/s, delivered ${fmt(gpgBig.deliverMibPerSec!, 1)} MiB/s, reply ${gpgBig.reply.split('\n').pop()}, decrypts intact: ${gpgBig.intact}`);
  const cipher = await cipherRate();
  log(`  Node AES-256-CFB + SHA-1, ${CIPHER_MIB} MiB in 64 KiB chunks: ${cipher.runs.map((x) => fmt(x, 1)).join(', ')} MiB/s`);

  // A freshly started server takes the large message too; then smtp-server's 100 ms greeting
  // pause, one message a connection (the pause is before 220, outside the large message's timing).
  await kz.stop();
  kz = await startKzymy({ ...kzOpts, greetingDelayMs: 100, logName: 'kzymy-pause.log' });
  cleanups.push(() => kz.stop());
  const kzBigFresh = await bigToKzymy(kz, path.join(kz.maildirRoot, user, 'new'), rcpt, big, key.gnupghome);
  log(`  ${BIG_MIB} MiB to a fresh kzymy: ${fmt(kzBigFresh.mibPerSec, 1)} MiB/s, peak RSS ${fmt(kzBigFresh.peak!.maxMB)} MB largest process / ${fmt(kzBigFresh.peak!.sumMB)} MB all (before ${fmt(kzBigFresh.base!.maxMB)} / ${fmt(kzBigFresh.base!.sumMB)} MB), decrypts intact: ${kzBigFresh.intact}`);
  // One run each: these rows show a cap (sessions / 0.1 s), not a target.
  if (!opt['no-pause']) {
    for (const mode of PAUSE_MODES) {
      const r = await measure(kzTarget(kz, 'kzymy100', user), mode);
      add('kzymy100', mode, r);
      log(`  ${mode.id.padEnd(5)} kzymy, 100 ms greeting pause: ${fmt(r.acceptRate).padStart(6)} msg/s`);
    }
  }
  await kz.stop();
  await pf.stop();
  const tMeasured = now();

  // Optional: where kzymy's time goes (separate runs; profiling slows it down). Node 20 refuses
  // --cpu-prof in NODE_OPTIONS: the flags go to the server's node, and child_process.fork and
  // cluster workers inherit its execArgv; each process writes its profile when it exits.
  const profiles: Profile[] = [];
  if (opt.profile) {
    const profiled = async (id: string, what: (k: KzymyInstance) => Promise<string>, label: string) => {
      const profDir = path.join(base, `cpu-prof-${id}`);
      kz = await startKzymy({ ...kzOpts, logName: `kzymy-prof-${id}.log`, nodeFlags: ['--cpu-prof', '--cpu-prof-dir', profDir] });
      cleanups.push(() => kz.stop());
      const from = now();
      const rate = await what(kz);
      const to = now();
      await kz.stop();
      // Only the measured work: the server's start and stop are left out.
      const { summary, processes } = await busiestProfile(profDir, [from, to]);
      const p: Profile = { label, rate, summary, processes };
      profiles.push(p);
      logProfile(p);
    };
    for (const mode of [MODES[1]!, MODES[0]!]) {
      await profiled(mode.id, async (k) => `${fmt((await measure(kzTarget(k, 'kzymy', user), mode)).acceptRate)} msg/s`, mode.label);
    }
    await profiled('big', async (k) => {
      const b = await bigToKzymy(k, path.join(k.maildirRoot, user, 'new'), rcpt, big, key.gnupghome);
      if (!b.intact) throw new Error('the large message under the profiler did not decrypt intact');
      return `${fmt(b.mibPerSec, 1)} MiB/s`;
    }, `The ${BIG_MIB} MiB message, on a fresh server`);
  }

  const loadAfter = await loadAverage();
  const seconds = { total: now() - t0, setup: tWarm - t0, runs: tRuns - tWarm, rest: tMeasured - tRuns, profiles: now() - tMeasured };
  log(`intake benchmark took ${fmt(seconds.total / 60, 1)} min (setup and warm-up ${fmt(seconds.setup)} s, 10 KB runs ${fmt(seconds.runs)} s, large message and pause runs ${fmt(seconds.rest)} s, profiles ${fmt(seconds.profiles)} s)`);

  const report = renderReport({
    started,
    loadBefore,
    loadAfter,
    postfixVersion: pf.version,
    built: serverEntry().built,
    warning,
    rates,
    workers,
    processes: kzPids.length,
    oneWorker,
    kzBig,
    kzBigFresh,
    pfBig,
    gpgBig,
    cipher,
    throughputHwm,
    profiles,
    seconds,
    commit: (await run('git', ['rev-parse', '--short', 'HEAD'], { cwd: ROOT })).stdout.trim(),
  });
  console.log('\n' + report.table);
  if (OUT) {
    let doc = '';
    try {
      doc = await readFile(OUT, 'utf8');
    } catch {
      // a new file
    }
    if (!doc.startsWith('# Benchmarks')) await writeFile(OUT, DOC_HEAD + (doc ? '\n' + doc : ''));
    await writeReportSection(OUT, '## Intake:', report.intake);
    await writeReportSection(OUT, "## Where kzymy's time goes", report.profile);
    log(`\nwrote ${path.relative(process.cwd(), OUT) || OUT}`);
  }
}

// --- the report ------------------------------------------------------------------------------

const DOC_HEAD = `# Benchmarks

Written by \`bench/intake.ts\` (see \`bench/README.md\`); do not edit by hand, run it again.
`;

interface ReportInput {
  started: Date;
  loadBefore: string;
  loadAfter: string;
  postfixVersion: string;
  built: boolean;
  warning: string | null;
  rates: Record<Who, Rates>;
  workers: number;
  processes: number;
  oneWorker: boolean;
  kzBig: BigResult;
  kzBigFresh: BigResult;
  pfBig: BigResult;
  gpgBig: BigResult;
  cipher: { median: number; runs: number[] };
  throughputHwm: TreeMemory;
  profiles: Profile[];
  seconds: { total: number; setup: number; runs: number; rest: number; profiles: number };
  commit: string;
}

function renderReport(r: ReportInput): { table: string; intake: string; profile: string } {
  const med = (who: Who, id: string, k: 'accept' | 'deliver') => median(r.rates[who][id]?.[k] ?? []);
  const list = (who: Who, id: string, k: 'accept' | 'deliver') => (r.rates[who][id]?.[k] ?? []).map((x) => fmt(x)).join(', ');
  const paired = (id: string, other: Who) => {
    const k = r.rates.kzymy[id]?.accept ?? [];
    const p = r.rates[other][id]?.deliver ?? [];
    return k.map((x, i) => `${fmt(x / p[i]!, 2)}x`).join(', ');
  };
  const ratio = (a: number, b: number) => (Number.isFinite(a / b) ? `${fmt(a / b, 2)}x` : '-');
  const pct = (a: number, b: number) => (Number.isFinite(a / b) ? `${fmt((100 * a) / b)} %` : '-');
  const kzName = `kzymy, ${r.workers} worker${r.workers === 1 ? '' : 's'}`;
  const haveOne = r.oneWorker;
  const havePause = PAUSE_MODES.some((m) => (r.rates.kzymy100[m.id]?.accept ?? []).length > 0);

  const rows: string[] = [];
  rows.push(
    `| mode | Postfix accepted | Postfix delivered to Maildir | gpg filter accepted | gpg filter delivered to Maildir | ${kzName}: stored encrypted | kzymy / Postfix delivered | kzymy / gpg filter delivered |${haveOne ? ' kzymy, 1 worker | what the other workers bought |' : ''}`,
  );
  rows.push(`|---|---:|---:|---:|---:|---:|---:|---:|${haveOne ? '---:|---:|' : ''}`);
  for (const m of MODES) {
    const pd = med('postfix', m.id, 'deliver');
    const gd = med('gpgfilter', m.id, 'deliver');
    const k = med('kzymy', m.id, 'accept');
    const k1 = med('kzymy1', m.id, 'accept');
    rows.push(
      `| ${m.label} | ${fmt(med('postfix', m.id, 'accept'))} | ${fmt(pd)} | ${fmt(med('gpgfilter', m.id, 'accept'))} | ${fmt(gd)} | **${fmt(k)}** | **${ratio(k, pd)}** | ${ratio(k, gd)} |` +
        (haveOne ? ` ${fmt(k1)} | ${ratio(k, k1)} |` : ''),
    );
  }
  const pauseRows = havePause
    ? [
        '| one message a connection | kzymy with smtp-server\'s 100 ms greeting pause (msg/s) | the cap sessions / 0.1 s | kzymy without the pause |',
        '|---|---:|---:|---:|',
        ...PAUSE_MODES.map((m) => `| ${m.label} | ${fmt(med('kzymy100', m.id, 'accept'))} | ${fmt(m.sessions / 0.1)} | ${fmt(med('kzymy', m.id, 'accept'))} |`),
      ]
    : [];
  const mem = (b: BigResult) => `**${fmt(b.peak!.maxMB)} MB** | ${fmt(b.peak!.sumMB)} MB (${b.peak!.perProcess.length} process${b.peak!.perProcess.length === 1 ? '' : 'es'})`;
  const bigRows = [
    `| ${BIG_MIB} MiB message | to the 250 reply | into the Maildir | share of the cipher's rate | peak RSS, largest process | peak RSS, all processes |`,
    '|---|---:|---:|---:|---:|---:|',
    `| Node's crypto alone: AES-256-CFB + SHA-1, ${CIPHER_MIB} MiB in 64 KiB chunks, no I/O (median of 3) | ${fmt(r.cipher.median, 1)} MiB/s | - | 100 % | - | - |`,
    `| Postfix (plain text) | ${fmt(r.pfBig.mibPerSec, 1)} MiB/s | ${fmt(r.pfBig.deliverMibPerSec!, 1)} MiB/s | - | - | - |`,
    `| gpg filter (one \`gpg --encrypt\`) | ${fmt(r.gpgBig.mibPerSec, 1)} MiB/s | ${fmt(r.gpgBig.deliverMibPerSec!, 1)} MiB/s | ${pct(r.gpgBig.deliverMibPerSec!, r.cipher.median)} | - | - |`,
    `| ${kzName}, after the 10 KB runs | **${fmt(r.kzBig.mibPerSec, 1)} MiB/s** | same (250 = stored) | **${pct(r.kzBig.mibPerSec, r.cipher.median)}** | ${mem(r.kzBig)} |`,
    `| ${kzName}, freshly started | **${fmt(r.kzBigFresh.mibPerSec, 1)} MiB/s** | same | **${pct(r.kzBigFresh.mibPerSec, r.cipher.median)}** | ${mem(r.kzBigFresh)} |`,
  ];
  const table = [...rows, '', ...(pauseRows.length ? [...pauseRows, ''] : []), ...bigRows].join('\n');

  const verdicts = MODES.map((m) => {
    const k = med('kzymy', m.id, 'accept');
    const pd = med('postfix', m.id, 'deliver');
    const pa = med('postfix', m.id, 'accept');
    const gd = med('gpgfilter', m.id, 'deliver');
    const met = k >= TARGET_VS_POSTFIX * pd;
    return {
      met,
      line: `- ${m.label}: kzymy ${fmt(k)} msg/s against Postfix ${fmt(pd)} msg/s delivered: **${ratio(k, pd)}** (target ${fmt(TARGET_VS_POSTFIX, 1)}x) — **${met ? 'met' : 'not met'}**; against Postfix's SMTP acceptance alone (${fmt(pa)} msg/s) ${ratio(k, pa)}; for comparison, against the gpg filter delivered (${fmt(gd)} msg/s) ${ratio(k, gd)}.`,
    };
  });
  const allMet = verdicts.every((v) => v.met);
  const bigOk = [r.kzBig, r.kzBigFresh].every((b) => b.reply.startsWith('250') && b.intact);
  const share = Math.min(r.kzBig.mibPerSec, r.kzBigFresh.mibPerSec) / r.cipher.median;
  const cipherMet = share >= TARGET_CIPHER_SHARE && bigOk;
  const peak = Math.max(r.kzBig.peak!.maxMB, r.kzBigFresh.peak!.maxMB);
  const rssMet = peak < TARGET_RSS_MB && bigOk;
  const processes = `${r.processes} node process${r.processes === 1 ? '' : 'es'}`;

  const intake = `## Intake: kzymy against Postfix and a gpg-per-message filter, side by side

- Run: ${r.started.toISOString()} (kzymy commit ${r.commit}${r.built ? ', built `dist/`' : ', TypeScript through tsx'}); the intake benchmark took ${fmt(r.seconds.total / 60, 1)} min (setup and warm-up ${fmt(r.seconds.setup)} s, the 10 KB runs ${fmt(r.seconds.runs)} s, the large message, the cipher and the pause runs ${fmt(r.seconds.rest)} s, profiles ${fmt(r.seconds.profiles)} s).
- Machine: ${cpus().length} cores (${cpus()[0]?.model.trim() ?? 'unknown CPU'}), ${fmt(totalmem() / 1024 ** 3)} GiB RAM; load average ${r.loadBefore} before, ${r.loadAfter} after (other work shares this machine: absolute figures are noisy, the ratios measured side by side in one run are what count).
- Node ${process.version}; Postfix ${r.postfixVersion}; client: Postfix's \`smtp-source\` on 127.0.0.1.
- kzymy: **${r.workers} SMTP worker${r.workers === 1 ? '' : 's'}** (${WORKERS === undefined ? 'the server\'s default' : `\`KZYMY_SMTP_WORKERS=${WORKERS}\``}; the count from the server's \`smtp-workers\` log line, 1 without one), ${processes} in all.${r.oneWorker ? ' The same server with `KZYMY_SMTP_WORKERS=1` ran in the same rotation, for what the other workers bought.' : ''}
- ${N} messages of ${fmt(MSG_BYTES)} bytes (\`-l ${MSG_BYTES} -m ${N}\`) per run (${N_GPG} to the gpg filter, which is an order of magnitude slower: the run would otherwise take most of the benchmark's time), after an unmeasured warm-up of each contestant; ${REPS} run${REPS === 1 ? '' : 's'} of each mode, modes interleaved and the order of the contestants rotated; the table shows the **median**. All runs (msg/s):
${MODES.map(
  (m) =>
    `  - ${m.label}: Postfix accepted ${list('postfix', m.id, 'accept')}, delivered ${list('postfix', m.id, 'deliver')}; gpg filter accepted ${list('gpgfilter', m.id, 'accept')}, delivered ${list('gpgfilter', m.id, 'deliver')}; kzymy ${list('kzymy', m.id, 'accept')}` +
    (r.oneWorker ? `; kzymy with 1 worker ${list('kzymy1', m.id, 'accept')}` : '') +
    `; kzymy / Postfix delivered, run by run: ${paired(m.id, 'postfix')}; kzymy / gpg filter delivered: ${paired(m.id, 'gpgfilter')}.`,
).join('\n')}
${havePause ? PAUSE_MODES.map((m) => `  - ${m.label}, kzymy with the 100 ms pause (one run): ${list('kzymy100', m.id, 'accept')}.`).join('\n') : ''}
${r.warning ? `\n> **Warning:** ${r.warning}\n` : ''}
${rows.join('\n')}
${pauseRows.length ? '\n' + pauseRows.join('\n') + '\n' : ''}
${bigRows.join('\n')}

### What the numbers mean

- **kzymy** answers \`250\` only after the message was encrypted to the user's OpenPGP key
  (Ed25519/Cv25519 from GnuPG) as PGP/MIME, written to \`Maildir/tmp\`, fsynced, renamed into
  \`new/\` and the directory fsynced. Its acceptance rate *is* its delivery rate. With SMTP
  workers the server process is a primary and its children take the connections.
- **Postfix** (a private instance: own \`config_directory\` and queue under a temporary folder, no
  chroot, no DNS, otherwise its defaults, logging to a file through \`postlogd\`) answers \`250\`
  once the message is in its queue (fsynced by \`cleanup(8)\`), then delivers it. "Accepted" is
  \`smtp-source\`'s run time; "delivered to Maildir" runs until all files are in \`new/\`.
  Mail readable in a Maildir is the delivered figure. Its \`virtual(8)\` writes plain text and
  encrypts nothing.
- **The gpg filter** is the design of gpg-lacre and zeyple: the same Postfix routes a second
  domain to a \`pipe(8)\` transport that runs a small \`sh\` script once per message, as \`nobody\`,
  ${GPG_CONCURRENCY} at once (\`maxproc\` and \`gpgfilter_destination_concurrency_limit\`; 2 per core:
  one can encrypt while another waits for its fsync). The script runs
  \`gpg --batch --trust-model always --armor --encrypt -r FPR\` on the message (the whole message,
  headers and all, as one ASCII-armored OpenPGP message, not PGP/MIME; gpg's default
  compression) into \`Maildir/tmp\`, fsyncs the file (\`sync FILE\`), renames it into \`new/\` and
  fsyncs \`new/\`. gpg-lacre and zeyple also start a Python interpreter per message and parse the
  MIME tree; this filter does neither, so its figures are an upper bound for the design.
- **Every message is checked:** after each run the Maildir holds exactly the ${N} files sent (${N_GPG} for the gpg filter) and \`tmp/\`
  is empty, and one file picked at random is read: kzymy's and the gpg filter's decrypted with
  \`gpg\` (its \`Delivered-To\` and \`Return-Path\` present, no sender address in clear).
- **One message a connection** pays a TCP connection, greeting, EHLO and QUIT per message; **\`-d\`**
  sends them all over ${MODES[1]!.sessions} connections. Postfix spreads over many processes;
  ${r.workers === 1 ? `kzymy is one Node process (one core of ${cpus().length})` : `kzymy over its ${r.workers} SMTP workers on ${cpus().length} cores`}.
${havePause ? `- **The greeting pause.** smtp-server waits a hard-coded 100 ms before its \`220\` (early-talker
  detection). kzymy makes it \`smtp.greetingDelayMs\` (default 0): with the pause, one message a
  connection is capped at sessions / 0.1 s whatever the server does next.
` : ''}- **The ${BIG_MIB} MiB message** (a base64 attachment) goes over one connection from a small Node client;
  MiB/s is measured from the first byte of DATA to the final reply (to Postfix also until the
  file is in the Maildir). kzymy writes a message over \`limits.memoryBufferBytes\` (1 MiB) as it
  arrives to a spool encrypted under a key held in memory only, then encrypts the copy from it
  through openpgp chunk by chunk (an SEIPD v1 packet: AES-256-CFB and a SHA-1 MDC). **The cipher's
  rate** is that work alone: a child \`node\` process streams ${CIPHER_MIB} MiB through
  \`createCipheriv('aes-256-cfb')\` and \`createHash('sha1')\` in 64 KiB chunks, no I/O (runs:
  ${r.cipher.runs.map((x) => fmt(x, 1)).join(', ')} MiB/s); kzymy's share of it says how much its SMTP parsing, spool,
  packet framing and fsyncs cost on top. "Peak RSS" is \`VmHWM\` of each kzymy node process (the
  server and each SMTP worker), reset (\`/proc/PID/clear_refs\`) just before the message; the
  largest single process is the bound, the sum is what the machine gave them all. It is measured
  on the server that has just taken all the 10 KB runs (${fmt(r.kzBig.base!.maxMB)} MB resident in its largest
  process before the message, ${fmt(r.throughputHwm.maxMB)} MB peak since its start; ${fmt(r.throughputHwm.sumMB)} MB over all its processes)
  and on a freshly started one (${fmt(r.kzBigFresh.base!.maxMB)} MB before). Replies: \`${r.kzBig.reply.split('\n').pop()}\` and
  \`${r.kzBigFresh.reply.split('\n').pop()}\`; each stored copy ${bigOk ? 'decrypts with gpg to the exact bytes sent' : '**did not decrypt to the bytes sent**'}
  (Postfix's body: ${r.pfBig.intact ? 'the exact bytes, with LF line ends' : '**not the bytes sent**'}; the gpg filter's: ${r.gpgBig.intact ? 'decrypts to the same' : '**did not decrypt to the bytes sent**'}).

### Targets

${verdicts.map((v) => v.line).join('\n')}
- 10 KB intake at ${fmt(TARGET_VS_POSTFIX, 1)}x Postfix's delivery rate or more, every message encrypted, all three modes: **${allMet ? 'met' : 'not met'}**.
- The ${BIG_MIB} MiB message at ${fmt(TARGET_CIPHER_SHARE * 100)} % of the cipher's rate or more (${fmt(r.cipher.median, 1)} MiB/s in this run), its 250 arriving: **${cipherMet ? 'met' : 'not met'}** (${fmt(r.kzBig.mibPerSec, 1)} MiB/s = ${pct(r.kzBig.mibPerSec, r.cipher.median)} after the 10 KB runs, ${fmt(r.kzBigFresh.mibPerSec, 1)} MiB/s = ${pct(r.kzBigFresh.mibPerSec, r.cipher.median)} fresh${bigOk ? '; 250, intact' : '; a reply was not 250 or a copy did not decrypt'}).
- Peak RSS under ${TARGET_RSS_MB} MB in the largest kzymy process with the ${BIG_MIB} MiB message, fresh and after the 10 KB runs: **${rssMet ? 'met' : 'not met'}** (${fmt(r.kzBig.peak!.maxMB)} MB after the 10 KB runs, ${fmt(r.kzBigFresh.peak!.maxMB)} MB fresh; summed over the processes ${fmt(r.kzBig.peak!.sumMB)} MB and ${fmt(r.kzBigFresh.peak!.sumMB)} MB).
`;

  const profile = r.profiles.length
    ? [
        "## Where kzymy's time goes",
        '',
        'Separate runs of kzymy under `node --cpu-prof` (SMTP workers inherit the flag and write a profile',
        'too; the busiest process is shown), counting only the samples taken while the measured work ran',
        '(the server\'s start and stop left out). The profiler slows it down, so these runs are not in',
        'the table. Self time, as a share of the time the process was busy (not idle):',
        '',
        ...r.profiles.flatMap(({ label, rate, summary, processes: n }) => [
          `### ${label}`,
          '',
          `${rate} under the profiler. Busy ${fmt((summary.totalMs - summary.idleMs) / 1000, 1)} s of ${fmt(summary.totalMs / 1000, 1)} s profiled${n > 1 ? ` (the busiest of ${n} processes)` : ''}.`,
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
  return { table, intake, profile };
}

runBench(main);
