// The PostgreSQL registry engine: the same contract as the embedded lowdb engine
// (./types.ts), for several nodes sharing one database.
//
// - Reads are served from an in-memory copy (the same State as lowdb's, ./ops.ts). A
//   change is one transaction; it is acknowledged only after COMMIT, and this process
//   reads it back into memory before the call resolves.
// - Uniqueness is the database's: UNIQUE (fingerprint) gives one key one account, the
//   primary key one account a username, whoever writes at the same moment.
// - Every change first takes the next number in `registry_state` (a row lock held until
//   COMMIT), so change numbers follow commit order; each changed row carries its number.
//   A reader asks for rows numbered after the last one it saw (./pg-rows.ts): it fetches
//   only what changed, and cannot miss a change committed meanwhile. The row lock makes
//   writers wait for each other; each change is still computed by SQL from the row as it
//   is then (array_append, array_remove), so no change is computed from a stale copy.
// - Deleting an account deletes its row and its key; `removals` keeps only the change
//   number, and readers compare their names with the table to learn which account went.
//   No username or fingerprint of a deleted account stays in the tables; VACUUM then
//   clears the dead rows from the table files.
// - Other processes (on any node) see a change within REFRESH_MS: a process that follows
//   (the server) LISTENs for a NOTIFY sent at each commit (./pg-listen.ts) and also looks
//   every REFRESH_MS, in case a notification is lost with its connection.
// - The schema is created and upgraded at open by ./pg-migrations.ts.
import type pg from 'pg';
import type { Logger } from '../config/log.js';
import { RegistryError, type User } from './types.js';
import { State } from './ops.js';
import { EngineBase, REFRESH_MS, keyIdOf, type KeyChange, type UserChange } from './engine.js';
import { noSuchUser } from './refusals.js';
import { Database } from './pg-database.js';
import { databaseError, uniqueViolation, withoutPassword } from './pg-errors.js';
import { COLUMNS, readChanges, toUser, type Row } from './pg-rows.js';
import { CHANNEL, Listener } from './pg-listen.js';
import { migrate } from './pg-migrations.js';

export interface PostgresOptions {
  url: string;
  logger?: Logger;
  /** Follow other processes' changes in the background (LISTEN/NOTIFY and a timer). */
  follow?: boolean;
  /** Called before the schema is created in an empty database; may throw to refuse. */
  beforeCreate?: () => Promise<void>;
}

/** Public keys kept in memory after a read (by key id, which names the key's content). */
const KEY_CACHE = 1000;

/** The SET clause of each change to a user's row, in SQL over the row as it is then ($2 the value). */
const SET: Record<Exclude<UserChange['op'], 'notices'>, string> = {
  disable: 'disabled = $2',
  'catch-all': 'catch_all = $2',
  alias: 'aliases = CASE WHEN $2 = ANY (aliases) THEN aliases ELSE array_append(aliases, $2) END, blocked = array_remove(blocked, $2)',
  unalias: 'aliases = array_remove(aliases, $2), blocked = array_remove(blocked, $2)',
  block: 'aliases = array_remove(aliases, $2), blocked = CASE WHEN $2 = ANY (blocked) THEN blocked ELSE array_append(blocked, $2) END',
};

export class PostgresRegistry extends EngineBase {
  readonly location: string;
  protected readonly state = new State();
  private readonly db: Database;
  /** The number of the last change this process has read. */
  private cursor = '0';
  private timer: NodeJS.Timeout | null = null;
  private listener: Listener | null = null;
  private readonly keys = new Map<string, string>();

  private constructor(private readonly opts: PostgresOptions) {
    super(opts.logger);
    this.location = withoutPassword(opts.url);
    this.db = new Database(opts.url);
  }

  static async open(opts: PostgresOptions): Promise<PostgresRegistry> {
    const reg = new PostgresRegistry(opts);
    try {
      await migrate(reg.db, reg.location, opts.beforeCreate, opts.logger);
      await reg.catchUp();
    } catch (err) {
      await reg.close();
      throw databaseError(reg.location, err);
    }
    if (opts.follow) reg.follow();
    return reg;
  }

