// Authentication without passwords. Login: the client signs a statement it builds itself
// (server, username, fingerprint, a server nonce) with the registered key; the server
// verifies the signature. A key that cannot sign now (its primary key expired) gets a
// decryption challenge instead, in kzymy's exact format, and answers with the code.
// A right proof buys a short-lived bearer token, kept in memory only (as a hash).
//
// Against strangers (a username is public): asking for a challenge costs the server an
// HMAC and stores nothing; only failed proofs count against a user, and a right proof is
// accepted whatever that count says.
import type { PublicKey } from 'openpgp';
import { PGP_CONFIG } from '../pgp/index.js';
import type { User } from '../registry/index.js';
import {
  challengeIdValid,
  codeMatches,
  encryptChallenge,
  hashCode,
  makeChallengeId,
  newCode,
  newNonce,
  parseChallengeId,
  parseLoginStatement,
  randomId,
  secretKey,
} from './challenge.js';
import { acceptsServerName, onionHost, requestHost, type FallbackChallenge, type Web } from './context.js';
import { WebError } from './errors.js';
import { limit, tooMany, tryAgainIn } from './ratelimit.js';
import { readOneSignature, signatureVerifies } from './signature.js';

export const DISABLED = 'This account is disabled by the operator. Mail is not accepted for it and it cannot be used.';

function activeUser(web: Web, username: unknown): User {
  if (typeof username !== 'string' || !/^[a-z0-9]{1,63}$/i.test(username.trim())) {
    throw new WebError(400, 'bad-request', 'Give the username (12 letters and digits) to authenticate.');
  }
  const user = web.deps.registry.get(username.trim().toLowerCase());
  if (!user) throw new WebError(404, 'no-such-user', 'There is no account with that username.');
  if (user.disabled) throw new WebError(403, 'account-disabled', DISABLED);
  return user;
}

/** The server name for this request, refused unless a login statement naming it would be accepted. */
function loginServerName(web: Web, host: string): string {
  const h = requestHost(host);
  if (h && acceptsServerName(web, h, host)) return h;
  const onion = onionHost(web);
  throw new WebError(
    400,
    'wrong-server',
    onion
      ? `This server takes logins only at its onion address ${onion}; use that address.`
      : 'This server takes logins only at its onion address, which is not published yet; try again later.',
  );
}

async function registeredKey(web: Web, user: User): Promise<PublicKey> {
  try {
    return await web.deps.keys.get(user.fingerprint, user.keyId, () => web.deps.registry.publicKey(user));
  } catch {
    throw new WebError(503, 'key-unreadable', 'The key stored for this account cannot be read; the operator has to look at it.');
  }
}

/** Whether the registered key can make a signature that verifies now (cached for a minute). */
async function canSign(web: Web, user: User, key: PublicKey, now: number): Promise<boolean> {
  const hit = web.signable.get(user.fingerprint);
  if (hit && hit.keyId === user.keyId && now - hit.checkedAt < 60_000) return hit.canSign;
  let ok: boolean;
  try {
    await key.getSigningKey(undefined, new Date(now), undefined, PGP_CONFIG);
    ok = true;
  } catch {
    ok = false;
  }
  if (web.signable.size >= 10_000) web.signable.clear();
  web.signable.set(user.fingerprint, { keyId: user.keyId, canSign: ok, checkedAt: now });
  return ok;
}

function asTime(t: Date | number | null): number | null {
  if (t === null || t === Infinity) return null;
  return t instanceof Date ? t.getTime() : t;
}

const UNUSABLE =
  'The key registered for this account can neither sign nor be encrypted to, not even as of its expiry, so nobody can log in with it; the operator has to look at it.';

/**
 * A moment at which the key could encrypt: now, or (for a key that has expired, primary
 * or encryption subkey) a second before one of its expiry times.
 */
