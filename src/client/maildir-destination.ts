// The --maildir destination: DIR is the Maildir itself, DIR/{tmp,new,cur} per qmail's
// maildir(5), folders 0700, files 0600. Each message is written by src/maildir's writeMessage.
import { lstat, mkdir, readdir } from 'node:fs/promises';
import path from 'node:path';
import { fsyncPath } from '../config/durable.js';
import { DirSyncer, writeMessage } from '../maildir/index.js';
import { fileError, reason, watch, type Chunks, type DeliveryInfo, type Destination } from './deliver.js';
import { ClientError, type DeliveryError } from './errors.js';

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
   * The file's fsync and the caller's beforeRename run side by side; the rename waits for both.
   */
  async deliver(message: Buffer | Chunks, info?: DeliveryInfo): Promise<number> {
    await this.prepare();
    const source = Buffer.isBuffer(message) ? null : watch(message); // a caller's Buffer is left as it is
    const step = info?.beforeRename;
    let stepFailure: { err: unknown } | null = null;
    const beforeRename = step && ((_size: number, name: string) =>
      step(name).catch((err: unknown) => {
        stepFailure = { err };
        throw err;
      }));
    try {
      const folder = { dir: this.dir, syncNew: () => this.newSync.sync() };
      const done = await writeMessage(folder, source ? source.chunks : message, { wipe: true, beforeRename, beforeRenameDuringSync: true });
      return done.size;
    } catch (err) {
      // The message's own failure and the caller's are theirs; any other is this Maildir's.
      // EEXIST included: that tmp/ file is another writer's.
      const theirs = source?.failure() ?? stepFailure;
      if (theirs) throw theirs.err;
      throw this.writeError(err);
    }
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
    return fileError(`Cannot write to the Maildir ${this.dir}`, err);
  }
}
