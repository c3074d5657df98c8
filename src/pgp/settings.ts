// openpgp settings for everything kzymy does, and the bounds on what an uploaded key may hold.
import { config as defaultConfig, enums } from 'openpgp';
import type { Config } from 'openpgp';

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
