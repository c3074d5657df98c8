// Key validation and a cache of parsed public keys for the SMTP data path.
//
// Every refusal is a KeyError whose message is one sentence a user can act on. No error text
// ever carries anything taken from the input (a pasted secret key must not be echoed).
import { config as defaultConfig, enums, readKey, readKeys } from 'openpgp';
import type { Config, Key, PublicKey, Subkey } from 'openpgp';

/** Why a key was refused. */
export type KeyProblem =
  | 'unparseable'
  | 'secret'
  | 'multiple'
  | 'too-large'
  | 'no-encryption-subkey'
  | 'expired'
  | 'revoked'
  | 'weak-rsa'
  | 'dsa-elgamal';

/** A refusal with a human sentence as its message, safe to show to the user. */
export class KeyError extends Error {
  constructor(
    readonly code: KeyProblem,
    message: string,
  ) {
    super(message);
    this.name = 'KeyError';
  }
}

export interface CheckedKey {
  /** Primary key fingerprint, upper-case hex. */
  fingerprint: string;
  /** The public part only, ASCII-armored. */
  publicKey: string;
  /** When the key (or its last encryption subkey) stops being usable; null = never. */
  expiresAt: Date | null;
  /** e.g. "ed25519 / cv25519", "rsa3072". */
  algorithm: string;
  userIds: string[];
  key: PublicKey;
}

export type KeyStatus = 'ok' | 'expired' | 'revoked' | 'no-encryption-subkey';

/** What the registry stores of a checked key: public data only. */
export function keyRecord(k: CheckedKey): { fingerprint: string; publicKey: string; keyExpiresAt: string | null } {
  return { fingerprint: k.fingerprint, publicKey: k.publicKey, keyExpiresAt: k.expiresAt ? k.expiresAt.toISOString() : null };
}

/** Largest key input accepted, armored or binary. */
export const MAX_KEY_BYTES = 64 * 1024;

/** Smallest RSA modulus accepted. */
export const MIN_RSA_BITS = 2048;

/**
 * openpgp settings for everything kzymy does: no Version or Comment armor header (they would
 * reveal the software), no compression, RSA under 2048 bits unusable.
 */
export const PGP_CONFIG: Readonly<Config> = Object.freeze({
  ...defaultConfig,
  showVersion: false,
  showComment: false,
  preferredCompressionAlgorithm: enums.compression.uncompressed,
  minRSABits: MIN_RSA_BITS,
});

const GEN_HINT = 'create a new key with `gpg --quick-gen-key "NAME <ADDRESS>" default default never` and upload its public part';

/** The sentences, one per problem; none of them includes anything from the input. */
function sentence(code: KeyProblem, detail: { count?: number; bits?: number; date?: Date; fpr?: string } = {}): string {
  switch (code) {
    case 'unparseable':
      return 'This is not an OpenPGP public key that kzymy can read: paste the whole block that `gpg --armor --export YOUR-KEY-ID` prints, from its BEGIN line to its END line.';
    case 'secret':
      return 'This is a SECRET key, which must never leave your computer and was not stored: upload only the public key that `gpg --armor --export YOUR-KEY-ID` prints.';
    case 'multiple':
      return `The input holds ${detail.count ?? 'several'} keys but kzymy needs exactly one: export only the key you want with \`gpg --armor --export YOUR-KEY-ID\`.`;
    case 'too-large':
      return `The key is larger than ${MAX_KEY_BYTES / 1024} KiB: export it without third-party signatures with \`gpg --armor --export-options export-minimal --export YOUR-KEY-ID\`.`;
    case 'no-encryption-subkey':
      return `The key has no valid subkey that can encrypt: add one with \`gpg --quick-add-key ${detail.fpr ?? 'FINGERPRINT'} cv25519 encr\` and upload the key again.`;
    case 'expired':
      return `The key expired${detail.date ? ` on ${detail.date.toISOString().slice(0, 10)}` : ''}: extend it with \`gpg --quick-set-expire ${detail.fpr ?? 'FINGERPRINT'} 2y\` and \`gpg --quick-set-expire ${detail.fpr ?? 'FINGERPRINT'} 2y '*'\`, then upload it again.`;
    case 'revoked':
      return `The key has been revoked by its owner, so nothing may be encrypted to it: ${GEN_HINT}.`;
    case 'weak-rsa':
      return `The key is RSA with ${detail.bits ?? 'fewer than 2048'} bits, which is too weak (at least ${MIN_RSA_BITS} are needed): ${GEN_HINT}.`;
    case 'dsa-elgamal':
      return `The key uses DSA or ElGamal, which are obsolete and not supported: ${GEN_HINT}.`;
  }
}

