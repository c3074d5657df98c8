// Public face of src/pgp: key checks, a parsed-key cache, PGP/MIME encryption, protected headers.
export * from './settings.js';
export * from './keys.js';
export { KeyError, type KeyProblem } from './key-refusals.js';
export * from './key-cache.js';
export * from './mime.js';
export * from './armor.js';
export * from './protected.js';
export * from './seal.js';
