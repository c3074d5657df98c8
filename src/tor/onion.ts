// The onion address tor writes into `HiddenServiceDir/hostname`.
import { readFile } from 'node:fs/promises';
import { UserError } from '../config/index.js';
import { isV3Onion } from '../config/onion.js';

export { isV3Onion };

/**
 * The onion address in tor's `hostname` file, or null while the file does not exist
 * (tor has not written it yet). Throws a sentence when it cannot be read or does not
 * hold a v3 onion address.
 */
export async function readOnionAddress(hostnameFile: string): Promise<string | null> {
  let text: string;
  try {
    text = await readFile(hostnameFile, 'utf8');
  } catch (err) {
    const e = err as NodeJS.ErrnoException;
    if (e.code === 'ENOENT') return null;
    if (e.code === 'EACCES') {
      throw new UserError(`The onion hostname file ${hostnameFile} cannot be read: permission denied (the kzymy user needs read access to it).`);
    }
    throw new UserError(`The onion hostname file ${hostnameFile} cannot be read (${e.code ?? e.message}).`);
  }
  const address = text.trim().toLowerCase();
  if (address === '') return null;
  if (!isV3Onion(address)) {
    throw new UserError(`The file ${hostnameFile} does not hold a v3 onion address (56 base32 characters and ".onion").`);
  }
  return address;
}
