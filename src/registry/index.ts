// The registry: users, their public keys and address policy.
//
// Layout of the embedded engine (lowdb, in DATA_DIR/registry/), and why:
//
// - A journal of changes, not a rewritten file. Each change (signup, alias, key update,
//   disable, notice) is one small record appended to `journal.N` and fsynced: its cost
//   does not depend on how many users there are. Rewriting one registry.json per change,
//   as kzymy 0.1 did, cost ~2.8 s per change at 100,000 users and stalled SMTP meanwhile.
// - Records are operations ("add alias x to user u"), applied in journal order by one
//   deterministic function (./ops.ts). Every process that appends, the running server and
//   the operator's CLI alike, appends with O_APPEND and then reads the journal back:
//   they all see the same order, so they cannot overwrite each other's changes, and a
//   conflict (two signups with one key) is decided by that order, the same way everywhere.
//   No lock is needed, so a crashed process can never leave one behind.
// - `snapshot.json` is a lowdb document holding the state as of the start of journal N.
//   When the journal outgrows half the snapshot, a long-running process seals it (a
//   record that ends the file; writers continue in `journal.N+1`) and writes a new
//   snapshot in the background, in pieces, so the event loop never waits on it. Opening
//   reads the snapshot and replays the journals after it.
// - Public keys live in `keys/SHA256.asc`, written once, outside the snapshot and outside
//   memory: the in-memory index stays small (about half a kilobyte a user) and a change never
//   rewrites keys. Uniqueness of usernames and of keys is enforced by the journal order.
// - Durability: a change is acknowledged after its record is fsynced (and the journal's
//   folder when the file is new); the record becomes visible in memory only after that.
//   A crash mid-append leaves a record without its end, which every reader skips. So a
//   crash at any point leaves the old state or the new one, never a mix.
// - Deleting an account removes its key file and compacts twice, so that no journal that
//   named it survives: the registry keeps no trace of a deleted account.
// - Other processes see a change within REFRESH_MS (one second: a timer, with fs.watch
//   to be sooner); an unknown recipient at RCPT looks again at once.
//
// The engine sits behind the `Registry` interface (./types.ts). The second engine,
// PostgreSQL (./postgres.ts, its schema in ./pg-migrations.ts), serves several nodes from
// one database with the same guarantees; `registry.engine` in the configuration picks it.
// What the two share (the in-memory index, the catch-up loop, the checks every change
// passes before it is written) is ./engine.ts.
import { LowdbRegistry, type OpenOptions as LowdbOptions } from './lowdb.js';
import { PostgresRegistry } from './postgres.js';
import { REFRESH_MS } from './engine.js';
import { RegistryError, type Registry } from './types.js';

export * from './types.js';
export { randomUsername, normalizeLocalPart, allows } from './names.js';
export { REFRESH_MS };

export type RegistryEngine = 'lowdb' | 'postgres';

export interface OpenOptions extends LowdbOptions {
  /** 'lowdb' (the default): files in dataDir. 'postgres': the database at `url`. */
  engine?: RegistryEngine;
  /** postgresql://... (the postgres engine only). */
  url?: string;
}

/** Opens (or, where none exists yet, creates) the registry: in `opts.dataDir`, or in the database at `opts.url`. */
export async function openRegistry(opts: OpenOptions): Promise<Registry> {
  if ((opts.engine ?? 'lowdb') === 'lowdb') return LowdbRegistry.open(opts);
  if (!opts.url) throw new RegistryError('missing', 'The postgres registry engine needs registry.url (KZYMY_REGISTRY_URL), such as postgresql:///kzymy?host=/run/postgresql.');
  return PostgresRegistry.open({ url: opts.url, logger: opts.logger, follow: opts.follow, beforeCreate: opts.beforeCreate });
}

/** Whether a registry (of either layout) exists in dataDir. */
export { registryExists } from './folder.js';

/** The registry at one point in time, read-only (for `kzymy-server backup`). */
export { exportRegistry, type RegistryExport } from './export.js';
