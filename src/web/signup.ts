// Signup, shared by the pages and the API: key in -> challenge out; code in -> account.
// Nothing is created before the right code returns.
import { checkPublicKey, keyRecord, KeyError } from '../pgp/index.js';
import { RegistryError, type User } from '../registry/index.js';
import { codeMatches, encryptCode, hashCode, newCode, randomId } from './challenge.js';
import type { PendingSignup, Web } from './context.js';
import { WebError } from './errors.js';
import { limit } from './ratelimit.js';
import { deliverEncrypted, welcomeMail } from './mail.js';

export const REGISTERED =
  'This key is already registered. Use a fresh key for each identity: one key, one account.';

/** Validates a key for signup or rotation; throws WebError 400 with KeyError's sentence. */
export async function checkKey(web: Web, input: string | Uint8Array): Promise<Awaited<ReturnType<typeof checkPublicKey>>> {
  const size = typeof input === 'string' ? Buffer.byteLength(input) : input.byteLength;
  if (size === 0 || (typeof input === 'string' && input.trim() === '')) {
    throw new WebError(400, 'bad-key', 'Paste an ASCII-armored OpenPGP public key, or choose a key file.');
  }
  if (size > web.limits.maxKeyBytes) {
    throw new WebError(400, 'bad-key', `The key is larger than ${Math.round(web.limits.maxKeyBytes / 1024)} KiB; export it without extra signatures (gpg --export --export-options export-minimal).`);
  }
  try {
    return await checkPublicKey(input, web.date());
  } catch (err) {
    if (err instanceof KeyError) throw new WebError(400, 'bad-key', err.message);
    throw err;
  }
}

export async function startSignup(web: Web, input: string | Uint8Array): Promise<PendingSignup> {
  limit(web.buckets.signup.take(web.now()), 'Too many signups are being started right now. Wait a minute and try again.');
  const key = await checkKey(web, input);
  if (web.deps.registry.findByFingerprint(key.fingerprint)) throw new WebError(409, 'key-registered', REGISTERED);
  const code = newCode();
  const challenge = await encryptCode(key.key, code);
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
    throw new WebError(429, 'rate-limited', 'Too many signups are waiting right now. Try again in a few minutes.', { 'Retry-After': '300' });
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
  limit(web.buckets.answer.take(web.now()));
  if (!codeMatches(pending.codeHash, code)) {
    pending.attemptsLeft -= 1;
    if (pending.attemptsLeft <= 0) {
      web.signups.delete(pending.id);
      throw new WebError(429, 'too-many-attempts', 'Too many wrong codes. This signup has ended; start again with your key.', { 'Retry-After': '60' });
    }
    const n = pending.attemptsLeft;
    throw new WebError(400, 'wrong-code', `That code is not right. ${n} attempt${n === 1 ? ' is' : 's are'} left.`);
  }
  web.signups.delete(pending.id);
  const { registry, maildir, logger } = web.deps;
  let user: User;
  try {
    user = await registry.add(keyRecord(pending.key));
  } catch (err) {
    if (err instanceof RegistryError && err.code === 'duplicate-key') throw new WebError(409, 'key-registered', REGISTERED);
    throw err;
  }
  try {
    await maildir.ensureUser(user.username);
    await deliverEncrypted(web, user, welcomeMail(web, user, server.url, server.noTor, web.date()), web.date());
  } catch (err) {
    // The account stands; only the welcome is missing. Name and code only in the log.
    const e = err as { name?: string; code?: string };
    logger.warn({ evt: 'welcome-failed', err: { name: e.name, code: e.code } }, 'signup');
  }
  logger.info({ evt: 'signup-completed' }, 'signup');
  return user;
}
