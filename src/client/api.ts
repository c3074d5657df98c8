// The /api/v1 calls kzymy-client makes (docs/protocol.md), and the proofs of possession of
// the secret key. Login: gpg signs a statement this client builds itself around the server's
// nonce. Signup, key rotation (and login for a key that cannot sign): the server encrypts a
// challenge of one exact format to the key; gpg decrypts it here, and only the code it holds
// goes back, after the format, purpose, server, username and fingerprint were checked. A
// server never gets anything else decrypted by this client. The token lives in memory only.
import type { TokenStore } from './state.js';
import { ApiError, ClientError, printable, protocolError } from './errors.js';
import type { Gnupg } from './gnupg.js';
import type { Framed, Wanted } from './frames.js';
import type { Download, Transport } from './transport.js';

export interface Info {
  version: number;
  domain: string;
  onion: string | null;
}

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

export interface MessageEntry {
  id: string;
  size: number;
  receivedAt: string;
}

export interface Policy {
  catchAll: boolean;
  aliases: string[];
  blocked: string[];
}

export interface Account extends Policy {
  username: string;
  domain: string;
  mailDomain: string;
  onion: string | null;
  fingerprint: string;
  keyExpiresAt: string | null;
  createdAt: string;
  messages: { count: number; bytes: number; oldest: string | null };
  quotaBytes: number;
}

export type KeyUpdate =
  | { status: 'updated'; fingerprint: string; keyExpiresAt: string | null }
  | { status: 'confirm'; rotationId: string; fingerprint: string; challenge: string; expiresAt: string };

export interface KeyRotated {
  status: 'rotated';
  fingerprint: string;
  keyExpiresAt: string | null;
}

export type ChallengePurpose = 'signup' | 'rotate' | 'login';

/** What a decryption challenge must be addressed to, as this client knows it. */
export interface ChallengeExpectation {
  purpose: ChallengePurpose;
  /** serverName() of the --server URL. */
  server: string;
  /** The profile's username; "-" at signup (no account yet). */
  username: string;
  /** The primary fingerprint gpg reports for the key the user named. */
  fingerprint: string;
}

/** Largest challenge accepted from the server (an armored message of six short lines is ~1 KiB). */
export const MAX_CHALLENGE_CHARS = 16 * 1024;
/** Largest plaintext of a challenge; checked before anything else looks at it. */
export const MAX_CHALLENGE_PLAINTEXT = 512;

const CHALLENGE_RE =
  /^kzymy challenge v1\npurpose: (signup|rotate|login)\nserver: ([!-~]{1,255})\nusername: ([!-~]{1,64})\nfingerprint: ([0-9A-F]{40}|[0-9A-F]{64})\ncode: ([a-z0-9]{4}-[a-z0-9]{4}-[a-z0-9]{4}-[a-z0-9]{4})\n$/;

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
    const m = CHALLENGE_RE.exec(text);
    if (!m) throw misbehaved(t, want.purpose, "is not in kzymy's format");
    if (m[1] !== want.purpose) throw misbehaved(t, want.purpose, `was made for another purpose (${m[1]})`);
    if (m[2] !== want.server) throw misbehaved(t, want.purpose, 'was made for another server');
    if (m[3] !== want.username) throw misbehaved(t, want.purpose, 'was made for another username');
    if (m[4] !== want.fingerprint) throw misbehaved(t, want.purpose, 'was made for another key');
    return m[5]!;
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

/** Ids per POST /messages/acknowledge (the server takes up to 500). */
export const ACK_BATCH = 200;
/** Most messages one batch download asks for (the server takes up to 100). */
export const DOWNLOAD_BATCH = 32;

/** No such route (a 404 of another kind than a missing message, or 405): a server from before a batch endpoint. */
function olderServer(status: number, err: ClientError): boolean {
  return status === 405 || (status === 404 && !(err instanceof ApiError && err.code === 'no-such-message'));
}

const USERNAME_RE = /^[a-z][a-z0-9]{1,63}$/;
/** Message ids are Maildir names (no leading dot, no "..", no "/"). */
const MESSAGE_ID_RE = /^[A-Za-z0-9_,=:\\-][A-Za-z0-9._,=:\\-]{0,254}$/;

export async function serverInfo(t: Transport): Promise<Info> {
  return (await t.json<Info>('GET', '/api/v1/info')).body;
}

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

/** An authenticated session of one user; logs in lazily and again when the token expired. */
export class Session {
  private token: string | null = null;

  private fpr: string | null = null;

  /**
   * `keyId` gives the profile's key (when first needed); its fingerprint is the one gpg
   * reports, never the server's. `tokens`, when given, keeps the token between runs.
   */
  constructor(
    readonly transport: Transport,
    readonly gpg: Gnupg,
    readonly username: string,
    private readonly keyId: () => string,
    private readonly tokens: TokenStore | null = null,
  ) {}