  // --- reading -----------------------------------------------------------------------

  protected async pass(): Promise<boolean> {
    const changes = await readChanges(this.db, this.cursor);
    if (!changes) return false;
    // Every row comes first (a key that moved from a deleted account to a new one ends with
    // the new one); then the accounts that are gone.
    for (const row of changes.rows) {
      const u = toUser(row);
      const old = this.state.byName.get(u.username);
      if (old) this.state.drop(old);
      this.state.put(u);
    }
    const { names } = changes;
    if (names) for (const u of [...this.state.byName.values()]) if (!names.has(u.username)) this.state.drop(u);
    this.cursor = changes.head;
    return true;
  }

  async refresh(): Promise<boolean> {
    try {
      return await this.catchUp();
    } catch (err) {
      throw databaseError(this.location, err);
    }
  }

  private follow(): void {
    const tick = () => void this.tick('the registry database is readable again');
    const listener = new Listener(this.opts.url, tick);
    this.listener = listener;
    this.timer = setInterval(() => {
      tick();
      listener.ensure();
    }, REFRESH_MS);
    this.timer.unref();
    listener.ensure();
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    if (this.timer) clearInterval(this.timer);
    await this.listener?.close();
    this.listener = null;
    await this.settled();
    await this.db.end();
  }

  async publicKey(user: User): Promise<string> {
    const cached = this.keys.get(user.keyId);
    if (cached !== undefined) return cached;
    let row: { key_id: string; armored: string } | undefined;
    try {
      row = (await this.db.query<{ key_id: string; armored: string }>('SELECT key_id, armored FROM public_keys WHERE username = $1', [user.username])).rows[0];
    } catch (err) {
      throw databaseError(this.location, err);
    }
    if (!row || row.key_id !== user.keyId) {
      throw new RegistryError('no-such-user', `The key of user "${user.username}" was replaced or deleted a moment ago; look the user up again.`);
    }
    if (keyIdOf(row.armored) !== row.key_id) {
      throw new RegistryError(
        'damaged',
        `The registry database ${this.location} holds a key for user "${user.username}" that does not match its record: restore the database from your backup.`,
      );
    }
    if (this.keys.size >= KEY_CACHE) this.keys.delete(this.keys.keys().next().value!);
    this.keys.set(user.keyId, row.armored);
    return row.armored;
  }

  // --- writing -----------------------------------------------------------------------

  /**
   * Runs `body` as one transaction after taking the next change number (and the lock on
   * it), notifies the followers at COMMIT, then reads the change back into memory.
   */
  private async write<T>(body: (c: pg.PoolClient, version: string) => Promise<T>): Promise<T> {
    if (this.closed) throw new Error('the registry is closed');
    let out: T;
    try {
      out = await this.db.transaction('BEGIN', async (c) => {
        const version = (await c.query<{ v: string }>(`UPDATE registry_state SET version = version + 1 RETURNING version::text AS v, pg_notify('${CHANNEL}', version::text)`)).rows[0]!.v;
        return body(c, version);
      });
    } catch (err) {
      throw databaseError(this.location, err, true);
    }
    // Committed: the change is durable. Read it (and whatever came before it) into memory.
    await this.catchUp().catch((err) => this.logger?.warn({ evt: 'registry-read-failed', err }));
    return out;
  }

  /** The user as this process now sees it, or as the change left it (if another one deleted it since). */
  private current(row: Row): User {
    return this.state.byName.get(row.username) ?? toUser(row);
  }

  /** Keys live in the database, beside the row; their id is still the SHA-256 of the armor. */
  protected async storeKey(armored: string): Promise<string> {
    return keyIdOf(armored);
  }

