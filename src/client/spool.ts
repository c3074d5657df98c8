// The spool of kzymy-client's fetch: where a download waits, as ciphertext, until it is known
// complete, before it goes to a destination that cannot give a message back (an MDA).
import { mkdir, open, unlink, type FileHandle } from 'node:fs/promises';
import path from 'node:path';
import { appendAll } from '../config/durable.js';
import { uniqueName } from '../maildir/index.js';
import { fileError, watch, type Chunks } from './deliver.js';
import { DeliveryError, EXIT_TEMPFAIL } from './errors.js';

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
    const source = watch(message);
    let fh: FileHandle | null = null;
    let size = 0;
    try {
      await mkdir(dir, { recursive: true, mode: 0o700 });
      fh = await open(file, 'wx+', 0o600);
      await unlink(file);
      for await (const chunk of source.chunks) {
        await appendAll(fh, chunk);
        size += chunk.length;
      }
      return new Spool(fh, size);
    } catch (err) {
      await fh?.close().catch(() => undefined);
      await unlink(file).catch(() => undefined);
      const own = source.failure();
      if (own) throw own.err;
      throw fileError(`Cannot keep the downloaded message in ${dir} until it is complete`, err);
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