  private async identity(): Promise<{ server: string; username: string; fingerprint: string }> {
    return { server: this.transport.target.server.href, username: this.username, fingerprint: await this.fingerprint() };
  }

  /** The primary fingerprint of the user's key, as gpg reports it. */
  async fingerprint(): Promise<string> {
    this.fpr ??= (await this.gpg.secretKey(this.keyId())).fingerprint;
    return this.fpr;
  }

  /**
   * Logs in: signs a statement built here around the server's nonce; when the server says
   * the key cannot sign (it sends a `challenge`), answers that with its code instead.
   */
  async login(): Promise<void> {
    const t = this.transport;
    const fingerprint = await this.fingerprint();
    let ch: LoginChallenge;
    try {
      ch = (await t.json<LoginChallenge>('POST', '/api/v1/auth/challenge', { body: { username: this.username } })).body;
    } catch (err) {
      if (err instanceof ApiError && err.code === 'no-such-user') {
        throw new ClientError(`${t.describe()} has no account "${this.username}" (check --username and --server). The server said: ${err.message}`);
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
      const code = await answerChallenge(t, this.gpg, ch.challenge, {
        purpose: 'login',
        server: serverName(t.target.server),
        username: this.username,
        fingerprint,
      });
      body = { challengeId: ch.challengeId, code };
    } else {
      if (typeof ch.nonce !== 'string' || !NONCE_RE.test(ch.nonce)) throw bad('with a nonce that is not one');
      const statement = loginStatement(serverName(t.target.server), this.username, fingerprint, ch.nonce);
      const signature = await this.gpg.sign(statement, fingerprint);
      body = { challengeId: ch.challengeId, statement, signature };
    }
    const tok = (await t.json<{ token: string; expiresAt?: unknown }>('POST', '/api/v1/auth/token', { body })).body;
    if (typeof tok.token !== 'string' || !/^[!-~]{1,1024}$/.test(tok.token)) throw new ClientError(`${t.describe()} gave no token; check --server.`);
    this.token = tok.token;
    // Kept for the next runs until its end, as the server gave it (at most a day).
    const until = typeof tok.expiresAt === 'string' ? Date.parse(tok.expiresAt) : NaN;
    if (this.tokens && Number.isFinite(until)) {
      const expiresAt = new Date(Math.min(until, Date.now() + 86_400_000)).toISOString();
      await this.tokens.save({ ...(await this.identity()), token: tok.token, expiresAt });
    }
  }

  /** Ends the token on the server and forgets it here. */
  async logout(): Promise<void> {
    if (!this.token && this.tokens) this.token = await this.tokens.load(await this.identity(), Date.now(), 0);
    await this.tokens?.clear();
    if (!this.token) return;
    const token = this.token;
    this.token = null;
    await this.transport.request('POST', '/api/v1/auth/logout', { token, body: {} }).catch(() => undefined);
  }

  /** At the end of a run: a kept token stays valid for the next run; any other is ended. */
  async end(): Promise<void> {
    if (!this.tokens) await this.logout();
  }

  /**
   * Runs `fn` with a token: the one kept from an earlier run while it is valid, else a new
   * login; on 401 unauthorized (expired or ended token) logs in once more and retries.
   */
  private async authed<T>(fn: (token: string) => Promise<T>): Promise<T> {
    if (!this.token && this.tokens) this.token = await this.tokens.load(await this.identity());
    if (!this.token) await this.relogin();
    const used = this.token!;
    try {
      return await fn(used);
    } catch (err) {
      if (!(err instanceof ApiError) || err.status !== 401 || err.code !== 'unauthorized') throw err;
      // Several downloads in flight may all meet the end of the token: one login for all.
      if (this.token === used) {
        await this.tokens?.clear();
        await this.relogin(used);
      }
      return fn(this.token!);
    }
  }

  private loggingIn: Promise<void> | null = null;

  /** login(), shared by every caller that asks while one runs. */
  private relogin(stale: string | null = null): Promise<void> {
    if (this.token !== null && this.token !== stale) return Promise.resolve();
    this.loggingIn ??= this.login().finally(() => {
      this.loggingIn = null;
    });
    return this.loggingIn;
  }

  async call<T>(method: string, path: string, body?: unknown): Promise<{ status: number; body: T }> {
    return this.authed((token) => this.transport.json<T>(method, path, { token, body }));
  }

  async messages(): Promise<MessageEntry[]> {
    const r = await this.call<{ messages: MessageEntry[] }>('GET', '/api/v1/messages');
    const list: unknown = r.body.messages;
    const ok = (m: unknown): m is MessageEntry =>
      typeof m === 'object' && m !== null &&
      typeof (m as MessageEntry).id === 'string' && MESSAGE_ID_RE.test((m as MessageEntry).id) && !(m as MessageEntry).id.includes('..') &&
      typeof (m as MessageEntry).size === 'number';
    if (!Array.isArray(list) || !list.every(ok)) {
      throw protocolError(`${this.transport.describe()} sent a malformed message list (it may be compromised or misconfigured).`);
    }
    return list;
  }

  /**
   * The file as stored, streamed (see Transport.download): its chunks throw when the
   * transfer breaks or the server sends other than the `listed` size. null when it is gone
   * (404 no-such-message).
   */
  async download(id: string, listed: number): Promise<Download | null> {
    return this.authed(async (token) => {
      const r = await this.transport.download(`/api/v1/messages/${encodeURIComponent(id)}`, listed, token);
      if ('download' in r) return r.download;
      const err = this.transport.apiError(r.response);
      if (err instanceof ApiError && err.code === 'no-such-message') return null;
      throw err;
    });
  }

  /** Acknowledges delivery: the server deletes the message. Already gone counts as done. */
  async acknowledge(id: string): Promise<void> {
    try {
      await this.call('DELETE', `/api/v1/messages/${encodeURIComponent(id)}`);
    } catch (err) {
      if (err instanceof ApiError && err.code === 'no-such-message') return;
      throw err;
    }
  }

  /** False once the server turned out not to know POST /messages/download (an older one). */
  private batchDownload = true;

  /**
   * Several messages in one request (at most DOWNLOAD_BATCH), each whole and checked
   * against its listed size, in the order asked; a message gone meanwhile comes with null
   * bytes. Null when the server has no batch download: then download() one at a time.
   */
  async downloadMany(wanted: readonly Wanted[]): Promise<AsyncIterable<Framed> | null> {
    if (!this.batchDownload) return null;
    const frames = await this.authed(async (token) => {
      const r = await this.transport.downloadMany('/api/v1/messages/download', wanted, token);
      if ('frames' in r) return r.frames;
      const err = this.transport.apiError(r.response);
      if (olderServer(r.status, err)) return null;
      throw err;
    });
    if (frames === null) this.batchDownload = false;
    return frames;
  }

  /** False once the server turned out not to know POST /messages/acknowledge (an older one). */
  private batchAck = true;

  /**
   * Acknowledges several delivered messages in one request (at most ACK_BATCH ids each);
   * ids already gone count as done. Falls back to one DELETE per id on a server without
   * the batch endpoint.
   */
  async acknowledgeMany(ids: readonly string[]): Promise<void> {
    for (let at = 0; at < ids.length; at += ACK_BATCH) {
      const part = ids.slice(at, at + ACK_BATCH);
      if (this.batchAck) {
        const answer = await this.authed(async (token) => {
          const res = await this.transport.request('POST', '/api/v1/messages/acknowledge', { token, body: { ids: part } });
          if (res.status >= 200 && res.status < 300) return 'done';
          const err = this.transport.apiError(res);
          if (olderServer(res.status, err)) return 'older';
          throw err;
        });
        if (answer === 'done') continue;
        this.batchAck = false;
      }
      for (const id of part) await this.acknowledge(id);
    }
  }

  async account(): Promise<Account> {
    return (await this.call<Account>('GET', '/api/v1/account')).body;
  }

  async policy(): Promise<Policy> {
    return (await this.call<Policy>('GET', '/api/v1/aliases')).body;
  }

  async setPolicy(method: 'PUT' | 'DELETE', kind: 'aliases' | 'blocked', localPart: string): Promise<Policy> {
    return (await this.call<Policy>(method, `/api/v1/${kind}/${encodeURIComponent(localPart)}`)).body;
  }

  async catchAll(enabled: boolean): Promise<Policy> {
    return (await this.call<Policy>('PUT', '/api/v1/catch-all', { enabled })).body;
  }

  async updateKey(publicKey: string): Promise<KeyUpdate> {
    return (await this.call<KeyUpdate>('POST', '/api/v1/key', { publicKey })).body;
  }

  /** Decrypts the rotation challenge (to the new key `fingerprint`) and returns its code. */
  async rotationCode(challenge: unknown, fingerprint: string): Promise<string> {
    return answerChallenge(this.transport, this.gpg, challenge, {
      purpose: 'rotate',
      server: serverName(this.transport.target.server),
      username: this.username,
      fingerprint,
    });
  }

  async confirmKey(rotationId: string, code: string): Promise<KeyRotated> {
    return (await this.call<KeyRotated>('POST', '/api/v1/key/confirm', { rotationId, code })).body;
  }

  async deleteAccount(): Promise<void> {
    await this.call('DELETE', '/api/v1/account');
    this.token = null;
    await this.tokens?.clear();
  }
}
