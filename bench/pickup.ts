// kzymy pickup benchmark: a backlog of waiting 10 KB messages (put there through the real
// SMTP intake by Postfix's smtp-source) fetched by kzymy-client over loopback (--no-tor)
// into a Maildir, as it is and with --decrypt; and a small raw HTTP client for reference.
// Once (mode tor), the same fetch through the private Tor network of test/e2e/tornet: a
// managed tor publishes the server's web listener as an onion service there, and
// kzymy-client connects through the network's SOCKS port.
//
//   npm run build && npx tsx bench/pickup.ts           # full run, writes docs/benchmarks.md
//   npx tsx bench/pickup.ts --quick                    # smoke run, writes nothing
//
// See bench/README.md. This is a benchmark, not a test: nothing here asserts a timing; it
// fails only when a message is lost, delivered twice, left on the server or unreadable.
import { spawn } from 'node:child_process';
import http from 'node:http';
import { mkdir, mkdtemp, readdir, readFile, rm } from 'node:fs/promises';
import { cpus, tmpdir, totalmem } from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { MaildirDestination } from '../src/client/maildir-destination.js';
import { IN_FLIGHT } from '../src/client/fetch.js';
import { loadConfig } from '../src/config/index.js';
import { silentLogger } from '../src/config/log.js';
import { startManagedTor } from '../src/tor/index.js';
import { gpgDecryptPgpMime } from '../test/helpers/gpg.js';
import { startTorNetwork } from '../test/e2e/tornet/index.js';
import { buildWarning, ROOT, startKzymy, type KzymyInstance } from './lib/kzymy.js';
import { makeUsers } from './lib/users.js';
import { cleanupAll, intOption, cleanUpOnSignals, cleanups, countFiles, fmt, loadAverage, median, now, run, runOk, sleep, writeReportSection } from './lib/util.js';

const { values: opt } = parseArgs({
  options: {
    reps: { type: 'string' },
    messages: { type: 'string' },
    quick: { type: 'boolean', default: false },
    modes: { type: 'string' },
    'cpu-prof': { type: 'string' },
    'client-cpu-prof': { type: 'string' },
    out: { type: 'string' },
    'no-write': { type: 'boolean', default: false },
    help: { type: 'boolean', short: 'h', default: false },
  },
});

if (opt.help) {
  console.log(`usage: npx tsx bench/pickup.ts [--reps N] [--messages N] [--quick] [--out FILE] [--no-write]

  --reps N       runs of each mode, each on a fresh backlog; the median is reported (default 3)
  --messages N   messages in each backlog (default 2000)
  --quick        defaults of 1 run, 200 messages; writes no report unless --out
  --modes LIST   only these modes, comma-separated: client,decrypt,raw1,raw8,rawbatch,disk,tor (default all;
                 tor runs once, through a private Tor network on 127.0.0.1)
  --cpu-prof DIR run the server under --cpu-prof, writing its profile into DIR
  --client-cpu-prof DIR  the same for each kzymy-client run
  --out FILE     where to write the Markdown section (default docs/benchmarks.md)
  --no-write     print the report only`);
  process.exit(0);
}

const intOpt = (v: string | undefined, full: number, quick: number): number => intOption(v, full, quick, Boolean(opt.quick));
const REPS = intOpt(opt.reps, 3, 1);
const N = intOpt(opt.messages, 2000, 200);
const OUT = opt['no-write'] || (opt.quick && !opt.out) ? null : path.resolve(opt.out ?? path.join(ROOT, 'docs', 'benchmarks.md'));
const MODES = (opt.modes ?? 'client,decrypt,raw1,raw8,rawbatch,disk,tor').split(',');
for (const m of MODES) if (!['client', 'decrypt', 'raw1', 'raw8', 'rawbatch', 'disk', 'tor'].includes(m)) throw new Error(`unknown mode: ${m}`);
const MSG_BYTES = 10240;
const DOMAIN = 'kzymy.test';
const SENDER = 'sender@bench-sender.invalid';
const SMTP_SOURCE = '/usr/sbin/smtp-source';
const CLIENT_CLI = path.join(ROOT, 'dist', 'cli', 'client.js');
const RUN_TIMEOUT_MS = 600_000;
const MiB = 1024 * 1024;
const SECTION = '## Pickup: a backlog fetched by kzymy-client';

