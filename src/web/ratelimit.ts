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

/** "Try again in 40 seconds." / "in 2 minutes.": the one wait time a refusal names. */
export function tryAgainIn(seconds: number): string {
  const s = Math.max(1, Math.ceil(seconds));
  if (s < 90) return `Try again in ${s} second${s === 1 ? '' : 's'}.`;
  const m = Math.ceil(s / 60);
  return `Try again in ${m} minutes.`;
}

/**
 * A 429 refusal: REASON (a sentence without a wait time) followed by the one wait time,
 * the same number as the Retry-After header, so a page or client never shows two.
 */
export function tooMany(reason: string, wait: number, code = 'rate-limited'): WebError {
  const seconds = Math.max(1, Math.ceil(wait));
  return new WebError(429, code, `${reason} ${tryAgainIn(seconds)}`, { 'Retry-After': String(seconds) });
}

/** Throws 429 with Retry-After when the bucket is empty. */
export function limit(wait: number, reason = 'Too many requests right now.'): void {
  if (wait > 0) throw tooMany(reason, wait);
}
