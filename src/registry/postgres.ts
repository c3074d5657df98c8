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
//   A reader asks for rows numbered after the last one it saw: it fetches only what
//   changed, and cannot miss a change committed meanwhile. The row lock makes writers
//   wait for each other; each change is still computed by SQL from the row as it is
//   then (array_append, array_remove), so no change is computed from a stale copy.
// - Deleting an account deletes its row and its key; `removals` keeps only the change
//   number, and readers compare their names with the table to learn which account went.
//   No username or fingerprint of a deleted account stays in the tables; VACUUM then
//   clears the dead rows from the table files.
// - Other processes (on any node) see a change within REFRESH_MS: a process that follows
//   (the server) LISTENs for a NOTIFY sent at each commit and also looks every
//   REFRESH_MS, in case a notification is lost with its connection.
// - The schema is created and upgraded at open by ./pg-migrations.ts.
import pg from 'pg';
import { createHash } from 'node:crypto';
import type { Logger } from '../config/log.js';
import { RegistryError, type NewUser, type Registry, type User } from './types.js';
import { State, asUser } from './ops.js';
import { normalizeLocalPart, randomUsername } from './names.js';
import { MIGRATIONS, MIGRATION_LOCK, SCHEMA_VERSION } from './pg-migrations.js';
import { REFRESH_MS } from './lowdb.js';

export interface PostgresOptions {
  url: string;
  logger?: Logger;
  /** Follow other processes' changes in the background (LISTEN/NOTIFY and a timer). */
  follow?: boolean;
  /** Called before the schema is created in an empty database; may throw to refuse. */
  beforeCreate?: () => Promise<void>;
}

const CHANNEL = 'kzymy_registry';
const COLUMNS = 'username, fingerprint, key_id, key_expires_at, created_at, disabled, catch_all, aliases, blocked, notices';
/** Public keys kept in memory after a read (by key id, which names the key's content). */
const KEY_CACHE = 1000;

