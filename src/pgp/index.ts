// Public face of src/pgp: key checks, a parsed-key cache, PGP/MIME encryption.
export * from './keys.js';
export * from './mime.js';
