// What gpg says, read for kzymy-client: its status lines and messages become one sentence for
// the user (gpg's own words never reach the user raw), and its --with-colons key listings
// become keys.
import { ClientError, printable } from './errors.js';

export interface SecretKey {
  fingerprint: string;
  /** The first user id, for messages. */
  uid: string | null;
}

/** Which keyring gpg used, for sentences: its words, and whether --gnupghome named it. */
export interface Keyring {
  where: string;
  named: boolean;
}

export const DECRYPTION_OKAY = /\[GNUPG:\] DECRYPTION_OKAY/;

const PASSPHRASE_RE = /No pinentry|Inappropriate ioctl|Operation cancelled|No passphrase given|Bad passphrase|pinentry|Timeout/i;

/** The sentence for gpg's status lines of a failed decryption of `what`. */
export function decryptFailure(stderr: string, what: string, keyring: Keyring): ClientError {
  const pkFailed = /\[GNUPG:\] ERROR pkdecrypt_failed/.test(stderr);
  if (pkFailed && PASSPHRASE_RE.test(stderr)) {
    return new ClientError(
      `GnuPG needs the passphrase of your key to decrypt ${what} and cannot ask for it here: unlock the key with gpg-agent first (for example decrypt any message with gpg in a terminal, or use gpg-preset-passphrase), or use a key without a passphrase for automation.`,
    );
  }
  if (/\[GNUPG:\] NO_SECKEY/.test(stderr) && !pkFailed) {
    return new ClientError(
      `None of the secret keys in ${keyring.where} can decrypt ${what}: it was encrypted to a key this keyring does not hold${keyring.named ? '' : ' (give --gnupghome?)'}.`,
    );
  }
  if (/\[GNUPG:\] NODATA|no valid OpenPGP data/i.test(stderr)) {
    return new ClientError(`${capitalize(what)} is not an OpenPGP message gpg can read.`);
  }
  const last = stderr
    .split('\n')
    .filter((l) => l.startsWith('gpg: ') && !/encrypted with|^\s/.test(l))
    .pop();
  return new ClientError(`gpg could not decrypt ${what}${last ? ` (${printable(last.slice(5).trim())})` : ''}.`);
}

/** The sentence for gpg's status lines of a failed signature by `fingerprint` over `what`. */
export function signFailure(stderr: string, fingerprint: string, what: string, keyring: Keyring): ClientError {
  if (PASSPHRASE_RE.test(stderr) && !/\[GNUPG:\] INV_SGNR/.test(stderr)) {
    return new ClientError(
      `GnuPG needs the passphrase of your key to sign ${what} and cannot ask for it here: unlock the key with gpg-agent first (for example sign any file with gpg in a terminal, or use gpg-preset-passphrase), or use a key without a passphrase for automation.`,
    );
  }
  // gpg reports an expired or revoked key as INV_SGNR 9 ("no secret key") too: its words
  // and the KEYEXPIRED/KEYREVOKED status tell the cases apart.
  if (/Unusable secret key|\[GNUPG:\] (KEYEXPIRED|KEYREVOKED|INV_SGNR (3|4|5) )/.test(stderr)) {
    return new ClientError(
      `Your key ${fingerprint} cannot make a signature now (expired, revoked, or without a signing key), so it cannot sign ${what}: extend it with \`gpg --quick-set-expire ${fingerprint} 2y\` and run \`kzymy-client key update\`, or add a signing subkey.`,
    );
  }
  if (/\[GNUPG:\] INV_SGNR 9 |No secret key/i.test(stderr)) {
    return new ClientError(`${keyring.where} holds no secret key ${fingerprint} that could sign ${what}${keyring.named ? '' : ' (give --gnupghome?)'}.`);
  }
  const last = stderr
    .split('\n')
    .filter((l) => l.startsWith('gpg: '))
    .pop();
  return new ClientError(`gpg could not sign ${what}${last ? ` (${printable(last.slice(5).trim())})` : ''}.`);
}

/** The sentence for gpg that cannot be started. */
export function spawnError(e: NodeJS.ErrnoException): ClientError {
  if (e.code === 'ENOENT') return new ClientError('GnuPG is not installed (no gpg on PATH): apt-get install gnupg.');
  return new ClientError(`Cannot run gpg: ${e.message}.`);
}

function capitalize(s: string): string {
  return s.charAt(0).toUpperCase() + s.slice(1);
}

/** Primary keys of `--with-colons` output: the first fpr and uid after each `sec`/`pub` line. */
export function parseColons(text: string, kind: 'sec' | 'pub'): SecretKey[] {
  const keys: SecretKey[] = [];
  let current: SecretKey | null = null;
  let wantFpr = false;
  for (const line of text.split('\n')) {
    const f = line.split(':');
    if (f[0] === kind) {
      current = { fingerprint: '', uid: null };
      keys.push(current);
      wantFpr = true;
    } else if (f[0] === 'ssb' || f[0] === 'sub') {
      wantFpr = false;
    } else if (f[0] === 'fpr' && current && wantFpr) {
      current.fingerprint = (f[9] ?? '').toUpperCase();
      wantFpr = false;
    } else if (f[0] === 'uid' && current && current.uid === null) {
      current.uid = unescapeColon(f[9] ?? '');
    }
  }
  return keys.filter((k) => k.fingerprint);
}

function unescapeColon(s: string): string {
  return s.replace(/\\x([0-9a-f]{2})/gi, (_, h: string) => String.fromCharCode(parseInt(h, 16)));
}
