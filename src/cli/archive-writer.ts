// The tar archive a backup writes: entries go in one at a time, each streamed with
// backpressure, and the size and SHA-256 of each is recorded for the manifest.
import { createHash } from 'node:crypto';
import { once } from 'node:events';
import type { FileHandle } from 'node:fs/promises';
import { pipeline } from 'node:stream/promises';
import { Header, Pack, ReadEntry } from 'tar';
import { BackupError, type FileRecord } from './backup-format.js';

export class ArchiveWriter {
  readonly files: Record<string, FileRecord> = {};
  private readonly pack: Pack;
  private readonly done: Promise<void>;

  constructor(fh: FileHandle, gzip: boolean) {
    this.pack = new Pack({ gzip: gzip ? { level: 6 } : undefined, portable: true });
    this.done = pipeline(this.pack, async (source: AsyncIterable<Buffer>) => {
      for await (const chunk of source) {
        let off = 0;
        while (off < chunk.length) off += (await fh.write(chunk, off, chunk.length - off)).bytesWritten;
      }
    });
    // Surfaced by finish(); a failed write also ends the entry loop through write() below.
    this.done.catch(() => undefined);
  }

  /** Adds a file of exactly `size` bytes from `chunks`; returns when all of it is in the archive stream. */
  async add(name: string, size: number, mtime: Date, chunks: AsyncIterable<Buffer> | Iterable<Buffer>): Promise<void> {
    const entry = new ReadEntry(new Header({ path: name, size, mode: 0o600, mtime, type: 'File' }));
    this.pack.add(entry);
    const hash = createHash('sha256');
    let n = 0;
    for await (const c of chunks) {
      n += c.length;
      if (n > size) break;
      hash.update(c);
      if (!entry.write(c)) await Promise.race([once(entry, 'drain'), this.done.then(() => undefined)]);
    }
    // Message files are never rewritten; a file that is not its size is not one kzymy wrote.
    if (n !== size) throw new BackupError(`The file behind ${name} changed size while it was read; run the backup again.`);
    entry.end();
    this.files[name] = { size, sha256: hash.digest('hex') };
  }

  addBuffer(name: string, data: Buffer, mtime = new Date()): Promise<void> {
    return this.add(name, data.length, mtime, [data]);
  }

  async finish(): Promise<void> {
    this.pack.end();
    await this.done;
  }
}
