// The /api/v1 calls kzymy-client makes (docs/protocol.md) as one user's Session: logged in
// (see auth.ts) lazily and again when the token expired, the token in memory only unless a
// TokenStore keeps it between runs; pickup (list, download, acknowledge, one by one or in
// batches) and the account's settings.
import type { TokenStore } from './state.js';
import { answerChallenge, login, serverName } from './auth.js';
import { ApiError, type ClientError, protocolError } from './errors.js';
import type { Gnupg } from './gnupg.js';
import type { Framed, Wanted } from './frames.js';
import type { Download, Transport } from './transport.js';

export interface Info {
  version: number;
  domain: string;
  onion: string | null;
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

/** Ids per POST /messages/acknowledge (the server takes up to 500). */
export const ACK_BATCH = 200;
/** Most messages one batch download asks for (the server takes up to 100). */
export const DOWNLOAD_BATCH = 32;

/** No such route (a 404 of another kind than a missing message, or 405): a server from before a batch endpoint. */
function olderServer(status: number, err: ClientError): boolean {
  return status === 405 || (status === 404 && !(err instanceof ApiError && err.code === 'no-such-message'));
}

/** Message ids are Maildir names (no leading dot, no "..", no "/"). */
const MESSAGE_ID_RE = /^[A-Za-z0-9_,=:\\-][A-Za-z0-9._,=:\\-]{0,254}$/;

export async function serverInfo(t: Transport): Promise<Info> {
  return (await t.json<Info>('GET', '/api/v1/info')).body;
}

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

  /** Logs in (see auth.ts's login) and keeps the token, in the TokenStore too when there is one. */
  async login(): Promise<void> {
    const tok = await login(this.transport, this.gpg, this.username, await this.fingerprint());
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
