// The space ledger: one per process, shared by every SMTP session. It counts the bytes each
// copy actually writes while it is written, so that a burst of parallel deliveries cannot pass
// a user's quota nor the free-disk floor between two RCPT checks.
//
// - Quota: a user's stored bytes (the Maildir store's count, kept current by deliver and remove)
//   plus the bytes of every copy in flight for that user stay within limits.quotaBytes.
// - Disk floor: free space on the Maildir file system, as last read with statfs and corrected
//   by every block written or freed by this process since that reading, minus what open
//   reservations still expect to write, stays at or above limits.minFreeBytes.
//
// A copy reserves an estimate when its transaction reaches DATA, grows its reservation before
// each chunk is written (the chunk counts as written once its write has landed), and settles
// with its final size before the rename into new/. A check
// and the update it guards run without an await in between, so the in-flight sums are exact.
import { statfs } from 'node:fs/promises';
import type { Config } from '../config/index.js';
import type { MaildirStore } from '../maildir/index.js';
import { reply } from './replies.js';
import { FILE_SLACK, type Space, type SpaceHold } from './space-hold.js';

/** The owner of spool reservations: no username is empty. */
const SPOOL = '';
/** statfs is read again once its reading is older than this; the counters correct it meanwhile. */
const STATFS_TTL_MS = 250;

export class SpaceLedger implements Space {
  /** Bytes reserved by open reservations, per user. */
  private readonly perUser = new Map<string, number>();
  /** Sum over open reservations of (reserved - written): what they still expect to write. */
  private outstanding = 0;
  /** Bytes written by reserved copies since the start (only grows). */
  private written = 0;
  /** Bytes of copies written and then removed before their rename (only grows). */
  private freed = 0;
  private disk: { free: number; written: number; freed: number; at: number } | null = null;
  private reading: Promise<void> | null = null;

  constructor(
    private readonly config: Pick<Config, 'maildirRoot' | 'limits'>,
    private readonly maildir: MaildirStore,
    private readonly statfsTtlMs = STATFS_TTL_MS,
  ) {}

  /** A reservation for a transaction's spool: it counts for the disk floor, not for any quota. */
  openSpool(signal?: AbortSignal): Reservation {
    return new Reservation(this, SPOOL, signal);
  }

  /** A new, empty reservation for one copy to `user`; `signal` ends any wait inside it. */
  open(user: string, signal?: AbortSignal): Reservation {
    return new Reservation(this, user, signal);
  }

  async admit(user: string, declaredSize: number): Promise<void> {
    const { quotaBytes, minFreeBytes } = this.config.limits;
    const usage = await this.maildir.usage(user);
    if (usage.bytes + this.inFlight(user) + declaredSize > quotaBytes) throw reply.overQuota();
    if ((await this.freeBytes()) - declaredSize < minFreeBytes) throw reply.diskFull();
  }

  /** Bytes in flight for `user` (for the early answer at RCPT). */
  inFlight(user: string): number {
    return this.perUser.get(user) ?? 0;
  }

  /** Free bytes on the Maildir file system minus what open reservations still expect to write. */
  async freeBytes(): Promise<number> {
    await this.readDisk();
    return this.freeNow();
  }

  private freeNow(): number {
    const d = this.disk!;
    return d.free - (this.written - d.written) + (this.freed - d.freed) - this.outstanding;
  }

  private async readDisk(): Promise<void> {
    if (this.disk && Date.now() - this.disk.at < this.statfsTtlMs) return;
    if (!this.reading) {
      // The counters are taken before the call: a write that lands meanwhile is counted twice
      // (in the reading and in the correction), never not at all.
      const written = this.written;
      const freed = this.freed;
      this.reading = statfs(this.config.maildirRoot).then(
        (s) => {
          this.disk = { free: s.bavail * s.bsize, written, freed, at: Date.now() };
          this.reading = null;
        },
        (err: unknown) => {
          this.reading = null;
          throw err;
        },
      );
    }
    await this.reading;
  }

  /** Bytes written by refused copies whose files are not removed yet: they come back soon. */
  private dying = 0;
  private waiting: Array<() => void> = [];

  /** Raises reservation `r` by `delta` bytes, or throws the 452 reply when a limit would be passed. */
  async grow(r: Reservation, delta: number, expectWrite: boolean): Promise<void> {
    if (delta <= 0) return;
    const { quotaBytes, minFreeBytes } = this.config.limits;
    for (;;) {
      r.signal?.throwIfAborted();
      const quota = r.user !== SPOOL;
      if (quota && this.maildir.cachedBytes(r.user) === null) await this.maildir.usage(r.user);
      await this.readDisk();
      // From here on no await: the check and the update see the same sums.
      const stored = quota ? (this.maildir.cachedBytes(r.user) ?? 0) : 0;
      const mine = this.inFlight(r.user);
      const add = expectWrite ? delta : 0;
      let refusal = quota && stored + mine + delta > quotaBytes ? reply.overQuota() : null;
      if (!refusal && this.freeNow() - add < minFreeBytes) {
        // Copies refused a moment ago free their bytes as soon as their files are gone: when
        // that would make room, wait for it instead of refusing one copy after the other.
        if (this.dying > 0 && this.freeNow() + this.dying - add >= minFreeBytes) {
          await this.nextRelease(r.signal);
          continue;
        }
        refusal = reply.diskFull();
      }
      if (refusal) {
        this.refuse(r);
        throw refusal;
      }
      this.perUser.set(r.user, mine + delta);
      this.outstanding += add;
      r.reserved += delta;
      r.expected += add;
      return;
    }
  }

