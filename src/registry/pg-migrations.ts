// The schema of the PostgreSQL registry engine (./postgres.ts), as numbered migrations.
// Each one runs once, in order, inside the transaction that opens the registry, under an
// advisory lock (two nodes starting at once apply it once); `schema_migrations` records
// which ones ran. A migration is never edited once released: a change is a new one.
// `migrate` below applies them.
//
// The tables:
//   registry_state  one row: `version`, the number of the last change. Every change takes
//                   the next number while holding this row's lock, so numbers follow
//                   commit order and a reader that has seen number N has seen every
//                   change up to N.
//   users           one row an account; `version` is the number of its last change.
//                   UNIQUE (fingerprint): one key, one account, decided by the database.
//   public_keys     the armored key of each account, read on demand, never held in memory.
//   removals        the numbers of account deletions and nothing else: readers learn that
//                   some account went and compare their names with the table, so no
//                   username or fingerprint of a deleted account stays behind.
import type { Logger } from '../config/log.js';
import { RegistryError } from './types.js';
import type { Database } from './pg-database.js';

export interface Migration {
  version: number;
  name: string;
  sql: string;
}

export const MIGRATIONS: readonly Migration[] = [
  {
    version: 1,
    name: 'init',
    sql: `
CREATE TABLE registry_state (
  id boolean PRIMARY KEY DEFAULT true CHECK (id),
  version bigint NOT NULL
);
INSERT INTO registry_state (id, version) VALUES (true, 0);

CREATE TABLE users (
  username text PRIMARY KEY,
  fingerprint text NOT NULL,
  key_id text NOT NULL,
  key_expires_at text,
  created_at text NOT NULL,
  disabled boolean NOT NULL DEFAULT false,
  catch_all boolean NOT NULL DEFAULT true,
  aliases text[] NOT NULL DEFAULT '{}',
  blocked text[] NOT NULL DEFAULT '{}',
  notices text[] NOT NULL DEFAULT '{}',
  version bigint NOT NULL,
  CONSTRAINT users_fingerprint_unique UNIQUE (fingerprint)
);
CREATE INDEX users_version ON users (version);

CREATE TABLE public_keys (
  username text PRIMARY KEY REFERENCES users (username) ON DELETE CASCADE,
  key_id text NOT NULL,
  armored text NOT NULL
);

CREATE TABLE removals (
  version bigint PRIMARY KEY
);
`,
  },
];

/** The newest schema this kzymy knows. */
export const SCHEMA_VERSION = MIGRATIONS[MIGRATIONS.length - 1]!.version;

/** The key of the advisory lock that migrations hold (any fixed number; "kzymy" in ASCII). */
export const MIGRATION_LOCK = 0x6b7a796d79;

/** Creates or upgrades the schema of the database at `location`, once, whichever node gets the lock first. */
export async function migrate(db: Database, location: string, beforeCreate?: () => Promise<void>, logger?: Logger): Promise<void> {
  await db.transaction('BEGIN', async (c) => {
    await c.query('SELECT pg_advisory_xact_lock($1)', [MIGRATION_LOCK]);
    const { rows } = await c.query<{ exists: boolean }>("SELECT to_regclass('schema_migrations') IS NOT NULL AS exists");
    if (!rows[0]!.exists) {
      await beforeCreate?.();
      await c.query('CREATE TABLE schema_migrations (version integer PRIMARY KEY, name text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())');
    }
    const head = (await c.query<{ v: number | null }>('SELECT max(version) AS v FROM schema_migrations')).rows[0]!.v ?? 0;
    if (head > SCHEMA_VERSION) {
      throw new RegistryError(
        'damaged',
        `The registry database ${location} has schema version ${head}, newer than this kzymy knows (${SCHEMA_VERSION}). ` +
          'kzymy will not start on it: run the kzymy version that upgraded it, or restore the database from your backup, then start again.',
      );
    }
    for (const m of MIGRATIONS) {
      if (m.version <= head) continue;
      await c.query(m.sql);
      await c.query('INSERT INTO schema_migrations (version, name) VALUES ($1, $2)', [m.version, m.name]);
      logger?.info({ evt: 'registry-migrated', version: m.version }, 'applied a registry schema migration');
    }
  });
}
