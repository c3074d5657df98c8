// The archive `kzymy-server backup` writes and `kzymy-server restore` reads.
//
// A tar file (node-tar), gzip-compressed when its name ends in .gz or .tgz:
//
//   kzymy-backup.json                 first: format, kzymy version, date
//   data/registry/snapshot.json       the registry at one point in time, as a fresh snapshot
//   data/registry/journal.1           empty
//   data/registry/keys/SHA256.asc     every public key that snapshot names
//   tls/key.pem, tls/cert.pem         the STARTTLS key and certificate
//   onion/hs_ed25519_secret_key, onion/hs_ed25519_public_key, onion/hostname
//   maildirs/USER/new|cur/NAME        every complete message
//   manifest.json                     last: counts and the size and SHA-256 of every file above
import { UserError } from '../config/index.js';
import { errnoCode, errnoPhrase } from '../config/errno.js';
import { isValidId, isValidUsername } from '../maildir/index.js';

/** Version of the archive layout above; restore refuses a newer one. */
export const BACKUP_FORMAT = 1;
export const FIRST = 'kzymy-backup.json';
export const MANIFEST = 'manifest.json';
export const SNAPSHOT = 'data/registry/snapshot.json';
export const ONION_FILES = ['hs_ed25519_secret_key', 'hs_ed25519_public_key', 'hostname'] as const;

export interface FileRecord {
  size: number;
  sha256: string;
}

export interface Manifest {
  format: number;
  kzymy: string;
  createdAt: string;
  finishedAt: string;
  counts: { users: number; keys: number; messages: number; messageBytes: number; files: number };
  included: { tls: boolean; onionKeys: boolean };
  files: Record<string, FileRecord>;
}

/** An error whose message is the whole sentence for the operator. */
export class BackupError extends UserError {}

export const gzipped = (file: string): boolean => /\.(tgz|gz)$/i.test(file);

/** A failed write of `where` as a sentence: a full disk, or the system's reason; `what` says what it left. */
export function diskSentence(err: unknown, where: string, what: string): Error {
  const code = errnoCode(err);
  if (code === 'ENOSPC' || code === 'EDQUOT') return new BackupError(`The disk holding ${where} is full: free some space or choose another place; ${what}.`);
  if (code) return new BackupError(`Cannot write ${where}: ${errnoPhrase(err)}; ${what}.`);
  return err as Error;
}

/** The archive paths restore accepts; anything else makes the archive foreign or damaged. */
export function acceptedPath(p: string): boolean {
  if (p === FIRST || p === MANIFEST) return true;
  if (p === SNAPSHOT || p === 'data/registry/journal.1') return true;
  if (/^data\/registry\/keys\/[0-9a-f]{64}\.asc$/.test(p)) return true;
  if (p === 'tls/key.pem' || p === 'tls/cert.pem') return true;
  if (/^onion\/(hs_ed25519_secret_key|hs_ed25519_public_key|hostname)$/.test(p)) return true;
  const m = /^maildirs\/([^/]+)\/(new|cur)\/([^/]+)$/.exec(p);
  return Boolean(m && isValidUsername(m[1]) && isValidId(m[3]) && !m[3].startsWith('.'));
}
