// What only the PostgreSQL engine has: its schema migrations, several nodes opening one
// database at once, LISTEN/NOTIFY with polling behind it, and a database that goes away.
// The behaviour it shares with lowdb is tested for both engines in the other files here.
import { expect } from 'chai';
import pg from 'pg';
import { setTimeout as sleep } from 'node:timers/promises';
import { openRegistry } from '../../src/registry/index.js';
import { SCHEMA_VERSION } from '../../src/registry/pg-migrations.js';
import { spawnChild, reap, key, refusal, type Child } from './child.js';
import { describeEngines, type EngineContext } from './engines.js';

/** Waits until `check` holds, looking every 50 ms; fails after `ms` (a bound far above the promised one, not a timing claim). */
async function eventually(what: string, check: () => boolean | Promise<boolean>, ms = 20_000): Promise<void> {
  const end = Date.now() + ms;
  while (!(await check())) {
    if (Date.now() > end) throw new Error(`not within ${ms} ms: ${what}`);
    await sleep(50);
  }
}

const backends = (e: EngineContext, app: string) =>
  e.cluster!.sql<{ pid: number; wait: string | null }>(e.database, 'SELECT pid, wait_event_type AS wait FROM pg_stat_activity WHERE datname = $1 AND application_name = $2', [e.database, app]);

