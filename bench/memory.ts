// kzymy memory benchmark: the worst case for the SMTP server's memory that the default
// limits allow. smtp.maxClients connections (spread over loopback addresses, at most
// smtp.maxClientsPerAddress from each), each one transaction to smtp.maxRecipients users,
// each message just under limits.memoryBufferBytes (the in-memory path), every DATA phase
// started at once, against the built server (dist/cli/server.js). The server's RSS is sampled
// from /proc/PID/status while it runs; past --max-rss the server is killed and the run fails.
//
//   npm run bench:memory                    # the full worst case (several GB of Maildir files)
//   npx tsx bench/memory.ts --quick         # 20 connections x 10 recipients
//   npx tsx bench/memory.ts --help
//
// This is a benchmark, not a test: it asserts no timing; it fails when a message is lost,
// refused or unreadable, or when the server's RSS passes --max-rss.
import { mkdtemp, readdir, readFile, rm, statfs } from 'node:fs/promises';
import { randomBytes } from 'node:crypto';
import { cpus, tmpdir, totalmem } from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { loadConfig } from '../src/config/index.js';
import { gpgDecryptPgpMime } from '../test/helpers/gpg.js';
import { buildWarning, kzymyCli, ROOT, serverEntry, startKzymy, writeKzymyConfig, type KzymyInstance } from './lib/kzymy.js';
import { sendTransaction, type TransactionResult } from './lib/smtp.js';
import { makeUsers } from './lib/users.js';
import { cleanUpOnSignals, runBench, cleanups, countFiles, fmt, loadAverage, now, procComm, procStatusKb, run, writeReportSection } from './lib/util.js';

const defaults = loadConfig({ env: { PATH: '' } });

const { values: opt } = parseArgs({
  options: {
    connections: { type: 'string' },
    recipients: { type: 'string' },
    'message-bytes': { type: 'string' },
    'max-rss': { type: 'string', default: '3G' },
    quick: { type: 'boolean', default: false },
    out: { type: 'string' },
    help: { type: 'boolean', short: 'h', default: false },
  },
});

if (opt.help) {
  console.log(`usage: npx tsx bench/memory.ts [--connections N] [--recipients N] [--message-bytes N] [--max-rss SIZE] [--quick] [--out FILE]

  --connections N    simultaneous connections, one transaction each (default smtp.maxClients, ${defaults.smtp.maxClients})
  --recipients N     recipients per transaction, one registered user each (default smtp.maxRecipients, ${defaults.smtp.maxRecipients})
  --message-bytes N  size of each message (default limits.memoryBufferBytes - 4096, ${defaults.limits.memoryBufferBytes - 4096})
  --max-rss SIZE     kill the server and fail once its RSS passes SIZE (e.g. 3G, 800M; default 3G)
  --quick            20 connections x 10 recipients
  --out FILE         also write the report section into FILE (replacing an earlier one)`);
  process.exit(0);
}

function intOpt(name: string, v: string | undefined, full: number, quick: number): number {
  if (v === undefined) return opt.quick ? quick : full;
  const n = Number(v);
  if (!Number.isInteger(n) || n < 1) throw new Error(`--${name} must be a positive integer, not ${v}`);
  return n;
}
function sizeOpt(v: string): number {
  const m = /^(\d+(?:\.\d+)?)\s*([KMG]?)B?$/i.exec(v.trim());
  if (!m) throw new Error(`--max-rss must be a size such as 3G or 800M, not ${v}`);
  const mult = { '': 1024 * 1024, K: 1024, M: 1024 * 1024, G: 1024 ** 3 }[m[2]!.toUpperCase() as '' | 'K' | 'M' | 'G'];
  return Number(m[1]) * mult;
}

const CONNECTIONS = intOpt('connections', opt.connections, defaults.smtp.maxClients, 20);
const RECIPIENTS = intOpt('recipients', opt.recipients, defaults.smtp.maxRecipients, 10);
const MESSAGE_BYTES = intOpt('message-bytes', opt['message-bytes'], defaults.limits.memoryBufferBytes - 4096, defaults.limits.memoryBufferBytes - 4096);
const MAX_RSS = sizeOpt(opt['max-rss']!);
/** Temporary refusals are tried again after this pause, for at most this long in all. */
const RETRY_PAUSE_MS = 2_000;
const RETRY_FOR_S = 1_800;
const PER_ADDRESS = defaults.smtp.maxClientsPerAddress;
const DOMAIN = 'kzymy.test';
const SENDER = 'sender@bench-sender.invalid';
const SAMPLE_MS = 100;
const SECTION = '## Memory: the worst case the default limits allow';

