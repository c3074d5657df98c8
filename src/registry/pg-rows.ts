// The users table of the PostgreSQL engine as records: its columns, a row as a frozen
// User, and the read of everything changed after a change number.
import type pg from 'pg';
import { RegistryError, type User } from './types.js';
import { asUser } from './ops.js';
import type { Database } from './pg-database.js';

export const COLUMNS = 'username, fingerprint, key_id, key_expires_at, created_at, disabled, catch_all, aliases, blocked, notices';

export interface Row {
  username: string;
  fingerprint: string;
  key_id: string;
  key_expires_at: string | null;
  created_at: string;
  disabled: boolean;
  catch_all: boolean;
  aliases: string[];
  blocked: string[];
  notices: string[];
}

export function toUser(row: Row): User {
  const u = asUser({
    username: row.username,
    fingerprint: row.fingerprint,
    keyId: row.key_id,
    keyExpiresAt: row.key_expires_at,
    createdAt: row.created_at,
    disabled: row.disabled,
    catchAll: row.catch_all,
    aliases: row.aliases,
    blocked: row.blocked,
    notices: row.notices,
  });
  if (!u) throw new RegistryError('damaged', `The registry database holds a record for user "${row.username}" that is not valid: restore the database from your backup.`);
  return u;
}

/** What changed after a change number: the number now, the rows changed, and (after a deletion) every username left. */
export interface Changes {
  head: string;
  rows: Row[];
  names: Set<string> | null;
}

/** The changes numbered after `cursor`, all from one snapshot; null if there are none. */
export function readChanges(db: Database, cursor: string): Promise<Changes | null> {
  return db.transaction('BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY', async (c: pg.PoolClient) => {
    const head = (await c.query<{ v: string }>('SELECT version::text AS v FROM registry_state')).rows[0]!.v;
    if (head === cursor) return null;
    const rows = (await c.query<Row>(`SELECT ${COLUMNS} FROM users WHERE version > $1::bigint`, [cursor])).rows;
    let names: Set<string> | null = null;
    const fresh = cursor === '0';
    if (!fresh && ((await c.query('SELECT 1 FROM removals WHERE version > $1::bigint LIMIT 1', [cursor])).rowCount ?? 0) > 0) {
      names = new Set((await c.query<{ username: string }>('SELECT username FROM users')).rows.map((r) => r.username));
    }
    return { head, rows, names };
  });
}
