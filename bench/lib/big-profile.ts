// Where the time of one large message goes: each stage of kzymy's data path measured alone,
// beside the raw cost of OpenPGP's SEIPD v1 (AES-256-CFB + SHA-1) in Node's own crypto, measured
// in the same run (the machine may be shared: compare ratios, not absolute figures).
//
//   npx tsx bench/lib/big-profile.ts [--mib 50] [--stages raw,smtp,spool,openpgp,mime,server] [--reps 3]
//
// Stages:
//   raw      AES-256-CFB + SHA-1 over the bytes in 64 KiB chunks (node:crypto)
//   smtp     smtp-server's DATA path alone (a server whose onData only drains the stream)
//   parser   the DATA parser alone (SMTPStream: dot-unstuffing, the end search), no socket:
//            smtp-server's own and kzymy's (src/smtp/data-stream.ts) in turn, on the base64
//            message and on a text message where every third line starts with a dot
//   spool    src/smtp/spool.ts: write the message, read it back once
//   openpgp  openpgp.js v6 streaming encryption, format 'binary' and 'armored'
//   mime     src/pgp/mime.ts encryptStreamToPgpMime (what a copy costs), and the 10 KB buffer path
//   server   the built dist/cli/server.js: one message over SMTP, seconds to the 250, VmHWM
//            (reset through /proc/PID/clear_refs before the message) fresh and after 2000 10 KB
import { createCipheriv, createHash, randomBytes } from 'node:crypto';
import { mkdtemp, readFile, readdir, rm, writeFile } from 'node:fs/promises';
import net from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { createMessage, encrypt, readKey, type PublicKey } from 'openpgp';
import { SMTPServer } from 'smtp-server';
import { SMTPStream } from 'smtp-server/lib/smtp-stream.js';
import { ENCRYPT_SLICE_BYTES, encryptBufferToPgpMime, encryptStreamToPgpMime, PGP_CONFIG } from '../../src/pgp/index.js';
import { feedDataStream } from '../../src/smtp/data-stream.js';
import { originalMethods } from '../../src/smtp/patches.js';
import { Spool } from '../../src/smtp/spool.js';
import { gpgDecryptPgpMime, makeGpgKey } from '../../test/helpers/gpg.js';
import { buildWarning, startKzymy } from './kzymy.js';
import { sendMessage, sendTransaction } from './smtp.js';
import { makeUsers } from './users.js';
import { now, procStatusKb } from './util.js';

const MiB = 1024 * 1024;
const { values: opt } = parseArgs({
  options: { mib: { type: 'string' }, stages: { type: 'string' }, reps: { type: 'string' }, load: { type: 'string' } },
});
const MIB = Number(opt.mib ?? 50);
const REPS = Number(opt.reps ?? 3);
const LOAD = Number(opt.load ?? 2000);
const STAGES = new Set((opt.stages ?? 'raw,smtp,parser,spool,openpgp,mime,server').split(','));

/** A MIME message of about `mib` MiB: a base64 attachment of random bytes, CRLF lines. */
function bigMessage(mib: number): Buffer {
  const head = Buffer.from('From: <a@bench.invalid>\r\nTo: <b@bench.invalid>\r\nSubject: big\r\nMIME-Version: 1.0\r\nContent-Type: application/octet-stream\r\nContent-Transfer-Encoding: base64\r\n\r\n');
  const lines = Math.ceil((mib * MiB - head.length) / 78);
  const raw = randomBytes(lines * 57).toString('base64');
  const body = Buffer.alloc(lines * 78);
  for (let i = 0; i < lines; i++) {
    body.write(raw.slice(i * 76, i * 76 + 76), i * 78, 'latin1');
    body.write('\r\n', i * 78 + 76, 'latin1');
  }
  return Buffer.concat([head, body]);
}

function* chunks(b: Buffer, size = 64 * 1024): Generator<Buffer> {
  for (let o = 0; o < b.length; o += size) yield b.subarray(o, Math.min(b.length, o + size));
}

const rate = (bytes: number, s: number) => bytes / MiB / s;

/** CPU seconds (user + system) this process has used. */
function cpuNow(): number {
  const u = process.cpuUsage();
  return (u.user + u.system) / 1e6;
}

