// The web's in-memory state: pending signups, login challenges, tokens, key rotations
// and rate limits. None of it is ever written to disk; a restart forgets it all.
import { randomBytes } from 'node:crypto';
import type { CheckedKey } from '../pgp/index.js';
import { ExpiringMap } from './challenge.js';
import { KeyedLimiter, TokenBucket } from './ratelimit.js';
import { DEFAULT_LIMITS, type WebDeps, type WebLimits } from './types.js';

export interface PendingSignup {
  id: string;
  /** Anti-CSRF token of the confirm form (the pages); compared in constant time. */
  csrf: string;
  key: CheckedKey;
  codeHash: Buffer;
  challenge: string;
  expiresAt: number;
  attemptsLeft: number;
}

export interface AuthChallenge {
  username: string;
  fingerprint: string;
  codeHash: Buffer;
}

export interface Session {
  username: string;
  expiresAt: number;
}

export interface PendingRotation {
  username: string;
  key: CheckedKey;
  codeHash: Buffer;
}

export interface Web {
  deps: WebDeps;
  limits: WebLimits;
  /** Milliseconds since the epoch, from the injected clock. */
  now(): number;
  date(): Date;
  signups: ExpiringMap<PendingSignup>;
  challenges: ExpiringMap<AuthChallenge>;
  /** By hash of the bearer token. */
  sessions: ExpiringMap<Session>;
  rotations: ExpiringMap<PendingRotation>;
  buckets: {
    signup: TokenBucket;
    answer: TokenBucket;
    auth: TokenBucket;
    authUser: KeyedLimiter;
  };
  /** HMAC key of the front page's anti-CSRF tokens; made at start, memory only. */
  formSecret: Buffer;
}

export function createWeb(deps: WebDeps): Web {
  const limits: WebLimits = { ...DEFAULT_LIMITS, ...deps.limits };
  const date = deps.now ?? (() => new Date());
  const now = (): number => date().getTime();
  const t = now();
  return {
    deps,
    limits,
    now,
    date,
    signups: new ExpiringMap(limits.maxPendingSignups),
    challenges: new ExpiringMap(10_000),
    sessions: new ExpiringMap(10_000),
    rotations: new ExpiringMap(1000),
    buckets: {
      signup: new TokenBucket(limits.signupBurst, limits.signupPerMinute, t),
      answer: new TokenBucket(limits.answerBurst, limits.answerPerMinute, t),
      auth: new TokenBucket(limits.authBurst, limits.authPerMinute, t),
      authUser: new KeyedLimiter(limits.authPerUserBurst, limits.authPerUserPerMinute),
    },
    formSecret: randomBytes(32),
  };
}

/** The onion host name (no scheme, no slash), or null. */
export function onionHost(web: Web): string | null {
  let raw: string | null = null;
  try {
    raw = web.deps.onionAddress();
  } catch {
    raw = null;
  }
  if (!raw) return null;
  const host = raw.trim().replace(/^https?:\/\//i, '').replace(/\/+$/, '').toLowerCase();
  return /^[a-z2-7]{56}\.onion$/.test(host) || /^[a-z0-9.-]+\.onion$/.test(host) ? host : null;
}

/** The address a client should use: the onion when known, else the Host this request came to. */
export function serverFor(web: Web, host: string): { url: string; noTor: boolean; onion: string | null } {
  const onion = onionHost(web);
  if (onion) return { url: `http://${onion}`, noTor: false, onion };
  const h = host.toLowerCase();
  if (/^[a-z0-9.-]+\.onion(:\d+)?$/.test(h)) return { url: `http://${h}`, noTor: false, onion: h.replace(/:\d+$/, '') };
  // Development: the loopback listener itself (kzymy-client wants --no-tor for that).
  const safe = /^[a-z0-9.:[\]-]+$/.test(h) ? h : '127.0.0.1';
  return { url: `http://${safe}`, noTor: true, onion: null };
}
