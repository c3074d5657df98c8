// The web's in-memory state: pending signups, used login challenges, tokens, key
// rotations and rate limits. None of it is ever written to disk; a restart forgets it all.
// Login challenges themselves are not stored: their ids carry their own HMAC.
import { randomBytes } from 'node:crypto';
import { isLoopbackHost } from '../config/hosts.js';
import type { CheckedKey } from '../pgp/index.js';
import { ExpiringMap } from './challenge.js';
import { DEFAULT_CLIENT_BUNDLE, loadClientBundle, type ClientBundle } from './client-download.js';
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
  /** Set while its account is being written: a second confirm waits for the outcome instead. */
  confirming?: boolean;
  /** A confirm failed to save: if the account was kept after all (a failed fsync), a retry adopts it. */
  saveFailed?: boolean;
}

/** A login decryption challenge (for a key that cannot sign now), shared by every asker. */
export interface FallbackChallenge {
  fingerprint: string;
  challenge: string;
  codeHash: Buffer;
  expiresAt: number;
}

export interface Session {
  username: string;
  /** The key she logged in with (kept current by a key rotation): what to forget with her account. */
  fingerprint: string;
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
  /** Login challenge ids already answered, until they expire (single use). */
  usedChallenges: ExpiringMap<true>;
  /** Live login decryption challenges, by username and server name: at most two each. */
  fallbacks: ExpiringMap<FallbackChallenge[]>;
  /** Fallback encryptions under way, by the same key (so parallel askers share one). */
  fallbacksInFlight: Map<string, Promise<FallbackChallenge>>;
  /** Whether a registered key can make a signature now, by fingerprint, re-checked each minute. */
  signable: Map<string, { keyId: string; canSign: boolean; checkedAt: number }>;
  /** By hash of the bearer token. */
  sessions: ExpiringMap<Session>;
  rotations: ExpiringMap<PendingRotation>;
  buckets: {
    /** Signups started past the cheap checks: key check and encryption. */
    signup: TokenBucket;
    /** Login decryption challenges encrypted (keys that cannot sign). */
    challengeEncrypt: TokenBucket;
    /** Failed login proofs, per username. */
    authFail: KeyedLimiter;
    /** Keys checked for POST /api/v1/key: all users, and per user. */
    keyCheck: TokenBucket;
    keyUser: KeyedLimiter;
  };
  /** HMAC key of the front page's anti-CSRF tokens; made at start, memory only. */
  formSecret: Buffer;
  /** HMAC key of login challenge ids; made at start, memory only. */
  challengeSecret: Buffer;
  /** The single-file kzymy-client and its SHA-256, read at start; null when it was not built. */
  client: ClientBundle | null;
}

export function createWeb(deps: WebDeps): Web {
  const limits: WebLimits = { ...DEFAULT_LIMITS, ...deps.limits };
  const date = deps.now ?? (() => new Date());
  const now = (): number => date().getTime();
  const t = now();
  const bundle = loadClientBundle(deps.clientBundle ?? DEFAULT_CLIENT_BUNDLE);
  if ('missing' in bundle) {
    deps.logger.warn(
      { evt: 'client-bundle-missing', code: bundle.missing },
      'the single-file kzymy-client was not found (run npm run build): the pages say it cannot be downloaded here',
    );
  }
  return {
    deps,
    limits,
    now,
    date,
    signups: new ExpiringMap(limits.maxPendingSignups),
    usedChallenges: new ExpiringMap(100_000),
    fallbacks: new ExpiringMap(10_000),
    fallbacksInFlight: new Map(),
    signable: new Map(),
    sessions: new ExpiringMap(10_000),
    rotations: new ExpiringMap(1000),
    buckets: {
      signup: new TokenBucket(limits.signupBurst, limits.signupPerMinute, t),
      challengeEncrypt: new TokenBucket(limits.challengeEncryptBurst, limits.challengeEncryptPerMinute, t),
      authFail: new KeyedLimiter(limits.authFailBurst, limits.authFailPerMinute),
      keyCheck: new TokenBucket(limits.keyCheckBurst, limits.keyCheckPerMinute, t),
      keyUser: new KeyedLimiter(limits.keyPerUserBurst, limits.keyPerUserPerMinute),
    },
    formSecret: randomBytes(32),
    challengeSecret: randomBytes(32),
    client: 'missing' in bundle ? null : bundle,
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

/** The Host header of a request, lower-cased, when it is a plain host name or address (with an optional port). */
export function requestHost(host: string): string | null {
  const h = host.toLowerCase();
  if (h.length > 300) return null;
  return /^([a-z0-9-]+(\.[a-z0-9-]+)*|\[[0-9a-f:.]+\])(:\d{1,5})?$/.test(h) ? h : null;
}

/** A request's Host (with an optional port) that names this machine. */
function isLoopbackName(host: string): boolean {
  return isLoopbackHost(host.startsWith('[') ? host.slice(1, host.indexOf(']')) : host.replace(/:\d+$/, ''));
}

/**
 * Whether `name` (a "server:" line of a login statement) names this server: its own onion
 * host when known, or the request's Host when that is a loopback name (development, tests).
 * A statement signed for another server is never accepted here.
 */
export function acceptsServerName(web: Web, name: string, host: string): boolean {
  const onion = onionHost(web);
  if (onion && name === onion) return true;
  const h = requestHost(host);
  return h !== null && name === h && isLoopbackName(h);
}
