// Local delivery: into a Maildir per qmail's maildir(5), or to an MDA command
// like getmail's MDA_external; and the --decrypt step that opens a PGP/MIME file.
import { spawn, type ChildProcessByStdio } from 'node:child_process';
import { once } from 'node:events';
import { lstat, mkdir, open, readdir, rename, unlink, type FileHandle } from 'node:fs/promises';
import path from 'node:path';
import type { Readable, Writable } from 'node:stream';
import { fsyncPath } from '../config/durable.js';
import { DirSyncer } from '../maildir/index.js';
import { nameWithSize, uniqueName } from '../maildir/names.js';
import { restoreOriginal as restorePayload } from '../pgp/protected.js';
import { ClientError, DeliveryError, EXIT_TEMPFAIL } from './errors.js';
import type { Gnupg } from './gnupg.js';

/** Exit status an MDA uses for "try again later" (sysexits EX_TEMPFAIL). */
export const MDA_TEMPFAIL = 75;

/**
 * A message on its way, in chunks. The iterable throws (a ClientError) when the message
 * turns out incomplete or void (a broken download, a failed decryption): a destination
 * then undoes what it did, and the message counts as not delivered.
 */
export type Chunks = AsyncIterable<Buffer>;

export interface DeliveryInfo {
  /** The server's message id. */
  id: string;
  /** Return-Path and Delivered-To of the decrypted message, when known. */
  sender?: string;
  recipient?: string;
  /**
   * Maildir only: called with the file's name in new/ once it is complete in tmp/, just
   * before the rename; the rename waits for it, and does not happen when it throws.
   */
  beforeRename?: (name: string) => Promise<void>;
}

export interface Destination {
  /**
   * Delivers one message; resolves with the number of bytes delivered once it is durable
   * (Maildir) or accepted (MDA). Rejects, with nothing delivered, when `message` throws.
   */
  deliver(message: Buffer | Chunks, info: DeliveryInfo): Promise<number>;
  describe(): string;
  /**
   * True when the destination cannot take a message back once it has begun reading it
   * (an MDA): the downloaded file is then spooled and checked complete before delivery.
   */
  readonly irrevocable: boolean;
}

function chunksOf(message: Buffer | Chunks): Chunks {
  return Buffer.isBuffer(message) ? [message] as unknown as Chunks : message;
}

/** Marks errors of the message itself (download, gpg), as opposed to the destination's. */
class SourceFailure {
  constructor(readonly err: unknown) {}
}

async function* tracked(message: Chunks): AsyncGenerator<Buffer> {
  try {
    yield* message;
  } catch (err) {
    throw new SourceFailure(err);
  }
}

/** DIR is the Maildir itself: DIR/{tmp,new,cur}, folders 0700, files 0600. */
export class MaildirDestination implements Destination {
  private ready = false;
  readonly irrevocable = false;
  /** Deliveries in flight at once share each fsync of new/ (group commit). */
  private readonly newSync: DirSyncer;

  constructor(readonly dir: string) {
    this.newSync = new DirSyncer(path.join(dir, 'new'));
  }

  describe(): string {
    return this.dir;
  }

  async prepare(): Promise<void> {
    if (this.ready) return;
    try {
      const made = await mkdir(this.dir, { recursive: true, mode: 0o700 });
      for (const sub of ['tmp', 'new', 'cur']) await mkdir(path.join(this.dir, sub), { recursive: true, mode: 0o700 });
      if (made) {
        await fsyncPath(this.dir);
        await fsyncPath(path.dirname(path.resolve(this.dir)));
      }
    } catch (err) {
      throw new ClientError(`Cannot create the Maildir ${this.dir}: ${reason(err)}.`);
    }
    this.ready = true;
  }