/** CPU seconds (user + system, all threads) process `pid` has used, from /proc/PID/stat. */
async function cpuOne(pid: number): Promise<number> {
  const stat = await readFile(`/proc/${pid}/stat`, 'utf8');
  const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return (Number(f[11]) + Number(f[12])) / 100; // utime, stime in clock ticks (USER_HZ 100)
}

/** CPU seconds of process `pid` and its living children (the SMTP workers, gpg), from /proc. */
async function cpuOf(pid: number): Promise<number> {
  let total = await cpuOne(pid);
  for (const task of await readdir(`/proc/${pid}/task`)) {
    const children = (await readFile(`/proc/${pid}/task/${task}/children`, 'utf8').catch(() => '')).trim();
    for (const c of children ? children.split(' ') : []) total += await cpuOf(Number(c)).catch(() => 0);
  }
  return total;
}

/**
 * Runs `fn` REPS times, each right after a raw cipher run over `msg`, and prints the best rate
 * and the median ratio stage / raw, by wall time and by CPU time: on a shared machine the wall
 * figures swing with others' load, CPU time much less. `bytes`: what fn handles.
 */
async function stage(name: string, msg: Buffer, bytes: number, fn: () => Promise<number>): Promise<void> {
  const wall: number[] = [];
  const cpu: number[] = [];
  let bestRate = 0;
  let bestRaw = 0;
  for (let i = 0; i < REPS; i++) {
    let c0 = cpuNow();
    const raw = rate(msg.length, rawCipher(msg));
    const rawCpu = rate(msg.length, cpuNow() - c0);
    c0 = cpuNow();
    const r = rate(bytes, await fn());
    const rCpu = rate(bytes, cpuNow() - c0);
    wall.push(r / raw);
    cpu.push(rCpu / rawCpu);
    bestRate = Math.max(bestRate, r);
    bestRaw = Math.max(bestRaw, raw);
  }
  const median = (xs: number[]) => xs.sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
  console.log(
    `${name.padEnd(30)} ${bestRate.toFixed(1).padStart(7)} MiB/s; of raw: ${(100 * median(wall)).toFixed(0).padStart(4)}% by wall, ${(100 * median(cpu)).toFixed(0).padStart(4)}% by CPU (medians; raw best ${bestRaw.toFixed(0)} MiB/s)`,
  );
}

function rawCipher(msg: Buffer): number {
  const t0 = now();
  const c = createCipheriv('aes-256-cfb', randomBytes(32), Buffer.alloc(16));
  const h = createHash('sha1');
  for (const ch of chunks(msg)) {
    h.update(ch);
    c.update(ch);
  }
  c.final();
  h.digest();
  return now() - t0;
}

