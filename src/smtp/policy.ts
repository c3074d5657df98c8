// Recipient policy at RCPT time: who may receive mail, and why not.
import { statfs } from 'node:fs/promises';
import type { Config } from '../config/index.js';
import { allows, type Registry, type User } from '../registry/index.js';
import { KeyCache, keyStatus, type KeyStatus } from '../pgp/index.js';
import type { PublicKey } from 'openpgp';
import type { MaildirStore } from '../maildir/index.js';
import { reply } from './replies.js';
import type { Space } from './space-hold.js';

/** What the SMTP side reads: the settings, the users, their parsed keys and their Maildirs. */
export interface SmtpStores {
  config: Config;
  registry: Registry;
  maildir: MaildirStore;
  keys: KeyCache;
}

export interface PolicyDeps extends SmtpStores {
  /** The server's space ledger (here or in the server process): bytes in flight count at RCPT too. */
  space?: Space;
  now?: () => Date;
}

const KEY_STATUS_TTL_MS = 60_000;
const DISK_TTL_MS = 1_000;

export class RecipientPolicy {
  /** Verdicts per parsed key: a key update yields a new parsed key, so no stale verdict survives it. */
  private keyStatusCache = new WeakMap<PublicKey, { status: KeyStatus; at: number }>();
  private disk = { free: Infinity, at: 0 };

  constructor(private readonly deps: PolicyDeps) {}

  /**
   * Resolves an address to the user who receives it, or throws the SmtpReply to send.
   * `declaredSize` is the SIZE= the client announced at MAIL FROM (0 if none).
   */
  async resolve(address: string, declaredSize = 0): Promise<User> {
    const { config, registry } = this.deps;
    const at = address.lastIndexOf('@');
    if (at <= 0 || at === address.length - 1) throw reply.badAddress();
    const local = address.slice(0, at);
    const domain = address.slice(at + 1).toLowerCase().replace(/\.$/, '');

    let user: User | undefined;
    if (domain === config.domain) {
      // RFC 5321 4.5.1: postmaster@DOMAIN exists when an operator account is configured.
      if (local.toLowerCase() !== 'postmaster' || !config.postmaster) throw reply.noSuchUser();
      user = registry.get(config.postmaster);
      if (!user || user.disabled) throw reply.noSuchUser();
    } else if (domain.endsWith('.' + config.domain)) {
      const label = domain.slice(0, -(config.domain.length + 1));
      if (label.includes('.')) throw reply.noSuchUser();
      user = registry.get(label);
      // A user added a moment ago by another process (the operator's CLI): look again.
      if (!user && (await registry.refresh())) user = registry.get(label);
      if (!user || user.disabled || !allows(user, local)) throw reply.noSuchUser();
    } else {
      throw reply.relayDenied();
    }

    if ((await this.keyStatusOf(user)) !== 'ok') throw reply.keyUnusable();
    await this.checkSpace(user, declaredSize);
    return user;
  }

  private async keyStatusOf(user: User): Promise<KeyStatus> {
    const now = (this.deps.now ?? (() => new Date()))();
    const key = await this.deps.keys.get(user.fingerprint, user.keyId, () => this.deps.registry.publicKey(user));
    const hit = this.keyStatusCache.get(key);
    if (hit && now.getTime() - hit.at < KEY_STATUS_TTL_MS) return hit.status;
    const status = await keyStatus(key, now);
    this.keyStatusCache.set(key, { status, at: now.getTime() });
    return status;
  }

  /**
   * The early answer: stored plus in-flight bytes plus the announced SIZE. The binding check is
   * made while the copies are written (space.ts), on the bytes actually written.
   */
  private async checkSpace(user: User, declaredSize: number): Promise<void> {
    if (this.deps.space) return this.deps.space.admit(user.username, declaredSize);
    const { limits } = this.deps.config;
    const usage = await this.deps.maildir.usage(user.username);
    if (usage.bytes + declaredSize > limits.quotaBytes) throw reply.overQuota();
    if ((await this.freeBytes()) - declaredSize < limits.minFreeBytes) throw reply.diskFull();
  }

  /** Free bytes on the Maildir file system, re-read at most once a second (without a ledger). */
  async freeBytes(): Promise<number> {
    const t = Date.now();
    if (t - this.disk.at > DISK_TTL_MS) {
      const s = await statfs(this.deps.config.maildirRoot);
      this.disk = { free: s.bavail * s.bsize, at: t };
    }
    return this.disk.free;
  }
}

