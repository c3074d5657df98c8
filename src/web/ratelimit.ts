// Token buckets. The web only ever sees tor's loopback connections, so there is no
// client address to limit by: limits are global, or per username / pending signup.
import { WebError } from './errors.js';

export class TokenBucket {
  private tokens: number;
  private last: number;

  constructor(
    private readonly capacity: number,
    private readonly perMinute: number,
    now: number,
  ) {
    this.tokens = capacity;
    this.last = now;
  }

  /** Takes one token; returns 0 on success, else the seconds to wait. */
  take(now: number): number {
    const elapsed = Math.max(0, now - this.last);
    this.last = now;
    this.tokens = Math.min(this.capacity, this.tokens + (elapsed * this.perMinute) / 60_000);
    if (this.tokens >= 1) {
      this.tokens -= 1;
      return 0;
    }
    if (this.perMinute <= 0) return 3600;
    return Math.max(1, Math.ceil(((1 - this.tokens) * 60_000) / this.perMinute / 1000));
  }

  full(now: number): boolean {
    const elapsed = Math.max(0, now - this.last);
    return this.tokens + (elapsed * this.perMinute) / 60_000 >= this.capacity;
  }
}

/** Buckets by key, with a bound on how many are kept (full buckets are forgotten first). */
export class KeyedLimiter {
  private readonly buckets = new Map<string, TokenBucket>();

  constructor(
    private readonly capacity: number,
    private readonly perMinute: number,
    private readonly maxKeys = 10_000,
  ) {}

  take(key: string, now: number): number {
    let b = this.buckets.get(key);
    if (!b) {
      if (this.buckets.size >= this.maxKeys) {
        for (const [k, v] of this.buckets) if (v.full(now)) this.buckets.delete(k);
        if (this.buckets.size >= this.maxKeys) return 60;
      }
      b = new TokenBucket(this.capacity, this.perMinute, now);
      this.buckets.set(key, b);
    }
    return b.take(now);
  }
}

/** Throws 429 with Retry-After when the bucket is empty. */
export function limit(wait: number, message = 'Too many requests right now. Wait a little and try again.'): void {
  if (wait > 0) throw new WebError(429, 'rate-limited', message, { 'Retry-After': String(wait) });
}
