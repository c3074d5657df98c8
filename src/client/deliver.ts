// Local delivery, what its kinds share: a message on its way in chunks, the destinations
// (a Maildir, see maildir-destination.ts; an MDA command, see mda.ts), and the sentences for
// what went wrong on disk.
import { DeliveryError, EXIT_TEMPFAIL } from './errors.js';

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

/** The message as chunks: a Buffer is one. */
export function chunksOf(message: Buffer | Chunks): Chunks {
  return Buffer.isBuffer(message) ? [message] as unknown as Chunks : message;
}

/**
 * The message's chunks, with a note of the error the message itself throws (a broken
 * download, a failed decryption), told apart from the destination's own failures.
 */
export function watch(message: AsyncIterable<Buffer>): { chunks: Chunks; failure(): { err: unknown } | null } {
  let failure: { err: unknown } | null = null;
  async function* chunks(): AsyncGenerator<Buffer> {
    try {
      yield* message;
    } catch (err) {
      failure = { err };
      throw err;
    }
  }
  return { chunks: chunks(), failure: () => failure };
}

/**
 * `what` (a sentence without its end) failed on the file system: a DeliveryError saying why,
 * exit 75 (try again later) when it may pass by itself (a full disk, too many open files).
 */
export function fileError(what: string, err: unknown): DeliveryError {
  const code = (err as NodeJS.ErrnoException).code;
  const temporary = code === 'ENOSPC' || code === 'EDQUOT' || code === 'EIO' || code === 'EMFILE' || code === 'ENFILE';
  return new DeliveryError(`${what}: ${reason(err)}.`, temporary ? EXIT_TEMPFAIL : 1);
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
