// The PostgreSQL engine's connections: one pool per registry, and transactions on it.
import pg from 'pg';
import { RegistryError } from './types.js';

export class Database {
  private readonly pool: pg.Pool;
  private readonly guarded = new WeakSet<pg.PoolClient>();

  constructor(readonly url: string) {
    this.pool = new pg.Pool({
      connectionString: url,
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

  /**
   * Runs `body` in a transaction opened by `begin` ('BEGIN ...'), on a connection of its own,
   * and commits; rolls back on any failure. A connection that failed other than with a
   * RegistryError (a refusal) is dropped from the pool, not reused.
   */
  async transaction<T>(begin: string, body: (c: pg.PoolClient) => Promise<T>): Promise<T> {
    const c = await this.connect();
    try {
      await c.query(begin);
      const out = await body(c);
      await c.query('COMMIT');
      c.release();
      return out;
    } catch (err) {
      await c.query('ROLLBACK').catch(() => undefined);
      c.release(err instanceof RegistryError ? undefined : (err as Error));
      throw err;
    }
  }

  /** One statement outside any transaction. */
  query<R extends pg.QueryResultRow>(sql: string, args?: unknown[]): Promise<pg.QueryResult<R>> {
    return this.pool.query<R>(sql, args);
  }

  async end(): Promise<void> {
    await this.pool.end().catch(() => undefined);
  }
}
