// A private PostgreSQL server for tests: Debian's PostgreSQL binaries run as a cluster of
// its own in a temporary folder, listening on a unix socket only (no TCP port), stopped
// and deleted afterwards. initdb refuses to run as root, so as root (CI) the cluster
// belongs to the `postgres` system user the Debian package creates.
import { execFile, execFileSync } from 'node:child_process';
import { chown, mkdtemp, rm } from 'node:fs/promises';
import { accessSync, constants, readdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import pg from 'pg';
import { inCI, which } from './env.js';

const run = promisify(execFile);

/** The folder of initdb, pg_ctl and postgres (the newest Debian PostgreSQL installed), or null. */
export function postgresBin(): string | null {
  let versions: string[] = [];
  try {
    versions = readdirSync('/usr/lib/postgresql').sort((a, b) => Number(b) - Number(a));
  } catch {
    return null;
  }
  for (const v of versions) {
    const bin = path.join('/usr/lib/postgresql', v, 'bin');
    try {
      accessSync(path.join(bin, 'initdb'), constants.X_OK);
      accessSync(path.join(bin, 'pg_ctl'), constants.X_OK);
      return bin;
    } catch {
      // not this one
    }
  }
  return null;
}

/**
 * Call in a mocha `before` hook of a suite that needs PostgreSQL: skips it loudly on a
 * developer machine without the binaries, and fails it under CI=true (scripts/test.sh
 * installs the `postgresql` package).
 */
export function requirePostgres(ctx: Mocha.Context): void {
  const asRoot = process.getuid?.() === 0;
  const missing: string[] = [];
  if (!postgresBin()) missing.push('initdb, pg_ctl (/usr/lib/postgresql/*/bin)');
  if (asRoot && !which('runuser')) missing.push('runuser');
  if (missing.length === 0) return;
  const line = `missing system binaries: ${missing.join(', ')} (run scripts/test.sh as root, or apt-get install postgresql)`;
  if (inCI) throw new Error(line);
  console.warn(`\n  !!! SKIPPING "${ctx.test?.parent?.fullTitle() ?? 'suite'}": ${line}\n`);
  ctx.skip();
}

export interface Cluster {
  /** The folder holding the data directory and the socket. */
  dir: string;
  /** A connection URL for `database` over the unix socket. */
  url(database?: string): string;
  /** Makes a fresh database and returns its URL. */
  createDatabase(): Promise<string>;
  /** Runs SQL as the superuser in `database`. */
  sql<R extends pg.QueryResultRow = pg.QueryResultRow>(database: string, text: string, values?: unknown[]): Promise<R[]>;
  /** Stops the server (pg_ctl stop -m fast: open sessions are ended), keeping its data. */
  stop(): Promise<void>;
  /** Starts it again on the same data and socket. */
  start(): Promise<void>;
  /** Stops the server and deletes the folder. */
  destroy(): Promise<void>;
}

let databases = 0;

/**
 * Starts a private cluster (call requirePostgres first). Tests run it with fsync off;
 * `durable` keeps PostgreSQL's fsync on (benchmarks: a commit then costs what it costs).
 */
export async function startCluster(opts: { durable?: boolean } = {}): Promise<Cluster> {
  const bin = postgresBin();
  if (!bin) throw new Error('PostgreSQL binaries not found under /usr/lib/postgresql');
  const asRoot = process.getuid?.() === 0;
  const dir = await mkdtemp(path.join(tmpdir(), 'kzymy-pg-'));
  const data = path.join(dir, 'data');
  const as = async (cmd: string, args: string[]) => {
    const [file, argv] = asRoot ? [which('runuser') ?? 'runuser', ['-u', 'postgres', '--', path.join(bin, cmd), ...args]] : [path.join(bin, cmd), args];
    try {
      await run(file, argv, { cwd: '/' });
    } catch (err) {
      const e = err as { stderr?: string; message: string };
      throw new Error(`${cmd} failed: ${e.stderr || e.message}`);
    }
  };
  if (asRoot) {
    const uid = Number(execFileSync('id', ['-u', 'postgres']).toString().trim());
    const gid = Number(execFileSync('id', ['-g', 'postgres']).toString().trim());
    await chown(dir, uid, gid);
  }
  const pgctl = ['-D', data, '-l', path.join(dir, 'server.log'), '-w', '-o', `-c listen_addresses='' -c unix_socket_directories='${dir}'${opts.durable ? '' : ' -c fsync=off'}`];
  try {
    // trust: the socket is in a 0700 folder of the test's own, reachable by nobody else.
    await as('initdb', ['-D', data, '-U', 'postgres', '--auth=trust', '--no-sync', '-E', 'UTF8', '--locale=C.UTF-8']);
    await as('pg_ctl', ['start', ...pgctl]);
  } catch (err) {
    await rm(dir, { recursive: true, force: true });
    throw err;
  }
  let up = true;
  const url = (database = 'postgres') => `postgresql://postgres@/${database}?host=${encodeURIComponent(dir).replace(/%2F/g, '/')}`;
  const sql = async <R extends pg.QueryResultRow>(database: string, text: string, values?: unknown[]) => {
    const c = new pg.Client({ connectionString: url(database) });
    await c.connect();
    try {
      return (await c.query<R>(text, values)).rows;
    } finally {
      await c.end();
    }
  };
  return {
    dir,
    url,
    sql,
    async createDatabase() {
      const name = `kzymy_t${process.pid}_${++databases}`;
      await sql('postgres', `CREATE DATABASE ${name}`);
      return url(name);
    },
    async stop() {
      if (!up) return;
      await as('pg_ctl', ['stop', '-D', data, '-m', 'fast', '-w']);
      up = false;
    },
    async start() {
      if (up) return;
      await as('pg_ctl', ['start', ...pgctl]);
      up = true;
    },
    async destroy() {
      if (up) await as('pg_ctl', ['stop', '-D', data, '-m', 'immediate', '-w']).catch(() => undefined);
      up = false;
      await rm(dir, { recursive: true, force: true });
    },
  };
}