function refuse(code: KeyProblem, detail?: Parameters<typeof sentence>[1]): KeyError {
  return new KeyError(code, sentence(code, detail));
}

const ARMOR_BEGIN = /-----BEGIN PGP ([A-Z ,/0-9]+)-----/g;

/** Parses without trusting the input; only KeyErrors come out. */
async function parse(input: string | Uint8Array): Promise<Key[]> {
  const size = typeof input === 'string' ? Buffer.byteLength(input, 'utf8') : input.byteLength;
  if (size > MAX_KEY_BYTES) throw refuse('too-large');
  if (size === 0) throw refuse('unparseable');

  // An upload may be armored text in bytes.
  let text: string | null = null;
  if (typeof input === 'string') text = input;
  else {
    const head = Buffer.from(input.subarray(0, 256)).toString('latin1');
    if (/^\s*-----BEGIN PGP /.test(head) || head.includes('-----BEGIN PGP ')) text = Buffer.from(input).toString('utf8');
  }

  if (text !== null) {
    const blocks = [...text.matchAll(ARMOR_BEGIN)].map((m) => m[1]!);
    // Decided on the armor line alone, so that even a secret key openpgp cannot read is named.
    if (blocks.some((b) => b.includes('PRIVATE KEY') || b.includes('SECRET KEY'))) throw refuse('secret');
    if (blocks.length === 0) throw refuse('unparseable');
    if (blocks.length > 1) throw refuse('multiple', { count: blocks.length });
    if (blocks[0] !== 'PUBLIC KEY BLOCK') throw refuse('unparseable');
  }

  let keys: Key[];
  try {
    keys =
      text !== null
        ? await readKeys({ armoredKeys: text, config: PGP_CONFIG })
        : await readKeys({ binaryKeys: input as Uint8Array, config: PGP_CONFIG });
  } catch {
    // openpgp's message may quote the input: never pass it on.
    throw refuse('unparseable');
  }
  if (keys.some((k) => k.isPrivate())) throw refuse('secret');
  if (keys.length === 0) throw refuse('unparseable');
  if (keys.length > 1) throw refuse('multiple', { count: keys.length });
  return keys;
}

const DSA_ELGAMAL = new Set<string>(['dsa', 'elgamal']);

/** openpgp's algorithm names, as GnuPG users know them. */
function label(k: Key | Subkey): string {
  const info = k.getAlgorithmInfo();
  const algo = String(info.algorithm);
  if (algo.startsWith('rsa')) return `rsa${info.bits ?? '?'}`;
  if (algo === 'dsa') return `dsa${info.bits ?? ''}`;
  if (algo === 'elgamal') return `elg${info.bits ?? ''}`;
  const curve = info.curve ? String(info.curve) : '';
  const names: Record<string, string> = {
    ed25519Legacy: 'ed25519',
    curve25519Legacy: 'cv25519',
    nistP256: 'nistp256',
    nistP384: 'nistp384',
    nistP521: 'nistp521',
    p256: 'nistp256',
    p384: 'nistp384',
    p521: 'nistp521',
  };
  if (curve) return names[curve] ?? curve;
  return algo; // v6 algorithms: ed25519, x25519, ed448, x448
}

function algorithmProblem(k: Key | Subkey): KeyError | null {
  const info = k.getAlgorithmInfo();
  const algo = String(info.algorithm);
  if (DSA_ELGAMAL.has(algo)) return refuse('dsa-elgamal');
  if (algo.startsWith('rsa') && (info.bits ?? 0) < MIN_RSA_BITS) return refuse('weak-rsa', { bits: info.bits });
  return null;
}

function asDate(t: Date | number | null): Date | null {
  if (t === null || t === Infinity) return null;
  return t instanceof Date ? t : new Date(t);
}

function earliest(a: Date | null, b: Date | null): Date | null {
  if (!a) return b;
  if (!b) return a;
  return a.getTime() <= b.getTime() ? a : b;
}

/** Primary expiry, or null if none (or if the primary key does not verify at all). */
async function primaryExpiry(key: Key): Promise<Date | null> {
  try {
    return asDate(await key.getExpirationTime(undefined, PGP_CONFIG));
  } catch {
    return null;
  }
}

/**
 * Why the key cannot encrypt now: revoked, expired (primary or every encryption subkey), broken
 * (no valid self-signature), or no encryption subkey at all. null when it can, with the subkey
 * it would use.
 */