export async function encryptionDate(key: PublicKey, now: Date): Promise<Date> {
  const usable = async (d: Date): Promise<boolean> => {
    try {
      if (await key.isRevoked(undefined, undefined, now, PGP_CONFIG)) return false;
      await key.getEncryptionKey(undefined, d, undefined, PGP_CONFIG);
      return true;
    } catch {
      return false;
    }
  };
  if (await usable(now)) return now;
  const times: number[] = [];
  try {
    const t = asTime(await key.getExpirationTime(undefined, PGP_CONFIG));
    if (t !== null) times.push(t);
  } catch {
    // no primary expiry to be had
  }
  for (const sub of key.subkeys) {
    try {
      const t = asTime(await sub.getExpirationTime(now, PGP_CONFIG));
      if (t !== null) times.push(t);
    } catch {
      // a subkey without a valid binding
    }
  }
  const past = [...new Set(times)].filter((t) => t <= now.getTime()).sort((a, b) => b - a);
  for (const t of past) {
    const d = new Date(t - 1000);
    if (await usable(d)) return d;
  }
  throw new WebError(409, 'key-unusable', UNUSABLE);
}

/** Time left on a shared fallback challenge below which a fresh one is made. */
const FALLBACK_MIN_LEFT_MS = 60_000;

/**
 * The live login decryption challenge for this user and server name, shared by every
 * asker; a new one is encrypted only when none has a minute left (and only one at a time).
 */
async function fallbackChallenge(web: Web, user: User, key: PublicKey, server: string, now: number): Promise<FallbackChallenge> {
  const slot = `${user.username}\n${server}`;
  const live = (web.fallbacks.get(slot, now) ?? []).filter((f) => f.fingerprint === user.fingerprint && f.expiresAt > now);
  const newest = live[live.length - 1];
  if (newest && newest.expiresAt - now >= FALLBACK_MIN_LEFT_MS) return newest;
  const running = web.fallbacksInFlight.get(slot);
  if (running) return running;
  const work = (async (): Promise<FallbackChallenge> => {
    // At the onion name this costs at most one encryption per user every few minutes, so
    // it is not charged; loopback names (any of 127.0.0.0/8, with any port) share a budget,
    // so that churning through them cannot use up what the onion name needs.
    if (server !== onionHost(web)) {
      limit(web.buckets.challengeEncrypt.take(now), 'Too many logins are waiting right now.');
    }
    const date = await encryptionDate(key, web.date());
    const code = newCode();
    const challenge = await encryptChallenge(
      key,
      { purpose: 'login', server, username: user.username, fingerprint: user.fingerprint, code },
      date,
    );
    const entry: FallbackChallenge = { fingerprint: user.fingerprint, challenge, codeHash: hashCode(code), expiresAt: now + web.limits.challengeTtlMs };
    // The previous one stays answerable until it expires: someone may be decrypting it.
    const current = (web.fallbacks.get(slot, now) ?? []).filter((f) => f.fingerprint === user.fingerprint && f.expiresAt > now);
    const kept = [...current.slice(-1), entry];
    if (!web.fallbacks.set(slot, kept, entry.expiresAt, now)) {
      throw tooMany('Too many logins are waiting right now.', 60);
    }
    return entry;
  })();
  web.fallbacksInFlight.set(slot, work);
  try {
    return await work;
  } finally {
    web.fallbacksInFlight.delete(slot);
  }
}

export interface IssuedChallenge {
  challengeId: string;
  nonce: string;
  expiresAt: Date;
  fingerprint: string;
  /** Only when the registered key cannot sign now. */
  challenge?: string;
}

/** A login challenge. Costs an HMAC; stores nothing, except one shared fallback per user. */
export async function createChallenge(web: Web, username: unknown, host: string): Promise<IssuedChallenge> {
  const user = activeUser(web, username);
  const server = loginServerName(web, host);
  const now = web.now();
  const key = await registeredKey(web, user);
  const nonce = newNonce();
  let expiresAt = now + web.limits.challengeTtlMs;
  let challenge: string | undefined;
  if (!(await canSign(web, user, key, now))) {
    const fb = await fallbackChallenge(web, user, key, server, now);
    challenge = fb.challenge;
    expiresAt = fb.expiresAt;
  }
  const challengeId = makeChallengeId(web.challengeSecret, { username: user.username, fingerprint: user.fingerprint, expiresAt, nonce });
  return { challengeId, nonce, expiresAt: new Date(expiresAt), fingerprint: user.fingerprint, ...(challenge ? { challenge } : {}) };
}

