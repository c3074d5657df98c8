// Puts one message into a Maildir folder, durably, per qmail's maildir(5): tmp/NAME opened
// exclusively (0600 whatever the umask), written, fsynced, renamed to new/NAME,S=SIZE, and
// new/ fsynced (a group commit shared with the other deliveries into it). It resolves only
// then; on any failure no file of the message remains in tmp/ or new/. The server's store and
// kzymy-client's --maildir destination both write their messages with it.
import { constants as fsc, readFileSync } from 'node:fs';
import { open, rename, unlink, type FileHandle } from 'node:fs/promises';
import path from 'node:path';
import type { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { nameWithSize, timeFromName, uniqueName, wallClockMs } from './names.js';
import { writeAhead, type WriteHooks } from './write-ahead.js';

const FILE_MODE = 0o600;
const TMP_FLAGS = fsc.O_WRONLY | fsc.O_CREAT | fsc.O_EXCL;

/** A message's bytes: whole, or a stream of chunks (a chunk's memory must not be reused once yielded). */
export type MessageContent = Uint8Array | Readable | AsyncIterable<Uint8Array>;

/** Hooks into one delivery (the SMTP layer counts space with them). */
export interface DeliverOptions {
  /** Called with the size of each chunk before it is written; a throw stops the delivery, no file remains. */
  beforeWrite?(bytes: number): void | Promise<void>;
  /** Called with the size of each chunk once its write has landed (several may be in flight). */
  afterWrite?(bytes: number): void;
  /** Called with the final size after the fsync, before the rename into new/; a throw keeps the copy out of new/. */
  beforeRename?(size: number): void | Promise<void>;
  /** Aborting stops the delivery before its next write or its rename; no file remains. */
  signal?: AbortSignal;
}

export interface WriteOptions extends Omit<DeliverOptions, 'beforeRename'>, Pick<WriteHooks, 'check' | 'wipe'> {
  /** Called with the final size and the name the file gets in new/; a throw keeps it out of new/. */
  beforeRename?(size: number, name: string): void | Promise<void>;
  /** Run beforeRename while the file's fsync runs instead of after it (the rename waits for both). */
  beforeRenameDuringSync?: boolean;
  /** tmp/ is missing at the open: once this resolves the open is tried once more; a throw ends the delivery. */
  remake?(): Promise<void>;
  /** Called once the message is durable in new/; a throw takes it out of new/ again. */
  afterSync?(): void;
}

/** Where a message goes: the Maildir DIR (DIR/tmp and DIR/new exist) and the fsync of DIR/new. */
export interface MaildirFolder {
  readonly dir: string;
  /** Resolves once an fsync of DIR/new that began after the call has ended (see DirSyncer). */
  syncNew(): Promise<void>;
}

/** A message durable in new/. */
export interface Written {
  /** Its file name in new/: the unique name plus `,S=SIZE`. */
  name: string;
  size: number;
  /** Receipt time in ms, as the name tells it. */
  receivedAt: number;
}

let ownerBitsKept: boolean | null = null;
/**
 * True when this process's umask leaves the owner's read and write bits alone, so that a file
 * opened with FILE_MODE (0600) gets exactly that mode and needs no chmod (one system call less
 * a message). Read once from /proc/self/status; where that is unreadable, chmod as before.
 */
function umaskKeepsOwnerBits(): boolean {
  if (ownerBitsKept === null) {
    try {
      const m = /^Umask:\s+([0-7]+)/m.exec(readFileSync('/proc/self/status', 'utf8'));
      ownerBitsKept = m !== null && (parseInt(m[1]!, 8) & 0o600) === 0;
    } catch {
      ownerBitsKept = false;
    }
  }
  return ownerBitsKept;
}

/** Opens tmp/NAME exclusively; when tmp/ is missing and `remake` is given, remakes it and tries once more. */
async function openTmp(file: string, remake?: () => Promise<void>): Promise<FileHandle> {
  try {
    return await open(file, TMP_FLAGS, FILE_MODE);
  } catch (err) {
    if (!remake || (err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
    await remake();
    return await open(file, TMP_FLAGS, FILE_MODE);
  }
}

/** Writes all of `content` into `fh`; resolves with its size once every write has landed. */
async function writeContent(fh: FileHandle, content: MessageContent, opts: WriteOptions): Promise<number> {
  const { signal, beforeWrite, afterWrite } = opts;
  const check = (): void => {
    signal?.throwIfAborted();
    opts.check?.();
  };
  if (content instanceof Uint8Array) {
    check();
    await beforeWrite?.(content.byteLength);
    await fh.writeFile(content);
    afterWrite?.(content.byteLength);
    return content.byteLength;
  }
  // writeAhead keeps up to 1 MiB of writes in flight while the next chunks are made, and ends
  // them all before it throws. Its loop closes the source on any error (for await ... of
  // returns the iterator; a Readable's iterator destroys the stream). With a signal, pipeline
  // also destroys the source the moment the signal aborts, while it waits for a chunk; without
  // one, pipeline would only add the AbortController it makes and aborts at every end.
  const hooks = { check, beforeWrite, afterWrite, wipe: opts.wipe };
  if (!signal) return writeAhead(fh, content as AsyncIterable<Uint8Array | string>, hooks);
  let size = 0;
  const sink = async (source: AsyncIterable<Uint8Array | string>): Promise<void> => {
    size = await writeAhead(fh, source, hooks);
  };
  await pipeline(content, sink, { signal });
  return size;
}

/**
 * Writes `content` as a new message of `folder`: tmp/, fsync, rename into new/, fsync of
 * new/. Resolves only when the message is durable; on failure no file remains and the error
 * (a file-system error, the source's, a hook's, or the signal's) is thrown as it came.
 */
export async function writeMessage(folder: MaildirFolder, content: MessageContent, opts: WriteOptions = {}): Promise<Written> {
  const { signal } = opts;
  const receivedAtMs = wallClockMs();
  const unique = uniqueName(receivedAtMs);
  const tmpPath = path.join(folder.dir, 'tmp', unique);
  const fh = await openTmp(tmpPath, opts.remake);
  let closed = false;
  let newPath: string | null = null;
  try {
    if (!umaskKeepsOwnerBits()) await fh.chmod(FILE_MODE); // open()'s mode was cut by the umask
    const size = await writeContent(fh, content, opts);
    const name = nameWithSize(unique, size);
    const early = opts.beforeRenameDuringSync ? opts.beforeRename?.(size, name) : undefined;
    Promise.resolve(early).catch(() => undefined); // awaited below, after the fsync, whatever it does
    await fh.sync();
    closed = true;
    await fh.close();
    signal?.throwIfAborted();
    await (opts.beforeRenameDuringSync ? early : opts.beforeRename?.(size, name));
    signal?.throwIfAborted();
    const target = path.join(folder.dir, 'new', name);
    await rename(tmpPath, target);
    newPath = target;
    await folder.syncNew();
    opts.afterSync?.();
    return { name, size, receivedAt: timeFromName(unique) ?? Math.floor(receivedAtMs) };
  } catch (err) {
    if (!closed) await fh.close().catch(() => undefined);
    await unlink(tmpPath).catch(() => undefined);
    // Renamed but not known to be durable: taken back, so that the message is sent again.
    if (newPath !== null) await unlink(newPath).catch(() => undefined);
    throw err;
  }
}