cleanUpOnSignals('stopping the server and removing temporary files');

const log = (line: string): void => console.log(line);

interface Setup {
  base: string;
  kz: KzymyInstance;
  webPort: number;
  username: string;
  fingerprint: string;
  gnupghome: string;
}

/** The web port from the server's `"evt":"listening"` log line. */
async function webPortOf(kz: KzymyInstance): Promise<number> {
  for (const line of (await readFile(kz.logFile, 'utf8')).split('\n')) {
    if (!line.startsWith('{')) continue;
    try {
      const j = JSON.parse(line) as { evt?: string; web?: { port: number } };
      if (j.evt === 'listening' && j.web) return j.web.port;
    } catch {
      // a partial line
    }
  }
  throw new Error('kzymy-server logged no web port');
}

function serverNew(s: Setup): string {
  return path.join(s.kz.maildirRoot, s.username, 'new');
}

async function serverWaiting(s: Setup): Promise<number> {
  return (await countFiles(serverNew(s))) + (await countFiles(path.join(s.kz.maildirRoot, s.username, 'cur')));
}

/** Puts N messages into the user's Maildir through the SMTP intake; returns the bytes stored. */
async function fillBacklog(s: Setup): Promise<number> {
  if ((await serverWaiting(s)) !== 0) throw new Error('the server Maildir is not empty before a fill');
  const args = ['-l', String(MSG_BYTES), '-s', '20', '-d', '-m', String(N), '-f', SENDER, '-t', `bench@${s.username}.${DOMAIN}`, '-M', 'bench-client.invalid', `127.0.0.1:${s.kz.port}`];
  const r = await run(SMTP_SOURCE, args, { timeoutMs: RUN_TIMEOUT_MS });
  if (r.code !== 0) throw new Error(`smtp-source failed (exit ${r.code ?? r.signal}): ${r.stderr.trim()}`);
  const stored = await countFiles(serverNew(s));
  if (stored !== N) throw new Error(`smtp-source got ${N} replies but the server Maildir holds ${stored} files`);
  let bytes = 0;
  for (const name of await readdir(serverNew(s))) bytes += Number(/,S=(\d+)/.exec(name)?.[1] ?? 0);
  await runOk('sync', []);
  await sleep(300);
  return bytes;
}

interface Measured {
  seconds: number;
  bytes: number;
}

/** Checks a run delivered exactly N files into DEST, nothing in tmp/, the server empty. */
async function checkRun(s: Setup, dest: string, decrypted: boolean): Promise<void> {
  const names = await readdir(path.join(dest, 'new'));
  if (names.length !== N) throw new Error(`${dest}/new holds ${names.length} files, not ${N}`);
  const tmp = await readdir(path.join(dest, 'tmp'));
  if (tmp.length !== 0) throw new Error(`${dest}/tmp holds ${tmp.length} entries after the run`);
  const left = await serverWaiting(s);
  if (left !== 0) throw new Error(`${left} messages are still on the server after the run`);
  const one = await readFile(path.join(dest, 'new', names[Math.floor(names.length / 2)]!));
  const plain = decrypted ? one : await gpgDecryptPgpMime(s.gnupghome, one);
  const text = plain.toString('latin1');
  if (/BEGIN PGP MESSAGE/.test(text) || !text.includes(SENDER)) throw new Error(`a delivered message of ${dest} does not read as the message sent`);
}

const clientFlags = opt['client-cpu-prof'] ? ['--cpu-prof', '--cpu-prof-dir', path.resolve(opt['client-cpu-prof'])] : [];

