// Public face of src/pgp: key checks, a parsed-key cache, PGP/MIME encryption, protected headers.
export * from './keys.js';
export * from './mime.js';
export * from './armor.js';
export * from './protected.js';
