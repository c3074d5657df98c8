// Proof of possession of a secret key: a random code encrypted to the public key;
// whoever sends the code back can decrypt. Also random ids and expiring in-memory maps.
import { createHash, randomBytes, randomInt, timingSafeEqual } from 'node:crypto';
import { createMessage, encrypt, type PublicKey } from 'openpgp';

const CODE_ALPHABET = 'abcdefghijklmnopqrstuvwxyz0123456789';

/** 16 characters of [a-z0-9] in four groups: ~82 bits. */
export function newCode(): string {
  const groups: string[] = [];
  for (let g = 0; g < 4; g++) {
    let s = '';
    for (let i = 0; i < 4; i++) s += CODE_ALPHABET[randomInt(CODE_ALPHABET.length)];
    groups.push(s);
  }
  return groups.join('-');
}

/** Case, white space and '-' do not matter. */
export function normalizeCode(code: string): string {
  return code.toLowerCase().replace(/[\s-]+/g, '');
}

export function hashCode(code: string): Buffer {
  return createHash('sha256').update(normalizeCode(code)).digest();
}

/** Constant-time comparison of a submitted code with a stored hash. */
export function codeMatches(storedHash: Buffer, submitted: unknown): boolean {
  if (typeof submitted !== 'string' || submitted.length > 200) return false;
  return timingSafeEqual(storedHash, hashCode(submitted));
}

/** The code (plus a newline) as an armored OpenPGP message to `key`. */
export async function encryptCode(key: PublicKey, code: string): Promise<string> {
  return encrypt({ message: await createMessage({ text: code + '\n' }), encryptionKeys: key, format: 'armored' });
}

/** Unguessable id for URLs and JSON (192 bits, base64url). */
export function randomId(prefix = ''): string {
  return prefix + randomBytes(24).toString('base64url');
}

/** Only the hash of a bearer secret is kept, so a memory dump does not hand out sessions. */
export function secretKey(secret: string): string {
  return createHash('sha256').update(secret).digest('base64url');
}

interface Entry<V> {
  value: V;
  expiresAt: number;
}

/** A Map whose entries expire; bounded in size. Lives in memory only. */
export class ExpiringMap<V> {
  private readonly map = new Map<string, Entry<V>>();

  constructor(private readonly max: number) {}

  private sweep(now: number): void {
    for (const [k, e] of this.map) if (e.expiresAt <= now) this.map.delete(k);
  }

  /** False when the map is full even after dropping expired entries. */
  set(key: string, value: V, expiresAt: number, now: number): boolean {
    if (this.map.size >= this.max) this.sweep(now);
    if (this.map.size >= this.max) return false;
    this.map.set(key, { value, expiresAt });
    return true;
  }

  get(key: string, now: number): V | undefined {
    const e = this.map.get(key);
    if (!e) return undefined;
    if (e.expiresAt <= now) {
      this.map.delete(key);
      return undefined;
    }
    return e.value;
  }

  /** Removes and returns (single use). */
  take(key: string, now: number): V | undefined {
    const v = this.get(key, now);
    this.map.delete(key);
    return v;
  }

  delete(key: string): void {
    this.map.delete(key);
  }

  deleteWhere(pred: (v: V, key: string) => boolean): void {
    for (const [k, e] of this.map) if (pred(e.value, k)) this.map.delete(k);
  }

  get size(): number {
    return this.map.size;
  }
}