  protected async insert(user: User, armored: string): Promise<User | null> {
    try {
      const row = await this.write(async (c, version) => {
        const r = await c
          .query<Row>(
            `INSERT INTO users (username, fingerprint, key_id, key_expires_at, created_at, version) VALUES ($1, $2, $3, $4, $5, $6::bigint) RETURNING ${COLUMNS}`,
            [user.username, user.fingerprint, user.keyId, user.keyExpiresAt, user.createdAt, version],
          )
          .catch(uniqueViolation);
        await c.query('INSERT INTO public_keys (username, key_id, armored) VALUES ($1, $2, $3)', [user.username, user.keyId, armored]);
        return r.rows[0]!;
      });
      return this.current(row);
    } catch (err) {
      if (err instanceof RegistryError && err.code === 'duplicate-username') return null;
      throw err;
    }
  }

  /** One UPDATE of the user's row ($1 the username, $2 the value, $3 the change number). */
  protected async changeUser(op: UserChange): Promise<User> {
    if (op.op === 'notices') return this.addNoticesOf(op);
    const name = op.user;
    const value = op.op === 'disable' || op.op === 'catch-all' ? op.value : op.local;
    const row = await this.write(async (c, version) => {
      const r = await c.query<Row>(`UPDATE users SET ${SET[op.op]}, version = $3::bigint WHERE username = $1 RETURNING ${COLUMNS}`, [name, value, version]);
      if (!r.rows[0]) throw noSuchUser(name);
      return r.rows[0];
    });
    return this.current(row);
  }

  /** Records the notices unless the key's expiry changed meanwhile; then the user is returned as it is. */
  private async addNoticesOf(op: Extract<UserChange, { op: 'notices' }>): Promise<User> {
    const name = op.user;
    const unique = [...new Set(op.tags)];
    let unchanged: Row | null = null;
    try {
      const row = await this.write(async (c, version) => {
        const r = await c.query<Row>(
          `UPDATE users SET notices = notices || ARRAY(SELECT t FROM unnest($2::text[]) WITH ORDINALITY AS x (t, i) WHERE NOT (t = ANY (notices)) ORDER BY i),
             version = $4::bigint
           WHERE username = $1 AND key_expires_at IS NOT DISTINCT FROM $3 RETURNING ${COLUMNS}`,
          [name, unique, op.ifKeyExpiresAt, version],
        );
        if (r.rows[0]) return r.rows[0];
        // The key's expiry changed meanwhile (or the user went): nothing to record.
        unchanged = (await c.query<Row>(`SELECT ${COLUMNS} FROM users WHERE username = $1`, [name])).rows[0] ?? null;
        throw unchanged ? new RegistryError('no-such-user', 'unchanged') : noSuchUser(name);
      });
      return this.current(row);
    } catch (err) {
      if (unchanged) return this.current(unchanged);
      throw err;
    }
  }

  protected async changeKey(op: KeyChange, armored: string): Promise<User> {
    const name = op.user;
    const row = await this.write(async (c, version) => {
      await c.query('UPDATE public_keys SET key_id = $2, armored = $3 WHERE username = $1', [name, op.keyId, armored]);
      const r = await c
        .query<Row>(
          `UPDATE users SET fingerprint = $2, key_id = $3, key_expires_at = $4, notices = '{}', version = $5::bigint WHERE username = $1 RETURNING ${COLUMNS}`,
          [name, op.fingerprint, op.keyId, op.keyExpiresAt, version],
        )
        .catch(uniqueViolation);
      if (!r.rows[0]) throw noSuchUser(name);
      return r.rows[0];
    });
    return this.current(row);
  }

  /** Deletes an account: its row and its key; `removals` records only that a change removed someone. */
  protected async removeUser(name: string): Promise<void> {
    await this.write(async (c, version) => {
      const r = await c.query('DELETE FROM users WHERE username = $1', [name]);
      if (!r.rowCount) throw noSuchUser(name);
      await c.query('INSERT INTO removals (version) VALUES ($1::bigint)', [version]);
    });
    // Clears the dead rows from the table files now rather than at the next autovacuum.
    // Best effort: it needs the tables' owner, and a failure leaves the deletion done.
    await this.db.query('VACUUM users, public_keys').catch((err) =>
      this.logger?.warn({ evt: 'registry-vacuum-failed', err }, 'could not VACUUM after deleting an account'),
    );
  }
}
