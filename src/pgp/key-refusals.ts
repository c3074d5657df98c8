// Why a key was refused, as one sentence a user can act on.
//
// No sentence ever carries anything taken from the input (a pasted secret key must not be
// echoed): only fingerprints, dates and counts, which the holder of the key may see.
import { UserError } from '../config/index.js';
import { MAX_KEY_BYTES, MIN_RSA_BITS } from './settings.js';

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

// `future-default` gives ed25519 with a cv25519 encryption subkey on GnuPG 2.2 and 2.4 alike;
// `ed25519` alone makes a primary key only, which cannot encrypt.
const GEN_HINT = 'create a new key with `gpg --quick-gen-key "NAME <ADDRESS>" future-default default never` and upload its public part';

export interface Detail {
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

export function refuse(code: KeyProblem, detail?: Detail): KeyError {
  return new KeyError(code, sentence(code, detail));
}
