// What makes a parsed key acceptable: its algorithms (no DSA or ElGamal, RSA of at least
// MIN_RSA_BITS), and whether it can encrypt now (not revoked, not expired, an encryption
// subkey that verifies), with what a user needs to fix it when it cannot.
import { enums } from 'openpgp';
import type { Key, Subkey } from 'openpgp';
import { refuse, type KeyError } from './key-refusals.js';
import { MIN_RSA_BITS, PGP_CONFIG } from './settings.js';

const DSA_ELGAMAL = new Set<string>(['dsa', 'elgamal']);

/** openpgp's algorithm names, as GnuPG users know them. */
export function label(k: Key | Subkey): string {
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

export function algorithmProblem(k: Key | Subkey): KeyError | null {
  const info = k.getAlgorithmInfo();
  const algo = String(info.algorithm);
  if (DSA_ELGAMAL.has(algo)) return refuse('dsa-elgamal');
  if (algo.startsWith('rsa') && (info.bits ?? 0) < MIN_RSA_BITS) return refuse('weak-rsa', { bits: info.bits });
  return null;
}

export function asDate(t: Date | number | null): Date | null {
  if (t === null || t === Infinity) return null;
  return t instanceof Date ? t : new Date(t);
}

export function earliest(a: Date | null, b: Date | null): Date | null {
  if (!a) return b;
  if (!b) return a;
  return a.getTime() <= b.getTime() ? a : b;
}

/** Primary expiry, or null if none (or if the primary key does not verify at all). */
export async function primaryExpiry(key: Key): Promise<Date | null> {
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
export async function usability(
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
