// What a copy and the server count space through: the hold one copy (or a spool) keeps while
// it is written, the server-wide Space that opens holds, and the sizes both reckon with. The
// ledger in space.ts implements them in the process that owns the count; remote-space.ts
// mirrors them in an SMTP worker.

/**
 * A file takes whole blocks of this size on the file systems kzymy is run on (ext4, XFS, btrfs,
 * tmpfs): a copy's written bytes count for the disk rounded up to it, and one extra block per
 * copy in its reservation covers that rounding before the write lands.
 */
export const FILE_SLACK = 4096;
/** Ciphertext written for `plain` bytes of mail: base64 armor (4/3, plus line breaks), packets, MIME frame. */
export function ciphertextEstimate(plain: number): number {
  return Math.ceil(plain * 1.37) + 2048;
}

/** What one copy (or a spool) holds while it is written: in this process or, from an SMTP worker, in the server process. */
export interface SpaceHold {
  /** Reserves up to `total` bytes (an estimate at DATA): throws 452 4.2.2 / 4.3.1. */
  reserve(total: number): Promise<void>;
  /** Before a chunk of `bytes` is written: grows the reservation to cover it. */
  beforeWrite(bytes: number): Promise<void>;
  /** Once that chunk's write has landed (a write that failed is never reported). */
  afterWrite(bytes: number): void;
  /** Before the rename into new/: the final size is within the reservation, or grows it. */
  settle(size: number): Promise<void>;
  /** On any end. */
  release(): void;
}

/** The space counted for the whole server: quota per user and the free-disk floor. */
export interface Space {
  /** A new, empty hold for one copy to `user`; `signal` ends any wait inside it. */
  open(user: string, signal?: AbortSignal): SpaceHold;
  /** A hold for a transaction's spool: it counts for the disk floor, not for any quota. */
  openSpool(signal?: AbortSignal): SpaceHold;
  /**
   * The early answer at RCPT: stored plus in-flight bytes plus the announced SIZE within the
   * quota, and room above the disk floor; else throws 452 4.2.2 / 4.3.1.
   */
  admit(user: string, declaredSize: number): Promise<void>;
}
