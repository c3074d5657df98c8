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
  /** Login decryption challenges encrypted for a server name other than the onion (keys that cannot sign): all callers. */
  challengeEncryptBurst: number;
  challengeEncryptPerMinute: number;
  /** Failed login proofs per username; a right proof is accepted whatever this bucket holds. */
  authFailBurst: number;
  authFailPerMinute: number;
  /** Keys checked by POST /api/v1/key: all users, and per user. */
  keyCheckBurst: number;
  keyCheckPerMinute: number;
  keyPerUserBurst: number;
  keyPerUserPerMinute: number;
  /** Login challenge lifetime. */
  challengeTtlMs: number;
  /** Bearer token lifetime. */
  tokenTtlMs: number;
  /** Key rotation challenge lifetime. */
  rotationTtlMs: number;
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
  challengeEncryptBurst: 60,
  challengeEncryptPerMinute: 60,
  authFailBurst: 10,
  authFailPerMinute: 6,
  keyCheckBurst: 30,
  keyCheckPerMinute: 30,
  keyPerUserBurst: 5,
  keyPerUserPerMinute: 2,
  challengeTtlMs: 5 * 60_000,
  tokenTtlMs: 30 * 60_000,
  rotationTtlMs: 15 * 60_000,
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
  /** The single-file kzymy-client offered for download; default dist/bundle/kzymy-client.mjs of this build. */
  clientBundle?: string;
}