  /**
   * Streams into tmp/NAME (exclusive, 0600), fsync, rename to new/NAME,S=SIZE (the bytes
   * written), fsync new/. A message that throws midway, or a failed write, leaves nothing:
   * the tmp/ file is removed. Each streamed chunk is zeroed once written (it may be plaintext).
   */
  async deliver(message: Buffer | Chunks, info?: DeliveryInfo): Promise<number> {
    await this.prepare();
    const unique = uniqueName();
    const tmp = path.join(this.dir, 'tmp', unique);
    const streamed = !Buffer.isBuffer(message); // a caller's Buffer is left as it is
    let fh: FileHandle | null = null;
    let size = 0;
    try {
      fh = await open(tmp, 'wx', 0o600);
    } catch (err) {
      throw this.writeError(err); // EEXIST included: that tmp/ file is another writer's
    }
    try {
      for await (const chunk of tracked(chunksOf(message))) {
        await writeAll(fh, chunk);
        size += chunk.length;
        if (streamed) chunk.fill(0);
      }
      // The file's fsync and the caller's step before the rename run side by side.
      const before = info?.beforeRename?.(nameWithSize(unique, size)).catch((err: unknown) => {
        throw new SourceFailure(err);
      });
      before?.catch(() => undefined); // awaited below, after the fsync, whatever it does
      await fh.sync();
      await before;
      await fh.close();
      fh = null;
      await rename(tmp, path.join(this.dir, 'new', nameWithSize(unique, size)));
    } catch (err) {
      await fh?.close().catch(() => undefined);
      // Nothing of an undelivered message stays in tmp/.
      await unlink(tmp).catch(() => undefined);
      if (err instanceof SourceFailure) throw err.err;
      throw this.writeError(err);
    }
    try {
      await this.newSync.sync();
    } catch (err) {
      // Renamed but perhaps not durable: taken back, so that it is fetched again next time.
      await unlink(path.join(this.dir, 'new', nameWithSize(unique, size))).catch(() => undefined);
      throw this.writeError(err);
    }
    return size;
  }

  /**
   * True when new/NAME, or NAME moved to cur/ by a mail reader (NAME:2,FLAGS), is there: a
   * delivery of an earlier run that ended before it was recorded as done.
   */
  async holds(name: string): Promise<boolean> {
    if (!/^[^/:]+$/.test(name) || name.startsWith('.')) return false;
    try {
      await lstat(path.join(this.dir, 'new', name));
      return true;
    } catch {
      // not in new/
    }
    const cur = await readdir(path.join(this.dir, 'cur')).catch(() => [] as string[]);
    return cur.some((n) => n === name || n.startsWith(`${name}:`));
  }

  writeError(err: unknown): DeliveryError {
    const code = (err as NodeJS.ErrnoException).code;
    const temporary = code === 'ENOSPC' || code === 'EDQUOT' || code === 'EIO' || code === 'EMFILE' || code === 'ENFILE';
    return new DeliveryError(`Cannot write to the Maildir ${this.dir}: ${reason(err)}.`, temporary ? EXIT_TEMPFAIL : 1);
  }
}

/** SIGKILL to a detached child's whole process group. */
function killGroup(child: { pid?: number }): void {
  try {
    if (child.pid !== undefined) process.kill(-child.pid, 'SIGKILL');
  } catch {
    // already gone
  }
}

/** Writes all of `chunk` (a write may take only part of it). */
async function writeAll(fh: FileHandle, chunk: Buffer): Promise<void> {
  let at = 0;
  while (at < chunk.length) at += (await fh.write(chunk, at, chunk.length - at)).bytesWritten;
}

/**
 * `/bin/sh -c COMMAND` with the message on stdin: exit 0 and nothing on stderr means
 * delivered; exit 75 means try again later; anything else is not delivered.
 *
 * An MDA cannot be asked to give back what it has read, and one that got a cut-short
 * message may well exit 0 and file it. So (1) the downloaded file reaches an MDA only
 * complete: fetch spools it first (ciphertext, see Spool) and checks its size; (2) the
 * message is written with backpressure and stdin is closed (end of file) only after the
 * last chunk arrived intact. When the message fails midway (gpg finds the ciphertext
 * damaged, which it may do only after writing most of the plaintext), the MDA is killed
 * with SIGKILL (its whole process group) while its stdin is still open, so that it never
 * sees the end of the message, and the message counts as not delivered whatever it did. An MDA that delivers what it has
 * read before end of file is not one kzymy-client can make safe; procmail, maildrop,
 * dovecot-lda and `cat > file` read to end of file first.
 */
