// What a registry refuses, worded once for both engines: a key another account holds, a
// user that does not exist, a local part that cannot be an address, a void operation.
import { RegistryError, type RegistryErrorCode } from './types.js';
import { normalizeLocalPart } from './names.js';

export const duplicateKey = () => new RegistryError('duplicate-key', 'This key is already registered. Use a fresh key for each identity: one key, one account.');

export const noSuchUser = (username: string) => new RegistryError('no-such-user', `There is no user "${username}".`);

/** The refusal for an operation that the state at its place made void (see ./ops.ts). */
export function refusal(code: RegistryErrorCode, username: string): RegistryError {
  if (code === 'duplicate-key') return duplicateKey();
  if (code === 'no-such-user') return noSuchUser(username);
  return new RegistryError(code, `The registry refused the change (${code}).`);
}

/** The local part as the policy compares it, or a refusal that says what a valid one is. */
export function localPartOrThrow(raw: string): string {
  const l = normalizeLocalPart(raw);
  if (!l) throw new RegistryError('bad-local-part', `"${raw}" is not a valid address local part (1-64 characters, no spaces or @).`);
  return l;
}