/** kzymy-client fetch into a fresh Maildir; the whole command timed (node start and login included). */
async function clientFetch(s: Setup, profile: string, dest: string, extra: string[], env: NodeJS.ProcessEnv = {}): Promise<number> {
  const args = ['--config', profile, 'fetch', '--maildir', dest, ...extra, '--quiet'];
  const t0 = now();
  const r = await new Promise<{ code: number | null; stderr: string }>((resolve, reject) => {
    const child = spawn(process.execPath, [...clientFlags, CLIENT_CLI, ...args], { cwd: ROOT, env: { ...process.env, ...env }, stdio: ['ignore', 'ignore', 'pipe'] });
    let stderr = '';
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    const timer = setTimeout(() => child.kill('SIGKILL'), RUN_TIMEOUT_MS);
    child.on('error', reject);
    child.on('close', (code) => {
      clearTimeout(timer);
      resolve({ code, stderr });
    });
  });
  const seconds = now() - t0;
  if (r.code !== 0) throw new Error(`kzymy-client ${args.join(' ')} exited ${r.code}: ${r.stderr.trim()}`);
  return seconds;
}

/** Messages a batch request of the raw client names (as kzymy-client asks). */
const RAW_BATCH = 32;

/**
 * A bare keep-alive HTTP client: list, then GET + DELETE of each id, `inFlight` at a
 * time; `batched`: POST /messages/download and /messages/acknowledge of RAW_BATCH ids.
 */
async function rawFetch(s: Setup, token: string, inFlight: number, batched = false): Promise<number> {
  const agent = new http.Agent({ keepAlive: true, maxSockets: inFlight });
  const call = (method: string, p: string, json?: unknown): Promise<{ status: number; body: Buffer }> =>
    new Promise((resolve, reject) => {
      const headers: Record<string, string> = { Authorization: `Bearer ${token}` };
      if (json !== undefined) headers['Content-Type'] = 'application/json';
      const req = http.request({ host: '127.0.0.1', port: s.webPort, method, path: p, agent, headers }, (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, body: Buffer.concat(chunks) }));
        res.on('error', reject);
      });
      req.on('error', reject);
      req.end(json === undefined ? undefined : JSON.stringify(json));
    });
  const t0 = now();
  try {
    const list = await call('GET', '/api/v1/messages');
    if (list.status !== 200) throw new Error(`GET /api/v1/messages answered ${list.status}`);
    const ids = (JSON.parse(list.body.toString('utf8')) as { messages: Array<{ id: string; size: number }> }).messages;
    let next = 0;
    const batchWorker = async (): Promise<void> => {
      while (next < ids.length) {
        const part = ids.slice(next, next + RAW_BATCH);
        next += part.length;
        const got = await call('POST', '/api/v1/messages/download', { ids: part.map((m) => m.id) });
        // Each frame is "ID SIZE\n" and the bytes: the answer's length tells it all came.
        const expected = part.reduce((n, m) => n + Buffer.byteLength(`${m.id} ${m.size}\n`) + m.size, 0);
        if (got.status !== 200 || got.body.length !== expected) throw new Error(`POST /messages/download: ${got.status}, ${got.body.length} bytes of ${expected}`);
        const ack = await call('POST', '/api/v1/messages/acknowledge', { ids: part.map((m) => m.id) });
        if (ack.status !== 200) throw new Error(`POST /messages/acknowledge: ${ack.status}`);
      }
    };
    const worker = async (): Promise<void> => {
      if (batched) return batchWorker();
      while (next < ids.length) {
        const m = ids[next++]!;
        const p = `/api/v1/messages/${encodeURIComponent(m.id)}`;
        const got = await call('GET', p);
        if (got.status !== 200 || got.body.length !== m.size) throw new Error(`GET ${m.id}: ${got.status}, ${got.body.length} bytes of ${m.size}`);
        const del = await call('DELETE', p);
        if (del.status !== 200) throw new Error(`DELETE ${m.id}: ${del.status}`);
      }
    };
    await Promise.all(Array.from({ length: inFlight }, worker));
    if (ids.length !== N) throw new Error(`the list named ${ids.length} messages, not ${N}`);
  } finally {
    agent.destroy();
  }
  const seconds = now() - t0;
  const left = await serverWaiting(s);
  if (left !== 0) throw new Error(`${left} messages are still on the server after the raw run`);
  return seconds;
}

