// The signature of a login statement: one armored detached signature by the registered key,
// read within bounds before openpgp parses it, and verified allowing for clock skew.
import { createMessage, enums, readSignature, verify, type PublicKey, type Signature } from 'openpgp';
import { PGP_CONFIG } from '../pgp/index.js';

/** Largest armored signature looked at. */
const MAX_SIGNATURE_CHARS = 8 * 1024;

/** Clocks differ: a signature made up to this far in the server's future is accepted. */
const CLOCK_SKEW_MS = 10 * 60_000;

export async function readOneSignature(armored: unknown, key: PublicKey): Promise<Signature | null> {
  if (typeof armored !== 'string' || armored.length > MAX_SIGNATURE_CHARS) return null;
  if (!armored.trimStart().startsWith('-----BEGIN PGP SIGNATURE-----')) return null;
  let sig: Signature;
  try {
    sig = await readSignature({ armoredSignature: armored, config: PGP_CONFIG });
  } catch {
    return null;
  }
  if (sig.packets.length !== 1) return null;
  const packet = sig.packets[0]!;
  if (packet.signatureType !== enums.signature.binary && packet.signatureType !== enums.signature.text) return null;
  const ids = sig.getSigningKeyIDs();
  if (ids.length !== 1 || key.getKeys(ids[0]).length === 0) return null;
  return sig;
}

export async function signatureVerifies(statement: string, sig: Signature, key: PublicKey, now: number): Promise<boolean> {
  try {
    const message = await createMessage({ binary: Buffer.from(statement, 'utf8') });
    const result = await verify({
      message,
      signature: sig,
      verificationKeys: key,
      expectSigned: true,
      format: 'binary',
      date: new Date(now + CLOCK_SKEW_MS),
      config: PGP_CONFIG,
    });
    for (const s of result.signatures) await s.verified;
    return result.signatures.length === 1;
  } catch {
    return false;
  }
}