export class MdaDestination implements Destination {
  readonly irrevocable = true;

  constructor(readonly command: string) {}

  describe(): string {
    return `the MDA "${this.command}"`;
  }

  async deliver(message: Buffer | Chunks, info: DeliveryInfo): Promise<number> {
    const env: NodeJS.ProcessEnv = { ...process.env, KZYMY_MESSAGE_ID: info.id };
    if (info.sender !== undefined) env.SENDER = info.sender;
    if (info.recipient !== undefined) env.RECIPIENT = info.recipient;
    // Its own process group, so that a kill reaches every process of the command (a
    // pipeline, a subshell), not only /bin/sh: none of them may see the end of its input.
    const child = spawn('/bin/sh', ['-c', this.command], { stdio: ['pipe', 'ignore', 'pipe'], env, detached: true });
    const killAll = (): void => killGroup(child);
    // A client that exits now (a second SIGINT) must not leave the MDA a cut-short input.
    process.on('exit', killAll);
    try {
      return await this.feed(child, message);
    } finally {
      process.off('exit', killAll);
    }
  }

  private async feed(child: ChildProcessByStdio<Writable, null, Readable>, message: Buffer | Chunks): Promise<number> {
    const killAll = (): void => killGroup(child);
    const err: Buffer[] = [];
    let errBytes = 0;
    child.stderr.on('data', (c: Buffer) => {
      if (errBytes < 64 * 1024) err.push(c);
      errBytes += c.length;
    });
    let spawnFailure: Error | null = null;
    const closed = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => {
      child.on('error', (e) => {
        spawnFailure = e;
      });
      child.on('close', (code, signal) => resolve({ code, signal }));
    });
    let reading = true; // false once the MDA stopped reading (EPIPE): its exit status tells
    child.stdin.on('error', () => {
      reading = false;
    });
    const stdinClosed = new Promise<void>((resolve) => child.stdin.once('close', () => resolve()));
    let size = 0;
    try {
      for await (const chunk of chunksOf(message)) {
        size += chunk.length;
        if (reading && !child.stdin.destroyed) {
          // Backpressure: wait until the MDA has taken the chunk (or gone).
          if (!child.stdin.write(chunk)) await Promise.race([once(child.stdin, 'drain').catch(() => undefined), stdinClosed]);
        }
        // Past an MDA that stopped reading, the rest is still read, so that a failure of
        // the message (gpg's verdict at its end) is known before the MDA counts.
      }
    } catch (e) {
      killAll();
      await closed;
      throw e;
    }
    child.stdin.end();
    const { code, signal } = await closed;
    if (spawnFailure) throw new DeliveryError(`Cannot run the MDA: ${reason(spawnFailure)}.`);
    const stderr = Buffer.concat(err).toString('utf8').trim();
    const said = stderr ? `: ${firstLine(stderr)}` : '';
    if (code === 0 && !stderr) return size;
    if (code === 0) throw new DeliveryError(`The MDA exited 0 but wrote to stderr, so the message counts as not delivered${said}.`);
    if (code === MDA_TEMPFAIL) throw new DeliveryError(`The MDA asked to try again later (exit 75)${said}.`, EXIT_TEMPFAIL);
    if (signal) throw new DeliveryError(`The MDA was killed by ${signal}; the message was not delivered.`);
    throw new DeliveryError(`The MDA exited ${code}; the message was not delivered${said}.`);
  }
}

