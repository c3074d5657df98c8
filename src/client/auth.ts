// The proofs of possession of the secret key kzymy-client gives the server (docs/protocol.md).
// Login: gpg signs a statement this client builds itself around the server's nonce. Signup,
// key rotation (and login for a key that cannot sign): the server encrypts a challenge of one
// exact format to the key; gpg decrypts it here, and only the code it holds goes back, after
// the format, purpose, server, username and fingerprint were checked. A server never gets
// anything else decrypted by this client.
import { parseChallengeText, type ChallengeFields, type ChallengePurpose } from '../pgp/challenge-format.js';
import { ApiError, ClientError, printable, protocolError } from './errors.js';
import type { Gnupg } from './gnupg.js';
import type { Transport } from './transport.js';

export interface SignupStart {
  signupId: string;
  fingerprint: string;
  challenge: string;
  expiresAt: string;
  attemptsLeft: number;
}

export interface SignupDone {
  username: string;
  domain: string;
  mailDomain: string;
  fingerprint: string;
  onion: string | null;
  exampleAddress: string;
}

export type { ChallengePurpose };

/**
 * What a decryption challenge must be addressed to, as this client knows it: every field but
 * the code. `server` is serverName() of the --server URL, `username` the profile's ("-" at
 * signup), `fingerprint` the primary fingerprint gpg reports for the key the user named.
 */
export type ChallengeExpectation = Omit<ChallengeFields, 'code'>;

/** Largest challenge accepted from the server (an armored message of six short lines is ~1 KiB). */
export const MAX_CHALLENGE_CHARS = 16 * 1024;
/** Largest plaintext of a challenge; checked before anything else looks at it. */
export const MAX_CHALLENGE_PLAINTEXT = 512;


const PURPOSE_WORDS: Record<ChallengePurpose, string> = { signup: 'signup', rotate: 'key-rotation', login: 'login' };

/** The name of the server in challenges and statements: the URL's host, lowercased, with :port unless 80. */
export function serverName(url: URL): string {
  return url.host.toLowerCase();
}

function misbehaved(t: Transport, purpose: ChallengePurpose, why: string): ClientError {
  return protocolError(
    `The server at ${t.describe()} sent a ${PURPOSE_WORDS[purpose]} challenge that ${why} (it may be compromised or misconfigured); nothing was sent back. Do not use this server, and tell its operator.`,
  );
}

/**
 * The code of a decryption challenge, and only the code: the plaintext must be at most
 * MAX_CHALLENGE_PLAINTEXT bytes and exactly kzymy's six-line format, addressed to `want`.
 * Anything else (a stored mail, any other ciphertext to the key, a challenge for another
 * purpose, user, server or key) is refused with exit 76; the plaintext is zeroed either way.
 */
export function codeOf(plaintext: Buffer | null, want: ChallengeExpectation, t: Transport): string {
  try {
    if (plaintext === null || plaintext.length > MAX_CHALLENGE_PLAINTEXT) throw misbehaved(t, want.purpose, "is not in kzymy's format");
    let text: string;
    try {
      text = new TextDecoder('utf-8', { fatal: true }).decode(plaintext);
    } catch {
      throw misbehaved(t, want.purpose, "is not in kzymy's format");
    }
    const f = parseChallengeText(text);
    if (!f) throw misbehaved(t, want.purpose, "is not in kzymy's format");
    if (f.purpose !== want.purpose) throw misbehaved(t, want.purpose, `was made for another purpose (${f.purpose})`);
    if (f.server !== want.server) throw misbehaved(t, want.purpose, 'was made for another server');
    if (f.username !== want.username) throw misbehaved(t, want.purpose, 'was made for another username');
    if (f.fingerprint !== want.fingerprint) throw misbehaved(t, want.purpose, 'was made for another key');
    return f.code;
  } finally {
    plaintext?.fill(0);
  }
}

/** Decrypts a challenge the server sent and returns its code, per codeOf; checks the armor first. */
export async function answerChallenge(
  t: Transport,
  gpg: Gnupg,
  challenge: unknown,
  want: ChallengeExpectation,
): Promise<string> {
  if (
    typeof challenge !== 'string' ||
    challenge.length > MAX_CHALLENGE_CHARS ||
    !challenge.startsWith('-----BEGIN PGP MESSAGE-----')
  ) {
    throw misbehaved(t, want.purpose, 'is not an armored OpenPGP message of kzymy\'s size');
  }
  const what = `the server's ${PURPOSE_WORDS[want.purpose]} challenge`;
  return codeOf(await gpg.decrypt(challenge, what, MAX_CHALLENGE_PLAINTEXT), want, t);
}

