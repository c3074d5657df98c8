// Signup, shared by the pages and the API: key in -> challenge out; code in -> account.
// Nothing is created before the right code returns.
import { checkPublicKey, keyRecord, KeyError, MAX_KEY_BYTES } from '../pgp/index.js';
import { RegistryError, type User } from '../registry/index.js';
import { codeMatches, encryptChallenge, hashCode, newCode, randomId } from './challenge.js';
import { requestHost, type PendingSignup, type Web } from './context.js';
import { WebError } from './errors.js';
import { limit, tooMany } from './ratelimit.js';
import { deliverEncrypted, welcomeMail } from './mail.js';

export const REGISTERED =
  'This key is already registered. Use a fresh key for each identity: one key, one account.';

/** Whether the input can be a public key at all, judged without parsing it. */
function looksLikePublicKey(input: string | Uint8Array): boolean {
  if (typeof input === 'string') return input.includes('-----BEGIN PGP PUBLIC KEY BLOCK-----');
  const head = Buffer.from(input.subarray(0, 256)).toString('latin1');
  if (head.includes('-----BEGIN PGP ')) return Buffer.from(input).toString('utf8').includes('-----BEGIN PGP PUBLIC KEY BLOCK-----');
  // A binary key starts with a public-key packet: old format tag 6 (0x98-0x9b) or new format (0xc6).
  const first = input[0] ?? 0;
  return (first >= 0x98 && first <= 0x9b) || first === 0xc6;
}

async function keyProblem(input: string | Uint8Array, now: Date): Promise<WebError> {
  try {
    await checkPublicKey(input, now);
  } catch (err) {
    if (err instanceof KeyError) return new WebError(400, 'bad-key', err.message);
  }
  return new WebError(400, 'bad-key', 'Paste an ASCII-armored OpenPGP public key, or choose a key file.');
}

/**
 * Validates a key for signup or rotation; throws WebError 400 with KeyError's sentence.
 * Cheap checks (size, armor) come first and cost nothing; `spend` is called only before
 * the costly part, parsing and verifying the key.
 */
export async function checkKey(
  web: Web,
  input: string | Uint8Array,
  spend: () => void,
): Promise<Awaited<ReturnType<typeof checkPublicKey>>> {
  const size = typeof input === 'string' ? Buffer.byteLength(input) : input.byteLength;
  if (size === 0 || (typeof input === 'string' && input.trim() === '')) {
    throw new WebError(400, 'bad-key', 'Paste an ASCII-armored OpenPGP public key, or choose a key file.');
  }
  // Refused by its size alone, with the key check's own sentence, before any parsing.
  if (size > MAX_KEY_BYTES) throw await keyProblem(input, web.date());
  if (!looksLikePublicKey(input)) {
    // checkPublicKey refuses such text by its armor lines alone (a secret key is named as
    // one), and an empty binary at once: no parsing either way.
    const text = typeof input === 'string' ? input : Buffer.from(input.subarray(0, 256)).toString('latin1').includes('-----BEGIN PGP ') ? Buffer.from(input).toString('utf8') : null;
    throw await keyProblem(text ?? new Uint8Array(0), web.date());
  }
  spend();
  try {
    return await checkPublicKey(input, web.date());
  } catch (err) {
    if (err instanceof KeyError) throw new WebError(400, 'bad-key', err.message);
    throw err;
  }
}

/** The "server:" line of a decryption challenge: the Host this request came to. */
export function challengeServer(host: string): string {
  const server = requestHost(host);
  if (!server) throw new WebError(400, 'bad-host', 'The Host header of this request is not a host name; open the service by its onion address.');
  return server;
}

/**
 * Starts a signup: the same answer for every usable key, registered or not (whether a key
 * has an account is told only to whoever proves to hold it, at confirm).
 */