/**
 * A downloaded file kept until it is complete, for a destination that must not see a
 * partial one (an MDA). It holds the file as the server sent it: ciphertext (PGP/MIME),
 * never plaintext. A 0600 file in the profile's folder, removed from the folder as soon as
 * it is created and read back through the open descriptor, so that nothing remains of it
 * once the run ends, even after a crash.
 */
export class Spool {
  private constructor(
    private readonly fh: FileHandle,
    readonly size: number,
  ) {}

  /** Reads `message` to its end into a spool in `dir`; throws the message's own error if it breaks. */
  static async fill(dir: string, message: Chunks): Promise<Spool> {
    const file = path.join(dir, `.kzymy-spool-${process.pid}-${uniqueName().replace(/[^A-Za-z0-9]/g, '')}`);
    let fh: FileHandle | null = null;
    let size = 0;
    try {
      await mkdir(dir, { recursive: true, mode: 0o700 });
      fh = await open(file, 'wx+', 0o600);
      await unlink(file);
      for await (const chunk of tracked(message)) {
        await writeAll(fh, chunk);
        size += chunk.length;
      }
      return new Spool(fh, size);
    } catch (err) {
      await fh?.close().catch(() => undefined);
      await unlink(file).catch(() => undefined);
      if (err instanceof SourceFailure) throw err.err;
      const code = (err as NodeJS.ErrnoException).code;
      const temporary = code === 'ENOSPC' || code === 'EDQUOT' || code === 'EIO' || code === 'EMFILE' || code === 'ENFILE';
      throw new DeliveryError(`Cannot keep the downloaded message in ${dir} until it is complete: ${reason(err)}.`, temporary ? EXIT_TEMPFAIL : 1);
    }
  }

  /** The spooled file, in chunks. */
  async *chunks(): AsyncGenerator<Buffer> {
    const buf = Buffer.alloc(64 * 1024);
    let at = 0;
    while (at < this.size) {
      const { bytesRead } = await this.fh.read(buf, 0, Math.min(buf.length, this.size - at), at);
      if (bytesRead === 0) throw new DeliveryError('The downloaded message was cut short on disk; it stays on the server.', EXIT_TEMPFAIL);
      at += bytesRead;
      yield Buffer.from(buf.subarray(0, bytesRead));
    }
  }

  async close(): Promise<void> {
    await this.fh.close().catch(() => undefined);
  }
}

function firstLine(s: string): string {
  const line = s.split('\n')[0]!.trim();
  return line.length > 200 ? line.slice(0, 200) + '...' : line;
}

/** An errno as words saying what is wrong and, where it helps, what to do. */
export function reason(err: unknown): string {
  const e = err as NodeJS.ErrnoException;
  switch (e.code) {
    case 'EACCES':
    case 'EPERM':
      return 'permission denied (check the owner and mode of the folder)';
    case 'ENOSPC':
      return 'the disk is full (free some space)';
    case 'EDQUOT':
      return 'the disk quota is exhausted (free some space)';
    case 'ENOTDIR':
      return 'a part of the path is not a folder';
    case 'EISDIR':
      return 'a folder is in the way of a file';
    case 'ENOENT':
      return 'a folder of the path is missing (was it removed during the run?)';
    case 'EEXIST':
      return 'a file of the same name is already there (another program writes into the same folder with the same names; try again)';
    case 'EROFS':
      return 'the file system is read-only';
    case 'EIO':
      return 'the disk reported an input/output error (check it; try again later)';
    case 'EMFILE':
    case 'ENFILE':
      return 'too many files are open (try again later)';
    case 'ENAMETOOLONG':
      return 'the path is too long';
    case 'ELOOP':
      return 'the path has too many symbolic links';
    case 'EPIPE':
      return 'the program stopped reading its input';
    case 'EAGAIN':
    case 'ENOMEM':
      return 'the system is short of memory or processes (try again later)';
    default:
      return e.code ? `error ${e.code}` : (e.message ?? String(err));
  }
}