describeEngines(
  'registry on PostgreSQL',
  (e) => {
    let children: Child[] = [];
    afterEach(async () => {
      await Promise.all(children.map(reap));
      children = [];
      await e.cluster?.start();
    });

    it('applies its migrations once when several processes open an empty database at the same moment', async () => {
      children = await Promise.all([1, 2, 3].map((n) => spawnChild({ ...e.store, mode: 'opener', prefix: `o${n}` })));
      for (const c of children) c.send('open');
      for (const c of children) expect(await c.waitFor((l) => 'opened' in l || 'openFailed' in l)).to.deep.equal({ opened: 1 });
      const rows = await e.cluster!.sql<{ version: number; name: string }>(e.database, 'SELECT version, name FROM schema_migrations ORDER BY version');
      expect(rows.map((r) => r.version)).to.deep.equal(Array.from({ length: SCHEMA_VERSION }, (_, i) => i + 1));
      const r = await e.open();
      const u = await r.add(key('M1GR'));
      for (const c of children) c.send('dump');
      for (const c of children) expect(((await c.waitFor((l) => 'dump' in l)).dump as Array<{ username: string }>).map((x) => x.username)).to.deep.equal([u.username]);
      for (const c of children) c.send('exit');
    });

    it('refuses a schema newer than it knows, in a sentence', async () => {
      await (await e.open()).close();
      await e.cluster!.sql(e.database, "INSERT INTO schema_migrations (version, name) VALUES (999, 'future')");
      const err = await refusal(openRegistry(e.store));
      expect(err.code).to.equal('damaged');
      expect(err.message).to.match(/schema version 999, newer than this kzymy knows \(\d+\).*restore the database from your backup/);
    });

    it('names its database without the password', async () => {
      const url = e.store.url!.replace('postgres@', 'postgres:hunter2@');
      const r = await e.open({ url });
      expect(r.location).to.equal(e.store.url);
      expect(r.location).not.to.include('hunter2');
    });

    it('words a real refusal of the server by its code, and never quotes the server', async () => {
      // PostgreSQL refuses the connection itself (3D000): the driver's own DatabaseError.
      const url = e.store.url!.replace(`/${e.database}`, `/${e.database}_missing`);
      const err = await refusal(openRegistry({ ...e.store, url }));
      expect(err.code).to.equal('write-failed');
      expect(err.message).to.include('(that database does not exist)');
      expect(err.message).not.to.include(`"${e.database}_missing"`);
      expect((err as Error & { cause?: unknown }).cause).to.be.instanceOf(pg.DatabaseError);
    });

    it("sees another process's changes without being asked (NOTIFY), still sees them with its listening connection cut, and listens again", async () => {
      const me = await e.open({ follow: true });
      const seed = await me.add(key('F0110'));
      const [c] = (children = [await spawnChild({ ...e.store, mode: 'writers', prefix: 'n1', signups: 2, shared: seed.username, aliases: 2 })]);
      c!.send('go');
      await c!.waitFor((l) => l.done === true || 'failed' in l);
      const acked = c!.lines.filter((l) => l.ack === 'add');
      expect(acked).to.have.length(2);
      await eventually('the child signups and aliases', () =>
        acked.every((l) => me.get(l.username as string)?.fingerprint === l.fingerprint) && ['n1-a0', 'n1-a1'].every((a) => me.get(seed.username)!.aliases.includes(a)),
      );

      // The listening connection is cut (a proxy or a failover would do that): the timer still finds changes.
      await eventually('a listener', async () => (await backends(e, 'kzymy-listen')).length > 0);
      await e.cluster!.sql(e.database, "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = 'kzymy-listen' AND datname = $1", [e.database]);
      const other = await e.open();
      await other.setDisabled(seed.username, true);
      await eventually('a change made after the listener went', () => me.get(seed.username)!.disabled);
      // ...and it listens again.
      await eventually('a new listener', async () => (await backends(e, 'kzymy-listen')).length > 0);
    });

    it('finds at refresh() a user another connection committed a moment before (an unknown RCPT looks again)', async () => {
      const me = await e.open({ follow: true });
      const other = await e.open();
      for (let i = 0; i < 5; i++) {
        const u = await other.add(key(`RCPT${i}`));
        await me.refresh();
        expect(me.get(u.username)?.fingerprint).to.equal(`RCPT${i}`);
      }
    });

    it('refuses changes with a sentence while the database is away, makes no half change, and goes on once it is back', async () => {
      const me = await e.open({ follow: true });
      const u = await me.add(key('0LD'));
      const before = await e.cluster!.sql<{ v: string }>(e.database, 'SELECT version::text AS v FROM registry_state');

      // A key change stopped half-way: its public_keys row is written, its users row waits
      // on a lock another session holds, and then the server goes away.
      const blocker = new pg.Client({ connectionString: e.store.url });
      blocker.on('error', () => undefined);
      await blocker.connect();
      await blocker.query('BEGIN');
      await blocker.query('SELECT 1 FROM users WHERE username = $1 FOR UPDATE', [u.username]);
      const change = me.setKey(u.username, key('NEW'));
      change.catch(() => undefined);
      await eventually('the change waiting on the lock', async () => (await backends(e, 'kzymy')).some((b) => b.wait === 'Lock'));
      await e.cluster!.stop();
      const err = await refusal(change);
      expect(err.code).to.equal('write-failed');
      expect(err.message).to.match(/^The registry database .* cannot be used now \(.*\), so the change was not made or not confirmed\. Check that PostgreSQL is running and reachable, then try again\.$/);
      await blocker.end().catch(() => undefined);

      // While it is away: reads are served from memory, changes are refused in a sentence.
      expect(me.get(u.username)?.fingerprint).to.equal('0LD');
      const away = await refusal(me.addAlias(u.username, 'away'));
      expect(away.code).to.equal('write-failed');
      expect(away.message).to.include('cannot be reached');
      expect((await refusal(me.refresh())).code).to.equal('write-failed');
      const opening = await refusal(openRegistry(e.store));
      expect(opening.code).to.equal('write-failed');
      expect(opening.message).to.match(/^The registry database .* cannot be used now \(it cannot be reached\)\. Check that PostgreSQL is running and reachable, then try again\.$/);

      await e.cluster!.start();
      const fresh = await e.open();
      expect(fresh.get(u.username)).to.deep.include({ fingerprint: '0LD', aliases: [] });
      expect(await fresh.publicKey(fresh.get(u.username)!)).to.equal(key('0LD').publicKey);
      expect(await e.cluster!.sql(e.database, 'SELECT version::text AS v FROM registry_state')).to.deep.equal(before);
      // The same registry goes on (its pool connects again).
      const now = await me.setKey(u.username, key('NEW'));
      expect(now.fingerprint).to.equal('NEW');
      expect(await me.publicKey(now)).to.equal(key('NEW').publicKey);
      await eventually('fresh sees it', async () => (await fresh.refresh(), fresh.get(u.username)?.fingerprint === 'NEW'));
    });
  },
  ['postgres'],
);
