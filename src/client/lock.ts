// One fetch per profile at a time: two runs that meet (a --watch and a cron run, say)
// would each download and deliver every waiting message, so each would arrive twice.
// The lock is proper-lockfile's: a folder `PROFILE.lock` beside the profile, its time
// refreshed every few seconds while the run lasts. A run that crashed stops refreshing
// it, and the next run takes it over once it is LOCK_STALE_MS old.
import { mkdir } from 'node:fs/promises';
import path from 'node:path';
import lockfile from 'proper-lockfile';
import { errnoPhrase } from '../config/errno.js';
import { ClientError } from './errors.js';

/** Exit status of a run that found another one at work on its profile (as fetchmail's 8). */
export const EXIT_LOCKED = 8;
/** A lock not refreshed for this long belongs to a run that ended without giving it back. */
export const LOCK_STALE_MS = 10_000;

/**
 * Takes the profile's lock, or throws the sentence for "another run is at work".
 * `onLost` is called if the lock is taken away while this run holds it (the machine slept
 * past LOCK_STALE_MS and another run took over). Resolves to the function that gives it back.
 */
export async function lockProfile(profileFile: string, onLost: (err: ClientError) => void): Promise<() => Promise<void>> {
  const lockPath = `${profileFile}.lock`;
  await mkdir(path.dirname(profileFile), { recursive: true, mode: 0o700 });
  try {
    return await lockfile.lock(profileFile, {
      realpath: false,
      lockfilePath: lockPath,
      stale: LOCK_STALE_MS,
      update: LOCK_STALE_MS / 2,
      retries: 0,
      onCompromised: () =>
        onLost(
          new ClientError(
            `Another kzymy-client run took over the profile ${profileFile} (this one did not refresh its lock for ${LOCK_STALE_MS / 1000} seconds, after a sleep perhaps): this run stops.`,
            EXIT_LOCKED,
          ),
        ),
    });
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ELOCKED') {
      throw new ClientError(
        `Another kzymy-client fetch is running with the profile ${profileFile} (a --watch, or a run from cron): ` +
          `this one stops, so that no message is delivered twice. If none runs, its lock ${lockPath} is taken over ` +
          `${LOCK_STALE_MS / 1000} seconds after that run ended.`,
        EXIT_LOCKED,
      );
    }
    throw new ClientError(`Cannot lock the profile ${profileFile} (${errnoPhrase(err) ?? 'an unknown error'}): is its folder writable?`);
  }
}
