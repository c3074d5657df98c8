// The schema of the PostgreSQL registry engine (./postgres.ts), as numbered migrations.
// Each one runs once, in order, inside the transaction that opens the registry, under an
// advisory lock (two nodes starting at once apply it once); `schema_migrations` records
// which ones ran. A migration is never edited once released: a change is a new one.
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