  private nextRelease(signal?: AbortSignal): Promise<void> {
    return new Promise<void>((resolve) => {
      const done = () => {
        signal?.removeEventListener('abort', done);
        resolve();
      };
      signal?.addEventListener('abort', done, { once: true });
      this.waiting.push(done);
    });
  }

  /**
   * A refused copy gives back its quota and what it had not issued yet at once: copies
   * growing side by side must not all be refused because each still counts the others. Its
   * written bytes count for the disk until its file is gone (release).
   */
  private refuse(r: Reservation): void {
    this.dropQuota(r);
    // Its writes already issued still land (afterWrite): until then they stay counted as
    // expected, as statfs cannot see them yet; only the rest is given back now.
    const inFlight = Math.min(r.expected, r.pending);
    this.outstanding -= r.expected - inFlight;
    r.expected = inFlight;
    if (!r.refused) {
      r.refused = true;
      this.dying += r.allocated;
    }
  }

  private dropQuota(r: Reservation): void {
    const left = (this.perUser.get(r.user) ?? 0) - r.reserved;
    if (left > 0) this.perUser.set(r.user, left);
    else this.perUser.delete(r.user);
    r.reserved = 0;
  }

  /**
   * Records `bytes` as written by `r`, once the write has landed: until then they count as
   * expected (outstanding), so a statfs read while they are in flight cannot lose them.
   */
  wrote(r: Reservation, bytes: number): void {
    r.written += bytes;
    // The file system takes whole blocks: a file of 1 byte costs a block of free space.
    const allocated = Math.ceil(r.written / FILE_SLACK) * FILE_SLACK;
    const delta = allocated - r.allocated;
    r.allocated = allocated;
    this.written += delta;
    if (r.refused) this.dying += delta; // landed after its refusal: comes back with its file
    const covered = Math.min(delta, r.expected);
    r.expected -= covered;
    this.outstanding -= covered;
  }

  release(r: Reservation, fileRemoved: boolean): void {
    this.dropQuota(r);
    this.outstanding -= r.expected;
    r.expected = 0;
    if (r.refused) this.dying -= r.allocated;
    if (fileRemoved) this.freed += r.allocated;
    for (const w of this.waiting.splice(0)) w();
  }
}

/**
 * The space one copy holds while it is written. `reserved` counts toward the user's quota;
 * `expected` (reserved but not yet written) toward the disk floor.
 */
export class Reservation implements SpaceHold {
  reserved = 0;
  expected = 0;
  written = 0;
  /** The written bytes rounded up to whole blocks: what they take of the disk. */
  allocated = 0;
  /** Bytes of writes issued (beforeWrite) that have not landed yet (afterWrite). */
  pending = 0;
  refused = false;
  private settled = false;
  private released = false;

  constructor(
    private readonly ledger: SpaceLedger,
    readonly user: string,
    readonly signal?: AbortSignal,
  ) {}

  /** Reserves up to `total` bytes for this copy (an estimate at DATA): throws 452 4.2.2 / 4.3.1. */
  async reserve(total: number): Promise<void> {
    await this.ledger.grow(this, total - this.reserved, true);
  }

  /** Before a chunk of `bytes` is written: grows the reservation to cover it. */
  async beforeWrite(bytes: number): Promise<void> {
    const need = this.written + this.pending + bytes + FILE_SLACK - this.reserved;
    // What the estimate already holds for the disk is spent first; only the rest is new.
    await this.ledger.grow(this, need, true);
    this.pending += bytes;
  }

  /** Once that chunk's write has landed. */
  afterWrite(bytes: number): void {
    this.pending -= bytes;
    this.ledger.wrote(this, bytes);
  }

  /** Before the rename into new/: the final size is within the reservation, or grows it. */
  async settle(size: number): Promise<void> {
    await this.ledger.grow(this, size + FILE_SLACK - this.reserved, false);
    this.settled = true;
  }

  /** On any end; after a failed copy its file is gone and its bytes count as free again. */
  release(): void {
    if (this.released) return;
    this.released = true;
    this.ledger.release(this, !this.settled);
  }

  /** Its writer died: whatever it wrote may still lie in tmp/ (swept later), so nothing counts as freed. */
  abandon(): void {
    if (this.released) return;
    this.released = true;
    this.ledger.release(this, false);
  }

  /** Bytes counted toward the quota now (what a worker's mirror of this reservation is told). */
  get held(): number {
    return this.reserved;
  }
}