const BAD_CHALLENGE = 'This challenge is unknown, expired or already used. Ask for a new challenge.';
const BAD_PROOF = 'The signature or code does not prove the registered key for this challenge. Ask for a new challenge and try again.';
const TOO_MANY_FAILED = 'Too many failed logins for this account.';

/** The proof of a token request: a signed statement, or a code for a fallback challenge. */
export interface TokenRequest {
  challengeId: unknown;
  statement?: unknown;
  signature?: unknown;
  code?: unknown;
}

export async function issueToken(web: Web, req: TokenRequest, host: string): Promise<{ token: string; username: string; expiresAt: Date }> {
  const now = web.now();
  // Cheap checks first: the id's own HMAC, its expiry, single use.
  const parsed = parseChallengeId(req.challengeId);
  if (!parsed || parsed.expiresAt <= now) throw new WebError(401, 'bad-challenge', BAD_CHALLENGE);
  const user = web.deps.registry.get(parsed.username);
  // The key must still be the one the challenge was made for (the HMAC covers the fingerprint).
  if (!user || !challengeIdValid(web.challengeSecret, parsed, user.fingerprint)) throw new WebError(401, 'bad-challenge', BAD_CHALLENGE);
  const id = req.challengeId as string;
  if (web.usedChallenges.get(id, now)) throw new WebError(401, 'bad-challenge', BAD_CHALLENGE);
  if (user.disabled) throw new WebError(403, 'account-disabled', DISABLED);

  let proven = false;
  if (req.statement !== undefined || req.signature !== undefined) {
    const st = parseLoginStatement(req.statement);
    const fits =
      st !== null &&
      st.username === user.username &&
      st.fingerprint === user.fingerprint &&
      st.nonce === parsed.nonce &&
      acceptsServerName(web, st.server, host);
    if (fits) {
      const key = await registeredKey(web, user);
      const sig = await readOneSignature(req.signature, key);
      if (sig) proven = await signatureVerifies(req.statement as string, sig, key, now);
    }
  } else if (req.code !== undefined) {
    const live = web.fallbacks.get(`${user.username}\n${requestHost(host) ?? ''}`, now) ?? [];
    // Every hash is compared, so the time taken does not tell which one matched.
    proven = live.map((f) => f.fingerprint === user.fingerprint && f.expiresAt > now && codeMatches(f.codeHash, req.code)).includes(true);
  } else {
    throw new WebError(400, 'bad-request', 'Send the challengeId with a statement and its signature (or with the code of a decryption challenge).');
  }

  if (!proven) {
    // Only failures count against the user; a right proof never meets this bucket.
    limit(web.buckets.authFail.take(user.username, now), TOO_MANY_FAILED);
    throw new WebError(401, 'bad-proof', BAD_PROOF);
  }
  // Checked again after the awaits above: the first right answer wins, a replay does not.
  if (web.usedChallenges.get(id, now)) throw new WebError(401, 'bad-challenge', BAD_CHALLENGE);
  if (!web.usedChallenges.set(id, true, parsed.expiresAt, now)) {
    throw new WebError(503, 'unavailable', `Too many logins are under way right now. ${tryAgainIn(60)}`, { 'Retry-After': '60' });
  }
  if (req.code !== undefined) web.fallbacks.deleteWhere((_v, k) => k.startsWith(`${user.username}\n`));
  const token = randomId('kzt_');
  const expiresAt = now + web.limits.tokenTtlMs;
  if (!web.sessions.set(secretKey(token), { username: user.username, fingerprint: user.fingerprint, expiresAt }, expiresAt, now)) {
    throw new WebError(503, 'unavailable', 'Too many sessions are open right now. Try again in a few minutes.');
  }
  web.deps.logger.info({ evt: 'token-issued' }, 'auth');
  return { token, username: user.username, expiresAt: new Date(expiresAt) };
}