/** The statement a login signature covers, built here from the server's nonce. */
export function loginStatement(server: string, username: string, fingerprint: string, nonce: string): string {
  return `kzymy login v1\nserver: ${server}\nusername: ${username}\nfingerprint: ${fingerprint}\nnonce: ${nonce}\n`;
}

/** Refuses (exit 76) a fingerprint from the server that is not the key's own. */
export function expectFingerprint(t: Transport, said: unknown, own: string, when: string): void {
  if (typeof said !== 'string' || said.toUpperCase() !== own) {
    throw protocolError(
      `The server at ${t.describe()} ${when} names the key ${typeof said === 'string' ? printable(said).slice(0, 64) : '(none)'}, not yours (${own}) (it may be compromised or misconfigured); nothing more was sent, nothing was saved. Do not use this server, and tell its operator.`,
    );
  }
}

const USERNAME_RE = /^[a-z][a-z0-9]{1,63}$/;

/** Signs up with the key `fingerprint` (as gpg reports it); the server's answers are checked against it. */
export async function signup(t: Transport, gpg: Gnupg, publicKey: string, fingerprint: string): Promise<SignupDone> {
  const start = (await t.json<SignupStart>('POST', '/api/v1/signup', { body: { publicKey } })).body;
  expectFingerprint(t, start.fingerprint, fingerprint, 'answered the signup but');
  const code = await answerChallenge(t, gpg, start.challenge, {
    purpose: 'signup',
    server: serverName(t.target.server),
    username: '-',
    fingerprint,
  });
  const done = (await t.json<SignupDone>('POST', '/api/v1/signup/confirm', { body: { signupId: start.signupId, code } })).body;
  expectFingerprint(t, done.fingerprint, fingerprint, 'confirmed the signup but');
  if (typeof done.username !== 'string' || !USERNAME_RE.test(done.username)) {
    throw protocolError(`The server at ${t.describe()} confirmed the signup with a username that is not one (it may be compromised or misconfigured); nothing was saved.`);
  }
  return done;
}

interface LoginChallenge {
  challengeId?: unknown;
  nonce?: unknown;
  fingerprint?: unknown;
  challenge?: unknown;
}

const NONCE_RE = /^[A-Za-z0-9_-]{32,128}$/;
const CHALLENGE_ID_RE = /^[!-~]{1,256}$/;

/**
 * Logs in as `username` with the key `fingerprint` (as gpg reports it): signs a statement
 * built here around the server's nonce; when the server says the key cannot sign (it sends a
 * `challenge`), answers that with its code instead. Resolves with the server's token.
 */
export async function login(t: Transport, gpg: Gnupg, username: string, fingerprint: string): Promise<{ token: string; expiresAt?: unknown }> {
  let ch: LoginChallenge;
  try {
    ch = (await t.json<LoginChallenge>('POST', '/api/v1/auth/challenge', { body: { username } })).body;
  } catch (err) {
    if (err instanceof ApiError && err.code === 'no-such-user') {
      throw new ClientError(`${t.describe()} has no account "${username}" (check --username and --server). The server said: ${err.message}`);
    }
    throw err;
  }
  const bad = (why: string): ClientError =>
    protocolError(`The server at ${t.describe()} answered the login ${why} (it may be compromised or misconfigured); nothing was sent back. Do not use this server, and tell its operator.`);
  if (typeof ch.challengeId !== 'string' || !CHALLENGE_ID_RE.test(ch.challengeId)) throw bad('without a usable challenge id');
  if (ch.fingerprint !== undefined && ch.fingerprint !== fingerprint) {
    expectFingerprint(t, ch.fingerprint, fingerprint, 'answered the login but');
  }
  let body: Record<string, string>;
  if (ch.challenge !== undefined) {
    // The registered key cannot make a signature that verifies now (e.g. its primary expired).
    const code = await answerChallenge(t, gpg, ch.challenge, { purpose: 'login', server: serverName(t.target.server), username, fingerprint });
    body = { challengeId: ch.challengeId, code };
  } else {
    if (typeof ch.nonce !== 'string' || !NONCE_RE.test(ch.nonce)) throw bad('with a nonce that is not one');
    const statement = loginStatement(serverName(t.target.server), username, fingerprint, ch.nonce);
    const signature = await gpg.sign(statement, fingerprint);
    body = { challengeId: ch.challengeId, statement, signature };
  }
  const tok = (await t.json<{ token: string; expiresAt?: unknown }>('POST', '/api/v1/auth/token', { body })).body;
  if (typeof tok.token !== 'string' || !/^[!-~]{1,1024}$/.test(tok.token)) throw new ClientError(`${t.describe()} gave no token; check --server.`);
  return tok;
}
