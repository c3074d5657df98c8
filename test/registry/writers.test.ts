// Several real processes change one registry folder at the same moment: none of them
// loses another's change, a key contested by all of them goes to exactly one account,
// and every process ends with the same view as a fresh open.
import { expect } from 'chai';
import { RegistryError, type User } from '../../src/registry/index.js';
import { spawnChild, reap, key, type Child, type Line } from './child.js';
import { describeEngines } from './engines.js';

const sorted = (users: readonly User[]) => [...users].sort((a, b) => a.username.localeCompare(b.username));

describeEngines('registry: concurrent writers in separate processes', (e) => {
  let children: Child[] = [];
  afterEach(async () => {
    await Promise.all(children.map(reap));
    children = [];
  });

  it('keeps every acknowledged change of every process and gives a contested key to exactly one account', async () => {
    const me = await e.open({ follow: true });
    const shared = await me.add(key('5A4ED'));
    const contested = Array.from({ length: 12 }, (_, i) => `C0DE${i}`);
    const ALIASES = 30;
    const SIGNUPS = 10;
    children = await Promise.all(
      ['p1', 'p2'].map((prefix, n) =>
        spawnChild({ ...e.store, mode: 'writers', prefix, shared: shared.username, aliases: ALIASES, signups: SIGNUPS, contested, catchAllOff: n === 0, follow: n === 1 }),
      ),
    );

    // Everyone starts at once: the children on "go", this process right after.
    for (const c of children) c.send('go');
    const mine: Line[] = [];
    const jobs: Promise<unknown>[] = [];
    for (const fp of contested) {
      jobs.push(
        me.add(key(fp)).then(
          (u) => mine.push({ contested: fp, ok: true, username: u.username }),
          (err: unknown) => mine.push({ contested: fp, ok: false, code: err instanceof RegistryError ? err.code : String(err) }),
        ),
      );
    }
    for (let i = 0; i < ALIASES; i++) {
      const local = `p0-a${i}`;
      jobs.push(me.addAlias(shared.username, local).then(() => mine.push({ ack: 'alias', user: shared.username, local })));
    }
    jobs.push(me.setDisabled(shared.username, true).then(() => mine.push({ ack: 'disable', user: shared.username, value: true })));
    for (let i = 0; i < SIGNUPS; i++) {
      jobs.push(
        me.add(key(`P0S${i}`)).then(async (u) => {
          mine.push({ ack: 'add', username: u.username, fingerprint: `P0S${i}` });
          if (i % 2 === 0) {
            await me.setDisabled(u.username, true);
            mine.push({ ack: 'disable', user: u.username, value: true });
          }
        }),
      );
    }
    await Promise.all(jobs);
    for (const c of children) await c.waitFor((l) => l.done === true || 'failed' in l);
    for (const c of children) expect(c.lines.filter((l) => 'failed' in l), c.stderr()).to.deep.equal([]);

    const all = [...mine, ...children.flatMap((c) => c.lines)];

    // A contested key: one winner, everyone else refused with duplicate-key.
    for (const fp of contested) {
      const tries = all.filter((l) => l.contested === fp);
      expect(tries, fp).to.have.length(3);
      const winners = tries.filter((l) => l.ok === true);
      expect(winners, `${fp}: ${JSON.stringify(tries)}`).to.have.length(1);
      for (const l of tries.filter((t) => t.ok !== true)) expect(l.code, fp).to.equal('duplicate-key');
    }

    // Every view: this process after refresh, each child after refresh, a fresh open.
    await me.refresh();
    for (const c of children) c.send('dump');
    const dumps = await Promise.all(children.map((c) => c.waitFor((l) => 'dump' in l)));
    const fresh = await e.open();
    const views: Array<[string, readonly User[]]> = [
      ['this process', me.list()],
      ['fresh open', fresh.list()],
      ...dumps.map((d, i): [string, readonly User[]] => [`child ${i + 1}`, d.dump as User[]]),
    ];
    const expected = sorted(fresh.list());
    for (const [name, view] of views) expect(sorted(view), name).to.deep.equal(expected);

    // ...and every acknowledged change is in it.
    expect(fresh.count()).to.equal(1 + contested.length + 3 * SIGNUPS);
    for (const fp of contested) {
      const winner = all.find((l) => l.contested === fp && l.ok === true)!;
      expect(fresh.findByFingerprint(fp)?.username, fp).to.equal(winner.username);
    }
    const s = fresh.get(shared.username)!;
    expect(s.disabled).to.equal(true);
    expect(s.catchAll).to.equal(false);
    expect(s.aliases).to.have.length(3 * ALIASES);
    for (const l of all) {
      if (l.ack === 'alias') expect(fresh.get(l.user as string)!.aliases, String(l.local)).to.include(l.local);
      if (l.ack === 'add') expect(fresh.get(l.username as string)?.fingerprint).to.equal(l.fingerprint);
      if (l.ack === 'disable') expect(fresh.get(l.user as string)!.disabled).to.equal(true);
    }
    expect(all.filter((l) => l.ack === 'add')).to.have.length(3 * SIGNUPS);
    expect(all.filter((l) => l.ack === 'disable')).to.have.length(1 + 3 * (SIGNUPS / 2));
    for (const c of children) c.send('exit');
    for (const c of children) expect((await c.exited).code).to.equal(0);
  });
});
