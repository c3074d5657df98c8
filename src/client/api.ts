// The /api/v1 calls kzymy-client makes (docs/protocol.md), and the login that proves
// possession of the secret key: the server encrypts a code to the registered key, gpg
// decrypts it here, the code buys a bearer token. The token lives in memory only.
import { ApiError, ClientError } from './errors.js';
import type { Gnupg } from './gnupg.js';
import { DOWNLOAD_LIMIT, type Transport } from './transport.js';

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

/** The code inside a decrypted challenge: its text, trimmed (the server ignores space and '-'). */
export function codeOf(plaintext: Buffer): string {
  const code = plaintext.toString('utf8').trim();
  plaintext.fill(0);
  return code;
}

export async function serverInfo(t: Transport): Promise<Info> {
  return (await t.json<Info>('GET', '/api/v1/info')).body;
}

export async function signup(t: Transport, gpg: Gnupg, publicKey: string): Promise<SignupDone> {
  const start = (await t.json<SignupStart>('POST', '/api/v1/signup', { body: { publicKey } })).body;
  const code = codeOf(await gpg.decrypt(start.challenge, "the server's signup challenge"));
  return (await t.json<SignupDone>('POST', '/api/v1/signup/confirm', { body: { signupId: start.signupId, code } })).body;
}

/** An authenticated session of one user; logs in lazily and again when the token expired. */
export class Session {
  private token: string | null = null;

  constructor(
    readonly transport: Transport,
    readonly gpg: Gnupg,
    readonly username: string,
  ) {}

  async login(): Promise<void> {
    const t = this.transport;
    let ch: { challengeId: string; challenge: string };
    try {
      ch = (await t.json<{ challengeId: string; challenge: string }>('POST', '/api/v1/auth/challenge', { body: { username: this.username } })).body;
    } catch (err) {
      if (err instanceof ApiError && err.code === 'no-such-user') {
        throw new ClientError(`${t.describe()} has no account "${this.username}" (check --username and --server). The server said: ${err.message}`);
      }
      throw err;
    }
    const code = codeOf(await this.gpg.decrypt(ch.challenge, "the server's login challenge"));
    const tok = (await t.json<{ token: string }>('POST', '/api/v1/auth/token', { body: { challengeId: ch.challengeId, code } })).body;
    if (typeof tok.token !== 'string') throw new ClientError(`${t.describe()} gave no token; check --server.`);
    this.token = tok.token;
  }

  async logout(): Promise<void> {
    if (!this.token) return;
    const token = this.token;
    this.token = null;
    await this.transport.request('POST', '/api/v1/auth/logout', { token, body: {} }).catch(() => undefined);
  }

  /** Runs `fn` with a token; on 401 unauthorized (expired token) logs in once more and retries. */
  private async authed<T>(fn: (token: string) => Promise<T>): Promise<T> {
    if (!this.token) await this.login();
    try {
      return await fn(this.token!);
    } catch (err) {
      if (!(err instanceof ApiError) || err.status !== 401 || err.code !== 'unauthorized') throw err;
      await this.login();
      return fn(this.token!);
    }
  }

  async call<T>(method: string, path: string, body?: unknown): Promise<{ status: number; body: T }> {
    return this.authed((token) => this.transport.json<T>(method, path, { token, body }));
  }

  async messages(): Promise<MessageEntry[]> {
    const r = await this.call<{ messages: MessageEntry[] }>('GET', '/api/v1/messages');
    if (!Array.isArray(r.body.messages)) throw new ClientError(`${this.transport.describe()} sent a malformed message list.`);
    return r.body.messages;
  }

  /** The file as stored; null when it is gone (404 no-such-message). */
  async download(id: string, onData?: (received: number) => void): Promise<Buffer | null> {
    return this.authed(async (token) => {
      const res = await this.transport.request('GET', `/api/v1/messages/${encodeURIComponent(id)}`, {
        token,
        onData,
        maxBytes: DOWNLOAD_LIMIT,
      });
      if (res.status === 200) return res.body;
      const err = this.transport.apiError(res);
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

  async confirmKey(rotationId: string, code: string): Promise<KeyRotated> {
    return (await this.call<KeyRotated>('POST', '/api/v1/key/confirm', { rotationId, code })).body;
  }

  async deleteAccount(): Promise<void> {
    await this.call('DELETE', '/api/v1/account');
    this.token = null;
  }
}
