// Compaction while others write: a process that folds the journal into new snapshots
// again and again, another process appending meanwhile, and readers that fell behind by
// several generations. No change is lost, old journals go away, and every view agrees.
import { expect } from 'chai';
import { appendFile, readFile, readdir } from 'node:fs/promises';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { openRegistry, RegistryError, type Registry, type User } from '../../src/registry/index.js';
import type { LowdbRegistry } from '../../src/registry/lowdb.js';
import { tempDir } from '../helpers/env.js';
import { spawnChild, reap, key, openFilesUnder, expectAcknowledged, type Child, type Line } from './child.js';

const sorted = (users: readonly User[]) => [...users].sort((a, b) => a.username.localeCompare(b.username));
const compactor = (r: Registry) => r as unknown as LowdbRegistry;

async function generation(dataDir: string): Promise<number> {
  const text = await readFile(path.join(dataDir, 'registry', 'snapshot.json'), 'utf8');
  return (JSON.parse(text) as { generation: number }).generation;
}

async function journals(dataDir: string): Promise<number[]> {
  return (await readdir(path.join(dataDir, 'registry')))
    .map((n) => /^journal\.(\d+)$/.exec(n))
    .filter((m) => m !== null)
    .map((m) => Number(m[1]))
    .sort((a, b) => a - b);
}

