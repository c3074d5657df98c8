// Each user's Maildir usage (messages, bytes, the oldest) as this process knows it: read from
// the folders at most every ttlMs, and kept current meanwhile by every change the store makes
// (or hears of from another process of the server). A change made while a scan reads the
// folders is reconciled by base name when the scan ends, and the base names counted are kept,
// so a report that arrives after a scan already saw its change (another process's report is
// sent after its rename or unlink, and may be read after a scan) is not counted twice.
import type { Usage } from './errors.js';
import { baseOf } from './names.js';

/** A message as a scan finds it. */
export interface Scanned {
  id: string;
  size: number;
  receivedAt: number;
}

/** Cached usage of one user's maildir. */
interface UsageCache {
  count: number;
  bytes: number;
  oldest: number | null;
  scannedAt: number;
  /** The base names counted: what makes a report idempotent (about 100 bytes a message). */
  names: Set<string>;
}

/**
 * Changes made while a usage scan of the same user is reading the folders: the scan may or
 * may not have seen them, so they are reconciled by base name when it ends.
 */
interface ScanInFlight {
  promise: Promise<UsageCache>;
  added: Map<string, { size: number; receivedAt: number }>;
  removed: Set<string>;
}

export class UsageTracker {
  private readonly cache = new Map<string, UsageCache>();
  private readonly scans = new Map<string, ScanInFlight>();

  constructor(
    private readonly ttlMs: number,
    private readonly now: () => number,
    private readonly scan: (user: string) => Promise<Scanned[]>,
  ) {}

  /** Bytes stored for `user` as known right now, or null when no scan is cached. */
  cachedBytes(user: string): number | null {
    return this.cache.get(user)?.bytes ?? null;
  }

  async usage(user: string): Promise<Usage> {
    let cached = this.cache.get(user);
    if (!cached || this.now() - cached.scannedAt >= this.ttlMs) cached = await this.rescan(user);
    return {
      count: cached.count,
      bytes: cached.bytes,
      oldest: cached.oldest === null ? null : new Date(Math.floor(cached.oldest)),
    };
  }

  /** Forgets what is cached for `user` (the next usage() reads the folders). */
  forget(user: string): void {
    this.cache.delete(user);
  }

  added(user: string, id: string, size: number, receivedAt: number): void {
    const base = baseOf(id);
    const scan = this.scans.get(user);
    if (scan) {
      scan.added.set(base, { size, receivedAt });
      scan.removed.delete(base);
    }
    const c = this.cache.get(user);
    if (!c || c.names.has(base)) return;
    c.names.add(base);
    c.count++;
    c.bytes += size;
    if (c.oldest === null || receivedAt < c.oldest) c.oldest = receivedAt;
  }

  removed(user: string, id: string, size: number, receivedAt: number): void {
    const base = baseOf(id);
    const scan = this.scans.get(user);
    if (scan) {
      scan.removed.add(base);
      scan.added.delete(base);
    }
    const c = this.cache.get(user);
    if (!c || !c.names.delete(base)) return;
    if (c.oldest !== null && receivedAt <= c.oldest) {
      // The next oldest is unknown without reading the folders: rescan on next usage().
      this.cache.delete(user);
      return;
    }
    c.count--;
    c.bytes = Math.max(0, c.bytes - size);
  }

  /** One scan per user at a time; changes made meanwhile are reconciled (see ScanInFlight). */
  private rescan(user: string): Promise<UsageCache> {
    const inFlight = this.scans.get(user);
    if (inFlight) return inFlight.promise;
    const state: ScanInFlight = { promise: Promise.resolve(null as never), added: new Map(), removed: new Set() };
    state.promise = (async () => {
      try {
        const scannedAt = this.now();
        const byBase = new Map<string, { size: number; receivedAt: number }>();
        for (const e of await this.scan(user)) byBase.set(baseOf(e.id), e);
        for (const [base, e] of state.added) byBase.set(base, e);
        for (const base of state.removed) byBase.delete(base);
        const cache: UsageCache = { count: 0, bytes: 0, oldest: null, scannedAt, names: new Set(byBase.keys()) };
        for (const e of byBase.values()) {
          cache.count++;
          cache.bytes += e.size;
          if (cache.oldest === null || e.receivedAt < cache.oldest) cache.oldest = e.receivedAt;
        }
        this.cache.set(user, cache);
        return cache;
      } finally {
        this.scans.delete(user);
      }
    })();
    this.scans.set(user, state);
    return state.promise;
  }
}
