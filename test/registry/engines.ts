// Runs a registry suite against each engine: lowdb in a temporary folder, and PostgreSQL
// in a fresh database of a private cluster (test/helpers/postgres.ts) per test.
import { readFile, readdir, stat } from 'node:fs/promises';
import path from 'node:path';
import { openRegistry, type OpenOptions, type Registry, type RegistryEngine } from '../../src/registry/index.js';
import { tempDir } from '../helpers/env.js';
import { requirePostgres, startCluster, type Cluster } from '../helpers/postgres.js';

/** Where a test's registry lives: what openRegistry (and a child process) is given. */
export interface Store {
  dataDir: string;
  engine: RegistryEngine;
  url?: string;
}

export class EngineContext {
  dir = '';
  store!: Store;
  cluster: Cluster | null = null;
  /** The database of this test (postgres). */
  database = '';
  private cleanup: (() => Promise<void>) | null = null;
  private opened: Registry[] = [];

  constructor(readonly name: RegistryEngine) {}

  async fresh(): Promise<void> {
    ({ dir: this.dir, cleanup: this.cleanup } = await tempDir());
    this.store = { dataDir: this.dir, engine: this.name };
    if (this.cluster) {
      this.store.url = await this.cluster.createDatabase();
      this.database = new URL(this.store.url.replace('@/', '@localhost/')).pathname.slice(1);
    }
  }

  /** Opens the registry of this test; closed after it. */
  async open(extra: Partial<OpenOptions> = {}): Promise<Registry> {
    const r = await openRegistry({ ...this.store, ...extra });
    this.opened.push(r);
    return r;
  }

  async done(): Promise<void> {
    await Promise.all(this.opened.map((r) => r.close()));
    this.opened = [];
    await this.cleanup?.();
    this.cleanup = null;
  }

  /** Everything the registry keeps, as text: each file of the folder, or each row of every table. */
  async contents(): Promise<Array<[string, string]>> {
    if (!this.cluster) {
      const folder = path.join(this.dir, 'registry');
      const out: Array<[string, string]> = [];
      for (const f of await readdir(folder, { recursive: true })) {
        const p = path.join(folder, String(f));
        if ((await stat(p)).isFile()) out.push([String(f), await readFile(p, 'utf8')]);
      }
      return out;
    }
    const tables = await this.cluster.sql<{ t: string }>(this.database, "SELECT table_name AS t FROM information_schema.tables WHERE table_schema = 'public'");
    const out: Array<[string, string]> = [];
    for (const { t } of tables) {
      const rows = await this.cluster.sql<{ r: string }>(this.database, `SELECT x::text AS r FROM "${t}" x`);
      out.push([t, rows.map((r) => r.r).join('\n')]);
    }
    return out;
  }
}

/** Declares `body` once for each engine (as "TITLE [lowdb]" and "TITLE [postgres]"). */
export function describeEngines(title: string, body: (e: EngineContext) => void, engines: readonly RegistryEngine[] = ['lowdb', 'postgres']): void {
  for (const name of engines) {
    describe(`${title} [${name}]`, function () {
      const e = new EngineContext(name);
      if (name === 'postgres') {
        before(async function () {
          requirePostgres(this);
          e.cluster = await startCluster();
        });
        after(async () => {
          await e.cluster?.destroy();
          e.cluster = null;
        });
      }
      beforeEach(async () => e.fresh());
      body(e);
      // After the suite's own afterEach hooks (which end its child processes).
      afterEach(async () => e.done());
    });
  }
}