/**
 * The floor the disk sets: N files of `size` bytes written into DEST by kzymy-client's own
 * Maildir writer (tmp/, fsync, rename into new/, the shared fsync of new/), IN_FLIGHT at
 * once as a fetch does, with no network, no delivery record and no server.
 */
async function diskFloor(dest: string, size: number): Promise<number> {
  const maildir = new MaildirDestination(dest);
  await maildir.prepare();
  const t0 = now();
  let next = 0;
  await Promise.all(
    Array.from({ length: IN_FLIGHT }, async () => {
      while (next++ < N) await maildir.deliver(Buffer.alloc(size, 0x41));
    }),
  );
  const seconds = now() - t0;
  const made = await countFiles(path.join(dest, 'new'));
  if (made !== N) throw new Error(`the disk run made ${made} files, not ${N}`);
  return seconds;
}

interface Row {
  mode?: string;
  label: string;
  runs: Measured[];
}

/** A table row; `start`: the fixed cost of a client run (seconds), or null for the raw client. */
function rowLine(r: Row, start: number | null): string {
  const rates = r.runs.map((m) => N / m.seconds);
  const mibs = r.runs.map((m) => m.bytes / MiB / m.seconds);
  const secs = r.runs.map((m) => m.seconds);
  const past = start === null || Number.isNaN(start) ? '-' : fmt(median(r.runs.map((m) => N / Math.max(0.001, m.seconds - start))));
  return `| ${r.label} | ${fmt(median(rates))} | ${past} | ${fmt(median(mibs), 1)} | ${fmt(median(secs), 2)} | ${rates.map((x) => fmt(x)).join(', ')} |`;
}

