// A read-only export of the registry at one point in time, for `kzymy-server backup`.
//
// Why this is consistent while the server (and the CLI) write: opening the registry reads
// snapshot.json and replays every complete, fsynced record of the journals after it (the
// engine already follows seals and compactions that happen meanwhile, see ./journals.ts).
// The state it ends with is the registry as of the moment it reached the end of the
// journal; a record appended later is simply not in it, a record cut short is skipped.
// That state is written out as a fresh snapshot (generation 1, an empty journal.1), with
// the key files it names, so the export never depends on journal files copied while
// they grow. Key files are named by the SHA-256 of their contents and written once: each
// is checked against its name. A key file removed after the state was read (its account
// changed key or was deleted meanwhile) makes the export read the registry again.
import type { User } from './types.js';
import { RegistryError } from './types.js';
import { LowdbRegistry } from './lowdb.js';
import { registryExists } from './folder.js';
import { snapshotPieces } from './snapshot.js';

export interface RegistryExport {
  users: User[];
  /** The contents of snapshot.json for a registry folder holding exactly `users`. */
  snapshot: string;
  /** journal.1 (empty) goes beside it. */
  generation: 1;
  /** keyId (SHA-256 of the armor) -> armored public key, for every key a user names. */
  keys: Map<string, string>;
}

/** Reads the registry in dataDir without changing it; refuses when there is none. */
export async function exportRegistry(dataDir: string): Promise<RegistryExport> {
  if (!(await registryExists(dataDir))) {
    throw new RegistryError('missing', `There is no registry in ${dataDir}: check dataDir in the configuration (kzymy-server check shows it).`);
  }
  const reg = await LowdbRegistry.open({
    dataDir,
    beforeCreate: () => Promise.reject(new RegistryError('missing', `The registry in ${dataDir} went away while it was opened; run the backup again.`)),
  });
  try {
    for (let attempt = 0; ; attempt++) {
      const users = [...reg.list()];
      const keys = new Map<string, string>();
      let missing = false;
      for (const u of users) {
        if (keys.has(u.keyId)) continue;
        try {
          keys.set(u.keyId, await reg.publicKey(u));
        } catch (err) {
          if (!(err instanceof RegistryError) || attempt >= 4) throw err;
          missing = true;
          break;
        }
      }
      if (!missing) return { users, snapshot: snapshotText(users), generation: 1, keys };
      await reg.refresh();
    }
  } finally {
    await reg.close();
  }
}

/** snapshot.json as the engine writes it, for a registry folder holding exactly `users`. */
function snapshotText(users: User[]): string {
  return [...snapshotPieces({ version: 2, generation: 1, users })].join('');
}