if (CONNECTIONS > defaults.smtp.maxClients) throw new Error(`--connections is over smtp.maxClients (${defaults.smtp.maxClients}): the rest would get 421`);
if (RECIPIENTS > defaults.smtp.maxRecipients) throw new Error(`--recipients is over smtp.maxRecipients (${defaults.smtp.maxRecipients})`);

cleanUpOnSignals('stopping the server and removing temporary files');

const log = (line: string) => console.log(line);
const MB = (bytes: number) => bytes / 1e6;

/** A message of exactly `bytes` bytes: headers, then base64 lines of random data (CRLF). */
function message(bytes: number): Buffer {
  const head = Buffer.from(
    [
      `From: <${SENDER}>`,
      'To: undisclosed-recipients:;',
      'Subject: memory benchmark',
      `Message-ID: <${randomBytes(8).toString('hex')}@bench-sender.invalid>`,
      'MIME-Version: 1.0',
      'Content-Type: application/octet-stream',
      'Content-Transfer-Encoding: base64',
      '',
      '',
    ].join('\r\n'),
  );
  const bodyBytes = bytes - head.length;
  let lines = Math.floor(bodyBytes / 78);
  if (bodyBytes - lines * 78 === 1) lines--; // a last line of one byte could not end in CRLF
  const raw = randomBytes(Math.ceil(((lines + 1) * 76 * 3) / 4)).toString('base64');
  const body = Buffer.alloc(bodyBytes, 'A');
  for (let i = 0; i < lines; i++) {
    body.write(raw.slice(i * 76, i * 76 + 76), i * 78, 'latin1');
    body.write('\r\n', i * 78 + 76, 'latin1');
  }
  // The last, shorter line (A... is valid base64 padding-free text), ending in CRLF.
  body.write('\r\n', bodyBytes - 2, 'latin1');
  return Buffer.concat([head, body]);
}

interface Sampler {
  peakKb: number;
  peakAt: number;
  aborted: boolean;
  stop(): void;
}

/** Samples the server's VmRSS; kills it (SIGKILL) once it passes `maxBytes`. */
function sampleRss(pid: number, t0: number, maxBytes: number, kill: () => void): Sampler {
  const s: Sampler = { peakKb: 0, peakAt: 0, aborted: false, stop: () => clearInterval(timer) };
  let busy = false;
  const timer = setInterval(() => {
    if (busy) return;
    busy = true;
    void procStatusKb(pid, 'VmRSS').then((kb) => {
      busy = false;
      if (kb === null) return;
      if (kb > s.peakKb) {
        s.peakKb = kb;
        s.peakAt = now() - t0;
      }
      if (kb * 1024 > maxBytes && !s.aborted) {
        s.aborted = true;
        log(`  RSS ${fmt(MB(kb * 1024))} MB passed --max-rss ${fmt(MB(maxBytes))} MB: killing the server`);
        kill();
      }
    });
  }, SAMPLE_MS);
  return s;
}