async function main(): Promise<void> {
  const warning = buildWarning();
  if (warning) log(`warning: ${warning}`);
  const base = await mkdtemp(path.join(tmpdir(), 'kzymy-bench-pickup-'));
  cleanups.push(() => rm(base, { recursive: true, force: true }));
  log(`pickup bench: ${N} messages of ${MSG_BYTES} bytes a backlog, ${REPS} run(s) a mode; working in ${base}`);
  // Mode tor: the server follows the hostname file that the bench's managed tor writes.
  const hostnameFile = path.join(base, 'onion', 'hostname');
  const kz = await startKzymy({
    base,
    domain: DOMAIN,
    greetingDelayMs: 0,
    logName: 'kzymy.log',
    nodeFlags: opt['cpu-prof'] ? ['--cpu-prof', '--cpu-prof-dir', path.resolve(opt['cpu-prof'])] : [],
    smtp: { maxClientsPerAddress: 100 },
    config: { tor: { manage: false, hostnameFile } },
  });
  cleanups.push(() => kz.stop());
  const webPort = await webPortOf(kz);
  const users = await makeUsers(path.join(base, 'users'), kz.configFile, 1);
  cleanups.push(() => users.stop());
  const s: Setup = { base, kz, webPort, username: users.users[0]!.username, fingerprint: users.users[0]!.fingerprint, gnupghome: users.gnupghome };
  const profile = path.join(base, 'client', 'client.json');
  await mkdir(path.dirname(profile), { recursive: true, mode: 0o700 });
  // The profile (and a login token kept beside it) for every client run; nothing delivered yet.
  const setup = await run(process.execPath, [CLIENT_CLI, '--config', profile, '--server', `http://127.0.0.1:${webPort}`, '--username', s.username, '--key', s.fingerprint, '--gnupghome', s.gnupghome, '--no-tor', 'status'], { cwd: ROOT });
  if (setup.code !== 0) throw new Error(`kzymy-client status failed: ${setup.stderr.trim()}`);
  const token = (JSON.parse(await readFile(path.join(path.dirname(profile), `client.${s.username}.token`), 'utf8')) as { token: string }).token;

  const rows: Row[] = [
    { mode: 'client', label: 'kzymy-client fetch --no-tor into a Maildir', runs: [] },
    { mode: 'decrypt', label: 'kzymy-client fetch --no-tor --decrypt into a Maildir', runs: [] },
    { mode: 'raw1', label: 'raw HTTP (list, GET, DELETE), 1 request in flight', runs: [] },
    { mode: 'raw8', label: 'raw HTTP (list, GET, DELETE), 8 in flight', runs: [] },
    { mode: 'disk', label: `no network: kzymy-client's Maildir writer alone, ${IN_FLIGHT} files at once`, runs: [] },
    { mode: 'rawbatch', label: `raw HTTP (list, batches of ${RAW_BATCH}: download, acknowledge), 8 in flight`, runs: [] },
  ].filter((r) => MODES.includes(r.mode));
  const torRow: Row | null = MODES.includes('tor') ? { mode: 'tor', label: 'kzymy-client fetch through the private Tor network, into a Maildir (once)', runs: [] } : null;
  // What a client run costs with nothing to fetch (node start, login, the empty list):
  // the part of each client run that does not grow with the backlog.
  const empty: number[] = [];
  if (MODES.includes('client')) {
    for (let i = 0; i < 3; i++) {
      const dest = path.join(base, `empty-${i}`);
      empty.push(await clientFetch(s, profile, dest, ['--no-decrypt']));
      await rm(dest, { recursive: true, force: true });
    }
    log(`  kzymy-client fetch with nothing waiting: ${fmt(median(empty), 2)} s (${empty.map((x) => fmt(x, 2)).join(', ')})`);
  }
  let dests = 0;
  let lastBytes = N * 15_800; // about what a backlog of 10 KB messages holds as stored
  for (let rep = 0; rep < REPS; rep++) {
    for (const row of rows) {
      // The disk row fetches nothing: it writes as many bytes as the last backlog held.
      const bytes = row.mode === 'disk' ? lastBytes : await fillBacklog(s);
      lastBytes = bytes;
      let seconds: number;
      if (row.mode === 'client' || row.mode === 'decrypt') {
        const dest = path.join(base, `dest-${dests++}`);
        const decrypt = row.mode === 'decrypt';
        seconds = await clientFetch(s, profile, dest, decrypt ? ['--decrypt'] : ['--no-decrypt']);
        await checkRun(s, dest, decrypt);
        await rm(dest, { recursive: true, force: true });
      } else if (row.mode === 'disk') {
        const dest = path.join(base, `dest-${dests++}`);
        seconds = await diskFloor(dest, Math.round(bytes / N));
        await rm(dest, { recursive: true, force: true });
      } else {
        seconds = await rawFetch(s, token, row.mode === 'raw1' ? 1 : 8, row.mode === 'rawbatch');
      }
      row.runs.push({ seconds, bytes });
      log(`  run ${rep + 1}: ${row.label}: ${fmt(N / seconds)} msg/s, ${fmt(bytes / MiB / seconds, 1)} MiB/s (${fmt(seconds, 2)} s)`);
    }
  }

  let torNote = '';
  if (torRow) {
    // A private Tor network on 127.0.0.1 (never the public one), and a managed tor that
    // publishes the server's web listener there; the server learns the onion from the file.
    const net = await startTorNetwork({ dir: path.join(base, 'tornet') });
    cleanups.push(() => net.stop());
    const torLog = path.join(base, 'bench-tor-rend.log');
    const torConfig = loadConfig({ env: { KZYMY_DATA_DIR: path.join(base, 'bench-tor'), KZYMY_WEB_PORT: String(webPort), KZYMY_TOR_MANAGE: '1', KZYMY_TOR_HOSTNAME_FILE: hostnameFile, PATH: process.env.PATH ?? '' } });
    torConfig.tor.extraConfig = net.onionServiceTorrcLines({ logFile: torLog });
    const tor = await startManagedTor({ config: torConfig, logger: silentLogger });
    cleanups.push(() => tor.stop());
    await net.waitForOnion(tor.onionAddress, { serviceLogFile: torLog, timeoutMs: 120_000 });
    await sleep(6_000); // the server reads the hostname file every 5 s
    const torProfile = path.join(base, 'client-tor', 'client.json');
    await mkdir(path.dirname(torProfile), { recursive: true, mode: 0o700 });
    const proxy = `socks5h://127.0.0.1:${net.socksPort}`;
    const up = await run(process.execPath, [CLIENT_CLI, '--config', torProfile, '--server', `http://${tor.onionAddress}`, '--username', s.username, '--key', s.fingerprint, '--gnupghome', s.gnupghome, '--proxy', proxy, 'status'], { cwd: ROOT });
    if (up.code !== 0) throw new Error(`kzymy-client status through Tor failed: ${up.stderr.trim()}`);
    const bytes = await fillBacklog(s);
    const dest = path.join(base, `dest-${dests++}`);
    const seconds = await clientFetch(s, torProfile, dest, ['--no-decrypt']);
    await checkRun(s, dest, false);
    await rm(dest, { recursive: true, force: true });
    torRow.runs.push({ seconds, bytes });
    rows.push(torRow);
    log(`  through Tor: ${fmt(N / seconds)} msg/s, ${fmt(bytes / MiB / seconds, 1)} MiB/s (${fmt(seconds, 2)} s)`);
    torNote =
      'The Tor row is one run through the private Tor network of `test/e2e/tornet` (3 authorities and 3 relays on 127.0.0.1, a client with a SOCKS port): a managed tor publishes the web listener as an onion service there, and the client fetches through the network\'s SOCKS port, every byte crossing 6 relays of one machine (3 hops each side); it shows what the onion path costs over loopback, not over the Internet.';
    await tor.stop();
    await net.stop();
  }

  const cpu = cpus()[0]?.model ?? 'unknown CPU';
  const report = [
    SECTION,
    '',
    `Measured by \`bench/pickup.ts\` (\`npm run bench:pickup\`) on ${new Date().toISOString().slice(0, 10)}: ${cpus().length} x ${cpu}, ${fmt(totalmem() / 1024 ** 3, 1)} GiB, load average before the run ${await loadAverage()}.`,
    `Each run fetches a fresh backlog of ${fmt(N)} messages of ${fmt(MSG_BYTES)} bytes (sent through kzymy's SMTP intake by smtp-source; about ${fmt((rows[0]?.runs[0]?.bytes ?? 0) / N / 1024, 1)} KiB each as stored, PGP/MIME) from kzymy-server on 127.0.0.1; ${REPS} run(s) a mode, median reported.`,
    'A client run is the whole `kzymy-client fetch` command (node start and login included) and ends with every message fsynced in the destination Maildir and deleted on the server; every run is checked (exact file count, `tmp/` empty, server Maildir empty, one message decrypted with gpg or read as decrypted).',
    'MiB/s counts the bytes stored on the server (ciphertext).',
    ...(empty.length > 0
      ? [
          `The same command with nothing waiting (node start, login, the empty list) takes ${fmt(median(empty), 2)} s (median of ${empty.length}); "msg/s past start" divides by the run's seconds less that.`,
        ]
      : []),
    ...(torNote ? [torNote] : []),
    '',
    '| mode | msg/s | msg/s past start | MiB/s | seconds | runs (msg/s) |',
    '| --- | ---: | ---: | ---: | ---: | --- |',
    ...rows.map((r) => rowLine(r, r.mode === 'client' || r.mode === 'decrypt' || r.mode === 'tor' ? median(empty) : null)),
    '',
  ].join('\n');
  log('');
  log(report);
  if (OUT) {
    await writeReportSection(OUT, SECTION, report);
    log(`written to ${OUT}`);
  }
}

main()
  .then(() => cleanupAll())
  .catch(async (err: unknown) => {
    console.error(`pickup bench failed: ${(err as Error).message}`);
    await cleanupAll();
    process.exit(1);
  });
