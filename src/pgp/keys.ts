// STUB: interface fixed; implementation in progress.
import type { PublicKey } from 'openpgp';

/** Why a key was refused (SPEC 2.4). */
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

/** Validates an uploaded key (armored text or binary); throws KeyError with a sentence. */
export async function checkPublicKey(_input: string | Uint8Array, _now: Date = new Date()): Promise<CheckedKey> {
  throw new Error('not implemented');
}

/** Whether the key can be encrypted to now (checked at RCPT time). */
export async function keyStatus(_key: PublicKey, _now: Date = new Date()): Promise<KeyStatus> {
  throw new Error('not implemented');
}

/** Parsed keys by fingerprint, so that the data path never re-parses (readKey costs ~1 ms). */
export class KeyCache {
  async get(_fingerprint: string, _armored: string): Promise<PublicKey> {
    throw new Error('not implemented');
  }
  delete(_fingerprint: string): void {}
}
