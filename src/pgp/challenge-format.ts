// The plaintext of a decryption challenge (docs/protocol.md): six LF-terminated lines of one
// exact, domain-separated format around a random code. The web writes it (src/web/challenge.ts)
// and kzymy-client reads it (src/client/auth.ts), which checks every field before it sends the
// code back. No dependency: the single-file client carries this module.

export type ChallengePurpose = 'signup' | 'rotate' | 'login';

export interface ChallengeFields {
  purpose: ChallengePurpose;
  /** The server name the client used: the request's Host header, lower-cased. */
  server: string;
  /** "-" for signup (no account yet). */
  username: string;
  /** Primary fingerprint, upper-case hex. */
  fingerprint: string;
  code: string;
}

/** The exact plaintext of a decryption challenge. */
export function challengeText(f: ChallengeFields): string {
  return [
    'kzymy challenge v1',
    `purpose: ${f.purpose}`,
    `server: ${f.server}`,
    `username: ${f.username}`,
    `fingerprint: ${f.fingerprint}`,
    `code: ${f.code}`,
    '',
  ].join('\n');
}

const CHALLENGE_RE =
  /^kzymy challenge v1\npurpose: (signup|rotate|login)\nserver: ([!-~]{1,255})\nusername: ([!-~]{1,64})\nfingerprint: ([0-9A-F]{40}|[0-9A-F]{64})\ncode: ([a-z0-9]{4}-[a-z0-9]{4}-[a-z0-9]{4}-[a-z0-9]{4})\n$/;

/** The fields of a challenge plaintext, or null when it is not exactly in this format. */
export function parseChallengeText(text: string): ChallengeFields | null {
  const m = CHALLENGE_RE.exec(text);
  if (!m) return null;
  return { purpose: m[1] as ChallengePurpose, server: m[2]!, username: m[3]!, fingerprint: m[4]!, code: m[5]! };
}
