// What the web needs from the rest of kzymy, and its tunable limits.
import type { Config } from '../config/index.js';
import type { Logger } from '../config/log.js';
import type { Registry } from '../registry/index.js';
import type { MaildirStore } from '../maildir/index.js';
import type { KeyCache } from '../pgp/index.js';

export interface WebLimits {
  /** Pending signups live this long in memory. */
  signupTtlMs: number;
  /** Wrong codes a pending signup survives; the last one ends it with 429. */
  signupAttempts: number;
  /** Pending signups held at once (memory bound). */
  maxPendingSignups: number;
  /** Signups started: burst and sustained rate (all callers share it: tor is one loopback peer). */
  signupBurst: number;
  signupPerMinute: number;
  /** Code submissions (signup confirm, login, rotation): burst and rate, all callers. */
  answerBurst: number;
  answerPerMinute: number;
  /** Login challenges: all callers, and per username. */
  authBurst: number;
  authPerMinute: number;
  authPerUserBurst: number;
  authPerUserPerMinute: number;
  /** Login challenge lifetime. */
  challengeTtlMs: number;
  /** Bearer token lifetime. */
  tokenTtlMs: number;
  /** Key rotation challenge lifetime. */
  rotationTtlMs: number;
  /** Largest key accepted, in bytes. */
  maxKeyBytes: number;
  /** Largest JSON body, in bytes. */
  maxJsonBytes: number;
  /** Lifetime of the anti-CSRF token of the front page form. */
  formTtlMs: number;
}

export const DEFAULT_LIMITS: WebLimits = {
  signupTtlMs: 15 * 60_000,
  signupAttempts: 5,
  maxPendingSignups: 1000,
  signupBurst: 20,
  signupPerMinute: 20,
  answerBurst: 60,
  answerPerMinute: 120,
  authBurst: 60,
  authPerMinute: 120,
  authPerUserBurst: 10,
  authPerUserPerMinute: 6,
  challengeTtlMs: 5 * 60_000,
  tokenTtlMs: 30 * 60_000,
  rotationTtlMs: 15 * 60_000,
  maxKeyBytes: 64 * 1024,
  maxJsonBytes: 256 * 1024,
  formTtlMs: 2 * 60 * 60_000,
};

export interface WebDeps {
  config: Config;
  registry: Registry;
  maildir: MaildirStore;
  keys: KeyCache;
  logger: Logger;
  /** The onion host name once tor has written it (with or without http://), else null. */
  onionAddress: () => string | null;
  /** Clock, for tests. */
  now?: () => Date;
  /** Overrides of DEFAULT_LIMITS, for tests and operators. */
  limits?: Partial<WebLimits>;
}