/** The ASCII-armored OpenPGP message inside a PGP/MIME file (RFC 3156). */
export function armoredPart(file: Buffer): Buffer | null {
  const text = file.toString('latin1');
  const m = /-----BEGIN PGP MESSAGE-----\r?\n[\s\S]*?\r?\n-----END PGP MESSAGE-----/.exec(text);
  return m ? Buffer.from(m[0] + '\n', 'latin1') : null;
}

const BEGIN = Buffer.from('-----BEGIN PGP MESSAGE-----');
const END = Buffer.from('-----END PGP MESSAGE-----');
/** A longer line cannot be one of the two marker lines (they may carry trailing blanks). */
const MARKER_LINE_MAX = 1024;

/**
 * armoredPart() on a stream: from the line "-----BEGIN PGP MESSAGE-----" to the line
 * "-----END PGP MESSAGE-----", whatever lies around it (the PGP/MIME header and parts)
 * dropped, in bounded memory (a line is kept only while it may be a marker line).
 * Hand-written: MIME stream parsers (mailsplit, mailparser) would also do it, but hold
 * each part, and this needs only two marker lines.
 */
export async function* armoredStream(file: Chunks, id: string): AsyncGenerator<Buffer> {
  let inside = false;
  let line: Buffer[] = [];
  let lineLength = 0;
  const out: Buffer[] = [];
  /** At the end of a line: true when it was the END line. */
  const endOfLine = (): boolean => {
    const kept = lineLength <= MARKER_LINE_MAX ? Buffer.concat(line) : null;
    line = [];
    lineLength = 0;
    if (!kept) return false;
    const bare = trimEol(kept);
    if (!inside && bare.equals(BEGIN)) {
      inside = true;
      out.push(kept);
      return false;
    }
    return inside && bare.equals(END);
  };
  for await (const chunk of file) {
    let at = 0;
    while (at < chunk.length) {
      const nl = chunk.indexOf(0x0a, at);
      const piece = chunk.subarray(at, nl < 0 ? chunk.length : nl + 1);
      at += piece.length;
      if (inside) out.push(piece);
      lineLength += piece.length;
      if (lineLength <= MARKER_LINE_MAX) line.push(piece);
      else line = [];
      if (nl >= 0 && endOfLine()) {
        yield Buffer.concat(out);
        return; // the rest of the file is not read
      }
    }
    if (out.length) {
      yield Buffer.concat(out);
      out.length = 0;
    }
  }
  if (lineLength > 0) endOfLine();
  if (out.length) yield Buffer.concat(out);
  // An armor without its end line goes to gpg all the same: gpg says what is wrong.
  if (!inside) throw new DeliveryError(`Message ${id} is not a PGP/MIME message; it was not decrypted.`);
}

function trimEol(b: Buffer): Buffer {
  let end = b.length;
  while (end > 0 && (b[end - 1] === 0x0a || b[end - 1] === 0x0d || b[end - 1] === 0x20 || b[end - 1] === 0x09)) end--;
  return b.subarray(0, end);
}

/**
 * Where the decrypted payload is turned back into the original message, applied to gpg's
 * output before the line ending conversion and delivery: the protected-headers wrapper the
 * server put in front (src/pgp/protected.ts) comes off, byte for byte, in bounded memory.
 */
export function restoreOriginal(chunks: Chunks): Chunks {
  return restorePayload(chunks);
}

/**
 * CRLF -> LF, as getmail and fetchmail hand mail to Unix tools; a lone CR stays. Streaming:
 * a CR at the end of a chunk waits for the next. Hand-written (a dozen lines): the
 * libraries for it work on whole strings.
 */