describe('registry: compaction with other writers', () => {
  let dir: string;
  let cleanup: () => Promise<void>;
  let child: Child | undefined;
  let regs: Registry[] = [];
  beforeEach(async () => ({ dir, cleanup } = await tempDir()));
  afterEach(async () => {
    await reap(child);
    child = undefined;
    await Promise.all(regs.map((r) => r.close()));
    regs = [];
    await cleanup();
  });

  const open = async (o: Partial<Parameters<typeof openRegistry>[0]> = {}) => {
    const r = await openRegistry({ dataDir: dir, ...o });
    regs.push(r);
    return r;
  };

  it('loses nothing while one process compacts often and another appends; old journals go; a reader far behind catches up', async () => {
    const me = await open({ compact: true, compactBytes: 2048, follow: true });
    const early = await open(); // opened now, not following: it falls behind by many generations
    const start = await generation(dir);
    child = await spawnChild({ dataDir: dir, mode: 'loop', prefix: 'w', parallel: 3 });
    child.send('go');
    const mine: Line[] = [];
    for (let i = 0; (await generation(dir)) < start + 6 || i < 20; i++) {
      const u = await me.add(key(`ME${i}`));
      mine.push({ ack: 'add', username: u.username, fingerprint: `ME${i}` });
      await me.addAlias(u.username, `me-${i}`);
      mine.push({ ack: 'alias', user: u.username, local: `me-${i}` });
      if (i > 2000) throw new Error(`no compaction: still at generation ${await generation(dir)}`);
    }
    child.send('stop');
    await child.waitFor((l) => l.done === true || 'failed' in l);
    expect(child.lines.filter((l) => 'failed' in l), child.stderr()).to.deep.equal([]);
    const acks = [...mine, ...child.lines.filter((l) => 'ack' in l)];
    child.send('exit');
    await child.exited;

    await me.refresh();
    expectAcknowledged(me, acks, 'the compacting process');
    // Let a compaction in flight finish, then look at the folder.
    await compactor(me).compact();
    const gen = await generation(dir);
    expect(gen).to.be.greaterThan(start + 5);
    const left = await journals(dir);
    expect(left.every((n) => n >= gen - 2), `journals left: ${left.join(', ')} at generation ${gen}`).to.equal(true);

    expect(await early.refresh(), 'refresh() after a reload reports a change').to.equal(true);
    const fresh = await open();
    expectAcknowledged(fresh, acks, 'a fresh open');
    expectAcknowledged(early, acks, 'the reader that fell behind');
    expect(sorted(early.list())).to.deep.equal(sorted(fresh.list()));
    expect(sorted(me.list())).to.deep.equal(sorted(fresh.list()));
  });

  it('keeps a change made by a process that fell several generations behind', async () => {
    const w = await open();
    const behind = await open();
    const u = await w.add(key('B0'));
    for (let i = 0; i < 4; i++) {
      await w.addAlias(u.username, `gen-${i}`);
      await compactor(w).compact();
    }
    expect(await journals(dir)).to.not.include(1, 'the journal the slow process reads is gone');
    // Its change lands in a journal long sealed: it must write it again where it counts.
    const got = await behind.addAlias(u.username, 'late');
    expect(got.aliases).to.include('late');
    await w.refresh();
    expect(w.get(u.username)!.aliases).to.include('late');
    expect((await open()).get(u.username)!.aliases).to.deep.equal(['gen-0', 'gen-1', 'gen-2', 'gen-3', 'late']);
  });

  it('close() lets go of every file, the journals sealed just before included', async () => {
    const r = await openRegistry({ dataDir: dir, follow: true });
    const u = await r.add(key('C1'));
    for (let i = 0; i < 3; i++) {
      await r.addAlias(u.username, `c${i}`);
      await compactor(r).compact();
    }
    await r.close();
    expect(await openFilesUnder(dir)).to.deep.equal([]);
  });

  it('refresh() of a process that fell behind reports the change it found by reading the snapshot again', async () => {
    const w = await open();
    const behind = await open();
    // Nothing changes in journal.1 but its seal; the signup lands generations later.
    await compactor(w).compact();
    const u = await w.add(key('LATE'));
    for (let i = 0; i < 3; i++) await compactor(w).compact();
    expect(await journals(dir)).to.not.include(2);
    // What SMTP does for an unknown recipient: refresh, and look again only if something changed.
    const changed = await behind.refresh();
    expect(behind.get(u.username)?.fingerprint, 'the state after the reload').to.equal('LATE');
    expect(changed, 'refresh() must say that the state changed').to.equal(true);
  });

  it('never writes a snapshot that claims an earlier generation than its content (a compaction whose seal landed in a later journal)', async () => {
    const a = await open();
    const unaware = await open(); // will try to sign up with a key that is taken meanwhile
    const holder = await a.add(key('F00D'));
    const stale = await open(); // will compact without having read the newest journal
    // A compacting process was killed after sealing journal.1 and before writing its snapshot.
    await appendFile(path.join(dir, 'registry', 'journal.1'), `\x1e${JSON.stringify({ id: 'sealed-by-a-crashed-process', op: 'seal' })}\n`);
    await a.refresh();
    // In journal.2: a signup refused (the key is taken), then the holder is removed.
    let refused: unknown = null;
    await unaware.add(key('F00D')).catch((e: unknown) => (refused = e));
    expect(refused).to.be.instanceOf(RegistryError);
    expect((refused as RegistryError).code).to.equal('duplicate-key');
    await a.remove(holder.username);
    await compactor(stale).compact();
    await a.refresh();
    expect(a.findByFingerprint('F00D'), 'live view').to.equal(undefined);
    const fresh = await open();
    expect(fresh.findByFingerprint('F00D'), `a fresh open (snapshot generation ${await generation(dir)}): the refused signup must not come back`).to.equal(undefined);
    expect(sorted(fresh.list())).to.deep.equal(sorted(a.list()));
  });

  it('follows a compacting process from another process without missing a change', async () => {
    const follower = await open({ follow: true });
    child = await spawnChild({ dataDir: dir, mode: 'loop', prefix: 'c', parallel: 2, compact: true, compactBytes: 1024 });
    child.send('go');
    await child.waitFor((l) => l.ack === 'add' && String(l.fingerprint).endsWith('N25'));
    child.send('stop');
    await child.waitFor((l) => l.done === true || 'failed' in l);
    const acks = child.lines.filter((l) => 'ack' in l);
    child.send('exit');
    await child.exited;
    expect(await generation(dir)).to.be.greaterThan(3);
    for (let i = 0; i < 50; i++) {
      await sleep(100);
      if (follower.count() === acks.filter((l) => l.ack === 'add').length) break;
    }
    expectAcknowledged(follower, acks, 'the follower');
    expect(sorted(follower.list())).to.deep.equal(sorted((await open()).list()));
  });
});