async function smtpOnly(msg: Buffer): Promise<number> {
  const server = new SMTPServer({
    authOptional: true,
    disabledCommands: ['STARTTLS', 'AUTH'],
    logger: false,
    size: 128 * MiB,
    onData(stream, _s, cb) {
      stream.on('data', () => undefined);
      stream.on('end', () => cb());
    },
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const port = (server.server.address() as net.AddressInfo).port;
  try {
    const r = await sendMessage(port, 'a@bench.invalid', 'b@bench.invalid', msg);
    if (!r.reply.startsWith('250')) throw new Error(r.reply);
    return r.dataSeconds;
  } finally {
    await new Promise<void>((r) => server.close(() => r()));
  }
}

/** A text message of about `mib` MiB, CRLF lines, every third line starting with a dot (sent stuffed). */
function dottedMessage(mib: number): { wire: Buffer; plain: Buffer } {
  const lines: string[] = [];
  for (let n = 0, i = 0; n < mib * MiB; i++) {
    const l = (i % 3 === 0 ? '.' : '') + 'Lorem ipsum dolor sit amet, consectetur adipiscing elit. Sed do eiusmod.';
    lines.push(l);
    n += l.length + 2;
  }
  const plain = Buffer.from(lines.join('\r\n') + '\r\n', 'latin1');
  const wire = Buffer.from(lines.map((l) => (l.startsWith('.') ? '.' + l : l)).join('\r\n') + '\r\n', 'latin1');
  return { wire, plain };
}

type Feed = (chunk: Buffer, done: () => void) => void;
const FEEDS: Record<string, Feed> = {
  original: originalMethods()['SMTPStream._feedDataStream'] as Feed,
  kzymy: feedDataStream as unknown as Feed,
};

/** The DATA parser alone (dot-unstuffing, end search): 64 KiB chunks of `wire` written straight in. */
async function parserOnly(wire: Buffer, plainLength: number, feed: Feed): Promise<number> {
  const parser = new SMTPStream({}) as unknown as import('node:stream').Writable & { startDataMode(max?: number): import('node:stream').Readable; oncommand: unknown; _feedDataStream: Feed };
  parser.oncommand = () => undefined;
  parser._feedDataStream = feed;
  const t0 = now();
  const data = parser.startDataMode(0);
  let n = 0;
  data.on('data', (c: Buffer) => (n += c.length));
  const ended = new Promise<void>((r) => data.once('end', () => r()));
  for (const c of chunks(Buffer.concat([wire, Buffer.from('.\r\n')]))) {
    if (!parser.write(c)) await new Promise((r) => parser.once('drain', r));
  }
  await ended;
  if (n !== plainLength) throw new Error(`parser gave ${n} bytes`);
  return now() - t0;
}

async function spoolRoundTrip(msg: Buffer, dir: string): Promise<number> {
  const t0 = now();
  const spool = await Spool.create(dir);
  for (const c of chunks(msg)) await spool.write(c);
  let n = 0;
  for await (const c of spool.read()) n += c.length;
  await spool.close();
  if (n !== msg.length) throw new Error('spool size');
  return now() - t0;
}

async function openpgpStream(msg: Buffer, key: PublicKey, format: 'binary' | 'armored'): Promise<number> {
  const t0 = now();
  const it = chunks(msg, 32 * 1024);
  const source = new ReadableStream<Uint8Array>(
    {
      pull(c) {
        const r = it.next();
        if (r.done) c.close();
        else c.enqueue(r.value);
      },
    },
    { highWaterMark: 1 },
  );
  const message = await createMessage({ binary: source });
  const out = (await encrypt({ message, encryptionKeys: key, format: format as 'binary', config: PGP_CONFIG })) as unknown as AsyncIterable<Uint8Array | string>;
  let n = 0;
  for await (const c of out) n += c.length;
  if (n < msg.length) throw new Error('short output');
  return now() - t0;
}

async function mimeStream(msg: Buffer, key: PublicKey): Promise<number> {
  const t0 = now();
  const out = encryptStreamToPgpMime(chunks(msg, ENCRYPT_SLICE_BYTES) as unknown as AsyncIterable<Uint8Array>, { key, domain: 'bench.invalid' });
  let n = 0;
  for await (const c of out as AsyncIterable<Buffer>) n += c.length;
  if (n < msg.length) throw new Error('short output');
  return now() - t0;
}

/** Seconds for `n` 10 KB messages through the buffered path (one after another). */
async function smallBuffers(key: PublicKey, msg: Buffer, n: number): Promise<number> {
  const t0 = now();
  for (let i = 0; i < n; i++) await encryptBufferToPgpMime(msg, { key, domain: 'bench.invalid' });
  const s = now() - t0;
  console.log(`  10 KB buffered: ${(n / s).toFixed(0)} msg/s`);
  return s;
}

async function server(msg: Buffer, base: string): Promise<void> {
  const warning = buildWarning();
  if (warning) console.log(`WARNING: ${warning}`);
  const prof = process.env.BIG_PROFILE_CPU ? ['--cpu-prof', '--cpu-prof-dir', process.env.BIG_PROFILE_CPU] : [];
  for (const phase of ['fresh', 'after-load'] as const) {
    const kz = await startKzymy({ base: path.join(base, phase), domain: 'bench.invalid', greetingDelayMs: 0, logName: 'server.log', nodeFlags: prof, smtp: { maxClientsPerAddress: 100 } });
    try {
      const users = await makeUsers(path.join(base, phase, 'users'), kz.configFile, 1);
      const user = users.users[0]!.username;
      const rcpt = `bench@${user}.bench.invalid`;
      try {
        if (phase === 'after-load') {
          const small = bigMessage(10 / 1024);
          const per = Math.ceil(LOAD / 20);
          const t0 = now();
          await Promise.all(Array.from({ length: 20 }, async () => {
            for (let i = 0; i < per; i++) {
              const r = await sendTransaction(kz.port, 'a@bench.invalid', [rcpt], small);
              if (!r.reply.startsWith('250')) throw new Error(r.reply);
            }
          }));
          console.log(`server: ${per * 20} x 10 KB in ${(now() - t0).toFixed(1)} s (${((per * 20) / (now() - t0)).toFixed(0)} msg/s, 20 connections at once)`);
        }
        const mdNew = path.join(kz.maildirRoot, user, 'new');
        for (const f of await readdir(mdNew)) await rm(path.join(mdNew, f));
        await writeFile(`/proc/${kz.pid}/clear_refs`, '5');
        const baseKb = (await procStatusKb(kz.pid, 'VmRSS')) ?? NaN;
        const c0 = cpuNow();
        const raw = rawCipher(msg);
        const rawCpu = cpuNow() - c0;
        const s0 = await cpuOf(kz.pid);
        const r = await sendMessage(kz.port, 'a@bench.invalid', rcpt, msg);
        const serverCpu = (await cpuOf(kz.pid)) - s0;
        const peakKb = (await procStatusKb(kz.pid, 'VmHWM')) ?? NaN;
        if (!r.reply.startsWith('250')) throw new Error(r.reply);
        const files = await readdir(mdNew);
        const plain = await gpgDecryptPgpMime(users.gnupghome, await readFile(path.join(mdNew, files[0]!)));
        const intact = files.length === 1 && plain.subarray(plain.length - msg.length).equals(msg);
        const mibs = rate(msg.length, r.dataSeconds);
        const rawNow = rate(msg.length, raw);
        console.log(
          `server ${phase.padEnd(10)}: ${mibs.toFixed(1)} MiB/s to the 250, raw cipher ${rawNow.toFixed(0)} MiB/s -> ${((100 * mibs) / rawNow).toFixed(0)}% by wall;` +
            ` server CPU ${serverCpu.toFixed(2)} s vs raw ${rawCpu.toFixed(2)} s -> ${((100 * rawCpu) / serverCpu).toFixed(0)}% by CPU;` +
            ` RSS before ${((baseKb * 1024) / 1e6).toFixed(0)} MB, peak ${((peakKb * 1024) / 1e6).toFixed(0)} MB; ${intact ? 'intact' : 'NOT INTACT'}`,
        );
      } finally {
        users.stop();
      }
    } finally {
      await kz.stop();
    }
  }
}

async function main(): Promise<void> {
  const msg = bigMessage(MIB);
  const base = await mkdtemp(path.join(tmpdir(), 'kzymy-big-'));
  try {
    console.log(`message ${msg.length} bytes, best of ${REPS}`);
    const L = msg.length;
    if (STAGES.has('raw')) await stage('raw AES-256-CFB + SHA-1', msg, L, async () => rawCipher(msg));
    if (STAGES.has('smtp')) await stage('smtp-server DATA alone', msg, L, () => smtpOnly(msg));
    if (STAGES.has('parser')) {
      const dotted = dottedMessage(MIB);
      for (const [label, wire, plain] of [['base64', msg, L], ['dotted', dotted.wire, dotted.plain.length]] as const) {
        for (const name of Object.keys(FEEDS)) await stage(`parser ${name} (${label})`, msg, wire.length, () => parserOnly(wire, plain, FEEDS[name]!));
      }
    }
    if (STAGES.has('spool')) await stage('spool write + read back', msg, L, () => spoolRoundTrip(msg, base));
    if (STAGES.has('openpgp') || STAGES.has('mime')) {
      const key = await readKey({ armoredKey: (await makeGpgKey('ed25519')).publicArmored });
      if (STAGES.has('openpgp')) {
        await stage('openpgp stream binary', msg, L, () => openpgpStream(msg, key, 'binary'));
        await stage('openpgp stream armored', msg, L, () => openpgpStream(msg, key, 'armored'));
      }
      if (STAGES.has('mime')) {
        await stage('encryptStreamToPgpMime', msg, L, () => mimeStream(msg, key));
        const small = bigMessage(10 / 1024);
        await stage('encryptBufferToPgpMime 10 KB', msg, 500 * small.length, () => smallBuffers(key, small, 500));
      }
    }
    if (STAGES.has('server')) await server(msg, base);
  } finally {
    await rm(base, { recursive: true, force: true });
  }
}

await main();
