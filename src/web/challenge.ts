// Proof of possession of a secret key. A decryption challenge: a random code inside a
// plaintext of one exact, domain-separated format, encrypted to the public key; whoever
// sends the code back can decrypt. A login statement: the text a client signs to log in.
// Also random ids and expiring in-memory maps.
import { createHash, createHmac, randomBytes, randomInt, timingSafeEqual } from 'node:crypto';
import { createMessage, encrypt, type PublicKey } from 'openpgp';
import { PGP_CONFIG } from '../pgp/index.js';
import { challengeText, type ChallengeFields, type ChallengePurpose } from '../pgp/challenge-format.js';

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

/** Longest answer looked at: a code, or the whole decrypted challenge pasted back. */
export const MAX_ANSWER_CHARS = 2048;

/**
 * The code inside an answer: the value of its `code:` line when the whole decrypted
 * challenge was pasted back, else the answer itself.
 */
export function answerCode(answer: string): string {
  // The last "code:" up to the end of its line (a browser may have joined the lines).
  const at = answer.toLowerCase().lastIndexOf('code:');
  if (at < 0) return answer;
  return answer.slice(at + 'code:'.length).split(/[\r\n]/)[0]!;
}

export function hashCode(code: string): Buffer {
  return createHash('sha256').update(normalizeCode(code)).digest();
}

/** Constant-time comparison of a submitted code (or pasted challenge text) with a stored hash. */
export function codeMatches(storedHash: Buffer, submitted: unknown): boolean {
  if (typeof submitted !== 'string' || submitted.length > MAX_ANSWER_CHARS) return false;
  return timingSafeEqual(storedHash, hashCode(answerCode(submitted)));
}

export { challengeText, type ChallengeFields, type ChallengePurpose };

/**
 * A decryption challenge as an armored OpenPGP message to `key`. `date` is the moment the
 * key is taken as of (a moment it could still encrypt, for a key that has since expired).
 */
export async function encryptChallenge(key: PublicKey, f: ChallengeFields, date?: Date): Promise<string> {
  // Binary literal data: the exact LF-terminated bytes (a text literal would carry CRLF).
  const message = await createMessage({ binary: Buffer.from(challengeText(f), 'utf8'), ...(date ? { date } : {}) });
  return encrypt({ message, encryptionKeys: key, format: 'armored', config: PGP_CONFIG, ...(date ? { date } : {}) });
}

export interface LoginStatement {
  server: string;
  username: string;
  fingerprint: string;
  nonce: string;
}

/** Longest login statement looked at. */
export const MAX_STATEMENT_CHARS = 1024;

const STATEMENT =
  /^kzymy login v1\nserver: ([a-z0-9.:[\]-]{1,300})\nusername: ([a-z0-9]{1,63})\nfingerprint: ([0-9A-F]{40}|[0-9A-F]{64})\nnonce: ([A-Za-z0-9_-]{32,128})\n$/;

/** The statement a client signs to log in, exactly. */
export function loginStatement(s: LoginStatement): string {
  return `kzymy login v1\nserver: ${s.server}\nusername: ${s.username}\nfingerprint: ${s.fingerprint}\nnonce: ${s.nonce}\n`;
}

/** Parses a login statement of the exact format; null for anything else. */
export function parseLoginStatement(text: unknown): LoginStatement | null {
  if (typeof text !== 'string' || text.length > MAX_STATEMENT_CHARS) return null;
  const m = STATEMENT.exec(text);
  if (!m) return null;
  return { server: m[1]!, username: m[2]!, fingerprint: m[3]!, nonce: m[4]! };
}

/** 32 random bytes, base64url (43 characters). */
export function newNonce(): string {
  return randomBytes(32).toString('base64url');
}

export interface ChallengeIdFields {
  username: string;
  fingerprint: string;
  /** Milliseconds since the epoch. */
  expiresAt: number;
  nonce: string;
}

function challengeMac(secret: Buffer, f: ChallengeIdFields): string {
  return createHmac('sha256', secret)
    .update(`kzymy login challenge\n${f.username}\n${f.fingerprint}\n${f.expiresAt}\n${f.nonce}\n`)
    .digest('base64url');
}

/**
 * A login challenge id that the server need not remember: username, expiry and nonce,
 * authenticated (with the fingerprint) by an HMAC under a secret of this process.
 */
export function makeChallengeId(secret: Buffer, f: ChallengeIdFields): string {
  return `${f.username}.${f.expiresAt}.${f.nonce}.${challengeMac(secret, f)}`;
}

const CHALLENGE_ID = /^([a-z0-9]{1,63})\.(\d{1,16})\.([A-Za-z0-9_-]{32,128})\.([A-Za-z0-9_-]{43})$/;

/** The fields of a challenge id, before its HMAC is checked; null when malformed. */
export function parseChallengeId(id: unknown): (Omit<ChallengeIdFields, 'fingerprint'> & { mac: string }) | null {
  if (typeof id !== 'string' || id.length > 300) return null;
  const m = CHALLENGE_ID.exec(id);
  if (!m) return null;
  return { username: m[1]!, expiresAt: Number(m[2]), nonce: m[3]!, mac: m[4]! };
}

/** Whether the HMAC of a parsed challenge id holds for this fingerprint (constant time). */
export function challengeIdValid(secret: Buffer, parsed: { mac: string } & Omit<ChallengeIdFields, 'fingerprint'>, fingerprint: string): boolean {
  const want = Buffer.from(challengeMac(secret, { ...parsed, fingerprint }));
  const got = Buffer.from(parsed.mac);
  return want.length === got.length && timingSafeEqual(want, got);
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

  /** Every entry still held, expired or not, as [key, value]. */
  *entries(): IterableIterator<[string, V]> {
    for (const [k, e] of this.map) yield [k, e.value];
  }

  get size(): number {
    return this.map.size;
  }
}