export async function* crlfToLf(chunks: Chunks): AsyncGenerator<Buffer> {
  let heldCr = false;
  for await (const chunk of chunks) {
    if (chunk.length === 0) continue;
    const parts: Buffer[] = [];
    let from = 0;
    if (heldCr) {
      if (chunk[0] !== 0x0a) parts.push(Buffer.from([0x0d]));
      heldCr = false;
    }
    for (let cr = chunk.indexOf(0x0d, from); cr >= 0; cr = chunk.indexOf(0x0d, from)) {
      if (cr === chunk.length - 1) {
        parts.push(chunk.subarray(from, cr));
        heldCr = true;
        from = chunk.length;
        break;
      }
      if (chunk[cr + 1] === 0x0a) {
        parts.push(chunk.subarray(from, cr));
        from = cr + 1; // the LF is kept
      } else {
        parts.push(chunk.subarray(from, cr + 1));
        from = cr + 1;
      }
    }
    if (from < chunk.length) parts.push(chunk.subarray(from));
    const out = Buffer.concat(parts);
    chunk.fill(0);
    if (out.length) yield out;
  }
  if (heldCr) yield Buffer.from([0x0d]);
}

/** Most bytes read ahead to find Return-Path and Delivered-To (the top of the header). */
const HEAD_BYTES = 8192;

/**
 * The first bytes of a message (up to its header's end or HEAD_BYTES) and the whole
 * message again, those bytes included: for envelopeOf() before an MDA is started.
 */
export async function peekHead(chunks: Chunks): Promise<{ head: Buffer; message: Chunks }> {
  const it = chunks[Symbol.asyncIterator]();
  const first: Buffer[] = [];
  let size = 0;
  let ended = false;
  while (size < HEAD_BYTES) {
    const r = await it.next();
    if (r.done) {
      ended = true;
      break;
    }
    first.push(r.value);
    size += r.value.length;
    if (/\r?\n\r?\n/.test(Buffer.concat(first).toString('latin1'))) break;
  }
  const head = Buffer.from(Buffer.concat(first).subarray(0, HEAD_BYTES));
  async function* message(): AsyncGenerator<Buffer> {
    yield* first;
    if (ended) return;
    for (let r = await it.next(); !r.done; r = await it.next()) yield r.value;
  }
  const whole = message();
  // Stopping early stops the source too.
  const ret = whole.return.bind(whole);
  whole.return = async (v) => {
    await it.return?.();
    return ret(v);
  };
  return { head, message: whole };
}

/**
 * A downloaded PGP/MIME file as the original message, decrypted by gpg as it arrives:
 * the armored part goes to gpg, gpg's output through restoreOriginal() and, unless
 * `crlf`, CRLF -> LF. Never whole in memory; no plaintext on disk. Throws, after the last
 * chunk at the latest, a DeliveryError when gpg fails (the message stays on the server), or
 * the download's own error when it breaks.
 */
export function decryptedMessage(gpg: Gnupg, file: Chunks, id: string, crlf: boolean): Chunks {
  let fileFailed = false;
  async function* watched(): AsyncGenerator<Buffer> {
    try {
      yield* armoredStream(file, id);
    } catch (err) {
      fileFailed = true;
      throw err;
    }
  }
  async function* plaintext(): AsyncGenerator<Buffer> {
    try {
      yield* gpg.decryptStream(watched(), `message ${id}`);
    } catch (err) {
      if (!fileFailed && err instanceof ClientError && !(err instanceof DeliveryError)) {
        throw new DeliveryError(err.message, err.exitCode);
      }
      throw err;
    }
  }
  const original = restoreOriginal(plaintext());
  return crlf ? original : crlfToLf(original);
}

/** Return-Path and Delivered-To from the top of a decrypted message (for the MDA's env). */
export function envelopeOf(message: Buffer): { sender?: string; recipient?: string } {
  const head = message.subarray(0, HEAD_BYTES).toString('latin1');
  const end = head.search(/\r?\n\r?\n/);
  const header = end >= 0 ? head.slice(0, end) : head;
  const sender = /^Return-Path:[ \t]*<?([^>\r\n]*)>?/im.exec(header)?.[1];
  const recipient = /^Delivered-To:[ \t]*<?([^>\r\n]*)>?/im.exec(header)?.[1];
  return { sender: sender?.trim(), recipient: recipient?.trim() };
}
