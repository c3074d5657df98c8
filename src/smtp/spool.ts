// The spool of a large message: so that its copies can be encrypted a few at a time (memory
// bounded whatever the number of recipients), a message over limits.memoryBufferBytes is written
// once to a file and read back once per copy. What reaches the disk is never plaintext: the bytes
// are encrypted with AES-256-CTR under a random key and counter block that exist only in this
// process's memory, and the file is unlinked right after it is created, so it has no name while
// it is used and nothing of it remains after the transaction or a crash (the kernel frees it
// when the descriptor closes). CTR mode needs no padding: the spool is as large as the message.
import { createCipheriv, createDecipheriv, randomBytes } from 'node:crypto';
import { constants as fsc } from 'node:fs';
import { open, unlink, type FileHandle } from 'node:fs/promises';
import path from 'node:path';

const READ_BYTES = 64 * 1024;

export class Spool {
  private readonly cipher: ReturnType<typeof createCipheriv>;
  /** Bytes written so far (the message size once DATA has ended). */
  size = 0;
  private closed = false;

  private constructor(
    private readonly fh: FileHandle,
    private readonly key: Buffer,
    private readonly iv: Buffer,
  ) {
    this.cipher = createCipheriv('aes-256-ctr', key, iv);
  }

  /** An empty spool in `dir` (on the Maildir file system), already without a name. */
  static async create(dir: string): Promise<Spool> {
    const file = path.join(dir, `.spool-${randomBytes(12).toString('hex')}`);
    const fh = await open(file, fsc.O_RDWR | fsc.O_CREAT | fsc.O_EXCL, 0o600);
    try {
      await unlink(file);
    } catch (err) {
      await fh.close().catch(() => undefined);
      throw err;
    }
    return new Spool(fh, randomBytes(32), randomBytes(16));
  }

  async write(chunk: Uint8Array): Promise<void> {
    const bytes = this.cipher.update(chunk);
    let offset = 0;
    while (offset < bytes.length) {
      const { bytesWritten } = await this.fh.write(bytes, offset, bytes.length - offset, this.size + offset);
      offset += bytesWritten;
    }
    this.size += bytes.length;
  }

  /** The plaintext again, from the start, in chunks (any number of readers, one after another or at once). */
  async *read(chunkBytes = READ_BYTES): AsyncGenerator<Buffer> {
    const decipher = createDecipheriv('aes-256-ctr', this.key, this.iv);
    const end = this.size;
    let position = 0;
    while (position < end) {
      const buf = Buffer.allocUnsafe(Math.min(chunkBytes, end - position));
      const { bytesRead } = await this.fh.read(buf, 0, buf.length, position);
      if (bytesRead === 0) throw new Error('the spool ended early');
      position += bytesRead;
      yield decipher.update(buf.subarray(0, bytesRead));
    }
  }

  /** Frees the file (it has no name: closing is enough) and forgets the key. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    this.key.fill(0);
    await this.fh.close();
  }
}
