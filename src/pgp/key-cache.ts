// A cache of parsed public keys for the SMTP data path, so that it never re-parses.
import { readKey } from 'openpgp';
import type { PublicKey } from 'openpgp';
import { PGP_CONFIG } from './settings.js';

/** Parsed keys by fingerprint, so that the data path never re-parses (readKey costs ~1 ms). */
export class KeyCache {
  private readonly entries = new Map<string, { version: string; key: Promise<PublicKey> }>();

  /** At most this many keys are kept; the least recently used go first. */
  constructor(readonly maxEntries = 10_000) {}

  /**
   * The parsed key for `fingerprint`. `version` names the stored armor (the registry's
   * keyId): a new version replaces the cached key. `load` fetches the armor on a miss.
   */
  async get(fingerprint: string, version: string, load: () => Promise<string> | string): Promise<PublicKey> {
    const fpr = fingerprint.toUpperCase();
    const hit = this.entries.get(fpr);
    if (hit && hit.version === version) {
      // Refresh its place in the LRU order.
      this.entries.delete(fpr);
      this.entries.set(fpr, hit);
      return hit.key;
    }
    const key = (async () => {
      const parsed = await readKey({ armoredKey: await load(), config: PGP_CONFIG });
      if (parsed.isPrivate()) throw new Error('the stored key is a secret key');
      if (parsed.getFingerprint().toUpperCase() !== fpr) throw new Error('the stored key does not match its fingerprint');
      return parsed;
    })();
    const entry = { version, key };
    this.entries.set(fpr, entry);
    key.catch(() => {
      if (this.entries.get(fpr) === entry) this.entries.delete(fpr);
    });
    while (this.entries.size > this.maxEntries) {
      const oldest = this.entries.keys().next().value as string;
      this.entries.delete(oldest);
    }
    return key;
  }

  delete(fingerprint: string): void {
    this.entries.delete(fingerprint.toUpperCase());
  }

  get size(): number {
    return this.entries.size;
  }
}