async function main(): Promise<void> {
  const started = new Date();
  const warning = buildWarning();
  if (warning) log(`WARNING: ${warning}`);
  const copies = CONNECTIONS * RECIPIENTS;
  const loadBefore = await loadAverage();
  log(
    `kzymy memory benchmark: ${CONNECTIONS} connections x ${RECIPIENTS} recipients x ${fmt(MESSAGE_BYTES)} bytes ` +
      `(${fmt(copies)} copies), --max-rss ${fmt(MB(MAX_RSS))} MB, load average ${loadBefore}`,
  );

  const base = await mkdtemp(path.join(tmpdir(), 'kzymy-bench-mem-'));
  cleanups.push(() => rm(base, { recursive: true, force: true }));
  // Stored copies are about 1.36x the plaintext; refuse to start rather than fill the disk.
  const need = copies * MESSAGE_BYTES * 1.5;
  const fs = await statfs(base);
  if (fs.bavail * fs.bsize < need) {
    throw new Error(`the run stores about ${fmt(MB(need))} MB but ${base} has ${fmt(MB(fs.bavail * fs.bsize))} MB free`);
  }

  const kzOpts = { base, domain: DOMAIN, greetingDelayMs: defaults.smtp.greetingDelayMs, logName: 'kzymy.log' };
  const configFile = await writeKzymyConfig(kzOpts);
  await kzymyCli(configFile, 'init');
  const t = now();
  const made = await makeUsers(path.join(base, 'keys'), configFile, RECIPIENTS);
  cleanups.push(() => made.stop());
  log(`${RECIPIENTS} users registered (keys made and added in ${fmt(now() - t, 1)} s)`);

  const kz: KzymyInstance = await startKzymy(kzOpts);
  cleanups.push(() => kz.stop());
  const comm = await procComm(kz.pid);
  if (comm !== 'node') throw new Error(`the kzymy PID ${kz.pid} is "${comm}", not node: RSS would be wrong`);
  log(`kzymy (${serverEntry().built ? 'dist' : 'tsx'}) pid ${kz.pid} on 127.0.0.1:${kz.port}`);

  const rcpts = made.users.map((u) => `m@${u.username}.${DOMAIN}`);
  const msg = message(MESSAGE_BYTES);
  const baseRssKb = (await procStatusKb(kz.pid, 'VmRSS')) ?? NaN;

  // Every client holds its transaction open after the last RCPT until all have got there.
  let waiting = 0;
  let release!: () => void;
  const allReady = new Promise<void>((r) => (release = r));
  const arrive = () => {
    if (++waiting === CONNECTIONS) release();
  };
  let dataStarted = 0;
  const t0 = now();
  const sampler = sampleRss(kz.pid, t0, MAX_RSS, () => {
    try {
      process.kill(kz.pid, 'SIGKILL');
    } catch {
      // already gone
    }
  });
  // A sending MTA queues a temporary refusal and tries again later: each client does the same
  // (after RETRY_PAUSE_MS, until RETRY_FOR_MS have passed), so that every copy must land.
  const deferred = new Map<string, number>();
  const results: TransactionResult[] = await Promise.all(
    Array.from({ length: CONNECTIONS }, async (_, i) => {
      let arrived = false;
      const localAddress = `127.0.0.${1 + Math.floor(i / PER_ADDRESS)}`;
      let r = await sendTransaction(kz.port, SENDER, rcpts, msg, {
        localAddress,
        beforeData: async () => {
          arrived = true;
          arrive();
          await allReady;
          dataStarted ||= now();
        },
      });
      if (!arrived) arrive();
      while (!r.reply.startsWith('250') && !/^5/.test(r.reply) && now() - t0 < RETRY_FOR_S && !sampler.aborted) {
        const k = /^\d{3}(?: [245]\.\d{1,3}\.\d{1,3})?/.exec(r.reply)?.[0] ?? r.reply.slice(0, 3);
        deferred.set(k, (deferred.get(k) ?? 0) + 1);
        await new Promise((res) => setTimeout(res, RETRY_PAUSE_MS));
        r = await sendTransaction(kz.port, SENDER, rcpts, msg, { localAddress });
      }
      return r;
    }),
  );
  const done = now();
  sampler.stop();
  const hwmKb = (await procStatusKb(kz.pid, 'VmHWM')) ?? NaN;
  const endRssKb = (await procStatusKb(kz.pid, 'VmRSS')) ?? NaN;

  const ok = results.filter((r) => r.reply.startsWith('250')).length;
  const replies = new Map<string, number>();
  for (const r of results) {
    const k = /^\d{3}(?: [245]\.\d{1,3}\.\d{1,3})?/.exec(r.reply)?.[0] ?? r.reply.slice(0, 3);
    replies.set(k, (replies.get(k) ?? 0) + 1);
  }
  let stored = 0;
  let leftInTmp = 0;
  for (const u of made.users) {
    stored += await countFiles(path.join(kz.maildirRoot, u.username, 'new'));
    leftInTmp += await countFiles(path.join(kz.maildirRoot, u.username, 'tmp'));
  }
  let decrypts = false;
  if (stored > 0) {
    const dir = path.join(kz.maildirRoot, made.users[0]!.username, 'new');
    const [file] = await readdir(dir);
    if (file) {
      const plain = await gpgDecryptPgpMime(made.gnupghome, await readFile(path.join(dir, file)));
      decrypts = plain.length > msg.length && plain.subarray(plain.length - msg.length).equals(msg);
    }
  }
  await kz.stop();
  const loadAfter = await loadAverage();

  const peakMB = MB(sampler.peakKb * 1024);
  const hwmMB = MB(hwmKb * 1024);
  const lines = [
    SECTION,
    '',
    `Written by \`bench/memory.ts\` (\`npm run bench:memory\`${opt.quick ? ' --quick' : ''}); run ${started.toISOString()}, kzymy commit ${(await run('git', ['rev-parse', '--short', 'HEAD'], { cwd: ROOT })).stdout.trim()}${serverEntry().built ? ', built `dist/`' : ', TypeScript through tsx'}; ${cpus().length} cores, ${fmt(totalmem() / 1024 ** 3)} GiB RAM, load average ${loadBefore} before, ${loadAfter} after; Node ${process.version}.`,
    ...(warning ? ['', `> **Warning:** ${warning}`] : []),
    '',
    `${CONNECTIONS} connections at once (from ${Math.ceil(CONNECTIONS / PER_ADDRESS)} loopback address${CONNECTIONS > PER_ADDRESS ? 'es' : ''}, at most smtp.maxClientsPerAddress = ${PER_ADDRESS} from each), ` +
      `each one transaction to ${RECIPIENTS} users (one GnuPG Ed25519/Cv25519 key each), each message ${fmt(MESSAGE_BYTES)} bytes ` +
      `(${MESSAGE_BYTES <= defaults.limits.memoryBufferBytes ? 'not over' : 'over'} limits.memoryBufferBytes = ${fmt(defaults.limits.memoryBufferBytes)}, so the ${MESSAGE_BYTES <= defaults.limits.memoryBufferBytes ? 'in-memory' : 'streaming'} path). Every client sends DATA once all ${CONNECTIONS} have their recipients accepted. ` +
      `RSS is the server's VmRSS sampled every ${SAMPLE_MS} ms; VmHWM is the kernel's peak at the end.`,
    '',
    '| connections x recipients x message | copies stored | elapsed (first DATA to last reply) | peak RSS (sampled) | VmHWM | RSS before / after |',
    '|---|---:|---:|---:|---:|---:|',
    `| ${CONNECTIONS} x ${RECIPIENTS} x ${fmt(MESSAGE_BYTES / 1024)} KiB | ${fmt(stored)} of ${fmt(copies)} | ${fmt(done - (dataStarted || t0), 1)} s | **${fmt(peakMB)} MB** (${fmt(sampler.peakAt - (dataStarted ? dataStarted - t0 : 0), 1)} s after the first DATA) | ${Number.isFinite(hwmMB) ? `${fmt(hwmMB)} MB` : '-'} | ${fmt(MB(baseRssKb * 1024))} / ${Number.isFinite(endRssKb) ? fmt(MB(endRssKb * 1024)) : '-'} MB |`,
    '',
    `- Final replies: ${[...replies].map(([k, n]) => `${n} x \`${k.trim()}\``).join(', ')}; temporary refusals retried (as a sending MTA would): ${deferred.size ? [...deferred].map(([k, n]) => `${n} x \`${k.trim()}\``).join(', ') : 'none'}; Maildir \`new/\` files: ${fmt(stored)} (expected exactly ${fmt(copies)}); left in \`tmp/\`: ${leftInTmp}; one copy ${decrypts ? 'decrypts with gpg to the exact bytes sent' : '**did not decrypt to the bytes sent**'}.`,
    sampler.aborted ? `- **Aborted**: the server's RSS passed --max-rss (${fmt(MB(MAX_RSS))} MB) and it was killed.` : `- Under 500 MB RSS: **${peakMB < 500 && hwmMB < 500 ? 'met' : 'not met'}**.`,
  ];
  const report = lines.join('\n');
  log('\n' + report + '\n');
  if (opt.out) {
    const file = path.resolve(opt.out);
    await writeReportSection(file, SECTION, report);
    log(`wrote ${path.relative(process.cwd(), file) || file}`);
  }
  if (sampler.aborted) throw new Error(`the server's RSS passed ${fmt(MB(MAX_RSS))} MB`);
  if (ok !== CONNECTIONS || stored !== copies || leftInTmp !== 0 || !decrypts) {
    throw new Error(`${ok} of ${CONNECTIONS} transactions got 250, ${stored} of ${copies} copies stored, ${leftInTmp} left in tmp/, decrypts: ${decrypts}`);
  }
}

runBench(main);