export async function startSignup(web: Web, input: string | Uint8Array, host: string): Promise<PendingSignup> {
  const server = challengeServer(host);
  const key = await checkKey(web, input, () =>
    limit(web.buckets.signup.take(web.now()), 'Too many signups are being started right now.'),
  );
  const code = newCode();
  const challenge = await encryptChallenge(key.key, { purpose: 'signup', server, username: '-', fingerprint: key.fingerprint, code });
  const now = web.now();
  const pending: PendingSignup = {
    id: randomId(),
    csrf: randomId(),
    key,
    codeHash: hashCode(code),
    challenge,
    expiresAt: now + web.limits.signupTtlMs,
    attemptsLeft: web.limits.signupAttempts,
  };
  if (!web.signups.set(pending.id, pending, pending.expiresAt, now)) {
    throw tooMany('Too many signups are waiting right now.', 300);
  }
  web.deps.logger.info({ evt: 'signup-started' }, 'signup');
  return pending;
}

export const NO_SIGNUP = 'This signup is unknown or has expired (after 15 minutes). Start again with your key.';

export function findSignup(web: Web, id: unknown): PendingSignup {
  const pending = typeof id === 'string' ? web.signups.get(id, web.now()) : undefined;
  if (!pending) throw new WebError(404, 'no-signup', NO_SIGNUP);
  return pending;
}

/** Checks the code; on success creates the account, its Maildir and the welcome message. */
export async function confirmSignup(
  web: Web,
  pending: PendingSignup,
  code: unknown,
  server: { url: string; noTor: boolean },
): Promise<User> {
  if (!codeMatches(pending.codeHash, code)) {
    pending.attemptsLeft -= 1;
    if (pending.attemptsLeft <= 0) {
      web.signups.delete(pending.id);
      throw new WebError(429, 'too-many-attempts', 'Too many wrong codes. This signup has ended; start again with your key.', { 'Retry-After': '60' });
    }
    const n = pending.attemptsLeft;
    throw new WebError(400, 'wrong-code', `That code is not right. ${n} attempt${n === 1 ? ' is' : 's are'} left.`);
  }
  const { registry, logger } = web.deps;
  if (pending.confirming) throw new WebError(409, 'signup-in-progress', 'This signup is being completed right now. Wait a moment and look again.');
  // Only now, to whoever proved to hold the key: is it taken?
  const holder = registry.findByFingerprint(pending.key.fingerprint);
  if (holder && pending.saveFailed) {
    // The earlier confirm was told "not saved", but its record reached the journal (the
    // fsync failed after the write): the account is this signup's, and she holds its key.
    web.signups.delete(pending.id);
    return welcome(web, holder, server);
  }
  if (holder) {
    web.signups.delete(pending.id);
    throw new WebError(409, 'key-registered', REGISTERED);
  }
  let user: User;
  pending.confirming = true;
  try {
    user = await registry.add(keyRecord(pending.key));
  } catch (err) {
    if (err instanceof RegistryError && err.code === 'duplicate-key') {
      web.signups.delete(pending.id);
      throw new WebError(409, 'key-registered', REGISTERED);
    }
    // Not saved (a full disk, say): the signup stays open, and the same code works on a retry.
    if (err instanceof RegistryError && err.code === 'write-failed') {
      pending.saveFailed = true;
      logger.error({ evt: 'signup-save-failed', err }, 'signup');
      throw new WebError(503, 'not-saved', 'Your account could not be saved right now (the server is short of disk space or has a disk problem). Nothing was lost: send the same code again in a few minutes.', { 'Retry-After': '300' });
    }
    throw err;
  } finally {
    pending.confirming = false;
  }
  web.signups.delete(pending.id);
  return welcome(web, user, server);
}

/** The account's Maildir and welcome message. */
async function welcome(web: Web, user: User, server: { url: string; noTor: boolean }): Promise<User> {
  const { maildir, logger } = web.deps;
  try {
    await maildir.ensureUser(user.username);
    await deliverEncrypted(web, user, welcomeMail(web, user, server.url, server.noTor, web.date()), web.date());
  } catch (err) {
    // The account stands; only the welcome is missing. Name and code only in the log.
    const e = err as { name?: string; code?: string };
    logger.warn({ evt: 'welcome-failed', err: e }, 'signup');
  }
  logger.info({ evt: 'signup-completed' }, 'signup');
  return user;
}
