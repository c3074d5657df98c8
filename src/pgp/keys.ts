// Key validation and a cache of parsed public keys for the SMTP data path.
//
// Every refusal is a KeyError whose message is one sentence a user can act on. No error text
// ever carries anything taken from the input (a pasted secret key must not be echoed).
import { config as defaultConfig, enums, readKey, readKeys, unarmor } from 'openpgp';
import type { Config, Key, PublicKey, Subkey } from 'openpgp';
import { UserError } from '../config/index.js';

/** Why a key was refused. */
export type KeyProblem =
  | 'unparseable'
  | 'secret'
  | 'multiple'
  | 'too-large'
  | 'too-many-packets'
  | 'no-encryption-subkey'
  | 'expired'
  | 'expired-encryption-subkey'
  | 'revoked'
  | 'weak-rsa'
  | 'dsa-elgamal';

/** A refusal with a human sentence as its message, safe to show to the user. */
export class KeyError extends UserError {
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

/**
 * Bounds on what one key may hold, so that the work of a check stays bounded: every subkey,
 * user ID and self-signature costs a signature verification, and 64 KiB hold a few hundred
 * subkeys (160 cv25519 subkeys took about 15 times the check of a normal key). Keys made by GnuPG and Sequoia have 1-3 subkeys, one or a
 * few user IDs and one self-signature per component (a few more after expiry extensions);
 * a key used for a decade with a yearly new subkey stays well under these. Third-party
 * certifications count as signatures too: `--export-options export-minimal` drops them.
 */
export const MAX_SUBKEYS = 16;
export const MAX_USER_IDS = 32;
export const MAX_SIGNATURES = 64;

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

// `future-default` gives ed25519 with a cv25519 encryption subkey on GnuPG 2.2 and 2.4 alike;
// `ed25519` alone makes a primary key only, which cannot encrypt.
const GEN_HINT = 'create a new key with `gpg --quick-gen-key "NAME <ADDRESS>" future-default default never` and upload its public part';

interface Detail {
  count?: number;
  bits?: number;
  date?: Date;
  fpr?: string;
  /** Fingerprints of the encryption subkeys to extend. */
  subkeys?: string[];
  /** Which bound a key passed: 'subkeys', 'user IDs' or 'signatures', and the bound. */
  what?: string;
  max?: number;
}

/**
 * The sentences, one per problem. None of them includes anything from the input but
 * fingerprints, dates and counts, which the holder of the key may see.
 */
function sentence(code: KeyProblem, detail: Detail = {}): string {
  const fpr = detail.fpr ?? 'FINGERPRINT';
  const on = detail.date ? ` on ${detail.date.toISOString().slice(0, 10)}` : '';
  const subs = detail.subkeys ?? [];
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
    case 'too-many-packets':
      return `The key has ${detail.count ?? 'too many'} ${detail.what ?? 'parts'} but kzymy checks at most ${detail.max ?? 'a few'}: export it without third-party and old signatures with \`gpg --armor --export-options export-minimal --export YOUR-KEY-ID\`, or make a key with fewer subkeys and user IDs.`;
    case 'expired':
      // GnuPG 2.2's `--quick-set-expire FPR 2y '*'` skips subkeys that already expired:
      // each one is named by its fingerprint.
      return `The key expired${on}: extend it with \`gpg --quick-set-expire ${fpr} 2y\`${subs.length ? ` and its encryption subkey with \`gpg --quick-set-expire ${fpr} 2y ${subs.join(' ')}\`` : ''}, then upload it again.`;
    case 'expired-encryption-subkey':
      return `The key's encryption subkey expired${on} while the key itself is valid: extend the subkey with \`gpg --quick-set-expire ${fpr} 2y ${subs.length ? subs.join(' ') : 'SUBKEY-FINGERPRINT'}\`, then upload the key again.`;
    case 'revoked':
      return `The key has been revoked by its owner, so nothing may be encrypted to it: ${GEN_HINT}.`;
    case 'weak-rsa':
      return `The key is RSA with ${detail.bits ?? 'fewer than 2048'} bits, which is too weak (at least ${MIN_RSA_BITS} are needed): ${GEN_HINT}.`;
    case 'dsa-elgamal':
      return `The key uses DSA or ElGamal, which are obsolete and not supported: ${GEN_HINT}.`;
  }
}

function refuse(code: KeyProblem, detail?: Detail): KeyError {
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

  let binary: Uint8Array;
  if (text !== null) {
    try {
      const { data } = await unarmor(text, PGP_CONFIG);
      if (!(data instanceof Uint8Array)) throw new Error('streamed');
      binary = data;
    } catch {
      throw refuse('unparseable');
    }
  } else binary = input as Uint8Array;

  // Counted on the packet headers alone, before openpgp parses anything.
  const counted = countPackets(binary);
  if (counted) {
    if (counted.keys > 1) throw refuse('multiple', { count: counted.keys });
    checkBounds(counted);
  }

  let keys: Key[];
  try {
    keys = await readKeys({ binaryKeys: binary, config: PGP_CONFIG });
  } catch {
    // openpgp's message may quote the input: never pass it on.
    throw refuse('unparseable');
  }
  if (keys.some((k) => k.isPrivate())) throw refuse('secret');
  if (keys.length === 0) throw refuse('unparseable');
  if (keys.length > 1) throw refuse('multiple', { count: keys.length });
  // And on what openpgp read, whatever the packet walk made of the input.
  const k = keys[0]!;
  checkBounds({
    keys: 1,
    subkeys: k.subkeys.length,
    userIds: k.users.length,
    signatures:
      ((k as unknown as { directSignatures?: unknown[] }).directSignatures?.length ?? 0) +
      k.revocationSignatures.length +
      k.users.reduce((n, u) => n + u.selfCertifications.length + u.otherCertifications.length + u.revocationSignatures.length, 0) +
      k.subkeys.reduce((n, sk) => n + sk.bindingSignatures.length + sk.revocationSignatures.length, 0),
  });
  return keys;
}

