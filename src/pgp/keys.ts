// Key validation: an uploaded key checked for use (checkPublicKey), its record for the
// registry, and its status at RCPT time (keyStatus).
//
// Every refusal is a KeyError whose message is one sentence a user can act on (key-refusals.ts).
import type { PublicKey, Subkey } from 'openpgp';
import { refuse } from './key-refusals.js';
import { parse } from './key-parse.js';
import { algorithmProblem, asDate, earliest, label, primaryExpiry, usability } from './key-policy.js';
import { PGP_CONFIG } from './settings.js';

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