async function usability(
  key: Key,
  now: Date,
): Promise<
  { problem: 'revoked' | 'expired' | 'no-encryption-subkey' | 'broken'; date?: Date } | { problem: null; enc: Key | Subkey }
> {
  if (await key.isRevoked(undefined, undefined, now, PGP_CONFIG)) return { problem: 'revoked' };
  const primaryExp = await primaryExpiry(key);
  if (primaryExp && primaryExp.getTime() <= now.getTime()) return { problem: 'expired', date: primaryExp };
  try {
    await key.verifyPrimaryKey(now, undefined, PGP_CONFIG);
  } catch {
    // Not revoked, not expired, and yet no valid self-signature: damaged or forged.
    return { problem: 'broken' };
  }
  try {
    const enc = await key.getEncryptionKey(undefined, now, undefined, PGP_CONFIG);
    return { problem: null, enc };
  } catch {
    // Not usable now; was there an encryption subkey that has since expired?
    let lastExpiry: Date | null = null;
    for (const sub of key.subkeys) {
      let exp: Date | null;
      try {
        exp = asDate(await sub.getExpirationTime(now, PGP_CONFIG));
      } catch {
        continue;
      }
      if (!exp || exp.getTime() > now.getTime()) continue;
      try {
        // Usable just before it expired: an expired encryption subkey.
        await key.getEncryptionKey(sub.getKeyID(), new Date(exp.getTime() - 1000), undefined, PGP_CONFIG);
        if (!lastExpiry || exp > lastExpiry) lastExpiry = exp;
      } catch {
        // not an encryption subkey, or unusable for another reason
      }
    }
    if (lastExpiry) return { problem: 'expired', date: lastExpiry };
    return { problem: 'no-encryption-subkey' };
  }
}

/** Validates an uploaded key (armored text or binary); throws KeyError with a sentence. */
export async function checkPublicKey(input: string | Uint8Array, now: Date = new Date()): Promise<CheckedKey> {
  const [key] = await parse(input);
  const parsed = key!;
  const fingerprint = parsed.getFingerprint().toUpperCase();

  const primaryProblem = algorithmProblem(parsed);
  if (primaryProblem) throw primaryProblem;

  const use = await usability(parsed, now);
  if (use.problem === 'broken') throw refuse('unparseable');
  if (use.problem !== null) throw refuse(use.problem, { date: use.date, fpr: fingerprint });
  const subProblem = algorithmProblem(use.enc);
  if (subProblem) throw subProblem;

  const publicKey = parsed.toPublic();
  let expiresAt = await primaryExpiry(publicKey);
  if (use.enc !== parsed) {
    try {
      expiresAt = earliest(expiresAt, asDate(await (use.enc as Subkey).getExpirationTime(now, PGP_CONFIG)));
    } catch {
      // verified a moment ago by getEncryptionKey
    }
  }
  const primaryLabel = label(parsed);
  const encLabel = label(use.enc);
  return {
    fingerprint,
    publicKey: publicKey.armor(PGP_CONFIG),
    expiresAt,
    algorithm: encLabel === primaryLabel ? primaryLabel : `${primaryLabel} / ${encLabel}`,
    userIds: publicKey.getUserIDs(),
    key: publicKey,
  };
}

/** Whether the key can be encrypted to now (checked at RCPT time). */
export async function keyStatus(key: PublicKey, now: Date = new Date()): Promise<KeyStatus> {
  try {
    const use = await usability(key, now);
    if (use.problem === 'broken') return 'no-encryption-subkey';
    return use.problem ?? 'ok';
  } catch {
    return 'no-encryption-subkey';
  }
}

/** Parsed keys by fingerprint, so that the data path never re-parses (readKey costs ~1 ms). */
export class KeyCache {
  private readonly entries = new Map<string, { armored: string; key: Promise<PublicKey> }>();

  /** At most this many keys are kept; the least recently used go first. */
  constructor(readonly maxEntries = 10_000) {}

  async get(fingerprint: string, armored: string): Promise<PublicKey> {
    const fpr = fingerprint.toUpperCase();
    const hit = this.entries.get(fpr);
    if (hit && hit.armored === armored) {
      // Refresh its place in the LRU order.
      this.entries.delete(fpr);
      this.entries.set(fpr, hit);
      return hit.key;
    }
    const key = (async () => {
      const parsed = await readKey({ armoredKey: armored, config: PGP_CONFIG });
      if (parsed.isPrivate()) throw new Error('the stored key is a secret key');
      if (parsed.getFingerprint().toUpperCase() !== fpr) throw new Error('the stored key does not match its fingerprint');
      return parsed;
    })();
    const entry = { armored, key };
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