interface PacketCounts {
  keys: number;
  subkeys: number;
  userIds: number;
  signatures: number;
}

function checkBounds(c: PacketCounts): void {
  if (c.subkeys > MAX_SUBKEYS) throw refuse('too-many-packets', { count: c.subkeys, what: 'subkeys', max: MAX_SUBKEYS });
  if (c.userIds > MAX_USER_IDS) throw refuse('too-many-packets', { count: c.userIds, what: 'user IDs', max: MAX_USER_IDS });
  if (c.signatures > MAX_SIGNATURES) throw refuse('too-many-packets', { count: c.signatures, what: 'signatures', max: MAX_SIGNATURES });
}

/**
 * Counts primary keys, subkeys, user IDs (and attributes) and signatures by walking the
 * OpenPGP packet headers (RFC 9580 section 4.2) without parsing any packet body. null when
 * the framing is not that of a transferable key (a partial or indeterminate length, a
 * packet running past the end): openpgp then decides, and the counts are checked again on
 * what it read.
 */
function countPackets(bytes: Uint8Array): PacketCounts | null {
  const c: PacketCounts = { keys: 0, subkeys: 0, userIds: 0, signatures: 0 };
  const n = bytes.length;
  let i = 0;
  while (i < n) {
    const head = bytes[i++]!;
    if (!(head & 0x80)) return null;
    let tag: number;
    let len: number;
    if (head & 0x40) {
      tag = head & 0x3f;
      if (i >= n) return null;
      const o = bytes[i++]!;
      if (o < 192) len = o;
      else if (o < 224) {
        if (i >= n) return null;
        len = ((o - 192) << 8) + bytes[i++]! + 192;
      } else if (o === 255) {
        if (i + 4 > n) return null;
        len = ((bytes[i]! << 24) >>> 0) + (bytes[i + 1]! << 16) + (bytes[i + 2]! << 8) + bytes[i + 3]!;
        i += 4;
      } else return null; // a partial body length never frames a key packet
    } else {
      tag = (head >> 2) & 0x0f;
      const type = head & 0x03;
      if (type === 3) return null; // indeterminate length
      const size = type === 0 ? 1 : type === 1 ? 2 : 4;
      if (i + size > n) return null;
      len = 0;
      for (let j = 0; j < size; j++) len = len * 256 + bytes[i++]!;
    }
    i += len;
    if (i > n) return null;
    if (tag === 6 || tag === 5) c.keys++;
    else if (tag === 14 || tag === 7) c.subkeys++;
    else if (tag === 13 || tag === 17) c.userIds++;
    else if (tag === 2) c.signatures++;
  }
  return c;
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
  | { problem: 'revoked' | 'no-encryption-subkey' | 'broken' }
  | { problem: 'expired' | 'expired-encryption-subkey'; date: Date; subkeys: string[] }
  | { problem: null; enc: Key | Subkey }
> {
  if (await key.isRevoked(undefined, undefined, now, PGP_CONFIG)) return { problem: 'revoked' };
  const primaryExp = await primaryExpiry(key);
  if (primaryExp && primaryExp.getTime() <= now.getTime()) {
    return { problem: 'expired', date: primaryExp, subkeys: await expiredEncryptionSubkeys(key, now) };
  }
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
    const expired: string[] = [];
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
        expired.push(sub.getFingerprint().toUpperCase());
      } catch {
        // not an encryption subkey, or unusable for another reason
      }
    }
    if (lastExpiry) return { problem: 'expired-encryption-subkey', date: lastExpiry, subkeys: expired };
    return { problem: 'no-encryption-subkey' };
  }
}

/**
 * Under an expired primary key: the subkeys whose latest binding signature grants
 * encryption and that expired too (they need extending by name). Read from the flags
 * only, since nothing verifies once the primary expired; used for advice, not for trust.
 */
async function expiredEncryptionSubkeys(key: Key, now: Date): Promise<string[]> {
  const found: string[] = [];
  const encrypt = enums.keyFlags.encryptCommunication | enums.keyFlags.encryptStorage;
  for (const sub of key.subkeys) {
    const latest = [...sub.bindingSignatures].sort((a, b) => (b.created?.getTime() ?? 0) - (a.created?.getTime() ?? 0))[0];
    if (!latest || !((latest.keyFlags?.[0] ?? 0) & encrypt)) continue;
    const lifetime = latest.keyExpirationTime;
    const created = sub.getCreationTime();
    if (!lifetime || lifetime === Infinity) continue;
    if (created.getTime() + Number(lifetime) * 1000 <= now.getTime()) found.push(sub.getFingerprint().toUpperCase());
  }
  return found;
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
  if (use.problem === 'expired' || use.problem === 'expired-encryption-subkey') {
    throw refuse(use.problem, { date: use.date, fpr: fingerprint, subkeys: use.subkeys });
  }
  if (use.problem !== null) throw refuse(use.problem, { fpr: fingerprint });
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
    // The SMTP reply (450 4.7.1) is the same whichever part expired.
    if (use.problem === 'expired-encryption-subkey') return 'expired';
    return use.problem ?? 'ok';
  } catch {
    return 'no-encryption-subkey';
  }
}

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
