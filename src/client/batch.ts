// --decrypt into a Maildir, in batches: one gpg (`--decrypt-files`) for many messages
// instead of one gpg each. The downloaded ciphertexts and gpg's plaintexts live in a
// private folder (0700) inside the destination Maildir's tmp/, where the plaintext ends up
// anyway: nothing of it is written anywhere else. Each message is then delivered from its
// plaintext file as decryptedMessage() would deliver it (the protected-headers wrapper
// removed, CRLF -> LF unless --crlf) and both files are removed.
import { mkdir, open, readdir, rm, unlink, type FileHandle } from 'node:fs/promises';
import path from 'node:path';
import { appendAll } from '../config/durable.js';
import { uniqueName } from '../maildir/index.js';
import { restoreOriginal } from '../pgp/protected.js';
import { armoredStream, crlfToLf } from './decrypt.js';
import type { Chunks } from './deliver.js';
import { ClientError, DeliveryError } from './errors.js';
import type { Gnupg } from './gnupg.js';
import type { MaildirDestination } from './maildir-destination.js';

/** Most messages one gpg decrypts. */
export const DECRYPT_BATCH = 64;
/** Most messages downloaded and waiting for gpg or delivery at once (bounds the private folder). */
const MAX_QUEUED = 2 * DECRYPT_BATCH;
/** gpg processes at once: the downloads, gpg and its agent share the CPUs. */
const GPG_AT_ONCE = 2;
const FOLDER_PREFIX = '.kzymy-decrypt-';

interface Queued {
  id: string;
  beforeRename: (name: string) => Promise<void>;
  cipher: string;
  resolve: () => void;
  reject: (err: unknown) => void;
}

/** True when `pid` names a running process (another kzymy-client's folder must stay). */
function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

async function* fileChunks(file: string): AsyncGenerator<Buffer> {
  const fh = await open(file, 'r');
  try {
    for (;;) {
      const buf = Buffer.alloc(64 * 1024);
      const { bytesRead } = await fh.read(buf, 0, buf.length, null);
      if (bytesRead === 0) return;
      yield buf.subarray(0, bytesRead);
    }
  } finally {
    await fh.close();
  }
}

export class DecryptBatcher {
  private folder: string | null = null;
  private pending: Queued[] = [];
  private readonly running = new Set<Promise<void>>();
  private queued = 0;
  private waiters: Array<() => void> = [];
  private seq = 0;

  constructor(
    private readonly gpg: Gnupg,
    private readonly dest: MaildirDestination,
    private readonly crlf: boolean,
  ) {}

  private making: Promise<string> | null = null;

  /** The private folder, made once on first use; leftovers of a client killed earlier are removed. */
  private prepare(): Promise<string> {
    this.making ??= this.make();
    return this.making;
  }

  private async make(): Promise<string> {
    await this.dest.prepare();
    const tmp = path.join(this.dest.dir, 'tmp');
    try {
      for (const name of await readdir(tmp)) {
        const m = new RegExp(`^${FOLDER_PREFIX.replace(/\./g, '\\.')}(\\d+)-`).exec(name);
        if (m && !alive(Number(m[1]))) await rm(path.join(tmp, name), { recursive: true, force: true });
      }
      const folder = path.join(tmp, `${FOLDER_PREFIX}${process.pid}-${uniqueName().replace(/[^A-Za-z0-9]/g, '')}`);
      await mkdir(folder, { mode: 0o700 });
      this.folder = folder;
      return folder;
    } catch (err) {
      throw this.dest.writeError(err);
    }
  }

  /** Resolves once there is room for one more download (backpressure for the downloaders). */
  async room(): Promise<void> {
    while (this.queued >= MAX_QUEUED) await new Promise<void>((resolve) => this.waiters.push(resolve));
  }

  /**
   * Reads the download of message `id` into the private folder (its armored part, i.e. the
   * ciphertext) and queues it for gpg. Resolves, once it is queued, with `delivered`, a promise that
   * settles when the message is delivered (durable in new/) or not: a DeliveryError when gpg
   * fails on it (it stays on the server), a ClientError when gpg cannot run. Throws the
   * download's own error, with nothing kept, when the transfer breaks.
   */
  async submit(id: string, download: Chunks, beforeRename: (name: string) => Promise<void>): Promise<{ delivered: Promise<void> }> {
    const folder = await this.prepare();
    const cipher = path.join(folder, `${++this.seq}.gpg`);
    this.queued++;
    let fh: FileHandle | null = null;
    try {
      fh = await open(cipher, 'wx', 0o600).catch((err: unknown) => {
        throw this.dest.writeError(err);
      });
      for await (const chunk of armoredStream(download, id)) await appendAll(fh, chunk).catch((err: unknown) => {
        throw this.dest.writeError(err);
      });
      await fh.close();
      fh = null;
    } catch (err) {
      await fh?.close().catch(() => undefined);
      await unlink(cipher).catch(() => undefined);
      this.release();
      throw err;
    }
    let q!: Queued;
    const delivered = new Promise<void>((resolve, reject) => {
      q = { id, beforeRename, cipher, resolve, reject };
    });
    this.pending.push(q);
    // Not awaited here: the caller goes on while gpg and the delivery run.
    delivered.catch(() => undefined);
    this.kick();
    return { delivered };
  }

  private release(): void {
    this.queued--;
    this.waiters.shift()?.();
  }

  /** Up to GPG_AT_ONCE gpg at a time, each on whatever is queued when it starts. */
  private kick(): void {
    if (this.running.size >= GPG_AT_ONCE) return;
    const p: Promise<void> = this.loop().finally(() => this.running.delete(p));
    this.running.add(p);
  }

  private async loop(): Promise<void> {
    while (this.pending.length > 0) {
      const batch = this.pending.splice(0, DECRYPT_BATCH);
      let verdicts: Array<ClientError | null>;
      try {
        verdicts = await this.gpg.decryptFiles(batch.map((b) => b.cipher), (i) => `message ${batch[i]!.id}`);
      } catch (err) {
        verdicts = batch.map(() => (err instanceof ClientError ? err : new ClientError(String(err))));
        for (const b of batch) b.reject(verdicts[0]);
        await Promise.all(batch.map((b) => this.forget(b)));
        continue;
      }
      await Promise.all(batch.map((b, i) => this.deliver(b, verdicts[i]!)));
    }
  }

  private async deliver(b: Queued, verdict: ClientError | null): Promise<void> {
    try {
      if (verdict) throw new DeliveryError(verdict.message, verdict.exitCode);
      const original = restoreOriginal(fileChunks(b.cipher.slice(0, -'.gpg'.length)));
      await this.dest.deliver(this.crlf ? original : crlfToLf(original), { id: b.id, beforeRename: b.beforeRename });
      b.resolve();
    } catch (err) {
      b.reject(err);
    } finally {
      await this.forget(b);
    }
  }

  /** Removes the message's files (its plaintext too, if gpg wrote one) and frees its place. */
  private async forget(b: Queued): Promise<void> {
    await unlink(b.cipher).catch(() => undefined);
    await unlink(b.cipher.slice(0, -'.gpg'.length)).catch(() => undefined);
    this.release();
  }

  /** Waits for every queued message to be settled, then removes the private folder. */
  async close(): Promise<void> {
    while (this.running.size > 0) await Promise.all(this.running);
    await this.making?.catch(() => undefined);
    if (this.folder) await rm(this.folder, { recursive: true, force: true }).catch(() => undefined);
    this.folder = null;
    this.making = null;
  }
}