interface Row {
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

const sha256 = (s: string) => createHash('sha256').update(s, 'utf8').digest('hex');

/** The URL without its password (in the user part or as a `password` parameter), for the operator. */
export function withoutPassword(url: string): string {
  // Not WHATWG URL: it refuses postgresql://user@/db?host=/run/postgresql, which libpq and pg accept.
  return url
    .replace(/^([a-z][a-z0-9+.-]*:\/\/[^:/@?#]*):[^@/?#]*@/i, '$1@')
    .replace(/([?&])password=[^&#]*&?/gi, '$1')
    .replace(/[?&]$/, '');
}

const CONNECTION_ERRORS = new Set(['ECONNREFUSED', 'ECONNRESET', 'ENOENT', 'ETIMEDOUT', 'EHOSTUNREACH', 'ENETUNREACH', 'ENOTFOUND', 'EAI_AGAIN', 'EPIPE', 'EACCES']);

/** Why a database call failed, in a few words a person can act on (never the server's message: it may quote data). */
function reason(err: unknown): string {
  const code = (err as { code?: string }).code ?? '';
  const message = (err as Error).message ?? '';
  if (CONNECTION_ERRORS.has(code) || /^08/.test(code) || /terminated|timeout|Connection/i.test(message)) return 'it cannot be reached';
  if (code === '57P01' || code === '57P02' || code === '57P03') return 'it is shutting down or starting';
  if (code === '28P01' || code === '28000') return 'it refused kzymy\'s login';
  if (code === '3D000') return 'that database does not exist';
  if (code === '42501') return 'kzymy\'s role lacks a permission there';
  return code ? `it answered with error ${code}` : 'it did not answer as expected';
}

export class PostgresRegistry implements Registry {
  readonly location: string;
  private readonly pool: pg.Pool;
  private state = new State();
  /** The number of the last change this process has read. */
  private cursor = '0';
  private running: Promise<boolean> | null = null;
  private again = false;
  private timer: NodeJS.Timeout | null = null;
  private listener: pg.Client | null = null;
  private listening: Promise<void> | null = null;
  private failing = false;
  private closed = false;
  private readonly keys = new Map<string, string>();
  private readonly guarded = new WeakSet<pg.PoolClient>();

  private constructor(private readonly opts: PostgresOptions) {
    this.location = withoutPassword(opts.url);
    this.pool = new pg.Pool({
      connectionString: opts.url,
      max: 4,
      connectionTimeoutMillis: 10_000,
      query_timeout: 30_000,
      idleTimeoutMillis: 30_000,
      // A CLI command that has done its work exits without closing the registry first.
      allowExitOnIdle: true,
      application_name: 'kzymy',
    });
    // An idle connection the server closed (a restart): the pool drops it and makes a new one.
    this.pool.on('error', () => undefined);
  }

  static async open(opts: PostgresOptions): Promise<PostgresRegistry> {
    const reg = new PostgresRegistry(opts);
    try {
      await reg.migrate();
      await reg.catchUp();
    } catch (err) {
      await reg.close();
      throw reg.asError(err);
    }
    if (opts.follow) reg.follow();
    return reg;
  }

  /**
   * A connection from the pool. The pool listens for errors of idle connections only; one
   * that breaks while checked out (the server went away) also fails its query, which is
   * where the error is handled, so its 'error' event is only kept from ending the process.
   */
  private async connect(): Promise<pg.PoolClient> {
    const c = await this.pool.connect();
    if (!this.guarded.has(c)) {
      this.guarded.add(c);
      c.on('error', () => undefined);
    }
    return c;
  }

  /** A RegistryError as it is, or a database failure as a sentence ('write-failed', which the web answers with 503). */
  private asError(err: unknown, change = false): RegistryError {
    if (err instanceof RegistryError) return err;
    return new RegistryError(
      'write-failed',
      `The registry database ${this.location} cannot be used now (${reason(err)})${change ? ', so the change was not made or not confirmed' : ''}. ` +
        'Check that PostgreSQL is running and reachable, then try again.',
      { cause: err },
    );
  }

  /** Creates or upgrades the schema, once, whichever node gets the lock first. */
  private async migrate(): Promise<void> {
    const c = await this.connect();
    try {
      await c.query('BEGIN');
      await c.query('SELECT pg_advisory_xact_lock($1)', [MIGRATION_LOCK]);
      const { rows } = await c.query<{ exists: boolean }>("SELECT to_regclass('schema_migrations') IS NOT NULL AS exists");
      if (!rows[0]!.exists) {
        await this.opts.beforeCreate?.();
        await c.query('CREATE TABLE schema_migrations (version integer PRIMARY KEY, name text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())');
      }
      const head = (await c.query<{ v: number | null }>('SELECT max(version) AS v FROM schema_migrations')).rows[0]!.v ?? 0;
      if (head > SCHEMA_VERSION) {
        throw new RegistryError(
          'damaged',
          `The registry database ${this.location} has schema version ${head}, newer than this kzymy knows (${SCHEMA_VERSION}). ` +
            'kzymy will not start on it: run the kzymy version that upgraded it, or restore the database from your backup, then start again.',
        );
      }
      for (const m of MIGRATIONS) {
        if (m.version <= head) continue;
        await c.query(m.sql);
        await c.query('INSERT INTO schema_migrations (version, name) VALUES ($1, $2)', [m.version, m.name]);
        this.opts.logger?.info({ evt: 'registry-migrated', version: m.version }, 'applied a registry schema migration');
      }
      await c.query('COMMIT');
      c.release();
    } catch (err) {
      await c.query('ROLLBACK').catch(() => undefined);
      c.release(err instanceof RegistryError ? undefined : (err as Error));
      throw err;
    }
  }

  // --- reading -----------------------------------------------------------------------

  /** Reads the changes numbered after `cursor`, all from one snapshot; returns whether the state changed. */
  private async pass(): Promise<boolean> {
    const c = await this.connect();
    let rows: Row[];
    let names: Set<string> | null = null;
    let head: string;
    try {
      await c.query('BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY');
      head = (await c.query<{ v: string }>('SELECT version::text AS v FROM registry_state')).rows[0]!.v;
      if (head === this.cursor) {
        await c.query('COMMIT');
        c.release();
        return false;
      }
      rows = (await c.query<Row>(`SELECT ${COLUMNS} FROM users WHERE version > $1::bigint`, [this.cursor])).rows;
      const fresh = this.cursor === '0';
      if (!fresh && ((await c.query('SELECT 1 FROM removals WHERE version > $1::bigint LIMIT 1', [this.cursor])).rowCount ?? 0) > 0) {
        names = new Set((await c.query<{ username: string }>('SELECT username FROM users')).rows.map((r) => r.username));
      }
      await c.query('COMMIT');
      c.release();
    } catch (err) {
      await c.query('ROLLBACK').catch(() => undefined);
      c.release(err as Error);
      throw err;
    }
    // Every row comes first (a key that moved from a deleted account to a new one ends with
    // the new one); then the accounts that are gone.
    for (const row of rows) {
      const u = toUser(row);
      const old = this.state.byName.get(u.username);
      if (old) this.state.drop(old);
      this.state.put(u);
    }
    if (names) for (const u of [...this.state.byName.values()]) if (!names.has(u.username)) this.state.drop(u);
    this.cursor = head;
    return true;
  }

  /** One pass at a time; a request during a pass gets another pass, which starts after it was made. */
  private catchUp(): Promise<boolean> {
    if (this.closed) return Promise.resolve(false);
    if (this.running) {
      this.again = true;
      return this.running;
    }
    this.running = (async () => {
      let changed = false;
      try {
        do {
          this.again = false;
          changed = (await this.pass()) || changed;
        } while (this.again);
      } finally {
        this.running = null;
      }
      return changed;
    })();
    return this.running;
  }

  async refresh(): Promise<boolean> {
    try {
      return await this.catchUp();
    } catch (err) {
      throw this.asError(err);
    }
  }

  private follow(): void {
    const tick = () =>
      this.catchUp().then(
        () => {
          if (this.failing) this.opts.logger?.info({ evt: 'registry-readable' }, 'the registry database is readable again');
          this.failing = false;
        },
        (err) => {
          if (!this.failing) this.opts.logger?.warn({ evt: 'registry-read-failed', err });
          this.failing = true;
        },
      );
    this.timer = setInterval(() => {
      void tick();
      if (!this.listener && !this.listening) this.listening = this.listen(tick).finally(() => (this.listening = null));
    }, REFRESH_MS);
    this.timer.unref();
    this.listening = this.listen(tick).finally(() => (this.listening = null));
  }

  /** A connection of its own that LISTENs; when it breaks, the timer makes a new one. */
  private async listen(tick: () => void): Promise<void> {
    const client = new pg.Client({ connectionString: this.opts.url, connectionTimeoutMillis: 10_000, application_name: 'kzymy-listen' });
    const drop = () => {
      if (this.listener === client) this.listener = null;
      void client.end().catch(() => undefined);
    };
    client.on('error', drop);
    client.on('end', drop);
    client.on('notification', () => tick());
    try {
      await client.connect();
      await client.query(`LISTEN ${CHANNEL}`);
    } catch {
      drop();
      return;
    }
    if (this.closed) return drop();
    this.listener = client;
    // Changes made while there was no listener.
    tick();
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    if (this.timer) clearInterval(this.timer);
    await this.listening;
    await this.listener?.end().catch(() => undefined);
    this.listener = null;
    await this.running?.catch(() => undefined);
    await this.pool.end().catch(() => undefined);
  }

  count(): number {
    return this.state.byName.size;
  }

  list(): readonly User[] {
    return [...this.state.byName.values()];
  }

  get(username: string): User | undefined {
    return this.state.byName.get(username.toLowerCase());
  }

  findByFingerprint(fingerprint: string): User | undefined {
    const name = this.state.byFingerprint.get(fingerprint.toUpperCase());
    return name === undefined ? undefined : this.state.byName.get(name);
  }

  async publicKey(user: User): Promise<string> {
    const cached = this.keys.get(user.keyId);
    if (cached !== undefined) return cached;
    let row: { key_id: string; armored: string } | undefined;
    try {
      row = (await this.pool.query<{ key_id: string; armored: string }>('SELECT key_id, armored FROM public_keys WHERE username = $1', [user.username])).rows[0];
    } catch (err) {
      throw this.asError(err);
    }
    if (!row || row.key_id !== user.keyId) {
      throw new RegistryError('no-such-user', `The key of user "${user.username}" was replaced or deleted a moment ago; look the user up again.`);
    }
    if (sha256(row.armored) !== row.key_id) {
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
    let c: pg.PoolClient;
    try {
      c = await this.connect();
    } catch (err) {
      throw this.asError(err, true);
    }
    let out: T;
    try {
      await c.query('BEGIN');
      const version = (await c.query<{ v: string }>(`UPDATE registry_state SET version = version + 1 RETURNING version::text AS v, pg_notify('${CHANNEL}', version::text)`)).rows[0]!.v;
      out = await body(c, version);
      await c.query('COMMIT');
      c.release();
    } catch (err) {
      await c.query('ROLLBACK').catch(() => undefined);
      c.release(err instanceof RegistryError ? undefined : (err as Error));
      throw this.asError(err, true);
    }
    // Committed: the change is durable. Read it (and whatever came before it) into memory.
    await this.catchUp().catch((err) => this.opts.logger?.warn({ evt: 'registry-read-failed', err }));
    return out;
  }

  /** Refuses a change to a user this process does not know, even after looking again, without writing. */
  private async known(username: string): Promise<void> {
    if (this.state.byName.has(username)) return;
    await this.refresh();
    if (!this.state.byName.has(username)) throw noSuchUser(username);
  }

  /** The user as this process now sees it, or as the change left it (if another one deleted it since). */
  private current(row: Row): User {
    return this.state.byName.get(row.username) ?? toUser(row);
  }

  /** One UPDATE of a user's row, `set` in SQL over that row as it is at that moment ($1 the username, $2... `args`). */
  private async update(username: string, set: string, args: unknown[]): Promise<User> {
    const name = username.toLowerCase();
    await this.known(name);
    const row = await this.write(async (c, version) => {
      const r = await c.query<Row>(`UPDATE users SET ${set}, version = $${args.length + 2}::bigint WHERE username = $1 RETURNING ${COLUMNS}`, [name, ...args, version]);
      if (!r.rows[0]) throw noSuchUser(name);
      return r.rows[0];
    });
    return this.current(row);
  }

  async add(input: NewUser): Promise<User> {
    const fingerprint = input.fingerprint.toUpperCase();
    if (this.state.byFingerprint.has(fingerprint)) throw duplicateKey();
    const keyId = sha256(input.publicKey);
    for (;;) {
      let username = randomUsername();
      while (this.state.byName.has(username)) username = randomUsername();
      try {
        const row = await this.write(async (c, version) => {
          const r = await c.query<Row>(
            `INSERT INTO users (username, fingerprint, key_id, key_expires_at, created_at, version) VALUES ($1, $2, $3, $4, $5, $6::bigint) RETURNING ${COLUMNS}`,
            [username, fingerprint, keyId, input.keyExpiresAt, new Date().toISOString(), version],
          ).catch(uniqueViolation);
          await c.query('INSERT INTO public_keys (username, key_id, armored) VALUES ($1, $2, $3)', [username, keyId, input.publicKey]);
          return r.rows[0]!;
        });
        return this.current(row);
      } catch (err) {
        if (err instanceof RegistryError && err.code === 'duplicate-username') continue;
        throw err;
      }
    }
  }

  async setDisabled(username: string, disabled: boolean): Promise<User> {
    return this.update(username, 'disabled = $2', [disabled]);
  }

  async setCatchAll(username: string, on: boolean): Promise<User> {
    return this.update(username, 'catch_all = $2', [on]);
  }

  async addAlias(username: string, localPart: string): Promise<User> {
    return this.update(username, 'aliases = CASE WHEN $2 = ANY (aliases) THEN aliases ELSE array_append(aliases, $2) END, blocked = array_remove(blocked, $2)', [
      localPartOrThrow(localPart),
    ]);
  }

  async removeAlias(username: string, localPart: string): Promise<User> {
    return this.update(username, 'aliases = array_remove(aliases, $2), blocked = array_remove(blocked, $2)', [localPartOrThrow(localPart)]);
  }

  async blockAlias(username: string, localPart: string): Promise<User> {
    return this.update(username, 'aliases = array_remove(aliases, $2), blocked = CASE WHEN $2 = ANY (blocked) THEN blocked ELSE array_append(blocked, $2) END', [
      localPartOrThrow(localPart),
    ]);
  }

  async setKey(username: string, key: NewUser): Promise<User> {
    const name = username.toLowerCase();
    const fingerprint = key.fingerprint.toUpperCase();
    const holder = this.state.byFingerprint.get(fingerprint);
    if (holder !== undefined && holder !== name) throw duplicateKey();
    await this.known(name);
    const keyId = sha256(key.publicKey);
    const row = await this.write(async (c, version) => {
      await c.query('UPDATE public_keys SET key_id = $2, armored = $3 WHERE username = $1', [name, keyId, key.publicKey]);
      const r = await c
        .query<Row>(
          `UPDATE users SET fingerprint = $2, key_id = $3, key_expires_at = $4, notices = '{}', version = $5::bigint WHERE username = $1 RETURNING ${COLUMNS}`,
          [name, fingerprint, keyId, key.keyExpiresAt, version],
        )
        .catch(uniqueViolation);
      if (!r.rows[0]) throw noSuchUser(name);
      return r.rows[0];
    });
    return this.current(row);
  }

  async addNotices(username: string, tags: readonly string[], keyExpiresAt: string | null): Promise<User> {
    const name = username.toLowerCase();
    await this.known(name);
    const unique = [...new Set(tags)];
    let unchanged: Row | null = null;
    try {
      const row = await this.write(async (c, version) => {
        const r = await c.query<Row>(
          `UPDATE users SET notices = notices || ARRAY(SELECT t FROM unnest($2::text[]) WITH ORDINALITY AS x (t, i) WHERE NOT (t = ANY (notices)) ORDER BY i),
             version = $4::bigint
           WHERE username = $1 AND key_expires_at IS NOT DISTINCT FROM $3 RETURNING ${COLUMNS}`,
          [name, unique, keyExpiresAt, version],
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

  /** Deletes an account: its row and its key; `removals` records only that a change removed someone. */
  async remove(username: string): Promise<void> {
    const name = username.toLowerCase();
    await this.known(name);
    await this.write(async (c, version) => {
      const r = await c.query('DELETE FROM users WHERE username = $1', [name]);
      if (!r.rowCount) throw noSuchUser(name);
      await c.query('INSERT INTO removals (version) VALUES ($1::bigint)', [version]);
    });
    // Clears the dead rows from the table files now rather than at the next autovacuum.
    // Best effort: it needs the tables' owner, and a failure leaves the deletion done.
    await this.pool.query('VACUUM users, public_keys').catch((err) =>
      this.opts.logger?.warn({ evt: 'registry-vacuum-failed', err }, 'could not VACUUM after deleting an account'),
    );
  }
}

function toUser(row: Row): User {
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

/** Turns the database's unique violations into the registry's refusals. */
function uniqueViolation(err: unknown): never {
  const e = err as { code?: string; constraint?: string };
  if (e.code === '23505' && e.constraint === 'users_fingerprint_unique') throw duplicateKey();
  if (e.code === '23505' && e.constraint === 'users_pkey') throw new RegistryError('duplicate-username', 'That username is taken.');
  throw err;
}

const duplicateKey = () => new RegistryError('duplicate-key', 'This key is already registered. Use a fresh key for each identity: one key, one account.');
const noSuchUser = (username: string) => new RegistryError('no-such-user', `There is no user "${username}".`);

function localPartOrThrow(raw: string): string {
  const l = normalizeLocalPart(raw);
  if (!l) throw new RegistryError('bad-local-part', `"${raw}" is not a valid address local part (1-64 characters, no spaces or @).`);
  return l;
}
